// The one header every kernel includes. It hides the two ways a kernel is compiled:
// nvcc/NVRTC for a GPU, or C++ against the emulator (TOMODIFF_EMU). Kernels use only what this
// header and the emulator provide (see docs/ARCHITECTURE.md, "Kernel rules").
#pragma once

#ifdef TOMODIFF_EMU
#include "emu/emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#endif

// Entry points: build.rs finds every `KERNEL void name(params)` in kernels/*.cu and makes the one
// table of entry points (Rust launch checks, emulator trampolines) from it.
#define KERNEL extern "C" __global__ void

typedef __nv_bfloat16 bf16;
typedef __half f16;

// Dynamic shared memory of the launch, as a T*.
#ifdef TOMODIFF_EMU
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu::dynamic_shared())
#else
#define DYNAMIC_SHARED(T, name)                                  \
    extern __shared__ __align__(16) unsigned char name##_raw_[]; \
    T* name = reinterpret_cast<T*>(name##_raw_)
#endif

// Loads and stores that convert to and from f32, so one template serves every storage type.
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(f16 v) { return __half2float(v); }
template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ f16 from_f32<f16>(float v) { return __float2half(v); }

// Sum over the 32 lanes of a warp; every lane gets the total.
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Asynchronous 16-byte global->shared copies (sm_80 cp.async). `pred` false writes zeros, which
// is how tiles are padded at ragged edges. The emulator copies at once, which is one legal
// schedule of the real instruction.
#ifdef TOMODIFF_EMU
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
    if (pred)
        std::memcpy(smem, gmem, 16);
    else
        std::memset(smem, 0, 16);
}
__device__ __forceinline__ void cp_async_commit() {}
template <int N>
__device__ __forceinline__ void cp_async_wait() {}
#else
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#endif

// Tensor-core tiles: bf16 16x16x16 with f32 accumulation, WMMA semantics (warp-wide calls).
#ifndef TOMODIFF_EMU
namespace tc {
using row_major = nvcuda::wmma::row_major;
using col_major = nvcuda::wmma::col_major;
template <typename L>
using frag_a = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, bf16, L>;
template <typename L>
using frag_b = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, bf16, L>;
using frag_acc = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;
template <typename F>
__device__ __forceinline__ void load(F& f, const bf16* p, unsigned ld) {
    nvcuda::wmma::load_matrix_sync(f, p, ld);
}
__device__ __forceinline__ void fill(frag_acc& f, float v) { nvcuda::wmma::fill_fragment(f, v); }
__device__ __forceinline__ void store(float* p, const frag_acc& f, unsigned ld) {
    nvcuda::wmma::store_matrix_sync(p, f, ld, nvcuda::wmma::mem_row_major);
}
template <typename LA, typename LB>
__device__ __forceinline__ void mma(frag_acc& d, const frag_a<LA>& a, const frag_b<LB>& b, const frag_acc& c) {
    nvcuda::wmma::mma_sync(d, a, b, c);
}
}  // namespace tc
#endif

// +infinity without relying on a header's macro (NVRTC has no INFINITY).
__device__ __forceinline__ float inf_f32() { return __int_as_float(0x7f800000); }

// Grid-stride loop bounds over n work items (64-bit: rays and voxels exceed 2^31).
__device__ __forceinline__ long long grid_start() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_stride() { return (long long)blockDim.x * gridDim.x; }
