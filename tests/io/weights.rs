//! Weights I/O: the reference checkpoint, PyTorch-made checkpoints with views and other dtypes,
//! round trips through every format, and every kind of bad file, through the library and the
//! real `fmseg convert-weights` binary.

use crate::common;
use crate::common::cli::Fmseg;

use std::path::{Path, PathBuf};

use fmseg::model::catalog;
use fmseg::tensor::HostTensor;
use fmseg::weights::pth::{Archive, StorageSpec, TensorSpec};
use fmseg::weights::{self, DType, Elem, Format, StateDict};
use half::f16;

/// Small checkpoints written by PyTorch 2.9.1 (`tests/data/make_torch_checkpoints.py`).
fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// A complete state dict for the network with deterministic values, aliases equal.
fn synthetic() -> StateDict {
    let mut sd = StateDict::new();
    let mut originals: std::collections::HashMap<String, HostTensor> = Default::default();
    for l in catalog::layers() {
        for (k, shape) in l.tensors() {
            let t = match &l.alias_of {
                Some(o) => originals[&format!("{o}{}", &k[l.prefix.len()..])].clone(),
                None => {
                    let n: usize = shape.iter().product();
                    let seed = k.len() as u32;
                    let data = (0..n as u32)
                        .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
                        .collect();
                    HostTensor::new(shape, data).unwrap()
                }
            };
            originals.insert(k.clone(), t.clone());
            sd.insert(k, t);
        }
    }
    sd
}

fn assert_bits_equal(a: &StateDict, b: &StateDict, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: number of tensors");
    for (k, t) in a.iter() {
        let u = b.get(k).unwrap_or_else(|| panic!("{what}: '{k}' missing"));
        assert_eq!(t.shape, u.shape, "{what}: shape of '{k}'");
        let same = t.data.iter().zip(&u.data).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{what}: values of '{k}' differ");
    }
}

fn err_string(r: fmseg::Result<StateDict>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Writes `a` to `dir/name` with the library's pth writer.
fn write_archive(a: &Archive, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    a.write_to(f).unwrap();
    p
}

// ---------------------------------------------------------------- the reference checkpoint

#[test]
fn reference_checkpoint_loads_with_torch_values() {
    let Some(path) = common::fixture("weights_seed0.pth") else { return };
    let sd = weights::load(&path).unwrap();
    // File order is the catalog's order, aliases included (171 keys).
    let want: Vec<(String, Vec<usize>)> = catalog::tensor_keys();
    let got: Vec<(String, Vec<usize>)> = sd.iter().map(|(k, t)| (k.to_string(), t.shape.clone())).collect();
    assert_eq!(got, want);

    // Values read with torch.load in PyTorch 2.9.1 (sd[key][index].item(), float32 bits).
    let picks: [(&str, &[usize], u32); 6] = [
        ("conv_0.conv1.0.block.0.weight", &[0, 0, 0, 0, 0], 0xbb238d56),
        ("conv_0.conv1.0.block.0.weight", &[31, 0, 2, 1, 0], 0xbde4db8b),
        ("final_conv.bias", &[1], 0x3dff7b6c),
        ("up_4.up.weight", &[3, 5, 1, 0, 1], 0xbc532304),
        ("context_block_1.score_layer.1.weight", &[255, 63, 0, 0, 0], 0xbd859748),
        ("attention_3.conv.1.block.0.weight", &[127, 31, 2, 2, 2], 0x3c972c16),
    ];
    for (k, idx, bits) in picks {
        let t = sd.get(k).unwrap();
        let strides = weights::pth::contiguous_strides(&t.shape);
        let flat: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        assert_eq!(t.data[flat].to_bits(), bits, "{k}{idx:?} = {}", t.data[flat]);
    }
    // Float64 sums from torch (sd[key].double().sum(), .abs().sum()); our order of summation
    // differs, hence the 1e-12 relative tolerance.
    for (k, sum, abs_sum) in [
        ("conv_0.conv1.0.block.0.weight", -4.403385692101438, 47.56093341129599),
        ("up_1.convs.conv2.bias", 0.7535578683018684, 3.0075218183919787),
        ("context_block_1.conv2_4.block.0.weight", -3.594967883217123, 766.6378611279565),
    ] {
        let t = sd.get(k).unwrap();
        let s: f64 = t.data.iter().map(|&v| v as f64).sum();
        let a: f64 = t.data.iter().map(|&v| (v as f64).abs()).sum();
        assert!((s - sum).abs() <= 1e-12 * abs_sum, "{k}: sum {s} vs {sum}");
        assert!((a - abs_sum).abs() <= 1e-12 * abs_sum, "{k}: abs sum {a} vs {abs_sum}");
    }

    let c = weights::canonicalize(&sd, &path).unwrap();
    assert_eq!(c.len(), want.len());
    for l in catalog::layers() {
        if let Some(o) = &l.alias_of {
            for (k, _) in l.tensors() {
                let orig = format!("{o}{}", &k[l.prefix.len()..]);
                assert_eq!(c.get(&k), c.get(&orig), "{k} vs {orig}");
            }
        }
    }
    // torch: sum of numel over the keys that are not aliases = 10,532,520.
    assert_eq!(weights::distinct_parameters(&c), 10_532_520);
    assert_eq!(catalog::parameter_count(), 10_532_520);
}

#[test]
fn reference_round_trips_through_every_format() {
    let Some(path) = common::fixture("weights_seed0.pth") else { return };
    let dir = tempfile::tempdir().unwrap();
    let orig = weights::load_canonical(&path).unwrap();

    let st = dir.path().join("w.safetensors");
    weights::save(&orig, &st, Format::Safetensors, DType::F32).unwrap();
    let from_st = weights::load_canonical(&st).unwrap();
    assert_bits_equal(&orig, &from_st, "safetensors");
    // aliases are written as copies under every key (strict load_state_dict after load_file)
    assert_eq!(weights::load(&st).unwrap().len(), 171);

    let fz = dir.path().join("w.fmw");
    weights::save(&from_st, &fz, Format::Frozen, DType::F32).unwrap();
    let from_fz = weights::load_canonical(&fz).unwrap();
    assert_bits_equal(&orig, &from_fz, "frozen f32");
    let f = weights::frozen::FrozenFile::open(&fz).unwrap();
    let stored = f.names().filter(|n| f.tensor(n).unwrap().alias_of.is_none()).count();
    assert_eq!(stored, 143, "aliases stored once");
    assert_eq!(
        f.tensor("up_4.attention.conv.0.block.0.weight").unwrap().alias_of,
        Some("attention_3.conv.0.block.0.weight")
    );

    let back = dir.path().join("back.pth");
    weights::save(&from_fz, &back, Format::Pth, DType::F32).unwrap();
    let from_pth = weights::load(&back).unwrap();
    assert_bits_equal(&weights::load(&path).unwrap(), &from_pth, "pth written back");
    // One storage per shared module, as torch.save writes them: 143 records for 171 keys.
    let z = zip::ZipArchive::new(std::fs::File::open(&back).unwrap()).unwrap();
    assert_eq!(z.file_names().filter(|n| n.contains("/data/")).count(), 143);
    // the file is a fresh one: no temporary left next to it
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 3, "{left:?}");

    // FP16: every value is the nearest f16 (ties to even), i.e. within 2^-11 relative.
    let h = dir.path().join("w16.fmw");
    weights::save(&orig, &h, Format::Frozen, DType::F16).unwrap();
    let from_h = weights::load_canonical(&h).unwrap();
    let mut worst = 0f64;
    for (k, t) in orig.iter() {
        let u = from_h.get(k).unwrap();
        for (&x, &y) in t.data.iter().zip(&u.data) {
            assert_eq!(y, f16::from_f32(x).to_f32(), "{k}");
            if x.abs() >= 6.2e-5 {
                worst = worst.max(((y - x) / x).abs() as f64);
            }
        }
    }
    assert!(worst <= 2f64.powi(-11), "largest relative f16 rounding error {worst}");
    assert!(std::fs::metadata(&h).unwrap().len() < std::fs::metadata(&fz).unwrap().len() / 2 + 65536);
}

// ---------------------------------------------------------------- PyTorch-made small files

#[test]
fn torch_strided_views_and_dtypes() {
    let sd = weights::load(&data("torch_views.pth")).unwrap();
    let names: Vec<&str> = sd.names().collect();
    assert_eq!(
        names,
        ["base", "transposed", "sliced", "stepped", "expanded", "half", "bfloat16", "double", "scalar", "param"]
    );
    let v = |k: &str| sd.get(k).unwrap();
    let base: Vec<f32> = (0..24).map(|i| i as f32).collect();
    assert_eq!(v("base").data, base);
    // base.t(): (6, 4), element (i, j) = base[j][i] = 6j + i
    assert_eq!(v("transposed").shape, [6, 4]);
    let t: Vec<f32> = (0..6).flat_map(|i| (0..4).map(move |j| (6 * j + i) as f32)).collect();
    assert_eq!(v("transposed").data, t);
    // base[1:3, 2:5]: storage offset 8
    assert_eq!(v("sliced").data, [8., 9., 10., 14., 15., 16.]);
    // base[:, ::2]: (4, 3), element (i, j) = 6i + 2j
    let s: Vec<f32> = (0..4).flat_map(|i| (0..3).map(move |j| (6 * i + 2 * j) as f32)).collect();
    assert_eq!(v("stepped").data, s);
    assert_eq!(v("expanded").data, [1., 2., 3., 1., 2., 3.]);
    assert_eq!(v("half").data, [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75]);
    assert_eq!(v("bfloat16").data, [1.5, -2.25, 3.0]);
    assert_eq!(v("double").data, [0.1f64 as f32, (1.0f64 / 3.0) as f32, 2.0, -7.5]);
    assert_eq!(v("scalar").shape, Vec::<usize>::new());
    assert_eq!(v("scalar").data, [4.25]);
    assert_eq!(v("param").data, [0.75, 0.75]);
}

#[test]
fn torch_training_checkpoint_on_cuda() {
    // {"epoch", "best_dice", "state_dict", "optimizer": AdamW state}, storages on cuda:0
    let sd = weights::load(&data("torch_training.pth")).unwrap();
    let names: Vec<&str> = sd.names().collect();
    assert_eq!(names, ["w", "b"]);
    assert_eq!(sd.get("w").unwrap().data, [0.0, 0.125, 0.25, 0.375, 0.5, 0.625]);
    assert_eq!(sd.get("b").unwrap().data, [-1.0, 1.0]);
}

#[test]
fn torch_pickle_protocol_4() {
    let sd = weights::load(&data("torch_protocol4.pth")).unwrap();
    assert_eq!(sd.names().collect::<Vec<_>>(), ["w", "b"]);
    assert_eq!(sd.get("w").unwrap().shape, [2, 3]);
    assert_eq!(sd.get("w").unwrap().data, [0.0, 0.125, 0.25, 0.375, 0.5, 0.625]);
    assert_eq!(sd.get("b").unwrap().data, [-1.0, 1.0]);
}

#[test]
fn legacy_format_is_refused_clearly() {
    let e = err_string(weights::load(&data("torch_legacy.pth")));
    assert!(e.contains("torch_legacy.pth") && e.contains("legacy (pre-1.6) torch.save format"), "{e}");
    assert!(e.contains("re-save with a newer PyTorch"), "{e}");
}

// ---------------------------------------------------------------- written checkpoints

#[test]
fn writer_features_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let sd = synthetic();
    let base = Archive::from_state_dict(&sd, DType::F32, "ck").unwrap();

    // plain, then DataParallel's module. prefix, a {"state_dict": ...} wrapper, cuda:0
    let plain = write_archive(&base, dir.path(), "plain.pth");
    assert_bits_equal(&sd, &weights::load_canonical(&plain).unwrap(), "plain");

    let mut a = base.clone();
    for t in &mut a.tensors {
        t.name = format!("module.{}", t.name);
    }
    let p = write_archive(&a, dir.path(), "dp.pth");
    assert!(weights::load(&p).unwrap().names().all(|n| n.starts_with("module.")));
    assert_bits_equal(&sd, &weights::load_canonical(&p).unwrap(), "module. prefix");

    let mut a = base.clone();
    a.wrapper = Some("state_dict".into());
    let p = write_archive(&a, dir.path(), "wrapped.pth");
    assert_bits_equal(&sd, &weights::load_canonical(&p).unwrap(), "state_dict wrapper");
    a.wrapper = Some("model".into());
    let p = write_archive(&a, dir.path(), "model.pth");
    assert_bits_equal(&sd, &weights::load_canonical(&p).unwrap(), "model wrapper");

    let mut a = base.clone();
    for s in &mut a.storages {
        s.location = "cuda:0".into();
    }
    let p = write_archive(&a, dir.path(), "gpu.pth");
    assert_bits_equal(&sd, &weights::load_canonical(&p).unwrap(), "cuda:0");

    // half storages: the values come back rounded to f16
    let a = Archive::from_state_dict(&sd, DType::F16, "half").unwrap();
    assert!(a.storages.iter().all(|s| s.elem == Elem::F16));
    let p = write_archive(&a, dir.path(), "half.pth");
    let h = weights::load_canonical(&p).unwrap();
    for (k, t) in sd.iter() {
        let want: Vec<f32> = t.data.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        assert_eq!(h.get(k).unwrap().data, want, "{k}");
    }
}

#[test]
fn non_contiguous_views_are_gathered() {
    // final_conv.weight (2, 32, 1, 1, 1) stored as the transpose of a (32, 2) storage, and
    // final_conv.bias as every third element of a storage starting at offset 1.
    let dir = tempfile::tempdir().unwrap();
    let sd = synthetic();
    let mut a = Archive::from_state_dict(&sd, DType::F32, "views").unwrap();
    let w = sd.get("final_conv.weight").unwrap();
    let mut tr = vec![0f32; 64];
    for o in 0..2 {
        for i in 0..32 {
            tr[i * 2 + o] = w.data[o * 32 + i];
        }
    }
    let b = sd.get("final_conv.bias").unwrap();
    let spaced = [9.0, b.data[0], 9.0, 9.0, b.data[1], 9.0];
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    a.storages.push(StorageSpec { key: "tw".into(), elem: Elem::F32, location: "cpu".into(), bytes: bytes(&tr) });
    a.storages.push(StorageSpec { key: "sb".into(), elem: Elem::F32, location: "cpu".into(), bytes: bytes(&spaced) });
    let (ws, bs) = (a.storages.len() - 2, a.storages.len() - 1);
    for t in &mut a.tensors {
        if t.name == "final_conv.weight" {
            *t = TensorSpec {
                name: t.name.clone(),
                storage: ws,
                offset: 0,
                shape: vec![2, 32, 1, 1, 1],
                stride: vec![1, 2, 1, 1, 1],
            };
        } else if t.name == "final_conv.bias" {
            *t = TensorSpec { name: t.name.clone(), storage: bs, offset: 1, shape: vec![2], stride: vec![3] };
        }
    }
    let p = write_archive(&a, dir.path(), "views.pth");
    assert_bits_equal(&sd, &weights::load_canonical(&p).unwrap(), "strided views");

    // a view reaching past its storage is an error naming the tensor
    for t in &mut a.tensors {
        if t.name == "final_conv.bias" {
            t.stride = vec![5];
        }
    }
    let p = write_archive(&a, dir.path(), "oob.pth");
    let e = err_string(weights::load(&p));
    assert!(e.contains("oob.pth") && e.contains("tensor 'final_conv.bias'") && e.contains("reaches element 6"), "{e}");
}

#[test]
fn canonicalize_errors_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let sd = synthetic();
    type Edit<'a> = &'a dyn Fn(&mut Archive);
    let cases: [(&str, Edit, &[&str]); 4] = [
        (
            "missing.pth",
            &|a| a.tensors.retain(|t| t.name != "up_2.convs.conv2.bias"),
            &["missing key 'up_2.convs.conv2.bias'"],
        ),
        (
            "unexpected.pth",
            &|a| {
                let mut t = a.tensors[0].clone();
                t.name = "conv_0.bn.running_mean".into();
                a.tensors.push(t);
            },
            &["unexpected key 'conv_0.bn.running_mean'"],
        ),
        (
            "shape.pth",
            &|a| {
                let t = a.tensors.iter_mut().find(|t| t.name == "conv_0.conv3.weight").unwrap();
                t.shape = vec![32, 1];
                t.stride = vec![1, 1];
            },
            &["'conv_0.conv3.weight' has shape [32, 1], the network expects [32, 1, 1, 1, 1]"],
        ),
        (
            "nan.pth",
            &|a| {
                let i = a.tensors.iter().find(|t| t.name == "down_2.down.1.conv3.bias").unwrap().storage;
                let s = &mut a.storages[i];
                s.bytes[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
                s.bytes[16..20].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
                s.bytes[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
            },
            &["'down_2.down.1.conv3.bias' has 2 NaN and 1 infinite values of 64 (first at flat index 2)"],
        ),
    ];
    for (name, edit, want) in cases {
        let mut a = Archive::from_state_dict(&sd, DType::F32, "bad").unwrap();
        edit(&mut a);
        let p = write_archive(&a, dir.path(), name);
        let e = err_string(weights::load_canonical(&p));
        assert!(e.contains(name), "{e}");
        for w in want {
            assert!(e.contains(w), "{name}: {e}");
        }
    }

    // aliases written as separate storages with different values
    let mut a = Archive::from_state_dict(&sd, DType::F32, "bad").unwrap();
    let i = a.tensors.iter().position(|t| t.name == "up_3.attention.conv2.3.bias").unwrap();
    let mut s = a.storages[a.tensors[i].storage].clone();
    s.key = "separate".into();
    s.bytes[0..4].copy_from_slice(&123.0f32.to_le_bytes());
    a.storages.push(s);
    a.tensors[i].storage = a.storages.len() - 1;
    let p = write_archive(&a, dir.path(), "alias.pth");
    let e = err_string(weights::load_canonical(&p));
    assert!(
        e.contains("alias.pth") && e.contains("'up_3.attention.conv2.3.bias' differs from 'attention_2.conv2.3.bias'"),
        "{e}"
    );
}

// ---------------------------------------------------------------- damaged and foreign files

#[test]
fn truncated_and_garbled_checkpoints_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = StateDict::new();
    sd.insert("final_conv.weight", HostTensor::new(vec![2, 32, 1, 1, 1], (0..64).map(|i| i as f32).collect()).unwrap());
    sd.insert("final_conv.bias", HostTensor::new(vec![2], vec![0.5, -0.5]).unwrap());
    let good_path = dir.path().join("good.pth");
    weights::save(&sd, &good_path, Format::Pth, DType::F32).unwrap();
    let good = std::fs::read(&good_path).unwrap();
    assert_eq!(weights::load(&good_path).unwrap().get("final_conv.bias").unwrap().data, [0.5, -0.5]);

    let bad = dir.path().join("bad.pth");
    for n in (0..good.len()).step_by(5) {
        std::fs::write(&bad, &good[..n]).unwrap();
        let e = err_string(weights::load(&bad));
        assert!(e.contains("bad.pth"), "truncated to {n}: {e}");
    }
    // Every single-byte change: an error naming the file, or (in zip fields nobody reads) the
    // same values; never a panic, never different values.
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0xa5;
        std::fs::write(&bad, &b).unwrap();
        match weights::load(&bad) {
            Ok(got) => assert_bits_equal(&sd, &got, &format!("byte {i} changed")),
            Err(e) => assert!(e.to_string().contains("bad.pth"), "byte {i}: {e}"),
        }
    }
}

#[test]
fn hand_built_malformed_archives() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let zip_with = |name: &str, records: &[(&str, &[u8])]| -> PathBuf {
        let p = dir.path().join(name);
        let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
        for (n, b) in records {
            z.start_file(*n, zip::write::SimpleFileOptions::default()).unwrap();
            z.write_all(b).unwrap();
        }
        z.finish().unwrap();
        p
    };
    // protocol 2 pickle of {"w": tensor on storage "0" of 4 floats, size (n,), stride (1,)}
    let tensor_pickle = |numel_storage: u8, size: u8| -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'X', 1, 0, 0, 0, b'w'];
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu");
        p.extend_from_slice(&[b'K', numel_storage, b't', b'Q', b'K', 0, b'K', size, 0x85, b'K', 1, 0x85, 0x89]);
        p.extend_from_slice(b"ccollections\nOrderedDict\n)Rt");
        p.extend_from_slice(b"Rs.");
        p
    };
    let four: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|v| v.to_le_bytes()).collect();

    let ok = zip_with("ok.pth", &[("a/data.pkl", &tensor_pickle(4, 4)), ("a/data/0", &four)]);
    assert_eq!(weights::load(&ok).unwrap().get("w").unwrap().data, [1., 2., 3., 4.]);

    let cases: Vec<(PathBuf, &str)> = vec![
        (zip_with("npz.pth", &[("arr_0.npy", b"\x93NUMPY")]), "without data.pkl"),
        (zip_with("script.pth", &[("m/constants.pkl", b"x"), ("m/code/x.py", b"")]), "TorchScript"),
        (zip_with("garbage.pth", &[("a/data.pkl", b"\x80\x02this is not a pickle")]), "a/data.pkl: "),
        (zip_with("nostorage.pth", &[("a/data.pkl", &tensor_pickle(4, 4))]), "record a/data/0 is missing"),
        (zip_with("short.pth", &[("a/data.pkl", &tensor_pickle(4, 4)), ("a/data/0", &four[..12])]), "holds 12 bytes"),
        (zip_with("big.pth", &[("a/data.pkl", &tensor_pickle(4, 9)), ("a/data/0", &four)]), "reaches element 8"),
        (zip_with("list.pth", &[("a/data.pkl", b"\x80\x02]q\x00.")]), "holds a list, not a state dict"),
        (
            zip_with("model.pth", &[("a/data.pkl", b"\x80\x02cmodels.unet\nUnet\nq\x00)\x81q\x01}b.")]),
            "pickled models.unet.Unet object",
        ),
        (
            zip_with("epoch.pth", &[("a/data.pkl", b"\x80\x02}(X\x05\x00\x00\x00epochK\x07u.")]),
            "no state dict found: the checkpoint is a dict with keys ['epoch']",
        ),
        (zip_with("stop.pth", &[("a/data.pkl", b"\x80\x02}")]), "without a STOP opcode"),
        (
            zip_with(
                "byteorder.pth",
                &[("a/data.pkl", &tensor_pickle(4, 4)), ("a/data/0", &four), ("a/byteorder", b"middle")],
            ),
            "byteorder record says 'middle'",
        ),
    ];
    for (p, want) in cases {
        let e = err_string(weights::load(&p));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(e.contains(name) && e.contains(want), "{name}: {e}");
    }

    // Limits before allocation: a zero-stride view of 2^29 elements over a 4-float storage
    // (2 GiB if materialised) and a 65 MiB data.pkl (a deflate bomb of zeros) are refused with
    // the numbers, before anything of that size is reserved.
    let mut broadcast = tensor_pickle(4, 4);
    let at = broadcast.windows(6).position(|w| w == [b'K', 4, 0x85, b'K', 1, 0x85]).unwrap();
    broadcast.splice(at..at + 6, [b'J', 0, 0, 0, 0x20, 0x85, b'K', 0, 0x85]);
    let p = zip_with("broadcast.pth", &[("a/data.pkl", &broadcast), ("a/data/0", &four)]);
    let e = err_string(weights::load(&p));
    assert!(e.contains("broadcast.pth") && e.contains("536870912 elements, more than this reader accepts"), "{e}");
    let bomb = vec![0u8; 65 << 20];
    let p = zip_with("bomb.pth", &[("a/data.pkl", &bomb)]);
    assert!(std::fs::metadata(&p).unwrap().len() < 1 << 20, "the bomb is deflated");
    let e = err_string(weights::load(&p));
    assert!(e.contains("bomb.pth") && e.contains("holds 68157440 bytes, expected at most 67108864"), "{e}");

    // big-endian storages (torch.save on a big-endian machine) are swapped
    let be: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|v| v.to_be_bytes()).collect();
    let p = zip_with("be.pth", &[("a/data.pkl", &tensor_pickle(4, 4)), ("a/data/0", &be), ("a/byteorder", b"big")]);
    assert_eq!(weights::load(&p).unwrap().get("w").unwrap().data, [1., 2., 3., 4.]);
}

#[test]
fn foreign_files_are_not_weights() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.pth");
    std::fs::write(&text, "conv_0.conv1.0.block.0.weight = 0.5\n").unwrap();
    let e = err_string(weights::load(&text));
    assert!(e.contains("notes.pth") && e.contains("not a weights file"), "{e}");

    // pseudo-random bytes (xorshift)
    let mut x = 0x9e3779b97f4a7c15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let rnd = dir.path().join("random.bin");
    std::fs::write(&rnd, &noise).unwrap();
    let e = err_string(weights::load(&rnd));
    assert!(e.contains("random.bin") && e.contains("not a weights file"), "{e}");

    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(err_string(weights::load(&empty)).contains("empty file"));

    let e = err_string(weights::load(&dir.path().join("absent.pth")));
    assert!(e.contains("absent.pth"), "{e}");

    // truncated safetensors
    let mut sd = StateDict::new();
    sd.insert("a", HostTensor::new(vec![4], vec![1., 2., 3., 4.]).unwrap());
    let st = dir.path().join("t.safetensors");
    weights::save(&sd, &st, Format::Safetensors, DType::F32).unwrap();
    let b = std::fs::read(&st).unwrap();
    std::fs::write(&st, &b[..b.len() - 3]).unwrap();
    let e = err_string(weights::load(&st));
    assert!(e.contains("t.safetensors") && e.contains("safetensors"), "{e}");
}

#[test]
fn save_failure_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = StateDict::new();
    sd.insert("a", HostTensor::new(vec![2], vec![1.0, 1e6]).unwrap());
    let out = dir.path().join("w.fmw");
    let e = weights::save(&sd, &out, Format::Frozen, DType::F16).unwrap_err().to_string();
    assert!(e.contains("w.fmw") && e.contains("'a'") && e.contains("float16"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a file was left behind");
}

// ---------------------------------------------------------------- the CLI

#[test]
fn cli_converts_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let sd = synthetic();
    let input = dir.path().join("in.pth");
    weights::save(&sd, &input, Format::Pth, DType::F32).unwrap();

    let out = dir.path().join("out.fmw");
    let so =
        Fmseg::new().arg("convert-weights").arg(&input).arg(&out).args(["--dtype", "f16"]).run().success().stdout();
    let n = catalog::parameter_count();
    assert!(
        so.contains("171 tensors (28 shared)") && so.contains(&format!("{n} parameters")) && so.contains("frozen f16"),
        "{so}"
    );
    let bytes = std::fs::metadata(&out).unwrap().len();
    assert!(so.trim_end().ends_with(&format!("{bytes} bytes")), "{so}");
    let h = weights::load_canonical(&out).unwrap();
    assert_eq!(
        h.get("final_conv.bias").unwrap().data[0],
        f16::from_f32(sd.get("final_conv.bias").unwrap().data[0]).to_f32()
    );

    // --format overrides the extension; the result is safetensors whatever its name
    let st = dir.path().join("out.weights");
    Fmseg::new().arg("convert-weights").arg(&out).arg(&st).args(["--format", "safetensors"]).run().success();
    assert_eq!(weights::detect(&st).unwrap(), Format::Safetensors);
    assert_bits_equal(&h, &weights::load_canonical(&st).unwrap(), "cli safetensors");

    // errors: exit status 1, the file and key named, no output and no temporary left
    let mut bad = sd.clone();
    bad.insert("conv_0.conv3.weight", HostTensor::zeros(vec![32, 1, 1, 1]));
    let bad_in = dir.path().join("bad_in.pth");
    weights::save(&bad, &bad_in, Format::Pth, DType::F32).unwrap();
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let (x_pth, x_bin, missing) = (dir.path().join("x.pth"), dir.path().join("x.bin"), dir.path().join("missing.pth"));
    let cases: [([&Path; 2], &[&str]); 3] = [
        ([&bad_in, &x_pth], &["bad_in.pth", "conv_0.conv3.weight", "[32, 1, 1, 1]"]),
        ([&input, &x_bin], &["x.bin", "--format"]),
        ([&missing, &x_pth], &["missing.pth"]),
    ];
    for (paths, want) in cases {
        let o = Fmseg::new().arg("convert-weights").args(paths).run().fails_naming(want);
        assert!(o.stderr().starts_with("fmseg: error: "), "{o}");
    }
    let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "a failed conversion left files");
}

/// The bundled weights (`weights/fmseg-unet25d.fmw`): their checksum is the one the model card
/// states (`weights/fmseg-unet25d.fmw.sha256`), they say they are trained, they fit the network,
/// and they are not the initialisation they were trained from (seed 0).
#[test]
fn bundled_weights_are_the_trained_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
    let path = dir.join("fmseg-unet25d.fmw");
    let info =
        fmseg::pipeline::report::WeightsInfo::of(&path, true).expect("the bundled weights are in the repository");
    let want = std::fs::read_to_string(dir.join("fmseg-unet25d.fmw.sha256")).unwrap();
    assert_eq!(info.sha256, format!("sha256:{}", want.split_whitespace().next().unwrap()));
    assert_eq!(info.format, "frozen");
    assert_eq!(info.trained, Some(true));
    let sd = weights::load_canonical(&path).unwrap();
    let init = fmseg::model::init::random_state_dict(0);
    let (mut diff, mut norm) = (0f64, 0f64);
    for (key, _) in catalog::tensor_keys() {
        let (a, b) = (sd.get(&key).unwrap(), init.get(&key).unwrap());
        for (x, y) in a.data.iter().zip(&b.data) {
            diff += ((x - y) as f64).powi(2);
            norm += (*y as f64).powi(2);
        }
    }
    let rel = (diff / norm).sqrt();
    eprintln!("bundled weights vs the seed-0 initialisation: rel L2 {rel:.4}");
    assert!(rel > 0.05, "the bundled weights are (nearly) the initialisation: rel L2 {rel}");
}

/// The bundled classifiers (`weights/fmseg-classifier-{image,clinical}.fmw`): checksums as the
/// model card states, each the variant its name says, trained (metadata, and not the seed-0
/// initialisation they started from), with the model card's threshold.
#[test]
fn bundled_classifiers_are_the_trained_ones() {
    use fmseg::engine::classifier::ClassifierWeights;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
    for (name, clinical) in [("image", false), ("clinical", true)] {
        let path = dir.join(format!("fmseg-classifier-{name}.fmw"));
        let w = ClassifierWeights::load(&path).expect("the bundled classifier is in the repository");
        let want = std::fs::read_to_string(dir.join(format!("fmseg-classifier-{name}.fmw.sha256"))).unwrap();
        assert_eq!(w.sha256, format!("sha256:{}", want.split_whitespace().next().unwrap()));
        assert_eq!(w.spec, fmseg::model::catalog::ClassifierSpec::new(clinical));
        assert_eq!(w.metadata.get("trained").map(String::as_str), Some("true"));
        assert_eq!(w.threshold(&path).unwrap(), 0.5);
        let init = fmseg::model::init::random_state_dict_for(&w.spec.layers(), 0);
        let (mut diff, mut norm) = (0f64, 0f64);
        for (key, _) in w.spec.tensor_keys() {
            for (x, y) in w.state.get(&key).unwrap().data.iter().zip(&init.get(&key).unwrap().data) {
                diff += ((x - y) as f64).powi(2);
                norm += (*y as f64).powi(2);
            }
        }
        assert!((diff / norm).sqrt() > 0.05, "{name}: the bundled classifier is (nearly) its initialisation");
    }
    // The image+clinical model is the image model stacked with the clinical features
    // (scripts/fit_clinical_head.py): the same encoder, and a head whose image part is the image
    // head scaled by one factor.
    let load = |name: &str| ClassifierWeights::load(&dir.join(format!("fmseg-classifier-{name}.fmw"))).unwrap();
    let (image, clinical) = (load("image"), load("clinical"));
    for (key, _) in image.spec.tensor_keys() {
        if !key.starts_with("head.") {
            assert_eq!(image.state.get(&key).unwrap().data, clinical.state.get(&key).unwrap().data, "{key}");
        }
    }
    let (wi, wc) = (&image.state.get("head.weight").unwrap().data, &clinical.state.get("head.weight").unwrap().data);
    let a = wc[..64].iter().zip(wi.iter()).map(|(c, i)| c * i).sum::<f32>() / wi.iter().map(|i| i * i).sum::<f32>();
    assert!(a > 0.0, "the image logit keeps its sign in the joint head");
    for (c, i) in wc[..64].iter().zip(wi.iter()) {
        assert!((c - a * i).abs() <= 2e-3 * (a * i).abs().max(1e-2), "head: {c} vs {a} * {i}");
    }
}
