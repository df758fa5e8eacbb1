// Implicit-GEMM 3-D convolution on the tensor cores (mma.sync m16n8k16, fp16 in, fp32 acc).
//
// GEMM view: M = output voxels of one sample (rows of the channels-last tensor), N = Cout,
// K = taps x Cin. A k-tile is one tap and 32 input channels, so every A row is 64 contiguous
// bytes of the input (or zero padding): no im2col buffer, the gather is the cp.async address.
//
// Tiles: 128 voxels x BN output channels x 32 channels, 4 warps each owning 32 rows x BN.
// 128 rows give 4608 blocks per 192x192x16 sample at level 0 (many waves, small tail); BN
// follows Cout (16, 32, 64) so a block covers all of a narrow layer's output channels and the
// input is gathered once. 4 cp.async stages hide the L2 latency of the gathers.
//
// Fusions:
// - the input's pending InstanceNorm (+ReLU) is applied in shared memory by the thread that
//   copied the row, right after its copy lands (it knows whether the row was zero padding,
//   which must stay zero), so the normalised tensor is never written to device memory;
// - the epilogue adds the bias, rounds to the stored fp16 value and writes per-tile
//   (mean, M2) statistics of each output channel: the InstanceNorm that follows needs only a
//   tiny merge kernel (norm.cu), no extra pass over the tensor. Tile-local centring (Chan's
//   parallel variance) keeps the statistics exact where sum/sum-of-squares would cancel.
// - the transposed variant (decoder upsampling, kernel = stride) is the same GEMM with one
//   weight matrix per kernel offset; its epilogue scatters each voxel to its output position,
//   replicates the high edge where the skip tensor is one voxel larger, and adds the skip.
#include "common.cuh"

namespace {

constexpr int BM = FMSEG_TILE_ROWS;
constexpr int BK = 32;
constexpr int STAGES = 4;
constexpr int THREADS = 128;

// Shared-memory tiles are rows of 64 bytes (four 16-byte chunks). XOR-ing the chunk with bits
// 1..2 of the row puts the 8 rows of an ldmatrix phase (and the 8 rows written by 8
// consecutive threads) in 8 distinct 16-byte bank groups. Returns an offset in halves.
__device__ __forceinline__ int swz(int row, int chunk) { return row * BK + ((chunk ^ ((row >> 1) & 3)) << 3); }

template <int BN, bool CONVT>
__device__ __forceinline__ void conv_mma(const ConvParams& p) {
    static_assert(BN % 16 == 0 && BN <= 64, "BN");
    constexpr int NT = BN / 8;  // n8 tiles per warp
    extern __shared__ __align__(128) unsigned char smem[];
    __half* sA = reinterpret_cast<__half*>(smem);
    __half* sB = sA + STAGES * BM * BK;
    float2* sNorm = reinterpret_cast<float2*>(sB + STAGES * BN * BK);  // Cin x (scale, shift)
    float* sRed = reinterpret_cast<float*>(sNorm + p.x.c);              // 4 x BN partial sums, BN means

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int cin = p.x.c;
    const int vox = p.h * p.w * p.d;
    const int tile = blockIdx.x;
    const int nb = blockIdx.y;
    int n, off = 0;
    if (CONVT) {
        const int offs = p.kh * p.kw * p.kd;
        n = blockIdx.z / offs;
        off = blockIdx.z - n * offs;
    } else {
        n = blockIdx.z;
    }
    const int taps = CONVT ? 1 : p.kh * p.kw * p.kd;
    const int cchunks = cin / BK;
    const int ktiles = taps * cchunks;
    const int row0 = tile * BM;

    const bool norm = p.x.stats != nullptr || p.x.relu;
    if (norm) {
        for (int c = tid; c < cin; c += THREADS) {
            const float2 st = src_norm(p.x, n, c);
            sNorm[c] = make_float2(st.y, -st.x * st.y);
        }
    }
    __syncthreads();

    // Row `tid` of every A tile is copied (and normalised) by this thread.
    const int v = row0 + tid;
    const bool row_ok = v < vox;
    int vh = 0, vw = 0, vd = 0;
    if (row_ok) {
        vd = v % p.d;
        const int t = v / p.d;
        vw = t % p.w;
        vh = t / p.w;
    }
    const __half* xn = p.x.data + (size_t)n * vox * cin;
    const __half* wbase = p.wt + (CONVT ? (size_t)off * p.cout * cin : (size_t)0) + (size_t)nb * BN * taps * cin;

    // Source of this thread's A row for k-tile kt; `ok` is false for zero padding.
    auto a_src = [&](int kt, bool& ok) -> const __half* {
        const int tap = kt / cchunks;
        const int c0 = (kt - tap * cchunks) * BK;
        int hh = vh, ww = vw, dd = vd;
        if (!CONVT) {
            const int tk = tap % p.kd;
            const int t2 = tap / p.kd;
            const int tw = t2 % p.kw;
            const int th = t2 / p.kw;
            hh += th - p.kh / 2;
            ww += tw - p.kw / 2;
            dd += tk - p.kd / 2;
        }
        ok = row_ok && (unsigned)hh < (unsigned)p.h && (unsigned)ww < (unsigned)p.w && (unsigned)dd < (unsigned)p.d;
        return ok ? xn + ((size_t)(hh * p.w + ww) * p.d + dd) * cin + c0 : p.x.data;
    };

    auto load_tile = [&](int kt, int stage) {
        bool ok;
        const __half* src = a_src(kt, ok);
        __half* dA = sA + stage * BM * BK;
#pragma unroll
        for (int j = 0; j < 4; ++j) cp_async16(dA + swz(tid, j), ok ? src + j * 8 : src, ok);
        const int tap = kt / cchunks;
        const int c0 = (kt - tap * cchunks) * BK;
        __half* dB = sB + stage * BN * BK;
        for (int i = tid; i < BN * 4; i += THREADS) {
            const int r = i >> 2, j = i & 3;
            cp_async16(dB + swz(r, j), wbase + ((size_t)r * taps + tap) * cin + c0 + j * 8, true);
        }
    };

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ktiles) load_tile(s, s);
        cp_async_commit();
    }

    float acc[2][NT][4];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < NT; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

    for (int kt = 0; kt < ktiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        const int stage = kt % STAGES;
        if (norm) {
            bool ok;
            a_src(kt, ok);
            if (ok) {
                const int c0 = (kt % cchunks) * BK;
                __half* rowp = sA + stage * BM * BK;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    uint4* q = reinterpret_cast<uint4*>(rowp + swz(tid, j));
                    uint4 raw = *q;
                    __half2* h2 = reinterpret_cast<__half2*>(&raw);
#pragma unroll
                    for (int k = 0; k < 4; ++k) {
                        const float2 f = __half22float2(h2[k]);
                        const float2 s0 = sNorm[c0 + j * 8 + 2 * k];
                        const float2 s1 = sNorm[c0 + j * 8 + 2 * k + 1];
                        float a = fmaf(f.x, s0.x, s0.y), b = fmaf(f.y, s1.x, s1.y);
                        if (p.x.relu) {
                            a = fmaxf(a, 0.f);
                            b = fmaxf(b, 0.f);
                        }
                        h2[k] = __floats2half2_rn(a, b);
                    }
                    *q = raw;
                }
            }
        }
        __syncthreads();
        // The stage refilled here was consumed in iteration kt-1, which every warp has left.
        const int next = kt + STAGES - 1;
        if (next < ktiles) load_tile(next, next % STAGES);
        cp_async_commit();

        const __half* tA = sA + stage * BM * BK;
        const __half* tB = sB + stage * BN * BK;
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) {
            uint32_t a[2][4], b[NT][2];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                const int r = warp * 32 + mi * 16 + (lane & 15);
                ldmatrix_x4(a[mi], tA + swz(r, ks * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int nj = 0; nj < NT / 2; ++nj) {
                const int r = nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                uint32_t t4[4];
                ldmatrix_x4(t4, tB + swz(r, ks * 2 + ((lane >> 3) & 1)));
                b[2 * nj][0] = t4[0];
                b[2 * nj][1] = t4[1];
                b[2 * nj + 1][0] = t4[2];
                b[2 * nj + 1][1] = t4[3];
            }
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int ni = 0; ni < NT; ++ni) mma_16816(acc[mi][ni], a[mi], b[ni]);
        }
    }
    cp_async_wait<0>();

    // ---- epilogue ----
    const int g = lane >> 2, t4 = lane & 3;
    const int cbase = nb * BN;
#pragma unroll
    for (int ni = 0; ni < NT; ++ni) {
        const int col = cbase + ni * 8 + 2 * t4;
        const float b0 = p.bias ? p.bias[col] : 0.f;
        const float b1 = p.bias ? p.bias[col + 1] : 0.f;
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                acc[mi][ni][e] = __half2float(__float2half_rn(acc[mi][ni][e] + ((e & 1) ? b1 : b0)));
    }

    if (!CONVT) {
        __half* yn = p.y + (size_t)n * vox * p.cout;
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                const int vv = row0 + warp * 32 + mi * 16 + g + hr * 8;
                if (vv < vox) {
#pragma unroll
                    for (int ni = 0; ni < NT; ++ni)
                        *reinterpret_cast<__half2*>(yn + (size_t)vv * p.cout + cbase + ni * 8 + 2 * t4) =
                            __floats2half2_rn(acc[mi][ni][hr * 2], acc[mi][ni][hr * 2 + 1]);
                }
            }
        if (p.partial) {
            const int count = min(BM, vox - row0);
            float* sMean = sRed + 4 * BN;
            // Pass 1: per-channel sums over the tile's valid rows -> tile mean.
            float s[NT][2];
#pragma unroll
            for (int ni = 0; ni < NT; ++ni)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float a = 0.f;
#pragma unroll
                    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                        for (int hr = 0; hr < 2; ++hr)
                            if (row0 + warp * 32 + mi * 16 + g + hr * 8 < vox) a += acc[mi][ni][hr * 2 + e];
                    a += __shfl_xor_sync(0xffffffffu, a, 4);
                    a += __shfl_xor_sync(0xffffffffu, a, 8);
                    a += __shfl_xor_sync(0xffffffffu, a, 16);
                    s[ni][e] = a;
                }
            if (g == 0) {
#pragma unroll
                for (int ni = 0; ni < NT; ++ni)
#pragma unroll
                    for (int e = 0; e < 2; ++e) sRed[warp * BN + ni * 8 + 2 * t4 + e] = s[ni][e];
            }
            __syncthreads();
            if (tid < BN) sMean[tid] = (sRed[tid] + sRed[BN + tid] + sRed[2 * BN + tid] + sRed[3 * BN + tid]) / count;
            __syncthreads();
            // Pass 2: sum of squared deviations from the tile mean.
#pragma unroll
            for (int ni = 0; ni < NT; ++ni)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const float m = sMean[ni * 8 + 2 * t4 + e];
                    float a = 0.f;
#pragma unroll
                    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                        for (int hr = 0; hr < 2; ++hr)
                            if (row0 + warp * 32 + mi * 16 + g + hr * 8 < vox) {
                                const float dv = acc[mi][ni][hr * 2 + e] - m;
                                a = fmaf(dv, dv, a);
                            }
                    a += __shfl_xor_sync(0xffffffffu, a, 4);
                    a += __shfl_xor_sync(0xffffffffu, a, 8);
                    a += __shfl_xor_sync(0xffffffffu, a, 16);
                    s[ni][e] = a;
                }
            if (g == 0) {
#pragma unroll
                for (int ni = 0; ni < NT; ++ni)
#pragma unroll
                    for (int e = 0; e < 2; ++e) sRed[warp * BN + ni * 8 + 2 * t4 + e] = s[ni][e];
            }
            __syncthreads();
            if (tid < BN) {
                const float m2 = sRed[tid] + sRed[BN + tid] + sRed[2 * BN + tid] + sRed[3 * BN + tid];
                p.partial[((size_t)n * p.tiles + tile) * p.cout + cbase + tid] = make_float2(sMean[tid], m2);
            }
        }
    } else {
        // Input voxel (ih, iw, id) with kernel offset (oa, ob, oc) lands on q = i * k + o of the
        // upsampled tensor; the last upsampled row along an axis is replicated up to the skip's size.
        const int oa = off / (p.kw * p.kd), ob = (off / p.kd) % p.kw, oc = off % p.kd;
        const int uh = p.h * p.kh, uw = p.w * p.kw, ud = p.d * p.kd;
        const size_t svox = (size_t)p.hs * p.ws * p.ds;
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                const int vv = row0 + warp * 32 + mi * 16 + g + hr * 8;
                if (vv >= vox) continue;
                const int id = vv % p.d, t = vv / p.d, iw = t % p.w, ih = t / p.w;
                const int qh = ih * p.kh + oa, qw = iw * p.kw + ob, qd = id * p.kd + oc;
                if (qh >= p.hs || qw >= p.ws || qd >= p.ds) continue;
                const int h1 = qh == uh - 1 ? p.hs - 1 : qh;
                const int w1 = qw == uw - 1 ? p.ws - 1 : qw;
                const int d1 = qd == ud - 1 ? p.ds - 1 : qd;
                for (int ph = qh; ph <= h1; ++ph)
                    for (int pw = qw; pw <= w1; ++pw)
                        for (int pd = qd; pd <= d1; ++pd) {
                            const size_t o = ((size_t)n * svox + ((size_t)ph * p.ws + pw) * p.ds + pd) * p.cout;
#pragma unroll
                            for (int ni = 0; ni < NT; ++ni) {
                                const int col = cbase + ni * 8 + 2 * t4;
                                const float s0 = src_load(p.skip, o + col, n, col);
                                const float s1 = src_load(p.skip, o + col + 1, n, col + 1);
                                *reinterpret_cast<__half2*>(p.y + o + col) =
                                    __floats2half2_rn(acc[mi][ni][hr * 2] + s0, acc[mi][ni][hr * 2 + 1] + s1);
                            }
                        }
            }
    }
}

}  // namespace

#define CONV_MMA_ENTRY(name, BN, CONVT) \
    extern "C" __global__ void __launch_bounds__(THREADS, 3) name(const __grid_constant__ ConvParams p) { conv_mma<BN, CONVT>(p); }

CONV_MMA_ENTRY(conv_mma_f16_bn16, 16, false)
CONV_MMA_ENTRY(conv_mma_f16_bn32, 32, false)
CONV_MMA_ENTRY(conv_mma_f16_bn64, 64, false)
CONV_MMA_ENTRY(convt_add_mma_f16_bn16, 16, true)
CONV_MMA_ENTRY(convt_add_mma_f16_bn32, 32, true)
CONV_MMA_ENTRY(convt_add_mma_f16_bn64, 64, true)
