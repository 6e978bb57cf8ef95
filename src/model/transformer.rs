//! The transformer's weights on the GPU: [`GpuModel`], built once per model file and shared
//! (`Arc`) by every [`super::session::Session`] — one conversation's KV cache, activation
//! buffers and bind groups — over it.
//!
//! What a layer computes is its [`LayerPlan`] (`src/model/plan.rs`, one file per family in
//! `src/model/arch/`): the load uploads the weights the plans name and builds the pipelines
//! they use (the sliding-window RoPE and attention, GELU·mul, the add of a post-normed branch
//! only where some layer has them). Read a plan beside `cpu.rs`, the independent reference.
//! Weights are uploaded once in their GGUF block format and every pipeline is built here at
//! load time; a session makes its bind groups once when it opens, so a step only writes a few
//! small buffers, records one command buffer and submits it.

use std::collections::HashMap;

use super::config::{Activation, ModelConfig};
use super::loader::ModelFile;
use super::plan::{any_op, LayerPlan, Matrix, Norm, Op, Reach};
use crate::gpu::{Gpu, Reservation};
use crate::kernels::add::Add;
use crate::kernels::argmax::Argmax;
use crate::kernels::attention::{Attention, AttentionOptions, AttentionShape};
use crate::kernels::embed::Embedding;
use crate::kernels::gelu_mul::GeluMul;
use crate::kernels::matmul::{Matmul, QuantMatrix};
use crate::kernels::qk_norm::QkNorm;
use crate::kernels::rmsnorm::RmsNorm;
use crate::kernels::rope::{RopeKvAppend, RopeShape};
use crate::kernels::silu_mul::SiluMul;
use crate::kernels::Layout;
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

/// One layer's weights as uploaded: norms, the QKV matrices (same-typed neighbours joined,
/// placed side by side in the `qkv` activation), the output projection and the FFN, with the
/// plan that uses them.
pub(super) struct LayerWeights {
    pub plan: LayerPlan,
    pub attn_norm: wgpu::Buffer,
    pub ffn_norm: wgpu::Buffer,
    pub qkv: Vec<QuantMatrix>,
    pub qkv_bias: Option<wgpu::Buffer>,
    /// Per-head q and k RMSNorm weights (qwen3).
    pub qk_norm: Option<(wgpu::Buffer, wgpu::Buffer)>,
    pub wo: QuantMatrix,
    pub gate_up: Vec<QuantMatrix>,
    pub down: QuantMatrix,
    /// Post-attention and post-FFN RMSNorm weights, where the plan post-norms (gemma3).
    pub post_norms: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

impl LayerWeights {
    /// The weight of norm `n` (an error if the file gave the layer none).
    pub fn norm(&self, n: Norm, layer: usize) -> Result<&wgpu::Buffer> {
        match (n, &self.post_norms) {
            (Norm::Attn, _) => Ok(&self.attn_norm),
            (Norm::Ffn, _) => Ok(&self.ffn_norm),
            (Norm::AttnPost, Some((a, _))) => Ok(a),
            (Norm::FfnPost, Some((_, f))) => Ok(f),
            _ => Err(Error::Invalid(format!("blk.{layer}: no {n:?} norm weight"))),
        }
    }

    /// The matrices of `m` (one per same-typed run).
    pub fn matrices(&self, m: Matrix) -> &[QuantMatrix] {
        match m {
            Matrix::Qkv => &self.qkv,
            Matrix::Output => std::slice::from_ref(&self.wo),
            Matrix::GateUp => &self.gate_up,
            Matrix::Down => std::slice::from_ref(&self.down),
        }
    }
}

/// The pipelines of one model's forward (shared by its sessions): the ones its layer plans
/// use, each built once.
pub(super) struct Kernels {
    pub embed: Embedding,
    pub rmsnorm: RmsNorm,
    pub qk_norm: Option<QkNorm>,
    /// The global layers' RoPE and attention.
    pub rope: RopeKvAppend,
    pub attention: Attention,
    /// The sliding-window layers' RoPE (base `rope_theta_swa`) and attention (window).
    pub rope_swa: Option<RopeKvAppend>,
    pub attention_swa: Option<Attention>,
    pub silu: Option<SiluMul>,
    pub gelu: Option<GeluMul>,
    /// The add of a post-normed branch onto the residual.
    pub add: Option<Add>,
    pub matmuls: HashMap<GgmlType, Matmul>,
    pub argmax: Argmax,
}

/// `kernel` or an error naming the op no pipeline was built for.
fn built<'a, K>(kernel: &'a Option<K>, op: &Op) -> Result<&'a K> {
    kernel
        .as_ref()
        .ok_or_else(|| Error::Gpu(format!("no pipeline for the layer plan's {op:?}")))
}

impl Kernels {
    pub fn matmul(&self, ty: GgmlType) -> Result<&Matmul> {
        self.matmuls
            .get(&ty)
            .ok_or_else(|| Error::Gpu(format!("no matmul for {}", ty.name())))
    }

    pub fn qk_norm(&self, op: &Op) -> Result<&QkNorm> {
        built(&self.qk_norm, op)
    }

    pub fn add(&self, op: &Op) -> Result<&Add> {
        built(&self.add, op)
    }

    /// RoPE + KV append and attention of `reach`.
    pub fn rope(&self, reach: Reach, op: &Op) -> Result<&RopeKvAppend> {
        match reach {
            Reach::Global => Ok(&self.rope),
            Reach::Sliding => built(&self.rope_swa, op),
        }
    }

    pub fn attention(&self, reach: Reach, op: &Op) -> Result<&Attention> {
        match reach {
            Reach::Global => Ok(&self.attention),
            Reach::Sliding => built(&self.attention_swa, op),
        }
    }

    /// Which gated activation kernel: SiLU·mul or GELU·mul.
    pub fn gated(&self, a: Activation, op: &Op) -> Result<GatedKernel<'_>> {
        Ok(match a {
            Activation::Silu => GatedKernel::Silu(built(&self.silu, op)?),
            Activation::GeluTanh => GatedKernel::Gelu(built(&self.gelu, op)?),
        })
    }
}

/// A gated activation's pipeline.
pub(super) enum GatedKernel<'a> {
    Silu(&'a SiluMul),
    Gelu(&'a GeluMul),
}

impl GatedKernel<'_> {
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        gate_up: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<crate::kernels::Bound> {
        match self {
            GatedKernel::Silu(k) => k.bind(gpu, step, gate_up, out),
            GatedKernel::Gelu(k) => k.bind(gpu, step, gate_up, out),
        }
    }

    pub fn encode(
        &self,
        pass: &mut wgpu::ComputePass,
        bound: &crate::kernels::Bound,
        t: u32,
    ) -> Result<()> {
        match self {
            GatedKernel::Silu(k) => k.encode(pass, bound, t),
            GatedKernel::Gelu(k) => k.encode(pass, bound, t),
        }
    }
}

/// A model's weights and pipelines on one device: immutable once loaded, shared by the
/// sessions (conversations) that run it.
pub struct GpuModel {
    pub config: ModelConfig,
    pub limits: ForwardLimits,
    pub(super) mask_words: usize,
    /// Whether the layer plans are [`LayerPlan::fused`] (norms and gated activations in the
    /// prologues of the projections that read them) and the final norm runs in the output
    /// head's prologue: the default in the gpu layout, where a dispatch costs more than the
    /// prologue's work; in the cpu layout the prologue costs more than the dispatch it saves.
    pub fused_prologues: bool,
    /// Vocabulary entries the output head scores: the first `head_rows` token ids (all of
    /// them unless the model was loaded with a truncated head).
    pub(super) head_rows: usize,
    pub(super) kernels: Kernels,
    pub(super) embed: QuantMatrix,
    pub(super) layers: Vec<LayerWeights>,
    pub(super) output_norm: wgpu::Buffer,
    /// The output head; None when it is the (tied) embedding matrix.
    pub(super) output: Option<QuantMatrix>,
    weights: Reservation,
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

/// The matmul pipelines for `ty`, built the first time a matrix of that type appears.
fn ensure_matmul(matmuls: &mut HashMap<GgmlType, Matmul>, gpu: &Gpu, ty: GgmlType) -> Result<()> {
    if let std::collections::hash_map::Entry::Vacant(e) = matmuls.entry(ty) {
        e.insert(Matmul::new(gpu, ty)?);
    }
    Ok(())
}

/// Bytes the GPU copy of a tensor takes (BF16 is widened to F32).
fn gpu_size(model: &ModelFile, name: &str) -> Result<u64> {
    let t = model.tensor(name)?;
    Ok(match t.ty {
        GgmlType::BF16 => 2 * t.data.len() as u64,
        _ => t.data.len() as u64,
    })
}

impl GpuModel {
    /// Upload `model` to `gpu` and build every pipeline its forward needs.
    pub fn load(gpu: &Gpu, model: &ModelFile, limits: ForwardLimits) -> Result<Self> {
        Self::load_with_head(gpu, model, limits, None)
    }

    /// [`GpuModel::load`] whose output head scores only the first `head_rows` token ids
    /// (None: the whole vocabulary). A drafter needs no more: BPE vocabularies list tokens
    /// roughly by merge order, so rare tokens sit at the end, and the target verifies every
    /// draft anyway (FR-Spec's frequency-ranked draft head, with id order as the ranking).
    pub fn load_with_head(
        gpu: &Gpu,
        model: &ModelFile,
        limits: ForwardLimits,
        head_rows: Option<usize>,
    ) -> Result<Self> {
        let fuse = Layout::for_gpu(gpu) == Layout::Gpu;
        Self::load_with_options(gpu, model, limits, head_rows, fuse)
    }

    /// [`GpuModel::load_with_head`] with the fusion chosen by the caller (`fuse`: each norm
    /// or gated activation that only projections read runs in their matmuls' prologue; tests
    /// run both).
    pub fn load_with_options(
        gpu: &Gpu,
        model: &ModelFile,
        limits: ForwardLimits,
        head_rows: Option<usize>,
        fuse: bool,
    ) -> Result<Self> {
        let c = model.config.clone();
        let w = &model.weights;
        let plans: Vec<LayerPlan> = super::arch::plan(&c)
            .into_iter()
            .map(|p| if fuse { p.fused() } else { p })
            .collect();
        if plans.len() != w.layers.len() {
            return Err(Error::Invalid(format!(
                "{} layer plans for {} layers of weights",
                plans.len(),
                w.layers.len()
            )));
        }
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
        let mask_words = limits.max_t.div_ceil(32);
        let hv = head_rows.map_or(v, |h| h.clamp(1, v));
        let truncated_head = w.output != w.token_embd || hv != v;

        // The weights' device memory, reserved before any of it is allocated.
        let mut names: Vec<&String> = vec![&w.token_embd, &w.output_norm];
        if truncated_head {
            names.push(&w.output);
        }
        for l in &w.layers {
            names.extend([
                &l.attn_norm,
                &l.ffn_norm,
                &l.attn_q,
                &l.attn_k,
                &l.attn_v,
                &l.attn_output,
                &l.ffn_gate,
                &l.ffn_up,
                &l.ffn_down,
            ]);
            for o in [
                &l.attn_q_bias,
                &l.attn_k_bias,
                &l.attn_v_bias,
                &l.attn_q_norm,
                &l.attn_k_norm,
                &l.attn_post_norm,
                &l.ffn_post_norm,
            ]
            .into_iter()
            .flatten()
            {
                names.push(o);
            }
        }
        let mut bytes = 0u64;
        for n in names {
            bytes += gpu_size(model, n)?;
        }
        let what = match &c.name {
            Some(n) => format!("the weights of '{n}'"),
            None => "the model's weights".to_string(),
        };
        let weights = gpu.reserve(&what, bytes)?;

        gpu.allocating("the model's weights", || {
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
            // The global layers' frequencies: the file's factors (llama3) times the linear
            // scale (gemma3 4B+), both dividing each pair's frequency.
            let file_factors = model.rope_freq_factors()?;
            let global_factors = match (file_factors.clone(), c.rope_linear_scale) {
                (f, 1.0) => f,
                (Some(f), s) => Some(f.iter().map(|x| x * s).collect()),
                (None, s) => Some(vec![s; c.rope_dims / 2]),
            };
            let rope =
                RopeKvAppend::with_freq_factors(gpu, &rope_shape, global_factors.as_deref())?;
            let qk_norm = if any_op(&plans, |op| *op == Op::QkNorm) {
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
            // The sliding-window layers' attention and RoPE (gemma3).
            let any_sliding = plans.iter().any(LayerPlan::slides);
            let (rope_swa, attention_swa) = if any_sliding {
                let shape = RopeShape {
                    theta: c.rope_theta_swa,
                    ..rope_shape
                };
                (
                    Some(RopeKvAppend::with_freq_factors(
                        gpu,
                        &shape,
                        file_factors.as_deref(),
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
            let gated = |a: Activation| any_op(&plans, |op| *op == Op::Gated(a));
            let silu = match gated(Activation::Silu) {
                true => Some(SiluMul::new(gpu, f as u32)?),
                false => None,
            };
            let gelu = match gated(Activation::GeluTanh) {
                true => Some(GeluMul::new(gpu, f as u32)?),
                false => None,
            };
            let add = if any_op(&plans, |op| matches!(op, Op::Add { .. })) {
                Some(Add::new(gpu, d as u32)?)
            } else {
                None
            };
            let mut matmuls: HashMap<GgmlType, Matmul> = HashMap::new();
            let mut matrix = |m: QuantMatrix| -> Result<QuantMatrix> {
                ensure_matmul(&mut matmuls, gpu, m.ty)?;
                Ok(m)
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

            let mut layers = Vec::with_capacity(c.n_layers);
            for (i, (l, plan)) in w.layers.iter().zip(plans).enumerate() {
                // Q, K and V land side by side in `qkv`; same-typed neighbours share one matmul.
                let qkv_bias = match (&l.attn_q_bias, &l.attn_k_bias, &l.attn_v_bias) {
                    (Some(q), Some(k), Some(vb)) => {
                        let mut b = f32_tensor(model, q)?;
                        b.extend(f32_tensor(model, k)?);
                        b.extend(f32_tensor(model, vb)?);
                        Some(gpu.upload(&format!("blk.{i}.qkv bias"), &b)?)
                    }
                    _ => None,
                };
                let qkv_t = vec![
                    gpu_bytes(model, &l.attn_q)?,
                    gpu_bytes(model, &l.attn_k)?,
                    gpu_bytes(model, &l.attn_v)?,
                ];
                let mut qkv = vec![];
                for (col0, group) in group_by_type(qkv_t) {
                    qkv.push(matrix(upload_placed(
                        gpu,
                        &format!("blk.{i}.qkv@{col0}"),
                        &group,
                        qkv_w,
                        col0,
                    )?)?);
                }
                let wo = matrix(upload_placed(
                    gpu,
                    &l.attn_output,
                    &[gpu_bytes(model, &l.attn_output)?],
                    d,
                    0,
                )?)?;
                let gu_t = vec![gpu_bytes(model, &l.ffn_gate)?, gpu_bytes(model, &l.ffn_up)?];
                let mut gate_up = vec![];
                for (col0, group) in group_by_type(gu_t) {
                    gate_up.push(matrix(upload_placed(
                        gpu,
                        &format!("blk.{i}.gate|up@{col0}"),
                        &group,
                        2 * f,
                        col0,
                    )?)?);
                }
                let down = matrix(upload_placed(
                    gpu,
                    &l.ffn_down,
                    &[gpu_bytes(model, &l.ffn_down)?],
                    d,
                    0,
                )?)?;
                let wants_qk_norm = plan.any(|op| *op == Op::QkNorm);
                let qk_norm_w = match (wants_qk_norm, &l.attn_q_norm, &l.attn_k_norm) {
                    (true, Some(qn), Some(kn)) => Some((
                        gpu.upload(qn, &f32_tensor(model, qn)?)?,
                        gpu.upload(kn, &f32_tensor(model, kn)?)?,
                    )),
                    (false, None, None) => None,
                    _ => {
                        return Err(Error::Invalid(format!(
                            "blk.{i}: the q/k norm weights do not match the {} layer plan \
                             (per-head q/k norm: {wants_qk_norm})",
                            c.arch.name()
                        )))
                    }
                };
                // Post-attention / post-FFN norms (gemma3).
                let wants_post = plan.uses_norm(Norm::AttnPost) || plan.uses_norm(Norm::FfnPost);
                let post_norms = match (wants_post, &l.attn_post_norm, &l.ffn_post_norm) {
                    (true, Some(an), Some(fnn)) => Some((
                        gpu.upload(an, &f32_tensor(model, an)?)?,
                        gpu.upload(fnn, &f32_tensor(model, fnn)?)?,
                    )),
                    (false, None, None) => None,
                    _ => {
                        return Err(Error::Invalid(format!(
                            "blk.{i}: the post-norm weights do not match the {} layer plan \
                             (post norms: {wants_post})",
                            c.arch.name()
                        )))
                    }
                };
                layers.push(LayerWeights {
                    plan,
                    post_norms,
                    attn_norm: gpu.upload(&l.attn_norm, &f32_tensor(model, &l.attn_norm)?)?,
                    ffn_norm: gpu.upload(&l.ffn_norm, &f32_tensor(model, &l.ffn_norm)?)?,
                    qkv,
                    qkv_bias,
                    qk_norm: qk_norm_w,
                    wo,
                    gate_up,
                    down,
                });
            }
            let output_norm = gpu.upload(&w.output_norm, &f32_tensor(model, &w.output_norm)?)?;
            let output = if truncated_head {
                // A truncated head is the first `hv` rows of the output (or tied embedding)
                // matrix: rows are stored one after another.
                let t = gpu_bytes(model, &w.output)?;
                let row_bytes = t.3.len() / t.1.max(1);
                let rows = hv.min(t.1);
                Some(matrix(QuantMatrix::upload(
                    gpu,
                    &w.output,
                    t.0,
                    rows,
                    t.2,
                    &t.3[..rows * row_bytes],
                )?)?)
            } else {
                ensure_matmul(&mut matmuls, gpu, embed_m.ty)?;
                None
            };
            let argmax = Argmax::new(gpu, hv as u32)?;
            Ok(GpuModel {
                config: c.clone(),
                limits,
                mask_words,
                fused_prologues: fuse,
                head_rows: hv,
                kernels: Kernels {
                    embed,
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
                    argmax,
                },
                embed: embed_m,
                layers,
                output_norm,
                output,
                weights,
            })
        })
    }

    /// Token ids the output head scores (`0..head_rows`): the logits rows' length.
    pub fn head_rows(&self) -> usize {
        self.head_rows
    }

    /// Layer `i`'s plan (what the forward records for it).
    pub fn layer_plan(&self, i: usize) -> Option<&LayerPlan> {
        self.layers.get(i).map(|l| &l.plan)
    }

    /// Layers of the model.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// u32 words per mask row the forward expects.
    pub fn mask_words(&self) -> usize {
        self.mask_words
    }

    /// Device memory the weights hold.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.bytes()
    }

    /// The output head's matrix (the embedding matrix when tied).
    pub(super) fn output_matrix(&self) -> &QuantMatrix {
        self.output.as_ref().unwrap_or(&self.embed)
    }

    /// Causal (lower-triangular) mask for a chunk of `t` tokens.
    pub fn causal_mask(&self, t: usize) -> Vec<u32> {
        let parents: Vec<Option<usize>> = (0..t).map(|i| i.checked_sub(1)).collect();
        crate::kernels::attention::ancestor_mask(&parents, self.mask_words)
    }
}
