// HQQ dequantization on the GPU: one templated kernel for every width, axis and element type.
//
// Layout (see src/hqq/mod.rs): the weight is viewed as a code matrix [rows, cols] (axis 0:
// [g, numel/g], zero/scale per column; axis 1: [numel/g, g], zero/scale per row), packed along
// its rows in planes: word [p, c] of the packed [prows, cols] matrix holds code rows
// p, p + prows, p + 2*prows, ... (first plane in the highest bits; 3-bit: 10 codes per int32,
// padding rows beyond `rows` are skipped).
//
// One thread per 8 consecutive packed words (or 1 when the column count is not a multiple of
// 8), grid-stride: it loads the words (and, axis 0, their zeros/scales) once as aligned vectors
// and writes the PER_WORD planes' weights as aligned vectors. Adjacent threads take adjacent
// columns, so loads and stores are coalesced.
// w = (q - zero) * scale in f32 (a subtraction and a multiplication: nothing to contract into an
// FMA), rounded once to the output type: bit-identical to the CPU reference.
#include "common.cuh"

// Decode VEC consecutive words of packed row p starting at column c and write their planes.
template <int BITS, int PER_WORD, int VEC, typename W, typename T>
__device__ __forceinline__ void hqq_words(const W* __restrict__ packed, const T* __restrict__ scales,
                                          const T* __restrict__ zeros, T* __restrict__ out, int rows,
                                          int cols, int prows, int axis, int p, int c) {
    const unsigned mask = (1u << BITS) - 1u;
    const long long at = (long long)p * cols + c;
    const QkVec<W, VEC> w = *reinterpret_cast<const QkVec<W, VEC>*>(packed + at);
    float z[VEC] = {}, s[VEC] = {};
    if (axis == 0) {
        const QkVec<T, VEC> zv = *reinterpret_cast<const QkVec<T, VEC>*>(zeros + c);
        const QkVec<T, VEC> sv = *reinterpret_cast<const QkVec<T, VEC>*>(scales + c);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
            z[k] = qk_to_f32(zv.v[k]);
            s[k] = qk_to_f32(sv.v[k]);
        }
    }
#pragma unroll
    for (int j = 0; j < PER_WORD; ++j) {
        const int r = j * prows + p;
        if (r < rows) {
            if (axis != 0) {
                const float zr = qk_to_f32(zeros[r]), sr = qk_to_f32(scales[r]);
#pragma unroll
                for (int k = 0; k < VEC; ++k) {
                    z[k] = zr;
                    s[k] = sr;
                }
            }
            QkVec<T, VEC> o;
#pragma unroll
            for (int k = 0; k < VEC; ++k) {
                const unsigned q = ((unsigned)w.v[k] >> (BITS * (PER_WORD - 1 - j))) & mask;
                o.v[k] = qk_from_f32<T>(((float)q - z[k]) * s[k]);
            }
            *reinterpret_cast<QkVec<T, VEC>*>(out + (long long)r * cols + c) = o;
        }
    }
}

// Grid-stride over items of VEC consecutive packed words of one packed row.
template <int BITS, int PER_WORD, int VEC, typename W, typename T>
__device__ __forceinline__ void hqq_items(const W* __restrict__ packed, const T* __restrict__ scales,
                                          const T* __restrict__ zeros, T* __restrict__ out, int rows,
                                          int cols, int prows, int axis) {
    const int cv = cols / VEC;
    const long long items = (long long)prows * cv;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < items; t += stride) {
        const int p = (int)(t / cv);
        const int c = (int)(t - (long long)p * cv) * VEC;
        hqq_words<BITS, PER_WORD, VEC, W, T>(packed, scales, zeros, out, rows, cols, prows, axis, p, c);
    }
}

// 8 words per thread when the column count allows aligned 8-wide loads and stores, else 1.
template <int BITS, int PER_WORD, typename W, typename T>
__device__ __forceinline__ void hqq_dequant(const W* __restrict__ packed, const T* __restrict__ scales,
                                            const T* __restrict__ zeros, T* __restrict__ out, int rows,
                                            int cols, int prows, int axis) {
    if ((cols & 7) == 0) hqq_items<BITS, PER_WORD, 8, W, T>(packed, scales, zeros, out, rows, cols, prows, axis);
    else hqq_items<BITS, PER_WORD, 1, W, T>(packed, scales, zeros, out, rows, cols, prows, axis);
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

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
// CPU emulation launchers (cuda-emu): run an entry over a grid, one emulated thread at a time.
#define QK_HQQ_EMU(BITS, W, T, NAME)                                                                 \
    extern "C" void cpu_hqq_dequant_##BITS##b_##NAME(const W* packed, const T* scales, const T* zeros, \
                                                     T* out, int rows, int cols, int prows, int axis, \
                                                     unsigned grid, unsigned block) {                \
        cpu_launch_serial({grid, 1, 1}, {block, 1, 1}, [&] {                                         \
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
#endif
