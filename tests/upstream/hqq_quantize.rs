//! HQQ quantization against hqq 0.2.8's `Quantizer.quantize` (the 24 cases of
//! `tests/fixtures/hqq/quant.safetensors`): without the optimizer codes, scales and zeros are
//! bit-exact; with it, codes agree on >= 99.5% of weights and the reconstruction error is within
//! 1% of hqq's and never worse than without the optimizer. Serial and threaded runs are equal.

use crate::common;
use quant_kernels::error::KernelError;

use common::{Rng, T, fixture};
use quant_kernels::hqq::{self, Axis, HqqConfig, HqqLayer};
use quant_kernels::{Error, Parallelism};
use safetensors::SafeTensors;

struct Case {
    name: String,
    weight: String,
    config: HqqConfig,
    optimized: bool,
}

fn cases() -> Vec<Case> {
    let json = SafeTensors::read_metadata(&fixture("hqq/quant.safetensors")).unwrap().1;
    let cases: serde_json::Value = serde_json::from_str(&json.metadata().as_ref().unwrap()["cases"]).unwrap();
    let mut out: Vec<Case> = cases
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, c)| {
            let weight = c["weight"].as_str().unwrap().to_string();
            let dims: Vec<usize> = weight[2..].split('x').map(|d| d.parse().unwrap()).collect();
            let axis = Axis::try_from(c["axis"].as_u64().unwrap() as u8).unwrap();
            // hqq's group_size=None: per column (axis 0) or per row (axis 1).
            let group = c["group_size"]
                .as_u64()
                .map_or(if axis == Axis::Zero { dims[0] } else { dims[1] }, |g| g as usize);
            let config = HqqConfig {
                bits: c["nbits"].as_u64().unwrap() as u8,
                group_size: group,
                axis,
                optimization_steps: c["optimize_requested"].as_bool().unwrap().then_some(20),
                round_zeros: c["round_zero"].as_bool().unwrap(),
                channel_wise: c["channel_wise"].as_bool().unwrap(),
            };
            Case { name: name.clone(), weight, config, optimized: c["optimizer_ran"].as_bool().unwrap() }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn dims(weight: &str) -> (usize, usize) {
    let d: Vec<usize> = weight[2..].split('x').map(|d| d.parse().unwrap()).collect();
    (d[0], d[1])
}

/// Codes of the code matrix without 3-bit padding rows.
fn codes(q: &HqqLayer) -> Vec<u8> {
    let mut c = hqq::unpack_hqq(&q.packed).unwrap();
    c.truncate(q.packed.rows * q.packed.cols);
    c
}

fn dequant(q: &HqqLayer) -> Vec<f32> {
    let mut out = vec![0f32; q.layout.numel()];
    q.packed.dequantize_into(&q.scales, &q.zeros, &q.layout, &mut out, Parallelism::RAYON).unwrap();
    out
}

fn mean_abs(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum::<f64>() / a.len() as f64
}

#[test]
fn quantizer_matches_hqq() {
    let bytes = fixture("hqq/quant.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let cases = cases();
    assert_eq!(cases.len(), 24);
    let (mut exact, mut optimized) = (0, 0);
    for c in &cases {
        let (rows, cols) = dims(&c.weight);
        let w = T::get(&st, &c.weight).f32s();
        let get = |t: &str| T::get(&st, &format!("{}.{t}", c.name));
        let q = hqq::quantize_hqq(&w, rows, cols, &c.config, Parallelism::RAYON).unwrap();
        let q1 = hqq::quantize_hqq(&w, rows, cols, &c.config, Parallelism::SERIAL).unwrap();
        assert_eq!(q, q1, "{}: serial != threaded", c.name);
        let theirs_codes = get("codes").u8s();
        let theirs_scale = get("scale").f32s();
        let theirs_zero = get("zero").f32s();
        let ours = codes(&q);
        if !c.optimized {
            assert_eq!(q.steps_run, 0);
            assert_eq!(ours, theirs_codes, "{}: codes", c.name);
            let n = theirs_scale.len();
            assert!(q.scales.iter().all(|s| n == q.scales.len() || s.to_bits() == theirs_scale[0].to_bits()));
            if n == q.scales.len() {
                assert!(
                    q.scales.iter().zip(&theirs_scale).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{}: scales",
                    c.name
                );
                assert!(
                    q.zeros.iter().zip(&theirs_zero).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{}: zeros",
                    c.name
                );
            } else {
                assert_eq!(n, 1, "{}: a tensor-wise case has one scale", c.name);
                assert!(q.zeros.iter().all(|z| z.to_bits() == theirs_zero[0].to_bits()));
            }
            exact += 1;
        } else {
            assert!(q.steps_run > 0);
            let agree = ours.iter().zip(&theirs_codes).filter(|(a, b)| a == b).count();
            let frac = agree as f64 / ours.len() as f64;
            assert!(frac >= 0.995, "{}: codes agree on {:.4}", c.name, frac);
            let err_ours = mean_abs(&dequant(&q), &w);
            let err_hqq = mean_abs(&get("deq").f32s(), &w);
            assert!(err_ours <= err_hqq * 1.01, "{}: error {err_ours} vs hqq {err_hqq}", c.name);
            let plain = hqq::quantize_hqq(
                &w,
                rows,
                cols,
                &HqqConfig { optimization_steps: None, ..c.config },
                Parallelism::RAYON,
            )
            .unwrap();
            let err_plain = mean_abs(&dequant(&plain), &w);
            assert!(err_ours <= err_plain, "{}: optimizer made it worse ({err_ours} > {err_plain})", c.name);
            eprintln!(
                "{:<26} steps {:>2}  codes agree {:.4}  error {:.6e} (hqq {:.6e}, x{:.4}; no optimizer {:.6e})",
                c.name,
                q.steps_run,
                frac,
                err_ours,
                err_hqq,
                err_ours / err_hqq,
                err_plain
            );
            optimized += 1;
        }
        // bitpack=True cases: the packed bytes are hqq's W_q.
        if !c.name.contains("nobitpack") && !c.optimized {
            let wq = get("W_q").bytes;
            let mine: Vec<u8> = match &q.packed.words {
                hqq::PackedWords::U8(v) => v.clone(),
                hqq::PackedWords::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            assert_eq!(mine, wq, "{}: W_q bytes", c.name);
        }
    }
    assert_eq!((exact, optimized), (11, 13));
}

/// Larger random weights: threaded == serial (every axis and width), early stop happens, the
/// optimizer never increases the error, and the error stays within each width's bound.
#[test]
fn threads_do_not_change_results() {
    let mut rng = Rng(9);
    let (rows, cols) = (256, 512);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-0.05, 0.05)).collect();
    for bits in [8u8, 4, 3, 2, 1] {
        for axis in [Axis::Zero, Axis::One] {
            let config = HqqConfig { optimization_steps: Some(20), ..HqqConfig::new(bits, 64, axis) };
            let a = hqq::quantize_hqq(&w, rows, cols, &config, Parallelism::RAYON).unwrap();
            let b = hqq::quantize_hqq(&w, rows, cols, &config, Parallelism::SERIAL).unwrap();
            assert_eq!(a, b, "{bits} {axis:?}");
            assert!(a.steps_run >= 1 && a.steps_run <= 20);
            let plain =
                hqq::quantize_hqq(&w, rows, cols, &HqqConfig::new(bits, 64, axis), Parallelism::RAYON)
                    .unwrap();
            assert!(mean_abs(&dequant(&a), &w) <= mean_abs(&dequant(&plain), &w), "{bits} {axis:?}");
        }
    }
}

#[test]
fn bad_configs_are_typed_errors() {
    let w = vec![0.5f32; 64];
    let q = |bits: u8, group: usize, axis: Axis| {
        hqq::quantize_hqq(&w, 8, 8, &HqqConfig::new(bits, group, axis), Parallelism::RAYON)
    };
    assert_eq!(q(5, 8, Axis::Zero).unwrap_err(), Error::Kernel(KernelError::UnsupportedBits(5)));
    assert!(matches!(q(4, 7, Axis::Zero), Err(Error::Kernel(KernelError::GroupSize { .. }))));
    assert!(matches!(q(4, 0, Axis::Zero), Err(Error::Kernel(KernelError::GroupSize { .. }))));
    // 1-bit packs 8 code rows per byte: axis 1 with group 16 gives 4 code rows.
    assert!(matches!(q(1, 16, Axis::One), Err(Error::Kernel(KernelError::PackRows { .. }))));
    let mut bad = w.clone();
    bad[3] = f32::NAN;
    assert_eq!(
        hqq::quantize_hqq(&bad, 8, 8, &HqqConfig::new(4, 8, Axis::Zero), Parallelism::RAYON).unwrap_err(),
        Error::Kernel(KernelError::NonFinite { index: 3 })
    );
    assert!(matches!(
        hqq::quantize_hqq(&w, 8, 9, &HqqConfig::new(4, 8, Axis::Zero), Parallelism::RAYON),
        Err(Error::Kernel(KernelError::LengthMismatch { .. }))
    ));
    // Constant weights: denom 0 -> scale_q 1, exact reconstruction.
    let c = hqq::quantize_hqq(&w, 8, 8, &HqqConfig::new(4, 8, Axis::One), Parallelism::RAYON).unwrap();
    assert!(dequant(&c).iter().all(|&x| x == 0.5));
}

/// mistral.rs's `HqqLayer::quantize` (same algorithm, 10 steps; `tests/fixtures/uqff/`, copies
/// of the project's `vectors/uqff/legacy-v0.2.0/*_f32*.safetensors` companions): same packed
/// codes, scales and zeros bit for bit, and the same dequantized weight.
#[test]
fn quantizer_matches_mistral_rs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/uqff");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 7);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let input = T::get(&st, "input_weight");
        let (rows, cols) = (input.shape[0], input.shape[1]);
        let config = HqqConfig {
            optimization_steps: Some(meta["optimization_steps"].parse().unwrap()),
            ..HqqConfig::new(meta["bits"].parse().unwrap(), meta["group_size"].parse().unwrap(), Axis::Zero)
        };
        let q = hqq::quantize_hqq(&input.f32s(), rows, cols, &config, Parallelism::RAYON).unwrap();
        let words: Vec<u8> = match &q.packed.words {
            hqq::PackedWords::U8(v) => v.clone(),
            hqq::PackedWords::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let theirs = T::get(&st, "w_q").bytes;
        let agree = words.iter().zip(&theirs).filter(|(a, b)| a == b).count() as f64 / theirs.len() as f64;
        let (scales, zeros) = (T::get(&st, "scales").f32s(), T::get(&st, "zeros").f32s());
        let scale_bits = q.scales.iter().zip(&scales).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
        let zero_diff = q.zeros.iter().zip(&zeros).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!(
            "{name:<36} steps {:>2}  packed bytes agree {agree:.4}  scales equal {scale_bits}/{}  max|zero diff| {zero_diff:e}",
            q.steps_run,
            scales.len()
        );
        // Bit for bit, optimizer included (mistral.rs runs the same f32 algorithm).
        assert_eq!(words, theirs, "{name}: packed codes");
        assert_eq!(scale_bits, scales.len(), "{name}: scales");
        assert!(q.zeros.iter().zip(&zeros).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: zeros");
        if let Ok(t) = st.tensor("dequantized") {
            let want: Vec<f32> =
                t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            assert!(
                dequant(&q).iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: dequantized"
            );
        } else {
            assert!(name.starts_with("hqq3"), "{name}: mistral.rs's own 3-bit CPU dequant fails");
        }
    }
}

/// f16 and bf16 weights quantize exactly as their f32 widening does; params convert with RNE.
#[test]
fn half_inputs_widen_exactly() {
    use half::{bf16, f16};
    let mut rng = Rng(5);
    let w: Vec<f32> = (0..64 * 48).map(|_| rng.f32_in(-0.1, 0.1)).collect();
    let config = HqqConfig { optimization_steps: Some(10), ..HqqConfig::new(4, 64, Axis::One) };
    let h: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
    let b: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
    let hw: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
    let bw: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
    assert_eq!(
        hqq::quantize_hqq(&h, 64, 48, &config, Parallelism::RAYON).unwrap(),
        hqq::quantize_hqq(&hw, 64, 48, &config, Parallelism::RAYON).unwrap()
    );
    assert_eq!(
        hqq::quantize_hqq(&b, 64, 48, &config, Parallelism::RAYON).unwrap(),
        hqq::quantize_hqq(&bw, 64, 48, &config, Parallelism::RAYON).unwrap()
    );
    let q = hqq::quantize_hqq(&w, 64, 48, &config, Parallelism::RAYON).unwrap();
    let (s16, z16) = q.params_as::<f16>();
    assert!(s16.iter().zip(&q.scales).all(|(a, b)| *a == f16::from_f32(*b)));
    assert!(z16.iter().zip(&q.zeros).all(|(a, b)| *a == f16::from_f32(*b)));
}
