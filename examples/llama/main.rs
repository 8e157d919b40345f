//! A small Llama-family runtime on quant-kernels' public API: load a checkpoint for N
//! tensor-parallel ranks, run a prompt and greedy decode, write the logits.
//!
//! ```text
//! cargo run --release --example llama -- DIR --tokens 5,17,3 --new 8 --out OUT.safetensors \
//!     [--world-size N] [--isq int8|int4|hqq4|hqq8|fp8|METHOD] [--lora ADAPTER_DIR] [--threads T]
//!     [--activations f32|int8]
//! ```
//!
//! `DIR` is any checkpoint the crate reads: unquantized safetensors (f32/f16/bf16), GPTQ, AWQ
//! or FP8 (`quantization_config` in `config.json`), or HQQ layers in `*.uqff` files beside the
//! dense rest. `--world-size N` runs N ranks as threads over `LocalComm`; built with
//! `--features mpi` and started under `mpirun -np N`, one rank per process over `MpiComm`.
//! `OUT` holds `prefill_logits` f32 `[prompt, vocab]`, `step_logits` f32 `[new, vocab]` and
//! `greedy_ids` i64 `[new]`. `--activations int8` multiplies every layer that path takes
//! (GPTQ/AWQ, HQQ, int8 and int4; see `matmul::Activations::Int8`) with int8 activations and
//! keeps only that path's copy of each weight; the default `f32` is exact. Bad input is one
//! message on stderr and exit status 2.

mod model;

use model::{Config, Generation, Model, ModelError, Result};
use quant_kernels::io::{Checkpoint, Dtype, LoraAdapter, QuantizedCheckpoint, SafetensorsWriter, UqffModel};
use quant_kernels::matmul::Activations;
use quant_kernels::tp::{Comm, LayerSource, LoadOptions, LocalComm};
use quant_kernels::{Parallelism, QuantMethod};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: llama DIR --tokens 5,17,3 --new 8 --out OUT.safetensors [--world-size N] \
                     [--isq int8|int4|hqq4|hqq8|fp8|METHOD] [--lora ADAPTER_DIR] [--threads T] \
                     [--activations f32|int8]";

struct Args {
    dir: PathBuf,
    tokens: Vec<u32>,
    new: usize,
    out: PathBuf,
    world: Option<usize>,
    isq: Option<QuantMethod>,
    lora: Option<PathBuf>,
    threads: Option<usize>,
    activations: Activations,
}

fn bad<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModelError::Input(msg.into()))
}

/// The `--isq` names: the short ones mistral.rs users know, or any method name the crate
/// prints (`int4-asym-g64`, `hqq-4bit-g64-axis1`, ...).
fn isq_method(name: &str) -> Result<QuantMethod> {
    let full = match name {
        "int8" => "int8-sym-channel",
        "int4" => "int4-asym-g32",
        "hqq4" => "hqq-4bit-g64-axis0",
        "hqq8" => "hqq-8bit-g64-axis0",
        "fp8" => "fp8-e4m3-tensor",
        other => other,
    };
    full.parse().map_err(|e| ModelError::Input(format!("--isq {name}: {e}")))
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut dir, mut tokens, mut new, mut out) = (None, None, None, None);
    let mut args = Args {
        dir: PathBuf::new(),
        tokens: Vec::new(),
        new: 0,
        out: PathBuf::new(),
        world: None,
        isq: None,
        lora: None,
        threads: None,
        activations: Activations::F32,
    };
    let number = |flag: &str, v: Option<String>| -> Result<usize> {
        match v.as_deref().map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => Ok(n),
            _ => bad(format!("{flag} needs a positive number\n{USAGE}")),
        }
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tokens" => {
                let v = it.next().unwrap_or_default();
                let ids: std::result::Result<Vec<u32>, _> =
                    v.split(',').map(|s| s.trim().parse::<u32>()).collect();
                match ids {
                    Ok(ids) if !ids.is_empty() => tokens = Some(ids),
                    _ => return bad(format!("--tokens `{v}`: comma-separated token ids\n{USAGE}")),
                }
            }
            "--new" => new = Some(number("--new", it.next())?),
            "--out" => out = it.next().map(PathBuf::from),
            "--world-size" => args.world = Some(number("--world-size", it.next())?),
            "--threads" => args.threads = Some(number("--threads", it.next())?),
            "--isq" => args.isq = Some(isq_method(&it.next().unwrap_or_default())?),
            "--lora" => args.lora = it.next().map(PathBuf::from),
            "--activations" => {
                args.activations = match it.next().as_deref() {
                    Some("f32") => Activations::F32,
                    Some("int8") => Activations::Int8,
                    v => return bad(format!("--activations {}: f32 or int8\n{USAGE}", v.unwrap_or(""))),
                }
            }
            "-h" | "--help" => return bad(USAGE),
            s if s.starts_with("--") => return bad(format!("unknown option {s}\n{USAGE}")),
            s if dir.is_none() => dir = Some(PathBuf::from(s)),
            s => return bad(format!("unexpected argument `{s}`\n{USAGE}")),
        }
    }
    let (Some(d), Some(t), Some(n), Some(o)) = (dir, tokens, new, out) else {
        return bad(format!("DIR, --tokens, --new and --out are required\n{USAGE}"));
    };
    (args.dir, args.tokens, args.new, args.out) = (d, t, n, o);
    Ok(args)
}

/// The checkpoint in `dir`, as the kind it is.
enum Source {
    Plain(Checkpoint),
    Quantized(Box<QuantizedCheckpoint>),
    Uqff(Box<UqffModel>),
}

fn open_source(dir: &Path) -> Result<Source> {
    let has_uqff = std::fs::read_dir(dir)
        .map_err(|e| ModelError::Input(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "uqff"));
    if has_uqff {
        return Ok(Source::Uqff(Box::new(UqffModel::open(dir)?)));
    }
    let ck = Checkpoint::open(dir)?;
    if ck.quantization_config().is_some() {
        Ok(Source::Quantized(Box::new(QuantizedCheckpoint::open(dir)?)))
    } else {
        Ok(Source::Plain(ck))
    }
}

/// One rank: load, generate, and the run's decode weight bytes over every rank.
fn run_rank<S: LayerSource>(
    src: &S,
    cfg: &Config,
    comm: &dyn Comm,
    opts: &LoadOptions<'_>,
    args: &Args,
) -> Result<(Generation, usize)> {
    let mut model = Model::load(src, cfg, comm.rank(), comm.world_size(), opts)?;
    let mut bytes = [model.decode_weight_bytes() as f32];
    comm.all_reduce_sum(&mut bytes)?;
    let generation = model::generate(&mut model, comm, &args.tokens, args.new)?;
    Ok((generation, bytes[0] as usize))
}

fn run_ranks<S: LayerSource + Sync>(
    src: &S,
    cfg: &Config,
    opts: &LoadOptions<'_>,
    args: &Args,
) -> Result<Option<(Generation, usize)>> {
    #[cfg(feature = "mpi")]
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() || std::env::var_os("PMI_SIZE").is_some() {
        let comm = quant_kernels::tp::MpiComm::init()?;
        if args.world.is_some_and(|w| w != comm.world_size()) {
            return bad(format!(
                "--world-size {} but mpirun started {} ranks",
                args.world.unwrap_or(0),
                comm.world_size()
            ));
        }
        // Only rank 0 writes and reports; MPI finalizes when `comm` drops, on every rank.
        let r = run_rank(src, cfg, &comm, opts, args)?;
        return Ok((comm.rank() == 0).then_some(r));
    }
    #[cfg(not(feature = "mpi"))]
    if std::env::var("OMPI_COMM_WORLD_SIZE").is_ok_and(|n| n != "1") {
        // Each process would run the whole model and write the same file.
        return bad("started under mpirun, but built without `--features mpi`");
    }
    let world = args.world.unwrap_or(1);
    let comms = LocalComm::group(world);
    let results: Vec<Result<(Generation, usize)>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            comms.iter().map(|c| s.spawn(move || run_rank(src, cfg, c as &dyn Comm, opts, args))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| bad("a rank panicked"))).collect()
    });
    // A bad-input error on any rank is the message; the others then fail in the collectives.
    let mut first_err = None;
    let mut rank0 = None;
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) if rank == 0 => rank0 = Some(v),
            Ok(_) => {}
            Err(e @ ModelError::Input(_)) => return Err(e),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    match (rank0, first_err) {
        (_, Some(e)) => Err(e),
        (Some(v), None) => Ok(Some(v)),
        (None, None) => bad("rank 0 returned nothing"),
    }
}

/// GB/s of the fastest of five threaded reads (u64 sums over the pool) of `bytes` bytes.
fn pure_read_gbps(bytes: usize) -> f64 {
    use rayon::prelude::*;
    let words = (bytes / 8).max(1 << 10);
    let buf: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(rayon::current_num_threads() * 4).max(1 << 10);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let s: u64 = buf
            .par_chunks(chunk)
            .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(s);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (words * 8) as f64 / best / 1e9
}

fn write_out(path: &Path, g: &Generation, prompt: usize, new: usize, vocab: usize) -> Result<()> {
    let decl = [
        ("prefill_logits".to_string(), Dtype::F32, vec![prompt, vocab]),
        ("step_logits".to_string(), Dtype::F32, vec![new, vocab]),
        ("greedy_ids".to_string(), Dtype::I64, vec![new]),
    ];
    let mut w = SafetensorsWriter::create(path, &decl, &Default::default())?;
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    w.write("prefill_logits", &le(&g.prefill_logits))?;
    w.write("step_logits", &le(&g.step_logits))?;
    w.write("greedy_ids", &g.greedy_ids.iter().flat_map(|&i| (i as i64).to_le_bytes()).collect::<Vec<u8>>())?;
    w.finish()?;
    Ok(())
}

fn run() -> Result<()> {
    let args = parse_args()?;
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| ModelError::Input(format!("--threads {t}: {e}")))?;
    }
    let config_path = args.dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| ModelError::Input(format!("{}: {e}", config_path.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Input(format!("{}: {e}", config_path.display())))?;
    let cfg = Config::from_json(&json)?;
    if let Some(&id) = args.tokens.iter().find(|&&id| id as usize >= cfg.vocab) {
        return bad(format!("token id {id} is past the vocabulary ({} ids)", cfg.vocab));
    }
    let lora = args.lora.as_deref().map(LoraAdapter::open).transpose()?;
    let opts = LoadOptions {
        isq: args.isq,
        lora: lora.as_ref(),
        par: Parallelism::RAYON,
        activations: args.activations,
        // The runtime never goes back to the f32 path: keep one copy of each weight.
        drop_scheme_weight: true,
        ..Default::default()
    };
    let done = match open_source(&args.dir)? {
        Source::Plain(s) => run_ranks(&s, &cfg, &opts, &args)?,
        Source::Quantized(s) => run_ranks(s.as_ref(), &cfg, &opts, &args)?,
        Source::Uqff(s) => run_ranks(s.as_ref(), &cfg, &opts, &args)?,
    };
    let Some((g, bytes)) = done else { return Ok(()) };
    write_out(&args.out, &g, args.tokens.len(), args.new, cfg.vocab)?;
    let steps = args.new - 1;
    let decode_tps = if g.decode_s > 0.0 { steps as f64 / g.decode_s } else { 0.0 };
    let read = pure_read_gbps(bytes);
    let decode_gbps = bytes as f64 * decode_tps / 1e9;
    let report = format!(
        "prompt: {} tokens in {:.4} s ({:.1} tokens/s); decode: {steps} tokens in {:.4} s ({decode_tps:.1} tokens/s)\n\
         decode reads {:.2} MB of weights per token: {decode_gbps:.2} GB/s, {:.2} of a pure threaded read of as many \
         bytes ({read:.2} GB/s, {} threads; bound {:.1} tokens/s)\npeak resident memory: {}\ngreedy ids: {:?}\n",
        args.tokens.len(),
        g.prefill_s,
        args.tokens.len() as f64 / g.prefill_s.max(1e-12),
        g.decode_s,
        bytes as f64 / 1e6,
        decode_gbps / read,
        rayon::current_num_threads(),
        read * 1e9 / bytes.max(1) as f64,
        peak_memory(),
        g.greedy_ids,
    );
    // A closed stdout (`| head`) is not an error of the run: the output file is written.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes());
    Ok(())
}

/// The process's peak resident set (`VmHWM`, Linux), or `unknown` elsewhere.
fn peak_memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kb.map_or_else(|| "unknown".to_string(), |kb| format!("{:.0} MB", kb as f64 / 1e3))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("llama: {e}");
        std::process::exit(2);
    }
}
