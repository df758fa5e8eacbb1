//! Criterion benches of the CPU engine: the whole network on one 192x192x16 patch (throughput in
//! patches), and its hottest layers (throughput in FLOP... reported as elements = multiply-adds).
//!
//!     cargo bench --bench cpu            # all
//!     cargo bench --bench cpu -- forward # the whole network only
//!     cargo bench --bench cpu -- latency # a 448x448x24 series, last slice in -> mask out,
//!                                        # Rust API and C ABI (fmseg bench --latency gives p99)
//!     cargo bench --bench cpu -- train   # one training step at batch 2: forward, the
//!                                        # reference's losses, backward (fmseg bench --train
//!                                        # gives seconds per phase)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fmseg::backend::cpu::CpuBackend;
use fmseg::backend::{Backend, ConvSpec};
use fmseg::engine::Engine;
use fmseg::model::catalog::PATCH;
use fmseg::model::init::{random_input, random_state_dict};

fn forward(c: &mut Criterion) {
    let engine = Engine::new(CpuBackend::new(0).unwrap(), &random_state_dict(0)).unwrap();
    let x = random_input(1, 1, PATCH);
    let mut g = c.benchmark_group("cpu");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("forward_192x192x16_patch", |b| b.iter(|| engine.logits(&x).unwrap()));
    g.finish();
}

fn layers(c: &mut Criterion) {
    let be = CpuBackend::new(0).unwrap();
    let mut g = c.benchmark_group("cpu_layers");
    g.sample_size(10);
    for (cin, cout, k, dims) in [
        (32, 32, [3, 3, 1], [192, 192, 16]),
        (32, 32, [1, 1, 3], [192, 192, 16]),
        (128, 128, [3, 3, 3], [24, 24, 16]),
        (256, 256, [3, 3, 3], [12, 12, 8]),
    ] {
        let spec = ConvSpec { cin, cout, k, bias: true };
        let sd = random_input(7, 1, [cout * cin, k[0] * k[1], k[2]]);
        let w = fmseg::tensor::HostTensor::new(spec.weight_shape(), sd.data).unwrap();
        let b = fmseg::tensor::HostTensor::new(vec![cout], vec![0.1; cout]).unwrap();
        let conv = be.prepare_conv("bench", spec, &w, Some(&b)).unwrap();
        let mut x = random_input(1, 1, [dims[0], dims[1], dims[2] * cin]);
        x.shape = vec![1, cin, dims[0], dims[1], dims[2]];
        let xt = be.upload(&x).unwrap();
        let macs = (dims[0] * dims[1] * dims[2] * cin * cout * spec.taps()) as u64;
        g.throughput(Throughput::Elements(macs));
        let name = format!("conv_norm_{}x{}x{}_{cin}to{cout}_at_{}x{}x{}", k[0], k[1], k[2], dims[0], dims[1], dims[2]);
        g.bench_function(name, |bch| bch.iter(|| be.conv_norm(&xt, &conv, None, true).unwrap()));
    }
    g.finish();
}

/// One series through each front door of the library, as `fmseg bench --latency` times it
/// (bundled weights, the default 448 x 448 x 24 plan, engines warmed up first).
fn latency(c: &mut Criterion) {
    use fmseg::embed::latency::{c_call, rust_call, AbiEngine, PreparedSeries};
    use fmseg::embed::{Segmenter, SegmenterOptions, SeriesPlan};
    let weights = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/fmseg-unet25d.fmw");
    let plan = SeriesPlan::default();
    let mut o = SegmenterOptions::new(&weights);
    o.device = fmseg::engine::Device::Cpu;
    o.plan = plan;
    let segmenter = Segmenter::new(&o).unwrap();
    let abi = AbiEngine::create(&weights, 1, 0, &plan).unwrap();
    let series = PreparedSeries::synthetic(&plan, 1).unwrap();
    let mut mask = Vec::new();
    let mut g = c.benchmark_group("latency");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(150));
    g.bench_function("rust_api_448x448x24", |b| b.iter(|| rust_call(&segmenter, &series).unwrap()));
    g.bench_function("c_abi_448x448x24", |b| b.iter(|| c_call(&abi, &series, &mut mask).unwrap()));
    g.finish();
}

/// One training step as `fmseg train` runs it (batch 2, 192x192x16 patches, Dice + CE +
/// attention losses, forward and backward on the gradient tape), as `fmseg bench --train` times it.
fn train_step(c: &mut Criterion) {
    use fmseg::train::{step, tape::TapeBackend};
    let tape = TapeBackend::new(CpuBackend::new(0).unwrap());
    let sd = random_state_dict(0);
    let x = random_input(1, 2, PATCH);
    let label: Vec<u8> = x.data.iter().map(|&v| (v > 1.5) as u8).collect();
    let mut g = c.benchmark_group("cpu_train");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(120));
    g.throughput(Throughput::Elements(2));
    g.bench_function("train_step_batch2_192x192x16", |b| {
        b.iter(|| step::forward_backward(&tape, &sd, &x, &label, step::InputGrad::Skipped).unwrap())
    });
    g.finish();
}

criterion_group!(benches, forward, layers, latency, train_step);
criterion_main!(benches);
