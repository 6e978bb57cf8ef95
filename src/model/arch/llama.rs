//! llama (Llama 2, Llama 3.x, SmolLM2; llama.cpp's `llm_build_llama`): pre-norm, SwiGLU, RoPE
//! in the normal (interleaved-pair) style; Llama 3.x's frequency factors come from the file's
//! `rope_freqs.weight` into the RoPE kernel.

use crate::model::config::{Activation, ModelConfig};
use crate::model::plan::{LayerPlan, Norm, Reach, Residual};

pub fn layer(_c: &ModelConfig, _layer: usize) -> LayerPlan {
    LayerPlan::new()
        .norm(Norm::Attn)
        .qkv()
        .attention(Reach::Global)
        .attn_output(Residual::Add)
        .norm(Norm::Ffn)
        .gated_ffn(Activation::Silu, Residual::Add)
}
