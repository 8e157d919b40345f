//! Fusing GPTQ layers that share an input along the output dimension: q/k/v into `qkv_proj`,
//! gate/up into `gate_up_proj`.
//!
//! `qweight` and `scales` are concatenated by columns; `qzeros` are unpacked to one field per
//! column (stored values, whatever the format) and repacked over the fused width, which is
//! correct for every bit width including 3-bit, whose fields cross words; `g_idx` must be the
//! same for every part; biases are concatenated.

use super::GptqLayout;
use super::checkpoint::GptqLayer;
use super::layout::{codes_per_block, field, locate};
use crate::elem::FloatVec;
use crate::error::{Error, KernelError, Result};
use crate::par::concat_columns;

/// Pack `fields` (each `< 2^bits`) along a row of words, GPTQ's layout (LSB first, 3-bit
/// fields crossing words).
pub fn pack_fields(fields: &[u32], bits: u8) -> Vec<i32> {
    let mut words = vec![0u32; (fields.len() * bits as usize).div_ceil(32)];
    for (i, &f) in fields.iter().enumerate() {
        let (j, shift) = locate(i, bits);
        words[j] |= f << shift;
        if shift + bits as u32 > 32 {
            words[j + 1] |= f >> (32 - shift);
        }
    }
    words.into_iter().map(|w| w as i32).collect()
}

/// Fuse `parts` (same K, bits, group size, zero format and `g_idx`) into one layer whose
/// outputs are the parts' outputs in order.
///
/// ```
/// use quant_kernels::elem::FloatVec;
/// use quant_kernels::gptq::{GptqLayer, GptqLayout, ZeroFormat, fuse_columns};
/// use quant_kernels::Parallelism;
/// let part = |code: u32, n: usize| GptqLayer {
///     layout: GptqLayout::new(8, n, 4, -1).unwrap(),
///     format: ZeroFormat::V2,
///     qweight: vec![(code * 0x1111_1111u32) as i32; n], // every code = `code`
///     qzeros: vec![0x8888_8888u32 as i32; n / 8], // z = 8
///     scales: FloatVec::F32(vec![1.0; n]),
///     g_idx: None,
///     bias: None,
/// };
/// let fused = fuse_columns(&[&part(9, 8), &part(7, 16)])?;
/// assert_eq!(fused.layout.n(), 24);
/// let w: Vec<f32> = fused.dequantize_kn(Parallelism::SERIAL)?;
/// assert_eq!(&w[6..10], &[1.0, 1.0, -1.0, -1.0]); // (9 - 8) | (7 - 8)
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn fuse_columns(parts: &[&GptqLayer]) -> Result<GptqLayer> {
    let first = parts.first().ok_or(Error::Kernel(KernelError::Fuse { what: "number of parts", part: 0 }))?;
    let l0 = first.layout;
    let default_g_idx = |p: &GptqLayer| p.g_idx.clone().unwrap_or_else(|| p.layout.default_g_idx());
    let g0 = default_g_idx(first);
    for (i, p) in parts.iter().enumerate().skip(1) {
        let l = p.layout;
        let what = if l.k() != l0.k() {
            "K"
        } else if l.bits() != l0.bits() {
            "bits"
        } else if l.group_size() != l0.group_size() {
            "group size"
        } else if l.groups() != l0.groups() {
            "groups"
        } else if p.format != first.format {
            "zero-point format"
        } else if p.scales.dtype() != first.scales.dtype() {
            "scale dtype"
        } else if p.bias.is_some() != first.bias.is_some()
            || p.bias.as_ref().map(FloatVec::dtype) != first.bias.as_ref().map(FloatVec::dtype)
        {
            "bias"
        } else if default_g_idx(p) != g0 {
            "g_idx"
        } else {
            continue;
        };
        return Err(Error::Kernel(KernelError::Fuse { what, part: i }));
    }
    // Each part's lengths must match its layout before slicing by it.
    for p in parts {
        let (qr, qc) = p.layout.qweight_shape();
        crate::error::expect_len("qweight", qr * qc, p.qweight.len())?;
        let (zr, zc) = p.layout.qzeros_shape();
        crate::error::expect_len("qzeros", zr * zc, p.qzeros.len())?;
        crate::error::expect_len("scales", p.layout.groups() * p.layout.n(), p.scales.len())?;
        if let Some(b) = &p.bias {
            crate::error::expect_len("bias", p.layout.n(), b.len())?;
        }
    }
    let n: usize = parts.iter().map(|p| p.layout.n()).sum();
    let layout =
        GptqLayout::with_groups(l0.k(), n, l0.bits(), l0.group_size().map_or(-1, |g| g as i64), l0.groups())?;
    let bits = l0.bits();
    let (qrows, _) = layout.qweight_shape();
    let qweight =
        concat_columns(&parts.iter().map(|p| (&p.qweight[..], p.layout.n())).collect::<Vec<_>>(), qrows)
            .ok_or(Error::Kernel(KernelError::Fuse { what: "qweight", part: 0 }))?;
    let groups = layout.groups();
    let scales = FloatVec::concat_columns(
        &parts.iter().map(|p| (&p.scales, p.layout.n())).collect::<Vec<_>>(),
        groups,
    )
    .ok_or(Error::Kernel(KernelError::Fuse { what: "scales", part: 0 }))?;
    let mut qzeros = Vec::with_capacity(groups * n * bits as usize / 32);
    let mut fields = Vec::with_capacity(n);
    for g in 0..groups {
        fields.clear();
        for p in parts {
            let zc = p.layout.qzeros_shape().1;
            let row = &p.qzeros[g * zc..(g + 1) * zc];
            fields.extend((0..p.layout.n()).map(|i| field(|j| row[j] as u32, i, bits)));
        }
        qzeros.extend(pack_fields(&fields, bits));
    }
    debug_assert_eq!(n % codes_per_block(bits), 0);
    let bias = match first.bias {
        None => None,
        Some(_) => {
            let biases: Option<Vec<_>> =
                parts.iter().map(|p| p.bias.as_ref().map(|b| (b, p.layout.n()))).collect();
            Some(
                biases
                    .and_then(|b| FloatVec::concat_columns(&b, 1))
                    .ok_or(Error::Kernel(KernelError::Fuse { what: "bias", part: 0 }))?,
            )
        }
    };
    Ok(GptqLayer { layout, format: first.format, qweight, qzeros, scales, g_idx: first.g_idx.clone(), bias })
}

/// A group of layers to fuse: `parts` (full prefixes, in output order) become `fused`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusePlan {
    /// The fused layer's prefix (`...self_attn.qkv_proj`, `...mlp.gate_up_proj`).
    pub fused: String,
    /// The parts' prefixes in order.
    pub parts: Vec<String>,
}

/// The fusions possible among `prefixes`: every `<p>.q_proj`, `<p>.k_proj`, `<p>.v_proj` triple
/// becomes `<p>.qkv_proj`, every `<p>.gate_proj`, `<p>.up_proj` pair `<p>.gate_up_proj`. Layers
/// missing a sibling are left alone.
///
/// ```
/// use quant_kernels::gptq::plan_fusion;
/// let names = ["m.0.attn.q_proj", "m.0.attn.k_proj", "m.0.attn.v_proj", "m.0.mlp.gate_proj", "m.0.mlp.up_proj", "m.1.mlp.up_proj"];
/// let plan = plan_fusion(names);
/// assert_eq!(plan.len(), 2);
/// assert_eq!(plan[0].fused, "m.0.attn.qkv_proj");
/// assert_eq!(plan[1].parts, ["m.0.mlp.gate_proj", "m.0.mlp.up_proj"]);
/// ```
pub fn plan_fusion<'a>(prefixes: impl IntoIterator<Item = &'a str>) -> Vec<FusePlan> {
    const GROUPS: [(&str, &[&str]); 2] =
        [("qkv_proj", &["q_proj", "k_proj", "v_proj"]), ("gate_up_proj", &["gate_proj", "up_proj"])];
    let all: std::collections::BTreeSet<&str> = prefixes.into_iter().collect();
    let mut plans = Vec::new();
    for &prefix in &all {
        for (fused, parts) in GROUPS {
            let Some(base) = prefix.strip_suffix(parts[0]).filter(|b| b.is_empty() || b.ends_with('.'))
            else {
                continue;
            };
            let names: Vec<String> = parts.iter().map(|p| format!("{base}{p}")).collect();
            if names.iter().all(|n| all.contains(n.as_str())) {
                plans.push(FusePlan { fused: format!("{base}{fused}"), parts: names });
            }
        }
    }
    plans
}

/// What [`fuse_layers`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct FuseReport {
    /// Groups fused into one packed layer.
    pub fused: Vec<FusePlan>,
    /// Groups left as separate layers because their parts cannot share one packed layout
    /// (typically act-order parts with different `g_idx`), with the reason.
    pub skipped: Vec<(FusePlan, Error)>,
}

/// Fuse every q/k/v triple and gate/up pair of `layers` in place (see [`plan_fusion`]): the
/// parts are replaced by their fused layer. Groups whose parts cannot be fused into one packed
/// layer ([`KernelError::Fuse`], e.g. act-order parts with different `g_idx`) stay separate and are
/// reported; [`concat_dequantized`] still gives their fused dense weight.
pub fn fuse_layers(layers: &mut std::collections::BTreeMap<String, GptqLayer>) -> Result<FuseReport> {
    let mut report = FuseReport { fused: Vec::new(), skipped: Vec::new() };
    for plan in plan_fusion(layers.keys().map(String::as_str)) {
        let fused = {
            let parts: Vec<&GptqLayer> = plan.parts.iter().filter_map(|p| layers.get(p)).collect();
            fuse_columns(&parts)
        };
        match fused {
            Ok(fused) => {
                for p in &plan.parts {
                    layers.remove(p);
                }
                layers.insert(plan.fused.clone(), fused);
                report.fused.push(plan);
            }
            Err(e @ Error::Kernel(KernelError::Fuse { .. })) => report.skipped.push((plan, e)),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// The fused dense weight `[K, sum of N]` of `parts` (same K): each part dequantized and the
/// results placed side by side. Equal to dequantizing [`fuse_columns`]'s layer when that
/// exists, and defined also when it does not (parts with different `g_idx`).
pub fn concat_dequantized<O: crate::elem::Elem>(
    parts: &[&GptqLayer],
    par: crate::par::Parallelism,
) -> Result<Vec<O>> {
    let first = parts.first().ok_or(Error::Kernel(KernelError::Fuse { what: "number of parts", part: 0 }))?;
    let k = first.layout.k();
    if let Some(i) = parts.iter().position(|p| p.layout.k() != k) {
        return Err(Error::Kernel(KernelError::Fuse { what: "K", part: i }));
    }
    let dense: Vec<Vec<O>> = parts.iter().map(|p| p.dequantize_kn::<O>(par)).collect::<Result<_>>()?;
    let dense: Vec<(&[O], usize)> = dense.iter().zip(parts).map(|(d, p)| (&d[..], p.layout.n())).collect();
    concat_columns(&dense, k).ok_or(Error::Kernel(KernelError::Fuse { what: "dequantized part", part: 0 }))
}
