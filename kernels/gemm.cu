// C (f32, M x N) = A (bf16, M x K) . B (bf16, K x N), all row-major with leading dimensions, on
// the shared tensor-core main loop (gemm_core.cuh). Ragged edges are zero-filled in shared memory
// and masked at the store. The `vec` entry needs K and N multiples of 8 and 16-byte aligned A, B
// (16-byte cp.async chunks); `any` takes any shape.
#include "gemm_core.cuh"

template <bool VEC>
struct RowsLoader {
    const bf16* A;
    const bf16* B;
    int M, N, K, lda, ldb;
    __device__ __forceinline__ void load(bf16* As, bf16* Bs, int m0, int n0, int k0) const {
        using namespace gemm_cfg;
        if (VEC) {
            for (int c = threadIdx.x; c < BM * (BK / 8); c += THREADS) {
                int r = c / (BK / 8), k = (c % (BK / 8)) * 8;
                bool ok = m0 + r < M && k0 + k < K;
                cp_async16(As + r * LDA + k, ok ? A + (long long)(m0 + r) * lda + k0 + k : A, ok);
            }
        } else {
            const bf16 zero = __float2bfloat16(0.f);
            for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
                int r = e / BK, k = e % BK;
                bool ok = m0 + r < M && k0 + k < K;
                As[r * LDA + k] = ok ? A[(long long)(m0 + r) * lda + k0 + k] : zero;
            }
        }
        load_b_rows<VEC>(Bs, B, N, K, ldb, n0, k0);
    }
};

struct StoreF32 {
    float* C;
    int ldc;
    __device__ __forceinline__ void operator()(int r, int c, float v) const { C[(long long)r * ldc + c] = v; }
};

KERNEL gemm_bf16_f32_vec(int M, int N, int K, const bf16* A, int lda, const bf16* B, int ldb, float* C, int ldc) {
    gemm_mainloop(M, N, K, RowsLoader<true>{A, B, M, N, K, lda, ldb}, StoreF32{C, ldc});
}
KERNEL gemm_bf16_f32_any(int M, int N, int K, const bf16* A, int lda, const bf16* B, int ldb, float* C, int ldc) {
    gemm_mainloop(M, N, K, RowsLoader<false>{A, B, M, N, K, lda, ldb}, StoreF32{C, ldc});
}
