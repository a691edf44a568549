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

template <typename S, typename D>
__device__ __forceinline__ void cast(long long n, const S* x, D* y) {
    for (long long i = grid_start(); i < n; i += grid_stride()) y[i] = from_f32<D>(to_f32(x[i]));
}
KERNEL cast_f32_bf16(long long n, const float* x, bf16* y) { cast(n, x, y); }
KERNEL cast_bf16_f32(long long n, const bf16* x, float* y) { cast(n, x, y); }
KERNEL cast_f32_f16(long long n, const float* x, f16* y) { cast(n, x, y); }
KERNEL cast_f16_f32(long long n, const f16* x, float* y) { cast(n, x, y); }
