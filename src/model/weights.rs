//! Where a model's tensors come from: a GGUF file or a safetensors checkpoint, seen through
//! one interface, so the forwards (CPU and GPU) do not care about the file format.

use std::borrow::Cow;

use super::gguf::GgufFile;
use super::quant::{self, GgmlType};
use crate::{Error, Result};

/// A tensor in GGUF terms: its type, its dims in GGML order (`dims[0]` is the row length),
/// and its bytes in GGUF block layout.
pub struct RawTensor<'a> {
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    pub bytes: Cow<'a, [u8]>,
}

/// A source of named tensors (GGUF names: `blk.0.attn_q.weight`, `token_embd.weight`, …).
pub trait WeightSource {
    /// The tensor `name`; a missing tensor is a `Format` error naming it.
    fn raw(&self, name: &str) -> Result<RawTensor<'_>>;

    /// Whether the tensor exists.
    fn has(&self, name: &str) -> bool;

    /// The tensor `name`, which must have dims `dims` (GGML order), dequantized to f32.
    fn tensor_f32(&self, name: &str, dims: &[usize]) -> Result<Vec<f32>> {
        let t = self.raw(name)?;
        check_dims(name, &t.dims, dims)?;
        let n = dims.iter().product();
        quant::dequantize(t.ty, &t.bytes, n)
            .map_err(|e| Error::format(format!("tensor '{name}'"), e.to_string()))
    }
}

/// An error unless a tensor's dims equal the expected ones.
pub fn check_dims(name: &str, found: &[u64], expected: &[usize]) -> Result<()> {
    let want: Vec<u64> = expected.iter().map(|&d| d as u64).collect();
    if found != want.as_slice() {
        return Err(Error::format(
            format!("tensor '{name}'"),
            format!("expected dims {want:?}, found {found:?}"),
        ));
    }
    Ok(())
}

impl WeightSource for GgufFile {
    fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        let (info, bytes) = self.tensor_bytes(name)?;
        Ok(RawTensor {
            ty: info.ty,
            dims: info.dims.clone(),
            bytes: Cow::Borrowed(bytes),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }
}
