//! Quantized weights on the GPU: GGUF block bytes uploaded as they are, split by rows when
//! a tensor exceeds the storage binding limit, plus the WGSL dequant helpers that kernels
//! reading such weights include: `shaders/dequant.inc.wgsl` (16-element units, word reads)
//! and `shaders/dequant_chunk.inc.wgsl` (32-element chunks, 16-byte reads), each followed by
//! `shaders/dequant_units.inc.wgsl` (the later types, written once over readers both define).

use crate::gpu::Gpu;
use crate::quant::GgmlType;
use crate::{Error, Result};

const DEQUANT_WGSL: &str = include_str!("../../shaders/dequant.inc.wgsl");
const DEQUANT_CHUNK_WGSL: &str = include_str!("../../shaders/dequant_chunk.inc.wgsl");
const DEQUANT_UNITS_WGSL: &str = include_str!("../../shaders/dequant_units.inc.wgsl");

/// Weight buffers are padded to this many bytes so shaders can read them as
/// `array<vec4<u32>>` (`dequant_chunk.inc.wgsl`).
pub const WEIGHT_ALIGN: usize = 16;

/// Weight types the GPU kernels dequantize (every type with a CPU dequantizer,
/// [`crate::quant::SUPPORTED`]).
pub fn gpu_supported(ty: GgmlType) -> bool {
    crate::quant::SUPPORTED.contains(&ty)
}

fn unsupported(ty: GgmlType, what: &str) -> Error {
    let names: Vec<&str> = crate::quant::SUPPORTED.iter().map(|t| t.name()).collect();
    Error::Unsupported(format!(
        "{what}: GGML type {} has no GPU kernel (supported: {})",
        ty.name(),
        names.join(", ")
    ))
}

/// WGSL source for `kernel` with the dequant helpers in front and `dequant_unit` bound to
/// the helper for `ty`. `kernel` must declare `w: array<u32>`.
pub fn shader_source(ty: GgmlType, kernel: &str) -> Result<String> {
    if !gpu_supported(ty) {
        return Err(unsupported(ty, "building a kernel"));
    }
    let f = format!("dq_{}", ty.name().to_ascii_lowercase());
    Ok(format!(
        "{DEQUANT_WGSL}\n{DEQUANT_UNITS_WGSL}\nfn dequant_unit(row: u32, u: u32) -> array<vec4<f32>, 4> {{ return {f}(row, u); }}\n\n{kernel}"
    ))
}

/// WGSL source for `kernel` with the chunk dequant helpers in front and `dequant_chunk`
/// bound to the helper for `ty`. `kernel` must declare `wq: array<vec4<u32>>`.
pub fn chunk_shader_source(ty: GgmlType, kernel: &str) -> Result<String> {
    if !gpu_supported(ty) {
        return Err(unsupported(ty, "building a kernel"));
    }
    let f = format!("dc_{}", ty.name().to_ascii_lowercase());
    Ok(format!(
        "{DEQUANT_CHUNK_WGSL}\n{DEQUANT_UNITS_WGSL}\nfn dequant_chunk(row: u32, c: u32) -> array<vec4<f32>, 8> {{ return {f}(row, c); }}\n\n{kernel}"
    ))
}

/// Rows `row0 .. row0 + rows` of a matrix, in one storage buffer.
#[derive(Debug)]
pub struct MatrixPart {
    pub buffer: wgpu::Buffer,
    pub row0: usize,
    pub rows: usize,
}

/// A `[n, k]` weight matrix in its GGUF block layout on the GPU (row `r` occupies bytes
/// `r * row_bytes .. (r + 1) * row_bytes`), split by rows into parts that each fit one
/// storage binding.
#[derive(Debug)]
pub struct QuantMatrix {
    pub label: String,
    pub ty: GgmlType,
    pub n: usize,
    pub k: usize,
    pub row_bytes: usize,
    pub parts: Vec<MatrixPart>,
}

impl QuantMatrix {
    /// Upload `bytes` (`n` rows of `k` elements of type `ty`, as stored in GGUF).
    pub fn upload(
        gpu: &Gpu,
        label: &str,
        ty: GgmlType,
        n: usize,
        k: usize,
        bytes: &[u8],
    ) -> Result<QuantMatrix> {
        let row_bytes = Self::check_shape(label, ty, n, k)?;
        let need = n
            .checked_mul(row_bytes)
            .ok_or_else(|| Error::Invalid(format!("tensor '{label}': {n} × {k} overflows")))?;
        if bytes.len() != need {
            return Err(Error::Invalid(format!(
                "tensor '{label}': {n} × {k} {} needs {need} bytes, got {}",
                ty.name(),
                bytes.len()
            )));
        }
        let align = WEIGHT_ALIGN as u64;
        let limit = (gpu.max_binding_size() / align * align).min(usize::MAX as u64) as usize;
        if row_bytes > limit {
            return Err(Error::Gpu(format!(
                "tensor '{label}': one row is {row_bytes} bytes, more than this device's \
                 storage binding limit of {limit} bytes"
            )));
        }
        let per_part = limit / row_bytes;
        let mut parts = Vec::with_capacity(n.div_ceil(per_part));
        let mut row0 = 0;
        while row0 < n {
            let rows = per_part.min(n - row0);
            let name = if n <= per_part {
                label.to_string()
            } else {
                format!("{label}[{row0}..{}]", row0 + rows)
            };
            let buffer = gpu.upload_bytes_aligned(
                &name,
                &bytes[row0 * row_bytes..(row0 + rows) * row_bytes],
                align,
            )?;
            parts.push(MatrixPart { buffer, row0, rows });
            row0 += rows;
        }
        Ok(QuantMatrix {
            label: label.to_string(),
            ty,
            n,
            k,
            row_bytes,
            parts,
        })
    }

    /// Checks `ty`, `n`, `k` for the GPU kernels; returns the bytes per row.
    pub fn check_shape(label: &str, ty: GgmlType, n: usize, k: usize) -> Result<usize> {
        if !gpu_supported(ty) {
            return Err(unsupported(ty, &format!("tensor '{label}'")));
        }
        if n == 0 || k == 0 {
            return Err(Error::Invalid(format!(
                "tensor '{label}': empty shape {n} × {k}"
            )));
        }
        // Kernels work in chunks of 32 elements; every block type is a whole number of them.
        let unit = ty.block_size().max(32);
        if !k.is_multiple_of(unit) {
            return Err(Error::Unsupported(format!(
                "tensor '{label}': rows of {k} elements of {} (the GPU kernels need a multiple \
                 of {unit})",
                ty.name()
            )));
        }
        ty.bytes_for(k as u64)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| Error::Invalid(format!("tensor '{label}': row of {k} overflows")))
    }

    /// Bytes of weights (what one full pass over the matrix reads).
    pub fn weight_bytes(&self) -> u64 {
        (self.n * self.row_bytes) as u64
    }
}
