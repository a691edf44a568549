// The CUDA execution model, emulated on the CPU. Kernels in kernels/*.cu compile against this
// header (with TOMODIFF_EMU defined) as plain C++. Blocks run one at a time; the threads of a
// block are fibers that run until they reach a barrier (__syncthreads, a warp collective), so
// barrier semantics hold without OS threads. Everything a kernel may use is declared here or in
// kernels/common.cuh; anything else is a compile error, which keeps .cu files portable.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstddef>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
    unsigned x, y, z;
};
struct uint3 {
    unsigned x, y, z;
};

namespace emu {

constexpr int kWarp = 32;
constexpr int kMaxThreads = 1024;

// One warp's exchange area. Collectives write into slot [parity] and read after a warp barrier;
// alternating parity lets a fast lane start the next collective while a slow lane still reads.
struct Warp {
    unsigned arrived = 0;
    unsigned gen = 0;
    unsigned live = 0;  // bit per lane that has not exited
    uint64_t slot[2][kWarp];
    float mma_a[2][256];
    float mma_b[2][256];
};

struct Thread {
    uint3 tid;
    int lane;
    int warp;
    unsigned parity[1];  // collective counter of this lane (its warp's next parity)
};

extern Thread* cur;             // the fiber now running
extern uint3 block_idx;
extern dim3 block_dim;
extern dim3 grid_dim;
extern Warp* warps;
extern unsigned char* dyn_smem;

void syncthreads();
// Barrier over the lanes of `mask` that are alive in the current warp.
void warp_barrier(unsigned mask);

inline unsigned next_parity() {
    unsigned p = cur->parity[0] & 1u;
    cur->parity[0]++;
    return p;
}

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp collectives move at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

// Every lane publishes v, then reads the value of lane src(lane) (or keeps its own when the source
// is outside the segment, as CUDA does for shfl_up/down).
template <typename T, typename F>
inline T exchange(unsigned mask, T v, F src_of) {
    Warp& w = warps[cur->warp];
    unsigned p = next_parity();
    w.slot[p][cur->lane] = to_bits(v);
    warp_barrier(mask);
    int s = src_of(cur->lane);
    if (s < 0 || s >= kWarp || !((w.live >> s) & 1u)) return v;
    return from_bits<T>(w.slot[p][s]);
}

inline unsigned ballot(unsigned mask, bool pred) {
    Warp& w = warps[cur->warp];
    unsigned p = next_parity();
    w.slot[p][cur->lane] = pred ? 1 : 0;
    warp_barrier(mask);
    unsigned r = 0;
    for (int l = 0; l < kWarp; l++)
        if (((mask & w.live) >> l) & 1u) r |= (unsigned)(w.slot[p][l] & 1u) << l;
    return r;
}

}  // namespace emu

#define threadIdx (emu::cur->tid)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define warpSize 32

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_barrier(mask); }
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return emu::exchange(mask, v, [&](int lane) { return (lane & ~(width - 1)) + (src & (width - 1)); });
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return emu::exchange(mask, v, [&](int lane) {
        int s = lane ^ lane_mask;
        return ((s & ~(width - 1)) == (lane & ~(width - 1))) ? s : lane;
    });
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return emu::exchange(mask, v, [&](int lane) {
        int s = lane + (int)delta;
        return (s & ~(width - 1)) == (lane & ~(width - 1)) ? s : lane;
    });
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return emu::exchange(mask, v, [&](int lane) {
        int s = lane - (int)delta;
        return (s >= 0 && (s & ~(width - 1)) == (lane & ~(width - 1))) ? s : lane;
    });
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return emu::ballot(mask, pred != 0); }
inline int __any_sync(unsigned mask, int pred) { return emu::ballot(mask, pred != 0) != 0; }
inline int __all_sync(unsigned mask, int pred) {
    return emu::ballot(mask, pred != 0) == (mask & emu::warps[emu::cur->warp].live);
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }

// Atomics: fibers of one launch share one OS thread and never switch inside these, so a plain
// read-modify-write is atomic.
template <typename T>
inline T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T>
inline T atomicMax(T* p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}
template <typename T>
inline T atomicMin(T* p, T v) {
    T old = *p;
    if (v < old) *p = v;
    return old;
}
template <typename T>
inline T atomicCAS(T* p, T cmp, T v) {
    T old = *p;
    if (old == cmp) *p = v;
    return old;
}
template <typename T>
inline T atomicExch(T* p, T v) {
    T old = *p;
    *p = v;
    return old;
}

// ---- math that CUDA offers and C++ spells differently ----
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
inline int __float2int_rn(float f) { return (int)std::nearbyint(f); }
inline int __float2int_rz(float f) { return (int)f; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
using std::fmaxf;
using std::fminf;

// ---- vector types ----
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- 16-bit floats: storage types with round-to-nearest-even conversions ----
namespace emu {
inline uint16_t f32_to_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
inline float bf16_to_f32(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
}  // namespace emu

struct __nv_bfloat16 {
    uint16_t x;
};
struct __half {
    uint16_t x;
};
struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
inline __nv_bfloat16 __float2bfloat16(float f) { return {emu::f32_to_bf16(f)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {emu::f32_to_bf16(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return emu::bf16_to_f32(b.x); }
inline __half __float2half(float f) { return {emu::f32_to_f16(f)}; }
inline __half __float2half_rn(float f) { return {emu::f32_to_f16(f)}; }
inline float __half2float(__half h) { return emu::f16_to_f32(h.x); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {__bfloat162float(v.x), __bfloat162float(v.y)}; }

// ---- tensor-core tiles (the project's wrappers; CUDA maps them to nvcuda::wmma) ----
// A fragment holds 8 of the 256 elements of a 16x16 tile in each lane (lane l: elements
// 8l..8l+7 in row-major order of the logical tile). The mapping is opaque to kernels, as on the
// hardware; only whole-fragment operations and uniform per-element updates are allowed.
namespace tc {
struct row_major {};
struct col_major {};
template <typename Layout>
struct frag_a { float x[8]; static constexpr int num_elements = 8; };
template <typename Layout>
struct frag_b { float x[8]; static constexpr int num_elements = 8; };
struct frag_acc { float x[8]; static constexpr int num_elements = 8; };

inline int elem_row(int i) { return (emu::cur->lane * 8 + i) >> 4; }
inline int elem_col(int i) { return (emu::cur->lane * 8 + i) & 15; }
inline float load_elem(const __nv_bfloat16* p, int r, int c, unsigned ld, row_major) { return __bfloat162float(p[r * ld + c]); }
inline float load_elem(const __nv_bfloat16* p, int r, int c, unsigned ld, col_major) { return __bfloat162float(p[c * ld + r]); }

// A warp-wide load is issued by every lane of the warp (WMMA rule); each lane reads its 8 values.
template <typename L>
inline void load(frag_a<L>& f, const __nv_bfloat16* p, unsigned ld) {
    for (int i = 0; i < 8; i++) f.x[i] = load_elem(p, elem_row(i), elem_col(i), ld, L{});
}
template <typename L>
inline void load(frag_b<L>& f, const __nv_bfloat16* p, unsigned ld) {
    for (int i = 0; i < 8; i++) f.x[i] = load_elem(p, elem_row(i), elem_col(i), ld, L{});
}
inline void fill(frag_acc& f, float v) {
    for (int i = 0; i < 8; i++) f.x[i] = v;
}
inline void store(float* p, const frag_acc& f, unsigned ld) {
    for (int i = 0; i < 8; i++) p[elem_row(i) * ld + elem_col(i)] = f.x[i];
}
// d = a b + c over the warp: lanes publish their parts of a and b, meet, and each computes its
// own 8 elements of d from the whole tiles.
template <typename LA, typename LB>
inline void mma(frag_acc& d, const frag_a<LA>& a, const frag_b<LB>& b, const frag_acc& c) {
    emu::Warp& w = emu::warps[emu::cur->warp];
    unsigned p = emu::next_parity();
    int base = emu::cur->lane * 8;
    for (int i = 0; i < 8; i++) {
        w.mma_a[p][base + i] = a.x[i];
        w.mma_b[p][base + i] = b.x[i];
    }
    emu::warp_barrier(0xffffffffu);
    const float* A = w.mma_a[p];
    const float* B = w.mma_b[p];
    for (int i = 0; i < 8; i++) {
        int r = (base + i) >> 4, col = (base + i) & 15;
        float s = c.x[i];
        for (int k = 0; k < 16; k++) s += A[r * 16 + k] * B[k * 16 + col];
        d.x[i] = s;
    }
}
}  // namespace tc

// ---- dynamic shared memory and launch glue ----
namespace emu {
inline unsigned char* dynamic_shared() { return dyn_smem; }

using Trampoline = void (*)(void** args);
template <typename... A, std::size_t... I>
inline void invoke_impl(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}
template <typename... A>
inline void invoke(void (*f)(A...), void** args) {
    invoke_impl(f, args, std::index_sequence_for<A...>{});
}
}  // namespace emu
