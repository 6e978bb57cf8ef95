//! Sampling on the GPU: `ids[r, j]` drawn from row `r` of `logits: [R, V]` after temperature,
//! top-k and top-p, optionally with the final distribution `probs: [R, V]` (what speculative
//! sampling compares). Exact semantics, the random stream and the fixed CDF order:
//! `shaders/sample.wgsl`. R comes from `step.t`.
//!
//! Every [`Sampler::encode`] records the sampling dispatch and a one-thread dispatch that adds
//! 1 to the GPU-side counter, so successive samples (even several in one command buffer) use
//! fresh random numbers, and a run is repeatable: [`Sampler::set_params`] resets the counter.

use std::sync::Arc;

use super::{bind_at, check_t, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/sample.wgsl");

/// The random stream tag of `sample.wgsl` (verify.wgsl has its own).
pub const DOMAIN: u32 = 0x5341_4d50;
/// Binding of the `rng` buffer in `sample.wgsl`.
const RNG_BINDING: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    v: u32,
    top_k: u32,
    top_p: f32,
    inv_temp: f32,
    draws: u32,
    _p: [u32; 3],
}

/// The sampling rule: temperature (> 0), top-k (0 = off), top-p (1.0 = off) and the seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SampleParams {
    fn default() -> Self {
        SampleParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SampleParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "sampling: temperature must be positive and finite, got {} (use argmax for greedy)",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(Error::Invalid(format!(
                "sampling: top_p must be in [0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// A [`Sampler`]'s bind group: with or without the `probs` output.
#[derive(Debug)]
pub struct SampleBound {
    pub bound: Bound,
    with_probs: bool,
}

pub struct Sampler {
    sample: Arc<wgpu::ComputePipeline>,
    sample_probs: Arc<wgpu::ComputePipeline>,
    advance: Arc<wgpu::ComputePipeline>,
    advance_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    rng: wgpu::Buffer,
    v: u32,
    draws: u32,
}

/// The host mirror of the shaders' random numbers: uniform in [0, 1) for (seed, stream
/// `domain`, counter, row, draw). For tests and host-side reference code.
pub fn rng_uniform(seed: u64, domain: u32, counter: u32, row: u32, draw: u32) -> f32 {
    let h = pcg4d(pcg4d([
        seed as u32,
        (seed >> 32) as u32 ^ domain,
        counter,
        (row << 16) | (draw & 0xffff),
    ]));
    (h[0] >> 8) as f32 * (1.0 / 16_777_216.0)
}

fn pcg4d(a: [u32; 4]) -> [u32; 4] {
    let mut v = a.map(|x| x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223));
    let mix = |v: &mut [u32; 4]| {
        v[0] = v[0].wrapping_add(v[1].wrapping_mul(v[3]));
        v[1] = v[1].wrapping_add(v[2].wrapping_mul(v[0]));
        v[2] = v[2].wrapping_add(v[0].wrapping_mul(v[1]));
        v[3] = v[3].wrapping_add(v[1].wrapping_mul(v[2]));
    };
    mix(&mut v);
    v = v.map(|x| x ^ (x >> 16));
    mix(&mut v);
    v
}

/// The order in which the GPU walks a row's CDF: vocabulary indices sorted by
/// `(i mod 256, i div 256)` (each of the 256 threads owns a strided share).
pub fn cdf_order(v: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v).collect();
    idx.sort_by_key(|&i| (i % 256, i / 256));
    idx
}

/// The `rng` buffer's content: `[counter, seed_lo, seed_hi, 0]`.
pub(crate) fn rng_words(seed: u64, counter: u32) -> [u32; 4] {
    [counter, seed as u32, (seed >> 32) as u32, 0]
}

impl Sampler {
    /// One draw per row: `ids: [R] u32`.
    pub fn new(gpu: &Gpu, vocab: u32) -> Result<Self> {
        Self::with_draws(gpu, vocab, 1)
    }

    /// `draws` independent draws per row: `ids: [R, draws] u32` (a drafter that expands a
    /// node into several i.i.d. children). 0 draws: only `probs` is produced.
    pub fn with_draws(gpu: &Gpu, vocab: u32, draws: u32) -> Result<Self> {
        if vocab == 0 {
            return Err(Error::Invalid("sampling: V = 0".into()));
        }
        if draws > 0xffff {
            return Err(Error::Invalid(format!(
                "sampling: {draws} draws per row (at most 65535)"
            )));
        }
        let sample = gpu.pipeline("sample:sample", SRC, "sample", &[])?;
        let sample_probs = gpu.pipeline("sample:sample_probs", SRC, "sample_probs", &[])?;
        let advance = gpu.pipeline("sample:advance", SRC, "advance", &[])?;
        let rng = gpu.upload("sample rng", &rng_words(0, 0))?;
        let advance_group = bind_at(gpu, "sample advance", &advance, &[(RNG_BINDING, &rng)]);
        let s = Sampler {
            sample,
            sample_probs,
            advance,
            advance_group,
            params: gpu.uniform(
                "sample params",
                &Params {
                    v: vocab,
                    top_k: 0,
                    top_p: 1.0,
                    inv_temp: 1.0,
                    draws,
                    _p: [0; 3],
                },
            ),
            rng,
            v: vocab,
            draws,
        };
        Ok(s)
    }

    pub fn vocab(&self) -> u32 {
        self.v
    }

    pub fn draws(&self) -> u32 {
        self.draws
    }

    /// Sets the rule and the seed and resets the counter to 0 (queue writes: they apply to
    /// dispatches submitted after this call).
    pub fn set_params(&self, gpu: &Gpu, p: &SampleParams) -> Result<()> {
        p.validate()?;
        let params = Params {
            v: self.v,
            top_k: if p.top_k >= self.v { 0 } else { p.top_k },
            top_p: p.top_p,
            inv_temp: 1.0 / p.temperature,
            draws: self.draws,
            _p: [0; 3],
        };
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        gpu.queue
            .write_buffer(&self.rng, 0, bytemuck::cast_slice(&rng_words(p.seed, 0)));
        Ok(())
    }

    /// Sets the counter (the number of `encode`s since `set_params`, unless set here).
    pub fn set_counter(&self, gpu: &Gpu, counter: u32) {
        gpu.queue
            .write_buffer(&self.rng, 0, bytemuck::bytes_of(&counter));
    }

    /// `[counter, seed_lo, seed_hi, 0]` u32 (read it back to save a run's position).
    pub fn rng_buffer(&self) -> &wgpu::Buffer {
        &self.rng
    }

    /// `logits: [R, V]` f32, `ids: [R, draws]` u32.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        logits: &wgpu::Buffer,
        ids: &wgpu::Buffer,
    ) -> Result<SampleBound> {
        let max_t = self.rows(logits, ids)?;
        let group = gpu.bind(
            "sample",
            &self.sample,
            &[step, &self.params, logits, ids, &self.rng],
        );
        Ok(SampleBound {
            bound: Bound { group, max_t },
            with_probs: false,
        })
    }

    /// As [`Sampler::bind`], also writing the final distribution to `probs: [R, V]` f32.
    pub fn bind_with_probs(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        logits: &wgpu::Buffer,
        ids: &wgpu::Buffer,
        probs: &wgpu::Buffer,
    ) -> Result<SampleBound> {
        let max_t = self
            .rows(logits, ids)?
            .min(rows_in("sample", "probs", probs, self.v as u64)?);
        let group = gpu.bind(
            "sample probs",
            &self.sample_probs,
            &[step, &self.params, logits, ids, &self.rng, probs],
        );
        Ok(SampleBound {
            bound: Bound { group, max_t },
            with_probs: true,
        })
    }

    fn rows(&self, logits: &wgpu::Buffer, ids: &wgpu::Buffer) -> Result<u32> {
        let rows = rows_in("sample", "logits", logits, self.v as u64)?;
        Ok(if self.draws == 0 {
            rows
        } else {
            rows.min(rows_in("sample", "ids", ids, self.draws as u64)?)
        })
    }

    /// Samples rows `0..rows` (which must equal the step uniform's `t` when it is read), then
    /// advances the counter.
    pub fn encode(
        &self,
        pass: &mut wgpu::ComputePass,
        bound: &SampleBound,
        rows: u32,
    ) -> Result<()> {
        check_t("sample", rows, &bound.bound)?;
        let pipeline = if bound.with_probs {
            &self.sample_probs
        } else {
            &self.sample
        };
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bound.bound.group, &[]);
        pass.dispatch_workgroups(rows, 1, 1);
        pass.set_pipeline(&self.advance);
        pass.set_bind_group(0, &self.advance_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
        Ok(())
    }
}
