//! NIfTI and .npy readers on the reference fixtures (values checked against nibabel / NumPy).

use crate::common;

use fmseg::io::{nifti, npy};
use fmseg::volume;

#[test]
fn reads_the_reference_nifti_like_nibabel() {
    let Some(p) = common::fixture("pipeline_case1.nii.gz") else { return };
    let (v, h) = nifti::read_with_header(&p).unwrap();
    assert_eq!(v.dims, [320, 320, 20]);
    assert_eq!(h.datatype, nifti::Datatype::I16);
    assert_eq!(h.affine_source, nifti::AffineSource::Sform);
    // nibabel: img.affine (srow_* widened from float32)
    let ras = [
        [-0.75, 0.0, 0.0, 120.0],
        [0.0, 0.733_610_7_f32 as f64, -0.831_646_74_f32 as f64, -95.0],
        [0.0, 0.155_933_77_f32 as f64, 3.912_590_5_f32 as f64, -40.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_eq!(h.affine_ras, ras);
    assert_eq!(v.affine, volume::flip_xy(&ras));
    // nibabel: np.asanyarray(img.dataobj)[i, j, k], and the sum of all voxels
    assert_eq!(v.get(10, 20, 5), 394.0);
    assert_eq!(v.get(319, 0, 19), 402.0);
    assert_eq!(v.get(0, 319, 0), 399.0);
    let sum: f64 = v.data.iter().map(|&x| x as f64).sum();
    assert_eq!(sum, 856_557_624.0);
}

#[test]
fn reads_the_reference_npy_files() {
    let Some(dir) = common::fixtures_dir() else { return };
    let cases: [(&str, &str, &[usize], f64); 3] = [
        ("pipeline_case1_preprocessed.npy", "float32", &[240, 240, 16], 0.023178310686489567),
        ("pipeline_case1_logits.npy", "float32", &[1, 2, 240, 240, 16], 57644.27269741657),
        ("pipeline_case1_mask_original_grid.npy", "uint8", &[320, 320, 20], 2019920.0),
    ];
    for (name, dtype, shape, sum) in cases {
        let a = npy::read(dir.join(name)).unwrap();
        assert_eq!(a.data.dtype_name(), dtype, "{name}");
        assert_eq!(a.shape, shape, "{name}");
        let s: f64 = match &a.data {
            npy::NpyData::F32(v) => v.iter().map(|&x| x as f64).sum(),
            npy::NpyData::U8(v) => v.iter().map(|&x| x as f64).sum(),
            _ => unreachable!(),
        };
        assert!((s - sum).abs() <= 1e-6 * sum.abs().max(1.0), "{name}: sum {s} vs NumPy {sum}");
    }
}

// ------------------------------------------------------------------ fuzzing (bounded)

/// Every reader on mutants of its seeds, for a bounded time (`FMSEG_FUZZ_SECONDS`, default 60
/// in all; `scripts/fuzz.sh` runs longer): no panic, no input slower than 10 s. A failing
/// input is saved under `target/fuzz-failures/` and becomes a case in `tests/data/fuzz/`,
/// which is replayed first.
#[test]
fn readers_survive_mutated_inputs() {
    use fmseg::fuzz::{run, Mutator, Target};
    let budget: f64 = std::env::var("FMSEG_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60.0);
    let dir = tempfile::tempdir().unwrap();
    let seeds = fmseg::fuzz::seeds(dir.path()).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let failures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    let check = |target: Target, data: &[u8], label: &str| {
        let t = std::time::Instant::now();
        let r = std::panic::catch_unwind(|| run(target, data, &work));
        let slow = t.elapsed().as_secs_f64() > 10.0;
        if r.is_err() || slow {
            std::fs::create_dir_all(&failures).unwrap();
            let p = failures.join(format!("{}-{label}.bin", target.name()));
            std::fs::write(&p, data).unwrap();
            panic!(
                "{target:?} {} on {label}: input saved to {}",
                if slow { "took > 10 s" } else { "panicked" },
                p.display()
            );
        }
    };
    // the regression cases first
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    for target in Target::ALL {
        let d = corpus.join(target.name());
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            check(target, &std::fs::read(e.path()).unwrap(), &e.file_name().to_string_lossy());
        }
    }
    let mut runs = std::collections::BTreeMap::new();
    for target in Target::ALL {
        let mine: Vec<&Vec<u8>> = seeds.iter().filter(|(t, ..)| *t == target).map(|(.., b)| b).collect();
        assert!(!mine.is_empty());
        for s in &mine {
            assert!(run(target, s, &work).is_none(), "{target:?}: a seed must be accepted");
        }
        let mut m = Mutator::new(0x5eed ^ target as u64);
        let t = std::time::Instant::now();
        let mut n = 0usize;
        while t.elapsed().as_secs_f64() < budget / Target::ALL.len() as f64 {
            let data = m.mutate(mine[n % mine.len()]);
            check(target, &data, &format!("mutant{n}"));
            n += 1;
        }
        runs.insert(format!("{target:?}"), n);
    }
    eprintln!("fuzzed for {budget} s: {runs:?} inputs");
}
