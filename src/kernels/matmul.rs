//! `Y[T, N] (+)= X[T, K] · W[N, K]ᵀ (+ bias)` with W in its GGUF block layout
//! (`shaders/matmul.q.wgsl` for small T, `shaders/matmul_tiled.q.wgsl` for prefill chunks).
//! The small-T kernel also takes a prologue, one dispatch fewer each: an RMSNorm
//! ([`Epilogue::norm`]: the normalisation of a row of X, `rmsnorm(x)·g`) or a gated
//! activation ([`Epilogue::glu`]: X is a gate|up output and the kernel multiplies by
//! `act(gate)·up`), fused into the matmul that consumes it. Their pipelines are built when a
//! binding first asks for them (cached by the device), so a layout that fuses nothing
//! compiles none.

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
    super::dequant::chunk_shader_source(ty, &super::with_glu(SMALL_WGSL))
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

/// The gated activation of a GLU prologue ([`Epilogue::glu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// `silu(gate)·up` (SwiGLU: Llama, Qwen, SmolLM2), as `shaders/silu_mul.wgsl` (`silu_mul` of `shaders/glu.inc.wgsl`).
    Silu,
    /// `gelu_tanh(gate)·up` (GeGLU: Gemma), as `shaders/gelu_mul.wgsl` (`gelu_mul` of `shaders/glu.inc.wgsl`).
    GeluTanh,
}

impl Glu {
    /// The shader's `GLU` override.
    fn code(self) -> f64 {
        match self {
            Glu::Silu => 1.0,
            Glu::GeluTanh => 2.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Glu::Silu => "silu",
            Glu::GeluTanh => "gelu",
        }
    }
}

/// What happens around the dot products.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// `X` is RMS-normed first (`rmsnorm(x) · g` with `g: [K] f32` and this epsilon): each x
    /// element is multiplied by `g` as it is loaded and each output by the token's 1/rms
    /// (the small-T kernel only: the automatic path takes it for every T).
    pub norm: Option<(&'a wgpu::Buffer, f32)>,
    /// `X: [T, 2K]` is a gate|up output and the matmul reads `act(X[:, ..K])·X[:, K..]` (the
    /// small-T kernel only, as `norm`; at most one of the two).
    pub glu: Option<Glu>,
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
    /// The small-T kernel's source, for the prologue pipelines (built on first use).
    small_source: String,
    tiled: Arc<wgpu::ComputePipeline>,
}

struct PartBinding {
    rows: u32,
    small: wgpu::BindGroup,
    /// None with a prologue (the tiled kernel has none).
    tiled: Option<wgpu::BindGroup>,
    _params: wgpu::Buffer,
}

/// Bind groups (one per weight part) for one matrix and its x / y / bias buffers.
pub struct MatmulBinding {
    ty: GgmlType,
    parts: Vec<PartBinding>,
    /// The small-T pipeline with the bound prologue (None without one).
    prologue: Option<Arc<wgpu::ComputePipeline>>,
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
            small_source: source,
            tiled,
        })
    }

    /// The small-T pipeline with `epilogue`'s prologue, None without one.
    fn prologue_pipeline(
        &self,
        gpu: &Gpu,
        epilogue: &Epilogue,
    ) -> Result<Option<Arc<wgpu::ComputePipeline>>> {
        let (what, constant) = match (epilogue.norm, epilogue.glu) {
            (None, None) => return Ok(None),
            (Some(_), None) => ("norm", ("NORM", 1.0)),
            (None, Some(g)) => (g.name(), ("GLU", g.code())),
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "a matmul takes one prologue: an RMSNorm or a GLU, not both".into(),
                ))
            }
        };
        let mut constants = small_constants(self.layout).to_vec();
        constants.push(constant);
        let key = format!(
            "matmul-small-{what}-{}-{}",
            self.layout.name(),
            self.ty.name()
        );
        Ok(Some(gpu.pipeline(
            &key,
            &self.small_source,
            "main",
            &constants,
        )?))
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
        let prologue = self.prologue_pipeline(gpu, &epilogue)?;
        // A GLU prologue reads gate|up rows, twice K wide.
        let x_row = if epilogue.glu.is_some() { 2 * k } else { k };
        let max_t = (x.size() / (x_row * 4)).min(y.size() / (n * 4));
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
            // Binding 6 (the norm weight) is x without the RMSNorm prologue: never read.
            let g = epilogue.norm.map_or(x, |(g, _)| g);
            let small_buffers = [step, &params, &part.buffer, x, y, bias, g];
            let (small, tiled) = match &prologue {
                Some(pipeline) => (gpu.bind(label, pipeline, &small_buffers), None),
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
            prologue,
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
            MatmulPath::Auto => t <= SMALL_T_MAX || b.prologue.is_some(),
            MatmulPath::Small => true,
            MatmulPath::Tiled => false,
        };
        if b.prologue.is_some() && !small {
            return Err(Error::Invalid(
                "the tiled matmul has no prologue (bind it without an RMSNorm or GLU)".into(),
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
                    pass.set_pipeline(b.prologue.as_ref().unwrap_or(&self.small));
                    pass.set_bind_group(0, &part.small, &[]);
                    let (gx, gy) = groups_2d(part.rows, small_rows(self.layout));
                    pass.dispatch_workgroups(gx, gy, 1);
                }
            }
        }
        Ok(())
    }
}
