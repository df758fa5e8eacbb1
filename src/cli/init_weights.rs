//! `fmseg init-weights OUT`: freshly initialised network weights (PyTorch's default Conv3d /
//! ConvTranspose3d initialisation, seeded), marked `trained=false`. The starting point of a
//! training run (the bundled `weights/fmseg-unet25d.fmw` are trained from seed 0: weights/README.md).

use std::path::PathBuf;

use anyhow::Context;

use crate::model::init::random_state_dict;
use crate::weights::{self, DType, Format};

#[derive(clap::Args, Debug)]
pub struct InitWeightsArgs {
    /// File to write (.fmw frozen, .safetensors or .pth, from the extension).
    pub output: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Element type of the written tensors.
    #[arg(long, value_enum, default_value_t = super::convert_weights::DTypeArg::F16)]
    pub dtype: super::convert_weights::DTypeArg,
}

pub fn run(a: InitWeightsArgs) -> anyhow::Result<()> {
    let format = Format::from_extension(&a.output)
        .with_context(|| format!("{}: use a .fmw, .safetensors or .pth name", a.output.display()))?;
    let dtype = match a.dtype {
        super::convert_weights::DTypeArg::F16 => DType::F16,
        super::convert_weights::DTypeArg::F32 => DType::F32,
    };
    let sd = random_state_dict(a.seed);
    let seed = a.seed.to_string();
    let meta = [
        ("model", "2.5D-AttentionUNet (fmseg)"),
        ("trained", "false"),
        ("init", "PyTorch default: kaiming-uniform a=sqrt(5), weights and biases in +-1/sqrt(fan_in)"),
        ("seed", seed.as_str()),
    ];
    weights::save_with_metadata(&sd, &a.output, format, dtype, &meta)?;
    eprintln!(
        "fmseg init-weights: {} ({}, {}, seed {}): untrained weights, {} parameters",
        a.output.display(),
        format.name(),
        dtype.name(),
        a.seed,
        weights::distinct_parameters(&sd)
    );
    Ok(())
}
