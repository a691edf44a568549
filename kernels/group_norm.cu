// Group normalisation of channels-last bf16 activations (N, S, C), statistics in f32, eps 1e-5,
// optionally fused with the SiLU that follows. One block per (sample, group): the block sums
// x and x^2 over S voxels x C/G channels (warp shuffles, then shared memory), then normalises.
#include "common.cuh"

__device__ __forceinline__ float silu_f32(float v) { return v / (1.f + __expf(-v)); }

// Block-wide sum of two values; blockDim.x a multiple of 32. Every thread gets the totals.
__device__ __forceinline__ float2 block_sum2(float a, float b) {
    __shared__ float sa[32], sb[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) {
        sa[warp] = a;
        sb[warp] = b;
    }
    __syncthreads();
    a = lane < nw ? sa[lane] : 0.f;
    b = lane < nw ? sb[lane] : 0.f;
    a = warp_sum(a);
    b = warp_sum(b);
    __syncthreads();  // sa/sb are reused by the next call
    return make_float2(a, b);
}

// (mean, 1 / sqrt(var + eps)) of one group: `count` values, cg contiguous channels per voxel at
// stride C. Every thread of the block gets them.
__device__ __forceinline__ float2 group_stats(const bf16* xs, long long count, int cg, int C) {
    float s = 0.f, q = 0.f;
    for (long long e = threadIdx.x; e < count; e += blockDim.x) {
        float v = to_f32(xs[(e / cg) * C + e % cg]);
        s += v;
        q += v * v;
    }
    float2 t = block_sum2(s, q);
    float mean = t.x / count;
    return make_float2(mean, rsqrtf(fmaxf(t.y / count - mean * mean, 0.f) + 1e-5f));
}

KERNEL group_norm_bf16(const bf16* x, bf16* y, const float* gamma, const float* beta, int S, int C, int G, int silu) {
    int n = blockIdx.x / G, g = blockIdx.x % G, cg = C / G;
    const bf16* xs = x + (long long)n * S * C + g * cg;
    bf16* ys = y + (long long)n * S * C + g * cg;
    long long count = (long long)S * cg;
    float2 st = group_stats(xs, count, cg, C);
    float mean = st.x, inv = st.y;
    for (long long e = threadIdx.x; e < count; e += blockDim.x) {
        int c = (int)(e % cg);
        long long o = (e / cg) * C + c;
        float v = (to_f32(xs[o]) - mean) * inv * gamma[g * cg + c] + beta[g * cg + c];
        ys[o] = from_f32<bf16>(silu ? silu_f32(v) : v);
    }
}

// dL/dz for z = xhat gamma + beta, through the SiLU when fused.
__device__ __forceinline__ float gn_dz(float dy, float xh, float gamma, float beta, int silu) {
    if (!silu) return dy;
    float z = xh * gamma + beta, sg = 1.f / (1.f + __expf(-z));
    return dy * sg * (1.f + z * (1.f - sg));
}

// Gradient of group_norm_bf16 for f32 dy: dx (f32), and dgamma, dbeta (f32, accumulated with atomicAdd
// over samples: the caller zeroes them). One block per (sample, group), as the forward.
KERNEL group_norm_backward_f32(const bf16* x, const float* dy, const float* gamma, const float* beta, float* dx,
                                float* dgamma, float* dbeta, int S, int C, int G, int silu) {
    int n = blockIdx.x / G, g = blockIdx.x % G, cg = C / G;
    const bf16* xs = x + (long long)n * S * C + g * cg;
    const float* gs = dy + (long long)n * S * C + g * cg;
    long long count = (long long)S * cg;
    float2 st = group_stats(xs, count, cg, C);
    float mean = st.x, inv = st.y;
    // dz = dy silu'(z); dxhat = dz gamma; s1 = sum dxhat, s2 = sum dxhat xhat.
    float s1 = 0.f, s2 = 0.f;
    for (long long e = threadIdx.x; e < count; e += blockDim.x) {
        int c = (int)(e % cg), ch = g * cg + c;
        long long o = (e / cg) * C + c;
        float xh = (to_f32(xs[o]) - mean) * inv;
        float dz = gn_dz(gs[o], xh, gamma[ch], beta[ch], silu);
        atomicAdd(&dgamma[ch], dz * xh);
        atomicAdd(&dbeta[ch], dz);
        s1 += dz * gamma[ch];
        s2 += dz * gamma[ch] * xh;
    }
    float2 r = block_sum2(s1, s2);
    float* dxs = dx + (long long)n * S * C + g * cg;
    for (long long e = threadIdx.x; e < count; e += blockDim.x) {
        int c = (int)(e % cg), ch = g * cg + c;
        long long o = (e / cg) * C + c;
        float xh = (to_f32(xs[o]) - mean) * inv;
        float dz = gn_dz(gs[o], xh, gamma[ch], beta[ch], silu);
        dxs[o] = inv / count * (count * dz * gamma[ch] - r.x - xh * r.y);
    }
}
