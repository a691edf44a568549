// The tensor-core GEMM main loop shared by every matrix product (gemm.cu, conv3d.cu):
// C (M x N) = A (M x K) . B (K x N), bf16 operands, f32 accumulation. A block computes a
// 128 x 128 tile with 8 warps (2 x 4, each 64 x 32 = 4 x 2 fragments); K advances 32 at a time
// through a 3-stage pipeline in dynamic shared memory (GEMM_SMEM_BYTES). What differs between
// products is only how tiles are fetched (a Loader: plain rows, or an implicit im2col of a
// convolution) and what is done with a result (an Epilogue: store f32, add bias, residual ...).
#pragma once
#include "common.cuh"

namespace gemm_cfg {
constexpr int BM = 128, BN = 128, BK = 32, STAGES = 3, THREADS = 256;
constexpr int LDA = BK + 8;  // shared row strides, padded by 16 bytes against bank conflicts
constexpr int LDB = BN + 8;
constexpr int A_STAGE = BM * LDA;
constexpr int B_STAGE = BK * LDB;
// = 56832 bytes; src/ops/gemm.rs states the same figure.
constexpr int SMEM_BYTES = STAGES * (A_STAGE + B_STAGE) * 2;
}  // namespace gemm_cfg

// B tile (BK x BN) from a row-major K x N matrix with leading dimension ldb. VEC: 16-byte
// cp.async chunks (N % 8 == 0, 16-byte aligned B); otherwise element by element.
template <bool VEC>
__device__ __forceinline__ void load_b_rows(bf16* Bs, const bf16* B, int N, int K, int ldb, int n0, int k0) {
    using namespace gemm_cfg;
    if (VEC) {
        for (int c = threadIdx.x; c < BK * (BN / 8); c += THREADS) {
            int r = c / (BN / 8), n = (c % (BN / 8)) * 8;
            bool ok = k0 + r < K && n0 + n < N;
            cp_async16(Bs + r * LDB + n, ok ? B + (long long)(k0 + r) * ldb + n0 + n : B, ok);
        }
    } else {
        const bf16 zero = __float2bfloat16(0.f);
        for (int e = threadIdx.x; e < BK * BN; e += THREADS) {
            int r = e / BN, n = e % BN;
            bool ok = k0 + r < K && n0 + n < N;
            Bs[r * LDB + n] = ok ? B[(long long)(k0 + r) * ldb + n0 + n] : zero;
        }
    }
}

// Runs the main loop and hands every in-range result (row, col, value) to ep(r, c, v).
template <class Loader, class Epilogue>
__device__ __forceinline__ void gemm_mainloop(int M, int N, int K, const Loader& ld, const Epilogue& ep) {
    using namespace gemm_cfg;
    DYNAMIC_SHARED(bf16, smem);
    bf16* As = smem;
    bf16* Bs = smem + STAGES * A_STAGE;
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int wm = warp / 4, wn = warp % 4;

    tc::frag_acc acc[4][2];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) tc::fill(acc[i][j], 0.f);

    int kt_n = (K + BK - 1) / BK;
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < kt_n) ld.load(As + s * A_STAGE, Bs + s * B_STAGE, m0, n0, s * BK);
        cp_async_commit();
    }
    for (int kt = 0; kt < kt_n; kt++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // stage kt landed for all threads; stage kt-1 is free to refill
        int pf = kt + STAGES - 1;
        if (pf < kt_n) ld.load(As + (pf % STAGES) * A_STAGE, Bs + (pf % STAGES) * B_STAGE, m0, n0, pf * BK);
        cp_async_commit();
        const bf16* a = As + (kt % STAGES) * A_STAGE;
        const bf16* b = Bs + (kt % STAGES) * B_STAGE;
        for (int kk = 0; kk < BK; kk += 16) {
            tc::frag_a<tc::row_major> fa[4];
            tc::frag_b<tc::row_major> fb[2];
            for (int i = 0; i < 4; i++) tc::load(fa[i], a + (wm * 64 + i * 16) * LDA + kk, LDA);
            for (int j = 0; j < 2; j++) tc::load(fb[j], b + kk * LDB + wn * 32 + j * 16, LDB);
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 2; j++) tc::mma(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
    }
    cp_async_wait<0>();
    __syncthreads();  // the pipeline's shared memory becomes the store scratch

    float* scratch = reinterpret_cast<float*>(smem) + warp * 256;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) {
            tc::store(scratch, acc[i][j], 16);
            __syncwarp();
            int r0 = m0 + wm * 64 + i * 16, c0 = n0 + wn * 32 + j * 16;
            for (int e = lane; e < 256; e += 32) {
                int r = r0 + e / 16, c = c0 + e % 16;
                if (r < M && c < N) ep(r, c, scratch[e]);
            }
            __syncwarp();
        }
}
