// Elementwise ops over channels-last tensors of one size: sum (+ReLU; also the materialising
// InstanceNorm + residual + ReLU, since a pending norm is applied on load), sigmoid of a sum
// (spatial attention map), x*w+x (attention, w broadcast when it has one channel), channel
// concat, flips, and the conversion to PyTorch's (N, C, H, W, D) f32 for download. Vector
// variants move 8 channels (16 bytes) per thread; C = 1 or 2 tensors use the scalar ones.
#include "common.cuh"

namespace {

__device__ __forceinline__ size_t gtid() { return blockIdx.x * (size_t)blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gstride() { return (size_t)gridDim.x * blockDim.x; }

// Flat element index e of an (N, vox, C) tensor -> (sample, channel).
__device__ __forceinline__ void nc_of(size_t e, size_t vox, int c, int& n, int& ch) {
    ch = (int)(e % c);
    n = (int)(e / c / vox);
}

template <int VEC>
__device__ __forceinline__ void sum(const EwParams& p) {
    const size_t vox = (size_t)p.h * p.w * p.d;
    const size_t total = (size_t)p.n * vox * p.c;
    for (size_t e = gtid() * VEC; e < total; e += gstride() * VEC) {
        int n, c;
        nc_of(e, vox, p.c, n, c);
        float r[VEC], v[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) r[k] = 0.f;
        for (int j = 0; j < p.count; ++j) {
            if constexpr (VEC == 8) src_load8(p.in[j], e, n, c, v);
            else v[0] = src_load(p.in[j], e, n, c);
#pragma unroll
            for (int k = 0; k < VEC; ++k) r[k] += v[k];
        }
        if (p.relu) {
#pragma unroll
            for (int k = 0; k < VEC; ++k) r[k] = fmaxf(r[k], 0.f);
        }
        if constexpr (VEC == 8) store8(p.y, e, r);
        else p.y[e] = __float2half_rn(r[0]);
    }
}

template <int VEC>
__device__ __forceinline__ void attend(const EwParams& p) {
    const size_t vox = (size_t)p.h * p.w * p.d;
    const size_t total = (size_t)p.n * vox * p.c;
    const Src& w = p.in[1];
    for (size_t e = gtid() * VEC; e < total; e += gstride() * VEC) {
        int n, c;
        nc_of(e, vox, p.c, n, c);
        float x[VEC], wv[VEC];
        if constexpr (VEC == 8) src_load8(p.in[0], e, n, c, x);
        else x[0] = src_load(p.in[0], e, n, c);
        if (w.c == 1) {
            const float s = src_load(w, e / p.c, n, 0);
#pragma unroll
            for (int k = 0; k < VEC; ++k) wv[k] = s;
        } else if constexpr (VEC == 8) {
            src_load8(w, e, n, c, wv);
        } else {
            wv[0] = src_load(w, e, n, c);
        }
#pragma unroll
        for (int k = 0; k < VEC; ++k) x[k] = fmaf(x[k], wv[k], x[k]);
        if constexpr (VEC == 8) store8(p.y, e, x);
        else p.y[e] = __float2half_rn(x[0]);
    }
}

template <int VEC>
__device__ __forceinline__ void concat(const EwParams& p) {
    const size_t vox = (size_t)p.h * p.w * p.d;
    const size_t total = (size_t)p.n * vox * p.c;
    const int ca = p.in[0].c, cb = p.in[1].c;
    for (size_t e = gtid() * VEC; e < total; e += gstride() * VEC) {
        int n, c;
        nc_of(e, vox, p.c, n, c);
        const size_t v = e / p.c;
        float r[VEC];
        if (c < ca) {
            if constexpr (VEC == 8) src_load8(p.in[0], v * ca + c, n, c, r);
            else r[0] = src_load(p.in[0], v * ca + c, n, c);
        } else {
            if constexpr (VEC == 8) src_load8(p.in[1], v * cb + (c - ca), n, c - ca, r);
            else r[0] = src_load(p.in[1], v * cb + (c - ca), n, c - ca);
        }
        if constexpr (VEC == 8) store8(p.y, e, r);
        else p.y[e] = __float2half_rn(r[0]);
    }
}

template <int VEC>
__device__ __forceinline__ void flip(const EwParams& p) {
    const size_t vox = (size_t)p.h * p.w * p.d;
    const size_t total = (size_t)p.n * vox * p.c;
    for (size_t e = gtid() * VEC; e < total; e += gstride() * VEC) {
        int n, c;
        nc_of(e, vox, p.c, n, c);
        const size_t v = (e / p.c) % vox;
        int z = (int)(v % p.d), y = (int)((v / p.d) % p.w), x = (int)(v / p.d / p.w);
        if (p.flip & 1) x = p.h - 1 - x;
        if (p.flip & 2) y = p.w - 1 - y;
        if (p.flip & 4) z = p.d - 1 - z;
        const size_t src = ((((size_t)n * p.h + x) * p.w + y) * p.d + z) * p.c + c;
        float r[VEC];
        if constexpr (VEC == 8) src_load8(p.in[0], src, n, c, r);
        else r[0] = src_load(p.in[0], src, n, c);
        if constexpr (VEC == 8) store8(p.y, e, r);
        else p.y[e] = __float2half_rn(r[0]);
    }
}

}  // namespace

extern "C" __global__ void sum_f16_v8(const __grid_constant__ EwParams p) { sum<8>(p); }
extern "C" __global__ void sum_f16_v1(const __grid_constant__ EwParams p) { sum<1>(p); }
extern "C" __global__ void attend_f16_v8(const __grid_constant__ EwParams p) { attend<8>(p); }
extern "C" __global__ void attend_f16_v1(const __grid_constant__ EwParams p) { attend<1>(p); }
extern "C" __global__ void concat_f16_v8(const __grid_constant__ EwParams p) { concat<8>(p); }
extern "C" __global__ void concat_f16_v1(const __grid_constant__ EwParams p) { concat<1>(p); }
extern "C" __global__ void flip_f16_v8(const __grid_constant__ EwParams p) { flip<8>(p); }
extern "C" __global__ void flip_f16_v1(const __grid_constant__ EwParams p) { flip<1>(p); }

// The spatial attention map: sigmoid(a + b), both 1-channel.
extern "C" __global__ void sigmoid_sum_f16(const __grid_constant__ EwParams p) {
    const size_t vox = (size_t)p.h * p.w * p.d;
    const size_t total = (size_t)p.n * vox * p.c;
    for (size_t e = gtid(); e < total; e += gstride()) {
        int n, c;
        nc_of(e, vox, p.c, n, c);
        const float s = src_load(p.in[0], e, n, c) + src_load(p.in[1], e, n, c);
        p.y[e] = __float2half_rn(1.f / (1.f + __expf(-s)));
    }
}

// (N, H, W, D, C) fp16 (with any pending norm) -> (N, C, H, W, D) f32; one thread per output
// element so the f32 writes are coalesced.
extern "C" __global__ void to_ncdhw_f32(const __grid_constant__ EwParams p) {
    const size_t vox = (size_t)p.h * p.w * p.d;
    const size_t total = (size_t)p.n * vox * p.c;
    for (size_t o = gtid(); o < total; o += gstride()) {
        const size_t v = o % vox;
        const int c = (int)((o / vox) % p.c);
        const int n = (int)(o / vox / p.c);
        p.yf[o] = src_load(p.in[0], ((size_t)n * vox + v) * p.c + c, n, c);
    }
}
