// The fused dequant-GEMV skeletons shared by every scheme: y[b] = W x[b] for a batch of up to
// MAXB (1 or 8) f32 activation rows, the weights decoded in registers and never written out.
// A scheme supplies a decoder (in its own .cu file) and instantiates one of the two skeletons:
//
// * qk_row_gemv, for weights stored along the input dimension (HQQ both axes, FP8, int8, int4):
//   a team of lanes walks one segment of the packed words; per-lane sums are added across the
//   team by xor shuffles (a fixed tree: deterministic).
// * qk_col_gemv_fused, for weights stored [K, N] with codes packed along K or N (GPTQ, AWQ): a
//   thread takes a few adjacent columns and a slice of rows and writes one partial sum per slice;
//   the last block of a column range adds them in slice order.
//
// Both factor each group out of its sum: sum_i (q_i - z) s x_i = s (sum_i q_i x_i - z sum_i x_i),
// so a code costs its decode and one fused multiply-add per batch row, and the result equals
// dequantize-then-multiply within f32 rounding (not bit for bit). Partial sums are added in a
// fixed order: by gemv_reduce_rows (ptx/gemv.cu) when a row-skeleton output has more than one
// (otherwise it writes y directly), by the column skeleton's last block in the same launch.
#pragma once
#include "common.cuh"

// Add v across aligned teams of `team` lanes (a power of two <= 32, the same in every lane).
__device__ __forceinline__ float qk_team_sum(float v, int team) {
    for (int off = team >> 1; off > 0; off >>= 1) v = v + __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// t / d for t >= 0, as a shift when d = 2^lg (lg >= 0).
__device__ __forceinline__ unsigned qk_div(unsigned t, unsigned d, int lg) { return lg >= 0 ? t >> lg : t / d; }
// t / d out of line, for a loop whose qk_div ptxas if-converts (both arms issued every iteration,
// the division predicated off): a call on the rare arm keeps it a branch. FP8's GEMV needs it. (A
// template, so that each translation unit of the CPU emulation may define it.)
template <typename U>
__device__ __noinline__ U qk_div_slow(U t, U d) {
    return t / d;
}

// N floats of x as aligned vectors: the skeletons' chunk offsets are multiples of their chunk
// (8 or 16 floats; 2 for 3-bit HQQ) from 256-byte-aligned rows whose length is a multiple of it.
// N = 2 (3-bit HQQ's two-word chunks): one 8-byte vector.
template <int N>
__device__ __forceinline__ void qk_load_xs(const float* __restrict__ x, float* v) {
    constexpr int V = N % 4 == 0 ? 4 : 2;
    static_assert(N % V == 0, "x chunk");
#pragma unroll
    for (int i = 0; i < N; i += V) {
        const QkVec<float, V> q = *reinterpret_cast<const QkVec<float, V>*>(x + i);
#pragma unroll
        for (int k = 0; k < V; ++k) v[i + k] = q.v[k];
    }
}

// acc[b] += s * (sum_i q[i] x_b[i] - z * sum_i x_b[i]) for b < nb, x_b = x + b * stride, N codes.
template <int N, int MAXB>
__device__ __forceinline__ void qk_dot_group(const float* q, const float* __restrict__ x, int stride, int nb,
                                             float z, float s, float* acc) {
#pragma unroll
    for (int b = 0; b < MAXB; ++b) {
        if (b >= nb) break;
        float xv[N];
        qk_load_xs<N>(x + (long long)b * stride, xv);
        float d = 0.0f, sx = 0.0f;
#pragma unroll
        for (int i = 0; i < N; ++i) {
            d = __fmaf_rn(q[i], xv[i], d);
            sx = sx + xv[i];
        }
        acc[b] = acc[b] + s * (d - z * sx);
    }
}

// acc[b] += s * sum_i q[i] x_b[i] for b < nb (no zero point).
template <int N, int MAXB>
__device__ __forceinline__ void qk_dot_scale(const float* q, const float* __restrict__ x, int stride, int nb,
                                             float s, float* acc) {
#pragma unroll
    for (int b = 0; b < MAXB; ++b) {
        if (b >= nb) break;
        float xv[N];
        qk_load_xs<N>(x + (long long)b * stride, xv);
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < N; ++i) d = __fmaf_rn(q[i], xv[i], d);
        acc[b] = acc[b] + s * d;
    }
}

// acc[b] += sum_i w[i] x_b[i] for b < nb (weights already dequantized: per-element parameters).
template <int N, int MAXB>
__device__ __forceinline__ void qk_dot_plain(const float* w, const float* __restrict__ x, int stride, int nb,
                                             float* acc) {
#pragma unroll
    for (int b = 0; b < MAXB; ++b) {
        if (b >= nb) break;
        float xv[N];
        qk_load_xs<N>(x + (long long)b * stride, xv);
        float d = acc[b];
#pragma unroll
        for (int i = 0; i < N; ++i) d = __fmaf_rn(w[i], xv[i], d);
        acc[b] = d;
    }
}

// A compile-time int for generic lambdas (no <type_traits> under NVRTC).
template <int N>
struct QkInt {
    enum : int { value = N };
};

// f(QkInt<16>{}) where a batch-1 row GEMV takes 16-byte chunks (`wide`: its segments and layout
// allow them; half the per-chunk work per weight: the loop, parameters, the next chunk's fetch),
// else f(QkInt<8>{}): batches of up to 8 spend 8 multiply-adds per weight and keep 8 bytes. A
// team wider than the 16-byte chunks leaves lanes idle (they add 0).
template <int MAXB, class F>
__device__ __forceinline__ void qk_row_chunk_bytes(bool wide, F f) {
    if (MAXB == 1 && wide)
        f(QkInt<16>{});
    else
        f(QkInt<8>{});
}

// ---- Row skeleton. The decoder describes `words` packed words of Dec::P codes each:
//   planar (Dec::PLANAR, HQQ): code j of word t is flat weight j * words + t;
//   interleaved (int4's nibbles; P = 1 for one code a byte): code j of word t is flat weight
//   t * P + j.
// Flat weight f is W[f / in, f % in] (W [out, in] row-major, y = W x). The words are cut into
// segments of `seg` words such that each plane's share of a segment lies in one output row
// (planar: seg | in and seg | words; interleaved: P * seg | in), a "flat segment" of L weights
// (L = seg planar, P * seg interleaved); flat segment F covers weights [F L, F L + L). A team of
// `team` lanes takes a segment: lane m adds chunks m, m + team, ... of Dec::CH words (adjacent
// lanes, adjacent chunks: coalesced), calling
//   d.fetch(t0, c)                        the chunk's words, and any per-chunk parameters worth
//                                         loading with them (a Dec::Raw), then
//   d.dot<MAXB>(raw, t0, c, xo, x, in, nb, acc)
// for the chunk at word t = t0 + c (t0: the segment's first word, so a decoder's per-segment
// work is loop-invariant). At batch 1 a lane keeps Dec::AHEAD chunks in flight (fetched that many
// chunks ahead of their dot): a segment is up to a row, a few dozen chunks a lane, so a chunk at
// a time makes each lane a chain of DRAM round trips. In the dot, plane j's weights meet
// x[b * in + xo[j] + i] (planar) or word i's code j meets x[b * in + xo[0] + i * P + j]
// (interleaved); it adds to acc[j][b] (acc[0][b] interleaved). The team then sums each
// accumulator and its first lane writes part[b * nflat + F] for the flat segments inside the
// weight (F < nflat = numel / L; planar padding planes past numel are skipped). With seg = in
// that is y itself.
// Launch: 1-D, blocks of whole warps; warps grid-stride over groups of 32 / team segments.
template <class Dec, int MAXB>
__device__ __forceinline__ void qk_row_gemv(const Dec& d, const float* __restrict__ x, float* __restrict__ part,
                                            int words, long long numel, int in_dim, int seg, int team, int nb) {
    constexpr int NJ = Dec::PLANAR ? Dec::P : 1;
    const int nseg = words / seg;
    const long long flat_len = Dec::PLANAR ? (long long)seg : (long long)Dec::P * seg;
    const long long nflat = numel / flat_len;
    const int per_warp = 32 / team;
    const long long lin = qk_linear0();
    const int lane = (int)(lin & 31), member = lane % team, slot = lane / team;
    const long long wsegs = (nseg + per_warp - 1) / per_warp;
    for (long long w = lin >> 5; w < wsegs; w += qk_linear_step() >> 5) {  // uniform in a warp
        const long long s = w * per_warp + slot;
        const bool live = s < nseg;
        float acc[NJ][MAXB];
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int b = 0; b < MAXB; ++b) acc[j][b] = 0.0f;
        if (live) {
            const int t0 = (int)s * seg;
            int xo[NJ];
#pragma unroll
            for (int j = 0; j < NJ; ++j)
                xo[j] = (int)((Dec::PLANAR ? (long long)j * words + t0 : (long long)t0 * Dec::P) % in_dim);
            // Chunk c of the segment, its words (Dec::Raw) in raw.
            auto chunk = [&](int c, const typename Dec::Raw& raw) {
                int xc[NJ];
#pragma unroll
                for (int j = 0; j < NJ; ++j) xc[j] = xo[j] + (Dec::PLANAR ? c : c * Dec::P);
                d.template dot<MAXB>(raw, t0, c, xc, x, in_dim, nb, acc);
            };
            const int first = member * Dec::CH, stride = team * Dec::CH;
            constexpr int DEPTH = MAXB == 1 ? Dec::AHEAD : 0;
            if constexpr (DEPTH > 0) {
                // DEPTH chunks in flight a lane (past the lane's last, its current chunk again; a
                // lane with none, chunk 0: in bounds, unused), the loop unrolled DEPTH times so
                // each has registers of its own.
                typename Dec::Raw raw[DEPTH];
#pragma unroll
                for (int p = 0; p < DEPTH; ++p) {
                    const int cp = first + p * stride;
                    raw[p] = d.fetch(t0, cp < seg ? cp : (first < seg ? first : 0));
                }
#pragma unroll 1
                for (int c = first; c < seg; c += DEPTH * stride) {
#pragma unroll
                    for (int p = 0; p < DEPTH; ++p) {
                        const int cp = c + p * stride, cn = cp + DEPTH * stride;
                        if (p > 0 && cp >= seg) break;
                        const typename Dec::Raw now = raw[p];
                        raw[p] = d.fetch(t0, cn < seg ? cn : cp);
                        chunk(cp, now);
                    }
                }
            } else {
#pragma unroll 1
                for (int c = first; c < seg; c += stride) chunk(c, d.fetch(t0, c));
            }
        }
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int b = 0; b < MAXB; ++b)
                if (b < nb) acc[j][b] = qk_team_sum(acc[j][b], team);
        if (live && member == 0) {
#pragma unroll
            for (int j = 0; j < NJ; ++j) {
                const long long f = Dec::PLANAR ? (long long)j * nseg + s : s;
                if (f >= nflat) break;
#pragma unroll
                for (int b = 0; b < MAXB; ++b)
                    if (b < nb) part[b * nflat + f] = acc[j][b];
            }
        }
    }
}

// ---- Column skeleton: W [K, N], y[n] = sum_k W[k, n] x[k]. A 2-D grid: x over vectors of
// Dec::VC adjacent columns (adjacent lanes: adjacent columns, coalesced), y over slices of
// `slice_rows` rows (a multiple of Dec::ROWS). The decoder gives
//   d.fetch(k, n)             the packed words (a Dec::Raw) of a block of ROWS rows (k a multiple
//                             of ROWS), columns n .. n + VC;
//   d.decode(raw, q)          q[r][c]: their code of row k + r, column n + c, as an exact float;
//   d.row(k, n, q)            q[c]: the codes of row k alone;
//   d.group(k)                row k's group (rows in any order; sorted rows switch rarely);
//   d.sorted                  groups never decrease with k (then a slice whose first and last
//                             rows share a group is one group: no per-block checks);
//   d.params(g, n, z, s)      group g's zero points and scales of columns n .. n + VC.
// A thread sums q x and x within a run of rows of one group and folds s (sum q x - z sum x) into
// its total when the group changes. A block of rows in the current group (the common case) runs
// unrolled; one that changes group runs a row at a time. Both choices are uniform in a warp (its
// lanes share the rows). A slice of one group (sorted groups) fetches its blocks
// qk_col_depth(MAXB) blocks ahead, so that many loads a thread are in flight: the slices are
// short (at most 128 rows: 16 blocks at 4 bits), so one block at a time makes each thread a chain
// of DRAM round trips. It then writes part[(b * slices + slice) * N + n + c].
// One thread's work: columns n .. n + VC over slice `sl`, written to part[(b * slices + sl) * N
// + n + c].
// Blocks of rows the column skeleton keeps in flight in a slice of one group: 2 at batch 1 for
// blocks of up to 8 rows (4 and 8 bits), which are bound by the weight's bytes; else 0 (each block
// loaded as it is used): batches of up to 8 spend 8 multiply-adds per weight, and 2- and 3-bit
// blocks (16 and 32 rows) are bound by their decode, where the registers of a second block in
// flight would cost warps.
constexpr int qk_col_depth(int maxb, int rows) { return maxb == 1 && rows <= 8 ? 2 : 0; }

template <class Dec, int MAXB>
__device__ __forceinline__ void qk_col_slice(const Dec& d, const float* __restrict__ x, float* __restrict__ part,
                                             int k_dim, int n_dim, int slice_rows, int slices, int nb, int n, int sl) {
    constexpr int VC = Dec::VC, R = Dec::ROWS;
    const int k0 = sl * slice_rows;
    float acc[VC][MAXB], dq[VC][MAXB], sx[MAXB], z[VC], s[VC];
#pragma unroll
    for (int b = 0; b < MAXB; ++b) {
        sx[b] = 0.0f;
#pragma unroll
        for (int c = 0; c < VC; ++c) acc[c][b] = dq[c][b] = 0.0f;
    }
    int cur = d.group(k0);
    d.params(cur, n, z, s);
    const bool one = d.sorted && d.group(k0 + slice_rows - 1) == cur;  // uniform
    // A block of rows kb .. kb + R in the current group, its codes in q.
    auto block = [&](int kb, const float (*q)[VC]) {
#pragma unroll
        for (int b = 0; b < MAXB; ++b) {
            if (b >= nb) break;
            float xv[R];
            if constexpr (R % 4 == 0) {
                qk_load_xs<R>(x + (long long)b * k_dim + kb, xv);
            } else {
#pragma unroll
                for (int r = 0; r < R; ++r) xv[r] = x[(long long)b * k_dim + kb + r];
            }
#pragma unroll
            for (int r = 0; r < R; ++r) {
                sx[b] = sx[b] + xv[r];
#pragma unroll
                for (int c = 0; c < VC; ++c) dq[c][b] = __fmaf_rn(q[r][c], xv[r], dq[c][b]);
            }
        }
    };
    const int k_end = k0 + slice_rows;
    constexpr int DEPTH = qk_col_depth(MAXB, R);
    const bool ahead = DEPTH > 0 && one;  // uniform
    // Every block in one group: DEPTH blocks' words in flight (past the slice's end, the last
    // block's again: in bounds, unused), the loop unrolled DEPTH times so each has registers of
    // its own. Otherwise (or DEPTH 0) the loop below, a block at a time.
    if constexpr (DEPTH > 0) {
        if (ahead) {
            typename Dec::Raw raw[DEPTH];
#pragma unroll
            for (int p = 0; p < DEPTH; ++p) raw[p] = d.fetch(min(k0 + p * R, k_end - R), n);
#pragma unroll 1
            for (int kb = k0; kb < k_end; kb += DEPTH * R) {
#pragma unroll
                for (int p = 0; p < DEPTH; ++p) {
                    const int k = kb + p * R;
                    if (p > 0 && k >= k_end) break;  // uniform
                    // Decoded first, so the later block's words can land in the same registers.
                    float q[R][VC];
                    d.decode(raw[p], q);
                    raw[p] = d.fetch(min(k + DEPTH * R, k_end - R), n);
                    block(k, q);
                }
            }
        }
    }
#pragma unroll 1
    for (int kb = k0; kb < (ahead ? k0 : k_end); kb += R) {
        bool same = true;
        if (!one) {
#pragma unroll
            for (int r = 0; r < R; ++r) same &= d.group(kb + r) == cur;
        }
        if (same) {
            float q[R][VC];
            d.decode(d.fetch(kb, n), q);
            block(kb, q);
            continue;
        }
#pragma unroll 1
        for (int k = kb; k < kb + R; ++k) {
            const int g = d.group(k);
            if (g != cur) {
#pragma unroll
                for (int b = 0; b < MAXB; ++b) {
#pragma unroll
                    for (int c = 0; c < VC; ++c) {
                        acc[c][b] = acc[c][b] + s[c] * (dq[c][b] - z[c] * sx[b]);
                        dq[c][b] = 0.0f;
                    }
                    sx[b] = 0.0f;
                }
                cur = g;
                d.params(cur, n, z, s);
            }
            float q[VC];
            d.row(k, n, q);
#pragma unroll
            for (int b = 0; b < MAXB; ++b) {
                if (b >= nb) break;
                const float xk = x[(long long)b * k_dim + k];
                sx[b] = sx[b] + xk;
#pragma unroll
                for (int c = 0; c < VC; ++c) dq[c][b] = __fmaf_rn(q[c], xk, dq[c][b]);
            }
        }
    }
#pragma unroll
    for (int b = 0; b < MAXB; ++b) {
        if (b >= nb) break;
        float* out = part + ((long long)b * slices + sl) * n_dim + n;
#pragma unroll
        for (int c = 0; c < VC; ++c) out[c] = acc[c][b] + s[c] * (dq[c][b] - z[c] * sx[b]);
    }
}

// The column skeleton in one launch: blocks of 32 x BY threads, x over column vectors, y over
// slices, the grid covering each exactly once (no grid-stride). Each block writes its partial
// sums, then counts itself done for its column vectors (counters[blockIdx.x]; every thread
// fences its writes before the block's atomic add); the last block of a column range adds every slice's partial sums in slice order
// (a fixed order: deterministic whichever block comes last) into y
// and resets the counter for the next launch. Partial sums are read past L1 (__ldcg: other SMs
// wrote them).
template <class Dec, int MAXB>
__device__ __forceinline__ void qk_col_gemv_fused(const Dec& d, const float* __restrict__ x, float* __restrict__ part,
                                                  float* __restrict__ y, unsigned* __restrict__ counters, int k_dim,
                                                  int n_dim, int slice_rows, int nb) {
    constexpr int VC = Dec::VC;
    const int nv = n_dim / VC, slices = k_dim / slice_rows;
    const int v = (int)(blockIdx.x * blockDim.x + threadIdx.x), sl = (int)(blockIdx.y * blockDim.y + threadIdx.y);
    if (v < nv && sl < slices) qk_col_slice<Dec, MAXB>(d, x, part, k_dim, n_dim, slice_rows, slices, nb, v * VC, sl);
    __shared__ unsigned qk_last;
    __threadfence();  // every thread's partial sums reach the device before the count below
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) qk_last = atomicAdd(&counters[blockIdx.x], 1u) == gridDim.y - 1;
    __syncthreads();
    if (!qk_last) return;
    __threadfence();
    const int n0 = (int)(blockIdx.x * blockDim.x) * VC, cols = min((int)blockDim.x * VC, n_dim - n0);
    const int items = cols * nb, tid = (int)(threadIdx.y * blockDim.x + threadIdx.x);
    for (int i = tid; i < items; i += (int)(blockDim.x * blockDim.y)) {
        const int b = i / cols, n = n0 + i % cols;
        const float* p = part + (long long)b * slices * n_dim + n;
        float acc = 0.0f;
        for (int sl2 = 0; sl2 < slices; ++sl2) acc = acc + __ldcg(p + (long long)sl2 * n_dim);
        y[(long long)b * n_dim + n] = acc;
    }
    // The slices' sums are dead once added (a dirty line is written back when evicted: 1.75 MiB a
    // batch-1 call on a 4-bit 4096 x 14336 layer, 6% of its weight): rows b * slices + slice.
    __syncthreads();  // every thread's reads above first
    qk_discard_rows(part, n_dim, n0, cols, nb * slices, [](int i) { return i; }, tid, (int)(blockDim.x * blockDim.y));
    if (tid == 0) counters[blockIdx.x] = 0u;
}
