//! mistral.rs UQFF files for HQQ layers, both revisions, read and written byte for byte.
//!
//! * **0.2.0** (legacy, mistral.rs until mid-2026): one little-endian byte blob per layer:
//!   `version u32 | type u8 (2 = HQQ) | has_bias u8 | w_q | scales | zeros | ndims u32 | dims
//!   u32.. | bits u8 | group_size u32 | axis u8 | optimization_steps u32 (0 = none) | round_zeros
//!   u8 | channel_wise u8 | [bias]`, each tensor as `byte length u32 | dtype code u32 | ndims u32
//!   | dims u32.. | data`. A file is a safetensors file of 1-D U8 tensors named `"0"`, `"1"`, ...
//!   ([`read_legacy_file`] / [`write_legacy_file`]).
//! * **1.2.0**: a safetensors file with `uqff.version.{major,minor,patch}` (U32 scalars) and per
//!   layer `<p>.weight` (packed codes), `<p>.weight.{scales,zeros,shape,bits,group_size,axis,
//!   optimization_steps,round_zeros,channel_wise,format}` and optionally `<p>.bias`.
//!   mistral.rs writes only 4- and 8-bit HQQ layers in it; 3/2/1-bit layers are a documented
//!   extension of this crate that [`Extension::Refuse`] turns off.
//!
//! The readers never panic and never allocate more than the input holds: every length is
//! checked against the bytes that remain before anything is allocated, counts are capped
//! ([`MAX_DIMS`], [`MAX_TENSOR_BYTES`]), shapes multiply with overflow checks, codes convert
//! through `TryFrom`, a blob must be consumed exactly, and a layer's `w_q`, `scales`, `zeros`
//! and `bias` must fit its bits, group size, axis and weight shape.

use super::safetensors::Dtype;
use crate::elem::FloatVec;
use crate::error::{Error, FormatError, KernelError, Result};
use crate::hqq::{Axis, HqqConfig, HqqLayout, HqqWeight, Packed, PackedWords};
use crate::pack::Bits;
use std::collections::BTreeMap;

/// Most dimensions a tensor or weight shape may have.
pub const MAX_DIMS: usize = 8;
/// Largest tensor payload accepted (4 GiB - 1: lengths are u32 in 0.2.0).
pub const MAX_TENSOR_BYTES: usize = u32::MAX as usize;
/// `QuantizedSerdeType::Hqq`.
pub const HQQ_TYPE: u8 = 2;
/// The legacy version word this crate writes: 0.2.0.
pub const LEGACY_VERSION: u32 = 2 << 8;

/// Whether 3/2/1-bit layers may be written to / read from 1.2.0 files (mistral.rs refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// Accept 1/2/3-bit layers (this crate's extension).
    Allow,
    /// Only what mistral.rs writes: 4 and 8 bits.
    Refuse,
}

/// A tensor as UQFF stores it: dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UqffTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major little-endian bytes.
    pub data: Vec<u8>,
}

/// One HQQ layer of a UQFF file.
#[derive(Debug, Clone, PartialEq)]
pub struct UqffHqqLayer {
    /// Packed codes (`U8`, or `I32` for 3-bit).
    pub w_q: UqffTensor,
    /// `1 / scale_q` per group, `[1, C]` (axis 0) or `[C, 1]` (axis 1).
    pub scales: UqffTensor,
    /// Zero point per group, same shape and dtype as `scales`.
    pub zeros: UqffTensor,
    /// The original weight's shape.
    pub shape: Vec<usize>,
    /// Bits, group size, axis, steps, flags.
    pub config: HqqConfig,
    /// Optional bias `[out]`.
    pub bias: Option<UqffTensor>,
}

fn bad(offset: usize, reason: impl Into<String>) -> Error {
    Error::Format(FormatError::Uqff { offset, reason: reason.into() })
}

/// The legacy dtype code of `d`.
fn dtype_code(d: Dtype) -> Option<u32> {
    Some(match d {
        Dtype::U8 => 0,
        Dtype::U32 => 1,
        Dtype::I32 => 2,
        Dtype::I64 => 3,
        Dtype::F16 => 4,
        Dtype::Bf16 => 5,
        Dtype::F32 => 6,
        Dtype::F64 => 7,
        Dtype::I16 => 8,
        Dtype::F8E4M3 => 9,
        _ => return None,
    })
}

fn dtype_of_code(code: u32) -> Result<Dtype> {
    Ok(match code {
        0 => Dtype::U8,
        1 => Dtype::U32,
        2 => Dtype::I32,
        3 => Dtype::I64,
        4 => Dtype::F16,
        5 => Dtype::Bf16,
        6 => Dtype::F32,
        7 => Dtype::F64,
        8 => Dtype::I16,
        9 => Dtype::F8E4M3,
        other => return Err(Error::Format(FormatError::UqffDtype(other))),
    })
}

/// A bounds-checked little-endian reader.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            bad(self.at, format!("{what}: needs {n} bytes, {} remain", self.bytes.len() - self.at))
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn flag(&mut self, what: &str) -> Result<bool> {
        let at = self.at;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(bad(at, format!("{what}: {v} is not 0 or 1"))),
        }
    }
    fn dims(&mut self, what: &str) -> Result<Vec<usize>> {
        let at = self.at;
        let n = self.u32(what)? as usize;
        if n > MAX_DIMS {
            return Err(bad(at, format!("{what}: {n} dimensions (at most {MAX_DIMS})")));
        }
        (0..n).map(|_| self.u32(what).map(|d| d as usize)).collect()
    }
    fn tensor(&mut self, what: &str) -> Result<UqffTensor> {
        let at = self.at;
        let len = self.u32(what)? as usize;
        let dtype = dtype_of_code(self.u32(what)?)?;
        let shape = self.dims(what)?;
        let expected = shape.iter().try_fold(dtype.size(), |a, &d| a.checked_mul(d));
        if expected != Some(len) || len > MAX_TENSOR_BYTES {
            return Err(bad(at, format!("{what}: {len} bytes for shape {shape:?} of {dtype}")));
        }
        // `take` checks the length against what remains before the copy allocates.
        let data = self.take(len, what)?.to_vec();
        Ok(UqffTensor { dtype, shape, data })
    }
}

/// A validated float tensor's values (F16, BF16, else F32).
fn floats(t: &UqffTensor) -> FloatVec {
    use super::safetensors::LeElem;
    match t.dtype {
        Dtype::F16 => FloatVec::F16(half::f16::from_le(&t.data)),
        Dtype::Bf16 => FloatVec::Bf16(half::bf16::from_le(&t.data)),
        _ => FloatVec::F32(<f32 as LeElem>::from_le(&t.data)),
    }
}

fn product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl UqffHqqLayer {
    /// The layer's weight, for [`crate::QuantLinear`] or a shard (validated first; the bias is
    /// not part of the weight).
    pub fn weight(&self) -> Result<HqqWeight> {
        use super::safetensors::LeElem;
        let layer = self;
        layer.validate()?;
        let layout = layer.layout()?;
        let bits = Bits::try_from(layer.config.bits)?;
        let (rows, cols) = layout.code_shape();
        let words = if bits == Bits::B3 {
            PackedWords::I32(<i32 as LeElem>::from_le(&layer.w_q.data))
        } else {
            PackedWords::U8(layer.w_q.data.clone())
        };
        Ok(HqqWeight {
            layout,
            packed: Packed { bits, rows, cols, words },
            scales: floats(&layer.scales),
            zeros: floats(&layer.zeros),
        })
    }

    /// The bias's values in their stored dtype (validated first), if the layer has one.
    pub fn bias_values(&self) -> Result<Option<FloatVec>> {
        self.validate()?;
        Ok(self.bias.as_ref().map(floats))
    }

    /// A layer from this crate's quantizer output: `q` quantized a `[rows, cols]` weight with
    /// `config`; scales and zeros are stored in `params` (mistral.rs writes f32; f16/bf16 round
    /// to nearest even); `bias` goes with it.
    pub fn from_quantized(
        q: &crate::hqq::HqqLayer,
        config: &HqqConfig,
        params: crate::FloatType,
        bias: Option<crate::FloatVec>,
    ) -> Result<Self> {
        use super::safetensors::to_le_bytes;
        let l = q.layout;
        let groups = l.groups();
        let pshape = if l.axis() == Axis::Zero { vec![1, groups] } else { vec![groups, 1] };
        let floats = |v: &[f32]| -> UqffTensor {
            let (dtype, data) = match params {
                crate::FloatType::F32 => (Dtype::F32, to_le_bytes(v)),
                crate::FloatType::F16 => {
                    (Dtype::F16, to_le_bytes(&v.iter().map(|&x| half::f16::from_f32(x)).collect::<Vec<_>>()))
                }
                crate::FloatType::Bf16 => (
                    Dtype::Bf16,
                    to_le_bytes(&v.iter().map(|&x| half::bf16::from_f32(x)).collect::<Vec<_>>()),
                ),
            };
            UqffTensor { dtype, shape: pshape.clone(), data }
        };
        let (pr, pc) = l.packed_shape(q.packed.bits)?;
        let w_q = match &q.packed.words {
            crate::hqq::PackedWords::U8(w) => {
                UqffTensor { dtype: Dtype::U8, shape: vec![pr, pc], data: w.clone() }
            }
            crate::hqq::PackedWords::I32(w) => {
                UqffTensor { dtype: Dtype::I32, shape: vec![pr, pc], data: to_le_bytes(w) }
            }
        };
        let bias = bias.map(|b| {
            let (dtype, data) = match &b {
                crate::FloatVec::F32(v) => (Dtype::F32, to_le_bytes(v)),
                crate::FloatVec::F16(v) => (Dtype::F16, to_le_bytes(v)),
                crate::FloatVec::Bf16(v) => (Dtype::Bf16, to_le_bytes(v)),
            };
            UqffTensor { dtype, shape: vec![b.len()], data }
        });
        let layer = UqffHqqLayer {
            w_q,
            scales: floats(&q.scales),
            zeros: floats(&q.zeros),
            shape: vec![l.rows(), l.cols()],
            config: *config,
            bias,
        };
        layer.validate()?;
        Ok(layer)
    }

    /// Dequantize to the original `[rows, cols]` weight (`(q - zero) * scale` in `f32`, rounded
    /// once to `O`).
    pub fn dequantize<O: crate::Elem>(&self, par: crate::Parallelism) -> Result<Vec<O>> {
        use super::safetensors::LeElem;
        self.validate()?;
        let layout = self.layout()?;
        let bits = Bits::try_from(self.config.bits)?;
        let mut out = vec![O::default(); layout.numel()];
        let params = |t: &UqffTensor| -> Vec<f32> {
            match t.dtype {
                Dtype::F16 => half::f16::from_le(&t.data).iter().map(|x| x.to_f32()).collect(),
                Dtype::Bf16 => half::bf16::from_le(&t.data).iter().map(|x| x.to_f32()).collect(),
                _ => <f32 as LeElem>::from_le(&t.data),
            }
        };
        let (s, z) = (params(&self.scales), params(&self.zeros));
        let (rows, cols) = layout.code_shape();
        let words = if bits == Bits::B3 {
            crate::hqq::PackedWords::I32(<i32 as LeElem>::from_le(&self.w_q.data))
        } else {
            crate::hqq::PackedWords::U8(self.w_q.data.clone())
        };
        let packed = crate::hqq::Packed { bits, rows, cols, words };
        packed.dequantize_into(&s, &z, &layout, &mut out, par)?;
        Ok(out)
    }

    /// The layout of the quantized weight (rows = first dim, cols = the rest; see
    /// [`crate::hqq::HqqLayer::layout`] for `channel_wise: false`).
    pub fn layout(&self) -> Result<HqqLayout> {
        let rows = self.shape.first().copied().unwrap_or(1);
        let cols = product(self.shape.get(1..).unwrap_or(&[]))
            .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols: 0 }))?;
        self.config.layout(rows, cols)
    }

    /// Check `w_q`, `scales`, `zeros` and `bias` against bits, group size, axis and shape.
    pub fn validate(&self) -> Result<()> {
        let bits = Bits::try_from(self.config.bits)?;
        if self.shape.is_empty() || self.shape.len() > MAX_DIMS {
            return Err(bad(0, format!("weight shape {:?}", self.shape)));
        }
        let layout = self.layout()?;
        let (pr, pc) = layout.packed_shape(bits)?;
        let word = if bits == Bits::B3 { Dtype::I32 } else { Dtype::U8 };
        let mismatch = |what: &str, t: &UqffTensor, shape: &[usize]| {
            bad(0, format!("{what}: {} {:?}, expected {shape:?}", t.dtype, t.shape))
        };
        if self.w_q.dtype != word || self.w_q.shape != [pr, pc] {
            return Err(mismatch("w_q", &self.w_q, &[pr, pc]));
        }
        let groups = layout.groups();
        let pshape = if layout.axis() == Axis::Zero { [1, groups] } else { [groups, 1] };
        for (what, t) in [("scales", &self.scales), ("zeros", &self.zeros)] {
            let float = matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16);
            if !float || t.dtype != self.scales.dtype || t.shape != pshape {
                return Err(mismatch(what, t, &pshape));
            }
        }
        if let Some(b) = &self.bias
            && (b.shape != [layout.rows()] || !matches!(b.dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16))
        {
            return Err(mismatch("bias", b, &[layout.rows()]));
        }
        Ok(())
    }
}

/// Decode one legacy (0.2.0) HQQ layer blob (see the module docs); the whole blob must be used.
pub fn read_legacy(blob: &[u8]) -> Result<UqffHqqLayer> {
    let mut c = Cursor { bytes: blob, at: 0 };
    let version = c.u32("version")?;
    let (major, minor, patch) = ((version >> 16) & 0xff, (version >> 8) & 0xff, version & 0xff);
    if major != 0 || minor > 2 {
        return Err(Error::Format(FormatError::UqffVersion { major, minor, patch }));
    }
    let kind = c.u8("quant type")?;
    if kind != HQQ_TYPE {
        return Err(Error::Format(FormatError::UqffQuantType(kind)));
    }
    let has_bias = c.flag("has_bias")?;
    let w_q = c.tensor("w_q")?;
    let scales = c.tensor("scales")?;
    let zeros = c.tensor("zeros")?;
    let shape = c.dims("weight shape")?;
    let bits = c.u8("bits")?;
    let group_size = c.u32("group_size")? as usize;
    let at = c.at;
    let axis = Axis::try_from(c.u8("axis")?).map_err(|_| bad(at, "axis is not 0 or 1"))?;
    let steps = c.u32("optimization_steps")? as usize;
    let round_zeros = c.flag("round_zeros")?;
    let channel_wise = c.flag("channel_wise")?;
    let bias = if has_bias { Some(c.tensor("bias")?) } else { None };
    if c.at != blob.len() {
        return Err(bad(c.at, format!("{} trailing bytes", blob.len() - c.at)));
    }
    let config = HqqConfig {
        bits,
        group_size,
        axis,
        optimization_steps: (steps > 0).then_some(steps),
        round_zeros,
        channel_wise,
    };
    let layer = UqffHqqLayer { w_q, scales, zeros, shape, config, bias };
    layer.validate()?;
    Ok(layer)
}

fn put_u32(out: &mut Vec<u8>, v: usize, what: &str) -> Result<()> {
    let v = u32::try_from(v).map_err(|_| bad(out.len(), format!("{what}: {v} does not fit in u32")))?;
    out.extend_from_slice(&v.to_le_bytes());
    Ok(())
}

fn put_tensor(out: &mut Vec<u8>, t: &UqffTensor, what: &str) -> Result<()> {
    let code = dtype_code(t.dtype)
        .ok_or_else(|| bad(out.len(), format!("{what}: dtype {} has no UQFF code", t.dtype)))?;
    put_u32(out, t.data.len(), what)?;
    out.extend_from_slice(&code.to_le_bytes());
    put_u32(out, t.shape.len(), what)?;
    for &d in &t.shape {
        put_u32(out, d, what)?;
    }
    out.extend_from_slice(&t.data);
    Ok(())
}

/// Encode one layer as a legacy (0.2.0) blob, mistral.rs's `serialize_with_bias` bytes.
pub fn write_legacy(layer: &UqffHqqLayer) -> Result<Vec<u8>> {
    layer.validate()?;
    let c = &layer.config;
    let mut out = Vec::new();
    out.extend_from_slice(&LEGACY_VERSION.to_le_bytes());
    out.push(HQQ_TYPE);
    out.push(layer.bias.is_some() as u8);
    put_tensor(&mut out, &layer.w_q, "w_q")?;
    put_tensor(&mut out, &layer.scales, "scales")?;
    put_tensor(&mut out, &layer.zeros, "zeros")?;
    put_u32(&mut out, layer.shape.len(), "shape")?;
    for &d in &layer.shape {
        put_u32(&mut out, d, "shape")?;
    }
    out.push(c.bits);
    put_u32(&mut out, c.group_size, "group_size")?;
    out.push(if c.axis == Axis::Zero { 0 } else { 1 });
    put_u32(&mut out, c.optimization_steps.unwrap_or(0), "optimization_steps")?;
    out.push(c.round_zeros as u8);
    out.push(c.channel_wise as u8);
    if let Some(b) = &layer.bias {
        put_tensor(&mut out, b, "bias")?;
    }
    Ok(out)
}

/// Parse a safetensors byte buffer into `name -> (dtype, shape, bytes)`.
/// A tensor's dtype, shape and bytes inside a buffer.
type Raw<'a> = (Dtype, Vec<usize>, &'a [u8]);

fn safetensors_tensors(bytes: &[u8]) -> Result<BTreeMap<String, Raw<'_>>> {
    Ok(safetensors_parts(bytes)?.0)
}

/// Tensors and `__metadata__` of a safetensors buffer.
type Parts<'a> = (BTreeMap<String, Raw<'a>>, BTreeMap<String, String>);

fn safetensors_parts(bytes: &[u8]) -> Result<Parts<'_>> {
    let label = "uqff";
    let mut c = Cursor { bytes, at: 0 };
    let n = c.take(8, "header length")?;
    let n = u64::from_le_bytes([n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]]);
    let n = usize::try_from(n).ok().filter(|&n| n as u64 <= super::safetensors::MAX_HEADER_BYTES);
    let header = c.take(n.ok_or_else(|| bad(0, "header length too large"))?, "header")?;
    let (tensors, metadata) = super::safetensors::parse_header(label, header, bytes.len() as u64)?;
    let tensors = tensors
        .into_iter()
        .map(|(k, i)| {
            let start = i.offset as usize; // within `bytes`: checked by parse_header
            (k, (i.dtype, i.shape, &bytes[start..start + i.len]))
        })
        .collect();
    Ok((tensors, metadata))
}

/// The `__metadata__` key under which this crate records layer names in a legacy file (a JSON
/// list, index -> name; mistral.rs ignores it and identifies layers by index).
pub const LEGACY_NAMES_KEY: &str = "quant_kernels.layer_names";

/// Read a legacy UQFF file (a safetensors file of U8 blobs named by layer index): the layers
/// in index order, with their names when the file records them ([`LEGACY_NAMES_KEY`]).
pub fn read_legacy_file(bytes: &[u8]) -> Result<Vec<(usize, UqffHqqLayer)>> {
    Ok(read_legacy_file_named(bytes)?.into_iter().map(|(i, _, l)| (i, l)).collect())
}

/// [`read_legacy_file`] with each layer's recorded name, if any.
pub fn read_legacy_file_named(bytes: &[u8]) -> Result<Vec<(usize, Option<String>, UqffHqqLayer)>> {
    let (tensors, metadata) = safetensors_parts(bytes)?;
    let names = legacy_names(&metadata)?;
    let mut out = Vec::new();
    for (name, (dtype, shape, data)) in tensors {
        let index = legacy_index(&name, dtype, &shape)?;
        out.push((index, names.get(index).cloned(), read_legacy(data)?));
    }
    out.sort_by_key(|(i, ..)| *i);
    Ok(out)
}

/// The layer names a legacy file records ([`LEGACY_NAMES_KEY`]), or none.
pub(crate) fn legacy_names(metadata: &BTreeMap<String, String>) -> Result<Vec<String>> {
    match metadata.get(LEGACY_NAMES_KEY) {
        Some(json) => serde_json::from_str(json).map_err(|e| bad(0, format!("{LEGACY_NAMES_KEY}: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// The layer index of a legacy file's tensor: its name, and it must be a 1-D U8 blob.
pub(crate) fn legacy_index(name: &str, dtype: Dtype, shape: &[usize]) -> Result<usize> {
    let index = name.parse().map_err(|_| bad(0, format!("tensor `{name}` is not a layer index")))?;
    if dtype != Dtype::U8 || shape.len() != 1 {
        return Err(bad(0, format!("tensor `{name}`: {dtype} {shape:?}, expected a 1-D U8 blob")));
    }
    Ok(index)
}

/// Write a legacy UQFF file of `layers` (tensor `i` is layer `i`'s blob); `names`, when given,
/// are recorded in the metadata (one per layer).
pub fn write_legacy_file(layers: &[UqffHqqLayer], names: Option<&[String]>) -> Result<Vec<u8>> {
    let blobs: Vec<Vec<u8>> = layers.iter().map(write_legacy).collect::<Result<_>>()?;
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![b.len()], b)
                .map_err(|e| bad(0, e.to_string()))?;
            Ok((i.to_string(), v))
        })
        .collect::<Result<_>>()?;
    let metadata = match names {
        Some(n) if n.len() == layers.len() => {
            let json = serde_json::to_string(n).map_err(|e| bad(0, e.to_string()))?;
            Some(std::collections::HashMap::from([(LEGACY_NAMES_KEY.to_string(), json)]))
        }
        Some(n) => {
            return Err(Error::Kernel(KernelError::LengthMismatch {
                what: "names",
                expected: layers.len(),
                got: n.len(),
            }));
        }
        None => None,
    };
    safetensors::serialize(views, metadata).map_err(|e| bad(0, e.to_string()))
}

fn st_dtype(d: Dtype) -> safetensors::Dtype {
    use safetensors::Dtype as S;
    match d {
        Dtype::Bool => S::BOOL,
        Dtype::U8 => S::U8,
        Dtype::I8 => S::I8,
        Dtype::F8E4M3 => S::F8_E4M3,
        Dtype::F8E5M2 => S::F8_E5M2,
        Dtype::I16 => S::I16,
        Dtype::U16 => S::U16,
        Dtype::F16 => S::F16,
        Dtype::Bf16 => S::BF16,
        Dtype::I32 => S::I32,
        Dtype::U32 => S::U32,
        Dtype::F32 => S::F32,
        Dtype::I64 => S::I64,
        Dtype::U64 => S::U64,
        Dtype::F64 => S::F64,
    }
}

/// The 1.2.0 version this crate reads (minor <= this) and writes.
pub const V1_VERSION: (u32, u32, u32) = (1, 2, 0);

/// Write `layers` (`(prefix, layer)`) as a 1.2.0 UQFF file, mistral.rs's bytes for 4/8-bit
/// layers; 1/2/3-bit layers only with [`Extension::Allow`].
pub fn write_v1(layers: &[(String, UqffHqqLayer)], ext: Extension) -> Result<Vec<u8>> {
    let scalar_u32 = |v: usize| (Dtype::U32, vec![], (v as u32).to_le_bytes().to_vec());
    let scalar_u8 = |v: u8| (Dtype::U8, vec![], vec![v]);
    type Owned = (Dtype, Vec<usize>, Vec<u8>);
    let mut tensors: Vec<(String, Owned)> = vec![
        ("uqff.version.major".into(), scalar_u32(V1_VERSION.0 as usize)),
        ("uqff.version.minor".into(), scalar_u32(V1_VERSION.1 as usize)),
        ("uqff.version.patch".into(), scalar_u32(V1_VERSION.2 as usize)),
    ];
    for (p, l) in layers {
        l.validate()?;
        if ext == Extension::Refuse && !matches!(l.config.bits, 4 | 8) {
            return Err(bad(
                0,
                format!(
                    "{p}: {}-bit HQQ is not in mistral.rs's UQFF 1.2 (Extension::Allow writes it)",
                    l.config.bits
                ),
            ));
        }
        let c = &l.config;
        let w = format!("{p}.weight");
        let t = |x: &UqffTensor| (x.dtype, x.shape.clone(), x.data.clone());
        let shape: Vec<u8> = l.shape.iter().flat_map(|&d| (d as u32).to_le_bytes()).collect();
        if l.shape.iter().any(|&d| u32::try_from(d).is_err()) || c.group_size > u32::MAX as usize {
            return Err(bad(0, format!("{p}: a dimension does not fit in u32")));
        }
        tensors.extend([
            (w.clone(), t(&l.w_q)),
            (format!("{w}.format"), scalar_u8(HQQ_TYPE)),
            (format!("{w}.scales"), t(&l.scales)),
            (format!("{w}.zeros"), t(&l.zeros)),
            (format!("{w}.shape"), (Dtype::U32, vec![l.shape.len()], shape)),
            (format!("{w}.bits"), scalar_u8(c.bits)),
            (format!("{w}.group_size"), scalar_u32(c.group_size)),
            (format!("{w}.axis"), scalar_u8(if c.axis == Axis::Zero { 0 } else { 1 })),
            (format!("{w}.optimization_steps"), scalar_u32(c.optimization_steps.unwrap_or(0))),
            (format!("{w}.round_zeros"), scalar_u8(c.round_zeros as u8)),
            (format!("{w}.channel_wise"), scalar_u8(c.channel_wise as u8)),
        ]);
        if let Some(b) = &l.bias {
            tensors.push((format!("{p}.bias"), t(b)));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (d, s, b))| {
            let v = safetensors::tensor::TensorView::new(st_dtype(*d), s.clone(), b)
                .map_err(|e| bad(0, e.to_string()))?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, None).map_err(|e| bad(0, e.to_string()))
}

/// Read a 1.2.0 UQFF file: every HQQ layer as `(prefix, layer)`, sorted by prefix. Layers of
/// other quantization types are refused (this crate reads HQQ only); 1/2/3-bit layers only with
/// [`Extension::Allow`].
pub fn read_v1(bytes: &[u8], ext: Extension) -> Result<Vec<(String, UqffHqqLayer)>> {
    let tensors = safetensors_tensors(bytes)?;
    let get = |name: &str, _data: bool| -> Result<Option<UqffTensor>> {
        Ok(tensors.get(name).map(|(d, s, data)| UqffTensor {
            dtype: *d,
            shape: s.clone(),
            data: data.to_vec(),
        }))
    };
    v1_version(&get)?;
    v1_prefixes(tensors.keys().map(String::as_str))
        .into_iter()
        .map(|p| Ok((p.to_string(), v1_layer(&get, p, ext)?)))
        .collect()
}

/// How a 1.2.0 reader gets tensor `name` (`None`: not in the file): its dtype and shape, and
/// its bytes; the second argument is false for a layer's large tensors (codes, scales, zeros,
/// bias), whose bytes a getter that only checks a file's layers leaves empty.
pub(crate) type V1Get<'a> = dyn Fn(&str, bool) -> Result<Option<UqffTensor>> + 'a;

/// The layer prefixes of a 1.2.0 file's tensor names, in name order.
pub(crate) fn v1_prefixes<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    names.filter_map(|n| n.strip_suffix(".weight.format")).collect()
}

fn v1_tensor(get: &V1Get<'_>, name: &str, data: bool) -> Result<UqffTensor> {
    get(name, data)?.ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.to_string()])))
}

fn v1_scalar(get: &V1Get<'_>, name: &str, dtype: Dtype) -> Result<u32> {
    let t = v1_tensor(get, name, true)?;
    if t.dtype != dtype || !t.shape.is_empty() || t.data.len() != dtype.size() {
        return Err(bad(0, format!("{name}: {} {:?}, expected a {dtype} scalar", t.dtype, t.shape)));
    }
    let d = &t.data;
    Ok(match dtype {
        Dtype::U8 => d[0] as u32,
        _ => u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
    })
}

/// Check a 1.2.0 file's `uqff.version.*` scalars.
pub(crate) fn v1_version(get: &V1Get<'_>) -> Result<()> {
    let (major, minor, patch) = (
        v1_scalar(get, "uqff.version.major", Dtype::U32)?,
        v1_scalar(get, "uqff.version.minor", Dtype::U32)?,
        v1_scalar(get, "uqff.version.patch", Dtype::U32)?,
    );
    if major != V1_VERSION.0 || minor > V1_VERSION.1 {
        return Err(Error::Format(FormatError::UqffVersion { major, minor, patch }));
    }
    Ok(())
}

/// The 1.2.0 layer `p`, validated against its recorded config and shape; with `get` leaving
/// the large tensors' bytes empty, a layer checked from the header alone.
pub(crate) fn v1_layer(get: &V1Get<'_>, p: &str, ext: Extension) -> Result<UqffHqqLayer> {
    let w = format!("{p}.weight");
    let kind = v1_scalar(get, &format!("{w}.format"), Dtype::U8)? as u8;
    if kind != HQQ_TYPE {
        return Err(Error::Format(FormatError::UqffQuantType(kind)));
    }
    let shape_t = v1_tensor(get, &format!("{w}.shape"), true)?;
    if shape_t.dtype != Dtype::U32 || shape_t.shape.len() != 1 || shape_t.shape[0] > MAX_DIMS {
        return Err(bad(0, format!("{w}.shape: {} {:?}", shape_t.dtype, shape_t.shape)));
    }
    let shape =
        shape_t.data.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let axis = Axis::try_from(v1_scalar(get, &format!("{w}.axis"), Dtype::U8)? as u8)
        .map_err(|_| bad(0, format!("{w}.axis")))?;
    let flag = |n: &str| -> Result<bool> {
        match v1_scalar(get, &format!("{w}.{n}"), Dtype::U8)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(bad(0, format!("{w}.{n}: {v} is not 0 or 1"))),
        }
    };
    let steps = v1_scalar(get, &format!("{w}.optimization_steps"), Dtype::U32)? as usize;
    let config = HqqConfig {
        bits: v1_scalar(get, &format!("{w}.bits"), Dtype::U8)? as u8,
        group_size: v1_scalar(get, &format!("{w}.group_size"), Dtype::U32)? as usize,
        axis,
        optimization_steps: (steps > 0).then_some(steps),
        round_zeros: flag("round_zeros")?,
        channel_wise: flag("channel_wise")?,
    };
    if ext == Extension::Refuse && !matches!(config.bits, 4 | 8) {
        return Err(bad(0, format!("{p}: {}-bit HQQ is not in mistral.rs's UQFF 1.2", config.bits)));
    }
    let layer = UqffHqqLayer {
        w_q: v1_tensor(get, &w, false)?,
        scales: v1_tensor(get, &format!("{w}.scales"), false)?,
        zeros: v1_tensor(get, &format!("{w}.zeros"), false)?,
        shape,
        config,
        bias: get(&format!("{p}.bias"), false)?,
    };
    layer.validate()?;
    Ok(layer)
}
