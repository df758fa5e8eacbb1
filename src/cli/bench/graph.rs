//! `fmseg bench --device cuda --graph`: per batch size, the forward pass eager (kernel by
//! kernel, caching pool) against the same pass replayed as a CUDA graph over its planned arena,
//! both on the device (input resident, logits left there); the graph end to end through the
//! pinned staging buffers; the arena's size against the shape-only prediction; and a check
//! that replays allocate nothing.

use anyhow::Context;

use super::BenchArgs;
use crate::backend::cuda::CudaBackend;
use crate::backend::Backend;
use crate::engine::Engine;
use crate::engine::GraphedForward;
use crate::model::cost::planned_arena_bytes;
use crate::model::init::random_input;
use crate::tensor::Dims;

const MIB: f64 = 1024.0 * 1024.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed(iters: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?; // warm-up
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t0 = std::time::Instant::now();
        f()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

pub fn bench_graph(args: &BenchArgs, sd: &crate::weights::StateDict, dims: Dims) -> anyhow::Result<()> {
    let mut gf = GraphedForward::new(Engine::new(CudaBackend::new()?, sd)?);
    let name = gf.engine().backend().name();
    let mut rows = Vec::new();
    for &n in &args.batch {
        let x = random_input(n as u64, n, dims);
        let predicted = planned_arena_bytes(dims, n)?;
        let t0 = std::time::Instant::now();
        gf.run(&x).with_context(|| format!("batch {n}: recording, planning and capturing the pass"))?;
        let setup = t0.elapsed().as_secs_f64();
        let arena = gf.plan(n, dims).map_or(0, |p| p.size);
        let eager = {
            let be = gf.engine().backend();
            let xt = be.upload(&x)?;
            timed(args.iters, || {
                let out = gf.engine().model().forward(be, &xt)?;
                be.synchronize()?;
                drop(out);
                Ok(())
            })?
        };
        let allocs = gf.engine().backend().alloc_count();
        let replay = timed(args.iters, || Ok(gf.replay(n, dims)?))?;
        let e2e = timed(args.iters, || {
            std::hint::black_box(gf.run(&x)?);
            Ok(())
        })?;
        let replay_allocs = gf.engine().backend().alloc_count() - allocs;
        rows.push((n, setup, eager, replay, e2e, predicted, arena, replay_allocs));
    }
    let be = gf.engine().backend();
    let (used, cached, peak) = be.memory_usage();
    let (free, total) = be.device().mem_info()?;
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|&(n, setup, eager, replay, e2e, predicted, arena, allocs)| {
                let per = |t: f64| t * 1e3 / n as f64;
                serde_json::json!({"batch": n, "setup_ms": setup * 1e3, "eager_ms_per_patch": per(eager),
                "graph_ms_per_patch": per(replay), "graph_e2e_ms_per_patch": per(e2e), "graph_patches_per_s": n as f64 / replay,
                "arena_bytes": arena, "predicted_arena_bytes": predicted, "pool_allocs_during_replay": allocs})
            })
            .collect();
        crate::outln!(
            "{}",
            serde_json::json!({"device": name, "dims": dims, "graph": v, "pool_bytes_in_use": used,
            "pool_bytes_cached": cached, "pool_peak_bytes": peak, "arena_bytes": be.arena_bytes(),
            "device_used_bytes": total - free})
        );
        return Ok(());
    }
    crate::outln!("CUDA graph bench: {name}   patch {}x{}x{}", dims[0], dims[1], dims[2]);
    crate::outln!("timing: eager and graph on the device (input resident, logits left there); e2e = host in, host out");
    crate::outln!(
        "{:>6} {:>9} {:>13} {:>13} {:>9} {:>11} {:>11} {:>11} {:>13} {:>7}",
        "batch",
        "setup ms",
        "eager ms/p",
        "graph ms/p",
        "speedup",
        "patches/s",
        "e2e ms/p",
        "arena MiB",
        "predicted MiB",
        "allocs"
    );
    for (n, setup, eager, replay, e2e, predicted, arena, allocs) in rows {
        crate::outln!(
            "{:>6} {:>9.1} {:>13.3} {:>13.3} {:>8.2}x {:>11.1} {:>11.3} {:>11.1} {:>13.1} {:>7}",
            n,
            setup * 1e3,
            eager * 1e3 / n as f64,
            replay * 1e3 / n as f64,
            eager / replay,
            n as f64 / replay,
            e2e * 1e3 / n as f64,
            arena as f64 / MIB,
            predicted as f64 / MIB,
            allocs
        );
    }
    crate::outln!(
        "GPU memory: arenas {:.0} MiB, pool {:.0} MiB in use + {:.0} MiB cached (peak {:.0} MiB), device {:.0} of {:.0} MiB used",
        be.arena_bytes() as f64 / MIB,
        used as f64 / MIB,
        cached as f64 / MIB,
        peak as f64 / MIB,
        (total - free) as f64 / MIB,
        total as f64 / MIB
    );
    crate::outln!("allocs: Pool::alloc calls during the timed graph replays and end-to-end runs (0 = the hot path allocates nothing)");
    Ok(())
}
