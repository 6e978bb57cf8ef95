//! Greedy pick per row: `out[r] = argmax_i x[r, i]` for `x: [R, V]` f32, `out: [R]` u32.
//! Ties go to the lowest index; NaN never wins (an all-NaN row gives 0). R comes from `step.t`.

use std::sync::Arc;

use super::{check_t, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/argmax.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    v: u32,
    _p: [u32; 3],
}

pub struct Argmax {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    v: u32,
}

impl Argmax {
    pub fn new(gpu: &Gpu, v: u32) -> Result<Self> {
        if v == 0 {
            return Err(Error::Invalid("argmax: V = 0".into()));
        }
        Ok(Argmax {
            pipeline: gpu.pipeline("argmax", SRC, "main", &[])?,
            params: gpu.uniform("argmax params", &Params { v, _p: [0; 3] }),
            v,
        })
    }

    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<Bound> {
        let max_t =
            rows_in("argmax", "x", x, self.v as u64)?.min(rows_in("argmax", "out", out, 1)?);
        let group = gpu.bind("argmax", &self.pipeline, &[step, &self.params, x, out]);
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, rows: u32) -> Result<()> {
        check_t("argmax", rows, bound)?;
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bound.group, &[]);
        pass.dispatch_workgroups(rows, 1, 1);
        Ok(())
    }
}
