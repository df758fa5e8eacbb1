// Direct 3-D convolution on the CUDA cores for the shapes the tensor cores serve badly: the
// 1-channel input layer (K = taps, far below one 16-wide k-step) and the 1- and 2-channel
// outputs (attention maps, final logits; an n8 MMA tile would be 75-88 % padding). These layers
// are memory-bound: one thread per output voxel reads its taps x Cin inputs once (16-byte
// vectors when Cin % 8 == 0) and keeps COB output channels in registers.
//
// Same statistics contract as conv_mma: 128-voxel tiles, per-tile (mean, M2) of the stored
// fp16 values, and the same lazy-normalised input.
#include "common.cuh"

namespace {

constexpr int THREADS = FMSEG_TILE_ROWS;

template <int COB>
__device__ __forceinline__ void conv_direct(const ConvParams& p) {
    extern __shared__ float sW[];  // (COB, taps, Cin) f32 when p.wf_smem
    __shared__ float sRed[THREADS / 32][COB];
    __shared__ float sMean[COB];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int cin = p.x.c, taps = p.kh * p.kw * p.kd, vox = p.h * p.w * p.d;
    const int tile = blockIdx.x, co0 = blockIdx.y * COB, n = blockIdx.z;
    const float* wg = p.wf + (size_t)co0 * taps * cin;
    if (p.wf_smem) {
        for (int i = tid; i < COB * taps * cin; i += THREADS) sW[i] = wg[i];
        __syncthreads();
    }
    const float* W = p.wf_smem ? sW : wg;
    const int wstride = taps * cin;  // between output channels

    const int v = tile * THREADS + tid;
    const bool ok = v < vox;
    float acc[COB];
#pragma unroll
    for (int i = 0; i < COB; ++i) acc[i] = (p.bias && co0 + i < p.cout) ? p.bias[co0 + i] : 0.f;

    if (ok) {
        const int vd = v % p.d, t = v / p.d, vw = t % p.w, vh = t / p.w;
        for (int tap = 0; tap < taps; ++tap) {
            const int tk = tap % p.kd, t2 = tap / p.kd, tw = t2 % p.kw, th = t2 / p.kw;
            const int hh = vh + th - p.kh / 2, ww = vw + tw - p.kw / 2, dd = vd + tk - p.kd / 2;
            if ((unsigned)hh >= (unsigned)p.h || (unsigned)ww >= (unsigned)p.w || (unsigned)dd >= (unsigned)p.d) continue;
            const size_t base = ((size_t)n * vox + ((size_t)hh * p.w + ww) * p.d + dd) * cin;
            const float* wt = W + tap * cin;
            if ((cin & 7) == 0) {
                for (int ci = 0; ci < cin; ci += 8) {
                    float xv[8];
                    src_load8(p.x, base + ci, n, ci, xv);
#pragma unroll
                    for (int i = 0; i < COB; ++i)
#pragma unroll
                        for (int k = 0; k < 8; ++k) acc[i] = fmaf(xv[k], wt[i * wstride + ci + k], acc[i]);
                }
            } else {
                for (int ci = 0; ci < cin; ++ci) {
                    const float xv = src_load(p.x, base + ci, n, ci);
#pragma unroll
                    for (int i = 0; i < COB; ++i) acc[i] = fmaf(xv, wt[i * wstride + ci], acc[i]);
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < COB; ++i) acc[i] = __half2float(__float2half_rn(acc[i]));

    if (ok) {
        __half* yv = p.y + ((size_t)n * vox + v) * p.cout + co0;
        if (COB % 8 == 0 && co0 + COB <= p.cout && (p.cout & 7) == 0) {
#pragma unroll
            for (int i = 0; i < COB; i += 8) store8(yv, i, acc + i);
        } else {
#pragma unroll
            for (int i = 0; i < COB; ++i)
                if (co0 + i < p.cout) yv[i] = __float2half_rn(acc[i]);
        }
    }

    if (p.partial) {
        const int count = min(THREADS, vox - tile * THREADS);
#pragma unroll
        for (int i = 0; i < COB; ++i) {
            const float s = warp_sum(ok ? acc[i] : 0.f);
            if (lane == 0) sRed[warp][i] = s;
        }
        __syncthreads();
        if (tid < COB) {
            float s = 0.f;
#pragma unroll
            for (int w = 0; w < THREADS / 32; ++w) s += sRed[w][tid];
            sMean[tid] = s / count;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < COB; ++i) {
            const float dv = ok ? acc[i] - sMean[i] : 0.f;
            const float s = warp_sum(dv * dv);
            if (lane == 0) sRed[warp][i] = s;
        }
        __syncthreads();
        if (tid < COB && co0 + tid < p.cout) {
            float m2 = 0.f;
#pragma unroll
            for (int w = 0; w < THREADS / 32; ++w) m2 += sRed[w][tid];
            p.partial[((size_t)n * p.tiles + tile) * p.cout + co0 + tid] = make_float2(sMean[tid], m2);
        }
    }
}

}  // namespace

#define CONV_DIRECT_ENTRY(name, COB) \
    extern "C" __global__ void __launch_bounds__(THREADS) name(const __grid_constant__ ConvParams p) { conv_direct<COB>(p); }

CONV_DIRECT_ENTRY(conv_direct_f16_co1, 1)
CONV_DIRECT_ENTRY(conv_direct_f16_co2, 2)
CONV_DIRECT_ENTRY(conv_direct_f16_co8, 8)
CONV_DIRECT_ENTRY(conv_direct_f16_co32, 32)
