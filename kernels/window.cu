// Sliding-window inference on the device (the clinical pipeline): cut windows out of the
// preprocessed volume into a patch batch, accumulate importance-weighted network outputs into
// the whole-volume logits, normalise by the summed weights, then softmax / argmax. Volumes are
// f32 in PyTorch layout (C, H, W, D); patches are the network's fp16 channels-last tensors.
// A window computed on a flipped input (test-time augmentation) is flipped back as it is
// accumulated: flips are index mappings, never copies.
#include "common.cuh"

namespace {
__device__ __forceinline__ size_t gtid() { return blockIdx.x * (size_t)blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gstride() { return (size_t)gridDim.x * blockDim.x; }

// Patch voxel (i, j, k) of a window at the origin -> volume voxel; `flip` mirrors within the window.
__device__ __forceinline__ size_t vol_index(const WindowParams& p, int i, int j, int k) {
    if (p.flip & 1) i = p.ph - 1 - i;
    if (p.flip & 2) j = p.pw - 1 - j;
    if (p.flip & 4) k = p.pd - 1 - k;
    return ((size_t)(p.oh + i) * p.w + (p.ow + j)) * p.d + (p.od + k);
}
}  // namespace

// volume (C, H, W, D) f32 in `acc` -> patch `sample` of `out` (N, ph, pw, pd, C) fp16,
// optionally flipped (the window of a flipped volume).
extern "C" __global__ void window_extract_f16(const __grid_constant__ WindowParams p) {
    const size_t pvox = (size_t)p.ph * p.pw * p.pd, vvox = (size_t)p.h * p.w * p.d;
    for (size_t e = gtid(); e < pvox * p.c; e += gstride()) {
        const int c = (int)(e % p.c);
        const size_t v = e / p.c;
        const int k = (int)(v % p.pd), j = (int)((v / p.pd) % p.pw), i = (int)(v / p.pd / p.pw);
        p.out[(size_t)p.sample * pvox * p.c + e] = __float2half_rn(p.acc[(size_t)c * vvox + vol_index(p, i, j, k)]);
    }
}

// acc[c][window voxel] += weight * patch, wsum[window voxel] += weight. Windows are launched one
// after another on one stream, so overlapping windows never race.
extern "C" __global__ void window_accumulate_f32(const __grid_constant__ WindowParams p) {
    const size_t pvox = (size_t)p.ph * p.pw * p.pd, vvox = (size_t)p.h * p.w * p.d;
    for (size_t v = gtid(); v < pvox; v += gstride()) {
        const int k = (int)(v % p.pd), j = (int)((v / p.pd) % p.pw), i = (int)(v / p.pd / p.pw);
        const size_t dst = vol_index(p, i, j, k);
        const float g = p.weight[v];
        const size_t src = ((size_t)p.sample * pvox + v) * p.c;
        for (int c = 0; c < p.c; ++c) p.acc[(size_t)c * vvox + dst] += g * src_load(p.patch, src + c, p.sample, c);
        p.wsum[dst] += g;
    }
}

// acc[c][v] /= wsum[v]; voxels no window covered (none, with the pipeline's window grid) get 0.
extern "C" __global__ void window_normalise_f32(const __grid_constant__ WindowParams p) {
    const size_t vvox = (size_t)p.h * p.w * p.d;
    for (size_t e = gtid(); e < vvox * p.c; e += gstride()) {
        const float w = p.wsum[e % vvox];
        p.acc[e] = w > 0.f ? p.acc[e] / w : 0.f;
    }
}

// In-place softmax over the channels of acc (C, H, W, D).
extern "C" __global__ void softmax_f32(const __grid_constant__ WindowParams p) {
    const size_t vvox = (size_t)p.h * p.w * p.d;
    for (size_t v = gtid(); v < vvox; v += gstride()) {
        float m = -INFINITY;
        for (int c = 0; c < p.c; ++c) m = fmaxf(m, p.acc[(size_t)c * vvox + v]);
        float s = 0.f;
        for (int c = 0; c < p.c; ++c) s += __expf(p.acc[(size_t)c * vvox + v] - m);
        const float inv = 1.f / s;
        for (int c = 0; c < p.c; ++c) {
            float* a = p.acc + (size_t)c * vvox + v;
            *a = __expf(*a - m) * inv;
        }
    }
}

// mask[v] = argmax over channels of acc (C, H, W, D); the first maximum wins, as in torch.argmax.
extern "C" __global__ void argmax_u8(const __grid_constant__ WindowParams p) {
    const size_t vvox = (size_t)p.h * p.w * p.d;
    for (size_t v = gtid(); v < vvox; v += gstride()) {
        float m = p.acc[v];
        int best = 0;
        for (int c = 1; c < p.c; ++c) {
            const float a = p.acc[(size_t)c * vvox + v];
            if (a > m) {
                m = a;
                best = c;
            }
        }
        p.mask[v] = (unsigned char)best;
    }
}
