//! A GGUF v3 writer, and tiny random llama / qwen2 / qwen3 / gemma3 models built with it.
//!
//! Tests across the project use [`tiny_model`] so model code runs fast without downloads:
//! the files look like the real reference models (same metadata keys, tensor names, a real
//! byte-level BPE vocabulary with ChatML specials and a chat template), only small.

use super::config::Arch;
use super::gguf::{MetaValue, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::quant::{self, GgmlType};
use crate::{Error, Result};

/// Where each part of a written file sits; tests use it to corrupt files precisely.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Offset of the tensor count (u64); the metadata count follows it.
    pub tensor_count_at: usize,
    /// Per metadata entry: (key, offset of the key's length, offset of the value type).
    pub metadata: Vec<(String, usize, usize)>,
    pub tensors: Vec<TensorLayout>,
    /// Absolute offset of the tensor data section.
    pub data_offset: usize,
}

/// Offsets of one tensor info's fields, and of its data.
#[derive(Clone, Debug, Default)]
pub struct TensorLayout {
    pub name: String,
    pub name_at: usize,
    pub n_dims_at: usize,
    pub dims_at: usize,
    pub type_at: usize,
    pub offset_at: usize,
    /// Absolute offset of the tensor's bytes.
    pub data_at: usize,
}

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF v3 file in memory.
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor>,
    alignment: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn type_id(v: &MetaValue) -> u32 {
    use MetaValue::*;
    match v {
        U8(_) => 0,
        I8(_) => 1,
        U16(_) => 2,
        I16(_) => 3,
        U32(_) => 4,
        I32(_) => 5,
        F32(_) => 6,
        Bool(_) => 7,
        String(_) => 8,
        Array(_) => 9,
        U64(_) => 10,
        I64(_) => 11,
        F64(_) => 12,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, key: &str, v: &MetaValue) -> Result<()> {
    use MetaValue::*;
    match v {
        U8(x) => out.push(*x),
        I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Bool(b) => out.push(*b as u8),
        String(s) => put_str(out, s),
        Array(a) => {
            // GGUF arrays carry one element type; an empty array's type is arbitrary.
            let et = a.first().map_or(type_id(&U8(0)), type_id);
            if let Some(bad) = a.iter().find(|e| type_id(e) != et) {
                return Err(Error::Invalid(format!(
                    "metadata '{key}': array mixes {} and {} elements",
                    a[0].type_name(),
                    bad.type_name()
                )));
            }
            out.extend_from_slice(&et.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for e in a {
                put_value(out, key, e)?;
            }
        }
    }
    Ok(())
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            metadata: Vec::new(),
            tensors: Vec::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }

    /// Data alignment (a power of two); written as `general.alignment` when not 32.
    pub fn alignment(&mut self, alignment: u64) -> Result<&mut Self> {
        if !alignment.is_power_of_two() || alignment > u32::MAX as u64 {
            return Err(Error::Invalid(format!(
                "alignment {alignment} is not a power of two"
            )));
        }
        self.alignment = alignment;
        self.metadata.retain(|(k, _)| k != "general.alignment");
        if alignment != DEFAULT_ALIGNMENT {
            self.metadata
                .push(("general.alignment".into(), MetaValue::U32(alignment as u32)));
        }
        Ok(self)
    }

    /// Adds (or replaces) a metadata entry.
    pub fn meta(&mut self, key: impl Into<String>, value: MetaValue) -> &mut Self {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    pub fn meta_str(&mut self, key: impl Into<String>, v: &str) -> &mut Self {
        self.meta(key, MetaValue::String(v.into()))
    }

    pub fn meta_u32(&mut self, key: impl Into<String>, v: u32) -> &mut Self {
        self.meta(key, MetaValue::U32(v))
    }

    pub fn meta_f32(&mut self, key: impl Into<String>, v: f32) -> &mut Self {
        self.meta(key, MetaValue::F32(v))
    }

    pub fn meta_bool(&mut self, key: impl Into<String>, v: bool) -> &mut Self {
        self.meta(key, MetaValue::Bool(v))
    }

    /// Adds a tensor from its encoded bytes. `dims` in GGML order (`dims[0]` = row length).
    pub fn tensor_bytes(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self> {
        let name = name.into();
        let n: u64 = dims.iter().product();
        let want = ty.bytes_for(n);
        if want != Some(data.len() as u64)
            || dims
                .first()
                .is_some_and(|&k| k % ty.block_size() as u64 != 0)
        {
            return Err(Error::Invalid(format!(
                "tensor '{name}': {} bytes do not hold dims {dims:?} of {} (row length must be a multiple of {})",
                data.len(),
                ty.name(),
                ty.block_size()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(Error::Invalid(format!("tensor '{name}' added twice")));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// Adds a tensor from f32 values, quantized to `ty`.
    pub fn tensor_f32(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        values: &[f32],
    ) -> Result<&mut Self> {
        let name = name.into();
        let n: u64 = dims.iter().product();
        if n != values.len() as u64 {
            return Err(Error::Invalid(format!(
                "tensor '{name}': dims {dims:?} need {n} values, got {}",
                values.len()
            )));
        }
        let data = quant::quantize(ty, values)
            .map_err(|e| Error::Invalid(format!("tensor '{name}': {e}")))?;
        self.tensor_bytes(name, dims, ty, data)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.to_bytes_with_layout()?.0)
    }

    /// The file and where each part of it sits.
    pub fn to_bytes_with_layout(&self) -> Result<(Vec<u8>, Layout)> {
        let align = |x: usize| x.div_ceil(self.alignment as usize) * self.alignment as usize;
        let mut out = Vec::new();
        let mut layout = Layout::default();
        out.extend_from_slice(GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        layout.tensor_count_at = out.len();
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            let key_at = out.len();
            put_str(&mut out, k);
            let type_at = out.len();
            out.extend_from_slice(&type_id(v).to_le_bytes());
            put_value(&mut out, k, v)?;
            layout.metadata.push((k.clone(), key_at, type_at));
        }
        let mut rel = 0usize;
        let mut rel_offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let mut tl = TensorLayout {
                name: t.name.clone(),
                name_at: out.len(),
                ..Default::default()
            };
            put_str(&mut out, &t.name);
            tl.n_dims_at = out.len();
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            tl.dims_at = out.len();
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            tl.type_at = out.len();
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            tl.offset_at = out.len();
            out.extend_from_slice(&(rel as u64).to_le_bytes());
            rel_offsets.push(rel);
            rel = align(rel + t.data.len());
            layout.tensors.push(tl);
        }
        layout.data_offset = align(out.len());
        out.resize(layout.data_offset, 0);
        for ((t, rel), tl) in self
            .tensors
            .iter()
            .zip(&rel_offsets)
            .zip(&mut layout.tensors)
        {
            tl.data_at = layout.data_offset + rel;
            out.resize(tl.data_at, 0);
            out.extend_from_slice(&t.data);
        }
        Ok((out, layout))
    }
}

/// GPT-2's byte → printable-character map (`bytes_to_unicode`), in GPT-2's vocabulary order:
/// the printable bytes map to themselves and come first; the rest map to U+0100 onwards.
pub fn gpt2_byte_tokens() -> Vec<(u8, char)> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut out: Vec<(u8, char)> = (0u32..256)
        .filter(|&b| printable(b))
        .map(|b| (b as u8, char::from_u32(b).unwrap_or('?')))
        .collect();
    let mut next = 256u32;
    for b in 0u32..256 {
        if !printable(b) {
            out.push((b as u8, char::from_u32(next).unwrap_or('?')));
            next += 1;
        }
    }
    out
}

/// The tiny vocabulary's merges (GPT-2 form, `Ġ` = space); each result becomes a token.
const TINY_MERGES: &[&str] = &[
    "Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he", "e r", "Ġ s", "a t", "Ġ w", "Ġ o", "e n",
    "Ġ c", "i t", "i s", "a n", "o r", "e s", "Ġ b", "e d", "Ġ f", "in g", "Ġ p", "o u", "Ġa n",
    "a l", "a r", "Ġt o", "Ġ m", "Ġo f", "Ġ in", "Ġ d", "Ġ h", "Ġan d", "l l", "Ġ l", "Ġ T", "Ġ H",
    "Ġ n", "l o", "Ġw or", "Ġwor l", "Ġworl d", "H e", "He ll", "Hell o",
];

/// Special tokens of the tiny vocabulary, after the byte tokens and merges.
pub const TINY_SPECIALS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// ChatML, as SmolLM2 and Qwen use it.
pub const TINY_CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The tiny byte-level BPE vocabulary: (tokens, token types, merges). Byte tokens first (GPT-2
/// order), then one token per merge, then [`TINY_SPECIALS`] (type 3, control).
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = gpt2_byte_tokens()
        .into_iter()
        .map(|(_, c)| c.to_string())
        .collect();
    for m in TINY_MERGES {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1i32; tokens.len()];
    for s in TINY_SPECIALS {
        tokens.push(s.to_string());
        types.push(3);
    }
    (
        tokens,
        types,
        TINY_MERGES.iter().map(|m| m.to_string()).collect(),
    )
}

/// Shape and contents of a tiny test model; [`TinyModel::new`] picks sizes that suit `qtype`.
#[derive(Clone, Debug)]
pub struct TinyModel {
    pub arch: Arch,
    /// Type of every matrix (1-D norms and biases stay F32, as in real files).
    pub qtype: GgmlType,
    pub seed: u64,
    pub n_layers: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub context_length: usize,
    /// No `output.weight`: logits use `token_embd.weight` (as in SmolLM2).
    pub tied: bool,
    pub rope_theta: f32,
    pub norm_eps: f32,
    /// Written as `rope_freqs.weight` (`[head_dim / 2]`, llama3-style frequency factors).
    pub rope_freqs: Option<Vec<f32>>,
    /// gemma3: `attention.sliding_window` (0: the key is not written, no window).
    pub sliding_window: usize,
}

impl TinyModel {
    /// Llama: tied output, theta 1e4, eps 1e-5; qwen2: separate output, QKV bias, theta 1e6,
    /// eps 1e-6; qwen3: as qwen2 but no QKV bias, per-head q/k norms and a head size of
    /// dim / 2 (so `attention.key_length` is not dim / heads). 2 layers, 4 heads / 2 kv heads;
    /// dim 64, ffn 128 (head_dim 16), or for K-quants (256-element blocks along each row)
    /// dim 256, ffn 512 (head_dim 64). No RoPE frequency factors (set `rope_freqs`).
    /// gemma3: as qwen3 (q/k norms, head size dim / 2) with a tied output, post-attention and
    /// post-FFN norms, and 6 layers with a sliding window of 8, so that layers 0-4 slide and
    /// layer 5 is global (the family's fixed pattern) and a short test crosses the window.
    pub fn new(arch: Arch, qtype: GgmlType, seed: u64) -> Self {
        let k_quant = qtype.block_size() == 256;
        let (dim, ffn_dim) = if k_quant { (256, 512) } else { (64, 128) };
        let gemma = arch == Arch::Gemma3;
        TinyModel {
            arch,
            qtype,
            seed,
            n_layers: if gemma { 6 } else { 2 },
            dim,
            ffn_dim,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: if matches!(arch, Arch::Qwen3 | Arch::Gemma3) {
                dim / 2
            } else {
                dim / 4
            },
            context_length: 256,
            tied: matches!(arch, Arch::Llama | Arch::Gemma3),
            rope_theta: if arch == Arch::Llama {
                10000.0
            } else {
                1_000_000.0
            },
            norm_eps: if arch == Arch::Llama { 1e-5 } else { 1e-6 },
            rope_freqs: None,
            sliding_window: if gemma { 8 } else { 0 },
        }
    }

    /// The GGUF bytes.
    pub fn build(&self) -> Result<Vec<u8>> {
        self.writer()?.to_bytes()
    }

    /// A writer holding the model, for tests that add or change things before writing.
    pub fn writer(&self) -> Result<GgufWriter> {
        let a = self.arch.name();
        let (tokens, types, merges) = tiny_vocab();
        let vocab = tokens.len();
        let id = |s: &str| tokens.iter().position(|t| t == s).unwrap_or(0) as u32;
        let (bos, eos) = (id("<|endoftext|>"), id("<|im_end|>"));
        let mut w = GgufWriter::new();
        w.meta_str("general.architecture", a)
            .meta_str(
                "general.name",
                &format!("tandem tiny {a} {}", self.qtype.name()),
            )
            .meta_u32("general.quantization_version", 2)
            .meta_u32(format!("{a}.block_count"), self.n_layers as u32)
            .meta_u32(format!("{a}.context_length"), self.context_length as u32)
            .meta_u32(format!("{a}.embedding_length"), self.dim as u32)
            .meta_u32(format!("{a}.feed_forward_length"), self.ffn_dim as u32)
            .meta_u32(format!("{a}.attention.head_count"), self.n_heads as u32)
            .meta_u32(
                format!("{a}.attention.head_count_kv"),
                self.n_kv_heads as u32,
            )
            .meta_f32(format!("{a}.rope.freq_base"), self.rope_theta)
            .meta_f32(
                format!("{a}.attention.layer_norm_rms_epsilon"),
                self.norm_eps,
            )
            .meta_u32(format!("{a}.rope.dimension_count"), self.head_dim as u32);
        if self.head_dim * self.n_heads != self.dim {
            w.meta_u32(format!("{a}.attention.key_length"), self.head_dim as u32)
                .meta_u32(format!("{a}.attention.value_length"), self.head_dim as u32);
        }
        if self.arch == Arch::Llama {
            w.meta_u32(format!("{a}.vocab_size"), vocab as u32);
        }
        if self.sliding_window > 0 {
            w.meta_u32(
                format!("{a}.attention.sliding_window"),
                self.sliding_window as u32,
            );
        }
        w.meta_str("tokenizer.ggml.model", "gpt2")
            .meta_str(
                "tokenizer.ggml.pre",
                if self.arch == Arch::Llama {
                    "smollm"
                } else {
                    "qwen2"
                },
            )
            .meta(
                "tokenizer.ggml.tokens",
                MetaValue::Array(tokens.into_iter().map(MetaValue::String).collect()),
            )
            .meta(
                "tokenizer.ggml.token_type",
                MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
            )
            .meta(
                "tokenizer.ggml.merges",
                MetaValue::Array(merges.into_iter().map(MetaValue::String).collect()),
            )
            .meta_u32("tokenizer.ggml.bos_token_id", bos)
            .meta_u32("tokenizer.ggml.eos_token_id", eos)
            .meta_u32("tokenizer.ggml.padding_token_id", bos)
            .meta_bool("tokenizer.ggml.add_bos_token", false)
            .meta_str("tokenizer.chat_template", TINY_CHAT_TEMPLATE);

        let mut rng = SplitMix64(self.seed);
        let (dim, q, kv, ffn) = (
            self.dim as u64,
            (self.n_heads * self.head_dim) as u64,
            (self.n_kv_heads * self.head_dim) as u64,
            self.ffn_dim as u64,
        );
        let vocab = vocab as u64;
        // Uniform(-a, a) with a = 1/√K keeps each matmul's outputs near unit scale.
        let mut mat = |w: &mut GgufWriter, name: String, k: u64, n: u64| -> Result<()> {
            let a = 1.0 / (k as f32).sqrt();
            let v: Vec<f32> = (0..k * n).map(|_| rng.uniform() * a).collect();
            w.tensor_f32(name, &[k, n], self.qtype, &v)?;
            Ok(())
        };
        mat(&mut w, "token_embd.weight".into(), dim, vocab)?;
        if !self.tied {
            mat(&mut w, "output.weight".into(), dim, vocab)?;
        }
        let mut rng2 = SplitMix64(self.seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut vec_f32 =
            |w: &mut GgufWriter, name: String, n: u64, center: f32, spread: f32| -> Result<()> {
                let v: Vec<f32> = (0..n).map(|_| center + spread * rng2.uniform()).collect();
                w.tensor_f32(name, &[n], GgmlType::F32, &v)?;
                Ok(())
            };
        vec_f32(&mut w, "output_norm.weight".into(), dim, 1.0, 0.2)?;
        if let Some(f) = &self.rope_freqs {
            w.tensor_f32("rope_freqs.weight", &[f.len() as u64], GgmlType::F32, f)?;
        }
        for i in 0..self.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            vec_f32(&mut w, n("attn_norm.weight"), dim, 1.0, 0.2)?;
            mat(&mut w, n("attn_q.weight"), dim, q)?;
            mat(&mut w, n("attn_k.weight"), dim, kv)?;
            mat(&mut w, n("attn_v.weight"), dim, kv)?;
            if self.arch == Arch::Qwen2 {
                vec_f32(&mut w, n("attn_q.bias"), q, 0.0, 0.1)?;
                vec_f32(&mut w, n("attn_k.bias"), kv, 0.0, 0.1)?;
                vec_f32(&mut w, n("attn_v.bias"), kv, 0.0, 0.1)?;
            }
            if matches!(self.arch, Arch::Qwen3 | Arch::Gemma3) {
                let hd = self.head_dim as u64;
                vec_f32(&mut w, n("attn_q_norm.weight"), hd, 1.0, 0.5)?;
                vec_f32(&mut w, n("attn_k_norm.weight"), hd, 1.0, 0.5)?;
            }
            mat(&mut w, n("attn_output.weight"), q, dim)?;
            if self.arch == Arch::Gemma3 {
                vec_f32(&mut w, n("post_attention_norm.weight"), dim, 1.0, 0.2)?;
            }
            vec_f32(&mut w, n("ffn_norm.weight"), dim, 1.0, 0.2)?;
            mat(&mut w, n("ffn_gate.weight"), dim, ffn)?;
            mat(&mut w, n("ffn_up.weight"), dim, ffn)?;
            mat(&mut w, n("ffn_down.weight"), ffn, dim)?;
            if self.arch == Arch::Gemma3 {
                vec_f32(&mut w, n("post_ffw_norm.weight"), dim, 1.0, 0.2)?;
            }
        }
        Ok(w)
    }
}

/// A small random llama-, qwen2-, qwen3- or gemma3-style GGUF with weights in `qtype` (see [`TinyModel::new`]).
pub fn tiny_model(arch: Arch, qtype: GgmlType, seed: u64) -> Result<Vec<u8>> {
    TinyModel::new(arch, qtype, seed).build()
}

/// Deterministic, dependency-free random numbers for test weights (and
/// [`super::synthetic`]'s).
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Fills `out` with random bytes.
    pub(crate) fn fill_bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
