//! The crate's error type, [`Error`]: one variant per area, each owning its errors —
//! [`KernelError`] (a kernel's boundary: lengths, shapes, groups, widths), [`FormatError`]
//! (safetensors, UQFF, configs, checkpoint directories, I/O), [`TpError`] (shards, plans,
//! collectives), [`LoraError`] (adapters merged on load), [`MoeError`] (expert layers) and
//! `CudaError` (feature `cuda`).
//!
//! Every public entry point validates its arguments before any work and returns one of these;
//! inner kernels only `debug_assert!`. Variants carry the numbers that were wrong so a caller
//! can report them without parsing a message, and keep their causes as sources (an I/O error,
//! the layer error behind a shard plan that does not fit).

/// Shorthand for `Result<T, quant_kernels::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

use std::sync::Arc;

/// `Ok` when a buffer has the length its shape implies, else [`KernelError::LengthMismatch`].
pub(crate) fn expect_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::Kernel(KernelError::LengthMismatch { what, expected, got }))
    }
}

/// The tail of [`TpError::ShardPlan`]'s message: the nearest legal world sizes.
fn nearest_world_sizes(below: &Option<usize>, above: &Option<usize>, max: usize) -> String {
    match (below, above) {
        (Some(b), Some(a)) => format!("nearest legal world sizes: {b} below, {a} above"),
        (Some(b), None) => format!("nearest legal world sizes: {b} below, none above (up to {max})"),
        (None, Some(a)) => format!("nearest legal world sizes: none below, {a} above"),
        (None, None) => format!("no legal world size from 1 to {max}"),
    }
}

impl Error {
    /// A [`FormatError::Io`] for `path`, keeping `e` as its source.
    pub fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        Error::Format(FormatError::Io { path: path.display().to_string(), source: IoSource(Arc::new(e)) })
    }
}

/// A `std::io::Error` kept as the source of a [`FormatError::Io`]: shared so that errors stay
/// `Clone`, and compared by kind and message so that they stay `PartialEq`.
#[derive(Debug, Clone)]
pub struct IoSource(Arc<std::io::Error>);

impl IoSource {
    /// The I/O error.
    pub fn get(&self) -> &std::io::Error {
        &self.0
    }

    /// Its kind.
    pub fn kind(&self) -> std::io::ErrorKind {
        self.0.kind()
    }
}

impl PartialEq for IoSource {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for IoSource {}

impl std::fmt::Display for IoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for IoSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(feature = "cuda")]
impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Cuda(CudaError::Cuda(e))
    }
}

/// Everything that can go wrong at the API boundary: one variant per area, each wrapping that
/// area's own error type (whose variants carry the numbers that were wrong).
///
/// ```
/// use quant_kernels::error::{Error, KernelError};
/// let e = quant_kernels::hqq::HqqLayout::new(4, 4, 3, quant_kernels::hqq::Axis::One).unwrap_err();
/// assert!(matches!(e, Error::Kernel(KernelError::GroupSize { group: 3, .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad arguments at a kernel's boundary.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A malformed or unreadable file or config.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Tensor parallelism.
    #[error(transparent)]
    Tp(#[from] TpError),
    /// A LoRA adapter that cannot be merged.
    #[error(transparent)]
    Lora(#[from] LoraError),
    /// Mixture-of-experts layers that do not fit their checkpoint or their routing.
    #[error(transparent)]
    Moe(#[from] MoeError),
    /// The CUDA driver.
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Cuda(#[from] CudaError),
}

/// Bad arguments at a kernel's boundary: lengths, shapes, group sizes, bit widths, values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A bit width the scheme does not pack.
    #[error("unsupported bit width {0} (expected one of 1, 2, 3, 4, 8)")]
    UnsupportedBits(u8),

    /// A method with no quantizer from the weights alone (GPTQ, AWQ and SmoothQuant need
    /// calibration data), asked to quantize at load time.
    #[error("{0} cannot quantize a weight at load time (it needs calibration data)")]
    NoQuantizer(String),

    /// An axis other than 0 or 1.
    #[error("unsupported axis {0} (expected 0 or 1)")]
    UnsupportedAxis(u8),

    /// A weight the int8-activation path ([`crate::matmul::Activations::Int8`]) does not take.
    #[error("the int8-activation path does not take this {scheme} weight: {reason}")]
    Int8Activations {
        /// The weight's scheme.
        scheme: &'static str,
        /// What it lacks.
        reason: &'static str,
    },

    /// The layer's own scheme weight was dropped for the int8 path
    /// (`QuantLinear::drop_scheme_weight`), and an operation needs it.
    #[error(
        "this {scheme} layer no longer holds its scheme weight (dropped for the int8 path), which {needs} needs"
    )]
    SchemeWeightDropped {
        /// The weight's scheme.
        scheme: &'static str,
        /// What needed it.
        needs: &'static str,
    },

    /// `QuantLinear::drop_scheme_weight` on a layer on the `f32` path, which needs that weight.
    #[error(
        "this {scheme} layer multiplies with f32 activations: set Activations::Int8 before dropping its scheme weight"
    )]
    DropOnF32Path {
        /// The weight's scheme.
        scheme: &'static str,
    },

    /// Fewer groups than a layout's inputs need.
    #[error("{groups} groups where the inputs need at least {needed}")]
    TooFewGroups {
        /// The groups asked for.
        groups: usize,
        /// The fewest the layout needs.
        needed: usize,
    },

    /// A stacked-experts weight where one linear layer was expected.
    #[error("a weight of {experts} stacked experts is not one linear layer (split the experts first)")]
    StackedExperts {
        /// The number of stacked experts.
        experts: usize,
    },

    /// A buffer whose length does not match the shape it is used with.
    #[error("{what}: expected {expected} elements, got {got}")]
    LengthMismatch {
        /// Which argument was wrong (e.g. `"scales"`).
        what: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The length passed.
        got: usize,
    },

    /// A group size that is zero or does not divide the number of elements.
    #[error("group size {group} does not divide {len} elements")]
    GroupSize {
        /// The group size passed.
        group: usize,
        /// The element count it must divide.
        len: usize,
    },

    /// A shape whose element count does not fit in `usize`.
    #[error("shape {rows}x{cols} overflows usize")]
    ShapeOverflow {
        /// Rows of the shape.
        rows: usize,
        /// Columns of the shape.
        cols: usize,
    },

    /// The packed axis of a code matrix is not a multiple of what the bit width packs per word.
    #[error("{bits}-bit packing needs the packed axis ({rows} rows) to be a multiple of {multiple}")]
    PackRows {
        /// The bit width.
        bits: u8,
        /// Rows of the code matrix (the packed axis).
        rows: usize,
        /// The multiple the bit width requires.
        multiple: usize,
    },

    /// An index past the rows it selects from.
    #[error("{what} {index} is past the {len} there are")]
    IndexOutOfRange {
        /// What the index selects.
        what: &'static str,
        /// The index.
        index: usize,
        /// How many there are.
        len: usize,
    },

    /// A code that does not fit in the bit width it is packed with.
    #[error("code {code} at index {index} does not fit in {bits} bits")]
    CodeOutOfRange {
        /// Flat index of the offending code.
        index: usize,
        /// The code value.
        code: u8,
        /// The bit width.
        bits: u8,
    },

    /// A dimension that must be a multiple of something (e.g. GPTQ's K for its packing).
    #[error("{what} = {value} must be a multiple of {multiple}")]
    NotMultiple {
        /// Which dimension.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The required multiple.
        multiple: usize,
    },

    /// A group index (GPTQ `g_idx`) outside `0..groups`.
    #[error("g_idx[{index}] = {value} is outside 0..{groups}")]
    GroupIndex {
        /// Position in `g_idx`.
        index: usize,
        /// The value found.
        value: i64,
        /// Number of groups.
        groups: usize,
    },

    /// A row permutation that is not one: a value outside `0..len` or one seen before.
    #[error("perm[{index}] = {value} is outside 0..{len} or repeated: not a permutation")]
    Permutation {
        /// Position in the permutation.
        index: usize,
        /// The value found.
        value: u64,
        /// Number of rows.
        len: usize,
    },

    /// A group size that is neither -1 (one group) nor positive.
    #[error("invalid group size {0} (expected -1 or a positive size)")]
    InvalidGroupSize(i64),

    /// A size that does not fit the 32-bit index a GPU kernel takes.
    #[error("{what} = {value} exceeds the GPU kernels' limit {max}")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The largest value supported.
        max: usize,
    },

    /// A NaN or infinite input value where a quantizer needs finite ones.
    #[error("input value at index {index} is NaN or infinite")]
    NonFinite {
        /// Flat index of the first non-finite value.
        index: usize,
    },

    /// Layers that cannot be fused: `what` differs between part 0 and part `part`.
    #[error("cannot fuse: {what} of part {part} differs from part 0")]
    Fuse {
        /// The property that differs (`"K"`, `"g_idx"`, `"bias"`, ...).
        what: &'static str,
        /// Index of the first part that differs.
        part: usize,
    },
}

/// A file or config that cannot be read as what it claims to be: safetensors, UQFF, JSON
/// configs, checkpoint directories, and the I/O under them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A malformed UQFF blob or file: truncated, a count over its cap, inconsistent tensors.
    #[error("UQFF: at byte {offset}: {reason}")]
    Uqff {
        /// Byte offset in the blob where the problem was found (0 when not positional).
        offset: usize,
        /// What is wrong.
        reason: String,
    },

    /// A UQFF version this crate does not read (0.x with x <= 2, or 1.x with x <= 2).
    #[error("unsupported UQFF version {major}.{minor}.{patch}")]
    UqffVersion {
        /// Major version found.
        major: u32,
        /// Minor version found.
        minor: u32,
        /// Patch version found.
        patch: u32,
    },

    /// A UQFF layer of a quantization type other than HQQ (2).
    #[error("UQFF layer type {0} is not HQQ (2)")]
    UqffQuantType(u8),

    /// A UQFF tensor dtype code this crate does not support.
    #[error("UQFF dtype code {0} is not supported")]
    UqffDtype(u32),

    /// A file that could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: IoSource,
    },

    /// A safetensors file whose header or layout is malformed: truncated, corrupt JSON, an
    /// unknown dtype, offsets that overlap, leave gaps or run past the end of the file.
    #[error("{path}: malformed safetensors file: {reason}")]
    Safetensors {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// A JSON file (config, shard index) that does not parse or has a field of the wrong type.
    #[error("{path}: {reason}")]
    Json {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// A quantization config field that is invalid, unsupported, or contradicts another.
    #[error("quantization config: `{field}`: {reason}")]
    Config {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Tensors that an index or a layer needs and the checkpoint does not contain.
    #[error("missing tensors: {}", .0.join(", "))]
    MissingTensors(Vec<String>),

    /// A weight of one scheme given to write into a checkpoint of another.
    #[error("a {weight} weight cannot be written into a {checkpoint} checkpoint")]
    SchemeMismatch {
        /// The checkpoint's scheme.
        checkpoint: &'static str,
        /// The weight's scheme.
        weight: &'static str,
    },

    /// A shard that a checkpoint's index names and that does not exist.
    #[error("missing shard `{file}` (holds {tensors} tensors of the index)")]
    MissingShard {
        /// The shard's file name.
        file: String,
        /// How many tensors the index places in it.
        tensors: usize,
    },

    /// A file name in a shard index that would leave the checkpoint directory.
    #[error("index entry `{0}` points outside the checkpoint directory")]
    OutsideDirectory(String),

    /// A tensor with a dtype its role does not allow.
    #[error("{tensor}: dtype {got}, expected {expected}")]
    TensorDtype {
        /// The tensor.
        tensor: String,
        /// The dtype(s) allowed.
        expected: &'static str,
        /// The dtype found.
        got: String,
    },

    /// A region of a tensor (rows and columns of its `[rows, last dimension]` view) that lies
    /// outside it.
    #[error("{tensor}: rows {rows:?}, columns {cols:?} lie outside its shape {shape:?}")]
    TensorRegion {
        /// The tensor.
        tensor: String,
        /// The rows asked for.
        rows: std::ops::Range<usize>,
        /// The columns asked for.
        cols: std::ops::Range<usize>,
        /// Its shape.
        shape: Vec<usize>,
    },

    /// A tensor whose shape does not match the layer it belongs to.
    #[error("{tensor}: shape {got:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor.
        tensor: String,
        /// The shape the layer implies.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
}

/// A PEFT LoRA adapter that does not fit its base model or uses what this crate does not merge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    /// An `adapter_config.json` field that is missing, of the wrong type, or asks for something
    /// this crate does not merge (DoRA, a LoRA bias, regular-expression patterns).
    #[error("adapter_config.json: `{field}`: {reason}")]
    Config {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An adapter tensor that is not the `lora_A` / `lora_B` weight of a linear module
    /// (embedding adapters, `modules_to_save` copies, LoRA biases).
    #[error("{tensor}: not a LoRA A or B weight of a linear module")]
    UnexpectedTensor {
        /// The tensor.
        tensor: String,
    },
    /// A module with one of its two LoRA weights and not the other.
    #[error("{tensor}: missing (its module has the other LoRA weight)")]
    MissingTensor {
        /// The absent tensor.
        tensor: String,
    },
    /// An adapter tensor whose shape does not fit its config or its base layer.
    #[error("{tensor}: shape {got:?}, expected {expected:?}")]
    Shape {
        /// The tensor.
        tensor: String,
        /// The shape it must have.
        expected: Vec<usize>,
        /// The shape it has.
        got: Vec<usize>,
    },
    /// Adapter weights for a module that `target_modules` does not name.
    #[error("{module}: has LoRA weights but is not in target_modules")]
    NotTargeted {
        /// The module.
        module: String,
    },
    /// Adapter weights for a module the base checkpoint does not have.
    #[error("{module}: the adapter has LoRA weights for it, the base checkpoint has no such layer")]
    UnknownModule {
        /// The module.
        module: String,
    },
    /// A LoRA for a layer stored quantized, without the caller asking to dequantize, merge and
    /// requantize it.
    #[error(
        "{module}: the base layer is {scheme}; merging dequantizes it (ask for it with `lora_requantize`)"
    )]
    QuantizedBase {
        /// The module.
        module: String,
        /// The base layer's scheme.
        scheme: &'static str,
    },
}

/// Mixture-of-experts layers ([`crate::tp::MoeExperts`]): experts missing from or extra in a
/// checkpoint, stacked tensors of neither layout, routing that names no expert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoeError {
    /// A layer of no experts.
    #[error("an MoE layer needs at least one expert")]
    NoExperts,
    /// One of an expert's three projections is absent.
    #[error("{prefix}: expert {expert} has no `{proj}`")]
    MissingExpert {
        /// The experts module.
        prefix: String,
        /// The expert.
        expert: usize,
        /// The absent projection (`gate_proj`, `w3`, `gate_up_proj`, ...).
        proj: &'static str,
    },
    /// A tensor of an expert past the number of experts the caller gave.
    #[error("{tensor}: an expert past the {experts} experts of the model")]
    ExtraExpert {
        /// The tensor.
        tensor: String,
        /// The number of experts expected.
        experts: usize,
    },
    /// An expert projection whose `[out, in]` is not what the model's sizes say.
    #[error("{layer}: shape {got:?}, expected {expected:?}")]
    ExpertShape {
        /// The layer.
        layer: String,
        /// `(out, in)` expected.
        expected: (usize, usize),
        /// `(out, in)` stored.
        got: (usize, usize),
    },
    /// A stacked `gate_up_proj` / `down_proj` pair in neither stacked layout.
    #[error(
        "{prefix}: gate_up_proj {gate_up:?} and down_proj {down:?} are neither [E, hidden, 2I] and [E, I, hidden] nor [E, 2I, hidden] and [E, hidden, I] for E = {experts}, hidden = {hidden}, I = {intermediate}"
    )]
    StackedShape {
        /// The experts module.
        prefix: String,
        /// `gate_up_proj`'s shape.
        gate_up: Vec<usize>,
        /// `down_proj`'s shape.
        down: Vec<usize>,
        /// Experts expected.
        experts: usize,
        /// Model width expected.
        hidden: usize,
        /// Expert intermediate width expected.
        intermediate: usize,
    },
    /// Stacked FP8 experts in a checkpoint whose config gives no `weight_block_size`.
    #[error("{tensor}: stacked FP8 experts need the config's weight_block_size")]
    Fp8Block {
        /// The stacked tensor.
        tensor: String,
    },
    /// A routed expert id outside `0..experts`.
    #[error("routed expert {id} (token {token}) is outside the {experts} experts")]
    ExpertId {
        /// The id.
        id: usize,
        /// The token routed to it.
        token: usize,
        /// The number of experts.
        experts: usize,
    },
}

/// Tensor parallelism: shards that do not fit, plans that cannot be made, collectives that fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TpError {
    /// A shard dimension other than 0 (outputs) or 1 (inputs).
    #[error("shard dimension {0} (expected 0 = outputs or 1 = inputs)")]
    ShardDim(usize),

    /// A rank outside `0..world_size` (or an empty world).
    #[error("rank {rank} is outside a world of {world_size}")]
    ShardRank {
        /// The rank.
        rank: usize,
        /// The world size.
        world_size: usize,
    },

    /// An even split of a dimension that does not divide.
    #[error("a dimension of {len} does not split evenly over {world_size} ranks")]
    ShardUneven {
        /// The dimension's length.
        len: usize,
        /// The world size.
        world_size: usize,
    },

    /// An offset shard past the end of its dimension.
    #[error("shard {offset}..{offset}+{len} is outside a dimension of {dim_len}")]
    ShardRange {
        /// First index.
        offset: usize,
        /// Length.
        len: usize,
        /// The dimension's length.
        dim_len: usize,
    },

    /// A shard of a packed or grouped axis that does not start or end on its boundary.
    #[error("shard boundary {at} is not on a {what} boundary (a multiple of {multiple})")]
    ShardBoundary {
        /// Which boundary (`"group"`, `"qweight word row"`, ...).
        what: &'static str,
        /// The index that is off.
        at: usize,
        /// What it must be a multiple of.
        multiple: usize,
    },

    /// A MatFormer layer selection ([`crate::tp::ReplicatedLinear::load_layers_matformer`])
    /// that does not fit the layer: its outputs are not `orig_layers` equal blocks, or a kept
    /// index is not below `orig_layers`.
    #[error("cannot keep decoder layers {kept:?} of {orig_layers} from a layer of {out} outputs")]
    MatformerLayers {
        /// The layer's outputs.
        out: usize,
        /// Decoder layers of the full model.
        orig_layers: usize,
        /// The kept layer indices asked for.
        kept: Vec<usize>,
    },

    /// A scheme (or case) that cannot be sharded packed yet.
    #[error("sharding a packed {0} weight is not supported")]
    ShardScheme(&'static str),

    /// An HQQ weight whose grouping repeats every `period` weights (axis 1: the group size;
    /// axis 0: the code matrix's row length), a period that neither divides nor is a multiple
    /// of the weight's `cols`: a shard along the inputs cannot keep every weight's group.
    #[error(
        "HQQ groups repeat every {period} weights, which neither divides nor is a multiple of the {cols} columns: no shard along the inputs keeps them"
    )]
    ShardGrouping {
        /// The grouping period in weights.
        period: usize,
        /// Columns of the weight.
        cols: usize,
    },

    /// A model-level tensor-parallel plan ([`crate::tp::ShardPlan`]) that does not fit
    /// `world_size`: `layer` cannot be split as the plan needs (`cause`). `below` / `above`
    /// are the nearest world sizes (in `1..=searched`) the whole plan fits.
    #[error("cannot shard `{layer}` over {world_size} ranks: {cause}; {}", nearest_world_sizes(.below, .above, *.searched))]
    ShardPlan {
        /// The first layer (by name) that does not fit.
        layer: String,
        /// The world size asked for.
        world_size: usize,
        /// Why the layer does not fit.
        #[source]
        cause: Box<Error>,
        /// The largest legal world size below `world_size`.
        below: Option<usize>,
        /// The smallest legal world size above `world_size`.
        above: Option<usize>,
        /// The largest world size searched ([`crate::tp::MAX_WORLD_SEARCH`]).
        searched: usize,
    },

    /// A row-parallel layer whose input split is not the output split of the layer that feeds
    /// it (o_proj <- the q heads, down_proj <- gate/up) on some rank.
    #[error("rank {rank}: `{layer}` takes inputs {inputs:?} but `{feeder}` gives it outputs {outputs:?}")]
    ShardFeed {
        /// The row-parallel layer.
        layer: String,
        /// The column-parallel layer feeding it.
        feeder: String,
        /// The rank where the splits differ.
        rank: usize,
        /// The inputs the row-parallel layer holds on `rank`.
        inputs: std::ops::Range<usize>,
        /// The outputs the feeding layer holds on `rank`.
        outputs: std::ops::Range<usize>,
    },

    /// A row-parallel layer with no column-parallel layer feeding it in the same block, so its
    /// input split cannot be checked.
    #[error("`{layer}` is row-parallel but no {feeders} beside it feeds it")]
    ShardNoFeeder {
        /// The row-parallel layer.
        layer: String,
        /// The layers that would feed it (`"q_proj or qkv_proj"`, ...).
        feeders: &'static str,
    },

    /// A model `config.json` field that is absent where it is needed, or not a positive integer.
    #[error("config.json: `{field}` is missing or not a positive integer")]
    ModelConfig {
        /// The field (`"num_attention_heads"`, ...).
        field: &'static str,
    },

    /// Ranks called different collectives at the same point.
    #[error("rank {rank} called {what} while this rank called {expected}")]
    CommMismatch {
        /// The rank that differs.
        rank: usize,
        /// What it called.
        what: &'static str,
        /// What this rank called.
        expected: &'static str,
    },

    /// Ranks passed buffers of different lengths to one collective.
    #[error("rank {rank} passed {got} values where this rank passed {expected}")]
    CommLength {
        /// The rank that differs.
        rank: usize,
        /// This rank's length.
        expected: usize,
        /// The other rank's length.
        got: usize,
    },

    /// A rank left the group (its communicator was dropped, e.g. after an error).
    #[error("rank {rank} left the group")]
    CommPeerGone {
        /// The rank that left.
        rank: usize,
    },

    /// A collective waited longer than the group's timeout.
    #[error("rank {rank}: collective timed out after {millis} ms")]
    CommTimeout {
        /// The rank that timed out.
        rank: usize,
        /// The timeout.
        millis: u64,
    },

    /// KV heads that neither split over nor replicate evenly onto the ranks.
    #[error(
        "{kv_heads} KV heads cannot be split over or replicated onto {world_size} ranks (one must divide the other)"
    )]
    KvHeads {
        /// Total KV heads.
        kv_heads: usize,
        /// The world size.
        world_size: usize,
    },

    /// Attention heads that do not split evenly.
    #[error("{heads} attention heads do not split evenly over {world_size}")]
    AttentionHeads {
        /// Attention heads.
        heads: usize,
        /// What they must split over.
        world_size: usize,
    },

    /// MPI was already initialized in this process: [`crate::tp::MpiComm::init`] (like
    /// `mpi::initialize()`) works once per process.
    #[cfg(feature = "mpi")]
    #[error("MPI is already initialized in this process (initialize it once per process)")]
    MpiInitialized,
}

/// The CUDA driver: absent, or returning an error.
#[cfg(feature = "cuda")]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// No CUDA driver library (`libcuda`) could be loaded on this machine.
    #[error("no CUDA driver found (libcuda could not be loaded)")]
    CudaUnavailable,

    /// The CUDA driver returned an error.
    #[error("CUDA driver error: {0:?}")]
    Cuda(#[from] cudarc::driver::DriverError),

    /// A weight no GPU kernel of this crate multiplies (e.g. a dense one).
    #[error("no GPU kernel for {0}")]
    NoKernel(&'static str),

    /// A CUDA library (cuBLAS) that could not be loaded on this machine.
    #[error("{0} could not be loaded")]
    LibraryUnavailable(&'static str),

    /// cuBLAS returned an error (its status, as cuBLAS names it).
    #[error("cuBLAS error: {0}")]
    Cublas(String),
}
