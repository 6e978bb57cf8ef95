//! One Rust wrapper per shader family. A wrapper builds its pipeline(s) once in `new`,
//! makes bind groups at load time, and records dispatches into a compute pass; it never
//! allocates GPU objects or reads back on the hot path.
//!
//! Binding convention shared by every kernel whose work depends on the step:
//! `@group(0) @binding(0) var<uniform> step: Step;` — one buffer per forward, written
//! once per step, so nothing else has to be rewritten when T changes.

/// Per-step values every step-dependent kernel reads (WGSL: `struct Step { t: u32,
/// n_past: u32, _p0: u32, _p1: u32 }`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Step {
    /// Tokens in this step (1 for plain decode; tree nodes + 1 for verification; a chunk for prefill).
    pub t: u32,
    /// Tokens already in the KV cache before this step (the prefix length).
    pub n_past: u32,
    pub _p0: u32,
    pub _p1: u32,
}

impl Step {
    pub fn new(t: u32, n_past: u32) -> Self {
        Step {
            t,
            n_past,
            _p0: 0,
            _p1: 0,
        }
    }
}

/// How a kernel with two layouts spreads its work (the small-T matmul, attention). Each
/// layout is batch invariant on its own, and a device always uses the same one, so decoding
/// and verification agree bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The threads of a workgroup share the rows of a matrix or the keys of one query:
    /// neighbouring threads read neighbouring bytes, partial results meet in workgroup
    /// memory. For GPUs.
    Gpu,
    /// One thread owns whole matrix rows or a whole (head, query): no reduction and no
    /// barrier. For CPU adapters (llvmpipe, SwiftShader): they run a workgroup's threads as
    /// the lanes of SIMD registers, pay for each load instruction lane by lane and for each
    /// barrier with a switch per SIMD group, and have few cores to fill.
    Cpu,
}

impl Layout {
    pub const ALL: [Layout; 2] = [Layout::Gpu, Layout::Cpu];

    /// [`Layout::Cpu`] on CPU adapters (on the web: the browser's fallback adapter),
    /// [`Layout::Gpu`] elsewhere.
    pub fn for_gpu(gpu: &crate::gpu::Gpu) -> Layout {
        if gpu.info.device_type == wgpu::DeviceType::Cpu {
            Layout::Cpu
        } else {
            Layout::Gpu
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Gpu => "gpu",
            Layout::Cpu => "cpu",
        }
    }
}

pub mod add;
pub mod argmax;
pub mod attention;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod contrastive;
pub mod dequant;
pub mod embed;
pub mod gelu_mul;
pub mod kv_append;
pub mod kv_compact;
pub mod logit_mask;
pub mod matmul;
pub mod qk_norm;
pub mod reference;
pub mod rmsnorm;
pub mod rope;
pub mod sample;
pub mod silu_mul;
pub mod softmax;
pub mod topk;
pub mod verify;

use crate::{Error, Result};

const GLU_WGSL: &str = include_str!("../../shaders/glu.inc.wgsl");

/// `kernel` with `shaders/glu.inc.wgsl` (the gated activations `silu_mul` and `gelu_mul`, one
/// element each) in front: the separate activation kernels and the matmul's GLU prologue
/// evaluate the same functions.
pub fn with_glu(kernel: &str) -> String {
    format!("{GLU_WGSL}\n{kernel}")
}

/// A kernel's bind group, made at load time, and how many rows (tokens) its per-token
/// buffers hold, so `encode` can refuse a T they cannot take instead of reading garbage.
#[derive(Debug)]
pub struct Bound {
    pub group: wgpu::BindGroup,
    pub max_t: u32,
}

/// A bind group for `pipeline`'s group 0 with each buffer at the binding number given, for
/// entry points whose bindings are not `0, 1, 2, …` (several entries sharing one shader).
pub(crate) fn bind_at(
    gpu: &crate::gpu::Gpu,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[(u32, &wgpu::Buffer)],
) -> wgpu::BindGroup {
    let layout = pipeline.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .map(|&(binding, b)| wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        })
        .collect();
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &layout,
        entries: &entries,
    })
}

/// How many rows of `row_elems` 4-byte elements `buffer` holds; an error if not even one.
pub(crate) fn rows_in(
    kernel: &str,
    what: &str,
    buffer: &wgpu::Buffer,
    row_elems: u64,
) -> Result<u32> {
    let rows = buffer.size() / (row_elems.max(1) * 4);
    if rows == 0 {
        return Err(Error::Invalid(format!(
            "{kernel}: buffer '{what}' has {} bytes, less than one row of {row_elems} elements",
            buffer.size()
        )));
    }
    Ok(rows.min(u32::MAX as u64) as u32)
}

/// An error unless `buffer` holds at least `elems` 4-byte elements.
pub(crate) fn need(kernel: &str, what: &str, buffer: &wgpu::Buffer, elems: u64) -> Result<()> {
    if buffer.size() < elems * 4 {
        return Err(Error::Invalid(format!(
            "{kernel}: buffer '{what}' has {} bytes but needs {} ({elems} elements)",
            buffer.size(),
            elems * 4
        )));
    }
    Ok(())
}

/// An error unless both KV caches hold `[n_kv_head, max_ctx, head_dim]` f32.
pub(crate) fn need_kv_cache(
    kernel: &str,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    n_kv_head: u32,
    max_ctx: u32,
    head_dim: u32,
) -> Result<()> {
    let elems = n_kv_head as u64 * max_ctx as u64 * head_dim as u64;
    need(kernel, "k_cache", k_cache, elems)?;
    need(kernel, "v_cache", v_cache, elems)
}

/// An error unless `1 <= t <= bound.max_t` (and T fits one dispatch dimension, which
/// the kernels with a workgroup per row rely on).
pub(crate) fn check_t(kernel: &str, t: u32, bound: &Bound) -> Result<()> {
    if t == 0 || t > bound.max_t.min(65_535) {
        return Err(Error::Invalid(format!(
            "{kernel}: T = {t} rows, but the bound buffers hold 1..={}",
            bound.max_t.min(65_535)
        )));
    }
    Ok(())
}

/// Records `pipeline` over `n` items at `per_group` items per workgroup (2-D if needed).
pub(crate) fn dispatch_linear(
    pass: &mut wgpu::ComputePass,
    pipeline: &wgpu::ComputePipeline,
    group: &wgpu::BindGroup,
    n: u32,
    per_group: u32,
) {
    let (x, y) = crate::gpu::groups_2d(n, per_group);
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[]);
    pass.dispatch_workgroups(x, y, 1);
}
