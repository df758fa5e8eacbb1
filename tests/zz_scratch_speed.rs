use fmseg::backend::cpu::CpuBackend;
use fmseg::backend::{Backend, ConvSpec};
use fmseg::backend::profile::process_cpu_seconds;
use fmseg::model::init::random_input;
use fmseg::tensor::HostTensor;

#[test]
#[ignore]
fn speed() {
    for wg in [false, true] {
        let be = CpuBackend::new(1).unwrap().with_winograd(wg);
        for (cin, cout, dims) in [(32, 32, [192, 192, 16]), (32, 32, [96, 96, 16]), (64, 64, [48, 48, 16])] {
            let spec = ConvSpec { cin, cout, k: [3, 3, 1], bias: true };
            let w = HostTensor::new(spec.weight_shape(), random_input(3, 1, [cout, cin, 9]).data).unwrap();
            let conv = be.prepare_conv(spec, &w, None).unwrap();
            let mut x = random_input(1, 1, [dims[0], dims[1], dims[2] * cin]);
            x.shape = vec![1, cin, dims[0], dims[1], dims[2]];
            let xt = be.upload(&x).unwrap();
            let flops = 2.0 * (dims[0] * dims[1] * dims[2] * cin * cout * 9) as f64;
            for (name, norm) in [("conv", false), ("conv_norm", true)] {
                let _ = if norm { be.conv_norm(&xt, &conv, None, true) } else { be.conv(&xt, &conv) };
                let t0 = process_cpu_seconds();
                let reps = 3;
                for _ in 0..reps {
                    let y = if norm { be.conv_norm(&xt, &conv, None, true) } else { be.conv(&xt, &conv) };
                    std::hint::black_box(y.unwrap());
                }
                let dt = (process_cpu_seconds() - t0) / reps as f64;
                eprintln!("wg={wg} {name} {cin}->{cout} {dims:?}: {:.1} ms  {:.1} GFLOP/s-equiv", dt * 1e3, flops / dt / 1e9);
            }
        }
    }
}
