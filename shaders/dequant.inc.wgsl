// GGML block dequantization for kernels that read weights in their GGUF layout.
//
// Concatenated (by src/kernels/dequant.rs) in front of a kernel that declares
//   w: array<u32>   the raw GGUF bytes of some weight rows, little-endian, padded to 4 bytes
// followed by one line that picks the type:
//   fn dequant_unit(row: u32, u: u32) -> array<vec4<f32>, 4> { return dq_<type>(row, u); }
//
// A "unit" is 16 consecutive elements of a row: `row` is the byte offset of the row in
// `w`, `u` the unit index within the row (elements 16u .. 16u+16). Every supported type's
// block is a whole number of units, so a unit never straddles two blocks. Blocks of 18,
// 22, 34 and 210 bytes are not 4-byte aligned, hence the byte/half/word readers below.
// Block layouts follow ggml-common.h; the CPU twin is src/quant.rs. The types added later
// (Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS) are in dequant_units.inc.wgsl, which follows this.

fn byte_at(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xFFu;
}

// An f16 at an even byte offset.
fn half_at(off: u32) -> f32 {
    let word = w[off >> 2u];
    return unpack2x16float(select(word, word >> 16u, (off & 2u) != 0u)).x;
}

// Four bytes at any byte offset, as one little-endian word.
fn word_at(off: u32) -> u32 {
    let i = off >> 2u;
    let s = (off & 3u) * 8u;
    if (s == 0u) {
        return w[i];
    }
    return (w[i] >> s) | (w[i + 1u] << (32u - s));
}

// The four bytes of `q`, each shifted right by `s` and masked to 4 bits.
fn nibbles(q: u32, s: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + s)) & vec4<u32>(15u);
}

// The four bytes of `q` as signed values.
fn sbytes(q: u32) -> vec4<f32> {
    let v = bitcast<vec4<i32>>(vec4<u32>(q) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
    return vec4<f32>(v);
}

fn dq_f32(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let i = (row >> 2u) + 16u * u;
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let j = i + 4u * c;
        o[c] = bitcast<vec4<f32>>(vec4<u32>(w[j], w[j + 1u], w[j + 2u], w[j + 3u]));
    }
    return o;
}

fn dq_f16(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let i = (row >> 2u) + 8u * u;
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let j = i + 2u * c;
        o[c] = vec4<f32>(unpack2x16float(w[j]), unpack2x16float(w[j + 1u]));
    }
    return o;
}

// bf16 is the top half of an f32.
fn dq_bf16(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let i = (row >> 2u) + 8u * u;
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let a = w[i + 2u * c];
        let b = w[i + 2u * c + 1u];
        o[c] = bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xFFFF0000u, b << 16u, b & 0xFFFF0000u));
    }
    return o;
}

// Q4_0 (18 B / 32): d: f16, qs[16]. Element j: low nibble of qs[j]; element j+16: high
// nibble. value = (q - 8) * d. Unit h of a block is all low (h = 0) or all high nibbles.
fn dq_q4_0(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 1u) * 18u;
    let s = (u & 1u) * 4u;
    let d = half_at(base);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let q = nibbles(word_at(base + 2u + 4u * c), s);
        o[c] = (vec4<f32>(q) - 8.0) * d;
    }
    return o;
}

// Q4_1 (20 B / 32): d: f16, m: f16, qs[16] as Q4_0. value = q * d + m.
fn dq_q4_1(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 1u) * 20u;
    let s = (u & 1u) * 4u;
    let d = half_at(base);
    let m = half_at(base + 2u);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let q = nibbles(word_at(base + 4u + 4u * c), s);
        o[c] = vec4<f32>(q) * d + m;
    }
    return o;
}

// Q5_0 (22 B / 32): d: f16, qh: u32 (bit j = fifth bit of element j), qs[16] as Q4_0.
// value = (q - 16) * d.
fn dq_q5_0(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 1u) * 22u;
    let h = u & 1u;
    let d = half_at(base);
    let qh = word_at(base + 2u) >> (16u * h);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let lo = nibbles(word_at(base + 6u + 4u * c), 4u * h);
        let hi = ((vec4<u32>(qh) >> (vec4<u32>(0u, 1u, 2u, 3u) + 4u * c)) & vec4<u32>(1u)) << vec4<u32>(4u);
        o[c] = (vec4<f32>(lo | hi) - 16.0) * d;
    }
    return o;
}

// Q8_0 (34 B / 32): d: f16, qs[32] i8. value = q * d.
fn dq_q8_0(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 1u) * 34u;
    let d = half_at(base);
    let qs = base + 2u + 16u * (u & 1u);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        o[c] = sbytes(word_at(qs + 4u * c)) * d;
    }
    return o;
}

// Q4_K (144 B / 256): d: f16, dmin: f16, scales[12], qs[128]. Eight sub-blocks of 32 with
// 6-bit scale and min (ggml's get_scale_min_k4); sub-block j takes the low (j even) or high
// nibbles of qs[32 * (j / 2) ..][0..32]. value = d * scale * q - dmin * min.
fn dq_q4_k(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 4u) * 144u;
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
    let qs = base + 16u + 32u * (j >> 1u) + 16u * (s & 1u);
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let q = nibbles(word_at(qs + 4u * c), 4u * (j & 1u));
        o[c] = dl * vec4<f32>(q) - ml;
    }
    return o;
}

// Q6_K (210 B / 256): ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] i8, d: f16.
// Element 128h + 32p + l (p = 0..3, l = 0..31): low bits from ql[64h + l + 32 (p & 1)]
// (low nibble for p < 2, high for p >= 2), high bits (2p .. 2p+1) of qh[32h + l], scale
// scales[8h + l / 16 + 2p]. value = d * scale * (q - 32).
fn dq_q6_k(row: u32, u: u32) -> array<vec4<f32>, 4> {
    let base = row + (u >> 4u) * 210u;
    let s = u & 15u;
    let h = s >> 3u;
    let p = (s >> 1u) & 3u;
    let l0 = 16u * (s & 1u);
    let ql = base + 64u * h + 32u * (p & 1u) + l0;
    let qh = base + 128u + 32u * h + l0;
    let sb = byte_at(base + 192u + 8u * h + (s & 1u) + 2u * p);
    let scale = f32(bitcast<i32>(sb << 24u) >> 24u);
    let dl = half_at(base + 208u) * scale;
    var o: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        let lo = nibbles(word_at(ql + 4u * c), 4u * (p >> 1u));
        let hi = ((vec4<u32>(word_at(qh + 4u * c)) >> (vec4<u32>(0u, 8u, 16u, 24u) + 2u * p)) & vec4<u32>(3u)) << vec4<u32>(4u);
        o[c] = dl * (vec4<f32>(lo | hi) - 32.0);
    }
    return o;
}
