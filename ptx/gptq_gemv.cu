// GPTQ's fused GEMV (2/3/4/8 bits, f32/f16/bf16 scales, batch 1 or up to 8): its decoder on
// gemv.cuh's column skeleton. A file of its own so that a module load JIT-compiles the GEMV only
// where it is used (and each committed PTX stays small).
#include "gemv.cuh"
#include "gptq.cuh"

// ---- Fused GEMV (gemv.cuh's column skeleton): y[b][n] = sum_k W[k, n] x[b][k]. A thread takes 4
// adjacent columns (one 16-byte vector of qweight words per word row) and reads its rows' codes a
// word block at a time (ROWS rows: 8 at 4 bits, 16 at 2, 4 at 8, 32 at 3 from three words).
// Groups come from the validated g_idx per row; an act-order layer sorted by group
// (gptq::sort) changes group only at the group boundaries.
template <int BITS, typename T>
struct QkGptqGemv {
    static constexpr int VC = 4, ROWS = QkGptq<BITS>::ROWS, WORDS = QkGptq<BITS>::WORDS;
    const int* __restrict__ qweight;
    const int* __restrict__ qzeros;
    const T* __restrict__ scales;
    const int* __restrict__ g_idx;
    int n_dim, format;
    bool sorted;
    unsigned magic, one;  // qk_magic_reg, qk_f16_one

    // The block's WORDS word rows of the thread's VC columns.
    struct Raw {
        QkVec<int, VC> row[WORDS];
    };
    __device__ __forceinline__ Raw fetch(int k, int n) const {
        const int* wp = qweight + ((unsigned long long)((unsigned)k / ROWS * WORDS) * (unsigned)n_dim + (unsigned)n);
        Raw raw;
#pragma unroll
        for (int i = 0; i < WORDS; ++i) raw.row[i] = *reinterpret_cast<const QkVec<int, VC>*>(wp + (long long)i * n_dim);
        return raw;
    }
    __device__ __forceinline__ void decode(const Raw& raw, float (*q)[VC]) const {
        unsigned w[VC][WORDS + 1];
#pragma unroll
        for (int i = 0; i < WORDS; ++i)
#pragma unroll
            for (int c = 0; c < VC; ++c) w[c][i] = (unsigned)raw.row[i].v[c];
        if constexpr (BITS == 4 || BITS == 8) {
            // Pairs of codes as exact f16 integers (a logic op and an exact HSUB2/HFMA2 per pair),
            // widened to f32: cheaper than a field extraction and a magic subtraction per code.
#pragma unroll
            for (int c = 0; c < VC; ++c) {
                unsigned h[4];
                if constexpr (BITS == 4) {
                    qk_u4x8_f16(w[c][0], one, h);  // h[p] = (row p, row p + 4)
#pragma unroll
                    for (int p = 0; p < 4; ++p) {
                        q[p][c] = qk_f16_lo(h[p]);
                        q[p + 4][c] = qk_f16_hi(h[p]);
                    }
                } else {
                    qk_u8x4_f16(w[c][0], one, h);  // h[0] = (row 0, row 2), h[1] = (row 1, row 3)
#pragma unroll
                    for (int p = 0; p < 2; ++p) {
                        q[p][c] = qk_f16_lo(h[p]);
                        q[p + 2][c] = qk_f16_hi(h[p]);
                    }
                }
            }
        } else {
#pragma unroll
            for (int c = 0; c < VC; ++c) w[c][WORDS] = 0u;
#pragma unroll
            for (int r = 0; r < ROWS; ++r)
#pragma unroll
                for (int c = 0; c < VC; ++c) q[r][c] = qk_u2f(qk_field<BITS>(w[c], r * BITS), magic);
        }
    }
    __device__ __forceinline__ void row(int k, int n, float* q) const {
        const int* wp = qweight + (long long)(k / ROWS * WORDS) * n_dim + n;
        const int first = (k % ROWS) * BITS;  // bit offset in the block's word stream
        unsigned w[VC][2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int wi = min((first >> 5) + i, WORDS - 1);
            const QkVec<int, VC> r = *reinterpret_cast<const QkVec<int, VC>*>(wp + (long long)wi * n_dim);
#pragma unroll
            for (int c = 0; c < VC; ++c) w[c][i] = (unsigned)r.v[c];
        }
#pragma unroll
        for (int c = 0; c < VC; ++c) q[c] = qk_u2f(qk_field<BITS>(w[c], first & 31), magic);
    }
    __device__ __forceinline__ int group(int k) const { return g_idx[k]; }
    __device__ __forceinline__ void params(int g, int n, float* z, float* s) const {
        const QkGptqCols<BITS, VC, T> cols(qzeros, scales, n_dim, n);
        float zm[VC];
        cols.load(g, format, magic, zm, s);
#pragma unroll
        for (int c = 0; c < VC; ++c) z[c] = zm[c] - 8388608.0f;
    }
};

template <int BITS, typename T, int MAXB>
__device__ __forceinline__ void gptq_gemv(const int* qweight, const int* qzeros, const T* scales, const int* g_idx,
                                          const float* x, float* part, float* y, unsigned* counters, int k_dim,
                                          int n_dim, int slice_rows, int format, int nb) {
    const QkGptqGemv<BITS, T> d{qweight, qzeros, scales, g_idx, n_dim, format & 1, (format & 2) != 0,
                                qk_magic_reg(format), qk_f16_one(format)};
    qk_col_gemv_fused<QkGptqGemv<BITS, T>, MAXB>(d, x, part, y, counters, k_dim, n_dim, slice_rows, nb);
}

// Entry points: gptq_gemv_{bits}b_{elem}_b{1,8}(qweight, qzeros, scales, g_idx, x, part, y,
// counters, K, N, slice_rows, format, nb); format bit 0: v2 zeros, bit 1: g_idx never decreases
// (sorted). Blocks of 32 x BY over (column vectors, slices), exactly covering them; counters:
// one zeroed u32 per block column, left zeroed.
#define QK_GPTQ_GEMV_ENTRY(BITS, T, NAME, MAXB)                                                      \
    extern "C" __global__ void gptq_gemv_##BITS##b_##NAME##_b##MAXB(                                 \
        const int* qweight, const int* qzeros, const T* scales, const int* g_idx, const float* x,    \
        float* part, float* y, unsigned* counters, int k_dim, int n_dim, int slice_rows, int format, int nb) { \
        gptq_gemv<BITS, T, MAXB>(qweight, qzeros, scales, g_idx, x, part, y, counters, k_dim, n_dim, slice_rows, \
                                 format, nb);                                                        \
    }
#define QK_GPTQ_GEMV_ALL(BITS)                                                                       \
    QK_GPTQ_GEMV_ENTRY(BITS, float, f32, 1) QK_GPTQ_GEMV_ENTRY(BITS, float, f32, 8)                  \
    QK_GPTQ_GEMV_ENTRY(BITS, __half, f16, 1) QK_GPTQ_GEMV_ENTRY(BITS, __half, f16, 8)                \
    QK_GPTQ_GEMV_ENTRY(BITS, __nv_bfloat16, bf16, 1) QK_GPTQ_GEMV_ENTRY(BITS, __nv_bfloat16, bf16, 8)
QK_GPTQ_GEMV_ALL(2)
QK_GPTQ_GEMV_ALL(3)
QK_GPTQ_GEMV_ALL(4)
QK_GPTQ_GEMV_ALL(8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define QK_GPTQ_GEMV_EMU(BITS, T, NAME, MAXB)                                                        \
    extern "C" void cpu_gptq_gemv_##BITS##b_##NAME##_b##MAXB(                                        \
        const int* qweight, const int* qzeros, const T* scales, const int* g_idx, const float* x,    \
        float* part, float* y, unsigned* counters, int k_dim, int n_dim, int slice_rows, int format, int nb, \
        unsigned grid, unsigned block) {                                                             \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            gptq_gemv_##BITS##b_##NAME##_b##MAXB(qweight, qzeros, scales, g_idx, x, part, y, counters, k_dim, \
                                                 n_dim, slice_rows, format, nb);                     \
        });                                                                                          \
    }
#define QK_GPTQ_GEMV_EMU_ALL(BITS)                                                                   \
    QK_GPTQ_GEMV_EMU(BITS, float, f32, 1) QK_GPTQ_GEMV_EMU(BITS, float, f32, 8)                      \
    QK_GPTQ_GEMV_EMU(BITS, __half, f16, 1) QK_GPTQ_GEMV_EMU(BITS, __half, f16, 8)                    \
    QK_GPTQ_GEMV_EMU(BITS, __nv_bfloat16, bf16, 1) QK_GPTQ_GEMV_EMU(BITS, __nv_bfloat16, bf16, 8)
QK_GPTQ_GEMV_EMU_ALL(2)
QK_GPTQ_GEMV_EMU_ALL(3)
QK_GPTQ_GEMV_EMU_ALL(4)
QK_GPTQ_GEMV_EMU_ALL(8)
#endif
