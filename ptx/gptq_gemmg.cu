// GPTQ's group-scaled tensor-core GEMM (gemm.cuh's qk_mma_gemm_grouped) for 4- and 8-bit layers,
// in a module of its own (each .ptx under 2 MB); the rounded family is gptq_gemm.cu, the wide one
// gptq_gemmw.cu. Packing helpers and the decoder: gptq.cuh.
#include "gemv.cuh"
#include "gemm.cuh"
#include "gptq.cuh"

// Entries: gptq_gemmg_{4,8}b_{elem}_m{1,2}(the GEMM's parameters; one_group unused): tiles of
// 16 x 64 (m1) or 32 x 32 (m2) rows x outputs a warp (qk_gemmg_nt).
#define QK_GPTQ_GEMMG_ENTRY(BITS, T, NAME, MT)                                                       \
    extern "C" __global__ void gptq_gemmg_##BITS##b_##NAME##_m##MT(                                  \
        const int* qweight, const int* qzeros, const T* scales, const int* g_idx, const float* x, float* y, \
        int m_dim, int k_dim, int n_dim, int format, int one_group, float* part, unsigned* counters, int kslices) { \
        const QkGptqGemmG<BITS, T, qk_gemmg_nt(MT)> d{qweight, qzeros, scales, g_idx, n_dim, format, qk_magic_reg(format),   \
                                     qk_f16_one(format)}; \
        qk_mma_gemm_grouped<QkGptqGemmG<BITS, T, qk_gemmg_nt(MT)>, MT>(d, x, y, m_dim, n_dim, k_dim, part, counters, kslices);                 \
    }
#define QK_GPTQ_GEMMG_ALL(BITS)                                                                      \
    QK_GPTQ_GEMMG_ENTRY(BITS, float, f32, 1) QK_GPTQ_GEMMG_ENTRY(BITS, float, f32, 2)                \
    QK_GPTQ_GEMMG_ENTRY(BITS, __half, f16, 1) QK_GPTQ_GEMMG_ENTRY(BITS, __half, f16, 2)              \
    QK_GPTQ_GEMMG_ENTRY(BITS, __nv_bfloat16, bf16, 1) QK_GPTQ_GEMMG_ENTRY(BITS, __nv_bfloat16, bf16, 2)
QK_GPTQ_GEMMG_ALL(4)
QK_GPTQ_GEMMG_ALL(8)


#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
// CPU emulation launchers (cuda-emu).
#define QK_GPTQ_GEMMG_EMU(BITS, T, NAME, MT)                                                         \
    extern "C" void cpu_gptq_gemmg_##BITS##b_##NAME##_m##MT(                                         \
        const int* qweight, const int* qzeros, const T* scales, const int* g_idx, const float* x, float* y, \
        int m_dim, int k_dim, int n_dim, int format, int one_group, float* part, unsigned* counters, int kslices, \
        unsigned grid, unsigned block) {                                                             \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            gptq_gemmg_##BITS##b_##NAME##_m##MT(qweight, qzeros, scales, g_idx, x, y, m_dim, k_dim, n_dim, format, \
                                                one_group, part, counters, kslices);                 \
        });                                                                                          \
    }
#define QK_GPTQ_GEMMG_EMU_ALL(BITS)                                                                  \
    QK_GPTQ_GEMMG_EMU(BITS, float, f32, 1) QK_GPTQ_GEMMG_EMU(BITS, float, f32, 2)                    \
    QK_GPTQ_GEMMG_EMU(BITS, __half, f16, 1) QK_GPTQ_GEMMG_EMU(BITS, __half, f16, 2)                  \
    QK_GPTQ_GEMMG_EMU(BITS, __nv_bfloat16, bf16, 1) QK_GPTQ_GEMMG_EMU(BITS, __nv_bfloat16, bf16, 2)
QK_GPTQ_GEMMG_EMU_ALL(4)
QK_GPTQ_GEMMG_EMU_ALL(8)
#endif
