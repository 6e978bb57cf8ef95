// Y[T, N] (+)= X[T, K] · W[N, K]ᵀ (+ bias) for small T (decode and tree verification).
//
//   step:   Step uniform; step.t = T
//   p:      Params (below); this dispatch covers weight rows row0 .. row0 + rows
//   w:      [rows, row_bytes] GGUF blocks of those rows, as u32 words (see dequant.inc.wgsl)
//   x:      [T, K] f32 as vec4 (K is a multiple of 16)
//   y:      [T, N] f32
//   bias:   [N] f32 (a dummy when p.has_bias == 0)
//
// A workgroup of 64 threads takes ROWS weight rows, TPR threads per row. Thread `lane` of a
// row dequantizes units lane, lane + TPR, ... (16 elements each) once per tile of TT tokens
// and applies them to every token of the tile, then the row's TPR partial sums are added in
// a fixed tree. A token's result depends only on K and this shape, never on T or on which
// tile slot it lands in: the kernel is batch invariant (tested bit for bit).

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
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;

const WG = 64u;
const ROWS = 2u;
const TPR = 32u; // WG / ROWS
const TT = 16u;  // tokens per tile

var<workgroup> red: array<f32, 1024>; // TT * WG

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = wg.x + wg.y * nwg.x;
    let lane = lid % TPR;
    let r = group * ROWS + lid / TPR;
    let row_ok = r < p.rows;
    let row = min(r, p.rows - 1u) * p.row_bytes;
    let units = p.k / 16u;
    let k4 = p.k / 4u;
    let t_total = step.t;

    for (var t0 = 0u; t0 < t_total; t0 += TT) {
        var acc: array<f32, 16>;
        for (var j = 0u; j < TT; j++) {
            acc[j] = 0.0;
        }
        for (var u = lane; u < units; u += TPR) {
            let wv = dequant_unit(row, u);
            for (var j = 0u; j < TT; j++) {
                if (t0 + j < t_total) {
                    let xi = (t0 + j) * k4 + 4u * u;
                    acc[j] += dot(wv[0], x[xi]) + dot(wv[1], x[xi + 1u])
                            + dot(wv[2], x[xi + 2u]) + dot(wv[3], x[xi + 3u]);
                }
            }
        }
        for (var j = 0u; j < TT; j++) {
            red[j * WG + lid] = acc[j];
        }
        workgroupBarrier();
        for (var s = TPR / 2u; s > 0u; s >>= 1u) {
            if (lane < s) {
                for (var j = 0u; j < TT; j++) {
                    red[j * WG + lid] += red[j * WG + lid + s];
                }
            }
            workgroupBarrier();
        }
        let t = t0 + lane;
        if (row_ok && lane < TT && t < t_total) {
            let col = p.row0 + r;
            var v = red[lane * WG + lid - lane];
            if (p.has_bias != 0u) {
                v += bias[col];
            }
            let yi = t * p.n + col;
            if (p.accumulate != 0u) {
                v += y[yi];
            }
            y[yi] = v;
        }
        workgroupBarrier();
    }
}
