//! The `f32` lanes SIMD code runs on: run-time ISA dispatch and the affine inner loops.
//!
//! A user who embeds the crate builds it without special `RUSTFLAGS`, so the ISA is chosen at
//! run time: [`dispatch`] runs a [`Kernel`] inside a function compiled for the best instruction
//! set the CPU reports (through `pulp`: AVX-512 = x86-64-v4, AVX2+FMA = x86-64-v3, or the
//! baseline), and the plain loops below, inlined into it, are vectorized for that ISA by the
//! compiler. [`isa`] names what ran; benches and the CLI print it.
//!
//! The loops compute `(q - z) * s` as a subtraction and a multiplication, each rounded to `f32`:
//! no fused multiply-add, so every ISA gives the same bits as the scalar reference.

/// The instruction set [`dispatch`] runs kernels with on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64-v4: AVX-512 F/BW/CD/DQ/VL (512-bit lanes).
    X86V4Avx512,
    /// x86-64-v3: AVX2 + FMA + F16C (256-bit lanes).
    X86V3Avx2,
    /// Whatever the binary was compiled for (SSE2 on a default x86-64 build, NEON on aarch64).
    Baseline,
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isa::X86V4Avx512 => "x86-64-v4 (AVX-512, 16 f32 lanes)",
            Isa::X86V3Avx2 => "x86-64-v3 (AVX2+FMA, 8 f32 lanes)",
            Isa::Baseline => {
                if cfg!(target_arch = "x86_64") {
                    "x86-64 baseline (SSE2, 4 f32 lanes)"
                } else {
                    "compile-time baseline"
                }
            }
        })
    }
}

/// The ISA [`dispatch`] selects on this CPU (detected once, then cached by `std`).
///
/// ```
/// let isa = quant_kernels::lanes::isa();
/// println!("kernels run with {isa}");
/// ```
pub fn isa() -> Isa {
    match pulp::Arch::new() {
        #[cfg(target_arch = "x86_64")]
        pulp::Arch::V4(_) => Isa::X86V4Avx512,
        #[cfg(target_arch = "x86_64")]
        pulp::Arch::V3(_) => Isa::X86V3Avx2,
        _ => Isa::Baseline,
    }
}

/// A unit of work to run under [`dispatch`]. Implementations mark `run` `#[inline(always)]` so
/// that its loops are compiled inside the ISA-specific function.
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;
    /// Do the work.
    fn run(self) -> Self::Output;
}

struct Dispatched<K>(K);

impl<K: Kernel> pulp::WithSimd for Dispatched<K> {
    type Output = K::Output;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> K::Output {
        self.0.run()
    }
}

/// Run `k` compiled for the best ISA of this CPU (see [`isa`]).
#[inline]
pub(crate) fn dispatch<K: Kernel>(k: K) -> K::Output {
    pulp::Arch::new().dispatch(Dispatched(k))
}

/// `out[i] = (decode(words[i]) - zero[i]) * scale[i]`: per-lane zero and scale.
#[inline(always)]
pub(crate) fn affine_lanes<W: Copy>(
    words: &[W],
    decode: impl Fn(W) -> u32,
    zero: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    let n = out.len();
    let (words, zero, scale) = (&words[..n], &zero[..n], &scale[..n]);
    for i in 0..n {
        out[i] = (decode(words[i]) as f32 - zero[i]) * scale[i];
    }
}

/// `out[i] = (decode(words[i]) - zero) * scale`: one zero and scale for the whole slice.
#[inline(always)]
pub(crate) fn affine_splat<W: Copy>(
    words: &[W],
    decode: impl Fn(W) -> u32,
    zero: f32,
    scale: f32,
    out: &mut [f32],
) {
    let n = out.len();
    let words = &words[..n];
    for i in 0..n {
        out[i] = (decode(words[i]) as f32 - zero) * scale;
    }
}
