//! `fmseg convert INPUT OUTPUT.nii[.gz]`: a DICOM series (file, directory or Enhanced MR) or a
//! NIfTI image to NIfTI-1, every voxel at its world position (the LPS geometry becomes the
//! file's RAS sform/qform). Whole-number images within int16 are stored as int16, anything
//! else as float32, so values survive exactly.

use std::path::PathBuf;

use anyhow::bail;

use crate::io::nifti::{self, WriteType};
use crate::pipeline::segment::read_input;

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// A DICOM directory, file or Enhanced MR object, or a NIfTI image.
    pub input: PathBuf,
    /// The NIfTI file to write (`.nii` or `.nii.gz`); nothing is written on error.
    pub output: PathBuf,
    /// Choose this SeriesInstanceUID instead of applying the selection rules.
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
    /// Store float32 whatever the values.
    #[arg(long)]
    pub float: bool,
}

pub fn run(a: ConvertArgs) -> anyhow::Result<()> {
    let name = a.output.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        bail!("{}: the output must be a NIfTI file ending in .nii or .nii.gz", a.output.display());
    }
    // The input is named unless the reader's message already does.
    let loaded = read_input(&a.input, a.series.as_deref()).map_err(|e| {
        let msg = e.to_string();
        if msg.contains(&a.input.display().to_string()) {
            anyhow::Error::msg(msg)
        } else {
            anyhow::anyhow!("reading {}: {msg}", a.input.display())
        }
    })?;
    let v = &loaded.image;
    if let Some(n) = &loaded.info.note {
        eprintln!("fmseg convert: WARNING: {}: {n}", a.input.display());
    }
    if v.dims[2] == 1 {
        eprintln!("fmseg convert: note: {} is a single slice: written as a one-slice volume", a.input.display());
    }
    let whole = v.data.iter().all(|&x| x.fract() == 0.0 && (i16::MIN as f32..=i16::MAX as f32).contains(&x));
    let ty = if whole && !a.float { WriteType::I16 } else { WriteType::F32 };
    nifti::write(&a.output, v, ty)?;
    let s = v.spacing();
    eprintln!(
        "fmseg convert: {} ({}{}) -> {}: {}x{}x{} voxels of {:.3}x{:.3}x{:.3} mm, {}",
        a.input.display(),
        loaded.info.format,
        loaded.info.series_uid.as_deref().map(|u| format!(" series {u}")).unwrap_or_default(),
        a.output.display(),
        v.dims[0],
        v.dims[1],
        v.dims[2],
        s[0],
        s[1],
        s[2],
        if ty == WriteType::I16 { "int16" } else { "float32" }
    );
    Ok(())
}
