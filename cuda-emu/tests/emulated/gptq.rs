//! ptx/gptq.cu, run on the CPU through the shim, equals the crate's GPTQ reference bit for bit for
//! every width x element type x (plain | act-order) x (v1 | v2) over a shape table and several
//! launch shapes.

use half::{bf16, f16};
use quant_kernels::Elem;
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
use quant_kernels_cuda_emu::{EmuElem, LAUNCHES_2D, SplitMix as Rng, gptq_dequant};

fn case<T: Elem + EmuElem>(k: usize, n: usize, bits: u8, g: i64, act: bool, f: ZeroFormat) {
    let l = GptqLayout::new(k, n, bits, g).unwrap();
    let mut rng = Rng(k as u64 * 31 + n as u64 + bits as u64);
    let (qr, qc) = l.qweight_shape();
    let (zr, zc) = l.qzeros_shape();
    let qweight: Vec<i32> = (0..qr * qc).map(|_| rng.next_u64() as i32).collect();
    let qzeros: Vec<i32> = (0..zr * zc).map(|_| rng.next_u64() as i32).collect();
    let scales: Vec<T> =
        (0..l.groups() * n).map(|_| T::from_f32((rng.next_u64() % 1000) as f32 * 1e-4 - 0.05)).collect();
    let mut g_idx = l.default_g_idx();
    if act {
        for i in (1..k).rev() {
            g_idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
    }
    let mut want = vec![T::from_f32(0.0); k * n];
    gptq::gptq_dequantize_reference_into(&qweight, &scales, &qzeros, Some(&g_idx), f, &l, &mut want).unwrap();
    let format = if f == ZeroFormat::V1 { 0 } else { 1 };
    for (grid, block) in LAUNCHES_2D {
        let got = gptq_dequant(bits, &qweight, &qzeros, &scales, &g_idx, k, n, format, grid, block);
        let same = got.iter().zip(&want).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
        assert!(same, "{bits}-bit K{k} N{n} g{g} act {act} {f:?} {} grid {grid} block {block}", T::DTYPE);
    }
}

#[test]
fn gptq_kernel_source_equals_the_reference() {
    // 8-bit with N = 36, 44: not a multiple of 8, so the kernel's 4-column path runs. K not a
    // multiple of the 16-row chunks (K = 40 at 4 bits, 20 and 12 at 8 bits) ends in a partial
    // chunk; groups of 4/8/12/24 rows change inside chunks.
    let extra = [
        (8u8, 32usize, 36usize, -1i64),
        (8, 64, 44, 16),
        (8, 20, 36, 12),
        (8, 12, 16, 4),
        (4, 40, 24, 24),
        (4, 24, 16, 8),
        (2, 48, 32, 8),
        (3, 96, 32, 12),
    ];
    let table = [2u8, 3, 4, 8].into_iter().flat_map(|b| {
        [(32, 32, -1i64), (64, 96, 16), (96, 64, 40), (128, 160, 128)].map(|(k, n, g)| (b, k, n, g))
    });
    for (bits, k, n, g) in table.chain(extra) {
        {
            for (act, f) in [(false, ZeroFormat::V1), (true, ZeroFormat::V2), (true, ZeroFormat::V1)] {
                case::<f32>(k, n, bits, g, act, f);
                case::<f16>(k, n, bits, g, act, f);
                case::<bf16>(k, n, bits, g, act, f);
            }
        }
    }
}
