// Trilinear resize with align_corners=True (the context block's and the channel attention's
// upsampling back to the block's input size). One thread per output voxel and 8-channel group:
// the 8 corner voxels are each one 16-byte load of 8 channels in the channels-last layout.
// Source coordinates in fp32 as PyTorch computes them (scale = (in-1)/(out-1)).
#include "common.cuh"

namespace {

__device__ __forceinline__ void axis(int i, int in, int out, int& i0, int& i1, float& f) {
    const float s = out > 1 ? (float)i * ((float)(in - 1) / (float)(out - 1)) : 0.f;
    i0 = min((int)floorf(s), in - 1);
    i1 = min(i0 + 1, in - 1);
    f = s - (float)i0;
}

template <int VEC>
__device__ __forceinline__ void resize(const PoolParams& p) {
    const int groups = p.c / VEC;
    const size_t ovox = (size_t)p.oh * p.ow * p.od;
    const size_t total = (size_t)p.n * ovox * groups;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int g = (int)(i % groups);
        const size_t ov = (i / groups) % ovox;
        const int n = (int)(i / groups / ovox);
        const int z = (int)(ov % p.od), y = (int)((ov / p.od) % p.ow), x = (int)(ov / p.od / p.ow);
        int h0, h1, w0, w1, d0, d1;
        float fh, fw, fd;
        axis(x, p.h, p.oh, h0, h1, fh);
        axis(y, p.w, p.ow, w0, w1, fw);
        axis(z, p.d, p.od, d0, d1, fd);
        const int c0 = g * VEC;
        float r[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) r[k] = 0.f;
#pragma unroll
        for (int corner = 0; corner < 8; ++corner) {
            const int a = corner & 4 ? h1 : h0, b = corner & 2 ? w1 : w0, c = corner & 1 ? d1 : d0;
            const float wgt = (corner & 4 ? fh : 1.f - fh) * (corner & 2 ? fw : 1.f - fw) * (corner & 1 ? fd : 1.f - fd);
            const size_t src = ((((size_t)n * p.h + a) * p.w + b) * p.d + c) * p.c + c0;
            float v[VEC];
            if constexpr (VEC == 8) src_load8(p.x, src, n, c0, v);
            else v[0] = src_load(p.x, src, n, c0);
#pragma unroll
            for (int k = 0; k < VEC; ++k) r[k] = fmaf(wgt, v[k], r[k]);
        }
        const size_t dst = ((size_t)n * ovox + ov) * p.c + c0;
        if constexpr (VEC == 8) store8(p.y, dst, r);
        else p.y[dst] = __float2half_rn(r[0]);
    }
}

}  // namespace

extern "C" __global__ void resize_trilinear_f16_v8(const __grid_constant__ PoolParams p) { resize<8>(p); }
extern "C" __global__ void resize_trilinear_f16_v1(const __grid_constant__ PoolParams p) { resize<1>(p); }
