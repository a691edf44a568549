// The network's inputs on the device, and its outputs back: the global context (the whole
// volume resized to the patch shape, trilinear with align_corners=False semantics or area
// averaging, as src/ops/resample.rs), the batch of 5-channel patches [x_t patch, context, z, y, x]
// of src/diffusion/tiling.rs, and the stitching of patch outputs into the volume.
#include "common.cuh"

// Source taps along one axis (align_corners=False, clamped at 0 like PyTorch).
__device__ __forceinline__ void lin_taps(int i, int n_in, int n_out, int& i0, int& i1, float& f) {
    float src = fmaxf((i + 0.5f) * ((float)n_in / n_out) - 0.5f, 0.f);
    i0 = min((int)floorf(src), n_in - 1);
    i1 = min(i0 + 1, n_in - 1);
    f = src - i0;
}

KERNEL resize_trilinear_f32(const float* x, float* y, int D, int H, int W, int OD, int OH, int OW) {
    long long total = (long long)OD * OH * OW;
    for (long long o = grid_start(); o < total; o += grid_stride()) {
        int i = (int)(o % OW), j = (int)((o / OW) % OH), k = (int)(o / ((long long)OW * OH));
        int z0, z1, y0, y1, x0, x1;
        float fz, fy, fx;
        lin_taps(k, D, OD, z0, z1, fz);
        lin_taps(j, H, OH, y0, y1, fy);
        lin_taps(i, W, OW, x0, x1, fx);
        auto at = [&](int z, int yy, int xx) { return x[((long long)z * H + yy) * W + xx]; };
        auto lerp = [](float a, float b, float f) { return a + (b - a) * f; };
        float c00 = lerp(at(z0, y0, x0), at(z0, y0, x1), fx), c01 = lerp(at(z0, y1, x0), at(z0, y1, x1), fx);
        float c10 = lerp(at(z1, y0, x0), at(z1, y0, x1), fx), c11 = lerp(at(z1, y1, x0), at(z1, y1, x1), fx);
        y[o] = lerp(lerp(c00, c01, fy), lerp(c10, c11, fy), fz);
    }
}

// Output cell i averages input range [floor(i n / m), ceil((i + 1) n / m)), as PyTorch's area mode.
KERNEL resize_area_f32(const float* x, float* y, int D, int H, int W, int OD, int OH, int OW) {
    long long total = (long long)OD * OH * OW;
    for (long long o = grid_start(); o < total; o += grid_stride()) {
        int i = (int)(o % OW), j = (int)((o / OW) % OH), k = (int)(o / ((long long)OW * OH));
        int z0 = k * D / OD, z1 = ((k + 1) * D + OD - 1) / OD;
        int y0 = j * H / OH, y1 = ((j + 1) * H + OH - 1) / OH;
        int x0 = i * W / OW, x1 = ((i + 1) * W + OW - 1) / OW;
        float s = 0.f;
        for (int z = z0; z < z1; z++)
            for (int yy = y0; yy < y1; yy++)
                for (int xx = x0; xx < x1; xx++) s += x[((long long)z * H + yy) * W + xx];
        y[o] = s / ((z1 - z0) * (y1 - y0) * (x1 - x0));
    }
}

__device__ __forceinline__ float axis_position(int i, int n) { return n < 2 ? 0.f : -1.f + 2.f * i / (n - 1); }

// out (N, PZ, PY, PX, 5) bf16 from vol (D, H, W) f32, ctx (PZ, PY, PX) f32 and starts (N, 3) i32.
// Voxel (z, y, x) of element o of a batch of patches (N, PZ, PY, PX) at starts (N, 3); p is its
// offset within its patch.
__device__ __forceinline__ void patch_voxel(long long o, const int* starts, int PZ, int PY, int PX, long long& p, int& z, int& y, int& x) {
    long long per = (long long)PZ * PY * PX;
    int b = (int)(o / per);
    p = o % per;
    int i = (int)(p % PX), j = (int)((p / PX) % PY), k = (int)(p / ((long long)PX * PY));
    z = starts[b * 3] + k, y = starts[b * 3 + 1] + j, x = starts[b * 3 + 2] + i;
}

KERNEL assemble_patches_bf16(const float* vol, const float* ctx, const int* starts, bf16* out, int N, int D, int H, int W,
                             int PZ, int PY, int PX) {
    long long total = N * ((long long)PZ * PY * PX);
    for (long long o = grid_start(); o < total; o += grid_stride()) {
        long long p;
        int z, y, x;
        patch_voxel(o, starts, PZ, PY, PX, p, z, y, x);
        bool inside = z >= 0 && y >= 0 && x >= 0 && z < D && y < H && x < W;
        bf16* v = out + o * 5;
        v[0] = from_f32<bf16>(inside ? vol[((long long)z * H + y) * W + x] : 0.f);
        v[1] = from_f32<bf16>(ctx[p]);
        v[2] = from_f32<bf16>(axis_position(z, D));
        v[3] = from_f32<bf16>(axis_position(y, H));
        v[4] = from_f32<bf16>(axis_position(x, W));
    }
}

// vol (D, H, W) <- patches (N, PZ, PY, PX) at starts (N, 3), the inverse of assemble for the
// network's output; voxels outside the volume are dropped. The tiles of one tiling are disjoint,
// so no two threads write one voxel.
KERNEL stitch_patches_f32(const float* patches, const int* starts, float* vol, int N, int D, int H, int W, int PZ, int PY, int PX) {
    long long total = N * ((long long)PZ * PY * PX);
    for (long long o = grid_start(); o < total; o += grid_stride()) {
        long long p;
        int z, y, x;
        patch_voxel(o, starts, PZ, PY, PX, p, z, y, x);
        if (z >= 0 && y >= 0 && x >= 0 && z < D && y < H && x < W) vol[((long long)z * H + y) * W + x] = patches[o];
    }
}
