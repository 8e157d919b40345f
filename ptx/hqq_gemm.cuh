// HQQ's decoder for the group-scaled GEMMs (gemm.cuh), shared by hqq_gemm.cu (16- and 32-row
// tiles) and hqq_gemmw.cu (the wide form).
#pragma once
#include "gemm.cuh"

// ---- Group-scaled GEMM (gemm.cuh's qk_mma_gemm_grouped) for 4- and 8-bit HQQ on axis 1 with the
// group (cols) a power of two >= 32 that divides K: output n's groups are code rows n K / cols +
// k / cols. Its plane is fixed (N % 32 == 0 puts plane boundaries between outputs), so a lane's
// 8 codes are 8 bytes of one plane, taken as bytes 0, 2 and 1, 3 of each word.
template <int BITS, typename T, int NT_>
struct QkHqqGemmG {
    static constexpr int NT = NT_;
    static constexpr bool ZERO = true;
    static constexpr bool FOLD = false;
    static constexpr float UNIT = 1.0f;
    const unsigned char* __restrict__ packed;
    const T* __restrict__ scales;
    const T* __restrict__ zeros;
    int k_dim, words, gpr, lg;  // gpr: groups per output (K / cols); cols = 2^lg
    unsigned one;

    struct Col {
        const unsigned char* p;  // output n's first code in its plane
        int shift;               // the plane's bits in each byte
    };
    static constexpr int out(int n0, int j, int i) { return n0 + 8 * j + i; }
    static constexpr int slot(int s, int r, int h) { return 4 * s + r + 2 * h; }
    __device__ __forceinline__ Col column(int n) const {
        const long long f = (long long)n * k_dim;
        const int j = (int)(f / words);
        return Col{packed + (f - (long long)j * words), BITS * (8 / BITS - 1 - j)};
    }
    static constexpr int RAW = 2 * NT;  // 8 bytes an output
    __device__ __forceinline__ void fetch(const Col* col, int k, unsigned* raw) const {
        qk_fetch_8bytes<NT>(col, k, raw);
    }
    __device__ __forceinline__ void decode(const Col* col, const unsigned* raw, unsigned (*b)[2][2]) const {
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int s = 0; s < 2; ++s)
                qk_u8x4_f16(BITS == 8 ? raw[2 * j + s] : (raw[2 * j + s] >> col[j].shift) & 0x0f0f0f0fu, one, b[j][s]);
    }
    __device__ __forceinline__ int group(int k0) const { return k0 >> lg; }
    // The lane's parameter columns n0 + 8j + 2t + c: their group rows (n0 + 2t) gpr + (8j + c)
    // gpr + grp, from one cursor (the first row) and the step gpr.
    struct Par {
        unsigned row;  // (n0 + 2t) gpr
    };
    __device__ __forceinline__ Par par(int n0, int t) const { return Par{(unsigned)(n0 + 2 * t) * (unsigned)gpr}; }
    __device__ __forceinline__ void params(const Par& p, int grp, float (*s)[2], float (*z)[2]) const {
        const T* sp = scales + (p.row + (unsigned)grp);
        const T* zp = zeros + (p.row + (unsigned)grp);
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int c = 0; c < 2; ++c) {
                const unsigned o = (unsigned)(8 * j + c) * (unsigned)gpr;
                s[j][c] = qk_to_f32(sp[o]);
                z[j][c] = qk_to_f32(zp[o]);
            }
    }
};
