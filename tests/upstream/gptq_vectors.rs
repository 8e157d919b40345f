//! GPTQ dequantization against the outputs of GPTQModel 7.7 / auto-gptq 0.7.1.
//!
//! Fixtures: `tests/fixtures/gptq/gptq_*.safetensors`, unchanged copies of the project's upstream
//! vectors (`vectors/gptq/`, written by gen_gptq.py: auto-gptq's GPTQ + v1 packer, GPTQModel's
//! v1->v2 conversion and torch reference dequantization; see that folder's MANIFEST.md).

use crate::common;

use common::{T, fixture};
use half::{bf16, f16};
use quant_kernels::gptq::{self, GptqLayer, GptqLayout, ZeroFormat, ZeroFormatMismatch};
use quant_kernels::{Elem, FloatVec, Parallelism};
use safetensors::SafeTensors;

fn all_paths<S: Elem, O: Elem>(
    qw: &[i32],
    qz: &[i32],
    s: &[S],
    g_idx: Option<&[i32]>,
    l: &GptqLayout,
    f: ZeroFormat,
) -> Vec<O> {
    let n = l.k() * l.n();
    let mut naive = vec![O::default(); n];
    gptq::gptq_dequantize_reference_into(qw, s, qz, g_idx, f, l, &mut naive).unwrap();
    for par in [Parallelism::SERIAL, Parallelism::RAYON] {
        let fast: Vec<O> = gptq::gptq_dequantize(qw, s, qz, g_idx, f, l, par).unwrap();
        assert!(fast.iter().zip(&naive).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits()));
    }
    naive
}

/// Every case: from v1 `qzeros` and from `qzeros_v2`, through the checkpoint's `g_idx`, equal to
/// GPTQModel's `W_deq` (f32) and `W_deq_f16` (f16) bit for bit, on all three paths.
#[test]
fn every_case_matches_gptqmodel() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gptq");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 34);
    let (mut checked, mut sorted_checked) = (0, 0);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = fixture(&format!("gptq/{name}"));
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let num = |k: &str| meta[k].parse::<i64>().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let l = GptqLayout::new(num("K") as usize, num("N") as usize, num("bits") as u8, num("group_size"))
            .unwrap();
        let qw = T::get(&st, "qweight").i32s();
        let g_idx = T::get(&st, "g_idx").i32s();
        let scales = T::get(&st, "scales").f16s();
        let want32 = T::get(&st, "W_deq").f32s();
        let want16 = T::get(&st, "W_deq_f16").f16s();
        assert_eq!(T::get(&st, "qweight").shape, [l.qweight_shape().0, l.qweight_shape().1]);
        for (zeros, format) in [("qzeros", ZeroFormat::V1), ("qzeros_v2", ZeroFormat::V2)] {
            let qz = T::get(&st, zeros).i32s();
            let got: Vec<f32> = all_paths(&qw, &qz, &scales, Some(&g_idx), &l, format);
            let same = got.iter().zip(&want32).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name} from {zeros}: f32");
            let got: Vec<f16> = all_paths(&qw, &qz, &scales, Some(&g_idx), &l, format);
            assert!(
                got.iter().zip(&want16).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name} from {zeros}: f16"
            );
            let got: Vec<bf16> = all_paths(&qw, &qz, &scales, Some(&g_idx), &l, format);
            assert!(
                got.iter().zip(&want32).all(|(a, b)| *a == bf16::from_f32(*b)),
                "{name} from {zeros}: bf16"
            );
            if meta["desc_act"] == "true" {
                // Sorted by group (gptq::sort), the layer's rows are GPTQModel's rows in the
                // returned order, bit for bit.
                let layer = GptqLayer {
                    layout: l,
                    format,
                    qweight: qw.clone(),
                    qzeros: qz.clone(),
                    scales: FloatVec::F16(scales.clone()),
                    g_idx: Some(g_idx.clone()),
                    bias: None,
                };
                let (sorted, perm) = layer.sort_by_group().unwrap();
                let ws: Vec<f32> = sorted.dequantize_kn(Parallelism::SERIAL).unwrap();
                let n = l.n();
                for (k, &p) in perm.iter().enumerate() {
                    let row = &want32[p as usize * n..][..n];
                    assert!(
                        ws[k * n..][..n].iter().zip(row).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{name}: sorted row {k}"
                    );
                }
                sorted_checked += 1;
            }
            if meta["desc_act"] == "false" {
                // Without act-order, g_idx is k / group_size: None gives the same weights.
                let none: Vec<f32> = all_paths(&qw, &qz, &scales, None, &l, format);
                assert!(
                    none.iter().zip(&want32).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name}: g_idx None"
                );
            }
            checked += 1;
        }
        // v1 and v2 zero points agree after conversion.
        let v1 = gptq::zero_points(&T::get(&st, "qzeros").i32s(), &l, ZeroFormat::V1).unwrap();
        let v2 = gptq::zero_points(&T::get(&st, "qzeros_v2").i32s(), &l, ZeroFormat::V2).unwrap();
        assert_eq!(v1, v2, "{name}: zero points");
        // Symmetric layers: the stored zeros reveal a wrongly declared format.
        if meta["sym"] == "true" {
            let qz1 = T::get(&st, "qzeros").i32s();
            let qz2 = T::get(&st, "qzeros_v2").i32s();
            assert_eq!(gptq::check_zero_format(&qz1, &l, ZeroFormat::V1).unwrap(), None);
            assert_eq!(gptq::check_zero_format(&qz2, &l, ZeroFormat::V2).unwrap(), None);
            assert_eq!(
                gptq::check_zero_format(&qz2, &l, ZeroFormat::V1).unwrap(),
                Some(ZeroFormatMismatch { declared: ZeroFormat::V1, looks_like: ZeroFormat::V2 }),
                "{name}"
            );
            assert_eq!(
                gptq::check_zero_format(&qz1, &l, ZeroFormat::V2).unwrap(),
                Some(ZeroFormatMismatch { declared: ZeroFormat::V2, looks_like: ZeroFormat::V1 }),
                "{name}"
            );
        }
    }
    assert_eq!(checked, 68);
    assert_eq!(sorted_checked, 32, "act-order cases sorted");
}

/// The zero-point-0 edge (auto-gptq's v1 writer stored -1 and corrupted the word): we follow
/// GPTQModel (`W_deq`), which differs from auto-gptq's own reader (`W_deq_autogptq_f16`).
#[test]
fn zero_point_zero_edge_follows_gptqmodel() {
    for name in [
        "gptq_b4_asym_nodesc_g32_K64_N32_zeropoint0_edge.safetensors",
        "gptq_b2_asym_nodesc_g32_K64_N32_zeropoint0_edge.safetensors",
    ] {
        let bytes = fixture(&format!("gptq/{name}"));
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let bits = if name.contains("_b4_") { 4 } else { 2 };
        let l = GptqLayout::new(64, 32, bits, 32).unwrap();
        let got: Vec<f16> = gptq::gptq_dequantize(
            &T::get(&st, "qweight").i32s(),
            &T::get(&st, "scales").f16s(),
            &T::get(&st, "qzeros").i32s(),
            Some(&T::get(&st, "g_idx").i32s()),
            ZeroFormat::V1,
            &l,
            Parallelism::RAYON,
        )
        .unwrap();
        assert_eq!(got, T::get(&st, "W_deq_f16").f16s(), "{name}");
        assert_ne!(got, T::get(&st, "W_deq_autogptq_f16").f16s(), "{name}: auto-gptq's reader differs here");
    }
}
