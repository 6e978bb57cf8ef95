// Greedy pick: out[r] = argmax_i x[r, i]
//   x: [R, V] f32 logits    out: [R] u32    R = step.t rows, V up to 151,936
// Ties go to the lowest index. NaN never wins (a row of only NaN gives 0); -0.0 equals +0.0.
// Values are compared as order-preserving u32 keys built from their bits, so the result
// does not depend on how the GPU treats NaN in float comparisons (WGSL leaves that open).
// (key, index) is a total order, so the answer is independent of reduction order.
// One workgroup per row: strided scan per thread, then a tree over WG candidates.

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { v: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
var<workgroup> best_key: array<u32, WG>;
var<workgroup> best_idx: array<u32, WG>;

// Monotone map from f32 to u32: a < b (as floats) ⇔ key(a) < key(b). NaN → 0, below -inf.
fn key(f: f32) -> u32 {
    var b = bitcast<u32>(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return 0u;
    }
    if (b == 0x80000000u) {
        b = 0u;
    }
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wg.x;
    if (row >= step.t) {
        return;
    }
    let v = params.v;
    let base = row * v;
    // Indices only grow along a thread's scan, so a strict `>` keeps the lowest index.
    var bk = 0u;
    var bi = 0xffffffffu;
    for (var i = lid; i < v; i += WG) {
        let k = key(x[base + i]);
        if (k > bk || bi == 0xffffffffu) {
            bk = k;
            bi = i;
        }
    }
    best_key[lid] = bk;
    best_idx[lid] = bi;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let ok = best_key[lid + stride];
            let oi = best_idx[lid + stride];
            let mk = best_key[lid];
            let mi = best_idx[lid];
            if (oi != 0xffffffffu && (mi == 0xffffffffu || ok > mk || (ok == mk && oi < mi))) {
                best_key[lid] = ok;
                best_idx[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[row] = select(best_idx[0], 0u, best_idx[0] == 0xffffffffu);
    }
}
