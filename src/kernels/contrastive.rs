//! Contrastive scores for contrastive decoding (Li et al. 2023; O'Brien & Lewis 2023): the
//! expert's (target's) logits rows become `log p_e − β·log p_a` over the α-plausible set
//! `{v : p_e(v) ≥ α·max p_e}` and the lowest f32 elsewhere, in place, before argmax, sampling
//! and verification read them (`shaders/contrastive.wgsl`; one workgroup per row).

use std::sync::Arc;

use super::{check_t, rows_in, Bound};
use crate::gpu::Gpu;
use crate::{Error, Result};

const SRC: &str = include_str!("../../shaders/contrastive.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    v: u32,
    beta: f32,
    log_alpha: f32,
    _p: u32,
}

/// α (the plausibility cut, a fraction of the expert's top probability) and β (the amateur's
/// weight).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContrastiveParams {
    pub alpha: f32,
    pub beta: f32,
}

impl ContrastiveParams {
    /// α in (0, 1], β ≥ 0 and finite.
    pub fn check(&self) -> Result<()> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(Error::Invalid(format!(
                "contrastive alpha {} must be in (0, 1]",
                self.alpha
            )));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(Error::Invalid(format!(
                "contrastive beta {} must be a finite number >= 0",
                self.beta
            )));
        }
        Ok(())
    }
}

pub struct Contrastive {
    pipeline: Arc<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    v: u32,
}

impl Contrastive {
    /// `v`: the logits row's length (both models score the same tokens).
    pub fn new(gpu: &Gpu, v: u32, p: ContrastiveParams) -> Result<Self> {
        if v == 0 {
            return Err(Error::Invalid("contrastive: V = 0".into()));
        }
        p.check()?;
        let c = Contrastive {
            pipeline: gpu.pipeline("contrastive", SRC, "main", &[])?,
            params: gpu.uniform("contrastive params", &Params::of(v, p)),
            v,
        };
        Ok(c)
    }

    /// Use `p` from the next submit on.
    pub fn set_params(&self, gpu: &Gpu, p: ContrastiveParams) -> Result<()> {
        p.check()?;
        gpu.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&Params::of(self.v, p)));
        Ok(())
    }

    /// `expert` (read-write) and `amateur`: `[max_t, V]` f32 logits.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        expert: &wgpu::Buffer,
        amateur: &wgpu::Buffer,
    ) -> Result<Bound> {
        let v = self.v as u64;
        let max_t = rows_in("contrastive", "expert", expert, v)?.min(rows_in(
            "contrastive",
            "amateur",
            amateur,
            v,
        )?);
        let group = gpu.bind(
            "contrastive",
            &self.pipeline,
            &[step, &self.params, amateur, expert],
        );
        Ok(Bound { group, max_t })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass, bound: &Bound, t: u32) -> Result<()> {
        check_t("contrastive", t, bound)?;
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bound.group, &[]);
        pass.dispatch_workgroups(t, 1, 1);
        Ok(())
    }
}

impl Params {
    fn of(v: u32, p: ContrastiveParams) -> Self {
        Params {
            v,
            beta: p.beta,
            log_alpha: p.alpha.ln(),
            _p: 0,
        }
    }
}

/// The CPU reference of one row, in f64: the scores the kernel writes (`f32::MIN` outside
/// the plausible set).
pub fn reference_row(expert: &[f32], amateur: &[f32], p: ContrastiveParams) -> Vec<f32> {
    let lse = |x: &[f32]| {
        let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        (
            m,
            m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln(),
        )
    };
    let (me, lse_e) = lse(expert);
    let (_, lse_a) = lse(amateur);
    let log_alpha = (p.alpha as f64).ln();
    expert
        .iter()
        .zip(amateur)
        .map(|(&e, &a)| {
            if e as f64 - me >= log_alpha {
                ((e as f64 - lse_e) - p.beta as f64 * (a as f64 - lse_a)) as f32
            } else {
                f32::MIN
            }
        })
        .collect()
}
