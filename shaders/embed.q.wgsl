// Embedding gather: out[t, :] = dequant(W[ids[t], :]) for t < T.
//
//   step:   Step uniform; step.t = T
//   p:      Params (below); this dispatch covers table rows row0 .. row0 + rows
//   w:      [rows, row_bytes] GGUF blocks of those rows, as u32 words (see dequant.inc.wgsl)
//   ids:    [T] u32 token ids
//   out:    [T, K] f32, each value times p.scale (1, or gemma3's sqrt(dim))
//
// One thread per (token, 16-element unit). A table split over several buffers is one
// dispatch per part; a token is written by the part holding its row. Ids outside the table
// (>= n) give a zero row, written by the first part.

struct Step {
    t: u32,
    n_past: u32,
    _p0: u32,
    _p1: u32,
}

struct Params {
    rows: u32,      // table rows in this part
    k: u32,         // row length (elements)
    n: u32,         // rows of the whole table
    row0: u32,      // first row of this part
    row_bytes: u32,
    first_part: u32,
    scale: f32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let units = p.k / 16u;
    let gid = (wg.x + wg.y * nwg.x) * 64u + lid;
    let t = gid / units;
    let u = gid % units;
    if (t >= step.t) {
        return;
    }
    let id = ids[t];
    let o = (t * p.k + 16u * u) / 4u;
    if (id >= p.row0 && id < p.row0 + p.rows) {
        let v = dequant_unit((id - p.row0) * p.row_bytes, u);
        for (var c = 0u; c < 4u; c++) {
            out[o + c] = v[c] * p.scale;
        }
    } else if (id >= p.n && p.first_part != 0u) {
        for (var c = 0u; c < 4u; c++) {
            out[o + c] = vec4<f32>(0.0);
        }
    }
}
