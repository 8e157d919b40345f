// GPTQ's rounded tensor-core GEMM (gemm.cuh's qk_mma_gemm) for 4- and 8-bit layers, in a module
// of its own so that each .ptx stays under 2 MB (the driver JIT-compiles a whole module the first
// time one of its entries loads); the group-scaled family is gptq_gemmg.cu. Packing helpers:
// gptq.cuh.
#include "gemv.cuh"
#include "gemm.cuh"
#include "gptq.cuh"

// ---- Tensor-core GEMM (gemm.cuh) for 4- and 8-bit layers: a lane's weights of column n are rows
// k, k + 1 (one word) and k + 8, k + 9 (the word 8 rows on). `one_group` (checked on the host:
// every aligned 16-row block of g_idx holds one group) reads one group for the four; otherwise
// each row reads its own.
template <int BITS, typename T>
struct QkGptqGemm {
    static constexpr int ROWS = 32 / BITS;
    const int* __restrict__ qweight;
    const int* __restrict__ qzeros;
    const T* __restrict__ scales;
    const int* __restrict__ g_idx;
    int n_dim, format, one_group;
    unsigned magic;

    // Output n only: the column's parameter pointers are cheaper to recompute than to hold for
    // four subtiles (register pressure).
    struct Col {
        int n;
    };
    __device__ __forceinline__ Col column(int n) const { return Col{n}; }

    __device__ __forceinline__ void weights(const Col& c, int k, float* w) const {
        const int n = c.n;
        const unsigned wa = (unsigned)qweight[(long long)(k / ROWS) * n_dim + n];
        const unsigned wb = (unsigned)qweight[(long long)((k + 8) / ROWS) * n_dim + n];
        const int sa = BITS * (k % ROWS), sb = BITS * ((k + 8) % ROWS);
        const unsigned mask = (1u << BITS) - 1u;
        const float q[4] = {qk_u2f((wa >> sa) & mask, magic), qk_u2f((wa >> (sa + BITS)) & mask, magic),
                            qk_u2f((wb >> sb) & mask, magic), qk_u2f((wb >> (sb + BITS)) & mask, magic)};
        const QkGptqCols<BITS, 1, T> cols(qzeros, scales, n_dim, n);
        const int rows[4] = {k, k + 1, k + 8, k + 9};
        float zm = 0.0f, s = 0.0f;
        if (one_group) cols.load(g_idx[k], format, magic, &zm, &s);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if (!one_group) cols.load(g_idx[rows[i]], format, magic, &zm, &s);
            w[i] = (q[i] - (zm - 8388608.0f)) * s;
        }
    }
};

// Entries: gptq_gemm_{4,8}b_{elem}_m{1,4}(qweight, qzeros, scales, g_idx, x, y, M, K, N, format,
// one_group): tiles of 16 (m1) or 64 (m4) rows by 32 outputs a warp.
#define QK_GPTQ_GEMM_ENTRY(BITS, T, NAME, MT)                                                        \
    extern "C" __global__ void gptq_gemm_##BITS##b_##NAME##_m##MT(                                   \
        const int* qweight, const int* qzeros, const T* scales, const int* g_idx, const float* x, float* y, \
        int m_dim, int k_dim, int n_dim, int format, int one_group) {                                \
        const QkGptqGemm<BITS, T> d{qweight, qzeros, scales, g_idx, n_dim, format, one_group, qk_magic_reg(format)}; \
        qk_mma_gemm<QkGptqGemm<BITS, T>, MT, 4>(d, x, y, m_dim, n_dim, k_dim);                       \
    }
#define QK_GPTQ_GEMM_ALL(BITS)                                                                       \
    QK_GPTQ_GEMM_ENTRY(BITS, float, f32, 1) QK_GPTQ_GEMM_ENTRY(BITS, float, f32, 4)                  \
    QK_GPTQ_GEMM_ENTRY(BITS, __half, f16, 1) QK_GPTQ_GEMM_ENTRY(BITS, __half, f16, 4)                \
    QK_GPTQ_GEMM_ENTRY(BITS, __nv_bfloat16, bf16, 1) QK_GPTQ_GEMM_ENTRY(BITS, __nv_bfloat16, bf16, 4)
QK_GPTQ_GEMM_ALL(4)
QK_GPTQ_GEMM_ALL(8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
// CPU emulation launchers (cuda-emu).
#define QK_GPTQ_GEMM_EMU(BITS, T, NAME, MT)                                                          \
    extern "C" void cpu_gptq_gemm_##BITS##b_##NAME##_m##MT(                                          \
        const int* qweight, const int* qzeros, const T* scales, const int* g_idx, const float* x, float* y, \
        int m_dim, int k_dim, int n_dim, int format, int one_group, unsigned grid, unsigned block) { \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            gptq_gemm_##BITS##b_##NAME##_m##MT(qweight, qzeros, scales, g_idx, x, y, m_dim, k_dim, n_dim, format, \
                                               one_group);                                           \
        });                                                                                          \
    }
#define QK_GPTQ_GEMM_EMU_ALL(BITS)                                                                   \
    QK_GPTQ_GEMM_EMU(BITS, float, f32, 1) QK_GPTQ_GEMM_EMU(BITS, float, f32, 4)                      \
    QK_GPTQ_GEMM_EMU(BITS, __half, f16, 1) QK_GPTQ_GEMM_EMU(BITS, __half, f16, 4)                    \
    QK_GPTQ_GEMM_EMU(BITS, __nv_bfloat16, bf16, 1) QK_GPTQ_GEMM_EMU(BITS, __nv_bfloat16, bf16, 4)
QK_GPTQ_GEMM_EMU_ALL(4)
QK_GPTQ_GEMM_EMU_ALL(8)
#endif
