//! Model files and the model description: GGUF parsing, quant block formats.
pub mod gguf;
pub mod quant;
