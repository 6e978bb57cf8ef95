//! Logit mask for constrained decoding: `logits[T, V]` keeps the tokens whose bit is set in
//! `mask[T, ceil(V / 32)]` and sets the others to the lowest f32, before argmax, sampling
//! and verification read them (`shaders/logit_mask.wgsl`).

use std::sync::Arc;

use super::{check_t, dispatch_linear, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/logit_mask.wgsl");
const WG: u32 = 256;

/// The value a masked logit gets (the lowest finite f32).
pub const MASKED: f32 = f32::MIN;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    v: u32,
    words: u32,
    _p: [u32; 2],
}

pub struct LogitMask {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    v: u32,
}

/// u32 words of one row's mask over `v` tokens.
pub fn mask_words(v: usize) -> usize {
    v.div_ceil(32)
}

impl LogitMask {
    /// `v`: the logits row's length (tokens scored).
    pub fn new(gpu: &Gpu, v: u32) -> Result<Self> {
        if v == 0 {
            return Err(Error::Invalid("logit_mask: V = 0".into()));
        }
        let words = mask_words(v as usize) as u32;
        Ok(LogitMask {
            pipeline: gpu.pipeline("logit_mask", SRC, "main", &[])?,
            params: gpu.uniform(
                "logit mask params",
                &Params {
                    v,
                    words,
                    _p: [0; 2],
                },
            ),
            v,
        })
    }

    /// `mask`: `[max_t, ceil(V / 32)]` u32; `logits` (read-write): `[max_t, V]` f32.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        mask: &wgpu::Buffer,
        logits: &wgpu::Buffer,
    ) -> Result<Bound> {
        let words = mask_words(self.v as usize) as u64;
        let max_t = rows_in("logit_mask", "mask", mask, words)?.min(rows_in(
            "logit_mask",
            "logits",
            logits,
            self.v as u64,
        )?);
        let group = gpu.bind(
            "logit_mask",
            &self.pipeline,
            &[step, &self.params, mask, logits],
        );
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("logit_mask", t, bound)?;
        dispatch_linear(pass, &self.pipeline, &bound.group, t * self.v, WG);
        Ok(())
    }
}
