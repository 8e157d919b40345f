// GPTQ dequantization on the GPU: one templated kernel for 2/3/4/8 bits and f32/f16/bf16.
//
// Layout (see src/gptq/mod.rs): qweight int32 [K*bits/32, N] packs codes along K, qzeros int32
// [G, N*bits/32] packs zero points along N; both are little-endian streams of 32-bit words where
// code i is bits [i*bits, i*bits + bits) (3-bit codes 10 and 21 of every 3 words straddle two).
// W[k, n] = (q[k, n] - z[g_idx[k], n]) * scales[g_idx[k], n], W is [K, N].
// v1 zero points (format 0) are read as GPTQModel does: +0x55555555 / 0x11111111 / 0x01010101
// (wrapping) on each 2/4/8-bit word, +1 per field for 3-bit; v2 (format 1) as stored.
//
// One thread per (block of rows, 8 or 4 columns): a block is the rows whose codes fill whole
// words (16/32/8/4 rows for 2/3/4/8 bits, in 1/3/1/1 words); words, scales and outputs move as
// aligned vectors and adjacent threads take adjacent columns, so accesses are coalesced.
#include "common.cuh"

// Bits [first, first + BITS) of the little-endian word stream `words`.
template <int BITS>
__device__ __forceinline__ unsigned qk_field(const unsigned* words, int first) {
    const int j = first >> 5, shift = first & 31;
    unsigned v = words[j] >> shift;
    if (shift + BITS > 32) v |= words[j + 1] << (32 - shift);
    return v & ((1u << BITS) - 1u);
}

template <int BITS>
__device__ __forceinline__ unsigned gptq_zero(const int* __restrict__ qzeros, int zcols, int g, int n, int format) {
    const int first = n * BITS;
    const int j = first >> 5;
    unsigned w[2];
    w[0] = (unsigned)qzeros[(long long)g * zcols + j];
    w[1] = ((first & 31) + BITS > 32) ? (unsigned)qzeros[(long long)g * zcols + j + 1] : 0u;
    if (format == 0 && BITS != 3) {
        const unsigned inc = BITS == 2 ? 0x55555555u : BITS == 4 ? 0x11111111u : 0x01010101u;
        w[0] += inc;  // wrapping, carries included: GPTQModel's v1 -> v2 conversion
    }
    unsigned z = qk_field<BITS>(w, first & 31);
    if (format == 0 && BITS == 3) z = (z + 1u) & 7u;
    return z;
}

// Rows b*ROWS .. b*ROWS+ROWS of columns n .. n+VEC.
template <int BITS, int VEC, typename T>
__device__ __forceinline__ void gptq_block(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                           const T* __restrict__ scales, const int* __restrict__ g_idx,
                                           T* __restrict__ out, int n_dim, int zcols, int format, int b, int n) {
    constexpr int ROWS = BITS == 3 ? 32 : 32 / BITS;  // rows per block
    constexpr int WORDS = BITS == 3 ? 3 : 1;         // words per block and column
    unsigned w[VEC][WORDS + 1];
#pragma unroll
    for (int i = 0; i < WORDS; ++i) {
        const QkVec<int, VEC> row = *reinterpret_cast<const QkVec<int, VEC>*>(qweight + (long long)(b * WORDS + i) * n_dim + n);
#pragma unroll
        for (int c = 0; c < VEC; ++c) w[c][i] = (unsigned)row.v[c];
    }
#pragma unroll
    for (int c = 0; c < VEC; ++c) w[c][WORDS] = 0u;
#pragma unroll 4
    for (int j = 0; j < ROWS; ++j) {
        const int k = b * ROWS + j;
        const int g = g_idx[k];
        const QkVec<T, VEC> s = *reinterpret_cast<const QkVec<T, VEC>*>(scales + (long long)g * n_dim + n);
        QkVec<T, VEC> o;
#pragma unroll
        for (int c = 0; c < VEC; ++c) {
            const unsigned q = qk_field<BITS>(w[c], j * BITS);
            const float z = (float)gptq_zero<BITS>(qzeros, zcols, g, n + c, format);
            o.v[c] = qk_from_f32<T>(((float)q - z) * qk_to_f32(s.v[c]));
        }
        *reinterpret_cast<QkVec<T, VEC>*>(out + (long long)k * n_dim + n) = o;
    }
}

// Grid-stride over (block of rows, VEC columns) items.
template <int BITS, int VEC, typename T>
__device__ __forceinline__ void gptq_items(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                           const T* __restrict__ scales, const int* __restrict__ g_idx,
                                           T* __restrict__ out, int k_dim, int n_dim, int format) {
    constexpr int ROWS = BITS == 3 ? 32 : 32 / BITS;
    const int zcols = n_dim * BITS / 32;
    const int nv = n_dim / VEC;
    const long long items = (long long)(k_dim / ROWS) * nv;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < items; t += stride) {
        const int b = (int)(t / nv);
        const int n = (int)(t - (long long)b * nv) * VEC;
        gptq_block<BITS, VEC, T>(qweight, qzeros, scales, g_idx, out, n_dim, zcols, format, b, n);
    }
}

// VEC = 8 columns per thread when N allows it, else 4 (N is always a multiple of 4: GptqLayout
// requires whole qzeros words).
template <int BITS, typename T>
__device__ __forceinline__ void gptq_dequant(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                             const T* __restrict__ scales, const int* __restrict__ g_idx,
                                             T* __restrict__ out, int k_dim, int n_dim, int format) {
    if ((n_dim & 7) == 0) gptq_items<BITS, 8, T>(qweight, qzeros, scales, g_idx, out, k_dim, n_dim, format);
    else gptq_items<BITS, 4, T>(qweight, qzeros, scales, g_idx, out, k_dim, n_dim, format);
}

// Entry points: gptq_dequant_{bits}b_{elem}(qweight, qzeros, scales, g_idx, out, K, N, format).
#define QK_GPTQ(BITS, T, NAME)                                                                       \
    extern "C" __global__ void gptq_dequant_##BITS##b_##NAME(const int* qweight, const int* qzeros,   \
                                                             const T* scales, const int* g_idx,      \
                                                             T* out, int k_dim, int n_dim, int format) { \
        gptq_dequant<BITS, T>(qweight, qzeros, scales, g_idx, out, k_dim, n_dim, format);            \
    }
#define QK_GPTQ_ALL(BITS) QK_GPTQ(BITS, float, f32) QK_GPTQ(BITS, __half, f16) QK_GPTQ(BITS, __nv_bfloat16, bf16)
QK_GPTQ_ALL(2)
QK_GPTQ_ALL(3)
QK_GPTQ_ALL(4)
QK_GPTQ_ALL(8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define QK_GPTQ_EMU(BITS, T, NAME)                                                                   \
    extern "C" void cpu_gptq_dequant_##BITS##b_##NAME(const int* qweight, const int* qzeros, const T* scales, \
                                                      const int* g_idx, T* out, int k_dim, int n_dim, \
                                                      int format, unsigned grid, unsigned block) {    \
        cpu_launch_serial(qk_dim(grid), qk_dim(block), [&] {                                         \
            gptq_dequant_##BITS##b_##NAME(qweight, qzeros, scales, g_idx, out, k_dim, n_dim, format); \
        });                                                                                          \
    }
#define QK_GPTQ_EMU_ALL(BITS) QK_GPTQ_EMU(BITS, float, f32) QK_GPTQ_EMU(BITS, __half, f16) QK_GPTQ_EMU(BITS, __nv_bfloat16, bf16)
QK_GPTQ_EMU_ALL(2)
QK_GPTQ_EMU_ALL(3)
QK_GPTQ_EMU_ALL(4)
QK_GPTQ_EMU_ALL(8)
#endif
