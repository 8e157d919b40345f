//! HQQ packing, unpacking and dequantization against the outputs of the `hqq` Python library.
//!
//! Fixtures: `tests/fixtures/hqq/{bitpack,quant}.safetensors`, copied unchanged from the
//! project's upstream vectors (`vectors/hqq/`, written by hqq 0.2.8.post1 on torch 2.15 CPU,
//! see that folder's MANIFEST.md and gen_hqq.py).

use crate::common;
use quant_kernels::error::KernelError;

use common::{T, fixture};
use half::{bf16, f16};
use quant_kernels::hqq::{self, Axis, HqqLayout, Packed, PackedWords};
use quant_kernels::{B1, B2, B3, B4, B8, Bits, Elem, Packing, Parallelism};
use safetensors::SafeTensors;

/// Every BitPack case: pack(codes) == hqq's packed tensor, unpack(packed) == codes, and hqq's
/// own unpack output equals the codes plus zero padding rows (3-bit).
#[test]
fn bitpack_matches_hqq() {
    let bytes = fixture("hqq/bitpack.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut cases: Vec<String> =
        st.names().iter().filter_map(|n| n.strip_suffix(".codes").map(str::to_owned)).collect();
    cases.sort();
    assert_eq!(cases.len(), 8, "{cases:?}");
    for case in cases {
        let bits: u8 = case[1..case.find('_').unwrap()].parse().unwrap();
        let codes = T::get(&st, &format!("{case}.codes"));
        let (rows, cols) = (codes.shape[0], codes.shape[1]);
        let codes = codes.u8s();
        let want = T::get(&st, &format!("{case}.packed"));
        let packed = hqq::pack_hqq(&codes, rows, cols, bits).unwrap();
        match &packed.words {
            PackedWords::U8(w) => assert_eq!(w, &want.u8s(), "{case}"),
            PackedWords::I32(w) => assert_eq!(w, &want.i32s(), "{case}"),
        }
        assert_eq!(packed.packed_rows(), want.shape[0], "{case}");
        assert_eq!(hqq::unpack_hqq(&packed).unwrap(), codes, "{case}");
        let unpacked = T::get(&st, &format!("{case}.unpacked")).u8s();
        assert_eq!(&unpacked[..rows * cols], &codes[..], "{case}");
        assert!(unpacked[rows * cols..].iter().all(|&c| c == 0), "{case}: padding");
    }
}

struct Case {
    name: String,
    bits: u8,
    axis: Axis,
    group: Option<usize>,
    channel_wise: bool,
    bitpack: bool,
    view_as_float: bool,
    deq_dtype: String,
}

fn cases() -> Vec<Case> {
    let json = SafeTensors::read_metadata(&fixture("hqq/quant.safetensors")).unwrap().1;
    let cases: serde_json::Value = serde_json::from_str(&json.metadata().as_ref().unwrap()["cases"]).unwrap();
    let mut out: Vec<Case> = cases
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, c)| Case {
            name: name.clone(),
            bits: c["nbits"].as_u64().unwrap() as u8,
            axis: Axis::try_from(c["axis"].as_u64().unwrap() as u8).unwrap(),
            group: c["group_size"].as_u64().map(|g| g as usize),
            channel_wise: c["channel_wise"].as_bool().unwrap(),
            bitpack: c["bitpack"].as_bool().unwrap(),
            view_as_float: c["view_as_float"].as_bool().unwrap(),
            deq_dtype: c["deq_dtype"].as_str().unwrap().to_owned(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// hqq's W_q as packed words (a `view_as_float` tensor is the same bytes viewed as floats).
fn packed_words(t: &T, bits: u8) -> PackedWords {
    if bits == 3 { PackedWords::I32(t.i32s()) } else { PackedWords::U8(t.bytes.clone()) }
}

fn dequant_all_paths<S: Elem, O: Elem>(
    packed: &Packed,
    scales: &[S],
    zeros: &[S],
    layout: &HqqLayout,
) -> Vec<O> {
    let n = layout.numel();
    let (mut serial, mut threaded, mut naive) =
        (vec![O::default(); n], vec![O::default(); n], vec![O::default(); n]);
    packed.dequantize_into(scales, zeros, layout, &mut serial, Parallelism::SERIAL).unwrap();
    packed.dequantize_into(scales, zeros, layout, &mut threaded, Parallelism::RAYON).unwrap();
    match &packed.words {
        PackedWords::U8(w) => match packed.bits {
            Bits::B8 => reference::<B8, S, O>(w, scales, zeros, layout, &mut naive),
            Bits::B4 => reference::<B4, S, O>(w, scales, zeros, layout, &mut naive),
            Bits::B2 => reference::<B2, S, O>(w, scales, zeros, layout, &mut naive),
            Bits::B1 => reference::<B1, S, O>(w, scales, zeros, layout, &mut naive),
            Bits::B3 => unreachable!(),
        },
        PackedWords::I32(w) => reference::<B3, S, O>(w, scales, zeros, layout, &mut naive),
    }
    assert_eq!(serial, naive);
    assert_eq!(threaded, naive);
    naive
}

fn reference<P: Packing, S: Elem, O: Elem>(w: &[P::Word], s: &[S], z: &[S], l: &HqqLayout, out: &mut [O]) {
    hqq::dequantize_reference_into::<P, S, O>(w, s, z, l, out).unwrap();
}

/// Every `Quantizer.quantize` case: our packing of hqq's codes equals hqq's W_q, our unpacking of
/// W_q equals the codes, and dequantization (all three paths) reproduces hqq's outputs:
///
/// * `deq` (scale/zero f32, computed by hqq in f32): **bit-exact** in f32, and bf16/f16 outputs
///   are exactly that value rounded once.
/// * `deq_f16` (HQQLinear-style, scale/zero f16, every op rounded to f16 by hqq): hqq rounds
///   `q - zero` to f16 before multiplying, we round once at the end, so we require <= 1 ulp of
///   f16 and check that hqq's value is exactly the double-rounded one.
///
/// Tensor-wise cases (`channel_wise=False`, one 0-dim scale) are checked for packing only: that
/// grouping is produced by the quantizer, not by the grouped dequant kernels.
#[test]
fn quantize_cases_match_hqq() {
    let bytes = fixture("hqq/quant.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let cases = cases();
    assert_eq!(cases.len(), 24);
    let (mut dequant_checked, mut f16_off_by_one, mut f16_total) = (0, 0, 0);
    for c in &cases {
        let name = &c.name;
        let shape = T::get(&st, &format!("{name}.meta_shape")).i64s();
        let (rows, cols) = (shape[0] as usize, shape[1] as usize);
        let codes_t = T::get(&st, &format!("{name}.codes"));
        let (cr, cc) = (codes_t.shape[0], codes_t.shape[1]);
        let codes = codes_t.u8s();
        let packed = hqq::pack_hqq(&codes, cr, cc, c.bits).unwrap();
        let wq = T::get(&st, &format!("{name}.W_q"));
        if c.bitpack {
            assert_eq!(packed.words, packed_words(&wq, c.bits), "{name}: pack");
            assert_eq!(packed.packed_rows(), wq.shape[0], "{name}");
            let theirs = Packed { bits: packed.bits, rows: cr, cols: cc, words: packed_words(&wq, c.bits) };
            assert_eq!(hqq::unpack_hqq(&theirs).unwrap(), codes, "{name}: unpack");
            if c.view_as_float {
                assert_eq!(wq.dtype, safetensors::Dtype::F16, "{name}");
            }
        } else {
            let float_codes: Vec<u8> = wq.f32s().iter().map(|&x| x as u8).collect();
            assert_eq!(float_codes, codes, "{name}: bitpack=False codes");
        }
        if !c.channel_wise {
            continue;
        }
        let g = c.group.unwrap_or(match c.axis {
            Axis::Zero => rows,
            Axis::One => cols,
        });
        let layout = HqqLayout::new(rows, cols, g, c.axis).unwrap();
        assert_eq!(layout.code_shape(), (cr, cc), "{name}: code shape");

        // f32 scale/zero -> f32: bit-exact.
        assert_eq!(c.deq_dtype, "torch.float32", "{name}");
        let (s32, z32) =
            (T::get(&st, &format!("{name}.scale")).f32s(), T::get(&st, &format!("{name}.zero")).f32s());
        let want = T::get(&st, &format!("{name}.deq")).f32s();
        let got: Vec<f32> = dequant_all_paths(&packed, &s32, &z32, &layout);
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{name}: deq"
        );
        let got: Vec<bf16> = dequant_all_paths(&packed, &s32, &z32, &layout);
        assert!(got.iter().zip(&want).all(|(g, w)| *g == bf16::from_f32(*w)), "{name}: bf16");
        let got: Vec<f16> = dequant_all_paths(&packed, &s32, &z32, &layout);
        assert!(got.iter().zip(&want).all(|(g, w)| *g == f16::from_f32(*w)), "{name}: f16");

        // f16 scale/zero -> f16 (HQQLinear): <= 1 ulp; hqq's value is the double rounding.
        let (s16, z16) = (
            T::get(&st, &format!("{name}.scale_f16")).f16s(),
            T::get(&st, &format!("{name}.zero_f16")).f16s(),
        );
        assert!(s16.iter().zip(&s32).all(|(h, f)| *h == f16::from_f32(*f)), "{name}: scale_f16");
        let want16 = T::get(&st, &format!("{name}.deq_f16")).f16s();
        let got16: Vec<f16> = dequant_all_paths(&packed, &s16, &z16, &layout);
        for (i, (g, w)) in got16.iter().zip(&want16).enumerate() {
            let ulps = (g.to_bits() as i32 - w.to_bits() as i32).abs();
            assert!(ulps <= 1 || (g.to_f32() == 0.0 && w.to_f32() == 0.0), "{name}[{i}]: {g} vs {w}");
            f16_off_by_one += (ulps == 1) as usize;
            // hqq: h(h(q - z16) * s16), with q and the group index recomputed from our unpack.
            let (r, col) = (i / cc, i % cc);
            let grp = if c.axis == Axis::Zero { col } else { r };
            let q = codes[i] as f32;
            let twice = f16::from_f32(f16::from_f32(q - z16[grp].to_f32()).to_f32() * s16[grp].to_f32());
            assert_eq!(twice.to_bits(), w.to_bits(), "{name}[{i}]: hqq's f16 rounding");
        }
        f16_total += got16.len();
        dequant_checked += 1;
    }
    assert_eq!(dequant_checked, 22);
    eprintln!("deq_f16: {f16_off_by_one} of {f16_total} weights differ from hqq by 1 ulp (double rounding)");
}

/// Row counts the width cannot pack give a typed error (hqq raises; mistral.rs truncates).
#[test]
fn unpackable_row_counts_are_errors() {
    for (bits, rows) in [(4u8, 3usize), (2, 6), (1, 12), (1, 1)] {
        let codes = vec![0u8; rows * 5];
        assert!(matches!(
            hqq::pack_hqq(&codes, rows, 5, bits),
            Err(quant_kernels::Error::Kernel(KernelError::PackRows { .. }))
        ));
    }
    assert!(hqq::pack_hqq(&[8], 1, 1, 3).is_err(), "code 8 does not fit in 3 bits");
    assert!(hqq::pack_hqq(&[0; 4], 2, 2, 5).is_err());
}
