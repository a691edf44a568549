// The optimiser step on the device: AdamW with bias correction, the gradient scaled by the global
// clipping factor, and the EMA of the weights, one pass over each parameter tensor
// (src/ops/adamw.rs holds the CPU reference).
#include "common.cuh"

KERNEL adamw_f32(long long n, float* p, const float* g, float* m, float* v, float* ema, float gscale, float lr, float b1, float b2,
                 float c1, float c2, float eps, float wd, float decay) {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
        float gi = g[i] * gscale;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        float upd = (mi / c1) / (sqrtf(vi / c2) + eps);
        float pi = p[i] - lr * (upd + wd * p[i]);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        ema[i] = decay * ema[i] + (1.0f - decay) * pi;
    }
}
