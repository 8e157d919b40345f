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

QK_EACH_ELEM(QK_HQQ_DEQUANT, 8, 1, unsigned char)
QK_EACH_ELEM(QK_HQQ_DEQUANT, 4, 2, unsigned char)
QK_EACH_ELEM(QK_HQQ_DEQUANT, 3, 10, int)
QK_EACH_ELEM(QK_HQQ_DEQUANT, 2, 4, unsigned char)
QK_EACH_ELEM(QK_HQQ_DEQUANT, 1, 8, unsigned char)

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
QK_EACH_ELEM(QK_HQQ_EMU, 8, unsigned char)
QK_EACH_ELEM(QK_HQQ_EMU, 4, unsigned char)
QK_EACH_ELEM(QK_HQQ_EMU, 3, int)
QK_EACH_ELEM(QK_HQQ_EMU, 2, unsigned char)
QK_EACH_ELEM(QK_HQQ_EMU, 1, unsigned char)
#endif
