//! tandem: portable LLM inference on WebGPU with exact speculative decoding.
//!
//! Layers, bottom up (`tests/layering.rs` checks the imports against its table): `error`;
//! `quant` (GGML block formats, CPU (de)quantizers) and `gpu`; `kernels` (WGSL + wrappers);
//! `model` (files, config, CPU reference, GPU forward) and `tokenizer`; `speculative` (drafts,
//! drafters); `engine` (the draft → verify → accept loop); `api` (the OpenAI-shaped request
//! and response types the faces share); the faces (`bench`, `web`, the CLI and its server in
//! `src/bin`), which reach the kernels only through the engine.
pub mod api;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod constrain;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod speculative;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
