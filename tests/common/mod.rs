//! Fixture loading shared by the integration tests.
#![allow(dead_code)]

use half::f16;
use safetensors::{Dtype, SafeTensors};

/// The path of a fixture file or directory under `tests/fixtures/`.
pub fn fixture_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

/// A fixture file from `tests/fixtures/`, read whole.
pub fn fixture(path: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One tensor: dtype, shape, little-endian bytes.
pub struct T {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl T {
    pub fn get(st: &SafeTensors<'_>, name: &str) -> T {
        let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        T { dtype: v.dtype(), shape: v.shape().to_vec(), bytes: v.data().to_vec() }
    }
    pub fn u8s(&self) -> Vec<u8> {
        assert_eq!(self.dtype, Dtype::U8);
        self.bytes.clone()
    }
    pub fn i32s(&self) -> Vec<i32> {
        self.bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap())).collect()
    }
    pub fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.dtype, Dtype::F32);
        self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }
    pub fn f16s(&self) -> Vec<f16> {
        assert_eq!(self.dtype, Dtype::F16);
        self.bytes.chunks_exact(2).map(|b| f16::from_le_bytes(b.try_into().unwrap())).collect()
    }
    pub fn i64s(&self) -> Vec<i64> {
        self.bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }
}

/// A deterministic generator (SplitMix64) so test inputs need no extra dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A random GPTQ layer (words, zeros, f32 scales, g_idx).
pub struct Layer {
    pub qweight: Vec<i32>,
    pub qzeros: Vec<i32>,
    pub scales: Vec<f32>,
    pub g_idx: Vec<i32>,
}

/// Random words, zeros and scales; `act_order` shuffles g_idx (each group keeps its size).
pub fn layer(l: &quant_kernels::gptq::GptqLayout, act_order: bool, rng: &mut Rng) -> Layer {
    let (qr, qc) = l.qweight_shape();
    let (zr, zc) = l.qzeros_shape();
    let qweight = (0..qr * qc).map(|_| rng.next_u64() as i32).collect();
    let qzeros = (0..zr * zc).map(|_| rng.next_u64() as i32).collect();
    let scales = (0..l.groups() * l.n()).map(|_| rng.f32_in(-0.02, 0.02)).collect();
    let mut g_idx = l.default_g_idx();
    if act_order {
        for i in (1..g_idx.len()).rev() {
            g_idx.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    Layer { qweight, qzeros, scales, g_idx }
}

/// [`layer`] as a v1 `GptqLayer` with f32 scales and its `g_idx` (given even when plain).
pub fn gptq_layer_f32(
    l: quant_kernels::gptq::GptqLayout,
    act_order: bool,
    rng: &mut Rng,
) -> quant_kernels::gptq::GptqLayer {
    let r = layer(&l, act_order, rng);
    quant_kernels::gptq::GptqLayer {
        layout: l,
        format: quant_kernels::gptq::ZeroFormat::V1,
        qweight: r.qweight,
        qzeros: r.qzeros,
        scales: quant_kernels::FloatVec::F32(r.scales),
        g_idx: Some(r.g_idx),
        bias: None,
    }
}

/// `v` in f32, f16 or bf16 (by `dtype % 3`).
pub fn float_vec(v: Vec<f32>, dtype: usize) -> quant_kernels::FloatVec {
    match dtype % 3 {
        0 => quant_kernels::FloatVec::F32(v),
        1 => quant_kernels::FloatVec::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        _ => quant_kernels::FloatVec::Bf16(v.iter().map(|&x| half::bf16::from_f32(x)).collect()),
    }
}

/// A random HQQ weight (`None` where the width cannot pack its code matrix).
pub fn hqq_weight(
    rows: usize,
    cols: usize,
    g: usize,
    axis: quant_kernels::hqq::Axis,
    bits: u8,
    dtype: usize,
    rng: &mut Rng,
) -> Option<quant_kernels::hqq::HqqWeight> {
    let layout = quant_kernels::hqq::HqqLayout::new(rows, cols, g, axis).ok()?;
    let (cr, cc) = layout.code_shape();
    let codes: Vec<u8> = (0..rows * cols).map(|_| rng.below(1 << bits) as u8).collect();
    let packed = quant_kernels::hqq::pack_hqq(&codes, cr, cc, bits).ok()?;
    let groups = layout.groups();
    let scales = (0..groups).map(|_| rng.f32_in(-0.1, 0.1)).collect();
    let zeros = (0..groups).map(|_| rng.f32_in(0.0, (1u32 << bits) as f32)).collect();
    Some(quant_kernels::hqq::HqqWeight {
        layout,
        packed,
        scales: float_vec(scales, dtype),
        zeros: float_vec(zeros, dtype),
    })
}

/// A random FP8 layer: `experts` stacked `[rows, cols]` weights, codes `random & code_mask`,
/// one scale per block (or per tensor when `block` is `None`) from `scale`, scales stored in the
/// dtype `float_vec(_, dtype)` picks, bias `0, 1, 2, ...`.
#[allow(clippy::too_many_arguments)]
pub fn fp8_layer(
    rows: usize,
    cols: usize,
    block: Option<(usize, usize)>,
    experts: usize,
    format: quant_kernels::fp8::Fp8Format,
    code_mask: u8,
    scale: &mut dyn FnMut(&mut Rng) -> f32,
    dtype: usize,
    rng: &mut Rng,
) -> quant_kernels::fp8::Fp8Layer {
    use quant_kernels::fp8::Fp8Layout;
    let layout = match block {
        Some((br, bc)) => Fp8Layout::block(rows, cols, br, bc).unwrap(),
        None => Fp8Layout::per_tensor(rows, cols).unwrap(),
    };
    let (sr, sc) = layout.scale_shape();
    quant_kernels::fp8::Fp8Layer {
        layout,
        experts,
        format,
        codes: (0..experts * rows * cols).map(|_| rng.next_u64() as u8 & code_mask).collect(),
        scales: float_vec((0..experts * sr * sc).map(|_| scale(rng)).collect(), dtype),
        bias: Some(quant_kernels::FloatVec::F32((0..experts * rows).map(|i| i as f32).collect())),
    }
}

/// `prefix` read as a fused layer of parts `sizes` (`load_merged`) equals `new_merged` on the
/// parts cut from the whole layer in memory, for world sizes 1-4, bit for bit, or both fail
/// with the same error (a boundary error places the cut in the part for `new_merged`, in the
/// fused layer for `load_merged`: the same kind, rule and multiple); parts the layer's packing
/// cannot be cut into fail to load; sizes that do not add up are a typed error.
pub fn assert_merged_loads(
    src: &impl quant_kernels::tp::LayerSource,
    prefix: &str,
    whole: &quant_kernels::QuantWeight,
    bias: Option<&quant_kernels::FloatVec>,
    sizes: &[usize],
) {
    use quant_kernels::Error;
    use quant_kernels::error::TpError;
    use quant_kernels::tp::{ColumnParallelLinear, Shard};
    use quant_kernels::{FloatVec, QuantWeight};
    let mut parts: Vec<(QuantWeight, Option<FloatVec>)> = Vec::new();
    let mut offset = 0;
    for &size in sizes {
        let cut = Shard::Offset { dim: 0, offset, len: size };
        let b = bias.map(|b| FloatVec::F32(b.to_f32()[offset..offset + size].to_vec()));
        match whole.shard(&cut) {
            Ok(w) => parts.push((w, b)),
            Err(e) => {
                let got =
                    ColumnParallelLinear::load_merged(src, prefix, sizes, None, 0, 1, &Default::default())
                        .unwrap_err();
                assert_eq!(got, e, "{prefix} {sizes:?}: a part the packing cannot cut");
                return;
            }
        }
        offset += size;
    }
    let alike = |a: &Error, b: &Error| match (a, b) {
        (
            Error::Tp(TpError::ShardBoundary { what, multiple, .. }),
            Error::Tp(TpError::ShardBoundary { what: w2, multiple: m2, .. }),
        ) => (what, multiple) == (w2, m2),
        _ => a == b,
    };
    let refs: Vec<(&QuantWeight, Option<&FloatVec>)> = parts.iter().map(|(w, b)| (w, b.as_ref())).collect();
    let serial = quant_kernels::Parallelism::SERIAL;
    for world in 1..=4 {
        for rank in 0..world {
            let got =
                ColumnParallelLinear::load_merged(src, prefix, sizes, None, rank, world, &Default::default());
            match ColumnParallelLinear::new_merged(&refs, None, rank, world) {
                Err(e) => {
                    let got = got.unwrap_err();
                    assert!(alike(&got, &e), "{prefix} {sizes:?} {rank}/{world}: {got:?} vs {e:?}");
                }
                Ok(want) => {
                    let got = got.unwrap().unwrap();
                    let (a, b) =
                        (got.local().dequantize(serial).unwrap(), want.local().dequantize(serial).unwrap());
                    assert!(
                        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{prefix} {rank}/{world}"
                    );
                    let x = vec![0.25f32; got.local().in_features()];
                    assert_eq!(got.forward(&x, 1, serial).unwrap(), want.forward(&x, 1, serial).unwrap());
                }
            }
        }
    }
    let mut short = sizes.to_vec();
    short[0] -= 1;
    assert!(matches!(
        ColumnParallelLinear::load_merged(src, prefix, &short, None, 0, 1, &Default::default()),
        Err(quant_kernels::Error::Kernel(quant_kernels::error::KernelError::LengthMismatch { .. }))
    ));
    assert!(
        ColumnParallelLinear::load_merged(src, "no.such.layer", sizes, None, 0, 1, &Default::default())
            .unwrap()
            .is_none()
    );
}

/// One tensor to write: name, dtype, shape, little-endian bytes.
pub type RawTensor = (String, quant_kernels::io::Dtype, Vec<usize>, Vec<u8>);

/// A checkpoint directory in the temp dir (`config.json` and one `model.safetensors`), removed
/// on drop.
pub struct CheckpointDir(pub std::path::PathBuf);

impl CheckpointDir {
    /// `config` is written as `config.json`, `tensors` in that order.
    pub fn new(tag: &str, config: &serde_json::Value, tensors: &[RawTensor]) -> Self {
        let dir = std::env::temp_dir().join(format!("qk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let decl: Vec<_> = tensors.iter().map(|(n, d, s, _)| (n.clone(), *d, s.clone())).collect();
        let path = dir.join("model.safetensors");
        let mut w = quant_kernels::io::SafetensorsWriter::create(path, &decl, &Default::default()).unwrap();
        for (n, _, _, b) in tensors {
            w.write(n, b).unwrap();
        }
        w.finish().unwrap();
        CheckpointDir(dir)
    }
}

impl Drop for CheckpointDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
