//! ptx/fp8.cu on the CPU equals the crate's FP8 reference bit for bit, NaN payloads included,
//! for both formats, every element type, block and per-tensor scales, both vector widths.

use half::{bf16, f16};
use quant_kernels::Elem;
use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
use quant_kernels_cuda_emu::{EmuElem, fp8_dequant};

fn case<T: Elem + EmuElem>(rows: usize, cols: usize, br: usize, bc: usize) {
    let l = Fp8Layout::block(rows, cols, br, bc).unwrap();
    let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 256) as u8).collect();
    let (sr, sc) = l.scale_shape();
    let scales: Vec<f32> = (0..sr * sc).map(|i| 1e-3 * (i + 1) as f32).collect();
    for (fi, f) in [Fp8Format::E4M3, Fp8Format::E5M2].into_iter().enumerate() {
        let mut want = vec![<T as Elem>::from_f32(0.0); rows * cols];
        fp8::fp8_dequantize_reference_into(&codes, f, &scales, &l, &mut want).unwrap();
        for (grid, block) in [(1u32, 1u32), (3, 32)] {
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
