// Host emulation of the CUDA features the simple fmseg kernels use (everything but conv_mma.cu,
// whose tensor-core code scripts/emulate/conv_mma.py emulates lane by lane). Threads of a block
// run as std::threads with std::barrier for __syncthreads, warp shuffles go through an array and
// the block barrier (our kernels call them uniformly), blocks run one after another, __half is
// _Float16. Inline PTX compiles to nothing: the kernels checked here use none.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <barrier>
#include <thread>
#include <vector>
#include <functional>
#include <algorithm>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __grid_constant__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(x)
struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx;
inline dim3 blockIdx, blockDim, gridDim;
inline std::barrier<>* g_bar = nullptr;
inline void __syncthreads() { g_bar->arrive_and_wait(); }
// warp shuffles: per-warp exchange through an array and the block barrier (all threads call it uniformly in our kernels)
inline float g_shfl[1024];
inline float __shfl_xor_sync(unsigned, float v, int o) {
    int t = threadIdx.x + threadIdx.y * blockDim.x;
    g_shfl[t] = v; __syncthreads();
    int lane = t & 31; float r = g_shfl[(t & ~31) | (lane ^ o)]; __syncthreads();
    return r;
}
struct __half { _Float16 v; };
struct __half2 { __half x, y; };
struct float2 { float x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }
struct uint4 { unsigned x, y, z, w; };
inline float __half2float(__half h) { return (float)h.v; }
inline __half __float2half_rn(float f) { return {(_Float16)f}; }
inline float2 __half22float2(__half2 h) { return {(float)h.x.v, (float)h.y.v}; }
inline __half2 __floats2half2_rn(float a, float b) { return {{(_Float16)a}, {(_Float16)b}}; }
inline float __expf(float x) { return expf(x); }
inline unsigned __cvta_generic_to_shared(const void*) { return 0; }
#define asm(...) ((void)0)
#define volatile
// run a kernel: grid, block, fn
inline void launch(dim3 grid, dim3 block, std::function<void()> body) {
    gridDim = grid; blockDim = block;
    unsigned nt = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz) for (unsigned by = 0; by < grid.y; ++by) for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = {bx, by, bz};
        std::barrier<> bar(nt); g_bar = &bar;
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < nt; ++t) ts.emplace_back([&, t] { threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)}; body(); });
        for (auto& th : ts) th.join();
    }
}
inline float g_dyn_smem[1 << 16];
using std::min;
using std::max;
#define volatile
