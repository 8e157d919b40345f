// GPTQ's packing, shared by its dequantization (gptq.cu) and its multiplies (gptq.cu's GEMM,
// gptq_gemv.cu, gptq_gemmg.cu, gptq_gemmw.cu): the word blocks of each width, a field of a word
// stream, a column range's zero points and scales (v1 zero points read as GPTQModel does), and
// the group-scaled GEMMs' decoder.
#pragma once
#include "common.cuh"

template <int BITS>
struct QkGptq {
    enum : int {
        ROWS = BITS == 3 ? 32 : 32 / BITS,           // rows whose codes fill whole words,
        WORDS = BITS == 3 ? 3 : 1,                   // ... this many per column
        CHUNK = BITS == 3 ? 32 : BITS == 8 ? 8 : 16,  // rows per thread
        CWORDS = CHUNK / ROWS * WORDS,               // qweight rows per chunk
    };
};

// Bits [first, first + BITS) of the little-endian word stream `words` (first is a constant in the
// unrolled loop below, so the straddle test folds away).
template <int BITS>
__device__ __forceinline__ unsigned qk_field(const unsigned* words, int first) {
    const int j = first >> 5, shift = first & 31;
    unsigned v = words[j] >> shift;
    if (shift + BITS > 32) v |= words[j + 1] << (32 - shift);
    return v & ((1u << BITS) - 1u);
}

// Where columns n .. n+VEC's zero points and scales sit in group row 0: VEC * BITS bits of qzeros
// from bit n * BITS (within two words), and VEC scales.
template <int BITS, int VEC, typename T>
struct QkGptqCols {
    const int* zp;  // first qzeros word of group row 0
    const T* sp;    // first scale of group row 0
    int zcols;      // qzeros words per group row (N * BITS / 32 < 2^31: N is an int)
    int n_dim;
    int shift;      // bit offset of column n in *zp
    __device__ __forceinline__ QkGptqCols(const int* qzeros, const T* scales, int n_dim_, int n) {
        const long long first = (long long)n * BITS;
        zcols = (int)((long long)n_dim_ * BITS / 32);
        zp = qzeros + (first >> 5);
        sp = scales + n;
        n_dim = n_dim_;
        shift = (int)(first & 31);
    }

    // Group g's zero points (as 2^23 + z, see qk_magic) and scales; with dw, ds those of the
    // columns dw words of zero points and ds scales further on, at the same bit offset (constants
    // in an unrolled loop: immediate offsets of the same addresses).
    __device__ __forceinline__ void load(int g, int format, unsigned magic, float* zm, float* s, int dw = 0,
                                         int ds = 0) const {
        // g >= 0: unsigned 32 x 32 -> 64-bit products (one instruction each).
        const int* z = zp + (unsigned long long)(unsigned)g * (unsigned)zcols + dw;
        unsigned lo = (unsigned)z[0];
        unsigned hi = shift + VEC * BITS > 32 ? (unsigned)z[1] : 0u;
        if (format == 0 && BITS != 3) {
            // v1: GPTQModel's +1 in every field, a wrapping add per word (carries included).
            const unsigned inc = BITS == 2 ? 0x55555555u : BITS == 4 ? 0x11111111u : 0x01010101u;
            lo += inc;
            hi += inc;
        }
        const unsigned long long v = (((unsigned long long)hi << 32) | lo) >> shift;
        const QkVec<T, VEC> sv =
            *reinterpret_cast<const QkVec<T, VEC>*>(sp + (unsigned long long)(unsigned)g * (unsigned)n_dim + ds);
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
            unsigned zc = (unsigned)(v >> (c * BITS)) & ((1u << BITS) - 1u);
            if (format == 0 && BITS == 3) zc = (zc + 1u) & 7u;  // v1 at 3 bits: +1 per field
            zm[c] = qk_magic(zc, magic);
            s[c] = qk_to_f32(sv.v[c]);
        }
    }
};

// ---- Group-scaled GEMM (gemm.cuh's qk_mma_gemm_grouped) for 4- and 8-bit layers whose every
// aligned 32 rows (sorted, for act-order) share a group: a lane's rows k .. k + 7 of column n are
// one word at 4 bits (fields p, p + 4 as a pair) or two at 8 (bytes 0, 2 and 1, 3 of each).
//
// FOLD (the wide GEMM's): each group's zero point is subtracted from the codes as they are
// decoded (GPTQ's are integers, so q - z stays an exact f16), so the group's end applies the
// scale alone and sum x is not needed: Dec::fold loads the lane's column's zero points of a group
// (Dec::Fold) from a cursor made once per work item (Dec::fold_par).
template <int BITS, typename T, int NT_, bool FOLD_ = false>
struct QkGptqGemmG {
    static constexpr int NT = NT_;
    static constexpr bool FOLD = FOLD_;
    static constexpr bool ZERO = !FOLD_;
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
    // The zero points of subtile j's column n0 + 8 j + g as qk_f16_zero's pairs.
    struct Fold {
        unsigned zb[NT], zo[NT];
    };
    __device__ __forceinline__ void decode(const Col*, const unsigned* raw, unsigned (*b)[2][2],
                                           const Fold* f = nullptr) const {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            const unsigned zb = f ? f->zb[j] : one, zo = f ? f->zo[j] : 0xd400d400u;
            if (BITS == 4) {
                unsigned o[4];
                qk_u4x8_f16(raw[j], one, o, zb, zo);
                b[j][0][0] = o[0];
                b[j][0][1] = o[1];
                b[j][1][0] = o[2];
                b[j][1][1] = o[3];
            } else {
                qk_u8x4_f16(raw[2 * j], one, b[j][0], zb);
                qk_u8x4_f16(raw[2 * j + 1], one, b[j][1], zb);
            }
        }
    }
    using FoldPar = QkGptqCols<BITS, 1, T>;
    __device__ __forceinline__ FoldPar fold_par(int n0, int g) const { return FoldPar(qzeros, scales, n_dim, n0 + g); }
    __device__ __forceinline__ void fold(const FoldPar& p, int grp, Fold& f) const {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            float zm[1], s[1];
            p.load(grp, format, magic, zm, s, j * BITS / 4, 8 * j);
            f.zb[j] = qk_f16_zero(zm[0] - 8388608.0f, &f.zo[j]);
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
