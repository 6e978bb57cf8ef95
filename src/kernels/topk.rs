//! The K most likely tokens per logits row with their softmax probabilities
//! (`shaders/topk.wgsl`): `x: [R, V]` → `ids: [R, K]` u32, `probs: [R, K]` f32, R = `step.t`.
//! Order: by logit, descending, ties to the lower index; NaN is never chosen.

use std::sync::Arc;

use super::{check_t, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/topk.wgsl");
/// The largest K the shader holds per thread (`KMAX`).
pub const MAX_K: u32 = 8;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    v: u32,
    _p: [u32; 3],
}

pub struct TopK {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    v: u32,
    pub k: u32,
}

impl TopK {
    pub fn new(gpu: &Gpu, v: u32, k: u32) -> Result<Self> {
        if v == 0 || k == 0 || k > MAX_K || k > v {
            return Err(Error::Invalid(format!(
                "top-k: K = {k} of V = {v} (1 ≤ K ≤ {MAX_K}, K ≤ V)"
            )));
        }
        Ok(TopK {
            pipeline: gpu.pipeline(&format!("topk:K={k}"), SRC, "main", &[("K", k as f64)])?,
            params: gpu.uniform("topk params", &Params { v, _p: [0; 3] }),
            v,
            k,
        })
    }

    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        ids: &wgpu::Buffer,
        probs: &wgpu::Buffer,
    ) -> Result<Bound> {
        let k = self.k as u64;
        let max_t = rows_in("topk", "x", x, self.v as u64)?
            .min(rows_in("topk", "ids", ids, k)?)
            .min(rows_in("topk", "probs", probs, k)?);
        let group = gpu.bind("topk", &self.pipeline, &[step, &self.params, x, ids, probs]);
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, rows: u32) -> Result<()> {
        check_t("topk", rows, bound)?;
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bound.group, &[]);
        pass.dispatch_workgroups(rows, 1, 1);
        Ok(())
    }
}
