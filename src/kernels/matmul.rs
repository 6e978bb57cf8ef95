//! `Y[T, N] (+)= X[T, K] · W[N, K]ᵀ (+ bias)` with W in its GGUF block layout
//! (`shaders/matmul.q.wgsl` for small T, `shaders/matmul_tiled.q.wgsl` for prefill chunks).
//! The small-T kernel also takes an RMSNorm prologue ([`Epilogue::norm`]): the normalisation
//! of a row of X (`rmsnorm(x)·g`) fused into the matmul that consumes it, one dispatch fewer.

use std::sync::Arc;

use super::Layout;
use crate::gpu::{groups_2d, Gpu};
use crate::quant::GgmlType;
use crate::{Error, Result};

pub use super::dequant::{gpu_supported, MatrixPart, QuantMatrix};

const SMALL_WGSL: &str = include_str!("../../shaders/matmul.q.wgsl");
const TILED_WGSL: &str = include_str!("../../shaders/matmul_tiled.q.wgsl");

/// Largest T the small-T kernel takes on the automatic path. Decode and tree verification
/// stay at or below it, so they share one kernel and are batch invariant.
pub const SMALL_T_MAX: u32 = 64;

/// Weight rows per workgroup of the small-T kernel (`ROWS` in matmul.q.wgsl) in `layout`.
pub fn small_rows(layout: Layout) -> u32 {
    let (wg, tpr, h) = small_threads(layout);
    wg / tpr * 4 * h
}

/// (threads per workgroup, threads per row group, vec4s of rows per row group) of the
/// small-T kernel; the header of `shaders/matmul.q.wgsl` explains both layouts.
fn small_threads(layout: Layout) -> (u32, u32, u32) {
    match layout {
        // 16 threads per group of 4 rows read neighbouring chunks of those rows
        // (coalesced); their sums meet in workgroup memory. 16 rows per workgroup.
        Layout::Gpu => (64, 16, 1),
        // Each thread owns 8 whole rows: no reduction, no barrier. 128 rows per workgroup.
        Layout::Cpu => (16, 1, 2),
    }
}

/// The small-T kernel's WGSL for weights of type `ty` (the layout comes from
/// [`small_constants`]).
pub fn small_source(ty: GgmlType) -> Result<String> {
    super::dequant::chunk_shader_source(ty, SMALL_WGSL)
}

/// The small-T kernel's override constants for `layout`.
pub fn small_constants(layout: Layout) -> [(&'static str, f64); 3] {
    let (wg, tpr, h) = small_threads(layout);
    [("WG", wg as f64), ("TPR", tpr as f64), ("H", h as f64)]
}
/// Output tile of the tiled kernel (`BT`, `BN` in matmul_tiled.wgsl).
const TILE: u32 = 64;

/// Which kernel `encode_path` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPath {
    /// Small-T kernel for T ≤ [`SMALL_T_MAX`], tiled above.
    Auto,
    Small,
    Tiled,
}

/// What happens around the dot products.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// `X` is RMS-normed first (`rmsnorm(x) · g` with `g: [K] f32` and this epsilon): each x
    /// element is multiplied by `g` as it is loaded and each output by the token's 1/rms
    /// (the small-T kernel only: the automatic path takes it for every T).
    pub norm: Option<(&'a wgpu::Buffer, f32)>,
    /// `bias: [N] f32`, added to every row (qwen2's QKV bias).
    pub bias: Option<&'a wgpu::Buffer>,
    /// `Y += X·Wᵀ` instead of `Y = X·Wᵀ` (the residual add fused into a projection).
    pub accumulate: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    k: u32,
    n: u32,
    row0: u32,
    row_bytes: u32,
    has_bias: u32,
    accumulate: u32,
    /// The RMSNorm prologue's epsilon (matmul_tiled.q.wgsl has a pad here).
    eps: f32,
}

/// The pipelines for one weight type.
pub struct Matmul {
    pub ty: GgmlType,
    /// The small-T kernel's layout.
    pub layout: Layout,
    small: Arc<wgpu::ComputePipeline>,
    /// The small-T kernel with the RMSNorm prologue (override NORM).
    small_norm: Arc<wgpu::ComputePipeline>,
    tiled: Arc<wgpu::ComputePipeline>,
}

struct PartBinding {
    rows: u32,
    small: wgpu::BindGroup,
    /// None with the RMSNorm prologue (the tiled kernel has none).
    tiled: Option<wgpu::BindGroup>,
    _params: wgpu::Buffer,
}

/// Bind groups (one per weight part) for one matrix and its x / y / bias buffers.
pub struct MatmulBinding {
    ty: GgmlType,
    parts: Vec<PartBinding>,
    /// Bound with the RMSNorm prologue (the small-T pipeline that has it).
    norm: bool,
    /// Largest T the bound x and y buffers hold.
    pub max_t: u32,
    _dummy_bias: Option<wgpu::Buffer>,
}

impl MatmulBinding {
    /// Dispatches [`Matmul::encode`] records for this binding (one per weight part).
    pub fn dispatches(&self) -> usize {
        self.parts.len()
    }
}

impl Matmul {
    /// The pipelines for `ty`, with the small-T layout suited to `gpu`.
    pub fn new(gpu: &Gpu, ty: GgmlType) -> Result<Matmul> {
        Self::with_layout(gpu, ty, Layout::for_gpu(gpu))
    }

    /// [`Matmul::new`] with the small-T kernel's layout chosen by the caller (tests run
    /// both layouts on one device).
    pub fn with_layout(gpu: &Gpu, ty: GgmlType, layout: Layout) -> Result<Matmul> {
        let name = ty.name();
        let source = small_source(ty)?;
        let small = gpu.pipeline(
            &format!("matmul-small-{}-{name}", layout.name()),
            &source,
            "main",
            &small_constants(layout),
        )?;
        let mut normed = small_constants(layout).to_vec();
        normed.push(("NORM", 1.0));
        let small_norm = gpu.pipeline(
            &format!("matmul-small-norm-{}-{name}", layout.name()),
            &source,
            "main",
            &normed,
        )?;
        let tiled = gpu.pipeline(
            &format!("matmul-tiled-{name}"),
            &super::dequant::shader_source(ty, TILED_WGSL)?,
            "main",
            &[],
        )?;
        Ok(Matmul {
            ty,
            layout,
            small,
            small_norm,
            tiled,
        })
    }

    /// Bind `m` with `x: [T, K] f32`, `y: [T, N] f32` and the step uniform (done at load
    /// time). T may be anything up to the returned binding's `max_t`.
    pub fn bind(
        &self,
        gpu: &Gpu,
        step: &wgpu::Buffer,
        m: &QuantMatrix,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        epilogue: Epilogue,
    ) -> Result<MatmulBinding> {
        let label = &m.label;
        if m.ty != self.ty {
            return Err(Error::Invalid(format!(
                "tensor '{label}' is {} but this matmul was built for {}",
                m.ty.name(),
                self.ty.name()
            )));
        }
        let (n, k) = (m.n as u64, m.k as u64);
        let max_t = (x.size() / (k * 4)).min(y.size() / (n * 4));
        if max_t == 0 {
            return Err(Error::Invalid(format!(
                "matmul '{label}': x ({} bytes) or y ({} bytes) is smaller than one row \
                 (K = {k}, N = {n})",
                x.size(),
                y.size()
            )));
        }
        if let Some(b) = epilogue.bias {
            if b.size() < n * 4 {
                return Err(Error::Invalid(format!(
                    "matmul '{label}': bias has {} bytes, needs {}",
                    b.size(),
                    n * 4
                )));
            }
        }
        if let Some((g, eps)) = epilogue.norm {
            if g.size() < k * 4 || !eps.is_finite() || eps < 0.0 {
                return Err(Error::Invalid(format!(
                    "matmul '{label}': norm weight of {} bytes (needs {}), epsilon {eps}",
                    g.size(),
                    k * 4
                )));
            }
        }
        let dummy_bias = match epilogue.bias {
            Some(_) => None,
            None => Some(gpu.storage("no-bias", 4)?),
        };
        let bias = epilogue
            .bias
            .or(dummy_bias.as_ref())
            .ok_or_else(|| Error::Invalid(format!("matmul '{label}': no bias buffer to bind")))?;
        let mut parts = Vec::with_capacity(m.parts.len());
        for part in &m.parts {
            let rows = part.rows as u32;
            if rows.div_ceil(TILE) > 65_535 {
                return Err(Error::Invalid(format!(
                    "matmul '{label}': {rows} rows in one part is more than one dispatch covers"
                )));
            }
            let params = gpu.uniform(
                &format!("{label} matmul params"),
                &Params {
                    rows,
                    k: m.k as u32,
                    n: m.n as u32,
                    row0: part.row0 as u32,
                    row_bytes: m.row_bytes as u32,
                    has_bias: epilogue.bias.is_some() as u32,
                    accumulate: epilogue.accumulate as u32,
                    eps: epilogue.norm.map_or(0.0, |(_, eps)| eps),
                },
            );
            let buffers = [step, &params, &part.buffer, x, y, bias];
            // Binding 6 (the norm weight) is x where there is no prologue: never read.
            let g = epilogue.norm.map_or(x, |(g, _)| g);
            let small_buffers = [step, &params, &part.buffer, x, y, bias, g];
            let (small, tiled) = match epilogue.norm {
                Some(_) => (gpu.bind(label, &self.small_norm, &small_buffers), None),
                None => (
                    gpu.bind(label, &self.small, &small_buffers),
                    Some(gpu.bind(label, &self.tiled, &buffers)),
                ),
            };
            parts.push(PartBinding {
                rows,
                small,
                tiled,
                _params: params,
            });
        }
        Ok(MatmulBinding {
            ty: m.ty,
            parts,
            norm: epilogue.norm.is_some(),
            max_t: max_t.min(u32::MAX as u64) as u32,
            _dummy_bias: dummy_bias,
        })
    }

    /// Record the dispatches for T = `t` (which must equal `step.t` when the pass runs).
    pub fn encode(&self, pass: &mut wgpu::ComputePass, b: &MatmulBinding, t: u32) -> Result<()> {
        self.encode_path(pass, b, t, MatmulPath::Auto)
    }

    /// [`Matmul::encode`] with the kernel chosen by the caller (tests, benchmarks).
    pub fn encode_path(
        &self,
        pass: &mut wgpu::ComputePass,
        b: &MatmulBinding,
        t: u32,
        path: MatmulPath,
    ) -> Result<()> {
        if b.ty != self.ty {
            return Err(Error::Invalid(format!(
                "a {} binding encoded with the {} matmul",
                b.ty.name(),
                self.ty.name()
            )));
        }
        if t > b.max_t {
            return Err(Error::Invalid(format!(
                "matmul with T = {t}, but the bound buffers hold {} rows",
                b.max_t
            )));
        }
        if t == 0 {
            return Ok(());
        }
        let small = match path {
            MatmulPath::Auto => t <= SMALL_T_MAX || b.norm,
            MatmulPath::Small => true,
            MatmulPath::Tiled => false,
        };
        if b.norm && !small {
            return Err(Error::Invalid(
                "the tiled matmul has no RMSNorm prologue (bind it without one)".into(),
            ));
        }
        if !small && t.div_ceil(TILE) > 65_535 {
            return Err(Error::Invalid(format!(
                "matmul with T = {t} needs more workgroups than one dispatch allows"
            )));
        }
        for part in &b.parts {
            match (small, &part.tiled) {
                (false, Some(tiled)) => {
                    pass.set_pipeline(&self.tiled);
                    pass.set_bind_group(0, tiled, &[]);
                    pass.dispatch_workgroups(part.rows.div_ceil(TILE), t.div_ceil(TILE), 1);
                }
                _ => {
                    pass.set_pipeline(if b.norm {
                        &self.small_norm
                    } else {
                        &self.small
                    });
                    pass.set_bind_group(0, &part.small, &[]);
                    let (gx, gy) = groups_2d(part.rows, small_rows(self.layout));
                    pass.dispatch_workgroups(gx, gy, 1);
                }
            }
        }
        Ok(())
    }
}
