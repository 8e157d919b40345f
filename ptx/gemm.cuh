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
// Error bound (f16 rounding of x and of W, f32 accumulation): |y - y_exact| <= (2u + u^2 +
// K 2^-24) sum_k |x w| + K 2^-25 max|x| with u = 2^-11, the last term for weights in f16's
// subnormal range. Not bit-exact with the GEMV or the CPU path.
#pragma once
#include "common.cuh"

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
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;
#pragma unroll 1
        for (int k0 = 0; k0 < k_dim; k0 += 16) {
            const int k = k0 + 2 * t;
            unsigned a[MT][4];
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
                a[i][0] = qk_f16x2(x00.v[0], x00.v[1]);
                a[i][1] = qk_f16x2(x10.v[0], x10.v[1]);
                a[i][2] = qk_f16x2(x01.v[0], x01.v[1]);
                a[i][3] = qk_f16x2(x11.v[0], x11.v[1]);
            }
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                if (n0 + 8 * j >= n_dim) break;  // uniform: N % 8 == 0
                float wv[4];
                d.weights(col[j], k, wv);
                const unsigned b[2] = {qk_f16x2(wv[0], wv[1]), qk_f16x2(wv[2], wv[3])};
#pragma unroll
                for (int i = 0; i < MT; ++i) qk_mma_16816(acc[i][j], a[i], b, acc[i][j]);
            }
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
