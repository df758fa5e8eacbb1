// Shared definitions of the fmseg kernels: the parameter blocks (mirrored field for field in
// src/backend/cuda/params.rs; both sides assert the sizes), the lazy-tensor load and the
// tensor-core primitives.
//
// Activations are FP16, channels-last: (N, H, W, D, C) with C innermost, so that a voxel's
// channels are one contiguous run (16-byte vector loads, and implicit-GEMM rows that are plain
// memory rows). Statistics and accumulation are FP32.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

// How a consumer reads an activation tensor. A conv followed by InstanceNorm leaves its raw
// output plus per-(sample, channel) statistics; the normalisation (and ReLU) is applied by
// whichever kernel reads the tensor next, so the normalised tensor never round-trips through
// device memory.
struct Src {
    const __half* data;   // (N, H, W, D, C) fp16
    const float2* stats;  // (N, C) of (mean, rstd), or null: the values are used as stored
    int relu;             // apply max(0, .) after the (optional) normalisation
    int c;                // channels of the tensor
};

// Convolutions (conv_mma.cu, conv_direct.cu) and the decoder's transposed conv + skip add.
struct ConvParams {
    Src x;                // input, x.c = Cin
    const __half* wt;     // tensor-core kernels: (Cout, taps, Cin) fp16; transposed: (offsets, Cout, Cin)
    const float* wf;      // direct kernel: (Cout padded to the channel group, taps, Cin) f32
    const float* bias;    // (Cout) or null
    __half* y;            // output (N, H, W, D, Cout); transposed: (N, hs, ws, ds, Cout)
    float2* partial;      // (N, tiles, Cout) of per-tile (mean, M2), or null: no statistics
    Src skip;             // transposed only: the skip tensor added to the upsampled output
    int h, w, d;          // input spatial size (= output size for a conv)
    int cout;
    int kh, kw, kd;       // kernel (transposed: kernel = stride)
    int tiles;            // row tiles per sample (ceil(h*w*d / 128))
    int hs, ws, ds;       // transposed: output (skip) size; the upsampled tensor is replicate-padded to it
    int wf_smem;          // direct kernel: 1 when the f32 weights are staged in shared memory
};

// Instance-norm statistics: per-tile partials (from a conv epilogue or stats_partial) are merged
// into (mean, rstd) per sample and channel.
struct StatsParams {
    Src x;                // stats_partial only
    float2* partial;      // (N, tiles, C) of (mean, M2)
    float2* stats;        // (N, C) of (mean, rstd)
    int n, c, tiles, vox;
    float eps;
    int pad_;
};

// Max pool, adaptive average pool, trilinear resize: x (N, h, w, d, C) -> y (N, oh, ow, od, C).
struct PoolParams {
    Src x;
    __half* y;
    int n, c;
    int h, w, d;
    int oh, ow, od;
    int kh, kw, kd;       // max pool kernel (= stride)
    int pad_;
};

// Elementwise ops over same-sized tensors (sum, sigmoid_sum, attend, concat, flip, layout).
struct EwParams {
    Src in[4];
    __half* y;
    float* yf;            // f32 output (to_ncdhw_f32)
    int count;            // inputs used (sum)
    int relu;
    int n, c;             // output channels
    int h, w, d;
    int flip;             // flip_f16: bit 0 flips H, bit 1 W, bit 2 D
};

// Sliding-window blending and the post-processing of the blended logits (window.cu).
// Volumes are f32 in PyTorch layout (C, H, W, D) for one case.
struct WindowParams {
    Src patch;            // a batch of network outputs (N, ph, pw, pd, C)
    const float* weight;  // (ph, pw, pd) importance map
    float* acc;           // (C, H, W, D) weighted sum of logits
    float* wsum;          // (H, W, D) sum of weights
    unsigned char* mask;  // argmax output (H, W, D)
    __half* out;          // window_extract: a batch of patches (N, ph, pw, pd, C)
    int sample;           // which sample of the patch batch
    int c;
    int h, w, d;          // volume size
    int ph, pw, pd;       // patch size
    int oh, ow, od;       // window origin in the volume
    int flip;             // the patch was computed on an input flipped along these axes (bits H, W, D)
};

#define FMSEG_STATIC_SIZE(T, n) static_assert(sizeof(T) == (n), #T " layout changed: update params.rs")
FMSEG_STATIC_SIZE(Src, 24);
FMSEG_STATIC_SIZE(ConvParams, 136);
FMSEG_STATIC_SIZE(StatsParams, 64);
FMSEG_STATIC_SIZE(PoolParams, 80);
FMSEG_STATIC_SIZE(EwParams, 144);
FMSEG_STATIC_SIZE(WindowParams, 112);

// Rows per statistics tile: conv_mma's M tile, also used by conv_direct and stats_partial so
// that every producer of partials uses the same tiling.
#define FMSEG_TILE_ROWS 128

// ---- lazy loads -------------------------------------------------------------------------

__device__ __forceinline__ float2 src_norm(const Src& s, int n, int c) {
    return s.stats ? s.stats[(size_t)n * s.c + c] : make_float2(0.f, 1.f);
}

__device__ __forceinline__ float src_apply(const Src& s, float v, float2 st) {
    v = (v - st.x) * st.y;
    return s.relu ? fmaxf(v, 0.f) : v;
}

// Element `i` of the tensor (flat index in N, H, W, D, C order) as the consumer sees it.
__device__ __forceinline__ float src_load(const Src& s, size_t i, int n, int c) {
    float v = __half2float(s.data[i]);
    if (s.stats || s.relu) v = src_apply(s, v, src_norm(s, n, c));
    return v;
}

// Eight consecutive channels c0..c0+7 (16-byte aligned) starting at flat index i.
__device__ __forceinline__ void src_load8(const Src& s, size_t i, int n, int c0, float* out) {
    uint4 raw = *reinterpret_cast<const uint4*>(s.data + i);
    const __half2* h2 = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        float2 f = __half22float2(h2[k]);
        out[2 * k] = f.x;
        out[2 * k + 1] = f.y;
    }
    if (s.stats || s.relu) {
#pragma unroll
        for (int k = 0; k < 8; ++k) out[k] = src_apply(s, out[k], src_norm(s, n, c0 + k));
    }
}

__device__ __forceinline__ void store8(__half* y, size_t i, const float* v) {
    uint4 raw;
    __half2* h2 = reinterpret_cast<__half2*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) h2[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<uint4*>(y + i) = raw;
}

// ---- reductions -------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// ---- sm_80 tensor-core and async-copy primitives ---------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy that bypasses L1; `valid == false` writes zeros (the conv's
// zero padding comes for free).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(n));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

// D = A(16x16, row) * B(16x8, col) + D, fp16 inputs, fp32 accumulators.
__device__ __forceinline__ void mma_16816(float* d, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
