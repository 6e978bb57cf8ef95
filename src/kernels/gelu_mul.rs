//! GeGLU activation (gemma3): `out[t, i] = gelu_tanh(gu[t, i]) * gu[t, F + i]` for `gu: [T, 2F]`
//! (gate and up concatenated by one matmul), `out: [T, F]`. The layout and API of
//! [`super::silu_mul::SiluMul`], so the forward binds one or the other; the formula and the
//! clamp are in `shaders/glu.inc.wgsl`.

use std::sync::Arc;

use super::{check_t, dispatch_linear, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/gelu_mul.wgsl");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    f: u32,
    _p: [u32; 3],
}

pub struct GeluMul {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    f: u32,
}

impl GeluMul {
    /// `f`: the feed-forward width (columns of `out`; `gu` has `2f`).
    pub fn new(gpu: &Gpu, f: u32) -> Result<Self> {
        if f == 0 {
            return Err(Error::Invalid("gelu_mul: F = 0".into()));
        }
        Ok(GeluMul {
            pipeline: gpu.pipeline("gelu_mul", &super::with_glu(SRC), "main", &[])?,
            params: gpu.uniform("gelu_mul params", &Params { f, _p: [0; 3] }),
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
        let max_t = rows_in("gelu_mul", "gu", gu, 2 * f)?.min(rows_in("gelu_mul", "out", out, f)?);
        let group = gpu.bind("gelu_mul", &self.pipeline, &[step, &self.params, gu, out]);
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("gelu_mul", t, bound)?;
        dispatch_linear(pass, &self.pipeline, &bound.group, t * self.f, WG);
        Ok(())
    }
}
