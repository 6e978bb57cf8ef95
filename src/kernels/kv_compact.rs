//! After verification: keep the accepted path of the tree in a layer's KV cache. Row
//! `n_past + keep[j]` moves to `n_past + j` for `j < n`, rows `n_past + n .. n_past + T` are
//! zeroed (`step` is the verified step's). `keep` and `n` live on the GPU, written by the
//! verifier, so compaction follows verification in the same submit. Why it is race-free:
//! `shaders/kv_compact.wgsl`.

use std::sync::Arc;

use super::{need, need_kv_cache, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/kv_compact.wgsl");
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_kv_head: u32,
    head_dim: u32,
    max_ctx: u32,
    _p: u32,
}

pub struct KvCompact {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    p: Params,
}

impl KvCompact {
    pub fn new(gpu: &Gpu, n_kv_head: u32, head_dim: u32, max_ctx: u32) -> Result<Self> {
        if n_kv_head == 0 || head_dim == 0 || max_ctx == 0 {
            return Err(Error::Invalid(format!(
                "kv_compact: n_kv_head {n_kv_head}, head_dim {head_dim}, max_ctx {max_ctx}"
            )));
        }
        let p = Params {
            n_kv_head,
            head_dim,
            max_ctx,
            _p: 0,
        };
        Ok(KvCompact {
            pipeline: gpu.pipeline("kv_compact", SRC, "main", &[])?,
            params: gpu.uniform("kv_compact params", &p),
            p,
        })
    }

    /// `keep: [>= n] u32` (accepted node indices, strictly increasing, `keep[0] = 0`),
    /// `n_keep: [1] u32` (n), caches `[KVH, max_ctx, HD]` f32. `max_t` of the result is the
    /// number of `keep` entries the buffer holds.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        keep: &wgpu::Buffer,
        n_keep: &wgpu::Buffer,
        k_cache: &wgpu::Buffer,
        v_cache: &wgpu::Buffer,
    ) -> Result<Bound> {
        let p = &self.p;
        need_kv_cache(
            "kv_compact",
            k_cache,
            v_cache,
            p.n_kv_head,
            p.max_ctx,
            p.head_dim,
        )?;
        need("kv_compact", "n_keep", n_keep, 1)?;
        let max_t = super::rows_in("kv_compact", "keep", keep, 1)?;
        let group = gpu.bind(
            "kv_compact",
            &self.pipeline,
            &[step, &self.params, keep, n_keep, k_cache, v_cache],
        );
        Ok(Bound { group, max_t })
    }

    /// The step's T and n_past come from the `step` uniform; nothing here depends on them.
    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bound.group, &[]);
        pass.dispatch_workgroups((self.p.n_kv_head * self.p.head_dim).div_ceil(WG), 1, 1);
    }
}
