//! The axSpA classifier with its weights on a device: loaded from a checkpoint (either variant,
//! told apart by the head's width), run on the CPU engine or the CUDA engine.

use std::path::Path;

use crate::backend::Backend;
use crate::engine::{check_finite, Device};
use crate::error::{Error, Result};
use crate::model::catalog::ClassifierSpec;
use crate::model::classifier::Classifier;
use crate::tensor::HostTensor;
use crate::weights::{self, StateDict};

/// A classifier checkpoint, checked against its variant's description.
pub struct ClassifierWeights {
    pub spec: ClassifierSpec,
    pub state: StateDict,
    /// The file's metadata (`threshold`: the model card's operating point; `caveat`).
    pub metadata: std::collections::BTreeMap<String, String>,
    /// `sha256:<hex>` of the file.
    pub sha256: String,
}

impl ClassifierWeights {
    /// Reads any supported weights format; the variant follows from `head.weight`'s shape, and
    /// every key and shape is checked (messages name the file).
    pub fn load(path: &Path) -> Result<Self> {
        let sd = weights::load(path)?;
        let width = sd.get("head.weight").map(|t| t.shape.clone());
        let spec = match width.as_deref() {
            Some([1, w, 1, 1, 1]) => ClassifierSpec::of_head_width(*w),
            _ => None,
        }
        .ok_or_else(|| {
            Error::weights(
                path,
                format!(
                    "not an axSpA classifier checkpoint: its head.weight is {width:?}, the image-only classifier has \
                     [1, {}, 1, 1, 1] and the image+clinical one [1, {}, 1, 1, 1]",
                    ClassifierSpec::new(false).features(),
                    ClassifierSpec::new(true).features() + ClassifierSpec::new(true).clinical
                ),
            )
        })?;
        let state = weights::canonicalize_for(&sd, path, &spec.layers(), "the axSpA classifier")?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let metadata = weights::metadata(path, &bytes)?;
        let sha256 = {
            use sha2::Digest;
            format!("sha256:{:x}", sha2::Sha256::digest(&bytes))
        };
        Ok(ClassifierWeights { spec, state, metadata, sha256 })
    }

    /// The decision threshold on the axSpA probability: the file's `threshold` metadata (the
    /// model card's), else 0.5. A value that is not a probability is an error naming the file.
    pub fn threshold(&self, path: &Path) -> Result<f64> {
        match self.metadata.get("threshold") {
            None => Ok(0.5),
            Some(t) => t
                .parse::<f64>()
                .ok()
                .filter(|v| (0.0..=1.0).contains(v))
                .ok_or_else(|| Error::weights(path, format!("metadata threshold '{t}' is not a probability"))),
        }
    }

    /// The head's weights on the pooled image features (what Grad-CAM weighs them by).
    pub fn image_head(&self) -> Result<Vec<f32>> {
        let w = self.state.get("head.weight").ok_or_else(|| Error::Other("internal: no head.weight".into()))?;
        Ok(w.data[..self.spec.features()].to_vec())
    }
}

/// One pass's results on the host.
pub struct ClassifierPass {
    /// The axSpA logit per sample.
    pub logits: Vec<f32>,
    /// The last stage `(N, C, h, w, d)`.
    pub features: HostTensor,
}

/// The classifier resident on one backend.
pub struct ClassifierEngine<B: Backend> {
    backend: B,
    model: Classifier<B>,
}

impl<B: Backend> ClassifierEngine<B> {
    pub fn new(backend: B, w: &ClassifierWeights) -> Result<Self> {
        let model = Classifier::new(&backend, w.spec.clone(), &w.state)?;
        Ok(ClassifierEngine { backend, model })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// `x` `(N, 2, H, W, D)`; `clinical` `(N, 9, 1, 1, 1)` for the image+clinical variant.
    pub fn run(&self, x: &HostTensor, clinical: Option<&HostTensor>) -> Result<ClassifierPass> {
        check_finite(x)?;
        if let Some(c) = clinical {
            check_finite(c)?;
        }
        let be = &self.backend;
        let xd = be.upload(x)?;
        let cd = clinical.map(|c| be.upload(c)).transpose()?;
        let out = self.model.forward(be, &xd, cd.as_ref())?;
        Ok(ClassifierPass { logits: be.download(&out.logit)?.data, features: be.download(&out.features)? })
    }
}

/// The classifier on whichever device was chosen at run time.
pub enum AnyClassifier {
    Cpu(ClassifierEngine<crate::backend::cpu::CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(ClassifierEngine<crate::backend::cuda::CudaBackend>),
}

impl AnyClassifier {
    pub fn new(device: Device, threads: usize, w: &ClassifierWeights) -> Result<Self> {
        let cpu = || Ok(AnyClassifier::Cpu(ClassifierEngine::new(crate::backend::cpu::CpuBackend::new(threads)?, w)?));
        match device.resolve() {
            #[cfg(feature = "cuda")]
            Device::Cuda => {
                Ok(AnyClassifier::Cuda(ClassifierEngine::new(crate::backend::cuda::CudaBackend::new()?, w)?))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => {
                Err(Error::Device("this build of fmseg has no CUDA engine (built without the `cuda` feature)".into()))
            }
            _ => cpu(),
        }
    }

    pub fn device_name(&self) -> String {
        match self {
            AnyClassifier::Cpu(e) => e.backend().name(),
            #[cfg(feature = "cuda")]
            AnyClassifier::Cuda(e) => e.backend().name(),
        }
    }

    pub fn run(&self, x: &HostTensor, clinical: Option<&HostTensor>) -> Result<ClassifierPass> {
        match self {
            AnyClassifier::Cpu(e) => e.run(x, clinical),
            #[cfg(feature = "cuda")]
            AnyClassifier::Cuda(e) => e.run(x, clinical),
        }
    }
}
