// Multi-head self-attention, guided-diffusion's legacy channel order (head h: q, k, v are
// channels [3 d h, 3 d h + d), the next d, the next d of qkv). qkv (N, T, 3C) and out (N, T, C)
// are channels-last bf16. One thread per query, 64 queries per block; keys and values stream
// through shared memory 64 at a time with an online softmax in f32, so any T fits.
// Head dims 16, 32 and 64 (a template each, chosen at run time).
#include "common.cuh"

template <int D>
__device__ __forceinline__ void attention_head(const bf16* qkv, bf16* out, int T, int C) {
    DYNAMIC_SHARED(float, ks);  // 2 x 64 x D floats: keys, then values
    float* vs = ks + 64 * D;
    int n = blockIdx.z, h = blockIdx.y, i = blockIdx.x * 64 + threadIdx.x;
    const bf16* base = qkv + (long long)n * T * 3 * C;
    int qo = 3 * D * h, ko = qo + D, vo = qo + 2 * D;
    float scale = rsqrtf((float)D);
    bool valid = i < T;
    float q[D], acc[D];
    for (int e = 0; e < D; e++) {
        q[e] = valid ? to_f32(base[(long long)i * 3 * C + qo + e]) * scale : 0.f;
        acc[e] = 0.f;
    }
    float m = -inf_f32(), l = 0.f;
    for (int j0 = 0; j0 < T; j0 += 64) {
        int j = j0 + threadIdx.x;
        for (int e = 0; e < D; e++) {
            ks[threadIdx.x * D + e] = j < T ? to_f32(base[(long long)j * 3 * C + ko + e]) : 0.f;
            vs[threadIdx.x * D + e] = j < T ? to_f32(base[(long long)j * 3 * C + vo + e]) : 0.f;
        }
        __syncthreads();
        int nk = min(64, T - j0);
        for (int jj = 0; jj < nk; jj++) {
            float s = 0.f;
            for (int e = 0; e < D; e++) s += q[e] * ks[jj * D + e];
            float mn = fmaxf(m, s);
            float corr = __expf(m - mn), p = __expf(s - mn);
            l = l * corr + p;
            for (int e = 0; e < D; e++) acc[e] = acc[e] * corr + p * vs[jj * D + e];
            m = mn;
        }
        __syncthreads();  // the tile is refilled next
    }
    if (valid)
        for (int e = 0; e < D; e++) out[((long long)n * T + i) * C + h * D + e] = from_f32<bf16>(acc[e] / l);
}

// grid (ceil(T / 64), heads, N), block 64, dynamic shared memory 2 * 64 * head_dim floats
KERNEL attention_bf16(const bf16* qkv, bf16* out, int T, int C, int head_dim) {
    switch (head_dim) {
        case 16: attention_head<16>(qkv, out, T, C); break;
        case 32: attention_head<32>(qkv, out, T, C); break;
        default: attention_head<64>(qkv, out, T, C); break;
    }
}

// Gradient of attention_bf16: dqkv (N, T, 3C) f32, zeroed by the caller, for dout (N, T, C) f32.
// One thread per query i: the row's softmax statistics and output O_i are recomputed, then
// D_i = dO_i . O_i, ds_ij = p_ij (dO_i . v_j - D_i); dq_i is the thread's own, dk_j and dv_j are
// shared between queries and accumulate with atomicAdd. grid (ceil(T / 64), heads, N), block 64.
template <int D>
__device__ __forceinline__ void attention_backward_head(const bf16* qkv, const float* dout, float* dqkv, int T, int C) {
    int n = blockIdx.z, h = blockIdx.y, i = blockIdx.x * 64 + threadIdx.x;
    if (i >= T) return;
    const bf16* base = qkv + (long long)n * T * 3 * C;
    float* gbase = dqkv + (long long)n * T * 3 * C;
    int qo = 3 * D * h, ko = qo + D, vo = qo + 2 * D;
    float scale = rsqrtf((float)D);
    float q[D], o[D], g[D];
    for (int e = 0; e < D; e++) {
        q[e] = to_f32(base[(long long)i * 3 * C + qo + e]) * scale;
        o[e] = 0.f;
        g[e] = dout[((long long)n * T + i) * C + h * D + e];
    }
    float m = -inf_f32(), l = 0.f;
    for (int j = 0; j < T; j++) {
        float s = 0.f;
        for (int e = 0; e < D; e++) s += q[e] * to_f32(base[(long long)j * 3 * C + ko + e]);
        float mn = fmaxf(m, s), corr = __expf(m - mn), p = __expf(s - mn);
        l = l * corr + p;
        for (int e = 0; e < D; e++) o[e] = o[e] * corr + p * to_f32(base[(long long)j * 3 * C + vo + e]);
        m = mn;
    }
    float di = 0.f;
    for (int e = 0; e < D; e++) di += g[e] * o[e] / l;
    float dq[D];
    for (int e = 0; e < D; e++) dq[e] = 0.f;
    for (int j = 0; j < T; j++) {
        const bf16* kj = base + (long long)j * 3 * C + ko;
        const bf16* vj = base + (long long)j * 3 * C + vo;
        float s = 0.f, dp = 0.f;
        for (int e = 0; e < D; e++) {
            s += q[e] * to_f32(kj[e]);
            dp += g[e] * to_f32(vj[e]);
        }
        float p = __expf(s - m) / l;
        float ds = p * (dp - di) * scale;
        for (int e = 0; e < D; e++) {
            dq[e] += ds * to_f32(kj[e]);
            atomicAdd(&gbase[(long long)j * 3 * C + ko + e], ds * q[e] / scale);
            atomicAdd(&gbase[(long long)j * 3 * C + vo + e], p * g[e]);
        }
    }
    for (int e = 0; e < D; e++) atomicAdd(&gbase[(long long)i * 3 * C + qo + e], dq[e]);
}

KERNEL attention_backward_f32(const bf16* qkv, const float* dout, float* dqkv, int T, int C, int head_dim) {
    switch (head_dim) {
        case 16: attention_backward_head<16>(qkv, dout, dqkv, T, C); break;
        case 32: attention_backward_head<32>(qkv, dout, dqkv, T, C); break;
        default: attention_backward_head<64>(qkv, dout, dqkv, T, C); break;
    }
}
