// GPTQ dequantization on the GPU: one templated kernel for 2/3/4/8 bits and f32/f16/bf16.
//
// Layout (see src/gptq/mod.rs): qweight int32 [K*bits/32, N] packs codes along K, qzeros int32
// [G, N*bits/32] packs zero points along N; both are little-endian streams of 32-bit words where
// code i is bits [i*bits, i*bits + bits) (3-bit codes 10 and 21 of every 3 words straddle two).
// W[k, n] = (q[k, n] - z[g_idx[k], n]) * scales[g_idx[k], n], W is [K, N].
// v1 zero points (format 0) are read as GPTQModel does: +0x55555555 / 0x11111111 / 0x01010101
// (wrapping) on each 2/4/8-bit word, +1 per field for 3-bit; v2 (format 1) as stored.
//
// A 2-D grid: x over vectors of VEC columns, y over chunks of 16 rows (32 at 3 bits, whose codes
// fill 3 words; 8 at 8 bits, to stay within 72 registers). When a chunk's rows share one group
// (always without act-order once groups are multiples of the chunk) a thread loads the chunk's
// words up front (adjacent threads: adjacent columns, so the loads coalesce), decodes its
// columns' zero points and scales once and writes each row's VEC columns as one aligned vector.
// Other chunks (act-order, small groups, a last partial chunk) take a compact row-at-a-time path
// that decodes a row's group when it differs from the previous row's. The 32 lanes of a warp
// share their rows, so both choices are uniform. Codes and zeros become floats by OR-ing them
// into the mantissa of 2^23 (qk_magic): (2^23 + q) - (2^23 + z) is exactly q - z, as the
// reference's (q as f32 - z as f32), so a code costs a shift, a logic op, a subtraction and a
// multiplication.
#include "gemv.cuh"
#include "gptq.cuh"

// Rows k0 .. k0+nrows (whole word blocks) of columns n .. n+VEC, a row at a time, decoding a
// row's group only when it differs from the previous row's: the path for act-order chunks, small
// groups and a last, partial chunk. Compact (not unrolled over rows): each column's block words
// are a bit stream shifted right by BITS after every row.
template <int BITS, int VEC, typename T>
__device__ __forceinline__ void gptq_rows(const int* __restrict__ qweight, const QkGptqCols<BITS, VEC, T>& cols,
                                          const int* __restrict__ g_idx, T* __restrict__ out, int n_dim,
                                          int format, unsigned magic, int k0, int nrows, int n) {
    using L = QkGptq<BITS>;
    float zm[VEC], s[VEC];
    int gl = -1;  // the group zm and s hold: none yet
    T* op = out + (long long)k0 * n_dim + n;
#pragma unroll 1
    for (int k = k0; k < k0 + nrows; k += L::ROWS) {
        const int* wp = qweight + (long long)(k / L::ROWS * L::WORDS) * n_dim + n;
        unsigned w[VEC][L::WORDS];
#pragma unroll
        for (int i = 0; i < L::WORDS; ++i) {
            const QkVec<int, VEC> row = *reinterpret_cast<const QkVec<int, VEC>*>(wp + (long long)i * n_dim);
#pragma unroll
            for (int c = 0; c < VEC; ++c) w[c][i] = (unsigned)row.v[c];
        }
#pragma unroll 1
        for (int j = 0; j < L::ROWS; ++j, op += n_dim) {
            const int g = g_idx[k + j];
            if (g != gl) {
                gl = g;
                cols.load(g, format, magic, zm, s);
            }
            QkVec<T, VEC> o;
#pragma unroll
            for (int c = 0; c < VEC; ++c) {
                const float q = qk_magic(w[c][0] & ((1u << BITS) - 1u), magic);
                o.v[c] = qk_from_f32<T>((q - zm[c]) * s[c]);
#pragma unroll
                for (int i = 0; i + 1 < L::WORDS; ++i) w[c][i] = (w[c][i] >> BITS) | (w[c][i + 1] << (32 - BITS));
                w[c][L::WORDS - 1] >>= BITS;
            }
            *reinterpret_cast<QkVec<T, VEC>*>(op) = o;
        }
    }
}

template <int BITS, int VEC, typename T>
__device__ __forceinline__ void gptq_chunks(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                            const T* __restrict__ scales, const int* __restrict__ g_idx,
                                            T* __restrict__ out, int k_dim, int n_dim, int format) {
    using L = QkGptq<BITS>;
    const int nv = n_dim / VEC;
    const int chunks = (k_dim + L::CHUNK - 1) / L::CHUNK;
    const unsigned magic = qk_magic_reg(format);
    for (int x = qk_x0(); x < nv; x += qk_xstep()) {
        const int n = x * VEC;
        const QkGptqCols<BITS, VEC, T> cols(qzeros, scales, n_dim, n);
        for (int ch = qk_y0(); ch < chunks; ch += qk_ystep()) {
            const int k0 = ch * L::CHUNK;
            const int nrows = min((int)L::CHUNK, k_dim - k0);  // a multiple of ROWS, as K is
            // A whole chunk whose rows share one group takes the fast path below; its groups are
            // read 4 rows a vector (k0 is a multiple of 4).
            const int g0 = g_idx[k0];
            bool fast = nrows == L::CHUNK;
            if (fast) {
#pragma unroll
                for (int i = 0; i < L::CHUNK; i += 4) {
                    const QkVec<int, 4> gv = *reinterpret_cast<const QkVec<int, 4>*>(g_idx + k0 + i);
#pragma unroll
                    for (int r = 0; r < 4; ++r) fast &= gv.v[r] == g0;
                }
            }
            if (!fast) {
                gptq_rows<BITS, VEC, T>(qweight, cols, g_idx, out, n_dim, format, magic, k0, nrows, n);
                continue;
            }
            const int* wp = qweight + (long long)(k0 / L::ROWS * L::WORDS) * n_dim + n;
            unsigned w[VEC][L::CWORDS + 1];
#pragma unroll
            for (int i = 0; i < L::CWORDS; ++i) {
                const QkVec<int, VEC> row = *reinterpret_cast<const QkVec<int, VEC>*>(wp + (long long)i * n_dim);
#pragma unroll
                for (int c = 0; c < VEC; ++c) w[c][i] = (unsigned)row.v[c];
            }
#pragma unroll
            for (int c = 0; c < VEC; ++c) w[c][L::CWORDS] = 0u;
            float zm[VEC], s[VEC];
            cols.load(g0, format, magic, zm, s);
            T* op = out + (long long)k0 * n_dim + n;
#pragma unroll
            for (int j = 0; j < L::CHUNK; ++j, op += n_dim) {
                QkVec<T, VEC> o;
#pragma unroll
                for (int c = 0; c < VEC; ++c) {
                    const float q = qk_magic(qk_field<BITS>(w[c], j * BITS), magic);
                    o.v[c] = qk_from_f32<T>((q - zm[c]) * s[c]);
                }
                *reinterpret_cast<QkVec<T, VEC>*>(op) = o;
            }
        }
    }
}

// VEC = 16 bytes of output per thread and row (8 columns at f16/bf16, 4 at f32), so a warp's
// stores are contiguous; 4 also for 8-bit layers whose N is not a multiple of 8 (GptqLayout makes
// N a multiple of 16/32/8 at 2/3/4 bits, of 4 at 8 bits).
template <int BITS, typename T>
__device__ __forceinline__ void gptq_dequant(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                             const T* __restrict__ scales, const int* __restrict__ g_idx,
                                             T* __restrict__ out, int k_dim, int n_dim, int format) {
    constexpr int VEC = 16 / sizeof(T);
    if (VEC == 4 || (BITS == 8 && (n_dim & 7) != 0))
        gptq_chunks<BITS, 4, T>(qweight, qzeros, scales, g_idx, out, k_dim, n_dim, format);
    else gptq_chunks<BITS, VEC, T>(qweight, qzeros, scales, g_idx, out, k_dim, n_dim, format);
}

// Entry points: gptq_dequant_{bits}b_{elem}(qweight, qzeros, scales, g_idx, out, K, N, format).
#define QK_GPTQ(BITS, T, NAME)                                                                       \
    extern "C" __global__ void gptq_dequant_##BITS##b_##NAME(const int* qweight, const int* qzeros,   \
                                                             const T* scales, const int* g_idx,      \
                                                             T* out, int k_dim, int n_dim, int format) { \
        gptq_dequant<BITS, T>(qweight, qzeros, scales, g_idx, out, k_dim, n_dim, format);            \
    }
QK_EACH_ELEM(QK_GPTQ, 2)
QK_EACH_ELEM(QK_GPTQ, 3)
QK_EACH_ELEM(QK_GPTQ, 4)
QK_EACH_ELEM(QK_GPTQ, 8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define QK_GPTQ_EMU(BITS, T, NAME)                                                                   \
    extern "C" void cpu_gptq_dequant_##BITS##b_##NAME(const int* qweight, const int* qzeros, const T* scales, \
                                                      const int* g_idx, T* out, int k_dim, int n_dim, \
                                                      int format, unsigned grid, unsigned block) {    \
        cpu_launch_serial(qk_dim(grid), qk_dim(block), [&] {                                         \
            gptq_dequant_##BITS##b_##NAME(qweight, qzeros, scales, g_idx, out, k_dim, n_dim, format); \
        });                                                                                          \
    }
QK_EACH_ELEM(QK_GPTQ_EMU, 2)
QK_EACH_ELEM(QK_GPTQ_EMU, 3)
QK_EACH_ELEM(QK_GPTQ_EMU, 4)
QK_EACH_ELEM(QK_GPTQ_EMU, 8)
#endif
