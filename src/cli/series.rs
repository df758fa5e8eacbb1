//! `fmseg series PATH`: the DICOM series under a path, which one fmseg would choose and why.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::io::dicom::{self, Selection, SeriesInfo};

#[derive(clap::Args, Debug)]
pub struct SeriesArgs {
    /// A DICOM directory (searched recursively), a DICOM file, or an Enhanced MR object.
    pub path: PathBuf,
    /// Choose this SeriesInstanceUID instead of applying the selection rules.
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also load the chosen series (check its geometry, decode all its pixel data) and print
    /// its voxel grid; a series that cannot be loaded is an error.
    #[arg(long)]
    pub check: bool,
    /// Also print each series' PatientID (left out by default: listings end up in logs and
    /// tickets).
    #[arg(long)]
    pub include_phi: bool,
}

#[derive(Serialize)]
struct Listed<'a> {
    chosen: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_id: Option<&'a str>,
    #[serde(flatten)]
    info: &'a SeriesInfo,
}

#[derive(Serialize)]
struct Grid {
    dims: [usize; 3],
    spacing: [f64; 3],
    affine_lps: crate::volume::Affine,
    min: f32,
    max: f32,
}

#[derive(Serialize)]
struct Report<'a> {
    path: String,
    chosen: &'a str,
    reason: &'a str,
    series: Vec<Listed<'a>>,
    skipped_non_dicom: usize,
    skipped_non_image: usize,
    unreadable: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loaded: Option<Grid>,
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.prec$}"))
}

fn table(report: &Report) -> String {
    let header = ["", "UID", "NO", "DESCRIPTION", "MOD", "SLICES", "ROWSxCOLS", "SPACING mm", "ORIENTATION", "T1"];
    let rows: Vec<[String; 10]> = report
        .series
        .iter()
        .map(|l| {
            let s = l.info;
            let spacing = match s.pixel_spacing {
                Some([r, c]) => format!("{r:.3}x{c:.3}x{}", opt(s.slice_spacing, 3)),
                None => "-".to_string(),
            };
            [
                if l.chosen { "*".into() } else { String::new() },
                s.uid.clone(),
                s.series_number.map_or_else(|| "-".into(), |n| n.to_string()),
                if s.description.is_empty() { "-".into() } else { s.description.clone() },
                s.modality.clone(),
                s.slices.to_string(),
                format!("{}x{}", s.rows, s.cols),
                spacing,
                s.orientation.clone(),
                match s.t1_weighted {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "?".into(),
                },
            ]
        })
        .collect();
    let mut w = header.map(|h| h.chars().count());
    for r in &rows {
        for (c, cell) in r.iter().enumerate() {
            w[c] = w[c].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(c, s)| format!("{s:<width$}", width = w[c])).collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, &header.map(String::from));
    for r in &rows {
        line(&mut out, r);
    }
    let _ = writeln!(out, "\nchosen: {} ({})", report.chosen, report.reason);
    for l in &report.series {
        if let Some(p) = &l.info.problem {
            let _ = writeln!(out, "problem: {p}");
        }
    }
    if let Some(g) = &report.loaded {
        let _ = writeln!(
            out,
            "loaded: {} x {} x {} voxels (i = column, j = row, k = slice), spacing {:.4} x {:.4} x {:.4} mm, values {} .. {}",
            g.dims[0], g.dims[1], g.dims[2], g.spacing[0], g.spacing[1], g.spacing[2], g.min, g.max
        );
    }
    out
}

pub fn run(args: SeriesArgs) -> anyhow::Result<()> {
    let list = dicom::scan_series(&args.path)
        .with_context(|| format!("listing DICOM series under {}", args.path.display()))?;
    let selection = Selection::from_option(args.series.as_deref());
    let choice = dicom::choose(&args.path, &list.series, &selection)?;
    let loaded = if args.check {
        let l = dicom::load_series(&args.path, &Selection::uid(list.series[choice.index].uid.clone()))
            .with_context(|| format!("loading series {}", list.series[choice.index].label()))?;
        let (min, max) =
            l.volume.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        Some(Grid { dims: l.volume.dims, spacing: l.volume.spacing(), affine_lps: l.volume.affine, min, max })
    } else {
        None
    };
    let report = Report {
        path: args.path.display().to_string(),
        chosen: &list.series[choice.index].uid,
        reason: &choice.reason,
        series: list
            .series
            .iter()
            .enumerate()
            .map(|(i, info)| Listed {
                chosen: i == choice.index,
                patient_id: args.include_phi.then_some(info.patient_id.as_str()),
                info,
            })
            .collect(),
        skipped_non_dicom: list.skipped_non_dicom,
        skipped_non_image: list.skipped_non_image,
        unreadable: list.unreadable.iter().map(|e| e.to_string()).collect(),
        loaded,
    };
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { table(&report) };
    for u in &report.unreadable {
        eprintln!("fmseg: warning: {u}");
    }
    if report.skipped_non_dicom + report.skipped_non_image > 0 {
        eprintln!(
            "fmseg: note: skipped {} non-DICOM file(s) and {} non-image DICOM object(s)",
            report.skipped_non_dicom, report.skipped_non_image
        );
    }
    crate::out!("{text}");
    Ok(())
}
