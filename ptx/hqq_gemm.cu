// HQQ's rounded tensor-core GEMM (gemm.cuh) for 4- and 8-bit weights on both axes, in a module
// of its own so that each .ptx stays under 2 MB (the driver JIT-compiles a whole module the first
// time one of its entries loads); the group-scaled family is hqq_gemmg.cu, its wide form
// hqq_gemmw.cu. The packing is hqq.cu's.
#include "gemv.cuh"
#include "gemm.cuh"

// ---- Tensor-core GEMM (gemm.cuh) for 4- and 8-bit HQQ, both axes: W[n, k] is flat weight
// f = n K + k, in plane j = f / words at word t = f - j words. With words % 16 == 0 and cols % 16
// == 0 (checked by the launcher) a lane's four weights (f, f + 1, f + 8, f + 9; f % 16 < 8) share
// the plane and, on axis 1, the code row; axis 0 reads a zero and scale per column.
template <int BITS, typename T>
struct QkHqqGemm {
    static constexpr int P = 8 / BITS;
    const unsigned char* __restrict__ packed;
    const T* __restrict__ scales;
    const T* __restrict__ zeros;
    int k_dim, cols, prows, axis, lg;
    unsigned magic;

    // Output n's first weight: plane j0, word t0 (a plane boundary inside the row moves on to
    // the next plane; boundaries are multiples of 16, so a lane's four weights never straddle).
    struct Col {
        int j0, t0;
    };
    __device__ __forceinline__ Col column(int n) const {
        const long long words = (long long)prows * cols;
        const long long f = (long long)n * k_dim;
        const int j = (int)(f / words);
        return Col{j, (int)(f - j * words)};
    }

    __device__ __forceinline__ void weights(const Col& c, int k, float* w) const {
        const int words = prows * cols;
        int j = c.j0, t = c.t0 + k;
        while (t >= words) {
            t -= words;
            ++j;
        }
        const int shift = BITS * (P - 1 - j);
        const unsigned mask = (1u << BITS) - 1u;
        const int at[4] = {t, t + 1, t + 8, t + 9};
        if (axis == 1) {
            const int row = j * prows + (int)qk_div((unsigned)t, (unsigned)cols, lg);
            const float z = qk_to_f32(zeros[row]), s = qk_to_f32(scales[row]);
#pragma unroll
            for (int i = 0; i < 4; ++i) w[i] = (qk_u2f(((unsigned)packed[at[i]] >> shift) & mask, magic) - z) * s;
        } else {
            const int cc = t % cols;
            const int ci[4] = {cc, cc + 1, cc + 8, cc + 9};
#pragma unroll
            for (int i = 0; i < 4; ++i)
                w[i] = (qk_u2f(((unsigned)packed[at[i]] >> shift) & mask, magic) - qk_to_f32(zeros[ci[i]])) *
                       qk_to_f32(scales[ci[i]]);
        }
    }
};

// Entries: hqq_gemm_{4,8}b_{elem}_m{1,4}(packed, scales, zeros, x, y, M, K, N, cols, prows, axis).
#define QK_HQQ_GEMM_ENTRY(BITS, T, NAME, MT)                                                         \
    extern "C" __global__ void hqq_gemm_##BITS##b_##NAME##_m##MT(                                    \
        const unsigned char* packed, const T* scales, const T* zeros, const float* x, float* y, int m_dim, \
        int k_dim, int n_dim, int cols, int prows, int axis) {                                       \
        const QkHqqGemm<BITS, T> d{packed, scales, zeros, k_dim, cols, prows, axis,                     \
                                   (cols & (cols - 1)) == 0 ? __ffs(cols) - 1 : -1, qk_magic_reg(cols)}; \
        qk_mma_gemm<QkHqqGemm<BITS, T>, MT, 4>(d, x, y, m_dim, n_dim, k_dim);                        \
    }
#define QK_HQQ_GEMM_ALL(BITS)                                                                        \
    QK_HQQ_GEMM_ENTRY(BITS, float, f32, 1) QK_HQQ_GEMM_ENTRY(BITS, float, f32, 4)                    \
    QK_HQQ_GEMM_ENTRY(BITS, __half, f16, 1) QK_HQQ_GEMM_ENTRY(BITS, __half, f16, 4)                  \
    QK_HQQ_GEMM_ENTRY(BITS, __nv_bfloat16, bf16, 1) QK_HQQ_GEMM_ENTRY(BITS, __nv_bfloat16, bf16, 4)
QK_HQQ_GEMM_ALL(4)
QK_HQQ_GEMM_ALL(8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
// CPU emulation launchers (cuda-emu).
#define QK_HQQ_GEMM_EMU(BITS, T, NAME, MT)                                                           \
    extern "C" void cpu_hqq_gemm_##BITS##b_##NAME##_m##MT(                                           \
        const unsigned char* packed, const T* scales, const T* zeros, const float* x, float* y, int m_dim, \
        int k_dim, int n_dim, int cols, int prows, int axis, unsigned grid, unsigned block) {        \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            hqq_gemm_##BITS##b_##NAME##_m##MT(packed, scales, zeros, x, y, m_dim, k_dim, n_dim, cols, prows, axis); \
        });                                                                                          \
    }
#define QK_HQQ_GEMM_EMU_ALL(BITS)                                                                    \
    QK_HQQ_GEMM_EMU(BITS, float, f32, 1) QK_HQQ_GEMM_EMU(BITS, float, f32, 4)                        \
    QK_HQQ_GEMM_EMU(BITS, __half, f16, 1) QK_HQQ_GEMM_EMU(BITS, __half, f16, 4)                      \
    QK_HQQ_GEMM_EMU(BITS, __nv_bfloat16, bf16, 1) QK_HQQ_GEMM_EMU(BITS, __nv_bfloat16, bf16, 4)
QK_HQQ_GEMM_EMU_ALL(4)
QK_HQQ_GEMM_EMU_ALL(8)
#endif
