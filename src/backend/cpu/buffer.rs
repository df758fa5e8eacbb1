//! Reusable float buffers for the CPU engine.
//!
//! A 192x192x16 patch has 75 MB activations at full resolution. Fresh allocations of that size
//! come from `mmap` and pay a page fault per 4 KiB on first touch (tens of milliseconds per
//! tensor), so buffers go back to a pool when a tensor drops and the next op of a similar size
//! takes them. The pool is the engine's memory plan: peak memory is the peak live set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Buffers kept for reuse, bounded in total size.
pub struct Pool {
    free: Mutex<Vec<Vec<f32>>>,
    /// At most this many floats are parked; larger surpluses go back to the OS.
    limit: AtomicUsize,
}

/// The default parking limit (1 GiB): inference's live set shrinks and grows by less.
pub const MAX_PARKED_FLOATS: usize = 256 << 20;

impl Default for Pool {
    fn default() -> Self {
        Pool { free: Mutex::new(Vec::new()), limit: AtomicUsize::new(MAX_PARKED_FLOATS) }
    }
}

impl Pool {
    /// Park up to `floats` floats. A training step frees its whole tape (several GiB) at the
    /// end of the backward and allocates it again in the next forward: with a limit above the
    /// tape's size those pages are reused instead of being returned to the OS and faulted in
    /// (zeroed by the kernel) again every step.
    pub fn set_limit(&self, floats: usize) {
        self.limit.store(floats, Ordering::Relaxed);
    }

    /// A buffer of exactly `len` floats with unspecified contents.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        // Best fit among buffers large enough and not wastefully larger (at most 2x).
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len && v.capacity() <= 2 * len.max(1024))
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut v = free.swap_remove(i);
                drop(free);
                // SAFETY-free resize: shrink or grow within capacity; new floats are zeroed by resize.
                v.resize(len, 0.0);
                v
            }
            None => {
                drop(free);
                vec![0.0; len]
            }
        }
    }

    /// A zero-filled buffer.
    pub fn take_zeroed(&self, len: usize) -> Vec<f32> {
        let mut v = self.take(len);
        v.fill(0.0);
        v
    }

    pub fn give(&self, v: Vec<f32>) {
        // Small buffers are parked too (the deepest levels' maps are ~1k floats): a forward
        // pass after warm-up then allocates none.
        if v.capacity() == 0 {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let parked: usize = free.iter().map(|b| b.capacity()).sum();
        if parked + v.capacity() <= self.limit.load(Ordering::Relaxed) {
            free.push(v);
        }
    }

    /// Releases every parked buffer.
    pub fn clear(&self) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A float buffer that returns to its pool when dropped.
pub struct Buffer {
    data: Vec<f32>,
    pool: Option<Arc<Pool>>,
}

impl Buffer {
    pub fn new(data: Vec<f32>, pool: Option<Arc<Pool>>) -> Self {
        Buffer { data, pool }
    }
    pub fn into_vec(mut self) -> Vec<f32> {
        self.pool = None;
        std::mem::take(&mut self.data)
    }
}

impl std::ops::Deref for Buffer {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.data
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.data
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            p.give(std::mem::take(&mut self.data));
        }
    }
}
