//! tandem: portable LLM inference on WebGPU with exact speculative decoding.
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod spec;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
