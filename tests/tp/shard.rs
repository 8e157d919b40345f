//! Packed shards of every scheme and MoE expert splitting: a shard of a packed layer
//! dequantizes (with the scheme's own dequantizer) to exactly the same shard of the whole's
//! dequantization, bit for bit, over many shapes, world sizes 1-4 and offset shards; bad
//! boundaries are typed errors; stacked experts split and shard back to the whole.

use crate::common;
use quant_kernels::error::{KernelError, TpError};

use common::{Rng, float_vec, hqq_weight, layer};
use half::f16;
use quant_kernels::QuantScheme;
use quant_kernels::awq::{AwqLayer, AwqLayout};
use quant_kernels::dense::DenseWeight;
use quant_kernels::fp8::{Fp8Format, Fp8Layer, Fp8Layout};
use quant_kernels::gptq::{GptqLayer, GptqLayout, ZeroFormat};
use quant_kernels::hqq::Axis;
use quant_kernels::intx::{self, Granularity};
use quant_kernels::tp::{
    ExpertMlp, MoeDims, Shard, shard_fp8_experts, split_fp8_experts, split_packed_experts,
};
use quant_kernels::{Error, FloatVec, Parallelism};
use quant_kernels::{QuantLinear, QuantWeight};
use std::collections::BTreeMap;

const SERIAL: Parallelism = Parallelism::SERIAL;

/// `[out, in]` f32 of any weight, through its scheme's own dequantizer.
fn deq(w: &QuantWeight) -> Vec<f32> {
    match w {
        QuantWeight::Dense(d) => d.w.to_f32(),
        QuantWeight::Hqq(h) => {
            let mut out = vec![0f32; h.layout.numel()];
            match (&h.scales, &h.zeros) {
                (FloatVec::F32(s), FloatVec::F32(z)) => {
                    h.packed.dequantize_into(s, z, &h.layout, &mut out, SERIAL)
                }
                (FloatVec::F16(s), FloatVec::F16(z)) => {
                    h.packed.dequantize_into(s, z, &h.layout, &mut out, SERIAL)
                }
                (FloatVec::Bf16(s), FloatVec::Bf16(z)) => {
                    h.packed.dequantize_into(s, z, &h.layout, &mut out, SERIAL)
                }
                _ => panic!("mixed HQQ dtypes in a test weight"),
            }
            .unwrap();
            out
        }
        QuantWeight::Gptq(g) => g.dequantize(SERIAL).unwrap(),
        QuantWeight::Awq(a) => a.dequantize(SERIAL).unwrap(),
        QuantWeight::Fp8(f) => f.dequantize(SERIAL).unwrap(),
        QuantWeight::Int8(t) => {
            let mut out = vec![0f32; t.q.len()];
            t.dequantize_into(&mut out, SERIAL).unwrap();
            out
        }
        QuantWeight::Int4(t) => {
            let mut out = vec![0f32; t.rows * t.cols];
            t.dequantize_into(&mut out, SERIAL).unwrap();
            out
        }
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Shard `w` (`[rows, cols]`), compare with the shard of its dequantization, and also check
/// that `QuantLinear` accepts the shard and dequantizes it the same. `Err` passes the
/// shard's error through.
fn check(
    w: &QuantWeight,
    whole: &[f32],
    rows: usize,
    cols: usize,
    shard: Shard,
    what: &str,
) -> Result<(), Error> {
    let part = w.shard(&shard)?;
    let (expected, er, ec) = shard.apply(whole, rows, cols).unwrap();
    let got = deq(&part);
    assert!(same_bits(&got, &expected), "{what}: {shard:?} dequantizes differently");
    let lin = QuantLinear::new(part, None).unwrap_or_else(|e| panic!("{what}: {shard:?}: QuantLinear: {e}"));
    assert_eq!((lin.out_features(), lin.in_features()), (er, ec), "{what}: {shard:?}");
    assert!(same_bits(&lin.dequantize(SERIAL).unwrap(), &expected), "{what}: {shard:?} (QuantLinear)");
    Ok(())
}

/// Simple shards for world sizes 1-4 plus `offsets` random offset shards per dim, each
/// aligned to a random one of `units` (so both good and bad boundaries come up).
fn shards(rows: usize, cols: usize, units: &[usize], offsets: usize, rng: &mut Rng) -> Vec<Shard> {
    let mut out = Vec::new();
    for dim in [0usize, 1] {
        for world in 1..=4 {
            for rank in 0..world {
                out.push(Shard::Simple { dim, rank, world_size: world });
            }
        }
        let n = if dim == 0 { rows } else { cols };
        for _ in 0..offsets {
            let u = units[rng.below(units.len() as u64) as usize].max(1);
            let slots = n / u;
            if slots == 0 {
                continue;
            }
            let a = rng.below(slots as u64) as usize;
            let b = a + 1 + rng.below((slots - a) as u64) as usize;
            let end = if b == slots && rng.below(2) == 0 { n } else { b * u };
            out.push(Shard::Offset { dim, offset: a * u, len: end - a * u });
        }
    }
    out
}

/// Tally of outcomes per case, to prove every case both runs and refuses where it should.
#[derive(Default)]
struct Tally(BTreeMap<String, (usize, usize)>);

impl Tally {
    fn add(&mut self, key: String, ok: bool) {
        let e = self.0.entry(key).or_default();
        if ok { e.0 += 1 } else { e.1 += 1 }
    }
    fn ok(&self, key: &str) -> usize {
        self.0.get(key).map_or(0, |e| e.0)
    }
}

#[test]
fn hqq_shards_equal_shards_of_the_dequantized_whole() {
    let mut rng = Rng(81);
    let mut tally = Tally::default();
    // (rows, cols, group, axis): groups of whole rows, row parts, several rows, straddling
    // rows; axis 0 with M a multiple of cols, a divisor of cols, and neither.
    let cases = [
        (8, 64, 64, Axis::One),
        (16, 64, 32, Axis::One),
        (16, 32, 64, Axis::One),
        (24, 48, 16, Axis::One),
        (40, 40, 40, Axis::One),
        (8, 6, 4, Axis::One),
        (16, 12, 8, Axis::One),
        (64, 32, 64, Axis::Zero),
        (64, 48, 16, Axis::Zero),
        (24, 64, 48, Axis::Zero),
        (30, 20, 24, Axis::Zero),
        (32, 40, 8, Axis::Zero),
        (48, 24, 8, Axis::Zero),
    ];
    for bits in [8u8, 4, 3, 2, 1] {
        for (i, &(rows, cols, g, axis)) in cases.iter().enumerate() {
            let Some(w) = hqq_weight(rows, cols, g, axis, bits, i + bits as usize, &mut rng) else {
                continue;
            };
            let w = QuantWeight::Hqq(w);
            let whole = deq(&w);
            for shard in shards(rows, cols, &[1, 2, 4, 5, 8, 16, 32], 12, &mut rng) {
                let what = format!("{bits}-bit {rows}x{cols} g{g} {axis:?}");
                let key = format!("{bits} {axis:?} dim {}", shard.dim());
                match check(&w, &whole, rows, cols, shard, &what) {
                    Ok(()) => tally.add(key, true),
                    Err(
                        Error::Tp(TpError::ShardBoundary { .. })
                        | Error::Tp(TpError::ShardUneven { .. })
                        | Error::Kernel(KernelError::PackRows { .. })
                        | Error::Tp(TpError::ShardGrouping { .. }),
                    ) => tally.add(key, false),
                    Err(e) => panic!("{what}: {shard:?}: unexpected {e:?}"),
                }
            }
        }
    }
    // Every width, both axes, both dims: proper (not whole) shards succeed.
    for bits in [8, 4, 3, 2, 1] {
        for axis in ["Zero", "One"] {
            for dim in [0, 1] {
                let key = format!("{bits} {axis} dim {dim}");
                assert!(tally.ok(&key) >= 20, "{key}: only {} shards", tally.ok(&key));
            }
        }
    }
}

#[test]
fn hqq_bad_shards_are_typed_errors() {
    let mut rng = Rng(82);
    let w = |rows, cols, g, axis, bits, rng: &mut Rng| hqq_weight(rows, cols, g, axis, bits, 0, rng).unwrap();
    let a = w(16, 64, 32, Axis::One, 4, &mut rng);
    assert_eq!(
        a.shard(&Shard::Offset { dim: 1, offset: 16, len: 32 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "hqq group", at: 16, multiple: 32 })
    );
    // Groups of 64 over rows of 48 columns: 4 rows hold 3 whole groups.
    let b = w(24, 48, 64, Axis::One, 4, &mut rng);
    assert_eq!(
        b.shard(&Shard::Offset { dim: 0, offset: 4, len: 6 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "hqq group", at: 10, multiple: 4 })
    );
    assert_eq!(
        w(8, 6, 4, Axis::One, 4, &mut rng).shard(&Shard::Offset { dim: 1, offset: 0, len: 3 }).unwrap_err(),
        Error::Tp(TpError::ShardGrouping { period: 4, cols: 6 })
    );
    let c = w(30, 20, 24, Axis::Zero, 4, &mut rng); // M = 25
    assert_eq!(
        c.shard(&Shard::Simple { dim: 1, rank: 0, world_size: 2 }).unwrap_err(),
        Error::Tp(TpError::ShardGrouping { period: 25, cols: 20 })
    );
    assert_eq!(
        c.shard(&Shard::Offset { dim: 0, offset: 0, len: 7 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "hqq code row", at: 7, multiple: 5 })
    );
    let d = w(24, 64, 48, Axis::Zero, 4, &mut rng); // M = 32 divides 64 columns
    assert_eq!(
        d.shard(&Shard::Offset { dim: 1, offset: 8, len: 32 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "hqq code row", at: 8, multiple: 32 })
    );
    // A shard whose code matrix does not pack at this width: 3 code rows of 4-bit.
    assert_eq!(
        w(8, 64, 64, Axis::One, 4, &mut rng).shard(&Shard::Offset { dim: 0, offset: 0, len: 3 }).unwrap_err(),
        Error::Kernel(KernelError::PackRows { bits: 4, rows: 3, multiple: 2 })
    );
    // The 3-bit layout pads, so the same shard works there.
    assert!(w(8, 64, 64, Axis::One, 3, &mut rng).shard(&Shard::Offset { dim: 0, offset: 0, len: 3 }).is_ok());
    // A weight whose packed words do not match its layout is a length error, not a panic.
    let mut bad = a.clone();
    bad.scales = FloatVec::F32(vec![0.0; 3]);
    assert!(matches!(
        bad.shard(&Shard::full(0)).unwrap_err(),
        Error::Kernel(KernelError::LengthMismatch { what: "scales", .. })
    ));
}

fn gptq(k: usize, n: usize, bits: u8, g: i64, act: bool, rng: &mut Rng) -> GptqLayer {
    let l = GptqLayout::new(k, n, bits, g).unwrap();
    let x = layer(&l, act, rng);
    GptqLayer {
        layout: l,
        format: if act { ZeroFormat::V1 } else { ZeroFormat::V2 },
        qweight: x.qweight,
        qzeros: x.qzeros,
        scales: FloatVec::F16(x.scales.iter().map(|&v| f16::from_f32(v)).collect()),
        g_idx: act.then_some(x.g_idx),
        bias: Some(FloatVec::F32((0..n).map(|i| i as f32).collect())),
    }
}

#[test]
fn gptq_shards_incl_act_order_equal_shards_of_the_dequantized_whole() {
    let mut rng = Rng(83);
    let mut tally = Tally::default();
    for bits in [2u8, 3, 4, 8] {
        for (k, n, g) in [(128, 128, 32i64), (256, 96, 64), (192, 64, -1), (384, 32, 128), (96, 64, 16)] {
            if (k % 32 != 0 || n % 32 != 0) && bits == 3 {
                continue;
            }
            for act in [false, true] {
                let layer = gptq(k, n, bits, g, act, &mut rng);
                let w = QuantWeight::Gptq(layer.clone());
                let whole = deq(&w);
                for shard in shards(n, k, &[1, 4, 8, 16, 32, 64], 12, &mut rng) {
                    let what = format!("{bits}-bit {k}x{n} g{g} act {act}");
                    let key = format!("act {act} dim {}", shard.dim());
                    match check(&w, &whole, n, k, shard, &what) {
                        Ok(()) => {
                            tally.add(key, true);
                            // A shard of a shard: act-order input shards keep every group.
                            let part = layer.shard(&shard).unwrap();
                            let (sub, sr, sc) = shard.apply(&whole, n, k).unwrap();
                            let other = Shard::Simple { dim: 1 - shard.dim(), rank: 0, world_size: 2 };
                            if let Ok(()) = check(&QuantWeight::Gptq(part), &sub, sr, sc, other, &what) {
                                tally.add(format!("act {act} twice"), true);
                            }
                        }
                        Err(
                            Error::Tp(TpError::ShardBoundary { .. }) | Error::Tp(TpError::ShardUneven { .. }),
                        ) => tally.add(key, false),
                        Err(e) => panic!("{what}: {shard:?}: unexpected {e:?}"),
                    }
                }
            }
        }
    }
    for key in ["act false dim 0", "act false dim 1", "act true dim 0", "act true dim 1", "act true twice"] {
        assert!(tally.ok(key) >= 30, "{key}: only {} shards", tally.ok(key));
    }
}

#[test]
fn gptq_act_order_input_shards_keep_every_group() {
    let mut rng = Rng(84);
    let layer = gptq(256, 64, 4, 32, true, &mut rng);
    let part = layer.shard(&Shard::Simple { dim: 1, rank: 1, world_size: 4 }).unwrap();
    assert_eq!((part.layout.k(), part.layout.groups()), (64, 8));
    assert_eq!(part.g_idx.as_deref(), Some(&layer.g_idx.as_ref().unwrap()[64..128]));
    assert_eq!((part.qzeros, part.scales), (layer.qzeros.clone(), layer.scales.clone()));
    // Still on a word row: 4-bit packs 8 inputs per word.
    assert_eq!(
        layer.shard(&Shard::Offset { dim: 1, offset: 4, len: 32 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "qweight word row", at: 4, multiple: 8 })
    );
    // No act-order: groups are still required.
    let plain = gptq(256, 64, 4, 32, false, &mut rng);
    assert_eq!(
        plain.shard(&Shard::Offset { dim: 1, offset: 8, len: 32 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "group", at: 8, multiple: 32 })
    );
    // A g_idx value outside the groups is refused before slicing.
    let mut bad = layer.clone();
    bad.g_idx.as_mut().unwrap()[3] = 99;
    assert!(matches!(
        bad.shard(&Shard::Simple { dim: 1, rank: 0, world_size: 2 }).unwrap_err(),
        Error::Kernel(KernelError::GroupIndex { index: 3, value: 99, .. })
    ));
    assert_eq!(
        GptqLayout::with_groups(64, 32, 4, 32, 1).unwrap_err(),
        Error::Kernel(KernelError::TooFewGroups { groups: 1, needed: 2 })
    );
}

fn awq(k: usize, n: usize, gs: usize, rng: &mut Rng) -> AwqLayer {
    let l = AwqLayout::new(k, n, gs).unwrap();
    AwqLayer {
        layout: l,
        qweight: (0..k * n / 8).map(|_| rng.next_u64() as i32).collect(),
        qzeros: (0..l.groups() * n / 8).map(|_| rng.next_u64() as i32).collect(),
        scales: float_vec((0..l.groups() * n).map(|_| rng.f32_in(-0.05, 0.05)).collect(), k + n),
        bias: Some(FloatVec::F32((0..n).map(|i| i as f32).collect())),
    }
}

#[test]
fn awq_shards_equal_shards_of_the_dequantized_whole() {
    let mut rng = Rng(85);
    let mut tally = Tally::default();
    for (k, n, gs) in [(64, 64, 32), (128, 48, 64), (96, 96, 32), (256, 32, 128), (64, 24, 64)] {
        let layer = awq(k, n, gs, &mut rng);
        let w = QuantWeight::Awq(layer.clone());
        let whole = deq(&w);
        for shard in shards(n, k, &[1, 4, 8, 16, 32, 64], 24, &mut rng) {
            let what = format!("awq {k}x{n} g{gs}");
            match check(&w, &whole, n, k, shard, &what) {
                Ok(()) => {
                    tally.add(format!("dim {}", shard.dim()), true);
                    // The bias follows the outputs and is whole along the inputs.
                    let part = layer.shard(&shard).unwrap();
                    let bias = layer.bias.as_ref().unwrap().to_f32();
                    let want = if shard.dim() == 0 { bias[shard.range(n).unwrap()].to_vec() } else { bias };
                    assert_eq!(part.bias.unwrap().to_f32(), want);
                }
                Err(Error::Tp(TpError::ShardBoundary { .. }) | Error::Tp(TpError::ShardUneven { .. })) => {
                    tally.add(format!("dim {}", shard.dim()), false)
                }
                Err(e) => panic!("{what}: {shard:?}: unexpected {e:?}"),
            }
        }
    }
    assert!(tally.ok("dim 0") >= 30 && tally.ok("dim 1") >= 30, "{:?}", tally.0);
    let layer = awq(128, 64, 32, &mut rng);
    assert_eq!(
        layer.shard(&Shard::Offset { dim: 0, offset: 4, len: 8 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "awq pack word", at: 4, multiple: 8 })
    );
    assert_eq!(
        layer.shard(&Shard::Offset { dim: 1, offset: 32, len: 48 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "group", at: 80, multiple: 32 })
    );
}

fn fp8(rows: usize, cols: usize, block: Option<(usize, usize)>, experts: usize, rng: &mut Rng) -> Fp8Layer {
    let format = if rng.below(2) == 0 { Fp8Format::E4M3 } else { Fp8Format::E5M2 };
    // Every code, NaNs too.
    common::fp8_layer(
        rows,
        cols,
        block,
        experts,
        format,
        0xff,
        &mut |rng| rng.f32_in(0.001, 2.0),
        rows + cols,
        rng,
    )
}

#[test]
fn fp8_shards_equal_shards_of_the_dequantized_whole() {
    let mut rng = Rng(86);
    let mut tally = Tally::default();
    let cases = [
        (300, 260, Some((128, 128))),
        (256, 192, Some((128, 128))),
        (24, 18, Some((4, 3))),
        (36, 40, Some((8, 16))),
        (100, 50, Some((128, 128))), // one block along both dims
        (48, 36, None),
        (7, 13, None),
    ];
    for (rows, cols, block) in cases {
        let layer = fp8(rows, cols, block, 1, &mut rng);
        let w = QuantWeight::Fp8(layer);
        let whole = deq(&w);
        for shard in shards(rows, cols, &[1, 3, 4, 8, 16, 32, 128], 12, &mut rng) {
            let what = format!("fp8 {rows}x{cols} {block:?}");
            let key = format!("{} dim {}", if block.is_some() { "block" } else { "tensor" }, shard.dim());
            match check(&w, &whole, rows, cols, shard, &what) {
                Ok(()) => tally.add(key, true),
                Err(Error::Tp(TpError::ShardUneven { .. })) => tally.add(key, false),
                Err(Error::Tp(TpError::ShardBoundary { .. })) => {
                    assert!(block.is_some(), "{what}: {shard:?}: per-tensor shards never cut a block");
                    tally.add(key, false)
                }
                Err(e) => panic!("{what}: {shard:?}: unexpected {e:?}"),
            }
        }
    }
    for key in ["block dim 0", "block dim 1", "tensor dim 0", "tensor dim 1"] {
        assert!(tally.ok(key) >= 20, "{key}: only {} shards", tally.ok(key));
    }
    let layer = fp8(300, 260, Some((128, 128)), 1, &mut rng);
    assert_eq!(
        layer.shard(&Shard::Simple { dim: 0, rank: 1, world_size: 2 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "fp8 scale block", at: 150, multiple: 128 })
    );
    assert_eq!(
        layer.shard(&Shard::Offset { dim: 1, offset: 0, len: 200 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "fp8 scale block", at: 200, multiple: 128 })
    );
    // Within one block any cut keeps its scale: columns 130..228 all use block column 1.
    assert!(layer.shard(&Shard::Offset { dim: 1, offset: 130, len: 98 }).is_ok());
    // The last block is partial: 256..300 ends at the end of the dim.
    let part = layer.shard(&Shard::Offset { dim: 0, offset: 256, len: 44 }).unwrap();
    assert_eq!((part.layout.scale_shape(), part.bias.unwrap().len()), ((1, 3), 44));
    let per_tensor =
        fp8(7, 13, None, 1, &mut rng).shard(&Shard::Offset { dim: 1, offset: 5, len: 3 }).unwrap();
    assert_eq!(per_tensor.layout, Fp8Layout::per_tensor(7, 3).unwrap());
    assert_eq!(
        fp8(8, 8, None, 2, &mut rng).shard(&Shard::full(0)).unwrap_err(),
        Error::Kernel(KernelError::StackedExperts { experts: 2 })
    );
}

#[test]
fn int8_and_int4_shards_equal_shards_of_the_dequantized_whole() {
    let mut rng = Rng(87);
    let mut ran = 0;
    for (rows, cols, group) in [(12, 64, 16), (9, 48, 8), (16, 32, 32)] {
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let weights = [
            QuantWeight::Int8(
                intx::quantize_int8(
                    &x,
                    rows,
                    cols,
                    Granularity::PerChannel,
                    quant_kernels::Parallelism::SERIAL,
                )
                .unwrap(),
            ),
            QuantWeight::Int8(
                intx::quantize_int8(
                    &x,
                    rows,
                    cols,
                    Granularity::PerTensor,
                    quant_kernels::Parallelism::SERIAL,
                )
                .unwrap(),
            ),
            QuantWeight::Int4(
                intx::quantize_int4(&x, rows, cols, group, quant_kernels::Parallelism::SERIAL).unwrap(),
            ),
        ];
        for w in &weights {
            let whole = deq(w);
            for shard in shards(rows, cols, &[1, 2, 3, 8, 16], 10, &mut rng) {
                match check(w, &whole, rows, cols, shard, w.scheme()) {
                    Ok(()) => ran += 1,
                    Err(Error::Tp(TpError::ShardUneven { .. })) => {}
                    Err(Error::Tp(TpError::ShardBoundary { what: "int4 group", .. })) if shard.dim() == 1 => {
                    }
                    Err(e) => panic!("{}: {shard:?}: unexpected {e:?}", w.scheme()),
                }
            }
        }
    }
    assert!(ran >= 150, "only {ran} shards");
    let t = intx::quantize_int4(&vec![0.5; 4 * 32], 4, 32, 8, quant_kernels::Parallelism::SERIAL).unwrap();
    assert_eq!(
        t.shard(&Shard::Offset { dim: 1, offset: 4, len: 8 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "int4 group", at: 4, multiple: 8 })
    );
}

/// Rows `range` of `[rows, cols]`.
fn rows_of(w: &[f32], cols: usize, range: std::ops::Range<usize>) -> Vec<f32> {
    w[range.start * cols..range.end * cols].to_vec()
}

/// The per-rank pieces put back together: gate/up rows stacked, down columns side by side.
fn gather(pieces: &[ExpertMlp], hidden: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut gate, mut up) = (Vec::new(), Vec::new());
    let downs: Vec<Vec<f32>> = pieces.iter().map(|p| deq(&p.down)).collect();
    for p in pieces {
        gate.extend(deq(&p.gate));
        up.extend(deq(&p.up));
    }
    let mut down = Vec::new();
    for h in 0..hidden {
        for d in &downs {
            let c = d.len() / hidden;
            down.extend_from_slice(&d[h * c..(h + 1) * c]);
        }
    }
    (gate, up, down)
}

#[test]
fn packed_dense_experts_split_like_mistral_rs_and_shard_back_to_the_whole() {
    let mut rng = Rng(88);
    for (experts, hidden, inter, dtype) in [(3, 8, 12, 0), (2, 16, 8, 1), (4, 6, 24, 2)] {
        // Per-expert nn.Linear weights first, then mistral.rs's stacked [in, out] tensors.
        let gates: Vec<Vec<f32>> =
            (0..experts).map(|_| (0..inter * hidden).map(|_| rng.f32_in(-1.0, 1.0)).collect()).collect();
        let ups: Vec<Vec<f32>> =
            (0..experts).map(|_| (0..inter * hidden).map(|_| rng.f32_in(-1.0, 1.0)).collect()).collect();
        let downs: Vec<Vec<f32>> =
            (0..experts).map(|_| (0..hidden * inter).map(|_| rng.f32_in(-1.0, 1.0)).collect()).collect();
        let mut gate_up = vec![0f32; experts * hidden * 2 * inter];
        let mut down = vec![0f32; experts * inter * hidden];
        for e in 0..experts {
            for h in 0..hidden {
                for o in 0..inter {
                    gate_up[(e * hidden + h) * 2 * inter + o] = gates[e][o * hidden + h];
                    gate_up[(e * hidden + h) * 2 * inter + inter + o] = ups[e][o * hidden + h];
                    down[(e * inter + o) * hidden + h] = downs[e][h * inter + o];
                }
            }
        }
        // Round the test values to the dtype first so the comparisons are exact.
        let (gate_up, down) = (float_vec(gate_up, dtype), float_vec(down, dtype));
        let round = |v: &Vec<f32>| float_vec(v.clone(), dtype).to_f32();
        let dims = MoeDims { experts, hidden, intermediate: inter };
        let whole = split_packed_experts(&gate_up, &down, dims, 0, 1).unwrap();
        assert_eq!(whole.len(), experts);
        for (e, x) in whole.iter().enumerate() {
            assert!(
                matches!(&x.gate, QuantWeight::Dense(DenseWeight { rows, cols, w }) if (*rows, *cols) == (inter, hidden) && w.dtype() == gate_up.dtype())
            );
            assert!(
                matches!(&x.down, QuantWeight::Dense(DenseWeight { rows, cols, .. }) if (*rows, *cols) == (hidden, inter))
            );
            assert_eq!(deq(&x.gate), round(&gates[e]), "expert {e} gate");
            assert_eq!(deq(&x.up), round(&ups[e]), "expert {e} up");
            assert_eq!(deq(&x.down), round(&downs[e]), "expert {e} down");
        }
        for world in [1usize, 2, 4] {
            let per_rank: Vec<Vec<ExpertMlp>> =
                (0..world).map(|r| split_packed_experts(&gate_up, &down, dims, r, world).unwrap()).collect();
            for e in 0..experts {
                let pieces: Vec<ExpertMlp> = per_rank.iter().map(|p| p[e].clone()).collect();
                for (r, p) in pieces.iter().enumerate() {
                    assert_eq!(*p, whole[e].shard(r, world).unwrap(), "expert {e} rank {r}/{world}");
                }
                let (g, u, d) = gather(&pieces, hidden);
                assert_eq!((g, u, d), (deq(&whole[e].gate), deq(&whole[e].up), deq(&whole[e].down)));
            }
        }
    }
    let dims = MoeDims { experts: 2, hidden: 4, intermediate: 6 };
    let (gu, d) = (FloatVec::F32(vec![0.0; 2 * 4 * 12]), FloatVec::F32(vec![0.0; 2 * 6 * 4]));
    assert_eq!(
        split_packed_experts(&gu, &d, dims, 0, 4).unwrap_err(),
        Error::Tp(TpError::ShardUneven { len: 6, world_size: 4 })
    );
    assert!(matches!(
        split_packed_experts(&gu, &FloatVec::F32(vec![0.0; 5]), dims, 0, 1).unwrap_err(),
        Error::Kernel(KernelError::LengthMismatch { what: "down_proj", .. })
    ));
}

#[test]
fn stacked_fp8_experts_split_then_dequantize_like_dequantize_then_split() {
    let mut rng = Rng(89);
    let (experts, hidden, inter) = (3, 96, 128);
    for block in [Some((32, 32)), Some((64, 64)), None] {
        let gate = fp8(inter, hidden, block, experts, &mut rng);
        let up = fp8(inter, hidden, block, experts, &mut rng);
        let down = fp8(hidden, inter, block, experts, &mut rng);
        for stacked in [&gate, &up, &down] {
            let (rows, cols) = (stacked.layout.rows(), stacked.layout.cols());
            let all: Vec<f32> = stacked.dequantize_experts(SERIAL).unwrap();
            let split = split_fp8_experts(stacked).unwrap();
            assert_eq!(split.len(), experts);
            for (e, one) in split.iter().enumerate() {
                assert_eq!(one.experts, 1);
                let got: Vec<f32> = one.dequantize(SERIAL).unwrap();
                assert!(same_bits(&got, &rows_of(&all, rows * cols, e..e + 1)), "expert {e} {block:?}");
                let bias = stacked.bias.as_ref().unwrap().to_f32();
                assert_eq!(one.bias.as_ref().unwrap().to_f32(), rows_of(&bias, rows, e..e + 1));
            }
        }
        let whole = shard_fp8_experts(&gate, &up, &down, 0, 1).unwrap();
        for world in [1usize, 2, 4] {
            // (64-row blocks and 4 ranks: each rank's 32 rows lie within one block.)
            let per_rank: Vec<Vec<ExpertMlp>> =
                (0..world).map(|r| shard_fp8_experts(&gate, &up, &down, r, world).unwrap()).collect();
            for e in 0..experts {
                let pieces: Vec<ExpertMlp> = per_rank.iter().map(|p| p[e].clone()).collect();
                let (g, u, d) = gather(&pieces, hidden);
                assert!(same_bits(&g, &deq(&whole[e].gate)), "expert {e} gate {block:?} world {world}");
                assert!(same_bits(&u, &deq(&whole[e].up)), "expert {e} up {block:?} world {world}");
                assert!(same_bits(&d, &deq(&whole[e].down)), "expert {e} down {block:?} world {world}");
            }
        }
    }
    // 96 intermediate rows over 2 ranks with 64-row blocks: rank 1 starts inside a block.
    let (g96, d96) = (fp8(96, 32, Some((64, 64)), 2, &mut rng), fp8(32, 96, Some((64, 64)), 2, &mut rng));
    assert!(shard_fp8_experts(&g96, &g96, &d96, 0, 2).is_ok());
    assert_eq!(
        shard_fp8_experts(&g96, &g96, &d96, 1, 2).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "fp8 scale block", at: 48, multiple: 64 })
    );
    let gate = fp8(16, 8, None, 2, &mut rng);
    assert_eq!(
        shard_fp8_experts(&gate, &gate, &fp8(8, 16, None, 3, &mut rng), 0, 1).unwrap_err(),
        Error::Kernel(KernelError::LengthMismatch { what: "down_proj experts", expected: 2, got: 3 })
    );
    let mut short = gate.clone();
    short.codes.pop();
    assert!(matches!(
        split_fp8_experts(&short).unwrap_err(),
        Error::Kernel(KernelError::LengthMismatch { what: "codes", .. })
    ));
}

/// Each scheme names its own [`quant_kernels::QuantMethod`]; a shard names the same one
/// (act-order GPTQ cut along its outputs keeps its permutation; a per-tensor FP8 stays one).
#[test]
fn every_scheme_names_its_method_and_shards_keep_it() {
    use quant_kernels::QuantMethod;
    let mut rng = Rng(91);
    let x: Vec<f32> = (0..16 * 64).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let half = Shard::Simple { dim: 0, rank: 1, world_size: 2 };
    let (blocked, per_tensor) = (fp8(256, 128, Some((128, 64)), 1, &mut rng), fp8(64, 48, None, 1, &mut rng));
    let cases: Vec<(QuantWeight, QuantMethod)> = vec![
        (
            hqq_weight(64, 32, 16, Axis::One, 4, 0, &mut rng).unwrap().into(),
            QuantMethod::Hqq { bits: 4, group: 16, axis: Axis::One },
        ),
        (
            gptq(128, 64, 4, 32, true, &mut rng).into(),
            QuantMethod::Gptq { bits: 4, group: Some(32), act_order: true },
        ),
        (
            gptq(128, 64, 3, -1, false, &mut rng).into(),
            QuantMethod::Gptq { bits: 3, group: None, act_order: false },
        ),
        (awq(128, 64, 32, &mut rng).into(), QuantMethod::Awq { group: 32 }),
        (blocked.clone().into(), QuantMethod::Fp8 { format: blocked.format, block: Some((128, 64)) }),
        (per_tensor.clone().into(), QuantMethod::Fp8 { format: per_tensor.format, block: None }),
        (
            intx::quantize_int8(&x, 16, 64, Granularity::PerTensor, quant_kernels::Parallelism::SERIAL)
                .unwrap()
                .into(),
            QuantMethod::Int8Symmetric { per_channel: false },
        ),
        (
            intx::quantize_int4(&x, 16, 64, 16, quant_kernels::Parallelism::SERIAL).unwrap().into(),
            QuantMethod::Int4Asymmetric { group: 16 },
        ),
    ];
    for (w, method) in cases {
        assert_eq!(w.method(), Some(method), "{}", w.scheme());
        assert_eq!(w.shard(&half).unwrap().method(), Some(method), "{} shard", w.scheme());
    }
    assert_eq!(QuantWeight::dense(2, 2, vec![0f32; 4]).method(), None);
}

#[test]
fn routing_equals_transformers_softmax_topk() {
    // tests/fixtures/moe/routing.safetensors: torch's softmax (f32), topk and renormalization
    // as transformers' Mixtral (k 2, renormalized) and Qwen2-MoE (k 4, norm_topk_prob off/on)
    // route, over 33 tokens and 8 experts.
    let bytes = crate::common::fixture("moe/routing.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits = crate::common::T::get(&st, "logits").f32s();
    for (name, k, renorm) in [("mixtral", 2, true), ("qwen_plain", 4, false), ("qwen_norm", 4, true)] {
        let want_ids: Vec<usize> =
            crate::common::T::get(&st, &format!("{name}.ids")).i64s().iter().map(|&i| i as usize).collect();
        let want_w = crate::common::T::get(&st, &format!("{name}.weights")).f32s();
        let (ids, w) = quant_kernels::tp::route_topk(&logits, 33, 8, k, renorm).unwrap();
        assert_eq!(ids, want_ids, "{name}");
        for (i, (a, b)) in w.iter().zip(&want_w).enumerate() {
            // Probabilities in [0, 1]: torch's vectorized exp and sums differ by a few ulps.
            assert!((a - b).abs() <= 8.0 * f32::EPSILON, "{name} [{i}]: {a} vs {b}");
        }
    }
    let bad = quant_kernels::tp::route_topk(&logits, 33, 8, 9, true);
    assert!(matches!(bad, Err(quant_kernels::Error::Kernel(_))));
    assert!(quant_kernels::tp::route_topk(&logits, 32, 8, 2, true).is_err());
}
