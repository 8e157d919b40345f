//! Dense layers loaded by name for one rank from an unquantized checkpoint
//! ([`LayerSource`] on `io::Checkpoint`): a rank's layer equals the whole layer split by the
//! parallel layers' `new`, bit for bit, for world sizes 1-4 along both dimensions, and reads
//! only its share of the weight; absent and malformed layers are `None` or typed errors.

use crate::common::{CheckpointDir, RawTensor, Rng};
use half::{bf16, f16};
use quant_kernels::error::FormatError;
use quant_kernels::io::safetensors::to_le_bytes;
use quant_kernels::io::{Checkpoint, Dtype};
use quant_kernels::tp::{ColumnParallelLinear, LayerSource, ReplicatedLinear, RowParallelLinear, SingleComm};
use quant_kernels::{Error, FloatVec, Parallelism, QuantLinear, QuantWeight};

/// An unquantized checkpoint directory.
fn ck_dir(tag: &str, tensors: &[RawTensor]) -> CheckpointDir {
    CheckpointDir::new(tag, &serde_json::json!({"model_type": "llama"}), tensors)
}

const UP: &str = "model.layers.0.mlp.up_proj";
const DOWN: &str = "model.layers.0.mlp.down_proj";

fn tensors(rng: &mut Rng) -> Vec<RawTensor> {
    let up: Vec<bf16> = (0..64 * 48).map(|_| bf16::from_f32(rng.f32_in(-1.0, 1.0))).collect();
    let up_bias: Vec<bf16> = (0..64).map(|i| bf16::from_f32(i as f32 / 8.0)).collect();
    let down: Vec<f16> = (0..48 * 64).map(|_| f16::from_f32(rng.f32_in(-1.0, 1.0))).collect();
    let down_bias: Vec<f32> = (0..48).map(|i| i as f32).collect();
    vec![
        (format!("{UP}.weight"), Dtype::Bf16, vec![64, 48], to_le_bytes(&up)),
        (format!("{UP}.bias"), Dtype::Bf16, vec![64], to_le_bytes(&up_bias)),
        (format!("{DOWN}.weight"), Dtype::F16, vec![48, 64], to_le_bytes(&down)),
        (format!("{DOWN}.bias"), Dtype::F32, vec![48], to_le_bytes(&down_bias)),
        ("model.norm.weight".into(), Dtype::F32, vec![48], to_le_bytes(&[1f32; 48])),
    ]
}

fn bits(l: &QuantLinear) -> Vec<u32> {
    l.dequantize(Parallelism::SERIAL).unwrap().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn dense_rank_loads_equal_the_whole_layer_split() {
    let dir = ck_dir("dense", &tensors(&mut Rng(5)));
    let ck = Checkpoint::open(&dir.0).unwrap();
    let serial = Parallelism::SERIAL;
    for (prefix, (out, inp), esize) in [(UP, (64, 48), 2), (DOWN, (48, 64), 2)] {
        assert!(ck.has_layer(prefix));
        let (whole, bias) = ck.load_layer(prefix).unwrap();
        assert_eq!(whole.shape(), (out, inp));
        let weight_bytes = (out * inp * esize) as u64;
        for world in 1..=4 {
            for rank in 0..world {
                // Outputs: the rank's rows of the weight and of the bias, nothing else.
                let before = ck.bytes_read();
                let col = ColumnParallelLinear::load(&ck, prefix, rank, world, &Default::default());
                let read = ck.bytes_read() - before;
                let bias_bytes =
                    bias.as_ref().map_or(0, |b| b.len() * if matches!(b, FloatVec::F32(_)) { 4 } else { 2 })
                        as u64;
                match ColumnParallelLinear::new(&whole, bias.as_ref(), rank, world) {
                    Err(e) => assert_eq!(col.unwrap_err(), e, "{prefix} column {rank}/{world}"),
                    Ok(want) => {
                        let col = col.unwrap().unwrap();
                        assert_eq!(bits(col.local()), bits(want.local()), "{prefix} column {rank}/{world}");
                        let x = vec![0.25f32; inp];
                        assert_eq!(col.forward(&x, 1, serial).unwrap(), want.forward(&x, 1, serial).unwrap());
                        assert_eq!(
                            read,
                            (weight_bytes + bias_bytes) / world as u64,
                            "{prefix} column {rank}/{world}"
                        );
                    }
                }
                // Inputs: the rank's columns of every row; the bias whole, added after the sum.
                let before = ck.bytes_read();
                let row = RowParallelLinear::load(&ck, prefix, rank, world, &Default::default());
                let read = ck.bytes_read() - before;
                match RowParallelLinear::new(&whole, bias.as_ref(), rank, world) {
                    Err(e) => assert_eq!(row.unwrap_err(), e, "{prefix} row {rank}/{world}"),
                    Ok(want) => {
                        let row = row.unwrap().unwrap();
                        assert_eq!(bits(row.local()), bits(want.local()), "{prefix} row {rank}/{world}");
                        assert_eq!(
                            read,
                            weight_bytes / world as u64 + bias_bytes,
                            "{prefix} row {rank}/{world}"
                        );
                        if world == 1 {
                            let x = vec![0.5f32; inp];
                            let a = row.forward(&SingleComm, &x, 1, serial).unwrap();
                            assert_eq!(a, want.forward(&SingleComm, &x, 1, serial).unwrap());
                        }
                    }
                }
            }
        }
        // The same weight read as a fused layer of three parts.
        crate::common::assert_merged_loads(&ck, prefix, &whole, bias.as_ref(), &[out / 2, out / 4, out / 4]);
        let rep = ReplicatedLinear::load(&ck, prefix, &Default::default()).unwrap().unwrap();
        assert_eq!(bits(rep.local()), bits(&QuantLinear::new(whole.clone(), bias.clone()).unwrap()));
    }
    // A 1-D tensor is not a layer; an absent name is `None`, never an empty layer.
    for absent in ["model.norm", "model.layers.9.mlp.up_proj"] {
        assert!(!ck.has_layer(absent));
        assert!(ColumnParallelLinear::load(&ck, absent, 0, 1, &Default::default()).unwrap().is_none());
        assert!(RowParallelLinear::load(&ck, absent, 0, 1, &Default::default()).unwrap().is_none());
        assert!(ReplicatedLinear::load(&ck, absent, &Default::default()).unwrap().is_none());
    }
    // A share that does not fit is the shard's typed error, before any byte is read.
    let before = ck.bytes_read();
    assert!(matches!(ColumnParallelLinear::load(&ck, UP, 0, 5, &Default::default()), Err(Error::Tp(_))));
    assert_eq!(ck.bytes_read(), before);
    let w: QuantWeight = ck.load_layer(UP).unwrap().0;
    assert!(matches!(w, QuantWeight::Dense(ref d) if matches!(d.w, FloatVec::Bf16(_))), "kept in its dtype");
}

#[test]
fn malformed_dense_layers_are_typed_errors() {
    let mut t = tensors(&mut Rng(6));
    t[1].2 = vec![32]; // up_proj's bias: 32 values for 64 outputs
    t[1].3.truncate(64);
    let dir = ck_dir("dense-bad", &t);
    let ck = Checkpoint::open(&dir.0).unwrap();
    assert_eq!(
        ColumnParallelLinear::load(&ck, UP, 0, 2, &Default::default()).unwrap_err(),
        Error::Format(FormatError::TensorShape {
            tensor: format!("{UP}.bias"),
            expected: vec![64],
            got: vec![32]
        })
    );
    assert!(ck.load_layer("model.norm").is_err(), "a 1-D weight is no layer");
}

/// Load-time quantization: a rank's share quantized as it loads equals the scheme's own
/// quantizer on that share's dense weights (HQQ with and without optimizer steps, int8, int4,
/// FP8), the bias in f32; methods that need calibration data are typed errors.
#[test]
fn load_time_quantization_equals_quantizing_the_share() {
    use quant_kernels::QuantMethod;
    use quant_kernels::error::KernelError;
    use quant_kernels::fp8::Fp8Format;
    use quant_kernels::hqq::Axis;
    use quant_kernels::tp::LoadOptions;
    let dir = ck_dir("isq", &tensors(&mut Rng(7)));
    let ck = Checkpoint::open(&dir.0).unwrap();
    let par = Parallelism::RAYON;
    let methods = [
        (QuantMethod::Hqq { bits: 4, group: 16, axis: Axis::One }, None),
        (QuantMethod::Hqq { bits: 8, group: 32, axis: Axis::Zero }, Some(5)),
        (QuantMethod::Int8Symmetric { per_channel: true }, None),
        (QuantMethod::Int4Asymmetric { group: 16 }, None),
        (QuantMethod::Fp8 { format: Fp8Format::E4M3, block: Some((16, 16)) }, None),
    ];
    let mut dropped_layers = 0;
    for (method, hqq_steps) in methods {
        let opts = LoadOptions { isq: Some(method), hqq_steps, par, ..Default::default() };
        for world in [1, 2] {
            for rank in 0..world {
                let (share, bias) = ck
                    .load_layer_shard(
                        UP,
                        &quant_kernels::tp::Shard::Simple { dim: 0, rank, world_size: world },
                    )
                    .unwrap();
                let (rows, cols) = share.shape();
                let dense: Vec<f32> = share.dequantize(par).unwrap();
                // Widened as read, block by block: the same values, already f32.
                let shard = quant_kernels::tp::Shard::Simple { dim: 0, rank, world_size: world };
                let (wide, _) = ck.load_layer_f32(UP, Some(&shard)).unwrap();
                assert_eq!(
                    wide,
                    QuantWeight::Dense(quant_kernels::dense::DenseWeight {
                        rows,
                        cols,
                        w: FloatVec::F32(dense.clone())
                    })
                );
                let q = method.quantize(&dense, rows, cols, hqq_steps, par).unwrap();
                assert_eq!(q.method(), Some(method));
                let bias = bias.map(|b| FloatVec::F32(b.to_f32()));
                let want = QuantLinear::new(q, bias).unwrap();
                let got = ColumnParallelLinear::load(&ck, UP, rank, world, &opts).unwrap().unwrap();
                assert_eq!(bits(got.local()), bits(&want), "{method} {rank}/{world}");
                let x = vec![0.5f32; cols];
                assert_eq!(
                    got.forward(&x, 1, par).unwrap(),
                    want.forward::<f32, f32>(&x, 1, par).unwrap(),
                    "{method}"
                );
                // Int8 activations, the scheme weight dropped where that path took the layer
                // (`DOWN`'s 64 inputs: the int8 shares).
                use quant_kernels::matmul::Activations;
                let int8 = LoadOptions { activations: Activations::Int8, ..opts };
                let kept = ColumnParallelLinear::load(&ck, DOWN, rank, world, &int8).unwrap().unwrap();
                let drop = LoadOptions { drop_scheme_weight: true, ..int8 };
                let dropped = ColumnParallelLinear::load(&ck, DOWN, rank, world, &drop).unwrap().unwrap();
                let x = vec![0.5f32; 64];
                let on_int8 = kept.local().activations() == Activations::Int8;
                assert_eq!(dropped.local().activations(), kept.local().activations(), "{method}");
                assert_eq!(dropped.local().has_scheme_weight(), !on_int8, "{method}");
                assert_eq!(
                    dropped.forward(&x, 1, par).unwrap(),
                    kept.forward(&x, 1, par).unwrap(),
                    "{method}"
                );
                dropped_layers += usize::from(on_int8);
            }
        }
    }
    assert_eq!(dropped_layers, 3, "the int8 method's shares at worlds 1 and 2 take the int8 path");
    // Per layer, by name or glob: up_proj int4, down_proj left as stored.
    let int4 = QuantMethod::Int4Asymmetric { group: 16 };
    let config = quant_kernels::QuantConfig::new(QuantMethod::Int8Symmetric { per_channel: false })
        .with("model.layers.*.mlp.up_proj", Some(int4))
        .unwrap()
        .with(DOWN, None)
        .unwrap();
    let opts = LoadOptions {
        isq: Some(QuantMethod::Int8Symmetric { per_channel: true }),
        isq_config: Some(&config),
        ..Default::default()
    };
    assert_eq!((opts.method_for(UP), opts.method_for(DOWN)), (Some(int4), None));
    let up = ColumnParallelLinear::load(&ck, UP, 0, 2, &opts).unwrap().unwrap();
    let plain = ColumnParallelLinear::load(&ck, UP, 0, 2, &Default::default()).unwrap().unwrap();
    let (rows, cols) = (plain.local().out_features(), plain.local().in_features());
    let q = int4.quantize(&plain.local().dequantize(par).unwrap(), rows, cols, None, par).unwrap();
    assert_eq!(bits(up.local()), bits(&QuantLinear::new(q, None).unwrap()));
    let down = RowParallelLinear::load(&ck, DOWN, 1, 2, &opts).unwrap().unwrap();
    let stored = RowParallelLinear::load(&ck, DOWN, 1, 2, &Default::default()).unwrap().unwrap();
    assert_eq!(bits(down.local()), bits(stored.local()), "an override of None keeps the layer as stored");
    let gptq = LoadOptions {
        isq: Some(QuantMethod::Gptq { bits: 4, group: Some(16), act_order: false }),
        ..Default::default()
    };
    assert!(matches!(
        ColumnParallelLinear::load(&ck, UP, 0, 1, &gptq),
        Err(Error::Kernel(KernelError::NoQuantizer(_)))
    ));
}

/// A weight wider than one read block is widened block by block to the same values, whole and
/// for column shares (rows 0..40 of a [40, 4000] bf16 weight: three blocks of rows).
#[test]
fn widening_reads_equal_the_stored_values() {
    let mut rng = Rng(8);
    let w: Vec<bf16> = (0..40 * 4000).map(|_| bf16::from_f32(rng.f32_in(-2.0, 2.0))).collect();
    let name = "model.layers.0.mlp.gate_proj";
    let dir = ck_dir("widen", &[(format!("{name}.weight"), Dtype::Bf16, vec![40, 4000], to_le_bytes(&w))]);
    let ck = Checkpoint::open(&dir.0).unwrap();
    let cases = [None, Some(quant_kernels::tp::Shard::Simple { dim: 1, rank: 1, world_size: 4 })];
    for shard in cases {
        let stored = match &shard {
            Some(s) => ck.load_layer_shard(name, s).unwrap().0,
            None => ck.load_layer(name).unwrap().0,
        };
        let (wide, bias) = ck.load_layer_f32(name, shard.as_ref()).unwrap();
        assert!(bias.is_none());
        let QuantWeight::Dense(d) = &wide else { panic!("not dense") };
        assert!(matches!(d.w, FloatVec::F32(_)));
        assert_eq!(
            wide.dequantize::<f32>(Parallelism::SERIAL).unwrap(),
            stored.dequantize::<f32>(Parallelism::SERIAL).unwrap()
        );
    }
}

/// The first `kept` indices of `dim`, then rank `rank` of `world`'s even part of them, cut
/// from the whole layer: what a MatFormer load must give.
fn matformer_cut(
    w: &QuantWeight,
    dim: usize,
    kept: usize,
    rank: usize,
    world: usize,
) -> quant_kernels::Result<QuantWeight> {
    use quant_kernels::tp::Shard;
    let sliced = w.shard(&Shard::Offset { dim, offset: 0, len: kept })?;
    sliced.shard(&Shard::Simple { dim, rank, world_size: world })
}

#[test]
fn matformer_slices_equal_the_whole_layer_sliced_then_split() {
    use quant_kernels::error::TpError;
    let dir = ck_dir("matformer", &tensors(&mut Rng(9)));
    let ck = Checkpoint::open(&dir.0).unwrap();
    let opts = Default::default();
    let (up, up_bias) = ck.load_layer(UP).unwrap();
    let (down, down_bias) = ck.load_layer(DOWN).unwrap();
    for world in 1..=4 {
        for rank in 0..world {
            // gate/up: [:32] of 64 outputs, the bias with them.
            let got = ColumnParallelLinear::load_matformer(&ck, UP, 32, rank, world, &opts);
            match matformer_cut(&up, 0, 32, rank, world) {
                Ok(w) => {
                    let got = got.unwrap().unwrap();
                    let b: Vec<f32> = up_bias.as_ref().unwrap().to_f32()[..32].to_vec();
                    let r = quant_kernels::tp::Shard::Simple { dim: 0, rank, world_size: world }
                        .range(32)
                        .unwrap();
                    assert_eq!(
                        got.local().dequantize(Parallelism::SERIAL).unwrap(),
                        w.dequantize::<f32>(Parallelism::SERIAL).unwrap()
                    );
                    assert_eq!(got.local().bias().unwrap(), &b[r]);
                }
                Err(e) => assert_eq!(got.unwrap_err(), e, "column {rank}/{world}"),
            }
            // down: [:, :32] of 64 inputs (the bias, whole, as every row load: see above).
            let got = RowParallelLinear::load_matformer(&ck, DOWN, 32, rank, world, &opts);
            match matformer_cut(&down, 1, 32, rank, world) {
                Ok(w) => {
                    let got = got.unwrap().unwrap();
                    let expect = RowParallelLinear::new(&w, down_bias.as_ref(), 0, 1).unwrap();
                    assert_eq!(bits(got.local()), bits(expect.local()), "row {rank}/{world}");
                }
                Err(e) => assert_eq!(got.unwrap_err(), e, "row {rank}/{world}"),
            }
        }
    }
    let err = ColumnParallelLinear::load_matformer(&ck, UP, 65, 0, 1, &opts).unwrap_err();
    assert_eq!(err, Error::Tp(TpError::ShardRange { offset: 0, len: 65, dim_len: 64 }));
    assert!(RowParallelLinear::load_matformer(&ck, "absent", 8, 0, 1, &opts).unwrap().is_none());
}

#[test]
fn matformer_slices_of_packed_layers_follow_their_cut_rules() {
    use quant_kernels::io::QuantizedCheckpoint;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gptq_checkpoints/tiny-llama-gptq-4bit");
    let ck = QuantizedCheckpoint::open(dir).unwrap();
    let opts = Default::default();
    let (down, _) = ck.load_layer("model.layers.0.mlp.down_proj").unwrap();
    let (gate, _) = ck.load_layer("model.layers.0.mlp.gate_proj").unwrap();
    let (mut ok, mut refused) = (0, 0);
    for kept in [128, 96, 64, 80, 40] {
        for world in [1, 2] {
            for rank in 0..world {
                let got = RowParallelLinear::load_matformer(
                    &ck,
                    "model.layers.0.mlp.down_proj",
                    kept,
                    rank,
                    world,
                    &opts,
                );
                match matformer_cut(&down, 1, kept, rank, world) {
                    Ok(w) => {
                        let got = got.unwrap().unwrap();
                        assert_eq!(
                            got.local().dequantize(Parallelism::SERIAL).unwrap(),
                            w.dequantize::<f32>(Parallelism::SERIAL).unwrap()
                        );
                        ok += 1;
                    }
                    Err(e) => {
                        assert_eq!(got.unwrap_err(), e, "down [:, :{kept}] {rank}/{world}");
                        refused += 1;
                    }
                }
                let got = ColumnParallelLinear::load_matformer(
                    &ck,
                    "model.layers.0.mlp.gate_proj",
                    kept,
                    rank,
                    world,
                    &opts,
                );
                match matformer_cut(&gate, 0, kept, rank, world) {
                    Ok(w) => assert_eq!(
                        got.unwrap().unwrap().local().dequantize(Parallelism::SERIAL).unwrap(),
                        w.dequantize::<f32>(Parallelism::SERIAL).unwrap()
                    ),
                    Err(e) => assert_eq!(got.unwrap_err(), e, "gate [:{kept}] {rank}/{world}"),
                }
            }
        }
    }
    // Group-32 inputs: cuts off the groups are refused, cuts on them load.
    assert!(ok > 0 && refused > 0, "{ok} loaded, {refused} refused");
}

/// MatFormer's kept decoder layers (`load_layers_matformer`): the kept output blocks of the
/// whole layer stacked in the order given, bias likewise, each block read alone (the bytes read
/// are the kept blocks'); packed layers equal the whole layer's blocks cut and stacked, or the
/// same refusal; misfits are typed errors.
#[test]
fn layers_matformer_keeps_the_blocks_of_the_kept_layers() {
    use quant_kernels::error::TpError;
    use quant_kernels::io::QuantizedCheckpoint;
    use quant_kernels::tp::Shard;
    let dir = ck_dir("layers-matformer", &tensors(&mut Rng(13)));
    let ck = Checkpoint::open(&dir.0).unwrap();
    let opts = Default::default();
    let (up, up_bias) = ck.load_layer(UP).unwrap();
    let (w, b) = (up.dequantize::<f32>(Parallelism::SERIAL).unwrap(), up_bias.unwrap().to_f32());
    // 64 outputs = 8 decoder layers x 8 outputs; 48 inputs of bf16.
    for kept in [vec![0, 1, 2, 3, 4, 5, 6, 7], vec![7, 2, 5], vec![3], vec![1, 1]] {
        let before = ck.bytes_read();
        let got = ReplicatedLinear::load_layers_matformer(&ck, UP, &kept, 8, &opts).unwrap().unwrap();
        assert_eq!(ck.bytes_read() - before, (kept.len() * 8 * (48 + 1) * 2) as u64, "{kept:?}");
        let want_w: Vec<f32> = kept.iter().flat_map(|&k| w[k * 8 * 48..(k + 1) * 8 * 48].to_vec()).collect();
        let want_b: Vec<f32> = kept.iter().flat_map(|&k| b[k * 8..(k + 1) * 8].to_vec()).collect();
        assert_eq!(got.local().dequantize(Parallelism::SERIAL).unwrap(), want_w, "{kept:?}");
        assert_eq!(got.local().bias().unwrap(), &want_b[..], "{kept:?}");
    }
    let misfit = |kept: &[usize], orig: usize| {
        let err = ReplicatedLinear::load_layers_matformer(&ck, UP, kept, orig, &opts).unwrap_err();
        assert_eq!(
            err,
            Error::Tp(TpError::MatformerLayers { out: 64, orig_layers: orig, kept: kept.to_vec() })
        );
    };
    misfit(&[0], 6);
    misfit(&[8], 8);
    misfit(&[0], 0);
    assert!(ReplicatedLinear::load_layers_matformer(&ck, "absent", &[0], 8, &opts).unwrap().is_none());

    // GPTQ 4-bit: blocks cut along the outputs (columns of qweight), on or off its packing.
    let gdir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gptq_checkpoints/tiny-llama-gptq-4bit");
    let q = QuantizedCheckpoint::open(gdir).unwrap();
    let gate = "model.layers.0.mlp.gate_proj";
    let (whole, _) = q.load_layer(gate).unwrap();
    let out = whole.shape().0;
    let (mut ok, mut refused) = (0, 0);
    for (orig, kept) in [(2, vec![1, 0]), (4, vec![3, 1]), (out, vec![5, 2])] {
        let per = out / orig;
        let got = ReplicatedLinear::load_layers_matformer(&q, gate, &kept, orig, &opts);
        let cut: quant_kernels::Result<Vec<QuantWeight>> =
            kept.iter().map(|&k| whole.shard(&Shard::Offset { dim: 0, offset: k * per, len: per })).collect();
        match cut.and_then(QuantWeight::concat) {
            Ok(w) => {
                assert_eq!(bits(got.unwrap().unwrap().local()), bits(&QuantLinear::new(w, None).unwrap()));
                ok += 1;
            }
            Err(e) => {
                assert_eq!(got.unwrap_err(), e, "{orig} {kept:?}");
                refused += 1;
            }
        }
    }
    assert!(ok > 0, "{ok} loaded, {refused} refused");
}
