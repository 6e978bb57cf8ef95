//! qwen2 (Qwen2, Qwen2.5; llama.cpp's `llm_build_qwen2`): llama's layer. What differs is read
//! from the file: the bias on Q, K and V (added in the QKV matmul's epilogue) and NeoX-style
//! RoPE (the config's `rope_style`).

use crate::model::config::ModelConfig;
use crate::model::plan::LayerPlan;

pub fn layer(c: &ModelConfig, layer: usize) -> LayerPlan {
    super::llama::layer(c, layer)
}
