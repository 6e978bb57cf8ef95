//! Rotary position embedding on the q and k heads of the fused QKV output, in place
//! ([`Rope`]), or fused with the KV-cache append ([`RopeKvAppend`]: roped k and plain v
//! go to cache rows `n_past + t`). Layouts: `shaders/rope.wgsl`.
//!
//! Frequency factors (llama 3.x `rope_freqs.weight`, llama.cpp's `ggml_rope_ext` with
//! `freq_factors`) divide pair i's frequency by `factors[i]`. They are folded into the
//! `inv_freq` table the kernel already reads ([`inv_freq_with_factors`]), so the shader is the
//! same for every model and a model without factors gets the very same table as before.

use std::sync::Arc;

use super::{check_t, dispatch_linear, need_kv_cache, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/rope.wgsl");
const WG: u32 = 64;

/// How RoPE pairs the dimensions of a head (the model config picks one per family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1) rotate together: llama.cpp's GGUF conversion of llama
    /// permutes the Q/K rows so that this "interleaved" form is right for its files.
    Normal,
    /// Halves (i, i + rope_dims/2) rotate together ("rotate_half"): Hugging Face weights of
    /// every family, and qwen2 in GGUF (its Q/K are not permuted).
    Neox,
}

/// The static shape of one model's rotary embedding and attention heads.
#[derive(Clone, Copy, Debug)]
pub struct RopeShape {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    /// Rotated dims per head (even, <= head_dim); the rest pass through.
    pub n_rot: u32,
    /// Frequency base (`rope.freq_base`, e.g. 10000 or 1000000).
    pub theta: f32,
    pub style: RopeStyle,
    /// Rows per kv head in the KV cache (only used when appending).
    pub max_ctx: u32,
}

impl RopeShape {
    fn qkv_width(&self) -> u64 {
        (self.n_head as u64 + 2 * self.n_kv_head as u64) * self.head_dim as u64
    }
}

/// `inv_freq[i] = theta^(-2i / n_rot)` for the `n_rot / 2` pairs, computed in f64 and
/// rounded once. Pair i of position p turns by the f32 product `p as f32 * inv_freq[i]`;
/// the CPU forward must use this same table to agree with the GPU.
pub fn inv_freq(theta: f32, n_rot: u32) -> Vec<f32> {
    (0..n_rot / 2)
        .map(|i| (theta as f64).powf(-2.0 * i as f64 / n_rot as f64) as f32)
        .collect()
}

/// [`inv_freq`] with pair i's frequency divided by `factors[i]` (`None`: [`inv_freq`]
/// itself, bit for bit), computed in f64 and rounded once. `factors` must hold `n_rot / 2`
/// finite positive values.
pub fn inv_freq_with_factors(theta: f32, n_rot: u32, factors: Option<&[f32]>) -> Result<Vec<f32>> {
    let Some(f) = factors else {
        return Ok(inv_freq(theta, n_rot));
    };
    if f.len() != (n_rot / 2) as usize {
        return Err(Error::Invalid(format!(
            "rope: {} frequency factors for {} rotary pairs",
            f.len(),
            n_rot / 2
        )));
    }
    if let Some(bad) = f.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(Error::Invalid(format!(
            "rope: frequency factor {bad} (must be finite and positive)"
        )));
    }
    Ok((0..n_rot / 2)
        .map(|i| {
            ((theta as f64).powf(-2.0 * i as f64 / n_rot as f64) / f[i as usize] as f64) as f32
        })
        .collect())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    max_ctx: u32,
    _p: [u32; 2],
}

/// The pipeline-independent part both wrappers share: params and the frequency table.
struct Common {
    shape: RopeShape,
    params: wgpu::Buffer,
    inv_freq: wgpu::Buffer,
}

impl Common {
    fn new(gpu: &Gpu, shape: &RopeShape, factors: Option<&[f32]>) -> Result<Self> {
        let s = shape;
        if s.n_head == 0 || s.n_kv_head == 0 || s.head_dim == 0 || !s.head_dim.is_multiple_of(2) {
            return Err(Error::Invalid(format!(
                "rope: heads {}/{} with head_dim {} (must be non-zero and even)",
                s.n_head, s.n_kv_head, s.head_dim
            )));
        }
        if s.n_rot == 0 || !s.n_rot.is_multiple_of(2) || s.n_rot > s.head_dim {
            return Err(Error::Invalid(format!(
                "rope: n_rot = {} must be even and in 2..={}",
                s.n_rot, s.head_dim
            )));
        }
        if !(s.theta > 0.0 && s.theta.is_finite()) {
            return Err(Error::Invalid(format!("rope: theta = {}", s.theta)));
        }
        let p = Params {
            n_head: s.n_head,
            n_kv_head: s.n_kv_head,
            head_dim: s.head_dim,
            n_rot: s.n_rot,
            neox: (s.style == RopeStyle::Neox) as u32,
            max_ctx: s.max_ctx,
            _p: [0; 2],
        };
        Ok(Common {
            shape: *shape,
            params: gpu.uniform("rope params", &p),
            inv_freq: gpu.upload(
                "rope inv_freq",
                &inv_freq_with_factors(s.theta, s.n_rot, factors)?,
            )?,
        })
    }
}

/// RoPE in place on the q and k heads of `qkv: [T, (H + 2*KVH) * HD]`.
pub struct Rope {
    pipeline: Arc<wgpu::ComputePipeline>,
    common: Common,
}

impl Rope {
    pub fn new(gpu: &Gpu, shape: &RopeShape) -> Result<Self> {
        Self::with_freq_factors(gpu, shape, None)
    }

    /// [`Rope::new`] with pair i's frequency divided by `factors[i]` (`n_rot / 2` values).
    pub fn with_freq_factors(
        gpu: &Gpu,
        shape: &RopeShape,
        factors: Option<&[f32]>,
    ) -> Result<Self> {
        Ok(Rope {
            pipeline: gpu.pipeline("rope:rope", SRC, "rope", &[])?,
            common: Common::new(gpu, shape, factors)?,
        })
    }

    /// `pos: [max_t] u32`, `qkv: [max_t, (H + 2*KVH) * HD]` f32.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        pos: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
    ) -> Result<Bound> {
        let c = &self.common;
        let max_t =
            rows_in("rope", "pos", pos, 1)?.min(rows_in("rope", "qkv", qkv, c.shape.qkv_width())?);
        let group = gpu.bind(
            "rope",
            &self.pipeline,
            &[step, &c.params, pos, &c.inv_freq, qkv],
        );
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("rope", t, bound)?;
        let s = &self.common.shape;
        let n = t * (s.n_head + s.n_kv_head) * (s.head_dim / 2);
        dispatch_linear(pass, &self.pipeline, &bound.group, n, WG);
        Ok(())
    }
}

/// RoPE on q and k in place plus the append of k and v to cache rows `n_past + t`
/// (`k_cache, v_cache: [KVH, max_ctx, HD]`). Rows past `max_ctx` are dropped: the forward
/// checks the context length before it records a step.
pub struct RopeKvAppend {
    pipeline: Arc<wgpu::ComputePipeline>,
    common: Common,
}

impl RopeKvAppend {
    pub fn new(gpu: &Gpu, shape: &RopeShape) -> Result<Self> {
        Self::with_freq_factors(gpu, shape, None)
    }

    /// [`RopeKvAppend::new`] with pair i's frequency divided by `factors[i]` (`n_rot / 2`
    /// values).
    pub fn with_freq_factors(
        gpu: &Gpu,
        shape: &RopeShape,
        factors: Option<&[f32]>,
    ) -> Result<Self> {
        if shape.max_ctx == 0 {
            return Err(Error::Invalid("rope_kv_append: max_ctx = 0".into()));
        }
        Ok(RopeKvAppend {
            pipeline: gpu.pipeline("rope:rope_kv_append", SRC, "rope_kv_append", &[])?,
            common: Common::new(gpu, shape, factors)?,
        })
    }

    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        pos: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        k_cache: &wgpu::Buffer,
        v_cache: &wgpu::Buffer,
    ) -> Result<Bound> {
        let c = &self.common;
        let s = &c.shape;
        let k = "rope_kv_append";
        need_kv_cache(k, k_cache, v_cache, s.n_kv_head, s.max_ctx, s.head_dim)?;
        let max_t = rows_in(k, "pos", pos, 1)?.min(rows_in(k, "qkv", qkv, s.qkv_width())?);
        let group = gpu.bind(
            k,
            &self.pipeline,
            &[step, &c.params, pos, &c.inv_freq, qkv, k_cache, v_cache],
        );
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("rope_kv_append", t, bound)?;
        let s = &self.common.shape;
        let n = t * (s.n_head + 2 * s.n_kv_head) * (s.head_dim / 2);
        dispatch_linear(pass, &self.pipeline, &bound.group, n, WG);
        Ok(())
    }
}
