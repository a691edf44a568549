// Kernels that pin down the execution model itself: run on the emulator and on a GPU, their
// outputs must equal what CUDA's rules give (tests/emulator.rs computes that independently).
#include "common.cuh"

// One int per thread in; 8 results per thread out, one per warp collective.
KERNEL selftest_warp(const int* in, int* out) {
    const unsigned all = 0xffffffffu;
    int t = threadIdx.x, lane = t % 32;
    int v = in[t];
    int* o = out + t * 8;
    o[0] = __shfl_sync(all, v, (lane * 7 + 3) % 32);
    o[1] = __shfl_xor_sync(all, v, 5);
    o[2] = __shfl_down_sync(all, v, 3);
    o[3] = __shfl_up_sync(all, v, 2);
    o[4] = __shfl_sync(all, v, 1, 8);
    o[5] = (int)__ballot_sync(all, v & 1);
    o[6] = __any_sync(all, v > 900);
    o[7] = __all_sync(all, v >= 0);
}

// 3D grid of 3D blocks: thread indices, static and dynamic shared memory, barriers, atomics.
// out[global thread] = in[global] + value the mirror thread of the block stored in shared memory.
KERNEL selftest_block(const float* in, float* out, float* fsum, int* counters) {
    __shared__ float tile[256];
    DYNAMIC_SHARED(float, dyn);
    int nt = blockDim.x * blockDim.y * blockDim.z;
    int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    long long g = (long long)b * nt + t;
    tile[t] = in[g];
    dyn[t] = 2.f * in[g];
    __syncthreads();
    out[g] = tile[nt - 1 - t] + dyn[(t + 1) % nt];
    atomicAdd(fsum, in[g]);
    atomicAdd(&counters[0], 1);
    atomicMax(&counters[1], (int)g);
    atomicAdd((unsigned*)&counters[2], 3u);
    // Exactly one thread of the whole grid wins the swap from -1.
    if (atomicCAS(&counters[3], -1, b) == -1) atomicAdd(&counters[4], 1);
}

// One warp: d = a b + 1 for a 16x16 row-major a and a 16x16 column-major b (bf16), f32 out.
KERNEL selftest_tc(const bf16* a, const bf16* b, float* d) {
    tc::frag_a<tc::row_major> fa;
    tc::frag_b<tc::col_major> fb;
    tc::frag_acc acc;
    tc::fill(acc, 1.f);
    tc::load(fa, a, 16);
    tc::load(fb, b, 16);
    tc::mma(acc, fa, fb, acc);
    tc::store(d, acc, 16);
}

// A barrier that half of the block never reaches: the emulator must report it, not hang.
// Never launched on a GPU, where it is undefined behaviour.
KERNEL selftest_divergent_barrier(int* out) {
    if (threadIdx.x < 16)
        __syncthreads();
    else
        __syncwarp();
    out[threadIdx.x] = 1;
}
