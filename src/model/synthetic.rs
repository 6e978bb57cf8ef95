//! Real-GPU step costs without shipping the weights. The time of a forward pass depends on the
//! tensors' shapes and types, not on their values, so a GGUF's header (metadata, tokenizer,
//! tensor infos: a few MB, where the weights are hundreds) is all a cost measurement needs.
//! [`header_only`] cuts a file to its header (`tandem header-only IN OUT`); [`synthesize`]
//! gives a header back the bytes of a whole file, every tensor filled with valid random blocks
//! of its type (`--synthetic-weights`): finite scales, weights within ±0.1, norm weights and
//! RoPE frequency factors 1, so a forward pass runs on the same kernels with finite values.
//!
//! Shapes: a header is the file's bytes `[0, data_offset)`; a synthesized file is
//! `data_offset + max(offset + n_bytes)` bytes, the header copied, the padding zero.

use super::gguf::{parse_header, parse_header_only, GgufFile, TensorInfo};
use super::writer::SplitMix64;
use crate::quant::GgmlType;
use crate::{Error, Result};

/// The largest |weight| a synthesized block decodes to, about: real weights of small models
/// are mostly within it.
const WEIGHT_SCALE: f32 = 0.05;

/// The header of a whole GGUF file: the bytes before its tensor data.
pub fn header_only(file: &[u8]) -> Result<Vec<u8>> {
    let header = parse_header(file)?;
    // parse_header checked every tensor inside the file, so data_offset ≤ its length.
    let end = usize::try_from(header.data_offset)
        .map_err(|_| Error::Invalid("GGUF data offset past the address space".into()))?;
    Ok(file[..end.min(file.len())].to_vec())
}

/// A whole GGUF file from a header (or from a whole file, whose tensor data is then ignored):
/// every tensor filled with random blocks of its type from `seed` (the same seed, the same
/// bytes). `source` names the header in messages.
pub fn synthesize(header_bytes: &[u8], seed: u64, source: &str) -> Result<GgufFile> {
    let header = parse_header_only(header_bytes).map_err(|e| in_source(e, source))?;
    let data_offset = header.data_offset;
    let total = header
        .tensors
        .iter()
        .map(|t| t.offset.checked_add(t.n_bytes))
        .try_fold(data_offset, |acc, end| {
            end.and_then(|e| data_offset.checked_add(e))
                .map(|e| acc.max(e))
        })
        .and_then(|t| usize::try_from(t).ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{source}: the tensors' sizes overflow the address space"
            ))
        })?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(total).map_err(|_| {
        Error::OutOfMemory(format!(
            "{source}: synthetic weights need {total} bytes of host memory"
        ))
    })?;
    // data_offset ≥ the header's length (it is the aligned end of the header).
    let head = header_bytes.len().min(data_offset as usize);
    bytes.extend_from_slice(&header_bytes[..head]);
    bytes.resize(total, 0);
    for t in &header.tensors {
        let start = (data_offset + t.offset) as usize;
        let out = &mut bytes[start..start + t.n_bytes as usize];
        let mut rng = SplitMix64(seed ^ fnv1a(t.name.as_bytes()));
        fill(t, out, &mut rng)?;
    }
    GgufFile::from_bytes_named(bytes, format!("{source} (synthetic weights)"))
}

fn in_source(e: Error, source: &str) -> Error {
    match e {
        Error::Format { at, what } => Error::Format {
            at: format!("{source}: {at}"),
            what,
        },
        e => e,
    }
}

/// Tensors whose values must stay near 1 for a forward pass to stay finite: norm weights
/// (multiplied in, not added: llama.cpp's converter already adds Gemma's 1) and RoPE
/// frequency factors (divisors).
fn is_unit_tensor(name: &str) -> bool {
    name.ends_with("norm.weight") || name.starts_with("rope_freqs")
}

/// Fills one tensor's bytes with blocks of its type.
fn fill(t: &TensorInfo, out: &mut [u8], rng: &mut SplitMix64) -> Result<()> {
    let unit = is_unit_tensor(&t.name);
    match t.ty {
        GgmlType::F32 => {
            for v in out.chunks_exact_mut(4) {
                v.copy_from_slice(&float(rng, unit).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for v in out.chunks_exact_mut(2) {
                v.copy_from_slice(&half::f16::from_f32(float(rng, unit)).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for v in out.chunks_exact_mut(2) {
                v.copy_from_slice(&half::bf16::from_f32(float(rng, unit)).to_le_bytes());
            }
        }
        ty => {
            if unit {
                return Err(Error::Unsupported(format!(
                    "synthetic weights: tensor '{}' of type {} should hold values near 1 \
                     (a norm or RoPE factor), which only float types are filled with",
                    t.name,
                    ty.name()
                )));
            }
            let layout = BlockLayout::of(ty);
            for block in out.chunks_exact_mut(ty.type_size()) {
                rng.fill_bytes(block);
                let d = WEIGHT_SCALE / layout.max_multiplier * (0.75 + 0.25 * rng.uniform());
                for &at in layout.f16_scales {
                    block[at..at + 2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
                }
                for &at in layout.f32_scales {
                    block[at..at + 4].copy_from_slice(&d.to_le_bytes());
                }
            }
        }
    }
    Ok(())
}

fn float(rng: &mut SplitMix64, unit: bool) -> f32 {
    if unit {
        1.0
    } else {
        WEIGHT_SCALE * rng.uniform()
    }
}

/// Where a quantized block keeps its scales (every other bit pattern of a block is valid:
/// quants, packed sub-scales, high bits), and the largest factor its decode multiplies the
/// scale by (sub-scale × quant), so that `WEIGHT_SCALE / max_multiplier` bounds the weights.
struct BlockLayout {
    f16_scales: &'static [usize],
    f32_scales: &'static [usize],
    max_multiplier: f32,
}

impl BlockLayout {
    fn of(ty: GgmlType) -> Self {
        use GgmlType::*;
        let (f16_scales, f32_scales, max_multiplier): (&'static [usize], &'static [usize], f32) =
            match ty {
                F32 | F16 | BF16 => (&[], &[], 1.0),
                Q4_0 => (&[0], &[], 8.0),
                IQ4_NL => (&[0], &[], 127.0),
                Q4_1 => (&[0, 2], &[], 16.0),
                Q5_0 => (&[0], &[], 16.0),
                Q5_1 => (&[0, 2], &[], 32.0),
                Q8_0 => (&[0], &[], 128.0),
                Q8_1 => (&[0, 2], &[], 128.0),
                // scales[16], qs[64], d, dmin
                Q2_K => (&[80, 82], &[], 64.0),
                // hmask[32], qs[64], scales[12], d
                Q3_K => (&[108], &[], 128.0),
                Q4_K => (&[0, 2], &[], 64.0 * 16.0),
                Q5_K => (&[0, 2], &[], 64.0 * 32.0),
                // ql[128], qh[64], scales[16] (i8), d
                Q6_K => (&[208], &[], 128.0 * 32.0),
                Q8_K => (&[], &[0], 128.0),
                IQ4_XS => (&[0], &[], 127.0 * 32.0),
            };
        BlockLayout {
            f16_scales,
            f32_scales,
            max_multiplier,
        }
    }
}

/// FNV-1a: a tensor's seed from its name, so each tensor's bytes do not depend on the order
/// of the file's tensors.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;

    #[test]
    fn every_type_decodes_to_finite_bounded_weights() -> Result<()> {
        use GgmlType::*;
        for ty in [
            F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
            IQ4_XS,
        ] {
            let n = 4 * 256;
            let t = TensorInfo {
                name: "blk.0.ffn_down.weight".into(),
                dims: vec![n as u64],
                ty,
                offset: 0,
                n_bytes: ty.bytes_for(n as u64).unwrap_or(0),
            };
            let mut out = vec![0u8; t.n_bytes as usize];
            fill(&t, &mut out, &mut SplitMix64(7))?;
            let w = dequantize(ty, &out, n)?;
            let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(w.iter().all(|v| v.is_finite()), "{}", ty.name());
            assert!(max <= 2.0 * WEIGHT_SCALE, "{}: max |w| {max}", ty.name());
            assert!(max > WEIGHT_SCALE / 50.0, "{}: max |w| {max}", ty.name());
        }
        Ok(())
    }

    #[test]
    fn norm_weights_are_one_and_quantized_norms_are_refused() -> Result<()> {
        let mut t = TensorInfo {
            name: "blk.3.attn_norm.weight".into(),
            dims: vec![8],
            ty: GgmlType::F32,
            offset: 0,
            n_bytes: 32,
        };
        let mut out = vec![0u8; 32];
        fill(&t, &mut out, &mut SplitMix64(1))?;
        assert_eq!(dequantize(GgmlType::F32, &out, 8)?, vec![1.0; 8]);
        t.ty = GgmlType::Q8_0;
        t.dims = vec![32];
        t.n_bytes = 34;
        let e = fill(&t, &mut [0u8; 34], &mut SplitMix64(1));
        assert!(matches!(e, Err(Error::Unsupported(_))), "{e:?}");
        Ok(())
    }
}
