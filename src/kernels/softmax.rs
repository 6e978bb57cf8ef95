//! Softmax with temperature over the rows of `x: [R, V]` into `y: [R, V]` (for sampling;
//! greedy decoding uses [`super::argmax`]). R comes from `step.t`.

use std::sync::Arc;

use super::{check_t, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/softmax.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    v: u32,
    inv_temp: f32,
    _p: [u32; 2],
}

pub struct Softmax {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    v: u32,
}

fn params(v: u32, temperature: f32) -> Result<Params> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::Invalid(format!(
            "softmax: temperature must be positive and finite, got {temperature} (use argmax for greedy)"
        )));
    }
    Ok(Params {
        v,
        inv_temp: 1.0 / temperature,
        _p: [0; 2],
    })
}

impl Softmax {
    /// `v`: row length (vocabulary size).
    pub fn new(gpu: &Gpu, v: u32, temperature: f32) -> Result<Self> {
        if v == 0 {
            return Err(Error::Invalid("softmax: V = 0".into()));
        }
        let p = params(v, temperature)?;
        Ok(Softmax {
            pipeline: gpu.pipeline("softmax", SRC, "main", &[])?,
            params: gpu.uniform("softmax params", &p),
            v,
        })
    }

    /// Changes the temperature for dispatches submitted after this call (a queue write).
    pub fn set_temperature(&self, gpu: &Gpu, temperature: f32) -> Result<()> {
        let p = params(self.v, temperature)?;
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
        Ok(())
    }

    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<Bound> {
        let v = self.v as u64;
        let max_t = rows_in("softmax", "x", x, v)?.min(rows_in("softmax", "y", y, v)?);
        let group = gpu.bind("softmax", &self.pipeline, &[step, &self.params, x, y]);
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, rows: u32) -> Result<()> {
        check_t("softmax", rows, bound)?;
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bound.group, &[]);
        pass.dispatch_workgroups(rows, 1, 1);
        Ok(())
    }
}
