// GPTQ's wide group-scaled tensor-core GEMM (gemm.cuh's qk_mma_gemm_wide: x staged once per
// block in shared memory, zero points folded into the codes) for 4- and 8-bit layers, in a
// module of its own. Decoder: gptq.cuh.
#include "gemm.cuh"
#include "gptq.cuh"

// Entries: gptq_gemmw_{4,8}b_{elem}(the group-scaled GEMM's parameters): the wide GEMM
// (qk_mma_gemm_wide), blocks of 64 rows x 4 tiles of 32 outputs, zero points folded into the
// codes (QkGptqGemmG's FOLD).
#define QK_GPTQ_GEMMW_ENTRY(BITS, T, NAME)                                                           \
    extern "C" __global__ void gptq_gemmw_##BITS##b_##NAME(                                          \
        const int* qweight, const int* qzeros, const T* scales, const int* g_idx, const float* x, float* y, \
        int m_dim, int k_dim, int n_dim, int format, int one_group, float* part, unsigned* counters, int kslices) { \
        const QkGptqGemmG<BITS, T, 4, true> d{qweight, qzeros, scales, g_idx, n_dim, format, qk_magic_reg(format),  \
                                        qk_f16_one(format)};                                         \
        qk_mma_gemm_wide(d, x, y, m_dim, n_dim, k_dim, part, counters, kslices);                     \
    }
QK_EACH_ELEM(QK_GPTQ_GEMMW_ENTRY, 4)
QK_EACH_ELEM(QK_GPTQ_GEMMW_ENTRY, 8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
// CPU emulation launchers (cuda-emu).
#define QK_GPTQ_GEMMW_EMU(BITS, T, NAME)                                                             \
    extern "C" void cpu_gptq_gemmw_##BITS##b_##NAME(                                                 \
        const int* qweight, const int* qzeros, const T* scales, const int* g_idx, const float* x, float* y, \
        int m_dim, int k_dim, int n_dim, int format, int one_group, float* part, unsigned* counters, int kslices, \
        unsigned grid, unsigned block) {                                                             \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            gptq_gemmw_##BITS##b_##NAME(qweight, qzeros, scales, g_idx, x, y, m_dim, k_dim, n_dim, format, one_group, \
                                        part, counters, kslices);                                    \
        });                                                                                          \
    }
QK_EACH_ELEM(QK_GPTQ_GEMMW_EMU, 4)
QK_EACH_ELEM(QK_GPTQ_GEMMW_EMU, 8)
#endif
