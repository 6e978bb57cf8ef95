//! qwen3 (llama.cpp's `llm_build_qwen3`): qwen2 without the QKV bias, with an RMSNorm over
//! each q and k head before RoPE; the head size is the file's `key_length`, not dim / heads.

use crate::model::config::{Activation, ModelConfig};
use crate::model::plan::{LayerPlan, Norm, Reach, Residual};

pub fn layer(_c: &ModelConfig, _layer: usize) -> LayerPlan {
    LayerPlan::new()
        .norm(Norm::Attn)
        .qkv()
        .qk_norm()
        .attention(Reach::Global)
        .attn_output(Residual::Add)
        .norm(Norm::Ffn)
        .gated_ffn(Activation::Silu, Residual::Add)
}
