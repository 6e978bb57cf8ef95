//! Attention of the step's T query tokens over the KV cache with a tree mask. Each query
//! sees the prefix rows `0..n_past` and the step rows `n_past + j` whose bit j is set in its
//! mask row; the reduction runs over that ordered list of visible keys, so a tree node's
//! output is bit-identical to the same token decoded alone after its ancestors.
//!
//! A sliding window ([`AttentionOptions::window`], gemma3's local layers) keeps only the last
//! `window` entries of that list. The list is the query's positions in order: the prefix
//! rows hold positions `0..n_past`, and a node's visible step rows are its ancestors and
//! itself, at positions `n_past + depth` (how every step is laid out: prefill chunks, chains
//! and trees). So ordinal o is position o, the query sits at the last ordinal p, and keeping
//! ordinals `p - window < o <= p` is llama.cpp's rule (`p - k < window`) by position.
//! Layouts and the reasoning: `shaders/attention.wgsl` (gpu layout) and
//! `shaders/attention_cpu.wgsl` (cpu layout; see [`Layout`]).

use std::sync::Arc;

use super::{check_t, need_kv_cache, rows_in, Bound, Layout};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/attention.wgsl");
const CPU_SRC: &str = include_str!("../../shaders/attention_cpu.wgsl");
/// Heads per workgroup of the cpu layout (`WG` in attention_cpu.wgsl).
const CPU_HEADS: u32 = 8;

/// The tree mask this kernel reads: ancestor bitsets `[T, words]` u32 from parent indices
/// (each parent before its child); bit j of row i is set iff row j is row i itself or one of
/// its ancestors. Built on the host per step (small) and uploaded with the tokens.
pub fn ancestor_mask(parents: &[Option<usize>], words: usize) -> Vec<u32> {
    let t = parents.len();
    let mut mask = vec![0u32; t * words];
    for i in 0..t {
        if let Some(p) = parents[i] {
            let (src, dst) = (p * words, i * words);
            for w in 0..words {
                mask[dst + w] = mask[src + w];
            }
        }
        if i / 32 < words {
            mask[i * words + i / 32] |= 1 << (i % 32);
        }
    }
    mask
}

/// Static shape of one attention layer.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Query heads (H).
    pub n_head: u32,
    /// Key/value heads (KVH); query head h reads kv head h / (H / KVH).
    pub n_kv_head: u32,
    /// Head dim (HD): a multiple of 4, at most 256.
    pub head_dim: u32,
    /// Rows per kv head in the KV cache.
    pub max_ctx: u32,
    /// u32 words per mask row (MW); T may be at most 32 * MW.
    pub mask_words: u32,
}

impl AttentionShape {
    /// The score scale, 1/sqrt(HD), as the kernel uses it (the CPU reference shares it).
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// What differs between the attention layers of one model (gemma3: local and global).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionOptions {
    /// Sliding window: a query sees only its last `window` visible keys, itself included
    /// (0: no window).
    pub window: u32,
    /// Score scale (`None`: 1/sqrt(HD), [`AttentionShape::scale`]).
    pub scale: Option<f32>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_head: u32,
    n_kv_head: u32,
    max_ctx: u32,
    mask_words: u32,
    scale: f32,
    window: u32,
    _p: [u32; 2],
}

pub struct Attention {
    pub layout: Layout,
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    shape: AttentionShape,
}

impl Attention {
    /// The kernel for `shape` in the layout suited to `gpu`.
    pub fn new(gpu: &Gpu, shape: &AttentionShape) -> Result<Self> {
        Self::with_layout(gpu, shape, Layout::for_gpu(gpu))
    }

    /// [`Attention::new`] in a layout chosen by the caller (tests run both on one device).
    pub fn with_layout(gpu: &Gpu, shape: &AttentionShape, layout: Layout) -> Result<Self> {
        Self::with_options(gpu, shape, layout, AttentionOptions::default())
    }

    /// [`Attention::with_layout`] with a window and a score scale.
    pub fn with_options(
        gpu: &Gpu,
        shape: &AttentionShape,
        layout: Layout,
        options: AttentionOptions,
    ) -> Result<Self> {
        let s = shape;
        let scale = options.scale.unwrap_or(s.scale());
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::Invalid(format!(
                "attention: score scale {scale} (must be finite and positive)"
            )));
        }
        if s.head_dim == 0 || !s.head_dim.is_multiple_of(4) || s.head_dim > 256 {
            return Err(Error::Unsupported(format!(
                "attention: head_dim {} (must be a multiple of 4, at most 256)",
                s.head_dim
            )));
        }
        if s.n_kv_head == 0 || s.n_head == 0 || !s.n_head.is_multiple_of(s.n_kv_head) {
            return Err(Error::Invalid(format!(
                "attention: {} query heads are not a multiple of {} kv heads",
                s.n_head, s.n_kv_head
            )));
        }
        if s.max_ctx == 0 || s.mask_words == 0 || s.mask_words > 64 {
            return Err(Error::Invalid(format!(
                "attention: max_ctx {}, mask_words {} (1..=64)",
                s.max_ctx, s.mask_words
            )));
        }
        let max_t = 32 * s.mask_words;
        let key = format!(
            "attention:{}:HD={}:MAX_T={max_t}",
            layout.name(),
            s.head_dim
        );
        let src = match layout {
            Layout::Gpu => SRC,
            Layout::Cpu => CPU_SRC,
        };
        let constants = [("HD", s.head_dim as f64), ("MAX_T", max_t as f64)];
        let p = Params {
            n_head: s.n_head,
            n_kv_head: s.n_kv_head,
            max_ctx: s.max_ctx,
            mask_words: s.mask_words,
            scale,
            window: options.window,
            _p: [0; 2],
        };
        Ok(Attention {
            layout,
            pipeline: gpu.pipeline(&key, src, "main", &constants)?,
            params: gpu.uniform("attention params", &p),
            shape: *shape,
        })
    }

    /// `qkv: [max_t, (H + 2*KVH) * HD]`, caches `[KVH, max_ctx, HD]`, `mask: [max_t, MW]` u32,
    /// `out: [max_t, H * HD]`.
    #[allow(clippy::too_many_arguments)] // one per binding, in binding order
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        k_cache: &wgpu::Buffer,
        v_cache: &wgpu::Buffer,
        mask: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<Bound> {
        let s = &self.shape;
        let k = "attention";
        let hd = s.head_dim as u64;
        need_kv_cache(k, k_cache, v_cache, s.n_kv_head, s.max_ctx, s.head_dim)?;
        let max_t = rows_in(
            k,
            "qkv",
            qkv,
            (s.n_head as u64 + 2 * s.n_kv_head as u64) * hd,
        )?
        .min(rows_in(k, "mask", mask, s.mask_words as u64)?)
        .min(rows_in(k, "out", out, s.n_head as u64 * hd)?)
        .min(32 * s.mask_words);
        let group = gpu.bind(
            k,
            &self.pipeline,
            &[step, &self.params, qkv, k_cache, v_cache, mask, out],
        );
        Ok(Bound { group, max_t })
    }

    /// One workgroup per (head, query token), or per 8 heads of a query token in the cpu
    /// layout. The caller keeps `n_past + t <= max_ctx`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("attention", t, bound)?;
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bound.group, &[]);
        let heads = match self.layout {
            Layout::Gpu => self.shape.n_head,
            Layout::Cpu => self.shape.n_head.div_ceil(CPU_HEADS),
        };
        pass.dispatch_workgroups(heads, t, 1);
        Ok(())
    }
}
