//! The forward pass as a replayed CUDA graph over a planned arena, with pinned staging: the
//! engine's network on the CUDA backend's capture, arena and pinned-copy primitives.
//!
//! Per (batch, input size), the first [`GraphedForward::run`]:
//! 1. allocates that shape's fixed buffers: the fp16 input, the f32 logits (PyTorch layout),
//!    and their pinned host twins;
//! 2. runs the pass on the caching pool while recording every allocation and free
//!    ([`Pool::record`]); this pass's logits are the call's result;
//! 3. plans the arena from the recorded lifetimes (`backend::arena`) and allocates it;
//! 4. captures the pass with every buffer at its planned offset ([`Pool::planned`]) into a
//!    CUDA graph: input buffer -> ~200 kernels -> logits buffer, no allocation, no host work.
//!
//! Every later call with that shape converts the input into the pinned buffer, copies it up,
//! launches the graph, copies the logits down and waits: three stream operations, whatever the
//! number of kernels, and no allocation at all ([`Pool::alloc_count`] does not move).
//!
//! Graph replay and the eager pass compute the same kernels on the same values at other
//! addresses, so results are bit-identical (tests/gpu.rs checks it). Everything runs on the
//! device's one stream: graphs of different shapes may use their arenas in turn, never at once.

use std::collections::HashMap;
use std::sync::Arc;

use half::f16;

use crate::backend::arena::{self, Plan};
use crate::backend::cuda::pinned::{fetch_logits, stage, PinnedBuffer};
use crate::backend::cuda::{Arena, CudaBackend, CudaTensor, DeviceBuffer, Graph};
use crate::engine::{check_input, Engine};
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims, HostTensor};

/// One (batch, input size)'s resources. Field order is drop order: the graph goes before the
/// memory it refers to.
struct Shape {
    graph: Option<Graph>,
    plan: Arc<Plan>,
    arena: Arena,
    input: CudaTensor,
    logits: DeviceBuffer,
    host_in: PinnedBuffer<f16>,
    host_out: PinnedBuffer<f32>,
}

/// The network's logits through per-shape CUDA graphs (or, with graphs off, eager passes over
/// the same planned arena). See the module documentation.
pub struct GraphedForward {
    engine: Engine<CudaBackend>,
    graphs: bool,
    shapes: HashMap<(usize, Dims), Shape>,
}

impl GraphedForward {
    /// Graph replay on.
    pub fn new(engine: Engine<CudaBackend>) -> Self {
        GraphedForward { engine, graphs: true, shapes: HashMap::new() }
    }

    /// With `false`, later passes run eagerly (kernel by kernel) over the planned arena: the
    /// arena without the graph, for comparisons and for bisecting a graph problem.
    pub fn with_graphs(mut self, on: bool) -> Self {
        self.graphs = on;
        self
    }

    pub fn engine(&self) -> &Engine<CudaBackend> {
        &self.engine
    }

    /// The arena plan of a shape already run.
    pub fn plan(&self, batch: usize, dims: Dims) -> Option<&Plan> {
        self.shapes.get(&(batch, dims)).map(|s| s.plan.as_ref())
    }

    /// Whether a shape already run replays a graph.
    pub fn has_graph(&self, batch: usize, dims: Dims) -> bool {
        self.shapes.get(&(batch, dims)).is_some_and(|s| s.graph.is_some())
    }

    /// Device bytes held for the shapes run so far: arenas, input and logits buffers.
    pub fn device_bytes(&self) -> usize {
        self.shapes.values().map(|s| s.arena.len() + s.input.buf.len() + s.logits.len()).sum()
    }

    /// Logits `(N, 2, H, W, D)` for an input `(N, 1, H, W, D)`, as [`Engine::logits`].
    pub fn run(&mut self, x: &HostTensor) -> Result<HostTensor> {
        check_input(x)?;
        let (n, _, dims) = x.ncdims()?;
        let key = (n, dims);
        if !self.shapes.contains_key(&key) {
            let (shape, logits) = self.first_pass(x)?;
            self.shapes.insert(key, shape);
            return Ok(logits);
        }
        let be = self.engine.backend();
        let shape = self.shapes.get_mut(&key).ok_or_else(|| Error::Other("internal: shape vanished".into()))?;
        stage(&shape.input, &mut shape.host_in, x)?;
        match &shape.graph {
            Some(g) => g.launch()?,
            None => be.pool.planned(&shape.plan, &shape.arena, || pass(&self.engine, &shape.input, &shape.logits))?,
        }
        fetch_logits(&shape.logits, &mut shape.host_out, n, dims)
    }

    /// Replays the pass of a shape already run on whatever its input buffer holds and waits,
    /// without host copies: the device time of the forward pass, for benchmarks.
    pub fn replay(&mut self, batch: usize, dims: Dims) -> Result<()> {
        let shape = self.shapes.get(&(batch, dims)).ok_or_else(|| {
            Error::Other(format!("replay: no pass of batch {batch} at {dims:?} has run yet (call run first)"))
        })?;
        let be = self.engine.backend();
        match &shape.graph {
            Some(g) => g.launch()?,
            None => be.pool.planned(&shape.plan, &shape.arena, || pass(&self.engine, &shape.input, &shape.logits))?,
        }
        be.synchronize()
    }

    /// Buffers, recorded pass, plan, arena and (with graphs on) the captured graph of `x`'s
    /// shape; returns the shape and the recorded pass's logits.
    fn first_pass(&self, x: &HostTensor) -> Result<(Shape, HostTensor)> {
        let be = self.engine.backend();
        let (n, _, dims) = x.ncdims()?;
        let vox = numel(dims);
        let input = be.new_tensor(n, 1, dims)?;
        let logits = be.pool.alloc(n * 2 * vox * 4)?;
        let mut host_in = PinnedBuffer::<f16>::new(be, n * vox)?;
        let mut host_out = PinnedBuffer::<f32>::new(be, n * 2 * vox)?;
        stage(&input, &mut host_in, x)?;
        // Recorded pass: the pool's own buffers, every allocation and free logged.
        let ((), trace) = be.pool.record(|| pass(&self.engine, &input, &logits))?;
        let result = fetch_logits(&logits, &mut host_out, n, dims)?;
        let plan = Arc::new(arena::plan(&trace)?);
        // The recorded pass's buffers now sit in the pool's free lists: give them back before
        // the arena takes their place.
        be.trim_memory();
        let arena = be.pool.arena(plan.size)?;
        let graph = if self.graphs {
            Some(be.dev.capture(|| be.pool.planned(&plan, &arena, || pass(&self.engine, &input, &logits)))?)
        } else {
            None
        };
        Ok((Shape { graph, plan, arena, input, logits, host_in, host_out }, result))
    }
}

/// The pass every mode runs: the network on the fixed input, its logits converted into the
/// fixed f32 buffer, every intermediate dropped.
fn pass(engine: &Engine<CudaBackend>, input: &CudaTensor, logits: &DeviceBuffer) -> Result<()> {
    let be = engine.backend();
    let out = engine.model().forward(be, input)?;
    be.to_ncdhw_f32_into(&out.logits, logits)?;
    drop(out);
    Ok(())
}
