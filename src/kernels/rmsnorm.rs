//! RMSNorm over the rows of `x: [T, D]` with weight `w: [D]` into `y: [T, D]`.

use std::sync::Arc;

use super::{check_t, need, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/rmsnorm.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    d: u32,
    eps: f32,
    _p: [u32; 2],
}

pub struct RmsNorm {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    d: u32,
}

impl RmsNorm {
    pub fn new(gpu: &Gpu, d: u32, eps: f32) -> Result<Self> {
        if d == 0 || eps.is_nan() || eps < 0.0 {
            return Err(Error::Invalid(format!("rmsnorm: D = {d}, eps = {eps}")));
        }
        Ok(RmsNorm {
            pipeline: gpu.pipeline("rmsnorm", SRC, "main", &[])?,
            params: gpu.uniform("rmsnorm params", &Params { d, eps, _p: [0; 2] }),
            d,
        })
    }

    /// `step`: the shared [`super::Step`] uniform; `x`, `y`: `[max_t, D]`; `w`: `[D]`.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<Bound> {
        let d = self.d as u64;
        need("rmsnorm", "w", w, d)?;
        let max_t = rows_in("rmsnorm", "x", x, d)?.min(rows_in("rmsnorm", "y", y, d)?);
        let group = gpu.bind("rmsnorm", &self.pipeline, &[step, &self.params, x, w, y]);
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("rmsnorm", t, bound)?;
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bound.group, &[]);
        pass.dispatch_workgroups(t, 1, 1);
        Ok(())
    }
}
