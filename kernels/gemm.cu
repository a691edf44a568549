// C (f32, M x N) = A (bf16, M x K) . B (bf16, K x N), all row-major with leading dimensions.
// Tensor cores through tc:: (16x16x16 bf16 tiles, f32 accumulation). A block computes a 128x128
// tile with 8 warps (2 x 4, each 64x32 = 4x2 fragments); K advances 32 at a time through a
// 3-stage cp.async pipeline in dynamic shared memory (GEMM_SMEM_BYTES, set by the caller).
// Ragged edges are zero-filled in shared memory and masked at the store. The `vec` entry needs
// K and N multiples of 8 and 16-byte aligned A, B (16-byte cp.async chunks); `any` takes any shape.
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

template <bool VEC>
__device__ __forceinline__ void gemm_load_tile(bf16* As, bf16* Bs, const bf16* A, const bf16* B, int M, int N, int K,
                                               int lda, int ldb, int m0, int n0, int k0) {
    using namespace gemm_cfg;
    const bf16 zero = __float2bfloat16(0.f);
    if (VEC) {
        for (int c = threadIdx.x; c < BM * (BK / 8); c += THREADS) {
            int r = c / (BK / 8), k = (c % (BK / 8)) * 8;
            bool ok = m0 + r < M && k0 + k < K;
            cp_async16(As + r * LDA + k, ok ? A + (long long)(m0 + r) * lda + k0 + k : A, ok);
        }
        for (int c = threadIdx.x; c < BK * (BN / 8); c += THREADS) {
            int r = c / (BN / 8), n = (c % (BN / 8)) * 8;
            bool ok = k0 + r < K && n0 + n < N;
            cp_async16(Bs + r * LDB + n, ok ? B + (long long)(k0 + r) * ldb + n0 + n : B, ok);
        }
    } else {
        for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
            int r = e / BK, k = e % BK;
            bool ok = m0 + r < M && k0 + k < K;
            As[r * LDA + k] = ok ? A[(long long)(m0 + r) * lda + k0 + k] : zero;
        }
        for (int e = threadIdx.x; e < BK * BN; e += THREADS) {
            int r = e / BN, n = e % BN;
            bool ok = k0 + r < K && n0 + n < N;
            Bs[r * LDB + n] = ok ? B[(long long)(k0 + r) * ldb + n0 + n] : zero;
        }
    }
}

template <bool VEC>
__device__ __forceinline__ void gemm_bf16(int M, int N, int K, const bf16* A, int lda, const bf16* B, int ldb, float* C,
                                          int ldc) {
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
        if (s < kt_n) gemm_load_tile<VEC>(As + s * A_STAGE, Bs + s * B_STAGE, A, B, M, N, K, lda, ldb, m0, n0, s * BK);
        cp_async_commit();
    }
    for (int kt = 0; kt < kt_n; kt++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // stage kt landed for all threads; stage kt-1 is free to refill
        int pf = kt + STAGES - 1;
        if (pf < kt_n)
            gemm_load_tile<VEC>(As + (pf % STAGES) * A_STAGE, Bs + (pf % STAGES) * B_STAGE, A, B, M, N, K, lda, ldb,
                                m0, n0, pf * BK);
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
                if (r < M && c < N) C[(long long)r * ldc + c] = scratch[e];
            }
            __syncwarp();
        }
}

KERNEL gemm_bf16_f32_vec(int M, int N, int K, const bf16* A, int lda, const bf16* B, int ldb, float* C, int ldc) {
    gemm_bf16<true>(M, N, K, A, lda, B, ldb, C, ldc);
}
KERNEL gemm_bf16_f32_any(int M, int N, int K, const bf16* A, int lda, const bf16* B, int ldb, float* C, int ldc) {
    gemm_bf16<false>(M, N, K, A, lda, B, ldb, C, ldc);
}
