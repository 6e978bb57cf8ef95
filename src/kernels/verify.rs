//! Tree verification on the GPU: greedy (against the target's argmax per row) or lossless
//! speculative sampling (against the target's and the drafter's distributions). Writes the
//! accepted rows to `keep`/`n_keep` — exactly the buffers [`super::kv_compact::KvCompact`]
//! binds, so compaction follows in the same submit — and `result = [n, bonus, emitted…]`,
//! the step's only readback. Semantics and layouts: `shaders/verify.wgsl`.
//!
//! Sampling mode's random numbers come from a GPU-side counter that each
//! [`Verifier::encode`] advances, seeded by [`Verifier::set_seed`].

use std::sync::Arc;

use super::sample::rng_words;
use super::{bind_at, rows_in};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/verify.wgsl");

/// The random stream tag of `verify.wgsl`.
pub const DOMAIN: u32 = 0x5645_5246;
/// The draw index of the bonus token's random number (children use 0, 1, … per parent row).
pub const BONUS_DRAW: u32 = 0xffff;
const RNG_BINDING: u32 = 9;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    v: u32,
    max_t: u32,
    onehot: u32,
    _p: u32,
}

/// The buffers both modes bind. Sizes: `tokens`, `parents`: `[>= T]` u32; `keep`:
/// `[trials, max_t]` u32; `n_keep`: `[trials]` u32; `result`: `[trials, 2 + max_t]` u32.
pub struct VerifyBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub tokens: &'a wgpu::Buffer,
    pub parents: &'a wgpu::Buffer,
    pub keep: &'a wgpu::Buffer,
    pub n_keep: &'a wgpu::Buffer,
    pub result: &'a wgpu::Buffer,
}

/// Where the draft distributions come from in sampling mode.
pub enum Draft<'a> {
    /// `[T, V]` f32: row r holds the distribution r's children were drawn from (i.i.d.).
    Probs(&'a wgpu::Buffer),
    /// Deterministic proposals (prompt lookup, …): each child's q is a point mass on its token.
    OneHot,
}

#[derive(Debug)]
pub struct VerifyBound {
    group: wgpu::BindGroup,
    sampling: bool,
    /// Most rows T the bound buffers hold (≤ the verifier's max_t).
    pub max_t: u32,
    /// Most independent trials the bound output (and scratch) buffers hold.
    pub max_trials: u32,
    _params: wgpu::Buffer,
}

pub struct Verifier {
    greedy: Arc<wgpu::ComputePipeline>,
    sample: Arc<wgpu::ComputePipeline>,
    advance: Arc<wgpu::ComputePipeline>,
    advance_group: wgpu::BindGroup,
    rng: wgpu::Buffer,
    scratch: wgpu::Buffer,
    dummy: wgpu::Buffer,
    v: u32,
    max_t: u32,
}

impl Verifier {
    /// `vocab`: V of the probability rows; `max_t`: the most batch rows (tree nodes + 1).
    pub fn new(gpu: &Gpu, vocab: u32, max_t: u32) -> Result<Self> {
        if vocab == 0 || max_t == 0 || max_t > 0xffff {
            return Err(Error::Invalid(format!(
                "verify: V = {vocab}, max_t = {max_t} (need V >= 1, 1 <= max_t <= 65535)"
            )));
        }
        let greedy = gpu.pipeline("verify:greedy", SRC, "greedy", &[])?;
        let sample = gpu.pipeline("verify:sample", SRC, "sample", &[])?;
        let advance = gpu.pipeline("verify:advance", SRC, "advance", &[])?;
        let rng = gpu.upload("verify rng", &rng_words(0, 0))?;
        let advance_group = bind_at(gpu, "verify advance", &advance, &[(RNG_BINDING, &rng)]);
        Ok(Verifier {
            greedy,
            sample,
            advance,
            advance_group,
            rng,
            scratch: gpu.storage("verify scratch", vocab as u64 * 4)?,
            dummy: gpu.storage("verify no draft", 4)?,
            v: vocab,
            max_t,
        })
    }

    pub fn max_t(&self) -> u32 {
        self.max_t
    }

    /// Seeds sampling mode and resets its counter to 0 (a queue write).
    pub fn set_seed(&self, gpu: &Gpu, seed: u64) {
        gpu.queue
            .write_buffer(&self.rng, 0, bytemuck::cast_slice(&rng_words(seed, 0)));
    }

    /// Sets the counter (advanced by the trials of each `encode` since `set_seed`).
    pub fn set_counter(&self, gpu: &Gpu, counter: u32) {
        gpu.queue
            .write_buffer(&self.rng, 0, bytemuck::bytes_of(&counter));
    }

    /// `[counter, seed_lo, seed_hi, 0]` u32.
    pub fn rng_buffer(&self) -> &wgpu::Buffer {
        &self.rng
    }

    fn common(&self, b: &VerifyBuffers, extra_trials: u32) -> Result<(u32, u32)> {
        let rows = rows_in("verify", "tokens", b.tokens, 1)?
            .min(rows_in("verify", "parents", b.parents, 1)?)
            .min(self.max_t);
        let trials = rows_in("verify", "keep", b.keep, self.max_t as u64)?
            .min(rows_in("verify", "n_keep", b.n_keep, 1)?)
            .min(rows_in(
                "verify",
                "result",
                b.result,
                2 + self.max_t as u64,
            )?)
            .min(extra_trials);
        Ok((rows, trials))
    }

    fn params(&self, gpu: &Gpu, onehot: bool) -> wgpu::Buffer {
        gpu.uniform(
            "verify params",
            &Params {
                v: self.v,
                max_t: self.max_t,
                onehot: onehot as u32,
                _p: 0,
            },
        )
    }

    /// Greedy mode: `target_argmax: [>= T]` u32.
    pub fn bind_greedy(
        &self,
        gpu: &Gpu,
        b: &VerifyBuffers,
        target_argmax: &wgpu::Buffer,
    ) -> Result<VerifyBound> {
        let (rows, trials) = self.common(b, u32::MAX)?;
        let max_t = rows.min(rows_in("verify", "target_argmax", target_argmax, 1)?);
        let params = self.params(gpu, false);
        let group = gpu.bind(
            "verify greedy",
            &self.greedy,
            &[
                b.step,
                &params,
                b.tokens,
                b.parents,
                b.keep,
                b.n_keep,
                b.result,
                target_argmax,
            ],
        );
        Ok(VerifyBound {
            group,
            sampling: false,
            max_t,
            max_trials: trials,
            _params: params,
        })
    }

    /// Sampling mode: `target_probs: [>= T, V]` f32 (e.g. [`super::sample::Sampler`]'s probs
    /// output under the generation's temperature/top-k/top-p), the draft distributions, and
    /// `scratch: [trials, V]` f32 (None: the verifier's own, one trial).
    pub fn bind_sampling(
        &self,
        gpu: &Gpu,
        b: &VerifyBuffers,
        target_probs: &wgpu::Buffer,
        draft: Draft,
        scratch: Option<&wgpu::Buffer>,
    ) -> Result<VerifyBound> {
        let v = self.v as u64;
        let scratch = scratch.unwrap_or(&self.scratch);
        let (rows, trials) = self.common(b, rows_in("verify", "scratch", scratch, v)?)?;
        let mut max_t = rows.min(rows_in("verify", "target_probs", target_probs, v)?);
        let (draft_buf, onehot) = match draft {
            Draft::Probs(q) => {
                max_t = max_t.min(rows_in("verify", "draft_probs", q, v)?);
                (q, false)
            }
            Draft::OneHot => (&self.dummy, true),
        };
        let params = self.params(gpu, onehot);
        let group = bind_at(
            gpu,
            "verify sampling",
            &self.sample,
            &[
                (0, b.step),
                (1, &params),
                (2, b.tokens),
                (3, b.parents),
                (4, b.keep),
                (5, b.n_keep),
                (6, b.result),
                (8, target_probs),
                (RNG_BINDING, &self.rng),
                (10, scratch),
                (11, draft_buf),
            ],
        );
        Ok(VerifyBound {
            group,
            sampling: true,
            max_t,
            max_trials: trials,
            _params: params,
        })
    }

    /// Verifies a batch of `t` rows (must equal the step uniform's `t` when it runs).
    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &VerifyBound, t: u32) -> Result<()> {
        self.encode_trials(pass, bound, t, 1)
    }

    /// `trials` independent verifications of the same tree (trial k uses counter + k and
    /// writes its own slot of keep/n_keep/result/scratch); the counter then advances by
    /// `trials`. Greedy trials are all equal.
    pub fn encode_trials(
        &self,
        pass: &mut wgpu::ComputePass,
        bound: &VerifyBound,
        t: u32,
        trials: u32,
    ) -> Result<()> {
        if t == 0 || t > bound.max_t {
            return Err(Error::Invalid(format!(
                "verify: T = {t} rows, but the bound buffers hold 1..={}",
                bound.max_t
            )));
        }
        if trials == 0 || trials > bound.max_trials.min(65_535) {
            return Err(Error::Invalid(format!(
                "verify: {trials} trials, but the bound buffers hold 1..={}",
                bound.max_trials.min(65_535)
            )));
        }
        let pipeline = if bound.sampling {
            &self.sample
        } else {
            &self.greedy
        };
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bound.group, &[]);
        pass.dispatch_workgroups(trials, 1, 1);
        if bound.sampling {
            pass.set_pipeline(&self.advance);
            pass.set_bind_group(0, &self.advance_group, &[]);
            pass.dispatch_workgroups(trials, 1, 1);
        }
        Ok(())
    }
}
