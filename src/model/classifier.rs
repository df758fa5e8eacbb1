//! The axSpA classifier's graph over any [`Backend`], built from its description
//! ([`ClassifierSpec`]): the same ops as the segmentation network, so it runs on the CPU engine
//! in FP32, on the CUDA engine in FP16 and on the training tape.
//!
//! Global average pooling is `adaptive_avg_pool` to 1x1x1 and the linear head a 1x1x1 conv on
//! the pooled `(N, C, 1, 1, 1)` vector (the clinical features joined by `concat`): no op or
//! kernel exists only for the classifier, so each is covered by the one op matrix.

use crate::backend::{Backend, DropoutSite};
use crate::error::{Error, Result};
use crate::model::blocks::Loader;
use crate::model::catalog::{ClassifierSpec, CLASSIFIER_INPUT_CHANNELS};
use crate::tensor::Dims;
use crate::weights::StateDict;

/// What a pass gives: the axSpA logit `(N, 1, 1, 1, 1)` and the last stage's output
/// (`(N, C, h, w, d)`, what Grad-CAM weighs).
pub struct ClassifierOutput<T> {
    pub logit: T,
    pub features: T,
}

/// The classifier with its weights resident on a backend.
pub struct Classifier<B: Backend> {
    spec: ClassifierSpec,
    stages: Vec<[B::Conv; 2]>,
    head: B::Conv,
}

impl<B: Backend> Classifier<B> {
    /// Prepares every layer of `spec` on `backend` from `sd` (check it first with
    /// `weights::canonicalize_for` for messages that name the file).
    pub fn new(backend: &B, spec: ClassifierSpec, sd: &StateDict) -> Result<Self> {
        let l = Loader { backend, sd };
        let stages = spec
            .stages
            .iter()
            .map(|s| {
                let [a, b] = s.layers();
                Ok([l.conv(&a)?, l.conv(&b)?])
            })
            .collect::<Result<Vec<_>>>()?;
        let head = l.conv(&spec.head)?;
        Ok(Classifier { spec, stages, head })
    }

    pub fn spec(&self) -> &ClassifierSpec {
        &self.spec
    }

    /// The smallest input grid: every pool must leave at least one voxel.
    pub fn min_input(&self) -> Dims {
        self.spec.stages.iter().fold([1, 1, 1], |d, s| [d[0] * s.pool[0], d[1] * s.pool[1], d[2] * s.pool[2]])
    }

    /// `x` is `(N, 2, H, W, D)`; `clinical` `(N, 9, 1, 1, 1)`, required by the image+clinical
    /// variant and refused by the image-only one.
    pub fn forward(&self, be: &B, x: &B::Tensor, clinical: Option<&B::Tensor>) -> Result<ClassifierOutput<B::Tensor>> {
        let (n, c, dims) = be.shape(x);
        let min = self.min_input();
        if c != CLASSIFIER_INPUT_CHANNELS || (0..3).any(|a| dims[a] < min[a]) {
            return Err(Error::Shape(format!(
                "the classifier takes ({CLASSIFIER_INPUT_CHANNELS}, H, W, D) inputs of at least {min:?}, got \
                 ({c}, {dims:?})"
            )));
        }
        match (self.spec.clinical, clinical) {
            (0, Some(_)) => {
                return Err(Error::Value("the image-only classifier was given clinical features".into()));
            }
            (k, None) if k > 0 => {
                return Err(Error::Value("the image+clinical classifier needs the clinical features".into()));
            }
            (k, Some(t)) if be.shape(t) != (n, k, [1, 1, 1]) => {
                return Err(Error::Shape(format!(
                    "clinical features {:?}, the classifier needs ({n}, {k}, [1, 1, 1])",
                    be.shape(t)
                )));
            }
            _ => {}
        }
        let mut h: Option<B::Tensor> = None;
        for (i, (spec, [inplane, through])) in self.spec.stages.iter().zip(&self.stages).enumerate() {
            let pooled = match (&h, i) {
                // The stem averages (it keeps small lesions' signal); later stages max pool.
                (None, _) => {
                    let (_, _, d) = be.shape(x);
                    be.adaptive_avg_pool(x, [d[0] / spec.pool[0], d[1] / spec.pool[1], d[2] / spec.pool[2]])?
                }
                (Some(prev), _) => be.max_pool(prev, spec.pool)?,
            };
            drop(h.take());
            let a = be.conv_norm(&pooled, inplane, None, true)?;
            drop(pooled);
            h = Some(be.conv_norm(&a, through, Some(&a), true)?);
        }
        let features = h.ok_or_else(|| Error::Other("internal: the classifier has no stages".into()))?;
        let pooled = be.dropout(be.adaptive_avg_pool(&features, [1, 1, 1])?, DropoutSite::Network)?;
        let joined = match clinical {
            Some(t) => be.concat(&pooled, t)?,
            None => pooled,
        };
        let logit = be.conv(&joined, &self.head)?;
        Ok(ClassifierOutput { logit, features })
    }
}
