//! GGUF (versions 2 and 3): metadata and tensor infos, zero-copy over the file's bytes.
//!
//! Layout (little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64,
//! metadata (key string, type u32, value), tensor infos (name string, n_dims u32, dims u64 ×
//! n_dims, type u32, offset u64), padding to `general.alignment`, tensor data.
//! Strings are a u64 length + UTF-8 bytes; arrays are an element type u32 + count u64 + values.
//!
//! The input is untrusted: every count and length is checked against the bytes that remain
//! before anything is allocated, so a hostile header cannot make us allocate more than a small
//! multiple of the file's own size, and nothing here panics on bad input.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::quant::GgmlType;
use crate::{Error, Result};

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The GGUF name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        use MetaValue::*;
        match self {
            U8(_) => "u8",
            I8(_) => "i8",
            U16(_) => "u16",
            I16(_) => "i16",
            U32(_) => "u32",
            I32(_) => "i32",
            U64(_) => "u64",
            I64(_) => "i64",
            F32(_) => "f32",
            F64(_) => "f64",
            Bool(_) => "bool",
            String(_) => "string",
            Array(_) => "array",
        }
    }
    /// Any integer type that fits in u64 (negative values give `None`).
    pub fn as_u64(&self) -> Option<u64> {
        use MetaValue::*;
        match *self {
            U8(v) => Some(v as u64),
            U16(v) => Some(v as u64),
            U32(v) => Some(v as u64),
            U64(v) => Some(v),
            I8(v) => u64::try_from(v).ok(),
            I16(v) => u64::try_from(v).ok(),
            I32(v) => u64::try_from(v).ok(),
            I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        use MetaValue::*;
        match *self {
            U8(v) => Some(v as i64),
            U16(v) => Some(v as i64),
            U32(v) => Some(v as i64),
            U64(v) => i64::try_from(v).ok(),
            I8(v) => Some(v as i64),
            I16(v) => Some(v as i64),
            I32(v) => Some(v as i64),
            I64(v) => Some(v),
            _ => None,
        }
    }
    /// Any float or integer as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's description. `offset` is relative to the start of the tensor data section.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGML order: `dims[0]` is the contiguous (row) length, e.g. `[K, N]` for a `[N, K]` matrix.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Parsed header of a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute file offset of the tensor data section.
    pub data_offset: u64,
    pub alignment: u64,
}

/// GGUF metadata value type ids.
mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// GGML tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays deeper than this are refused: no real file nests more than once, and a
/// bound keeps recursion (and the stack) small on hostile input.
const MAX_ARRAY_NESTING: usize = 8;
/// Total array elements over all metadata. Each decoded element takes 32 bytes in memory
/// but may take 1 byte in the file, so the byte bound alone would let a hostile file ask for
/// 32× its size; real files hold under a million (vocabulary, merges, token types).
const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;

/// The fewest bytes one encoded value of type `t` can occupy; used to bound element counts
/// by the bytes that remain before allocating.
fn min_encoded_size(t: u32) -> Option<u64> {
    Some(match t {
        ty::U8 | ty::I8 | ty::BOOL => 1,
        ty::U16 | ty::I16 => 2,
        ty::U32 | ty::I32 | ty::F32 => 4,
        ty::U64 | ty::I64 | ty::F64 => 8,
        ty::STRING => 8,
        ty::ARRAY => 12,
        _ => return None,
    })
}

/// A bounds-checked little-endian cursor. `ctx` names what is being read (a key or a tensor)
/// so errors say where.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Array elements still allowed (see [`MAX_ARRAY_ELEMENTS`]).
    elements_left: u64,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn err(&self, at: usize, ctx: &str, what: impl Into<String>) -> Error {
        if ctx.is_empty() {
            Error::format(format!("offset {at}"), what)
        } else {
            Error::format(format!("offset {at} ({ctx})"), what)
        }
    }

    fn take(&mut self, n: u64, ctx: &str, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(
                self.pos,
                ctx,
                format!(
                    "truncated: {what} needs {n} bytes but only {} remain (file is {} bytes)",
                    self.remaining(),
                    self.bytes.len()
                ),
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, ctx: &str, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, ctx, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, ctx: &str, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(ctx, what)?))
    }

    fn u64(&mut self, ctx: &str, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(ctx, what)?))
    }

    /// A GGUF string. `lossy` replaces invalid UTF-8 (some token lists hold raw byte
    /// fragments); keys and tensor names must be valid.
    fn string(&mut self, ctx: &str, what: &str, lossy: bool) -> Result<String> {
        let at = self.pos;
        let len = self.u64(ctx, &format!("{what} length"))?;
        if len > self.remaining() {
            return Err(self.err(
                at,
                ctx,
                format!(
                    "{what} length {len} exceeds the {} bytes that remain in the file",
                    self.remaining()
                ),
            ));
        }
        let bytes = self.take(len, ctx, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) if lossy => Ok(String::from_utf8_lossy(bytes).into_owned()),
            Err(e) => Err(self.err(at, ctx, format!("{what} is not valid UTF-8 ({e})"))),
        }
    }

    fn value(&mut self, t: u32, ctx: &str, depth: usize) -> Result<MetaValue> {
        let at = self.pos;
        Ok(match t {
            ty::U8 => MetaValue::U8(u8::from_le_bytes(self.array(ctx, "u8 value")?)),
            ty::I8 => MetaValue::I8(i8::from_le_bytes(self.array(ctx, "i8 value")?)),
            ty::U16 => MetaValue::U16(u16::from_le_bytes(self.array(ctx, "u16 value")?)),
            ty::I16 => MetaValue::I16(i16::from_le_bytes(self.array(ctx, "i16 value")?)),
            ty::U32 => MetaValue::U32(u32::from_le_bytes(self.array(ctx, "u32 value")?)),
            ty::I32 => MetaValue::I32(i32::from_le_bytes(self.array(ctx, "i32 value")?)),
            ty::U64 => MetaValue::U64(u64::from_le_bytes(self.array(ctx, "u64 value")?)),
            ty::I64 => MetaValue::I64(i64::from_le_bytes(self.array(ctx, "i64 value")?)),
            ty::F32 => MetaValue::F32(f32::from_le_bytes(self.array(ctx, "f32 value")?)),
            ty::F64 => MetaValue::F64(f64::from_le_bytes(self.array(ctx, "f64 value")?)),
            ty::BOOL => match u8::from_le_bytes(self.array(ctx, "bool value")?) {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(self.err(at, ctx, format!("bool value must be 0 or 1, found {b}")))
                }
            },
            ty::STRING => MetaValue::String(self.string(ctx, "string value", true)?),
            ty::ARRAY => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(self.err(
                        at,
                        ctx,
                        format!("arrays nested more than {MAX_ARRAY_NESTING} deep"),
                    ));
                }
                let elem_at = self.pos;
                let et = self.u32(ctx, "array element type")?;
                let Some(min) = min_encoded_size(et) else {
                    return Err(self.err(
                        elem_at,
                        ctx,
                        format!("unknown array element type {et} (valid: 0..=12)"),
                    ));
                };
                let count_at = self.pos;
                let n = self.u64(ctx, "array count")?;
                // n * min > remaining means the array cannot fit; checked before allocating.
                if n.checked_mul(min)
                    .is_none_or(|need| need > self.remaining())
                {
                    return Err(self.err(
                        count_at,
                        ctx,
                        format!(
                            "array count {n} (elements of at least {min} bytes) exceeds the {} bytes that remain",
                            self.remaining()
                        ),
                    ));
                }
                if n > self.elements_left {
                    return Err(self.err(
                        count_at,
                        ctx,
                        format!(
                            "array count {n} exceeds the limit of {MAX_ARRAY_ELEMENTS} metadata array elements in all"
                        ),
                    ));
                }
                self.elements_left -= n;
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(et, ctx, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            other => {
                return Err(self.err(
                    at.saturating_sub(4),
                    ctx,
                    format!("unknown metadata value type {other} (valid: 0..=12)"),
                ))
            }
        })
    }
}

/// Parses a GGUF header (metadata and tensor infos) and checks that every tensor's bytes lie
/// inside `bytes`. Tensor data is not touched.
pub fn parse_header(bytes: &[u8]) -> Result<GgufHeader> {
    parse(bytes, true)
}

/// Parses a GGUF header without asking for the tensor data: `bytes` may end at the header (a
/// file `tandem header-only` wrote, for [`crate::model::synthetic`]). Every other check holds.
pub fn parse_header_only(bytes: &[u8]) -> Result<GgufHeader> {
    parse(bytes, false)
}

fn parse(bytes: &[u8], with_data: bool) -> Result<GgufHeader> {
    let mut r = Reader {
        bytes,
        pos: 0,
        elements_left: MAX_ARRAY_ELEMENTS,
    };
    let magic = r.array::<4>("", "magic")?;
    if &magic != GGUF_MAGIC {
        return Err(Error::format(
            "offset 0",
            format!(
                "not a GGUF file: magic is {:?} ({}), expected \"GGUF\"",
                String::from_utf8_lossy(&magic),
                magic
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ));
    }
    let version = r.u32("", "version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::Unsupported(
                "GGUF version 1 (32-bit counts; re-convert the model with a current llama.cpp)"
                    .into(),
            ))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(Error::Unsupported(format!(
                "big-endian GGUF (version field {v:#x}); only little-endian files are supported"
            )))
        }
        v => {
            return Err(Error::Unsupported(format!(
                "GGUF version {v} (supported: 2, 3)"
            )))
        }
    }
    let count_at = r.pos;
    let n_tensors = r.u64("", "tensor count")?;
    let n_kv = r.u64("", "metadata count")?;
    // Smallest possible metadata entry: empty key (8) + type (4) + u8 value (1).
    if n_kv.checked_mul(13).is_none_or(|need| need > r.remaining()) {
        return Err(Error::format(
            format!("offset {}", count_at + 8),
            format!(
                "metadata count {n_kv} cannot fit in the {} bytes that remain",
                r.remaining()
            ),
        ));
    }
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key_at = r.pos;
        let key = r.string(&format!("metadata entry #{i}"), "key", false)?;
        let ctx = format!("key '{key}'");
        let t = r.u32(&ctx, "value type")?;
        let value = r.value(t, &ctx, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(Error::format(
                format!("offset {key_at} ({ctx})"),
                "duplicate metadata key",
            ));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => {
                return Err(Error::format(
                    "key 'general.alignment'",
                    format!("alignment must be a power of two ≥ 1, found {v:?}"),
                ))
            }
        },
    };

    // Smallest tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
    if n_tensors
        .checked_mul(24)
        .is_none_or(|need| need > r.remaining())
    {
        return Err(Error::format(
            format!("offset {count_at}"),
            format!(
                "tensor count {n_tensors} cannot fit in the {} bytes that remain after the metadata",
                r.remaining()
            ),
        ));
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut raw_offsets = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info_at = r.pos;
        let name = r.string(&format!("tensor info #{i}"), "tensor name", false)?;
        let ctx = format!("tensor '{name}'");
        if !names.insert(name.clone()) {
            return Err(r.err(info_at, &ctx, "duplicate tensor name"));
        }
        let nd_at = r.pos;
        let n_dims = r.u32(&ctx, "n_dims")? as usize;
        if n_dims > MAX_DIMS {
            return Err(r.err(
                nd_at,
                &ctx,
                format!("n_dims is {n_dims}, at most {MAX_DIMS} are allowed"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(r.u64(&ctx, "dimension")?);
        }
        let ty_at = r.pos;
        let type_id = r.u32(&ctx, "tensor type")?;
        // Valid-but-unimplemented types (the IQ family) and garbage ids are both Unsupported:
        // the file may be fine, tandem just cannot read it. Say where.
        let ty = GgmlType::from_id(type_id).map_err(|_| {
            Error::Unsupported(format!(
                "GGML tensor type id {type_id} of tensor '{name}' (at offset {ty_at}); supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K..Q8_K"
            ))
        })?;
        let off_at = r.pos;
        let offset = r.u64(&ctx, "data offset")?;
        raw_offsets.push((info_at, off_at));

        if let Some(d) = dims.iter().position(|&d| d == 0) {
            return Err(r.err(
                nd_at,
                &ctx,
                format!("dimension {d} is zero (dims {dims:?})"),
            ));
        }
        let n_elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let Some(n_elements) = n_elements else {
            return Err(r.err(
                nd_at,
                &ctx,
                format!("element count of dims {dims:?} overflows 64 bits"),
            ));
        };
        let bs = ty.block_size() as u64;
        let row = dims.first().copied().unwrap_or(1);
        if row % bs != 0 {
            return Err(r.err(
                nd_at,
                &ctx,
                format!(
                    "row length {row} is not a multiple of the {} block size {bs}",
                    ty.name()
                ),
            ));
        }
        let Some(n_bytes) = ty.bytes_for(n_elements) else {
            return Err(r.err(
                nd_at,
                &ctx,
                format!("byte size of {n_elements} {} elements overflows", ty.name()),
            ));
        };
        if offset % alignment != 0 {
            return Err(r.err(
                off_at,
                &ctx,
                format!("data offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
        });
    }

    let header_end = r.pos as u64;
    // header_end ≤ len < 2^64 and alignment is a power of two, so only the add can overflow.
    let data_offset = header_end
        .checked_add(alignment - 1)
        .map(|v| v & !(alignment - 1))
        .ok_or_else(|| Error::format("key 'general.alignment'", "alignment overflows"))?;
    let file_len = bytes.len() as u64;
    for (t, &(_, off_at)) in tensors.iter().zip(&raw_offsets) {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        if with_data && end.is_some() && file_len <= data_offset && t.n_bytes > 0 {
            return Err(Error::format(
                format!("offset {data_offset}"),
                "the file ends where its tensor data should begin: it is truncated there, or \
                 it holds a GGUF header only (as `tandem header-only` writes), with no \
                 weights; load such a header with --synthetic-weights to measure step costs \
                 on random weights",
            ));
        }
        if end.is_none_or(|e| with_data && e > file_len) {
            return Err(Error::format(
                format!("offset {off_at} (tensor '{}')", t.name),
                format!(
                    "tensor data [{} .. +{} bytes] (data section at {data_offset}, relative offset {}) runs past the end of the {file_len}-byte file",
                    data_offset.saturating_add(t.offset),
                    t.n_bytes,
                    t.offset
                ),
            ));
        }
    }

    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        data_offset,
        alignment,
    })
}

/// The bytes a model file reads from: a memory map natively, or memory the caller owns.
pub(crate) enum Storage {
    #[cfg(not(target_arch = "wasm32"))]
    Mmap(memmap2::Mmap),
    Vec(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Storage {
    /// Memory-maps a file read-only.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn map(path: &std::path::Path) -> Result<Self> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| Error::io(&shown, e))?;
        // SAFETY: the map is read-only; like every mmap-based loader we rely on the file not
        // being truncated or rewritten while tandem runs (doing so is a user error that can
        // at worst fault, which no safe API can prevent for mapped files).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&shown, e))?;
        Ok(Storage::Mmap(map))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mmap(m) => m,
            Storage::Vec(v) => v,
            Storage::Shared(a) => a,
        }
    }
}

/// A parsed GGUF file that owns its bytes; tensor data is handed out as zero-copy slices.
pub struct GgufFile {
    storage: Storage,
    header: GgufHeader,
    /// Where the bytes came from, for messages (a path, or `"<memory>"`).
    source: String,
    /// Tensor index by name.
    by_name: std::collections::HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("source", &self.source)
            .field("version", &self.header.version)
            .field("tensors", &self.header.tensors.len())
            .field("metadata", &self.header.metadata.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses a GGUF file.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::new(Storage::map(path)?, path.display().to_string())
    }

    /// Parses a GGUF file held in memory (the web loads models this way).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::new(Storage::Vec(bytes), "<memory>".into())
    }

    /// Parses a GGUF file held in memory, named `source` in messages.
    pub(crate) fn from_bytes_named(bytes: Vec<u8>, source: String) -> Result<Self> {
        Self::new(Storage::Vec(bytes), source)
    }

    /// Parses a GGUF file held in shared memory.
    pub fn from_shared(bytes: Arc<[u8]>) -> Result<Self> {
        Self::new(Storage::Shared(bytes), "<memory>".into())
    }

    fn new(storage: Storage, source: String) -> Result<Self> {
        let header = parse_header(storage.bytes()).map_err(|e| match e {
            Error::Format { at, what } if source != "<memory>" => Error::Format {
                at: format!("{source}: {at}"),
                what,
            },
            e => e,
        })?;
        let by_name = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            storage,
            header,
            source,
            by_name,
        })
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// Where the bytes came from (a path or `"<memory>"`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    pub fn metadata(&self, key: &str) -> Option<&MetaValue> {
        self.header.metadata.get(key)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.header.tensors[i])
    }

    /// The bytes of a tensor of this file (zero-copy). Errors only for a `TensorInfo` that
    /// does not describe this file (parsing already checked every tensor's range).
    pub fn tensor_data(&self, t: &TensorInfo) -> Result<&[u8]> {
        let bytes = self.storage.bytes();
        let range = self
            .header
            .data_offset
            .checked_add(t.offset)
            .and_then(|s| Some(s..s.checked_add(t.n_bytes)?))
            .filter(|r| r.end <= bytes.len() as u64);
        match range {
            Some(r) => Ok(&bytes[r.start as usize..r.end as usize]),
            None => Err(Error::Invalid(format!(
                "tensor '{}' ({} bytes at data offset {}) is not inside {}",
                t.name, t.n_bytes, t.offset, self.source
            ))),
        }
    }

    /// A tensor's info and bytes by name; a missing tensor is a Format error naming it.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let t = self.tensor(name).ok_or_else(|| {
            Error::format(
                format!("tensor '{name}'"),
                format!("tensor missing from {}", self.source),
            )
        })?;
        Ok((t, self.tensor_data(t)?))
    }

    fn required(&self, key: &str) -> Result<&MetaValue> {
        self.metadata(key).ok_or_else(|| {
            Error::format(
                format!("key '{key}'"),
                format!("required metadata key is missing from {}", self.source),
            )
        })
    }

    fn mistyped(&self, key: &str, want: &str, v: &MetaValue) -> Error {
        use MetaValue::*;
        let shown = match v {
            Array(a) => format!("array of {} values", a.len()),
            String(s) if s.chars().count() > 60 => {
                format!(
                    "string {:?}…",
                    s.chars().take(60).collect::<std::string::String>()
                )
            }
            String(s) => format!("string {s:?}"),
            Bool(b) => format!("bool {b}"),
            F32(x) => format!("f32 {x}"),
            F64(x) => format!("f64 {x}"),
            v => format!(
                "{} {}",
                v.type_name(),
                v.as_i64()
                    .map_or(std::string::String::new(), |i| i.to_string())
            ),
        };
        Error::format(
            format!("key '{key}'"),
            format!("expected {want}, found {shown}"),
        )
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.required(key)?;
        v.as_u64()
            .ok_or_else(|| self.mistyped(key, "a non-negative integer", v))
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.required(key)?;
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| self.mistyped(key, "an integer in u32 range", v))
    }

    pub fn get_i64(&self, key: &str) -> Result<i64> {
        let v = self.required(key)?;
        v.as_i64()
            .ok_or_else(|| self.mistyped(key, "an integer", v))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.required(key)?;
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| self.mistyped(key, "a number", v))
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.required(key)?;
        v.as_f64().ok_or_else(|| self.mistyped(key, "a number", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.required(key)?;
        v.as_bool().ok_or_else(|| self.mistyped(key, "a bool", v))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.required(key)?;
        v.as_str().ok_or_else(|| self.mistyped(key, "a string", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&[MetaValue]> {
        let v = self.required(key)?;
        v.as_array()
            .ok_or_else(|| self.mistyped(key, "an array", v))
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`); names the first bad element.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let a = self.get_array(key)?;
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    Error::format(
                        format!("key '{key}' element {i}"),
                        format!("expected a string, found {}", v.type_name()),
                    )
                })
            })
            .collect()
    }

    /// Optional keys: `Ok(None)` when missing, an error when present with the wrong type.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.metadata(key).map(|_| self.get_u32(key)).transpose()
    }
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.metadata(key).map(|_| self.get_u64(key)).transpose()
    }
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.metadata(key).map(|_| self.get_f32(key)).transpose()
    }
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.metadata(key).map(|_| self.get_bool(key)).transpose()
    }
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.metadata(key).map(|_| self.get_str(key)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }

    /// A file with every metadata value type, a nested array and one F32 tensor.
    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&14u64.to_le_bytes());
        let kv = |b: &mut Vec<u8>, k: &str, t: u32, v: &[u8]| {
            s(b, k);
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(v);
        };
        kv(&mut b, "a.u8", 0, &[7]);
        kv(&mut b, "a.i8", 1, &[0xff]);
        kv(&mut b, "a.u16", 2, &300u16.to_le_bytes());
        kv(&mut b, "a.i16", 3, &(-300i16).to_le_bytes());
        kv(&mut b, "a.u32", 4, &70000u32.to_le_bytes());
        kv(&mut b, "a.i32", 5, &(-70000i32).to_le_bytes());
        kv(&mut b, "a.f32", 6, &1.5f32.to_le_bytes());
        kv(&mut b, "a.bool", 7, &[1]);
        let mut sv = Vec::new();
        s(&mut sv, "héllo");
        kv(&mut b, "a.str", 8, &sv);
        kv(&mut b, "a.u64", 10, &(1u64 << 40).to_le_bytes());
        kv(&mut b, "a.i64", 11, &(-1i64 << 40).to_le_bytes());
        kv(&mut b, "a.f64", 12, &2.25f64.to_le_bytes());
        // [[1, 2], [3]] as u32 arrays.
        let mut av = Vec::new();
        av.extend_from_slice(&9u32.to_le_bytes());
        av.extend_from_slice(&2u64.to_le_bytes());
        for inner in [&[1u32, 2][..], &[3u32][..]] {
            av.extend_from_slice(&4u32.to_le_bytes());
            av.extend_from_slice(&(inner.len() as u64).to_le_bytes());
            for x in inner {
                av.extend_from_slice(&x.to_le_bytes());
            }
        }
        kv(&mut b, "a.nested", 9, &av);
        kv(&mut b, "general.alignment", 4, &64u32.to_le_bytes());
        s(&mut b, "w");
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 64 != 0 {
            b.push(0);
        }
        for i in 0..6 {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        b
    }

    #[test]
    fn every_value_type_and_nested_arrays() {
        let f = GgufFile::from_bytes(sample()).unwrap();
        let h = f.header();
        assert_eq!(h.version, 3);
        assert_eq!(h.alignment, 64);
        assert_eq!(h.data_offset % 64, 0);
        assert_eq!(f.metadata("a.u8"), Some(&MetaValue::U8(7)));
        assert_eq!(f.metadata("a.i8"), Some(&MetaValue::I8(-1)));
        assert_eq!(f.metadata("a.u16"), Some(&MetaValue::U16(300)));
        assert_eq!(f.metadata("a.i16"), Some(&MetaValue::I16(-300)));
        assert_eq!(f.get_u32("a.u32").unwrap(), 70000);
        assert_eq!(f.get_i64("a.i32").unwrap(), -70000);
        assert_eq!(f.get_f32("a.f32").unwrap(), 1.5);
        assert!(f.get_bool("a.bool").unwrap());
        assert_eq!(f.get_str("a.str").unwrap(), "héllo");
        assert_eq!(f.get_u64("a.u64").unwrap(), 1 << 40);
        assert_eq!(f.get_i64("a.i64").unwrap(), -1 << 40);
        assert_eq!(f.get_f64("a.f64").unwrap(), 2.25);
        let nested = f.get_array("a.nested").unwrap();
        assert_eq!(
            nested[0],
            MetaValue::Array(vec![MetaValue::U32(1), MetaValue::U32(2)])
        );
        assert_eq!(nested[1], MetaValue::Array(vec![MetaValue::U32(3)]));
        let (t, data) = f.tensor_bytes("w").unwrap();
        assert_eq!(t.dims, vec![3, 2]);
        let vals: Vec<f32> = data
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(vals, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn typed_getters_name_the_key() {
        let f = GgufFile::from_bytes(sample()).unwrap();
        let e = f.get_u32("nope.key").unwrap_err().to_string();
        assert!(e.contains("nope.key") && e.contains("missing"), "{e}");
        let e = f.get_u32("a.str").unwrap_err().to_string();
        assert!(e.contains("a.str") && e.contains("expected"), "{e}");
        let e = f.get_u32("a.i32").unwrap_err().to_string();
        assert!(e.contains("a.i32") && e.contains("u32"), "{e}");
        assert_eq!(f.opt_u32("nope").unwrap(), None);
        assert!(f.opt_u32("a.str").is_err());
    }

    #[test]
    fn version_1_is_unsupported() {
        let mut b = sample();
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(parse_header(&b), Err(Error::Unsupported(_))));
    }
}
