// Y[T, N] (+)= X[T, K] · W[N, K]ᵀ (+ bias) for small T (decode and tree verification).
//
//   step:   Step uniform; step.t = T
//   p:      Params (below); this dispatch covers weight rows row0 .. row0 + rows
//   wq:     [rows, row_bytes] GGUF blocks of those rows, as vec4<u32> (dequant_chunk.inc.wgsl)
//   x:      [T, K] f32 as vec4 (K is a multiple of 32)
//   y:      [T, N] f32
//   bias:   [N] f32 (a dummy when p.has_bias == 0)
//
// Two shapes, chosen per adapter when the pipeline is built (src/kernels/matmul.rs,
// `SmallShape`), which prepends `const WG` and `const TPR` to this file:
//
// * lanes (GPUs): WG = 64 threads = RG = WG / TPR row groups × TPR = 16 lanes. A row group
//   owns RPT = 4 consecutive rows. Lane `l` walks the 32-element chunks l, l + TPR, ... of
//   its rows, so neighbouring threads read neighbouring bytes of a row (coalesced), and the
//   TPR partial sums of each (token, row) are added through workgroup memory at the end.
// * rows (CPU adapters: llvmpipe, SwiftShader): TPR = 1, every thread owns 4 whole rows and
//   walks all their chunks: no reduction, no barrier. A CPU runs a workgroup's threads as
//   the lanes of SIMD registers, pays for each load instruction one lane at a time and for
//   each barrier with a coroutine switch per SIMD group, and has only a few cores to keep
//   busy; 4 whole rows per thread make the fewest loads and no barrier (4-5x faster there
//   than the lanes shape), while on a GPU it would read 64 rows in 64 places and leave most
//   of the machine idle for the narrow matrices of small models.
//
// Both: a thread dequantizes each chunk of its 4 rows once per tile of up to TT = 16 tokens
// and applies it to every token of the tile; x is read once per 4 rows. The running sums
// (4 rows of one token = one vec4) live in workgroup memory indexed by token slot, so the
// token loop runs exactly T times: no work for slots past T and no private array indexed
// at run time.
//
// Batch invariance. A token's result is: for each lane, the chunks in walk order, each
// chunk's 8 vec4 dot products summed in order; then the lanes' sums added in lane order.
// That depends on K and the shape only, never on T or on the tile slot a token lands in
// (every slot runs the same code), so a row is bit-identical for T = 1 and T = 64 (tested
// for both shapes).

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

const RG = WG / TPR;     // row groups per workgroup
const RPT = 4u;          // rows per row group
const ROWS = RG * RPT;   // rows per workgroup (SmallShape::rows in src/kernels/matmul.rs)
const TT = 16u;          // tokens per tile

// Per thread and token slot, the running sums of its 4 rows; then the reduction's input.
var<workgroup> red: array<vec4<f32>, TT * WG>;

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

@compute @workgroup_size(WG)
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

    // Loops test their condition at the bottom (`break if`): CPU implementations run a
    // loop's body once more, masked, when a top test fails, which costs as much as a pass.
    var t0 = 0u;
    loop {
        let nt = min(TT, t_total - t0);
        var j = 0u;
        loop {
            red[j * WG + lid] = vec4<f32>(0.0);
            continuing {
                j += 1u;
                break if j >= nt;
            }
        }
        var c = lane;
        if (c < chunks) {
            loop {
                let w0 = dequant_chunk(o0, c);
                let w1 = dequant_chunk(o1, c);
                let w2 = dequant_chunk(o2, c);
                let w3 = dequant_chunk(o3, c);
                let xi = t0 * k4 + 8u * c;
                var j = 0u;
                loop {
                    let a = j * WG + lid;
                    red[a] += dot_chunk(w0, w1, w2, w3, xi + j * k4);
                    continuing {
                        j += 1u;
                        break if j >= nt;
                    }
                }
                continuing {
                    c += TPR;
                    break if c >= chunks;
                }
            }
        }
        // Job q = j·RG + g: token slot j of row group g, its TPR lane sums added in lane
        // order (in the rows shape, a thread's own slots).
        if (TPR > 1u) {
            workgroupBarrier();
        }
        let jobs = nt * RG;
        var q = lid;
        if (q < jobs) {
            loop {
                let j = q / RG;
                let g = q % RG;
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
                continuing {
                    q += WG;
                    break if q >= jobs;
                }
            }
        }
        if (TPR > 1u) {
            workgroupBarrier();
        }
        continuing {
            t0 += TT;
            break if t0 >= t_total;
        }
    }
}
