// Row reductions: sum and sum of squares along the last axis, in f32. The pattern that group
// norm's statistics use: per-thread partial sums, a warp shuffle tree, then one warp over the
// per-warp partials in shared memory. blockDim.x must be a multiple of 32 (at most 1024).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void row_sums(int rows, int n, const T* x, float* sum, float* sumsq) {
    __shared__ float part_s[32];
    __shared__ float part_q[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = x + (long long)r * n;
        float s = 0.f, q = 0.f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float v = to_f32(row[i]);
            s += v;
            q += v * v;
        }
        s = warp_sum(s);
        q = warp_sum(q);
        if (lane == 0) {
            part_s[warp] = s;
            part_q[warp] = q;
        }
        __syncthreads();
        if (warp == 0) {
            s = lane < nwarps ? part_s[lane] : 0.f;
            q = lane < nwarps ? part_q[lane] : 0.f;
            s = warp_sum(s);
            q = warp_sum(q);
            if (lane == 0) {
                sum[r] = s;
                sumsq[r] = q;
            }
        }
        __syncthreads();  // the partials are reused by the next row
    }
}

KERNEL row_sums_f32(int rows, int n, const float* x, float* sum, float* sumsq) { row_sums(rows, n, x, sum, sumsq); }
KERNEL row_sums_bf16(int rows, int n, const bf16* x, float* sum, float* sumsq) { row_sums(rows, n, x, sum, sumsq); }

// Per-block partial dot products x . y; the caller sums the gridDim.x partials in f64 (a fixed
// order: results do not depend on scheduling, unlike an atomic sum).
KERNEL dot_partial_f32(long long n, const float* x, const float* y, float* partial) {
    __shared__ float part[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    float s = 0.f;
    for (long long i = grid_start(); i < n; i += grid_stride()) s += x[i] * y[i];
    s = warp_sum(s);
    if (lane == 0) part[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < nwarps ? part[lane] : 0.f;
        s = warp_sum(s);
        if (lane == 0) partial[blockIdx.x] = s;
    }
}
