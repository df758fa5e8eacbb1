//! TEMPORARY: micro-kernel ceiling on cache-resident data, thread CPU time.
use fmseg::backend::cpu::conv::{conv_sample, pad_input, padded_len, PackedConv};
use fmseg::backend::ConvSpec;

fn cpu_time() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[test]
#[ignore]
fn kernel_ceiling() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for (dims, cin, cout, k) in [
        ([8, 24, 16], 32, 32, [3, 3, 1]),
        ([192, 192, 16], 32, 32, [3, 3, 1]),
        ([12, 12, 8], 256, 256, [3, 3, 3]),
        ([24, 24, 16], 128, 128, [3, 3, 3]),
        ([48, 48, 16], 64, 64, [3, 3, 1]),
    ] {
        let spec = ConvSpec { cin, cout, k, bias: true };
        let w: Vec<f32> = (0..cout * cin * spec.taps()).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
        let conv = PackedConv::new(spec, &w, None);
        let vox = dims[0] * dims[1] * dims[2];
        let x: Vec<f32> = (0..vox * cin).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
        let mut p = vec![0f32; padded_len(dims, cin, k)];
        pad_input(&x, dims, cin, spec.pad(), &mut p);
        let mut out = vec![0f32; vox * cout];
        let flops = 2.0 * (vox * cin * cout * spec.taps()) as f64;
        let reps = (2e10 / flops).ceil().max(1.0) as usize;
        pool.install(|| conv_sample(&p, dims, &conv, &mut out));
        let t0 = cpu_time();
        for _ in 0..reps {
            pool.install(|| conv_sample(&p, dims, &conv, &mut out));
        }
        let dt = cpu_time() - t0;
        eprintln!("{dims:?} {cin}->{cout} {k:?}: {:.1} GFLOP/s (cpu time)", flops * reps as f64 / dt / 1e9);
    }
}
