// FP8 (E4M3 "fn", E5M2) dequantization on the GPU with block-wise (or per-tensor: one block)
// scales: out[r, c] = f32(w[r, c]) * scale[r / br, c / bc], one f32 multiplication, rounded once.
// Decoding is exact bit construction (NaN: quiet, sign and mantissa in the payload, as torch).
// One thread per 8 consecutive codes of a row when cols % 8 == 0 (aligned vectors), else per code.
#include "common.cuh"

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
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < items; t += stride) {
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

template <int MBITS, int BIAS, bool E4M3, typename S, typename T>
__device__ __forceinline__ void fp8_dequant(const unsigned char* __restrict__ codes, const S* __restrict__ scales,
                                            T* __restrict__ out, int rows, int cols, int br, int bc) {
    if ((cols & 7) == 0) fp8_run<MBITS, BIAS, E4M3, 8, S, T>(codes, scales, out, rows, cols, br, bc);
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

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define QK_FP8_EMU(FMT, T, NAME)                                                                      \
    extern "C" void cpu_fp8_dequant_##FMT##_##NAME(const unsigned char* codes, const float* scales, T* out, int rows, \
                                                   int cols, int br, int bc, unsigned grid, unsigned block) { \
        cpu_launch_serial({grid, 1, 1}, {block, 1, 1},                                                \
                          [&] { fp8_dequant_##FMT##_##NAME(codes, scales, out, rows, cols, br, bc); }); \
    }
QK_FP8_EMU(e4m3, float, f32) QK_FP8_EMU(e4m3, __half, f16) QK_FP8_EMU(e4m3, __nv_bfloat16, bf16)
QK_FP8_EMU(e5m2, float, f32) QK_FP8_EMU(e5m2, __half, f16) QK_FP8_EMU(e5m2, __nv_bfloat16, bf16)
#endif
