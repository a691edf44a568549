// The Siddon projector pair, one thread per ray: the traversal of src/ct/siddon.rs (Jacobs'
// incremental form, plane crossings recomputed from the voxel index so f32 does not drift) in f32.
// Forward gathers; the adjoint scatters the same weights with atomicAdd (an exact transpose up to
// summation order). Views: 15 floats each (src, src_row, det, u, v), as Geometry::views. A launch
// covers views [view0, view0 + nviews): `proj` then holds that slab only.
#include "common.cuh"

struct SiddonRay {
    float o[3], d[3], t0, t1;
};

struct SiddonGrid {
    int n[3];      // nx, ny, nz
    float lo[3];   // world corner of voxel (0, 0, 0)
    float s[3];    // voxel size (x, y, z)
};

__device__ __forceinline__ SiddonRay siddon_ray(const float* views, int view0, int parallel, int rows, int cols, long long ray) {
    int c = (int)(ray % cols);
    long long vr = ray / cols;
    int r = (int)(vr % rows);
    const float* w = views + (view0 + vr / rows) * 15;
    float fc = c - (cols - 1) * 0.5f, fr = r - (rows - 1) * 0.5f;
    SiddonRay R;
    for (int a = 0; a < 3; a++) {
        float p = w[6 + a] + fc * w[9 + a] + fr * w[12 + a];
        if (parallel) {
            R.o[a] = p;
            R.d[a] = w[a];
        } else {
            R.o[a] = w[a] + fr * w[3 + a];
            R.d[a] = p - R.o[a];
        }
    }
    R.t0 = parallel ? -inf_f32() : 0.f;
    R.t1 = parallel ? inf_f32() : 1.f;
    return R;
}

__device__ __forceinline__ float siddon_plane(const SiddonGrid& g, const SiddonRay& R, const float* inv, const int* idx,
                                              const int* step, int a) {
    float plane = g.lo[a] + (idx[a] + (step[a] > 0)) * g.s[a];
    return (plane - R.o[a]) * inv[a];
}

// visit(linear voxel index, intersection length) for every voxel the ray crosses.
template <typename Visit>
__device__ __forceinline__ void siddon_trace(const SiddonGrid& g, const SiddonRay& R, Visit visit) {
    float ta = R.t0, tb = R.t1;
    for (int a = 0; a < 3; a++) {
        float hi = g.lo[a] + g.n[a] * g.s[a];
        if (R.d[a] == 0.f) {
            if (R.o[a] <= g.lo[a] || R.o[a] >= hi) return;
        } else {
            float inv = 1.f / R.d[a];
            float x = (g.lo[a] - R.o[a]) * inv, y = (hi - R.o[a]) * inv;
            ta = fmaxf(ta, fminf(x, y));
            tb = fminf(tb, fmaxf(x, y));
        }
    }
    if (!(ta < tb)) return;
    float len = sqrtf(R.d[0] * R.d[0] + R.d[1] * R.d[1] + R.d[2] * R.d[2]);
    int idx[3], step[3];
    float inv[3], tnext[3];
    for (int a = 0; a < 3; a++) {
        float p = R.o[a] + ta * R.d[a];
        int i = (int)floorf((p - g.lo[a]) / g.s[a]);
        idx[a] = min(max(i, 0), g.n[a] - 1);
        if (R.d[a] != 0.f) {
            inv[a] = 1.f / R.d[a];
            step[a] = R.d[a] > 0.f ? 1 : -1;
            tnext[a] = siddon_plane(g, R, inv, idx, step, a);
        } else {
            inv[a] = 0.f;
            step[a] = 0;
            tnext[a] = inf_f32();
        }
    }
    float t = ta;
    for (;;) {
        int m = (tnext[0] <= tnext[1] && tnext[0] <= tnext[2]) ? 0 : (tnext[1] <= tnext[2] ? 1 : 2);
        float te = fminf(tnext[m], tb);
        if (te > t) {
            visit(((long long)idx[2] * g.n[1] + idx[1]) * g.n[0] + idx[0], (te - t) * len);
            t = te;
        }
        if (tnext[m] >= tb) return;
        idx[m] += step[m];
        if (idx[m] < 0 || idx[m] >= g.n[m]) return;
        tnext[m] = siddon_plane(g, R, inv, idx, step, m);
    }
}

__device__ __forceinline__ SiddonGrid siddon_grid(int nx, int ny, int nz, float cx, float cy, float cz, float sx, float sy,
                                                  float sz) {
    SiddonGrid g = {{nx, ny, nz}, {cx, cy, cz}, {sx, sy, sz}};
    return g;
}

KERNEL siddon_fwd_f32(const float* vol, float* proj, const float* views, int view0, int parallel, int nx, int ny, int nz, float cx,
                      float cy, float cz, float sx, float sy, float sz, int nviews, int rows, int cols) {
    SiddonGrid g = siddon_grid(nx, ny, nz, cx, cy, cz, sx, sy, sz);
    long long nrays = (long long)nviews * rows * cols;
    for (long long ray = grid_start(); ray < nrays; ray += grid_stride()) {
        float acc = 0.f;
        siddon_trace(g, siddon_ray(views, view0, parallel, rows, cols, ray), [&](long long i, float l) { acc += l * vol[i]; });
        proj[ray] = acc;
    }
}

KERNEL siddon_adj_f32(float* vol, const float* proj, const float* views, int view0, int parallel, int nx, int ny, int nz, float cx,
                      float cy, float cz, float sx, float sy, float sz, int nviews, int rows, int cols) {
    SiddonGrid g = siddon_grid(nx, ny, nz, cx, cy, cz, sx, sy, sz);
    long long nrays = (long long)nviews * rows * cols;
    for (long long ray = grid_start(); ray < nrays; ray += grid_stride()) {
        float y = proj[ray];
        if (y == 0.f) continue;
        siddon_trace(g, siddon_ray(views, view0, parallel, rows, cols, ray), [&](long long i, float l) { atomicAdd(&vol[i], l * y); });
    }
}
