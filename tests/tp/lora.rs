//! LoRA merged on load ([`LoadOptions::lora`]) against peft's `merge_and_unload` on the
//! fixtures of `scripts/gen_lora_fixtures.py` (plain, rsLoRA with rank/alpha patterns and an
//! f16 adapter, GPT-2 `Conv1D` with `fan_in_fan_out`): merged weights equal peft's to the
//! rounding of an `r`-term `f32` sum, ranks equal the merged whole split bit for bit, load-time
//! quantization after the merge equals quantizing the merged layer, and bad adapters are typed
//! errors.

use crate::common::{CheckpointDir, RawTensor};
use quant_kernels::error::LoraError;
use quant_kernels::io::lora::LoraAdapter;
use quant_kernels::io::safetensors::to_le_bytes;
use quant_kernels::io::{Checkpoint, Dtype, SafetensorsFile};
use quant_kernels::tp::{
    ColumnParallelLinear, LayerSource, LoadOptions, LoadedLayer, ReplicatedLinear, RowParallelLinear, Shard,
};
use quant_kernels::{Error, FloatVec, Parallelism, QuantMethod, QuantWeight};
use std::path::PathBuf;

const CASES: [&str; 3] = ["plain", "rslora", "fan_in_fan_out"];
const SERIAL: Parallelism = Parallelism::SERIAL;

fn case(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora").join(name)
}

fn open(name: &str) -> (Checkpoint, LoraAdapter, SafetensorsFile) {
    let dir = case(name);
    let ck = Checkpoint::open(dir.join("base")).unwrap();
    let lora = LoraAdapter::open(dir.join("adapter")).unwrap();
    let merged = SafetensorsFile::open(dir.join("merged.safetensors")).unwrap();
    (ck, lora, merged)
}

fn adapter_f32(lora: &LoraAdapter, name: &str) -> Vec<f32> {
    let f = SafetensorsFile::open(lora.dir().join("adapter_model.safetensors")).unwrap();
    match f.info(name).unwrap().dtype {
        Dtype::F16 => f.read_as::<half::f16>(name).unwrap().iter().map(|x| x.to_f32()).collect(),
        _ => f.read_as::<f32>(name).unwrap(),
    }
}

fn values(l: &quant_kernels::QuantLinear) -> Vec<f32> {
    l.dequantize(SERIAL).unwrap()
}

fn layers(ck: &Checkpoint) -> Vec<String> {
    ck.tensor_names().filter_map(|n| n.strip_suffix(".weight")).map(str::to_string).collect()
}

#[test]
fn merged_layers_equal_peft_merge_and_unload() {
    for name in CASES {
        let (ck, lora, merged) = open(name);
        lora.check_against(|p| ck.layer_shape(p)).unwrap();
        let fan = lora.config().fan_in_fan_out;
        let opts = LoadOptions { lora: Some(&lora), ..Default::default() };
        let (mut adapted, mut exact, mut total) = (0, 0, 0);
        for prefix in layers(&ck) {
            let want = merged.read_as::<f32>(&format!("{prefix}.weight")).unwrap();
            let (rows, cols) = ck.layer_shape(&prefix).unwrap();
            let mut got = ck.read_floats(&format!("{prefix}.weight")).unwrap().to_f32();
            if lora.module(&prefix).is_some() {
                lora.merge_region(&prefix, (rows, cols), &mut got, 0..rows, 0..cols, SERIAL).unwrap();
            }
            if !fan {
                // The loader gives the same layer, bias untouched (a Conv1D base, `[in, out]`
                // with an `[out]` bias, is no `nn.Linear` layer to load).
                let ours = ReplicatedLinear::load(&ck, &prefix, &opts).unwrap().unwrap();
                assert_eq!(values(ours.local()), got, "{name} {prefix}");
                let bias = ck
                    .info(&format!("{prefix}.bias"))
                    .map(|_| ck.read_floats(&format!("{prefix}.bias")).unwrap());
                assert_eq!(
                    ours.local().bias().map(<[f32]>::to_vec),
                    bias.map(|b| b.to_f32()),
                    "{name} {prefix}: bias"
                );
            }
            let Some(m) = lora.module(&prefix).copied() else {
                // Not adapted: the base, to the bit.
                assert_eq!(got, want, "{name} {prefix}: peft changed an unadapted layer?");
                continue;
            };
            adapted += 1;
            let a = adapter_f32(&lora, &format!("base_model.model.{prefix}.lora_A.weight"));
            let b = adapter_f32(&lora, &format!("base_model.model.{prefix}.lora_B.weight"));
            let (r, s) = (m.rank, m.scale);
            for row in 0..rows {
                for col in 0..cols {
                    let (o, i) = if fan { (col, row) } else { (row, col) };
                    // peft sums the r products in f32 in its own order: each side is within
                    // (r + 2) roundings of the sum of magnitudes, plus the last add's half ulp.
                    let mag: f64 =
                        (0..r).map(|k| (b[o * r + k] as f64 * a[k * m.inp + i] as f64).abs()).sum();
                    let (x, y) = (got[row * cols + col], want[row * cols + col]);
                    let bound = s * mag * (r as f64 + 2.0) * f64::from(f32::EPSILON) / 2.0
                        + f64::from(y.abs()) * f64::from(f32::EPSILON);
                    assert!(
                        (x as f64 - y as f64).abs() <= bound,
                        "{name} {prefix} [{row}, {col}]: ours {x}, peft {y}, bound {bound}"
                    );
                    exact += usize::from(x == y);
                    total += 1;
                }
            }
        }
        assert!(adapted >= 2, "{name}: {adapted} adapted layers");
        eprintln!("{name}: {exact} of {total} merged elements bit-equal to peft's");
    }
}

#[test]
fn rank_loads_equal_the_merged_whole_split() {
    for name in ["plain", "rslora"] {
        let (ck, lora, _) = open(name);
        let opts = LoadOptions { lora: Some(&lora), ..Default::default() };
        for prefix in lora.modules().keys() {
            let whole = ReplicatedLinear::load(&ck, prefix, &opts).unwrap().unwrap();
            let (rows, cols) = ck.layer_shape(prefix).unwrap();
            let w = QuantWeight::dense(rows, cols, values(whole.local()));
            let bias = whole.local().bias().map(|b| FloatVec::F32(b.to_vec()));
            let weight_bytes = (rows * cols * 4) as u64;
            for world in 1..=4 {
                for rank in 0..world {
                    let before = ck.bytes_read();
                    let col = ColumnParallelLinear::load(&ck, prefix, rank, world, &opts).unwrap().unwrap();
                    let read = ck.bytes_read() - before;
                    let expect = ColumnParallelLinear::new(&w, bias.as_ref(), rank, world).unwrap();
                    assert_eq!(
                        values(col.local()),
                        values(expect.local()),
                        "{name} {prefix} column {rank}/{world}"
                    );
                    assert_eq!(col.local().bias(), expect.local().bias());
                    assert!(
                        read <= weight_bytes / world as u64 + 4 * rows as u64,
                        "{name} {prefix}: read {read}"
                    );
                    let row = RowParallelLinear::load(&ck, prefix, rank, world, &opts).unwrap().unwrap();
                    let expect = RowParallelLinear::new(&w, bias.as_ref(), rank, world).unwrap();
                    assert_eq!(
                        values(row.local()),
                        values(expect.local()),
                        "{name} {prefix} row {rank}/{world}"
                    );
                }
            }
        }
    }
}

#[test]
fn fused_loads_merge_each_part() {
    // q_proj of `plain` read as three fused parts of 8 rows: each rank's stack equals the
    // merged whole's parts split and stacked.
    let (ck, lora, _) = open("plain");
    let opts = LoadOptions { lora: Some(&lora), ..Default::default() };
    let prefix = "model.layers.0.self_attn.q_proj";
    let whole = values(ReplicatedLinear::load(&ck, prefix, &opts).unwrap().unwrap().local());
    for world in [1, 2, 4] {
        for rank in 0..world {
            let l = ColumnParallelLinear::load_merged(&ck, prefix, &[8, 8, 8], None, rank, world, &opts)
                .unwrap()
                .unwrap();
            let per = 8 / world;
            let want: Vec<f32> = (0..3)
                .flat_map(|p| whole[(p * 8 + rank * per) * 24..(p * 8 + (rank + 1) * per) * 24].to_vec())
                .collect();
            assert_eq!(values(l.local()), want, "rank {rank}/{world}");
        }
    }
}

#[test]
fn isq_after_merge_equals_quantizing_the_merged_layer() {
    let (ck, lora, _) = open("rslora");
    let methods =
        [QuantMethod::Int8Symmetric { per_channel: true }, QuantMethod::Int4Asymmetric { group: 8 }];
    for method in methods {
        let opts = LoadOptions { lora: Some(&lora), ..Default::default() };
        let isq = LoadOptions { isq: Some(method), ..opts };
        for prefix in lora.modules().keys() {
            let merged = values(ReplicatedLinear::load(&ck, prefix, &opts).unwrap().unwrap().local());
            let (rows, cols) = ck.layer_shape(prefix).unwrap();
            let direct = method.quantize(&merged, rows, cols, None, SERIAL).unwrap();
            let loaded = ReplicatedLinear::load(&ck, prefix, &isq).unwrap().unwrap();
            assert_eq!(
                values(loaded.local()),
                direct.dequantize::<f32>(SERIAL).unwrap(),
                "{method} {prefix}"
            );
            // A rank's share: the merged layer cut, then quantized.
            let share = ColumnParallelLinear::load(&ck, prefix, 1, 2, &isq).unwrap().unwrap();
            let cut = QuantWeight::dense(rows, cols, merged.clone())
                .shard(&Shard::Simple { dim: 0, rank: 1, world_size: 2 })
                .unwrap()
                .dequantize::<f32>(SERIAL)
                .unwrap();
            let q = method.quantize(&cut, rows / 2, cols, None, SERIAL).unwrap();
            assert_eq!(
                values(share.local()),
                q.dequantize::<f32>(SERIAL).unwrap(),
                "{method} {prefix} share"
            );
        }
    }
}

/// A source whose layers are stored int8 (the checkpoint's dense layers quantized).
struct Int8Source(Checkpoint);

impl Int8Source {
    fn q((w, b): LoadedLayer) -> quant_kernels::Result<LoadedLayer> {
        let (rows, cols) = w.shape();
        let m = QuantMethod::Int8Symmetric { per_channel: true };
        Ok((m.quantize(&w.dequantize::<f32>(SERIAL)?, rows, cols, None, SERIAL)?, b))
    }
}

impl LayerSource for Int8Source {
    fn layer_shape(&self, prefix: &str) -> Option<(usize, usize)> {
        self.0.layer_shape(prefix)
    }
    fn load_layer(&self, prefix: &str) -> quant_kernels::Result<LoadedLayer> {
        Self::q(self.0.load_layer(prefix)?)
    }
    fn load_layer_shard(&self, prefix: &str, shard: &Shard) -> quant_kernels::Result<LoadedLayer> {
        let (w, b) = self.load_layer(prefix)?;
        let b = match (b, shard.dim()) {
            (Some(b), 0) => Some(FloatVec::F32(b.to_f32()[shard.range(w.shape().0)?].to_vec())),
            (b, _) => b,
        };
        Ok((w.shard(shard)?, b))
    }
}

#[test]
fn quantized_bases_merge_only_when_asked() {
    let (ck, lora, _) = open("plain");
    let src = Int8Source(ck);
    let prefix = "model.layers.0.self_attn.v_proj";
    let opts = LoadOptions { lora: Some(&lora), ..Default::default() };
    let err = ReplicatedLinear::load(&src, prefix, &opts).unwrap_err();
    assert!(
        matches!(&err, Error::Lora(LoraError::QuantizedBase { module, scheme: "int8" }) if module == prefix),
        "{err}"
    );
    // Asked: dequantize, merge, quantize again with the layer's own method.
    let requant = LoadOptions { lora_requantize: true, ..opts };
    let got = ReplicatedLinear::load(&src, prefix, &requant).unwrap().unwrap();
    assert_eq!(got.local().scheme(), "int8");
    let (rows, cols) = src.layer_shape(prefix).unwrap();
    let mut w = src.load_layer(prefix).unwrap().0.dequantize::<f32>(SERIAL).unwrap();
    lora.merge_region(prefix, (rows, cols), &mut w, 0..rows, 0..cols, SERIAL).unwrap();
    let want =
        QuantMethod::Int8Symmetric { per_channel: true }.quantize(&w, rows, cols, None, SERIAL).unwrap();
    assert_eq!(values(got.local()), want.dequantize::<f32>(SERIAL).unwrap());
    // Unadapted layers load as stored.
    assert!(ReplicatedLinear::load(&src, "model.layers.0.self_attn.k_proj", &opts).is_ok());
}

/// An adapter directory in the temp dir from a config and tensors.
fn adapter_dir(tag: &str, config: serde_json::Value, tensors: &[RawTensor]) -> CheckpointDir {
    let d = CheckpointDir::new(&format!("lora-{tag}"), &serde_json::json!({}), tensors);
    std::fs::rename(d.0.join("model.safetensors"), d.0.join("adapter_model.safetensors")).unwrap();
    std::fs::write(d.0.join("adapter_config.json"), config.to_string()).unwrap();
    d
}

fn t(name: &str, shape: &[usize]) -> RawTensor {
    let n: usize = shape.iter().product();
    (format!("base_model.model.{name}"), Dtype::F32, shape.to_vec(), to_le_bytes(&vec![0.5f32; n]))
}

/// A bad adapter: tag, config, tensors, and the error it must give.
type BadCase = (&'static str, serde_json::Value, Vec<RawTensor>, fn(&Error) -> bool);

#[test]
fn bad_adapters_are_typed_errors() {
    let cfg = serde_json::json!({"r": 2, "lora_alpha": 4, "target_modules": ["q"]});
    let good = [t("m.q.lora_A.weight", &[2, 6]), t("m.q.lora_B.weight", &[4, 2])];
    let ok = adapter_dir("ok", cfg.clone(), &good);
    let lora = LoraAdapter::open(&ok.0).unwrap();
    assert_eq!(lora.stored_shape("m.q"), Some((4, 6)));
    // The base has no such module, or one of another shape.
    let err = lora.check_against(|_| None).unwrap_err();
    assert_eq!(err, Error::Lora(LoraError::UnknownModule { module: "m.q".into() }));
    let err = lora.check_against(|_| Some((4, 5))).unwrap_err();
    assert!(
        matches!(&err, Error::Lora(LoraError::Shape { tensor, .. }) if tensor.ends_with("m.q.lora_A.weight")),
        "{err}"
    );
    let err = lora.check_against(|_| Some((3, 6))).unwrap_err();
    assert!(
        matches!(&err, Error::Lora(LoraError::Shape { tensor, .. }) if tensor.ends_with("m.q.lora_B.weight")),
        "{err}"
    );
    let mut w = vec![0f32; 4];
    assert!(lora.merge_region("m.q", (4, 6), &mut w, 0..4, 5..7, SERIAL).is_err()); // past the columns
    assert!(lora.merge_region("m.q", (4, 6), &mut w, 0..2, 0..3, SERIAL).is_err()); // wrong length

    let cases: Vec<BadCase> = vec![
        ("missing-b", cfg.clone(), vec![good[0].clone()], |e| {
            matches!(e, Error::Lora(LoraError::MissingTensor { .. }))
        }),
        ("rank", cfg.clone(), vec![t("m.q.lora_A.weight", &[3, 6]), t("m.q.lora_B.weight", &[4, 3])], |e| {
            matches!(e, Error::Lora(LoraError::Shape { .. }))
        }),
        ("embedding", cfg.clone(), vec![t("m.e.lora_embedding_A", &[2, 6])], |e| {
            matches!(e, Error::Lora(LoraError::UnexpectedTensor { .. }))
        }),
        ("lora-bias", cfg.clone(), [good.to_vec(), vec![t("m.q.lora_B.bias", &[4])]].concat(), |e| {
            matches!(e, Error::Lora(LoraError::UnexpectedTensor { .. }))
        }),
        (
            "not-targeted",
            serde_json::json!({"r": 2, "lora_alpha": 4, "target_modules": ["k"]}),
            good.to_vec(),
            |e| matches!(e, Error::Lora(LoraError::NotTargeted { .. })),
        ),
        (
            "dora",
            serde_json::json!({"r": 2, "lora_alpha": 4, "use_dora": true}),
            good.to_vec(),
            |e| matches!(e, Error::Lora(LoraError::Config { field, .. }) if field == "use_dora"),
        ),
        (
            "regex",
            serde_json::json!({"r": 2, "lora_alpha": 4, "rank_pattern": {".*q": 2}}),
            good.to_vec(),
            |e| matches!(e, Error::Lora(LoraError::Config { .. })),
        ),
        (
            "no-r",
            serde_json::json!({"lora_alpha": 4}),
            good.to_vec(),
            |e| matches!(e, Error::Lora(LoraError::Config { field, .. }) if field == "r"),
        ),
        (
            "zero-r",
            serde_json::json!({"r": 0, "lora_alpha": 4}),
            good.to_vec(),
            |e| matches!(e, Error::Lora(LoraError::Config { field, .. }) if field == "r"),
        ),
    ];
    for (tag, config, tensors, check) in cases {
        let d = adapter_dir(tag, config, &tensors);
        let err = LoraAdapter::open(&d.0).unwrap_err();
        assert!(check(&err), "{tag}: {err}");
    }
}
