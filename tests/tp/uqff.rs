//! HQQ layers from mistral.rs UQFF files beside a dense checkpoint ([`UqffModel`]) loaded by
//! name for one rank: equal to the parallel layers' `new` on the whole layer (bit for bit, or
//! the same error where HQQ's grouping cannot be cut), for 1.2.0 and 0.2.0 files; the dense
//! rest comes from the checkpoint; names that clash or are missing are typed errors.

use crate::common::{CheckpointDir, Rng, fixture};
use quant_kernels::error::FormatError;
use quant_kernels::hqq::{Axis, HqqConfig};
use quant_kernels::io::safetensors::to_le_bytes;
use quant_kernels::io::uqff::{
    Extension, UqffHqqLayer, read_legacy, read_legacy_file, read_v1, write_legacy_file, write_v1,
};
use quant_kernels::io::{Dtype, SafetensorsFile, UqffModel};
use quant_kernels::tp::{
    ColumnParallelLinear, ExpertsLayout, LayerSource, LoadOptions, MoeDims, MoeExperts, RowParallelLinear,
};
use quant_kernels::{Error, FloatType, FloatVec, Parallelism, QuantMethod, QuantWeight};

const DOWN: &str = "model.layers.0.mlp.down_proj";
const SERIAL: Parallelism = Parallelism::SERIAL;

fn bits(l: &quant_kernels::QuantLinear) -> Vec<u32> {
    l.dequantize(SERIAL).unwrap().iter().map(|x| x.to_bits()).collect()
}

/// `prefix` loaded for every rank of worlds 1-4 equals `new` on `whole`, or fails the same.
fn assert_rank_loads(m: &UqffModel, prefix: &str, whole: &QuantWeight, bias: Option<&FloatVec>) {
    let opts = LoadOptions::default();
    let mut loaded = 0;
    for world in 1..=4 {
        for rank in 0..world {
            let what = format!("{prefix} {rank}/{world}");
            match (
                ColumnParallelLinear::load(m, prefix, rank, world, &opts),
                ColumnParallelLinear::new(whole, bias, rank, world),
            ) {
                (Ok(Some(a)), Ok(b)) => {
                    assert_eq!(bits(a.local()), bits(b.local()), "{what} column");
                    assert_eq!(a.local().bias(), b.local().bias(), "{what} column bias");
                    loaded += 1;
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{what} column"),
                (a, b) => panic!("{what} column: {a:?} vs {b:?}"),
            }
            match (
                RowParallelLinear::load(m, prefix, rank, world, &opts),
                RowParallelLinear::new(whole, bias, rank, world),
            ) {
                (Ok(Some(a)), Ok(b)) => {
                    assert_eq!(bits(a.local()), bits(b.local()), "{what} row");
                    let x = vec![0.25f32; a.local().in_features()];
                    if world == 1 {
                        let c = quant_kernels::tp::SingleComm;
                        assert_eq!(
                            a.forward(&c, &x, 1, SERIAL).unwrap(),
                            b.forward(&c, &x, 1, SERIAL).unwrap()
                        );
                    }
                    loaded += 1;
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{what} row"),
                (a, b) => panic!("{what} row: {a:?} vs {b:?}"),
            }
        }
    }
    assert!(loaded >= 8, "{prefix}: {loaded} rank layers loaded");
}

#[test]
fn uqff_layers_beside_a_dense_checkpoint_load_for_a_rank() {
    let mut rng = Rng(61);
    let up: Vec<f32> = (0..64 * 128).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let dir = CheckpointDir::new(
        "uqff-model",
        &serde_json::json!({"model_type": "llama"}),
        &[("model.layers.0.mlp.up_proj.weight".into(), Dtype::F32, vec![64, 128], to_le_bytes(&up))],
    );
    let v1 = fixture("uqff_files/v1.2.0/hqq4_g64_ax0_f32_bias.uqff");
    std::fs::write(dir.0.join("down.uqff"), &v1).unwrap();
    let m = UqffModel::open(&dir.0).unwrap();
    assert_eq!(m.layer_names().collect::<Vec<_>>(), [DOWN]);
    let (name, layer) = read_v1(&v1, Extension::Refuse).unwrap().remove(0);
    assert_eq!(name, DOWN);
    let whole = QuantWeight::Hqq(layer.weight().unwrap());
    let bias = layer.bias_values().unwrap();
    assert!(bias.is_some());
    assert_eq!(m.layer_shape(DOWN), Some((128, 64)));
    assert_rank_loads(&m, DOWN, &whole, bias.as_ref());
    // The dense rest from the checkpoint; an absent layer is `None`.
    let upl = ColumnParallelLinear::load(&m, "model.layers.0.mlp.up_proj", 1, 2, &Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(upl.local().dequantize(SERIAL).unwrap(), up[32 * 128..].to_vec());
    assert!(
        ColumnParallelLinear::load(&m, "model.layers.9.mlp.up_proj", 0, 1, &Default::default())
            .unwrap()
            .is_none()
    );
    // Load-time requantization of the HQQ layer: int8 of its dequantized share.
    let method = QuantMethod::Int8Symmetric { per_channel: true };
    let opts = LoadOptions { isq: Some(method), ..Default::default() };
    let got = ColumnParallelLinear::load(&m, DOWN, 1, 2, &opts).unwrap().unwrap();
    let share = ColumnParallelLinear::new(&whole, bias.as_ref(), 1, 2).unwrap();
    let want = method.quantize(&share.local().dequantize(SERIAL).unwrap(), 64, 64, None, SERIAL).unwrap();
    assert_eq!(bits(got.local()), bits(&quant_kernels::QuantLinear::new(want, None).unwrap()));

    // A 0.2.0 file as mistral.rs writes it names no layer: refused by `add_file`, read with the
    // names given; a name already present is refused.
    let blob = read_legacy(&fixture("uqff_files/legacy-v0.2.0/hqq8_g64_ax0_f32_bias.uqff")).unwrap();
    let legacy = write_legacy_file(&[blob], None).unwrap();
    std::fs::write(dir.0.join("legacy.bin"), &legacy).unwrap();
    let mut m = UqffModel::open(&dir.0).unwrap();
    assert!(matches!(
        m.add_file(dir.0.join("legacy.bin"), Extension::Allow),
        Err(Error::Format(FormatError::Uqff { .. }))
    ));
    let gate = "model.layers.0.mlp.gate_proj".to_string();
    assert!(matches!(
        m.add_legacy(dir.0.join("legacy.bin"), &[gate.clone(), gate.clone()]),
        Err(Error::Format(FormatError::Uqff { .. }))
    ));
    m.add_legacy(dir.0.join("legacy.bin"), std::slice::from_ref(&gate)).unwrap();
    let (_, layer) = read_legacy_file(&legacy).unwrap().remove(0);
    assert_rank_loads(
        &m,
        &gate,
        &QuantWeight::Hqq(layer.weight().unwrap()),
        layer.bias_values().unwrap().as_ref(),
    );
    assert!(matches!(
        m.add_legacy(dir.0.join("legacy.bin"), &[gate]),
        Err(Error::Format(FormatError::Uqff { .. }))
    ));
    // Without a dense checkpoint, a name the UQFF files lack is absent.
    let only = tempdir_with("uqff-only", &[("a.uqff", &v1)]);
    let m = UqffModel::open(&only.0).unwrap();
    assert!(!m.has_layer("model.layers.0.mlp.up_proj"));
    assert!(m.load_layer("model.layers.0.mlp.up_proj").is_err());
}

/// Per-expert HQQ experts from a UQFF file: found by probing (the dense checkpoint does not
/// list them) and equal to the whole layers cut.
#[test]
fn uqff_experts_load_per_expert() {
    let v1 = fixture("uqff_files/v1.2.0/hqq4_g64_ax0_f32.uqff");
    let (_, layer) = read_v1(&v1, Extension::Refuse).unwrap().remove(0);
    // The fixture layer is [128, 64]: gate and up of experts with hidden 64 and intermediate
    // 128; down [64, 128] is quantized here with the same settings.
    let w = layer.weight().unwrap();
    let mut rng = Rng(67);
    let down: Vec<f32> = (0..64 * 128).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let config = HqqConfig::new(4, 64, Axis::Zero);
    let q = quant_kernels::hqq::quantize_hqq(&down, 64, 128, &config, SERIAL).unwrap();
    let dl = UqffHqqLayer::from_quantized(&q, &config, FloatType::F32, None).unwrap();
    let dw = dl.weight().unwrap();
    let prefix = "model.layers.0.mlp.experts";
    let mut m = UqffModel::new(None);
    for e in 0..2 {
        for (proj, l) in [("gate_proj", &layer), ("up_proj", &layer)] {
            m.add_layers(vec![(format!("{prefix}.{e}.{proj}"), l.clone())]).unwrap();
        }
        m.add_layers(vec![(format!("{prefix}.{e}.down_proj"), dl.clone())]).unwrap();
    }
    let dims = MoeDims { experts: 2, hidden: 64, intermediate: 128 };
    let mlp = quant_kernels::tp::ExpertMlp {
        gate: QuantWeight::Hqq(w.clone()),
        up: QuantWeight::Hqq(w),
        down: QuantWeight::Hqq(dw),
    };
    for world in [1, 2] {
        for rank in 0..world {
            let got = MoeExperts::load(&m, prefix, dims, rank, world, &Default::default()).unwrap().unwrap();
            assert_eq!(got.layout(), Some(ExpertsLayout::PerExpert));
            let want = MoeExperts::new(&[mlp.clone(), mlp.clone()], rank, world).unwrap();
            for e in 0..2 {
                let (a, b) = (got.expert(e).unwrap(), want.expert(e).unwrap());
                assert_eq!(
                    (bits(a.0), bits(a.1), bits(a.2)),
                    (bits(b.0), bits(b.1), bits(b.2)),
                    "{rank}/{world} {e}"
                );
            }
        }
    }
}

/// A UQFF 1.2.0 file is checked from its header and small tensors when opened; loading a layer
/// (any rank's share) reads exactly that layer's tensors, never the file's other layers.
#[test]
fn uqff_layers_are_read_when_loaded_and_only_theirs() {
    let v1 = fixture("uqff_files/v1.2.0/hqq4_g64_ax0_f32_bias.uqff");
    let (_, small) = read_v1(&v1, Extension::Refuse).unwrap().remove(0);
    let mut rng = Rng(71);
    let (rows, cols) = (256, 512);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let config = HqqConfig::new(4, 64, Axis::Zero);
    let q = quant_kernels::hqq::quantize_hqq(&w, rows, cols, &config, SERIAL).unwrap();
    let big = UqffHqqLayer::from_quantized(&q, &config, FloatType::F32, None).unwrap();
    let file =
        write_v1(&[(DOWN.to_string(), small.clone()), ("big".to_string(), big.clone())], Extension::Refuse)
            .unwrap();
    let dir = tempdir_with("uqff-lazy", &[("m.uqff", &file)]);
    let layer_bytes = |prefix: &str| -> u64 {
        let f = SafetensorsFile::open(dir.0.join("m.uqff")).unwrap();
        f.tensors()
            .iter()
            .filter(|(n, _)| n.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')))
            .map(|(_, i)| i.len as u64)
            .sum()
    };
    let (small_bytes, big_bytes) = (layer_bytes(DOWN), layer_bytes("big"));
    assert!(big_bytes > 60_000 && small_bytes < big_bytes / 8, "{small_bytes} {big_bytes}");

    let m = UqffModel::open(&dir.0).unwrap();
    let opened = m.bytes_read();
    assert!(opened < 256, "opening read {opened} bytes");
    assert_eq!(m.layer_shape("big"), Some((rows, cols)));
    for world in [1, 2] {
        let before = m.bytes_read();
        let got =
            ColumnParallelLinear::load(&m, DOWN, world - 1, world, &Default::default()).unwrap().unwrap();
        assert_eq!(m.bytes_read() - before, small_bytes, "world {world}");
        let want = ColumnParallelLinear::new(
            &QuantWeight::Hqq(small.weight().unwrap()),
            small.bias_values().unwrap().as_ref(),
            world - 1,
            world,
        )
        .unwrap();
        assert_eq!(bits(got.local()), bits(want.local()));
    }
    let before = m.bytes_read();
    let got = RowParallelLinear::load(&m, "big", 1, 2, &Default::default()).unwrap().unwrap();
    assert_eq!(m.bytes_read() - before, big_bytes);
    let want = RowParallelLinear::new(&QuantWeight::Hqq(big.weight().unwrap()), None, 1, 2).unwrap();
    assert_eq!(bits(got.local()), bits(want.local()));

    // A file cut short after it was opened (its data gone): an I/O error when a layer loads.
    let header = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    std::fs::write(dir.0.join("m.uqff"), &file[..header]).unwrap();
    assert!(matches!(
        RowParallelLinear::load(&m, "big", 0, 2, &Default::default()),
        Err(Error::Format(FormatError::Io { .. }))
    ));
}

/// A directory holding `files`, removed on drop.
fn tempdir_with(tag: &str, files: &[(&str, &[u8])]) -> CheckpointDir {
    let dir = std::env::temp_dir().join(format!("qk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    CheckpointDir(dir)
}
