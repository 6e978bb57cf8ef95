//! Model files and the model description: GGUF parsing, safetensors loading, the model
//! config and weight map, quant block formats, the CPU reference forward.
pub mod config;
pub mod cpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod files;
pub mod gguf;
pub mod loader;
pub mod quant;
pub mod safetensors;
pub mod transformer;
pub mod writer;
