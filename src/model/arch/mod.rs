//! One layer plan per architecture family ([`super::plan::LayerPlan`], built from the shared
//! steps): adding a family is one short file here, plus any kernel it truly lacks. What the
//! families share beyond the plan (RoPE style and frequency factors, head size, the embedding
//! scale, the QKV bias) is read from the file into [`super::config::ModelConfig`].

mod gemma3;
mod llama;
mod qwen2;
mod qwen3;

use super::config::{Arch, ModelConfig};
use super::plan::LayerPlan;

/// The plan of layer `layer` of a model with config `c`.
pub fn layer_plan(c: &ModelConfig, layer: usize) -> LayerPlan {
    match c.arch {
        Arch::Llama => llama::layer(c, layer),
        Arch::Qwen2 => qwen2::layer(c, layer),
        Arch::Qwen3 => qwen3::layer(c, layer),
        Arch::Gemma3 => gemma3::layer(c, layer),
    }
}

/// Every layer's plan, in order.
pub fn plan(c: &ModelConfig) -> Vec<LayerPlan> {
    (0..c.n_layers).map(|i| layer_plan(c, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::plan::{Op, Reach};
    use crate::model::{gguf::GgufFile, quant::GgmlType, writer::TinyModel};

    fn tiny(arch: Arch) -> crate::Result<ModelConfig> {
        let bytes = TinyModel::new(arch, GgmlType::F32, 1).build()?;
        ModelConfig::from_gguf(&GgufFile::from_bytes(bytes)?)
    }

    #[test]
    fn each_family_plans_its_own_steps() -> crate::Result<()> {
        let gemma = tiny(Arch::Gemma3)?;
        let plans = plan(&gemma);
        assert_eq!(plans.len(), gemma.n_layers);
        for (i, p) in plans.iter().enumerate() {
            // Every sixth layer (5, 11, …) attends globally.
            assert_eq!(p.slides(), i % 6 != 5, "gemma3 layer {i}");
            assert!(p.any(|op| *op == Op::QkNorm));
            assert_eq!(p.ops.len(), 14, "gemma3 layer {i}: {:?}", p.ops);
        }
        let llama = tiny(Arch::Llama)?;
        let p = layer_plan(&llama, 0);
        assert!(!p.any(|op| *op == Op::QkNorm) && !p.slides());
        assert!(p.any(|op| *op == Op::Attention(Reach::Global)));
        // norm, qkv, rope, attention, wo, norm, gate|up, SiLU·mul, down.
        assert_eq!(p.ops.len(), 9);
        let qwen3 = tiny(Arch::Qwen3)?;
        assert_eq!(layer_plan(&qwen3, 1).ops.len(), 10);
        Ok(())
    }
}
