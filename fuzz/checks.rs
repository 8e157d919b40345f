//! Bodies of the cargo-fuzz targets, over the library's public API only. Each target includes
//! this file (`#[path = "../checks.rs"] mod checks;`), and so does the library's test suite
//! (`tests/upstream/main.rs`), which replays the committed inputs in `fuzz/regressions/`
//! without libFuzzer.

// Each includer uses some of the checks.
#![allow(dead_code)]

use half::f16;
use quant_kernels::error::{FormatError, KernelError, TpError};
use quant_kernels::hqq::{self, Axis, HqqLayout, Packed, PackedWords};
use quant_kernels::{B1, B2, B3, B4, B8, Bits, Parallelism};

/// The HQQ API boundary on arbitrary shapes, widths and (mis)matched lengths: every call must
/// return `Ok` or a typed `Err`, never panic; when it returns `Ok`, the fast paths must equal
/// the reference and unpack(pack(codes)) must equal the codes.
///
/// Input: `bits, axis, rows, cols, group, d_words, d_params, d_out` (one byte each; the `d_*`
/// perturb the lengths), then the bytes used as packed words / codes. Returns whether the
/// dequantization call succeeded (so tests can see that both outcomes are exercised).
pub fn hqq_api(data: &[u8]) -> bool {
    let [bits, axis, rows, cols, group, dw, dp, dout, rest @ ..] = data else { return false };
    let (rows, cols, group) = (*rows as usize, *cols as usize, *group as usize);
    let Ok(layout) = HqqLayout::new(rows, cols, group, Axis::try_from(axis % 3).unwrap_or(Axis::One)) else {
        return false;
    };
    let bump = |len: usize, d: u8| match d % 4 {
        0 => len,
        1 => len + 1,
        2 => len.saturating_sub(1),
        _ => d as usize,
    };
    let (cr, cc) = layout.code_shape();
    let (pr, _) = layout.packed_shape(Bits::try_from(*bits).unwrap_or(Bits::B4)).unwrap_or((cr, cc));
    let nwords = bump(pr * cc, *dw);
    let word = |i: usize| rest.get(i % rest.len().max(1)).copied().unwrap_or(0);
    let params: Vec<f16> =
        (0..bump(layout.groups(), *dp)).map(|i| f16::from_bits(word(i) as u16 * 97)).collect();
    let mut out = vec![0f32; bump(layout.numel(), *dout)];
    let mut reference = out.clone();
    let r = match bits {
        3 => {
            let w: Vec<i32> = (0..nwords)
                .map(|i| i32::from_le_bytes([word(i), word(i + 1), word(i + 2), word(i + 3)]))
                .collect();
            check::<B3>(&w, &params, &layout, &mut out, &mut reference)
        }
        _ => {
            let w: Vec<u8> = (0..nwords).map(word).collect();
            match bits {
                8 => check::<B8>(&w, &params, &layout, &mut out, &mut reference),
                4 => check::<B4>(&w, &params, &layout, &mut out, &mut reference),
                2 => check::<B2>(&w, &params, &layout, &mut out, &mut reference),
                1 => check::<B1>(&w, &params, &layout, &mut out, &mut reference),
                _ => Err(quant_kernels::Error::Kernel(KernelError::UnsupportedBits(*bits))),
            }
        }
    };
    // Packing round trip on the same bytes, masked to the width.
    let b = Bits::try_from(*bits).unwrap_or(Bits::B8);
    let codes: Vec<u8> = (0..cr * cc).map(|i| word(i) & b.max_code()).collect();
    if let Ok(p) = hqq::pack_hqq(&codes, cr, cc, b.get()) {
        assert_eq!(hqq::unpack_hqq(&p).ok(), Some(codes), "pack/unpack round trip");
    }
    let bogus = Packed { bits: b, rows: cr, cols: cc, words: PackedWords::U8(rest.to_vec()) };
    let _ = hqq::unpack_hqq(&bogus);
    r.is_ok()
}

fn check<P: quant_kernels::Packing>(
    words: &[P::Word],
    params: &[f16],
    layout: &HqqLayout,
    out: &mut [f32],
    reference: &mut [f32],
) -> quant_kernels::Result<()> {
    let fast = hqq::dequantize_into::<P, f16, f32>(words, params, params, layout, out, Parallelism::RAYON);
    let naive = hqq::dequantize_reference_into::<P, f16, f32>(words, params, params, layout, reference);
    assert_eq!(fast, naive, "fast and reference paths validate differently");
    if fast.is_ok() {
        let same = out.iter().zip(reference.iter()).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "fast path differs from the reference");
    }
    fast
}

/// A safetensors file of arbitrary bytes (`data` is the whole file): the header parser must
/// return `Ok` or a typed `Err`, never panic or allocate beyond the input; on `Ok` every
/// tensor's byte range lies inside the file and matches its shape and dtype. Returns whether
/// the header was accepted.
pub fn safetensors_header(data: &[u8]) -> bool {
    let Some((len, rest)) = data.split_first_chunk::<8>() else { return false };
    let n = u64::from_le_bytes(*len);
    let Some(header) = usize::try_from(n).ok().and_then(|n| rest.get(..n)) else { return false };
    match quant_kernels::io::safetensors::parse_header("fuzz", header, data.len() as u64) {
        Ok((tensors, _)) => {
            for info in tensors.values() {
                let end = info.offset + info.len as u64;
                assert!(end <= data.len() as u64 && info.offset >= 8 + n);
                assert_eq!(info.shape.iter().product::<usize>() * info.dtype.size(), info.len);
            }
            true
        }
        Err(e) => {
            assert!(matches!(e, quant_kernels::Error::Format(FormatError::Safetensors { .. })));
            false
        }
    }
}

/// A quantization config of arbitrary bytes: JSON that does not parse is skipped; any JSON
/// value must give a config or a typed [`FormatError::Config`](crate::error::FormatError::Config), never a panic; an accepted
/// config has a supported width and group size. Returns whether it was accepted.
pub fn gptq_config(data: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return false };
    match quant_kernels::gptq::GptqConfig::from_json(&value) {
        Ok(c) => {
            assert!(matches!(c.bits, 2 | 3 | 4 | 8) && (c.group_size == -1 || c.group_size > 0));
            true
        }
        Err(e) => {
            assert!(matches!(e, quant_kernels::Error::Format(FormatError::Config { .. })));
            false
        }
    }
}

/// UQFF bytes of either revision: the legacy blob reader, the legacy file reader and the 1.2.0
/// reader each return `Ok` or a typed error, never panic; an accepted layer validates, writes
/// back to the same bytes after the version word (the writer always writes 0.2.0) and
/// dequantizes. Returns whether any reader accepted it.
pub fn uqff(data: &[u8]) -> bool {
    use quant_kernels::io::uqff::{self, Extension};
    let mut accepted = false;
    if let Ok(layer) = uqff::read_legacy(data) {
        let written = uqff::write_legacy(&layer).expect("an accepted layer writes");
        assert_eq!(written[4..], data[4..]);
        assert!(layer.dequantize::<f32>(Parallelism::SERIAL).is_ok());
        accepted = true;
    }
    if let Ok(layers) = uqff::read_legacy_file(data) {
        accepted |= !layers.is_empty();
    }
    if let Ok(layers) = uqff::read_v1(data, Extension::Allow) {
        for (_, l) in &layers {
            assert!(l.validate().is_ok() && l.dequantize::<f32>(Parallelism::SERIAL).is_ok());
        }
        accepted = true;
    }
    accepted
}

/// Serializer round trip: a layer built from the input (width, shape, group, axis, steps,
/// flags, params dtype, bias, weights all taken from the bytes; small shapes) is quantized,
/// written as a 0.2.0 blob, a 0.2.0 file and a 1.2.0 file, and each reads back equal. Returns
/// whether a layer was built (shapes the quantizer refuses give typed errors, skipped).
pub fn uqff_roundtrip(data: &[u8]) -> bool {
    use quant_kernels::hqq::{Axis, HqqConfig};
    use quant_kernels::io::uqff::{self, Extension, UqffHqqLayer};
    let [bits, rows, cols, group, flags, steps, rest @ ..] = data else { return false };
    let bits = [1u8, 2, 3, 4, 8][*bits as usize % 5];
    let (rows, cols) = (1 + *rows as usize % 24, 1 + *cols as usize % 24);
    let config = HqqConfig {
        bits,
        group_size: 1 + *group as usize % (rows * cols),
        axis: if flags & 1 == 0 { Axis::Zero } else { Axis::One },
        optimization_steps: (steps % 4 > 0).then_some((steps % 4) as usize),
        round_zeros: flags & 2 != 0,
        channel_wise: flags & 4 == 0,
    };
    let byte = |i: usize| rest.get(i % rest.len().max(1)).copied().unwrap_or(0);
    let w: Vec<f32> = (0..rows * cols).map(|i| (byte(i) as f32 - 128.0) / 64.0).collect();
    let Ok(q) = quant_kernels::hqq::quantize_hqq(&w, rows, cols, &config, Parallelism::RAYON) else {
        return false;
    };
    let dtype =
        [quant_kernels::FloatType::F32, quant_kernels::FloatType::F16, quant_kernels::FloatType::Bf16]
            [(flags >> 3) as usize % 3];
    let bias = (flags & 0x40 != 0)
        .then(|| quant_kernels::FloatVec::F32((0..rows).map(|i| i as f32 * 0.5).collect()));
    let layer = UqffHqqLayer::from_quantized(&q, &config, dtype, bias).expect("a quantized layer converts");
    let blob = uqff::write_legacy(&layer).expect("a valid layer writes");
    assert_eq!(uqff::read_legacy(&blob).expect("own blob reads"), layer);
    let file = uqff::write_legacy_file(std::slice::from_ref(&layer), None).expect("file writes");
    assert_eq!(uqff::read_legacy_file(&file).expect("own file reads")[0].1, layer);
    let named = vec![("l".to_string(), layer)];
    let v1 = uqff::write_v1(&named, Extension::Allow).expect("v1 writes");
    assert_eq!(uqff::read_v1(&v1, Extension::Allow).expect("own v1 reads"), named);
    true
}

/// What each config parser made of one JSON value: `Some(true)` accepted, `Some(false)`
/// refused with its typed error, `None` when the input was not JSON. Order: AWQ, FP8, GPTQ
/// (each on the value and, when present, on its `quantization_config` object as `config.json`
/// embeds it; accepted when either is), attention shape (`Some(true)` for `Ok(Some(_))`).
pub type ConfigOutcomes = [Option<bool>; 4];

/// Every quantization/model config parser on one JSON value of arbitrary bytes (see
/// [`quant_config`]); the per-parser outcomes, so tests can see each one both accept and refuse.
pub fn quant_config_outcomes(data: &[u8]) -> ConfigOutcomes {
    use quant_kernels::Error;
    use quant_kernels::fp8::Fp8Format;
    use quant_kernels::method::QuantMethod;
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return [None; 4] };
    let config_error = |e: &Error| {
        assert!(matches!(e, Error::Format(FormatError::Config { .. })), "untyped config error: {e}")
    };
    // An accepted scheme's method validates and sizes a small layer without panicking.
    let method_ok = |m: QuantMethod| {
        assert!(m.validate().is_ok(), "{m} was accepted by its config parser but does not validate");
        let _ = m.layer_bytes(64, 128);
        let _ = m.layer_bytes(7, 0);
    };
    let mut out = [Some(false); 4];
    for v in std::iter::once(&value).chain(value.get("quantization_config")) {
        match quant_kernels::awq::AwqConfig::from_json(v) {
            Ok(c) => {
                assert!(c.group_size > 0 && c.group_size <= i64::MAX as usize, "AWQ group {}", c.group_size);
                method_ok(QuantMethod::Awq { group: c.group_size });
                out[0] = Some(true);
            }
            Err(e) => config_error(&e),
        }
        match quant_kernels::fp8::Fp8Config::from_json(v) {
            Ok(c) => {
                assert!(c.block.is_none_or(|(r, c)| r > 0 && c > 0), "FP8 block {:?}", c.block);
                for format in [Fp8Format::E4M3, Fp8Format::E5M2] {
                    method_ok(QuantMethod::Fp8 { format: c.format.unwrap_or(format), block: c.block });
                }
                out[1] = Some(true);
            }
            Err(e) => config_error(&e),
        }
        match quant_kernels::gptq::GptqConfig::from_json(v) {
            Ok(c) => {
                assert!(matches!(c.bits, 2 | 3 | 4 | 8) && (c.group_size == -1 || c.group_size > 0));
                let group = usize::try_from(c.group_size).ok();
                method_ok(QuantMethod::Gptq { bits: c.bits, group, act_order: c.desc_act });
                out[2] = Some(true);
            }
            Err(e) => config_error(&e),
        }
    }
    let positive = |field: &str| value.get(field).and_then(|v| v.as_u64()).filter(|&n| n > 0);
    match quant_kernels::tp::AttentionShape::from_config(&value) {
        Ok(Some(a)) => {
            assert!(a.heads > 0 && a.kv_heads > 0 && a.head_dim > 0, "{a:?}");
            assert_eq!(Some(a.heads as u64), positive("num_attention_heads"));
            assert_eq!(a.kv_heads as u64, positive("num_key_value_heads").unwrap_or(a.heads as u64));
            match positive("head_dim") {
                Some(d) => assert_eq!(a.head_dim as u64, d),
                None => assert_eq!(Some(a.head_dim as u64 * a.heads as u64), positive("hidden_size")),
            }
            out[3] = Some(true);
        }
        Ok(None) => assert!(value.get("num_attention_heads").is_none_or(|v| v.is_null())),
        Err(e) => assert!(
            matches!(
                e,
                Error::Tp(TpError::ModelConfig { .. }) | Error::Kernel(KernelError::NotMultiple { .. })
            ),
            "{e}"
        ),
    }
    out
}

/// Every config parser (AWQ, FP8, GPTQ quantization configs, the attention sizes of a model
/// `config.json`) on arbitrary bytes parsed as JSON: each returns `Ok` or its typed error, never
/// panics; an accepted config is within its documented ranges and its [`QuantMethod`]
/// validates. (`method.rs` has no parser of its own: a `QuantMethod` is built in code.)
/// Returns whether any parser accepted it.
///
/// [`QuantMethod`]: quant_kernels::method::QuantMethod
pub fn quant_config(data: &[u8]) -> bool {
    quant_config_outcomes(data).contains(&Some(true))
}

/// A fresh directory or file path under [`std::env::temp_dir`], unique per process and call,
/// removed (without following symlinks) when dropped.
struct TempPath(std::path::PathBuf);

impl TempPath {
    fn new(kind: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("qk-fuzz-{kind}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        Self(path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0).or_else(|_| std::fs::remove_file(&self.0));
    }
}

/// The 15 safetensors dtypes, in the order [`safetensors_roundtrip`] picks them by a byte.
const DTYPES: [quant_kernels::io::Dtype; 15] = {
    use quant_kernels::io::Dtype::*;
    [Bool, U8, I8, F8E4M3, F8E5M2, I16, U16, F16, Bf16, I32, U32, F32, I64, U64, F64]
};

/// Serializer round trip of [`quant_kernels::io::SafetensorsWriter`]: up to 5 tensors (name, dtype,
/// shape of up to 3 dims of 0..5, data) and up to 3 metadata strings built from the input are
/// written (whole or in parts, with writer misuse mixed in: wrong byte counts, an undeclared
/// name, the wrong order, finishing early, writing past the end), and read back with
/// [`quant_kernels::io::SafetensorsFile::open`] (and the `safetensors` crate): names, dtypes, shapes,
/// bytes and metadata equal. Misuse is a typed error that leaves the stream intact; declaring a
/// name twice or the name `__metadata__` is refused by `create`. Returns whether a file was
/// written.
///
/// Input: `count, flags`, then per tensor `name length (% 16), name bytes, dtype, ndim, dims`,
/// then per metadata entry `key length, key, value length, value`; the rest is tensor data.
pub fn safetensors_roundtrip(data: &[u8]) -> bool {
    use quant_kernels::Error;
    use quant_kernels::io::{SafetensorsFile, SafetensorsWriter};
    use std::collections::BTreeMap;
    let [count, flags, rest @ ..] = data else { return false };
    let mut at = 0;
    let mut take = |n: usize| {
        let s = &rest[at.min(rest.len())..(at + n).min(rest.len())];
        at += n;
        s
    };
    let byte = |s: &[u8]| s.first().copied().unwrap_or(0) as usize;
    let mut tensors = Vec::new();
    for _ in 0..count % 6 {
        let len = byte(take(1)) % 16;
        let name = String::from_utf8_lossy(take(len)).into_owned();
        let dtype = DTYPES[byte(take(1)) % DTYPES.len()];
        let ndim = byte(take(1)) % 4;
        let shape: Vec<usize> = (0..ndim).map(|_| byte(take(1)) % 5).collect();
        tensors.push((name, dtype, shape));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..(flags >> 4) % 4 {
        let n = byte(take(1)) % 8;
        let key = String::from_utf8_lossy(take(n)).into_owned();
        let n = byte(take(1)) % 8;
        let value = String::from_utf8_lossy(take(n)).into_owned();
        metadata.insert(key, value);
    }
    let payload = rest.get(at..).unwrap_or_default();
    let fill = |i: usize| payload.get(i % payload.len().max(1)).copied().unwrap_or(i as u8);
    let mut offset = 0;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, d, s)| {
            let n = s.iter().product::<usize>() * d.size();
            offset += n;
            (offset - n..offset).map(fill).collect()
        })
        .collect();

    let tmp = TempPath::new("st");
    let mut names: Vec<&str> = tensors.iter().map(|t| t.0.as_str()).collect();
    let refused = names.contains(&"__metadata__") || {
        names.sort_unstable();
        names.windows(2).any(|w| w[0] == w[1])
    };
    let mut w = match SafetensorsWriter::create(&tmp.0, &tensors, &metadata) {
        Ok(w) => {
            assert!(!refused, "a duplicate or reserved name was accepted: {names:?}");
            w
        }
        Err(e) => {
            assert!(refused, "create refused a valid declaration: {e}");
            assert!(matches!(e, Error::Format(FormatError::Safetensors { .. })), "{e}");
            return false;
        }
    };
    let misuse = flags & 7;
    let victim = (*flags as usize >> 3) % tensors.len().max(1);
    let err = |r: quant_kernels::Result<()>, what: &str| match r {
        Err(
            Error::Kernel(KernelError::LengthMismatch { .. }) | Error::Format(FormatError::MissingTensors(_)),
        ) => {}
        other => panic!("writer misuse ({what}) gave {other:?}"),
    };
    for (i, ((name, _, _), b)) in tensors.iter().zip(&bytes).enumerate() {
        if i == victim {
            match misuse {
                1 => {
                    let mut longer = b.clone();
                    longer.push(0);
                    err(w.write(name, &longer), "one byte too many");
                    if !b.is_empty() {
                        err(w.write(name, &b[1..]), "one byte too few");
                    }
                }
                2 => err(w.write(&format!("{name}\u{0}undeclared"), b), "undeclared name"),
                3 if i + 1 < tensors.len() => err(w.write(&tensors[i + 1].0, &bytes[i + 1]), "out of order"),
                6 => {
                    let left: Vec<String> = tensors[i..].iter().map(|t| t.0.clone()).collect();
                    assert_eq!(
                        w.finish(),
                        Err(Error::Format(FormatError::MissingTensors(left))),
                        "finishing early"
                    );
                    return false;
                }
                _ => {}
            }
        }
        if flags & 8 != 0 && !b.is_empty() {
            // In parts of sizes taken from the data (one too long first, for misuse 4).
            let mut done = 0;
            while done < b.len() {
                if misuse == 4 && i == victim {
                    let mut too_long = b[done..].to_vec();
                    too_long.push(0);
                    err(w.write_part(name, &too_long), "a part past the declared length");
                }
                let n = (1 + fill(done) as usize % 7).min(b.len() - done);
                w.write_part(name, &b[done..done + n]).expect("a part within the declared length");
                done += n;
            }
        } else {
            w.write(name, b).expect("a declared tensor of the declared length");
        }
    }
    if misuse == 5 {
        err(w.write("past the end", &[]), "past the end");
    }
    w.finish().expect("every declared tensor written");

    let file = SafetensorsFile::open(&tmp.0).expect("the writer's own file reads back");
    assert_eq!(file.metadata(), &metadata);
    assert_eq!(file.tensors().len(), tensors.len());
    let st_bytes = std::fs::read(&tmp.0).expect("own file");
    let st = ::safetensors::SafeTensors::deserialize(&st_bytes).expect("the safetensors crate reads it");
    for ((name, dtype, shape), b) in tensors.iter().zip(&bytes) {
        let info = file.info(name).expect("declared tensor present");
        assert_eq!((info.dtype, &info.shape), (*dtype, shape));
        assert_eq!(&file.read(name).expect("declared tensor reads"), b);
        let view = st.tensor(name).expect("declared tensor in the safetensors crate");
        assert_eq!((view.shape(), view.data()), (&shape[..], &b[..]));
    }
    true
}

/// Separator of the sections of a [`checkpoint_dir`] input.
pub const CHECKPOINT_DIR_SEP: &[u8] = b"\n--\n";

/// In a [`checkpoint_dir`] input's index and shard names, replaced by the absolute path of the
/// run's temporary root (the directory that holds the checkpoint directory), so an absolute
/// path can name a file that exists.
pub const ROOT_PLACEHOLDER: &[u8] = b"{root}";

fn split_sections<'a>(mut data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(sep.len()).position(|w| w == sep) {
        out.push(&data[..i]);
        data = &data[i + sep.len()..];
    }
    out.push(data);
    out
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let parts = split_sections(hay, from);
    parts.join(to)
}

/// Where the fuzz input's file `name` (relative to `ck`, or absolute) is written: resolved
/// lexically, and only if it stays strictly under `root`; `None` means it is not written.
fn place(root: &std::path::Path, ck: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    use std::path::{Component, Path};
    let path = Path::new(name);
    if name.is_empty() || name.len() > 1024 || path.components().count() > 32 {
        return None;
    }
    let (mut out, rel) = match path.strip_prefix(root) {
        Ok(rel) => (root.to_path_buf(), rel),
        Err(_) => (ck.to_path_buf(), path),
    };
    for c in rel.components() {
        match c {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir if out != root => {
                out.pop();
            }
            _ => return None, // above the root, or an absolute path elsewhere
        }
    }
    (out.starts_with(root) && out != root && out != ck).then_some(out)
}

/// A whole checkpoint directory built from the input, opened by [`quant_kernels::io::Checkpoint::open`]
/// and the model-level loaders ([`quant_kernels::io::QuantizedCheckpoint::open`], and each scheme's loader
/// whatever `quant_method` says), every layer read and dequantized when it opens (layers over
/// 2^20 elements are skipped). Never a panic; an index that names a file with `..`, an absolute
/// path or an empty name is refused, and every shard an opened index names resolves inside the
/// checkpoint directory (a shard that is a symlink leading out is refused too).
///
/// Input: sections split by [`CHECKPOINT_DIR_SEP`]: `config.json`, `quantize_config.json`,
/// `model.safetensors.index.json` (an empty section: the file is not written), then shard A's
/// name (empty: `model.safetensors`) and bytes, shard B's name and bytes (a shard is written
/// when its bytes section is present). A shard name starting with `@` makes that file a symlink
/// to the shard written next to the checkpoint directory; [`ROOT_PLACEHOLDER`] in the index and
/// names is the temporary root's absolute path. Files land under a fresh temporary root (a name
/// that would leave it is not written; the input bounds what is written), removed afterwards.
/// Returns whether the model-level loader opened it.
pub fn checkpoint_dir(data: &[u8]) -> bool {
    use quant_kernels::Error;
    use quant_kernels::io::Checkpoint;
    use quant_kernels::io::QuantizedCheckpoint;
    use quant_kernels::io::checkpoint::INDEX_FILE;
    use std::path::Component;

    let tmp = TempPath::new("ckdir");
    let root = &tmp.0;
    let ck = root.join("ck");
    std::fs::create_dir_all(&ck).expect("a fresh directory under the temp dir");
    let root_json = serde_json::to_string(&root.to_string_lossy()).expect("a string serializes");
    let root_json = &root_json.as_bytes()[1..root_json.len() - 1];
    let s = split_sections(data, CHECKPOINT_DIR_SEP);
    let section = |i: usize| s.get(i).copied();
    for (i, file) in [(0, "config.json"), (1, "quantize_config.json"), (2, INDEX_FILE)] {
        if let Some(bytes) = section(i).filter(|b| !b.is_empty()) {
            let bytes =
                if i == 2 { replace_bytes(bytes, ROOT_PLACEHOLDER, root_json) } else { bytes.to_vec() };
            std::fs::write(ck.join(file), bytes).expect("a JSON file in the fresh directory");
        }
    }
    let mut links = Vec::new();
    for (n, (name_at, default)) in [(3, "model.safetensors"), (5, "")].into_iter().enumerate() {
        let Some(bytes) = section(name_at + 1) else { continue };
        let name = section(name_at).unwrap_or_default();
        let name = replace_bytes(name, ROOT_PLACEHOLDER, root.to_string_lossy().as_bytes());
        let name = String::from_utf8_lossy(&name);
        let name = if name.is_empty() { default } else { &name };
        let (name, link) = match name.strip_prefix('@') {
            Some(n) => (n, true),
            None => (name, false),
        };
        let Some(path) = place(root, &ck, name) else { continue };
        if link {
            let target = root.join(format!("outside-{n}.safetensors"));
            std::fs::write(&target, bytes).expect("a file in the fresh root");
            links.push((target, path));
        } else if path.parent().is_some_and(|p| std::fs::create_dir_all(p).is_ok()) {
            let _ = std::fs::write(&path, bytes); // a directory there, a name too long: not written
        }
    }
    #[cfg(unix)]
    for (target, path) in &links {
        if path.parent().is_some_and(|p| std::fs::create_dir_all(p).is_ok()) {
            let _ = std::os::unix::fs::symlink(target, path);
        }
    }

    // What the index names (parsed here too, to know what must be refused).
    let index_present = ck.join(INDEX_FILE).exists();
    let hostile = std::fs::read(ck.join(INDEX_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("weight_map").and_then(|m| m.as_object()).cloned())
        .is_some_and(|m| {
            m.values().filter_map(|f| f.as_str()).any(|f| {
                f.is_empty()
                    || !std::path::Path::new(f).components().all(|c| matches!(c, Component::Normal(_)))
            })
        });
    let canonical_ck = ck.canonicalize().expect("the checkpoint directory exists");
    let opened = match Checkpoint::open(&ck) {
        Ok(c) => {
            assert!(!hostile, "an index naming a path outside the directory was accepted");
            for name in c.tensor_names() {
                let shard = c.shard_of(name).expect("a listed tensor has a shard");
                if index_present {
                    let real = shard.canonicalize().expect("an opened shard exists");
                    assert!(
                        real.starts_with(&canonical_ck),
                        "{} read outside {}",
                        real.display(),
                        ck.display()
                    );
                } else {
                    assert_eq!(shard, ck.join(quant_kernels::io::checkpoint::SINGLE_FILE));
                }
                let info = c.info(name).expect("a listed tensor has an entry").clone();
                if info.len <= 1 << 20 {
                    assert_eq!(c.read(name).expect("a checked tensor reads").len(), info.len);
                }
            }
            Some(c)
        }
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::Format(FormatError::Io { .. })
                        | Error::Format(FormatError::Json { .. })
                        | Error::Format(FormatError::Safetensors { .. })
                        | Error::Format(FormatError::Config { .. })
                        | Error::Format(FormatError::MissingTensors(_))
                        | Error::Format(FormatError::MissingShard { .. })
                        | Error::Format(FormatError::OutsideDirectory(_))
                ),
                "{e}"
            );
            None
        }
    };
    let model = QuantizedCheckpoint::open(&ck);
    assert!(model.is_err() || opened.is_some(), "the model opened where the checkpoint did not");
    let accepted = model.is_ok();
    // Every scheme's loader, whatever `quant_method` says, then every layer it finds.
    let mut models: Vec<QuantizedCheckpoint> = model.into_iter().collect();
    if let Some(c) = &opened {
        models.extend(
            quant_kernels::gptq::GptqCheckpoint::from_checkpoint(c.clone()).map(QuantizedCheckpoint::Gptq),
        );
        models.extend(
            quant_kernels::awq::AwqCheckpoint::from_checkpoint(c.clone()).map(QuantizedCheckpoint::Awq),
        );
        models.extend(
            quant_kernels::fp8::Fp8Checkpoint::from_checkpoint(c.clone()).map(QuantizedCheckpoint::Fp8),
        );
    }
    for m in &models {
        for layer in m.layers() {
            assert!(layer.method.validate().is_ok(), "{}: {}", layer.prefix, layer.method);
            assert!(
                m.is_quantized_part(&format!("{}.scales", layer.prefix))
                    || matches!(m, QuantizedCheckpoint::Fp8(_))
            );
            let numel = layer.experts.checked_mul(layer.out).and_then(|n| n.checked_mul(layer.inp));
            let Some(numel) = numel.filter(|&n| n <= 1 << 20) else { continue };
            if let QuantizedCheckpoint::Gptq(g) = m {
                let _ = g.zero_format_mismatch(&layer.prefix);
            }
            if let Ok(w) = m.dequantize::<f32>(&layer.prefix, Parallelism::SERIAL) {
                assert_eq!(w.len(), numel, "{}", layer.prefix);
            }
        }
    }
    lora_adapter(&ck, opened.as_ref());
    if let Some(c) = &opened {
        moe_experts(c);
        for m in &models {
            moe_experts(m);
        }
    }
    uqff_model(&ck);
    accepted
}

/// The directory as a UQFF model (a shard named `*.uqff` is read as UQFF layers): every layer
/// it holds loads for rank 0 of 1 and 2 as a layer of its shape or a typed error.
fn uqff_model(dir: &std::path::Path) {
    use quant_kernels::tp::{ColumnParallelLinear, LayerSource, RowParallelLinear};
    let Ok(m) = quant_kernels::io::UqffModel::open(dir) else { return };
    let names: Vec<String> = m.layer_names().map(str::to_string).collect();
    for name in &names {
        let (out, inp) = m.layer_shape(name).expect("a UQFF layer has a shape");
        if out.saturating_mul(inp) > 1 << 20 {
            continue;
        }
        for world in [1, 2] {
            let opts = Default::default();
            if let Ok(Some(l)) = ColumnParallelLinear::load(&m, name, 0, world, &opts) {
                assert_eq!(l.local().out_features() * world, out, "{name}");
            }
            if let Ok(Some(l)) = RowParallelLinear::load(&m, name, 0, world, &opts) {
                assert_eq!(l.local().in_features() * world, inp, "{name}");
            }
        }
    }
    moe_experts(&m);
}

/// Every experts module the tensors suggest (`<p>.gate_up_proj` / `<p>.down_proj` stacks,
/// `<p>.<e>.<proj>` layers), loaded with the sizes their shapes suggest for one and two ranks
/// and run on one routed token: a layer of those sizes or a typed error, never a panic.
fn moe_experts(src: &impl quant_kernels::tp::LayerSource) {
    use quant_kernels::tp::{MoeDims, MoeExperts};
    let Some(ck) = src.checkpoint() else { return };
    let mut found: Vec<(String, MoeDims)> = Vec::new();
    for name in ck.tensor_names() {
        let shape = &ck.info(name).expect("a listed tensor has an entry").shape;
        if let Some(p) = name.strip_suffix(".gate_up_proj")
            && let [e, a, b] = shape[..]
        {
            found.push((p.to_string(), MoeDims { experts: e, hidden: a, intermediate: b / 2 }));
            found.push((p.to_string(), MoeDims { experts: e, hidden: b, intermediate: a / 2 }));
        }
        let mut parts = name.rsplitn(3, '.');
        let (Some(_), Some(proj), Some(rest)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if let Some((p, e)) = rest.rsplit_once('.')
            && let Ok(e) = e.parse::<usize>()
            && matches!(proj, "gate_proj" | "w1")
            && let Some((i, h)) = src.layer_shape(&format!("{p}.{e}.{proj}"))
        {
            found.push((p.to_string(), MoeDims { experts: e + 1, hidden: h, intermediate: i }));
        }
    }
    found.sort_by_key(|(p, d)| (p.clone(), d.experts, d.hidden, d.intermediate));
    found.dedup();
    for (prefix, dims) in found {
        let size = dims.experts.checked_mul(dims.hidden).and_then(|n| n.checked_mul(dims.intermediate));
        if size.is_none_or(|n| n > 1 << 18) || dims.hidden == 0 {
            continue;
        }
        for world in [1, 2] {
            let Ok(Some(m)) = MoeExperts::load(src, &prefix, dims, 0, world, &Default::default()) else {
                continue;
            };
            assert_eq!(m.dims(), dims, "{prefix}");
            assert_eq!(m.local_intermediate() * world, dims.intermediate, "{prefix}");
            let y = m.forward(&vec![0.5; dims.hidden], 1, &[0], &[1.0], 1, Parallelism::SERIAL);
            assert_eq!(y.map(|y| y.len()).ok(), Some(dims.hidden), "{prefix}");
        }
    }
}

/// The same directory read as a PEFT LoRA adapter (its `config.json` as `adapter_config.json`,
/// its `model.safetensors` as the weights), merged into the checkpoint's layers when both open:
/// typed errors, never a panic.
fn lora_adapter(dir: &std::path::Path, base: Option<&quant_kernels::io::Checkpoint>) {
    use quant_kernels::Error;
    use quant_kernels::io::LoraAdapter;
    use quant_kernels::tp::{LayerSource, LoadOptions, ReplicatedLinear};
    for (from, to) in
        [("config.json", "adapter_config.json"), ("model.safetensors", "adapter_model.safetensors")]
    {
        if std::fs::copy(dir.join(from), dir.join(to)).is_err() {
            return;
        }
    }
    let lora = match LoraAdapter::open(dir) {
        Ok(l) => l,
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::Lora(_)
                        | Error::Format(FormatError::Io { .. })
                        | Error::Format(FormatError::Json { .. })
                        | Error::Format(FormatError::Safetensors { .. })
                ),
                "{e}"
            );
            return;
        }
    };
    let Some(base) = base else { return };
    let _ = lora.check_against(|p| base.layer_shape(p));
    let opts = LoadOptions { lora: Some(&lora), ..Default::default() };
    for (module, m) in lora.modules() {
        if m.rank.saturating_mul(m.inp.saturating_add(m.out)) <= 1 << 20
            && m.out.saturating_mul(m.inp) <= 1 << 20
            && let Ok(Some(l)) = ReplicatedLinear::load(base, module, &opts)
        {
            assert_eq!(l.local().out_features() * l.local().in_features(), m.out * m.inp, "{module}");
        }
    }
}
