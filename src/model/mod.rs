//! Model files and the model description: GGUF parsing, safetensors loading, the model
//! config and weight map, quant block formats, and a GGUF writer for tests.
pub mod config;
pub mod gguf;
pub mod loader;
pub mod quant;
pub mod safetensors;
pub mod writer;
