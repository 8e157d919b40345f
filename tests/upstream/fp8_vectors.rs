//! FP8 against torch 2.15: all 256 codes of both formats decode to torch's f32 bits (NaN
//! payloads included), every encode input (f32, f16, bf16) encodes to torch's code, and the
//! block-wise `weight_scale_inv` dequantization reproduces `deq_f32` / `deq_bf16` bit for bit.
//!
//! Fixture: `tests/fixtures/fp8/fp8.safetensors`, an unchanged copy of the project's upstream
//! vectors (`vectors/fp8/`, written by gen_fp8.py with torch 2.15.0; see its MANIFEST.md).

use crate::common;
use quant_kernels::error::KernelError;

use common::{Rng, T, fixture};
use half::{bf16, f16};
use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
use quant_kernels::{Elem, Error, Parallelism};
use safetensors::SafeTensors;

fn formats() -> [(Fp8Format, &'static str); 2] {
    [(Fp8Format::E4M3, "e4m3fn"), (Fp8Format::E5M2, "e5m2")]
}

#[test]
fn decode_and_encode_match_torch() {
    let bytes = fixture("fp8/fp8.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let inputs = T::get(&st, "encode.input_f32").f32s();
    let in16 = T::get(&st, "encode.input_float16").f16s();
    let inb16: Vec<bf16> = T::get(&st, "encode.input_bfloat16")
        .bytes
        .chunks_exact(2)
        .map(|b| bf16::from_le_bytes([b[0], b[1]]))
        .collect();
    for (f, name) in formats() {
        let want = T::get(&st, &format!("{name}.decode_f32_bits")).i32s();
        for code in 0..=255u8 {
            assert_eq!(f.decode(code).to_bits(), want[code as usize] as u32, "{name} decode 0x{code:02x}");
        }
        let enc = T::get(&st, &format!("{name}.encode_u8")).u8s();
        for (i, &x) in inputs.iter().enumerate() {
            assert_eq!(f.encode(x), enc[i], "{name} encode {x:e} (0x{:08x})", x.to_bits());
        }
        let enc16 = T::get(&st, &format!("{name}.encode_from_float16_u8")).u8s();
        for (i, x) in in16.iter().enumerate() {
            assert_eq!(f.encode(x.to_f32()), enc16[i], "{name} encode f16 {x}");
        }
        let encb = T::get(&st, &format!("{name}.encode_from_bfloat16_u8")).u8s();
        for (i, x) in inb16.iter().enumerate() {
            assert_eq!(f.encode(x.to_f32()), encb[i], "{name} encode bf16 {x}");
        }
        // Every finite code encodes back to itself.
        for code in 0..=255u8 {
            let v = f.decode(code);
            if v.is_finite() {
                assert_eq!(f.encode(v), code, "{name} round trip 0x{code:02x}");
            }
        }
    }
}

fn all_paths<S: Elem, O: Elem>(codes: &[u8], f: Fp8Format, s: &[S], l: &Fp8Layout) -> Vec<O> {
    let mut naive = vec![O::default(); l.rows() * l.cols()];
    fp8::fp8_dequantize_reference_into(codes, s, f, l, &mut naive).unwrap();
    for par in [Parallelism::SERIAL, Parallelism::RAYON] {
        let fast: Vec<O> = fp8::fp8_dequantize(codes, s, f, l, par).unwrap();
        assert!(
            fast.iter().zip(&naive).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits()),
            "{par:?}"
        );
    }
    naive
}

#[test]
fn block_dequant_matches_torch() {
    let bytes = fixture("fp8/fp8.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let codes = T::get(&st, "block.weight_u8").u8s();
    let f8 = T::get(&st, "block.weight_e4m3fn");
    assert_eq!(f8.dtype, safetensors::Dtype::F8_E4M3);
    assert_eq!(f8.bytes, codes);
    let scales = T::get(&st, "block.weight_scale_inv").f32s();
    let bs = T::get(&st, "block.block_size").i64s();
    let l = Fp8Layout::block(300, 260, bs[0] as usize, bs[1] as usize).unwrap();
    assert_eq!(l.scale_shape(), (3, 3));
    let want = T::get(&st, "block.deq_f32").f32s();
    let got: Vec<f32> = all_paths(&codes, Fp8Format::E4M3, &scales, &l);
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
    let wantb: Vec<bf16> = T::get(&st, "block.deq_bf16")
        .bytes
        .chunks_exact(2)
        .map(|b| bf16::from_le_bytes([b[0], b[1]]))
        .collect();
    let gotb: Vec<bf16> = all_paths(&codes, Fp8Format::E4M3, &scales, &l);
    assert_eq!(gotb, wantb);
    // bf16 scales (the other common storage) and f16 output: still the same rounding path.
    let sb: Vec<bf16> = scales.iter().map(|&s| bf16::from_f32(s)).collect();
    let _: Vec<f16> = all_paths(&codes, Fp8Format::E4M3, &sb, &l);
}

#[test]
fn every_code_through_every_path() {
    // All 256 codes (NaN, infinities, subnormals, signed zeros) in rows of 263 columns, under
    // scales from tiny to huge (x 256 must not be folded into them) and several block shapes:
    // whole 16-code vectors, blocks that are not, a scalar tail, one per-tensor scale.
    let (rows, cols) = (6, 263);
    let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 256) as u8).collect();
    let layouts = [
        Fp8Layout::block(rows, cols, 2, 32).unwrap(),
        Fp8Layout::block(rows, cols, 4, 20).unwrap(),
        Fp8Layout::per_tensor(rows, cols).unwrap(),
    ];
    let pool = [1.0f32, 3.0e-5, -0.75, 1.0e30, 2.0e-38, 448.0, 1.5e-45];
    for l in &layouts {
        let (sr, sc) = l.scale_shape();
        let scales: Vec<f32> = (0..sr * sc).map(|i| pool[i % pool.len()]).collect();
        for (f, _) in formats() {
            let a: Vec<f32> = all_paths(&codes, f, &scales, l);
            // The oracle itself: decode(code) * scale, bit for bit.
            for (i, (&c, v)) in codes.iter().zip(&a).enumerate() {
                let s = scales[(i / cols / l.block_size().0) * sc + (i % cols) / l.block_size().1];
                assert_eq!(v.to_bits(), (f.decode(c) * s).to_bits(), "{f:?} code {c:#04x} scale {s}");
            }
            let _: Vec<f16> = all_paths(&codes, f, &scales, l);
            let _: Vec<bf16> = all_paths(&codes, f, &scales, l);
        }
    }
}

#[test]
fn paths_equal_quantize_round_trips_and_errors_are_typed() {
    let mut rng = Rng(3);
    for (rows, cols, br, bc) in [(1, 1, 128, 128), (7, 300, 128, 128), (256, 256, 128, 128), (33, 65, 16, 8)]
    {
        let l = Fp8Layout::block(rows, cols, br, bc).unwrap();
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-0.1, 0.1)).collect();
        for f in [Fp8Format::E4M3, Fp8Format::E5M2] {
            let (codes, scales) = fp8::fp8_quantize(&w, f, &l, quant_kernels::Parallelism::SERIAL).unwrap();
            let back: Vec<f32> = all_paths(&codes, f, &scales, &l);
            let _: Vec<bf16> = all_paths(&codes, f, &scales, &l);
            // Relative error per element <= half an ulp of the format (2^-4 E4M3, 2^-3 E5M2)
            // of the block's amax, plus subnormal spacing.
            let rel = if f == Fp8Format::E4M3 { 1.0 / 16.0 } else { 1.0 / 8.0 };
            let (_, sc) = l.scale_shape();
            for (i, (a, b)) in back.iter().zip(&w).enumerate() {
                let s = scales[(i / cols / br) * sc + (i % cols) / bc];
                assert!((a - b).abs() <= rel * b.abs() + s * f.decode(1), "{f:?} {a} vs {b}");
            }
        }
    }
    let l = Fp8Layout::per_tensor(4, 4).unwrap();
    let e = fp8::fp8_dequantize::<f32, f32>(&[0; 15], &[1.0], Fp8Format::E4M3, &l, Parallelism::SERIAL);
    assert_eq!(e, Err(Error::Kernel(KernelError::LengthMismatch { what: "codes", expected: 16, got: 15 })));
    let e = fp8::fp8_dequantize::<f32, f32>(&[0; 16], &[1.0, 2.0], Fp8Format::E4M3, &l, Parallelism::SERIAL);
    assert_eq!(e, Err(Error::Kernel(KernelError::LengthMismatch { what: "scales", expected: 1, got: 2 })));
    assert!(Fp8Layout::block(4, 4, 0, 1).is_err());
}
