//! The CPU reference forward: plain f32, one token at a time, llama2.c style. It is the
//! oracle the GPU forward is tested against, so it favours being obviously right over being
//! fast: weights are dequantized to f32 once, every step is a simple loop.
//!
//! Embedding (× `embed_scale`, gemma3), then per layer: norm → q,k,v (+bias) → per-head q/k
//! RMSNorm (qwen3, gemma3) → RoPE (each pair's frequency divided by its `rope_freqs` factor,
//! llama3; the layer's own base, gemma3; positions ÷ the linear scale on global layers) → attention over the KV cache (only the last
//! `sliding_window` positions on gemma3's sliding layers) → output projection → [post-attention
//! norm, gemma3] → residual → norm → gate/up → SiLU·mul (GELU·mul, gemma3) → down →
//! [post-FFN norm, gemma3] → residual. The same order as `src/model/transformer.rs`.

use super::config::{Activation, ModelConfig, RopeStyle};
use super::loader::ModelFile;
use crate::quant;
use crate::Result;

struct Layer {
    attn_norm: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    /// Per-head q/k norm weights (`[head_dim]`), qwen3.
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Vec<f32>,
    /// Norms of the attention and FFN outputs before their residual adds (gemma3).
    attn_post_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    w_gate: Vec<f32>,
    w_up: Vec<f32>,
    w_down: Vec<f32>,
    ffn_post_norm: Option<Vec<f32>>,
    /// `[pos][KVH * HD]`
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// A model on the CPU with its KV cache.
pub struct CpuModel {
    pub config: ModelConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// `None` when the output head is tied to the embedding.
    output: Option<Vec<f32>>,
    /// RoPE frequency factors (`[rope_dims / 2]`), llama3.
    rope_freqs: Option<Vec<f32>>,
    /// Tokens in the KV cache.
    pub n_past: usize,
}

/// A tensor dequantized to f32 (its dims were checked when the model was opened).
fn f32s(model: &ModelFile, name: &str) -> Result<Vec<f32>> {
    let t = model.tensor(name)?;
    quant::dequantize(t.ty, t.data, t.n_elements() as usize)
}

impl CpuModel {
    /// Dequantize every weight of `model` to f32.
    pub fn load(model: &ModelFile) -> Result<Self> {
        let w = &model.weights;
        let opt = |name: &Option<String>| name.as_deref().map(|n| f32s(model, n)).transpose();
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            layers.push(Layer {
                attn_norm: f32s(model, &l.attn_norm)?,
                wq: f32s(model, &l.attn_q)?,
                wk: f32s(model, &l.attn_k)?,
                wv: f32s(model, &l.attn_v)?,
                bq: opt(&l.attn_q_bias)?,
                bk: opt(&l.attn_k_bias)?,
                bv: opt(&l.attn_v_bias)?,
                q_norm: opt(&l.attn_q_norm)?,
                k_norm: opt(&l.attn_k_norm)?,
                wo: f32s(model, &l.attn_output)?,
                attn_post_norm: opt(&l.attn_post_norm)?,
                ffn_norm: f32s(model, &l.ffn_norm)?,
                w_gate: f32s(model, &l.ffn_gate)?,
                w_up: f32s(model, &l.ffn_up)?,
                w_down: f32s(model, &l.ffn_down)?,
                ffn_post_norm: opt(&l.ffn_post_norm)?,
                k_cache: Vec::new(),
                v_cache: Vec::new(),
            });
        }
        let output = if w.output == w.token_embd {
            None
        } else {
            Some(f32s(model, &w.output)?)
        };
        Ok(CpuModel {
            config: model.config.clone(),
            embed: f32s(model, &w.token_embd)?,
            layers,
            output_norm: f32s(model, &w.output_norm)?,
            output,
            rope_freqs: model.rope_freq_factors()?,
            n_past: 0,
        })
    }

    /// Keep only the first `n` layers (the reference for a forward that stops early, as
    /// layer-skip drafting runs a model's own first layers).
    pub fn keep_layers(&mut self, n: usize) {
        self.layers.truncate(n);
    }

    /// Forget the KV cache past `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        let row = self.config.n_kv_heads * self.config.head_dim;
        self.n_past = self.n_past.min(n);
        for l in &mut self.layers {
            l.k_cache.truncate(self.n_past * row);
            l.v_cache.truncate(self.n_past * row);
        }
    }

    /// Run one token at position `n_past`, append it to the KV cache, return its logits.
    pub fn forward(&mut self, token: u32) -> Vec<f32> {
        let h = self.layers_forward(token);
        matvec(
            self.output.as_ref().unwrap_or(&self.embed),
            &h,
            self.config.vocab_size,
        )
    }

    /// [`CpuModel::forward`] without the output head: the token only goes into the KV cache
    /// (a prompt token whose logits nobody reads; the head is most of the work for a large
    /// vocabulary such as Gemma's 262,144 tokens).
    pub fn advance(&mut self, token: u32) {
        self.layers_forward(token);
    }

    /// Every layer for one token at position `n_past` (appending to the KV cache), then the
    /// final norm: the output head's input.
    fn layers_forward(&mut self, token: u32) -> Vec<f32> {
        let c = &self.config;
        let (d, hd, nh, nkv) = (c.dim, c.head_dim, c.n_heads, c.n_kv_heads);
        let pos = self.n_past;
        let tok = (token as usize).min(c.vocab_size - 1);
        let mut x = self.embed[tok * d..(tok + 1) * d].to_vec();
        if c.embed_scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= c.embed_scale);
        }
        let mut h = vec![0.0; d];
        for (i, l) in self.layers.iter_mut().enumerate() {
            rmsnorm(&mut h, &x, &l.attn_norm, c.norm_eps);
            let mut q = matvec(&l.wq, &h, nh * hd);
            let mut k = matvec(&l.wk, &h, nkv * hd);
            let mut v = matvec(&l.wv, &h, nkv * hd);
            add_bias(&mut q, &l.bq);
            add_bias(&mut k, &l.bk);
            add_bias(&mut v, &l.bv);
            if let Some(w) = &l.q_norm {
                head_rmsnorm(&mut q, w, c.norm_eps);
            }
            if let Some(w) = &l.k_norm {
                head_rmsnorm(&mut k, w, c.norm_eps);
            }
            let ff = self.rope_freqs.as_deref();
            let theta = c.layer_rope_theta(i);
            // Linear RoPE scaling as position interpolation (the GPU folds it into its
            // frequency table instead).
            let p = pos as f32 / c.layer_rope_scale(i);
            rope(&mut q, hd, p, theta, c.rope_dims, c.rope_style, ff);
            rope(&mut k, hd, p, theta, c.rope_dims, c.rope_style, ff);
            l.k_cache.extend_from_slice(&k);
            l.v_cache.extend_from_slice(&v);
            // Keys at positions p with pos - p < window (all of them without a window).
            let window = c.layer_window(i);
            let first = if window > 0 {
                (pos + 1).saturating_sub(window)
            } else {
                0
            };
            let shape = (nh, nkv, hd);
            let att = attention(
                &q,
                &l.k_cache,
                &l.v_cache,
                shape,
                first,
                pos + 1,
                c.attention_scale,
            );
            let mut o = matvec(&l.wo, &att, d);
            if let Some(w) = &l.attn_post_norm {
                let branch = o.clone();
                rmsnorm(&mut o, &branch, w, c.norm_eps);
            }
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            rmsnorm(&mut h, &x, &l.ffn_norm, c.norm_eps);
            let g = matvec(&l.w_gate, &h, c.ffn_dim);
            let u = matvec(&l.w_up, &h, c.ffn_dim);
            let a: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(&g, u)| match c.activation {
                    Activation::Silu => g / (1.0 + (-g).exp()) * u,
                    Activation::GeluTanh => gelu_tanh(g) * u,
                })
                .collect();
            let mut down = matvec(&l.w_down, &a, d);
            if let Some(w) = &l.ffn_post_norm {
                let branch = down.clone();
                rmsnorm(&mut down, &branch, w, c.norm_eps);
            }
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
        self.n_past += 1;
        rmsnorm(&mut h, &x, &self.output_norm, c.norm_eps);
        h
    }

    /// Greedy generation of `n` tokens after `prompt` (from an empty cache).
    pub fn generate_greedy(&mut self, prompt: &[u32], n: usize) -> Vec<u32> {
        self.truncate(0);
        let mut logits = Vec::new();
        for (i, &t) in prompt.iter().enumerate() {
            if i + 1 < prompt.len() {
                self.advance(t);
            } else {
                logits = self.forward(t);
            }
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let next = argmax(&logits);
            out.push(next);
            logits = self.forward(next);
        }
        out
    }
}

/// Index of the largest value; ties go to the lowest index, NaN never wins.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// GELU, tanh approximation (llama.cpp's `ggml_gelu`, Gemma's `gelu_pytorch_tanh`).
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let s = 1.0 / (ms + eps).sqrt();
    for i in 0..x.len() {
        out[i] = x[i] * s * w[i];
    }
}

/// RMSNorm of each `w.len()`-wide head of `v` in place, with the same weight for every head.
fn head_rmsnorm(v: &mut [f32], w: &[f32], eps: f32) {
    for head in v.chunks_mut(w.len()) {
        let x = head.to_vec();
        rmsnorm(head, &x, w, eps);
    }
}

/// `W[n, k] · x[k]`.
fn matvec(w: &[f32], x: &[f32], n: usize) -> Vec<f32> {
    let k = x.len();
    (0..n)
        .map(|r| {
            w[r * k..(r + 1) * k]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect()
}

fn add_bias(v: &mut [f32], b: &Option<Vec<f32>>) {
    if let Some(b) = b {
        v.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    }
}

/// Rotate each head of `v` (`[heads * hd]`) in place for position `pos` (fractional under
/// linear scaling); pair i's frequency is divided by `factors[i]` where the model has
/// frequency factors.
fn rope(
    v: &mut [f32],
    hd: usize,
    pos: f32,
    theta: f32,
    n_rot: usize,
    style: RopeStyle,
    factors: Option<&[f32]>,
) {
    // The same base frequency table as the GPU kernel, so the two agree to rounding; the
    // factors are applied here, not through the kernel's table.
    let mut inv_freq = crate::kernels::rope::inv_freq(theta, n_rot as u32);
    if let Some(f) = factors {
        for (freq, f) in inv_freq.iter_mut().zip(f) {
            *freq = (*freq as f64 / *f as f64) as f32;
        }
    }
    for head in v.chunks_mut(hd) {
        for (i, freq) in inv_freq.iter().enumerate() {
            let (sin, cos) = (pos * freq).sin_cos();
            let (a, b) = match style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + n_rot / 2),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

/// Causal attention of one query (`[nh * hd]`) over the cached positions `first..len`
/// (`shape` = (heads, kv heads, head size)), scores scaled by `scale`.
fn attention(
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    shape: (usize, usize, usize),
    first: usize,
    len: usize,
    scale: f32,
) -> Vec<f32> {
    let (nh, nkv, hd) = shape;
    let mut out = vec![0.0; nh * hd];
    let row = nkv * hd;
    for h in 0..nh {
        let kvh = h / (nh / nkv);
        let qh = &q[h * hd..(h + 1) * hd];
        let scores: Vec<f32> = (first..len)
            .map(|p| {
                let k = &kc[p * row + kvh * hd..p * row + (kvh + 1) * hd];
                qh.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale
            })
            .collect();
        let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
        let sum: f32 = e.iter().sum();
        let o = &mut out[h * hd..(h + 1) * hd];
        for (p, w) in (first..len).zip(&e) {
            let v = &vc[p * row + kvh * hd..p * row + (kvh + 1) * hd];
            for j in 0..hd {
                o[j] += w / sum * v[j];
            }
        }
    }
    out
}
