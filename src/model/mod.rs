//! Model files and the model description: GGUF parsing, quant block formats.
#[cfg(not(target_arch = "wasm32"))]
pub mod files;
pub mod gguf;
pub mod quant;
pub mod weights;
