// The sampler's per-pass work on the device (src/ops/sampler.rs holds the CPU references):
// Tweedie's x0 with the clamp, and the DDIM/re-noising
// update with noise drawn from a counter-based generator, so the noise is a function of
// (seed, stream, index) and the same on every device and thread count.
#include "common.cuh"

// 64-bit mix (splitmix64's finaliser) of seed, stream and index.
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// A standard normal from one 64-bit hash: Box-Muller on two 24-bit uniforms (u1 in (0, 1]).
__device__ __forceinline__ float normal_at(long long seed, long long stream, long long i) {
    unsigned long long h = mix64((unsigned long long)seed ^ mix64((unsigned long long)stream * 0x9e3779b97f4a7c15ull + (unsigned long long)i));
    float u1 = (float)((h >> 40) + 1) * (1.0f / 16777216.0f);
    float u2 = (float)((h >> 8) & 0xffffff) * (1.0f / 16777216.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

// x0 = cx x - co out from the network's output (eps or v), clamped to [-1, 1] when clip != 0;
// out then becomes eps = (x - sa x0) / sb, the noise consistent with x0 (sa = sqrt(abar),
// sb = sqrt(1 - abar)).
KERNEL tweedie_f32(long long n, const float* x, float* out, float* x0, float cx, float co, float sa, float sb, int clip) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        float a = cx * x[i] - co * out[i];
        if (clip) a = fminf(fmaxf(a, -1.0f), 1.0f);
        out[i] = (x[i] - sa * a) / sb;
        x0[i] = a;
    }
}

// x = a x0 + c eps + sigma z(seed, stream, i): the DDIM step (c = sqrt(1 - abar_s - sigma^2)),
// recurrent re-noising and the start (c = 0).
KERNEL ddim_f32(long long n, float* x, const float* x0, const float* eps, float a, float c, float sigma, long long seed, long long stream) {
    for (long long i = grid_start(); i < n; i += grid_stride()) x[i] = a * x0[i] + c * eps[i] + sigma * normal_at(seed, stream, i);
}
