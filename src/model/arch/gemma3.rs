//! gemma3 (llama.cpp's `llm_build_gemma3`): per-head q/k RMSNorm before RoPE; attention
//! through the sliding window (its own RoPE base) on five of every six layers; each branch
//! RMS-normed again before its residual add; GeGLU with tanh-GELU. The √dim embedding scale,
//! the norm weights' (1 + w) (already in the GGUF) and the head-size attention scale are
//! read into the config.

use crate::model::config::{Activation, ModelConfig};
use crate::model::plan::{LayerPlan, Norm, Reach, Residual};

pub fn layer(c: &ModelConfig, layer: usize) -> LayerPlan {
    let reach = if c.layer_is_sliding(layer) {
        Reach::Sliding
    } else {
        Reach::Global
    };
    LayerPlan::new()
        .norm(Norm::Attn)
        .qkv()
        .qk_norm()
        .attention(reach)
        .attn_output(Residual::PostNorm(Norm::AttnPost))
        .norm(Norm::Ffn)
        .gated_ffn(Activation::GeluTanh, Residual::PostNorm(Norm::FfnPost))
}
