//! The clinical pipeline around the network, exactly as the reference runs it:
//! [`preprocess`] (MONAI orientation, spacing, padding, z-score), [`window`] (MONAI's
//! sliding-window geometry and Gaussian blending), [`tta`] (test-time augmentation), [`study`]
//! (every pass of a fold ensemble as one stream of network batches) and
//! [`postprocess`] (argmax and resampling back to the original image grid).
//! [`geometry`] holds the MONAI/PyTorch grid arithmetic they share. [`segment`] runs the
//! whole flow from an image file; [`report`] and [`overlay`] describe its result; [`rules`]
//! chooses the series of an archive to segment (`fmseg batch`); [`stats`] holds the statistics of
//! `fmseg evaluate` (paired tests, ROC and DeLong, HD95) and [`evaluation`] composes them into
//! its tables and ROC figure; [`clinical`] reads the clinical variables (age, sex, HLA-B27, CRP,
//! ESR) of the classifier's clinical branch, [`classifier_input`] makes the classifier's input
//! and [`gradcam`] its explanation.

pub mod classifier_input;
pub mod clinical;
#[cfg(feature = "cuda")]
pub mod device_study;
pub mod evaluation;
pub mod geometry;
pub mod gradcam;
pub mod metrics;
pub mod overlay;
pub mod postprocess;
pub mod preprocess;
pub mod report;
pub mod rules;
pub mod segment;
pub mod stats;
pub mod study;
pub mod truth;
pub mod tta;
pub mod window;
