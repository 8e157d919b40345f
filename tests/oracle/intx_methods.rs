//! The simple methods (int8, int4, SmoothQuant): error bounds on random and adversarial
//! weights, reference == fast paths bit for bit; `QuantMethod` storage estimates against the
//! bytes of layers actually built.

use crate::common;
use quant_kernels::error::{FormatError, KernelError};

use common::Rng;
use half::{bf16, f16};
use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
use quant_kernels::intx::{self, Granularity, Int4Tensor, Int8Tensor};
use quant_kernels::method::{QuantConfig, QuantMethod};
use quant_kernels::{Elem, Error, Parallelism};

/// f32 rounding slack of `w / s` then `q * s` for |q| <= qmax: a few ulps of the values involved.
fn slack(s: f32, w: f32, qmax: f32) -> f64 {
    let eps = f32::EPSILON as f64;
    2.0 * qmax as f64 * s as f64 * eps + 2.0 * w.abs() as f64 * eps
}

/// Random, and adversarial: all zeros, one outlier, constant rows, tiny values, mixed signs.
fn weights(rows: usize, cols: usize, rng: &mut Rng) -> Vec<(&'static str, Vec<f32>)> {
    let n = rows * cols;
    let random: Vec<f32> = (0..n).map(|_| rng.f32_in(-0.1, 0.1)).collect();
    let mut outlier = random.clone();
    outlier[n / 3] = 50.0;
    let constant: Vec<f32> = (0..n).map(|i| 0.25 + (i / cols) as f32).collect();
    let negative_constant: Vec<f32> = (0..n).map(|i| -0.75 - (i / cols) as f32).collect();
    let tiny: Vec<f32> = (0..n).map(|_| rng.f32_in(-1e-30, 1e-30)).collect();
    vec![
        ("random", random),
        ("zeros", vec![0.0; n]),
        ("outlier", outlier),
        ("constant rows", constant),
        ("negative constant rows", negative_constant),
        ("tiny", tiny),
    ]
}

fn same_bits<O: Elem>(a: &[O], b: &[O]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.to_f32().to_bits() == y.to_f32().to_bits())
}

fn int8_paths<O: Elem>(t: &Int8Tensor) {
    let n = t.q.len();
    let mut naive = vec![O::default(); n];
    t.dequantize_reference_into(&mut naive).unwrap();
    for par in [Parallelism::SERIAL, Parallelism::RAYON] {
        let mut fast = vec![O::default(); n];
        t.dequantize_into(&mut fast, par).unwrap();
        assert!(same_bits(&fast, &naive));
    }
}

fn int4_paths<O: Elem>(t: &Int4Tensor) {
    let n = t.rows * t.cols;
    let mut naive = vec![O::default(); n];
    t.dequantize_reference_into(&mut naive).unwrap();
    for par in [Parallelism::SERIAL, Parallelism::RAYON] {
        let mut fast = vec![O::default(); n];
        t.dequantize_into(&mut fast, par).unwrap();
        assert!(same_bits(&fast, &naive));
    }
}

#[test]
fn int8_error_bound_and_paths() {
    let mut rng = Rng(1);
    for (rows, cols) in [(1, 1), (3, 7), (64, 96), (96, 1024)] {
        for (what, w) in weights(rows, cols, &mut rng) {
            for g in [Granularity::PerTensor, Granularity::PerChannel] {
                let t = intx::quantize_int8(&w, rows, cols, g, quant_kernels::Parallelism::SERIAL).unwrap();
                assert!(t.q.iter().all(|&q| (-127..=127).contains(&q)));
                let mut back = vec![0f32; w.len()];
                t.dequantize_reference_into(&mut back).unwrap();
                for (i, (&x, &y)) in w.iter().zip(&back).enumerate() {
                    let s = if g == Granularity::PerTensor { t.scales[0] } else { t.scales[i / cols] };
                    let err = (x as f64 - y as f64).abs();
                    assert!(
                        err <= s as f64 / 2.0 + slack(s, x, 127.0),
                        "{what} {g:?} [{i}] {x} -> {y} (s {s})"
                    );
                }
                if what == "zeros" {
                    assert!(back.iter().all(|&y| y == 0.0) && t.scales.iter().all(|&s| s == 0.0));
                }
                int8_paths::<f32>(&t);
                int8_paths::<f16>(&t);
                int8_paths::<bf16>(&t);
            }
        }
    }
}

#[test]
fn int4_error_bound_and_paths() {
    let mut rng = Rng(2);
    for (rows, cols, group) in [(1, 2, 2), (3, 32, 16), (64, 128, 32), (80, 1024, 128)] {
        for (what, w) in weights(rows, cols, &mut rng) {
            let t = intx::quantize_int4(&w, rows, cols, group, quant_kernels::Parallelism::SERIAL).unwrap();
            let codes = intx::unpack_int4(&t.packed, rows * cols).unwrap();
            assert!(codes.iter().all(|&c| c < 16) && t.zeros.iter().all(|&z| z < 16));
            let mut back = vec![0f32; w.len()];
            t.dequantize_reference_into(&mut back).unwrap();
            for (i, (&x, &y)) in w.iter().zip(&back).enumerate() {
                let s = t.scales[i / group];
                let err = (x as f64 - y as f64).abs();
                assert!(err <= s as f64 / 2.0 + slack(s, x, 30.0), "{what} [{i}] {x} -> {y} (s {s})");
            }
            if what.contains("constant") {
                // The range includes 0, so a constant group is its endpoint: exact.
                assert!(w.iter().zip(&back).all(|(x, y)| ((x - y) / x).abs() < 1e-6), "{what}");
            }
            int4_paths::<f32>(&t);
            int4_paths::<f16>(&t);
            int4_paths::<bf16>(&t);
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut w = vec![0.5f32; 64];
    w[9] = f32::NAN;
    assert_eq!(
        intx::quantize_int8(&w, 8, 8, Granularity::PerChannel, quant_kernels::Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::NonFinite { index: 9 }))
    );
    assert_eq!(
        intx::quantize_int4(&w, 8, 8, 8, quant_kernels::Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::NonFinite { index: 9 }))
    );
    w[9] = f32::INFINITY;
    assert_eq!(
        intx::quantize_int8(&w, 8, 8, Granularity::PerTensor, quant_kernels::Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::NonFinite { index: 9 }))
    );
    let ok = vec![0.5f32; 64];
    assert!(matches!(
        intx::quantize_int8(&ok, 8, 9, Granularity::PerTensor, quant_kernels::Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::LengthMismatch { .. }))
    ));
    assert!(matches!(
        intx::quantize_int4(&ok, 8, 8, 3, quant_kernels::Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::GroupSize { .. }))
    ));
    assert!(matches!(
        intx::quantize_int4(&ok, 8, 8, 16, quant_kernels::Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::GroupSize { .. }))
    ));
    assert!(matches!(
        intx::quantize_int4(&ok, 8, 8, 0, quant_kernels::Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::GroupSize { .. }))
    ));
    assert!(matches!(
        intx::quantize_int8(&ok, usize::MAX, 2, Granularity::PerTensor, quant_kernels::Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::ShapeOverflow { .. }))
    ));
    // Tampered tensors are caught at dequantization.
    let mut t = intx::quantize_int4(&ok, 8, 8, 8, quant_kernels::Parallelism::SERIAL).unwrap();
    t.zeros.pop();
    assert!(t.dequantize_into(&mut vec![0f32; 64], Parallelism::RAYON).is_err());
    let mut t =
        intx::quantize_int8(&ok, 8, 8, Granularity::PerChannel, quant_kernels::Parallelism::SERIAL).unwrap();
    t.scales.pop();
    assert!(t.dequantize_into(&mut vec![0f32; 64], Parallelism::RAYON).is_err());
    assert!(intx::pack_int4(&[3, 16]).is_err());
    assert!(intx::pack_int4_signed(&[-9]).is_err());
}

#[test]
fn int4_packing_round_trips_with_sign_extension() {
    let all: Vec<i8> = (-8..=7).collect();
    let p = intx::pack_int4_signed(&all).unwrap();
    assert_eq!(intx::unpack_int4_signed(&p, all.len()).unwrap(), all);
    let odd = [1u8, 2, 3];
    assert_eq!(intx::pack_int4(&odd).unwrap(), [0x21, 0x03]);
    assert_eq!(intx::unpack_int4(&[0x21, 0x03], 3).unwrap(), odd);
    // More codes than the bytes hold is an error, not a silently shorter result.
    let short =
        Err(Error::Kernel(KernelError::LengthMismatch { what: "packed int4 bytes", expected: 5, got: 1 }));
    assert_eq!(intx::unpack_int4(&[0x21], 9), short);
    assert_eq!(intx::unpack_int4_signed(&[0x21], 9).map(|_| ()), short.map(|_| ()));
    let mut two = [0u8; 2];
    intx::unpack_int4_into(&[0x21, 0xff], &mut two).unwrap();
    assert_eq!(two, [1, 2], "extra bytes are fine");
    assert!(intx::unpack_int4(&[], usize::MAX).is_err(), "checked before allocating");
}

#[test]
fn smoothquant_preserves_the_product_and_validates() {
    let mut rng = Rng(3);
    let (rows, cols, tokens) = (16, 32, 4);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let mut x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    for t in 0..tokens {
        x[t * cols + 5] *= 60.0; // an outlier channel
        x[t * cols + 7] = 0.0; // a dead channel
    }
    let act_max: Vec<f32> =
        (0..cols).map(|j| (0..tokens).map(|t| x[t * cols + j].abs()).fold(0f32, f32::max)).collect();
    let s = intx::smoothquant_scales(&act_max, &w, rows, cols, 0.5).unwrap();
    assert_eq!(s[7], 1.0);
    assert!(s[5] > 5.0 * s[0], "the outlier channel is smoothed most");
    let mut ws = w.clone();
    intx::smooth_weight(&mut ws, rows, cols, &s).unwrap();
    for t in 0..tokens {
        for r in 0..rows {
            let y: f64 = (0..cols).map(|j| x[t * cols + j] as f64 * w[r * cols + j] as f64).sum();
            let ys: f64 = (0..cols).map(|j| (x[t * cols + j] / s[j]) as f64 * ws[r * cols + j] as f64).sum();
            assert!((y - ys).abs() < 1e-4 * (1.0 + y.abs()), "{y} vs {ys}");
        }
    }
    // alpha 0 and 1 are the extremes: s = 1/max|W| and s = max|X|.
    let s0 = intx::smoothquant_scales(&act_max, &w, rows, cols, 0.0).unwrap();
    let s1 = intx::smoothquant_scales(&act_max, &w, rows, cols, 1.0).unwrap();
    assert_eq!(s1[5], act_max[5]);
    let wmax5 = (0..rows).map(|r| w[r * cols + 5].abs()).fold(0f32, f32::max);
    assert_eq!(s0[5], 1.0 / wmax5);
    for alpha in [-0.1, 1.01, f32::NAN] {
        assert!(matches!(
            intx::smoothquant_scales(&act_max, &w, rows, cols, alpha),
            Err(Error::Format(FormatError::Config { .. }))
        ));
    }
    let mut bad = act_max.clone();
    bad[0] = f32::NAN;
    assert_eq!(
        intx::smoothquant_scales(&bad, &w, rows, cols, 0.5),
        Err(Error::Kernel(KernelError::NonFinite { index: 0 }))
    );
    assert!(intx::smoothquant_scales(&act_max[1..], &w, rows, cols, 0.5).is_err());
}

/// `QuantMethod::layer_bytes` equals the bytes of layers built by this crate's quantizers and
/// read from upstream checkpoints.
#[test]
fn estimates_match_built_layers() {
    use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
    use quant_kernels::hqq::{self, Axis, HqqLayout, PackedWords};
    let mut rng = Rng(4);
    let (out, inp) = (96, 256);
    let w: Vec<f32> = (0..out * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();

    let t = intx::quantize_int8(&w, out, inp, Granularity::PerChannel, quant_kernels::Parallelism::SERIAL)
        .unwrap();
    let m = QuantMethod::Int8Symmetric { per_channel: true };
    assert_eq!(m.layer_bytes(out, inp).unwrap(), t.q.len() + 4 * t.scales.len());
    let t = intx::quantize_int8(&w, out, inp, Granularity::PerTensor, quant_kernels::Parallelism::SERIAL)
        .unwrap();
    let m = QuantMethod::Int8Symmetric { per_channel: false };
    assert_eq!(m.layer_bytes(out, inp).unwrap(), t.q.len() + 4 * t.scales.len());

    let t = intx::quantize_int4(&w, out, inp, 64, quant_kernels::Parallelism::SERIAL).unwrap();
    let m = QuantMethod::Int4Asymmetric { group: 64 };
    assert_eq!(m.layer_bytes(out, inp).unwrap(), t.packed.len() + 4 * t.scales.len() + t.zeros.len());

    for block in [None, Some((128, 128)), Some((64, 100))] {
        let l = match block {
            None => Fp8Layout::per_tensor(out, inp).unwrap(),
            Some((r, c)) => Fp8Layout::block(out, inp, r, c).unwrap(),
        };
        let (codes, scales) =
            fp8::fp8_quantize(&w, Fp8Format::E4M3, &l, quant_kernels::Parallelism::SERIAL).unwrap();
        let m = QuantMethod::Fp8 { format: Fp8Format::E4M3, block };
        assert_eq!(m.layer_bytes(out, inp).unwrap(), codes.len() + 4 * scales.len(), "{m}");
    }

    let s = intx::smoothquant_scales(&vec![1.0; inp], &w, out, inp, 0.5).unwrap();
    let t = intx::quantize_int8(&w, out, inp, Granularity::PerChannel, quant_kernels::Parallelism::SERIAL)
        .unwrap();
    let m = QuantMethod::SmoothQuant { alpha: 0.5 };
    assert_eq!(m.layer_bytes(out, inp).unwrap(), t.q.len() + 4 * t.scales.len() + 4 * s.len());

    for bits in [1u8, 2, 3, 4, 8] {
        for axis in [Axis::Zero, Axis::One] {
            let l = HqqLayout::new(out, inp, 64, axis).unwrap();
            let (cr, cc) = l.code_shape();
            let codes: Vec<u8> = (0..out * inp).map(|i| (i % (1 << bits)) as u8).collect();
            let packed = hqq::pack_hqq(&codes, cr, cc, bits).unwrap();
            let word_bytes = match &packed.words {
                PackedWords::U8(v) => v.len(),
                PackedWords::I32(v) => 4 * v.len(),
            };
            let m = QuantMethod::Hqq { bits, group: 64, axis };
            assert_eq!(m.layer_bytes(out, inp).unwrap(), word_bytes + 2 * 2 * l.groups(), "{m}");
        }
    }

    // GPTQ: the tiny checkpoints' stored bytes (g_idx included).
    for (dir, bits, act) in [("tiny-llama-gptq-4bit", 4, true), ("tiny-llama-gptq-8bit-single", 8, false)] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gptq_checkpoints")
            .join(dir);
        let ck = quant_kernels::gptq::GptqCheckpoint::open(path).unwrap();
        let m = QuantMethod::Gptq { bits, group: Some(32), act_order: act };
        for info in ck.layers().values() {
            assert_eq!(
                m.layer_bytes(info.layout.n(), info.layout.k()).unwrap(),
                info.stored_bytes(),
                "{}",
                info.prefix
            );
        }
        let cfg = QuantConfig::new(m);
        let est = cfg
            .estimate(ck.layers().values().map(|i| (i.prefix.as_str(), i.layout.n(), i.layout.k())))
            .unwrap();
        assert_eq!(est.total_bytes, ck.layers().values().map(|i| i.stored_bytes()).sum::<usize>());
    }

    // AWQ: the upstream fixture's tensors.
    let bytes = common::fixture("awq/awq_gemm_b4_g64_K128_N64.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let stored: usize =
        ["qweight", "qzeros", "scales"].iter().map(|t| st.tensor(t).unwrap().data().len()).sum();
    assert_eq!(QuantMethod::Awq { group: 64 }.layer_bytes(64, 128).unwrap(), stored);
}

#[test]
fn config_assigns_methods_and_estimates_a_model() {
    let layers: Vec<(String, usize, usize)> = (0..2)
        .flat_map(|i| {
            [("self_attn.q_proj", 4096, 4096), ("mlp.up_proj", 14336, 4096), ("mlp.down_proj", 4096, 14336)]
                .map(|(n, o, k)| (format!("model.layers.{i}.{n}"), o, k))
        })
        .chain([("lm_head".to_string(), 32000, 4096)])
        .collect();
    let gptq = QuantMethod::Gptq { bits: 4, group: Some(128), act_order: false };
    let int8 = QuantMethod::Int8Symmetric { per_channel: true };
    let cfg = QuantConfig::new(gptq)
        .with("model.layers.*.mlp.down_proj", Some(int8))
        .unwrap()
        .with("model.layers.1.mlp.down_proj", Some(QuantMethod::Awq { group: 128 }))
        .unwrap()
        .with("lm_head", None)
        .unwrap();
    let est = cfg.estimate(layers.iter().map(|(n, o, k)| (n.as_str(), *o, *k))).unwrap();
    let names: Vec<String> = est
        .layers
        .iter()
        .map(|(n, m, _)| format!("{n}={}", m.map_or("f16".into(), |m| m.to_string())))
        .collect();
    assert_eq!(
        names,
        [
            "model.layers.0.self_attn.q_proj=gptq-4bit-g128",
            "model.layers.0.mlp.up_proj=gptq-4bit-g128",
            "model.layers.0.mlp.down_proj=int8-sym-channel",
            "model.layers.1.self_attn.q_proj=gptq-4bit-g128",
            "model.layers.1.mlp.up_proj=gptq-4bit-g128",
            "model.layers.1.mlp.down_proj=awq-4bit-g128",
            "lm_head=f16",
        ]
    );
    let want: usize = layers
        .iter()
        .map(|(n, o, k)| cfg.method_for(n).map_or(2 * o * k, |m| m.layer_bytes(*o, *k).unwrap()))
        .sum();
    assert_eq!(est.total_bytes, want);
    assert_eq!(est.f16_bytes, layers.iter().map(|(_, o, k)| 2 * o * k).sum::<usize>());
    assert!(est.compression() > 1.5 && est.compression() < 4.0, "{}", est.compression());
}

/// The quantizers' formulas one weight at a time: the oracle of the blocked, threaded ones.
fn naive_int8(w: &[f32], rows: usize, cols: usize, g: Granularity) -> (Vec<i8>, Vec<f32>) {
    let amax = |xs: &[f32]| xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scales: Vec<f32> = match g {
        Granularity::PerTensor => vec![amax(w) / 127.0],
        Granularity::PerChannel => w.chunks(cols).map(|r| amax(r) / 127.0).collect(),
    };
    let q = (0..rows * cols)
        .map(|i| {
            let s = scales[if g == Granularity::PerTensor { 0 } else { i / cols }];
            if s == 0.0 { 0 } else { (w[i] / s).round_ties_even().clamp(-127.0, 127.0) as i8 }
        })
        .collect();
    (q, scales)
}

fn naive_int4(w: &[f32], group: usize) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let (mut codes, mut scales, mut zeros) = (vec![], vec![], vec![]);
    for g in w.chunks(group) {
        let lo = g.iter().fold(0f32, |m, &x| m.min(x));
        let hi = g.iter().fold(0f32, |m, &x| m.max(x));
        let s = (hi - lo) / 15.0;
        let z = if s == 0.0 { 0.0 } else { (-lo / s).round_ties_even().clamp(0.0, 15.0) };
        codes.extend(
            g.iter()
                .map(|&x| if s == 0.0 { z } else { ((x / s).round_ties_even() + z).clamp(0.0, 15.0) } as u8),
        );
        scales.push(s);
        zeros.push(z as u8);
    }
    (codes, scales, zeros)
}

fn naive_fp8(
    w: &[f32],
    rows: usize,
    cols: usize,
    (br, bc): (usize, usize),
    f: Fp8Format,
) -> (Vec<u8>, Vec<f32>) {
    let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
    let block = |i: usize| (i / cols / br) * sc + (i % cols) / bc;
    let mut amax = vec![0f32; sr * sc];
    for (i, x) in w.iter().enumerate() {
        amax[block(i)] = amax[block(i)].max(x.abs());
    }
    let scales: Vec<f32> =
        amax.iter().map(|&a| if a > 0.0 && a.is_finite() { a / f.max() } else { 1.0 }).collect();
    ((0..w.len()).map(|i| f.encode(w[i] / scales[block(i)])).collect(), scales)
}

/// Serial and threaded quantizers equal the naive formulas bit for bit, on shapes large
/// enough to split over threads at row counts that cut FP8 block rows and int4 groups
/// unevenly; a non-finite weight is reported at its first index either way.
#[test]
fn quantizers_threaded_equal_naive() {
    let mut rng = Rng(97);
    for (rows, cols) in [(300, 512), (1031, 128), (7, 64)] {
        for (what, w) in weights(rows, cols, &mut rng) {
            for par in [Parallelism::SERIAL, Parallelism::RAYON] {
                let at = format!("{what} {rows}x{cols} {par:?}");
                for g in [Granularity::PerTensor, Granularity::PerChannel] {
                    let t = intx::quantize_int8(&w, rows, cols, g, par).unwrap();
                    assert!(
                        (t.q.clone(), t.scales.clone()) == naive_int8(&w, rows, cols, g),
                        "{at} int8 {g:?}"
                    );
                }
                for group in [32, 64] {
                    let t = intx::quantize_int4(&w, rows, cols, group, par).unwrap();
                    let (codes, scales, zeros) = naive_int4(&w, group);
                    assert_eq!(
                        intx::unpack_int4(&t.packed, rows * cols).unwrap(),
                        codes,
                        "{at} int4 {group}"
                    );
                    assert_eq!(t.packed.len(), rows * cols / 2, "{at}");
                    assert!(t.scales == scales && t.zeros == zeros, "{at} int4 {group}");
                }
                for (block, format) in [
                    ((128, 128), Fp8Format::E4M3),
                    ((rows, cols), Fp8Format::E5M2),
                    ((3, 40), Fp8Format::E4M3),
                ] {
                    let l = Fp8Layout::block(rows, cols, block.0, block.1).unwrap();
                    let got = fp8::fp8_quantize(&w, format, &l, par).unwrap();
                    let want = naive_fp8(&w, rows, cols, block, format);
                    assert!(got.0 == want.0 && same_bits(&got.1, &want.1), "{at} fp8 {block:?}");
                }
            }
        }
        let mut bad: Vec<f32> = vec![0.5; rows * cols];
        bad[rows * cols - 1] = f32::NAN;
        bad[rows * cols / 2 + 1] = f32::INFINITY;
        for par in [Parallelism::SERIAL, Parallelism::RAYON] {
            let index = rows * cols / 2 + 1;
            let want = Error::Kernel(KernelError::NonFinite { index });
            assert_eq!(intx::quantize_int8(&bad, rows, cols, Granularity::PerTensor, par).unwrap_err(), want);
            assert_eq!(intx::quantize_int4(&bad, rows, cols, 32, par).unwrap_err(), want);
        }
    }
}
