//! Embedding gather `out[t, :] = dequant(W[ids[t], :])` (`shaders/embed.q.wgsl`) for every
//! weight type the matmul kernels take, over tables split by rows like [`QuantMatrix`].
//! [`Embedding::bind_scaled`] multiplies each gathered value by a constant (gemma3's √dim,
//! applied in f32 after the dequantization, as llama.cpp's `ggml_scale` does).

use std::sync::Arc;

use crate::gpu::{groups_2d, Gpu};
use crate::kernels::dequant::QuantMatrix;
use crate::quant::GgmlType;
use crate::{Error, Result};

const EMBED_WGSL: &str = include_str!("../../shaders/embed.q.wgsl");

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    k: u32,
    n: u32,
    row0: u32,
    row_bytes: u32,
    first_part: u32,
    scale: f32,
    _p1: u32,
}

/// The gather pipeline for one table type.
pub struct Embedding {
    pub ty: GgmlType,
    pipeline: Arc<wgpu::ComputePipeline>,
}

/// Bind groups (one per table part) for a table, the ids and the output.
pub struct EmbedBinding {
    ty: GgmlType,
    k: u32,
    groups: Vec<wgpu::BindGroup>,
    /// Largest T the bound ids and output buffers hold.
    pub max_t: u32,
    _params: Vec<wgpu::Buffer>,
}

impl EmbedBinding {
    /// Dispatches [`Embedding::encode`] records for this binding (one per table part).
    pub fn dispatches(&self) -> usize {
        self.groups.len()
    }
}

impl Embedding {
    pub fn new(gpu: &Gpu, ty: GgmlType) -> Result<Embedding> {
        let pipeline = gpu.pipeline(
            &format!("embed-{}", ty.name()),
            &super::dequant::shader_source(ty, EMBED_WGSL)?,
            "main",
            &[],
        )?;
        Ok(Embedding { ty, pipeline })
    }

    /// Bind `table: [n, k]` with `ids: [T] u32` and `out: [T, k] f32` (done at load time).
    /// Ids outside the table give zero rows.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        table: &QuantMatrix,
        ids: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<EmbedBinding> {
        self.bind_scaled(gpu, step, table, ids, out, 1.0)
    }

    /// [`Embedding::bind`] with every gathered value multiplied by `scale` (finite).
    pub fn bind_scaled(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        table: &QuantMatrix,
        ids: &wgpu::Buffer,
        out: &wgpu::Buffer,
        scale: f32,
    ) -> Result<EmbedBinding> {
        let label = &table.label;
        if !scale.is_finite() {
            return Err(Error::Invalid(format!(
                "embedding '{label}': scale {scale} is not finite"
            )));
        }
        if table.ty != self.ty {
            return Err(Error::Invalid(format!(
                "table '{label}' is {} but this gather was built for {}",
                table.ty.name(),
                self.ty.name()
            )));
        }
        let max_t = (ids.size() / 4).min(out.size() / (table.k as u64 * 4));
        if max_t == 0 {
            return Err(Error::Invalid(format!(
                "embedding '{label}': ids ({} bytes) or out ({} bytes) holds no token",
                ids.size(),
                out.size()
            )));
        }
        let mut groups = Vec::new();
        let mut params = Vec::new();
        for (i, part) in table.parts.iter().enumerate() {
            let p = gpu.uniform(
                &format!("{label} embed params"),
                &Params {
                    rows: part.rows as u32,
                    k: table.k as u32,
                    n: table.n as u32,
                    row0: part.row0 as u32,
                    row_bytes: table.row_bytes as u32,
                    first_part: (i == 0) as u32,
                    scale,
                    _p1: 0,
                },
            );
            groups.push(gpu.bind(label, &self.pipeline, &[step, &p, &part.buffer, ids, out]));
            params.push(p);
        }
        Ok(EmbedBinding {
            ty: table.ty,
            k: table.k as u32,
            groups,
            max_t: max_t.min(u32::MAX as u64) as u32,
            _params: params,
        })
    }

    /// Record the gather for T = `t` tokens (which must equal `step.t` when the pass runs).
    pub fn encode(&self, pass: &mut wgpu::ComputePass, b: &EmbedBinding, t: u32) -> Result<()> {
        if b.ty != self.ty {
            return Err(Error::Invalid(format!(
                "a {} binding encoded with the {} gather",
                b.ty.name(),
                self.ty.name()
            )));
        }
        if t > b.max_t {
            return Err(Error::Invalid(format!(
                "embedding gather with T = {t}, but the bound buffers hold {} tokens",
                b.max_t
            )));
        }
        if t == 0 {
            return Ok(());
        }
        let threads = t.checked_mul(b.k / 16).ok_or_else(|| {
            Error::Invalid(format!("embedding gather of {t} × {} is too large", b.k))
        })?;
        let (gx, gy) = groups_2d(threads, 64);
        pass.set_pipeline(&self.pipeline);
        for g in &b.groups {
            pass.set_bind_group(0, g, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        Ok(())
    }
}
