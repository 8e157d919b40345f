//! Act-order GPTQ layers sorted by group (`gptq::sort`): the sorted layer dequantizes to the
//! original's rows in the returned order, bit for bit, at every width; the inverse order restores
//! the stored words; bad orders and group indices are typed errors.

use crate::common;
use quant_kernels::error::KernelError;

use common::{Rng, gptq_layer_f32};
use quant_kernels::gptq::sort::{check_permutation, group_order, inverse, permute_inputs, permute_rows};
use quant_kernels::gptq::{GptqLayer, GptqLayout};
use quant_kernels::{Error, Parallelism};

fn act_order_layer(rng: &mut Rng, k: usize, n: usize, bits: u8, group: i64) -> GptqLayer {
    gptq_layer_f32(GptqLayout::new(k, n, bits, group).unwrap(), true, rng)
}

#[test]
fn sorted_rows_dequantize_to_the_permuted_rows_bit_for_bit() {
    let mut rng = Rng(7);
    for bits in [2u8, 3, 4, 8] {
        for (k, n, group) in [(64, 32, 16), (128, 96, 32), (96, 64, 32), (256, 32, 128), (32, 32, -1)] {
            let layer = act_order_layer(&mut rng, k, n, bits, group);
            let (sorted, perm) = layer.sort_by_group().unwrap();
            let g = layer.g_idx.as_deref().unwrap();
            assert!(perm.windows(2).all(|w| g[w[0] as usize] <= g[w[1] as usize]), "{bits}-bit K{k}: sorted");
            // Equal-sized groups: the sorted layer is plain; one group (-1) is already sorted,
            // so it comes back unchanged.
            let want_g = if group < 0 { layer.g_idx.clone() } else { None };
            assert_eq!(sorted.g_idx, want_g, "{bits}-bit K{k}");
            let w = layer.dequantize_kn::<f32>(Parallelism::SERIAL).unwrap();
            let ws = sorted.dequantize_kn::<f32>(Parallelism::SERIAL).unwrap();
            for (kk, &p) in perm.iter().enumerate() {
                let same = ws[kk * n..][..n]
                    .iter()
                    .zip(&w[p as usize * n..][..n])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{bits}-bit K{k} N{n} g{group} row {kk}");
            }
            // And back: the inverse order restores the stored words exactly.
            assert_eq!(permute_rows(&sorted.qweight, &inverse(&perm), &layer.layout).unwrap(), layer.qweight);
            // Zero points, scales and bias are untouched.
            assert_eq!(
                (&sorted.qzeros, &sorted.scales, sorted.format),
                (&layer.qzeros, &layer.scales, layer.format)
            );
        }
    }
}

#[test]
fn uneven_groups_keep_a_sorted_g_idx_and_sorted_layers_stay() {
    let mut rng = Rng(8);
    let mut layer = act_order_layer(&mut rng, 64, 16, 4, 16);
    // One row of group 3 moves to group 0: sizes 17, 16, 16, 15.
    let at = layer.g_idx.as_ref().unwrap().iter().position(|&g| g == 3).unwrap();
    layer.g_idx.as_mut().unwrap()[at] = 0;
    let (sorted, perm) = layer.sort_by_group().unwrap();
    let g = sorted.g_idx.clone().expect("uneven groups are not k / group_size");
    assert!(g.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(g.iter().filter(|&&v| v == 0).count(), 17);
    let w = layer.dequantize_kn::<f32>(Parallelism::SERIAL).unwrap();
    let ws = sorted.dequantize_kn::<f32>(Parallelism::SERIAL).unwrap();
    for (kk, &p) in perm.iter().enumerate() {
        assert_eq!(ws[kk * 16..][..16], w[p as usize * 16..][..16]);
    }
    // Already sorted, or no g_idx: unchanged, in the identity order.
    let identity: Vec<u32> = (0..64).collect();
    assert_eq!(sorted.sort_by_group().unwrap(), (sorted.clone(), identity.clone()));
    let plain = GptqLayer { g_idx: None, ..layer.clone() };
    assert_eq!(plain.sort_by_group().unwrap(), (plain.clone(), identity));
}

#[test]
fn permuted_inputs_give_the_same_products() {
    // x' . W' = x . W: the sorted layer on permuted inputs, both through the f64 oracle.
    let mut rng = Rng(9);
    let layer = act_order_layer(&mut rng, 128, 48, 4, 32);
    let (sorted, perm) = layer.sort_by_group().unwrap();
    let x: Vec<f32> = (0..2 * 128).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let xs = permute_inputs(&x, 2, &perm).unwrap();
    let (w, ws) = (
        layer.dequantize_kn::<f32>(Parallelism::SERIAL).unwrap(),
        sorted.dequantize_kn::<f32>(Parallelism::SERIAL).unwrap(),
    );
    for b in 0..2 {
        for n in 0..48 {
            let y: f64 = (0..128).map(|k| x[b * 128 + k] as f64 * w[k * 48 + n] as f64).sum();
            let ys: f64 = (0..128).map(|k| xs[b * 128 + k] as f64 * ws[k * 48 + n] as f64).sum();
            assert!((y - ys).abs() <= 1e-12 * (1.0 + y.abs()), "b{b} n{n}: {y} vs {ys}");
        }
    }
}

#[test]
fn bad_orders_and_group_indices_are_errors() {
    let l = GptqLayout::new(8, 8, 4, 4).unwrap();
    let q = vec![0i32; 8];
    for perm in [vec![0u32, 1, 2, 3, 4, 5, 6, 6], vec![0, 1, 2, 3, 4, 5, 6, 8]] {
        assert!(matches!(
            permute_rows(&q, &perm, &l),
            Err(Error::Kernel(KernelError::Permutation { index: 7, .. }))
        ));
    }
    assert!(matches!(permute_rows(&q, &[0, 1], &l), Err(Error::Kernel(KernelError::LengthMismatch { .. }))));
    let id: Vec<u32> = (0..8).collect();
    assert!(matches!(permute_rows(&q[..4], &id, &l), Err(Error::Kernel(KernelError::LengthMismatch { .. }))));
    assert!(matches!(
        group_order(&[0, 0, 0, 0, 1, 1, 1, 2], &l),
        Err(Error::Kernel(KernelError::GroupIndex { index: 7, value: 2, .. }))
    ));
    assert!(matches!(
        group_order(&[0, -1, 0, 0, 1, 1, 1, 1], &l),
        Err(Error::Kernel(KernelError::GroupIndex { index: 1, .. }))
    ));
    assert!(matches!(group_order(&[0, 0, 0], &l), Err(Error::Kernel(KernelError::LengthMismatch { .. }))));
    assert!(matches!(
        permute_inputs(&[1.0f32; 5], 2, &[1, 0]),
        Err(Error::Kernel(KernelError::LengthMismatch { .. }))
    ));
    assert!(matches!(
        permute_inputs(&[1.0f32; 4], 2, &[1, 1]),
        Err(Error::Kernel(KernelError::Permutation { index: 1, .. }))
    ));
    assert!(matches!(
        check_permutation(&[u32::MAX], 1),
        Err(Error::Kernel(KernelError::Permutation { index: 0, .. }))
    ));
    let mut bad = act_order_layer(&mut Rng(1), 16, 8, 4, 8);
    bad.g_idx.as_mut().unwrap()[3] = 2;
    assert!(matches!(
        bad.sort_by_group(),
        Err(Error::Kernel(KernelError::GroupIndex { index: 3, value: 2, .. }))
    ));
    bad.qweight.pop();
    bad.g_idx = Some(vec![1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0]);
    assert!(matches!(bad.sort_by_group(), Err(Error::Kernel(KernelError::LengthMismatch { .. }))));
}
