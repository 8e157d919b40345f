// FP8 (E4M3 "fn", E5M2) dequantization on the GPU with block-wise (or per-tensor: one block)
// scales: out[r, c] = f32(w[r, c]) * scale[r / br, c / bc], one f32 multiplication, rounded once.
// Decoding is exact bit construction (NaN: quiet, sign and mantissa in the payload, as torch).
//
// Fast path (cols and block cols multiples of CV = 16 bytes of output: 8 codes for f16/bf16, 4
// for f32, so a thread's CV consecutive codes share one scale): a 2-D grid, x over CV-column
// vectors, y over chunks of QK_FP8_ROWS rows; a thread loads its rows' codes up front as aligned
// vectors (adjacent lanes: adjacent columns) and stores each row as one 16-byte vector, so a
// warp's stores are contiguous. Each code becomes the f16 with the same bits shifted into place
// (E5M2 is the top byte of an f16; E4M3's fields shifted into an f16 give its value / 256,
// subnormals included), widened exactly to f32 and multiplied by scale * 256 for E4M3 when that
// product is exact (always but for |scale| >= 2^120; those rows take the bit-construction
// decode). E4M3 NaN codes (which the f16 view reads as +-1.875) are found four at a time and
// patched. Static SASS (sm_90) of the loop: ~5-7 instructions per code (E5M2 / E4M3, f16 out)
// where the per-code decode with a scale look-up below takes ~45: on the H100 that path was
// instruction-bound at 40% of bandwidth. Other shapes: one thread per 8 consecutive codes of a
// row when cols % 8 == 0, else per code.
#include "gemv.cuh"
#include "gemm.cuh"

template <int MBITS, int BIAS, bool E4M3>
__device__ __forceinline__ float qk_fp8_decode(unsigned code) {
    const unsigned sign = (code >> 7) << 31;
    const int e = (int)((code >> MBITS) & ((1u << (7 - MBITS)) - 1u));
    const unsigned m = code & ((1u << MBITS) - 1u);
    const int emax = (1 << (7 - MBITS)) - 1;
    const bool special = E4M3 ? (e == emax && m == (1u << MBITS) - 1u) : (e == emax);
    unsigned bits;
    if (special) {
        bits = (!E4M3 && m == 0u) ? (sign | 0x7f800000u) : (sign | 0x7fc00000u | (m << (23 - MBITS)));
    } else if (e == 0) {
        // m * 2^(1 - BIAS - MBITS): exact in f32.
        const float v = (float)m * __int_as_float((127 + 1 - BIAS - MBITS) << 23);
        bits = (unsigned)__float_as_int(v) | sign;
    } else {
        bits = sign | ((unsigned)(e - BIAS + 127) << 23) | (m << (23 - MBITS));
    }
    return __int_as_float((int)bits);
}

template <int MBITS, int BIAS, bool E4M3, int VEC, typename S, typename T>
__device__ __forceinline__ void fp8_run(const unsigned char* __restrict__ codes, const S* __restrict__ scales,
                                        T* __restrict__ out, int rows, int cols, int br, int bc) {
    const int scols = (cols + bc - 1) / bc;
    const int cv = cols / VEC;
    const long long items = (long long)rows * cv;
    for (long long t = qk_linear0(); t < items; t += qk_linear_step()) {
        const int r = (int)(t / cv);
        const int c = (int)(t - (long long)r * cv) * VEC;
        const long long at = (long long)r * cols + c;
        const QkVec<unsigned char, VEC> w = *reinterpret_cast<const QkVec<unsigned char, VEC>*>(codes + at);
        // Scale index: one division per item, then step to the next block when crossing it.
        const S* srow = scales + (long long)(r / br) * scols;
        int cb = c / bc, next = (cb + 1) * bc;
        QkVec<T, VEC> o;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
            if (c + k >= next) {
                ++cb;
                next += bc;
            }
            const float s = qk_to_f32(srow[cb]);
            o.v[k] = qk_from_f32<T>(qk_fp8_decode<MBITS, BIAS, E4M3>(w.v[k]) * s);
        }
        *reinterpret_cast<QkVec<T, VEC>*>(out + at) = o;
    }
}

constexpr int QK_FP8_ROWS = 8;  // rows per thread on the vector path

// Codes 0, 1 (hi: 2, 3) of the 4 in `x` as the bits of two f16 (low lane: the first code):
// E5M2 is the top byte of its f16; E4M3's sign goes to bit 15 and its 7 exponent/mantissa bits
// to bits 7..13, which reads as its value / 256 (subnormals included). One byte permutation
// (+ 3 logic ops for E4M3) per 2 codes.
template <bool E4M3>
__device__ __forceinline__ unsigned qk_fp8_f16x2(unsigned x, bool hi) {
    const unsigned t = __byte_perm(x, 0u, hi ? 0x3424u : 0x1404u);  // code bytes to lane bytes 1, 3
    return E4M3 ? (((t & 0x7f007f00u) >> 1) | (t & 0x80008000u)) : t;
}

// The 4 codes of `x` (first in the low byte) through their f16 view, widened to f32 into v (E4M3:
// value / 256); returns nonzero when one of them is an E4M3 NaN, which the view misreads.
template <bool E4M3>
__device__ __forceinline__ unsigned qk_fp8_view4(unsigned x, float* v) {
#pragma unroll
    for (int k = 0; k < 2; ++k) {
        const unsigned h = qk_fp8_f16x2<E4M3>(x, k == 1);
        v[2 * k] = qk_f16_bits_to_f32(h & 0xffffu);
        v[2 * k + 1] = qk_f16_bits_to_f32(h >> 16);
    }
    // A byte whose low 7 bits are all ones (E4M3 NaN) becomes 0x80 after the add.
    return E4M3 ? ((x & 0x7f7f7f7fu) + 0x01010101u) & 0x80808080u : 0u;
}

// The rare cases, element by element from memory: CV codes times s with the bit-construction
// decode; `only_nan` keeps the other outputs (written by the vector path) as they are.
template <int MBITS, int BIAS, bool E4M3, int CV, typename T>
__device__ __noinline__ void fp8_slow(const unsigned char* __restrict__ codes, float s, T* __restrict__ out,
                                      bool only_nan) {
#pragma unroll 1
    for (int k = 0; k < CV; ++k) {
        const unsigned b = codes[k];
        if (!only_nan || (b & 0x7fu) == 0x7fu) out[k] = qk_from_f32<T>(qk_fp8_decode<MBITS, BIAS, E4M3>(b) * s);
    }
}

// One row of CV codes (its words `w`) times scale s (f: s * 256 for E4M3) into `o_row`; the
// rare cases (E4M3 NaN codes, |f| overflowing) from `codes` through fp8_slow.
template <int MBITS, int BIAS, bool E4M3, int CV, typename T>
__device__ __forceinline__ void fp8_row(const QkVec<unsigned, CV / 4>& w, const unsigned char* __restrict__ codes,
                                        float s, float f, bool exact, T* __restrict__ o_row) {
    if (!exact) {
        fp8_slow<MBITS, BIAS, E4M3, CV, T>(codes, s, o_row, false);
        return;
    }
    QkVec<T, CV> o;
    unsigned nan = 0u;
#pragma unroll
    for (int j = 0; j < CV / 4; ++j) {
        float v[4];
        nan |= qk_fp8_view4<E4M3>(w.v[j], v);
#pragma unroll
        for (int k = 0; k < 4; ++k) o.v[4 * j + k] = qk_from_f32<T>(v[k] * f);
    }
    *reinterpret_cast<QkVec<T, CV>*>(o_row) = o;
    if (E4M3 && nan != 0u) fp8_slow<MBITS, BIAS, E4M3, CV, T>(codes, s, o_row, true);
}

// E4M3 multiplies the f16 view by s * 256: exact unless that overflows (|s| >= 2^120).
template <bool E4M3>
__device__ __forceinline__ float qk_fp8_factor(float s, bool* exact) {
    const float f = E4M3 ? s * 256.0f : s;
    *exact = !E4M3 || fabsf(f) <= 3.402823466e38f;
    return f;
}

// Rows r0 .. r0 + QK_FP8_ROWS (those < rows) of the CV columns at `codes` / `out` (row 0 there),
// all in scale column `srow0[0]` (row block rb of r0: srow0 = scales + rb * scols + cb).
template <int MBITS, int BIAS, bool E4M3, int CV, typename T>
__device__ __forceinline__ void fp8_rows(const unsigned char* __restrict__ codes, const float* __restrict__ srow0,
                                         T* __restrict__ out, int nrows, int cols, int scols, int first_in_block,
                                         int br) {
    QkVec<unsigned, CV / 4> w[QK_FP8_ROWS];
#pragma unroll
    for (int i = 0; i < QK_FP8_ROWS; ++i)
        if (i < nrows) w[i] = *reinterpret_cast<const QkVec<unsigned, CV / 4>*>(codes + (long long)i * cols);
    int left = br - first_in_block;  // rows left in the current row block
    if (left >= QK_FP8_ROWS && nrows == QK_FP8_ROWS) {
        // The whole chunk in one row block (e.g. any chunk of 128-row blocks): one scale.
        bool exact;
        const float s = *srow0, f = qk_fp8_factor<E4M3>(s, &exact);
#pragma unroll
        for (int i = 0; i < QK_FP8_ROWS; ++i)
            fp8_row<MBITS, BIAS, E4M3, CV, T>(w[i], codes + (long long)i * cols, s, f, exact, out + (long long)i * cols);
        return;
    }
    const float* sp = srow0;
#pragma unroll
    for (int i = 0; i < QK_FP8_ROWS; ++i) {
        if (i >= nrows) break;
        if (left == 0) {
            sp += scols;
            left = br;
        }
        --left;
        bool exact;
        const float s = *sp, f = qk_fp8_factor<E4M3>(s, &exact);
        fp8_row<MBITS, BIAS, E4M3, CV, T>(w[i], codes + (long long)i * cols, s, f, exact, out + (long long)i * cols);
    }
}

// cols % CV == 0 and bc % CV == 0: x walks CV-column vectors, y chunks of QK_FP8_ROWS rows.
template <int MBITS, int BIAS, bool E4M3, int CV, typename T>
__device__ __forceinline__ void fp8_run_vec(const unsigned char* __restrict__ codes, const float* __restrict__ scales,
                                            T* __restrict__ out, int rows, int cols, int br, int bc) {
    const int scols = (cols + bc - 1) / bc;
    const int cv = cols / CV;
    const int chunks = (rows + QK_FP8_ROWS - 1) / QK_FP8_ROWS;
    for (int x = qk_x0(); x < cv; x += qk_xstep()) {
        const int c = x * CV;
        const float* scol = scales + c / bc;
        for (int ch = qk_y0(); ch < chunks; ch += qk_ystep()) {
            const int r0 = ch * QK_FP8_ROWS;
            const unsigned rb = (unsigned)r0 / (unsigned)br;
            const long long at = (long long)r0 * cols + c;
            fp8_rows<MBITS, BIAS, E4M3, CV, T>(codes + at, scol + (long long)rb * scols, out + at,
                                               min(QK_FP8_ROWS, rows - r0), cols, scols, r0 - (int)rb * br, br);
        }
    }
}

template <int MBITS, int BIAS, bool E4M3, typename S, typename T>
__device__ __forceinline__ void fp8_dequant(const unsigned char* __restrict__ codes, const S* __restrict__ scales,
                                            T* __restrict__ out, int rows, int cols, int br, int bc) {
    constexpr int CV = 16 / sizeof(T);  // codes per thread and row: 16 bytes of output
    if (cols % CV == 0 && bc % CV == 0) fp8_run_vec<MBITS, BIAS, E4M3, CV, T>(codes, scales, out, rows, cols, br, bc);
    else if ((cols & 7) == 0) fp8_run<MBITS, BIAS, E4M3, 8, S, T>(codes, scales, out, rows, cols, br, bc);
    else fp8_run<MBITS, BIAS, E4M3, 1, S, T>(codes, scales, out, rows, cols, br, bc);
}

// Entries: fp8_dequant_{e4m3,e5m2}_{elem}(codes, scales f32, out, rows, cols, block_rows, block_cols).
#define QK_FP8(FMT, MB, BI, E4, T, NAME)                                                              \
    extern "C" __global__ void fp8_dequant_##FMT##_##NAME(const unsigned char* codes, const float* scales, T* out, \
                                                          int rows, int cols, int br, int bc) {      \
        fp8_dequant<MB, BI, E4, float, T>(codes, scales, out, rows, cols, br, bc);                    \
    }
#define QK_FP8_ALL(FMT, MB, BI, E4) \
    QK_FP8(FMT, MB, BI, E4, float, f32) QK_FP8(FMT, MB, BI, E4, __half, f16) QK_FP8(FMT, MB, BI, E4, __nv_bfloat16, bf16)
QK_FP8_ALL(e4m3, 3, 7, true)
QK_FP8_ALL(e5m2, 2, 15, false)

// ---- Fused GEMV (gemv.cuh's row skeleton, one code a byte): segments are whole rows, so a
// chunk's row and scale-row block are per segment; a chunk of CH (BYTES: 8, or 16 at batch 1
// where the rows allow) codes shares one scale when the column blocks are multiples of CH, else
// each code takes its own. Codes decode through the f16 view (qk_fp8_f16x2: E4M3 reads as
// value / 256, folded into the chunk's scale as s * (256 d), so no overflow case); a chunk
// holding an E4M3 NaN code adds NaN, as its product would.
template <int MBITS, int BIAS, bool E4M3, int BYTES>
struct QkFp8Gemv {
    static constexpr bool PLANAR = false;
    static constexpr int P = 1, CH = BYTES, NR = BYTES / 4;
    const unsigned char* __restrict__ codes;
    const float* __restrict__ scales;
    int cols, br, bc, scols, lg_bc;

    // Chunks in flight a lane at batch 1 (gemv.cuh's row skeleton); a chunk's scale row is the
    // segment's, a few hundred bytes that stay in L1, so only the codes are loaded ahead.
    static constexpr int AHEAD = 2;
    using Raw = QkVec<unsigned, NR>;
    __device__ __forceinline__ Raw fetch(int t0, int c) const {
        return *reinterpret_cast<const Raw*>(codes + t0 + c);
    }

    template <int MAXB>
    __device__ __forceinline__ void dot(const Raw& v, int t0, int c, const int* xc, const float* __restrict__ x,
                                        int in_dim, int nb, float (*acc)[MAXB]) const {
        const int r = t0 / cols, col = t0 - r * cols + c;
        const float* srow = scales + (long long)(r / br) * scols;
        if (bc % CH == 0) {
            float q[CH];
            unsigned nan = 0u;
#pragma unroll
            for (int m = 0; m < NR; ++m) nan |= qk_fp8_view4<E4M3>(v.v[m], q + 4 * m);
            const float s = srow[lg_bc >= 0 ? (unsigned)col >> lg_bc : qk_div_slow((unsigned)col, (unsigned)bc)];
            float part[MAXB];
#pragma unroll
            for (int b = 0; b < MAXB; ++b) part[b] = 0.0f;
            qk_dot_scale<CH, MAXB>(q, x + xc[0], in_dim, nb, 1.0f, part);
#pragma unroll
            for (int b = 0; b < MAXB; ++b) {
                if (b >= nb) break;
                const float d = E4M3 ? part[b] * 256.0f : part[b];
                acc[0][b] = acc[0][b] + (nan != 0u ? __int_as_float(0x7fc00000) : s * d);
            }
        } else {
            // Column blocks narrower than a chunk: one division, then step to the next block
            // where the chunk crosses into it.
            float w[CH];
            int cb = (int)qk_div((unsigned)col, (unsigned)bc, lg_bc), next = (cb + 1) * bc;
#pragma unroll
            for (int i = 0; i < CH; ++i) {
                if (col + i >= next) {
                    ++cb;
                    next += bc;
                }
                const unsigned code = (v.v[i >> 2] >> (8 * (i & 3))) & 0xffu;
                w[i] = qk_fp8_decode<MBITS, BIAS, E4M3>(code) * srow[cb];
            }
            qk_dot_plain<CH, MAXB>(w, x + xc[0], in_dim, nb, acc[0]);
        }
    }
};

template <int MBITS, int BIAS, bool E4M3, int MAXB, int BYTES>
__device__ __forceinline__ void fp8_gemv_chunks(const unsigned char* codes, const float* scales, const float* x,
                                                float* part, int rows, int cols, int br, int bc, int seg, int team,
                                                int nb) {
    using D = QkFp8Gemv<MBITS, BIAS, E4M3, BYTES>;
    const D d{codes, scales, cols, br, bc, (cols + bc - 1) / bc, (bc & (bc - 1)) == 0 ? __ffs(bc) - 1 : -1};
    qk_row_gemv<D, MAXB>(d, x, part, rows * cols, (long long)rows * cols, cols, seg, team, nb);
}

// 16-byte chunks at batch 1 where the segment allows (qk_row_chunk_bytes).
template <int MBITS, int BIAS, bool E4M3, int MAXB>
__device__ __forceinline__ void fp8_gemv(const unsigned char* codes, const float* scales, const float* x, float* part,
                                         int rows, int cols, int br, int bc, int seg, int team, int nb) {
    qk_row_chunk_bytes<MAXB>(seg % 16 == 0, [&](auto bytes) {
        fp8_gemv_chunks<MBITS, BIAS, E4M3, MAXB, decltype(bytes)::value>(codes, scales, x, part, rows, cols, br, bc,
                                                                         seg, team, nb);
    });
}

// Entries: fp8_gemv_{e4m3,e5m2}_b{1,8}(codes, scales f32, x, part, rows, cols, block_rows,
// block_cols, seg, team, nb).
#define QK_FP8_GEMV(FMT, MB, BI, E4, MAXB)                                                            \
    extern "C" __global__ void fp8_gemv_##FMT##_b##MAXB(const unsigned char* codes, const float* scales, \
                                                        const float* x, float* part, int rows, int cols, int br, \
                                                        int bc, int seg, int team, int nb) {          \
        fp8_gemv<MB, BI, E4, MAXB>(codes, scales, x, part, rows, cols, br, bc, seg, team, nb);        \
    }
QK_FP8_GEMV(e4m3, 3, 7, true, 1)
QK_FP8_GEMV(e4m3, 3, 7, true, 8)
QK_FP8_GEMV(e5m2, 2, 15, false, 1)
QK_FP8_GEMV(e5m2, 2, 15, false, 8)

// ---- Tensor-core GEMM (gemm.cuh): W[n, k] = decode(code) * scale of its block, rounded to f16
// by the skeleton. The f32 product is the same as the dequantization's (an exact decode times
// the scale, one rounding), whichever decode path computes it.
template <int MBITS, int BIAS, bool E4M3>
struct QkFp8Gemm {
    const unsigned char* __restrict__ codes;
    const float* __restrict__ scales;
    int k_dim, br, bc, scols, lg_bc;

    struct Col {
        const unsigned char* row;  // output n's codes
        const float* srow;         // its row of scale blocks
    };
    __device__ __forceinline__ Col column(int n) const {
        return Col{codes + (long long)n * k_dim, scales + (long long)(n / br) * scols};
    }

    // Codes k, k + 1 and k + 8, k + 9 (two aligned 2-byte loads) through the f16 view (E4M3 as
    // value / 256, so its scale is taken times 256, exact unless |s| >= 2^120: then, and for an
    // E4M3 NaN code, the bit-construction decode).
    __device__ __forceinline__ void weights(const Col& c, int k, float* w) const {
        const unsigned lo = *reinterpret_cast<const unsigned short*>(c.row + k);
        const unsigned hi = *reinterpret_cast<const unsigned short*>(c.row + k + 8);
        const unsigned x = lo | (hi << 16);
        const bool one = bc % 16 == 0;  // k .. k + 9 in one column block
        const float s0 = c.srow[qk_div((unsigned)k, (unsigned)bc, lg_bc)];
        const float f = E4M3 ? s0 * 256.0f : s0;
        float v[4];
        const unsigned nan = qk_fp8_view4<E4M3>(x, v);
        if (one && nan == 0u && fabsf(f) <= 3.402823466e38f) {
#pragma unroll
            for (int i = 0; i < 4; ++i) w[i] = v[i] * f;
            return;
        }
        const int at[4] = {k, k + 1, k + 8, k + 9};
#pragma unroll
        for (int i = 0; i < 4; ++i)
            w[i] = qk_fp8_decode<MBITS, BIAS, E4M3>(c.row[at[i]]) * c.srow[qk_div((unsigned)at[i], (unsigned)bc, lg_bc)];
    }
};

// Entries: fp8_gemm_{e4m3,e5m2}_m{1,4}(codes, scales f32, x, y, M, K, N, block_rows, block_cols).
#define QK_FP8_GEMM(FMT, MB, BI, E4, MT)                                                              \
    extern "C" __global__ void fp8_gemm_##FMT##_m##MT(const unsigned char* codes, const float* scales, const float* x, \
                                                      float* y, int m_dim, int k_dim, int n_dim, int br, int bc) { \
        const QkFp8Gemm<MB, BI, E4> d{codes, scales, k_dim, br, bc, (k_dim + bc - 1) / bc,            \
                                      (bc & (bc - 1)) == 0 ? __ffs(bc) - 1 : -1};                      \
        qk_mma_gemm<QkFp8Gemm<MB, BI, E4>, MT, 4>(d, x, y, m_dim, n_dim, k_dim);                      \
    }
QK_FP8_GEMM(e4m3, 3, 7, true, 1)
QK_FP8_GEMM(e4m3, 3, 7, true, 4)
QK_FP8_GEMM(e5m2, 2, 15, false, 1)
QK_FP8_GEMM(e5m2, 2, 15, false, 4)

// ---- Group-scaled GEMM (gemm.cuh's qk_mma_gemm_grouped), for layers with no E4M3 NaN code
// (checked by the launcher) whose column blocks are a power of two >= 32 or span K: the codes
// enter the mma through their exact f16 view (codes 0, 1 and 2, 3 of each word as pairs) and
// each block's scale is applied in f32 (E4M3's view is value / 256: UNIT = 256).
template <int MBITS, int BIAS, bool E4M3, int NT_>
struct QkFp8GemmG {
    static constexpr int NT = NT_;
    static constexpr bool ZERO = false;
    static constexpr float UNIT = E4M3 ? 256.0f : 1.0f;
    static constexpr bool FOLD = false;
    const unsigned char* __restrict__ codes_;
    const float* __restrict__ scales;
    int k_dim, br, scols, lg;  // a column block is 2^lg codes (lg = 31: one block spans K)

    struct Col {
        const unsigned char* p;  // output n's codes
    };
    static constexpr int out(int n0, int j, int i) { return n0 + 8 * j + i; }
    static constexpr int slot(int s, int r, int h) { return 4 * s + 2 * r + h; }
    __device__ __forceinline__ Col column(int n) const { return Col{codes_ + (long long)n * k_dim}; }
    static constexpr int RAW = 2 * NT;  // 8 codes an output
    __device__ __forceinline__ void fetch(const Col* col, int k, unsigned* raw) const {
        qk_fetch_8bytes<NT>(col, k, raw);
    }
    __device__ __forceinline__ void decode(const Col*, const unsigned* raw, unsigned (*b)[2][2]) const {
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int s = 0; s < 2; ++s)
#pragma unroll
                for (int r = 0; r < 2; ++r) b[j][s][r] = qk_fp8_f16x2<E4M3>(raw[2 * j + s], r == 1);
    }
    __device__ __forceinline__ int group(int k0) const { return k0 >> lg; }
    // The lane's parameter columns n0 + 8j + 2t + c: the scale rows of their row blocks, found
    // once per tile (a division each), as offsets into the scales.
    struct Par {
        unsigned row[NT][2];  // row block * scols
    };
    __device__ __forceinline__ Par par(int n0, int t) const {
        Par p;
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int c = 0; c < 2; ++c) p.row[j][c] = (unsigned)((n0 + 8 * j + 2 * t + c) / br) * (unsigned)scols;
        return p;
    }
    __device__ __forceinline__ void params(const Par& p, int grp, float (*s)[2], float (*z)[2]) const {
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                s[j][c] = scales[p.row[j][c] + (unsigned)grp];
                z[j][c] = 0.0f;
            }
    }
};

// Entries: fp8_gemmg_{e4m3,e5m2}_m{1,2}(the GEMM's parameters): tiles of 16 x 64 (m1) or 32 x 32
// (m2) rows x outputs a warp (qk_gemmg_nt).
#define QK_FP8_GEMMG(FMT, MB, BI, E4, MT)                                                            \
    extern "C" __global__ void fp8_gemmg_##FMT##_m##MT(const unsigned char* codes, const float* scales, const float* x, \
                                                       float* y, int m_dim, int k_dim, int n_dim, int br, int bc, \
                                                       float* part, unsigned* counters, int kslices) {  \
        const QkFp8GemmG<MB, BI, E4, qk_gemmg_nt(MT)> d{codes, scales, k_dim, br, (k_dim + bc - 1) / bc,              \
                                       bc >= k_dim ? 31 : __ffs(bc) - 1};                             \
        qk_mma_gemm_grouped<QkFp8GemmG<MB, BI, E4, qk_gemmg_nt(MT)>, MT>(d, x, y, m_dim, n_dim, k_dim, part, counters, kslices);               \
    }
QK_FP8_GEMMG(e4m3, 3, 7, true, 1)
QK_FP8_GEMMG(e4m3, 3, 7, true, 2)
QK_FP8_GEMMG(e5m2, 2, 15, false, 1)
QK_FP8_GEMMG(e5m2, 2, 15, false, 2)

// Entries: fp8_gemmw_{e4m3,e5m2}(the group-scaled GEMM's parameters): the wide GEMM
// (qk_mma_gemm_wide), blocks of 64 rows x 4 tiles of 32 outputs.
#define QK_FP8_GEMMW(FMT, MB, BI, E4)                                                                 \
    extern "C" __global__ void fp8_gemmw_##FMT(const unsigned char* codes, const float* scales, const float* x, \
                                               float* y, int m_dim, int k_dim, int n_dim, int br, int bc, float* part, \
                                               unsigned* counters, int kslices) {                    \
        const QkFp8GemmG<MB, BI, E4, 4> d{codes, scales, k_dim, br, (k_dim + bc - 1) / bc,           \
                                          bc >= k_dim ? 31 : __ffs(bc) - 1};                         \
        qk_mma_gemm_wide(d, x, y, m_dim, n_dim, k_dim, part, counters, kslices);                     \
    }
QK_FP8_GEMMW(e4m3, 3, 7, true)
QK_FP8_GEMMW(e5m2, 2, 15, false)

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define QK_FP8_EMU(FMT, T, NAME)                                                                      \
    extern "C" void cpu_fp8_dequant_##FMT##_##NAME(const unsigned char* codes, const float* scales, T* out, int rows, \
                                                   int cols, int br, int bc, unsigned grid, unsigned block) { \
        cpu_launch_serial(qk_dim(grid), qk_dim(block),                                                \
                          [&] { fp8_dequant_##FMT##_##NAME(codes, scales, out, rows, cols, br, bc); }); \
    }
QK_FP8_EMU(e4m3, float, f32) QK_FP8_EMU(e4m3, __half, f16) QK_FP8_EMU(e4m3, __nv_bfloat16, bf16)
QK_FP8_EMU(e5m2, float, f32) QK_FP8_EMU(e5m2, __half, f16) QK_FP8_EMU(e5m2, __nv_bfloat16, bf16)
#define QK_FP8_GEMV_EMU(FMT, MAXB)                                                                    \
    extern "C" void cpu_fp8_gemv_##FMT##_b##MAXB(const unsigned char* codes, const float* scales, const float* x, \
                                                 float* part, int rows, int cols, int br, int bc, int seg, int team, \
                                                 int nb, unsigned grid, unsigned block) {            \
        cpu_launch_coop(qk_dim(grid), qk_dim(block),                                                  \
                        [&] { fp8_gemv_##FMT##_b##MAXB(codes, scales, x, part, rows, cols, br, bc, seg, team, nb); }); \
    }
QK_FP8_GEMV_EMU(e4m3, 1)
QK_FP8_GEMV_EMU(e4m3, 8)
QK_FP8_GEMV_EMU(e5m2, 1)
QK_FP8_GEMV_EMU(e5m2, 8)
#define QK_FP8_GEMM_EMU(FMT, MT)                                                                      \
    extern "C" void cpu_fp8_gemm_##FMT##_m##MT(const unsigned char* codes, const float* scales, const float* x, \
                                               float* y, int m_dim, int k_dim, int n_dim, int br, int bc, \
                                               unsigned grid, unsigned block) {                      \
        cpu_launch_coop(qk_dim(grid), qk_dim(block),                                                  \
                        [&] { fp8_gemm_##FMT##_m##MT(codes, scales, x, y, m_dim, k_dim, n_dim, br, bc); }); \
    }
QK_FP8_GEMM_EMU(e4m3, 1)
QK_FP8_GEMM_EMU(e4m3, 4)
QK_FP8_GEMM_EMU(e5m2, 1)
QK_FP8_GEMM_EMU(e5m2, 4)
#define QK_FP8_GEMMG_EMU(FMT, MT)                                                                     \
    extern "C" void cpu_fp8_gemmg_##FMT##_m##MT(const unsigned char* codes, const float* scales, const float* x, \
                                                float* y, int m_dim, int k_dim, int n_dim, int br, int bc, \
                                                float* part, unsigned* counters, int kslices, unsigned grid, \
                                                unsigned block) {                                    \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                            \
            fp8_gemmg_##FMT##_m##MT(codes, scales, x, y, m_dim, k_dim, n_dim, br, bc, part, counters, kslices); \
        });                                                                                           \
    }
QK_FP8_GEMMG_EMU(e4m3, 1)
QK_FP8_GEMMG_EMU(e4m3, 2)
QK_FP8_GEMMG_EMU(e5m2, 1)
QK_FP8_GEMMG_EMU(e5m2, 2)
#define QK_FP8_GEMMW_EMU(FMT)                                                                         \
    extern "C" void cpu_fp8_gemmw_##FMT(const unsigned char* codes, const float* scales, const float* x, float* y, \
                                        int m_dim, int k_dim, int n_dim, int br, int bc, float* part, unsigned* counters, \
                                        int kslices, unsigned grid, unsigned block) {                \
        cpu_launch_coop(qk_dim(grid), qk_dim(block), [&] {                                            \
            fp8_gemmw_##FMT(codes, scales, x, y, m_dim, k_dim, n_dim, br, bc, part, counters, kslices); \
        });                                                                                           \
    }
QK_FP8_GEMMW_EMU(e4m3)
QK_FP8_GEMMW_EMU(e5m2)
#endif
