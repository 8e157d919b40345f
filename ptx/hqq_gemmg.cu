// HQQ's group-scaled tensor-core GEMM (gemm.cuh's qk_mma_gemm_grouped) for 4- and 8-bit layers
// on axis 1, in a module of its own (each .ptx under 2 MB); the rounded family is hqq_gemm.cu, the
// wide one hqq_gemmw.cu. The decoder: hqq_gemm.cuh.
#include "gemv.cuh"
#include "gemm.cuh"
#include "hqq_gemm.cuh"

// Entries: hqq_gemmg_{4,8}b_{elem}_m{1,2}(the GEMM's parameters; axis 1 only): tiles of 16 x 64
// (m1) or 32 x 32 (m2) rows x outputs a warp (qk_gemmg_nt).
#define QK_HQQ_GEMMG_ENTRY(BITS, T, NAME, MT)                                                        \
    extern "C" __global__ void hqq_gemmg_##BITS##b_##NAME##_m##MT(                                   \
        const unsigned char* packed, const T* scales, const T* zeros, const float* x, float* y, int m_dim, \
        int k_dim, int n_dim, int cols, int prows, int axis, float* part, unsigned* counters, int kslices) { \
        const QkHqqGemmG<BITS, T, qk_gemmg_nt(MT)> d{packed, scales, zeros, k_dim, prows * cols, k_dim / cols, __ffs(cols) - 1, \
                                    qk_f16_one(cols)};                                               \
        qk_mma_gemm_grouped<QkHqqGemmG<BITS, T, qk_gemmg_nt(MT)>, MT>(d, x, y, m_dim, n_dim, k_dim, part, counters, kslices);                  \
    }
#define QK_HQQ_GEMMG_ALL(BITS)                                                                       \
    QK_HQQ_GEMMG_ENTRY(BITS, float, f32, 1) QK_HQQ_GEMMG_ENTRY(BITS, float, f32, 2)                  \
    QK_HQQ_GEMMG_ENTRY(BITS, __half, f16, 1) QK_HQQ_GEMMG_ENTRY(BITS, __half, f16, 2)                \
    QK_HQQ_GEMMG_ENTRY(BITS, __nv_bfloat16, bf16, 1) QK_HQQ_GEMMG_ENTRY(BITS, __nv_bfloat16, bf16, 2)
QK_HQQ_GEMMG_ALL(4)
QK_HQQ_GEMMG_ALL(8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
// CPU emulation launchers (cuda-emu).
#define QK_HQQ_GEMMG_EMU(BITS, T, NAME, MT)                                                          \
    extern "C" void cpu_hqq_gemmg_##BITS##b_##NAME##_m##MT(                                          \
        const unsigned char* packed, const T* scales, const T* zeros, const float* x, float* y, int m_dim, \
        int k_dim, int n_dim, int cols, int prows, int axis, float* part, unsigned* counters, int kslices, \
        unsigned grid, unsigned block) {                                                             \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            hqq_gemmg_##BITS##b_##NAME##_m##MT(packed, scales, zeros, x, y, m_dim, k_dim, n_dim, cols, prows, axis, \
                                               part, counters, kslices);                             \
        });                                                                                          \
    }
#define QK_HQQ_GEMMG_EMU_ALL(BITS)                                                                   \
    QK_HQQ_GEMMG_EMU(BITS, float, f32, 1) QK_HQQ_GEMMG_EMU(BITS, float, f32, 2)                      \
    QK_HQQ_GEMMG_EMU(BITS, __half, f16, 1) QK_HQQ_GEMMG_EMU(BITS, __half, f16, 2)                    \
    QK_HQQ_GEMMG_EMU(BITS, __nv_bfloat16, bf16, 1) QK_HQQ_GEMMG_EMU(BITS, __nv_bfloat16, bf16, 2)
QK_HQQ_GEMMG_EMU_ALL(4)
QK_HQQ_GEMMG_EMU_ALL(8)
#endif
