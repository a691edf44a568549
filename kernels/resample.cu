// Data movement of the U-Net on channels-last bf16 activations: nearest x2 upsampling and
// channel concatenation (the decoder's skip connections).
#include "common.cuh"

// y (N, 2D, 2H, 2W, C) from x (N, D, H, W, C)
KERNEL upsample2_bf16(const bf16* x, bf16* y, int N, int D, int H, int W, int C) {
    long long total = (long long)N * 8 * D * H * W * C;
    for (long long o = grid_start(); o < total; o += grid_stride()) {
        int c = (int)(o % C);
        long long v = o / C;
        int xx = (int)(v % (2 * W));
        v /= 2 * W;
        int yy = (int)(v % (2 * H));
        v /= 2 * H;
        int z = (int)(v % (2 * D));
        long long n = v / (2 * D);
        y[o] = x[(((n * D + z / 2) * H + yy / 2) * W + xx / 2) * C + c];
    }
}

// y (V, Ca + Cb) = [a (V, Ca), b (V, Cb)] over V voxels
KERNEL concat_bf16(const bf16* a, const bf16* b, bf16* y, long long V, int Ca, int Cb) {
    int C = Ca + Cb;
    for (long long o = grid_start(); o < V * C; o += grid_stride()) {
        long long v = o / C;
        int c = (int)(o % C);
        y[o] = c < Ca ? a[v * Ca + c] : b[v * Cb + c - Ca];
    }
}

// Gradient of upsample2_bf16 (f32 gradients): each input voxel sums its 8 children.
KERNEL upsample2_backward_f32(const float* dy, float* dx, int N, int D, int H, int W, int C) {
    long long total = (long long)N * D * H * W * C;
    for (long long o = grid_start(); o < total; o += grid_stride()) {
        int c = (int)(o % C);
        long long v = o / C;
        int x = (int)(v % W);
        v /= W;
        int y = (int)(v % H);
        v /= H;
        int z = (int)(v % D);
        long long n = v / D;
        float s = 0.f;
        for (int dz = 0; dz < 2; dz++)
            for (int dyy = 0; dyy < 2; dyy++)
                for (int dxx = 0; dxx < 2; dxx++)
                    s += dy[(((n * 2 * D + 2 * z + dz) * 2 * H + 2 * y + dyy) * 2 * W + 2 * x + dxx) * C + c];
        dx[o] = s;
    }
}

// Gradient of concat_bf16 (f32 gradients): a (V, Ca) and b (V, Cb) from y (V, Ca + Cb).
KERNEL split_f32(const float* y, float* a, float* b, long long V, int Ca, int Cb) {
    int C = Ca + Cb;
    for (long long o = grid_start(); o < V * C; o += grid_stride()) {
        long long v = o / C;
        int c = (int)(o % C);
        if (c < Ca)
            a[v * Ca + c] = y[o];
        else
            b[v * Cb + c - Ca] = y[o];
    }
}

// out (N, C) = sum over the S voxels of each sample of x (N, S, C), f32: the gradient of a
// per-sample bias. grid (ceil(C / 32), N), block (32, 8).
KERNEL sample_sums_f32(const float* x, float* out, int S, int C) {
    __shared__ float part[8][32];
    int n = blockIdx.y, c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.f;
    if (c < C)
        for (long long p = threadIdx.y; p < S; p += 8) s += x[((long long)n * S + p) * C + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int i = 1; i < 8; i++) s += part[i][threadIdx.x];
        out[n * C + c] = s;
    }
}
