use half::f16;
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::{B4, Parallelism};
fn main() {
    let axis = if std::env::args().nth(1).as_deref() == Some("1") { Axis::One } else { Axis::Zero };
    let out16 = std::env::args().nth(2).as_deref() == Some("f16");
    let l = HqqLayout::new(
        std::env::var("ROWS").map(|v| v.parse().unwrap()).unwrap_or(4096),
        std::env::var("COLS").map(|v| v.parse().unwrap()).unwrap_or(4096),
        64,
        axis,
    )
    .unwrap();
    let w = vec![0x5au8; l.numel() / 2];
    let s = vec![f16::from_f32(0.01); l.groups()];
    let z = vec![f16::from_f32(7.0); l.groups()];
    let mut o32 = vec![0f32; l.numel()];
    let mut o16 = vec![f16::ZERO; l.numel()];
    let t = std::time::Instant::now();
    for _ in 0..std::env::var("IT").map(|v| v.parse().unwrap()).unwrap_or(200) {
        if out16 {
            hqq::dequant_into::<B4, f16, f16>(&w, &s, &z, &l, &mut o16, Parallelism::Serial).unwrap();
        } else {
            hqq::dequant_into::<B4, f16, f32>(&w, &s, &z, &l, &mut o32, Parallelism::Serial).unwrap();
        }
    }
    println!(
        "{:?} per call",
        t.elapsed() / std::env::var("IT").map(|v| v.parse::<u32>().unwrap()).unwrap_or(200)
    );
}
