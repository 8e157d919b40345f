//! Tensor parallelism: shards (dense and packed GPTQ, bit-exact against sharding the
//! dequantized whole), the in-process communicator (deterministic sums, errors instead of
//! hangs), column/row-parallel layers against the single-device forward for world sizes 1, 2,
//! 3, 4, a two-layer MLP on the tiny GPTQ checkpoint, and KV-head sharding.

mod common;

use common::{Rng, layer};
use half::f16;
use quant_kernels::gptq::{GptqCheckpoint, GptqLayer, GptqLayout, ZeroFormat};
use quant_kernels::matmul::{QuantLinear, QuantWeight};
use quant_kernels::tp::{
    ColumnParallelLinear, Comm, LocalComm, RowParallelLinear, Shard, kv_head_shard, n_kv_groups,
};
use quant_kernels::{Error, FloatVec, Parallelism};
use std::time::Duration;

fn gptq(k: usize, n: usize, bits: u8, g: i64, act: bool, rng: &mut Rng) -> GptqLayer {
    let l = GptqLayout::new(k, n, bits, g).unwrap();
    let x = layer(&l, act, rng);
    GptqLayer {
        layout: l,
        format: ZeroFormat::V1,
        qweight: x.qweight,
        qzeros: x.qzeros,
        scales: FloatVec::F16(x.scales.iter().map(|&v| f16::from_f32(v)).collect()),
        g_idx: act.then_some(x.g_idx),
        bias: Some(FloatVec::F32((0..n).map(|i| i as f32 * 0.01).collect())),
    }
}

/// `[out, in]` f32 of a GPTQ layer.
fn dense(g: &GptqLayer) -> Vec<f32> {
    g.dequantize_linear::<f32>(Parallelism::Serial).unwrap()
}

#[test]
fn packed_gptq_shards_equal_shards_of_the_dequantized_whole() {
    let mut rng = Rng(11);
    let mut ran = 0;
    for bits in [2u8, 3, 4, 8] {
        for (k, n, g) in [(128, 128, 32i64), (256, 96, 64), (192, 64, -1)] {
            for act in [false, true] {
                let layer = gptq(k, n, bits, g, act, &mut rng);
                let whole = dense(&layer);
                for world in [1usize, 2, 4, 3] {
                    for dim in [0usize, 1] {
                        for rank in 0..world {
                            let shard = Shard::Simple { dim, rank, world_size: world };
                            let Ok(part) = shard.apply_gptq(&layer) else { continue };
                            let (expected, _, _) = shard.apply(&whole, n, k).unwrap();
                            let got = dense(&part);
                            assert!(
                                got.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{bits}-bit {k}x{n} g{g} act {act} dim {dim} {rank}/{world}"
                            );
                            ran += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(ran > 200, "only {ran} shards checked");
}

#[test]
fn bad_shards_are_typed_errors() {
    let mut rng = Rng(12);
    let layer = gptq(128, 64, 4, 32, false, &mut rng);
    // 64 outputs over 3 ranks; 128 inputs split at 48 (not a group of 32).
    assert_eq!(
        Shard::Simple { dim: 0, rank: 0, world_size: 3 }.apply_gptq(&layer).unwrap_err(),
        Error::ShardUneven { len: 64, world_size: 3 }
    );
    assert_eq!(
        Shard::Offset { dim: 1, offset: 48, len: 32 }.apply_gptq(&layer).unwrap_err(),
        Error::ShardBoundary { what: "group", at: 48, multiple: 32 }
    );
    assert_eq!(
        Shard::Offset { dim: 0, offset: 4, len: 8 }.apply_gptq(&layer).unwrap_err(),
        Error::ShardBoundary { what: "zero-point pack word", at: 4, multiple: 8 }
    );
    // Act-order along the inputs: any word row, every group kept (tests/tp_shard.rs).
    let act = Shard::Offset { dim: 1, offset: 8, len: 64 }
        .apply_gptq(&gptq(128, 64, 4, 32, true, &mut rng))
        .unwrap();
    assert_eq!((act.layout.k(), act.layout.groups()), (64, 4));
    assert_eq!(Shard::Simple { dim: 2, rank: 0, world_size: 1 }.range(4).unwrap_err(), Error::ShardDim(2));
    assert_eq!(
        Shard::Simple { dim: 0, rank: 2, world_size: 2 }.range(4).unwrap_err(),
        Error::ShardRank { rank: 2, world_size: 2 }
    );
    assert_eq!(
        Shard::Offset { dim: 0, offset: 3, len: 2 }.range(4).unwrap_err(),
        Error::ShardRange { offset: 3, len: 2, dim_len: 4 }
    );
}

/// Run `f(comm)` on every rank of a new group, one thread each.
fn on_ranks<T: Send>(world: usize, f: impl Fn(&LocalComm) -> T + Sync) -> Vec<T> {
    let ranks = LocalComm::group_with_timeout(world, Duration::from_secs(20));
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks.into_iter().map(|c| s.spawn(move || f(&c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn all_reduce_is_the_rank_order_sum_on_every_rank() {
    for world in [1usize, 2, 3, 4] {
        let data = |r: usize| -> Vec<f32> {
            (0..1000).map(|i| ((i * 7 + r * 13) % 101) as f32 * 0.37 - 11.0).collect()
        };
        let mut expected = data(0);
        for r in 1..world {
            for (e, x) in expected.iter_mut().zip(data(r)) {
                *e += x;
            }
        }
        for _ in 0..3 {
            let got = on_ranks(world, |c| {
                let mut v = data(c.rank());
                c.all_reduce_sum(&mut v).unwrap();
                let gathered = c.all_gather(&[c.rank() as f32]).unwrap();
                let mut b = vec![c.rank() as f32; 3];
                c.broadcast(&mut b, world - 1).unwrap();
                c.barrier().unwrap();
                (v, gathered, b)
            });
            for (v, gathered, b) in got {
                assert!(v.iter().zip(&expected).all(|(a, e)| a.to_bits() == e.to_bits()));
                assert_eq!(gathered, (0..world).map(|r| r as f32).collect::<Vec<_>>());
                assert_eq!(b, vec![(world - 1) as f32; 3]);
            }
        }
    }
}

/// Rank-order sum `((x0 + x1) + x2) + ...` of `data(0..world)`.
fn rank_order_sum(world: usize, data: impl Fn(usize) -> Vec<f32>) -> Vec<f32> {
    let mut sum = data(0);
    for r in 1..world {
        sum.iter_mut().zip(data(r)).for_each(|(e, x)| *e += x);
    }
    sum
}

#[test]
fn large_all_reduces_take_the_chunked_path_with_the_same_bits() {
    use quant_kernels::tp::CHUNKED_ALL_REDUCE_MIN as MIN;
    // Values of very different magnitudes, so another summation order gives other bits.
    let data = |r: usize, len: usize, salt: usize| -> Vec<f32> {
        let mut rng = Rng((r * 7919 + len * 31 + salt) as u64 + 1);
        (0..len).map(|_| rng.f32_in(-0.5, 0.5) * [1e-3f32, 1.0, 1e4][rng.below(3) as usize]).collect()
    };
    for world in [2usize, 3, 4] {
        // Lengths not divisible by the world size, the threshold itself, just below it (the
        // whole-buffer path), a shrink and regrow of the group's kept buffers, and buffers of
        // several segments (a segment is at most 1 Mi values summed over the ranks) with a
        // short last one.
        let lens = [MIN + 7, MIN, MIN - 1, 3 * MIN + 1, MIN + 2, (5 << 20) / 2 + 12345, 2 * MIN + 5];
        let got = on_ranks(world, |c| {
            lens.iter()
                .enumerate()
                .map(|(salt, &len)| {
                    let mut v = data(c.rank(), len, salt);
                    // Ranks arrive in varying orders.
                    if (c.rank() + salt) % 3 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    c.all_reduce_sum(&mut v).unwrap();
                    v
                })
                .collect::<Vec<_>>()
        });
        for (salt, &len) in lens.iter().enumerate() {
            let want = rank_order_sum(world, |r| data(r, len, salt));
            // The order matters for these values: a reversed sum differs somewhere.
            let reversed = {
                let mut s = data(world - 1, len, salt);
                for r in (0..world - 1).rev() {
                    s.iter_mut().zip(data(r, len, salt)).for_each(|(e, x)| *e += x);
                }
                s
            };
            if world > 2 {
                assert!(reversed.iter().zip(&want).any(|(a, b)| a.to_bits() != b.to_bits()));
            }
            for (rank, per_rank) in got.iter().enumerate() {
                let v = &per_rank[salt];
                assert!(
                    v.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "world {world} rank {rank} len {len}"
                );
            }
        }
    }
    // Lengths on both sides of the threshold meet in the same exchange: a length error on
    // every rank, and the group still works afterwards.
    let r = on_ranks(2, |c| {
        let mut v = vec![1.0; if c.rank() == 0 { MIN } else { MIN - 1 }];
        let first = c.all_reduce_sum(&mut v);
        let unchanged = v.iter().all(|&x| x == 1.0);
        let mut w = vec![c.rank() as f32 + 1.0; MIN + 3];
        let second = c.all_reduce_sum(&mut w).map(|_| w.iter().all(|&x| x == 3.0));
        (first, unchanged, second)
    });
    for (first, unchanged, second) in r {
        assert!(matches!(first, Err(Error::CommLength { .. })), "{first:?}");
        assert!(unchanged, "a failed all-reduce left the buffer changed");
        assert_eq!(second, Ok(true));
    }
    // Another collective against a large all-reduce: a mismatch on every rank.
    let r = on_ranks(2, |c| if c.rank() == 0 { c.barrier() } else { c.all_reduce_sum(&mut vec![1.0; MIN]) });
    assert!(r.iter().all(|e| matches!(e, Err(Error::CommMismatch { .. }))), "{r:?}");
}

#[test]
fn mismatches_and_failures_are_errors_on_every_rank_not_hangs() {
    // Different lengths: every rank fails.
    let r = on_ranks(3, |c| c.all_reduce_sum(&mut vec![0.0; 4 + c.rank()]));
    assert!(r.iter().all(|e| matches!(e, Err(Error::CommLength { .. }))), "{r:?}");
    // Different collectives: every rank fails.
    let r = on_ranks(2, |c| if c.rank() == 0 { c.barrier() } else { c.all_reduce_sum(&mut [1.0]) });
    assert!(r.iter().all(|e| matches!(e, Err(Error::CommMismatch { .. }))), "{r:?}");
    // A rank that returns early (its communicator dropped): the others get an error.
    let ranks = LocalComm::group_with_timeout(3, Duration::from_secs(20));
    let r: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ranks
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    if c.rank() == 1 {
                        return Err(Error::ShardDim(9)); // this rank fails before the collective
                    }
                    c.all_reduce_sum(&mut [1.0])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        matches!(r[0], Err(Error::CommPeerGone { rank: 1 }))
            && matches!(r[2], Err(Error::CommPeerGone { rank: 1 }))
    );
    // A rank that never arrives but stays alive: a timeout.
    let ranks = LocalComm::group_with_timeout(2, Duration::from_millis(200));
    let r: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ranks
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    if c.rank() == 1 {
                        std::thread::sleep(Duration::from_millis(600));
                        return Ok(());
                    }
                    c.barrier()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(matches!(r[0], Err(Error::CommTimeout { rank: 0, .. })), "{r:?}");
}

/// `|got - want| <= 1e-5 * magnitude` per output (magnitude = sum of |terms| + |bias|).
fn within(got: &[f32], want: &[f32], magnitude: &[f64], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, ((a, b), m)) in got.iter().zip(want).zip(magnitude).enumerate() {
        assert!(((a - b).abs() as f64) <= 1e-5 * m, "{what}: [{i}] {a} vs {b} (magnitude {m})");
    }
}

#[test]
fn parallel_layers_equal_the_single_device_forward() {
    let mut rng = Rng(13);
    let (inp, out, batch) = (256usize, 192usize, 3usize);
    let x: Vec<f32> = (0..batch * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let dense_w: Vec<f32> = (0..out * inp).map(|_| rng.f32_in(-0.1, 0.1)).collect();
    let bias = FloatVec::F32((0..out).map(|i| i as f32 * 0.001).collect());
    let weights = [
        QuantWeight::Dense { rows: out, cols: inp, w: FloatVec::F32(dense_w) },
        QuantWeight::Gptq(gptq(inp, out, 4, 64, false, &mut rng)),
    ];
    for w in &weights {
        let single = QuantLinear::new(w.clone(), Some(bias.clone())).unwrap();
        let want: Vec<f32> = single.forward(&x, batch, Parallelism::Serial).unwrap();
        let magnitude = single.magnitude_reference(&x, batch).unwrap();
        for world in [1usize, 2, 3, 4] {
            // Column-parallel: each rank's outputs are the single-device ones, bit for bit.
            let runs = on_ranks(world, |c| {
                let col = ColumnParallelLinear::new(w, Some(&bias), c.rank(), world)?;
                col.forward_gathered(c, &x, batch, Parallelism::Serial)
            });
            for r in runs {
                match r {
                    Ok(y) => assert_eq!(y, want, "column world {world}"),
                    Err(e) => assert!(
                        world == 3 && matches!(e, Error::ShardUneven { .. } | Error::ShardBoundary { .. }),
                        "{e}"
                    ),
                }
            }
            // Row-parallel: each rank multiplies its input slice; the sum is within 1e-5, and
            // repeated runs are bit-identical.
            let row_run = || {
                on_ranks(world, |c| {
                    let row = RowParallelLinear::new(w, Some(&bias), c.rank(), world)?;
                    let per = inp / world;
                    let xs: Vec<f32> = x
                        .chunks_exact(inp)
                        .flat_map(|r| r[c.rank() * per..(c.rank() + 1) * per].to_vec())
                        .collect();
                    row.forward(c, &xs, batch, Parallelism::Serial)
                })
            };
            let (a, b) = (row_run(), row_run());
            for (ya, yb) in a.iter().zip(&b) {
                match (ya, yb) {
                    (Ok(ya), Ok(yb)) => {
                        within(ya, &want, &magnitude, &format!("row world {world}"));
                        assert_eq!(ya, yb, "row world {world}: not deterministic");
                    }
                    (Err(e), _) => assert!(world == 3, "{e}"),
                    _ => panic!("one run failed, the other did not"),
                }
            }
        }
    }
}

#[test]
fn merged_qkv_shards_each_part() {
    let mut rng = Rng(14);
    let inp = 64;
    let parts: Vec<QuantWeight> =
        [128usize, 64, 64].iter().map(|&n| QuantWeight::Gptq(gptq(inp, n, 4, 32, false, &mut rng))).collect();
    let x: Vec<f32> = (0..inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let single: Vec<Vec<f32>> = parts
        .iter()
        .map(|w| QuantLinear::new(w.clone(), None).unwrap().forward(&x, 1, Parallelism::Serial).unwrap())
        .collect();
    let world = 2;
    let ys = on_ranks(world, |c| {
        let refs: Vec<(&QuantWeight, Option<&FloatVec>)> = parts.iter().map(|w| (w, None)).collect();
        ColumnParallelLinear::new_merged(&refs, None, c.rank(), world)
            .unwrap()
            .forward(&x, 1, Parallelism::Serial)
            .unwrap()
    });
    for (r, y) in ys.iter().enumerate() {
        // Rank r holds [q_r; k_r; v_r].
        let mut want = Vec::new();
        for s in &single {
            let per = s.len() / world;
            want.extend_from_slice(&s[r * per..(r + 1) * per]);
        }
        assert_eq!(*y, want);
    }
}

#[test]
fn two_layer_mlp_on_the_tiny_gptq_checkpoint() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gptq_checkpoints/tiny-llama-gptq-8bit-single");
    let ck = GptqCheckpoint::open(&dir).unwrap();
    let p = "model.layers.0.mlp";
    let gate = QuantWeight::Gptq(ck.load(&format!("{p}.gate_proj")).unwrap());
    let up = QuantWeight::Gptq(ck.load(&format!("{p}.up_proj")).unwrap());
    let down = QuantWeight::Gptq(ck.load(&format!("{p}.down_proj")).unwrap());
    let hidden = 64;
    let batch = 2;
    let mut rng = Rng(15);
    let x: Vec<f32> = (0..batch * hidden).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let silu = |v: f32| v / (1.0 + (-v).exp());
    let mlp = |c: &dyn Comm, world: usize| -> quant_kernels::Result<Vec<f32>> {
        let (g, u) = (
            ColumnParallelLinear::new(&gate, None, c.rank(), world)?,
            ColumnParallelLinear::new(&up, None, c.rank(), world)?,
        );
        let d = RowParallelLinear::new(&down, None, c.rank(), world)?;
        let (gy, uy) =
            (g.forward(&x, batch, Parallelism::Serial)?, u.forward(&x, batch, Parallelism::Serial)?);
        let h: Vec<f32> = gy.iter().zip(&uy).map(|(&a, &b)| silu(a) * b).collect();
        d.forward(c, &h, batch, Parallelism::Serial)
    };
    let one = on_ranks(1, |c| mlp(c, 1).unwrap()).remove(0);
    assert!(one.iter().any(|v| v.abs() > 1e-3), "the MLP output is all zeros");
    // The error scale of the last sum: |h| . |W_down| on one device.
    let single = |w: &QuantWeight| QuantLinear::new(w.clone(), None).unwrap();
    let (gy, uy): (Vec<f32>, Vec<f32>) = (
        single(&gate).forward(&x, batch, Parallelism::Serial).unwrap(),
        single(&up).forward(&x, batch, Parallelism::Serial).unwrap(),
    );
    let h: Vec<f32> = gy.iter().zip(&uy).map(|(&a, &b)| silu(a) * b).collect();
    let magnitude = single(&down).magnitude_reference(&h, batch).unwrap();
    for world in [2usize, 4] {
        for y in on_ranks(world, |c| mlp(c, world).unwrap()) {
            within(&y, &one, &magnitude, &format!("mlp world {world}"));
        }
    }
}

#[test]
fn kv_heads_split_or_replicate() {
    // 8 KV heads over 4 ranks: two heads each.
    for r in 0..4 {
        let s = kv_head_shard(8, 16, r, 4).unwrap();
        assert_eq!(s.range(128).unwrap(), r * 32..(r + 1) * 32);
    }
    // 2 KV heads over 8 ranks: each head on 4 consecutive ranks.
    let heads: Vec<_> = (0..8).map(|r| kv_head_shard(2, 16, r, 8).unwrap().range(32).unwrap()).collect();
    assert_eq!(heads, [0..16, 0..16, 0..16, 0..16, 16..32, 16..32, 16..32, 16..32]);
    assert_eq!(kv_head_shard(2, 16, 0, 1).unwrap().range(32).unwrap(), 0..32);
    assert_eq!(n_kv_groups(2, 32, 8).unwrap(), 4);
    assert_eq!(n_kv_groups(8, 32, 2).unwrap(), 4);
    // Neither divides, or zero heads: errors (mistral.rs would divide by zero or mis-shard).
    assert_eq!(kv_head_shard(3, 16, 0, 4).unwrap_err(), Error::KvHeads { kv_heads: 3, world_size: 4 });
    assert_eq!(kv_head_shard(0, 16, 0, 2).unwrap_err(), Error::KvHeads { kv_heads: 0, world_size: 2 });
    assert!(n_kv_groups(2, 30, 4).is_err());
    assert_eq!(kv_head_shard(2, 16, 4, 4).unwrap_err(), Error::ShardRank { rank: 4, world_size: 4 });
}
