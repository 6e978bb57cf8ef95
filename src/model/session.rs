//! A [`Session`]: one conversation over a shared [`GpuModel`] — its KV cache (`[KVH, max_ctx,
//! HD]` f32 per layer), the activation buffers of a step of up to `max_t` tokens, the step
//! inputs (Step uniforms, tokens, positions, tree mask), the logits of up to `max_logit_rows`
//! rows, the bind groups tying them to the model's weights, and the tokens its KV rows hold.
//!
//! Several sessions run over one model on one device (a server's conversations, a drafter
//! beside its target); each reserves its memory when it opens (`Error::OutOfMemory` when the
//! device or the budget cannot hold another) and releases it when dropped. Everything a step
//! needs is made here once, so the decode loop creates no buffer, bind group or pipeline.
//!
//! Each layer's [`LayerPlan`] ops are bound once to this session's buffers ([`BoundOp`]); a
//! step records them in order (any range of layers: [`Session::encode_layers`]), and the
//! dispatch count is theirs ([`Session::dispatches`]).

use std::ops::Range;
use std::sync::Arc;

use super::config::{Activation, ModelConfig};
use super::plan::{Act, Op, Prologue};
use super::transformer::{ForwardLimits, GpuModel};
use crate::gpu::{Gpu, Reservation};
use crate::kernels::contrastive::{Contrastive, ContrastiveParams};
use crate::kernels::embed::EmbedBinding;
use crate::kernels::logit_mask::{mask_words, LogitMask};
use crate::kernels::matmul::{Epilogue, Glu, MatmulBinding, QuantMatrix};
use crate::kernels::{Bound, Step};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// One projection: a matrix bound to its input and output, for the matmul of its type.
struct Proj {
    ty: GgmlType,
    binding: MatmulBinding,
}

/// A layer plan's op bound to this session's buffers: the op (which names its pipeline in
/// the model's kernels) and its bind group, or for a projection one matmul binding per
/// same-typed run of the matrix.
pub struct BoundOp {
    op: Op,
    bound: Binding,
}

enum Binding {
    One(Bound),
    Matmuls(Vec<Proj>),
}

impl BoundOp {
    /// The op of the layer plan.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// Compute dispatches it records (a matrix split over several buffers by the binding
    /// limit costs one per part).
    pub fn dispatches(&self) -> usize {
        match &self.bound {
            Binding::One(_) => 1,
            Binding::Matmuls(ps) => ps.iter().map(|p| p.binding.dispatches()).sum(),
        }
    }
}

/// One layer's bound ops and KV cache.
struct LayerBindings {
    ops: Vec<BoundOp>,
    k_cache: wgpu::Buffer,
    v_cache: wgpu::Buffer,
}

/// Constrained decoding's logit mask over this session's logits: the kernel, its
/// `[max_logit_rows, ceil(head_rows / 32)]` u32 buffer (one token set per logits row, written
/// on the host each step) and whether the head applies it. Made at the first constrained
/// generation, kept for the next.
struct MaskState {
    kernel: LogitMask,
    bound: Bound,
    buffer: wgpu::Buffer,
    active: bool,
    _memory: Reservation,
}

/// Contrastive decoding over this session's logits (this session's model is the expert):
/// the kernel bound to an amateur session's logits of the same rows, applied by the head
/// (before the logit mask and argmax) while `active`.
struct ContrastState {
    kernel: Contrastive,
    bound: Bound,
    active: bool,
}

/// The buffers of one session, with their sizes in bytes (one table for the reservation and
/// the allocation).
struct Sizes {
    tokens: u64,
    mask: u64,
    x: u64,
    qkv: u64,
    att: u64,
    gate_up: u64,
    /// The gated activation (0 where every plan runs it in the down projection's prologue).
    act: u64,
    /// A post-normed branch before its residual add (0 where no plan post-norms).
    post: u64,
    head_x: u64,
    logits: u64,
    argmax: u64,
    kv: u64,
}

impl Sizes {
    fn of(m: &GpuModel) -> Sizes {
        let c = &m.config;
        let (mt, mr) = (m.limits.max_t as u64, m.limits.max_logit_rows as u64);
        let f4 = |n: u64| n * 4;
        let (d, hd, nh, nkv, f) = (
            c.dim as u64,
            c.head_dim as u64,
            c.n_heads as u64,
            c.n_kv_heads as u64,
            c.ffn_dim as u64,
        );
        Sizes {
            tokens: f4(mt),
            mask: f4(mt * m.mask_words as u64),
            x: f4(mt * d),
            qkv: f4(mt * (nh + 2 * nkv) * hd),
            att: f4(mt * nh * hd),
            gate_up: f4(mt * 2 * f),
            act: if m.layers.iter().any(|l| l.plan.uses_act(Act::Ffn)) {
                f4(mt * f)
            } else {
                0
            },
            post: if m.layers.iter().any(|l| l.plan.uses_act(Act::Post)) {
                f4(mt * d)
            } else {
                0
            },
            head_x: f4(mr * d),
            logits: f4(mr * m.head_rows as u64),
            argmax: f4(mr),
            kv: f4(nkv * m.limits.max_ctx as u64 * hd),
        }
    }

    fn total(&self, layers: usize) -> u64 {
        // tokens + positions, x + xn, head_x + head_xn, K + V per layer.
        2 * self.tokens
            + self.mask
            + 2 * self.x
            + self.qkv
            + self.att
            + self.gate_up
            + self.act
            + self.post
            + 2 * self.head_x
            + self.logits
            + self.argmax
            + 2 * self.kv * layers as u64
    }
}

/// One conversation's state over a shared model.
pub struct Session {
    model: Arc<GpuModel>,
    /// Tokens whose KV rows are valid in this session's cache (a next generation whose
    /// prompt starts with them prefills only the rest).
    pub cache: Vec<u32>,
    step: wgpu::Buffer,
    head_step: wgpu::Buffer,
    tokens: wgpu::Buffer,
    pos: wgpu::Buffer,
    mask: wgpu::Buffer,
    x: wgpu::Buffer,
    head_x: wgpu::Buffer,
    /// `[max_logit_rows, head_rows]` f32: logits of the rows asked for, row by row.
    pub logits: wgpu::Buffer,
    /// `[max_logit_rows]` u32: argmax of each logits row.
    pub argmax_ids: wgpu::Buffer,
    embed_b: EmbedBinding,
    /// The final norm's own dispatch (None: it runs in the output head's prologue).
    final_norm: Option<Bound>,
    layers: Vec<LayerBindings>,
    output: Proj,
    argmax_b: Bound,
    logit_mask: Option<MaskState>,
    contrast: Option<ContrastState>,
    // Kept alive for the bind groups above.
    _keep: Vec<wgpu::Buffer>,
    memory: Reservation,
}

impl Session {
    /// Device memory one session over `model` takes (KV cache and activations).
    pub fn bytes_for(model: &GpuModel) -> u64 {
        Sizes::of(model).total(model.layers.len())
    }

    /// Load `file` and open one session over it (a model used by one conversation only).
    pub fn load(gpu: &Gpu, file: &super::loader::ModelFile, limits: ForwardLimits) -> Result<Self> {
        Session::new(gpu, Arc::new(GpuModel::load(gpu, file, limits)?))
    }

    /// Open a session over `model`: reserve and allocate its buffers, bind them.
    pub fn new(gpu: &Gpu, model: Arc<GpuModel>) -> Result<Session> {
        let sz = Sizes::of(&model);
        let memory = gpu.reserve(
            &format!("a session of {} tokens of context", model.limits.max_ctx),
            sz.total(model.layers.len()),
        )?;
        gpu.allocating("a session's KV cache and activations", || {
            Session::allocate(gpu, model.clone(), &sz, memory)
        })
    }

    fn allocate(gpu: &Gpu, model: Arc<GpuModel>, sz: &Sizes, memory: Reservation) -> Result<Self> {
        let m = &*model;
        let k = &m.kernels;
        let step = gpu.uniform("step", &Step::new(1, 0));
        let head_step = gpu.uniform("head step", &Step::new(1, 0));
        let tokens = gpu.storage("tokens", sz.tokens)?;
        let pos = gpu.storage("positions", sz.tokens)?;
        let mask = gpu.storage("mask", sz.mask)?;
        let x = gpu.storage("x", sz.x)?;
        let xn = gpu.storage("xn", sz.x)?;
        let qkv = gpu.storage("qkv", sz.qkv)?;
        let att = gpu.storage("attn out", sz.att)?;
        let gu = gpu.storage("gate|up", sz.gate_up)?;
        let act = match sz.act {
            0 => None,
            n => Some(gpu.storage("ffn act", n)?),
        };
        let post = match sz.post {
            0 => None,
            n => Some(gpu.storage("post-normed branch", n)?),
        };
        let head_x = gpu.storage("head x", sz.head_x)?;
        let head_xn = gpu.storage("head xn", sz.head_x)?;
        let logits = gpu.storage("logits", sz.logits)?;
        let argmax_ids = gpu.storage("argmax ids", sz.argmax)?;

        let proj = |step: &wgpu::Buffer,
                    w: &QuantMatrix,
                    x: &wgpu::Buffer,
                    y: &wgpu::Buffer,
                    ep: Epilogue|
         -> Result<Proj> {
            Ok(Proj {
                ty: w.ty,
                binding: k.matmul(w.ty)?.bind(gpu, step, w, x, y, ep)?,
            })
        };
        let embed_b =
            k.embed
                .bind_scaled(gpu, &step, &m.embed, &tokens, &x, m.config.embed_scale)?;
        let buffer = |a: Act| -> Result<&wgpu::Buffer> {
            Ok(match a {
                Act::X => &x,
                Act::Xn => &xn,
                Act::Qkv => &qkv,
                Act::Att => &att,
                Act::GateUp => &gu,
                Act::Ffn => act.as_ref().ok_or_else(|| {
                    Error::Invalid(
                        "a layer plan reads the activation buffer it did not size".into(),
                    )
                })?,
                Act::Post => post.as_ref().ok_or_else(|| {
                    Error::Invalid("a layer plan reads the post-norm buffer it did not size".into())
                })?,
            })
        };
        let mut layers = Vec::with_capacity(m.layers.len());
        for (i, l) in m.layers.iter().enumerate() {
            let k_cache = gpu.storage(&format!("blk.{i}.k_cache"), sz.kv)?;
            let v_cache = gpu.storage(&format!("blk.{i}.v_cache"), sz.kv)?;
            let mut ops = Vec::with_capacity(l.plan.ops.len());
            for op in &l.plan.ops {
                let bound = match *op {
                    Op::RmsNorm {
                        weight,
                        input,
                        output,
                    } => Binding::One(k.rmsnorm.bind(
                        gpu,
                        &step,
                        buffer(input)?,
                        l.norm(weight, i)?,
                        buffer(output)?,
                    )?),
                    Op::Project {
                        matrix,
                        input,
                        output,
                        accumulate,
                        prologue,
                    } => {
                        let mut ep = Epilogue {
                            bias: match matrix {
                                super::plan::Matrix::Qkv => l.qkv_bias.as_ref(),
                                _ => None,
                            },
                            accumulate,
                            ..Epilogue::default()
                        };
                        match prologue {
                            Prologue::None => {}
                            Prologue::Norm(n) => ep.norm = Some((l.norm(n, i)?, m.config.norm_eps)),
                            Prologue::Gated(a) => {
                                ep.glu = Some(match a {
                                    Activation::Silu => Glu::Silu,
                                    Activation::GeluTanh => Glu::GeluTanh,
                                })
                            }
                        }
                        Binding::Matmuls(
                            l.matrices(matrix)
                                .iter()
                                .map(|w| proj(&step, w, buffer(input)?, buffer(output)?, ep))
                                .collect::<Result<_>>()?,
                        )
                    }
                    Op::QkNorm => {
                        let (qw, kw) = l.qk_norm.as_ref().ok_or_else(|| {
                            Error::Invalid(format!(
                                "blk.{i}: the plan norms q/k heads without weights"
                            ))
                        })?;
                        Binding::One(k.qk_norm(op)?.bind(gpu, &step, &qkv, qw, kw)?)
                    }
                    Op::RopeKvAppend(reach) => Binding::One(
                        k.rope(reach, op)?
                            .bind(gpu, &step, &pos, &qkv, &k_cache, &v_cache)?,
                    ),
                    Op::Attention(reach) => Binding::One(
                        k.attention(reach, op)?
                            .bind(gpu, &step, &qkv, &k_cache, &v_cache, &mask, &att)?,
                    ),
                    Op::Gated(a) => {
                        Binding::One(k.gated(a, op)?.bind(gpu, &step, &gu, buffer(Act::Ffn)?)?)
                    }
                    Op::Add { from, into } => {
                        Binding::One(k.add(op)?.bind(gpu, &step, buffer(into)?, buffer(from)?)?)
                    }
                };
                ops.push(BoundOp { op: *op, bound });
            }
            layers.push(LayerBindings {
                ops,
                k_cache,
                v_cache,
            });
        }
        // The final norm: in the output head's prologue, or its own dispatch into head_xn.
        let (final_norm, output) = if m.fused_prologues {
            let ep = Epilogue {
                norm: Some((&m.output_norm, m.config.norm_eps)),
                ..Epilogue::default()
            };
            let output = proj(&head_step, m.output_matrix(), &head_x, &logits, ep)?;
            (None, output)
        } else {
            let norm = k
                .rmsnorm
                .bind(gpu, &head_step, &head_x, &m.output_norm, &head_xn)?;
            let ep = Epilogue::default();
            let output = proj(&head_step, m.output_matrix(), &head_xn, &logits, ep)?;
            (Some(norm), output)
        };
        let argmax_b = k.argmax.bind(gpu, &head_step, &logits, &argmax_ids)?;
        Ok(Session {
            model: model.clone(),
            cache: Vec::new(),
            final_norm,
            step,
            head_step,
            tokens,
            pos,
            mask,
            x,
            head_x,
            logits,
            argmax_ids,
            embed_b,
            layers,
            output,
            argmax_b,
            logit_mask: None,
            contrast: None,
            _keep: {
                let mut keep = vec![xn, qkv, att, gu, head_xn];
                keep.extend(post.into_iter().chain(act));
                keep
            },
            memory,
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<GpuModel> {
        &self.model
    }

    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    pub fn limits(&self) -> ForwardLimits {
        self.model.limits
    }

    /// Device memory this session holds (KV cache and activations).
    pub fn bytes(&self) -> u64 {
        self.memory.bytes()
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
        self.model.head_rows
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
        self.model.mask_words
    }

    /// Causal (lower-triangular) mask for a chunk of `t` tokens.
    pub fn causal_mask(&self, t: usize) -> Vec<u32> {
        self.model.causal_mask(t)
    }

    /// Mask the logits from now on (`true`) with the token sets of
    /// [`Session::write_logit_mask`], or stop (`false`). The kernel and its buffer are made
    /// at the first `true` (never per step).
    pub fn set_logit_mask(&mut self, gpu: &Gpu, active: bool) -> Result<()> {
        if let Some(m) = &mut self.logit_mask {
            m.active = active;
            return Ok(());
        }
        if !active {
            return Ok(());
        }
        let rows = self.limits().max_logit_rows as u64;
        let words = mask_words(self.head_rows()) as u64;
        let memory = gpu.reserve("a constrained session's logit mask", rows * words * 4)?;
        let buffer = gpu.storage("logit mask", rows * words * 4)?;
        let kernel = LogitMask::new(gpu, self.head_rows() as u32)?;
        let bound = kernel.bind(gpu, &self.head_step, &buffer, &self.logits)?;
        self.logit_mask = Some(MaskState {
            kernel,
            bound,
            buffer,
            active,
            _memory: memory,
        });
        Ok(())
    }

    /// Turn this session's logits into contrastive scores against `amateur`'s logits of the
    /// same rows (`Some`: its forward over the same batch must be recorded before this
    /// session's in each step), or stop (`None`). The amateur must score the same tokens and
    /// hold as many logits rows. Binds once per call (a generation's start), never per step.
    pub fn set_contrastive(
        &mut self,
        gpu: &Gpu,
        amateur: Option<(&Session, ContrastiveParams)>,
    ) -> Result<()> {
        let Some((a, params)) = amateur else {
            if let Some(c) = &mut self.contrast {
                c.active = false;
            }
            return Ok(());
        };
        if a.head_rows() != self.head_rows() {
            return Err(Error::Mismatch(format!(
                "contrastive decoding compares the drafter's scores with the target's token for \
                 token: the drafter scores {} tokens, the target {} (load the drafter without \
                 a draft vocabulary)",
                a.head_rows(),
                self.head_rows()
            )));
        }
        if a.limits().max_logit_rows < self.limits().max_logit_rows {
            return Err(Error::Invalid(format!(
                "the amateur session holds {} logits rows, the target's steps {}",
                a.limits().max_logit_rows,
                self.limits().max_logit_rows
            )));
        }
        let kernel = match self.contrast.take() {
            Some(c) => {
                c.kernel.set_params(gpu, params)?;
                c.kernel
            }
            None => Contrastive::new(gpu, self.head_rows() as u32, params)?,
        };
        let bound = kernel.bind(gpu, &self.head_step, &self.logits, &a.logits)?;
        self.contrast = Some(ContrastState {
            kernel,
            bound,
            active: true,
        });
        Ok(())
    }

    /// Whether the head computes contrastive scores ([`Session::set_contrastive`]).
    pub fn contrastive_active(&self) -> bool {
        self.contrast.as_ref().is_some_and(|c| c.active)
    }

    /// Whether the head masks the logits ([`Session::set_logit_mask`]).
    pub fn logit_mask_active(&self) -> bool {
        self.logit_mask.as_ref().is_some_and(|m| m.active)
    }

    /// Write the next step's token sets: `masks` is `[rows, ceil(head_rows / 32)]` u32, one
    /// row per logits row (bit `v % 32` of word `v / 32` set = token `v` allowed). Takes
    /// effect at the next submit.
    pub fn write_logit_mask(&self, gpu: &Gpu, masks: &[u32]) -> Result<()> {
        let Some(m) = &self.logit_mask else {
            return Err(Error::Invalid(
                "write_logit_mask before set_logit_mask(true)".into(),
            ));
        };
        let words = mask_words(self.head_rows());
        if !masks.len().is_multiple_of(words) || masks.len() / words > self.limits().max_logit_rows
        {
            return Err(Error::Invalid(format!(
                "a logit mask of {} words is not whole rows of {words} words (at most {} rows)",
                masks.len(),
                self.limits().max_logit_rows
            )));
        }
        gpu.queue
            .write_buffer(&m.buffer, 0, bytemuck::cast_slice(masks));
        Ok(())
    }

    fn mm(&self, pass: &mut wgpu::ComputePass, p: &Proj, t: u32) -> Result<()> {
        self.model.kernels.matmul(p.ty)?.encode(pass, &p.binding, t)
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
        let limits = self.limits();
        if t == 0 || t > limits.max_t {
            return Err(Error::Invalid(format!(
                "a step of {t} tokens (1..={} allowed)",
                limits.max_t
            )));
        }
        if n_past + t > limits.max_ctx {
            return Err(Error::Context(format!(
                "{} tokens do not fit the KV cache of {} tokens",
                n_past + t,
                limits.max_ctx
            )));
        }
        let rows = logit_rows.len();
        if positions.len() != t
            || mask.len() != t * self.mask_words()
            || logit_rows.end > t
            || rows > limits.max_logit_rows
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
        self.encode_layers(enc, t, 0..self.layers.len(), logit_rows)
    }

    /// [`Session::encode`] through the layers in `layers` only (the others are skipped: their
    /// KV rows are not written), as layer-skip drafting runs a model's own first layers.
    pub fn encode_layers(
        &self,
        enc: &mut wgpu::CommandEncoder,
        t: usize,
        layers: Range<usize>,
        logit_rows: Range<usize>,
    ) -> Result<()> {
        let k = &self.model.kernels;
        if layers.start > layers.end || layers.end > self.layers.len() {
            return Err(Error::Invalid(format!(
                "layers {layers:?} of a model of {} layers",
                self.layers.len()
            )));
        }
        let rows = logit_rows.len();
        let t32 = t as u32;
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            let p = &mut pass;
            k.embed.encode(p, &self.embed_b, t32)?;
            for l in &self.layers[layers] {
                for b in &l.ops {
                    self.encode_op(p, b, t32)?;
                }
            }
        }
        if rows > 0 {
            let row = (self.config().dim * 4) as u64;
            enc.copy_buffer_to_buffer(
                &self.x,
                logit_rows.start as u64 * row,
                &self.head_x,
                0,
                rows as u64 * row,
            );
            let mut pass = enc.begin_compute_pass(&Default::default());
            let r = rows as u32;
            if let Some(norm) = &self.final_norm {
                k.rmsnorm.encode(&mut pass, norm, r)?;
            }
            self.mm(&mut pass, &self.output, r)?;
            if let Some(c) = self.contrast.as_ref().filter(|c| c.active) {
                c.kernel.encode(&mut pass, &c.bound, r)?;
            }
            if let Some(m) = self.logit_mask.as_ref().filter(|m| m.active) {
                m.kernel.encode(&mut pass, &m.bound, r)?;
            }
            k.argmax.encode(&mut pass, &self.argmax_b, r)?;
        }
        Ok(())
    }

    /// Record one bound op of a layer plan.
    fn encode_op(&self, p: &mut wgpu::ComputePass, b: &BoundOp, t: u32) -> Result<()> {
        let k = &self.model.kernels;
        let op = &b.op;
        let one = match &b.bound {
            Binding::One(bound) => bound,
            Binding::Matmuls(projs) => {
                for proj in projs {
                    self.mm(p, proj, t)?;
                }
                return Ok(());
            }
        };
        match *op {
            Op::RmsNorm { .. } => k.rmsnorm.encode(p, one, t),
            Op::QkNorm => k.qk_norm(op)?.encode(p, one, t),
            Op::RopeKvAppend(reach) => k.rope(reach, op)?.encode(p, one, t),
            Op::Attention(reach) => k.attention(reach, op)?.encode(p, one, t),
            Op::Gated(a) => k.gated(a, op)?.encode(p, one, t),
            Op::Add { .. } => k.add(op)?.encode(p, one, t),
            Op::Project { .. } => Err(Error::Gpu(format!(
                "a projection bound as one kernel ({op:?})"
            ))),
        }
    }

    /// The bound ops of layer `i` (its plan, as this session records it).
    pub fn layer_ops(&self, i: usize) -> Option<&[BoundOp]> {
        self.layers.get(i).map(|l| l.ops.as_slice())
    }

    /// Compute dispatches one [`Session::encode`] records with `logit_rows` head rows (a
    /// decode step: 1): the embedding gather, every bound op of the layer plans, and the head.
    /// Copies are not counted.
    pub fn dispatches(&self, logit_rows: usize) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .flat_map(|l| &l.ops)
            .map(BoundOp::dispatches)
            .sum();
        // The final norm (unless the output head's prologue has it), the output head,
        // argmax (and the contrastive scores and the logit mask while they are on).
        let head = if logit_rows > 0 {
            1 + usize::from(self.final_norm.is_some())
                + self.output.binding.dispatches()
                + usize::from(self.logit_mask_active())
                + usize::from(self.contrastive_active())
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
        gpu.read_vec(&self.logits, rows * self.head_rows()).await
    }

    /// Blocking [`Session::read_logits`] for native tests and tools.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_logits_blocking(&self, gpu: &Gpu, rows: usize) -> Vec<f32> {
        pollster::block_on(self.read_logits(gpu, rows)).unwrap_or_default()
    }

    /// Per-layer KV caches (`[KVH, max_ctx, HD]` f32 each), for compaction and tests.
    pub fn kv_caches(&self) -> impl Iterator<Item = (&wgpu::Buffer, &wgpu::Buffer)> {
        self.layers.iter().map(|l| (&l.k_cache, &l.v_cache))
    }

    /// Prefill `tokens` after `n_past` cached ones in chunks of `max_t`, leaving the logits
    /// (and argmax) of the last token in row 0.
    pub fn prefill(&self, gpu: &Gpu, tokens: &[u32], n_past: usize) -> Result<()> {
        let mut done = 0;
        let max_t = self.limits().max_t;
        while done < tokens.len() {
            let t = (tokens.len() - done).min(max_t);
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
