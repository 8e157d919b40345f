// cuda_cpu_shim.h: compile the CUDA C kernels of ../ptx as plain C++ for CPU emulation.
// Launches run every (block, thread) of the grid in turn on the calling thread, so only kernels
// without __syncthreads/shuffles can run here (the HQQ dequantization kernels are such).
// __half / __nv_bfloat16 are 16-bit storage structs converted with round-to-nearest-even, the
// same rounding as the GPU intrinsics and the crate's CPU paths.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
using std::min;
using std::max;
#define __restrict__ __restrict

struct qk_uint3 { unsigned x, y, z; };
struct qk_dim3 { unsigned x = 1, y = 1, z = 1; };
inline qk_uint3 threadIdx, blockIdx;
inline qk_dim3 blockDim, gridDim;
inline std::mutex qk_launch_mutex;  // the indices are global: one emulated launch at a time

struct __half { uint16_t bits; };
struct __nv_bfloat16 { uint16_t bits; };

inline float __half2float(__half h) { _Float16 v; std::memcpy(&v, &h.bits, 2); return (float)v; }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline __half __float2half_rn(float f) { _Float16 h = (_Float16)f; __half r; std::memcpy(&r.bits, &h, 2); return r; }
inline float __bfloat162float(__nv_bfloat16 b) { uint32_t u = (uint32_t)b.bits << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u; std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40)};  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}

// A launch dimension passed from the Rust tests as one u32: x in the low 16 bits, y in the high
// 16 (0 reads as 1), so 1-D callers pass plain counts.
inline qk_dim3 qk_dim(unsigned v) {
    const unsigned y = v >> 16;
    return qk_dim3{v & 0xffffu, y ? y : 1u, 1u};
}

template <typename F>
inline void cpu_launch_serial(qk_dim3 grid, qk_dim3 block, F body) {
    std::lock_guard<std::mutex> lock(qk_launch_mutex);
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = {bx, by, bz};
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx) {
                            threadIdx = {tx, ty, tz};
                            body();
                        }
            }
}

// Bit casts between float and int (CUDA intrinsics).
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }

// PRMT: byte i of the result is byte (s >> 4i) & 7 of the 8 bytes {y, x} (x = bytes 0..3); with
// bit 3 of that nibble set, the selected byte's sign bit replicated instead.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = ((uint64_t)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) {
        const unsigned n = (s >> (4 * i)) & 0xfu;
        unsigned b = (unsigned)(v >> (8 * (n & 7u))) & 0xffu;
        if (n & 8u) b = (b & 0x80u) ? 0xffu : 0u;
        r |= b << (8 * i);
    }
    return r;
}

// Fused multiply-add, rounded once (the GPU's FFMA; IEEE fma).
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }

// Position (1-based) of the lowest set bit, 0 for 0.
inline int __ffs(int v) { return v == 0 ? 0 : __builtin_ctz((unsigned)v) + 1; }
