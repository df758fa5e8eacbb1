//! Network weights: the reference's PyTorch checkpoints, safetensors, and the engine's own
//! memory-mapped frozen format, all loading into one [`StateDict`].

mod state_dict;

pub use state_dict::StateDict;
