//! NIfTI and .npy readers on the reference fixtures (values checked against nibabel / NumPy).

mod common;

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
