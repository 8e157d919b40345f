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
