//! The transformer forward on the GPU over T tokens with per-token positions and a tree mask.
//!
//! Read it beside `cpu.rs`: per layer, norm → QKV (+bias) → [per-head q/k RMSNorm, qwen3] →
//! RoPE (÷ frequency factors, llama3) + KV append → tree attention
//! → output projection (+= residual) → norm → gate/up → SiLU·mul → down (+= residual). Weights
//! are uploaded once in their GGUF block format; every pipeline, bind group and activation
//! buffer is made here at load time, so a step only writes a few small buffers, records one
//! command buffer and submits it.
//!
//! gemma3 (marked `gemma3:` below): the embedding gather scales by √dim; the sliding-window
//! layers use their own attention (window) and RoPE (base) kernels; the output projection
//! and the down projection write into `xn` instead of accumulating into `x`, an RMSNorm takes
//! that branch into `post` and an add puts it on the residual; GELU·mul replaces SiLU·mul.

use std::collections::HashMap;
use std::ops::Range;

use super::config::{Activation, ModelConfig};
use super::loader::ModelFile;
use crate::gpu::Gpu;
use crate::kernels::add::Add;
use crate::kernels::argmax::Argmax;
use crate::kernels::attention::{Attention, AttentionOptions, AttentionShape};
use crate::kernels::embed::{EmbedBinding, Embedding};
use crate::kernels::gelu_mul::GeluMul;
use crate::kernels::matmul::{Epilogue, Matmul, MatmulBinding, QuantMatrix};
use crate::kernels::qk_norm::QkNorm;
use crate::kernels::rmsnorm::RmsNorm;
use crate::kernels::rope::{RopeKvAppend, RopeShape};
use crate::kernels::silu_mul::SiluMul;
use crate::kernels::{Bound, Layout, Step};
use crate::quant::{self, GgmlType};
use crate::{Error, Result};

/// Sizes fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct ForwardLimits {
    /// KV cache rows (tokens of context).
    pub max_ctx: usize,
    /// Most tokens in one step (a prefill chunk, or a verification tree + 1).
    pub max_t: usize,
    /// Most rows whose logits one step produces (the largest tree + 1).
    pub max_logit_rows: usize,
}

impl Default for ForwardLimits {
    fn default() -> Self {
        ForwardLimits {
            max_ctx: 4096,
            max_t: 64,
            max_logit_rows: 64,
        }
    }
}

/// One projection: a matrix bound to its input and output, for the matmul of its type.
struct Proj {
    ty: GgmlType,
    binding: MatmulBinding,
}

/// gemma3: the norms of the attention and FFN branches (each written to `xn` by its
/// projection) into `post`, and the adds of `post` onto the residual `x`.
struct PostNorms {
    attn_norm: Bound,
    attn_add: Bound,
    ffn_norm: Bound,
    ffn_add: Bound,
}

struct GpuLayer {
    /// gemma3: a sliding-window layer (the `*_swa` kernels of [`Transformer`]).
    sliding: bool,
    /// gemma3: post-attention / post-FFN norms.
    post: Option<PostNorms>,
    norm1: Bound,
    qkv: Vec<Proj>,
    /// Per-head q/k RMSNorm (qwen3), between the QKV projection and RoPE.
    qk_norm: Option<Bound>,
    rope: Bound,
    attn: Bound,
    wo: Proj,
    norm2: Bound,
    gate_up: Vec<Proj>,
    /// The gated activation's binding: GELU·mul's where the model has it (gemma3).
    silu: Bound,
    down: Proj,
    pub k_cache: wgpu::Buffer,
    pub v_cache: wgpu::Buffer,
    // Kept alive for the bind groups above.
    _buffers: Vec<wgpu::Buffer>,
    _matrices: Vec<QuantMatrix>,
}

/// A model on the GPU with its KV cache and activation buffers.
pub struct Transformer {
    pub config: ModelConfig,
    pub limits: ForwardLimits,
    mask_words: usize,
    step: wgpu::Buffer,
    head_step: wgpu::Buffer,
    tokens: wgpu::Buffer,
    pos: wgpu::Buffer,
    mask: wgpu::Buffer,
    x: wgpu::Buffer,
    head_x: wgpu::Buffer,
    /// `[max_logit_rows, head_rows]` f32: logits of the rows asked for, row by row.
    pub logits: wgpu::Buffer,
    /// Vocabulary entries the output head scores: the first `head_rows` token ids (all of
    /// them unless the model was loaded with a truncated head).
    head_rows: usize,
    /// `[max_logit_rows]` u32: argmax of each logits row.
    pub argmax_ids: wgpu::Buffer,
    embed: Embedding,
    embed_b: EmbedBinding,
    layers: Vec<GpuLayer>,
    rmsnorm: RmsNorm,
    qk_norm: Option<QkNorm>,
    rope: RopeKvAppend,
    attention: Attention,
    silu: SiluMul,
    /// gemma3: the sliding-window layers' RoPE (base `rope_theta_swa`) and attention (window).
    rope_swa: Option<RopeKvAppend>,
    attention_swa: Option<Attention>,
    /// gemma3: GELU·mul instead of SiLU·mul, and the add of the post-normed branches.
    gelu: Option<GeluMul>,
    add: Option<Add>,
    matmuls: HashMap<GgmlType, Matmul>,
    final_norm: Bound,
    output: Proj,
    argmax: Argmax,
    argmax_b: Bound,
    _keep: Vec<wgpu::Buffer>,
    _matrices: Vec<QuantMatrix>,
}

/// A tensor's bytes in a type the GPU kernels take (BF16 is widened to F32).
fn gpu_bytes(model: &ModelFile, name: &str) -> Result<(GgmlType, usize, usize, Vec<u8>)> {
    let t = model.tensor(name)?;
    let k = t.dims.first().copied().unwrap_or(1) as usize;
    let n = (t.n_elements() as usize) / k.max(1);
    if t.ty == GgmlType::BF16 {
        let f = quant::dequantize(t.ty, t.data, n * k)?;
        return Ok((GgmlType::F32, n, k, bytemuck::cast_slice(&f).to_vec()));
    }
    Ok((t.ty, n, k, t.data.to_vec()))
}

/// A 1-D tensor (norm weight, bias) as f32.
fn f32_tensor(model: &ModelFile, name: &str) -> Result<Vec<f32>> {
    let t = model.tensor(name)?;
    quant::dequantize(t.ty, t.data, t.n_elements() as usize)
}

/// Upload the row-concatenation of same-typed tensors as one matrix whose output rows land
/// at columns `col0..` of a `[T, stride]` output.
fn upload_placed(
    gpu: &Gpu,
    label: &str,
    parts: &[(GgmlType, usize, usize, Vec<u8>)],
    stride: usize,
    col0: usize,
) -> Result<QuantMatrix> {
    let ty = parts[0].0;
    let k = parts[0].2;
    let n: usize = parts.iter().map(|p| p.1).sum();
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.3.iter().copied()).collect();
    let mut m = QuantMatrix::upload(gpu, label, ty, n, k, &bytes)?;
    m.n = stride;
    for p in &mut m.parts {
        p.row0 += col0;
    }
    Ok(m)
}

/// Group consecutive same-typed tensors so each group is one matmul.
type HostTensor = (GgmlType, usize, usize, Vec<u8>);

fn group_by_type(tensors: Vec<HostTensor>) -> Vec<(usize, Vec<HostTensor>)> {
    let mut groups: Vec<(usize, Vec<HostTensor>)> = Vec::new();
    let mut col = 0;
    for t in tensors {
        let rows = t.1;
        match groups.last_mut() {
            Some((_, g)) if g[0].0 == t.0 => g.push(t),
            _ => groups.push((col, vec![t])),
        }
        col += rows;
    }
    groups
}

impl Transformer {
    /// Upload `model` to `gpu` and build everything a step needs.
    pub fn load(gpu: &Gpu, model: &ModelFile, limits: ForwardLimits) -> Result<Self> {
        Self::load_with_head(gpu, model, limits, None)
    }

    /// [`Transformer::load`] whose output head scores only the first `head_rows` token ids
    /// (None: the whole vocabulary). A drafter needs no more: BPE vocabularies list tokens
    /// roughly by merge order, so rare tokens sit at the end, and the target verifies every
    /// draft anyway (FR-Spec's frequency-ranked draft head, with id order as the ranking).
    pub fn load_with_head(
        gpu: &Gpu,
        model: &ModelFile,
        limits: ForwardLimits,
        head_rows: Option<usize>,
    ) -> Result<Self> {
        let c = model.config.clone();
        let w = &model.weights;
        if limits.max_t == 0 || limits.max_logit_rows == 0 || limits.max_logit_rows > limits.max_t {
            return Err(Error::Invalid(format!(
                "forward limits {limits:?}: need 1 <= max_logit_rows <= max_t"
            )));
        }
        let max_ctx = limits.max_ctx.min(c.context_length.max(1));
        let limits = ForwardLimits { max_ctx, ..limits };
        let (d, hd, nh, nkv, f, v) = (
            c.dim,
            c.head_dim,
            c.n_heads,
            c.n_kv_heads,
            c.ffn_dim,
            c.vocab_size,
        );
        let qkv_w = (nh + 2 * nkv) * hd;
        let (mt, mr) = (limits.max_t, limits.max_logit_rows);
        let mask_words = mt.div_ceil(32);
        let f4 = |n: usize| (n * 4) as u64;

        let step = gpu.uniform("step", &Step::new(1, 0));
        let head_step = gpu.uniform("head step", &Step::new(1, 0));
        let tokens = gpu.storage("tokens", f4(mt))?;
        let pos = gpu.storage("positions", f4(mt))?;
        let mask = gpu.storage("mask", f4(mt * mask_words))?;
        let x = gpu.storage("x", f4(mt * d))?;
        let xn = gpu.storage("xn", f4(mt * d))?;
        let qkv = gpu.storage("qkv", f4(mt * qkv_w))?;
        let att = gpu.storage("attn out", f4(mt * nh * hd))?;
        let gu = gpu.storage("gate|up", f4(mt * 2 * f))?;
        let act = gpu.storage("ffn act", f4(mt * f))?;
        // gemma3: a normed branch before its residual add.
        let post = if c.post_norms {
            Some(gpu.storage("post-normed branch", f4(mt * d))?)
        } else {
            None
        };
        let head_x = gpu.storage("head x", f4(mr * d))?;
        let head_xn = gpu.storage("head xn", f4(mr * d))?;
        let hv = head_rows.map_or(v, |h| h.clamp(1, v));
        let logits = gpu.storage("logits", f4(mr * hv))?;
        let argmax_ids = gpu.storage("argmax ids", f4(mr))?;

        let rmsnorm = RmsNorm::new(gpu, d as u32, c.norm_eps)?;
        let rope_shape = RopeShape {
            n_head: nh as u32,
            n_kv_head: nkv as u32,
            head_dim: hd as u32,
            n_rot: c.rope_dims as u32,
            theta: c.rope_theta,
            style: c.rope_style,
            max_ctx: max_ctx as u32,
        };
        let rope = RopeKvAppend::with_freq_factors(
            gpu,
            &rope_shape,
            model.rope_freq_factors()?.as_deref(),
        )?;
        let qk_norm = if c.qk_norm {
            Some(QkNorm::new(
                gpu, nh as u32, nkv as u32, hd as u32, c.norm_eps,
            )?)
        } else {
            None
        };
        let attn_shape = AttentionShape {
            n_head: nh as u32,
            n_kv_head: nkv as u32,
            head_dim: hd as u32,
            max_ctx: max_ctx as u32,
            mask_words: mask_words as u32,
        };
        let attn_options = |window: usize| AttentionOptions {
            window: window.min(u32::MAX as usize) as u32,
            scale: Some(c.attention_scale),
        };
        let layout = Layout::for_gpu(gpu);
        let attention = Attention::with_options(gpu, &attn_shape, layout, attn_options(0))?;
        // gemma3: the sliding-window layers' attention and RoPE.
        let any_sliding = (0..c.n_layers).any(|i| c.layer_is_sliding(i));
        let (rope_swa, attention_swa) = if any_sliding {
            let shape = RopeShape {
                theta: c.rope_theta_swa,
                ..rope_shape
            };
            let factors = model.rope_freq_factors()?;
            (
                Some(RopeKvAppend::with_freq_factors(
                    gpu,
                    &shape,
                    factors.as_deref(),
                )?),
                Some(Attention::with_options(
                    gpu,
                    &attn_shape,
                    layout,
                    attn_options(c.sliding_window),
                )?),
            )
        } else {
            (None, None)
        };
        let silu = SiluMul::new(gpu, f as u32)?;
        let gelu = match c.activation {
            Activation::GeluTanh => Some(GeluMul::new(gpu, f as u32)?),
            Activation::Silu => None,
        };
        let add = if c.post_norms {
            Some(Add::new(gpu, d as u32)?)
        } else {
            None
        };
        let mut matmuls: HashMap<GgmlType, Matmul> = HashMap::new();
        let mut bind_mm = |gpu: &Gpu,
                           step: &wgpu::Buffer,
                           m: &QuantMatrix,
                           x: &wgpu::Buffer,
                           y: &wgpu::Buffer,
                           ep: Epilogue|
         -> Result<Proj> {
            if !matmuls.contains_key(&m.ty) {
                matmuls.insert(m.ty, Matmul::new(gpu, m.ty)?);
            }
            let mm = &matmuls[&m.ty];
            Ok(Proj {
                ty: m.ty,
                binding: mm.bind(gpu, step, m, x, y, ep)?,
            })
        };

        let embed_t = gpu_bytes(model, &w.token_embd)?;
        let embed_m = QuantMatrix::upload(
            gpu,
            &w.token_embd,
            embed_t.0,
            embed_t.1,
            embed_t.2,
            &embed_t.3,
        )?;
        drop(embed_t);
        let embed = Embedding::new(gpu, embed_m.ty)?;
        let embed_b = embed.bind_scaled(gpu, &step, &embed_m, &tokens, &x, c.embed_scale)?;

        let mut layers = Vec::with_capacity(c.n_layers);
        for (i, l) in w.layers.iter().enumerate() {
            let attn_norm = gpu.upload(&l.attn_norm, &f32_tensor(model, &l.attn_norm)?)?;
            let ffn_norm = gpu.upload(&l.ffn_norm, &f32_tensor(model, &l.ffn_norm)?)?;
            let mut buffers = vec![];
            let mut matrices = vec![];
            // Q, K and V land side by side in `qkv`; same-typed neighbours share one matmul.
            let bias = match (&l.attn_q_bias, &l.attn_k_bias, &l.attn_v_bias) {
                (Some(q), Some(k), Some(vb)) => {
                    let mut b = f32_tensor(model, q)?;
                    b.extend(f32_tensor(model, k)?);
                    b.extend(f32_tensor(model, vb)?);
                    Some(gpu.upload(&format!("blk.{i}.qkv bias"), &b)?)
                }
                _ => None,
            };
            let mut qkv_proj = vec![];
            let qkv_t = vec![
                gpu_bytes(model, &l.attn_q)?,
                gpu_bytes(model, &l.attn_k)?,
                gpu_bytes(model, &l.attn_v)?,
            ];
            for (col0, group) in group_by_type(qkv_t) {
                let m = upload_placed(gpu, &format!("blk.{i}.qkv@{col0}"), &group, qkv_w, col0)?;
                qkv_proj.push(bind_mm(
                    gpu,
                    &step,
                    &m,
                    &xn,
                    &qkv,
                    Epilogue {
                        bias: bias.as_ref(),
                        accumulate: false,
                    },
                )?);
                matrices.push(m);
            }
            let wo_m = upload_placed(
                gpu,
                &l.attn_output,
                &[gpu_bytes(model, &l.attn_output)?],
                d,
                0,
            )?;
            // gemma3: the branch goes to `xn` (normed, then added) instead of onto `x`.
            let (branch_out, accumulate) = match &post {
                Some(_) => (&xn, false),
                None => (&x, true),
            };
            let wo = bind_mm(
                gpu,
                &step,
                &wo_m,
                &att,
                branch_out,
                Epilogue {
                    bias: None,
                    accumulate,
                },
            )?;
            matrices.push(wo_m);
            let mut gate_up = vec![];
            let gu_t = vec![gpu_bytes(model, &l.ffn_gate)?, gpu_bytes(model, &l.ffn_up)?];
            for (col0, group) in group_by_type(gu_t) {
                let m =
                    upload_placed(gpu, &format!("blk.{i}.gate|up@{col0}"), &group, 2 * f, col0)?;
                gate_up.push(bind_mm(gpu, &step, &m, &xn, &gu, Epilogue::default())?);
                matrices.push(m);
            }
            let down_m = upload_placed(gpu, &l.ffn_down, &[gpu_bytes(model, &l.ffn_down)?], d, 0)?;
            let down = bind_mm(
                gpu,
                &step,
                &down_m,
                &act,
                branch_out,
                Epilogue {
                    bias: None,
                    accumulate,
                },
            )?;
            matrices.push(down_m);
            let qk_norm_b = match (&qk_norm, &l.attn_q_norm, &l.attn_k_norm) {
                (Some(kernel), Some(qn), Some(kn)) => {
                    let qw = gpu.upload(qn, &f32_tensor(model, qn)?)?;
                    let kw = gpu.upload(kn, &f32_tensor(model, kn)?)?;
                    let b = kernel.bind(gpu, &step, &qkv, &qw, &kw)?;
                    buffers.extend([qw, kw]);
                    Some(b)
                }
                (None, None, None) => None,
                _ => {
                    return Err(Error::Invalid(format!(
                        "blk.{i}: the q/k norm weights do not match the config (qk_norm = {})",
                        c.qk_norm
                    )))
                }
            };
            // gemma3: post-attention / post-FFN norms.
            let post_b = match (&post, &add, &l.attn_post_norm, &l.ffn_post_norm) {
                (Some(pb), Some(adder), Some(an), Some(fnn)) => {
                    let aw = gpu.upload(an, &f32_tensor(model, an)?)?;
                    let fw = gpu.upload(fnn, &f32_tensor(model, fnn)?)?;
                    let b = PostNorms {
                        attn_norm: rmsnorm.bind(gpu, &step, &xn, &aw, pb)?,
                        attn_add: adder.bind(gpu, &step, &x, pb)?,
                        ffn_norm: rmsnorm.bind(gpu, &step, &xn, &fw, pb)?,
                        ffn_add: adder.bind(gpu, &step, &x, pb)?,
                    };
                    buffers.extend([aw, fw]);
                    Some(b)
                }
                (None, None, None, None) => None,
                _ => {
                    return Err(Error::Invalid(format!(
                        "blk.{i}: the post-norm weights do not match the config (post_norms = {})",
                        c.post_norms
                    )))
                }
            };
            let sliding = c.layer_is_sliding(i);
            let (layer_rope, layer_attn) = match (sliding, &rope_swa, &attention_swa) {
                (true, Some(r), Some(a)) => (r, a),
                _ => (&rope, &attention),
            };
            let cache = f4(nkv * max_ctx * hd);
            let k_cache = gpu.storage(&format!("blk.{i}.k_cache"), cache)?;
            let v_cache = gpu.storage(&format!("blk.{i}.v_cache"), cache)?;
            let silu_b = match &gelu {
                Some(g) => g.bind(gpu, &step, &gu, &act)?,
                None => silu.bind(gpu, &step, &gu, &act)?,
            };
            layers.push(GpuLayer {
                sliding,
                post: post_b,
                norm1: rmsnorm.bind(gpu, &step, &x, &attn_norm, &xn)?,
                qkv: qkv_proj,
                qk_norm: qk_norm_b,
                rope: layer_rope.bind(gpu, &step, &pos, &qkv, &k_cache, &v_cache)?,
                attn: layer_attn.bind(gpu, &step, &qkv, &k_cache, &v_cache, &mask, &att)?,
                wo,
                norm2: rmsnorm.bind(gpu, &step, &x, &ffn_norm, &xn)?,
                gate_up,
                silu: silu_b,
                down,
                k_cache,
                v_cache,
                _buffers: {
                    buffers.extend([attn_norm, ffn_norm]);
                    buffers.extend(bias);
                    buffers
                },
                _matrices: matrices,
            });
        }
        let out_norm = gpu.upload(&w.output_norm, &f32_tensor(model, &w.output_norm)?)?;
        let final_norm = rmsnorm.bind(gpu, &head_step, &head_x, &out_norm, &head_xn)?;
        let out_m = if w.output == w.token_embd && hv == v {
            None
        } else {
            // A truncated head is the first `hv` rows of the output (or tied embedding)
            // matrix: rows are stored one after another.
            let t = gpu_bytes(model, &w.output)?;
            let row_bytes = t.3.len() / t.1.max(1);
            let rows = hv.min(t.1);
            Some(QuantMatrix::upload(
                gpu,
                &w.output,
                t.0,
                rows,
                t.2,
                &t.3[..rows * row_bytes],
            )?)
        };
        let output = bind_mm(
            gpu,
            &head_step,
            out_m.as_ref().unwrap_or(&embed_m),
            &head_xn,
            &logits,
            Epilogue::default(),
        )?;
        let argmax = Argmax::new(gpu, hv as u32)?;
        let argmax_b = argmax.bind(gpu, &head_step, &logits, &argmax_ids)?;
        let mut keep_m = vec![embed_m];
        keep_m.extend(out_m);
        Ok(Transformer {
            config: c,
            limits,
            mask_words,
            step,
            head_step,
            tokens,
            pos,
            mask,
            x,
            head_x,
            logits,
            head_rows: hv,
            argmax_ids,
            embed,
            embed_b,
            layers,
            rmsnorm,
            qk_norm,
            rope,
            attention,
            silu,
            rope_swa,
            attention_swa,
            gelu,
            add,
            matmuls,
            final_norm,
            output,
            argmax,
            argmax_b,
            _keep: {
                let mut keep = vec![xn, qkv, att, gu, act, head_xn, out_norm];
                keep.extend(post);
                keep
            },
            _matrices: keep_m,
        })
    }

    /// The step uniform (`Step`) the forward's kernels read; kernels that act on the last
    /// step's rows (KV compaction) bind it too.
    pub fn step_buffer(&self) -> &wgpu::Buffer {
        &self.step
    }

    /// `[max_t] u32` token ids of the step (copy targets when steps are chained on the GPU).
    pub fn tokens_buffer(&self) -> &wgpu::Buffer {
        &self.tokens
    }

    /// Token ids the output head scores (`0..head_rows`): the logits rows' length.
    pub fn head_rows(&self) -> usize {
        self.head_rows
    }

    /// The Step uniform of the head (final norm, output matmul, argmax): `t` = logits rows.
    pub fn head_step_buffer(&self) -> &wgpu::Buffer {
        &self.head_step
    }

    /// `[max_t] u32` positions of the step.
    pub fn positions_buffer(&self) -> &wgpu::Buffer {
        &self.pos
    }

    /// u32 words per mask row the forward expects.
    pub fn mask_words(&self) -> usize {
        self.mask_words
    }

    fn mm(&self, pass: &mut wgpu::ComputePass, p: &Proj, t: u32) -> Result<()> {
        let mm = self
            .matmuls
            .get(&p.ty)
            .ok_or_else(|| Error::Gpu(format!("no matmul for {}", p.ty.name())))?;
        mm.encode(pass, &p.binding, t)
    }

    /// Write the step's inputs and record one forward: `tokens` at `positions` (KV rows
    /// `n_past..n_past+T`) with `mask` (`[T, mask_words]` ancestor bits), then the final norm,
    /// output head and argmax for the step rows in `logit_rows`. Submits; does not wait.
    pub fn forward(
        &self,
        gpu: &Gpu,
        tokens: &[u32],
        positions: &[u32],
        mask: &[u32],
        n_past: usize,
        logit_rows: Range<usize>,
    ) -> Result<()> {
        let t = tokens.len();
        if t == 0 || t > self.limits.max_t {
            return Err(Error::Invalid(format!(
                "a step of {t} tokens (1..={} allowed)",
                self.limits.max_t
            )));
        }
        if n_past + t > self.limits.max_ctx {
            return Err(Error::Context(format!(
                "{} tokens do not fit the KV cache of {} tokens",
                n_past + t,
                self.limits.max_ctx
            )));
        }
        let rows = logit_rows.len();
        if positions.len() != t
            || mask.len() != t * self.mask_words
            || logit_rows.end > t
            || rows > self.limits.max_logit_rows
        {
            return Err(Error::Invalid(format!(
                "forward: {t} tokens, {} positions, {} mask words, logit rows {logit_rows:?}",
                positions.len(),
                mask.len()
            )));
        }
        self.write_inputs(gpu, tokens, positions, mask, n_past, rows);
        let mut enc = gpu.encoder("forward");
        self.encode(&mut enc, t, logit_rows)?;
        gpu.submit(enc);
        Ok(())
    }

    /// Write a step's inputs (the Step uniforms, tokens, positions, mask). They take effect at
    /// the next submit, before its commands.
    pub fn write_inputs(
        &self,
        gpu: &Gpu,
        tokens: &[u32],
        positions: &[u32],
        mask: &[u32],
        n_past: usize,
        rows: usize,
    ) {
        let t = tokens.len();
        let q = &gpu.queue;
        q.write_buffer(
            &self.step,
            0,
            bytemuck::bytes_of(&Step::new(t as u32, n_past as u32)),
        );
        q.write_buffer(
            &self.head_step,
            0,
            bytemuck::bytes_of(&Step::new(rows.max(1) as u32, n_past as u32)),
        );
        q.write_buffer(&self.tokens, 0, bytemuck::cast_slice(tokens));
        q.write_buffer(&self.pos, 0, bytemuck::cast_slice(positions));
        q.write_buffer(&self.mask, 0, bytemuck::cast_slice(mask));
    }

    /// Record one forward of `t` tokens (inputs already in place) and, for `logit_rows`, the
    /// final norm, output head and argmax into `enc`.
    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        t: usize,
        logit_rows: Range<usize>,
    ) -> Result<()> {
        let rows = logit_rows.len();
        let t32 = t as u32;
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            let p = &mut pass;
            self.embed.encode(p, &self.embed_b, t32)?;
            for l in &self.layers {
                self.rmsnorm.encode(p, &l.norm1, t32)?;
                for proj in &l.qkv {
                    self.mm(p, proj, t32)?;
                }
                if let (Some(kernel), Some(b)) = (&self.qk_norm, &l.qk_norm) {
                    kernel.encode(p, b, t32)?;
                }
                // gemma3: a sliding-window layer's RoPE base and window.
                let (rope, attention) = match (l.sliding, &self.rope_swa, &self.attention_swa) {
                    (true, Some(r), Some(a)) => (r, a),
                    _ => (&self.rope, &self.attention),
                };
                rope.encode(p, &l.rope, t32)?;
                attention.encode(p, &l.attn, t32)?;
                self.mm(p, &l.wo, t32)?;
                // gemma3: norm the attention branch (in `xn`), add it to the residual.
                if let (Some(post), Some(add)) = (&l.post, &self.add) {
                    self.rmsnorm.encode(p, &post.attn_norm, t32)?;
                    add.encode(p, &post.attn_add, t32)?;
                }
                self.rmsnorm.encode(p, &l.norm2, t32)?;
                for proj in &l.gate_up {
                    self.mm(p, proj, t32)?;
                }
                match &self.gelu {
                    // gemma3: GeGLU.
                    Some(gelu) => gelu.encode(p, &l.silu, t32)?,
                    None => self.silu.encode(p, &l.silu, t32)?,
                }
                self.mm(p, &l.down, t32)?;
                // gemma3: norm the FFN branch, add it to the residual.
                if let (Some(post), Some(add)) = (&l.post, &self.add) {
                    self.rmsnorm.encode(p, &post.ffn_norm, t32)?;
                    add.encode(p, &post.ffn_add, t32)?;
                }
            }
        }
        if rows > 0 {
            let row = (self.config.dim * 4) as u64;
            enc.copy_buffer_to_buffer(
                &self.x,
                logit_rows.start as u64 * row,
                &self.head_x,
                0,
                rows as u64 * row,
            );
            let mut pass = enc.begin_compute_pass(&Default::default());
            let r = rows as u32;
            self.rmsnorm.encode(&mut pass, &self.final_norm, r)?;
            self.mm(&mut pass, &self.output, r)?;
            self.argmax.encode(&mut pass, &self.argmax_b, r)?;
        }
        Ok(())
    }

    /// Compute dispatches one [`Transformer::encode`] records with `logit_rows` head rows
    /// (a decode step: 1). It follows `encode` kernel by kernel: a matrix split over several
    /// buffers (the binding limit) costs one dispatch per part. Copies are not counted.
    /// Keep it in step with `encode`: `tests/cli.rs` pins the tiny model's count (22).
    pub fn dispatches(&self, logit_rows: usize) -> usize {
        let mm = |p: &Proj| p.binding.dispatches();
        // norm1, rope + KV append, attention, norm2, SiLU·mul: one dispatch each (and the
        // q/k norm where the model has one).
        let per_layer_single = 5;
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                per_layer_single
                    + usize::from(l.qk_norm.is_some())
                    // gemma3: two norms and two adds.
                    + if l.post.is_some() { 4 } else { 0 }
                    + l.qkv.iter().map(mm).sum::<usize>()
                    + mm(&l.wo)
                    + l.gate_up.iter().map(mm).sum::<usize>()
                    + mm(&l.down)
            })
            .sum();
        // Final norm, output head, argmax.
        let head = if logit_rows > 0 {
            2 + mm(&self.output)
        } else {
            0
        };
        self.embed_b.dispatches() + layers + head
    }

    /// Read back the argmax of the last step's `rows` logits rows (the decode loop's readback).
    pub async fn read_argmax(&self, gpu: &Gpu, rows: usize) -> Result<Vec<u32>> {
        gpu.read_vec(&self.argmax_ids, rows).await
    }

    /// Read back the last step's logits (`rows × vocab`); for tests and tools, never the decode loop.
    pub async fn read_logits(&self, gpu: &Gpu, rows: usize) -> Result<Vec<f32>> {
        gpu.read_vec(&self.logits, rows * self.head_rows).await
    }

    /// Blocking [`Transformer::read_logits`] for native tests and tools.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_logits_blocking(&self, gpu: &Gpu, rows: usize) -> Vec<f32> {
        pollster::block_on(self.read_logits(gpu, rows)).unwrap_or_default()
    }

    /// Per-layer KV caches (`[KVH, max_ctx, HD]` f32 each), for compaction and tests.
    pub fn kv_caches(&self) -> impl Iterator<Item = (&wgpu::Buffer, &wgpu::Buffer)> {
        self.layers.iter().map(|l| (&l.k_cache, &l.v_cache))
    }

    /// Causal (lower-triangular) mask for a chunk of `t` tokens.
    pub fn causal_mask(&self, t: usize) -> Vec<u32> {
        let parents: Vec<Option<usize>> = (0..t).map(|i| i.checked_sub(1)).collect();
        crate::kernels::attention::ancestor_mask(&parents, self.mask_words)
    }

    /// Prefill `tokens` after `n_past` cached ones in chunks of `max_t`, leaving the logits
    /// (and argmax) of the last token in row 0.
    pub fn prefill(&self, gpu: &Gpu, tokens: &[u32], n_past: usize) -> Result<()> {
        let mut done = 0;
        while done < tokens.len() {
            let t = (tokens.len() - done).min(self.limits.max_t);
            let chunk = &tokens[done..done + t];
            let positions: Vec<u32> = (0..t).map(|i| (n_past + done + i) as u32).collect();
            let last = done + t == tokens.len();
            let rows = if last { t - 1..t } else { t..t };
            self.forward(
                gpu,
                chunk,
                &positions,
                &self.causal_mask(t),
                n_past + done,
                rows,
            )?;
            done += t;
        }
        Ok(())
    }
}
