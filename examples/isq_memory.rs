//! Peak memory of load-time quantization: quantize every layer of an unquantized checkpoint as
//! it loads, one layer at a time, and keep the packed results (what a runtime holds).
//!
//! ```text
//! cargo run --release --example isq_memory -- gen DIR [LAYERS]      # LAYERS x [4096, 4096] bf16
//! /usr/bin/time -v cargo run --release --example isq_memory -- load DIR [int8|int4|hqq4|fp8]
//! ```
//!
//! `gen` writes `LAYERS` (default 32: 1 GiB) bf16 weights of 4096 x 4096 with a bias each;
//! `load` prints the packed bytes kept; `/usr/bin/time -v`'s "Maximum resident set size" is the
//! peak, to compare with the largest layer in f32 (64 MiB) plus the packed total.

use quant_kernels::hqq::Axis;
use quant_kernels::io::safetensors::to_le_bytes;
use quant_kernels::io::{Checkpoint, Dtype, SafetensorsWriter};
use quant_kernels::tp::{LoadOptions, ReplicatedLinear};
use quant_kernels::{Parallelism, QuantMethod};

const N: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(args.get(1).ok_or("usage: isq_memory gen|load DIR [...]")?);
    match args[0].as_str() {
        "gen" => {
            let layers: usize = args.get(2).map_or(Ok(32), |s| s.parse())?;
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#)?;
            let mut decl = Vec::new();
            for l in 0..layers {
                decl.push((format!("model.layers.{l}.mlp.up_proj.weight"), Dtype::Bf16, vec![N, N]));
                decl.push((format!("model.layers.{l}.mlp.up_proj.bias"), Dtype::Bf16, vec![N]));
            }
            let mut w = SafetensorsWriter::create(dir.join("model.safetensors"), &decl, &Default::default())?;
            let mut s = 0x9e37_79b9u32;
            let mut row = vec![half::bf16::ZERO; N];
            for (name, _, shape) in &decl {
                // Row by row (the writer takes a tensor in parts): nothing large in memory here.
                for _ in 0..shape.iter().product::<usize>() / N {
                    for v in row.iter_mut() {
                        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        *v = half::bf16::from_f32((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5);
                    }
                    w.write_part(name, &to_le_bytes(&row))?;
                }
            }
            w.finish()?;
            println!("wrote {layers} layers of [{N}, {N}] bf16 to {}", dir.display());
        }
        "load" => {
            let method = match args.get(2).map_or("int8", String::as_str) {
                "int8" => QuantMethod::Int8Symmetric { per_channel: true },
                "int4" => QuantMethod::Int4Asymmetric { group: 64 },
                "hqq4" => QuantMethod::Hqq { bits: 4, group: 64, axis: Axis::Zero },
                "fp8" => {
                    QuantMethod::Fp8 { format: quant_kernels::fp8::Fp8Format::E4M3, block: Some((128, 128)) }
                }
                other => return Err(format!("unknown method {other}").into()),
            };
            let ck = Checkpoint::open(&dir)?;
            let opts = LoadOptions { isq: Some(method), par: Parallelism::RAYON, ..Default::default() };
            let start = std::time::Instant::now();
            let mut kept = Vec::new();
            for l in 0.. {
                let Some(layer) =
                    ReplicatedLinear::load(&ck, &format!("model.layers.{l}.mlp.up_proj"), &opts)?
                else {
                    break;
                };
                kept.push(layer);
            }
            let packed: usize = kept.iter().map(|l| l.local().weight_bytes()).sum();
            println!(
                "{} layers quantized to {method} as they loaded: {:.1} MiB kept, {:.1} MiB read, {:.1} s",
                kept.len(),
                packed as f64 / (1 << 20) as f64,
                ck.bytes_read() as f64 / (1 << 20) as f64,
                start.elapsed().as_secs_f64()
            );
        }
        other => return Err(format!("unknown mode {other} (gen or load)").into()),
    }
    Ok(())
}
