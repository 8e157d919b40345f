//! The demo (`qk` with no arguments): every scheme's embedded upstream outputs reproduced, an
//! embedded tiny GPTQ checkpoint loaded, fused and dequantized, and 4-bit dequantization and the
//! fused GEMV timed next to memcpy.

use half::f16;
use quant_kernels::hqq::{self, Axis, HqqLayout, PackedWords};
use quant_kernels::{B4, Isa, Parallelism};
use rayon::prelude::*;
use safetensors::SafeTensors;

use crate::CliError;
use crate::bench_cmd::best;
use std::hint::black_box;
use std::time::Instant;

/// hqq 0.2.8 `Quantizer.quantize` outputs (the crate's test fixture), embedded.
static HQQ_CASES: &[u8] = include_bytes!("../../../tests/fixtures/hqq/quant.safetensors");
/// A GPTQModel 7.7 / auto-gptq 0.7.1 layer: 4-bit, asym, act-order, group 32 (test fixture).
static GPTQ_CASE: &[u8] =
    include_bytes!("../../../tests/fixtures/gptq/gptq_b4_asym_descact_g32_K128_N64.safetensors");
/// An AutoAWQ 0.2.9 gemm layer: 4-bit, group 64 (test fixture).
static AWQ_CASE: &[u8] = include_bytes!("../../../tests/fixtures/awq/awq_gemm_b4_g64_K128_N64.safetensors");
/// torch 2.15 FP8 vectors incl. a 300x260 E4M3 weight with 128x128 block scales (test fixture).
static FP8_CASE: &[u8] = include_bytes!("../../../tests/fixtures/fp8/fp8.safetensors");

/// One embedded case per width: (case name, weight tensor, rows, cols, bits, group, axis).
const DEMO: &[(&str, &str, usize, usize, u8, usize, Axis)] = &[
    ("q8_g64_ax0_noopt", "W.64x48", 64, 48, 8, 64, Axis::Zero),
    ("q4_g64_ax1_noopt", "W.64x48", 64, 48, 4, 64, Axis::One),
    ("q3_g32_ax1_noopt", "W.128x64", 128, 64, 3, 32, Axis::One),
    ("q2_g32_ax0_noopt_rz", "W.64x48", 64, 48, 2, 32, Axis::Zero),
    ("q1_g16_ax0_noopt", "W.128x64", 128, 64, 1, 16, Axis::Zero),
];

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub fn run() -> Result<(), CliError> {
    out!("quant-kernels {} demo", env!("CARGO_PKG_VERSION"));
    out!("SIMD: {}; threads: {}\n", Isa::detect(), rayon::current_num_threads());
    let st = SafeTensors::deserialize(HQQ_CASES).map_err(|e| CliError::Data(e.to_string()))?;
    let get = |name: &str| st.tensor(name).map_err(|e| CliError::Data(format!("{name}: {e}")));
    out!("HQQ pack + dequantize of hqq 0.2.8 outputs (embedded):");
    out!(
        "{:<22} {:>5} {:>6} {:>4} {:>10} {:>14} {:>12}",
        "case",
        "bits",
        "group",
        "axis",
        "packed==hqq",
        "max|ours-hqq|",
        "max|w-W|"
    );
    for &(case, weight, rows, cols, bits, group, axis) in DEMO {
        let layout = HqqLayout::new(rows, cols, group, axis)?;
        let (cr, cc) = layout.code_shape();
        let codes = get(&format!("{case}.codes"))?;
        let packed = hqq::pack_hqq(codes.data(), cr, cc, bits)?;
        let theirs = get(&format!("{case}.W_q"))?.data().to_vec();
        let same = match &packed.words {
            PackedWords::U8(w) => *w == theirs,
            PackedWords::I32(w) => w.iter().flat_map(|x| x.to_le_bytes()).eq(theirs.iter().copied()),
        };
        let scale = le_f32(get(&format!("{case}.scale"))?.data());
        let zero = le_f32(get(&format!("{case}.zero"))?.data());
        let mut ours = vec![0f32; layout.numel()];
        packed.dequantize_into(&scale, &zero, &layout, &mut ours, Parallelism::RAYON)?;
        let hqq_deq = le_f32(get(&format!("{case}.deq"))?.data());
        let w = le_f32(get(weight)?.data());
        let max_diff = ours.iter().zip(&hqq_deq).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let max_err = ours.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let axis = if axis == Axis::Zero { 0 } else { 1 };
        out!("{case:<22} {bits:>5} {group:>6} {axis:>4} {same:>10} {max_diff:>14e} {max_err:>12.5}");
    }
    other_schemes()?;
    crate::demo_checkpoint::demo_checkpoint()?;
    hqq_quantize_uqff(&st)?;
    throughput()?;
    Ok(())
}

fn le_i32(bytes: &[u8]) -> Vec<i32> {
    bytes.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn le_f16(bytes: &[u8]) -> Vec<f16> {
    bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect()
}

/// GPTQ, AWQ and FP8 layers written by the upstream libraries, dequantized and compared.
fn other_schemes() -> Result<(), CliError> {
    use quant_kernels::awq::{self, AwqLayout};
    use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
    use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
    let load =
        |bytes: &'static [u8]| SafeTensors::deserialize(bytes).map_err(|e| CliError::Data(e.to_string()));
    let tensor = |st: &SafeTensors<'static>, name: &str| {
        st.tensor(name).map(|t| t.data().to_vec()).map_err(|e| CliError::Data(format!("{name}: {e}")))
    };
    let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    out!("\nGPTQ / AWQ / FP8 dequantize of upstream outputs (embedded):");
    out!("{:<44} {:>14}", "layer", "max|ours-ref|");

    let st = load(GPTQ_CASE)?;
    let l = GptqLayout::new(128, 64, 4, 32)?;
    let (qw, g_idx, scales) =
        (le_i32(&tensor(&st, "qweight")?), le_i32(&tensor(&st, "g_idx")?), le_f16(&tensor(&st, "scales")?));
    let want = le_f32(&tensor(&st, "W_deq")?);
    for (zeros, format, label) in [("qzeros", ZeroFormat::V1, "v1"), ("qzeros_v2", ZeroFormat::V2, "v2")] {
        let w: Vec<f32> = gptq::gptq_dequantize(
            &qw,
            &scales,
            &le_i32(&tensor(&st, zeros)?),
            Some(&g_idx),
            format,
            &l,
            Parallelism::RAYON,
        )?;
        out!(
            "{:<44} {:>14e}",
            format!("GPTQ 4-bit act-order g32 128x64 ({label} zeros)"),
            max_diff(&w, &want)
        );
    }

    let st = load(AWQ_CASE)?;
    let l = AwqLayout::new(128, 64, 64)?;
    let w: Vec<f32> = awq::awq_dequantize(
        &le_i32(&tensor(&st, "qweight")?),
        &le_f16(&tensor(&st, "scales")?),
        &le_i32(&tensor(&st, "qzeros")?),
        &l,
        Parallelism::RAYON,
    )?;
    out!("{:<44} {:>14e}", "AWQ 4-bit gemm g64 128x64", max_diff(&w, &le_f32(&tensor(&st, "W_deq")?)));

    let st = load(FP8_CASE)?;
    let l = Fp8Layout::block(300, 260, 128, 128)?;
    let w: Vec<f32> = fp8::fp8_dequantize(
        &tensor(&st, "block.weight_u8")?,
        &le_f32(&tensor(&st, "block.weight_scale_inv")?),
        Fp8Format::E4M3,
        &l,
        Parallelism::RAYON,
    )?;
    out!(
        "{:<44} {:>14e}",
        "FP8 E4M3 300x260, 128x128 block scales",
        max_diff(&w, &le_f32(&tensor(&st, "block.deq_f32")?))
    );
    Ok(())
}

/// HQQ-quantize the embedded 128x64 weight (hqq's optimizer, mistral.rs's ISQ settings), write
/// and read back both UQFF revisions, report the error; then time a 4096x4096 quantization.
fn hqq_quantize_uqff(st: &SafeTensors<'_>) -> Result<(), CliError> {
    use quant_kernels::io::uqff::{self, Extension, UqffHqqLayer};
    use quant_kernels::{FloatType, hqq::HqqConfig};
    let w = le_f32(st.tensor("W.128x64").map_err(|e| CliError::Data(e.to_string()))?.data());
    out!("\nHQQ quantize (proximal optimizer, 10 steps, group 64, axis 0) -> UQFF -> dequantize, 128x64:");
    out!(
        "{:<6} {:>6} {:>12} {:>12} {:>14} {:>14}",
        "bits",
        "steps",
        "UQFF 1.2 B",
        "UQFF 0.2 B",
        "mean|w-W|",
        "no optimizer"
    );
    for bits in [8u8, 4, 3, 2, 1] {
        let config = HqqConfig { optimization_steps: Some(10), ..HqqConfig::new(bits, 64, Axis::Zero) };
        let q = hqq::quantize_hqq(&w, 128, 64, &config, Parallelism::RAYON)?;
        let layer = UqffHqqLayer::from_quantized(&q, &config, FloatType::F32, None)?;
        let v1 = uqff::write_v1(&[("demo".to_string(), layer.clone())], Extension::Allow)?;
        let v0 = uqff::write_legacy_file(std::slice::from_ref(&layer), None)?;
        let back1 = uqff::read_v1(&v1, Extension::Allow)?;
        let back0 = uqff::read_legacy_file(&v0)?;
        if back1[0].1 != layer || back0[0].1 != layer {
            return Err(CliError::Data(format!("{bits}-bit UQFF round trip changed the layer")));
        }
        let deq: Vec<f32> = back1[0].1.dequantize(Parallelism::RAYON)?;
        let err = deq.iter().zip(&w).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / w.len() as f64;
        let plain =
            hqq::quantize_hqq(&w, 128, 64, &HqqConfig::new(bits, 64, Axis::Zero), Parallelism::RAYON)?;
        let mut pd = vec![0f32; w.len()];
        plain.packed.dequantize_into(
            &plain.scales,
            &plain.zeros,
            &plain.layout,
            &mut pd,
            Parallelism::RAYON,
        )?;
        let perr = pd.iter().zip(&w).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / w.len() as f64;
        out!("{bits:<6} {:>6} {:>12} {:>12} {err:>14.6e} {perr:>14.6e}", q.steps_run, v1.len(), v0.len());
    }
    let (rows, cols) = (4096usize, 4096usize);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<f32> = (0..rows * cols)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            0.04 * ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        })
        .collect();
    let config = HqqConfig { optimization_steps: Some(10), ..HqqConfig::new(4, 64, Axis::Zero) };
    let t = Instant::now();
    let q = hqq::quantize_hqq(&big, rows, cols, &config, Parallelism::RAYON)?;
    let secs = t.elapsed().as_secs_f64();
    out!(
        "4096x4096 4-bit g64 axis 0, {} optimizer steps: {:.3} s = {:.1} M weights/s (mistral.rs: 10-11 s on this machine class)",
        q.steps_run,
        secs,
        (rows * cols) as f64 / secs / 1e6
    );
    Ok(())
}

fn throughput() -> Result<(), CliError> {
    let (rows, cols, g) = (4096usize, 4096usize, 64usize);
    let n = rows * cols;
    out!("\n4-bit HQQ dequantize {rows}x{cols}, group {g}, f16 scales/zeros -> f16 (best of 10):");
    let words: Vec<u8> = (0..n / 2).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let params: Vec<f16> = (0..n / g).map(|i| f16::from_f32(0.001 * (i % 97) as f32)).collect();
    let mut out = vec![f16::ZERO; n];
    let src = vec![f16::ONE; n];
    let out_bytes = 2 * n;
    let tasks = Parallelism::RAYON.tasks(n);
    let memcpy = best(10, || {
        out.par_chunks_mut(n.div_ceil(tasks))
            .zip(black_box(&src).par_chunks(n.div_ceil(tasks)))
            .for_each(|(d, s)| d.copy_from_slice(s))
    });
    let memcpy_gbps = 2.0 * out_bytes as f64 / memcpy.as_secs_f64() / 1e9;
    out!("  {:<28} {:>9.3} ms {:>7.1} GB/s", "memcpy (threaded)", memcpy.as_secs_f64() * 1e3, memcpy_gbps);
    let bytes = (n / 2 + 4 * (n / g) + out_bytes) as f64;
    for axis in [Axis::Zero, Axis::One] {
        let layout = HqqLayout::new(rows, cols, g, axis)?;
        for (label, par) in [("serial", Parallelism::SERIAL), ("threaded", Parallelism::RAYON)] {
            let t = crate::bench_cmd::timed(10, || {
                hqq::dequantize_into::<B4, f16, f16>(&words, &params, &params, &layout, &mut out, par)
            })?;
            let gbps = bytes / t.as_secs_f64() / 1e9;
            let name = format!("axis {} {label}", if axis == Axis::Zero { 0 } else { 1 });
            out!(
                "  {name:<28} {:>9.3} ms {gbps:>7.1} GB/s {:>5.0}% of memcpy",
                t.as_secs_f64() * 1e3,
                100.0 * gbps / memcpy_gbps
            );
        }
    }
    // The fused multiply straight from the same packed weight: y = x · Wᵀ, batch 1.
    use quant_kernels::hqq::HqqWeight;
    use quant_kernels::{QuantLinear, QuantWeight};
    let layout = HqqLayout::new(rows, cols, g, Axis::Zero)?;
    let (cr, cc) = layout.code_shape();
    let weight = HqqWeight {
        layout,
        packed: hqq::Packed {
            bits: quant_kernels::Bits::B4,
            rows: cr,
            cols: cc,
            words: PackedWords::U8(words),
        },
        scales: quant_kernels::FloatVec::F16(params.clone()),
        zeros: quant_kernels::FloatVec::F16(params),
    };
    let layer = QuantLinear::new(QuantWeight::Hqq(weight), None)?;
    let x: Vec<f32> = (0..cols).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    let mut y = vec![0f32; rows];
    out!("\nFused 4-bit GEMV (y = x · Wᵀ, batch 1, f32) from the same packed axis-0 weight (best of 10):");
    for (label, par) in [("serial", Parallelism::SERIAL), ("threaded", Parallelism::RAYON)] {
        let t = crate::bench_cmd::timed(10, || layer.forward_into(&x, 1, &mut y, par))?;
        let gbps = layer.weight_bytes() as f64 / t.as_secs_f64() / 1e9;
        out!(
            "  {label:<28} {:>9.3} ms {gbps:>7.1} GB/s of weights read {:>5.0}% of memcpy, {:.1} G weights/s",
            t.as_secs_f64() * 1e3,
            100.0 * gbps / memcpy_gbps,
            n as f64 / t.as_secs_f64() / 1e9
        );
    }
    Ok(())
}
