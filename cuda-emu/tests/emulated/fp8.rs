//! ptx/fp8.cu on the CPU equals the crate's FP8 reference bit for bit, NaN payloads included,
//! for both formats, every element type, block and per-tensor scales, both vector widths.

use half::{bf16, f16};
use quant_kernels::Elem;
use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
use quant_kernels_cuda_emu::{EmuElem, LAUNCHES_2D, fp8_dequant};

fn case<T: Elem + EmuElem>(rows: usize, cols: usize, br: usize, bc: usize) {
    case_scaled::<T>(rows, cols, br, bc, |i| 1e-3 * (i + 1) as f32);
}

fn case_scaled<T: Elem + EmuElem>(rows: usize, cols: usize, br: usize, bc: usize, scale: fn(usize) -> f32) {
    let l = Fp8Layout::block(rows, cols, br, bc).unwrap();
    let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 256) as u8).collect();
    let (sr, sc) = l.scale_shape();
    let scales: Vec<f32> = (0..sr * sc).map(scale).collect();
    for (fi, f) in [Fp8Format::E4M3, Fp8Format::E5M2].into_iter().enumerate() {
        let mut want = vec![<T as Elem>::from_f32(0.0); rows * cols];
        fp8::fp8_dequantize_reference_into(&codes, &scales, f, &l, &mut want).unwrap();
        for (grid, block) in LAUNCHES_2D {
            let got: Vec<T> = fp8_dequant(fi, &codes, &scales, rows, cols, (br, bc), grid, block);
            let same = got.iter().zip(&want).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
            assert!(same, "{f:?} {rows}x{cols} block {br}x{bc} {}", T::DTYPE);
        }
    }
}

#[test]
fn fp8_kernel_source_equals_the_reference() {
    // (5, 24, 2, 3) and (4, 40, 3, 12): scale blocks change inside an 8-wide vector.
    for (rows, cols, br, bc) in
        [(16, 16, 16, 16), (7, 13, 4, 4), (30, 40, 8, 16), (3, 256, 2, 128), (5, 24, 2, 3), (4, 40, 3, 12)]
    {
        case::<f32>(rows, cols, br, bc);
        case::<f16>(rows, cols, br, bc);
        case::<bf16>(rows, cols, br, bc);
    }
}

#[test]
fn fp8_vector_path_equals_the_reference() {
    // cols and block cols multiples of 8 (f16/bf16) or 4 (f32): the 16-byte-output, 8-row path
    // (12 and 4 columns: f32 only). Row blocks of 1, 3, 5, 7 and 9 rows change inside a thread's
    // 8 rows; 9, 7, 11, 20 and 12 rows leave a partial last chunk.
    for (rows, cols, br, bc) in [
        (9, 48, 3, 16),
        (7, 64, 1, 32),
        (12, 32, 5, 16),
        (4, 16, 4, 16),
        (16, 32, 16, 32),
        (10, 24, 3, 8),
        (11, 12, 7, 4),
        (20, 40, 9, 8),
    ] {
        case::<f32>(rows, cols, br, bc);
        case::<f16>(rows, cols, br, bc);
        case::<bf16>(rows, cols, br, bc);
        // Huge scales (|s| * 256 overflows: the bit-construction decode), subnormal and zero
        // scales, negative ones, next to ordinary ones.
        let odd: fn(usize) -> f32 = |i| match i % 5 {
            0 => 3.0e38,
            1 => -1.0e-40,
            2 => 0.0,
            3 => -2.5e36,
            _ => 0.75,
        };
        case_scaled::<f32>(rows, cols, br, bc, odd);
        case_scaled::<f16>(rows, cols, br, bc, odd);
        case_scaled::<bf16>(rows, cols, br, bc, odd);
    }
}
