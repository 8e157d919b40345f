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
