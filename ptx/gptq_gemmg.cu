// GPTQ's group-scaled tensor-core GEMM (gemm.cuh's qk_mma_gemm_grouped) for 4- and 8-bit layers,
// in a module of its own (each .ptx under 2 MB); the rounded family is gptq_gemm.cu. Packing
// helpers: gptq.cuh.
#include "gemv.cuh"
#include "gemm.cuh"
#include "gptq.cuh"

// ---- Group-scaled GEMM (gemm.cuh's qk_mma_gemm_grouped) for 4- and 8-bit layers whose every
// aligned 32 rows (sorted, for act-order) share a group: a lane's rows k .. k + 7 of column n are
// one word at 4 bits (fields p, p + 4 as a pair) or two at 8 (bytes 0, 2 and 1, 3 of each).
template <int BITS, typename T, int NT_>
struct QkGptqGemmG {
    static constexpr int NT = NT_;
    static constexpr bool ZERO = true;
    static constexpr float UNIT = 1.0f;
    const int* __restrict__ qweight;
    const int* __restrict__ qzeros;
    const T* __restrict__ scales;
    const int* __restrict__ g_idx;
    int n_dim, format;
    unsigned magic, one;

    struct Col {
        const int* p;  // qweight + n
    };
    static constexpr int out(int n0, int j, int i) { return n0 + 8 * j + i; }
    static constexpr int slot(int s, int r, int h) { return BITS == 4 ? 2 * s + r + 4 * h : 4 * s + r + 2 * h; }
    __device__ __forceinline__ Col column(int n) const { return Col{qweight + n}; }
    static constexpr int RAW = NT * BITS / 4;  // words a lane loads per chunk: 1 or 2 an output
    __device__ __forceinline__ void fetch(const Col* col, int k, unsigned* raw) const {
        // The word offset, common to every subtile, in 32 bits (qweight holds < 2^31 words): one
        // wide multiply-add per subtile makes the address.
        const unsigned at = (unsigned)k / (32 / BITS) * (unsigned)n_dim;
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int w = 0; w < BITS / 4; ++w) raw[j * (BITS / 4) + w] = (unsigned)col[j].p[at + w * (unsigned)n_dim];
    }
    __device__ __forceinline__ void decode(const Col*, const unsigned* raw, unsigned (*b)[2][2]) const {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            if (BITS == 4) {
                unsigned o[4];
                qk_u4x8_f16(raw[j], one, o);
                b[j][0][0] = o[0];
                b[j][0][1] = o[1];
                b[j][1][0] = o[2];
                b[j][1][1] = o[3];
            } else {
                qk_u8x4_f16(raw[2 * j], one, b[j][0]);
                qk_u8x4_f16(raw[2 * j + 1], one, b[j][1]);
            }
        }
    }
    __device__ __forceinline__ int group(int k0) const { return g_idx[k0]; }
    // The lane's parameter columns n0 + 8j + 2t, + 1: subtile j's are 8 columns (BITS / 4 qzeros
    // words, 8 scales) after subtile 0's, at the same bit offset, so one cursor serves all.
    using Par = QkGptqCols<BITS, 2, T>;
    __device__ __forceinline__ Par par(int n0, int t) const { return Par(qzeros, scales, n_dim, n0 + 2 * t); }
    __device__ __forceinline__ void params(const Par& p, int grp, float (*s)[2], float (*z)[2]) const {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            float zm[2];
            p.load(grp, format, magic, zm, s[j], j * BITS / 4, 8 * j);
            z[j][0] = zm[0] - 8388608.0f;
            z[j][1] = zm[1] - 8388608.0f;
        }
    }
};

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
