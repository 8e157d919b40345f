// Fused GEMVs for the simple methods (src/intx), on gemv.cuh's row skeleton; W is [rows = out,
// cols = in] row-major, segments are whole rows (int8) or whole rows' bytes (int4).
//
// int8: i8 codes, one f32 scale per row (or one for the tensor: per_row = 0). A word of 4 codes
// XOR 0x80808080 holds q + 128 per byte; OR-ed into 2^23's mantissa and less 2^23 + 128 that is
// q exactly, with no integer-to-float conversion.
// int4: two codes a byte (the first in the low nibble), an f32 scale and a u8 zero point per
// `group` consecutive weights of a row; a chunk of 16 codes (32 in 16-byte chunks) shares them
// when the group is a multiple of it and factors them out of its sum, else each code takes its
// own.
#include "gemv.cuh"

// A chunk is BYTES bytes (8, or 16 at batch 1 where the segments allow: half the per-chunk
// work per weight, as HQQ's).
template <int BYTES>
struct QkInt8Gemv {
    static constexpr bool PLANAR = false;
    static constexpr int P = 1, CH = BYTES, NR = BYTES / 4;
    const unsigned char* __restrict__ codes;
    const float* __restrict__ scales;
    int cols, per_row;
    unsigned one;  // qk_f16_one

    // Chunks in flight a lane at batch 1 (gemv.cuh's row skeleton): the codes (the scale is the
    // segment's).
    static constexpr int AHEAD = 2;
    using Raw = QkVec<unsigned, NR>;
    __device__ __forceinline__ Raw fetch(int t0, int c) const {
        return *reinterpret_cast<const Raw*>(codes + t0 + c);
    }

    template <int MAXB>
    __device__ __forceinline__ void dot(const Raw& v, int t0, int c, const int* xc, const float* __restrict__ x,
                                        int in_dim, int nb, float (*acc)[MAXB]) const {
        const float s = scales[per_row ? t0 / cols : 0];
        // Bytes b ^ 0x80 = b + 128 as exact f16 (1024 + b + 128), less 1024 + 128 in the same
        // exact HSUB2: the signed codes, widened.
        float q[CH];
#pragma unroll
        for (int m = 0; m < NR; ++m) {
            unsigned h[2];  // bytes 0, 2 and 1, 3, less 128 (1152 in both halves)
            qk_u8x4_f16(v.v[m] ^ 0x80808080u, one, h, one + 0x00800080u);
            q[4 * m] = qk_f16_lo(h[0]);
            q[4 * m + 1] = qk_f16_lo(h[1]);
            q[4 * m + 2] = qk_f16_hi(h[0]);
            q[4 * m + 3] = qk_f16_hi(h[1]);
        }
        qk_dot_scale<CH, MAXB>(q, x + xc[0], in_dim, nb, s, acc[0]);
    }
};

template <int BYTES>
struct QkInt4Gemv {
    static constexpr bool PLANAR = false;
    static constexpr int P = 2, CH = BYTES, NR = BYTES / 4;
    const unsigned char* __restrict__ packed;
    const float* __restrict__ scales;
    const unsigned char* __restrict__ zeros;
    int group, lg;
    unsigned one;  // qk_f16_one

    // Chunks in flight a lane at batch 1 (gemv.cuh's row skeleton). A chunk in one group (group %
    // 2 CH == 0) loads its zero point and scale ahead with its codes; a lane's chunks are a warp's
    // width apart, so each is a new group.
    static constexpr int AHEAD = 2;
    struct Raw {
        QkVec<unsigned, NR> v;
        float z, s;
    };
    __device__ __forceinline__ Raw fetch(int t0, int c) const {
        const int t = t0 + c;
        Raw raw{};
        raw.v = *reinterpret_cast<const QkVec<unsigned, NR>*>(packed + t);
        if (group % (2 * CH) == 0) {
            const unsigned g = qk_div(2u * (unsigned)t, (unsigned)group, lg);
            raw.z = (float)zeros[g];
            raw.s = scales[g];
        }
        return raw;
    }

    template <int MAXB>
    __device__ __forceinline__ void dot(const Raw& raw, int t0, int c, const int* xc, const float* __restrict__ x,
                                        int in_dim, int nb, float (*acc)[MAXB]) const {
        const int t = t0 + c;
        const QkVec<unsigned, NR>& v = raw.v;
        // Nibble i of word m is code 8m + i: exact f16 pairs (fields p, p + 4), widened.
        float q[2 * CH];
#pragma unroll
        for (int m = 0; m < NR; ++m) {
            unsigned h[4];
            qk_u4x8_f16(v.v[m], one, h);
#pragma unroll
            for (int p = 0; p < 4; ++p) {
                q[8 * m + p] = qk_f16_lo(h[p]);
                q[8 * m + p + 4] = qk_f16_hi(h[p]);
            }
        }
        if (group % (2 * CH) == 0) {
            qk_dot_group<2 * CH, MAXB>(q, x + xc[0], in_dim, nb, raw.z, raw.s, acc[0]);
        } else {
            float w[2 * CH];
#pragma unroll
            for (int i = 0; i < 2 * CH; ++i) {
                const unsigned g = qk_div(2u * (unsigned)t + i, (unsigned)group, lg);
                w[i] = (q[i] - (float)zeros[g]) * scales[g];
            }
            qk_dot_plain<2 * CH, MAXB>(w, x + xc[0], in_dim, nb, acc[0]);
        }
    }
};

// 16-byte chunks at batch 1 where the segment allows (qk_row_chunk_bytes) and, for int4, where
// they keep whole the groups that 8-byte ones do (not at groups of 16 mod 32).
template <int MAXB, int BYTES>
__device__ __forceinline__ void int8_gemv_chunks(const unsigned char* codes, const float* scales, const float* x,
                                                 float* part, int rows, int cols, int per_row, int seg, int team,
                                                 int nb) {
    const QkInt8Gemv<BYTES> d{codes, scales, cols, per_row, qk_f16_one(cols)};
    qk_row_gemv<QkInt8Gemv<BYTES>, MAXB>(d, x, part, rows * cols, (long long)rows * cols, cols, seg, team, nb);
}
template <int MAXB>
__device__ __forceinline__ void int8_gemv(const unsigned char* codes, const float* scales, const float* x,
                                          float* part, int rows, int cols, int per_row, int seg, int team, int nb) {
    qk_row_chunk_bytes<MAXB>(seg % 16 == 0, [&](auto bytes) {
        int8_gemv_chunks<MAXB, decltype(bytes)::value>(codes, scales, x, part, rows, cols, per_row, seg, team, nb);
    });
}

template <int MAXB, int BYTES>
__device__ __forceinline__ void int4_gemv_chunks(const unsigned char* packed, const float* scales,
                                                 const unsigned char* zeros, const float* x, float* part, int rows,
                                                 int cols, int group, int seg, int team, int nb) {
    const QkInt4Gemv<BYTES> d{packed, scales, zeros, group, (group & (group - 1)) == 0 ? __ffs(group) - 1 : -1,
                              qk_f16_one(cols)};
    qk_row_gemv<QkInt4Gemv<BYTES>, MAXB>(d, x, part, rows * cols / 2, (long long)rows * cols, cols, seg, team, nb);
}
template <int MAXB>
__device__ __forceinline__ void int4_gemv(const unsigned char* packed, const float* scales,
                                          const unsigned char* zeros, const float* x, float* part, int rows, int cols,
                                          int group, int seg, int team, int nb) {
    qk_row_chunk_bytes<MAXB>(seg % 16 == 0 && (group % 32 == 0 || group % 16 != 0), [&](auto bytes) {
        int4_gemv_chunks<MAXB, decltype(bytes)::value>(packed, scales, zeros, x, part, rows, cols, group, seg, team,
                                                       nb);
    });
}

// Entries: int8_gemv_b{1,8}(codes, scales, x, part, rows, cols, per_row, seg, team, nb),
// int4_gemv_b{1,8}(packed, scales, zeros, x, part, rows, cols, group, seg, team, nb).
#define QK_INTX_GEMV(MAXB)                                                                            \
    extern "C" __global__ void int8_gemv_b##MAXB(const unsigned char* codes, const float* scales, const float* x, \
                                                 float* part, int rows, int cols, int per_row, int seg, int team, \
                                                 int nb) {                                            \
        int8_gemv<MAXB>(codes, scales, x, part, rows, cols, per_row, seg, team, nb);                  \
    }                                                                                                 \
    extern "C" __global__ void int4_gemv_b##MAXB(const unsigned char* packed, const float* scales,    \
                                                 const unsigned char* zeros, const float* x, float* part, int rows, \
                                                 int cols, int group, int seg, int team, int nb) {    \
        int4_gemv<MAXB>(packed, scales, zeros, x, part, rows, cols, group, seg, team, nb);            \
    }
QK_INTX_GEMV(1)
QK_INTX_GEMV(8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define QK_INTX_GEMV_EMU(MAXB)                                                                        \
    extern "C" void cpu_int8_gemv_b##MAXB(const unsigned char* codes, const float* scales, const float* x, \
                                          float* part, int rows, int cols, int per_row, int seg, int team, int nb, \
                                          unsigned grid, unsigned block) {                            \
        cpu_launch_coop(qk_dim(grid), qk_dim(block),                                                  \
                        [&] { int8_gemv_b##MAXB(codes, scales, x, part, rows, cols, per_row, seg, team, nb); }); \
    }                                                                                                 \
    extern "C" void cpu_int4_gemv_b##MAXB(const unsigned char* packed, const float* scales,           \
                                          const unsigned char* zeros, const float* x, float* part, int rows, \
                                          int cols, int group, int seg, int team, int nb, unsigned grid, \
                                          unsigned block) {                                           \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                            \
            int4_gemv_b##MAXB(packed, scales, zeros, x, part, rows, cols, group, seg, team, nb);      \
        });                                                                                           \
    }
QK_INTX_GEMV_EMU(1)
QK_INTX_GEMV_EMU(8)
#endif
