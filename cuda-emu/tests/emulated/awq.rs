//! ptx/awq.cu on the CPU equals the crate's AWQ reference bit for bit (f32/f16/bf16, several
//! shapes and launch shapes).

use half::{bf16, f16};
use quant_kernels::Elem;
use quant_kernels::awq::{self, AwqLayout};
use quant_kernels_cuda_emu::{EmuElem, LAUNCHES_2D, awq_dequant};

fn case<T: Elem + EmuElem>(k: usize, n: usize, g: usize) {
    let l = AwqLayout::new(k, n, g).unwrap();
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let qw: Vec<i32> = (0..k * n / 8).map(|_| next() as i32).collect();
    let qz: Vec<i32> = (0..l.groups() * n / 8).map(|_| next() as i32).collect();
    let s: Vec<T> =
        (0..l.groups() * n).map(|_| <T as Elem>::from_f32((next() % 1000) as f32 * 1e-4 - 0.05)).collect();
    let mut want = vec![<T as Elem>::from_f32(0.0); k * n];
    awq::awq_dequantize_reference_into(&qw, &s, &qz, &l, &mut want).unwrap();
    for (grid, block) in LAUNCHES_2D {
        let got = awq_dequant(&qw, &qz, &s, k, n, g, grid, block);
        let same = got.iter().zip(&want).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
        assert!(same, "K{k} N{n} g{g} {}", T::DTYPE);
    }
}

#[test]
fn awq_kernel_source_equals_the_reference() {
    // Groups of 1, 3, 5, 12 and 20 rows cross a thread's 8-row chunk; K of 15, 9 and 60 leave a
    // partial last chunk.
    for (k, n, g) in [
        (1, 8, 1),
        (64, 40, 16),
        (128, 64, 32),
        (96, 24, 96),
        (15, 16, 3),
        (9, 8, 1),
        (60, 32, 12),
        (60, 24, 20),
        (10, 8, 5),
    ] {
        case::<f32>(k, n, g);
        case::<f16>(k, n, g);
        case::<bf16>(k, n, g);
    }
}
