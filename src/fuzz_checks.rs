//! Bodies of the cargo-fuzz targets in `fuzz/`, kept in the library so a plain `cargo test`
//! replays the committed inputs in `fuzz/regressions/` (no libFuzzer needed). Not public API.

use crate::hqq::{self, Axis, HqqLayout, Packed, PackedWords};
use crate::{B1, B2, B3, B4, B8, Bits, Parallelism};
use half::f16;

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
                _ => Err(crate::Error::UnsupportedBits(*bits)),
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

fn check<P: crate::Packing>(
    words: &[P::Word],
    params: &[f16],
    layout: &HqqLayout,
    out: &mut [f32],
    reference: &mut [f32],
) -> crate::Result<()> {
    let fast = hqq::dequant_into::<P, f16, f32>(words, params, params, layout, out, Parallelism::Rayon);
    let naive = hqq::dequant_reference_into::<P, f16, f32>(words, params, params, layout, reference);
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
    match crate::io::safetensors::parse_header("fuzz", header, data.len() as u64) {
        Ok((tensors, _)) => {
            for info in tensors.values() {
                let end = info.offset + info.len as u64;
                assert!(end <= data.len() as u64 && info.offset >= 8 + n);
                assert_eq!(info.shape.iter().product::<usize>() * info.dtype.size(), info.len);
            }
            true
        }
        Err(e) => {
            assert!(matches!(e, crate::Error::Safetensors { .. }));
            false
        }
    }
}

/// A quantization config of arbitrary bytes: JSON that does not parse is skipped; any JSON
/// value must give a config or a typed [`crate::Error::Config`], never a panic; an accepted
/// config has a supported width and group size. Returns whether it was accepted.
pub fn gptq_config(data: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return false };
    match crate::gptq::GptqConfig::from_json(&value) {
        Ok(c) => {
            assert!(matches!(c.bits, 2 | 3 | 4 | 8) && (c.group_size == -1 || c.group_size > 0));
            true
        }
        Err(e) => {
            assert!(matches!(e, crate::Error::Config { .. }));
            false
        }
    }
}

/// UQFF bytes of either revision: the legacy blob reader, the legacy file reader and the 1.2.0
/// reader each return `Ok` or a typed error, never panic; an accepted layer validates, writes
/// back to the same bytes after the version word (the writer always writes 0.2.0) and
/// dequantizes. Returns whether any reader accepted it.
pub fn uqff(data: &[u8]) -> bool {
    use crate::io::uqff::{self, Extension};
    let mut accepted = false;
    if let Ok(layer) = uqff::read_legacy(data) {
        let written = uqff::write_legacy(&layer).expect("an accepted layer writes");
        assert_eq!(written[4..], data[4..]);
        assert!(layer.dequantize::<f32>(Parallelism::Serial).is_ok());
        accepted = true;
    }
    if let Ok(layers) = uqff::read_legacy_file(data) {
        accepted |= !layers.is_empty();
    }
    if let Ok(layers) = uqff::read_v1(data, Extension::Allow) {
        for (_, l) in &layers {
            assert!(l.validate().is_ok() && l.dequantize::<f32>(Parallelism::Serial).is_ok());
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
    use crate::hqq::{Axis, HqqConfig};
    use crate::io::uqff::{self, Extension, UqffHqqLayer};
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
    let Ok(q) = crate::hqq::quantize_hqq(&w, rows, cols, &config) else { return false };
    let dtype = [crate::DType::F32, crate::DType::F16, crate::DType::Bf16][(flags >> 3) as usize % 3];
    let bias = (flags & 0x40 != 0).then(|| crate::FloatVec::F32((0..rows).map(|i| i as f32 * 0.5).collect()));
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
