use fmseg::backend::cpu::CpuBackend;
use fmseg::backend::{Backend, ConvSpec};
use fmseg::backend::profile::process_cpu_seconds;
use fmseg::model::init::random_input;
use fmseg::tensor::HostTensor;

#[test]
#[ignore]
fn speed() {
    let bes = [CpuBackend::new(1).unwrap().with_winograd(false), CpuBackend::new(1).unwrap().with_winograd(true)];
    for (cin, cout, dims) in [(32, 32, [192, 192, 16]), (64, 64, [48, 48, 16])] {
        let spec = ConvSpec { cin, cout, k: [3, 3, 1], bias: true };
        let w = HostTensor::new(spec.weight_shape(), random_input(3, 1, [cout, cin, 9]).data).unwrap();
        let mut x = random_input(1, 1, [dims[0], dims[1], dims[2] * cin]);
        x.shape = vec![1, cin, dims[0], dims[1], dims[2]];
        let flops = 2.0 * (dims[0] * dims[1] * dims[2] * cin * cout * 9) as f64;
        let mut best = [[f64::MAX; 2]; 2];
        for _ in 0..5 {
            for (bi, be) in bes.iter().enumerate() {
                let conv = be.prepare_conv(spec, &w, None).unwrap();
                let xt = be.upload(&x).unwrap();
                for (ni, norm) in [false, true].into_iter().enumerate() {
                    let t0 = process_cpu_seconds();
                    let y = if norm { be.conv_norm(&xt, &conv, None, true) } else { be.conv(&xt, &conv) };
                    std::hint::black_box(y.unwrap());
                    best[bi][ni] = best[bi][ni].min(process_cpu_seconds() - t0);
                }
            }
        }
        for (bi, name) in ["direct", "winograd"].iter().enumerate() {
            eprintln!("{name:9} {cin}->{cout} {dims:?}: conv {:.1} ms ({:.0} GF/s)  conv_norm {:.1} ms", best[bi][0] * 1e3, flops / best[bi][0] / 1e9, best[bi][1] * 1e3);
        }
    }
}
