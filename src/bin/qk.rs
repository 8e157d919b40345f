//! `qk`: the quant-kernels command-line tool.
//!
//! With no arguments it runs the demo: for each HQQ width it packs codes that the `hqq` Python
//! library produced (embedded, see `tests/fixtures/hqq/`), checks the packing against hqq's,
//! dequantizes, and prints the difference to hqq's dequantized weight and the quantization
//! error; then it times 4-bit dequantization of a 4096x4096 weight next to a memcpy of the
//! output, naming the SIMD instruction set in use.

use half::f16;
use quant_kernels::hqq::{self, Axis, HqqLayout, PackedWords};
use quant_kernels::{B4, Parallelism, lanes};
use rayon::prelude::*;
use safetensors::SafeTensors;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// hqq 0.2.8 `Quantizer.quantize` outputs (the crate's test fixture), embedded.
static HQQ_CASES: &[u8] = include_bytes!("../../tests/fixtures/hqq/quant.safetensors");

/// One embedded case per width: (case name, weight tensor, rows, cols, bits, group, axis).
const DEMO: &[(&str, &str, usize, usize, u8, usize, Axis)] = &[
    ("q8_g64_ax0_noopt", "W.64x48", 64, 48, 8, 64, Axis::Zero),
    ("q4_g64_ax1_noopt", "W.64x48", 64, 48, 4, 64, Axis::One),
    ("q3_g32_ax1_noopt", "W.128x64", 128, 64, 3, 32, Axis::One),
    ("q2_g32_ax0_noopt_rz", "W.64x48", 64, 48, 2, 32, Axis::Zero),
    ("q1_g16_ax0_noopt", "W.128x64", 128, 64, 1, 16, Axis::Zero),
];

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("unknown argument `{0}` (run `qk --help`)")]
    Usage(String),
    #[error("embedded data: {0}")]
    Data(String),
    #[error(transparent)]
    Kernel(#[from] quant_kernels::Error),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => demo(),
        Some("demo") if args.len() == 1 => demo(),
        Some("-h" | "--help") => {
            println!(
                "usage: qk [demo]\n\nRuns the HQQ pack/dequantize demo on embedded hqq outputs and times 4-bit\ndequantization of a 4096x4096 weight next to memcpy."
            );
            Ok(())
        }
        Some(_) => Err(CliError::Usage(args.join(" "))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qk: {e}");
            ExitCode::from(2)
        }
    }
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn demo() -> Result<(), CliError> {
    println!("quant-kernels {} demo", env!("CARGO_PKG_VERSION"));
    println!("SIMD: {}; threads: {}\n", lanes::isa(), rayon::current_num_threads());
    let st = SafeTensors::deserialize(HQQ_CASES).map_err(|e| CliError::Data(e.to_string()))?;
    let get = |name: &str| st.tensor(name).map_err(|e| CliError::Data(format!("{name}: {e}")));
    println!("HQQ pack + dequantize of hqq 0.2.8 outputs (embedded):");
    println!(
        "{:<22} {:>5} {:>6} {:>4} {:>10} {:>14} {:>12}",
        "case", "bits", "group", "axis", "packed==hqq", "max|ours-hqq|", "max|w-W|"
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
        packed.dequant_into(&scale, &zero, &layout, &mut ours, Parallelism::Rayon)?;
        let hqq_deq = le_f32(get(&format!("{case}.deq"))?.data());
        let w = le_f32(get(weight)?.data());
        let max_diff = ours.iter().zip(&hqq_deq).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let max_err = ours.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let axis = if axis == Axis::Zero { 0 } else { 1 };
        println!("{case:<22} {bits:>5} {group:>6} {axis:>4} {same:>10} {max_diff:>14e} {max_err:>12.5}");
    }
    throughput()?;
    Ok(())
}

/// Best of `runs` timings of `f`.
fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn throughput() -> Result<(), CliError> {
    let (rows, cols, g) = (4096usize, 4096usize, 64usize);
    let n = rows * cols;
    println!("\n4-bit HQQ dequantize {rows}x{cols}, group {g}, f16 scales/zeros -> f16 (best of 10):");
    let words: Vec<u8> = (0..n / 2).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let params: Vec<f16> = (0..n / g).map(|i| f16::from_f32(0.001 * (i % 97) as f32)).collect();
    let mut out = vec![f16::ZERO; n];
    let src = vec![f16::ONE; n];
    let out_bytes = 2 * n;
    let tasks = Parallelism::Rayon.tasks(n);
    let memcpy = best(10, || {
        out.par_chunks_mut(n.div_ceil(tasks))
            .zip(black_box(&src).par_chunks(n.div_ceil(tasks)))
            .for_each(|(d, s)| d.copy_from_slice(s))
    });
    let memcpy_gbps = 2.0 * out_bytes as f64 / memcpy.as_secs_f64() / 1e9;
    println!(
        "  {:<28} {:>9.3} ms {:>7.1} GB/s",
        "memcpy (threaded)",
        memcpy.as_secs_f64() * 1e3,
        memcpy_gbps
    );
    let bytes = (n / 2 + 4 * (n / g) + out_bytes) as f64;
    for axis in [Axis::Zero, Axis::One] {
        let layout = HqqLayout::new(rows, cols, g, axis)?;
        for (label, par) in [("serial", Parallelism::Serial), ("threaded", Parallelism::Rayon)] {
            let mut err = None;
            let t = best(10, || {
                if let Err(e) =
                    hqq::dequant_into::<B4, f16, f16>(&words, &params, &params, &layout, &mut out, par)
                {
                    err = Some(e);
                }
            });
            if let Some(e) = err {
                return Err(e.into());
            }
            let gbps = bytes / t.as_secs_f64() / 1e9;
            let name = format!("axis {} {label}", if axis == Axis::Zero { 0 } else { 1 });
            println!(
                "  {name:<28} {:>9.3} ms {gbps:>7.1} GB/s {:>5.0}% of memcpy",
                t.as_secs_f64() * 1e3,
                100.0 * gbps / memcpy_gbps
            );
        }
    }
    Ok(())
}
