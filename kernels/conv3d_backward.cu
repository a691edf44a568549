// Gradients of conv3d.cu on the shared tensor-core main loop (gemm_core.cuh). Activation
// gradients are f32 (sums over few voxels lose too much in bf16); they enter the tensor cores
// as bf16 tiles.
// - data: dX (input voxels x Ci) = dY gathered per tap (rows = input voxels, K = (tap, co)) times
//   the weights transposed per tap, Wt (k^3 Co, Ci), prepared by the caller;
// - weight: dW ((tap, ci) x Co) = im2col(X)^T dY, K running over the output voxels;
// - bias: column sums of dY (kernels/reduce.cu's pattern, one block per column tile).
#include "gemm_core.cuh"

struct ConvDims {
    int N, D, H, W, Ci, Do, Ho, Wo, Co, k, stride, pad;
};

__device__ __forceinline__ ConvDims conv_dims(int N, int D, int H, int W, int Ci, int Co, int k, int stride) {
    int pad = k / 2;
    ConvDims s = {N, D, H, W, Ci, (D + 2 * pad - k) / stride + 1, (H + 2 * pad - k) / stride + 1,
                  (W + 2 * pad - k) / stride + 1, Co, k, stride, pad};
    return s;
}

// dY at the output position that tap (tz, ty, tx) of input voxel m reaches, channel co; or null.
__device__ __forceinline__ const float* dy_tap(const float* dy, const ConvDims& s, int m, int kk) {
    int x = m % s.W, t = m / s.W;
    int y = t % s.H;
    t /= s.H;
    int z = t % s.D, n = t / s.D;
    int co = kk % s.Co, tap = kk / s.Co;
    int tx = tap % s.k, ty = (tap / s.k) % s.k, tz = tap / (s.k * s.k);
    int oz = z + s.pad - tz, oy = y + s.pad - ty, ox = x + s.pad - tx;
    if (oz < 0 || oy < 0 || ox < 0 || oz % s.stride || oy % s.stride || ox % s.stride) return nullptr;
    oz /= s.stride;
    oy /= s.stride;
    ox /= s.stride;
    if (oz >= s.Do || oy >= s.Ho || ox >= s.Wo) return nullptr;
    return dy + ((((long long)n * s.Do + oz) * s.Ho + oy) * s.Wo + ox) * s.Co + co;
}

struct DataGradLoader {
    const float* dy;
    const bf16* wt;
    ConvDims s;
    int M, K;
    __device__ __forceinline__ void load(bf16* As, bf16* Bs, int m0, int n0, int k0) const {
        using namespace gemm_cfg;
        const bf16 zero = __float2bfloat16(0.f);
        for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
            int r = e / BK, kc = e % BK;
            const float* src = (m0 + r < M && k0 + kc < K) ? dy_tap(dy, s, m0 + r, k0 + kc) : nullptr;
            As[r * LDA + kc] = src ? __float2bfloat16(*src) : zero;
        }
        load_b_rows<false>(Bs, wt, s.Ci, K, s.Ci, n0, k0);
    }
};

// X value of im2col row m (an output voxel), column (tap, ci) = r; or 0 in the padding.
__device__ __forceinline__ float x_col(const bf16* x, const ConvDims& s, int r, int m) {
    int ox = m % s.Wo, t = m / s.Wo;
    int oy = t % s.Ho;
    t /= s.Ho;
    int oz = t % s.Do, n = t / s.Do;
    int ci = r % s.Ci, tap = r / s.Ci;
    int tx = tap % s.k, ty = (tap / s.k) % s.k, tz = tap / (s.k * s.k);
    int z = oz * s.stride + tz - s.pad, y = oy * s.stride + ty - s.pad, xx = ox * s.stride + tx - s.pad;
    if (z < 0 || y < 0 || xx < 0 || z >= s.D || y >= s.H || xx >= s.W) return 0.f;
    return to_f32(x[((((long long)n * s.D + z) * s.H + y) * s.W + xx) * s.Ci + ci]);
}

struct WeightGradLoader {
    const bf16* x;
    const float* dy;
    ConvDims s;
    int M, K;  // M = k^3 Ci rows of dW, K = output voxels
    __device__ __forceinline__ void load(bf16* As, bf16* Bs, int m0, int n0, int k0) const {
        using namespace gemm_cfg;
        for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
            int r = e / BK, kc = e % BK;
            float v = (m0 + r < M && k0 + kc < K) ? x_col(x, s, m0 + r, k0 + kc) : 0.f;
            As[r * LDA + kc] = __float2bfloat16(v);
        }
        for (int e = threadIdx.x; e < BK * BN; e += THREADS) {
            int r = e / BN, n = e % BN;
            bool ok = k0 + r < K && n0 + n < s.Co;
            Bs[r * LDB + n] = __float2bfloat16(ok ? dy[(long long)(k0 + r) * s.Co + n0 + n] : 0.f);
        }
    }
};

struct StoreF32Rows {
    float* y;
    int ld;
    __device__ __forceinline__ void operator()(int r, int c, float v) const { y[(long long)r * ld + c] = v; }
};

KERNEL conv3d_dgrad_f32(const float* dy, const bf16* wt, float* dx, int N, int D, int H, int W, int Ci, int Co, int k,
                         int stride) {
    ConvDims s = conv_dims(N, D, H, W, Ci, Co, k, stride);
    int M = N * D * H * W, K = k * k * k * Co;
    gemm_mainloop(M, Ci, K, DataGradLoader{dy, wt, s, M, K}, StoreF32Rows{dx, Ci});
}

KERNEL conv3d_wgrad_f32(const bf16* x, const float* dy, float* dw, int N, int D, int H, int W, int Ci, int Co, int k,
                         int stride) {
    ConvDims s = conv_dims(N, D, H, W, Ci, Co, k, stride);
    int M = k * k * k * Ci, K = N * s.Do * s.Ho * s.Wo;
    gemm_mainloop(M, Co, K, WeightGradLoader{x, dy, s, M, K}, StoreF32Rows{dw, Co});
}

// db[c] = sum over rows of dy[r][c]; grid (ceil(C / 32)), block (32, 8): a column per lane.
KERNEL col_sums_f32(const float* dy, float* db, long long rows, int C) {
    __shared__ float part[8][32];
    int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.f;
    if (c < C)
        for (long long r = threadIdx.y; r < rows; r += 8) s += dy[r * C + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int i = 1; i < 8; i++) s += part[i][threadIdx.x];
        db[c] = s;
    }
}
