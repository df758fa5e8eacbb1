// InstanceNorm statistics (eps 1e-5, biased variance, per sample and channel).
//
// Producers (the conv epilogues, or stats_partial for a tensor that was not produced by a conv)
// write one (mean, M2) pair per 128-voxel tile and channel; stats_finalize merges them with
// Chan's pairwise formula in double precision. Tile-centred sums avoid the cancellation of
// E[x^2] - E[x]^2 when |mean| >> std, and the result does not depend on launch order (no
// atomics), so repeated runs are bit-identical. The normalisation itself is applied lazily by
// whichever kernel reads the tensor next (see Src in common.cuh).
#include "common.cuh"

namespace {
constexpr int TILE = FMSEG_TILE_ROWS;
}

// grid (tiles, ceil(C / 32), N), block (32, 8): 32 channels x 8 row lanes per tile.
extern "C" __global__ void __launch_bounds__(256) stats_partial_f16(const __grid_constant__ StatsParams p) {
    __shared__ float sRed[8][33];
    __shared__ float sMean[32];
    const int cx = threadIdx.x, ry = threadIdx.y;
    const int tile = blockIdx.x, c = blockIdx.y * 32 + cx, n = blockIdx.z;
    const int row0 = tile * TILE;
    const int count = min(TILE, p.vox - row0);
    const bool cok = c < p.c;
    float s = 0.f;
    if (cok)
        for (int r = ry; r < count; r += 8) s += src_load(p.x, ((size_t)n * p.vox + row0 + r) * p.c + c, n, c);
    sRed[ry][cx] = s;
    __syncthreads();
    if (ry == 0) {
        float t = 0.f;
#pragma unroll
        for (int k = 0; k < 8; ++k) t += sRed[k][cx];
        sMean[cx] = t / count;
    }
    __syncthreads();
    const float m = sMean[cx];
    s = 0.f;
    if (cok)
        for (int r = ry; r < count; r += 8) {
            const float dv = src_load(p.x, ((size_t)n * p.vox + row0 + r) * p.c + c, n, c) - m;
            s = fmaf(dv, dv, s);
        }
    __syncthreads();
    sRed[ry][cx] = s;
    __syncthreads();
    if (ry == 0 && cok) {
        float t = 0.f;
#pragma unroll
        for (int k = 0; k < 8; ++k) t += sRed[k][cx];
        p.partial[((size_t)n * p.tiles + tile) * p.c + c] = make_float2(m, t);
    }
}

// grid (ceil(C / 32), N), block (32, 8): each thread merges every 8th tile of one channel,
// then the 8 partial results are merged in shared memory.
extern "C" __global__ void __launch_bounds__(256) stats_finalize_f32(const __grid_constant__ StatsParams p) {
    __shared__ double sN[8][32], sM[8][32], sQ[8][32];
    const int cx = threadIdx.x, ry = threadIdx.y;
    const int c = blockIdx.x * 32 + cx, n = blockIdx.y;
    double cnt = 0.0, mean = 0.0, m2 = 0.0;
    if (c < p.c) {
        for (int t = ry; t < p.tiles; t += 8) {
            const float2 pm = p.partial[((size_t)n * p.tiles + t) * p.c + c];
            const double nb = (double)min(TILE, p.vox - t * TILE);
            const double tot = cnt + nb;
            const double delta = (double)pm.x - mean;
            mean += delta * nb / tot;
            m2 += (double)pm.y + delta * delta * cnt * nb / tot;
            cnt = tot;
        }
    }
    sN[ry][cx] = cnt;
    sM[ry][cx] = mean;
    sQ[ry][cx] = m2;
    __syncthreads();
    if (ry == 0 && c < p.c) {
        for (int k = 1; k < 8; ++k) {
            const double nb = sN[k][cx];
            if (nb == 0.0) continue;
            const double tot = cnt + nb;
            const double delta = sM[k][cx] - mean;
            mean += delta * nb / tot;
            m2 += sQ[k][cx] + delta * delta * cnt * nb / tot;
            cnt = tot;
        }
        const double var = m2 / (double)p.vox;
        p.stats[(size_t)n * p.c + c] = make_float2((float)mean, (float)(1.0 / sqrt(var + (double)p.eps)));
    }
}
