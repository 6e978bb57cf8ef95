//! Residual add in place: `y[T, D] += x[T, D]`.

use std::sync::Arc;

use super::{check_t, dispatch_linear, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/add.wgsl");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    d: u32,
    _p: [u32; 3],
}

pub struct Add {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    d: u32,
}

impl Add {
    /// `d`: the row width (elements per token).
    pub fn new(gpu: &Gpu, d: u32) -> Result<Self> {
        if d == 0 {
            return Err(Error::Invalid("add: D = 0".into()));
        }
        Ok(Add {
            pipeline: gpu.pipeline("add", SRC, "main", &[])?,
            params: gpu.uniform("add params", &Params { d, _p: [0; 3] }),
            d,
        })
    }

    /// `y` (read-write) and `x`: `[max_t, D]`.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        y: &wgpu::Buffer,
        x: &wgpu::Buffer,
    ) -> Result<Bound> {
        let d = self.d as u64;
        let max_t = rows_in("add", "x", x, d)?.min(rows_in("add", "y", y, d)?);
        let group = gpu.bind("add", &self.pipeline, &[step, &self.params, x, y]);
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("add", t, bound)?;
        dispatch_linear(pass, &self.pipeline, &bound.group, t * self.d, WG);
        Ok(())
    }
}
