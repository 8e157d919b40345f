// The batched GEMM skeleton on tensor cores shared by the 4- and 8-bit schemes and FP8:
// y[m, n] = sum_k x[m, k] W[n, k] for M activation rows (f32, rounded to f16 as they are read),
// W decoded in registers straight into mma.sync's B fragments (Marlin's idea: the weight is
// never written out) and rounded to f16 once, f32 accumulation.
//
// A warp owns a tile of MT x 16 rows by NT x 8 outputs and walks K in steps of 16: it builds the
// A fragments of its MT row tiles from x, asks the decoder for the four weights each lane holds
// of every 8-output subtile (W[n, k], W[n, k+1], W[n, k+8], W[n, k+9] for n = n0 + lane / 4,
// k = k0 + 2 (lane % 4): PTX's B fragment of m16n8k16), and issues MT x NT mma.sync. The decoder
// gives a per-output cursor once per tile (`d.column(n)`: pointers, plane, parameter rows) and
// the weights per step from it (`d.weights(col, k, w)`), so index math stays out of the loop. Each
// weight is decoded once per MT x 16 rows. Warps grid-stride over tiles (uniform in a warp:
// the mma is a warp instruction). K % 16 == 0 and N % 8 == 0 (checked by the launcher); rows
// past M read zeros and are not written.
//
// x beyond f16's range is flagged by sum x (one more mma per step against ones): the tile is then
// run again with each row's inputs of a step scaled by a power of two into range, as in the
// group-scaled GEMM below.
//
// Error bound (f16 rounding of x and of W, f32 accumulation): |y - y_exact| <= (2u + u^2 +
// K 2^-24) sum_k |x w| + K 2^-25 max|x| + 2^-39 max|x| sum_k |w| with u = 2^-11, the second term
// for weights in f16's subnormal range, the last for x's after a scaled re-run. Not bit-exact
// with the GEMV or the CPU path.
#pragma once
#include "common.cuh"

// A rarely taken branch's condition (x beyond f16's range). `sass_cost.py --no-rare` compiles the
// sources with QK_COST_NO_RARE, which drops those paths, so that its walk of the hot loop sees
// the common path rather than the rare one with more mma.
#ifdef QK_COST_NO_RARE
#define QK_RARE(c) (false && (c))
#else
#define QK_RARE(c) (c)
#endif

// A compile-time flag for generic lambdas (no <type_traits> under NVRTC).
template <bool B>
struct QkBool {
    static constexpr bool value = B;
};

// A row's values scaled by a power of two into f16's range for the scaled re-runs of the GEMMs:
// `m` is the lane's largest |x| of the row, `v` its n two-float vectors (scaled in place); the
// row's inputs of the step are spread over the lanes of a quad (lane % 4), so m is first taken
// over them. Finite m >= 2^14 scales by 2^(14 - exponent of m), exact; infinities and NaN stay
// as they are. Returns the factor that undoes it.
__device__ __forceinline__ float qk_scale_row(float m, QkVec<float, 2>** v, int n) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
    const int ex = (__float_as_int(m) >> 23) & 0xff;
    const int e = m >= 16384.0f && ex < 255 ? 127 + 14 - ex : 0;
    const float sc = __int_as_float((127 + e) << 23);
    for (int q = 0; q < n; ++q) {
        v[q]->v[0] *= sc;
        v[q]->v[1] *= sc;
    }
    return __int_as_float((127 - e) << 23);
}

// qk_scale_row for a lane's 8 inputs of a row (the row's 32 inputs of a chunk over the quad).
__device__ __forceinline__ float qk_scale_row8(float* v) {
    float m = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) m = fmaxf(m, fabsf(v[e]));
    QkVec<float, 2> pairs[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) pairs[q] = QkVec<float, 2>{{v[2 * q], v[2 * q + 1]}};
    QkVec<float, 2>* pp[4] = {&pairs[0], &pairs[1], &pairs[2], &pairs[3]};
    const float back = qk_scale_row(m, pp, 4);
#pragma unroll
    for (int q = 0; q < 8; ++q) v[q] = pairs[q >> 1].v[q & 1];
    return back;
}

// d += A B (one mma.sync), or with SCALED d += (A B) back[row] (rows g, g + 8: d[0, 1], d[2, 3]).
template <bool SCALED>
__device__ __forceinline__ void qk_mma_scaled(float* d, const unsigned* a, const unsigned* b, const float* back) {
    if constexpr (SCALED) {
        float t4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        qk_mma_16816(t4, a, b, t4);
#pragma unroll
        for (int c = 0; c < 4; ++c) d[c] = __fmaf_rn(t4[c], back[c >> 1], d[c]);
    } else {
        qk_mma_16816(d, a, b, d);
    }
}

// Whether any lane of the warp holds a sum x that is not finite (x beyond f16's range).
template <int MT>
__device__ __forceinline__ bool qk_any_not_finite(const float (*xs)[4]) {
    bool bad = false;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) bad = bad || !(fabsf(xs[i][c]) <= 3.402823466e38f);
    return __any_sync(0xffffffffu, bad);
}

// 8 consecutive floats at p (32-byte aligned) as two 16-byte loads.
__device__ __forceinline__ void qk_load_f32x8(const float* p, float* v) {
    const QkVec<float, 4> lo = *reinterpret_cast<const QkVec<float, 4>*>(p);
    const QkVec<float, 4> hi = *reinterpret_cast<const QkVec<float, 4>*>(p + 4);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        v[e] = lo.v[e];
        v[e + 4] = hi.v[e];
    }
}

// Dec::fetch for decoders whose lane reads 8 consecutive bytes of each subtile's output at
// col[j].p + k: raw[2 j], raw[2 j + 1].
template <int NT, class Col>
__device__ __forceinline__ void qk_fetch_8bytes(const Col* col, int k, unsigned* raw) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        const QkVec<unsigned, 2> w = *reinterpret_cast<const QkVec<unsigned, 2>*>(col[j].p + (unsigned)k);
        raw[2 * j] = w.v[0];
        raw[2 * j + 1] = w.v[1];
    }
}

template <class Dec, int MT, int NT>
__device__ __forceinline__ void qk_mma_gemm(const Dec& d, const float* __restrict__ x, float* __restrict__ y, int m_dim,
                                            int n_dim, int k_dim) {
    const long long lin = qk_linear0();
    const int lane = (int)(lin & 31), g = lane >> 2, t = lane & 3;
    const int ntiles = (n_dim + 8 * NT - 1) / (8 * NT), mtiles = (m_dim + 16 * MT - 1) / (16 * MT);
    const long long tiles = (long long)ntiles * mtiles;
    for (long long w = lin >> 5; w < tiles; w += qk_linear_step() >> 5) {  // uniform in a warp
        const int n0 = (int)(w % ntiles) * 8 * NT, m0 = (int)(w / ntiles) * 16 * MT;
        typename Dec::Col col[NT];
#pragma unroll
        for (int j = 0; j < NT; ++j) col[j] = d.column(min(n0 + 8 * j + g, n_dim - 1));
        float acc[MT][NT][4];
        auto clear = [&] {
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j)
#pragma unroll
                    for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;
        };
        clear();
        float xs[MT][4];  // sum x per row: only to flag x beyond f16's range
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) xs[i][c] = 0.0f;
        // One k-step; SCALED as in qk_mma_gemm_grouped below (each row's 16 inputs scaled by a
        // power of two into f16's range, the step's sums scaled back in f32).
        auto step = [&](int k0, auto scaled) {
            constexpr bool S = decltype(scaled)::value;
            const int k = k0 + 2 * t;
            unsigned a[MT][4];
            float back[MT][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int r0 = m0 + 16 * i + g, r1 = r0 + 8;
                QkVec<float, 2> x00{{0.0f, 0.0f}}, x01{{0.0f, 0.0f}}, x10{{0.0f, 0.0f}}, x11{{0.0f, 0.0f}};
                if (r0 < m_dim) {
                    x00 = *reinterpret_cast<const QkVec<float, 2>*>(x + (long long)r0 * k_dim + k);
                    x01 = *reinterpret_cast<const QkVec<float, 2>*>(x + (long long)r0 * k_dim + k + 8);
                }
                if (r1 < m_dim) {
                    x10 = *reinterpret_cast<const QkVec<float, 2>*>(x + (long long)r1 * k_dim + k);
                    x11 = *reinterpret_cast<const QkVec<float, 2>*>(x + (long long)r1 * k_dim + k + 8);
                }
                if constexpr (S) {
                    QkVec<float, 2>* rows[2][2] = {{&x00, &x01}, {&x10, &x11}};
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        float m = 0.0f;
#pragma unroll
                        for (int q = 0; q < 4; ++q) m = fmaxf(m, fabsf(rows[h][q >> 1]->v[q & 1]));
                        back[i][h] = qk_scale_row(m, rows[h], 2);
                    }
                }
                a[i][0] = qk_f16x2(x00.v[0], x00.v[1]);
                a[i][1] = qk_f16x2(x10.v[0], x10.v[1]);
                a[i][2] = qk_f16x2(x01.v[0], x01.v[1]);
                a[i][3] = qk_f16x2(x11.v[0], x11.v[1]);
            }
            const unsigned ones[2] = {0x3c003c00u, 0x3c003c00u};
#pragma unroll
            for (int i = 0; i < MT; ++i) qk_mma_scaled<S>(xs[i], a[i], ones, back[i]);
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                if (n0 + 8 * j >= n_dim) break;  // uniform: N % 8 == 0
                float wv[4];
                d.weights(col[j], k, wv);
                const unsigned b[2] = {qk_f16x2(wv[0], wv[1]), qk_f16x2(wv[2], wv[3])};
#pragma unroll
                for (int i = 0; i < MT; ++i) qk_mma_scaled<S>(acc[i][j], a[i], b, back[i]);
            }
        };
#pragma unroll 1
        for (int k0 = 0; k0 < k_dim; k0 += 16) step(k0, QkBool<false>{});
        if (qk_any_not_finite<MT>(xs)) {  // x beyond f16's range: the tile again, scaled
            clear();
#pragma unroll 1
            for (int k0 = 0; k0 < k_dim; k0 += 16) step(k0, QkBool<true>{});
        }
#pragma unroll
        for (int i = 0; i < MT; ++i) {
            const int r0 = m0 + 16 * i + g, r1 = r0 + 8;
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                const int n = n0 + 8 * j + 2 * t;
                if (n >= n_dim) break;
                if (r0 < m_dim)
                    *reinterpret_cast<QkVec<float, 2>*>(y + (long long)r0 * n_dim + n) =
                        QkVec<float, 2>{{acc[i][j][0], acc[i][j][1]}};
                if (r1 < m_dim)
                    *reinterpret_cast<QkVec<float, 2>*>(y + (long long)r1 * n_dim + n) =
                        QkVec<float, 2>{{acc[i][j][2], acc[i][j][3]}};
            }
        }
    }
}

// Subtiles of 8 outputs a warp takes for tiles of MT x 16 rows, where the decoder may choose
// (all but AWQ, whose word interleave fixes 8): 8 at 16 rows, so the x rows' loads and
// conversion and the loop's bookkeeping serve twice the weights (about a fifth fewer
// instructions per weight); 4 at 32 rows, where 8 would spill. The launcher mirrors it.
constexpr int qk_gemmg_nt(int mt) { return mt == 1 ? 8 : 4; }

// Chunks of codes the group-scaled GEMM keeps in flight a warp for tiles of MT x 16 rows. At 16
// rows the GEMM is bound by the weight's bytes, and its registers (past 168 with one chunk but
// AWQ's) already allow only 2 blocks of 4 warps a multiprocessor, which one chunk a warp (1 KiB
// at 4 bits) leaves short of the bytes in flight that DRAM's latency asks for; a second chunk's
// registers cost no occupancy there (any count up to 255 gives 2 blocks). At 32 rows one more
// chunk would cost a block.
constexpr int qk_gemmg_depth(int mt) { return mt == 1 ? 2 : 1; }

// d += A B over a chunk's two mma steps (a[s], b[s]: step s's fragments), or with SCALED d +=
// (A B) back[row] (rows g, g + 8: d[0, 1], d[2, 3]), the sums of a chunk whose rows were scaled
// into f16's range.
template <bool SCALED>
__device__ __forceinline__ void qk_mma2(float* d, const unsigned (*a)[4], const unsigned (*b)[2], const float* back) {
    if constexpr (SCALED) {
        float t4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int s = 0; s < 2; ++s) qk_mma_16816(t4, a[s], b[s], t4);
#pragma unroll
        for (int c = 0; c < 4; ++c) d[c] = __fmaf_rn(t4[c], back[c >> 1], d[c]);
    } else {
#pragma unroll
        for (int s = 0; s < 2; ++s) qk_mma_16816(d, a[s], b[s], d);
    }
}

// A group's sums ga into acc for the lane's outputs, then ga and the group's sum x (xs[i][2 h]:
// row 16 i + g + 8 h) zeroed. Dec::params gives the scales and zero points of every subtile's
// columns 2t, 2t + 1 from the tile's cursor Dec::Par (made once per work item by Dec::par). Two
// FMAs per output.
template <class Dec, int MT>
__device__ __forceinline__ void qk_gemmg_flush(const Dec& d, const typename Dec::Par& par, int grp,
                                               float (*ga)[Dec::NT][4], float (*xs)[4], float (*acc)[Dec::NT][4]) {
    constexpr int NT = Dec::NT;
    float s[NT][2], z[NT][2];
    d.params(par, grp, s, z);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int c = 0; c < 2; ++c)
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float& a = ga[i][j][2 * h + c];
                    const float v = Dec::ZERO ? __fmaf_rn(-z[j][c], xs[i][2 * h], a) : a;
                    acc[i][j][2 * h + c] = __fmaf_rn(s[j][c], v * Dec::UNIT, acc[i][j][2 * h + c]);
                    a = 0.0f;
                }
    }
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) xs[i][c] = 0.0f;
}

// A work item's sums out (the warp's tile: rows m0 .., outputs from n0): with one slice, into y;
// with several, into this slice's part[slice][M][N], and the tile's last slice to finish (an
// atomic count per tile in counters, reset after) adds the slices in slice order into y.
template <class Dec, int MT>
__device__ __forceinline__ void qk_gemmg_store(const float (*acc)[Dec::NT][4], float* __restrict__ y,
                                               float* __restrict__ part, unsigned* __restrict__ counters, int m0,
                                               int n0, int m_dim, int n_dim, int kslices, int slice, long long tile,
                                               int lane) {
    constexpr int NT = Dec::NT;
    const int g = lane >> 2, t = lane & 3;
    float* out = kslices == 1 ? y : part + (long long)slice * m_dim * n_dim;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = m0 + 16 * i + g + 8 * h;
            if (r >= m_dim) continue;
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                float* yr = out + (long long)r * n_dim;
                if (Dec::out(n0, j, 1) == Dec::out(n0, j, 0) + 1)  // adjacent outputs: one store
                    *reinterpret_cast<QkVec<float, 2>*>(yr + Dec::out(n0, j, 2 * t)) =
                        QkVec<float, 2>{{acc[i][j][2 * h], acc[i][j][2 * h + 1]}};
                else
#pragma unroll
                    for (int c = 0; c < 2; ++c) yr[Dec::out(n0, j, 2 * t + c)] = acc[i][j][2 * h + c];
            }
        }
    if (kslices == 1) return;  // uniform
    __threadfence();  // this lane's sums reach the device before the warp's count below
    __syncwarp();     // ... every lane's, before lane 0 counts (lanes may have diverged above)
    unsigned ticket = 0u;
    if (lane == 0) ticket = atomicAdd(&counters[tile], 1u);
    ticket = __shfl_sync(0xffffffffu, ticket, 0);
    if (ticket != (unsigned)kslices - 1u) return;  // uniform
    __threadfence();
    const int rows = min(16 * MT, m_dim - m0);
    for (int e = lane; e < rows * 8 * NT; e += 32) {
        const int r = m0 + e / (8 * NT), n = n0 + e % (8 * NT);  // the tile's outputs, in any order
        const float* p = part + (long long)r * n_dim + n;
        float sum = 0.0f;
        for (int sl = 0; sl < kslices; ++sl) sum = sum + __ldcg(p + (long long)sl * m_dim * n_dim);
        y[(long long)r * n_dim + n] = sum;
    }
    // The slices' sums are dead once added (a dirty line is written back when evicted: 4 MiB a
    // batch-16 call on a 4-bit 4096 x 14336 layer): slice sl's rows m0 .. of part[sl][M][N].
    __syncwarp();  // every lane's reads above first
    qk_discard_rows(
        part, n_dim, n0, 8 * NT, kslices * rows, [&](int i) { return (i / rows) * m_dim + m0 + i % rows; }, lane, 32);
    if (lane == 0) counters[tile] = 0u;
}

// ---- The group-scaled GEMM, for layers whose every aligned 32 inputs share one group (a zero
// point z and scale s per output; checked by the launcher): y[m, n] = sum over groups of s (sum_k
// x^ q - z sum_k x^), x^ = x rounded to f16. The codes q enter mma.sync as exact f16 integers,
// so no weight is rounded, and each group's s and z are applied in f32 when the group ends: per
// weight, the decode is a logic op and an exact f16 subtraction per pair of codes. sum_k x^
// comes from one more mma per step against a B of ones (applied where Dec::ZERO; FP8 has no zero
// point, but its sum x still flags x beyond f16's range, below).
//
// K is walked 32 inputs at a time, two mma steps. The order of inputs within a chunk is free
// (the sum does not care), so lane t of a quad takes inputs k0 + 8t .. k0 + 8t + 7 of its
// outputs. A decoder loads a lane's 8 codes of its NT outputs with few loads (Dec::fetch, into
// Dec::RAW words, qk_gemmg_depth(MT) chunks ahead of their use) and turns them into the B
// fragments of the two steps in registers (Dec::decode), b[j][s][r] = (code at Dec::slot(s, r,
// 0), code at Dec::slot(s, r, 1)); the A fragments take x at the same slots. Dec::out(n0, j, i) maps
// subtile j's column i to an output (a decoder may interleave outputs to share a load), and
// Dec::NT subtiles of 8 make a tile's width; a tile is MT x 16 rows. K % 32 == 0 and N a
// multiple of the tile's width (checked by the launcher): every lane's columns exist.
//
// Split K (kslices > 1, for few tiles): a work item is a tile and a slice of the K / 32 chunks;
// each slice writes its sums to part[slice][M][N], and the last slice of a tile to finish (an
// atomic count per tile in counters, reset after) adds the slices in order into y, then drops
// their L2 lines (qk_discard_l2): the result does not depend on which finishes last, and dead
// partial sums are not written back to DRAM. part holds kslices * M * N floats (from a 128-byte
// line, for the discards), counters one per tile (zero before the launch).
//
// x beyond f16's range (|x| > 65504 rounds to an infinity) makes some sum x of the group
// infinite or NaN: the group is then run again with each row's 32 inputs of a k-step scaled by a
// power of two into range (exact) and its sums scaled back in f32. So large activations cost a
// second pass over their groups, not a wrong result; an infinite or NaN x still gives an
// infinite or NaN y.
//
// Error bound, with u = 2^-11 and T = sum_k |x s| (|q| + |z|) (x^ in f16, q - z exact, f32 sums
// over at most K + K/32 + 4 roundings): |y - y_exact| <= u sum_k |x w| + 2^-25 sum_k |w| +
// 2 K 2^-24 (1 + 2u) T + 2^-39 max |x| sum_k |w|. The first term is x's rounding, the second x's
// f16 subnormals, the last those of a scaled re-run (a scale of at most max |x| 2^-14).
template <class Dec, int MT>
__device__ __forceinline__ void qk_mma_gemm_grouped(const Dec& d, const float* __restrict__ x, float* __restrict__ y,
                                                    int m_dim, int n_dim, int k_dim, float* __restrict__ part,
                                                    unsigned* __restrict__ counters, int kslices) {
    constexpr int NT = Dec::NT, DEPTH = qk_gemmg_depth(MT);
    const long long lin = qk_linear0();
    const int lane = (int)(lin & 31), g = lane >> 2, t = lane & 3;
    const int ntiles = n_dim / (8 * NT), mtiles = (m_dim + 16 * MT - 1) / (16 * MT);
    const long long items = (long long)ntiles * mtiles * kslices;
    const int chunks = k_dim / 32, per = (chunks + kslices - 1) / kslices;  // chunks per slice
    const unsigned ones[2] = {0x3c003c00u, 0x3c003c00u};
    const long long tiles = (long long)ntiles * mtiles;
    for (long long w = lin >> 5; w < items; w += qk_linear_step() >> 5) {  // uniform in a warp
        // Slice-major: a block's warps take neighbouring tiles of one slice, so they read the
        // same x rows and inputs (one L1 fill for the block) rather than a tile's slices.
        const int slice = (int)(w / tiles);
        const long long tile = w - slice * tiles;
        const int n0 = (int)(tile % ntiles) * 8 * NT, m0 = (int)(tile / ntiles) * 16 * MT;
        const int k_begin = min(slice * per, chunks) * 32, k_end = min((slice + 1) * per, chunks) * 32;
        // Rows past M read row M - 1 (their sums are not stored): no predicated loads. Offsets in
        // 32 bits (M K < 2^31, checked by the launcher): one wide multiply-add per row and chunk.
        unsigned xo[MT][2];
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h)
                xo[i][h] = (unsigned)min(m0 + 16 * i + g + 8 * h, m_dim - 1) * (unsigned)k_dim + 8u * (unsigned)t;
        typename Dec::Col col[NT];
#pragma unroll
        for (int j = 0; j < NT; ++j) col[j] = d.column(Dec::out(n0, j, g));
        const typename Dec::Par par = d.par(n0, t);
        float acc[MT][NT][4], ga[MT][NT][4], xs[MT][4];
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                xs[i][c] = 0.0f;
#pragma unroll
                for (int j = 0; j < NT; ++j) acc[i][j][c] = ga[i][j][c] = 0.0f;
            }
        auto flush = [&](int grp) { qk_gemmg_flush<Dec, MT>(d, par, grp, ga, xs, acc); };
        // One k-step: the x rows to f16 A fragments, sum x (for every decoder: it also flags x
        // beyond f16's range), the codes and the mma. SCALED, the rare re-run of a group in which
        // some x rounded to an infinity: each row's 32 inputs are first scaled by a power of two
        // into range (exact; 2^-e <= max |x| 2^-14), and the step's sums scaled back in f32.
        auto step = [&](int k0, const unsigned (*b)[2][2], auto scaled) {
            constexpr bool S = decltype(scaled)::value;
            unsigned a[MT][2][4];
            float back[MT][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                float v[2][8];
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    qk_load_f32x8(x + (xo[i][h] + (unsigned)k0), v[h]);
                    if constexpr (S) back[i][h] = qk_scale_row8(v[h]);
                }
#pragma unroll
                for (int s = 0; s < 2; ++s)
#pragma unroll
                    for (int r = 0; r < 2; ++r)
#pragma unroll
                        for (int h = 0; h < 2; ++h)  // a[0] row g, a[1] row g + 8; a[2], a[3] the k + 8 half
                            a[i][s][2 * r + h] = qk_f16x2(v[h][Dec::slot(s, r, 0)], v[h][Dec::slot(s, r, 1)]);
            }
            const unsigned ones2[2][2] = {{ones[0], ones[1]}, {ones[0], ones[1]}};
            if constexpr (S) {
#pragma unroll
                for (int i = 0; i < MT; ++i) qk_mma2<S>(xs[i], a[i], ones2, back[i]);
#pragma unroll
                for (int j = 0; j < NT; ++j)
#pragma unroll
                    for (int i = 0; i < MT; ++i) qk_mma2<S>(ga[i][j], a[i], b[j], back[i]);
            } else {
                // Step by step (each sum still takes step 0, then 1), so an mma's dependent one is
                // not the next.
#pragma unroll
                for (int s = 0; s < 2; ++s) {
#pragma unroll
                    for (int i = 0; i < MT; ++i) qk_mma_16816(xs[i], a[i][s], ones2[s], xs[i]);
#pragma unroll
                    for (int j = 0; j < NT; ++j)
#pragma unroll
                        for (int i = 0; i < MT; ++i) qk_mma_16816(ga[i][j], a[i][s], b[j][s], ga[i][j]);
                }
            }
        };
        // A group ends: if x overflowed f16 anywhere in it (some sum x is not finite), its steps
        // again, scaled; then its sums into acc.
        auto settle = [&](int grp, int kb, int ke) {
            if (qk_any_not_finite<MT>(xs)) {
#pragma unroll
                for (int i = 0; i < MT; ++i)
#pragma unroll
                    for (int c = 0; c < 4; ++c) {
                        xs[i][c] = 0.0f;
#pragma unroll
                        for (int j = 0; j < NT; ++j) ga[i][j][c] = 0.0f;
                    }
#pragma unroll 1
                for (int k0 = kb; k0 < ke; k0 += 32) {
                    unsigned r[Dec::RAW], b[NT][2][2];
                    d.fetch(col, k0 + 8 * t, r);
                    d.decode(col, r, b);
                    step(k0, b, QkBool<true>{});
                }
            }
            flush(grp);
        };
        // The next chunk's group is read one chunk ahead and the codes DEPTH chunks ahead (past
        // the slice's end, the current chunk's again: in bounds, unused), so the branch never
        // waits on memory and DEPTH chunks' codes are in flight while one is multiplied.
        const int k_first = min(k_begin, k_dim - 32);
        int grp = d.group(k_first), gk = grp, gstart = k_begin;
        unsigned raw[DEPTH][Dec::RAW];
#pragma unroll
        for (int p = 0; p < DEPTH; ++p)
            d.fetch(col, (p > 0 && 32 * p < k_end - k_begin ? k_begin + 32 * p : k_first) + 8 * t, raw[p]);
        // Chunk k0 with `left` inputs of the slice from it, its codes in r.
        auto next = [&](int k0, int left, unsigned* r) {
            if (gk != grp) {  // uniform
                settle(grp, gstart, k0);
                grp = gk;
                gstart = k0;
            }
            const int kn = left > 32 ? k0 + 32 : k0, kf = left > 32 * DEPTH ? k0 + 32 * DEPTH : k0;
            const int gn = d.group(kn);
            // Decoded first, so the later chunk's loads can land in the same registers (no copies).
            unsigned b[NT][2][2];
            d.decode(col, r, b);
            d.fetch(col, kf + 8 * t, r);
            step(k0, b, QkBool<false>{});
            gk = gn;
        };
        // Unrolled DEPTH times, so each chunk's codes have registers of their own.
#pragma unroll 1
        for (int k0 = k_begin, left = k_end - k_begin; left > 0; k0 += 32 * DEPTH, left -= 32 * DEPTH) {
#pragma unroll
            for (int p = 0; p < DEPTH; ++p) {
                if (p > 0 && left <= 32 * p) break;  // uniform
                next(k0 + 32 * p, left - 32 * p, raw[p]);
            }
        }
        if (k_begin < k_end) settle(grp, gstart, k_end);
        qk_gemmg_store<Dec, MT>(acc, y, part, counters, m0, n0, m_dim, n_dim, kslices, slice, tile, lane);
    }
}

// ---- The wide group-scaled GEMM, for large batches: the group-scaled GEMM's arithmetic (exact
// f16 codes, each group's scale applied in f32 at its end, the same error bound) with x staged
// once per block instead of once per warp. A block of 4 warps (128 threads: the launcher's; any
// whole number of warps works) takes 16 MT rows and 4 neighbouring tiles of NT x 8 outputs (MT =
// 4 at NT = 4, 2 for AWQ's 8) over one slice of K. For each 32-input chunk the block converts
// the rows' x to f16 once, in the A fragments' order, into shared memory (double buffered: the
// next chunk is loaded while this one is multiplied and staged after it, one barrier a chunk),
// with each row's sum of x^ where the decoder has zero points (Dec::ZERO); the warps read their
// fragments there (two 16-byte loads per 16 rows) instead of loading and converting x each. A
// decoder with integer zero points may fold them into the codes instead (Dec::FOLD: q - z is
// still an exact f16), so a group's end is one FMA an output.
//
// x beyond f16's range: a chunk whose sums of x^ are not finite somewhere (the block agrees at
// its barrier) is staged again with its rows scaled by powers of two into range (exact, as in the
// group-scaled GEMM's re-run); its products are then summed on their own and scaled back by row
// in f32.
//
// Stage layout (K % 32 == 0, N % (8 NT) == 0, groups of whole aligned 32-input blocks, as the
// group-scaled GEMM): warp w stages row tiles w, w + warps, ...; lane (g, t) of it converts rows
// 16 i + g and 16 i + 8 + g, inputs 8 t .. 8 t + 7, and stores its A fragments of both mma steps
// at a[(2 i + s) 32 + lane]: a warp's loads and stores are 16 consecutive bytes a lane.
constexpr int qk_gemmw_mt(int nt) { return nt == 8 ? 2 : 4; }

template <int MT>
struct QkWideStage {
    QkVec<unsigned, 4> a[64 * MT];    // [i][s][lane]: the lane's A fragment of row tile i, step s
    QkVec<float, 4> sx[8][MT / 2];    // [g][2 i + h]: the row's sum of x^ (scaled back)
    QkVec<float, 4> back[8][MT / 2];  // [g][2 i + h]: the factor that undoes the row's scaling
};

// Rows 16 i + g and 16 i + 8 + g of the block (v[0], v[1]), inputs 8 t .. 8 t + 7 of chunk k0:
// the lane's part of row tile i (rows past M read row M - 1; M K < 2^31, checked by the
// launcher).
template <int MT>
__device__ __forceinline__ void qk_wide_load(const float* __restrict__ x, int m0, int m_dim, int k_dim, int k0, int i,
                                             int lane, float (*v)[8]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const unsigned r = (unsigned)min(m0 + 16 * i + 8 * h + (lane >> 2), m_dim - 1);
        qk_load_f32x8(x + (r * (unsigned)k_dim + (unsigned)(k0 + 8 * (lane & 3))), v[h]);
    }
}

// Row tile i's inputs v (qk_wide_load's; the whole warp) into the stage as f16 pairs, with each
// row's sum of x^ where the decoder has zero points. Returns whether a sum of the lane's is not
// finite (x beyond f16's range; the sums come from one mma a step against ones, as in the
// group-scaled GEMM). SCALE, the block's rare second pass over such a chunk: each row is scaled
// into f16's range first (qk_scale_row8, as the group-scaled GEMM's re-run), the sums are added
// over the quad (no mma off the hot path), and each row's factor that undoes it is stored too.
template <class Dec, int MT, bool SCALE>
__device__ __forceinline__ bool qk_wide_store(QkWideStage<MT>& st, int i, int lane, float (*v)[8]) {
    float back[2] = {1.0f, 1.0f}, sx[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if constexpr (SCALE) {
#pragma unroll
        for (int h = 0; h < 2; ++h) back[h] = qk_scale_row8(v[h]);
    }
    unsigned a[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int s = 0; s < 2; ++s)
#pragma unroll
            for (int r = 0; r < 2; ++r)  // a[s][0] row g, a[s][1] row g + 8; a[s][2, 3] the k + 8 half
                a[s][2 * r + h] = qk_f16x2(v[h][Dec::slot(s, r, 0)], v[h][Dec::slot(s, r, 1)]);
#pragma unroll
    for (int s = 0; s < 2; ++s) st.a[(2 * i + s) * 32 + lane] = QkVec<unsigned, 4>{{a[s][0], a[s][1], a[s][2], a[s][3]}};
    if constexpr (SCALE) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float sum = 0.0f;
#pragma unroll
            for (int q = 0; q < 4; ++q)
                sum = sum + qk_f16_lo(a[q >> 1][2 * (q & 1) + h]) + qk_f16_hi(a[q >> 1][2 * (q & 1) + h]);
            sum = sum + __shfl_xor_sync(0xffffffffu, sum, 1);
            sx[2 * h] = sum + __shfl_xor_sync(0xffffffffu, sum, 2);
        }
    } else {
        const unsigned ones[2][2] = {{0x3c003c00u, 0x3c003c00u}, {0x3c003c00u, 0x3c003c00u}};
        qk_mma2<false>(sx, a, ones, back);
    }
    if ((lane & 3) == 0) {
        const int g = lane >> 2;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            if constexpr (Dec::ZERO) st.sx[g][i >> 1].v[2 * (i & 1) + h] = sx[2 * h] * back[h];
            if constexpr (SCALE) st.back[g][i >> 1].v[2 * (i & 1) + h] = back[h];
        }
    }
    return !(fabsf(sx[0]) <= 3.402823466e38f) || !(fabsf(sx[2]) <= 3.402823466e38f);
}

// A decoder's zero-point state for folding (Dec::FOLD: Dec::Fold, Dec::FoldPar), or empty.
template <bool FOLD, class Dec>
struct QkFoldOf {
    struct Fold {};
    struct FoldPar {};
    __device__ __forceinline__ static FoldPar par(const Dec&, int, int) { return FoldPar{}; }
};
template <class Dec>
struct QkFoldOf<true, Dec> {
    using Fold = typename Dec::Fold;
    using FoldPar = typename Dec::FoldPar;
    __device__ __forceinline__ static FoldPar par(const Dec& d, int n0, int g) { return d.fold_par(n0, g); }
};

template <class Dec>
__device__ __forceinline__ void qk_mma_gemm_wide(const Dec& d, const float* __restrict__ x, float* __restrict__ y,
                                                 int m_dim, int n_dim, int k_dim, float* __restrict__ part,
                                                 unsigned* __restrict__ counters, int kslices) {
    constexpr int NT = Dec::NT, MT = qk_gemmw_mt(NT), QI = (MT + 3) / 4;  // QI: row tiles a warp stages (of 4+)
    __shared__ QkWideStage<MT> stage[2];
    const int tid = (int)(threadIdx.y * blockDim.x + threadIdx.x), nthreads = (int)(blockDim.x * blockDim.y);
    const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3, warps = nthreads >> 5;
    const int ntiles = n_dim / (8 * NT), nbn = (ntiles + warps - 1) / warps, mblocks = (m_dim + 16 * MT - 1) / (16 * MT);
    const long long btiles = (long long)nbn * mblocks, items = btiles * kslices;
    const int chunks = k_dim / 32, per = (chunks + kslices - 1) / kslices;  // chunks per slice
    // Staging chunk k0 into st: warp w takes row tiles w, w + warps, ...: QI of them held in v
    // (loaded first, so the loads are in flight while the warps multiply), any more (fewer than 4
    // warps) loaded and stored at once.
    auto load = [&](int m0, int k0, float (*v)[2][8]) {
#pragma unroll
        for (int q = 0; q < QI; ++q)
            if (warp + q * warps < MT) qk_wide_load<MT>(x, m0, m_dim, k_dim, k0, warp + q * warps, lane, v[q]);
    };
    auto store = [&](QkWideStage<MT>& st, int m0, int k0, float (*v)[2][8], auto scale) {
        constexpr bool S = decltype(scale)::value;
        bool bad = false;
#pragma unroll
        for (int q = 0; q < QI; ++q)  // uniform in a warp
            if (warp + q * warps < MT) bad = qk_wide_store<Dec, MT, S>(st, warp + q * warps, lane, v[q]) || bad;
        for (int i = warp + QI * warps; i < MT; i += warps) {
            float w[2][8];
            qk_wide_load<MT>(x, m0, m_dim, k_dim, k0, i, lane, w);
            bad = qk_wide_store<Dec, MT, S>(st, i, lane, w) || bad;
        }
        return bad;
    };
    // Stage chunk k0 into st, and again scaled where some x of it is beyond f16's range (the
    // block agrees at the barrier). Returns whether it was.
    auto stage_chunk = [&](QkWideStage<MT>& st, int m0, int k0, float (*v)[2][8]) {
        const int over = __syncthreads_or(store(st, m0, k0, v, QkBool<false>{}));
        if (QK_RARE(over)) {  // uniform
            store(st, m0, k0, v, QkBool<true>{});
            __syncthreads();
        }
        return over != 0;
    };
    for (long long bi = (long long)blockIdx.y * gridDim.x + blockIdx.x; bi < items;
         bi += (long long)gridDim.x * gridDim.y) {  // uniform in a block
        const int slice = (int)(bi / btiles);
        const long long bt = bi - slice * btiles;
        const int ntile = (int)(bt % nbn) * warps + warp, m0 = (int)(bt / nbn) * 16 * MT;
        const bool active = ntile < ntiles;  // uniform in a warp: a warp past N only stages
        const int n0 = (active ? ntile : 0) * 8 * NT;
        const int k_begin = min(slice * per, chunks) * 32, k_end = min((slice + 1) * per, chunks) * 32;
        typename Dec::Col col[NT];
#pragma unroll
        for (int j = 0; j < NT; ++j) col[j] = d.column(Dec::out(n0, j, g));
        const typename Dec::Par par = d.par(n0, t);
        // Folded zero points (Dec::FOLD): the lane's B columns' of the current group.
        const typename QkFoldOf<Dec::FOLD, Dec>::FoldPar fp = QkFoldOf<Dec::FOLD, Dec>::par(d, n0, g);
        typename QkFoldOf<Dec::FOLD, Dec>::Fold fz;
        float acc[MT][NT][4], ga[MT][NT][4], xs[MT][4];
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                xs[i][c] = 0.0f;
#pragma unroll
                for (int j = 0; j < NT; ++j) acc[i][j][c] = ga[i][j][c] = 0.0f;
            }
        // One chunk from its stage: the rows' sums of x^ into xs, the A fragments and the mma. A
        // scaled chunk (some row's x scaled by 2^-e into f16's range, rare) is summed on its own:
        // the group's sums so far go into acc first, then the chunk's, multiplied back by row
        // (exact: powers of two), go in too, and the group goes on from zero.
        auto chunk = [&](const QkWideStage<MT>& st, const unsigned (*b)[2][2], bool scaled, int grp) {
            if (QK_RARE(scaled)) qk_gemmg_flush<Dec, MT>(d, par, grp, ga, xs, acc);  // uniform
#pragma unroll
            for (int q = 0; q < MT / 2; ++q) {
                if constexpr (!Dec::ZERO) break;  // sum x: for the zero points only
                const QkVec<float, 4> v = st.sx[g][q];
                xs[2 * q][0] = xs[2 * q][0] + v.v[0];
                xs[2 * q][2] = xs[2 * q][2] + v.v[1];
                xs[2 * q + 1][0] = xs[2 * q + 1][0] + v.v[2];
                xs[2 * q + 1][2] = xs[2 * q + 1][2] + v.v[3];
            }
            // Step by step (each sum still takes step 0, then 1), so an mma's dependent one is MT NT
            // mma later rather than next.
#pragma unroll
            for (int s = 0; s < 2; ++s)
#pragma unroll
                for (int i = 0; i < MT; ++i) {
                    const QkVec<unsigned, 4> av = st.a[(2 * i + s) * 32 + lane];
#pragma unroll
                    for (int j = 0; j < NT; ++j) qk_mma_16816(ga[i][j], av.v, b[j][s], ga[i][j]);
                }
            if (QK_RARE(scaled)) {
#pragma unroll
                for (int q = 0; q < MT / 2; ++q) {
                    const QkVec<float, 4> bv = st.back[g][q];
#pragma unroll
                    for (int e = 0; e < 4; ++e)
#pragma unroll
                        for (int j = 0; j < NT; ++j)
#pragma unroll
                            for (int c = 0; c < 2; ++c) ga[2 * q + (e >> 1)][j][2 * (e & 1) + c] *= bv.v[e];
                }
                qk_gemmg_flush<Dec, MT>(d, par, grp, ga, xs, acc);
            }
        };
        if (k_begin < k_end) {  // uniform in the block
            float v[QI][2][8];
            load(m0, k_begin, v);
            bool scaled = stage_chunk(stage[0], m0, k_begin, v);
            int grp = d.group(k_begin), gk = grp, buf = 0;
            if constexpr (Dec::FOLD)
                if (active) d.fold(fp, grp, fz);
            unsigned raw[Dec::RAW];
            d.fetch(col, k_begin + 8 * t, raw);
#pragma unroll 1
            for (int k0 = k_begin, left = k_end - k_begin; left > 0; k0 += 32, left -= 32) {
                if (gk != grp) {  // uniform
                    if (active) {
                        qk_gemmg_flush<Dec, MT>(d, par, grp, ga, xs, acc);
                        if constexpr (Dec::FOLD) d.fold(fp, gk, fz);
                    }
                    grp = gk;
                }
                // The next chunk is loaded, staged and fetched; the last chunk stages itself again
                // (in bounds, into the stage nobody reads), so the loop has no branch on it.
                const int kn = left > 32 ? k0 + 32 : k0;
                load(m0, kn, v);
                const int gn = d.group(kn);
                if (active) {
                    unsigned b[NT][2][2];
                    if constexpr (Dec::FOLD)
                        d.decode(col, raw, b, &fz);
                    else
                        d.decode(col, raw, b);
                    d.fetch(col, kn + 8 * t, raw);
                    chunk(stage[buf], b, scaled, grp);
                }
                gk = gn;
                // The next stage, and every warp done with this one.
                scaled = stage_chunk(stage[buf ^ 1], m0, kn, v);
                buf ^= 1;
            }
            if (active) qk_gemmg_flush<Dec, MT>(d, par, grp, ga, xs, acc);
        }
        if (active) qk_gemmg_store<Dec, MT>(acc, y, part, counters, m0, n0, m_dim, n_dim, kslices, slice,
                                            (long long)(m0 / (16 * MT)) * ntiles + ntile, lane);
    }
}
