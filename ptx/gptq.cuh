// GPTQ's packing, shared by its dequantization (gptq.cu) and its multiplies (gptq.cu's GEMM,
// gptq_gemv.cu): the word blocks of each width, a field of a word stream, and a column range's
// zero points and scales (v1 zero points read as GPTQModel does).
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
