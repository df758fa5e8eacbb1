//! The library's front door ([`fmseg::embed`]): a [`Segmenter`] built once answers every series
//! the same way as `fmseg segment`, from any thread, allocating per call only what the stated
//! budget allows (counted by this binary's global allocator), and a [`SeriesBuilder`] fed
//! slices in any order makes the volume a DICOM directory read makes.
//!
//! Every test here takes `SERIAL`: the allocation count is process-wide, so nothing else may
//! run while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use fmseg::embed::{synthetic_series, Segmenter, SegmenterOptions, SeriesBuilder, SeriesPlan, SliceGeometry};
use fmseg::engine::Device;
use fmseg::volume::Volume;

/// Counts allocations (and their bytes) while `COUNTING` is on, on every thread.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Allocations and bytes while `f` runs.
fn counted<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    (r, ALLOCATIONS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst))
}

fn weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/fmseg-unet25d.fmw")
}

/// A small series (one network window after resampling) so the tests run in seconds.
const PLAN: SeriesPlan = SeriesPlan { dims: [256, 224, 12], spacing_mm: [0.7, 0.7, 6.0] };

fn segmenter() -> &'static Segmenter {
    static S: OnceLock<Segmenter> = OnceLock::new();
    S.get_or_init(|| {
        let mut o = SegmenterOptions::new(weights());
        o.device = Device::Cpu;
        o.threads = 2;
        o.plan = PLAN;
        Segmenter::new(&o).unwrap()
    })
}

/// The network's forward pass (input upload, every layer, logits download) allocates exactly
/// this much per call after warm-up: the logits it returns, their shape, and the output's map
/// list. Every activation comes from the engine's buffer pool, every per-op vector from
/// per-thread scratch.
const NETWORK_ALLOCATIONS: usize = 3;

#[test]
fn after_warm_up_the_network_allocates_only_what_it_returns() {
    let _s = serial();
    let sd = fmseg::weights::load_canonical(&weights()).unwrap();
    let engine = fmseg::engine::AnyEngine::new(Device::Cpu, 2, &sd).unwrap();
    let mut rng = 0x9e37_79b9_u32;
    let data: Vec<f32> = (0..192 * 192 * 16)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            (rng >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect();
    let x = fmseg::tensor::HostTensor::new(vec![1, 1, 192, 192, 16], data).unwrap();
    let first = engine.on_workers(|| engine.logits(&x)).unwrap();
    for _ in 0..4 {
        let (y, n, bytes) = counted(|| engine.on_workers(|| engine.logits(&x)).unwrap());
        eprintln!("forward: {n} allocations, {bytes} bytes");
        assert_eq!(y.data, first.data, "the same logits every call");
        assert_eq!(n, NETWORK_ALLOCATIONS, "allocations in one forward pass ({bytes} bytes)");
        assert!(bytes < y.data.len() * 4 + 4096, "{bytes} bytes: little beyond the {} of the logits", y.data.len() * 4);
    }
}

/// What one `Segmenter::segment` call allocates after warm-up, at most, for a series of the
/// planned size on the CPU: the network's 3 per window (above) and the pipeline around it,
/// which works in whole-volume steps: the reoriented, resampled, padded and normalised volumes,
/// the window plan's weight map, the window batch and blended logits, the argmax and its way
/// back to the input grid, the report's component labels and Otsu copy (17 buffers of about
/// one volume each), the returned mask and findings (a few per lesion found), and their small
/// bookkeeping. Measured: 75-76 for the test series below with the weights of 2026-12-03
/// (625-2227 FM voxels); 81-82 with those of 2026-12-06 where they find 2 lesions, 86 where 5.
const CALL_ALLOCATIONS_BASE: usize = 80;
/// What each listed lesion adds at most (its entry, its slices and their growth).
const CALL_ALLOCATIONS_PER_LESION: usize = 2;

#[test]
fn after_warm_up_a_call_allocates_a_fixed_budget() {
    let _s = serial();
    let seg = segmenter();
    let inputs: Vec<Volume> = [1, 2, 3, 4, 1].iter().map(|&i| synthetic_series(&PLAN, i).unwrap()).collect();
    let mut counts = Vec::new();
    for v in &inputs {
        let (r, n, bytes) = counted(|| seg.segment(v).unwrap());
        eprintln!(
            "call: {n} allocations, {bytes} bytes; {} FM voxels in {} lesions ({} listed); {:.3} s (network {:.3} s)",
            r.findings.fm_voxels,
            r.findings.lesion_count,
            r.findings.lesions.len(),
            r.timings.total,
            r.timings.network
        );
        assert_eq!(r.mask.dims, PLAN.dims);
        let budget = CALL_ALLOCATIONS_BASE + CALL_ALLOCATIONS_PER_LESION * r.findings.lesions.len();
        assert!(n <= budget, "{n} allocations, the budget for {} lesions is {budget}", r.findings.lesions.len());
        counts.push((n, bytes));
    }
    // The same input allocates the same again: nothing grows, is rebuilt or depends on how
    // the work was split between threads.
    assert_eq!(counts[0], counts[4], "the same series twice: {counts:?}");
    // Their bytes: the 17 volume-sized buffers (the series is 688 k voxels, its preprocessed
    // grid 590 k) and little more.
    let voxels = PLAN.dims.iter().product::<usize>();
    assert!(counts.iter().all(|&(_, b)| b < 18 * voxels * 4), "bytes per call: {counts:?}");
}

/// Calls from several threads queue and never disturb each other: the same masks as one
/// thread calling in turn.
#[test]
fn parallel_calls_give_the_sequential_results() {
    let _s = serial();
    let seg = segmenter();
    let inputs: Vec<Volume> = (5..=7).map(|i| synthetic_series(&PLAN, i).unwrap()).collect();
    let sequential: Vec<Volume> = inputs.iter().map(|v| seg.segment(v).unwrap().mask).collect();
    let parallel: Vec<Volume> = std::thread::scope(|sc| {
        let hs: Vec<_> = inputs.iter().map(|v| sc.spawn(move || seg.segment(v).unwrap().mask)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(parallel, sequential);
}

/// A DICOM series pushed file by file in any order makes the volume a directory read makes;
/// bad slices are refused as they arrive, a gap when the series is finished.
#[test]
fn series_builder_assembles_what_a_directory_read_assembles() {
    use fmseg::io::dicom::{
        load_series, write_mr_series, MrSeriesMeta, Rescale, Selection, StoredSamples, StoredVolume,
    };
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let v = synthetic_series(&SeriesPlan { dims: [40, 32, 7], spacing_mm: [0.9, 0.8, 4.0] }, 2).unwrap();
    // An oblique stack stored head to foot, with a rescale, so order and geometry matter.
    let (c, s) = (0.2f64.cos(), 0.2f64.sin());
    let mut a = v.affine;
    a[1][1] = 0.8 * c;
    a[2][1] = -0.8 * s;
    a[1][2] = -4.0 * s;
    a[2][2] = -4.0 * c;
    a[0][3] = -20.0;
    let stored = StoredSamples::I16(v.data.iter().map(|&x| x.round() as i16).collect());
    let vol = StoredVolume::new(v.dims, stored, a, vec![Rescale { slope: 0.5, intercept: 10.0 }]).unwrap();
    let meta = MrSeriesMeta { uid_seed: "series-builder".into(), ..MrSeriesMeta::default() };
    let files = write_mr_series(&vol, &meta, dir.path()).unwrap();
    let want = load_series(dir.path(), &Selection::only()).unwrap().volume;

    let mut b = SeriesBuilder::with_capacity("builder test", 32, 40, files.len());
    for i in [3, 0, 6, 1, 5, 2, 4] {
        b.push_dicom_file(&files[i]).unwrap();
    }
    let got = b.finish().unwrap();
    assert_eq!(got.dims, want.dims);
    assert_eq!(got.data, want.data);
    for r in 0..4 {
        for c in 0..4 {
            assert!((got.affine[r][c] - want.affine[r][c]).abs() < 1e-6, "{:?} vs {:?}", got.affine, want.affine);
        }
    }

    // Refused as they arrive: a slice at a position already taken, a slice of another size,
    // non-finite pixels, an unusable rescale.
    let mut b = SeriesBuilder::new("builder test", 32, 40);
    b.push_dicom_file(&files[0]).unwrap();
    let e = b.push_dicom_file(&files[0]).unwrap_err().to_string();
    assert!(e.contains("slice 2 of series builder test") && e.contains("slice 1"), "{e}");
    let g = SliceGeometry {
        position: [0.0, 0.0, 500.0],
        orientation: [1.0, 0.0, 0.0, 0.0, c, -s],
        pixel_spacing: [0.8, 0.9],
    };
    let e = b.push(g, &[0u16; 10], 1.0, 0.0).unwrap_err().to_string();
    assert!(e.contains("holds 10 pixels") && e.contains("32 x 40"), "{e}");
    let mut px = vec![1.0f32; 32 * 40];
    px[77] = f32::NAN;
    let e = b.push(g, &px, 1.0, 0.0).unwrap_err().to_string();
    assert!(e.contains("pixel 77 is not finite"), "{e}");
    let e = b.push(g, &[1u16; 32 * 40], 0.0, 0.0).unwrap_err().to_string();
    assert!(e.contains("rescale slope 0"), "{e}");

    // Found when finished: a missing slice.
    let mut b = SeriesBuilder::new("builder test", 32, 40);
    for i in [0, 1, 2, 4, 5, 6] {
        b.push_dicom_file(&files[i]).unwrap();
    }
    let e = b.finish().unwrap_err().to_string();
    assert!(e.contains("builder test"), "{e}");
    assert!(e.to_lowercase().contains("missing") || e.contains("gap"), "{e}");
}
