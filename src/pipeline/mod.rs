//! The clinical pipeline around the network, exactly as the reference runs it:
//! [`preprocess`] (MONAI orientation, spacing, padding, z-score), [`window`] (sliding-window
//! inference with Gaussian blending, test-time augmentation, fold ensembles) and
//! [`postprocess`] (argmax and resampling back to the original image grid).
//! [`geometry`] holds the MONAI/PyTorch grid arithmetic they share.

pub mod geometry;
pub mod postprocess;
pub mod preprocess;
pub mod tta;
pub mod window;
