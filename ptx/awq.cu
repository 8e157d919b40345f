// AWQ (AutoAWQ "gemm") 4-bit dequantization on the GPU, f32/f16/bf16.
//
// qweight int32 [K, N/8]: word c of row k holds columns 8c..8c+7, nibble i (bits 4i..4i+4) holds
// column 8c + [0, 2, 4, 6, 1, 3, 5, 7][i]; qzeros [K/gs, N/8] the same; scales [K/gs, N].
// W[k, n] = (q - z) * s in f32, rounded once; W is [K, N].
//
// A 2-D grid: x over words (8 columns; half words at f32, see QkAwq), y over chunks of
// QK_AWQ_ROWS rows. A thread loads its chunk's words up front (adjacent threads: adjacent words,
// coalesced), decodes its group's zero points and scales once (again only where the chunk crosses
// into the next group) and writes each row's columns as one aligned 16-byte vector. Codes and zeros become floats by OR-ing them into
// the mantissa of 2^23 (qk_magic): (2^23 + q) - (2^23 + z) is exactly q - z, so a code costs a
// shift, a logic op, a subtraction and a multiplication, no integer-to-float conversion and no
// division (the per-word version before spent two divisions on each 8 codes).
#include "gemv.cuh"
#include "gemm.cuh"

constexpr int QK_AWQ_ROWS = 8;

// Column 8c + j sits in nibble [0, 4, 1, 5, 2, 6, 3, 7][j]: its bit shift.
__device__ __forceinline__ int qk_awq_shift(int j) { return 4 * ((j >> 1) + 4 * (j & 1)); }

// Columns per thread and row: 16 bytes of output (8 at f16/bf16: a whole word; 4 at f32: half a
// word, so that a lane's store is one 16-byte vector and a warp's stores are contiguous).
template <typename T>
struct QkAwq {
    enum : int { COLS = 16 / sizeof(T) < 8 ? 16 / sizeof(T) : 8, PARTS = 8 / COLS };
};

// Group g's zero points (as 2^23 + z) and scales of columns 8x + first .. + COLS.
template <typename T>
__device__ __forceinline__ void awq_group(const int* __restrict__ qzeros, const T* __restrict__ scales, int words,
                                          int n_dim, int g, int x, int first, float* zm, float* s) {
    constexpr int COLS = QkAwq<T>::COLS;
    const unsigned zw = (unsigned)qzeros[(long long)g * words + x];
    const QkVec<T, COLS> sv = *reinterpret_cast<const QkVec<T, COLS>*>(scales + (long long)g * n_dim + 8 * x + first);
#pragma unroll
    for (int j = 0; j < COLS; ++j) {
        zm[j] = qk_magic((zw >> qk_awq_shift(first + j)) & 15u);
        s[j] = qk_to_f32(sv.v[j]);
    }
}

// ALIGNED: group_size % QK_AWQ_ROWS == 0, so a chunk never leaves its group. x walks (word,
// part) pairs: part p of word c covers columns 8c + p*COLS .. + COLS.
template <typename T, bool ALIGNED>
__device__ __forceinline__ void awq_rows(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                         const T* __restrict__ scales, T* __restrict__ out, int k_dim, int n_dim,
                                         int group_size) {
    constexpr int COLS = QkAwq<T>::COLS, PARTS = QkAwq<T>::PARTS;
    const int words = n_dim / 8;
    const int chunks = (k_dim + QK_AWQ_ROWS - 1) / QK_AWQ_ROWS;
    const unsigned magic = qk_magic_reg(group_size);
    for (int xp = qk_x0(); xp < words * PARTS; xp += qk_xstep()) {
        const int x = xp / PARTS, first = (xp % PARTS) * COLS;
        for (int ch = qk_y0(); ch < chunks; ch += qk_ystep()) {
            const int k0 = ch * QK_AWQ_ROWS;
            const int nrows = min(QK_AWQ_ROWS, k_dim - k0);
            const int* wp = qweight + (long long)k0 * words + x;
            unsigned w[QK_AWQ_ROWS];
#pragma unroll
            for (int i = 0; i < QK_AWQ_ROWS; ++i) w[i] = i < nrows ? (unsigned)wp[(long long)i * words] : 0u;
            int g = (int)((unsigned)k0 / (unsigned)group_size);
            int left = group_size - (k0 - g * group_size);  // rows left in group g
            float zm[COLS], s[COLS];
            awq_group<T>(qzeros, scales, words, n_dim, g, x, first, zm, s);
            T* op = out + (long long)k0 * n_dim + 8 * x + first;
#pragma unroll
            for (int i = 0; i < QK_AWQ_ROWS; ++i) {
                if (i >= nrows) break;
                if (!ALIGNED && left == 0) {
                    ++g;
                    left = group_size;
                    awq_group<T>(qzeros, scales, words, n_dim, g, x, first, zm, s);
                }
                --left;
                QkVec<T, COLS> o;
#pragma unroll
                for (int j = 0; j < COLS; ++j) {
                    const float q = qk_magic((w[i] >> qk_awq_shift(first + j)) & 15u, magic);
                    o.v[j] = qk_from_f32<T>((q - zm[j]) * s[j]);
                }
                *reinterpret_cast<QkVec<T, COLS>*>(op + (long long)i * n_dim) = o;
            }
        }
    }
}

template <typename T>
__device__ __forceinline__ void awq_dequant(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                            const T* __restrict__ scales, T* __restrict__ out, int k_dim,
                                            int n_dim, int group_size) {
    if (group_size % QK_AWQ_ROWS == 0) awq_rows<T, true>(qweight, qzeros, scales, out, k_dim, n_dim, group_size);
    else awq_rows<T, false>(qweight, qzeros, scales, out, k_dim, n_dim, group_size);
}

#define QK_AWQ(T, NAME)                                                                               \
    extern "C" __global__ void awq_dequant_4b_##NAME(const int* qweight, const int* qzeros, const T* scales, \
                                                     T* out, int k_dim, int n_dim, int group_size) {  \
        awq_dequant<T>(qweight, qzeros, scales, out, k_dim, n_dim, group_size);                       \
    }
QK_AWQ(float, f32)
QK_AWQ(__half, f16)
QK_AWQ(__nv_bfloat16, bf16)

// ---- Fused GEMV (gemv.cuh's column skeleton): a thread takes one word column (8 columns, in
// AWQ's nibble order) and blocks of 4 rows (a word each); the group of row k is k / group_size.
template <typename T>
struct QkAwqGemv {
    static constexpr int VC = 8, ROWS = 4;
    static constexpr bool sorted = true;  // group k / group_size
    const int* __restrict__ qweight;
    const int* __restrict__ qzeros;
    const T* __restrict__ scales;
    int n_dim, group_size, lg;
    unsigned magic, one;  // qk_magic_reg, qk_f16_one

    // Row k's 8 codes (codes_of its word w: fields p, p + 4 are columns 2p, 2p + 1, AWQ's nibble
    // order), as exact f16 pairs, widened.
    __device__ __forceinline__ void row(int k, int n, float* q) const {
        codes_of((unsigned)qweight[(long long)k * (n_dim / 8) + n / 8], q);
    }
    __device__ __forceinline__ void codes_of(unsigned w, float* q) const {
        unsigned h[4];
        qk_u4x8_f16(w, one, h);
#pragma unroll
        for (int p = 0; p < 4; ++p) {
            q[2 * p] = qk_f16_lo(h[p]);
            q[2 * p + 1] = qk_f16_hi(h[p]);
        }
    }
    // The block's ROWS words (rows k .., word column n / 8).
    struct Raw {
        unsigned w[ROWS];
    };
    __device__ __forceinline__ Raw fetch(int k, int n) const {
        Raw raw;
#pragma unroll
        for (int r = 0; r < ROWS; ++r) raw.w[r] = (unsigned)qweight[(long long)(k + r) * (n_dim / 8) + n / 8];
        return raw;
    }
    __device__ __forceinline__ void decode(const Raw& raw, float (*q)[VC]) const {
#pragma unroll
        for (int r = 0; r < ROWS; ++r) codes_of(raw.w[r], q[r]);
    }
    __device__ __forceinline__ int group(int k) const { return (int)qk_div((unsigned)k, (unsigned)group_size, lg); }
    __device__ __forceinline__ void params(int g, int n, float* z, float* s) const {
        const unsigned zw = (unsigned)qzeros[(long long)g * (n_dim / 8) + n / 8];
        const T* sp = scales + (long long)g * n_dim + n;
#pragma unroll
        for (int c = 0; c < VC; c += 4) {
            const QkVec<T, 4> sv = *reinterpret_cast<const QkVec<T, 4>*>(sp + c);
#pragma unroll
            for (int i = 0; i < 4; ++i) s[c + i] = qk_to_f32(sv.v[i]);
        }
#pragma unroll
        for (int c = 0; c < VC; ++c) z[c] = qk_u2f((zw >> qk_awq_shift(c)) & 15u, magic);
    }
};

template <typename T, int MAXB>
__device__ __forceinline__ void awq_gemv(const int* qweight, const int* qzeros, const T* scales, const float* x,
                                         float* part, float* y, unsigned* counters, int k_dim, int n_dim,
                                         int group_size, int slice_rows, int nb) {
    const QkAwqGemv<T> d{qweight, qzeros, scales, n_dim, group_size,
                         (group_size & (group_size - 1)) == 0 ? __ffs(group_size) - 1 : -1, qk_magic_reg(group_size),
                         qk_f16_one(group_size)};
    qk_col_gemv_fused<QkAwqGemv<T>, MAXB>(d, x, part, y, counters, k_dim, n_dim, slice_rows, nb);
}

// Entry points: awq_gemv_4b_{elem}_b{1,8}(qweight, qzeros, scales, x, part, y, counters, K, N,
// group_size, slice_rows, nb), launched as gptq_gemv's.
#define QK_AWQ_GEMV_ENTRY(T, NAME, MAXB)                                                             \
    extern "C" __global__ void awq_gemv_4b_##NAME##_b##MAXB(const int* qweight, const int* qzeros, const T* scales, \
                                                            const float* x, float* part, float* y,   \
                                                            unsigned* counters, int k_dim, int n_dim, \
                                                            int group_size, int slice_rows, int nb) { \
        awq_gemv<T, MAXB>(qweight, qzeros, scales, x, part, y, counters, k_dim, n_dim, group_size, slice_rows, nb); \
    }
QK_AWQ_GEMV_ENTRY(float, f32, 1)
QK_AWQ_GEMV_ENTRY(float, f32, 8)
QK_AWQ_GEMV_ENTRY(__half, f16, 1)
QK_AWQ_GEMV_ENTRY(__half, f16, 8)
QK_AWQ_GEMV_ENTRY(__nv_bfloat16, bf16, 1)
QK_AWQ_GEMV_ENTRY(__nv_bfloat16, bf16, 8)

// ---- Tensor-core GEMM (gemm.cuh): a lane's weights of column n are rows k, k + 1, k + 8, k + 9
// of word column n / 8; one group for the four when group_size % 16 == 0.
template <typename T>
struct QkAwqGemm {
    const int* __restrict__ qweight;
    const int* __restrict__ qzeros;
    const T* __restrict__ scales;
    int n_dim, group_size, lg;
    unsigned magic;

    struct Col {
        const int* wp;  // qweight + n / 8
        const int* zp;  // qzeros + n / 8
        const T* sp;    // scales + n
        int shift;      // column n's nibble
    };
    __device__ __forceinline__ Col column(int n) const {
        return Col{qweight + n / 8, qzeros + n / 8, scales + n, qk_awq_shift(n & 7)};
    }
    __device__ __forceinline__ void params(const Col& c, int g, float* z, float* s) const {
        const unsigned zw = (unsigned)c.zp[(unsigned)g * (unsigned)(n_dim / 8)];
        *z = qk_u2f((zw >> c.shift) & 15u, magic);
        *s = qk_to_f32(c.sp[(unsigned)g * (unsigned)n_dim]);
    }
    __device__ __forceinline__ void weights(const Col& c, int k, float* w) const {
        const int rows[4] = {k, k + 1, k + 8, k + 9};
        float z = 0.0f, s = 0.0f;
        const bool one = group_size % 16 == 0;
        if (one) params(c, (int)qk_div((unsigned)k, (unsigned)group_size, lg), &z, &s);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const unsigned wd = (unsigned)c.wp[(unsigned)rows[i] * (unsigned)(n_dim / 8)];
            if (!one) params(c, (int)qk_div((unsigned)rows[i], (unsigned)group_size, lg), &z, &s);
            w[i] = (qk_u2f((wd >> c.shift) & 15u, magic) - z) * s;
        }
    }
};

// Entries: awq_gemm_4b_{elem}_m{1,4}(qweight, qzeros, scales, x, y, M, K, N, group_size).
#define QK_AWQ_GEMM_ENTRY(T, NAME, MT)                                                               \
    extern "C" __global__ void awq_gemm_4b_##NAME##_m##MT(const int* qweight, const int* qzeros, const T* scales, \
                                                          const float* x, float* y, int m_dim, int k_dim, int n_dim, \
                                                          int group_size) {                          \
        const QkAwqGemm<T> d{qweight, qzeros, scales, n_dim, group_size,                            \
                             (group_size & (group_size - 1)) == 0 ? __ffs(group_size) - 1 : -1,      \
                             qk_magic_reg(group_size)};                                              \
        qk_mma_gemm<QkAwqGemm<T>, MT, 4>(d, x, y, m_dim, n_dim, k_dim);                              \
    }
QK_AWQ_GEMM_ENTRY(float, f32, 1)
QK_AWQ_GEMM_ENTRY(float, f32, 4)
QK_AWQ_GEMM_ENTRY(__half, f16, 1)
QK_AWQ_GEMM_ENTRY(__half, f16, 4)
QK_AWQ_GEMM_ENTRY(__nv_bfloat16, bf16, 1)
QK_AWQ_GEMM_ENTRY(__nv_bfloat16, bf16, 4)

// ---- Group-scaled GEMM (gemm.cuh's qk_mma_gemm_grouped) for group sizes a power of two >= 32, N
// a multiple of 64. Outputs are interleaved (subtile j's column i is output n0 + 8 i + j) so that
// a lane's 8 subtiles are the 8 columns of one qweight word: per chunk it reads 8 words (rows k ..
// k + 7), splits each into the column pairs (2p, 2p + 1) (qk_u4x8_f16 on AWQ's nibble order) and
// pairs rows k + 2q, k + 2q + 1 of each column with a byte permutation.
template <typename T>
struct QkAwqGemmG {
    static constexpr int NT = 8;
    static constexpr bool ZERO = true;
    static constexpr float UNIT = 1.0f;
    const int* __restrict__ qweight;
    const int* __restrict__ qzeros;
    const T* __restrict__ scales;
    int n_dim, lg;  // group size 2^lg
    unsigned magic, one;

    struct Col {
        const int* p;  // qweight + n / 8: the same word column for a lane's 8 subtiles
    };
    static constexpr int out(int n0, int j, int i) { return n0 + 8 * i + j; }
    static constexpr int slot(int s, int r, int h) { return 4 * s + 2 * r + h; }
    __device__ __forceinline__ Col column(int n) const { return Col{qweight + n / 8}; }
    static constexpr int RAW = 8;  // rows k .. k + 7 of the lane's qweight column
    __device__ __forceinline__ void fetch(const Col* col, int k, unsigned* raw) const {
        const unsigned words = (unsigned)(n_dim / 8);
        const int* p = col[0].p + (unsigned)k * words;
#pragma unroll
        for (int r = 0; r < 8; ++r) raw[r] = (unsigned)p[(unsigned)r * words];
    }
    __device__ __forceinline__ void decode(const Col*, const unsigned* raw, unsigned (*b)[2][2]) const {
#pragma unroll
        for (int q = 0; q < 4; ++q) {  // rows k + 2q, k + 2q + 1: step q / 2, register q % 2
            unsigned lo[4], hi[4];
            qk_u4x8_f16(raw[2 * q], one, lo);
            qk_u4x8_f16(raw[2 * q + 1], one, hi);
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                b[2 * c][q / 2][q % 2] = __byte_perm(lo[c], hi[c], 0x5410u);
                b[2 * c + 1][q / 2][q % 2] = __byte_perm(lo[c], hi[c], 0x7632u);
            }
        }
    }
    __device__ __forceinline__ int group(int k0) const { return k0 >> lg; }
    // The lane's parameter columns n0 + 16t + 8c + j (subtile j's columns 2t + c): two qzeros
    // words (nibble j of each) and two runs of 8 consecutive scales, whatever j.
    struct Par {
        unsigned col;  // n0 + 16t
    };
    __device__ __forceinline__ Par par(int n0, int t) const { return Par{(unsigned)(n0 + 16 * t)}; }
    __device__ __forceinline__ void params(const Par& p, int grp, float (*s)[2], float (*z)[2]) const {
        const int* zp = qzeros + ((unsigned)grp * (unsigned)(n_dim / 8) + p.col / 8u);
        const T* sp = scales + ((unsigned)grp * (unsigned)n_dim + p.col);
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const unsigned zw = (unsigned)zp[c];
            const QkVec<T, 8> sv = *reinterpret_cast<const QkVec<T, 8>*>(sp + 8 * c);
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                z[j][c] = qk_u2f((zw >> qk_awq_shift(j)) & 15u, magic);
                s[j][c] = qk_to_f32(sv.v[j]);
            }
        }
    }
};

// Entries: awq_gemmg_4b_{elem}_m{1,2}(the GEMM's parameters): tiles of 16 (m1) or 32 (m2) rows by
// 64 outputs a warp.
#define QK_AWQ_GEMMG_ENTRY(T, NAME, MT)                                                              \
    extern "C" __global__ void awq_gemmg_4b_##NAME##_m##MT(const int* qweight, const int* qzeros, const T* scales, \
                                                           const float* x, float* y, int m_dim, int k_dim, int n_dim, \
                                                           int group_size, float* part, unsigned* counters, \
                                                           int kslices) {                            \
        const QkAwqGemmG<T> d{qweight, qzeros, scales, n_dim, __ffs(group_size) - 1, qk_magic_reg(group_size), \
                              qk_f16_one(group_size)};                                               \
        qk_mma_gemm_grouped<QkAwqGemmG<T>, MT>(d, x, y, m_dim, n_dim, k_dim, part, counters, kslices);                        \
    }
QK_AWQ_GEMMG_ENTRY(float, f32, 1)
QK_AWQ_GEMMG_ENTRY(float, f32, 2)
QK_AWQ_GEMMG_ENTRY(__half, f16, 1)
QK_AWQ_GEMMG_ENTRY(__half, f16, 2)
QK_AWQ_GEMMG_ENTRY(__nv_bfloat16, bf16, 1)
QK_AWQ_GEMMG_ENTRY(__nv_bfloat16, bf16, 2)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define QK_AWQ_EMU(T, NAME)                                                                           \
    extern "C" void cpu_awq_dequant_4b_##NAME(const int* qweight, const int* qzeros, const T* scales, T* out, \
                                              int k_dim, int n_dim, int group_size, unsigned grid,    \
                                              unsigned block) {                                       \
        cpu_launch_serial(qk_dim(grid), qk_dim(block),                                                \
                          [&] { awq_dequant_4b_##NAME(qweight, qzeros, scales, out, k_dim, n_dim, group_size); }); \
    }
QK_AWQ_EMU(float, f32)
QK_AWQ_EMU(__half, f16)
QK_AWQ_EMU(__nv_bfloat16, bf16)
#define QK_AWQ_GEMV_EMU(T, NAME, MAXB)                                                               \
    extern "C" void cpu_awq_gemv_4b_##NAME##_b##MAXB(const int* qweight, const int* qzeros, const T* scales, \
                                                     const float* x, float* part, float* y, unsigned* counters, \
                                                     int k_dim, int n_dim, int group_size, int slice_rows, int nb, \
                                                     unsigned grid, unsigned block) {                \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            awq_gemv_4b_##NAME##_b##MAXB(qweight, qzeros, scales, x, part, y, counters, k_dim, n_dim, group_size, \
                                         slice_rows, nb);                                            \
        });                                                                                          \
    }
QK_AWQ_GEMV_EMU(float, f32, 1)
QK_AWQ_GEMV_EMU(float, f32, 8)
QK_AWQ_GEMV_EMU(__half, f16, 1)
QK_AWQ_GEMV_EMU(__half, f16, 8)
QK_AWQ_GEMV_EMU(__nv_bfloat16, bf16, 1)
QK_AWQ_GEMV_EMU(__nv_bfloat16, bf16, 8)
#define QK_AWQ_GEMM_EMU(T, NAME, MT)                                                                 \
    extern "C" void cpu_awq_gemm_4b_##NAME##_m##MT(const int* qweight, const int* qzeros, const T* scales, \
                                                   const float* x, float* y, int m_dim, int k_dim, int n_dim, \
                                                   int group_size, unsigned grid, unsigned block) {  \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            awq_gemm_4b_##NAME##_m##MT(qweight, qzeros, scales, x, y, m_dim, k_dim, n_dim, group_size); \
        });                                                                                          \
    }
QK_AWQ_GEMM_EMU(float, f32, 1)
QK_AWQ_GEMM_EMU(float, f32, 4)
QK_AWQ_GEMM_EMU(__half, f16, 1)
QK_AWQ_GEMM_EMU(__half, f16, 4)
QK_AWQ_GEMM_EMU(__nv_bfloat16, bf16, 1)
QK_AWQ_GEMM_EMU(__nv_bfloat16, bf16, 4)
#define QK_AWQ_GEMMG_EMU(T, NAME, MT)                                                                \
    extern "C" void cpu_awq_gemmg_4b_##NAME##_m##MT(const int* qweight, const int* qzeros, const T* scales, \
                                                    const float* x, float* y, int m_dim, int k_dim, int n_dim, \
                                                    int group_size, float* part, unsigned* counters, int kslices, \
                                                    unsigned grid, unsigned block) {                 \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            awq_gemmg_4b_##NAME##_m##MT(qweight, qzeros, scales, x, y, m_dim, k_dim, n_dim, group_size, part, counters, \
                                        kslices);                                                    \
        });                                                                                          \
    }
QK_AWQ_GEMMG_EMU(float, f32, 1)
QK_AWQ_GEMMG_EMU(float, f32, 2)
QK_AWQ_GEMMG_EMU(__half, f16, 1)
QK_AWQ_GEMMG_EMU(__half, f16, 2)
QK_AWQ_GEMMG_EMU(__nv_bfloat16, bf16, 1)
QK_AWQ_GEMMG_EMU(__nv_bfloat16, bf16, 2)
#endif
