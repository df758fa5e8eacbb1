//! `fmseg forward`: one network pass on a tensor file, logits out. This is what people use to
//! check a converted model against PyTorch, so it applies no preprocessing at all.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use crate::engine::{AnyEngine, Device};
use crate::io::{npy, Staging};
use crate::tensor::HostTensor;

#[derive(Args, Debug)]
pub struct ForwardArgs {
    /// Weights: a PyTorch checkpoint (.pth), safetensors, or an fmseg frozen file.
    #[arg(long)]
    pub weights: PathBuf,
    /// Input: float32 .npy of shape (1,1,H,W,D) or (H,W,D), or a .safetensors holding one tensor.
    #[arg(long)]
    pub input: PathBuf,
    /// Output logits, (N,2,H,W,D) float32 .npy.
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the attention maps w0.npy, w1.npy, w2.npy into this directory.
    #[arg(long)]
    pub maps: Option<PathBuf>,
    /// CPU worker threads (0 = all cores; more than the cores are capped to them).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

pub fn run(a: ForwardArgs) -> anyhow::Result<()> {
    let x = read_input(&a.input)?;
    let sd = crate::weights::load_canonical(&a.weights)?;
    // Every output gets its temporary file now, before the pass: an unwritable destination is
    // found in a second, not after the inference. They are renamed into place only when all
    // were written, so a failure leaves nothing behind.
    let mut dests = vec![a.output.clone()];
    if let Some(dir) = &a.maps {
        std::fs::create_dir_all(dir).with_context(|| format!("--maps: creating {}", dir.display()))?;
        dests.extend(["w0.npy", "w1.npy", "w2.npy"].map(|n| dir.join(n)));
    }
    let mut staging = Staging::new();
    let mut tmps = Vec::with_capacity(dests.len());
    for d in &dests {
        let tmp = staging.stage(d);
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", d.display()))?;
        tmps.push(tmp);
    }
    let engine = AnyEngine::new(a.device, a.threads, &sd)?;
    let t0 = std::time::Instant::now();
    let out = engine.forward(&x).with_context(|| format!("forward pass on {}", a.input.display()))?;
    eprintln!("fmseg forward: {:?} on {} in {:.2} s", x.shape, engine.device_name(), t0.elapsed().as_secs_f64());
    for ((tmp, dest), t) in tmps.iter().zip(&dests).zip([&out.logits, &out.w0, &out.w1, &out.w2]) {
        npy::write_tensor(tmp, t).map_err(|e| {
            anyhow::anyhow!("writing {}: {}", dest.display(), crate::io::hide_temporary(&e.to_string()))
        })?;
    }
    Ok(staging.commit()?)
}

/// The network input as `(N, 1, H, W, D)`.
pub fn read_input(path: &Path) -> anyhow::Result<HostTensor> {
    let is_safetensors = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let t = if is_safetensors {
        let sd = crate::weights::safetensors_io::load(path)?;
        if sd.len() != 1 {
            let names: Vec<&str> = sd.names().collect();
            bail!(
                "{}: expected a safetensors file holding one tensor, found {} ({})",
                path.display(),
                sd.len(),
                names.join(", ")
            );
        }
        let t = sd.iter().next().map(|(_, t)| t.clone()).context("empty safetensors")?;
        t
    } else {
        npy::read_tensor(path)?
    };
    let shape = match t.shape.as_slice() {
        &[h, w, d] => vec![1, 1, h, w, d],
        &[n, 1, h, w, d] => vec![n, 1, h, w, d],
        s => bail!("{}: input has shape {s:?}; expected (1,1,H,W,D) or (H,W,D)", path.display()),
    };
    let t = HostTensor::new(shape, t.data)?;
    if let Some(i) = t.first_non_finite() {
        bail!("{}: input holds non-finite values (NaN or Inf), the first at flat index {i}", path.display());
    }
    Ok(t)
}
