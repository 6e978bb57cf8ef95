// GGML block dequantization in chunks of 32 elements, read with 16-byte loads.
//
// Concatenated (by src/kernels/dequant.rs::chunk_shader_source) in front of a kernel that
// declares
//   wq: array<vec4<u32>>   the raw GGUF bytes of some weight rows, little-endian, padded to
//                          a multiple of 16 bytes (QuantMatrix::upload does)
// followed by one line that picks the type:
//   fn dequant_chunk(row: u32, c: u32) -> array<vec4<f32>, 8> { return dc_<type>(row, c); }
//
// `row` is the byte offset of a row in `wq`, `c` a chunk index: the result is elements
// 32c .. 32c + 32 of that row. Why chunks of 32 and vec4 loads (dequant.inc.wgsl reads one
// word at a time in units of 16): both halves of a 4-bit block share their quant bytes and
// scale, so one read serves 32 elements, and on every GPU (and far more on CPU
// implementations such as llvmpipe, where each load instruction is a loop over the SIMD
// lanes) the number of load instructions, not bytes, is what the small-T matmul pays for.
// Blocks of 18, 22, 34 and 210 bytes start at any even offset, so those types read a window
// of 2-3 aligned vec4s and shift it into place with selects (no divergent branches). The
// values equal dequant.inc.wgsl's and the CPU twin's (src/quant.rs) formula for formula. The
// types added later are at the end: dequant_units.inc.wgsl (concatenated after this) over
// word readers, two units per chunk.

fn vload(i: u32) -> vec4<u32> {
    // A window may reach up to 32 bytes past a row's last block; at the very end of the
    // buffer that vec4 is not there, so read the last one instead (its bytes go unused).
    return wq[min(i, arrayLength(&wq) - 1u)];
}

// 48 bytes starting at the 16-byte boundary at or below a byte offset.
struct Window {
    a: vec4<u32>,
    b: vec4<u32>,
    c: vec4<u32>,
}

fn window3(off: u32) -> Window {
    let i = off >> 4u;
    return Window(vload(i), vload(i + 1u), vload(i + 2u));
}

// Only the first 32 bytes (for blocks that end within them).
fn window2(off: u32) -> Window {
    let i = off >> 4u;
    return Window(vload(i), vload(i + 1u), vec4<u32>(0u));
}

// The 8 little-endian words at byte `s` (even, 0 ..= 16) of a window, as two vec4s. Words
// past the window's 48 bytes read as zero.
struct Words8 {
    lo: vec4<u32>,
    hi: vec4<u32>,
}

fn words8(win: Window, s: u32) -> Words8 {
    var a = win.a;
    var b = win.b;
    var c = win.c;
    let z = vec4<u32>(0u);
    let by16 = (s & 16u) != 0u;
    a = select(a, b, by16);
    b = select(b, c, by16);
    c = select(c, z, by16);
    let by8 = (s & 8u) != 0u;
    a = select(a, vec4<u32>(a.zw, b.xy), by8);
    b = select(b, vec4<u32>(b.zw, c.xy), by8);
    c = select(c, vec4<u32>(c.zw, 0u, 0u), by8);
    let by4 = (s & 4u) != 0u;
    a = select(a, vec4<u32>(a.yzw, b.x), by4);
    b = select(b, vec4<u32>(b.yzw, c.x), by4);
    c = select(c, vec4<u32>(c.yzw, 0u), by4);
    let by2 = (s & 2u) != 0u;
    let h = vec4<u32>(16u);
    let a2 = (a >> h) | (vec4<u32>(a.yzw, b.x) << h);
    let b2 = (b >> h) | (vec4<u32>(b.yzw, c.x) << h);
    return Words8(select(a, a2, by2), select(b, b2, by2));
}

// The f16 at byte `s` (even, < 16) of `v`.
fn half_in(v: vec4<u32>, s: u32) -> f32 {
    let word = v[(s >> 2u) & 3u];
    return unpack2x16float(select(word, word >> 16u, (s & 2u) != 0u)).x;
}

// The four bytes of `q`, each shifted right by `s` and masked to 4 bits.
fn nib4u(q: u32, s: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + s)) & vec4<u32>(15u);
}

fn nib4(q: u32, s: u32) -> vec4<f32> {
    return vec4<f32>(nib4u(q, s));
}

// The four bytes of `q` as signed values.
fn sbyte4(q: u32) -> vec4<f32> {
    let v = bitcast<vec4<i32>>(vec4<u32>(q) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
    return vec4<f32>(v);
}

// Element j of a 4-bit block (j < 16) is the low nibble of byte j, element j + 16 the high
// nibble: word k of the 16 quant bytes gives vec4s k (low) and 4 + k (high).

fn dc_f32(row: u32, c: u32) -> array<vec4<f32>, 8> {
    let i = (row >> 4u) + 8u * c;
    var o: array<vec4<f32>, 8>;
    o[0] = bitcast<vec4<f32>>(wq[i]);
    o[1] = bitcast<vec4<f32>>(wq[i + 1u]);
    o[2] = bitcast<vec4<f32>>(wq[i + 2u]);
    o[3] = bitcast<vec4<f32>>(wq[i + 3u]);
    o[4] = bitcast<vec4<f32>>(wq[i + 4u]);
    o[5] = bitcast<vec4<f32>>(wq[i + 5u]);
    o[6] = bitcast<vec4<f32>>(wq[i + 6u]);
    o[7] = bitcast<vec4<f32>>(wq[i + 7u]);
    return o;
}

fn f16x8(v: vec4<u32>) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)),
        vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)),
    );
}

fn dc_f16(row: u32, c: u32) -> array<vec4<f32>, 8> {
    let i = (row >> 4u) + 4u * c;
    let p0 = f16x8(wq[i]);
    let p1 = f16x8(wq[i + 1u]);
    let p2 = f16x8(wq[i + 2u]);
    let p3 = f16x8(wq[i + 3u]);
    return array<vec4<f32>, 8>(p0[0], p0[1], p1[0], p1[1], p2[0], p2[1], p3[0], p3[1]);
}

// bf16 is the top half of an f32.
fn bf16x8(v: vec4<u32>) -> array<vec4<f32>, 2> {
    let m = vec4<u32>(0xFFFF0000u);
    let lo = vec4<u32>(v.x << 16u, v.x & m.x, v.y << 16u, v.y & m.y);
    let hi = vec4<u32>(v.z << 16u, v.z & m.z, v.w << 16u, v.w & m.w);
    return array<vec4<f32>, 2>(bitcast<vec4<f32>>(lo), bitcast<vec4<f32>>(hi));
}

fn dc_bf16(row: u32, c: u32) -> array<vec4<f32>, 8> {
    let i = (row >> 4u) + 4u * c;
    let p0 = bf16x8(wq[i]);
    let p1 = bf16x8(wq[i + 1u]);
    let p2 = bf16x8(wq[i + 2u]);
    let p3 = bf16x8(wq[i + 3u]);
    return array<vec4<f32>, 8>(p0[0], p0[1], p1[0], p1[1], p2[0], p2[1], p3[0], p3[1]);
}

// Q4_0 (18 B / 32): d: f16, qs[16]. value = (q - 8) * d.
fn q4_0(q: u32, s: u32, d: f32) -> vec4<f32> {
    return (nib4(q, s) - 8.0) * d;
}

fn dc_q4_0(row: u32, c: u32) -> array<vec4<f32>, 8> {
    let base = row + 18u * c;
    let s = base & 15u;
    let win = window2(base);
    let d = half_in(win.a, s);
    let q = words8(win, s + 2u).lo;
    return array<vec4<f32>, 8>(
        q4_0(q.x, 0u, d), q4_0(q.y, 0u, d), q4_0(q.z, 0u, d), q4_0(q.w, 0u, d),
        q4_0(q.x, 4u, d), q4_0(q.y, 4u, d), q4_0(q.z, 4u, d), q4_0(q.w, 4u, d),
    );
}

// Q4_1 (20 B / 32): d: f16, m: f16, qs[16] as Q4_0. value = q * d + m.
fn q4_1(q: u32, s: u32, dm: vec2<f32>) -> vec4<f32> {
    return nib4(q, s) * dm.x + dm.y;
}

fn dc_q4_1(row: u32, c: u32) -> array<vec4<f32>, 8> {
    let base = row + 20u * c;
    let s = base & 15u;
    let win = window2(base);
    let dm = unpack2x16float(win.a[s >> 2u]);
    let q = words8(win, s + 4u).lo;
    return array<vec4<f32>, 8>(
        q4_1(q.x, 0u, dm), q4_1(q.y, 0u, dm), q4_1(q.z, 0u, dm), q4_1(q.w, 0u, dm),
        q4_1(q.x, 4u, dm), q4_1(q.y, 4u, dm), q4_1(q.z, 4u, dm), q4_1(q.w, 4u, dm),
    );
}

// Q5_0 (22 B / 32): d: f16, qh: u32 (bit j = fifth bit of element j), qs[16] as Q4_0.
// value = (q - 16) * d. `h`: the fifth bits of these four elements in its low 4 bits.
fn q5_0(q: u32, s: u32, h: u32, d: f32) -> vec4<f32> {
    let hi = ((vec4<u32>(h) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u)) << vec4<u32>(4u);
    return (vec4<f32>(nib4u(q, s) | hi) - 16.0) * d;
}

fn dc_q5_0(row: u32, c: u32) -> array<vec4<f32>, 8> {
    let base = row + 22u * c;
    let s = base & 15u;
    let win = window3(base);
    let d = half_in(win.a, s);
    let w = words8(win, s + 2u);
    let qh = w.lo.x;
    let qs = vec4<u32>(w.lo.yzw, w.hi.x);
    return array<vec4<f32>, 8>(
        q5_0(qs.x, 0u, qh, d), q5_0(qs.y, 0u, qh >> 4u, d),
        q5_0(qs.z, 0u, qh >> 8u, d), q5_0(qs.w, 0u, qh >> 12u, d),
        q5_0(qs.x, 4u, qh >> 16u, d), q5_0(qs.y, 4u, qh >> 20u, d),
        q5_0(qs.z, 4u, qh >> 24u, d), q5_0(qs.w, 4u, qh >> 28u, d),
    );
}

// Q8_0 (34 B / 32): d: f16, qs[32] i8. value = q * d.
fn dc_q8_0(row: u32, c: u32) -> array<vec4<f32>, 8> {
    let base = row + 34u * c;
    let s = base & 15u;
    let win = window3(base);
    let d = half_in(win.a, s);
    let w = words8(win, s + 2u);
    return array<vec4<f32>, 8>(
        sbyte4(w.lo.x) * d, sbyte4(w.lo.y) * d, sbyte4(w.lo.z) * d, sbyte4(w.lo.w) * d,
        sbyte4(w.hi.x) * d, sbyte4(w.hi.y) * d, sbyte4(w.hi.z) * d, sbyte4(w.hi.w) * d,
    );
}

// Byte `j` (< 12) of the scales that follow d and dmin in a Q4_K block header.
fn scale_byte(hdr: vec4<u32>, j: u32) -> u32 {
    let word = select(select(hdr.y, hdr.z, j >= 4u), hdr.w, j >= 8u);
    return (word >> (8u * (j & 3u))) & 0xFFu;
}

// Q4_K (144 B / 256): d: f16, dmin: f16, scales[12], qs[128]. Chunk c is sub-block j of
// block c / 8, with 6-bit scale and min (ggml's get_scale_min_k4); it takes the low (j even)
// or high nibbles of qs[32 * (j / 2) ..][0..32]. value = d * scale * q - dmin * min. The
// block size is a multiple of 16, so every read is aligned.
fn dc_q4_k(row: u32, c: u32) -> array<vec4<f32>, 8> {
    let i = (row + (c >> 3u) * 144u) >> 4u;
    let j = c & 7u;
    let hdr = wq[i];
    let q0 = wq[i + 1u + 2u * (j >> 1u)];
    let q1 = wq[i + 2u + 2u * (j >> 1u)];
    var scale: u32;
    var mn: u32;
    if (j < 4u) {
        scale = scale_byte(hdr, j) & 63u;
        mn = scale_byte(hdr, j + 4u) & 63u;
    } else {
        let b = scale_byte(hdr, j + 4u);
        scale = (b & 15u) | ((scale_byte(hdr, j - 4u) >> 6u) << 4u);
        mn = (b >> 4u) | ((scale_byte(hdr, j) >> 6u) << 4u);
    }
    let dd = unpack2x16float(hdr.x);
    let dl = dd.x * f32(scale);
    let ml = dd.y * f32(mn);
    let sh = 4u * (j & 1u);
    return array<vec4<f32>, 8>(
        dl * nib4(q0.x, sh) - ml, dl * nib4(q0.y, sh) - ml,
        dl * nib4(q0.z, sh) - ml, dl * nib4(q0.w, sh) - ml,
        dl * nib4(q1.x, sh) - ml, dl * nib4(q1.y, sh) - ml,
        dl * nib4(q1.z, sh) - ml, dl * nib4(q1.w, sh) - ml,
    );
}

// Four Q6_K values: low bits from the bytes of `l` (shifted by `ls`), high bits from the
// bytes of `h` (shifted by `hs`).
fn q6_k(l: u32, h: u32, ls: u32, hs: u32, dl: f32) -> vec4<f32> {
    let hi = (vec4<u32>(h) >> (vec4<u32>(0u, 8u, 16u, 24u) + hs)) & vec4<u32>(3u);
    return dl * (vec4<f32>(nib4u(l, ls) | (hi << vec4<u32>(4u))) - 32.0);
}

// Q6_K (210 B / 256): ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] i8, d: f16.
// Element 128h + 32p + l (p = 0..3, l = 0..31): low bits from ql[64h + l + 32 (p & 1)]
// (low nibble for p < 2, high for p >= 2), high bits (2p .. 2p+1) of qh[32h + l], scale
// scales[8h + l / 16 + 2p]. value = d * scale * (q - 32). Chunk c is (h, p) = ((c / 4) % 2,
// c % 4) of block c / 8.
fn dc_q6_k(row: u32, c: u32) -> array<vec4<f32>, 8> {
    let base = row + (c >> 3u) * 210u;
    let h = (c >> 2u) & 1u;
    let p = c & 3u;
    let ol = base + 64u * h + 32u * (p & 1u);
    let ql = words8(window3(ol), ol & 15u);
    let oh = base + 128u + 32u * h;
    let qh = words8(window3(oh), oh & 15u);
    let os = base + 192u + 8u * h + 2u * p;
    let sv = vload(os >> 4u)[(os >> 2u) & 3u] >> (8u * (os & 2u));
    let sc = vec2<f32>(vec2<i32>(bitcast<i32>(sv << 24u), bitcast<i32>(sv << 16u)) >> vec2<u32>(24u));
    let od = base + 208u;
    let d = half_in(vload(od >> 4u), od & 15u);
    let dl0 = d * sc.x;
    let dl1 = d * sc.y;
    let ls = 4u * (p >> 1u);
    let hs = 2u * p;
    return array<vec4<f32>, 8>(
        q6_k(ql.lo.x, qh.lo.x, ls, hs, dl0), q6_k(ql.lo.y, qh.lo.y, ls, hs, dl0),
        q6_k(ql.lo.z, qh.lo.z, ls, hs, dl0), q6_k(ql.lo.w, qh.lo.w, ls, hs, dl0),
        q6_k(ql.hi.x, qh.hi.x, ls, hs, dl1), q6_k(ql.hi.y, qh.hi.y, ls, hs, dl1),
        q6_k(ql.hi.z, qh.hi.z, ls, hs, dl1), q6_k(ql.hi.w, qh.hi.w, ls, hs, dl1),
    );
}

// Readers for dequant_units.inc.wgsl (the types added later, concatenated after this file):
// the same byte_at / half_at / word_at as dequant.inc.wgsl's, over `wq`.
fn wq_word(i: u32) -> u32 {
    return vload(i >> 2u)[i & 3u];
}

fn byte_at(off: u32) -> u32 {
    return (wq_word(off >> 2u) >> ((off & 3u) * 8u)) & 0xFFu;
}

fn half_at(off: u32) -> f32 {
    let word = wq_word(off >> 2u);
    return unpack2x16float(select(word, word >> 16u, (off & 2u) != 0u)).x;
}

fn word_at(off: u32) -> u32 {
    let i = off >> 2u;
    let s = (off & 3u) * 8u;
    if (s == 0u) {
        return wq_word(i);
    }
    return (wq_word(i) >> s) | (wq_word(i + 1u) << (32u - s));
}

// A chunk of 32 as the two units of 16 that make it.
fn two_units(a: array<vec4<f32>, 4>, b: array<vec4<f32>, 4>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]);
}

// Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS: word reads through the helpers above, a unit at a
// time (fewer load instructions per element is left for later; these are correct first).
fn dc_q5_1(row: u32, c: u32) -> array<vec4<f32>, 8> {
    return two_units(dq_q5_1(row, 2u * c), dq_q5_1(row, 2u * c + 1u));
}

fn dc_q2_k(row: u32, c: u32) -> array<vec4<f32>, 8> {
    return two_units(dq_q2_k(row, 2u * c), dq_q2_k(row, 2u * c + 1u));
}

fn dc_q3_k(row: u32, c: u32) -> array<vec4<f32>, 8> {
    return two_units(dq_q3_k(row, 2u * c), dq_q3_k(row, 2u * c + 1u));
}

fn dc_q5_k(row: u32, c: u32) -> array<vec4<f32>, 8> {
    return two_units(dq_q5_k(row, 2u * c), dq_q5_k(row, 2u * c + 1u));
}

fn dc_iq4_nl(row: u32, c: u32) -> array<vec4<f32>, 8> {
    return two_units(dq_iq4_nl(row, 2u * c), dq_iq4_nl(row, 2u * c + 1u));
}

fn dc_iq4_xs(row: u32, c: u32) -> array<vec4<f32>, 8> {
    return two_units(dq_iq4_xs(row, 2u * c), dq_iq4_xs(row, 2u * c + 1u));
}
