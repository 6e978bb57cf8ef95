// Y[T, N] (+)= X[T, K] · W[N, K]ᵀ (+ bias) for small T (decode and tree verification).
//
//   step:   Step uniform; step.t = T
//   p:      Params (below); this dispatch covers weight rows row0 .. row0 + rows
//   wq:     [rows, row_bytes] GGUF blocks of those rows, as vec4<u32> (dequant_chunk.inc.wgsl)
//   x:      [T, K] f32 as vec4 (K is a multiple of 32); [T, 2K] with the GLU prologue
//   y:      [T, N] f32
//   bias:   [N] f32 (a dummy when p.has_bias == 0)
//
// Two layouts, chosen per adapter when the pipeline is built (`Layout` in
// src/kernels/mod.rs; src/kernels/matmul.rs sets the overrides WG, TPR and H). A row group
// of TPR threads owns RPT = 4·H consecutive rows, held as H vec4s of 4 rows.
//
// * gpu layout: WG = 64 threads = 4 row groups of TPR = 16 lanes, H = 1: 16 rows per
//   workgroup. Lane `l` walks the 32-element chunks l, l + TPR, ... of its 4 rows, so
//   neighbouring threads read neighbouring bytes of a row (coalesced), and the TPR partial
//   sums of each (token, row) are added through workgroup memory at the end.
// * cpu layout (CPU adapters: llvmpipe, SwiftShader): WG = 16, TPR = 1, H = 2: every
//   thread owns 8 whole rows and walks all their chunks; no reduction, no barrier; 128
//   rows per workgroup (small workgroups cost little there and keep more cores busy on
//   narrow matrices). A CPU runs a workgroup's threads as the lanes of SIMD registers,
//   executes every branch and loop of the lanes masked rather than skipping it, pays for
//   each load instruction one lane at a time and for each barrier with a coroutine switch
//   per SIMD group. Whole rows per thread make the fewest loads (x is read once per 8 rows)
//   and need no barrier: on llvmpipe 1.1-4.6x faster than the gpu layout. On a GPU the
//   same layout would read 8 rows per thread in as many places and leave most of the
//   machine idle on the narrow matrices of small models.
//
// Both: a thread dequantizes each chunk of its rows once per tile of up to TT = 16 tokens
// and applies it to every token of the tile. The running sums (4 rows of one token = one
// vec4) live in workgroup memory indexed by token slot, so the token loop runs exactly T
// times: no work for slots past T (a CPU would execute skipped slots, masked) and no
// private array indexed at run time. Loops test at the bottom (`break if`): a CPU runs a
// loop body once more, masked, when a top test fails. Inner loops over fixed counts are
// unrolled by hand: a compiler that keeps them indexes the chunk arrays at run time and
// spills them to memory (10x slower on llvmpipe).
//
// Batch invariance. A token's result is: for each lane, the chunks in walk order, each
// chunk's 8 vec4 dot products summed in order; then the lanes' sums added in lane order.
// That depends on K and the layout only, never on T or on the tile slot a token lands
// in (every slot runs the same code), so a row is bit-identical for T = 1 and T = 64
// (tested for both layouts).
//
// RMSNorm prologue (override NORM, the fusion of an `x → rmsnorm(x)·g` dispatch into the
// matmul that consumes it). Then y = (1/rms(x_t)) · Σ_k W[n,k]·(x[t,k]·g[k]): each x load is
// multiplied by the norm weight g (binding 6, the chunk's 8 vec4 read once per chunk), and
// the row's sum by the token's 1/rms in the epilogue, before bias and accumulation. Thread
// j < nt of a tile sums token t0 + j's squares in vec4 order over all of K (the tile's
// 1/rms values, through workgroup memory, between two barriers). The same expression for
// every token, whatever T: batch invariance as above. With NORM off, binding 6 is bound
// to x and never read.
//
// GLU prologue (override GLU: 1 SiLU, 2 GELU-tanh; the fusion of the gated activation's
// dispatch, silu_mul.wgsl / gelu_mul.wgsl, into the down projection that consumes it). x
// is the gate|up matmul's output [T, 2K] (gate in columns [0, K), up in [K, 2K)) and the
// kernel multiplies W by act(gate)·up, computed as each x vec4 is loaded with the
// functions of those two kernels (glu.inc.wgsl, prepended as the dequant helpers are).
// Element-wise: batch invariant. The activation is recomputed wherever an x vec4 is loaded (by each row group of each
// workgroup): one exp per 4 weights per token in the gpu layout, per 8 in the cpu layout,
// arithmetic that hides under the weight reads, against one dispatch and a [T, K] round
// trip through memory saved. At most one of NORM and GLU.

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
    eps: f32,       // the RMSNorm prologue's epsilon (NORM)
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> wq: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> gnorm: array<vec4<f32>>;

override WG: u32 = 64u;  // threads per workgroup
override TPR: u32 = 16u; // threads per row group
override H: u32 = 1u;    // vec4s of rows per row group
override RG: u32 = WG / TPR;     // row groups per workgroup
override RPT: u32 = 4u * H;      // rows per row group
override ROWS: u32 = RG * RPT;   // rows per workgroup (small_rows in src/kernels/matmul.rs)
override NORM: bool = false;     // the RMSNorm prologue (header)
override GLU: u32 = 0u;          // the GLU prologue: 0 none, 1 SiLU, 2 GELU-tanh (header)
const TT = 16u;                  // tokens per tile (WG >= TT: both layouts)

// Per token slot, vec4 half and thread: the running sums of 4 of its rows; then the
// reduction's input. [TT][H][WG]
var<workgroup> red: array<vec4<f32>, TT * H * WG>;
// NORM: 1/rms of the tile's tokens, by slot.
var<workgroup> inv_rms: array<f32, TT>;

alias Chunk = array<vec4<f32>, 8>;

// act(g)·u for the GLU prologue, per component with glu.inc.wgsl's silu_mul / gelu_mul
// (the expressions of the separate dispatch).
fn glu(g: vec4<f32>, u: vec4<f32>) -> vec4<f32> {
    if (GLU == 1u) {
        return vec4<f32>(silu_mul(g.x, u.x), silu_mul(g.y, u.y), silu_mul(g.z, u.z), silu_mul(g.w, u.w));
    }
    return vec4<f32>(gelu_mul(g.x, u.x), gelu_mul(g.y, u.y), gelu_mul(g.z, u.z), gelu_mul(g.w, u.w));
}

fn dot4(w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>, xv: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(w0, xv), dot(w1, xv), dot(w2, xv), dot(w3, xv));
}

// A chunk of four rows times its 32 x values, one sum per row (summed in vec4 order).
fn dot_chunk(w0: Chunk, w1: Chunk, w2: Chunk, w3: Chunk,
             x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
             x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> vec4<f32> {
    var s = dot4(w0[0], w1[0], w2[0], w3[0], x0);
    s += dot4(w0[1], w1[1], w2[1], w3[1], x1);
    s += dot4(w0[2], w1[2], w2[2], w3[2], x2);
    s += dot4(w0[3], w1[3], w2[3], w3[3], x3);
    s += dot4(w0[4], w1[4], w2[4], w3[4], x4);
    s += dot4(w0[5], w1[5], w2[5], w3[5], x5);
    s += dot4(w0[6], w1[6], w2[6], w3[6], x6);
    s += dot4(w0[7], w1[7], w2[7], w3[7], x7);
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
    let o4 = min(r0 + 4u, last) * p.row_bytes;
    let o5 = min(r0 + 5u, last) * p.row_bytes;
    let o6 = min(r0 + 6u, last) * p.row_bytes;
    let o7 = min(r0 + 7u, last) * p.row_bytes;
    let chunks = p.k / 32u;
    let k4 = p.k / 4u;
    // x's row stride in vec4s: gate|up rows are twice as wide.
    var xs = k4;
    if (GLU != 0u) {
        xs = 2u * k4;
    }
    let t_total = step.t;

    // Loops test their condition at the bottom (`break if`): CPU implementations run a
    // loop's body once more, masked, when a top test fails, which costs as much as a pass.
    var t0 = 0u;
    loop {
        let nt = min(TT, t_total - t0);
        var j = 0u;
        loop {
            red[j * H * WG + lid] = vec4<f32>(0.0);
            if (H > 1u) {
                red[(j * H + 1u) * WG + lid] = vec4<f32>(0.0);
            }
            continuing {
                j += 1u;
                break if j >= nt;
            }
        }
        if (NORM) {
            // The previous tile's epilogue has read its values.
            workgroupBarrier();
            if (lid < nt) {
                let xb = (t0 + lid) * k4;
                var ss = 0.0;
                for (var e = 0u; e < k4; e++) {
                    let v = x[xb + e];
                    ss += dot(v, v);
                }
                inv_rms[lid] = 1.0 / sqrt(ss / f32(p.k) + p.eps);
            }
            workgroupBarrier();
        }
        var c = lane;
        if (c < chunks) {
            loop {
                // The norm weight of this chunk (1 without the prologue).
                var g0 = vec4<f32>(1.0);
                var g1 = vec4<f32>(1.0);
                var g2 = vec4<f32>(1.0);
                var g3 = vec4<f32>(1.0);
                var g4 = vec4<f32>(1.0);
                var g5 = vec4<f32>(1.0);
                var g6 = vec4<f32>(1.0);
                var g7 = vec4<f32>(1.0);
                if (NORM) {
                    g0 = gnorm[8u * c];
                    g1 = gnorm[8u * c + 1u];
                    g2 = gnorm[8u * c + 2u];
                    g3 = gnorm[8u * c + 3u];
                    g4 = gnorm[8u * c + 4u];
                    g5 = gnorm[8u * c + 5u];
                    g6 = gnorm[8u * c + 6u];
                    g7 = gnorm[8u * c + 7u];
                }
                let w0 = dequant_chunk(o0, c);
                let w1 = dequant_chunk(o1, c);
                let w2 = dequant_chunk(o2, c);
                let w3 = dequant_chunk(o3, c);
                var w4: Chunk;
                var w5: Chunk;
                var w6: Chunk;
                var w7: Chunk;
                if (H > 1u) {
                    w4 = dequant_chunk(o4, c);
                    w5 = dequant_chunk(o5, c);
                    w6 = dequant_chunk(o6, c);
                    w7 = dequant_chunk(o7, c);
                }
                var j = 0u;
                loop {
                    let xi = (t0 + j) * xs + 8u * c;
                    // Unrolled by hand: a compiler that keeps this loop indexes the
                    // chunks at run time and spills them.
                    var x0 = x[xi];
                    var x1 = x[xi + 1u];
                    var x2 = x[xi + 2u];
                    var x3 = x[xi + 3u];
                    var x4 = x[xi + 4u];
                    var x5 = x[xi + 5u];
                    var x6 = x[xi + 6u];
                    var x7 = x[xi + 7u];
                    if (GLU != 0u) {
                        let ui = xi + k4;
                        x0 = glu(x0, x[ui]);
                        x1 = glu(x1, x[ui + 1u]);
                        x2 = glu(x2, x[ui + 2u]);
                        x3 = glu(x3, x[ui + 3u]);
                        x4 = glu(x4, x[ui + 4u]);
                        x5 = glu(x5, x[ui + 5u]);
                        x6 = glu(x6, x[ui + 6u]);
                        x7 = glu(x7, x[ui + 7u]);
                    }
                    if (NORM) {
                        x0 *= g0;
                        x1 *= g1;
                        x2 *= g2;
                        x3 *= g3;
                        x4 *= g4;
                        x5 *= g5;
                        x6 *= g6;
                        x7 *= g7;
                    }
                    let a = j * H * WG + lid;
                    red[a] += dot_chunk(w0, w1, w2, w3, x0, x1, x2, x3, x4, x5, x6, x7);
                    if (H > 1u) {
                        red[a + WG] += dot_chunk(w4, w5, w6, w7, x0, x1, x2, x3, x4, x5, x6, x7);
                    }
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
        // order (in the cpu layout, a thread's own slots).
        if (TPR > 1u) {
            workgroupBarrier();
        }
        let jobs = nt * H * RG;
        var q = lid;
        if (q < jobs) {
            loop {
                let j = q / (H * RG);
                let h = (q / RG) % H;
                let g = q % RG;
                let base = (j * H + h) * WG + g * TPR;
                var s = red[base];
                for (var l = 1u; l < TPR; l++) {
                    s += red[base + l];
                }
                if (NORM) {
                    s *= inv_rms[j];
                }
                let t = t0 + j;
                let r = group * ROWS + g * RPT + 4u * h;
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
