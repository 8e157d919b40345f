//! Files: a lazy, validating safetensors reader and a streaming writer ([`safetensors`]), and
//! model checkpoints made of them ([`checkpoint`]: a single file or a sharded index, plus the
//! quantization config), their quantized layers ([`quantized`]: one generic
//! [`QuantCheckpoint`] over a scheme's layer type, and [`QuantizedCheckpoint`], whichever
//! scheme a directory holds), PEFT LoRA adapters merged on load ([`lora`]), and mistral.rs's
//! UQFF ([`uqff`]; [`UqffModel`]: UQFF layers beside a dense checkpoint).
//!
//! Nothing here maps or copies a whole file: headers are parsed and checked against the file
//! length when a file is opened, and tensors are read one at a time into buffers whose size the
//! (already checked) header fixes.

pub mod checkpoint;
pub(crate) mod fields;
pub mod lora;
pub mod quantized;
pub mod safetensors;
pub mod uqff;
mod uqff_model;

pub use checkpoint::Checkpoint;
pub use lora::LoraAdapter;
pub use quantized::{CheckpointLayer, LayerSummary, QuantCheckpoint, QuantizedCheckpoint};
pub use safetensors::{Dtype, NamedTensor, SafetensorsFile, SafetensorsWriter, TensorInfo};
pub use uqff_model::UqffModel;
