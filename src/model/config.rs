//! The model description: architecture hyper-parameters (from GGUF metadata or a Hugging Face
//! `config.json`) and the map of tensor names the forward pass reads.
//!
//! Architecture differences are fields here (RoPE style, QKV bias, per-head q/k norm, RoPE
//! frequency factors, tied output; for gemma3 also the embedding scale, the post-attention and
//! post-FFN norms, GELU, the sliding window with its own RoPE base and the attention scale),
//! not separate model code. Tensor names are llama.cpp's GGUF names; the safetensors loader renames Hugging
//! Face tensors to them, so the rest of the engine sees one naming scheme.

use std::fmt;

use serde::Deserialize;

use super::gguf::GgufFile;
use crate::{Error, Result};

/// Models deeper than this are refused (the largest open models have 126 layers).
pub const MAX_LAYERS: usize = 1024;

/// How RoPE pairs the dimensions of a head: the kernel's parameter, named here too because
/// the config picks it per family (and callers outside the crate name it from here).
pub use crate::kernels::rope::RopeStyle;

/// Architecture family. All are pre-norm decoders with RMSNorm, RoPE and GQA; qwen3 adds an
/// RMSNorm over each q and k head before RoPE (and drops qwen2's QKV bias); gemma3 also has
/// those q/k norms, and differs more: GeGLU (tanh GELU) instead of SwiGLU, embeddings scaled
/// by √dim, an RMSNorm on the attention and FFN outputs before each residual add, and
/// sliding-window attention on five of every six layers (llama.cpp's `llm_build_gemma3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

/// The families tandem runs, for error messages and docs.
pub const SUPPORTED_ARCHS: &str = "llama, qwen2, qwen3, gemma3";

/// The gated activation of the feed-forward block: `act(gate) * up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Activation {
    /// SwiGLU: `silu(g) = g / (1 + exp(-g))` (llama, qwen).
    Silu,
    /// GeGLU with the tanh approximation of GELU (gemma3, llama.cpp's `ggml_gelu`):
    /// `0.5 g (1 + tanh(√(2/π) g (1 + 0.044715 g²)))`.
    GeluTanh,
}

/// gemma3: every `GEMMA3_SWA_PATTERN`-th layer (indices 5, 11, 17, …) attends globally,
/// the others through the sliding window (llama.cpp's `set_swa_pattern(6)`).
pub const GEMMA3_SWA_PATTERN: usize = 6;

/// gemma3: the RoPE base of the sliding-window layers (llama.cpp's
/// `rope_freq_base_train_swa`, fixed for the family; `rope.freq_base` is the global layers').
pub const GEMMA3_ROPE_THETA_SWA: f32 = 10_000.0;

impl Arch {
    /// From a GGUF `general.architecture` or HF `model_type`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "gemma3" => Ok(Arch::Gemma3),
            other => Err(Error::Unsupported(format!(
                "architecture '{other}' (supported: {SUPPORTED_ARCHS})"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// Hyper-parameters of a model, whatever file it came from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    pub arch: Arch,
    /// `general.name` or the HF `_name_or_path`, when present.
    pub name: Option<String>,
    pub n_layers: usize,
    /// Residual stream width (`embedding_length`, `hidden_size`).
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    /// Dimensions of each head that RoPE rotates (the first `rope_dims`).
    pub rope_dims: usize,
    pub rope_style: RopeStyle,
    pub norm_eps: f32,
    pub vocab_size: usize,
    /// The context length the model was trained for.
    pub context_length: usize,
    /// No separate output head: logits use `token_embd.weight`.
    pub tied_embeddings: bool,
    /// Q, K and V projections have biases (qwen2).
    pub qkv_bias: bool,
    /// Each q and k head is RMS-normalised (weights `attn_q_norm` / `attn_k_norm`, `[head_dim]`,
    /// eps `norm_eps`) after the projection and before RoPE (qwen3).
    pub qk_norm: bool,
    /// RoPE pair i turns at `theta^(-2i/rope_dims) / rope_freqs[i]`, the factors read from the
    /// tensor `rope_freqs.weight` (`[rope_dims / 2]`; llama 3.x-style scaling baked in by the
    /// GGUF converter).
    pub rope_freq_factors: bool,
    /// The token embeddings are multiplied by this after the lookup (gemma3: √dim, in f32 as
    /// llama.cpp computes it; 1 elsewhere). Not applied to the tied output head.
    pub embed_scale: f32,
    /// RMSNorm (weights `post_attention_norm` / `post_ffw_norm`, `[dim]`) on the attention
    /// output and on the FFN output, each before its residual add (gemma3).
    pub post_norms: bool,
    /// The FFN's gated activation.
    pub activation: Activation,
    /// Attention scores are `q·k * attention_scale` (1/√head_dim except gemma3 27B, where
    /// llama.cpp uses 1/√(dim / heads)).
    pub attention_scale: f32,
    /// Sliding-window attention: a query at position p sees the keys at positions k with
    /// `p - k < sliding_window` (llama.cpp's `LLAMA_SWA_TYPE_STANDARD`) on the layers
    /// [`ModelConfig::layer_is_sliding`] names; 0 = no window anywhere.
    pub sliding_window: usize,
    /// With a window: layer i is global iff `i % swa_pattern == swa_pattern - 1`, the others
    /// slide (gemma3: 6).
    pub swa_pattern: usize,
    /// RoPE base of the sliding-window layers (`rope_theta` is the global layers').
    pub rope_theta_swa: f32,
    /// Linear RoPE scaling (position interpolation: GGUF `rope.scaling.type = linear` with
    /// `rope.scaling.factor`, Gemma 3 4B and larger): positions are divided by this on the
    /// global layers; sliding-window layers keep 1 (llama.cpp's `rope_freq_scale_train_swa`).
    /// 1 = no scaling.
    pub rope_linear_scale: f32,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Further end-of-sequence ids (HF configs may list several).
    pub extra_eos_ids: Vec<u32>,
}

/// Fields of a Hugging Face `config.json` that tandem reads.
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(rename = "_name_or_path")]
    name_or_path: Option<String>,
    num_hidden_layers: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

fn token_ids(v: &Option<serde_json::Value>, key: &str) -> Result<Vec<u32>> {
    let bad = || {
        Error::format(
            format!("config.json '{key}'"),
            "expected a token id or a list of ids",
        )
    };
    let one = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(bad)
    };
    match v {
        None | Some(serde_json::Value::Null) => Ok(vec![]),
        Some(serde_json::Value::Array(a)) => a.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

impl ModelConfig {
    /// From GGUF metadata (`{arch}.*` keys) plus the tensors present (tied output, QKV bias).
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = Arch::from_name(arch_name)?;
        let k = |suffix: &str| format!("{arch_name}.{suffix}");
        let usize_of = |key: &str| -> Result<usize> { Ok(f.get_u64(key)? as usize) };
        let opt_usize =
            |key: &str| -> Result<Option<usize>> { Ok(f.opt_u64(key)?.map(|v| v as usize)) };

        let rope_linear_scale = match f.opt_str(&k("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => match f.opt_f32(&k("rope.scaling.factor"))? {
                // llama.cpp reads a missing or zero factor as no scaling.
                None | Some(0.0) => 1.0,
                Some(v) => v,
            },
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "RoPE scaling '{other}' (key '{}'; tandem implements 'linear')",
                    k("rope.scaling.type")
                )))
            }
        };
        let dim = usize_of(&k("embedding_length"))?;
        let n_heads = usize_of(&k("attention.head_count"))?;
        let n_kv_heads = opt_usize(&k("attention.head_count_kv"))?.unwrap_or(n_heads);
        let head_dim = match opt_usize(&k("attention.key_length"))? {
            Some(h) => h,
            None => {
                if n_heads == 0 || dim % n_heads != 0 {
                    return Err(Error::format(
                        format!("key '{}'", k("attention.head_count")),
                        format!("{n_heads} heads do not divide the embedding length {dim}"),
                    ));
                }
                dim / n_heads
            }
        };
        if let Some(v) = opt_usize(&k("attention.value_length"))? {
            if v != head_dim {
                return Err(Error::Unsupported(format!(
                    "value head size {v} different from key head size {head_dim}"
                )));
            }
        }
        let vocab_size = match f.metadata("tokenizer.ggml.tokens") {
            Some(_) => f.get_array("tokenizer.ggml.tokens")?.len(),
            None => match opt_usize(&k("vocab_size"))? {
                Some(v) => v,
                None => match f.tensor("token_embd.weight") {
                    Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
                    _ => {
                        return Err(Error::format(
                            "key 'tokenizer.ggml.tokens'",
                            "no token list, vocab_size key or 2-D token_embd.weight to size the vocabulary",
                        ))
                    }
                },
            },
        };
        let gemma = arch == Arch::Gemma3;
        // gemma3: a missing or zero window means no sliding window (as llama.cpp reads it).
        let sliding_window = if gemma {
            opt_usize(&k("attention.sliding_window"))?.unwrap_or(0)
        } else {
            0
        };
        if gemma {
            if let Some(cap) = f.opt_f32(&k("final_logit_softcapping"))? {
                // llama.cpp's gemma3 graph soft-caps logits only without a sliding window.
                if cap != 0.0 && sliding_window == 0 {
                    return Err(Error::Unsupported(format!(
                        "final logit soft-capping ({cap}, key '{}') without a sliding window",
                        k("final_logit_softcapping")
                    )));
                }
            }
        }
        let n_layers = usize_of(&k("block_count"))?;
        let cfg = ModelConfig {
            arch,
            name: f.opt_str("general.name")?.map(str::to_owned),
            n_layers,
            dim,
            ffn_dim: usize_of(&k("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_theta: f.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0),
            rope_dims: opt_usize(&k("rope.dimension_count"))?.unwrap_or(head_dim),
            rope_style: match arch {
                Arch::Llama => RopeStyle::Normal,
                // llama.cpp's LLAMA_ROPE_TYPE_NEOX for both (their Q/K rows are not permuted).
                Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 => RopeStyle::Neox,
            },
            norm_eps: f.get_f32(&k("attention.layer_norm_rms_epsilon"))?,
            vocab_size,
            context_length: usize_of(&k("context_length"))?,
            tied_embeddings: f.tensor("output.weight").is_none(),
            qkv_bias: f.tensor("blk.0.attn_q.bias").is_some(),
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
            rope_freq_factors: f.tensor("rope_freqs.weight").is_some(),
            // llama.cpp: `ggml_scale(inpL, sqrtf(n_embd))`.
            embed_scale: if gemma { (dim as f32).sqrt() } else { 1.0 },
            post_norms: gemma,
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            // llama.cpp: 1/sqrt(n_embd / n_head) for the 27B (62 layers), else 1/sqrt(head
            // size); the two agree for every other size.
            attention_scale: if gemma && n_layers == 62 && n_heads > 0 {
                1.0 / ((dim / n_heads) as f32).sqrt()
            } else {
                1.0 / (head_dim as f32).sqrt()
            },
            sliding_window,
            swa_pattern: if gemma { GEMMA3_SWA_PATTERN } else { 0 },
            rope_theta_swa: if gemma {
                GEMMA3_ROPE_THETA_SWA
            } else {
                f.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0)
            },
            rope_linear_scale,
            bos_id: f.opt_u32("tokenizer.ggml.bos_token_id")?,
            eos_id: f.opt_u32("tokenizer.ggml.eos_token_id")?,
            extra_eos_ids: vec![],
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// From a Hugging Face `config.json`. `has_tensor` answers for internal (GGUF-style)
    /// tensor names, so tied output and QKV bias follow the weights actually present.
    pub fn from_hf_json(json: &str, has_tensor: impl Fn(&str) -> bool) -> Result<Self> {
        let c: HfConfig = serde_json::from_str(json).map_err(|e| {
            Error::format(
                format!("config.json line {} column {}", e.line(), e.column()),
                e.to_string(),
            )
        })?;
        let model_type = match (&c.model_type, c.architectures.first()) {
            (Some(t), _) => t.clone(),
            (None, Some(a)) if a == "LlamaForCausalLM" => "llama".into(),
            (None, Some(a)) if a == "Qwen2ForCausalLM" => "qwen2".into(),
            (None, Some(a)) if a == "Qwen3ForCausalLM" => "qwen3".into(),
            (None, Some(a)) => a.clone(),
            (None, None) => {
                return Err(Error::format(
                    "config.json 'model_type'",
                    "required key is missing",
                ))
            }
        };
        let arch = Arch::from_name(&model_type)?;
        if arch == Arch::Gemma3 {
            // Hugging Face stores gemma's norm weights as w for (1 + w) (the GGUF converter
            // adds the 1) and describes the window differently: not read from config.json.
            return Err(Error::Unsupported(
                "gemma3 from safetensors (convert it to GGUF with llama.cpp)".into(),
            ));
        }
        let req = |v: Option<usize>, key: &str| {
            v.ok_or_else(|| {
                Error::format(format!("config.json '{key}'"), "required key is missing")
            })
        };
        if let Some(act) = &c.hidden_act {
            if act != "silu" {
                return Err(Error::Unsupported(format!(
                    "activation '{act}' (config.json 'hidden_act')"
                )));
            }
        }
        if c.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Error::Unsupported(format!(
                "RoPE scaling {} (config.json 'rope_scaling')",
                c.rope_scaling
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            )));
        }
        if c.use_sliding_window == Some(true) {
            return Err(Error::Unsupported(
                "sliding-window attention (config.json 'use_sliding_window')".into(),
            ));
        }
        let dim = req(c.hidden_size, "hidden_size")?;
        let n_heads = req(c.num_attention_heads, "num_attention_heads")?;
        let head_dim = match c.head_dim {
            Some(h) => h,
            None => {
                if n_heads == 0 || dim % n_heads != 0 {
                    return Err(Error::format(
                        "config.json 'num_attention_heads'",
                        format!("{n_heads} heads do not divide hidden_size {dim}"),
                    ));
                }
                dim / n_heads
            }
        };
        let bos = token_ids(&c.bos_token_id, "bos_token_id")?;
        let mut eos = token_ids(&c.eos_token_id, "eos_token_id")?;
        let eos_id = (!eos.is_empty()).then(|| eos.remove(0));
        let cfg = ModelConfig {
            arch,
            name: c.name_or_path.filter(|s| !s.is_empty()),
            n_layers: req(c.num_hidden_layers, "num_hidden_layers")?,
            dim,
            ffn_dim: req(c.intermediate_size, "intermediate_size")?,
            n_heads,
            n_kv_heads: c.num_key_value_heads.unwrap_or(n_heads),
            head_dim,
            rope_theta: c.rope_theta.unwrap_or(10000.0) as f32,
            rope_dims: head_dim,
            // HF keeps Q/K in the order its rotate_half RoPE expects, for llama too.
            rope_style: RopeStyle::Neox,
            norm_eps: c.rms_norm_eps.ok_or_else(|| {
                Error::format("config.json 'rms_norm_eps'", "required key is missing")
            })? as f32,
            vocab_size: req(c.vocab_size, "vocab_size")?,
            context_length: req(c.max_position_embeddings, "max_position_embeddings")?,
            tied_embeddings: !has_tensor("output.weight"),
            qkv_bias: has_tensor("blk.0.attn_q.bias"),
            qk_norm: arch == Arch::Qwen3,
            // Hugging Face describes llama3 scaling in `rope_scaling` (refused above), never
            // as a tensor.
            rope_freq_factors: false,
            embed_scale: 1.0,
            post_norms: false,
            activation: Activation::Silu,
            attention_scale: 1.0 / (head_dim as f32).sqrt(),
            sliding_window: 0,
            swa_pattern: 0,
            rope_theta_swa: c.rope_theta.unwrap_or(10000.0) as f32,
            rope_linear_scale: 1.0,
            bos_id: bos.first().copied(),
            eos_id,
            extra_eos_ids: eos,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the numbers describe a model tandem can run.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, what: String| Err(Error::format(format!("model config '{key}'"), what));
        for (key, v) in [
            ("n_layers", self.n_layers),
            ("dim", self.dim),
            ("ffn_dim", self.ffn_dim),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1, found 0".into());
            }
            // Sizes feed u32 shader uniforms and GGML dims.
            if v > u32::MAX as usize / 4 {
                return bad(key, format!("{v} is implausibly large"));
            }
        }
        // The weight map holds a dozen names per layer: a hostile count must not size it.
        if self.n_layers > MAX_LAYERS {
            return bad(
                "n_layers",
                format!(
                    "{} is more than the limit of {MAX_LAYERS} layers",
                    self.n_layers
                ),
            );
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "n_kv_heads",
                format!(
                    "{} kv heads do not divide {} heads",
                    self.n_kv_heads, self.n_heads
                ),
            );
        }
        if self.rope_dims > self.head_dim || !self.rope_dims.is_multiple_of(2) {
            return bad(
                "rope_dims",
                format!(
                    "{} must be even and at most head_dim {}",
                    self.rope_dims, self.head_dim
                ),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(
                "rope_theta",
                format!("must be positive, found {}", self.rope_theta),
            );
        }
        for (key, v) in [
            ("rope_theta_swa", self.rope_theta_swa),
            ("rope_linear_scale", self.rope_linear_scale),
            ("embed_scale", self.embed_scale),
            ("attention_scale", self.attention_scale),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, format!("must be positive, found {v}"));
            }
        }
        if self.sliding_window > 0 && self.swa_pattern == 0 {
            return bad(
                "swa_pattern",
                format!(
                    "a sliding window of {} needs a layer pattern, found 0",
                    self.sliding_window
                ),
            );
        }
        if self.sliding_window > u32::MAX as usize / 4 {
            return bad(
                "sliding_window",
                format!("{} is implausibly large", self.sliding_window),
            );
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return bad(
                "norm_eps",
                format!("must be positive, found {}", self.norm_eps),
            );
        }
        for (key, id) in [("bos_id", self.bos_id), ("eos_id", self.eos_id)] {
            if let Some(id) = id {
                if id as usize >= self.vocab_size {
                    return bad(
                        key,
                        format!(
                            "token id {id} is outside the vocabulary of {}",
                            self.vocab_size
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether layer `i` attends through the sliding window (gemma3's local layers).
    pub fn layer_is_sliding(&self, i: usize) -> bool {
        self.sliding_window > 0
            && self.swa_pattern > 0
            && i % self.swa_pattern < self.swa_pattern - 1
    }

    /// Layer `i`'s window: [`ModelConfig::sliding_window`] on a sliding layer, 0 (none) else.
    pub fn layer_window(&self, i: usize) -> usize {
        if self.layer_is_sliding(i) {
            self.sliding_window
        } else {
            0
        }
    }

    /// Layer `i`'s RoPE base.
    pub fn layer_rope_theta(&self, i: usize) -> f32 {
        if self.layer_is_sliding(i) {
            self.rope_theta_swa
        } else {
            self.rope_theta
        }
    }

    /// Layer `i`'s linear RoPE scale: [`ModelConfig::rope_linear_scale`] on a global
    /// layer, 1 on a sliding-window one.
    pub fn layer_rope_scale(&self, i: usize) -> f32 {
        if self.layer_is_sliding(i) {
            1.0
        } else {
            self.rope_linear_scale
        }
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// The tensor names this model's forward reads.
    pub fn weight_map(&self) -> WeightMap {
        WeightMap::new(self)
    }
}

impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            writeln!(f, "name:     {name}")?;
        }
        writeln!(
            f,
            "arch:     {} — {} layers, dim {}, ffn {}, heads {} / kv {} (head_dim {})",
            self.arch.name(),
            self.n_layers,
            self.dim,
            self.ffn_dim,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim
        )?;
        writeln!(
            f,
            "rope:     {}, theta {}, {} of {} dims",
            match self.rope_style {
                RopeStyle::Normal => "normal (interleaved pairs)",
                RopeStyle::Neox => "neox (rotate halves)",
            },
            self.rope_theta,
            self.rope_dims,
            self.head_dim
        )?;
        writeln!(f, "norm:     RMSNorm, eps {:e}", self.norm_eps)?;
        writeln!(
            f,
            "vocab:    {}, context {}, output {}, QKV bias {}",
            self.vocab_size,
            self.context_length,
            if self.tied_embeddings {
                "tied to token_embd"
            } else {
                "separate"
            },
            if self.qkv_bias { "yes" } else { "no" }
        )?;
        let mut extras: Vec<String> = vec![];
        if self.qk_norm {
            extras.push("per-head q/k RMSNorm".into());
        }
        if self.rope_freq_factors {
            extras.push("RoPE frequency factors (rope_freqs.weight)".into());
        }
        if self.embed_scale != 1.0 {
            extras.push(format!("embeddings × {}", self.embed_scale));
        }
        if self.post_norms {
            extras.push("post-attention and post-FFN RMSNorm".into());
        }
        if self.activation == Activation::GeluTanh {
            extras.push("GeGLU (tanh GELU)".into());
        }
        if (self.attention_scale - 1.0 / (self.head_dim as f32).sqrt()).abs() > f32::EPSILON {
            extras.push(format!("attention scale {}", self.attention_scale));
        }
        if !extras.is_empty() {
            writeln!(f, "extras:   {}", extras.join(", "))?;
        }
        if self.sliding_window > 0 {
            let global: Vec<String> = (0..self.n_layers)
                .filter(|&i| !self.layer_is_sliding(i))
                .map(|i| i.to_string())
                .collect();
            writeln!(
                f,
                "window:   {} tokens on the sliding layers (RoPE theta {}); global layers [{}]",
                self.sliding_window,
                self.rope_theta_swa,
                global.join(", ")
            )?;
        }
        let id = |v: Option<u32>| v.map_or("none".to_string(), |v| v.to_string());
        write!(
            f,
            "tokens:   bos {}, eos {}",
            id(self.bos_id),
            id(self.eos_id)
        )?;
        if !self.extra_eos_ids.is_empty() {
            write!(f, " (also {:?})", self.extra_eos_ids)?;
        }
        Ok(())
    }
}

/// Tensor names of one transformer block (GGUF naming).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    pub attn_norm: String,
    pub attn_q: String,
    pub attn_k: String,
    pub attn_v: String,
    /// `Some` when the config has QKV bias.
    pub attn_q_bias: Option<String>,
    pub attn_k_bias: Option<String>,
    pub attn_v_bias: Option<String>,
    /// `Some` when the config has per-head q/k norms (`[head_dim]` each).
    pub attn_q_norm: Option<String>,
    pub attn_k_norm: Option<String>,
    pub attn_output: String,
    /// `Some` when the config has post norms (`[dim]` each, gemma3).
    pub attn_post_norm: Option<String>,
    pub ffn_norm: String,
    pub ffn_gate: String,
    pub ffn_up: String,
    pub ffn_down: String,
    pub ffn_post_norm: Option<String>,
}

/// Every tensor the forward reads, by name, with the dims each must have.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightMap {
    pub token_embd: String,
    pub output_norm: String,
    /// `output.weight`, or `token_embd.weight` when the embeddings are tied.
    pub output: String,
    /// `rope_freqs.weight` (`[rope_dims / 2]`), shared by every layer, when the config has
    /// RoPE frequency factors.
    pub rope_freqs: Option<String>,
    pub layers: Vec<LayerWeights>,
    /// (name, expected GGML dims) for every tensor above.
    expected: Vec<(String, Vec<u64>)>,
}

impl WeightMap {
    pub fn new(c: &ModelConfig) -> Self {
        let (dim, q, kv, ffn, vocab) = (
            c.dim as u64,
            c.q_dim() as u64,
            c.kv_dim() as u64,
            c.ffn_dim as u64,
            c.vocab_size as u64,
        );
        let mut expected = vec![
            ("token_embd.weight".to_string(), vec![dim, vocab]),
            ("output_norm.weight".to_string(), vec![dim]),
        ];
        if !c.tied_embeddings {
            expected.push(("output.weight".to_string(), vec![dim, vocab]));
        }
        let rope_freqs = c.rope_freq_factors.then(|| "rope_freqs.weight".to_string());
        if let Some(r) = &rope_freqs {
            expected.push((r.clone(), vec![c.rope_dims as u64 / 2]));
        }
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let bias = |s: &str| c.qkv_bias.then(|| n(s));
            let qk_norm = |s: &str| c.qk_norm.then(|| n(s));
            let post = |s: &str| c.post_norms.then(|| n(s));
            let l = LayerWeights {
                attn_norm: n("attn_norm.weight"),
                attn_q: n("attn_q.weight"),
                attn_k: n("attn_k.weight"),
                attn_v: n("attn_v.weight"),
                attn_q_bias: bias("attn_q.bias"),
                attn_k_bias: bias("attn_k.bias"),
                attn_v_bias: bias("attn_v.bias"),
                attn_q_norm: qk_norm("attn_q_norm.weight"),
                attn_k_norm: qk_norm("attn_k_norm.weight"),
                attn_output: n("attn_output.weight"),
                attn_post_norm: post("post_attention_norm.weight"),
                ffn_norm: n("ffn_norm.weight"),
                ffn_gate: n("ffn_gate.weight"),
                ffn_up: n("ffn_up.weight"),
                ffn_down: n("ffn_down.weight"),
                ffn_post_norm: post("post_ffw_norm.weight"),
            };
            // GGML dims: [row length K, rows N] for a matrix computing N outputs from K inputs.
            expected.extend([
                (l.attn_norm.clone(), vec![dim]),
                (l.attn_q.clone(), vec![dim, q]),
                (l.attn_k.clone(), vec![dim, kv]),
                (l.attn_v.clone(), vec![dim, kv]),
                (l.attn_output.clone(), vec![q, dim]),
                (l.ffn_norm.clone(), vec![dim]),
                (l.ffn_gate.clone(), vec![dim, ffn]),
                (l.ffn_up.clone(), vec![dim, ffn]),
                (l.ffn_down.clone(), vec![ffn, dim]),
            ]);
            for (b, w) in [
                (&l.attn_q_bias, q),
                (&l.attn_k_bias, kv),
                (&l.attn_v_bias, kv),
            ] {
                if let Some(b) = b {
                    expected.push((b.clone(), vec![w]));
                }
            }
            for norm in [&l.attn_q_norm, &l.attn_k_norm].into_iter().flatten() {
                expected.push((norm.clone(), vec![c.head_dim as u64]));
            }
            for norm in [&l.attn_post_norm, &l.ffn_post_norm].into_iter().flatten() {
                expected.push((norm.clone(), vec![dim]));
            }
            layers.push(l);
        }
        WeightMap {
            token_embd: "token_embd.weight".into(),
            output_norm: "output_norm.weight".into(),
            output: if c.tied_embeddings {
                "token_embd.weight"
            } else {
                "output.weight"
            }
            .into(),
            rope_freqs,
            layers,
            expected,
        }
    }

    /// Every required tensor name with its expected GGML dims.
    pub fn expected(&self) -> &[(String, Vec<u64>)] {
        &self.expected
    }

    /// Checks that every required tensor exists with the expected dims. `dims_of` gives a
    /// tensor's GGML dims by name (`None` when absent).
    pub fn check<'a>(&self, dims_of: impl Fn(&str) -> Option<&'a [u64]>) -> Result<()> {
        for (name, want) in &self.expected {
            match dims_of(name) {
                None => {
                    return Err(Error::format(
                        format!("tensor '{name}'"),
                        format!("required tensor is missing (expected dims {want:?})"),
                    ))
                }
                Some(found) if found != want.as_slice() => {
                    return Err(Error::format(
                        format!("tensor '{name}'"),
                        format!("expected dims {want:?}, found {found:?}"),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
