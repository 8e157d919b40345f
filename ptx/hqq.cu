// HQQ dequantization on the GPU: one templated kernel for every width, axis and element type.
//
// Layout (see src/hqq/mod.rs): the weight is viewed as a code matrix [rows, cols] (axis 0:
// [g, numel/g], zero/scale per column; axis 1: [numel/g, g], zero/scale per row), packed along
// its rows in planes: word [p, c] of the packed [prows, cols] matrix holds code rows
// p, p + prows, p + 2*prows, ... (first plane in the highest bits; 3-bit: 10 codes per int32,
// padding rows beyond `rows` are skipped).
//
// Axis 0 (zero/scale per column) runs on a 2-D grid: x over vectors of VEC columns, y over chunks
// of 16 / PER_WORD packed rows (at least 1). A thread loads its columns' zeros and scales once,
// then its chunk's packed words (adjacent threads: adjacent columns, so loads coalesce), and
// writes each plane's row as one aligned vector: the per-column parameters are not re-read for
// every packed row. Axis 1 (zero/scale per row; the code matrix is [numel/g, g], so rows are
// short) runs one thread per VEC packed words of one packed row, x over the few column vectors
// and y over packed rows (the launcher packs several rows into a warp). VEC is 16 bytes of
// output (8 f16/bf16, 4 f32), so each lane stores one full 16-byte vector and a warp's stores are
// contiguous; 1 when the column count is not a multiple of VEC. Packed bytes are read as 32-bit
// words, so a code costs one shift and one logic op (no byte unpacking).
//
// w = (q - zero) * scale in f32 (a subtraction and a multiplication: nothing to contract into an
// FMA), rounded once to the output type: bit-identical to the CPU reference. q becomes a float as
// (2^23 + q) - 2^23 (qk_u2f, exact) instead of through a slow integer-to-float conversion.
#include "gemv.cuh"
#include "gemm.cuh"

// The packed words of VEC consecutive columns of one packed row, as 32-bit registers: VEC bytes
// (1/2/4/8-bit, four to a register) or VEC ints (3-bit).
template <int BITS, int PER_WORD, int VEC, typename W>
struct QkHqqWords {
    static constexpr bool BYTES = sizeof(W) == 1;
    static constexpr int N = BYTES ? (VEC + 3) / 4 : VEC;
    unsigned r[N];

    // VEC columns from `p` (at a multiple of VEC elements from an aligned base: aligned).
    __device__ __forceinline__ void load(const W* __restrict__ p) {
        if (BYTES && VEC == 1) {
            r[0] = *p;
        } else {
            using U = QkVec<unsigned, N>;
            const U v = *reinterpret_cast<const U*>(p);
#pragma unroll
            for (int i = 0; i < N; ++i) r[i] = v.v[i];
        }
    }

    // Plane j (first plane in the highest bits) of column k, as a float.
    __device__ __forceinline__ float code(int k, int j, unsigned magic) const {
        const int shift = (BYTES ? 8 * (k & 3) : 0) + BITS * (PER_WORD - 1 - j);
        const unsigned q = (r[BYTES ? k >> 2 : k] >> shift) & ((1u << BITS) - 1u);
        return qk_u2f(q, magic);
    }
};

// Code rows past `rows` exist only as 3-bit padding (10 planes a word); other widths' row counts
// are whole multiples of their planes (checked by the launcher).
template <int BITS>
__device__ __forceinline__ bool hqq_row_ok(int r, int rows) {
    return BITS != 3 || r < rows;
}

template <int BITS, int PER_WORD, int VEC, typename W, typename T>
__device__ __forceinline__ void hqq_axis0(const W* __restrict__ packed, const T* __restrict__ scales,
                                          const T* __restrict__ zeros, T* __restrict__ out, int rows, int cols,
                                          int prows) {
    constexpr int PR = PER_WORD >= 16 ? 1 : 16 / PER_WORD;  // packed rows per chunk
    const int cv = cols / VEC;
    const int chunks = (prows + PR - 1) / PR;
    const long long plane = (long long)prows * cols;  // elements from plane j's row to plane j+1's
    const unsigned magic = qk_magic_reg(rows);
    for (int x = qk_x0(); x < cv; x += qk_xstep()) {
        const int c = x * VEC;
        const QkVec<T, VEC> zv = *reinterpret_cast<const QkVec<T, VEC>*>(zeros + c);
        const QkVec<T, VEC> sv = *reinterpret_cast<const QkVec<T, VEC>*>(scales + c);
        float z[VEC], s[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
            z[k] = qk_to_f32(zv.v[k]);
            s[k] = qk_to_f32(sv.v[k]);
        }
        for (int ch = qk_y0(); ch < chunks; ch += qk_ystep()) {
            const int p0 = ch * PR;
            const int np = min(PR, prows - p0);
            const long long at = (long long)p0 * cols + c;
            QkHqqWords<BITS, PER_WORD, VEC, W> w[PR];
#pragma unroll
            for (int i = 0; i < PR; ++i)
                if (i < np) w[i].load(packed + at + (long long)i * cols);
#pragma unroll
            for (int i = 0; i < PR; ++i) {
                if (i >= np) break;
                T* op = out + at + (long long)i * cols;
#pragma unroll
                for (int j = 0; j < PER_WORD; ++j, op += plane) {
                    if (!hqq_row_ok<BITS>(j * prows + p0 + i, rows)) break;
                    QkVec<T, VEC> o;
#pragma unroll
                    for (int k = 0; k < VEC; ++k) o.v[k] = qk_from_f32<T>((w[i].code(k, j, magic) - z[k]) * s[k]);
                    *reinterpret_cast<QkVec<T, VEC>*>(op) = o;
                }
            }
        }
    }
}

template <int BITS, int PER_WORD, int VEC, typename W, typename T>
__device__ __forceinline__ void hqq_axis1(const W* __restrict__ packed, const T* __restrict__ scales,
                                          const T* __restrict__ zeros, T* __restrict__ out, int rows, int cols,
                                          int prows) {
    const unsigned magic = qk_magic_reg(rows);
    const int cv = cols / VEC;
    const long long plane = (long long)prows * cols;
    for (int x = qk_x0(); x < cv; x += qk_xstep()) {
        const int c = x * VEC;
        for (int p = qk_y0(); p < prows; p += qk_ystep()) {
            QkHqqWords<BITS, PER_WORD, VEC, W> w;
            w.load(packed + (long long)p * cols + c);
            T* op = out + (long long)p * cols + c;
#pragma unroll
            for (int j = 0; j < PER_WORD; ++j, op += plane) {
                const int r = j * prows + p;
                if (!hqq_row_ok<BITS>(r, rows)) break;
                const float z = qk_to_f32(zeros[r]), s = qk_to_f32(scales[r]);
                QkVec<T, VEC> o;
#pragma unroll
                for (int k = 0; k < VEC; ++k) o.v[k] = qk_from_f32<T>((w.code(k, j, magic) - z) * s);
                *reinterpret_cast<QkVec<T, VEC>*>(op) = o;
            }
        }
    }
}

// VEC = 16 bytes of output when the column count allows aligned vectors, else 1.
template <int BITS, int PER_WORD, typename W, typename T>
__device__ __forceinline__ void hqq_dequant(const W* __restrict__ packed, const T* __restrict__ scales,
                                            const T* __restrict__ zeros, T* __restrict__ out, int rows,
                                            int cols, int prows, int axis) {
    constexpr int VEC = 16 / sizeof(T);
    if (axis == 0) {
        if (cols % VEC == 0) hqq_axis0<BITS, PER_WORD, VEC, W, T>(packed, scales, zeros, out, rows, cols, prows);
        else hqq_axis0<BITS, PER_WORD, 1, W, T>(packed, scales, zeros, out, rows, cols, prows);
    } else {
        if (cols % VEC == 0) hqq_axis1<BITS, PER_WORD, VEC, W, T>(packed, scales, zeros, out, rows, cols, prows);
        else hqq_axis1<BITS, PER_WORD, 1, W, T>(packed, scales, zeros, out, rows, cols, prows);
    }
}

// Entry points: hqq_dequant_{bits}b_{elem}; scales, zeros and output share the element type.
#define QK_HQQ_DEQUANT(BITS, PER_WORD, W, T, NAME)                                                   \
    extern "C" __global__ void hqq_dequant_##BITS##b_##NAME(const W* packed, const T* scales,        \
                                                            const T* zeros, T* out, int rows,        \
                                                            int cols, int prows, int axis) {         \
        hqq_dequant<BITS, PER_WORD, W, T>(packed, scales, zeros, out, rows, cols, prows, axis);      \
    }
#define QK_HQQ_DEQUANT_ALL_ELEMS(BITS, PER_WORD, W)                                                  \
    QK_HQQ_DEQUANT(BITS, PER_WORD, W, float, f32)                                                    \
    QK_HQQ_DEQUANT(BITS, PER_WORD, W, __half, f16)                                                   \
    QK_HQQ_DEQUANT(BITS, PER_WORD, W, __nv_bfloat16, bf16)

QK_HQQ_DEQUANT_ALL_ELEMS(8, 1, unsigned char)
QK_HQQ_DEQUANT_ALL_ELEMS(4, 2, unsigned char)
QK_HQQ_DEQUANT_ALL_ELEMS(3, 10, int)
QK_HQQ_DEQUANT_ALL_ELEMS(2, 4, unsigned char)
QK_HQQ_DEQUANT_ALL_ELEMS(1, 8, unsigned char)

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

// ---- Group-scaled GEMM (gemm.cuh's qk_mma_gemm_grouped) for 4- and 8-bit HQQ on axis 1 with the
// group (cols) a power of two >= 32 that divides K: output n's groups are code rows n K / cols +
// k / cols. Its plane is fixed (N % 32 == 0 puts plane boundaries between outputs), so a lane's
// 8 codes are 8 bytes of one plane, taken as bytes 0, 2 and 1, 3 of each word.
template <int BITS, typename T>
struct QkHqqGemmG {
    static constexpr int NT = 4;
    static constexpr bool ZERO = true;
    static constexpr float UNIT = 1.0f;
    const unsigned char* __restrict__ packed;
    const T* __restrict__ scales;
    const T* __restrict__ zeros;
    int k_dim, words, gpr, lg;  // gpr: groups per output (K / cols); cols = 2^lg
    unsigned one;

    struct Col {
        const unsigned char* p;  // output n's first code in its plane
        int shift;               // the plane's bits in each byte
    };
    static constexpr int out(int n0, int j, int i) { return n0 + 8 * j + i; }
    static constexpr int slot(int s, int r, int h) { return 4 * s + r + 2 * h; }
    __device__ __forceinline__ Col column(int n) const {
        const long long f = (long long)n * k_dim;
        const int j = (int)(f / words);
        return Col{packed + (f - (long long)j * words), BITS * (8 / BITS - 1 - j)};
    }
    __device__ __forceinline__ void codes(const Col* col, int k, unsigned (*b)[2][2]) const {
        qk_codes_each(*this, col, k, b);
    }
    __device__ __forceinline__ void code(const Col& c, int k, unsigned (*b)[2]) const {
        const QkVec<unsigned, 2> w = *reinterpret_cast<const QkVec<unsigned, 2>*>(c.p + (unsigned)k);
#pragma unroll
        for (int s = 0; s < 2; ++s)
            qk_u8x4_f16(BITS == 8 ? w.v[s] : (w.v[s] >> c.shift) & 0x0f0f0f0fu, one, b[s]);
    }
    __device__ __forceinline__ int group(int k0) const { return k0 >> lg; }
    // Columns n, n + 1.
    __device__ __forceinline__ void params(int n, int grp, float* s, float* z) const {
        const unsigned row = (unsigned)n * (unsigned)gpr + (unsigned)grp;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            s[c] = qk_to_f32(scales[row + c * gpr]);
            z[c] = qk_to_f32(zeros[row + c * gpr]);
        }
    }
};

// Entries: hqq_gemmg_{4,8}b_{elem}_m{1,2}(the GEMM's parameters; axis 1 only): tiles of 16 (m1)
// or 32 (m2) rows by 32 outputs a warp.
#define QK_HQQ_GEMMG_ENTRY(BITS, T, NAME, MT)                                                        \
    extern "C" __global__ void hqq_gemmg_##BITS##b_##NAME##_m##MT(                                   \
        const unsigned char* packed, const T* scales, const T* zeros, const float* x, float* y, int m_dim, \
        int k_dim, int n_dim, int cols, int prows, int axis, float* part, unsigned* counters, int kslices) { \
        const QkHqqGemmG<BITS, T> d{packed, scales, zeros, k_dim, prows * cols, k_dim / cols, __ffs(cols) - 1, \
                                    qk_f16_one(cols)};                                               \
        qk_mma_gemm_grouped<QkHqqGemmG<BITS, T>, MT>(d, x, y, m_dim, n_dim, k_dim, part, counters, kslices);                  \
    }
#define QK_HQQ_GEMMG_ALL(BITS)                                                                       \
    QK_HQQ_GEMMG_ENTRY(BITS, float, f32, 1) QK_HQQ_GEMMG_ENTRY(BITS, float, f32, 2)                  \
    QK_HQQ_GEMMG_ENTRY(BITS, __half, f16, 1) QK_HQQ_GEMMG_ENTRY(BITS, __half, f16, 2)                \
    QK_HQQ_GEMMG_ENTRY(BITS, __nv_bfloat16, bf16, 1) QK_HQQ_GEMMG_ENTRY(BITS, __nv_bfloat16, bf16, 2)
QK_HQQ_GEMMG_ALL(4)
QK_HQQ_GEMMG_ALL(8)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
// CPU emulation launchers (cuda-emu): run an entry over a grid, one emulated thread at a time.
#define QK_HQQ_EMU(BITS, W, T, NAME)                                                                 \
    extern "C" void cpu_hqq_dequant_##BITS##b_##NAME(const W* packed, const T* scales, const T* zeros, \
                                                     T* out, int rows, int cols, int prows, int axis, \
                                                     unsigned grid, unsigned block) {                \
        cpu_launch_serial(qk_dim(grid), qk_dim(block), [&] {                                         \
            hqq_dequant_##BITS##b_##NAME(packed, scales, zeros, out, rows, cols, prows, axis);       \
        });                                                                                          \
    }
#define QK_HQQ_EMU_ALL_ELEMS(BITS, W)                                                                \
    QK_HQQ_EMU(BITS, W, float, f32) QK_HQQ_EMU(BITS, W, __half, f16) QK_HQQ_EMU(BITS, W, __nv_bfloat16, bf16)
QK_HQQ_EMU_ALL_ELEMS(8, unsigned char)
QK_HQQ_EMU_ALL_ELEMS(4, unsigned char)
QK_HQQ_EMU_ALL_ELEMS(3, int)
QK_HQQ_EMU_ALL_ELEMS(2, unsigned char)
QK_HQQ_EMU_ALL_ELEMS(1, unsigned char)
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
#define QK_HQQ_GEMMG_EMU(BITS, T, NAME, MT)                                                          \
    extern "C" void cpu_hqq_gemmg_##BITS##b_##NAME##_m##MT(                                          \
        const unsigned char* packed, const T* scales, const T* zeros, const float* x, float* y, int m_dim, \
        int k_dim, int n_dim, int cols, int prows, int axis, float* part, unsigned* counters, int kslices, \
        unsigned grid, unsigned block) {                                                             \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                           \
            hqq_gemmg_##BITS##b_##NAME##_m##MT(packed, scales, zeros, x, y, m_dim, k_dim, n_dim, cols, prows, axis, \
                                               part, counters, kslices);                             \
        });                                                                                          \
    }
#define QK_HQQ_GEMMG_EMU_ALL(BITS)                                                                   \
    QK_HQQ_GEMMG_EMU(BITS, float, f32, 1) QK_HQQ_GEMMG_EMU(BITS, float, f32, 2)                      \
    QK_HQQ_GEMMG_EMU(BITS, __half, f16, 1) QK_HQQ_GEMMG_EMU(BITS, __half, f16, 2)                    \
    QK_HQQ_GEMMG_EMU(BITS, __nv_bfloat16, bf16, 1) QK_HQQ_GEMMG_EMU(BITS, __nv_bfloat16, bf16, 2)
QK_HQQ_GEMMG_EMU_ALL(4)
QK_HQQ_GEMMG_EMU_ALL(8)
#endif
