//! The C ABI (`include/fmseg.h`, generated from this file by cbindgen; `scripts/check-header.sh`
//! fails when the checked-in header is stale).
//!
//! Rules every exported function keeps:
//! - it returns an [`FmsegStatus`]; on an error the message is kept per thread and read with
//!   [`fmseg_last_error`] (valid until the thread's next fmseg call);
//! - a panic never crosses into C: each body runs under `catch_unwind` and a panic becomes
//!   `FMSEG_ERROR_PANIC` with its message;
//! - pointers are checked for NULL before use; lengths are given with every buffer;
//! - an engine handle is an opaque number from a registry, never a pointer fmseg dereferences:
//!   a freed (or never created) handle is refused with `FMSEG_ERROR_INVALID_HANDLE`, exactly,
//!   because numbers are never reused. Freeing an engine while another thread is inside a
//!   call on it is safe: that call finishes on its own reference.
//!
//! Voxel layout across the ABI is the one of a stack of DICOM frames and of NIfTI: the column
//! index `i` fastest, then the row `j`, then the slice `k`: `voxels[(k * rows + j) * cols + i]`,
//! with `dims = {cols, rows, slices}` and the affine mapping `(i, j, k, 1)` to LPS millimetres
//! (row-major 4 x 4). Masks come back in the same layout.

// The entry points are C's: their pointer contract (valid for the lengths given, or NULL
// where documented) is the header's, checked as far as C allows (NULL, lengths). Marking them
// `unsafe` would change nothing for C callers and would put a Rust-only `# Safety` section
// into every comment cbindgen copies into the header.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::segmenter::{Segmentation, Segmenter, SegmenterOptions, SeriesPlan, Timings};
use crate::engine::Device;
use crate::error::Error;
use crate::volume::Volume;

/// The ABI's version: raised whenever a signature or a struct in `fmseg.h` changes.
pub const FMSEG_ABI_VERSION: u32 = 1;

/// What a call returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FmsegStatus {
    FmsegOk = 0,
    /// A required pointer was NULL.
    FmsegErrorNullArgument = 1,
    /// An argument is out of range: dims, an affine that is not invertible or not finite, options.
    FmsegErrorInvalidArgument = 2,
    /// The engine handle is not a live engine (freed, or never created).
    FmsegErrorInvalidHandle = 3,
    /// The output buffer is smaller than the image; the needed dims were written where asked.
    FmsegErrorBufferTooSmall = 4,
    /// The image cannot be segmented (NaN voxels, a constant image, a DICOM problem, ...).
    FmsegErrorBadInput = 5,
    /// A file could not be read.
    FmsegErrorIo = 6,
    /// The weights file is unreadable or does not fit the network.
    FmsegErrorWeights = 7,
    /// The device cannot run (no GPU when one was asked for, out of memory).
    FmsegErrorDevice = 8,
    /// fmseg panicked (a bug): the message says where.
    FmsegErrorPanic = 9,
}

/// Where to run.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FmsegDevice {
    /// The GPU when one is usable, else the CPU.
    FmsegDeviceAuto = 0,
    FmsegDeviceCpu = 1,
    FmsegDeviceCuda = 2,
}

/// How to build an engine; fill with `fmseg_options_init`, then change what differs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FmsegOptions {
    /// An `FmsegDevice` value (a plain integer here, so that any value C stores is checked,
    /// not undefined behaviour).
    pub device: u32,
    /// CPU worker threads (0 = all cores).
    pub threads: u32,
    /// Non-zero: the reference's test-time augmentation (13 passes, seed `tta_seed`).
    pub tta: u32,
    pub tta_seed: u64,
    /// Non-zero: one warm-up segmentation of a `plan_dims`/`plan_spacing_mm` series at creation.
    pub warm_up: u32,
    /// The series size to warm up for: `{cols, rows, slices}` and their spacing in mm.
    pub plan_dims: [usize; 3],
    pub plan_spacing_mm: [f64; 3],
}

/// Seconds per stage of the engine's last successful call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FmsegTimings {
    pub preprocess_s: f64,
    /// Inside the network's forward passes.
    pub network_s: f64,
    /// The rest of the sliding window (cutting patches, blending).
    pub windows_s: f64,
    pub postprocess_s: f64,
    pub report_s: f64,
    /// From the call's start to its mask (DICOM: not counting the read).
    pub total_s: f64,
}

/// What the engine's last successful call found.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FmsegFindings {
    pub fm_voxels: usize,
    pub fm_volume_ml: f64,
    pub left_ml: f64,
    pub right_ml: f64,
    pub lesion_count: usize,
}

/// An engine (opaque).
pub struct FmsegEngine {
    _private: [u8; 0],
}

struct Engine {
    segmenter: Segmenter,
    last: Mutex<(FmsegTimings, FmsegFindings)>,
}

/// Live engines by handle number; numbers are never reused.
static ENGINES: Mutex<BTreeMap<usize, Arc<Engine>>> = Mutex::new(BTreeMap::new());
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(0x1000);

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// A failed call: its status and message.
struct Failure(FmsegStatus, String);

impl Failure {
    fn new(status: FmsegStatus, msg: impl Into<String>) -> Self {
        Failure(status, msg.into())
    }
}

/// Input errors of a segmentation call.
fn input_failure(e: Error) -> Failure {
    let status = match &e {
        Error::Io { .. } => FmsegStatus::FmsegErrorIo,
        Error::Device(_) => FmsegStatus::FmsegErrorDevice,
        _ => FmsegStatus::FmsegErrorBadInput,
    };
    Failure(status, e.to_string())
}

/// Runs `body`, turning an error or a panic into a status and the thread's last error.
fn guarded(what: &str, body: impl FnOnce() -> Result<(), Failure>) -> FmsegStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_error("");
            FmsegStatus::FmsegOk
        }
        Ok(Err(Failure(status, msg))) => {
            set_error(&format!("{what}: {msg}"));
            status
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(&format!("{what}: fmseg panicked (a bug; please report it): {msg}"));
            FmsegStatus::FmsegErrorPanic
        }
    }
}

fn live_engine(handle: *const FmsegEngine) -> Result<Arc<Engine>, Failure> {
    if handle.is_null() {
        return Err(Failure::new(FmsegStatus::FmsegErrorNullArgument, "the engine handle is NULL"));
    }
    let map = ENGINES.lock().unwrap_or_else(|e| e.into_inner());
    map.get(&(handle as usize)).cloned().ok_or_else(|| not_live(handle))
}

fn not_live(handle: *const FmsegEngine) -> Failure {
    Failure::new(
        FmsegStatus::FmsegErrorInvalidHandle,
        format!("{handle:p} is not a live engine (freed already, or not made by fmseg_engine_create)"),
    )
}

fn c_path(p: *const c_char, what: &str) -> Result<PathBuf, Failure> {
    if p.is_null() {
        return Err(Failure::new(FmsegStatus::FmsegErrorNullArgument, format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string (the header says so).
    let s = unsafe { CStr::from_ptr(p) };
    let s =
        s.to_str().map_err(|_| Failure::new(FmsegStatus::FmsegErrorInvalidArgument, format!("{what} is not UTF-8")))?;
    Ok(PathBuf::from(s))
}

fn null(what: &str) -> Failure {
    Failure::new(FmsegStatus::FmsegErrorNullArgument, format!("{what} is NULL"))
}

/// The ABI version this library implements (`FMSEG_ABI_VERSION` of the header it was built with).
#[no_mangle]
pub extern "C" fn fmseg_abi_version() -> u32 {
    FMSEG_ABI_VERSION
}

/// fmseg's version, e.g. "0.1.0" (a static string).
#[no_mangle]
pub extern "C" fn fmseg_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The message of this thread's last failed call ("" after a successful one). Valid until
/// this thread's next fmseg call; never NULL.
#[no_mangle]
pub extern "C" fn fmseg_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Fills `options` with the defaults: auto device, all cores, no TTA, warm-up for a
/// 448 x 448 x 24 series of 0.7 x 0.7 x 4 mm.
#[no_mangle]
pub extern "C" fn fmseg_options_init(options: *mut FmsegOptions) -> FmsegStatus {
    guarded("fmseg_options_init", || {
        if options.is_null() {
            return Err(null("options"));
        }
        let plan = SeriesPlan::default();
        let o = FmsegOptions {
            device: FmsegDevice::FmsegDeviceAuto as u32,
            threads: 0,
            tta: 0,
            tta_seed: 0,
            warm_up: 1,
            plan_dims: plan.dims,
            plan_spacing_mm: plan.spacing_mm,
        };
        // SAFETY: checked non-NULL; the caller owns a writable FmsegOptions.
        unsafe { options.write(o) };
        Ok(())
    })
}

/// Builds an engine from a weights file (`.pth`, `.safetensors` or `.fmw`) and `options`
/// (NULL: the defaults), and writes its handle to `*engine`. Slow (loads, prepares, warms up):
/// call it once at start-up.
#[no_mangle]
pub extern "C" fn fmseg_engine_create(
    weights_path: *const c_char,
    options: *const FmsegOptions,
    engine: *mut *mut FmsegEngine,
) -> FmsegStatus {
    guarded("fmseg_engine_create", || {
        if engine.is_null() {
            return Err(null("engine (the handle's destination)"));
        }
        let weights = c_path(weights_path, "weights_path")?;
        let o = if options.is_null() {
            let mut o = std::mem::MaybeUninit::<FmsegOptions>::uninit();
            fmseg_options_init(o.as_mut_ptr());
            // SAFETY: just initialised.
            unsafe { o.assume_init() }
        } else {
            // SAFETY: checked non-NULL; the caller passes an initialised FmsegOptions.
            unsafe { options.read() }
        };
        let device = match o.device {
            0 => Device::Auto,
            1 => Device::Cpu,
            2 => Device::Cuda,
            d => {
                return Err(Failure::new(
                    FmsegStatus::FmsegErrorInvalidArgument,
                    format!("device {d} is not 0, 1 or 2"),
                ))
            }
        };
        if o.plan_dims.contains(&0) || o.plan_spacing_mm.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Failure::new(
                FmsegStatus::FmsegErrorInvalidArgument,
                format!(
                    "plan {:?} voxels of {:?} mm: every size and spacing must be positive",
                    o.plan_dims, o.plan_spacing_mm
                ),
            ));
        }
        let opts = SegmenterOptions {
            weights: vec![weights],
            device,
            threads: o.threads as usize,
            tta: (o.tta != 0).then(|| crate::pipeline::tta::TtaConfig { seed: o.tta_seed, ..Default::default() }),
            probability: false,
            plan: SeriesPlan { dims: o.plan_dims, spacing_mm: o.plan_spacing_mm },
            warm_up: o.warm_up != 0,
        };
        let segmenter = Segmenter::new(&opts).map_err(|e| match e {
            Error::Device(m) => Failure::new(FmsegStatus::FmsegErrorDevice, m),
            e => Failure(FmsegStatus::FmsegErrorWeights, e.to_string()),
        })?;
        let id = NEXT_HANDLE.fetch_add(16, Ordering::Relaxed);
        let e = Engine { segmenter, last: Mutex::new(Default::default()) };
        ENGINES.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::new(e));
        // SAFETY: checked non-NULL.
        unsafe { engine.write(id as *mut FmsegEngine) };
        Ok(())
    })
}

/// Frees an engine. NULL is accepted (nothing to do); a handle freed before is refused.
#[no_mangle]
pub extern "C" fn fmseg_engine_free(engine: *mut FmsegEngine) -> FmsegStatus {
    guarded("fmseg_engine_free", || {
        if engine.is_null() {
            return Ok(());
        }
        let removed = ENGINES.lock().unwrap_or_else(|e| e.into_inner()).remove(&(engine as usize));
        removed.map(|_| ()).ok_or_else(|| not_live(engine))
    })
}

fn keep(e: &Engine, s: &Segmentation) {
    let t: Timings = s.timings;
    let f = &s.findings;
    *e.last.lock().unwrap_or_else(|e| e.into_inner()) = (
        FmsegTimings {
            preprocess_s: t.preprocess,
            network_s: t.network,
            windows_s: t.windows,
            postprocess_s: t.postprocess,
            report_s: t.report,
            total_s: t.total,
        },
        FmsegFindings {
            fm_voxels: f.fm_voxels,
            fm_volume_ml: f.fm_volume_ml,
            left_ml: f.left_ml,
            right_ml: f.right_ml,
            lesion_count: f.lesion_count,
        },
    );
}

/// The mask (fmseg's voxel order, k fastest) into the caller's buffer (column fastest).
fn write_mask(mask: &Volume, out: &mut [u8]) {
    let [ni, nj, nk] = mask.dims;
    for i in 0..ni {
        for j in 0..nj {
            let src = &mask.data[(i * nj + j) * nk..(i * nj + j + 1) * nk];
            for (k, &v) in src.iter().enumerate() {
                out[(k * nj + j) * ni + i] = (v > 0.5) as u8;
            }
        }
    }
}

/// Segments a volume: `voxels` holds `dims[0] * dims[1] * dims[2]` floats, column fastest
/// (see the header's preamble), `affine_lps` 16 doubles (row-major voxel -> LPS mm). The mask
/// (0 or 1 per voxel, same layout) goes to `mask`, which holds `mask_len` bytes.
#[no_mangle]
pub extern "C" fn fmseg_segment_volume(
    engine: *mut FmsegEngine,
    voxels: *const f32,
    dims: *const usize,
    affine_lps: *const f64,
    mask: *mut u8,
    mask_len: usize,
) -> FmsegStatus {
    guarded("fmseg_segment_volume", || {
        let e = live_engine(engine)?;
        if voxels.is_null() {
            return Err(null("voxels"));
        }
        if dims.is_null() {
            return Err(null("dims"));
        }
        if affine_lps.is_null() {
            return Err(null("affine_lps"));
        }
        if mask.is_null() {
            return Err(null("mask"));
        }
        // SAFETY: non-NULL; the header documents 3 and 16 elements.
        let d: [usize; 3] = unsafe { std::ptr::read(dims as *const [usize; 3]) };
        let a: [f64; 16] = unsafe { std::ptr::read(affine_lps as *const [f64; 16]) };
        let n = d[0]
            .checked_mul(d[1])
            .and_then(|x| x.checked_mul(d[2]))
            .filter(|&n| n > 0 && n <= crate::volume::MAX_INPUT_VOXELS);
        let Some(n) = n else {
            return Err(Failure::new(
                FmsegStatus::FmsegErrorInvalidArgument,
                format!(
                    "dims {d:?}: each must be at least 1 and the product at most {}",
                    crate::volume::MAX_INPUT_VOXELS
                ),
            ));
        };
        if mask_len < n {
            return Err(Failure::new(
                FmsegStatus::FmsegErrorBufferTooSmall,
                format!("mask holds {mask_len} bytes; dims {d:?} need {n}"),
            ));
        }
        let affine = [
            [a[0], a[1], a[2], a[3]],
            [a[4], a[5], a[6], a[7]],
            [a[8], a[9], a[10], a[11]],
            [a[12], a[13], a[14], a[15]],
        ];
        check_affine(&affine)?;
        // SAFETY: the caller passes n floats (the header says so).
        let src = unsafe { std::slice::from_raw_parts(voxels, n) };
        let mut data = vec![0f32; n];
        for i in 0..d[0] {
            for j in 0..d[1] {
                let o = (i * d[1] + j) * d[2];
                for k in 0..d[2] {
                    data[o + k] = src[(k * d[1] + j) * d[0] + i];
                }
            }
        }
        let volume = Volume::new(d, data, affine).map_err(input_failure)?;
        let s = e.segmenter.segment(&volume).map_err(input_failure)?;
        // SAFETY: non-NULL, mask_len >= n bytes (checked above).
        let out = unsafe { std::slice::from_raw_parts_mut(mask, n) };
        write_mask(&s.mask, out);
        keep(&e, &s);
        Ok(())
    })
}

fn check_affine(a: &crate::volume::Affine) -> Result<(), Failure> {
    let bad = |m: String| Err(Failure::new(FmsegStatus::FmsegErrorInvalidArgument, m));
    if a.iter().flatten().any(|v| !v.is_finite()) {
        return bad(format!("affine_lps {a:?} holds a value that is not finite"));
    }
    if a[3] != [0.0, 0.0, 0.0, 1.0] {
        return bad(format!("affine_lps: its last row is {:?}, not [0, 0, 0, 1]", a[3]));
    }
    let det = crate::linalg::det3(&crate::linalg::linear_part(a));
    if det.abs() <= 1e-12 {
        return bad(format!("affine_lps is not invertible (determinant {det:e} of its 3 x 3 part)"));
    }
    Ok(())
}

/// Reads a DICOM series (a directory holding one MR series, a file, or an Enhanced MR object)
/// and segments it. `dims_out` (3) and `affine_out` (16), each optional (NULL), receive the
/// image's dims `{cols, rows, slices}` and its affine; the mask goes to `mask` (`mask_len`
/// bytes, column fastest). With a buffer too small (e.g. `mask = NULL, mask_len = 0` to ask for
/// the size), the call returns `FMSEG_ERROR_BUFFER_TOO_SMALL` after writing `dims_out`.
#[no_mangle]
pub extern "C" fn fmseg_segment_dicom(
    engine: *mut FmsegEngine,
    path: *const c_char,
    mask: *mut u8,
    mask_len: usize,
    dims_out: *mut usize,
    affine_out: *mut f64,
) -> FmsegStatus {
    guarded("fmseg_segment_dicom", || {
        let e = live_engine(engine)?;
        let path = c_path(path, "path")?;
        let loaded = crate::pipeline::segment::load_input(&path, None).map_err(input_failure)?;
        if loaded.info.format != "dicom" {
            return Err(Failure::new(FmsegStatus::FmsegErrorBadInput, format!("{}: not DICOM", path.display())));
        }
        let v = &loaded.image;
        let n = v.data.len();
        if !dims_out.is_null() {
            // SAFETY: non-NULL; the header documents 3 elements.
            unsafe { std::ptr::copy_nonoverlapping(v.dims.as_ptr(), dims_out, 3) };
        }
        if !affine_out.is_null() {
            let flat: Vec<f64> = v.affine.iter().flatten().copied().collect();
            // SAFETY: non-NULL; the header documents 16 elements.
            unsafe { std::ptr::copy_nonoverlapping(flat.as_ptr(), affine_out, 16) };
        }
        if mask.is_null() || mask_len < n {
            return Err(Failure::new(
                FmsegStatus::FmsegErrorBufferTooSmall,
                format!("{}: mask holds {mask_len} bytes; the series ({:?}) needs {n}", path.display(), v.dims),
            ));
        }
        let s = e.segmenter.segment_named(v, Path::new(&path)).map_err(input_failure)?;
        // SAFETY: non-NULL, at least n bytes (checked above).
        let out = unsafe { std::slice::from_raw_parts_mut(mask, n) };
        write_mask(&s.mask, out);
        keep(&e, &s);
        Ok(())
    })
}

/// One field of an engine's last call into `*out`.
fn write_last<T>(
    engine: *const FmsegEngine,
    out: *mut T,
    pick: impl FnOnce(&(FmsegTimings, FmsegFindings)) -> T,
) -> Result<(), Failure> {
    let e = live_engine(engine)?;
    if out.is_null() {
        return Err(null("out"));
    }
    let v = pick(&e.last.lock().unwrap_or_else(|e| e.into_inner()));
    // SAFETY: checked non-NULL.
    unsafe { out.write(v) };
    Ok(())
}

/// The timings of the engine's last successful segmentation (zeros before the first).
#[no_mangle]
pub extern "C" fn fmseg_last_timings(engine: *const FmsegEngine, out: *mut FmsegTimings) -> FmsegStatus {
    guarded("fmseg_last_timings", || write_last(engine, out, |last| last.0))
}

/// What the engine's last successful segmentation found (zeros before the first).
#[no_mangle]
pub extern "C" fn fmseg_last_findings(engine: *const FmsegEngine, out: *mut FmsegFindings) -> FmsegStatus {
    guarded("fmseg_last_findings", || write_last(engine, out, |last| last.1))
}

/// The engine's device, in words (e.g. "cpu (2 threads)"), into `buf` (`len` bytes, NUL-terminated,
/// truncated to fit).
#[no_mangle]
pub extern "C" fn fmseg_engine_device(engine: *const FmsegEngine, buf: *mut c_char, len: usize) -> FmsegStatus {
    guarded("fmseg_engine_device", || {
        let e = live_engine(engine)?;
        if buf.is_null() || len == 0 {
            return Err(null("buf (or len 0)"));
        }
        let name = e.segmenter.device();
        let n = name.len().min(len - 1);
        // SAFETY: non-NULL, `len` bytes writable; n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(name.as_ptr() as *const c_char, buf, n);
            *buf.add(n) = 0;
        }
        Ok(())
    })
}
