//! GGML tensor types: block sizes and byte layout, and CPU (de)quantizers that follow
//! ggml's block formats bit for bit (`ggml-common.h`, `ggml-quants.c`).
//!
//! The dequantizers are the reference the GPU kernels are tested against, and are checked
//! bit for bit against gguf-py's on the blocks in tests/fixtures/quant. The quantizers
//! follow ggml's `quantize_row_*_ref` and serve tests and the tiny-model GGUF writer; Q2_K,
//! Q3_K, IQ4_NL and IQ4_XS are read but not written ([`random_blocks`] stands in for tests).
//!
//! The bottom layer: the kernels (which upload these blocks as they are) and the model (which
//! reads them from files) both use it, and it imports nothing of tandem but the error type.

use crate::{Error, Result};

/// A GGML tensor type as stored in GGUF (`ggml_type` ids).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ4_NL,
    IQ4_XS,
    BF16,
}

impl GgmlType {
    /// From the GGUF type id. Unknown ids (and the IQ* types other than IQ4_NL and IQ4_XS)
    /// are `Unsupported`.
    pub fn from_id(id: u32) -> Result<Self> {
        use GgmlType::*;
        Ok(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            20 => IQ4_NL,
            23 => IQ4_XS,
            30 => BF16,
            other => return Err(Error::Unsupported(format!("GGML tensor type id {other}"))),
        })
    }

    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ4_NL => 20,
            IQ4_XS => 23,
            BF16 => 30,
        }
    }

    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ4_NL => "IQ4_NL",
            IQ4_XS => "IQ4_XS",
            BF16 => "BF16",
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4_NL => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K | IQ4_XS => 256,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
            IQ4_NL => 18,
            IQ4_XS => 136,
        }
    }

    /// Bytes of `n` elements, or `None` when `n` is not a whole number of blocks or overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }

    /// Whether tandem's GPU kernels and CPU dequantizer handle this type.
    pub fn is_supported(self) -> bool {
        cpu_supported(self)
    }

    /// Byte offsets of the f16 fields (scales, mins) in one block of this type; every other
    /// byte of a block is a free bit pattern. Tests use it to build random valid blocks.
    pub fn half_offsets(self) -> &'static [usize] {
        use GgmlType::*;
        match self {
            F32 | BF16 | Q8_K => &[],
            F16 | Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
            Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => &[0, 2],
            Q2_K => &[80, 82],
            Q3_K => &[108],
            Q6_K => &[208],
        }
    }
}

/// Every type with a CPU dequantizer (and GPU kernels), in GGUF id order.
pub const SUPPORTED: [GgmlType; 15] = {
    use GgmlType::*;
    [
        F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, BF16,
    ]
};

/// Types the CPU dequantizer handles.
fn cpu_supported(ty: GgmlType) -> bool {
    SUPPORTED.contains(&ty)
}

/// Types the CPU quantizers handle (ggml's reference quantizers; Q2_K, Q3_K and the IQ4
/// types are read, not written).
fn quantizable(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K
    )
}

/// `A, B, C` for an error message.
fn names(types: impl Iterator<Item = GgmlType>) -> String {
    types.map(GgmlType::name).collect::<Vec<_>>().join(", ")
}

fn check_cpu_supported(ty: GgmlType, what: &str) -> Result<()> {
    if cpu_supported(ty) {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "{what} of GGML type {} (supported: {})",
            ty.name(),
            names(SUPPORTED.into_iter())
        )))
    }
}

/// Whether [`quantize`] can write type `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    quantizable(ty)
}

/// Bytes that `n` elements of `ty` occupy, or an error when `n` is not a whole number of blocks.
fn bytes_needed(ty: GgmlType, n: usize) -> Result<usize> {
    ty.bytes_for(n as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{n} elements of {} is not a whole number of {}-element blocks",
                ty.name(),
                ty.block_size()
            ))
        })
}

/// Dequantize `n` elements of type `ty` from their GGUF bytes.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; n];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Dequantize `out.len()` elements of type `ty` from `bytes`, which must hold exactly
/// that many elements.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_cpu_supported(ty, "dequantizing")?;
    let need = bytes_needed(ty, out.len())?;
    if bytes.len() != need {
        return Err(Error::Invalid(format!(
            "dequantizing {} elements of {} needs {need} bytes, got {}",
            out.len(),
            ty.name(),
            bytes.len()
        )));
    }
    let block = ty.block_size();
    for (b, y) in bytes
        .chunks_exact(ty.type_size())
        .zip(out.chunks_exact_mut(block))
    {
        dequantize_block(ty, b, y);
    }
    Ok(())
}

/// Quantize `values` into GGUF bytes of type `ty` (ggml's reference quantizers).
/// `values.len()` must be a multiple of the block size.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    if !quantizable(ty) {
        return Err(Error::Unsupported(format!(
            "quantizing to GGML type {} (supported: {})",
            ty.name(),
            names(SUPPORTED.into_iter().filter(|&t| quantizable(t)))
        )));
    }
    let need = bytes_needed(ty, values.len())?;
    let mut out = vec![0u8; need];
    for (x, b) in values
        .chunks_exact(ty.block_size())
        .zip(out.chunks_exact_mut(ty.type_size()))
    {
        quantize_block(ty, x, b);
    }
    Ok(out)
}

/// `n` elements of `ty` (a whole number of blocks) for tests and benchmarks where [`quantize`]
/// has no quantizer: random bytes (every bit pattern of the quant fields), then each f16
/// field (scale, min; [`GgmlType::half_offsets`]) set so that the block's largest value has
/// magnitude 0.5..1, of either sign (F32, F16, BF16: random values in (-1, 1)).
/// Deterministic in `seed`.
pub fn random_blocks(ty: GgmlType, n: usize, seed: u64) -> Result<Vec<u8>> {
    check_cpu_supported(ty, "random blocks")?;
    let need = bytes_needed(ty, n)?;
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        // Plain floats: random values in (-1, 1) rather than random bit patterns.
        let x: Vec<f32> = (0..n)
            .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect();
        return quantize(ty, &x);
    }
    let mut bytes: Vec<u8> = (0..need).map(|_| next() as u8).collect();
    let mut y = vec![0.0f32; ty.block_size()];
    for block in bytes.chunks_exact_mut(ty.type_size()) {
        for &at in ty.half_offsets() {
            put_f16(block, at, 1.0);
        }
        dequantize_block(ty, block, &mut y);
        let amax = y.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for &at in ty.half_offsets() {
            let r = next();
            let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
            put_f16(
                block,
                at,
                sign * (0.5 + (r >> 40) as f32 / (1u64 << 25) as f32) / amax,
            );
        }
    }
    Ok(bytes)
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K block (ggml's `get_scale_min_k4`):
/// bytes 0..4 hold scales 0..4 (low 6 bits), 4..8 mins 0..4; bytes 8..12 hold the low
/// nibbles of scales/mins 4..8, whose top two bits sit in the top bits of bytes 0..8.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Dequantize one block (`b.len() == type_size`, `y.len() == block_size`).
fn dequantize_block(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    use GgmlType::*;
    match ty {
        F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        F16 => y[0] = f16_at(b, 0),
        BF16 => y[0] = half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        Q4_0 => {
            // d: f16, qs[16]: element j in the low nibble of qs[j], element j+16 in the high.
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                y[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
                y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        Q4_1 => {
            // d: f16, m: f16, qs[16]: y = q*d + m.
            let d = f16_at(b, 0);
            let m = f16_at(b, 2);
            let qs = &b[4..20];
            for j in 0..16 {
                y[j] = (qs[j] & 0xF) as f32 * d + m;
                y[j + 16] = (qs[j] >> 4) as f32 * d + m;
            }
        }
        Q5_0 => {
            // d: f16, qh: u32 (bit j = 5th bit of element j), qs[16] as in Q4_0; offset 16.
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..22];
            for j in 0..16 {
                let h0 = ((qh >> j) & 1) << 4;
                let h1 = ((qh >> (j + 16)) & 1) << 4;
                y[j] = (((qs[j] & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
                y[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
            }
        }
        Q8_0 => {
            let d = f16_at(b, 0);
            for j in 0..32 {
                y[j] = (b[2 + j] as i8) as f32 * d;
            }
        }
        Q4_K => {
            // d, dmin: f16, scales[12] (6-bit scale/min per 32), qs[128]: 64 elements per
            // 32 bytes, low nibbles first then high nibbles.
            let d = f16_at(b, 0);
            let dmin = f16_at(b, 2);
            let scales = &b[4..16];
            let qs = &b[16..144];
            for c in 0..4 {
                let (sc0, m0) = scale_min_k4(2 * c, scales);
                let (sc1, m1) = scale_min_k4(2 * c + 1, scales);
                let (d0, dm0) = (d * sc0 as f32, dmin * m0 as f32);
                let (d1, dm1) = (d * sc1 as f32, dmin * m1 as f32);
                let q = &qs[32 * c..32 * c + 32];
                for l in 0..32 {
                    y[64 * c + l] = d0 * (q[l] & 0xF) as f32 - dm0;
                    y[64 * c + 32 + l] = d1 * (q[l] >> 4) as f32 - dm1;
                }
            }
        }
        Q6_K => {
            // ql[128] low 4 bits, qh[64] high 2 bits, scales[16] i8 (one per 16), d: f16.
            let ql = &b[0..128];
            let qh = &b[128..192];
            let sc = &b[192..208];
            let d = f16_at(b, 208);
            for h in 0..2 {
                let (ql, qh, sc) = (&ql[64 * h..], &qh[32 * h..], &sc[8 * h..]);
                let y = &mut y[128 * h..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
        Q5_1 => {
            // d: f16, m: f16, qh: u32 (bit j = fifth bit of element j), qs[16] as Q4_1.
            // value = q * d + m.
            let d = f16_at(b, 0);
            let m = f16_at(b, 2);
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let qs = &b[8..24];
            for j in 0..16 {
                let q0 = (qs[j] & 0xF) as u32 | (((qh >> j) & 1) << 4);
                let q1 = (qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
                y[j] = d * q0 as f32 + m;
                y[j + 16] = d * q1 as f32 + m;
            }
        }
        Q2_K => {
            // scales[16] (low nibble: scale, high: min, one pair per 16), qs[64], d, dmin.
            // Element 128n + 32s + l: bits 2s..2s+2 of qs[32n + l].
            // value = d * scale * q - dmin * min.
            let sc = &b[0..16];
            let qs = &b[16..80];
            let d = f16_at(b, 80);
            let dmin = f16_at(b, 82);
            for (i, y) in y.iter_mut().enumerate() {
                let (n, s, l) = (i / 128, (i / 32) % 4, i % 32);
                let q = (qs[32 * n + l] >> (2 * s)) & 3;
                let sm = sc[i / 16];
                let dl = d * (sm & 0xF) as f32;
                let ml = dmin * (sm >> 4) as f32;
                *y = dl * q as f32 - ml;
            }
        }
        Q3_K => {
            // hmask[32], qs[64], scales[12] (16 six-bit scales, offset 32), d: f16.
            // Element i = 128n + 32s + l: low 2 bits at bits 2s.. of qs[32n + l], high bit
            // (i / 32) of hmask[l]; q = low - 4 when that bit is clear.
            // value = d * (scale - 32) * q.
            let hm = &b[0..32];
            let qs = &b[32..96];
            let sc = &b[96..108];
            let d = f16_at(b, 108);
            for (i, y) in y.iter_mut().enumerate() {
                let (n, s, l) = (i / 128, (i / 32) % 4, i % 32);
                let lo = ((qs[32 * n + l] >> (2 * s)) & 3) as i32;
                let hi = ((hm[l] >> (i / 32)) & 1) as i32;
                let j = i / 16;
                let ls = (sc[j % 8] >> (4 * (j / 8))) & 0xF;
                let hs = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
                let scale = (ls | (hs << 4)) as i32 - 32;
                let dl = d * scale as f32;
                *y = dl * (lo - 4 * (1 - hi)) as f32;
            }
        }
        Q5_K => {
            // d, dmin: f16, scales[12] as Q4_K, qh[32], qs[128]. Sub-block j (of 32): low
            // (j even) or high nibbles of qs[32 (j / 2) ..], fifth bit = bit j of qh[l].
            // value = d * scale * q - dmin * min.
            let d = f16_at(b, 0);
            let dmin = f16_at(b, 2);
            let scales = &b[4..16];
            let qh = &b[16..48];
            let qs = &b[48..176];
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, scales);
                let (dl, ml) = (d * sc as f32, dmin * m as f32);
                let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
                for l in 0..32 {
                    let v = ((q[l] >> (4 * (j % 2))) & 0xF) | (((qh[l] >> j) & 1) << 4);
                    y[32 * j + l] = dl * v as f32 - ml;
                }
            }
        }
        IQ4_NL => {
            // d: f16, qs[16] as Q4_0, each nibble an index into IQ4_NL_VALUES.
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                y[j] = d * IQ4_NL_VALUES[(qs[j] & 0xF) as usize] as f32;
                y[j + 16] = d * IQ4_NL_VALUES[(qs[j] >> 4) as usize] as f32;
            }
        }
        IQ4_XS => {
            // d: f16, scales_h: u16 (2 bits per sub-block), scales_l[4] (a nibble per
            // sub-block), qs[128]: sub-block j (of 32) as one IQ4_NL block in qs[16j..].
            // value = d * (scale - 32) * IQ4_NL_VALUES[q].
            let d = f16_at(b, 0);
            let sh = u16::from_le_bytes([b[2], b[3]]);
            let sl = &b[4..8];
            let qs = &b[8..136];
            for j in 0..8 {
                let lo = (sl[j / 2] >> (4 * (j % 2))) & 0xF;
                let hi = ((sh >> (2 * j)) & 3) as u8;
                let dl = d * ((lo | (hi << 4)) as i32 - 32) as f32;
                let q = &qs[16 * j..16 * j + 16];
                for l in 0..16 {
                    y[32 * j + l] = dl * IQ4_NL_VALUES[(q[l] & 0xF) as usize] as f32;
                    y[32 * j + 16 + l] = dl * IQ4_NL_VALUES[(q[l] >> 4) as usize] as f32;
                }
            }
        }
        // Filtered out by `check_cpu_supported`.
        Q8_1 | Q8_K => {}
    }
}

/// The 16 levels of the non-linear 4-bit types (ggml's `kvalues_iq4nl`).
pub const IQ4_NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// ggml's `nearest_int`: round half to even.
fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// The value of largest magnitude (ggml's `max` with `amax`), and that magnitude.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Quantize one block (`x.len() == block_size`, `b.len() == type_size`, `b` zeroed).
fn quantize_block(ty: GgmlType, x: &[f32], b: &mut [u8]) {
    use GgmlType::*;
    match ty {
        F32 => b.copy_from_slice(&x[0].to_le_bytes()),
        F16 => put_f16(b, 0, x[0]),
        BF16 => b.copy_from_slice(&half::bf16::from_f32(x[0]).to_bits().to_le_bytes()),
        Q4_0 => {
            let (max, _) = signed_absmax(x);
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            put_f16(b, 0, d);
            for j in 0..16 {
                let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
                let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
                b[2 + j] = q0 | (q1 << 4);
            }
        }
        Q4_1 => {
            let min = x.iter().copied().fold(f32::INFINITY, f32::min);
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            put_f16(b, 0, d);
            put_f16(b, 2, min);
            for j in 0..16 {
                let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
                let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
                b[4 + j] = q0 | (q1 << 4);
            }
        }
        Q5_0 => {
            let (max, _) = signed_absmax(x);
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            put_f16(b, 0, d);
            let mut qh = 0u32;
            for j in 0..16 {
                let q0 = ((x[j] * id + 16.5) as i8).min(31) as u32;
                let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u32;
                b[6 + j] = ((q0 & 0xF) | ((q1 & 0xF) << 4)) as u8;
                qh |= ((q0 >> 4) & 1) << j;
                qh |= ((q1 >> 4) & 1) << (j + 16);
            }
            b[2..6].copy_from_slice(&qh.to_le_bytes());
        }
        Q8_0 => {
            let (_, amax) = signed_absmax(x);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            put_f16(b, 0, d);
            for j in 0..32 {
                b[2 + j] = ((x[j] * id).round() as i8) as u8;
            }
        }
        Q5_1 => {
            let min = x.iter().copied().fold(f32::INFINITY, f32::min);
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            put_f16(b, 0, d);
            put_f16(b, 2, min);
            let mut qh = 0u32;
            for j in 0..16 {
                let q0 = ((x[j] - min) * id + 0.5) as u32;
                let q1 = ((x[j + 16] - min) * id + 0.5) as u32;
                b[8 + j] = ((q0 & 0xF) | ((q1 & 0xF) << 4)) as u8;
                qh |= ((q0 >> 4) & 1) << j;
                qh |= ((q1 >> 4) & 1) << (j + 16);
            }
            b[4..8].copy_from_slice(&qh.to_le_bytes());
        }
        Q4_K => quantize_q4_k(x, b),
        Q5_K => quantize_q5_k(x, b),
        Q6_K => quantize_q6_k(x, b),
        // Filtered out by `quantizable`.
        Q8_1 | Q2_K | Q3_K | Q8_K | IQ4_NL | IQ4_XS => {}
    }
}

/// ggml's `make_qkx2_quants`: a scale and (negated) min for `x` with levels 0..=nmax,
/// refined by a small search over the scale that minimises the weighted squared error.
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best += weights[i] * diff * diff;
    }
    let mut aux = vec![0u8; n];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut err = 0.0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                err += weights[i] * diff * diff;
            }
            if err < best {
                l_out.copy_from_slice(&aux);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `quantize_row_q4_K_ref` for one 256-element block.
fn quantize_q4_k(x: &[f32], b: &mut [u8]) {
    let levels = quantize_k_scales(x, b, 15, -1.0, 20);
    let qs = &mut b[16..144];
    for c in 0..4 {
        for l in 0..32 {
            qs[32 * c + l] = levels[64 * c + l] | (levels[64 * c + 32 + l] << 4);
        }
    }
}

/// ggml's `quantize_row_q5_K_ref` for one 256-element block.
fn quantize_q5_k(x: &[f32], b: &mut [u8]) {
    let levels = quantize_k_scales(x, b, 31, -0.5, 15);
    let (head, qs) = b.split_at_mut(48);
    let qh = &mut head[16..48];
    for c in 0..4 {
        for l in 0..32 {
            let (l1, l2) = (levels[64 * c + l], levels[64 * c + 32 + l]);
            qh[l] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
            qs[32 * c + l] = (l1 & 0xF) | ((l2 & 0xF) << 4);
        }
    }
}

/// The header shared by Q4_K and Q5_K (d, dmin, 12 bytes of 6-bit scales and mins), written
/// into `b[0..16]`; returns each element's level 0..=nmax (ggml's `make_qkx2_quants` with
/// `rmin`, `nstep`, then a requantization against the rounded scales).
fn quantize_k_scales(x: &[f32], b: &mut [u8], nmax: i32, rmin: f32, nstep: i32) -> [u8; 256] {
    let mut levels = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let av_x = (xs.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        let weights: Vec<f32> = xs.iter().map(|v| av_x + v.abs()).collect();
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
        );
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut b[4..16];
    for j in 0..8 {
        let ls = nearest_int(inv_scale * scales[j]).clamp(0, 63) as u8;
        let lm = nearest_int(inv_min * mins[j]).clamp(0, 63) as u8;
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(b, 0, max_scale / 63.0);
    put_f16(b, 2, max_min / 63.0);
    let d_all = f16_at(b, 0);
    let dmin_all = f16_at(b, 2);
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &b[4..16]);
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for i in 0..32 {
            levels[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    levels
}

/// ggml's `make_qx_quants` with `rmse_type = 1` (weights x²): a signed scale for levels
/// -nmax..nmax-1 stored as 0..2*nmax in `l_out`.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [u8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < 1e-15 {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, l_out: &mut [u8]| {
        for (o, &v) in l_out.iter_mut().zip(x) {
            *o = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as u8;
        }
    };
    let iscale = -(nmax as f32) / max;
    fill(iscale, l_out);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, l_out);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `quantize_row_q6_K_ref` for one 256-element block.
fn quantize_q6_k(x: &[f32], b: &mut [u8]) {
    let mut levels = [0u8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let s = make_qx_quants(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut levels[16 * ib..16 * ib + 16],
        );
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < 1e-15 {
        // All zero: the block stays zeroed (d = 0).
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(b, 208, 1.0 / iscale);
    let d_all = f16_at(b, 208);
    for ib in 0..16 {
        b[192 + ib] = nearest_int(iscale * scales[ib]).clamp(-128, 127) as i8 as u8;
    }
    for j in 0..16 {
        let d = d_all * (b[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            let l = nearest_int(x[16 * j + i] / d).clamp(-32, 31);
            levels[16 * j + i] = (l + 32) as u8;
        }
    }
    for h in 0..2 {
        let lv = &levels[128 * h..128 * h + 128];
        for l in 0..32 {
            let (q1, q2, q3, q4) = (lv[l], lv[l + 32], lv[l + 64], lv[l + 96]);
            b[64 * h + l] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            b[64 * h + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            b[128 + 32 * h + l] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType::*;

    // Blocks below are written byte by byte from ggml's struct layouts; the expected
    // values are worked out by hand from the format description, not from the decoder.

    #[test]
    fn f32_f16_bf16_by_hand() {
        let bytes = [0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x20, 0xC1]; // 1.5, -10.0
        assert_eq!(dequantize(F32, &bytes, 2).unwrap(), vec![1.5, -10.0]);
        // f16: 0x3C00 = 1, 0xC000 = -2, 0x3555 ≈ 0.33325195, 0x7BFF = 65504.
        let bytes = [0x00, 0x3C, 0x00, 0xC0, 0x55, 0x35, 0xFF, 0x7B];
        assert_eq!(
            dequantize(F16, &bytes, 4).unwrap(),
            vec![1.0, -2.0, 0.333_251_95, 65504.0]
        );
        // bf16 is the top half of an f32: 0x3FC0 = 1.5, 0xC120 = -10.
        let bytes = [0xC0, 0x3F, 0x20, 0xC1];
        assert_eq!(dequantize(BF16, &bytes, 2).unwrap(), vec![1.5, -10.0]);
    }

    #[test]
    fn q4_0_by_hand() {
        // d = 0.5 (f16 0x3800); qs[j] = j (low nibble) | (15 - j) << 4.
        let mut b = vec![0x00, 0x38];
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(Q4_0, &b, 32).unwrap();
        assert_eq!(&y[..4], &[-4.0, -3.5, -3.0, -2.5]); // (0-8)/2, (1-8)/2, ...
        assert_eq!(y[15], 3.5); // (15-8)/2
        assert_eq!(y[16], 3.5); // high nibble of qs[0] = 15
        assert_eq!(y[31], -4.0); // high nibble of qs[15] = 0
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
        }
    }

    #[test]
    fn q4_1_by_hand() {
        // d = 0.25 (0x3400), m = -1 (0xBC00); qs[j] = (j) | (j/2) << 4.
        let mut b = vec![0x00, 0x34, 0x00, 0xBC];
        b.extend((0..16u8).map(|j| j | ((j / 2) << 4)));
        let y = dequantize(Q4_1, &b, 32).unwrap();
        assert_eq!(&y[..3], &[-1.0, -0.75, -0.5]);
        assert_eq!(y[15], 2.75); // 15 * 0.25 - 1
        assert_eq!(y[31], 0.75); // 7 * 0.25 - 1
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 0.25 - 1.0);
            assert_eq!(y[j + 16], (j / 2) as f32 * 0.25 - 1.0);
        }
    }

    #[test]
    fn q5_0_by_hand() {
        // d = 1 (0x3C00); qh = 0x0001_8002 little-endian: bit 1 (element 1), bit 15
        // (element 15), bit 16 (element 16) carry the fifth bit.
        let mut b = vec![0x00, 0x3C, 0x02, 0x80, 0x01, 0x00];
        // qs[0] = 0x3F: element 0 low nibble 15, element 16 high nibble 3.
        // qs[1] = 0x07: element 1 = 7 | 16 = 23; element 17 = 0.
        // qs[15] = 0xA0: element 15 = 0 | 16 = 16; element 31 = 10.
        let mut qs = [0u8; 16];
        qs[0] = 0x3F;
        qs[1] = 0x07;
        qs[15] = 0xA0;
        b.extend(qs);
        let y = dequantize(Q5_0, &b, 32).unwrap();
        assert_eq!(y[0], -1.0); // 15 - 16
        assert_eq!(y[1], 7.0); // 23 - 16
        assert_eq!(y[2], -16.0); // 0 - 16
        assert_eq!(y[15], 0.0); // 16 - 16
        assert_eq!(y[16], 3.0); // 3 | 16 = 19 - 16
        assert_eq!(y[17], -16.0);
        assert_eq!(y[31], -6.0); // 10 - 16
        let changed = [0, 1, 15, 16, 31];
        for (i, v) in y.iter().enumerate() {
            if !changed.contains(&i) && i != 17 && i != 2 {
                assert_eq!(*v, -16.0, "element {i}");
            }
        }
    }

    #[test]
    fn q8_0_by_hand() {
        // d = 0.125 (0x3000); qs = 0, 1, -1, 127, -128, then 8 repeated.
        let mut b = vec![0x00, 0x30, 0x00, 0x01, 0xFF, 0x7F, 0x80];
        b.extend([0x08u8; 27]);
        let y = dequantize(Q8_0, &b, 32).unwrap();
        assert_eq!(&y[..5], &[0.0, 0.125, -0.125, 15.875, -16.0]);
        assert!(y[5..].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn q4_k_by_hand() {
        // d = 1 (0x3C00), dmin = 0.5 (0x3800).
        // Sub-block scales 1,2,3,4,17,33,63,40 and mins 0,1,2,3,20,5,63,16, packed by hand:
        // bytes 0..4 = scale[j] | (scale[j+4] >> 4) << 6, bytes 4..8 = min[j] | (min[j+4] >> 4) << 6,
        // bytes 8..12 = (scale[j+4] & 15) | (min[j+4] & 15) << 4.
        let scales = [
            0x41, 0x82, 0xC3, 0x84, 0x40, 0x01, 0xC2, 0x43, 0x41, 0x51, 0xFF, 0x08,
        ];
        let sc = [1.0f32, 2.0, 3.0, 4.0, 17.0, 33.0, 63.0, 40.0];
        let mn = [0.0f32, 1.0, 2.0, 3.0, 20.0, 5.0, 63.0, 16.0];
        // qs[i] = (i % 16) | (15 - i % 16) << 4. Sub-block 2c uses the low nibbles of
        // qs[32c..32c+32], sub-block 2c+1 the high nibbles.
        let mut b = vec![0x00, 0x3C, 0x00, 0x38];
        b.extend(scales);
        b.extend((0..128usize).map(|i| ((i % 16) | ((15 - i % 16) << 4)) as u8));
        let y = dequantize(Q4_K, &b, 256).unwrap();
        assert_eq!(y[0], 0.0); // 1*0 - 0.5*0
        assert_eq!(y[33], 2.0 * 14.0 - 0.5); // sub-block 1, l = 1: high nibble 14
        assert_eq!(y[128 + 5], 17.0 * 5.0 - 10.0); // sub-block 4
        assert_eq!(y[255], 40.0 * 0.0 - 8.0); // sub-block 7, l = 31: high nibble 0
        for j in 0..8 {
            for l in 0..32 {
                let q = if j % 2 == 0 { l % 16 } else { 15 - l % 16 } as f32;
                assert_eq!(
                    y[32 * j + l],
                    sc[j] * q - 0.5 * mn[j],
                    "sub-block {j} l {l}"
                );
            }
        }
    }

    #[test]
    fn q6_k_by_hand() {
        // ql[128], qh[64], scales[16] (i8), d (f16) = 1.0.
        let mut b = vec![0u8; 210];
        b[208] = 0x00;
        b[209] = 0x3C;
        // First half: element 0 = low nibble of ql[0], bits 0-1 of qh[0];
        // 32 = low of ql[32], bits 2-3; 64 = high of ql[0], bits 4-5; 96 = high of ql[32], bits 6-7.
        b[0] = 0x21;
        b[32] = 0x43;
        b[128] = 0b11_10_01_00;
        b[192] = 1; // scale of elements 0..16
        b[192 + 2] = (-2i8) as u8; // 32..48
        b[192 + 4] = 3; // 64..80
        b[192 + 6] = 4; // 96..112
                        // Second half: element 133 = low of ql[69] | bits 0-1 of qh[37]; scale 8 = -1.
        b[64 + 5] = 0x0F;
        b[128 + 32 + 5] = 0x03;
        b[192 + 8] = (-1i8) as u8;
        let y = dequantize(Q6_K, &b, 256).unwrap();
        assert_eq!(y[0], -31.0); // (1 | 0 << 4) - 32 = -31, * 1
        assert_eq!(y[32], 26.0); // (3 | 1 << 4) - 32 = -13, * -2
        assert_eq!(y[64], 6.0); // (2 | 2 << 4) - 32 = 2, * 3
        assert_eq!(y[96], 80.0); // (4 | 3 << 4) - 32 = 20, * 4
        assert_eq!(y[133], -31.0); // (15 | 3 << 4) - 32 = 31, * -1
        assert!(y[1..16].iter().all(|&v| v == -32.0)); // q = 0 - 32, scale 1
        for i in (128..144).filter(|&i| i != 133) {
            assert_eq!(y[i], 32.0); // q = -32, scale -1
        }
        let nonzero = |i: usize| {
            i < 16
                || (32..48).contains(&i)
                || (64..80).contains(&i)
                || (96..112).contains(&i)
                || (128..144).contains(&i)
        };
        for (i, v) in y.iter().enumerate() {
            if !nonzero(i) {
                assert_eq!(*v, 0.0, "element {i} has scale 0");
            }
        }
        assert_eq!(y[33], 64.0); // -32 * -2
        assert_eq!(y[65], -96.0); // -32 * 3
    }

    fn pseudo_random(seed: u32, n: usize) -> Vec<f32> {
        // xorshift: deterministic data without a dev-dependency in the lib tests.
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Quantize → dequantize error per block, relative to the block's largest magnitude.
    fn round_trip_error(ty: GgmlType, x: &[f32]) -> (f32, f32) {
        let bytes = quantize(ty, x).unwrap();
        assert_eq!(bytes.len(), x.len() / ty.block_size() * ty.type_size());
        let y = dequantize(ty, &bytes, x.len()).unwrap();
        let bs = ty.block_size().max(32);
        let mut max_rel = 0.0f32;
        let (mut se, mut sx) = (0.0f64, 0.0f64);
        for (xb, yb) in x.chunks(bs).zip(y.chunks(bs)) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in xb.iter().zip(yb) {
                max_rel = max_rel.max((a - b).abs() / amax);
                se += ((a - b) as f64).powi(2);
                sx += (*a as f64).powi(2);
            }
        }
        (max_rel, (se / sx).sqrt() as f32)
    }

    #[test]
    fn quantize_round_trips_within_the_format_precision() {
        let x: Vec<f32> = pseudo_random(7, 256 * 8)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + (i / 256) as f32)) // blocks of different scales
            .collect();
        // Bounds: the worst case of each format's step, relative to the block's |max|,
        // plus f16 rounding of the scale. Q4_0/Q5_0: the side opposite the max may clamp
        // a full step (1/8, 1/16). Q4_1: half a step of (max-min)/15 ≤ 2/15.
        // K-quants quantize their scales too, so they get looser worst-case bounds and an
        // RMS bound close to what ggml achieves on uniform data.
        // RMS bounds (relative to the data's RMS): uniform data has RMS a/sqrt(3) and
        // rounding error step/sqrt(12), so e.g. Q4_1 (step 2a/15) gives about 0.067.
        let cases = [
            (F32, 0.0, 0.0),
            (F16, 1.0 / 2048.0, 3e-4),
            (BF16, 1.0 / 256.0, 2.5e-3),
            (Q8_0, 0.5 / 127.0 + 1e-3, 0.005),
            (Q4_0, 1.0 / 8.0 + 1e-3, 0.075),
            (Q4_1, 1.0 / 15.0 + 1e-3, 0.072),
            (Q5_0, 1.0 / 16.0 + 1e-3, 0.037),
            (Q5_1, 1.0 / 31.0 + 1e-3, 0.037),
            (Q4_K, 0.12, 0.065),
            (Q5_K, 0.06, 0.033),
            (Q6_K, 0.025, 0.016),
        ];
        for (ty, max_bound, rms_bound) in cases {
            let (max_rel, rms) = round_trip_error(ty, &x);
            assert!(
                max_rel <= max_bound && rms <= rms_bound,
                "{}: max rel error {max_rel} (bound {max_bound}), rms {rms} (bound {rms_bound})",
                ty.name()
            );
        }
    }

    #[test]
    fn quantize_reproduces_exactly_representable_blocks() {
        // Values already on the grid come back unchanged. Q4_0: k/16 for k in -8..8; the
        // largest magnitude is -0.5 so d = -0.5 / -8 = 0.0625 (f16 0x2C00).
        let x: Vec<f32> = (0..32).map(|i| ((i % 16) as f32 - 8.0) / 16.0).collect();
        let q4 = quantize(Q4_0, &x).unwrap();
        assert_eq!(&q4[..2], &[0x00, 0x2C]);
        assert_eq!(q4[2], 0x00); // elements 0 and 16 are both -0.5 → level 0
        assert_eq!(dequantize(Q4_0, &q4, 32).unwrap(), x);
        // Q8_0: k/2 with 63.5 the largest, so d = 63.5 / 127 = 0.5 (f16 0x3800).
        let mut x8: Vec<f32> = (0..32).map(|i| (i as f32 - 20.0) * 0.5).collect();
        x8[31] = 63.5;
        let q8 = quantize(Q8_0, &x8).unwrap();
        assert_eq!(&q8[..3], &[0x00, 0x38, (-20i8) as u8]);
        assert_eq!(dequantize(Q8_0, &q8, 32).unwrap(), x8);
        // All-zero blocks quantize to zero scales and decode to zeros.
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K] {
            let z = vec![0.0f32; 256];
            let y = dequantize(ty, &quantize(ty, &z).unwrap(), 256).unwrap();
            assert!(y.iter().all(|&v| v == 0.0), "{}", ty.name());
        }
    }

    #[test]
    fn random_blocks_stay_within_one() {
        for ty in SUPPORTED {
            let b = random_blocks(ty, 1024, 3).unwrap();
            let y = dequantize(ty, &b, 1024).unwrap();
            let amax = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(amax <= 1.0 && amax > 0.0, "{}: {amax}", ty.name());
            assert_eq!(b, random_blocks(ty, 1024, 3).unwrap());
        }
    }

    #[test]
    fn bad_lengths_and_types_are_errors() {
        assert!(matches!(
            dequantize(Q4_0, &[0u8; 17], 32),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            dequantize(Q4_K, &[0u8; 144], 255),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(quantize(Q8_0, &[0.0; 33]), Err(Error::Invalid(_))));
        let e = dequantize(Q8_K, &[0u8; 292], 256).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(_)) && e.to_string().contains("Q8_K"),
            "{e}"
        );
        // Read, not written: no quantizer.
        let e = quantize(Q3_K, &[0.0; 256]).unwrap_err();
        assert!(e.to_string().contains("Q3_K"), "{e}");
        assert!(matches!(
            random_blocks(Q8_1, 32, 1),
            Err(Error::Unsupported(_))
        ));
    }
}
