//! The C ABI from C, as a scanner's software would use it: `examples/c/segment.c` and
//! `tests/c/volume_abi.c` (written against `include/fmseg.h` alone) are built with
//! `cc -lfmseg` against the library `cargo test` built, and
//! - both produce, on a synthetic study with the bundled weights, exactly the mask that
//!   `fmseg segment` writes for it (the DICOM directory through `fmseg_segment_dicom`, the same
//!   image as voxels + dims + affine through `fmseg_segment_volume`);
//! - every bad argument (volume_abi's 40 `errors` cases) gets its status code and a message;
//! - under valgrind memcheck, the paths that do not run the network (engine creation and
//!   freeing, every error case) show no invalid access and no leak. A full segmentation under
//!   valgrind takes about 35 minutes here (the CPU engine runs ~1700x slower), so it is a
//!   documented manual check (README), not a test.
//!
//! Needs a C compiler (`cc`) and valgrind (`scripts/install-debian-deps.sh`); without them the
//! tests print a notice and pass as skipped, unless `FMSEG_REQUIRE_DICOM_TOOLS` is set (CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::cli::{Fmseg, Run};

use fmseg::io::nifti;
use fmseg::volume::Volume;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of this build's `libfmseg.so`: `cargo test` builds the library only as an
/// rlib, so the cdylib is built here (once per test process) with the same profile into the
/// same target directory, never a stale one left by an earlier `cargo build`.
fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile_dir = Path::new(env!("CARGO_BIN_EXE_fmseg")).parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(repo()).args(["build", "--lib", "--locked", "--target-dir"]).arg(target_dir);
        if profile_dir.ends_with("release") {
            c.arg("--release");
        }
        Run::of(&mut c).success();
        assert!(
            profile_dir.join("libfmseg.so").is_file(),
            "cargo build --lib made no {}",
            profile_dir.join("libfmseg.so").display()
        );
        profile_dir
    })
    .clone()
}

fn have(tool: &str) -> bool {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("FMSEG_REQUIRE_DICOM_TOOLS").is_none(),
            "{tool} is required here (FMSEG_REQUIRE_DICOM_TOOLS is set): scripts/install-debian-deps.sh installs it"
        );
        eprintln!("SKIPPED: {tool} not found (scripts/install-debian-deps.sh installs it)");
    }
    found
}

/// `cc` a C program with warnings as errors against the header and the library only.
fn build_c(source: &Path, name: &str) -> PathBuf {
    let lib = lib_dir();
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let o = Run::of(
        Command::new("cc")
            .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&exe)
            .arg(source)
            .arg("-I")
            .arg(repo().join("include"))
            .arg("-L")
            .arg(&lib)
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .args(["-lfmseg", "-lm"]),
    );
    assert_eq!(o.code(), Some(0), "{} does not build against include/fmseg.h:\n{o}", source.display());
    exe
}

/// The shipped weights: trained, so the masks compared below are not trivially empty or full.
fn bundled_weights() -> PathBuf {
    repo().join("weights/fmseg-unet25d.fmw")
}

/// One synthetic study (`fmseg phantom`, set seed 2, case 0: lesions on both sides), its CLI
/// mask (`fmseg segment --threads 2`), made once per test process.
struct Study {
    dicom: PathBuf,
    cli_mask: Volume,
    _dir: tempfile::TempDir,
}

fn study() -> &'static Study {
    static S: OnceLock<Study> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("set");
        Fmseg::new().arg("phantom").arg("--out").arg(&set).args(["--seed", "2"]).run().success();
        let dicom = set.join("case_000/dicom");
        let out = dir.path().join("cli");
        Fmseg::new()
            .arg("segment")
            .arg(&dicom)
            .arg("--out")
            .arg(&out)
            .arg("--weights")
            .arg(bundled_weights())
            .args(["--threads", "2"])
            .run()
            .success();
        let cli_mask = nifti::read(out.join("fm_mask.nii.gz")).unwrap();
        let fm = cli_mask.data.iter().filter(|&&v| v == 1.0).count();
        eprintln!("CLI mask: {:?} voxels, {fm} FM", cli_mask.dims);
        assert!(fm > 0 && fm < cli_mask.data.len() / 10, "a mask worth comparing: {fm} FM voxels");
        Study { dicom, cli_mask, _dir: dir }
    })
}

/// The CLI's mask in the ABI's layout (column fastest, then row, then slice), as bytes.
fn abi_layout(mask: &Volume) -> Vec<u8> {
    let [ni, nj, nk] = mask.dims;
    let mut out = vec![0u8; ni * nj * nk];
    for i in 0..ni {
        for j in 0..nj {
            for k in 0..nk {
                out[(k * nj + j) * ni + i] = mask.data[(i * nj + j) * nk + k] as u8;
            }
        }
    }
    out
}

fn assert_same_mask(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: mask size");
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{what}: {differ} voxel(s) differ from `fmseg segment`'s mask");
}

#[test]
fn the_c_example_segments_a_dicom_series_as_the_cli_does() {
    if !have("cc") {
        return;
    }
    let s = study();
    let exe = build_c(&repo().join("examples/c/segment.c"), "segment-dicom");
    let mask = Path::new(env!("CARGO_TARGET_TMPDIR")).join("segment-dicom-mask.raw");
    let o = Run::of(
        Command::new(&exe).args(["--threads", "2", "--no-warm-up"]).arg(bundled_weights()).arg(&s.dicom).arg(&mask),
    )
    .success();
    let stdout = o.stdout();
    assert!(stdout.contains("fmseg ") && stdout.contains(" on "), "version and device: {stdout}");
    assert_same_mask(&std::fs::read(&mask).unwrap(), &abi_layout(&s.cli_mask), "examples/c/segment.c");
}

#[test]
fn a_program_written_against_the_header_alone_segments_voxels_as_the_cli_does() {
    if !have("cc") {
        return;
    }
    let s = study();
    let exe = build_c(&repo().join("tests/c/volume_abi.c"), "volume_abi");
    // The same image the CLI segmented, handed over as voxels + dims + affine.
    let image = fmseg::pipeline::segment::load_input(&s.dicom, None).unwrap().image;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let stem = tmp.join("volume-abi-input");
    let abi = fmseg::embed::latency::PreparedSeries::of(&image);
    let [ni, nj, nk] = abi.dims;
    let mut txt = format!("{ni} {nj} {nk}\n");
    for row in abi.abi_affine.chunks_exact(4) {
        txt += &row.iter().map(|v| format!("{v:.17e}")).collect::<Vec<_>>().join(" ");
        txt += "\n";
    }
    std::fs::write(stem.with_extension("txt"), txt).unwrap();
    std::fs::write(stem.with_extension("f32"), bytemuck::cast_slice::<f32, u8>(&abi.abi_voxels)).unwrap();
    let mask = tmp.join("volume-abi-mask.raw");
    Run::of(Command::new(&exe).arg("segment").arg(bundled_weights()).arg(&stem).arg(&mask).arg("2")).success();
    assert_same_mask(&std::fs::read(&mask).unwrap(), &abi_layout(&s.cli_mask), "fmseg_segment_volume");
}

#[test]
fn every_bad_argument_gets_a_status_and_a_message() {
    if !have("cc") {
        return;
    }
    let exe = build_c(&repo().join("tests/c/volume_abi.c"), "volume_abi_errors");
    let o = Run::of(Command::new(&exe).arg("errors").arg(bundled_weights())).success();
    let stdout = o.stdout();
    let cases = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    assert!(!stdout.contains("WRONG") && cases >= 40, "{cases} cases answered right: {stdout}");
}

/// The Python ctypes example (`examples/python/segment.py`, shown whole in the README) gives
/// the CLI's mask too.
#[test]
fn the_python_ctypes_example_segments_as_the_cli_does() {
    let script = repo().join("examples/python/segment.py");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let code = std::fs::read_to_string(&script).unwrap();
    assert!(readme.contains(code.trim()), "README.md must show examples/python/segment.py as it is");
    if !have("python3") {
        return;
    }
    let s = study();
    let mask = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-ctypes-mask.raw");
    Run::of(
        Command::new("python3")
            .arg(&script)
            .arg(lib_dir().join("libfmseg.so"))
            .arg(bundled_weights())
            .arg(&s.dicom)
            .arg(&mask)
            .args(["--threads", "2", "--no-warm-up"]),
    )
    .success()
    .stdout_has(&["FM voxels"]);
    assert_same_mask(&std::fs::read(&mask).unwrap(), &abi_layout(&s.cli_mask), "examples/python/segment.py");
}

const VALGRIND: &[&str] = &[
    "--error-exitcode=99",
    "--leak-check=full",
    "--show-leak-kinds=definite,indirect",
    "--errors-for-leak-kinds=definite,indirect",
];

#[test]
fn valgrind_finds_no_invalid_access_and_no_leak_off_the_network_path() {
    if !(have("cc") && have("valgrind")) {
        return;
    }
    // Every error case, with engines created and freed (no warm-up) along the way.
    let exe = build_c(&repo().join("tests/c/volume_abi.c"), "volume_abi_valgrind");
    // exit 99: valgrind found errors or leaks; another: a case failed
    Run::of(Command::new("valgrind").args(VALGRIND).arg(&exe).arg("errors").arg(bundled_weights()))
        .success()
        .stderr_has(&["ERROR SUMMARY: 0 errors"]);

    // The example: an engine made, a directory that holds no series refused, the engine freed.
    let exe = build_c(&repo().join("examples/c/segment.c"), "segment-dicom-valgrind");
    let empty = tempfile::tempdir().unwrap();
    // the example's own failure exit (1), not valgrind's 99; the failing call is named
    Run::of(
        Command::new("valgrind")
            .args(VALGRIND)
            .arg(&exe)
            .args(["--no-warm-up", "--threads", "2"])
            .arg(bundled_weights())
            .arg(empty.path())
            .arg(empty.path().join("mask.raw")),
    )
    .exit_code(1)
    .stderr_has(&["ERROR SUMMARY: 0 errors", "fmseg_segment_dicom"]);
    assert!(!empty.path().join("mask.raw").exists(), "no output on failure");
}
