//! SwiGLU activation: `out[t, i] = silu(gu[t, i]) * gu[t, F + i]` for `gu: [T, 2F]`
//! (gate and up concatenated by one matmul), `out: [T, F]`.

use std::sync::Arc;

use super::{check_t, dispatch_linear, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/silu_mul.wgsl");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    f: u32,
    _p: [u32; 3],
}

pub struct SiluMul {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    f: u32,
}

impl SiluMul {
    /// `f`: the feed-forward width (columns of `out`; `gu` has `2f`).
    pub fn new(gpu: &Gpu, f: u32) -> Result<Self> {
        if f == 0 {
            return Err(Error::Invalid("silu_mul: F = 0".into()));
        }
        Ok(SiluMul {
            pipeline: gpu.pipeline("silu_mul", &super::with_glu(SRC), "main", &[])?,
            params: gpu.uniform("silu_mul params", &Params { f, _p: [0; 3] }),
            f,
        })
    }

    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        gu: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<Bound> {
        let f = self.f as u64;
        let max_t = rows_in("silu_mul", "gu", gu, 2 * f)?.min(rows_in("silu_mul", "out", out, f)?);
        let group = gpu.bind("silu_mul", &self.pipeline, &[step, &self.params, gu, out]);
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("silu_mul", t, bound)?;
        dispatch_linear(pass, &self.pipeline, &bound.group, t * self.f, WG);
        Ok(())
    }
}
