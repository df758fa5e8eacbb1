//! Kernel parameter blocks, field for field the structs of `kernels/common.cuh`. Every kernel
//! takes one of these by value (`__grid_constant__`), so a launch passes a single pointer.
//! Both sides assert the sizes; a field added on one side only fails the build.

#![allow(dead_code)]

use half::f16;

/// A device pointer as the kernels see it (`CUdeviceptr`); 0 is null.
pub type DPtr = u64;

/// How a kernel reads an activation tensor: raw fp16 values, optionally normalised with
/// per-(sample, channel) `(mean, rstd)` and passed through ReLU on load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Src {
    pub data: DPtr,
    pub stats: DPtr,
    pub relu: i32,
    pub c: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvParams {
    pub x: Src,
    pub wt: DPtr,
    pub wf: DPtr,
    pub bias: DPtr,
    pub y: DPtr,
    pub partial: DPtr,
    pub skip: Src,
    pub h: i32,
    pub w: i32,
    pub d: i32,
    pub cout: i32,
    pub kh: i32,
    pub kw: i32,
    pub kd: i32,
    pub tiles: i32,
    pub hs: i32,
    pub ws: i32,
    pub ds: i32,
    pub wf_smem: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StatsParams {
    pub x: Src,
    pub partial: DPtr,
    pub stats: DPtr,
    pub n: i32,
    pub c: i32,
    pub tiles: i32,
    pub vox: i32,
    pub eps: f32,
    pub pad_: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolParams {
    pub x: Src,
    pub y: DPtr,
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub d: i32,
    pub oh: i32,
    pub ow: i32,
    pub od: i32,
    pub kh: i32,
    pub kw: i32,
    pub kd: i32,
    pub pad_: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EwParams {
    pub inputs: [Src; 4],
    pub y: DPtr,
    pub yf: DPtr,
    pub count: i32,
    pub relu: i32,
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub d: i32,
    pub flip: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowParams {
    pub patch: Src,
    pub weight: DPtr,
    pub acc: DPtr,
    pub wsum: DPtr,
    pub mask: DPtr,
    pub out: DPtr,
    pub sample: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub d: i32,
    pub ph: i32,
    pub pw: i32,
    pub pd: i32,
    pub oh: i32,
    pub ow: i32,
    pub od: i32,
    pub flip: i32,
}

const _: () = assert!(std::mem::size_of::<Src>() == 24);
const _: () = assert!(std::mem::size_of::<ConvParams>() == 136);
const _: () = assert!(std::mem::size_of::<StatsParams>() == 64);
const _: () = assert!(std::mem::size_of::<PoolParams>() == 80);
const _: () = assert!(std::mem::size_of::<EwParams>() == 144);
const _: () = assert!(std::mem::size_of::<WindowParams>() == 112);

/// Rows (voxels) per statistics tile: `FMSEG_TILE_ROWS` in common.cuh.
pub const TILE_ROWS: usize = 128;

/// fp16 bit pattern of a quiet NaN, used to poison outputs in tests.
pub const F16_NAN_BITS: u16 = 0x7e00;

const _: () = assert!(std::mem::size_of::<f16>() == 2);
