//! GPTQ checkpoints: the two tiny checkpoints written by auto-gptq 0.7.1 (copies of the
//! project's `vectors/gptq/tiny-llama-*`, see that folder's MANIFEST.md) load and dequantize to
//! GPTQModel's weights (`expected.safetensors`), fused layers included; fusion repacks zero
//! points for every width; broken checkpoints are typed errors.

use crate::common;
use quant_kernels::error::{FormatError, KernelError};

use common::{Rng, gptq_layer_f32, layer};
use half::f16;
use quant_kernels::QuantScheme;
use quant_kernels::elem::FloatVec;
use quant_kernels::gptq::{
    self, GptqCheckpoint, GptqLayer, GptqLayout, ZeroFormat, concat_dequantized, fuse_columns, fuse_layers,
};
use quant_kernels::io::{Checkpoint, SafetensorsFile};
use quant_kernels::{Error, Parallelism};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn tiny(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gptq_checkpoints").join(name)
}

const TINY: [&str; 2] = ["tiny-llama-gptq-4bit", "tiny-llama-gptq-8bit-single"];

fn expected(name: &str) -> BTreeMap<String, Vec<f32>> {
    let f = SafetensorsFile::open(tiny(name).join("expected.safetensors")).unwrap();
    f.tensors().keys().map(|k| (k.clone(), f.read_as::<f32>(k).unwrap())).collect()
}

fn bits_eq(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// A scratch copy of a tiny checkpoint that a test may damage.
struct Scratch(PathBuf);

impl Scratch {
    fn of(name: &str, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qk-ckpt-{}-{tag}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(tiny(name)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
        Scratch(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    fn edit_json(&self, file: &str, f: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.path(file)).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(self.path(file), serde_json::to_vec(&v).unwrap()).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tiny_checkpoints_load_with_their_configs() {
    let ck = GptqCheckpoint::open(tiny(TINY[0])).unwrap();
    let c = ck.config();
    assert_eq!((c.bits, c.group_size, c.sym, c.desc_act, c.format), (4, 32, false, true, ZeroFormat::V1));
    let ck8 = GptqCheckpoint::open(tiny(TINY[1])).unwrap();
    let c = ck8.config();
    assert_eq!((c.bits, c.group_size, c.sym, c.desc_act, c.format), (8, 32, true, false, ZeroFormat::V1));
    for ck in [&ck, &ck8] {
        assert_eq!(ck.layers().len(), 14);
        let down = &ck.layers()["model.layers.1.mlp.down_proj"];
        assert_eq!((down.layout.k(), down.layout.n()), (128, 64));
        let k = &ck.layers()["model.layers.0.self_attn.k_proj"];
        assert_eq!((k.layout.k(), k.layout.n(), k.has_g_idx, k.bias), (64, 32, true, None));
        assert!(ck.is_quantized_part("model.layers.0.self_attn.k_proj.qzeros"));
        assert!(!ck.is_quantized_part("model.embed_tokens.weight"));
        assert_eq!(ck.checkpoint().tensor_names().count(), 14 * 4 + 7);
    }
    // Sharded: layer 1 lives in the second shard.
    let shard = ck.checkpoint().shard_of("model.layers.1.mlp.up_proj.qweight").unwrap();
    assert!(shard.ends_with("model-00002-of-00002.safetensors"));
}

/// Every layer of both checkpoints equals GPTQModel's W_deq bit for bit (f32), on the fast
/// path, the serial path and the reference; fused layers equal the expected fused tensors.
#[test]
fn tiny_checkpoints_match_gptqmodel_fused_included() {
    for name in TINY {
        let ck = GptqCheckpoint::open(tiny(name)).unwrap();
        let model = quant_kernels::io::QuantizedCheckpoint::open(tiny(name)).unwrap();
        crate::awq_fp8_checkpoints::assert_round_trips(&model);
        let want = expected(name);
        let mut layers = BTreeMap::new();
        for prefix in ck.layers().keys() {
            let l = ck.load(prefix).unwrap();
            let w = want.get(&format!("{prefix}.weight")).unwrap();
            for par in [Parallelism::SERIAL, Parallelism::RAYON] {
                assert!(bits_eq(&l.dequantize_kn::<f32>(par).unwrap(), w), "{name} {prefix}");
            }
            let FloatVec::F16(scales) = &l.scales else { panic!("{prefix}: scales not f16") };
            let mut naive = vec![0f32; w.len()];
            gptq::gptq_dequantize_reference_into(
                &l.qweight,
                scales,
                &l.qzeros,
                l.g_idx.as_deref(),
                l.format,
                &l.layout,
                &mut naive,
            )
            .unwrap();
            assert!(bits_eq(&naive, w), "{name} {prefix} reference");
            // The nn.Linear orientation is the transpose.
            let lin: Vec<f32> = l.dequantize(Parallelism::RAYON).unwrap();
            let (k, n) = (l.layout.k(), l.layout.n());
            assert!((0..k * n).all(|i| lin[(i % n) * k + i / n].to_bits() == w[i].to_bits()));
            assert_eq!(l.zero_format_mismatch().unwrap(), None);
            layers.insert(prefix.clone(), l);
        }
        let all = layers.clone();
        let report = fuse_layers(&mut layers).unwrap();
        assert_eq!(report.fused.len() + report.skipped.len(), 4, "{name}");
        for plan in report.fused.iter().chain(report.skipped.iter().map(|(p, _)| p)) {
            let w = &want[&format!("{}.weight", plan.fused)];
            let parts: Vec<&GptqLayer> = plan.parts.iter().map(|p| &all[p]).collect();
            assert!(
                bits_eq(&concat_dequantized::<f32>(&parts, Parallelism::RAYON).unwrap(), w),
                "{}",
                plan.fused
            );
            if report.fused.contains(plan) {
                let fused = layers[&plan.fused].dequantize_kn::<f32>(Parallelism::RAYON).unwrap();
                assert!(bits_eq(&fused, w), "{name} {} packed", plan.fused);
            }
        }
        if name.contains("4bit") {
            // Act-order: each projection has its own g_idx, so no packed fusion exists.
            assert_eq!(report.fused.len(), 0);
            assert!(
                report
                    .skipped
                    .iter()
                    .all(|(_, e)| *e == Error::Kernel(KernelError::Fuse { what: "g_idx", part: 1 }))
            );
        } else {
            assert_eq!(report.fused.len(), 4);
            assert_eq!(layers.len(), 14 - 6);
        }
    }
}

/// Fusing random layers of every width (3-bit zero points cross words) equals concatenating
/// their dequantized weights, with and without act-order and bias; mismatches are typed.
#[test]
fn fuse_columns_repacks_zero_points_for_every_width() {
    let mut rng = Rng(7);
    for bits in [2u8, 3, 4, 8] {
        for (k, group) in [(64usize, 32i64), (128, -1), (96, 32)] {
            for act_order in [false, true] {
                let widths: &[usize] = if bits == 3 { &[32, 64, 32] } else { &[32, 16, 48] };
                let mut shared_g_idx = None;
                let parts: Vec<GptqLayer> = widths
                    .iter()
                    .map(|&n| {
                        let l = GptqLayout::new(k, n, bits, group).unwrap();
                        let r = layer(&l, act_order, &mut rng);
                        let g_idx = shared_g_idx.get_or_insert_with(|| r.g_idx.clone()).clone();
                        GptqLayer {
                            layout: l,
                            format: if act_order { ZeroFormat::V2 } else { ZeroFormat::V1 },
                            qweight: r.qweight,
                            qzeros: r.qzeros,
                            scales: FloatVec::F16(r.scales.iter().map(|&s| f16::from_f32(s)).collect()),
                            g_idx: Some(g_idx),
                            bias: Some(FloatVec::F16((0..n).map(|i| f16::from_f32(i as f32)).collect())),
                        }
                    })
                    .collect();
                let refs: Vec<&GptqLayer> = parts.iter().collect();
                let fused = fuse_columns(&refs).unwrap();
                let n: usize = widths.iter().sum();
                assert_eq!((fused.layout.k(), fused.layout.n()), (k, n));
                let (zr, zc) = fused.layout.qzeros_shape();
                assert_eq!(fused.qzeros.len(), zr * zc);
                let got: Vec<f32> = fused.dequantize_kn(Parallelism::SERIAL).unwrap();
                let want: Vec<f32> = concat_dequantized(&refs, Parallelism::SERIAL).unwrap();
                assert!(bits_eq(&got, &want), "bits {bits} k {k} group {group} act {act_order}");
                let bias: Vec<f32> = widths.iter().flat_map(|&w| (0..w).map(|i| i as f32)).collect();
                assert_eq!(fused.bias.unwrap().to_f32(), bias);
                // Zero points are repacked, not reinterpreted: unpacking gives the parts' fields.
                let zs: Vec<Vec<u32>> = parts
                    .iter()
                    .map(|p| gptq::zero_points(&p.qzeros, &p.layout, p.format).unwrap())
                    .collect();
                let fz = gptq::zero_points(&fused.qzeros, &fused.layout, fused.format).unwrap();
                for g in 0..fused.layout.groups() {
                    let row: Vec<u32> = zs
                        .iter()
                        .zip(widths)
                        .flat_map(|(z, &w)| z[g * w..(g + 1) * w].iter().copied())
                        .collect();
                    assert_eq!(&fz[g * n..(g + 1) * n], &row[..]);
                }
            }
        }
    }
}

#[test]
fn fuse_mismatches_are_typed_errors() {
    let mut rng = Rng(11);
    let make = |k: usize, n: usize, bits: u8, act: bool, rng: &mut Rng| {
        gptq_layer_f32(GptqLayout::new(k, n, bits, 32).unwrap(), act, rng)
    };
    let a = make(64, 32, 4, false, &mut rng);
    let cases: Vec<(GptqLayer, &str)> = vec![
        (make(96, 32, 4, false, &mut rng), "K"),
        (make(64, 32, 8, false, &mut rng), "bits"),
        (make(64, 32, 4, true, &mut rng), "g_idx"),
        (GptqLayer { format: ZeroFormat::V2, ..make(64, 32, 4, false, &mut rng) }, "zero-point format"),
        (
            GptqLayer { scales: FloatVec::F16(vec![f16::ONE; 64]), ..make(64, 32, 4, false, &mut rng) },
            "scale dtype",
        ),
        (GptqLayer { bias: Some(FloatVec::F32(vec![0.0; 32])), ..make(64, 32, 4, false, &mut rng) }, "bias"),
    ];
    for (b, what) in cases {
        assert_eq!(fuse_columns(&[&a, &b]).unwrap_err(), Error::Kernel(KernelError::Fuse { what, part: 1 }));
    }
    assert!(fuse_columns(&[]).is_err());
    // g_idx None equals the default assignment.
    let mut c = make(64, 32, 4, false, &mut rng);
    c.g_idx = None;
    assert!(fuse_columns(&[&a, &c]).is_ok());
    // Lengths that do not match the layout are caught before slicing.
    let mut d = make(64, 32, 4, false, &mut rng);
    d.qweight.pop();
    assert!(matches!(
        fuse_columns(&[&a, &d]),
        Err(Error::Kernel(KernelError::LengthMismatch { what: "qweight", .. }))
    ));
}

#[test]
fn broken_shards_and_indexes_are_typed_errors() {
    let name = TINY[0];
    let index = "model.safetensors.index.json";
    let shard2 = "model-00002-of-00002.safetensors";

    // Truncated shard.
    let s = Scratch::of(name, "trunc");
    let bytes = std::fs::read(s.path(shard2)).unwrap();
    std::fs::write(s.path(shard2), &bytes[..bytes.len() - 100]).unwrap();
    assert!(matches!(Checkpoint::open(&s.0), Err(Error::Format(FormatError::Safetensors { .. }))));

    // Corrupt header (a brace turned into garbage).
    let s = Scratch::of(name, "corrupt");
    let mut bytes = std::fs::read(s.path(shard2)).unwrap();
    bytes[8] = b'#';
    std::fs::write(s.path(shard2), &bytes).unwrap();
    assert!(matches!(Checkpoint::open(&s.0), Err(Error::Format(FormatError::Safetensors { .. }))));

    // Missing shard.
    let s = Scratch::of(name, "missing");
    std::fs::remove_file(s.path(shard2)).unwrap();
    match Checkpoint::open(&s.0) {
        Err(Error::Format(FormatError::MissingShard { file, tensors })) => {
            assert_eq!((file.as_str(), tensors), (shard2, 32))
        }
        other => panic!("{other:?}"),
    }

    // Stale index: names a tensor its shard lacks.
    let s = Scratch::of(name, "stale");
    s.edit_json(index, |v| {
        v["weight_map"]["model.layers.2.mlp.up_proj.qweight"] = shard2.into();
    });
    assert_eq!(
        Checkpoint::open(&s.0).unwrap_err(),
        Error::Format(FormatError::MissingTensors(vec![format!(
            "model.layers.2.mlp.up_proj.qweight (in {shard2})"
        )]))
    );

    // Index entries leading outside the directory.
    for evil in ["../model-00002-of-00002.safetensors", "/etc/passwd", "", "a/../../x.safetensors"] {
        let s = Scratch::of(name, "outside");
        s.edit_json(index, |v| {
            v["weight_map"]["lm_head.weight"] = evil.into();
        });
        assert_eq!(
            Checkpoint::open(&s.0).unwrap_err(),
            Error::Format(FormatError::OutsideDirectory(evil.into())),
            "{evil}"
        );
    }
    #[cfg(unix)]
    {
        let s = Scratch::of(name, "symlink");
        let outside = s.0.with_extension("outside.safetensors");
        std::fs::copy(s.path(shard2), &outside).unwrap();
        std::fs::remove_file(s.path(shard2)).unwrap();
        std::os::unix::fs::symlink(&outside, s.path(shard2)).unwrap();
        assert_eq!(
            Checkpoint::open(&s.0).unwrap_err(),
            Error::Format(FormatError::OutsideDirectory(shard2.into()))
        );
        std::fs::remove_file(outside).unwrap();
    }

    // Index that is not an index.
    let s = Scratch::of(name, "badindex");
    std::fs::write(s.path(index), b"{\"weight_map\": 3}").unwrap();
    assert!(matches!(Checkpoint::open(&s.0), Err(Error::Format(FormatError::Json { .. }))));
    std::fs::write(s.path(index), b"{").unwrap();
    assert!(matches!(Checkpoint::open(&s.0), Err(Error::Format(FormatError::Json { .. }))));

    // No checkpoint at all.
    let s = Scratch::of(name, "empty");
    std::fs::remove_file(s.path(index)).unwrap();
    assert!(
        matches!(Checkpoint::open(&s.0), Err(Error::Format(FormatError::Io { source, .. })) if source.kind() == std::io::ErrorKind::NotFound)
    );
}

#[test]
fn config_problems_are_typed_errors() {
    let name = TINY[1];
    let config_field = |e: Error| match e {
        Error::Format(FormatError::Config { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    // quantize_config.json and config.json's quantization_config disagree.
    let s = Scratch::of(name, "contra");
    s.edit_json("config.json", |v| v["quantization_config"] = serde_json::json!({"bits": 4, "sym": true}));
    assert_eq!(config_field(GptqCheckpoint::open(&s.0).unwrap_err()), "bits");
    // ... agree: fine.
    s.edit_json("config.json", |v| v["quantization_config"] = serde_json::json!({"bits": 8, "sym": true}));
    assert!(GptqCheckpoint::open(&s.0).is_ok());

    // No config anywhere.
    let s = Scratch::of(name, "noconfig");
    std::fs::remove_file(s.path("quantize_config.json")).unwrap();
    assert_eq!(config_field(GptqCheckpoint::open(&s.0).unwrap_err()), "quantization_config");

    // A config that contradicts the data: 4 bits declared for 8-bit tensors.
    let s = Scratch::of(name, "wrongbits");
    s.edit_json("quantize_config.json", |v| v["bits"] = 4.into());
    assert!(matches!(GptqCheckpoint::open(&s.0), Err(Error::Format(FormatError::TensorShape { .. }))));
    // A group size that contradicts the scales.
    s.edit_json("quantize_config.json", |v| {
        v["bits"] = 8.into();
        v["group_size"] = 16.into();
    });
    match GptqCheckpoint::open(&s.0).unwrap_err() {
        Error::Format(FormatError::TensorShape { tensor, .. }) => {
            assert!(tensor.ends_with(".qzeros") || tensor.ends_with(".scales"))
        }
        other => panic!("{other:?}"),
    }
    // Another method.
    s.edit_json("quantize_config.json", |v| v["quant_method"] = "awq".into());
    assert_eq!(config_field(GptqCheckpoint::open(&s.0).unwrap_err()), "quant_method");

    // Unparseable config.json.
    let s = Scratch::of(name, "badjson");
    std::fs::write(s.path("config.json"), b"{not json").unwrap();
    assert!(matches!(Checkpoint::open(&s.0), Err(Error::Format(FormatError::Json { .. }))));
}

/// Rewrite the single-file checkpoint with `edit` applied to its tensor list.
fn rewrite(
    s: &Scratch,
    edit: impl FnOnce(&mut Vec<(String, quant_kernels::io::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let f = SafetensorsFile::open(s.path("model.safetensors")).unwrap();
    let mut tensors: Vec<_> =
        f.tensors().iter().map(|(n, i)| (n.clone(), i.dtype, i.shape.clone(), f.read(n).unwrap())).collect();
    edit(&mut tensors);
    let decl: Vec<_> = tensors.iter().map(|(n, d, s, _)| (n.clone(), *d, s.clone())).collect();
    let mut w =
        quant_kernels::io::SafetensorsWriter::create(s.path("model.safetensors"), &decl, &BTreeMap::new())
            .unwrap();
    for (n, _, _, b) in &tensors {
        w.write(n, b).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn layer_tensor_problems_are_typed_errors() {
    use quant_kernels::io::Dtype;
    let name = TINY[1];
    let q = "model.layers.0.self_attn.q_proj";

    let s = Scratch::of(name, "noscales");
    rewrite(&s, |t| t.retain(|(n, ..)| n != &format!("{q}.scales")));
    assert_eq!(
        GptqCheckpoint::open(&s.0).unwrap_err(),
        Error::Format(FormatError::MissingTensors(vec![format!("{q}.scales")]))
    );

    let s = Scratch::of(name, "gidx64");
    rewrite(&s, |t| {
        let g = t.iter_mut().find(|(n, ..)| n == &format!("{q}.g_idx")).unwrap();
        g.1 = Dtype::I64;
        g.2 = vec![32];
    });
    assert!(matches!(GptqCheckpoint::open(&s.0), Err(Error::Format(FormatError::TensorDtype { .. }))));

    let s = Scratch::of(name, "badscales");
    rewrite(&s, |t| {
        let g = t.iter_mut().find(|(n, ..)| n == &format!("{q}.scales")).unwrap();
        g.2 = vec![g.2[1], g.2[0]];
    });
    assert!(matches!(GptqCheckpoint::open(&s.0), Err(Error::Format(FormatError::TensorShape { .. }))));

    let s = Scratch::of(name, "gidxrange");
    rewrite(&s, |t| {
        let g = t.iter_mut().find(|(n, ..)| n == &format!("{q}.g_idx")).unwrap();
        g.3[..4].copy_from_slice(&99i32.to_le_bytes());
    });
    let ck = GptqCheckpoint::open(&s.0).unwrap();
    assert!(matches!(
        ck.load(q).unwrap().dequantize_kn::<f32>(Parallelism::RAYON),
        Err(Error::Kernel(KernelError::GroupIndex { .. }))
    ));

    // A bias is read and checked like the rest.
    let s = Scratch::of(name, "bias");
    rewrite(&s, |t| t.push((format!("{q}.bias"), Dtype::F16, vec![64], vec![0; 128])));
    let ck = GptqCheckpoint::open(&s.0).unwrap();
    assert_eq!(ck.layers()[q].bias, Some(Dtype::F16));
    assert_eq!(ck.load(q).unwrap().bias, Some(FloatVec::F16(vec![f16::ZERO; 64])));
    rewrite(&s, |t| t.iter_mut().find(|(n, ..)| n == &format!("{q}.bias")).unwrap().2 = vec![2, 32]);
    assert!(matches!(GptqCheckpoint::open(&s.0), Err(Error::Format(FormatError::TensorShape { .. }))));
}

/// A v2 checkpoint declared as v1 (the vLLM/GPTQModel bug class) is detected on load.
#[test]
fn zero_format_contradiction_is_detected() {
    let s = Scratch::of(TINY[1], "v2");
    s.edit_json("quantize_config.json", |v| v["checkpoint_format"] = "gptq_v2".into());
    let ck = GptqCheckpoint::open(&s.0).unwrap();
    let l = ck.load("model.layers.0.mlp.up_proj").unwrap();
    let m = l.zero_format_mismatch().unwrap().unwrap();
    assert_eq!((m.declared, m.looks_like), (ZeroFormat::V2, ZeroFormat::V1));
    // The same from the checkpoint, reading only qzeros; the asymmetric 4-bit one has none.
    assert_eq!(ck.zero_format_mismatch("model.layers.0.mlp.up_proj").unwrap(), Some(m));
    let asym = GptqCheckpoint::open(tiny(TINY[0])).unwrap();
    assert_eq!(asym.zero_format_mismatch("model.layers.0.mlp.up_proj").unwrap(), None);
}
