// AWQ (AutoAWQ "gemm") 4-bit dequantization on the GPU, f32/f16/bf16.
//
// qweight int32 [K, N/8]: word c of row k holds columns 8c..8c+7, nibble i (bits 4i..4i+4) holds
// column 8c + [0, 2, 4, 6, 1, 3, 5, 7][i]; qzeros [K/gs, N/8] the same; scales [K/gs, N].
// W[k, n] = (q - z) * s in f32, rounded once; W is [K, N]. One thread per word: it writes the
// word's 8 columns as one aligned vector (coalesced across adjacent threads).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void awq_dequant(const int* __restrict__ qweight, const int* __restrict__ qzeros,
                                            const T* __restrict__ scales, T* __restrict__ out, int k_dim,
                                            int n_dim, int group_size) {
    const int words = n_dim / 8;
    const long long items = (long long)k_dim * words;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < items; t += stride) {
        const int k = (int)(t / words);
        const int c = (int)(t - (long long)k * words);
        const int g = k / group_size;
        const unsigned w = (unsigned)qweight[t];
        const unsigned zw = (unsigned)qzeros[(long long)g * words + c];
        const QkVec<T, 8> s = *reinterpret_cast<const QkVec<T, 8>*>(scales + (long long)g * n_dim + 8 * c);
        QkVec<T, 8> o;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            // Column 8c + j sits in nibble [0, 4, 1, 5, 2, 6, 3, 7][j].
            const int shift = 4 * ((j >> 1) + 4 * (j & 1));
            const float q = (float)((w >> shift) & 15u), z = (float)((zw >> shift) & 15u);
            o.v[j] = qk_from_f32<T>((q - z) * qk_to_f32(s.v[j]));
        }
        *reinterpret_cast<QkVec<T, 8>*>(out + (long long)k * n_dim + 8 * c) = o;
    }
}

#define QK_AWQ(T, NAME)                                                                               \
    extern "C" __global__ void awq_dequant_4b_##NAME(const int* qweight, const int* qzeros, const T* scales, \
                                                     T* out, int k_dim, int n_dim, int group_size) {  \
        awq_dequant<T>(qweight, qzeros, scales, out, k_dim, n_dim, group_size);                       \
    }
QK_AWQ(float, f32)
QK_AWQ(__half, f16)
QK_AWQ(__nv_bfloat16, bf16)

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
#endif
