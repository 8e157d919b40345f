// Shared by every kernel source in ptx/: element conversions and the emulation switch.
// Compiled three ways: NVRTC (PTX for the GPU), and g++ against cuda-emu/cuda_cpu_shim.h for
// CPU emulation in `cargo test`.
#pragma once
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#else
#include "cuda_cpu_shim.h"
#endif

// Widen a stored element to f32 (exact for all three types).
__device__ __forceinline__ float qk_to_f32(float x) { return x; }
__device__ __forceinline__ float qk_to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float qk_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

// The f16 with bits `bits` (low 16 bits) widened to f32: exact.
__device__ __forceinline__ float qk_f16_bits_to_f32(unsigned bits) {
    return __half2float(__ushort_as_half((unsigned short)bits));
}

// Round an f32 to the stored type, to nearest even (as the crate's CPU paths do).
template <typename T> __device__ __forceinline__ T qk_from_f32(float x);
template <> __device__ __forceinline__ float qk_from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half qk_from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 qk_from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// M(args..., T, NAME) for each stored element type and its entry-name suffix: the entries a
// module instantiates per element type, whatever their other parameters (which come first).
#define QK_EACH_ELEM(M, ...) M(__VA_ARGS__, float, f32) M(__VA_ARGS__, __half, f16) M(__VA_ARGS__, __nv_bfloat16, bf16)

// N consecutive elements moved as one aligned vector load/store.
template <typename T, int N>
struct alignas(sizeof(T) * N) QkVec {
    T v[N];
};

// Launch geometry shared by the kernels. Every kernel is correct under any grid and block shape:
// loops stride by the launched extent. 2-D kernels put vectors of columns on x and chunks of rows
// on y (adjacent threads: adjacent columns, so accesses coalesce); 1-D loops use the linear index.
__device__ __forceinline__ int qk_x0() { return (int)(blockIdx.x * blockDim.x + threadIdx.x); }
__device__ __forceinline__ int qk_xstep() { return (int)(gridDim.x * blockDim.x); }
__device__ __forceinline__ int qk_y0() { return (int)(blockIdx.y * blockDim.y + threadIdx.y); }
__device__ __forceinline__ int qk_ystep() { return (int)(gridDim.y * blockDim.y); }
__device__ __forceinline__ long long qk_linear0() {
    const long long block = (long long)blockIdx.y * gridDim.x + blockIdx.x;
    return block * (blockDim.x * blockDim.y) + threadIdx.y * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long qk_linear_step() {
    return (long long)gridDim.x * gridDim.y * blockDim.x * blockDim.y;
}

// 2^23 + q for an integer 0 <= q < 2^23, by OR-ing q into the mantissa: (2^23 + q) - (2^23 + z)
// is exactly q - z, with no integer-to-float conversion (a slow instruction on the GPU). A hot
// loop may pass 2^23's bits (0x4b000000) held in a register as `magic`, so that a mask and this
// OR fold into one 3-input logic op (with two immediates they take two).
__device__ __forceinline__ float qk_magic(unsigned q, unsigned magic = 0x4b000000u) {
    return __int_as_float((int)(magic | q));
}

// 2^23's bits for qk_magic's `magic`, in a register: `nonneg` is any run-time value >= 0 (a size
// or a flag), so the added term, its sign bit, is 0, but the compiler cannot fold it away.
__device__ __forceinline__ unsigned qk_magic_reg(int nonneg) { return 0x4b000000u + ((unsigned)nonneg >> 31); }

// q (0 <= q < 2^23) as a float, exactly: (2^23 + q) - 2^23, with no integer-to-float conversion.
__device__ __forceinline__ float qk_u2f(unsigned q, unsigned magic) { return qk_magic(q, magic) - 8388608.0f; }

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
// Two f32 rounded to f16 (nearest even) in one register, `lo` in the low half (cvt.rn.f16x2.f32).
__device__ __forceinline__ unsigned qk_f16x2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&h);
}

// d = A B + c for the warp: mma.sync m16n8k16, f16 inputs, f32 accumulators (fragment layout in
// cuda-emu/cuda_cpu_shim.h's emulation, which follows the PTX ISA).
__device__ __forceinline__ void qk_mma_16816(float* d, const unsigned* a, const unsigned* b, const float* c) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
}
// f16x2 a - b and a * b + c, each half rounded once (HSUB2 / HFMA2). The decoders below pass
// values whose results are exact.
__device__ __forceinline__ unsigned qk_h2_sub(unsigned a, unsigned b) {
    const __half2 r = __hsub2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b));
    return *reinterpret_cast<const unsigned*>(&r);
}
__device__ __forceinline__ unsigned qk_h2_fma(unsigned a, unsigned b, unsigned c) {
    const __half2 r = __hfma2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b),
                              *reinterpret_cast<const __half2*>(&c));
    return *reinterpret_cast<const unsigned*>(&r);
}
// The low and high f16 of a register widened to f32 (exact).
__device__ __forceinline__ float qk_f16_lo(unsigned a) { return __low2float(*reinterpret_cast<const __half2*>(&a)); }
__device__ __forceinline__ float qk_f16_hi(unsigned a) { return __high2float(*reinterpret_cast<const __half2*>(&a)); }
// Drops the 128-byte line at p (128-byte aligned, global memory) from L2 without writing it back
// (discard.global.L2, sm_80+): for data that is dead, which becomes indeterminate.
__device__ __forceinline__ void qk_discard_l2(void* p) {
    asm volatile("discard.global.L2 [%0], 128;" ::"l"(p) : "memory");
}
#else
inline void qk_mma_16816(float* d, const unsigned* a, const unsigned* b, const float* c) {
    qk_mma_16816_emu(d, a, b, c);
}
// The emulation works in double and rounds once to f16: exact wherever the GPU's result is.
inline unsigned qk_h2_sub(unsigned a, unsigned b) {
    return qk_f16x2((float)((double)qk_f16_lo(a) - qk_f16_lo(b)), (float)((double)qk_f16_hi(a) - qk_f16_hi(b)));
}
inline unsigned qk_h2_fma(unsigned a, unsigned b, unsigned c) {
    return qk_f16x2((float)((double)qk_f16_lo(a) * qk_f16_lo(b) + qk_f16_lo(c)),
                    (float)((double)qk_f16_hi(a) * qk_f16_hi(b) + qk_f16_hi(c)));
}
// The line's data becomes NaNs (all ones), so a test reads a discarded line that was still live
// as a wrong result; a misaligned line (the GPU's error) stops the test.
inline void qk_discard_l2(void* p) {
    if ((std::uintptr_t)p % 128 != 0) {
        std::fprintf(stderr, "cuda_cpu_shim: discard.global.L2 of a misaligned line %p\n", p);
        std::abort();
    }
    std::memset(p, 0xff, 128);
}
#endif

// Drops the L2 lines of dead partial sums (qk_discard_l2), so they are never written back to
// DRAM: `rows` rows of `width` floats from column n0 of a row-major [.., N] array `part`, row i
// being row_of(i), shared out to the threads first, first + step, ... after the caller's barrier
// (every read of them done). Only where those rows are whole 128-byte lines, which no other
// work item's sums share: N, width and n0 multiples of 32 and part on a line; else nothing.
template <class RowOf>
__device__ __forceinline__ void qk_discard_rows(float* part, int n_dim, int n0, int width, int rows, RowOf row_of,
                                                int first, int step) {
    if (n_dim % 32 != 0 || width % 32 != 0 || n0 % 32 != 0 || (reinterpret_cast<unsigned long long>(part) & 127u) != 0u)
        return;
    const int lines = width / 32;
    for (int e = first; e < rows * lines; e += step) {
        const int i = e / lines;
        qk_discard_l2(part + (long long)row_of(i) * n_dim + n0 + 32 * (e - i * lines));
    }
}

// ---- Exact f16 integers from packed codes (the group-scaled GEMM's decoders). 0x6400 is 1024
// in f16, whose ulp is 1: OR-ing a field f < 1024 into its low mantissa bits gives 1024 + f, so
// one logic op and one exact f16 subtraction turn two fields into an f16x2 pair.

// `one` is 0x64006400 held in a register (qk_f16_one) so that each mask-and-OR is one 3-input
// logic op.

// 0x64006400 (1024 in both halves) in a register: `nonneg` >= 0 as in qk_magic_reg.
__device__ __forceinline__ unsigned qk_f16_one(int nonneg) { return 0x64006400u + ((unsigned)nonneg >> 31); }

// The eight 4-bit fields of w (field i at bits 4i): out[p] = (field p, field p + 4), p < 4.
// Odd fields are taken in place as 1024 + 16 f and scaled by 1/16 in the same FMA. With `zb` =
// 1024 + z and `zo` = -(64 + z) (f16x2, z an integer < 1024: qk_f16_zero) each field less z,
// exactly; the 3-argument form takes z = 0.
__device__ __forceinline__ void qk_u4x8_f16(unsigned w, unsigned one, unsigned* out, unsigned zb, unsigned zo) {
    const unsigned sixteenth = 0x2c002c00u;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const unsigned v = w >> (8 * h);
        out[2 * h] = qk_h2_sub((v & 0x000f000fu) | one, zb);
        out[2 * h + 1] = qk_h2_fma((v & 0x00f000f0u) | one, sixteenth, zo);
    }
}
__device__ __forceinline__ void qk_u4x8_f16(unsigned w, unsigned one, unsigned* out) {
    qk_u4x8_f16(w, one, out, one, 0xd400d400u);
}

// An integer zero point z (0 <= z < 1024, an exact float) as the f16x2 pair 1024 + z, and as
// -(64 + z) in *odd: qk_u4x8_f16's and qk_u8x4_f16's subtrahends for fields less z.
__device__ __forceinline__ unsigned qk_f16_zero(float z, unsigned* odd) {
    *odd = qk_f16x2(-(64.0f + z), -(64.0f + z));
    return qk_f16x2(1024.0f + z, 1024.0f + z);
}

// The four bytes of w: out[0] = (byte 0, byte 2), out[1] = (byte 1, byte 3), each less `sub - 1024`
// (sub: an f16x2 in [1024, 2048)); the 3-argument form takes 1024: the bytes themselves.
__device__ __forceinline__ void qk_u8x4_f16(unsigned w, unsigned one, unsigned* out, unsigned sub) {
    out[0] = qk_h2_sub(__byte_perm(w, one, 0x5250u), sub);
    out[1] = qk_h2_sub(__byte_perm(w, one, 0x5351u), sub);
}
__device__ __forceinline__ void qk_u8x4_f16(unsigned w, unsigned one, unsigned* out) { qk_u8x4_f16(w, one, out, one); }

