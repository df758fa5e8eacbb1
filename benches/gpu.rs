//! Criterion benches of the FP16 CUDA engine: the whole network on 192x192x16 patches (input
//! resident, synchronised after each pass; eager and replayed as a CUDA graph) and its hottest
//! layers. Without a usable GPU it says so and measures nothing.
//!
//!     cargo bench --bench gpu               # all
//!     cargo bench --bench gpu -- layers     # the hottest layers only

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fmseg::backend::cuda::CudaBackend;
use fmseg::backend::{Backend, ConvSpec};
use fmseg::engine::Engine;
use fmseg::engine::GraphedForward;
use fmseg::model::catalog::PATCH;
use fmseg::model::init::{random_input, random_state_dict};
use fmseg::tensor::HostTensor;

fn gpu() -> Option<CudaBackend> {
    match CudaBackend::new() {
        Ok(be) => Some(be),
        Err(e) => {
            eprintln!("gpu benches skipped: {e}");
            None
        }
    }
}

fn forward(c: &mut Criterion) {
    let Some(be) = gpu() else { return };
    let engine = Engine::new(be, &random_state_dict(0)).unwrap();
    let mut g = c.benchmark_group("gpu");
    g.sample_size(20);
    for batch in [1, 8] {
        let x = engine.backend().upload(&random_input(1, batch, PATCH)).unwrap();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("forward_eager_batch{batch}"), |b| {
            b.iter(|| {
                let out = engine.model().forward(engine.backend(), &x).unwrap();
                engine.backend().synchronize().unwrap();
                out
            })
        });
    }
    g.finish();
    let mut graphed = GraphedForward::new(engine);
    let mut g = c.benchmark_group("gpu");
    for batch in [1, 8] {
        graphed.run(&random_input(2, batch, PATCH)).unwrap(); // records, plans, captures
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("forward_graph_batch{batch}"), |b| b.iter(|| graphed.replay(batch, PATCH).unwrap()));
    }
    g.finish();
}

fn layers(c: &mut Criterion) {
    let Some(be) = gpu() else { return };
    let mut g = c.benchmark_group("gpu_layers");
    g.sample_size(50);
    // The slowest layers of `fmseg bench --device cuda --layers` (H200, stop 7).
    for (cin, cout, k, dims) in [
        (32, 32, [3, 3, 1], [192, 192, 16]),
        (32, 32, [1, 1, 3], [192, 192, 16]),
        (32, 16, [3, 1, 1], [192, 192, 16]),
        (128, 128, [3, 3, 3], [24, 24, 16]),
        (256, 256, [3, 3, 3], [12, 12, 8]),
    ] {
        let spec = ConvSpec { cin, cout, k, bias: true };
        let w = random_input(7, cout * cin, [k[0], k[1], k[2]]);
        let w = HostTensor::new(spec.weight_shape(), w.data).unwrap();
        let b = HostTensor::new(vec![cout], vec![0.1; cout]).unwrap();
        let conv = be.prepare_conv("bench", spec, &w, Some(&b)).unwrap();
        let mut x = random_input(1, cin, dims);
        x.shape = vec![1, cin, dims[0], dims[1], dims[2]];
        let xt = be.upload(&x).unwrap();
        let macs = (dims[0] * dims[1] * dims[2] * cin * cout * spec.taps()) as u64;
        g.throughput(Throughput::Elements(macs));
        let name = format!("conv_norm_{}x{}x{}_{cin}to{cout}_at_{}x{}x{}", k[0], k[1], k[2], dims[0], dims[1], dims[2]);
        g.bench_function(name, |bch| {
            bch.iter(|| {
                let y = be.conv_norm(&xt, &conv, None, true).unwrap();
                be.synchronize().unwrap();
                y
            })
        });
    }
    g.finish();
}

criterion_group!(benches, forward, layers);
criterion_main!(benches);
