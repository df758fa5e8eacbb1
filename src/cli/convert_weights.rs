//! `fmseg convert-weights IN OUT`: any supported weights file to `.pth`, safetensors or the
//! frozen format, checked against the network on the way (the segmentation network, or the
//! axSpA classifier when the file has its `head.weight`).

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::weights::{self, DType, Format};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Weights to read: a torch.save checkpoint, safetensors or frozen file (told apart by content).
    pub input: PathBuf,
    /// File to write; nothing is written if the input does not fit the network.
    pub output: PathBuf,
    /// Output format [default: from OUT's extension: .pth/.pt, .safetensors, .fmw].
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Element type of the written tensors.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// Metadata to store with the tensors (safetensors and frozen), repeatable: `trained=true`
    /// marks weights as trained (no untrained notice in `segment`); others record provenance.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    Pth,
    Safetensors,
    Frozen,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    F16,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let format = match args.format {
        Some(FormatArg::Pth) => Format::Pth,
        Some(FormatArg::Safetensors) => Format::Safetensors,
        Some(FormatArg::Frozen) => Format::Frozen,
        None => match Format::from_extension(&args.output) {
            Some(f) => f,
            None => bail!(
                "cannot tell the output format from the name {} (use .pth, .pt, .safetensors or .fmw, or pass --format)",
                args.output.display()
            ),
        },
    };
    let dtype = match args.dtype {
        DTypeArg::F32 => DType::F32,
        DTypeArg::F16 => DType::F16,
    };
    // A `head.weight` is the axSpA classifier's (the segmentation network has none): checked
    // against the classifier variant its head's width names, else against the UNet.
    let raw = weights::load(&args.input).context("reading weights")?;
    let sd = if raw.get("head.weight").is_some() {
        crate::engine::classifier::ClassifierWeights::load(&args.input).context("reading weights")?.state
    } else {
        weights::load_canonical(&args.input).context("reading weights")?
    };
    let source = args.input.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut meta: Vec<(&str, &str)> = vec![("source", &source)];
    for m in &args.meta {
        match m.split_once('=') {
            Some((k, v)) if !k.is_empty() => meta.push((k, v)),
            _ => bail!("--meta {m:?}: expected KEY=VALUE"),
        }
    }
    weights::save_with_metadata(&sd, &args.output, format, dtype, &meta)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let bytes =
        std::fs::metadata(&args.output).with_context(|| format!("reading back {}", args.output.display()))?.len();
    crate::outln!(
        "{} -> {}: {} tensors ({} shared), {} parameters, {} {}, {} bytes",
        args.input.display(),
        args.output.display(),
        sd.len(),
        sd.len() - weights::aliases_in(&sd).iter().filter(|a| a.is_none()).count(),
        weights::distinct_parameters(&sd),
        format.name(),
        dtype.name(),
        bytes
    );
    Ok(())
}
