// GGML block dequantization in units of 16 elements for the types added after the first
// kernels (Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS), written once for both includes.
//
// Concatenated (by src/kernels/dequant.rs) after dequant.inc.wgsl or dequant_chunk.inc.wgsl,
// each of which defines the three readers these functions use over its weight binding:
//   byte_at(off) -> u32   the byte at byte offset `off`
//   half_at(off) -> f32   the f16 at an even byte offset
//   word_at(off) -> u32   the four bytes at any byte offset, little-endian
// `row` is the byte offset of a row, `u` a unit index within it: the result is elements
// 16u .. 16u + 16. Every block here is a whole number of units, so a unit never straddles
// two blocks. dequant_chunk.inc.wgsl serves chunks of 32 as two units (dc_* below its own).
// Block layouts follow ggml-common.h; the CPU twin (src/quant.rs) does the same f32
// operations in the same order, and is itself checked against gguf-py.

// The four bytes at `off`, each shifted right by `s` and masked with `m`.
fn ubytes(off: u32, s: u32, m: u32) -> vec4<u32> {
    return (vec4<u32>(word_at(off)) >> (vec4<u32>(0u, 8u, 16u, 24u) + s)) & vec4<u32>(m);
}

// The levels of the non-linear 4-bit types (ggml's kvalues_iq4nl: -127, -104, -83, -65,
// -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113) as signed bytes, four to a word.
const IQ4_K0 = 0xBFAD9881u;
const IQ4_K1 = 0xF6EADDCFu;
const IQ4_K2 = 0x26190D01u;
const IQ4_K3 = 0x71594535u;

// The IQ4_NL levels of four 4-bit indices (selects, not a table: no dynamic indexing).
fn iq4_levels(q: vec4<u32>) -> vec4<f32> {
    let lo = select(vec4<u32>(IQ4_K0), vec4<u32>(IQ4_K1), q >= vec4<u32>(4u));
    let hi = select(vec4<u32>(IQ4_K2), vec4<u32>(IQ4_K3), q >= vec4<u32>(12u));
    let word = select(lo, hi, q >= vec4<u32>(8u));
    let b = (word >> ((q & vec4<u32>(3u)) * 8u)) << vec4<u32>(24u);
    return vec4<f32>(bitcast<vec4<i32>>(b) >> vec4<u32>(24u));
}

// Q5_1 (24 B / 32): d: f16, m: f16, qh: u32 (bit j = fifth bit of element j), qs[16]
// (element j: low nibble of qs[j], j + 16: high nibble). value = d * q + m.
fn dq_q5_1(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 1u) * 24u;
    let h = u & 1u;
    let d = half_at(base);
    let m = half_at(base + 2u);
    let qh = word_at(base + 4u) >> (16u * h);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let lo = ubytes(base + 8u + 4u * c, 4u * h, 15u);
        let hi = ((vec4<u32>(qh) >> (vec4<u32>(0u, 1u, 2u, 3u) + 4u * c)) & vec4<u32>(1u)) << vec4<u32>(4u);
        o[c] = d * vec4<f32>(lo | hi) + m;
    }
    return o;
}

// Q2_K (84 B / 256): scales[16] (low nibble scale, high nibble min, one pair per 16
// elements), qs[64], d: f16, dmin: f16. Element 128n + 32s + l: bits 2s .. 2s+2 of
// qs[32n + l]. Unit j is scale pair j. value = d * scale * q - dmin * min.
fn dq_q2_k(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 4u) * 84u;
    let j = u & 15u;
    let sm = byte_at(base + j);
    let dl = half_at(base + 80u) * f32(sm & 15u);
    let ml = half_at(base + 82u) * f32(sm >> 4u);
    let qs = base + 16u + 32u * (j >> 3u) + 16u * (j & 1u);
    let sh = 2u * ((j >> 1u) & 3u);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        o[c] = dl * vec4<f32>(ubytes(qs + 4u * c, sh, 3u)) - ml;
    }
    return o;
}

// Q3_K (110 B / 256): hmask[32], qs[64], scales[12] (sixteen 6-bit scales, offset 32), d:
// f16. Element i = 128n + 32s + l: low 2 bits at bits 2s of qs[32n + l], high bit i / 32
// of hmask[l]; q = low - 4 where that bit is clear. Scale j (of 16): low 4 bits from
// scales[j % 8] >> 4 (j / 8), high 2 from scales[8 + j % 4] >> 2 (j / 4).
// value = d * (scale - 32) * q.
fn dq_q3_k(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 4u) * 110u;
    let j = u & 15u;
    let ls = (byte_at(base + 96u + (j & 7u)) >> (4u * (j >> 3u))) & 15u;
    let hs = (byte_at(base + 104u + (j & 3u)) >> (2u * (j >> 2u))) & 3u;
    let dl = half_at(base + 108u) * f32(i32(ls | (hs << 4u)) - 32);
    let l0 = 16u * (j & 1u);
    let qs = base + 32u + 32u * (j >> 3u) + l0;
    let sh = 2u * ((j >> 1u) & 3u);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let lo = vec4<i32>(ubytes(qs + 4u * c, sh, 3u));
        let hi = vec4<i32>(ubytes(base + l0 + 4u * c, j >> 1u, 1u));
        o[c] = dl * vec4<f32>(lo - 4 * (vec4<i32>(1) - hi));
    }
    return o;
}

// Q5_K (176 B / 256): d, dmin: f16, scales[12] (as Q4_K: ggml's get_scale_min_k4), qh[32],
// qs[128]. Sub-block j (of 32) takes the low (j even) or high nibbles of
// qs[32 (j / 2) ..][0..32], and its fifth bits from bit j of qh[0..32].
// value = d * scale * q - dmin * min.
fn dq_q5_k(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 4u) * 176u;
    let s = u & 15u;
    let j = s >> 1u;
    let sc = base + 4u;
    var scale: u32;
    var mn: u32;
    if (j < 4u) {
        scale = byte_at(sc + j) & 63u;
        mn = byte_at(sc + j + 4u) & 63u;
    } else {
        let b = byte_at(sc + j + 4u);
        scale = (b & 15u) | ((byte_at(sc + j - 4u) >> 6u) << 4u);
        mn = (b >> 4u) | ((byte_at(sc + j) >> 6u) << 4u);
    }
    let dl = half_at(base) * f32(scale);
    let ml = half_at(base + 2u) * f32(mn);
    let l0 = 16u * (s & 1u);
    let qs = base + 48u + 32u * (j >> 1u) + l0;
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let lo = ubytes(qs + 4u * c, 4u * (j & 1u), 15u);
        let hi = ubytes(base + 16u + l0 + 4u * c, j, 1u) << vec4<u32>(4u);
        o[c] = dl * vec4<f32>(lo | hi) - ml;
    }
    return o;
}

// IQ4_NL (18 B / 32): d: f16, qs[16] laid out as Q4_0, each nibble an index into the
// levels above. value = d * level.
fn dq_iq4_nl(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 1u) * 18u;
    let d = half_at(base);
    let sh = 4u * (u & 1u);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        o[c] = d * iq4_levels(ubytes(base + 2u + 4u * c, sh, 15u));
    }
    return o;
}

// IQ4_XS (136 B / 256): d: f16, scales_h: u16 (2 bits per sub-block), scales_l[4] (a nibble
// per sub-block), qs[128]. Sub-block j (of 32) is laid out as one IQ4_NL block's qs in
// qs[16j ..][0..16], with scale (low | high << 4) - 32. value = d * scale * level.
fn dq_iq4_xs(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 4u) * 136u;
    let s = u & 15u;
    let j = s >> 1u;
    let hi = ((byte_at(base + 2u) | (byte_at(base + 3u) << 8u)) >> (2u * j)) & 3u;
    let lo = (byte_at(base + 4u + (j >> 1u)) >> (4u * (j & 1u))) & 15u;
    let dl = half_at(base) * f32(i32(lo | (hi << 4u)) - 32);
    let qs = base + 8u + 16u * j;
    let sh = 4u * (s & 1u);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        o[c] = dl * iq4_levels(ubytes(qs + 4u * c, sh, 15u));
    }
    return o;
}
