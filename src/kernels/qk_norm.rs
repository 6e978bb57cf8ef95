//! Per-head RMSNorm of the q and k heads of `qkv: [T, (H + 2*KVH) * HD]` in place, with one
//! `[HD]` weight for the q heads and one for the k heads (qwen3's `attn_q_norm` /
//! `attn_k_norm`, between the QKV projection and RoPE). Layout and why it is not
//! [`super::rmsnorm::RmsNorm`]: `shaders/qk_norm.wgsl`.

use std::sync::Arc;

use super::{check_t, dispatch_linear, need, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/qk_norm.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    eps: f32,
}

pub struct QkNorm {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    p: Params,
}

impl QkNorm {
    pub fn new(gpu: &Gpu, n_head: u32, n_kv_head: u32, head_dim: u32, eps: f32) -> Result<Self> {
        if n_head == 0 || n_kv_head == 0 || head_dim == 0 || eps.is_nan() || eps < 0.0 {
            return Err(Error::Invalid(format!(
                "qk_norm: heads {n_head}/{n_kv_head}, head_dim {head_dim}, eps {eps}"
            )));
        }
        let p = Params {
            n_head,
            n_kv_head,
            head_dim,
            eps,
        };
        Ok(QkNorm {
            pipeline: gpu.pipeline("qk_norm", SRC, "main", &[])?,
            params: gpu.uniform("qk_norm params", &p),
            p,
        })
    }

    fn qkv_width(&self) -> u64 {
        (self.p.n_head as u64 + 2 * self.p.n_kv_head as u64) * self.p.head_dim as u64
    }

    /// `qkv: [max_t, (H + 2*KVH) * HD]` f32 (normalised in place); `q_w`, `k_w`: `[HD]` f32.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        q_w: &wgpu::Buffer,
        k_w: &wgpu::Buffer,
    ) -> Result<Bound> {
        let hd = self.p.head_dim as u64;
        need("qk_norm", "q_w", q_w, hd)?;
        need("qk_norm", "k_w", k_w, hd)?;
        let max_t = rows_in("qk_norm", "qkv", qkv, self.qkv_width())?;
        let group = gpu.bind(
            "qk_norm",
            &self.pipeline,
            &[step, &self.params, qkv, q_w, k_w],
        );
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("qk_norm", t, bound)?;
        // One workgroup per (token, q or k head).
        let n = t * (self.p.n_head + self.p.n_kv_head);
        dispatch_linear(pass, &self.pipeline, &bound.group, n, 1);
        Ok(())
    }
}
