// Y[T, N] (+)= X[T, K] · W[N, K]ᵀ (+ bias) for small T (decode and tree verification).
//
//   step:   Step uniform; step.t = T
//   p:      Params (below); this dispatch covers weight rows row0 .. row0 + rows
//   wq:     [rows, row_bytes] GGUF blocks of those rows, as vec4<u32> (dequant_chunk.inc.wgsl)
//   x:      [T, K] f32 as vec4 (K is a multiple of 32)
//   y:      [T, N] f32
//   bias:   [N] f32 (a dummy when p.has_bias == 0)
//
// Shape. A workgroup of 64 threads is RG row groups × TPR lanes; a row group owns RPT = 4
// consecutive rows (the four components of its vec4 accumulators). Lane `l` walks the
// 32-element chunks l, l + TPR, l + 2·TPR, ... of its rows: it dequantizes each chunk of
// the 4 rows once and applies it to every token of the tile (up to TT = 8 tokens), keeping
// one running vec4 per token. So each weight byte is read once per tile of 8 tokens, each
// x value once per 4 rows, and neighbouring lanes read neighbouring chunks of a row
// (coalesced on GPUs). At the end of a tile the TPR partial sums of each (token, row) go
// through workgroup memory and one thread adds them up in lane order: one barrier and TPR
// adds per token, for the tokens the tile really has.
//
// Batch invariance. A token's result is: for each lane, the chunks in walk order, each
// chunk's 8 vec4 dot products summed in order; then the lanes' sums added in lane order.
// That depends on K and this shape only, never on T or on the tile slot a token lands in
// (every slot runs the same code), so a row is bit-identical for T = 1 and T = 64 (tested).
// Slots past T are skipped by branches that are uniform across the workgroup.

struct Step {
    t: u32,
    n_past: u32,
    _p0: u32,
    _p1: u32,
}

struct Params {
    rows: u32,      // weight rows in this part
    k: u32,
    n: u32,         // row stride of y (all rows of W)
    row0: u32,      // first row of this part in y's columns and bias
    row_bytes: u32,
    has_bias: u32,
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> wq: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;

const WG = 64u;
const TPR = 16u;         // lanes per row group (along K)
const RG = WG / TPR;     // row groups per workgroup
const RPT = 4u;          // rows per row group
const ROWS = RG * RPT;   // rows per workgroup (SMALL_ROWS in src/kernels/matmul.rs)
const TT = 8u;           // tokens per tile

var<workgroup> red: array<vec4<f32>, 512>; // [TT][WG]

alias Chunk = array<vec4<f32>, 8>;

// Chunk `c` of four rows times the 32 x values at x[xi ..] (vec4 index), one sum per row.
fn dot_chunk(w0: Chunk, w1: Chunk, w2: Chunk, w3: Chunk, xi: u32) -> vec4<f32> {
    var s = vec4<f32>(0.0);
    for (var q = 0u; q < 8u; q++) {
        let xv = x[xi + q];
        s += vec4<f32>(dot(w0[q], xv), dot(w1[q], xv), dot(w2[q], xv), dot(w3[q], xv));
    }
    return s;
}

fn emit(t: u32, r: u32, v: f32) {
    if (r >= p.rows) {
        return;
    }
    let col = p.row0 + r;
    var o = v;
    if (p.has_bias != 0u) {
        o += bias[col];
    }
    let yi = t * p.n + col;
    if (p.accumulate != 0u) {
        o += y[yi];
    }
    y[yi] = o;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = wg.x + wg.y * nwg.x;
    let lane = lid % TPR;
    let rg = lid / TPR;
    let r0 = group * ROWS + rg * RPT;
    let last = p.rows - 1u;
    let o0 = min(r0, last) * p.row_bytes;
    let o1 = min(r0 + 1u, last) * p.row_bytes;
    let o2 = min(r0 + 2u, last) * p.row_bytes;
    let o3 = min(r0 + 3u, last) * p.row_bytes;
    let chunks = p.k / 32u;
    let k4 = p.k / 4u;
    let t_total = step.t;

    for (var t0 = 0u; t0 < t_total; t0 += TT) {
        let nt = min(TT, t_total - t0);
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        var a4 = vec4<f32>(0.0);
        var a5 = vec4<f32>(0.0);
        var a6 = vec4<f32>(0.0);
        var a7 = vec4<f32>(0.0);
        for (var c = lane; c < chunks; c += TPR) {
            let w0 = dequant_chunk(o0, c);
            let w1 = dequant_chunk(o1, c);
            let w2 = dequant_chunk(o2, c);
            let w3 = dequant_chunk(o3, c);
            let xi = t0 * k4 + 8u * c;
            a0 += dot_chunk(w0, w1, w2, w3, xi);
            if (nt > 1u) { a1 += dot_chunk(w0, w1, w2, w3, xi + k4); }
            if (nt > 2u) { a2 += dot_chunk(w0, w1, w2, w3, xi + 2u * k4); }
            if (nt > 3u) { a3 += dot_chunk(w0, w1, w2, w3, xi + 3u * k4); }
            if (nt > 4u) { a4 += dot_chunk(w0, w1, w2, w3, xi + 4u * k4); }
            if (nt > 5u) { a5 += dot_chunk(w0, w1, w2, w3, xi + 5u * k4); }
            if (nt > 6u) { a6 += dot_chunk(w0, w1, w2, w3, xi + 6u * k4); }
            if (nt > 7u) { a7 += dot_chunk(w0, w1, w2, w3, xi + 7u * k4); }
        }
        red[lid] = a0;
        if (nt > 1u) { red[WG + lid] = a1; }
        if (nt > 2u) { red[2u * WG + lid] = a2; }
        if (nt > 3u) { red[3u * WG + lid] = a3; }
        if (nt > 4u) { red[4u * WG + lid] = a4; }
        if (nt > 5u) { red[5u * WG + lid] = a5; }
        if (nt > 6u) { red[6u * WG + lid] = a6; }
        if (nt > 7u) { red[7u * WG + lid] = a7; }
        workgroupBarrier();
        // Thread j·RG + g sums token slot j of row group g over its TPR lanes, in lane order.
        if (lid < nt * RG) {
            let j = lid / RG;
            let g = lid % RG;
            let base = j * WG + g * TPR;
            var s = red[base];
            for (var l = 1u; l < TPR; l++) {
                s += red[base + l];
            }
            let t = t0 + j;
            let r = group * ROWS + g * RPT;
            emit(t, r, s.x);
            emit(t, r + 1u, s.y);
            emit(t, r + 2u, s.z);
            emit(t, r + 3u, s.w);
        }
        workgroupBarrier();
    }
}
