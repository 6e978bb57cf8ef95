//! Model files and the model description: GGUF parsing, safetensors loading, the model
//! config and weight map, the CPU reference forward, the GPU forward, the tiny-model writer.
pub mod arch;
pub mod config;
pub mod cpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod files;
pub mod gguf;
pub mod loader;
pub mod plan;
pub mod safetensors;
pub mod session;
pub mod synthetic;
pub mod transformer;
pub mod writer;

/// The quant block formats moved to the bottom layer ([`crate::quant`]); this path stays for
/// callers outside the crate (tests, other branches) written against `model::quant`. Code in
/// the crate uses `crate::quant`.
pub use crate::quant;
