// Elementwise kernels. Grid-stride loops: any grid covers any n.
#include "common.cuh"

// y = a x + y
KERNEL axpy_f32(long long n, float a, const float* x, float* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = a * x[i] + y[i];
}

// y = a x
KERNEL scale_f32(long long n, float a, const float* x, float* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = a * x[i];
}

// y = a x + b
KERNEL affine_f32(long long n, float a, float b, const float* x, float* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = a * x[i] + b;
}

template <typename S, typename D>
__device__ __forceinline__ void cast(long long n, const S* x, D* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = from_f32<D>(to_f32(x[i]));
}
KERNEL cast_f32_bf16(long long n, const float* x, bf16* y) { cast(n, x, y); }
KERNEL cast_bf16_f32(long long n, const bf16* x, float* y) { cast(n, x, y); }
KERNEL cast_f32_f16(long long n, const float* x, f16* y) { cast(n, x, y); }
KERNEL cast_f16_f32(long long n, const f16* x, float* y) { cast(n, x, y); }

// y = a * b (elementwise)
KERNEL mul_f32(long long n, const float* a, const float* b, float* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = a[i] * b[i];
}

// y = 1 / x where |x| > eps, else 0 (SIRT's row and column normalisers: rays and voxels that
// nothing reaches get no update instead of a division by zero).
KERNEL recip_f32(long long n, float eps, const float* x, float* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = fabsf(x[i]) > eps ? 1.f / x[i] : 0.f;
}

// y = max(x, lo)
KERNEL clamp_min_f32(long long n, float lo, const float* x, float* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = fmaxf(x[i], lo);
}

// y = v everywhere
KERNEL fill_f32(long long n, float v, float* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = v;
}

// y = a + b on bf16 (gradient accumulation of activations), in f32.
KERNEL add_bf16(long long n, const bf16* a, const bf16* b, bf16* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = from_f32<bf16>(to_f32(a[i]) + to_f32(b[i]));
}
