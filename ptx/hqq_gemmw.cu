// HQQ's wide group-scaled GEMM (gemm.cuh's qk_mma_gemm_wide: x staged once per block in shared
// memory) for 4- and 8-bit weights on axis 1, in a module of its own. Decoder: hqq_gemm.cuh.
#include "hqq_gemm.cuh"

// Entries: hqq_gemmw_{4,8}b_{elem}(the group-scaled GEMM's parameters): the wide GEMM
// (qk_mma_gemm_wide), blocks of 64 rows x 4 tiles of 32 outputs.
#define QK_HQQ_GEMMW_ENTRY(BITS, T, NAME)                                                            \
    extern "C" __global__ void hqq_gemmw_##BITS##b_##NAME(const unsigned char* packed, const T* scales, const T* zeros, \
                                                          const float* x, float* y, int m_dim, int k_dim, int n_dim, \
                                                          int cols, int prows, int axis, float* part, \
                                                          unsigned* counters, int kslices) {         \
        const QkHqqGemmG<BITS, T, 4> d{packed, scales, zeros, k_dim, prows * cols, k_dim / cols, __ffs(cols) - 1, \
                                       qk_f16_one(cols)};                                            \
        qk_mma_gemm_wide(d, x, y, m_dim, n_dim, k_dim, part, counters, kslices);                     \
    }
QK_EACH_ELEM(QK_HQQ_GEMMW_ENTRY, 4)
QK_EACH_ELEM(QK_HQQ_GEMMW_ENTRY, 8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
// CPU emulation launchers (cuda-emu).
#define QK_HQQ_GEMMW_EMU(BITS, T, NAME)                                                              \
    extern "C" void cpu_hqq_gemmw_##BITS##b_##NAME(const unsigned char* packed, const T* scales, const T* zeros, \
                                                   const float* x, float* y, int m_dim, int k_dim, int n_dim, int cols, \
                                                   int prows, int axis, float* part, unsigned* counters, int kslices, \
                                                   unsigned grid, unsigned block) {                  \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                            \
            hqq_gemmw_##BITS##b_##NAME(packed, scales, zeros, x, y, m_dim, k_dim, n_dim, cols, prows, axis, part, \
                                       counters, kslices);                                           \
        });                                                                                           \
    }
QK_EACH_ELEM(QK_HQQ_GEMMW_EMU, 4)
QK_EACH_ELEM(QK_HQQ_GEMMW_EMU, 8)
#endif
