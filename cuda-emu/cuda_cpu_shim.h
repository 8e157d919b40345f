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
// (included before the attribute macros below, which would rewrite their __noinline__)
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <ucontext.h>
#include <vector>

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

// ---- Cooperative launches: warp collectives and block barriers.
// cpu_launch_coop runs each block's threads as fibers (ucontext) on the calling thread, switched
// only where a thread waits for others: a warp collective (__shfl_xor_sync, and the warp-wide
// matrix multiply of the GEMM sources) or __syncthreads. A collective completes once every lane
// of the warp has arrived with its value; a barrier once every thread of the block has. A thread
// that exits while its warp or block waits for it is a kernel bug (undefined on the GPU): the
// launch aborts with a message instead of hanging. `__shared__` variables are plain statics,
// shared by the fibers of the one block that runs at a time.
#define __shared__ static

struct QkFiber {
    ucontext_t ctx;
    qk_uint3 idx;
    unsigned warp, lane;
    bool done;
};

struct QkWarp {
    unsigned members = 0, arrived = 0, gen = 0;
    alignas(16) unsigned char in[32][64];
    alignas(16) unsigned char out[32][64];
};

struct QkCoop {
    static constexpr size_t STACK = 256 * 1024;
    ucontext_t sched;
    std::vector<QkFiber> fibers;
    std::vector<QkWarp> warps;
    std::vector<std::unique_ptr<char[]>> stacks;  // kept across launches
    unsigned current = 0, barrier_arrived = 0, barrier_gen = 0, live = 0;
    int barrier_or = 0, barrier_result = 0;  // __syncthreads_or: this barrier's OR, the last one's
    unsigned long long progress = 0;  // completed collectives and exits: a pass without any is a deadlock
    void (*entry)(void*) = nullptr;
    void* arg = nullptr;
};
inline QkCoop qk_coop;

// The context calls in functions of their own: getcontext/swapcontext return twice, which
// would make the compiler distrust the callers' locals (-Wclobbered).
__attribute__((noinline)) inline void qk_switch_to(unsigned i) {
    swapcontext(&qk_coop.sched, &qk_coop.fibers[i].ctx);
}
inline void qk_fiber_main();
__attribute__((noinline)) inline void qk_make_fiber(unsigned i) {
    QkFiber& f = qk_coop.fibers[i];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = qk_coop.stacks[i].get();
    f.ctx.uc_stack.ss_size = QkCoop::STACK;
    f.ctx.uc_link = &qk_coop.sched;
    makecontext(&f.ctx, qk_fiber_main, 0);
}

__attribute__((noinline)) inline void qk_yield() {
    QkFiber& f = qk_coop.fibers[qk_coop.current];
    swapcontext(&f.ctx, &qk_coop.sched);
}

inline void qk_fiber_main() {
    qk_coop.entry(qk_coop.arg);
    QkFiber& f = qk_coop.fibers[qk_coop.current];
    f.done = true;
    --qk_coop.live;
    ++qk_coop.progress;
    // returns to qk_coop.sched through uc_link
}

// Every lane of the calling thread's warp passes `mine` (at most 64 bytes); once all have,
// `combine(in, out)` runs once on the 32 slots and each lane gets its `out` slot back as an R.
template <typename R, typename T, typename F>
inline R qk_warp_exchange(const T& mine, F combine) {
    static_assert(sizeof(T) <= 64 && sizeof(R) <= 64, "collective payload");
    QkFiber& f = qk_coop.fibers[qk_coop.current];
    QkWarp& w = qk_coop.warps[f.warp];
    const unsigned lane = f.lane;
    std::memcpy(w.in[lane], &mine, sizeof(T));
    const unsigned gen = w.gen;
    if (++w.arrived == w.members) {
        combine(w.in, w.out);
        w.arrived = 0;
        ++w.gen;
        ++qk_coop.progress;
    } else {
        while (w.gen == gen) qk_yield();
    }
    R r;
    std::memcpy(&r, w.out[lane], sizeof(R));
    return r;
}

template <typename T, typename F>
inline T qk_warp_collective(const T& mine, F combine) {
    return qk_warp_exchange<T>(mine, combine);
}

// A value from lane (lane ^ lane_mask); every lane of the warp must take part (mask all ones).
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    if (mask != 0xffffffffu || width != 32) {
        std::fprintf(stderr, "cuda_cpu_shim: __shfl_xor_sync supports the full warp only\n");
        std::abort();
    }
    return qk_warp_collective(v, [lane_mask](unsigned char (*in)[64], unsigned char (*out)[64]) {
        for (unsigned l = 0; l < 32; ++l) std::memcpy(out[l], in[l ^ (unsigned)lane_mask], sizeof(T));
    });
}

// Whether `pred` holds on any lane of the warp (mask all ones).
inline bool __any_sync(unsigned mask, bool pred) {
    if (mask != 0xffffffffu) {
        std::fprintf(stderr, "cuda_cpu_shim: __any_sync supports the full warp only\n");
        std::abort();
    }
    return qk_warp_collective(pred, [](unsigned char (*in)[64], unsigned char (*out)[64]) {
        bool any = false;
        for (unsigned l = 0; l < 32; ++l) any = any || in[l][0] != 0;
        for (unsigned l = 0; l < 32; ++l) out[l][0] = any;
    });
}

// Lane `src`'s value, to every lane of the warp (mask all ones).
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    if (mask != 0xffffffffu || width != 32) {
        std::fprintf(stderr, "cuda_cpu_shim: __shfl_sync supports the full warp only\n");
        std::abort();
    }
    return qk_warp_collective(v, [src](unsigned char (*in)[64], unsigned char (*out)[64]) {
        for (unsigned l = 0; l < 32; ++l) std::memcpy(out[l], in[src & 31], sizeof(T));
    });
}

// A barrier for the warp (mask all ones): every lane arrives before any goes on.
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (mask != 0xffffffffu) {
        std::fprintf(stderr, "cuda_cpu_shim: __syncwarp supports the full warp only\n");
        std::abort();
    }
    qk_warp_collective(0, [](unsigned char (*)[64], unsigned char (*)[64]) {});
}

inline void __syncthreads() {
    const unsigned gen = qk_coop.barrier_gen;
    if (++qk_coop.barrier_arrived == qk_coop.fibers.size()) {
        qk_coop.barrier_arrived = 0;
        ++qk_coop.barrier_gen;
        ++qk_coop.progress;
    } else {
        while (qk_coop.barrier_gen == gen) qk_yield();
    }
}

// A barrier that also tells every thread whether `pred` held on any thread of the block.
inline int __syncthreads_or(int pred) {
    if (pred) qk_coop.barrier_or = 1;
    const unsigned gen = qk_coop.barrier_gen;
    if (++qk_coop.barrier_arrived == qk_coop.fibers.size()) {
        qk_coop.barrier_result = qk_coop.barrier_or;
        qk_coop.barrier_or = 0;
        qk_coop.barrier_arrived = 0;
        ++qk_coop.barrier_gen;
        ++qk_coop.progress;
    } else {
        while (qk_coop.barrier_gen == gen) qk_yield();
    }
    // Read before this thread can arrive at the next barrier, whose last arrival overwrites it.
    return qk_coop.barrier_result;
}

// Blocks run in turn; within a block, threads are fibers scheduled round robin. Block sizes must
// be whole warps (as the GEMV/GEMM launchers use) so that every warp collective has 32 lanes.
template <typename F>
inline void cpu_launch_coop(qk_dim3 grid, qk_dim3 block, F body) {
    std::lock_guard<std::mutex> lock(qk_launch_mutex);
    QkCoop& c = qk_coop;
    const unsigned n = block.x * block.y * block.z;
    if (n % 32 != 0) {
        std::fprintf(stderr, "cuda_cpu_shim: cooperative launch of %u threads (not whole warps)\n", n);
        std::abort();
    }
    gridDim = grid;
    blockDim = block;
    c.fibers.assign(n, QkFiber{});
    c.warps.assign(n / 32, QkWarp{});
    while (c.stacks.size() < n) c.stacks.emplace_back(new char[QkCoop::STACK]);
    c.entry = [](void* p) { (*static_cast<F*>(p))(); };
    c.arg = &body;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = {bx, by, bz};
                c.live = n;
                c.barrier_arrived = 0;
                c.barrier_or = 0;
                for (unsigned i = 0; i < n; ++i) {
                    QkFiber& f = c.fibers[i];
                    f.idx = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
                    f.warp = i / 32;
                    f.lane = i % 32;
                    f.done = false;
                    qk_make_fiber(i);
                }
                for (QkWarp& w : c.warps) {
                    w.members = 32;
                    w.arrived = 0;
                }
                while (c.live > 0) {
                    const unsigned long long before = c.progress;
                    for (unsigned i = 0; i < n; ++i) {
                        if (c.fibers[i].done) continue;
                        c.current = i;
                        threadIdx = c.fibers[i].idx;
                        qk_switch_to(i);
                    }
                    if (c.live > 0 && c.progress == before) {
                        std::fprintf(stderr,
                                     "cuda_cpu_shim: block (%u,%u,%u) deadlocked: threads wait at a warp collective "
                                     "or barrier that exited threads never reach\n",
                                     bx, by, bz);
                        std::abort();
                    }
                }
            }
}

// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 for the warp: D = A B + C with A 16x16
// (row-major), B 16x8 (K x N) in f16, C and D 16x8 in f32, each lane holding PTX's fragments
// (gid = lane / 4, tig = lane % 4): a[0] = A[gid][2tig, 2tig+1], a[1] = A[gid+8][same],
// a[2] = A[gid][2tig+8, +9], a[3] = A[gid+8][2tig+8, +9] (low half first); b[0] = B[2tig,
// 2tig+1][gid], b[1] = B[2tig+8, +9][gid]; c/d[0,1] = C[gid][2tig, 2tig+1], c/d[2,3] =
// C[gid+8][same]. The f16 products are exact; the emulation sums them in double and rounds once
// (the tensor core's internal order and rounding are unspecified; the tests bound the result,
// they do not compare bits).
struct QkMmaIn {
    unsigned a[4], b[2];
    float c[4];
};
struct QkMmaOut {
    float d[4];
};
inline float qk_f16_lo(unsigned v) { return __half2float(__half{(uint16_t)(v & 0xffffu)}); }
inline float qk_f16_hi(unsigned v) { return __half2float(__half{(uint16_t)(v >> 16)}); }
inline void qk_mma_16816_emu(float* d, const unsigned* a, const unsigned* b, const float* c) {
    QkMmaIn mine;
    std::memcpy(mine.a, a, sizeof mine.a);
    std::memcpy(mine.b, b, sizeof mine.b);
    std::memcpy(mine.c, c, sizeof mine.c);
    const QkMmaOut r = qk_warp_exchange<QkMmaOut>(mine, [](unsigned char (*in)[64], unsigned char (*out)[64]) {
        float A[16][16], B[16][8], C[16][8];
        for (unsigned l = 0; l < 32; ++l) {
            QkMmaIn v;
            std::memcpy(&v, in[l], sizeof v);
            const unsigned g = l / 4, t = l % 4;
            A[g][2 * t] = qk_f16_lo(v.a[0]);
            A[g][2 * t + 1] = qk_f16_hi(v.a[0]);
            A[g + 8][2 * t] = qk_f16_lo(v.a[1]);
            A[g + 8][2 * t + 1] = qk_f16_hi(v.a[1]);
            A[g][2 * t + 8] = qk_f16_lo(v.a[2]);
            A[g][2 * t + 9] = qk_f16_hi(v.a[2]);
            A[g + 8][2 * t + 8] = qk_f16_lo(v.a[3]);
            A[g + 8][2 * t + 9] = qk_f16_hi(v.a[3]);
            B[2 * t][g] = qk_f16_lo(v.b[0]);
            B[2 * t + 1][g] = qk_f16_hi(v.b[0]);
            B[2 * t + 8][g] = qk_f16_lo(v.b[1]);
            B[2 * t + 9][g] = qk_f16_hi(v.b[1]);
            C[g][2 * t] = v.c[0];
            C[g][2 * t + 1] = v.c[1];
            C[g + 8][2 * t] = v.c[2];
            C[g + 8][2 * t + 1] = v.c[3];
        }
        for (unsigned l = 0; l < 32; ++l) {
            const unsigned g = l / 4, t = l % 4;
            const unsigned rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
            QkMmaOut o;
            for (int i = 0; i < 4; ++i) {
                double s = C[rows[i]][cols[i]];
                for (int k = 0; k < 16; ++k) s += (double)A[rows[i]][k] * (double)B[k][cols[i]];
                o.d[i] = (float)s;
            }
            std::memcpy(out[l], &o, sizeof o);
        }
    });
    std::memcpy(d, r.d, sizeof r.d);
}

// Two f32 rounded to f16 (nearest even) in one register, `lo` in the low half.
inline unsigned qk_f16x2(float lo, float hi) {
    return (unsigned)__float2half_rn(lo).bits | ((unsigned)__float2half_rn(hi).bits << 16);
}

// Global-memory atomics and fences: blocks run one at a time on one thread, so plain
// read-modify-write is atomic and every write is already visible.
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    const unsigned old = *p;
    *p = old + v;
    return old;
}
inline void __threadfence() {}
template <typename T>
inline T __ldcg(const T* p) {
    return *p;
}
