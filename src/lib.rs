//! tandem: portable LLM inference on WebGPU with exact speculative decoding.
//!
//! Layers, bottom up (`tests/layering.rs` checks the imports against its table): `error`;
//! `quant` (GGML block formats, CPU (de)quantizers) and `gpu`; `kernels` (WGSL + wrappers);
//! `model` (files, config, CPU reference, GPU forward) and `tokenizer`; `speculative` (drafts,
//! drafters); `engine` (the draft → verify → accept loop); `api` (the OpenAI-shaped request
//! and response types the faces share). The faces are crates of the workspace over this one
//! (`crates/cli`, `crates/server`, `crates/bench`, `crates/web`); they reach the kernels only
//! through the engine, and this crate carries none of their dependencies.
pub mod api;
pub mod constrain;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod speculative;
pub mod tokenizer;

pub use error::{Error, Result};
