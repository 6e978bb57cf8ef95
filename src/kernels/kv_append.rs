//! Copy the k and v heads of `qkv: [T, (H + 2*KVH) * HD]` to KV-cache rows `n_past + t`
//! (`k_cache, v_cache: [KVH, max_ctx, HD]`), without RoPE (see [`super::rope::RopeKvAppend`]
//! for the fused version). Rows past `max_ctx` are dropped.

use std::sync::Arc;

use super::{check_t, dispatch_linear, need_kv_cache, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/kv_append.wgsl");
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    max_ctx: u32,
}

pub struct KvAppend {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    p: Params,
}

impl KvAppend {
    pub fn new(
        gpu: &Gpu,
        n_head: u32,
        n_kv_head: u32,
        head_dim: u32,
        max_ctx: u32,
    ) -> Result<Self> {
        if n_head == 0 || n_kv_head == 0 || head_dim == 0 || max_ctx == 0 {
            return Err(Error::Invalid(format!(
                "kv_append: heads {n_head}/{n_kv_head}, head_dim {head_dim}, max_ctx {max_ctx}"
            )));
        }
        let p = Params {
            n_head,
            n_kv_head,
            head_dim,
            max_ctx,
        };
        Ok(KvAppend {
            pipeline: gpu.pipeline("kv_append", SRC, "main", &[])?,
            params: gpu.uniform("kv_append params", &p),
            p,
        })
    }

    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        k_cache: &wgpu::Buffer,
        v_cache: &wgpu::Buffer,
    ) -> Result<Bound> {
        let p = &self.p;
        need_kv_cache(
            "kv_append",
            k_cache,
            v_cache,
            p.n_kv_head,
            p.max_ctx,
            p.head_dim,
        )?;
        let width = (p.n_head as u64 + 2 * p.n_kv_head as u64) * p.head_dim as u64;
        let max_t = rows_in("kv_append", "qkv", qkv, width)?;
        let group = gpu.bind(
            "kv_append",
            &self.pipeline,
            &[step, &self.params, qkv, k_cache, v_cache],
        );
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("kv_append", t, bound)?;
        let n = t * self.p.n_kv_head * self.p.head_dim;
        dispatch_linear(pass, &self.pipeline, &bound.group, n, WG);
        Ok(())
    }
}
