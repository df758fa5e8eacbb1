//! DICOM against real peers: one written series converted by DCMTK and GDCM into every
//! supported transfer syntax loads to the same voxels (lossless exactly, lossy within the
//! codec's error) and the same geometry; `dciodvfy` (dicom3tools) finds no IOD errors in what
//! the writers produce; `dcm2niix` places voxels where our affine does; the DICOM SEG writer's
//! objects pass `dciodvfy` and read back as the mask in highdicom and dcmqi
//! (scripts/check_seg.py). Each test skips with a notice when its tool is absent (CI installs
//! them with scripts/install-debian-deps.sh and scripts/install-dicom-peers.sh).

use crate::common::cli::{Fmseg, Run};
use crate::dicom_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_dictionary_std::tags;
use fmseg::io::dicom::{
    encode_seg, load_series, seg_object, write_enhanced_mr, write_mr_series, Rescale, SegDescription, Selection,
    StoredVolume,
};
use fmseg::volume::Volume;

use dicom_support::*;

/// Convert every file of `src` into `dst` with `tool args.. IN OUT`.
fn convert_dir(tool: &Path, args: &[&str], src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in files(src) {
        let out = dst.join(f.file_name().unwrap());
        Run::of(Command::new(tool).args(args).arg(&f).arg(&out)).success();
    }
}

/// The transfer syntax UID in a file's meta group.
fn transfer_syntax(path: &Path) -> String {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap();
    obj.meta().transfer_syntax().trim_end_matches('\0').to_string()
}

fn max_abs_diff(a: &Volume, b: &Volume) -> (f32, f64) {
    assert_eq!(a.dims, b.dims);
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.data.iter().zip(&b.data) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += d as f64;
    }
    (max, sum / a.data.len() as f64)
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    tool: &'static str,
    args: &'static [&'static str],
    ts: &'static str,
    /// Largest allowed voxel error (0: lossless).
    tolerance: f32,
}

const LOSSLESS_16: &[Case] = &[
    Case {
        name: "implicit VR little endian",
        tool: "dcmconv",
        args: &["+ti"],
        ts: "1.2.840.10008.1.2",
        tolerance: 0.0,
    },
    Case {
        name: "explicit VR little endian",
        tool: "dcmconv",
        args: &["+te"],
        ts: "1.2.840.10008.1.2.1",
        tolerance: 0.0,
    },
    Case { name: "explicit VR big endian", tool: "dcmconv", args: &["+tb"], ts: "1.2.840.10008.1.2.2", tolerance: 0.0 },
    Case {
        name: "deflated explicit VR LE",
        tool: "dcmconv",
        args: &["+td"],
        ts: "1.2.840.10008.1.2.1.99",
        tolerance: 0.0,
    },
    Case { name: "RLE lossless", tool: "dcmcrle", args: &[], ts: "1.2.840.10008.1.2.5", tolerance: 0.0 },
    Case { name: "JPEG lossless SV1", tool: "dcmcjpeg", args: &["+e1"], ts: "1.2.840.10008.1.2.4.70", tolerance: 0.0 },
    Case {
        name: "JPEG lossless process 14 (SV6)",
        tool: "dcmcjpeg",
        args: &["+el", "+sv", "6"],
        ts: "1.2.840.10008.1.2.4.57",
        tolerance: 0.0,
    },
    Case { name: "JPEG-LS lossless", tool: "dcmcjpls", args: &["+el"], ts: "1.2.840.10008.1.2.4.80", tolerance: 0.0 },
    Case {
        name: "JPEG 2000 lossless (GDCM)",
        tool: "gdcmconv",
        args: &["--j2k"],
        ts: "1.2.840.10008.1.2.4.90",
        tolerance: 0.0,
    },
];

/// Convert `src` with each case, load, and compare with `want` (values and geometry).
fn check_cases(src: &Path, want: &Volume, cases: &[Case], work: &Path) -> Vec<String> {
    let mut ran = Vec::new();
    for (n, c) in cases.iter().enumerate() {
        let Some(tool) = tool(c.tool) else { continue };
        let dst = work.join(format!("case{n}"));
        convert_dir(&tool, c.args, src, &dst);
        let first = &files(&dst)[0];
        assert_eq!(transfer_syntax(first), c.ts, "{}: {} did not write the expected transfer syntax", c.name, c.tool);
        let l = load_series(&dst, &Selection::only()).unwrap_or_else(|e| panic!("{}: {e:#}", c.name));
        let (max, mean) = max_abs_diff(&l.volume, want);
        assert!(max <= c.tolerance, "{}: max voxel error {max} (mean {mean}) > {}", c.name, c.tolerance);
        let d = affine_diff(&l.volume.affine, &want.affine);
        assert!(d < 1e-9, "{}: affine differs by {d}", c.name);
        assert_eq!(l.info.transfer_syntaxes, vec![c.ts.to_string()]);
        eprintln!("{:<34} {:<24} max error {max}, mean {mean:.4}", c.name, c.ts);
        ran.push(c.name.to_string());
    }
    ran
}

#[test]
fn every_transfer_syntax_loads_to_the_same_voxels() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let affine = oblique_affine(0.7, 0.7, 4.0, 12.0, [-40.0, 20.0, -60.0]);
    // Signed 16-bit with negative stored values and a non-trivial rescale.
    let vol = smooth_i16([48, 40, 6], affine, Rescale { slope: 0.5, intercept: 7.0 });
    write_mr_series(&vol, &meta("ts16", 1, "T1 TSE"), &src).unwrap();
    let ran = check_cases(&src, &vol.real_volume(), LOSSLESS_16, work.path());
    eprintln!("16-bit transfer syntaxes checked: {}", ran.len());
}

#[test]
fn jpeg_baseline_8_bit_within_jpeg_error() {
    let Some(dcmcjpeg) = tool("dcmcjpeg") else { return };
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let vol = smooth_u8([64, 48, 4], oblique_affine(1.0, 1.0, 3.0, -7.0, [0.0; 3]));
    write_mr_series(&vol, &meta("ts8", 2, "T1 TSE"), &src).unwrap();
    let want = vol.real_volume();
    // DCMTK's lossy coder rescales pixels to their min..max by default (+sp, identity rescale
    // written): `+sr` keeps the 0..255 range as is; `+rm` stretches the stored values and
    // writes a RescaleSlope/Intercept that maps them back, exercising the rescale path.
    for (label, extra) in [("+sr", "+sr"), ("+rm", "+rm")] {
        let dst = work.path().join(format!("baseline{extra}"));
        convert_dir(&dcmcjpeg, &["+eb", "+q", "90", extra], &src, &dst);
        assert_eq!(transfer_syntax(&files(&dst)[0]), "1.2.840.10008.1.2.4.50");
        let l = load_series(&dst, &Selection::only()).unwrap();
        let (max, mean) = max_abs_diff(&l.volume, &want);
        eprintln!("JPEG baseline q90 {label} (8-bit): max error {max}, mean {mean:.4}");
        // Quality 90 on a smooth image: a few grey levels at most; a decoding error (wrong
        // sample order, missing level shift or rescale) gives errors of tens to hundreds.
        assert!(max <= 6.0 && mean <= 1.0, "{label}: max {max} mean {mean}");
        assert!(affine_diff(&l.volume.affine, &want.affine) < 1e-9);
    }
    // JPEG-LS near-lossless (unsigned only in DCMTK): every voxel within NEAR.
    if let Some(dcmcjpls) = tool("dcmcjpls") {
        let dst = work.path().join("near");
        convert_dir(&dcmcjpls, &["+en", "+md", "2"], &src, &dst);
        assert_eq!(transfer_syntax(&files(&dst)[0]), "1.2.840.10008.1.2.4.81");
        let l = load_series(&dst, &Selection::only()).unwrap();
        let (max, mean) = max_abs_diff(&l.volume, &want);
        eprintln!("JPEG-LS near-lossless NEAR=2 (8-bit): max error {max}, mean {mean:.4}");
        assert!(max <= 2.0, "max {max}");
    }
    // 8-bit through the lossless coders too.
    let lossless_8: Vec<&Case> = LOSSLESS_16.iter().filter(|c| c.tolerance == 0.0).collect();
    for c in lossless_8 {
        let Some(t) = tool(c.tool) else { continue };
        let d = work.path().join(c.ts);
        convert_dir(&t, c.args, &src, &d);
        let l = load_series(&d, &Selection::only()).unwrap_or_else(|e| panic!("8-bit {}: {e:#}", c.name));
        assert_eq!(l.volume.data, want.data, "8-bit {}", c.name);
    }
}

#[test]
fn enhanced_multiframe_through_codecs() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut vol = smooth_i16([32, 28, 5], oblique_affine(0.9, 0.9, 3.0, 15.0, [1.0, 2.0, 3.0]), Rescale::IDENTITY);
    vol.rescale = (0..5).map(|k| Rescale { slope: 1.0 + k as f64, intercept: -(k as f64) }).collect();
    write_enhanced_mr(&vol, &meta("enh", 9, "T1 3D"), &src.join("enh.dcm")).unwrap();
    let cases: Vec<Case> = LOSSLESS_16
        .iter()
        .filter(|c| {
            [
                "1.2.840.10008.1.2.2",
                "1.2.840.10008.1.2.5",
                "1.2.840.10008.1.2.4.70",
                "1.2.840.10008.1.2.4.80",
                "1.2.840.10008.1.2.4.90",
            ]
            .contains(&c.ts)
        })
        .copied()
        .collect();
    check_cases(&src, &vol.real_volume(), &cases, work.path());
}

/// dciodvfy's error lines for one file (warnings are printed, not counted).
fn dciodvfy_errors(dciodvfy: &Path, file: &Path) -> Vec<String> {
    let out = Command::new(dciodvfy).arg(file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for l in text.lines().filter(|l| l.starts_with("Warning")) {
        eprintln!("dciodvfy {}: {l}", file.file_name().unwrap().to_string_lossy());
    }
    text.lines().filter(|l| l.starts_with("Error")).map(String::from).collect()
}

#[test]
fn dciodvfy_finds_no_errors_in_written_objects() {
    let Some(dciodvfy) = tool("dciodvfy") else { return };
    let work = tempfile::tempdir().unwrap();
    let vol =
        smooth_i16([32, 24, 3], oblique_affine(0.8, 0.8, 4.0, 10.0, [0.0; 3]), Rescale { slope: 0.5, intercept: 0.0 });
    let classic = write_mr_series(&vol, &meta("iod", 1, "T1 TSE"), &work.path().join("classic")).unwrap();
    let enhanced = work.path().join("enhanced.dcm");
    write_enhanced_mr(&vol, &meta("iod", 2, "T1 3D"), &enhanced).unwrap();
    for f in [&classic[1], &enhanced] {
        let errors = dciodvfy_errors(&dciodvfy, f);
        assert!(errors.is_empty(), "{}:\n{}", f.display(), errors.join("\n"));
    }
}

/// Minimal NIfTI-1 reader for dcm2niix's uncompressed output: dims, sform rows, voxels (int16
/// or other integer types widened to f64 with scl_slope/inter applied).
struct Nifti {
    dims: [usize; 3],
    srow: [[f64; 4]; 3],
    data: Vec<f64>,
}

fn read_nifti(path: &Path) -> Nifti {
    let b = std::fs::read(path).unwrap();
    assert_eq!(i32::from_le_bytes(b[0..4].try_into().unwrap()), 348, "not a little-endian NIfTI-1 file");
    let i16_at = |o: usize| i16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let f32_at = |o: usize| f32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as f64;
    let dims = [i16_at(42) as usize, i16_at(44) as usize, i16_at(46) as usize];
    let datatype = i16_at(70);
    let vox_offset = f32_at(108) as usize;
    let (slope, inter) = (f32_at(112), f32_at(116));
    let (slope, inter) = if slope == 0.0 { (1.0, 0.0) } else { (slope, inter) };
    let mut srow = [[0.0; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = f32_at(280 + 16 * r + 4 * c);
        }
    }
    let n = dims.iter().product::<usize>();
    let raw = &b[vox_offset..];
    let data: Vec<f64> = match datatype {
        4 => raw.chunks_exact(2).take(n).map(|c| i16::from_le_bytes([c[0], c[1]]) as f64).collect(),
        512 => raw.chunks_exact(2).take(n).map(|c| u16::from_le_bytes([c[0], c[1]]) as f64).collect(),
        8 => raw.chunks_exact(4).take(n).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        16 => raw.chunks_exact(4).take(n).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        t => panic!("NIfTI datatype {t} not handled by this test"),
    };
    assert_eq!(data.len(), n, "short NIfTI data");
    Nifti { dims, srow, data: data.into_iter().map(|v| v * slope + inter).collect() }
}

#[test]
fn geometry_matches_dcm2niix() {
    let Some(dcm2niix) = tool("dcm2niix") else { return };
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("dicom");
    // Oblique about two axes, anisotropic pixels, distinct value at every voxel.
    let mut affine = oblique_affine(0.6, 0.9, 3.5, 14.0, [-52.0, 31.5, -80.25]);
    let (c, s) = (9f64.to_radians().cos(), 9f64.to_radians().sin());
    // Rotate the three axis columns (not the origin) by 9 degrees about S-I.
    let [row0, row1, _, _] = &mut affine;
    for (x, y) in row0.iter_mut().zip(row1.iter_mut()).take(3) {
        (*x, *y) = (c * *x - s * *y, s * *x + c * *y);
    }
    let vol: StoredVolume = unique_i16([36, 28, 9], affine, Rescale::IDENTITY);
    write_mr_series(&vol, &meta("niix", 4, "T1 TSE obl"), &src).unwrap();
    let out = work.path().join("nii");
    std::fs::create_dir_all(&out).unwrap();
    Run::of(Command::new(&dcm2niix).args(["-z", "n", "-b", "n", "-f", "vol", "-o"]).arg(&out).arg(&src)).success();
    let nii: PathBuf = out.join("vol.nii");
    let n = read_nifti(&nii);
    let l = load_series(&src, &Selection::only()).unwrap();
    assert_eq!(n.data.len(), l.volume.data.len());

    // Index every NIfTI voxel by value (all distinct).
    let mut where_: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for (idx, v) in n.data.iter().enumerate() {
        assert!(where_.insert(v.round() as i64, idx).is_none(), "value {v} repeated in the NIfTI");
    }
    let [nx, ny, _] = n.dims;
    let mut worst = 0f64;
    let mut checked = 0;
    for (i, j, k) in [(0, 0, 0), (35, 0, 0), (0, 27, 0), (0, 0, 8), (35, 27, 8), (17, 9, 4), (3, 21, 6)] {
        let v = l.volume.get(i, j, k) as i64;
        let idx = *where_.get(&v).unwrap_or_else(|| panic!("value {v} not in dcm2niix output"));
        // NIfTI order: x fastest.
        let (x, y, z) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
        let ras = [0, 1, 2]
            .map(|r| n.srow[r][0] * x as f64 + n.srow[r][1] * y as f64 + n.srow[r][2] * z as f64 + n.srow[r][3]);
        let lps_niix = [-ras[0], -ras[1], ras[2]];
        let ours = l.volume.world([i as f64, j as f64, k as f64]);
        let d = (0..3).map(|r| (ours[r] - lps_niix[r]).abs()).fold(0.0, f64::max);
        worst = worst.max(d);
        checked += 1;
        assert!(d < 1e-3, "voxel ({i},{j},{k}) value {v}: ours {ours:?}, dcm2niix {lps_niix:?} (LPS mm)");
    }
    eprintln!("dcm2niix geometry: {checked} voxels, worst world distance {worst:.2e} mm (sform stored as float32)");
}

/// Corrupt the compressed stream of one slice in every encapsulated syntax (and the deflated
/// data set): loading must return (an error, or values if the codec cannot tell), never panic.
#[test]
fn corrupt_compressed_data_never_panics() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let vol = smooth_i16([40, 32, 4], oblique_affine(1.0, 1.0, 3.0, 0.0, [0.0; 3]), Rescale::IDENTITY);
    write_mr_series(&vol, &meta("corrupt", 1, "T1"), &src).unwrap();
    let mut outcomes = Vec::new();
    for (n, c) in LOSSLESS_16.iter().enumerate().filter(|(_, c)| c.tool != "dcmconv" || c.ts.ends_with(".99")) {
        let Some(t) = tool(c.tool) else { continue };
        let dst = work.path().join(format!("c{n}"));
        convert_dir(&t, c.args, &src, &dst);
        let victim = files(&dst)[1].clone();
        let clean = std::fs::read(&victim).unwrap();
        for (variant, seed) in [("xor", 0x5Au8), ("zero", 0u8)] {
            let mut b = clean.clone();
            let len = b.len();
            let start = len.saturating_sub(len / 3).max(len / 2);
            for (i, x) in b[start..len - 12].iter_mut().enumerate() {
                *x = if seed == 0 { 0 } else { *x ^ seed.wrapping_add(i as u8) };
            }
            std::fs::write(&victim, &b).unwrap();
            let r = std::panic::catch_unwind(|| load_series(&dst, &Selection::only()).map(|_| ()));
            match r {
                Err(_) => panic!("{} ({variant}): loading a corrupt file panicked", c.name),
                Ok(Ok(())) => outcomes.push(format!("{} {variant}: loaded (codec did not detect)", c.name)),
                Ok(Err(e)) => {
                    assert!(e.to_string().contains(&*victim.file_name().unwrap().to_string_lossy()), "{e}");
                    outcomes.push(format!("{} {variant}: {e}", c.name));
                }
            }
        }
    }
    for o in outcomes {
        eprintln!("{o}");
    }
}

/// `fmseg convert` (DICOM series -> .nii.gz) against dcm2niix on an oblique series: every voxel
/// value sits at the same world position in both files.
#[test]
fn convert_command_matches_dcm2niix() {
    let Some(dcm2niix) = tool("dcm2niix") else { return };
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("dicom");
    let affine = oblique_affine(0.7, 0.8, 4.0, 17.0, [-61.0, 22.5, -40.0]);
    let vol: StoredVolume = unique_i16([30, 26, 7], affine, Rescale::IDENTITY);
    write_mr_series(&vol, &meta("convert", 5, "T1 TSE tra"), &src).unwrap();
    let ours_path = work.path().join("ours.nii.gz");
    Fmseg::new().args(["convert", src.to_str().unwrap(), ours_path.to_str().unwrap()]).run().success();
    let ours = fmseg::io::nifti::read(&ours_path).unwrap();
    let niix_dir = work.path().join("nii");
    std::fs::create_dir_all(&niix_dir).unwrap();
    Run::of(Command::new(&dcm2niix).args(["-z", "n", "-b", "n", "-f", "vol", "-o"]).arg(&niix_dir).arg(&src)).success();
    let n = read_nifti(&niix_dir.join("vol.nii"));
    assert_eq!(n.data.len(), ours.data.len());
    let mut where_niix = std::collections::HashMap::new();
    for (idx, v) in n.data.iter().enumerate() {
        where_niix.insert(v.round() as i64, idx);
    }
    let [nx, ny, _] = n.dims;
    let mut worst = 0f64;
    for i in (0..ours.dims[0]).step_by(7) {
        for j in (0..ours.dims[1]).step_by(5) {
            for k in 0..ours.dims[2] {
                let v = ours.get(i, j, k).round() as i64;
                let idx = where_niix[&v];
                let (x, y, z) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
                let ras = [0, 1, 2].map(|r| {
                    n.srow[r][0] * x as f64 + n.srow[r][1] * y as f64 + n.srow[r][2] * z as f64 + n.srow[r][3]
                });
                let w = ours.world([i as f64, j as f64, k as f64]);
                let d = (w[0] + ras[0]).abs().max((w[1] + ras[1]).abs()).max((w[2] - ras[2]).abs());
                worst = worst.max(d);
                assert!(d < 1e-3, "value {v} at ({i},{j},{k}): fmseg convert {w:?}, dcm2niix {ras:?} (RAS)");
            }
        }
    }
    eprintln!("fmseg convert vs dcm2niix: worst world distance {worst:.2e} mm");
}

// ------------------------------------------------------------------ DICOM SEG against its readers

/// The SEG checkers' Python (scripts/install-dicom-peers.sh): `$FMSEG_DICOM_PYTHON`, else the
/// script's default venv, else `None` with a skip notice (a failure with
/// `FMSEG_REQUIRE_DICOM_PEERS` set, as in CI).
fn seg_python() -> Option<PathBuf> {
    let default = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fmseg/dicom-peers/bin/python"));
    let p = std::env::var_os("FMSEG_DICOM_PYTHON").map(PathBuf::from).or(default).filter(|p| p.is_file());
    if p.is_none() {
        assert!(
            std::env::var_os("FMSEG_REQUIRE_DICOM_PEERS").is_none(),
            "no highdicom/dcmqi Python but FMSEG_REQUIRE_DICOM_PEERS is set (run scripts/install-dicom-peers.sh)"
        );
        eprintln!("SKIPPED: highdicom/dcmqi not installed (run scripts/install-dicom-peers.sh)");
    }
    p
}

/// A mask on `grid` that no flip or transpose maps onto itself: a wedge (`i < j`) in some
/// slices, one voxel in a corner, nothing in slice 0.
fn wedge_mask(grid: &Volume) -> Volume {
    let [ni, nj, nk] = grid.dims;
    let mut data = vec![0f32; ni * nj * nk];
    for i in 0..ni {
        for j in 0..nj {
            for k in 1..nk {
                if i + 2 < j && k % 2 == 1 || (i, j, k) == (ni - 1, 0, nk - 1) {
                    data[(i * nj + j) * nk + k] = 1.0;
                }
            }
        }
    }
    Volume { dims: grid.dims, data, affine: grid.affine }
}

/// Write the SEG of `mask` for the series in `source` and check it: dciodvfy (no errors), then
/// scripts/check_seg.py (highdicom and dcmqi against the mask by world position).
fn check_seg(source: &Path, mask: impl Fn(&Volume) -> Volume, work: &Path, label: &str) {
    let l = load_series(source, &Selection::only()).unwrap_or_else(|e| panic!("{label}: {e:#}"));
    let mask = mask(&l.volume);
    let dir = work.join(format!("seg-{label}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (seg, nii) = (dir.join("fm_seg.dcm"), dir.join("fm_mask.nii.gz"));
    let d = SegDescription::fmseg("test");
    std::fs::write(&seg, encode_seg(&mask, &l.slices, &d).unwrap()).unwrap();
    fmseg::io::nifti::write(&nii, &mask, fmseg::io::nifti::WriteType::U8).unwrap();
    if let Some(dciodvfy) = tool("dciodvfy") {
        let errors = dciodvfy_errors(&dciodvfy, &seg);
        assert!(errors.is_empty(), "{label}: dciodvfy:\n{}", errors.join("\n"));
    }
    let Some(python) = seg_python() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_seg.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(&seg).arg(&nii).arg(source);
    if mask.data.iter().all(|&v| v == 0.0) {
        cmd.arg("--empty");
    }
    eprintln!("{label}:");
    Run::of(&mut cmd).success();
}

/// An oblique classic series (tilted 14 degrees, anisotropic, odd sizes so frames do not end
/// on byte boundaries), an Enhanced multi-frame source, and an empty mask.
#[test]
fn seg_is_valid_and_reads_back_as_the_mask() {
    let work = tempfile::tempdir().unwrap();
    let affine = oblique_affine(0.75, 0.9, 4.5, 14.0, [-60.0, 30.0, -80.0]);
    let vol = smooth_i16([37, 29, 6], affine, Rescale { slope: 0.5, intercept: 0.0 });
    let classic = work.path().join("classic");
    write_mr_series(&vol, &meta("seg", 3, "T1 TSE tra obl"), &classic).unwrap();
    check_seg(&classic, wedge_mask, work.path(), "oblique classic");
    check_seg(&classic, |g| Volume { data: vec![0.0; g.data.len()], ..g.clone() }, work.path(), "empty");
    let enhanced = work.path().join("enhanced");
    write_enhanced_mr(&vol, &meta("seg-enh", 4, "T1 3D"), &enhanced.join("enh.dcm")).unwrap();
    check_seg(&enhanced, wedge_mask, work.path(), "enhanced");
}

/// The source in each lossless transfer syntax: the SEG (always explicit VR little endian)
/// copies the same patient and study and references the same instances.
#[test]
fn seg_of_every_source_transfer_syntax() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let vol = smooth_i16([30, 26, 4], oblique_affine(0.8, 0.8, 4.0, -9.0, [5.0, -3.0, 12.0]), Rescale::IDENTITY);
    write_mr_series(&vol, &meta("seg-ts", 5, "T1 TSE"), &src).unwrap();
    let want = load_series(&src, &Selection::only()).unwrap();
    let d = SegDescription::fmseg("test");
    let reference = seg_object(&wedge_mask(&want.volume), &want.slices, &d).unwrap();
    for c in LOSSLESS_16 {
        let Some(t) = tool(c.tool) else { continue };
        let dst = work.path().join(c.ts);
        convert_dir(&t, c.args, &src, &dst);
        assert_eq!(transfer_syntax(&files(&dst)[0]), c.ts);
        check_seg(&dst, wedge_mask, work.path(), c.name);
        let l = load_series(&dst, &Selection::only()).unwrap();
        let got = seg_object(&wedge_mask(&l.volume), &l.slices, &d).unwrap();
        for tag in [
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::STUDY_INSTANCE_UID,
            tags::FRAME_OF_REFERENCE_UID,
            tags::SERIES_INSTANCE_UID,
            tags::SOP_INSTANCE_UID,
            tags::PIXEL_DATA,
        ] {
            assert_eq!(
                got.element(tag).unwrap().to_bytes().unwrap(),
                reference.element(tag).unwrap().to_bytes().unwrap(),
                "{}: {tag}",
                c.name
            );
        }
    }
}
