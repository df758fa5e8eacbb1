//! Planned activation memory: one buffer per (input shape, batch), with every tensor of a
//! forward pass at an offset fixed in advance.
//!
//! A forward pass of the network allocates and frees the same sequence of buffers every time
//! for a given input shape. [`Trace`] records that sequence once (allocation sizes and the
//! program order of allocations and frees); [`plan`] turns each allocation's lifetime into an
//! offset in one arena so that two allocations alive at the same time never share a byte, and
//! [`Replay`] checks a later pass against the recorded one while handing out the planned
//! offsets. Nothing here touches a device: the CUDA pool (`backend::cuda::memory`) and the
//! shape-only backend (`backend::shape`) both feed it, so the planner is tested without a GPU.
//!
//! The offset assignment is the "greedy by size" heuristic of Pisarchyk & Lee (2020, "Efficient
//! memory management for deep neural net inference"): blocks in decreasing size, each placed
//! in the smallest gap between the already-placed blocks whose lifetimes overlap its own, or
//! above all of them. Finding the optimal packing is NP-hard (dynamic storage allocation); on
//! network traces this heuristic lands within a few percent of the max-live lower bound (see
//! the tests and `backend::shape`).

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Offset alignment of every device buffer in an arena: the CUDA allocator's own guarantee
/// (256 bytes), so a kernel sees the same alignment from the arena as from `cuMemAlloc`.
pub const DEVICE_ALIGN: usize = 256;

/// One step of a recorded pass, in program order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A buffer of `bytes` bytes whose offset must be a multiple of `align` (a power of two).
    Alloc { id: usize, bytes: usize, align: usize },
    /// The buffer `id` is no longer used by anything queued after this point.
    Free { id: usize },
}

/// The allocations and frees of one pass, in program order. Ids are unique per allocation;
/// [`Trace::alloc`] numbers them 0, 1, 2, ... in allocation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub events: Vec<Event>,
    next_id: usize,
}

impl Trace {
    pub fn new() -> Self {
        Trace::default()
    }

    /// A trace of the given events (ids as written there; checked by [`plan`]).
    pub fn from_events(events: Vec<Event>) -> Self {
        let next_id = events
            .iter()
            .filter_map(|e| match e {
                Event::Alloc { id, .. } => Some(id + 1),
                Event::Free { .. } => None,
            })
            .max()
            .unwrap_or(0);
        Trace { events, next_id }
    }

    /// Records an allocation; returns its id.
    pub fn alloc(&mut self, bytes: usize, align: usize) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.events.push(Event::Alloc { id, bytes, align });
        id
    }

    pub fn free(&mut self, id: usize) {
        self.events.push(Event::Free { id });
    }

    /// Number of allocations.
    pub fn allocations(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Event::Alloc { .. })).count()
    }

    /// Allocations never freed (they live to the end of the pass).
    pub fn live_at_end(&self) -> usize {
        let mut live = 0isize;
        for e in &self.events {
            live += if matches!(e, Event::Alloc { .. }) { 1 } else { -1 };
        }
        live.max(0) as usize
    }
}

/// Where one allocation lives: `[offset, offset + footprint)` of the arena during events
/// `[start, end)` of the trace (`end` is the index of its free, or the trace length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub id: usize,
    pub bytes: usize,
    pub align: usize,
    pub offset: usize,
    pub start: usize,
    pub end: usize,
}

impl Block {
    /// Bytes reserved: the request rounded up to its alignment (at least one byte, so two
    /// simultaneous buffers never share an address even when one is empty).
    pub fn footprint(&self) -> usize {
        footprint(self.bytes, self.align)
    }

    fn lives_with(&self, o: &Block) -> bool {
        self.start < o.end && o.start < self.end
    }
}

fn footprint(bytes: usize, align: usize) -> usize {
    bytes.max(1).div_ceil(align) * align
}

/// An arena layout for one trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// One per allocation, in allocation order.
    pub blocks: Vec<Block>,
    /// Arena size in bytes (a multiple of the largest alignment).
    pub size: usize,
    /// The lower bound: the largest sum of footprints alive at one time.
    pub max_live: usize,
    /// The trace the plan was made from, which a [`Replay`] is checked against.
    pub events: Vec<Event>,
}

impl Plan {
    /// How far above the lower bound the arena is (1.0 = optimal).
    pub fn overhead(&self) -> f64 {
        if self.max_live == 0 {
            1.0
        } else {
            self.size as f64 / self.max_live as f64
        }
    }
}

/// Lays out `trace` in one arena. Fails on a malformed trace (a duplicate id, a free of an
/// unknown or already freed id, an alignment that is not a power of two, sizes that overflow).
pub fn plan(trace: &Trace) -> Result<Plan> {
    let mut blocks = lifetimes(trace)?;
    let max_live = max_live(&blocks, trace.events.len())?;

    // Largest first; ties by earlier start, then allocation order: a total order, so the plan
    // is a function of the trace alone.
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&blocks[a], &blocks[b]);
        y.footprint().cmp(&x.footprint()).then(x.start.cmp(&y.start)).then(a.cmp(&b))
    });
    let mut placed: Vec<usize> = Vec::with_capacity(blocks.len());
    let mut size = 0usize;
    for &i in &order {
        let b = blocks[i];
        let need = b.footprint();
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .map(|&j| &blocks[j])
            .filter(|p| p.lives_with(&b))
            .map(|p| (p.offset, p.offset + p.footprint()))
            .collect();
        conflicts.sort_unstable();
        // Smallest gap that fits (best fit), else above everything that conflicts.
        let mut best: Option<(usize, usize)> = None; // (gap, offset)
        let mut low = 0usize;
        for &(start, end) in &conflicts {
            let at = align_up(low, b.align)?;
            if start >= at && start - at >= need {
                let gap = start - at;
                if best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, at));
                }
            }
            low = low.max(end);
        }
        let offset = match best {
            Some((_, at)) => at,
            None => align_up(low, b.align)?,
        };
        let top = offset.checked_add(need).ok_or_else(|| overflow(b.bytes))?;
        size = size.max(top);
        blocks[i].offset = offset;
        placed.push(i);
    }
    let max_align = blocks.iter().map(|b| b.align).max().unwrap_or(1);
    let size = align_up(size, max_align)?;
    let plan = Plan { blocks, size, max_live, events: trace.events.clone() };
    verify(&plan)?;
    Ok(plan)
}

/// Checks a plan's invariants: every block aligned and inside the arena, and no two blocks
/// whose lifetimes overlap share a byte. [`plan`] runs it on every plan it returns.
pub fn verify(plan: &Plan) -> Result<()> {
    for b in &plan.blocks {
        if b.offset % b.align != 0 || b.offset + b.footprint() > plan.size {
            return Err(Error::Other(format!(
                "internal: arena block {} at offset {} ({} bytes, alignment {}) does not fit an arena of {} bytes",
                b.id, b.offset, b.bytes, b.align, plan.size
            )));
        }
    }
    // Sweep in start order: only blocks still alive when a block starts can conflict with it.
    let mut by_start: Vec<&Block> = plan.blocks.iter().collect();
    by_start.sort_by_key(|b| (b.start, b.id));
    let mut alive: Vec<&Block> = Vec::new();
    for b in by_start {
        alive.retain(|a| a.end > b.start);
        for a in &alive {
            let disjoint = a.offset + a.footprint() <= b.offset || b.offset + b.footprint() <= a.offset;
            if !disjoint {
                return Err(Error::Other(format!(
                    "internal: arena blocks {} [{}, {}) and {} [{}, {}) are alive together and overlap",
                    a.id,
                    a.offset,
                    a.offset + a.footprint(),
                    b.id,
                    b.offset,
                    b.offset + b.footprint()
                )));
            }
        }
        alive.push(b);
    }
    Ok(())
}

fn align_up(x: usize, align: usize) -> Result<usize> {
    x.checked_add(align - 1).map(|v| v / align * align).ok_or_else(|| overflow(x))
}

fn overflow(bytes: usize) -> Error {
    Error::Other(format!("arena plan: sizes overflow (a buffer of {bytes} bytes)"))
}

/// Each allocation's lifetime, in allocation order; checks the trace is well formed.
fn lifetimes(trace: &Trace) -> Result<Vec<Block>> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut index: HashMap<usize, usize> = HashMap::new();
    let len = trace.events.len();
    for (t, e) in trace.events.iter().enumerate() {
        match *e {
            Event::Alloc { id, bytes, align } => {
                if !align.is_power_of_two() {
                    return Err(Error::Other(format!(
                        "arena trace: allocation {id} asks for alignment {align}, not a power of two"
                    )));
                }
                if bytes.checked_add(align).is_none() {
                    return Err(overflow(bytes));
                }
                if index.insert(id, blocks.len()).is_some() {
                    return Err(Error::Other(format!("arena trace: allocation id {id} is used twice")));
                }
                blocks.push(Block { id, bytes, align, offset: 0, start: t, end: len });
            }
            Event::Free { id } => {
                let Some(&i) = index.get(&id) else {
                    return Err(Error::Other(format!("arena trace: free of {id}, which was never allocated")));
                };
                if blocks[i].end != len {
                    return Err(Error::Other(format!("arena trace: allocation {id} is freed twice")));
                }
                blocks[i].end = t;
            }
        }
    }
    Ok(blocks)
}

/// The largest total footprint alive at one time.
fn max_live(blocks: &[Block], len: usize) -> Result<usize> {
    let mut delta = vec![0isize; len + 1];
    for b in blocks {
        let f = isize::try_from(b.footprint()).map_err(|_| overflow(b.bytes))?;
        delta[b.start] += f;
        delta[b.end] -= f;
    }
    let (mut live, mut peak) = (0isize, 0isize);
    for d in delta {
        live += d;
        peak = peak.max(live);
    }
    Ok(peak as usize)
}

/// Hands out a plan's offsets to a later pass, checking as it goes that the pass makes the
/// same requests in the same order as the recorded one. Two blocks may share memory only
/// because the recorded pass freed one before allocating the other; so before each allocation
/// the buffers the recorded pass had freed by then must have been freed again. Any divergence
/// (another size, another order, a buffer kept longer) is an error, never a silent overlap.
#[derive(Clone, Debug)]
pub struct Replay {
    cursor: usize,
    next_alloc: usize,
    /// Frees seen since the last allocation.
    freed: Vec<usize>,
    live: usize,
    /// A divergence noticed in a free (which cannot fail): reported by the next call that can.
    error: Option<String>,
}

impl Default for Replay {
    fn default() -> Self {
        Self::new()
    }
}

impl Replay {
    pub fn new() -> Self {
        Replay { cursor: 0, next_alloc: 0, freed: Vec::new(), live: 0, error: None }
    }

    /// The next allocation: its id and offset, if `bytes` is what the plan expects here.
    pub fn alloc(&mut self, plan: &Plan, bytes: usize) -> Result<(usize, usize)> {
        self.take_error()?;
        self.match_frees(plan, &format!("allocation #{}", self.next_alloc))?;
        let k = self.next_alloc;
        let Some(block) = plan.blocks.get(k) else {
            return Err(diverged(format!(
                "allocation #{k} of {bytes} bytes, but the recorded pass made only {} allocations",
                plan.blocks.len()
            )));
        };
        if block.bytes != bytes
            || plan.events.get(self.cursor)
                != Some(&Event::Alloc { id: block.id, bytes: block.bytes, align: block.align })
        {
            return Err(diverged(format!(
                "allocation #{k} asks for {bytes} bytes; the recorded pass asked for {} bytes there",
                block.bytes
            )));
        }
        self.cursor += 1;
        self.next_alloc += 1;
        self.live += 1;
        Ok((block.id, block.offset))
    }

    /// A buffer handed out by [`Replay::alloc`] is freed.
    pub fn free(&mut self, id: usize) {
        self.freed.push(id);
        self.live = self.live.saturating_sub(1);
    }

    /// The pass is over: every recorded allocation was made and every buffer freed as recorded.
    pub fn finish(&mut self, plan: &Plan) -> Result<()> {
        self.take_error()?;
        self.match_frees(plan, "the end of the pass")?;
        if self.next_alloc != plan.blocks.len() || self.cursor != plan.events.len() {
            return Err(diverged(format!(
                "the pass made {} allocations; the recorded pass made {}",
                self.next_alloc,
                plan.blocks.len()
            )));
        }
        if self.live != 0 {
            return Err(diverged(format!("{} buffer(s) of the pass are still in use at its end", self.live)));
        }
        Ok(())
    }

    /// Number of buffers handed out and not yet freed.
    pub fn live(&self) -> usize {
        self.live
    }

    fn take_error(&mut self) -> Result<()> {
        match self.error.take() {
            Some(e) => Err(diverged(e)),
            None => Ok(()),
        }
    }

    /// The frees seen since the last allocation must be those recorded before `what` (in any
    /// order among themselves: they all precede the next allocation either way).
    fn match_frees(&mut self, plan: &Plan, what: &str) -> Result<()> {
        let mut want = Vec::new();
        while let Some(Event::Free { id }) = plan.events.get(self.cursor) {
            want.push(*id);
            self.cursor += 1;
        }
        let mut got = std::mem::take(&mut self.freed);
        want.sort_unstable();
        got.sort_unstable();
        if want != got {
            let still_live: Vec<usize> = want.iter().filter(|i| !got.contains(i)).copied().collect();
            let early: Vec<usize> = got.iter().filter(|i| !want.contains(i)).copied().collect();
            return Err(diverged(format!(
                "before {what}, buffers {still_live:?} were still in use (the recorded pass had freed them) and \
                 {early:?} were freed (the recorded pass had not)"
            )));
        }
        Ok(())
    }

    /// Notes a divergence found where no error can be returned.
    pub fn poison(&mut self, msg: String) {
        self.error.get_or_insert(msg);
    }
}

fn diverged(msg: String) -> Error {
    Error::Device(format!(
        "planned memory: this pass diverged from the recorded pass ({msg}); the plan is only valid for the exact \
         sequence of buffers it was made from"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: deterministic traces without extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A random program: allocations of log-uniform sizes (1 B .. 4 MiB) with mixed alignments,
    /// interleaved with frees of random live buffers; some never freed.
    fn random_trace(seed: u64, steps: usize) -> Trace {
        let mut rng = Rng(seed);
        let mut t = Trace::new();
        let mut live: Vec<usize> = Vec::new();
        for _ in 0..steps {
            if live.is_empty() || rng.below(100) < 55 {
                let bytes = 1usize << rng.below(23);
                let bytes = bytes + rng.below(bytes);
                let align = [1, 16, 256, 4096][rng.below(4)];
                live.push(t.alloc(bytes, align));
            } else {
                let i = rng.below(live.len());
                t.free(live.swap_remove(i));
            }
        }
        t
    }

    /// Brute force: every pair of blocks alive together is disjoint in memory.
    fn assert_no_overlap(p: &Plan) {
        for (i, a) in p.blocks.iter().enumerate() {
            assert_eq!(a.offset % a.align, 0, "block {} misaligned", a.id);
            assert!(a.offset + a.footprint() <= p.size);
            for b in &p.blocks[i + 1..] {
                if a.lives_with(b) {
                    assert!(
                        a.offset + a.footprint() <= b.offset || b.offset + b.footprint() <= a.offset,
                        "blocks {} and {} overlap",
                        a.id,
                        b.id
                    );
                }
            }
        }
    }

    #[test]
    fn random_traces_never_overlap_and_stay_near_the_lower_bound() {
        let mut worst = 1.0f64;
        let mut sum = 0.0;
        let seeds = 300u64;
        for seed in 0..seeds {
            let t = random_trace(seed, 40 + (seed as usize % 7) * 60);
            let p = plan(&t).unwrap();
            assert_no_overlap(&p);
            assert!(p.size >= p.max_live, "seed {seed}: below the lower bound");
            worst = worst.max(p.overhead());
            sum += p.overhead();
        }
        eprintln!("random traces: arena / max-live = {:.3} mean, {worst:.3} worst", sum / seeds as f64);
        // Greedy by size has no worst-case guarantee; on these traces it stays within 1.5x
        // (measured: see the printout), and a regression to a naive layout would not.
        assert!(worst <= 1.5, "worst arena / max-live {worst:.3}");
        assert!(sum / (seeds as f64) <= 1.1, "mean arena / max-live {:.3}", sum / seeds as f64);
    }

    #[test]
    fn plans_are_deterministic_and_ignore_id_labels() {
        let t = random_trace(42, 400);
        let (a, b) = (plan(&t).unwrap(), plan(&t).unwrap());
        assert_eq!(a, b);
        // The same program with other id labels gets the same offsets in allocation order.
        let relabel = |id: usize| 1_000_003 * (id + 7) % 999_983_000;
        let events = t
            .events
            .iter()
            .map(|e| match *e {
                Event::Alloc { id, bytes, align } => Event::Alloc { id: relabel(id), bytes, align },
                Event::Free { id } => Event::Free { id: relabel(id) },
            })
            .collect();
        let c = plan(&Trace::from_events(events)).unwrap();
        let offs = |p: &Plan| p.blocks.iter().map(|b| b.offset).collect::<Vec<_>>();
        assert_eq!(offs(&a), offs(&c));
        assert_eq!(a.size, c.size);
    }

    #[test]
    fn simultaneous_buffers_are_stacked_and_sequential_ones_share() {
        // All alive together: the arena is the sum of the footprints.
        let mut t = Trace::new();
        let ids: Vec<usize> = [1000usize, 3000, 256, 1].iter().map(|&b| t.alloc(b, 256)).collect();
        for id in ids {
            t.free(id);
        }
        let p = plan(&t).unwrap();
        assert_eq!(p.size, 1024 + 3072 + 256 + 256);
        assert_eq!(p.size, p.max_live);
        // One at a time: every buffer at offset 0, the arena the largest.
        let mut t = Trace::new();
        for b in [5000usize, 100, 70_000, 3] {
            let id = t.alloc(b, 256);
            t.free(id);
        }
        let p = plan(&t).unwrap();
        assert!(p.blocks.iter().all(|b| b.offset == 0));
        assert_eq!(p.size, 70_144);
    }

    #[test]
    fn a_small_buffer_fills_the_hole_a_freed_one_left() {
        // A (big) and B (big) alive; A freed; C (small) then fits where A was, under B's peak.
        let mut t = Trace::new();
        let a = t.alloc(4096, 256);
        let b = t.alloc(4096, 256);
        t.free(a);
        let c = t.alloc(1024, 256);
        let d = t.alloc(2048, 256);
        t.free(b);
        t.free(c);
        t.free(d);
        let p = plan(&t).unwrap();
        assert_no_overlap(&p);
        assert_eq!(p.size, 8192, "C and D fit into A's hole");
        assert_eq!(p.size, p.max_live);
    }

    #[test]
    fn unfreed_buffers_live_to_the_end() {
        let mut t = Trace::new();
        let a = t.alloc(512, 256);
        let b = t.alloc(512, 256);
        t.free(b);
        let _c = t.alloc(512, 256);
        assert_eq!(t.live_at_end(), 2);
        let p = plan(&t).unwrap();
        assert_eq!(p.blocks[a].end, t.events.len());
        assert_no_overlap(&p);
        assert_eq!(p.size, 1024, "c reuses b's memory, not a's");
    }

    #[test]
    fn empty_and_zero_byte_traces() {
        let p = plan(&Trace::new()).unwrap();
        assert_eq!((p.size, p.max_live, p.blocks.len()), (0, 0, 0));
        let mut t = Trace::new();
        let a = t.alloc(0, 256);
        let b = t.alloc(0, 256);
        let p = plan(&t).unwrap();
        assert_ne!(p.blocks[a].offset, p.blocks[b].offset, "two live empty buffers get distinct addresses");
        assert_no_overlap(&p);
    }

    #[test]
    fn alignment_is_honoured_for_odd_sizes() {
        let mut t = Trace::new();
        let ids: Vec<usize> = (0..50).map(|i| t.alloc(1 + i * 37, [1, 2, 64, 512][i % 4])).collect();
        for id in ids.into_iter().step_by(3) {
            t.free(id);
        }
        for i in 0..20 {
            t.alloc(3 + i * 101, 128);
        }
        let p = plan(&t).unwrap();
        assert_no_overlap(&p);
        assert_eq!(p.size % 512, 0);
    }

    #[test]
    fn malformed_traces_are_errors() {
        let cases: Vec<(Vec<Event>, &str)> = vec![
            (vec![Event::Free { id: 3 }], "never allocated"),
            (
                vec![Event::Alloc { id: 0, bytes: 8, align: 8 }, Event::Free { id: 0 }, Event::Free { id: 0 }],
                "freed twice",
            ),
            (
                vec![Event::Alloc { id: 0, bytes: 8, align: 8 }, Event::Alloc { id: 0, bytes: 8, align: 8 }],
                "used twice",
            ),
            (vec![Event::Alloc { id: 0, bytes: 8, align: 24 }], "power of two"),
            (vec![Event::Alloc { id: 0, bytes: 8, align: 0 }], "power of two"),
            (vec![Event::Alloc { id: 0, bytes: usize::MAX - 3, align: 256 }], "overflow"),
            (
                vec![
                    Event::Alloc { id: 0, bytes: usize::MAX / 2, align: 1 },
                    Event::Alloc { id: 1, bytes: usize::MAX / 2, align: 1 },
                    Event::Alloc { id: 2, bytes: usize::MAX / 2, align: 1 },
                ],
                "overflow",
            ),
        ];
        for (events, want) in cases {
            let e = plan(&Trace::from_events(events.clone())).unwrap_err().to_string();
            assert!(e.contains(want), "{events:?}: {e}");
        }
    }

    #[test]
    fn verify_rejects_an_overlapping_layout() {
        let mut t = Trace::new();
        let a = t.alloc(1000, 256);
        let _b = t.alloc(1000, 256);
        let mut p = plan(&t).unwrap();
        assert!(verify(&p).is_ok());
        p.blocks[a].offset = p.blocks[1 - a].offset;
        assert!(verify(&p).unwrap_err().to_string().contains("overlap"));
    }

    /// A trace replayed with its own plan, the pass's allocations and frees checked.
    fn replay(p: &Plan, events: &[Event]) -> Result<Vec<usize>> {
        let mut r = Replay::new();
        let mut offsets = Vec::new();
        for e in events {
            match *e {
                Event::Alloc { bytes, .. } => offsets.push(r.alloc(p, bytes)?.1),
                Event::Free { id } => r.free(id),
            }
        }
        r.finish(p)?;
        Ok(offsets)
    }

    fn closed_trace(seed: u64) -> Trace {
        let mut t = random_trace(seed, 200);
        let live: Vec<usize> = {
            let p = lifetimes(&t).unwrap();
            p.iter().filter(|b| b.end == t.events.len()).map(|b| b.id).collect()
        };
        for id in live {
            t.free(id);
        }
        t
    }

    #[test]
    fn replay_of_the_recorded_pass_gets_the_planned_offsets() {
        let t = closed_trace(5);
        let p = plan(&t).unwrap();
        let offsets = replay(&p, &t.events).unwrap();
        assert_eq!(offsets, p.blocks.iter().map(|b| b.offset).collect::<Vec<_>>());
    }

    #[test]
    fn replay_reports_every_kind_of_divergence() {
        let t = closed_trace(9);
        let p = plan(&t).unwrap();
        let first_alloc =
            |from: usize| t.events[from..].iter().position(|e| matches!(e, Event::Alloc { .. })).unwrap() + from;
        // Another size.
        let mut ev = t.events.clone();
        let i = first_alloc(10);
        if let Event::Alloc { bytes, .. } = &mut ev[i] {
            *bytes += 16;
        }
        assert!(replay(&p, &ev).unwrap_err().to_string().contains("asks for"));
        // A buffer kept past the point where the recorded pass freed it: the next allocation
        // may overlap it, so that allocation fails.
        let f = t.events.iter().position(|e| matches!(e, Event::Free { .. })).unwrap();
        let mut ev = t.events.clone();
        let freed = ev.remove(f);
        ev.push(freed);
        assert!(replay(&p, &ev).unwrap_err().to_string().contains("still in use"));
        // An extra allocation at the end.
        let mut ev = t.events.clone();
        ev.push(Event::Alloc { id: 999_999, bytes: 8, align: 256 });
        assert!(replay(&p, &ev).unwrap_err().to_string().contains("only"));
        // A pass that stops early.
        let ev = &t.events[..first_alloc(t.events.len() / 2)];
        assert!(replay(&p, ev).is_err());
        // A divergence noticed in a drop is reported by the next call.
        let mut r = Replay::new();
        r.poison("a buffer from another pass".into());
        assert!(r.finish(&p).unwrap_err().to_string().contains("another pass"));
    }
}
