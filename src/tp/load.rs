//! Where the parallel layers' `load` constructors find a layer by name: [`LayerSource`].
//!
//! A quantized checkpoint ([`QuantizedCheckpoint`]) serves its quantized layers (GPTQ, AWQ,
//! FP8) and, for any other name, an unquantized `<prefix>.weight` it holds (an `lm_head`, a
//! model left dense); an unquantized checkpoint ([`Checkpoint`], F32/F16/BF16 weights) serves
//! its dense layers. A dense share is read as the region of `<prefix>.weight` it covers: its
//! rows in one read, or its columns one read per row.

use super::Shard;
use crate::dense::DenseWeight;
use crate::elem::FloatVec;
use crate::error::{Error, FormatError, KernelError, LoraError, Result};
use crate::io::checkpoint::FLOATS;
use crate::io::{Checkpoint, LoraAdapter, QuantizedCheckpoint, UqffModel};
use crate::layer::QuantWeight;
use crate::matmul::{Activations, QuantLinear};
use crate::method::{QuantConfig, QuantMethod};
use crate::par::Parallelism;

/// A layer, or one rank's share of it, and the bias that goes with it.
pub type LoadedLayer = (QuantWeight, Option<FloatVec>);

/// How the parallel layers' `load` constructors treat what they read.
///
/// ```
/// use quant_kernels::tp::LoadOptions;
/// use quant_kernels::QuantMethod;
/// let opts = LoadOptions { isq: Some(QuantMethod::Int8Symmetric { per_channel: true }), ..Default::default() };
/// assert_eq!(opts.hqq_steps, None);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// Quantize each layer as it loads (in-situ quantization): a dense share from its weights,
    /// a quantized one after dequantizing it ([`QuantMethod::quantize`]); the share is
    /// quantized, after the cut, one layer in `f32` at a time; the bias becomes `f32`. `None`
    /// keeps layers as stored.
    pub isq: Option<QuantMethod>,
    /// Per-layer methods by name or glob instead of `isq` when set
    /// ([`QuantConfig::method_for`]: a layer it gives `None` stays as stored).
    pub isq_config: Option<&'a QuantConfig>,
    /// HQQ optimizer steps when `isq` is HQQ (`None`: round to nearest, as mistral.rs's ISQ).
    pub hqq_steps: Option<usize>,
    /// A LoRA adapter merged into the layers it adapts as they load, in `f32`, before they are
    /// quantized: a rank merges only its share (which equals merging the whole layer, then
    /// cutting it). A merged layer that is not quantized after stays dense `f32`.
    pub lora: Option<&'a LoraAdapter>,
    /// Merge the adapter into layers stored quantized too: dequantize, merge, and quantize
    /// again (with the ISQ method for the layer if there is one, else the layer's own method,
    /// when it has a quantizer). `false`: such a layer is [`LoraError::QuantizedBase`].
    pub lora_requantize: bool,
    /// Threads and instruction set for the dequantization, merge and quantization.
    pub par: Parallelism,
    /// How the loaded layers multiply: [`Activations::Int8`] is set on every layer whose
    /// weight that path takes (GPTQ/AWQ, HQQ, int8 and int4 with groups of a multiple of 32
    /// inputs, after any load-time quantization; see [`Activations::Int8`]); the others (FP8,
    /// dense) keep the exact `f32` path.
    pub activations: Activations,
    /// With [`Activations::Int8`]: free each layer's own scheme weight once its int8 layout is
    /// built ([`QuantLinear::drop_scheme_weight`]), so the layers take about half the memory;
    /// layers the int8 path does not take keep theirs. `false` (the default) keeps both, so a
    /// layer can still switch to the `f32` path or give its weight back.
    pub drop_scheme_weight: bool,
}

impl LoadOptions<'_> {
    /// A layer from a loaded weight and bias, multiplying as [`LoadOptions::activations`] asks
    /// where its weight allows.
    pub(crate) fn linear(&self, w: QuantWeight, bias: Option<FloatVec>) -> Result<QuantLinear> {
        let mut l = QuantLinear::new(w, bias)?;
        match l.set_activations(self.activations) {
            Err(Error::Kernel(KernelError::Int8Activations { .. })) => return Ok(l),
            r => r?,
        }
        if self.drop_scheme_weight && self.activations == Activations::Int8 {
            l.drop_scheme_weight()?;
        }
        Ok(l)
    }

    /// The method layer `prefix` is quantized with as it loads, if any.
    pub fn method_for(&self, prefix: &str) -> Option<QuantMethod> {
        match self.isq_config {
            Some(c) => c.method_for(prefix).copied(),
            None => self.isq,
        }
    }

    /// Layer `prefix` (its share `shard`, or all of it) from `src`, as these options want it.
    pub(crate) fn load(
        &self,
        src: &impl LayerSource,
        prefix: &str,
        shard: Option<&Shard>,
    ) -> Result<LoadedLayer> {
        let (layer, method) = self.read(src, prefix, shard)?;
        self.quantize(method, layer)
    }

    /// Layer `prefix` (its share `shard`, or all of it) read and merged with its LoRA, and the
    /// method it is to be quantized with after ([`LoadOptions::quantize`]). With a method or a
    /// LoRA, a dense weight is read widened to `f32` ([`LayerSource::load_layer_f32`]) and
    /// handled without another copy, so one layer is in memory once in `f32`.
    pub(crate) fn read(
        &self,
        src: &impl LayerSource,
        prefix: &str,
        shard: Option<&Shard>,
    ) -> Result<(LoadedLayer, Option<QuantMethod>)> {
        let method = self.method_for(prefix);
        let lora = self.lora.filter(|l| l.module(prefix).is_some());
        if method.is_none() && lora.is_none() {
            let layer = match shard {
                Some(s) => src.load_layer_shard(prefix, s)?,
                None => src.load_layer(prefix)?,
            };
            return Ok((layer, None));
        }
        let (w, bias) = src.load_layer_f32(prefix, shard)?;
        let Some(lora) = lora else { return Ok(((w, bias), method)) };
        let stored = src
            .layer_shape(prefix)
            .ok_or_else(|| Error::Lora(LoraError::UnknownModule { module: prefix.into() }))?;
        lora.check_base(prefix, stored)?;
        let own = match &w {
            QuantWeight::Dense(_) => None,
            q if !self.lora_requantize => {
                return Err(Error::Lora(LoraError::QuantizedBase {
                    module: prefix.into(),
                    scheme: q.scheme(),
                }));
            }
            q => Some(q.method().ok_or_else(|| Error::Kernel(KernelError::NoQuantizer(q.scheme().into())))?),
        };
        let (rows, cols) = match shard {
            None => (0..stored.0, 0..stored.1),
            Some(s) if s.dim() == 0 => (s.range(stored.0)?, 0..stored.1),
            Some(s) => (0..stored.0, s.range(stored.1)?),
        };
        let (r, c) = w.shape();
        let mut v = into_f32(w, self.par)?;
        lora.merge_region(prefix, stored, &mut v, rows, cols, self.par)?;
        Ok(((QuantWeight::dense(r, c, v), bias), method.or(own)))
    }

    /// `layer` quantized with `method` (its bias made `f32`), or as it is without one.
    pub(crate) fn quantize(
        &self,
        method: Option<QuantMethod>,
        (w, bias): LoadedLayer,
    ) -> Result<LoadedLayer> {
        let Some(method) = method else { return Ok((w, bias)) };
        let (rows, cols) = w.shape();
        let dense = into_f32(w, self.par)?;
        let q = method.quantize(&dense, rows, cols, self.hqq_steps, self.par)?;
        Ok((q, bias.map(|b| FloatVec::F32(b.to_f32()))))
    }
}

/// A weight's values in `f32`: a dense `f32` weight as is, anything else converted.
fn into_f32(w: QuantWeight, par: Parallelism) -> Result<Vec<f32>> {
    match w {
        QuantWeight::Dense(DenseWeight { w: FloatVec::F32(v), .. }) => Ok(v),
        w => w.dequantize(par),
    }
}

/// A checkpoint the parallel layers load from by name.
pub trait LayerSource {
    /// The tensors as stored, for layers that are not one `[out, in]` weight each (stacked
    /// experts) and for listing names; `None` (the default) for a source that serves layers
    /// only.
    fn checkpoint(&self) -> Option<&Checkpoint> {
        None
    }

    /// `(out, in)` of the layer `prefix` (a quantized layer, or a 2-D float
    /// `<prefix>.weight`), `None` when there is none.
    fn layer_shape(&self, prefix: &str) -> Option<(usize, usize)>;

    /// Whether a layer `prefix` exists.
    fn has_layer(&self, prefix: &str) -> bool {
        self.layer_shape(prefix).is_some()
    }

    /// The whole layer `prefix` and its bias.
    fn load_layer(&self, prefix: &str) -> Result<LoadedLayer>;

    /// Layer `prefix` (share `shard` of it, or all of it) to be quantized as it loads: a dense
    /// weight comes widened to `f32` as it is read, a block of rows at a time, so it is never in
    /// memory in both types; a quantized layer as stored.
    fn load_layer_f32(&self, prefix: &str, shard: Option<&Shard>) -> Result<LoadedLayer> {
        match shard {
            Some(s) => self.load_layer_shard(prefix, s),
            None => self.load_layer(prefix),
        }
    }

    /// Share `shard` of layer `prefix`, reading only its bytes where the format allows, with
    /// the bias as the share takes it: sliced with the outputs (`dim` 0), whole otherwise (a
    /// row-parallel layer adds it once, after the sum). Equal to the whole layer sharded.
    fn load_layer_shard(&self, prefix: &str, shard: &Shard) -> Result<LoadedLayer>;
}

/// The 2-D float `<prefix>.weight` of `ck`, if there is one.
fn dense_info(ck: &Checkpoint, prefix: &str) -> Option<(usize, usize)> {
    let info = ck.info(&format!("{prefix}.weight"))?;
    match info.shape[..] {
        [rows, cols] if FLOATS.contains(&info.dtype) => Some((rows, cols)),
        _ => None,
    }
}

/// `f32` values per block of rows read by [`dense_layer`] when it widens.
const WIDEN_BLOCK: usize = 1 << 16;

/// The dense layer `prefix` of `ck`, whole (`shard` `None`) or one share of it, in its stored
/// type or (`widen`) in `f32`, read a block of rows at a time.
fn dense_layer(ck: &Checkpoint, prefix: &str, shard: Option<&Shard>, widen: bool) -> Result<LoadedLayer> {
    let name = format!("{prefix}.weight");
    let (rows, cols) = dense_info(ck, prefix).ok_or_else(|| match ck.info(&name) {
        None => Error::Format(FormatError::MissingTensors(vec![name.clone()])),
        Some(i) => Error::Format(FormatError::TensorShape {
            tensor: name.clone(),
            expected: vec![0, 0],
            got: i.shape.clone(),
        }),
    })?;
    let bname = format!("{prefix}.bias");
    if let Some(b) = ck.info(&bname)
        && b.shape != [rows]
    {
        return Err(Error::Format(FormatError::TensorShape {
            tensor: bname,
            expected: vec![rows],
            got: b.shape.clone(),
        }));
    }
    let has_bias = ck.info(&bname).is_some();
    let (r, c) = match shard {
        None => (0..rows, 0..cols),
        Some(s) if s.dim() == 0 => (s.range(rows)?, 0..cols),
        Some(s) => (0..rows, s.range(cols)?),
    };
    let bias = if has_bias { Some(ck.read_floats_region(&bname, 0..1, r.clone())?) } else { None };
    let w = if widen {
        let mut v = Vec::with_capacity(r.len() * c.len());
        let per = (WIDEN_BLOCK / c.len().max(1)).max(1);
        for r0 in r.clone().step_by(per) {
            v.extend(ck.read_floats_region(&name, r0..(r0 + per).min(r.end), c.clone())?.to_f32());
        }
        FloatVec::F32(v)
    } else {
        ck.read_floats_region(&name, r.clone(), c.clone())?
    };
    Ok((QuantWeight::Dense(DenseWeight { rows: r.len(), cols: c.len(), w }), bias))
}

impl LayerSource for Checkpoint {
    fn checkpoint(&self) -> Option<&Checkpoint> {
        Some(self)
    }

    fn layer_shape(&self, prefix: &str) -> Option<(usize, usize)> {
        dense_info(self, prefix)
    }

    fn load_layer(&self, prefix: &str) -> Result<LoadedLayer> {
        dense_layer(self, prefix, None, false)
    }

    fn load_layer_f32(&self, prefix: &str, shard: Option<&Shard>) -> Result<LoadedLayer> {
        dense_layer(self, prefix, shard, true)
    }

    fn load_layer_shard(&self, prefix: &str, shard: &Shard) -> Result<LoadedLayer> {
        dense_layer(self, prefix, Some(shard), false)
    }
}

impl LayerSource for QuantizedCheckpoint {
    fn checkpoint(&self) -> Option<&Checkpoint> {
        Some(QuantizedCheckpoint::checkpoint(self))
    }

    fn layer_shape(&self, prefix: &str) -> Option<(usize, usize)> {
        match self.summary(prefix) {
            Some(l) => Some((l.out, l.inp)),
            None => self.checkpoint().layer_shape(prefix),
        }
    }

    fn load_layer(&self, prefix: &str) -> Result<LoadedLayer> {
        if !self.is_quantized_layer(prefix) {
            return self.checkpoint().load_layer(prefix);
        }
        let mut w = self.load(prefix)?;
        let bias = w.take_bias();
        Ok((w, bias))
    }

    fn load_layer_f32(&self, prefix: &str, shard: Option<&Shard>) -> Result<LoadedLayer> {
        if !self.is_quantized_layer(prefix) {
            return self.checkpoint().load_layer_f32(prefix, shard);
        }
        match shard {
            Some(s) => self.load_layer_shard(prefix, s),
            None => self.load_layer(prefix),
        }
    }

    fn load_layer_shard(&self, prefix: &str, shard: &Shard) -> Result<LoadedLayer> {
        if !self.is_quantized_layer(prefix) {
            return self.checkpoint().load_layer_shard(prefix, shard);
        }
        let mut w = self.load_shard(prefix, shard)?;
        let bias = w.take_bias();
        Ok((w, bias))
    }
}

impl LayerSource for UqffModel {
    fn checkpoint(&self) -> Option<&Checkpoint> {
        self.dense()
    }

    fn layer_shape(&self, prefix: &str) -> Option<(usize, usize)> {
        self.uqff_layer_shape(prefix).or_else(|| self.dense().and_then(|d| d.layer_shape(prefix)))
    }

    fn load_layer(&self, prefix: &str) -> Result<LoadedLayer> {
        match self.layer(prefix)? {
            Some((w, b)) => Ok((QuantWeight::Hqq(w), b)),
            None => uqff_dense(self, prefix)?.load_layer(prefix),
        }
    }

    fn load_layer_f32(&self, prefix: &str, shard: Option<&Shard>) -> Result<LoadedLayer> {
        match (self.is_uqff_layer(prefix), shard) {
            (true, Some(s)) => self.load_layer_shard(prefix, s),
            (true, None) => self.load_layer(prefix),
            (false, _) => uqff_dense(self, prefix)?.load_layer_f32(prefix, shard),
        }
    }

    fn load_layer_shard(&self, prefix: &str, shard: &Shard) -> Result<LoadedLayer> {
        match self.layer(prefix)? {
            Some((w, b)) => {
                let w = QuantWeight::Hqq(crate::scheme::QuantScheme::shard(&w, shard)?);
                let b = if shard.dim() == 0 { super::linear::bias_shard(b.as_ref(), shard)? } else { b };
                Ok((w, b))
            }
            None => uqff_dense(self, prefix)?.load_layer_shard(prefix, shard),
        }
    }
}

/// `model`'s dense checkpoint for a layer its UQFF files do not hold, or the error that names
/// the layer's weight.
fn uqff_dense<'a>(model: &'a UqffModel, prefix: &str) -> Result<&'a Checkpoint> {
    model.dense().ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![format!("{prefix}.weight")])))
}
