// C entry points over the emulated kernels, called from simple_kernels.py through ctypes.
#include "host_shim.h"
#include "common.cuh"
extern "C" {
void max_pool_f16_v8(PoolParams); void max_pool_f16_v1(PoolParams);
void avg_pool_adaptive_f16_v8(PoolParams); void avg_pool_adaptive_f16_v1(PoolParams);
void resize_trilinear_f16_v8(PoolParams); void resize_trilinear_f16_v1(PoolParams);
void sum_f16_v8(EwParams); void sum_f16_v1(EwParams); void attend_f16_v8(EwParams); void attend_f16_v1(EwParams);
void concat_f16_v8(EwParams); void concat_f16_v1(EwParams); void flip_f16_v8(EwParams); void flip_f16_v1(EwParams);
void sigmoid_sum_f16(EwParams); void to_ncdhw_f32(EwParams);
void stats_partial_f16(StatsParams); void stats_finalize_f32(StatsParams);
void conv_direct_f16_co1(ConvParams); void conv_direct_f16_co2(ConvParams); void conv_direct_f16_co8(ConvParams); void conv_direct_f16_co32(ConvParams);
void window_extract_f16(WindowParams); void window_accumulate_f32(WindowParams); void window_normalise_f32(WindowParams);
void softmax_f32(WindowParams); void argmax_u8(WindowParams);
}
static Src S(const void* d, const void* st, int relu, int c) { Src s; s.data = (const __half*)d; s.stats = (const float2*)st; s.relu = relu; s.c = c; return s; }
extern "C" {
void pool(int kind, int v8, const void* x, const void* st, int relu, void* y, int n, int c, int h, int w, int d, int oh, int ow, int od, int kh, int kw, int kd) {
    PoolParams p{}; p.x = S(x, st, relu, c); p.y = (__half*)y; p.n = n; p.c = c; p.h = h; p.w = w; p.d = d; p.oh = oh; p.ow = ow; p.od = od; p.kh = kh; p.kw = kw; p.kd = kd;
    auto f = kind == 0 ? (v8 ? max_pool_f16_v8 : max_pool_f16_v1) : kind == 1 ? (v8 ? avg_pool_adaptive_f16_v8 : avg_pool_adaptive_f16_v1) : (v8 ? resize_trilinear_f16_v8 : resize_trilinear_f16_v1);
    launch({3, 1, 1}, {32, 1, 1}, [&] { f(p); });
}
// op: 0 sum, 1 attend, 2 concat, 3 flip, 4 sigmoid_sum, 5 to_ncdhw
void ew(int op, int v8, const void** ins, const void** sts, const int* relus, const int* cs, int count, int relu, void* y, int n, int c, int h, int w, int d, int flip) {
    EwParams p{};
    for (int i = 0; i < 4; ++i) p.in[i] = S(ins[i], sts[i], relus[i], cs[i]);
    p.y = (__half*)y; p.yf = (float*)y; p.count = count; p.relu = relu; p.n = n; p.c = c; p.h = h; p.w = w; p.d = d; p.flip = flip;
    void (*f)(EwParams) = nullptr;
    switch (op) { case 0: f = v8 ? sum_f16_v8 : sum_f16_v1; break; case 1: f = v8 ? attend_f16_v8 : attend_f16_v1; break;
        case 2: f = v8 ? concat_f16_v8 : concat_f16_v1; break; case 3: f = v8 ? flip_f16_v8 : flip_f16_v1; break;
        case 4: f = sigmoid_sum_f16; break; default: f = to_ncdhw_f32; }
    launch({5, 1, 1}, {32, 1, 1}, [&] { f(p); });
}
void stats(const void* x, const void* st, int relu, void* partial, void* out, int n, int c, int vox) {
    StatsParams p{}; p.x = S(x, st, relu, c); p.partial = (float2*)partial; p.stats = (float2*)out; p.n = n; p.c = c; p.vox = vox; p.tiles = (vox + 127) / 128; p.eps = 1e-5f;
    launch({(unsigned)p.tiles, (unsigned)((c + 31) / 32), (unsigned)n}, {32, 8, 1}, [&] { stats_partial_f16(p); });
    launch({(unsigned)((c + 31) / 32), (unsigned)n, 1}, {32, 8, 1}, [&] { stats_finalize_f32(p); });
}
void conv_direct(int cob, const void* x, const void* st, int relu, int cin, const float* wf, const float* bias, void* y, void* partial,
                 int n, int h, int w, int d, int cout, int kh, int kw, int kd, int smem) {
    ConvParams p{}; p.x = S(x, st, relu, cin); p.wf = wf; p.bias = bias; p.y = (__half*)y; p.partial = (float2*)partial;
    p.h = h; p.w = w; p.d = d; p.cout = cout; p.kh = kh; p.kw = kw; p.kd = kd; p.tiles = (h * w * d + 127) / 128; p.wf_smem = smem;
    auto f = cob == 1 ? conv_direct_f16_co1 : cob == 2 ? conv_direct_f16_co2 : cob == 8 ? conv_direct_f16_co8 : conv_direct_f16_co32;
    launch({(unsigned)p.tiles, (unsigned)((cout + cob - 1) / cob), (unsigned)n}, {128, 1, 1}, [&] { f(p); });
}
// op: 0 extract, 1 accumulate, 2 normalise, 3 softmax, 4 argmax
void window(int op, const void* patch, const void* st, int c, const float* weight, float* acc, float* wsum, unsigned char* mask, void* out,
            int sample, int h, int w, int d, int ph, int pw, int pd, int oh, int ow, int od, int flip) {
    WindowParams p{}; p.patch = S(patch, st, 0, c); p.weight = weight; p.acc = acc; p.wsum = wsum; p.mask = mask; p.out = (__half*)out;
    p.sample = sample; p.c = c; p.h = h; p.w = w; p.d = d; p.ph = ph; p.pw = pw; p.pd = pd; p.oh = oh; p.ow = ow; p.od = od; p.flip = flip;
    auto f = op == 0 ? window_extract_f16 : op == 1 ? window_accumulate_f32 : op == 2 ? window_normalise_f32 : op == 3 ? softmax_f32 : argmax_u8;
    launch({3, 1, 1}, {32, 1, 1}, [&] { f(p); });
}
}
