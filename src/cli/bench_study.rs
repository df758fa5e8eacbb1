//! `fmseg bench --study`: the time to answer a whole synthetic study, from the image on the
//! scanner's grid to the averaged logits on the preprocessed grid, once with one model and no
//! test-time augmentation and once as the reference's test script runs it (4 folds x 13 TTA
//! passes = 52 sliding-window passes, one stream of network batches). On the GPU the study is
//! resident on the device ([`crate::backend::cuda::CudaBackend::infer_study`]).

use anyhow::Context;
use clap::Args;

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::engine::{Device, Engine};
use crate::error::Result;
use crate::pipeline::preprocess::{preprocess, PreprocessConfig};
use crate::pipeline::study::{self, StudyPlan};
use crate::pipeline::tta::TtaConfig;
use crate::pipeline::window::{Predictor, Progress, WindowConfig};
use crate::tensor::{Dims, HostTensor};
use crate::volume::{Volume, IDENTITY};
use crate::weights::StateDict;

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

/// A study's inference on one device: (plan, preprocessed image, progress) to the averaged
/// logits.
type Infer<'a> = dyn FnMut(&StudyPlan, &[f32], &mut dyn FnMut(Progress)) -> Result<HostTensor> + 'a;

/// Times the study on `device` (cpu: the host pipeline over the CPU engine; cuda: the study
/// resident on the GPU). The fold ensemble runs the same weights `folds` times (time does not
/// depend on the values).
pub fn run(device: Device, threads: usize, sd: &StateDict, args: &StudyArgs, json: bool) -> anyhow::Result<()> {
    match device.resolve() {
        Device::Cpu | Device::Auto => {
            let engine = Engine::new(CpuBackend::new(threads)?, sd)?;
            let mut infer = |plan: &StudyPlan, img: &[f32], p: &mut dyn FnMut(Progress)| {
                let predict = |x: &HostTensor| engine.logits(x);
                let predict = &predict;
                let mut each: Vec<_> = (0..plan.models).map(|_| move |x: &HostTensor| predict(x)).collect();
                let mut models: Vec<&mut dyn Predictor> = each.iter_mut().map(|f| f as &mut dyn Predictor).collect();
                study::run(plan, img, &mut models, p)
            };
            report(&engine.backend().name(), Some(engine.backend().threads()), &mut infer, args, json)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let engine = Engine::new(crate::backend::cuda::CudaBackend::new()?, sd)?;
            let be = engine.backend();
            let mut infer = |plan: &StudyPlan, img: &[f32], p: &mut dyn FnMut(Progress)| {
                be.infer_study(plan, &vec![engine.model(); plan.models], img, p)
            };
            report(&be.name(), None, &mut infer, args, json)?;
            let (_, _, peak) = be.memory_usage();
            crate::outln!("GPU memory (pool peak): {:.0} MiB", peak as f64 / (1 << 20) as f64);
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => {
            anyhow::bail!("--device cuda: this build of fmseg has no CUDA engine (built without the `cuda` feature)")
        }
    }
}

fn report(device: &str, threads: Option<usize>, infer: &mut Infer, args: &StudyArgs, json: bool) -> anyhow::Result<()> {
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

    // Warm-up (buffers, page faults, kernel modules): one pass without TTA.
    infer(&StudyPlan::new(grid, 1, &window, None)?, &pre.volume.data, &mut |_| {})?;
    let mut timed = Vec::new();
    for (label, folds, tta) in [
        ("1 model, no TTA".to_string(), 1, None),
        (format!("{} folds x {} TTA passes", args.folds, tta.passes()), args.folds, Some(&tta)),
    ] {
        let plan = StudyPlan::new(grid, folds, &window, tta)?;
        let t = std::time::Instant::now();
        let logits = infer(&plan, &pre.volume.data, &mut |p| {
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
    let results: Vec<_> = timed
        .iter()
        .map(|t| {
            serde_json::json!({"config": t.label, "passes": t.passes, "windows": t.windows, "seconds": t.seconds,
                "windows_per_s": t.windows as f64 / t.seconds})
        })
        .collect();
    if json {
        crate::outln!(
            "{}",
            serde_json::json!({"device": device, "threads": threads, "study": {"study_dims": dims,
                "study_spacing_mm": spacing, "preprocessed_dims": grid, "sw_batch": args.sw_batch,
                "preprocess_s": preprocess_s, "inference": results}, "peak_rss_bytes": super::bench::peak_rss_bytes()})
        );
        return Ok(());
    }
    crate::outln!("device: {device}");
    crate::outln!(
        "study {}x{}x{} at {:?} mm -> preprocessed {}x{}x{} in {:.3} s; sw_batch {}",
        dims[0],
        dims[1],
        dims[2],
        spacing,
        grid[0],
        grid[1],
        grid[2],
        preprocess_s,
        args.sw_batch
    );
    crate::outln!("{:<28} {:>7} {:>8} {:>10} {:>10}", "inference", "passes", "windows", "seconds", "windows/s");
    for t in &timed {
        crate::outln!(
            "{:<28} {:>7} {:>8} {:>10.3} {:>10.2}",
            t.label,
            t.passes,
            t.windows,
            t.seconds,
            t.windows as f64 / t.seconds
        );
    }
    Ok(())
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
