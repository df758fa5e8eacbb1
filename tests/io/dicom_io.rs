//! DICOM reading and writing through the library: round trips (classic, Enhanced multi-frame,
//! 8-bit, per-slice rescale, reversed slice order), series selection, and every bad input as a
//! typed error that names the file.

use crate::dicom_support;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use fmseg::io::dicom::{
    list_series, load_series, write_enhanced_mr, write_mr_series, DicomError, Rescale, Selection, StoredSamples,
    StoredVolume,
};
use fmseg::Error;

use dicom_support::*;

fn dicom_err(e: Error) -> DicomError {
    match e {
        Error::Dicom(d) => *d,
        other => panic!("expected a DICOM error, got {other:?}"),
    }
}

#[test]
fn classic_series_round_trip_exact_values_and_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let affine = oblique_affine(0.75, 0.6, 4.0, 12.0, [-20.5, 33.25, -71.0]);
    let vol = unique_i16([40, 30, 7], affine, Rescale { slope: 0.5, intercept: -100.0 });
    // SliceThickness (3 mm) differs from the 4 mm step: the spacing must come from positions.
    let m = fmseg::io::dicom::MrSeriesMeta { slice_thickness: Some(3.0), ..meta("rt", 3, "T1 TSE tra") };
    let paths = write_mr_series(&vol, &m, dir.path()).unwrap();
    assert_eq!(paths.len(), 7);

    let l = load_series(dir.path(), &Selection::auto()).unwrap();
    let want = vol.real_volume();
    assert_eq!(l.volume.dims, [40, 30, 7]);
    assert_eq!(l.volume.data, want.data, "voxel values differ");
    let d = affine_diff(&l.volume.affine, &want.affine);
    assert!(d < 1e-9, "affine differs by {d}: {:?} vs {:?}", l.volume.affine, want.affine);
    assert_eq!(l.slices.iter().map(|s| s.path.clone()).collect::<Vec<_>>(), paths);
    let info = &l.info;
    assert_eq!((info.rows, info.cols, info.slices, info.files), (30, 40, 7, 7));
    assert_eq!(info.orientation, "oblique axial (12 deg)");
    assert_eq!(info.t1_weighted, Some(true));
    assert_eq!(info.modality, "MR");
    assert_eq!(info.series_number, Some(3));
    let ps = info.pixel_spacing.unwrap();
    assert!((ps[0] - 0.6).abs() < 1e-12 && (ps[1] - 0.75).abs() < 1e-12, "{ps:?}");
    assert!((info.slice_spacing.unwrap() - 4.0).abs() < 1e-9);
    assert_eq!(info.slice_thickness, Some(3.0));
    assert!(info.problem.is_none());

    // Same seed, same UIDs: writing again gives byte-identical files.
    let dir2 = tempfile::tempdir().unwrap();
    let paths2 = write_mr_series(&vol, &m, dir2.path()).unwrap();
    assert_eq!(std::fs::read(&paths[3]).unwrap(), std::fs::read(&paths2[3]).unwrap());
}

#[test]
fn reversed_slice_axis_loads_to_the_same_world_positions() {
    // Slice column pointing against row x column: the loader orders k the other way.
    let dir = tempfile::tempdir().unwrap();
    let mut affine = oblique_affine(1.0, 1.0, 3.0, -20.0, [5.0, -7.0, 40.0]);
    for row in affine.iter_mut().take(3) {
        row[2] = -row[2];
    }
    let vol = unique_i16([8, 6, 5], affine, Rescale::IDENTITY);
    write_mr_series(&vol, &meta("rev", 1, "T1"), dir.path()).unwrap();
    let l = load_series(dir.path(), &Selection::auto()).unwrap();
    let want = vol.real_volume();
    for (i, j, k) in [(0, 0, 0), (7, 5, 4), (3, 2, 1)] {
        let got_k = 4 - k;
        assert_eq!(l.volume.get(i, j, got_k), want.get(i, j, k));
        let (a, b) = (l.volume.world([i as f64, j as f64, got_k as f64]), want.world([i as f64, j as f64, k as f64]));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-9), "{a:?} vs {b:?}");
    }
}

#[test]
fn per_slice_rescale_and_8_bit() {
    let dir = tempfile::tempdir().unwrap();
    let affine = oblique_affine(0.5, 0.5, 2.0, 0.0, [0.0, 0.0, 0.0]);
    let mut vol = unique_i16([10, 9, 4], affine, Rescale::IDENTITY);
    vol.rescale = (0..4).map(|k| Rescale { slope: 0.25 * (k + 1) as f64, intercept: 10.0 * k as f64 - 5.0 }).collect();
    write_mr_series(&vol, &meta("psr", 1, "T1"), &dir.path().join("a")).unwrap();
    let l = load_series(&dir.path().join("a"), &Selection::auto()).unwrap();
    assert_eq!(l.volume.data, vol.real_volume().data);
    assert_eq!(l.info.orientation, "axial");

    let v8 = smooth_u8([11, 7, 3], affine);
    write_mr_series(&v8, &meta("u8", 2, "T1"), &dir.path().join("b")).unwrap();
    let l = load_series(&dir.path().join("b"), &Selection::auto()).unwrap();
    assert_eq!(l.volume.data, v8.real_volume().data);
}

#[test]
fn unsigned_16_bit_and_bits_stored_below_16() {
    let affine = oblique_affine(1.0, 1.0, 2.0, 0.0, [0.0; 3]);
    let vol = unique_i16([20, 16, 3], affine, Rescale::IDENTITY); // stored values -480..479
    let StoredSamples::I16(stored) = &vol.samples else { unreachable!() };

    // PixelRepresentation 0: the same bit patterns read as unsigned.
    let dir = tempfile::tempdir().unwrap();
    for p in write_mr_series(&vol, &meta("u16", 1, "T1"), dir.path()).unwrap() {
        rewrite(&p, |o| {
            o.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)));
        });
    }
    let l = load_series(dir.path(), &Selection::auto()).unwrap();
    let want: Vec<f32> = stored.iter().map(|&v| v as u16 as f32).collect();
    assert_eq!(l.volume.data, want);

    // BitsStored 8, HighBit 7, signed: bits above the 8th are ignored, bit 7 is the sign.
    let dir = tempfile::tempdir().unwrap();
    for p in write_mr_series(&vol, &meta("b8", 1, "T1"), dir.path()).unwrap() {
        rewrite(&p, |o| {
            o.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(8u16)));
            o.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(7u16)));
        });
    }
    let l = load_series(dir.path(), &Selection::auto()).unwrap();
    let want: Vec<f32> = stored.iter().map(|&v| (v as u16 as u8) as i8 as f32).collect();
    assert!(want.iter().zip(stored).any(|(&w, &v)| w != v as f32), "the test must see masking");
    assert_eq!(l.volume.data, want);
}

#[test]
fn enhanced_multiframe_with_per_frame_rescale() {
    let dir = tempfile::tempdir().unwrap();
    let affine = oblique_affine(0.8, 0.7, 3.5, 8.0, [-30.0, 10.0, 5.0]);
    let mut vol = unique_i16([24, 20, 9], affine, Rescale::IDENTITY);
    vol.rescale = (0..9).map(|k| Rescale { slope: 1.0 + 0.5 * k as f64, intercept: -3.0 * k as f64 }).collect();
    let file = dir.path().join("enhanced.dcm");
    write_enhanced_mr(&vol, &meta("enh", 5, "T1 3D"), &file).unwrap();

    // The file itself, and the directory holding it.
    for p in [file.as_path(), dir.path()] {
        let l = load_series(p, &Selection::auto()).unwrap();
        assert_eq!(l.volume.dims, [24, 20, 9]);
        assert_eq!(l.volume.data, vol.real_volume().data);
        assert!(affine_diff(&l.volume.affine, &affine) < 1e-9);
        assert!(l.info.multiframe);
        assert_eq!((l.info.files, l.info.slices), (1, 9));
        assert_eq!(l.info.echo_time, Some(12.0));
        assert_eq!(l.info.repetition_time, Some(600.0));
        assert_eq!(l.slices[4].frame, 4);
    }
}

/// Sagittal: i along +y (posterior), j along -z (down), k along row x column = -x.
fn sagittal() -> fmseg::volume::Affine {
    let mut sag = fmseg::volume::IDENTITY;
    sag[0] = [0.0, 0.0, -3.0, -30.0];
    sag[1] = [1.0, 0.0, 0.0, 0.0];
    sag[2] = [0.0, -1.0, 0.0, 50.0];
    sag
}

/// A study: T1 axial (12 slices), T2 axial (16), T1 sagittal (20), T1 axial tilted 50 deg (14).
fn study(dir: &std::path::Path) -> [String; 4] {
    let ax = oblique_affine(1.0, 1.0, 4.0, 10.0, [0.0, 0.0, 0.0]);
    let steep = oblique_affine(1.0, 1.0, 4.0, 50.0, [0.0, 0.0, 0.0]);
    let sag = sagittal();
    let specs = [
        (1, "T1 TSE tra", ax, 12),
        (2, "T2 TSE tra", ax, 16),
        (3, "T1 TSE sag", sag, 20),
        (4, "T1 TSE obl", steep, 14),
    ];
    let mut uids = Vec::new();
    for (no, desc, a, n) in specs {
        let v = unique_i16([16, 16, n], a, Rescale::IDENTITY);
        let m = meta("study", no, desc);
        uids.push(m.series_uid());
        write_mr_series(&v, &m, &dir.join(format!("s{no}"))).unwrap();
    }
    uids.try_into().unwrap()
}

#[test]
fn selection_rules_uid_and_only() {
    let dir = tempfile::tempdir().unwrap();
    let [t1, t2, sag, steep] = study(dir.path());
    std::fs::write(dir.path().join("README.txt"), "not dicom").unwrap();

    let list = list_series(dir.path()).unwrap();
    assert_eq!(list.len(), 4);
    let by = |u: &str| list.iter().find(|s| s.uid == u).unwrap();
    assert_eq!(by(&sag).orientation, "sagittal");
    assert_eq!(by(&steep).orientation, "oblique coronal (40 deg)");
    assert!((by(&steep).tilt_from_axial_deg.unwrap() - 50.0).abs() < 1e-9);
    assert_eq!(by(&t2).t1_weighted, Some(false));

    let l = load_series(dir.path(), &Selection::auto()).unwrap();
    assert_eq!(l.info.uid, t1, "{}", l.reason);
    assert!(l.reason.contains("axial-ish") && l.reason.contains("T1-weighted"), "{}", l.reason);

    let l = load_series(dir.path(), &Selection::uid(t2.clone())).unwrap();
    assert_eq!((l.info.uid.as_str(), l.volume.dims), (t2.as_str(), [16, 16, 16]));

    match dicom_err(load_series(dir.path(), &Selection::uid("1.2.3")).unwrap_err()) {
        DicomError::SeriesNotFound { available, .. } => assert_eq!(available.len(), 4),
        e => panic!("{e}"),
    }
    match dicom_err(load_series(dir.path(), &Selection::only()).unwrap_err()) {
        DicomError::MixedSeries { series, .. } => assert_eq!(series.len(), 4),
        e => panic!("{e}"),
    }
    // One series under the path: Only accepts it.
    let l = load_series(&dir.path().join("s3"), &Selection::only()).unwrap();
    assert_eq!(l.info.uid, sag);
    // The sagittal affine comes back as written (its slice column is row x column).
    assert!(affine_diff(&l.volume.affine, &sagittal()) < 1e-12, "{:?}", l.volume.affine);
}

#[test]
fn ties_are_broken_by_series_number_then_uid() {
    let dir = tempfile::tempdir().unwrap();
    let a = oblique_affine(1.0, 1.0, 4.0, 0.0, [0.0, 0.0, 0.0]);
    let v = unique_i16([8, 8, 5], a, Rescale::IDENTITY);
    let m7 = meta("tie", 7, "T1 a");
    let m2 = meta("tie", 2, "T1 b");
    write_mr_series(&v, &m7, &dir.path().join("x")).unwrap();
    write_mr_series(&v, &m2, &dir.path().join("y")).unwrap();
    let l = load_series(dir.path(), &Selection::auto()).unwrap();
    assert_eq!(l.info.uid, m2.series_uid());
    assert!(l.reason.contains("tie between 2 series"), "{}", l.reason);
}

#[test]
fn non_mr_is_a_typed_error_when_mr_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let v = unique_i16([8, 8, 3], oblique_affine(1.0, 1.0, 2.0, 0.0, [0.0; 3]), Rescale::IDENTITY);
    for p in write_mr_series(&v, &meta("ct", 1, "abdomen"), dir.path()).unwrap() {
        rewrite(&p, |o| {
            o.put(DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CT")));
        });
    }
    assert!(load_series(dir.path(), &Selection::auto()).is_ok());
    match dicom_err(load_series(dir.path(), &Selection::auto().require_mr()).unwrap_err()) {
        DicomError::NotMr { modality, .. } => assert_eq!(modality, "CT"),
        e => panic!("{e}"),
    }
}

/// A 6-slice series in a fresh directory; returns the directory and the file paths.
fn series6() -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let v = unique_i16([12, 10, 6], oblique_affine(1.0, 1.0, 5.0, 5.0, [0.0; 3]), Rescale::IDENTITY);
    let p = write_mr_series(&v, &meta("bad", 1, "T1"), dir.path()).unwrap();
    (dir, p)
}

fn name(p: &std::path::Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Each bad case: the library's typed error (checked by `check`), whose message names `file`.
fn expect_error(dir: &std::path::Path, file: &str, check: impl Fn(&DicomError) -> bool) {
    let e = dicom_err(load_series(dir, &Selection::auto()).unwrap_err());
    let msg = e.to_string();
    assert!(check(&e), "unexpected error: {msg}");
    assert!(msg.contains(file), "error does not name {file}: {msg}");
}

#[test]
fn truncated_pixel_data() {
    let (dir, p) = series6();
    let bytes = std::fs::read(&p[2]).unwrap();
    std::fs::write(&p[2], &bytes[..bytes.len() - 100]).unwrap();
    expect_error(dir.path(), &name(&p[2]), |e| matches!(e, DicomError::TruncatedPixelData { .. }));
}

#[test]
fn a_file_cut_anywhere_after_the_preamble_is_an_error_naming_it() {
    // The last slice: a silently dropped end slice would not show up as a gap.
    let (dir, p) = series6();
    let full = std::fs::read(&p[5]).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for cut in (132..full.len()).step_by(5) {
        std::fs::write(&p[5], &full[..cut]).unwrap();
        match load_series(dir.path(), &Selection::auto()) {
            Ok(l) => panic!("cut at {cut} of {}: loaded {:?}", full.len(), l.volume.dims),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(&name(&p[5])), "cut at {cut}: {msg}");
                kinds.insert(format!("{:?}", dicom_err(e)).split([' ', '{', '(']).next().unwrap().to_string());
            }
        }
    }
    eprintln!("error kinds over all cuts: {kinds:?}");
    assert!(kinds.contains("TruncatedPixelData") && kinds.contains("Unreadable"), "{kinds:?}");
}

#[test]
fn pixel_data_element_shorter_than_the_image() {
    let (dir, p) = series6();
    rewrite(&p[1], |o| {
        o.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(vec![1u16; 50].into())));
    });
    expect_error(dir.path(), &name(&p[1]), |e| matches!(e, DicomError::TruncatedPixelData { .. }));
}

#[test]
fn no_pixel_data() {
    let (dir, p) = series6();
    rewrite(&p[4], |o| {
        o.remove_element(tags::PIXEL_DATA);
    });
    expect_error(dir.path(), &name(&p[4]), |e| matches!(e, DicomError::NoPixelData { .. }));
}

#[test]
fn missing_slice_names_its_neighbours() {
    let (dir, p) = series6();
    std::fs::remove_file(&p[3]).unwrap();
    let e = dicom_err(load_series(dir.path(), &Selection::auto()).unwrap_err());
    match &e {
        DicomError::MissingSlice { before, after, missing, .. } => {
            assert_eq!((before.as_str(), after.as_str(), *missing), (name(&p[2]).as_str(), name(&p[4]).as_str(), 1));
        }
        _ => panic!("{e}"),
    }
}

#[test]
fn duplicate_slice() {
    let (dir, p) = series6();
    std::fs::copy(&p[2], dir.path().join("copy.dcm")).unwrap();
    expect_error(dir.path(), "copy.dcm", |e| matches!(e, DicomError::DuplicateSlice { .. }));
}

#[test]
fn not_dicom_and_unreadable_dicom() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    std::fs::write(dir.path().join("empty"), "").unwrap();
    match dicom_err(load_series(dir.path(), &Selection::auto()).unwrap_err()) {
        DicomError::NoImages { skipped, .. } => assert_eq!(skipped, 2),
        e => panic!("{e}"),
    }
    // A preamble, then garbage.
    let mut junk = vec![0u8; 128];
    junk.extend_from_slice(b"DICM");
    junk.extend_from_slice(&[0xFF; 40]);
    std::fs::write(dir.path().join("broken.dcm"), &junk).unwrap();
    expect_error(dir.path(), "broken.dcm", |e| matches!(e, DicomError::Unreadable { .. }));
    // Non-DICOM files, a dangling symlink and an interrupted write's temporary file next to a
    // good series are skipped quietly.
    let (dir, p) = series6();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling")).unwrap();
    std::fs::copy(&p[0], dir.path().join(".IM1_0001.dcm.tmp")).unwrap();
    let l = load_series(dir.path(), &Selection::auto()).unwrap();
    assert_eq!(l.volume.dims[2], 6);
    assert_eq!(fmseg::io::dicom::scan_series(dir.path()).unwrap().skipped_non_dicom, 3);
}

#[test]
fn non_uniform_spacing_names_the_gap() {
    let (dir, p) = series6();
    // Move slice 4 by 0.6 mm along the normal (series6: 5 mm steps, tilted 5 deg about L-R).
    let t = 5f64.to_radians();
    let ipp = [0.0, t.sin() * (15.0 + 0.6), t.cos() * (15.0 + 0.6)];
    rewrite(&p[3], |o| {
        let v = format!("{}\\{}\\{}", ipp[0], ipp[1], ipp[2]);
        o.put(DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, PrimitiveValue::from(v)));
    });
    match dicom_err(load_series(dir.path(), &Selection::auto()).unwrap_err()) {
        DicomError::NonUniformSpacing { before, after, gap, median, .. } => {
            assert_eq!((before, after), (name(&p[2]), name(&p[3])));
            assert!((gap - 5.6).abs() < 1e-6 && (median - 5.0).abs() < 1e-6, "{gap} {median}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn inconsistent_orientation_matrix_and_colour() {
    let (dir, p) = series6();
    rewrite(&p[5], |o| {
        o.put(DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, PrimitiveValue::from("1\\0\\0\\0\\0\\-1")));
    });
    expect_error(dir.path(), &name(&p[5]), |e| matches!(e, DicomError::InconsistentGeometry { .. }));

    let (dir, p) = series6();
    rewrite(&p[0], |o| {
        o.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(5u16)));
    });
    expect_error(dir.path(), &name(&p[0]), |e| matches!(e, DicomError::InconsistentGeometry { .. }));

    let (dir, p) = series6();
    rewrite(&p[1], |o| {
        o.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("RGB")));
        o.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16)));
    });
    expect_error(dir.path(), &name(&p[1]), |e| matches!(e, DicomError::UnsupportedPixels { .. }));
}

#[test]
fn writer_refuses_bad_input_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sheared = oblique_affine(1.0, 1.0, 2.0, 0.0, [0.0; 3]);
    sheared[0][2] = 0.5;
    let v = StoredVolume::new([4, 4, 2], StoredSamples::I16(vec![0; 32]), sheared, vec![Rescale::IDENTITY]);
    assert!(matches!(v, Err(DicomError::InvalidWrite(_))));
    let ok = unique_i16([4, 4, 2], oblique_affine(1.0, 1.0, 2.0, 0.0, [0.0; 3]), Rescale::IDENTITY);
    let bad = StoredVolume { samples: StoredSamples::I16(vec![0; 31]), ..ok };
    assert!(write_mr_series(&bad, &meta("x", 1, "T1"), dir.path()).is_err());
    assert!(files(dir.path()).is_empty());
}

/// A compressed frame a codec works on for seconds is given up on at the deadline, with the
/// file named (AFL++ found this 1.5 kB JPEG-LS file: CharLS spends 4-7 s on its 120 pixels
/// before calling the stream invalid; pyjpegls' CharLS is as slow on it).
#[test]
fn a_codec_that_works_too_long_is_given_up_on() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/dicom/jpeg-ls-decodes-for-7-s.bin");
    let t = std::time::Instant::now();
    let e = dicom_err(load_series(&p, &Selection::only()).unwrap_err());
    let secs = t.elapsed().as_secs_f64();
    let msg = e.to_string();
    assert!(matches!(e, DicomError::Decode { .. }), "{e:?}");
    assert!(msg.contains("jpeg-ls-decodes-for-7-s.bin") && msg.contains("given up"), "{msg}");
    assert!(secs < 4.0, "the read took {secs:.1} s: the deadline for 120 pixels is about 2 s");
}
