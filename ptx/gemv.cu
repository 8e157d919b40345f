// Fused batch-1 dequant-GEMV for 4-bit HQQ (axis 1) and 4-bit GPTQ: weights are decoded in
// registers and multiplied with x, never written out. Deterministic: each thread accumulates a
// fixed part in a fixed order into a partial sum, and a second kernel adds the partials of each
// output in a fixed order (no atomics, no cross-thread cooperation).
//
// A batch-1 GEMV reads half a byte per 4-bit weight, so at full bandwidth a GPU has only about
// five instructions per weight: the inner loops factor each group's zero point and scale out of
// the sum, sum_i (q_i - z) * s * x_i = s * (sum_i q_i x_i - z * sum_i x_i), so a weight costs a
// shift, a logic op, a subtraction (q as (2^23 + q) - 2^23: qk_u2f) and one fused multiply-add;
// sum_i x_i is shared by the codes that meet the same x (both HQQ planes, the GPTQ columns).
// The results match the dequantize-then-multiply reference within f32 rounding (tests: 1e-5 of
// sum |w x|), not bit for bit.
#include "common.cuh"

// ---- HQQ, 4-bit, axis 1: y[o] = sum_i W[o, i] x[i], W [out, in] row-major; its flat elements
// [0, numel/2) are the high nibbles of packed bytes [0, numel/2) (plane 0), [numel/2, numel) the
// low nibbles (plane 1); the zero/scale of flat element f is that of code row f / g.
//
// The packed bytes are cut into segments of `seg` bytes (seg = in, or in/2 when the output count
// is odd, so that a segment lies in one output row in both planes). QK_GEMV_TEAM threads share a
// segment: thread j takes its chunks j, j + TEAM, ... of CB bytes (adjacent threads: adjacent
// chunks, so the loads coalesce) and writes one partial per plane: partial[S * TEAM + j] for flat
// segment S (plane 0: s, plane 1: numel/2/seg + s). y[o] then sums the in/seg * TEAM partials of
// its row in order.
constexpr int QK_GEMV_TEAM = 16;

// CB packed bytes as 32-bit words (byte i in bits 8*(i%4) of word i/4; CB = 1: one byte; else
// CB is a multiple of 16).
template <int CB>
struct QkBytes {
    static constexpr int N = (CB + 3) / 4;
    unsigned w[N];
    __device__ __forceinline__ void load(const unsigned char* __restrict__ p) {
        if (CB == 1) {
            w[0] = *p;
        } else {
#pragma unroll
            for (int i = 0; i < N; i += 4) {  // 16-byte vectors (p is at a multiple of CB)
                const QkVec<unsigned, 4> v = *reinterpret_cast<const QkVec<unsigned, 4>*>(p + 4 * i);
#pragma unroll
                for (int k = 0; k < 4; ++k) w[i + k] = v.v[k];
            }
        }
    }
    // Bits from `shift` up of byte i.
    __device__ __forceinline__ unsigned byte_bits(int i, int shift) const { return w[i >> 2] >> (8 * (i & 3) + shift); }
};

// CB floats of x (4-float vectors when CB > 1: the offset is a multiple of CB).
template <int CB>
__device__ __forceinline__ void qk_load_x(const float* __restrict__ x, float* v) {
    if (CB == 1) {
        v[0] = *x;
    } else {
#pragma unroll
        for (int i = 0; i < CB; i += 4) {
            const QkVec<float, 4> q = *reinterpret_cast<const QkVec<float, 4>*>(x + i);
#pragma unroll
            for (int k = 0; k < 4; ++k) v[i + k] = q.v[k];
        }
    }
}

// SAME_X: seg == in, so both planes of a byte meet the same input (an even output count).
template <int CB, bool SAME_X, typename T>
__device__ __forceinline__ void hqq_gemv4_segments(const unsigned char* __restrict__ packed,
                                                   const T* __restrict__ scales, const T* __restrict__ zeros,
                                                   const float* __restrict__ x, float* __restrict__ partial,
                                                   int g, int prows, int in_dim, int seg) {
    constexpr int STEP = QK_GEMV_TEAM * CB;    // bytes a team covers per step
    const long long half = (long long)prows * g;  // bytes; flat elements per plane
    const long long segs = half / seg;            // per plane
    const int lg = (g & (g - 1)) == 0 ? __ffs(g) - 1 : -1;  // log2(g) when a power of two
    const unsigned magic = qk_magic_reg(seg);
    for (long long t = qk_linear0(); t < segs * QK_GEMV_TEAM; t += qk_linear_step()) {
        const long long s = t / QK_GEMV_TEAM;
        const int j = (int)(t % QK_GEMV_TEAM);
        const long long base = s * seg;
        // Code rows of the segment's start (g divides seg), its bytes and x, from chunk j on.
        const long long r0 = lg >= 0 ? base >> lg : base / g;
        const T* z0p = zeros + r0;
        const T* s0p = scales + r0;
        const unsigned char* bp = packed + base + j * CB;
        const float* x0p = x + base % in_dim + j * CB;
        const float* x1p = x + (half + base) % in_dim + j * CB;
        float acc0 = 0.0f, acc1 = 0.0f;
        // The packed bytes (the stream from memory) are loaded one chunk ahead, so each thread
        // keeps two chunks in flight without unrolling.
        QkBytes<CB> next;
        if (j * CB < seg) next.load(bp);
#pragma unroll 1
        for (int c = j * CB; c < seg; c += STEP, bp += STEP, x0p += STEP, x1p += STEP) {
            const QkBytes<CB> b = next;
            if (c + STEP < seg) next.load(bp + STEP);
            const int r = lg >= 0 ? c >> lg : c / g;  // the chunk's group (CB | g: one group)
            const float z0 = qk_to_f32(z0p[r]), sc0 = qk_to_f32(s0p[r]);
            const float z1 = qk_to_f32(z0p[r + prows]), sc1 = qk_to_f32(s0p[r + prows]);
            float xa[CB], xb[CB];
            qk_load_x<CB>(x0p, xa);
            if (!SAME_X) qk_load_x<CB>(x1p, xb);
            float d0 = 0.0f, d1 = 0.0f, sx0 = 0.0f, sx1 = 0.0f;
#pragma unroll
            for (int i = 0; i < CB; ++i) {
                const float xi1 = SAME_X ? xa[i] : xb[i];
                d0 = __fmaf_rn(qk_u2f(b.byte_bits(i, 4) & 15u, magic), xa[i], d0);
                d1 = __fmaf_rn(qk_u2f(b.byte_bits(i, 0) & 15u, magic), xi1, d1);
                sx0 = sx0 + xa[i];
                if (!SAME_X) sx1 = sx1 + xi1;
            }
            if (SAME_X) sx1 = sx0;
            acc0 = acc0 + sc0 * (d0 - z0 * sx0);
            acc1 = acc1 + sc1 * (d1 - z1 * sx1);
        }
        partial[s * QK_GEMV_TEAM + j] = acc0;
        partial[(segs + s) * QK_GEMV_TEAM + j] = acc1;
    }
}

// 32-byte chunks when a chunk stays in one group (g % 32 == 0; segments are multiples of g),
// 16-byte chunks when g % 16 == 0, else single bytes.
template <typename T>
__device__ __forceinline__ void hqq_gemv4_partial(const unsigned char* __restrict__ packed,
                                                  const T* __restrict__ scales, const T* __restrict__ zeros,
                                                  const float* __restrict__ x, float* __restrict__ partial,
                                                  int rows, int g, int prows, int in_dim) {
    const long long outs = (long long)rows * g / in_dim;
    const int seg = outs % 2 == 0 ? in_dim : in_dim / 2;
    if (g % 32 == 0) {
        if (seg == in_dim) hqq_gemv4_segments<32, true, T>(packed, scales, zeros, x, partial, g, prows, in_dim, seg);
        else hqq_gemv4_segments<32, false, T>(packed, scales, zeros, x, partial, g, prows, in_dim, seg);
    } else if (g % 16 == 0) {
        if (seg == in_dim) hqq_gemv4_segments<16, true, T>(packed, scales, zeros, x, partial, g, prows, in_dim, seg);
        else hqq_gemv4_segments<16, false, T>(packed, scales, zeros, x, partial, g, prows, in_dim, seg);
    } else {
        if (seg == in_dim) hqq_gemv4_segments<1, true, T>(packed, scales, zeros, x, partial, g, prows, in_dim, seg);
        else hqq_gemv4_segments<1, false, T>(packed, scales, zeros, x, partial, g, prows, in_dim, seg);
    }
}

// y[o] = sum over the output's `per` consecutive partials, in order.
__device__ __forceinline__ void gemv_reduce_rows(const float* __restrict__ partial, float* __restrict__ y,
                                                 int outs, int per) {
    for (long long o = qk_linear0(); o < outs; o += qk_linear_step()) {
        float acc = 0.0f;
        for (int t = 0; t < per; ++t) acc = acc + partial[o * per + t];
        y[o] = acc;
    }
}

// ---- GPTQ, 4-bit: y[n] = sum_k W[k, n] x[k], W [K, N]. A 2-D grid: x over vectors of 4 columns
// (adjacent threads: adjacent columns), y over slices of `slice_rows` input rows; a thread
// writes partial[slice, n..n+4] and y[n] = sum over slices in order. When a slice's rows share
// one group (no act-order, slices within groups) its zero points and scales are decoded once and
// factored out; otherwise each row's group is decoded and applied to its row.
template <typename T>
__device__ __forceinline__ void gptq_gemv4_zs(const int* __restrict__ qzeros, const T* __restrict__ scales,
                                              int zcols, int n_dim, int g, int n, int format, unsigned magic,
                                              float* zm, float* s) {
    // The 4 columns' zero points share one qzeros word (n % 4 == 0, 8 fields a word); each
    // becomes 2^23 + z (qk_magic), no integer-to-float conversion.
    // g >= 0 (checked when g_idx is uploaded): unsigned 32 x 32 -> 64-bit offsets, one
    // instruction each.
    unsigned zw = (unsigned)qzeros[(unsigned long long)(unsigned)g * (unsigned)zcols + (unsigned)(n >> 3)];
    if (format == 0) zw += 0x11111111u;  // v1 -> v2 the way GPTQModel reads it (wrapping)
    zw >>= (n & 7) * 4;
    const QkVec<T, 4> sv = *reinterpret_cast<const QkVec<T, 4>*>(
        scales + ((unsigned long long)(unsigned)g * (unsigned)n_dim + (unsigned)n));
#pragma unroll
    for (int c = 0; c < 4; ++c) {
        zm[c] = qk_magic((zw >> (4 * c)) & 15u, magic);
        s[c] = qk_to_f32(sv.v[c]);
    }
}

template <typename T>
__device__ __forceinline__ void gptq_gemv4_partial(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                                   const T* __restrict__ scales, const int* __restrict__ g_idx,
                                                   const float* __restrict__ x, float* __restrict__ partial,
                                                   int k_dim, int n_dim, int slice_rows, int format) {
    const int nv = n_dim / 4, slices = k_dim / slice_rows, zcols = n_dim / 8;
    const unsigned magic = qk_magic_reg(format);
    for (int v = qk_x0(); v < nv; v += qk_xstep()) {
        const int n = 4 * v;
        for (int sl = qk_y0(); sl < slices; sl += qk_ystep()) {
            const int k0 = sl * slice_rows;
            // One group for the whole slice? (k0 and slice_rows are multiples of 8: 4-row vectors.)
            const int g0 = g_idx[k0];
            bool one = true;
            for (int i = 0; i < slice_rows && one; i += 4) {
                const QkVec<int, 4> gv = *reinterpret_cast<const QkVec<int, 4>*>(g_idx + k0 + i);
                one = gv.v[0] == g0 && gv.v[1] == g0 && gv.v[2] == g0 && gv.v[3] == g0;
            }
            float zm[4], s[4], acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const int* wp = qweight + (long long)(k0 / 8) * n_dim + n;
            if (one) {
                gptq_gemv4_zs<T>(qzeros, scales, zcols, n_dim, g0, n, format, magic, zm, s);
                float sx = 0.0f;
#pragma unroll 2
                for (int wr = 0; wr < slice_rows / 8; ++wr, wp += n_dim) {
                    const QkVec<int, 4> w = *reinterpret_cast<const QkVec<int, 4>*>(wp);
                    const QkVec<float, 4> xa = *reinterpret_cast<const QkVec<float, 4>*>(x + k0 + 8 * wr);
                    const QkVec<float, 4> xb = *reinterpret_cast<const QkVec<float, 4>*>(x + k0 + 8 * wr + 4);
                    const float xk[8] = {xa.v[0], xa.v[1], xa.v[2], xa.v[3], xb.v[0], xb.v[1], xb.v[2], xb.v[3]};
#pragma unroll
                    for (int j = 0; j < 8; ++j) {
                        sx = sx + xk[j];
#pragma unroll
                        for (int c = 0; c < 4; ++c)
                            acc[c] = __fmaf_rn(qk_u2f(((unsigned)w.v[c] >> (4 * j)) & 15u, magic), xk[j], acc[c]);
                    }
                }
#pragma unroll
                for (int c = 0; c < 4; ++c) acc[c] = s[c] * (acc[c] - (zm[c] - 8388608.0f) * sx);
            } else {
                // Act-order: every row decodes its own group (the 8 rows of a word row read their
                // groups and inputs as two vectors each); (2^23 + q) - (2^23 + z) is q - z exactly.
#pragma unroll 1
                for (int wr = 0; wr < slice_rows / 8; ++wr, wp += n_dim) {
                    const int k = k0 + 8 * wr;
                    const QkVec<int, 4> w = *reinterpret_cast<const QkVec<int, 4>*>(wp);
                    const QkVec<int, 4> ga = *reinterpret_cast<const QkVec<int, 4>*>(g_idx + k);
                    const QkVec<int, 4> gb = *reinterpret_cast<const QkVec<int, 4>*>(g_idx + k + 4);
                    const QkVec<float, 4> xa = *reinterpret_cast<const QkVec<float, 4>*>(x + k);
                    const QkVec<float, 4> xb = *reinterpret_cast<const QkVec<float, 4>*>(x + k + 4);
                    const int gk[8] = {ga.v[0], ga.v[1], ga.v[2], ga.v[3], gb.v[0], gb.v[1], gb.v[2], gb.v[3]};
                    const float xk[8] = {xa.v[0], xa.v[1], xa.v[2], xa.v[3], xb.v[0], xb.v[1], xb.v[2], xb.v[3]};
#pragma unroll
                    for (int j = 0; j < 8; ++j) {
                        gptq_gemv4_zs<T>(qzeros, scales, zcols, n_dim, gk[j], n, format, magic, zm, s);
#pragma unroll
                        for (int c = 0; c < 4; ++c) {
                            const float q = qk_magic(((unsigned)w.v[c] >> (4 * j)) & 15u, magic);
                            acc[c] = __fmaf_rn((q - zm[c]) * s[c], xk[j], acc[c]);
                        }
                    }
                }
            }
            *reinterpret_cast<QkVec<float, 4>*>(partial + (long long)sl * n_dim + n) =
                QkVec<float, 4>{{acc[0], acc[1], acc[2], acc[3]}};
        }
    }
}

// y[n] = sum_s partial[s, n], in order of s.
__device__ __forceinline__ void gemv_reduce_cols(const float* __restrict__ partial, float* __restrict__ y,
                                                 int n_dim, int slices) {
    for (long long n = qk_linear0(); n < n_dim; n += qk_linear_step()) {
        float acc = 0.0f;
        for (int s = 0; s < slices; ++s) acc = acc + partial[(long long)s * n_dim + n];
        y[n] = acc;
    }
}

// out[r k + i] = x[r k + perm[i]] for r < rows, i < k (inputs on x, rows on y, both
// grid-strided): the inputs of a GPTQ layer whose rows were sorted by group (gptq::sort),
// gathered on the device; perm is a permutation of 0..k checked on the host, rows k < 2^31.
__device__ __forceinline__ void gather_rows(const float* __restrict__ x, const int* __restrict__ perm,
                                            float* __restrict__ out, int k, int rows) {
    for (int r = qk_y0(); r < rows; r += qk_ystep())
        for (int i = qk_x0(); i < k; i += qk_xstep()) out[r * k + i] = x[r * k + perm[i]];
}

#define QK_HQQ_GEMV(T, NAME)                                                                          \
    extern "C" __global__ void hqq_gemv_4b_##NAME(const unsigned char* packed, const T* scales,       \
                                                  const T* zeros, const float* x, float* partial,     \
                                                  int rows, int g, int prows, int in_dim) {           \
        hqq_gemv4_partial<T>(packed, scales, zeros, x, partial, rows, g, prows, in_dim);              \
    }
#define QK_GPTQ_GEMV(T, NAME)                                                                         \
    extern "C" __global__ void gptq_gemv_4b_##NAME(const int* qweight, const int* qzeros, const T* scales, \
                                                   const int* g_idx, const float* x, float* partial,  \
                                                   int k_dim, int n_dim, int slice_rows, int format) { \
        gptq_gemv4_partial<T>(qweight, qzeros, scales, g_idx, x, partial, k_dim, n_dim, slice_rows, format); \
    }
QK_HQQ_GEMV(float, f32)
QK_HQQ_GEMV(__half, f16)
QK_HQQ_GEMV(__nv_bfloat16, bf16)
QK_GPTQ_GEMV(float, f32)
QK_GPTQ_GEMV(__half, f16)
QK_GPTQ_GEMV(__nv_bfloat16, bf16)
extern "C" __global__ void gemv_reduce_rows_f32(const float* partial, float* y, int outs, int per) {
    gemv_reduce_rows(partial, y, outs, per);
}
extern "C" __global__ void gemv_reduce_cols_f32(const float* partial, float* y, int n_dim, int slices) {
    gemv_reduce_cols(partial, y, n_dim, slices);
}
// y[i] += bias[i % outs] for i < total (rows of `outs` outputs).
extern "C" __global__ void add_bias_f32(float* y, const float* bias, int outs, int total) {
    for (long long i = qk_linear0(); i < total; i += qk_linear_step()) y[i] = y[i] + bias[i % outs];
}
extern "C" __global__ void gather_f32(const float* x, const int* perm, float* out, int k) {
    gather_rows(x, perm, out, k, 1);
}
extern "C" __global__ void gather_rows_f32(const float* x, const int* perm, float* out, int k, int rows) {
    gather_rows(x, perm, out, k, rows);
}

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define QK_GEMV_EMU(NAME, T)                                                                          \
    extern "C" void cpu_hqq_gemv_4b_##NAME(const unsigned char* packed, const T* scales, const T* zeros, \
                                           const float* x, float* partial, int rows, int g, int prows, \
                                           int in_dim, unsigned grid, unsigned block) {               \
        cpu_launch_serial(qk_dim(grid), qk_dim(block),                                                \
                          [&] { hqq_gemv_4b_##NAME(packed, scales, zeros, x, partial, rows, g, prows, in_dim); }); \
    }                                                                                                 \
    extern "C" void cpu_gptq_gemv_4b_##NAME(const int* qweight, const int* qzeros, const T* scales,   \
                                            const int* g_idx, const float* x, float* partial, int k_dim, \
                                            int n_dim, int slice_rows, int format, unsigned grid,     \
                                            unsigned block) {                                         \
        cpu_launch_serial(qk_dim(grid), qk_dim(block), [&] {                                          \
            gptq_gemv_4b_##NAME(qweight, qzeros, scales, g_idx, x, partial, k_dim, n_dim, slice_rows, format); \
        });                                                                                           \
    }
QK_GEMV_EMU(f32, float)
QK_GEMV_EMU(f16, __half)
QK_GEMV_EMU(bf16, __nv_bfloat16)
extern "C" void cpu_gemv_reduce_rows_f32(const float* partial, float* y, int outs, int per, unsigned grid,
                                         unsigned block) {
    cpu_launch_serial(qk_dim(grid), qk_dim(block), [&] { gemv_reduce_rows_f32(partial, y, outs, per); });
}
extern "C" void cpu_add_bias_f32(float* y, const float* bias, int outs, int total, unsigned grid, unsigned block) {
    cpu_launch_serial(qk_dim(grid), qk_dim(block), [&] { add_bias_f32(y, bias, outs, total); });
}
extern "C" void cpu_gather_f32(const float* x, const int* perm, float* out, int k, unsigned grid, unsigned block) {
    cpu_launch_serial(qk_dim(grid), qk_dim(block), [&] { gather_f32(x, perm, out, k); });
}
extern "C" void cpu_gather_rows_f32(const float* x, const int* perm, float* out, int k, int rows, unsigned grid,
                                    unsigned block) {
    cpu_launch_serial(qk_dim(grid), qk_dim(block), [&] { gather_rows_f32(x, perm, out, k, rows); });
}
extern "C" void cpu_gemv_reduce_cols_f32(const float* partial, float* y, int n_dim, int slices, unsigned grid,
                                         unsigned block) {
    cpu_launch_serial(qk_dim(grid), qk_dim(block), [&] { gemv_reduce_cols_f32(partial, y, n_dim, slices); });
}
#endif
