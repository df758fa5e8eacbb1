//! The one entry point for inference: weights resident on a backend, `forward(batch)` in
//! PyTorch layout, logits and attention maps out. The pipeline, the benches, the CLI and an
//! embedding application all go through it.

pub mod classifier;
#[cfg(feature = "cuda")]
pub mod graphed;

#[cfg(feature = "cuda")]
pub use graphed::GraphedForward;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{unet25d, Output, Unet25d};
use crate::tensor::HostTensor;
use crate::weights::StateDict;

pub struct Engine<B: Backend> {
    backend: B,
    model: Unet25d<B>,
}

impl<B: Backend> Engine<B> {
    /// Prepares the network's weights on `backend` (packed, converted or uploaded once).
    pub fn new(backend: B, weights: &StateDict) -> Result<Self> {
        let model = Unet25d::new(&backend, weights)?;
        Ok(Engine { backend, model })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn model(&self) -> &Unet25d<B> {
        &self.model
    }

    /// Logits `(N, 2, H, W, D)` and the maps `w0, w1, w2` for an input `(N, 1, H, W, D)`.
    pub fn forward(&self, x: &HostTensor) -> Result<Output<HostTensor>> {
        self.forward_probed(x, &mut |_, _| Ok(()))
    }

    /// As [`Engine::forward`], handing each stage output (PyTorch layout) to `probe`.
    pub fn forward_probed(
        &self,
        x: &HostTensor,
        probe: &mut dyn FnMut(&str, HostTensor) -> Result<()>,
    ) -> Result<Output<HostTensor>> {
        check_input(x)?;
        let be = &self.backend;
        let xt = be.upload(x)?;
        let out = self.model.forward_probed(be, &xt, &mut |name, t| probe(name, be.download(t)?))?;
        Ok(Output {
            logits: be.download(&out.logits)?,
            w0: be.download(&out.w0)?,
            w1: be.download(&out.w1)?,
            w2: be.download(&out.w2)?,
        })
    }

    /// Logits only, staying on the backend until the end (no map downloads).
    pub fn logits(&self, x: &HostTensor) -> Result<HostTensor> {
        check_input(x)?;
        let be = &self.backend;
        let out = self.model.forward(be, &be.upload(x)?)?;
        be.download(&out.logits)
    }
}

/// A network input: `(N, 1, H, W, D)`, `N >= 1`, H, W >= 192, D >= 16, finite values.
pub fn check_input(x: &HostTensor) -> Result<()> {
    let (n, c, dims) = x.ncdims()?;
    if n == 0 {
        return Err(Error::Shape("empty batch".into()));
    }
    unet25d::check_input(c, dims)?;
    check_finite(x)
}

/// Every value finite (what the backends' `upload` contract asks of each network input).
pub fn check_finite(x: &HostTensor) -> Result<()> {
    if let Some(i) = x.first_non_finite() {
        let count = x.data.iter().filter(|v| !v.is_finite()).count();
        return Err(Error::Value(format!(
            "input holds {count} non-finite value(s) (NaN or Inf), the first at flat index {i}"
        )));
    }
    Ok(())
}

/// Where to run: parsed from `--device cpu|cuda|auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The multi-threaded CPU engine (float32).
    Cpu,
    /// The FP16 CUDA engine; an error if no usable GPU is present.
    Cuda,
    /// CUDA when a usable GPU is present, else the CPU.
    Auto,
}

impl Device {
    /// `Auto` made concrete: CUDA when this build has the CUDA engine and a usable GPU is
    /// present (it opens and closes a context to find out), else the CPU. `Cpu` and `Cuda`
    /// stay as they are.
    pub fn resolve(self) -> Device {
        match self {
            #[cfg(feature = "cuda")]
            Device::Auto if crate::backend::cuda::CudaBackend::new().is_ok() => Device::Cuda,
            Device::Auto => Device::Cpu,
            d => d,
        }
    }
}

/// An engine on whichever device was chosen at run time.
pub enum AnyEngine {
    Cpu(Engine<crate::backend::cpu::CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(Engine<crate::backend::cuda::CudaBackend>),
}

impl AnyEngine {
    /// Builds the engine for `device` with `threads` CPU workers (0 = all cores). `Auto` takes
    /// the GPU when one is usable and the CPU otherwise.
    pub fn new(device: Device, threads: usize, weights: &StateDict) -> Result<Self> {
        let cpu = || Ok(AnyEngine::Cpu(Engine::new(crate::backend::cpu::CpuBackend::new(threads)?, weights)?));
        match device {
            Device::Cpu => cpu(),
            #[cfg(feature = "cuda")]
            Device::Cuda => Ok(AnyEngine::Cuda(Engine::new(crate::backend::cuda::CudaBackend::new()?, weights)?)),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => {
                Err(Error::Device("this build of fmseg has no CUDA engine (built without the `cuda` feature)".into()))
            }
            #[cfg(feature = "cuda")]
            Device::Auto => match crate::backend::cuda::CudaBackend::new() {
                Ok(gpu) => Ok(AnyEngine::Cuda(Engine::new(gpu, weights)?)),
                Err(_) => cpu(),
            },
            #[cfg(not(feature = "cuda"))]
            Device::Auto => cpu(),
        }
    }

    pub fn device_name(&self) -> String {
        match self {
            AnyEngine::Cpu(e) => e.backend().name(),
            #[cfg(feature = "cuda")]
            AnyEngine::Cuda(e) => e.backend().name(),
        }
    }

    pub fn forward(&self, x: &HostTensor) -> Result<Output<HostTensor>> {
        match self {
            AnyEngine::Cpu(e) => e.forward(x),
            #[cfg(feature = "cuda")]
            AnyEngine::Cuda(e) => e.forward(x),
        }
    }

    pub fn logits(&self, x: &HostTensor) -> Result<HostTensor> {
        match self {
            AnyEngine::Cpu(e) => e.logits(x),
            #[cfg(feature = "cuda")]
            AnyEngine::Cuda(e) => e.logits(x),
        }
    }

    /// Runs `f` on the CPU engine's worker threads (on the GPU engine: here). Work that calls
    /// the engine many times (a whole series) runs inside it, so that each op's parallel loop
    /// starts on a worker directly instead of being queued on the pool from outside (rayon's
    /// queue for outside work allocates a block every 63 jobs).
    pub fn on_workers<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self {
            AnyEngine::Cpu(e) => e.backend().install(f),
            #[cfg(feature = "cuda")]
            AnyEngine::Cuda(_) => f(),
        }
    }
}
