//! The CPU engine: float32 values and accumulation, channels-last, multi-threaded.

pub mod reference;
