// 3D convolution as an implicit GEMM on the shared tensor-core main loop (gemm_core.cuh):
// rows = output voxels (n, z, y, x) of a channels-last volume, columns = output channels,
// K = k^3 Ci ordered (tz, ty, tx, ci), which is the repacked weight's row order (src/ops/conv3d.rs).
// Tiles of A are gathered from the input on the fly (zero outside the volume: the padding).
// The epilogue adds the bias, an optional per-sample bias (the ResBlock's time embedding), an
// optional residual, and stores bf16.
#include "gemm_core.cuh"

struct ConvShape {
    int D, H, W, Ci, Do, Ho, Wo, Co, k, stride, pad, M, K;
};

// Address of A[m][kk] in the input, or nullptr in the padding.
__device__ __forceinline__ const bf16* conv_tap(const bf16* x, const ConvShape& s, int m, int kk) {
    int ox = m % s.Wo, t = m / s.Wo;
    int oy = t % s.Ho;
    t /= s.Ho;
    int oz = t % s.Do, n = t / s.Do;
    int ci = kk % s.Ci, tap = kk / s.Ci;
    int tx = tap % s.k, ty = (tap / s.k) % s.k, tz = tap / (s.k * s.k);
    int z = oz * s.stride + tz - s.pad, y = oy * s.stride + ty - s.pad, xx = ox * s.stride + tx - s.pad;
    if (z < 0 || y < 0 || xx < 0 || z >= s.D || y >= s.H || xx >= s.W) return nullptr;
    return x + ((((long long)n * s.D + z) * s.H + y) * s.W + xx) * s.Ci + ci;
}

// VEC: Ci and Co multiples of 8, so a 16-byte chunk of A never straddles two taps.
template <bool VEC>
struct ConvLoader {
    const bf16* x;
    const bf16* w;
    ConvShape s;
    __device__ __forceinline__ void load(bf16* As, bf16* Bs, int m0, int n0, int k0) const {
        using namespace gemm_cfg;
        if (VEC) {
            for (int c = threadIdx.x; c < BM * (BK / 8); c += THREADS) {
                int r = c / (BK / 8), kc = (c % (BK / 8)) * 8;
                const bf16* src = (m0 + r < s.M && k0 + kc < s.K) ? conv_tap(x, s, m0 + r, k0 + kc) : nullptr;
                cp_async16(As + r * LDA + kc, src ? src : x, src != nullptr);
            }
        } else {
            const bf16 zero = __float2bfloat16(0.f);
            for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
                int r = e / BK, kc = e % BK;
                const bf16* src = (m0 + r < s.M && k0 + kc < s.K) ? conv_tap(x, s, m0 + r, k0 + kc) : nullptr;
                As[r * LDA + kc] = src ? *src : zero;
            }
        }
        load_b_rows<VEC>(Bs, w, s.Co, s.K, s.Co, n0, k0);
    }
};

struct ConvEpilogue {
    bf16* y;
    const float* bias;
    const float* bias_n;  // (N, Co) or null
    const bf16* residual;  // like y, or null
    int Co, S;
    __device__ __forceinline__ void operator()(int r, int c, float v) const {
        v += bias[c];
        if (bias_n) v += bias_n[(r / S) * Co + c];
        long long o = (long long)r * Co + c;
        if (residual) v += to_f32(residual[o]);
        y[o] = from_f32<bf16>(v);
    }
};

template <bool VEC>
__device__ __forceinline__ void conv3d(const bf16* x, const bf16* w, const float* bias, const float* bias_n,
                                       const bf16* residual, bf16* y, int N, int D, int H, int W, int Ci, int Co, int k,
                                       int stride) {
    int pad = k / 2;
    int Do = (D + 2 * pad - k) / stride + 1, Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    ConvShape s = {D, H, W, Ci, Do, Ho, Wo, Co, k, stride, pad, N * Do * Ho * Wo, k * k * k * Ci};
    gemm_mainloop(s.M, Co, s.K, ConvLoader<VEC>{x, w, s}, ConvEpilogue{y, bias, bias_n, residual, Co, Do * Ho * Wo});
}

KERNEL conv3d_bf16_vec(const bf16* x, const bf16* w, const float* bias, const float* bias_n, const bf16* residual, bf16* y,
                       int N, int D, int H, int W, int Ci, int Co, int k, int stride) {
    conv3d<true>(x, w, bias, bias_n, residual, y, N, D, H, W, Ci, Co, k, stride);
}
KERNEL conv3d_bf16_any(const bf16* x, const bf16* w, const float* bias, const float* bias_n, const bf16* residual, bf16* y,
                       int N, int D, int H, int W, int Ci, int Co, int k, int stride) {
    conv3d<false>(x, w, bias, bias_n, residual, y, N, D, H, W, Ci, Co, k, stride);
}
