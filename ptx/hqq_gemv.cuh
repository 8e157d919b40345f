// HQQ's fused GEMV: its decoder on gemv.cuh's row skeleton, instantiated by hqq_gemv.cu (batch
// 1) and hqq_gemv8.cu (up to 8 rows), one module each so that a load JIT-compiles only the
// bound it uses (and each committed PTX stays small).
#pragma once
#include "gemv.cuh"

// ---- Fused GEMV (gemv.cuh's row skeleton): y[b] = W x[b], W the [out, in] weight whose flat
// elements the code matrix holds (HQQ's flat order). A packed word's P codes are the same word
// position t in each plane: flat weights j * words + t (planar). A chunk is CH words (BYTES = 8
// or 16 bytes: two or four 32-bit registers); its codes become exact floats (qk_u2f, or exact f16
// pairs widened at 4 and 8 bits: plane()). Axis 1 (a zero/scale per code row of
// `cols` words, one per chunk: the launcher requires cols % CH == 0) factors the group out of
// the chunk's sum; axis 0
// (a zero/scale per column, so per word) applies them per weight. Padding planes past the code
// rows (3-bit) are skipped: the skeleton never writes their sums.
template <int BITS, typename W, typename T, int BYTES>
struct QkHqqGemv {
    static constexpr bool PLANAR = true;
    static constexpr int P = BITS == 3 ? 10 : 8 / BITS;
    static constexpr int CH = BYTES / (int)sizeof(W), NR = BYTES / 4;
    const W* __restrict__ packed;
    const T* __restrict__ scales;
    const T* __restrict__ zeros;
    int rows, cols, prows, axis, lg;
    bool same_x;  // words % in == 0: plane j's flat offset j * words is whole rows
    unsigned magic, one;  // qk_magic_reg, qk_f16_one

    // Plane j of word i of the chunk in registers r (first plane in the highest bits).
    __device__ __forceinline__ float code(const unsigned* r, int i, int j) const {
        const int shift = (sizeof(W) == 1 ? 8 * (i & 3) : 0) + BITS * (P - 1 - j);
        return qk_u2f((r[sizeof(W) == 1 ? i >> 2 : i] >> shift) & ((1u << BITS) - 1u), magic);
    }

    // Plane j of the chunk's CH words as exact floats. 4 and 8 bits (a byte a word): each register's
    // four codes become two exact f16 pairs (qk_u8x4_f16), widened; other widths, code by code.
    __device__ __forceinline__ void plane(const unsigned* r, int j, float* q) const {
        if constexpr (sizeof(W) == 1 && (BITS == 4 || BITS == 8)) {
#pragma unroll
            for (int m = 0; m < NR; ++m) {
                unsigned h[2];
                qk_u8x4_f16(BITS == 8 ? r[m] : (r[m] >> (BITS * (P - 1 - j))) & 0x0f0f0f0fu, one, h);
                q[4 * m] = qk_f16_lo(h[0]);      // byte 0
                q[4 * m + 1] = qk_f16_lo(h[1]);  // byte 1
                q[4 * m + 2] = qk_f16_hi(h[0]);  // byte 2
                q[4 * m + 3] = qk_f16_hi(h[1]);  // byte 3
            }
        } else {
#pragma unroll
            for (int i = 0; i < CH; ++i) q[i] = code(r, i, j);
        }
    }

    // Chunks in flight a lane at batch 1 (gemv.cuh's row skeleton): 2 at 4 and 8 bits, bound by
    // the weight's bytes; the 1-, 2- and 3-bit GEMVs are bound by their decode.
    static constexpr int AHEAD = BITS >= 4 ? 2 : 0;

    // A chunk's words and, on axis 1, its code row's zero points and scales per plane (3-bit
    // padding planes: 0), loaded ahead of its dot with the words.
    struct Raw {
        QkVec<unsigned, NR> v;
        float z[P], s[P];
    };
    __device__ __forceinline__ Raw fetch(int t0, int c) const {
        const int t = t0 + c;
        Raw raw{};
        raw.v = *reinterpret_cast<const QkVec<unsigned, NR>*>(packed + t);
        if (axis == 1) {
            const int r0 = (int)qk_div((unsigned)t, (unsigned)cols, lg);
#pragma unroll
            for (int j = 0; j < P; ++j) {
                const int row = j * prows + r0;
                const bool in = BITS != 3 || row < rows;  // 3-bit padding planes: never written
                raw.z[j] = in ? qk_to_f32(zeros[row]) : 0.0f;
                raw.s[j] = in ? qk_to_f32(scales[row]) : 0.0f;
            }
        }
        return raw;
    }

    template <int MAXB>
    __device__ __forceinline__ void dot(const Raw& raw, int t0, int c, const int* xc, const float* __restrict__ x,
                                        int in_dim, int nb, float (*acc)[MAXB]) const {
        const int t = t0 + c;
        unsigned r[NR];
#pragma unroll
        for (int i = 0; i < NR; ++i) r[i] = raw.v.v[i];
        // cols % CH == 0 (the launcher's rule, or the 16-byte choice below): the chunk lies in
        // one packed row.
        if (axis == 1 && same_x) {
            // Every plane meets the same inputs (the planes are whole rows): x and its sum are
            // read once for all of them.
#pragma unroll
            for (int b = 0; b < MAXB; ++b) {
                if (b >= nb) break;
                float xv[CH];
                qk_load_xs<CH>(x + (long long)b * in_dim + xc[0], xv);
                float sx = 0.0f;
#pragma unroll
                for (int i = 0; i < CH; ++i) sx = sx + xv[i];
#pragma unroll
                for (int j = 0; j < P; ++j) {
                    float q[CH], d = 0.0f;
                    plane(r, j, q);
#pragma unroll
                    for (int i = 0; i < CH; ++i) d = __fmaf_rn(q[i], xv[i], d);
                    acc[j][b] = acc[j][b] + raw.s[j] * (d - raw.z[j] * sx);
                }
            }
        } else if (axis == 1) {
            const int r0 = (int)qk_div((unsigned)t, (unsigned)cols, lg);
#pragma unroll
            for (int j = 0; j < P; ++j) {
                if (j * prows + r0 >= rows) break;  // 3-bit padding
                float q[CH];
                plane(r, j, q);
                qk_dot_group<CH, MAXB>(q, x + xc[j], in_dim, nb, raw.z[j], raw.s[j], acc[j]);
            }
        } else {
            const int p = t / cols, c0 = t - p * cols;
            float z[CH], s[CH];
#pragma unroll
            for (int i = 0; i < CH; ++i) {
                z[i] = qk_to_f32(zeros[c0 + i]);
                s[i] = qk_to_f32(scales[c0 + i]);
            }
#pragma unroll
            for (int j = 0; j < P; ++j) {
                if (j * prows + p >= rows) break;  // 3-bit padding
                float w[CH];
                plane(r, j, w);
#pragma unroll
                for (int i = 0; i < CH; ++i) w[i] = (w[i] - z[i]) * s[i];
                qk_dot_plain<CH, MAXB>(w, x + xc[j], in_dim, nb, acc[j]);
            }
        }
    }
};

template <int BITS, typename W, typename T, int MAXB, int BYTES>
__device__ __forceinline__ void hqq_gemv_chunks(const W* packed, const T* scales, const T* zeros, const float* x,
                                                float* part, int rows, int cols, int prows, int axis, int in_dim,
                                                int seg, int team, int nb) {
    using D = QkHqqGemv<BITS, W, T, BYTES>;
    const D d{packed,
              scales,
              zeros,
              rows,
              cols,
              prows,
              axis,
              (cols & (cols - 1)) == 0 ? __ffs(cols) - 1 : -1,
              (long long)prows * cols % in_dim == 0,
              qk_magic_reg(rows),
              qk_f16_one(rows)};
    qk_row_gemv<D, MAXB>(d, x, part, prows * cols, (long long)rows * cols, in_dim, seg, team, nb);
}

// 16-byte chunks at batch 1 where the packed columns and the segment allow
// (qk_row_chunk_bytes).
template <int BITS, typename W, typename T, int MAXB>
__device__ __forceinline__ void hqq_gemv(const W* packed, const T* scales, const T* zeros, const float* x,
                                         float* part, int rows, int cols, int prows, int axis, int in_dim, int seg,
                                         int team, int nb) {
    constexpr int WIDE = 16 / (int)sizeof(W);
    qk_row_chunk_bytes<MAXB>(cols % WIDE == 0 && seg % WIDE == 0, [&](auto bytes) {
        hqq_gemv_chunks<BITS, W, T, MAXB, decltype(bytes)::value>(packed, scales, zeros, x, part, rows, cols, prows,
                                                                  axis, in_dim, seg, team, nb);
    });
}

// Entry points: hqq_gemv_{bits}b_{elem}_b{MAXB}(packed, scales, zeros, x, part, rows, cols,
// prows, axis, in, seg, team, nb): batch nb <= MAXB; QK_HQQ_GEMV_FILE(MAXB) instantiates every
// width and element type for one bound, with its CPU-emulation launchers.
#define QK_HQQ_GEMV_ENTRY(BITS, W, T, NAME, MAXB)                                                    \
    extern "C" __global__ void hqq_gemv_##BITS##b_##NAME##_b##MAXB(                                  \
        const W* packed, const T* scales, const T* zeros, const float* x, float* part, int rows,     \
        int cols, int prows, int axis, int in_dim, int seg, int team, int nb) {                      \
        hqq_gemv<BITS, W, T, MAXB>(packed, scales, zeros, x, part, rows, cols, prows, axis, in_dim, seg, team, nb); \
    }
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define QK_HQQ_GEMV_EMU(BITS, W, T, NAME, MAXB)
#else
#define QK_HQQ_GEMV_EMU(BITS, W, T, NAME, MAXB)                                                      \
    extern "C" void cpu_hqq_gemv_##BITS##b_##NAME##_b##MAXB(                                         \
        const W* packed, const T* scales, const T* zeros, const float* x, float* part, int rows,     \
        int cols, int prows, int axis, int in_dim, int seg, int team, int nb, unsigned grid, unsigned block) { \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            hqq_gemv_##BITS##b_##NAME##_b##MAXB(packed, scales, zeros, x, part, rows, cols, prows, axis, in_dim, \
                                                seg, team, nb);                                      \
        });                                                                                          \
    }
#endif
#define QK_HQQ_GEMV_BOTH(BITS, W, T, NAME, MAXB) QK_HQQ_GEMV_ENTRY(BITS, W, T, NAME, MAXB) QK_HQQ_GEMV_EMU(BITS, W, T, NAME, MAXB)
#define QK_HQQ_GEMV_WIDTH(BITS, W, MAXB)                                                             \
    QK_HQQ_GEMV_BOTH(BITS, W, float, f32, MAXB)                                                      \
    QK_HQQ_GEMV_BOTH(BITS, W, __half, f16, MAXB) QK_HQQ_GEMV_BOTH(BITS, W, __nv_bfloat16, bf16, MAXB)
#define QK_HQQ_GEMV_FILE(MAXB)                                                                       \
    QK_HQQ_GEMV_WIDTH(8, unsigned char, MAXB)                                                        \
    QK_HQQ_GEMV_WIDTH(4, unsigned char, MAXB)                                                        \
    QK_HQQ_GEMV_WIDTH(3, int, MAXB) QK_HQQ_GEMV_WIDTH(2, unsigned char, MAXB) QK_HQQ_GEMV_WIDTH(1, unsigned char, MAXB)
