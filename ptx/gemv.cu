// Fused batch-1 dequant-GEMV for 4-bit HQQ (axis 1) and 4-bit GPTQ: weights are decoded in
// registers and multiplied with x, never written out. Deterministic: each thread accumulates a
// fixed slice in a fixed order into a partial sum, and a second kernel adds the partials of each
// output in a fixed order (no atomics). W values are computed exactly as the dequantization
// kernels compute them, ((q - z) * s) in f32; products and sums are separate f32 operations
// (--fmad=false).
#include "common.cuh"

// ---- HQQ, 4-bit, axis 1: y[o] = sum_i W[o, i] x[i], W [out, in], code matrix [numel/g, g].
// One thread per packed row p (both planes: code rows p and p + prows): partial[r] is the dot
// product of code row r (one group: g consecutive inputs of one output row) with x.
template <typename T>
__device__ __forceinline__ void hqq_gemv4_partial(const unsigned char* __restrict__ packed,
                                                  const T* __restrict__ scales, const T* __restrict__ zeros,
                                                  const float* __restrict__ x, float* __restrict__ partial,
                                                  int rows, int g, int prows, int in_dim) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < prows; p += stride) {
        const int r0 = (int)p, r1 = (int)p + prows;
        const bool has1 = r1 < rows;
        const float z0 = qk_to_f32(zeros[r0]), s0 = qk_to_f32(scales[r0]);
        const float z1 = has1 ? qk_to_f32(zeros[r1]) : 0.0f, s1 = has1 ? qk_to_f32(scales[r1]) : 0.0f;
        const float* x0 = x + (long long)r0 * g % in_dim;
        const float* x1 = x + (has1 ? (long long)r1 * g % in_dim : 0);
        const unsigned char* w = packed + p * g;
        float a0 = 0.0f, a1 = 0.0f;
        if ((g & 15) == 0) {
            // 16 codes per aligned vector load (packed rows start at multiples of g bytes), x in
            // aligned 4-float vectors (x rows start at multiples of g floats).
            for (int c0 = 0; c0 < g; c0 += 16) {
                const QkVec<unsigned char, 16> v = *reinterpret_cast<const QkVec<unsigned char, 16>*>(w + c0);
#pragma unroll
                for (int q4 = 0; q4 < 4; ++q4) {
                    const QkVec<float, 4> xa = *reinterpret_cast<const QkVec<float, 4>*>(x0 + c0 + 4 * q4);
                    const QkVec<float, 4> xb = *reinterpret_cast<const QkVec<float, 4>*>(x1 + c0 + 4 * q4);
#pragma unroll
                    for (int c = 0; c < 4; ++c) {
                        const unsigned b = v.v[4 * q4 + c];
                        a0 = a0 + (((float)(b >> 4) - z0) * s0) * xa.v[c];
                        if (has1) a1 = a1 + (((float)(b & 15u) - z1) * s1) * xb.v[c];
                    }
                }
            }
        } else {
            for (int c = 0; c < g; ++c) {
                const unsigned b = w[c];
                a0 = a0 + (((float)(b >> 4) - z0) * s0) * x0[c];
                if (has1) a1 = a1 + (((float)(b & 15u) - z1) * s1) * x1[c];
            }
        }
        partial[r0] = a0;
        if (has1) partial[r1] = a1;
    }
}

// y[o] = sum over the output's `per` consecutive partials, in order.
__device__ __forceinline__ void gemv_reduce_rows(const float* __restrict__ partial, float* __restrict__ y,
                                                 int outs, int per) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < outs; o += stride) {
        float acc = 0.0f;
        for (int t = 0; t < per; ++t) acc = acc + partial[o * per + t];
        y[o] = acc;
    }
}

// ---- GPTQ, 4-bit: y[n] = sum_k W[k, n] x[k], W [K, N]. One thread per (slice of `slice_rows`
// input rows, 4 columns): partial[s, n] for its 4 columns; then y[n] = sum_s partial[s, n].
template <typename T>
__device__ __forceinline__ void gptq_gemv4_partial(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                                   const T* __restrict__ scales, const int* __restrict__ g_idx,
                                                   const float* __restrict__ x, float* __restrict__ partial,
                                                   int k_dim, int n_dim, int slice_rows, int format) {
    const int nv = n_dim / 4, slices = k_dim / slice_rows, zcols = n_dim / 8;
    const long long items = (long long)slices * nv;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < items; t += stride) {
        const int sl = (int)(t / nv);
        const int n = (int)(t - (long long)sl * nv) * 4;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int wr = sl * slice_rows / 8; wr < (sl + 1) * slice_rows / 8; ++wr) {
            const QkVec<int, 4> w = *reinterpret_cast<const QkVec<int, 4>*>(qweight + (long long)wr * n_dim + n);
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int k = wr * 8 + j;
                const int g = g_idx[k];
                const float xk = x[k];
                const QkVec<T, 4> s = *reinterpret_cast<const QkVec<T, 4>*>(scales + (long long)g * n_dim + n);
                // The 4 columns' zero points share one qzeros word (n % 4 == 0, 8 fields a word).
                unsigned zw = (unsigned)qzeros[(long long)g * zcols + (n >> 3)];
                if (format == 0) zw += 0x11111111u;  // v1 -> v2 the way GPTQModel reads it (wrapping)
                zw >>= (n & 7) * 4;
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    const unsigned q = ((unsigned)w.v[c] >> (4 * j)) & 15u;
                    const float z = (float)((zw >> (4 * c)) & 15u);
                    acc[c] = acc[c] + (((float)q - z) * qk_to_f32(s.v[c])) * xk;
                }
            }
        }
        *reinterpret_cast<QkVec<float, 4>*>(partial + (long long)sl * n_dim + n) =
            QkVec<float, 4>{{acc[0], acc[1], acc[2], acc[3]}};
    }
}

// y[n] = sum_s partial[s, n], in order of s.
__device__ __forceinline__ void gemv_reduce_cols(const float* __restrict__ partial, float* __restrict__ y,
                                                 int n_dim, int slices) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x; n < n_dim; n += stride) {
        float acc = 0.0f;
        for (int s = 0; s < slices; ++s) acc = acc + partial[(long long)s * n_dim + n];
        y[n] = acc;
    }
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

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define QK_GEMV_EMU(NAME, T)                                                                          \
    extern "C" void cpu_hqq_gemv_4b_##NAME(const unsigned char* packed, const T* scales, const T* zeros, \
                                           const float* x, float* partial, int rows, int g, int prows, \
                                           int in_dim, unsigned grid, unsigned block) {               \
        cpu_launch_serial({grid, 1, 1}, {block, 1, 1},                                                \
                          [&] { hqq_gemv_4b_##NAME(packed, scales, zeros, x, partial, rows, g, prows, in_dim); }); \
    }                                                                                                 \
    extern "C" void cpu_gptq_gemv_4b_##NAME(const int* qweight, const int* qzeros, const T* scales,   \
                                            const int* g_idx, const float* x, float* partial, int k_dim, \
                                            int n_dim, int slice_rows, int format, unsigned grid,     \
                                            unsigned block) {                                         \
        cpu_launch_serial({grid, 1, 1}, {block, 1, 1}, [&] {                                          \
            gptq_gemv_4b_##NAME(qweight, qzeros, scales, g_idx, x, partial, k_dim, n_dim, slice_rows, format); \
        });                                                                                           \
    }
QK_GEMV_EMU(f32, float)
QK_GEMV_EMU(f16, __half)
QK_GEMV_EMU(bf16, __nv_bfloat16)
extern "C" void cpu_gemv_reduce_rows_f32(const float* partial, float* y, int outs, int per, unsigned grid,
                                         unsigned block) {
    cpu_launch_serial({grid, 1, 1}, {block, 1, 1}, [&] { gemv_reduce_rows_f32(partial, y, outs, per); });
}
extern "C" void cpu_gemv_reduce_cols_f32(const float* partial, float* y, int n_dim, int slices, unsigned grid,
                                         unsigned block) {
    cpu_launch_serial({grid, 1, 1}, {block, 1, 1}, [&] { gemv_reduce_cols_f32(partial, y, n_dim, slices); });
}
#endif
