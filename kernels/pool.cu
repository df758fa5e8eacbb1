// Pooling: max pool with kernel = stride (floor), and adaptive average pool with PyTorch's
// windows [floor(i*in/out), ceil((i+1)*in/out)). One thread per output voxel and 8-channel
// group (16-byte loads along the innermost channel axis) or per voxel and channel when C is
// not a multiple of 8. The input's pending norm is applied per element before the reduction.
#include "common.cuh"

namespace {

template <int VEC, bool MAX>
__device__ __forceinline__ void pool(const PoolParams& p) {
    const int groups = p.c / VEC;
    const size_t ovox = (size_t)p.oh * p.ow * p.od;
    const size_t total = (size_t)p.n * ovox * groups;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int g = (int)(i % groups);
        const size_t ov = (i / groups) % ovox;
        const int n = (int)(i / groups / ovox);
        const int od_ = (int)(ov % p.od), ow_ = (int)((ov / p.od) % p.ow), oh_ = (int)(ov / p.od / p.ow);
        int h0, h1, w0, w1, d0, d1;
        if (MAX) {
            h0 = oh_ * p.kh, h1 = h0 + p.kh;
            w0 = ow_ * p.kw, w1 = w0 + p.kw;
            d0 = od_ * p.kd, d1 = d0 + p.kd;
        } else {
            h0 = oh_ * p.h / p.oh, h1 = ((oh_ + 1) * p.h + p.oh - 1) / p.oh;
            w0 = ow_ * p.w / p.ow, w1 = ((ow_ + 1) * p.w + p.ow - 1) / p.ow;
            d0 = od_ * p.d / p.od, d1 = ((od_ + 1) * p.d + p.od - 1) / p.od;
        }
        float r[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) r[k] = MAX ? -INFINITY : 0.f;
        const int c0 = g * VEC;
        for (int a = h0; a < h1; ++a)
            for (int b = w0; b < w1; ++b)
                for (int z = d0; z < d1; ++z) {
                    const size_t src = ((((size_t)n * p.h + a) * p.w + b) * p.d + z) * p.c + c0;
                    float v[VEC];
                    if constexpr (VEC == 8) src_load8(p.x, src, n, c0, v);
                    else v[0] = src_load(p.x, src, n, c0);
#pragma unroll
                    for (int k = 0; k < VEC; ++k) r[k] = MAX ? fmaxf(r[k], v[k]) : r[k] + v[k];
                }
        if (!MAX) {
            const float inv = 1.f / (float)((h1 - h0) * (w1 - w0) * (d1 - d0));
#pragma unroll
            for (int k = 0; k < VEC; ++k) r[k] *= inv;
        }
        const size_t dst = ((size_t)n * ovox + ov) * p.c + c0;
        if constexpr (VEC == 8) store8(p.y, dst, r);
        else p.y[dst] = __float2half_rn(r[0]);
    }
}

}  // namespace

extern "C" __global__ void max_pool_f16_v8(const __grid_constant__ PoolParams p) { pool<8, true>(p); }
extern "C" __global__ void max_pool_f16_v1(const __grid_constant__ PoolParams p) { pool<1, true>(p); }
extern "C" __global__ void avg_pool_adaptive_f16_v8(const __grid_constant__ PoolParams p) { pool<8, false>(p); }
extern "C" __global__ void avg_pool_adaptive_f16_v1(const __grid_constant__ PoolParams p) { pool<1, false>(p); }
