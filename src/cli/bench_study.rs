//! `fmseg bench --study`: the time to answer a whole synthetic study, from the image on the
//! scanner's grid to the averaged logits on the preprocessed grid, once with one model and no
//! test-time augmentation and once as the reference's test script runs it (4 folds x 13 TTA
//! passes = 52 sliding-window passes, one stream of network batches).

use anyhow::Context;
use clap::Args;

use crate::backend::Backend;
use crate::engine::Engine;
use crate::pipeline::preprocess::{preprocess, PreprocessConfig};
use crate::pipeline::study::{self, StudyPlan};
use crate::pipeline::tta::TtaConfig;
use crate::pipeline::window::{Predictor, WindowConfig};
use crate::tensor::{Dims, HostTensor};
use crate::volume::{Volume, IDENTITY};

#[derive(Args, Debug, Clone)]
pub struct StudyArgs {
    /// Synthetic study size (voxels H,W,D on the scanner's grid).
    #[arg(long, value_delimiter = ',', default_value = "384,384,20")]
    pub study_dims: Vec<usize>,
    /// Its voxel spacing in mm (a typical SIJ T1 series).
    #[arg(long, value_delimiter = ',', default_value = "0.75,0.75,4")]
    pub study_spacing: Vec<f64>,
    /// Checkpoints of the ensemble (the reference: 4 folds).
    #[arg(long, default_value_t = 4)]
    pub folds: usize,
    /// TTA noise rounds per checkpoint (the reference: 4, i.e. 13 passes per checkpoint).
    #[arg(long, default_value_t = 4)]
    pub tta_rounds: usize,
    /// Windows per network batch, across pass boundaries (the reference: 2).
    #[arg(long, default_value_t = 2)]
    pub sw_batch: usize,
}

/// One timed configuration.
struct Timed {
    label: String,
    passes: usize,
    windows: usize,
    seconds: f64,
}

/// Times preprocessing and the two inference configurations on `engine`; `sync` waits for
/// the device. The fold ensemble runs the same weights `folds` times (time does not depend on
/// the values).
pub fn run<B: Backend>(
    engine: &Engine<B>,
    sync: impl Fn(&B),
    args: &StudyArgs,
    json: bool,
) -> anyhow::Result<serde_json::Value> {
    let dims: Dims = args.study_dims.as_slice().try_into().context("--study-dims takes three sizes H,W,D")?;
    let spacing: [f64; 3] =
        args.study_spacing.as_slice().try_into().context("--study-spacing takes three spacings in mm")?;
    if dims.contains(&0) || spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        anyhow::bail!("--study-dims {dims:?} and --study-spacing {spacing:?} must be positive");
    }
    let image = synthetic_study(dims, spacing)?;
    let t = std::time::Instant::now();
    let pre = preprocess(&image, &PreprocessConfig::default())?;
    let preprocess_s = t.elapsed().as_secs_f64();
    let grid = pre.volume.dims;
    let window = WindowConfig { sw_batch: args.sw_batch, ..WindowConfig::default() };
    let tta = TtaConfig { rounds: args.tta_rounds, ..TtaConfig::default() };

    let predict = |x: &HostTensor| {
        let y = engine.logits(x);
        sync(engine.backend());
        y
    };
    // Warm-up: buffers, page faults, kernel modules.
    let roi = window.roi;
    predict(&crate::model::init::random_input(1, args.sw_batch, roi))?;
    let mut timed = Vec::new();
    for (label, folds, tta) in [
        ("1 model, no TTA".to_string(), 1, None),
        (format!("{} folds x {} TTA passes", args.folds, tta.passes()), args.folds, Some(&tta)),
    ] {
        let plan = StudyPlan::new(grid, folds, &window, tta)?;
        // The same network stands in for each fold: one set of weights resident.
        let predict = &predict;
        let mut folds_: Vec<_> = (0..folds).map(|_| move |x: &HostTensor| predict(x)).collect();
        let mut models: Vec<&mut dyn Predictor> = folds_.iter_mut().map(|f| f as &mut dyn Predictor).collect();
        let t = std::time::Instant::now();
        let logits = study::infer(&pre.volume.data, grid, &mut models, &window, tta, &mut |p| {
            if !json {
                eprint!("\r  {label}: {}/{} windows", p.done, p.total);
            }
        })?;
        let seconds = t.elapsed().as_secs_f64();
        if !json {
            eprintln!();
        }
        std::hint::black_box(logits);
        timed.push(Timed { label, passes: plan.passes.len(), windows: plan.total_windows(), seconds });
    }
    let report = serde_json::json!({
        "study_dims": dims, "study_spacing_mm": spacing, "preprocessed_dims": grid,
        "sw_batch": args.sw_batch, "preprocess_s": preprocess_s,
        "inference": timed.iter().map(|t| serde_json::json!({"config": t.label, "passes": t.passes,
            "windows": t.windows, "seconds": t.seconds, "windows_per_s": t.windows as f64 / t.seconds})).collect::<Vec<_>>(),
    });
    if !json {
        println!(
            "study {}x{}x{} at {:?} mm -> preprocessed {}x{}x{} in {:.3} s; sw_batch {}",
            dims[0], dims[1], dims[2], spacing, grid[0], grid[1], grid[2], preprocess_s, args.sw_batch
        );
        println!("{:<28} {:>7} {:>8} {:>10} {:>10}", "inference", "passes", "windows", "seconds", "windows/s");
        for t in &timed {
            println!(
                "{:<28} {:>7} {:>8} {:>10.3} {:>10.2}",
                t.label,
                t.passes,
                t.windows,
                t.seconds,
                t.windows as f64 / t.seconds
            );
        }
    }
    Ok(report)
}

/// A smooth synthetic image (sums of low-frequency waves plus a little texture): its values
/// do not change the time, only the grid does.
fn synthetic_study(dims: Dims, spacing: [f64; 3]) -> anyhow::Result<Volume> {
    let mut affine = IDENTITY;
    for (a, s) in spacing.iter().enumerate() {
        affine[a][a] = *s;
    }
    let mut data = Vec::with_capacity(dims.iter().product());
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let (x, y, z) = (i as f32 * 0.05, j as f32 * 0.043, k as f32 * 0.3);
                data.push(
                    400.0
                        + 150.0 * (x.sin() * y.cos())
                        + 60.0 * (z + x * 0.5).sin()
                        + ((i * 7 + j * 13 + k * 31) % 17) as f32,
                );
            }
        }
    }
    Ok(Volume::new(dims, data, affine)?)
}
