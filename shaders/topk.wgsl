// The K most likely tokens of each logits row, with their softmax probabilities:
//   x: [R, V] f32 logits    ids: [R, K] u32    probs: [R, K] f32    R = step.t, K = override
// Order: by logit, descending; ties to the lower index; NaN never chosen. probs[r, j] =
// exp(x[r, ids[r, j]] - max) / Σ exp(x[r, :] - max). The drafter uses this to grow a tree
// (EAGLE-2 style) without reading a vocabulary-sized row back.
// One workgroup per row: each thread keeps a sorted top-K of its strided slice plus an
// online (max, Σexp) pair; thread 0 merges the WG lists (K passes over WG·K candidates).

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { v: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> probs: array<f32>;

override K: u32 = 4u;
const KMAX: u32 = 8u;
const WG: u32 = 128u;
const NONE: u32 = 0xffffffffu;
var<workgroup> cand_key: array<u32, 1024>; // WG * KMAX
var<workgroup> cand_idx: array<u32, 1024>;
var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;

// Monotone map from f32 to u32 (see argmax.wgsl). NaN → 0.
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

// (ka, ia) ranks before (kb, ib).
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    if (ia == NONE) {
        return false;
    }
    if (ib == NONE) {
        return true;
    }
    return ka > kb || (ka == kb && ia < ib);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wg.x;
    if (row >= step.t) {
        return;
    }
    let v = params.v;
    let base = row * v;
    var lk: array<u32, KMAX>;
    var li: array<u32, KMAX>;
    for (var j = 0u; j < KMAX; j++) {
        lk[j] = 0u;
        li[j] = NONE;
    }
    var m = -3.4e38;
    var s = 0.0;
    for (var i = lid; i < v; i += WG) {
        let f = x[base + i];
        let k = key(f);
        if (k != 0u) {
            if (f > m) {
                s = s * exp(m - f) + 1.0;
                m = f;
            } else {
                s += exp(f - m);
            }
        }
        // Insert into the sorted local list (indices grow, so equal keys stay behind).
        if (k != 0u && before(k, i, lk[K - 1u], li[K - 1u])) {
            var j = K - 1u;
            loop {
                if (j == 0u || !before(k, i, lk[j - 1u], li[j - 1u])) {
                    break;
                }
                lk[j] = lk[j - 1u];
                li[j] = li[j - 1u];
                j--;
            }
            lk[j] = k;
            li[j] = i;
        }
    }
    for (var j = 0u; j < K; j++) {
        cand_key[lid * K + j] = lk[j];
        cand_idx[lid * K + j] = li[j];
    }
    red_m[lid] = m;
    red_s[lid] = s;
    workgroupBarrier();
    // (max, Σexp) reduction in a fixed tree.
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let m1 = red_m[lid];
            let m2 = red_m[lid + stride];
            let mm = max(m1, m2);
            red_s[lid] = red_s[lid] * exp(m1 - mm) + red_s[lid + stride] * exp(m2 - mm);
            red_m[lid] = mm;
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let total_m = red_m[0];
        let total_s = red_s[0];
        for (var j = 0u; j < K; j++) {
            var bk = 0u;
            var bi = NONE;
            var bpos = NONE;
            for (var c = 0u; c < WG * K; c++) {
                if (before(cand_key[c], cand_idx[c], bk, bi)) {
                    bk = cand_key[c];
                    bi = cand_idx[c];
                    bpos = c;
                }
            }
            if (bpos != NONE) {
                cand_idx[bpos] = NONE;
                ids[row * K + j] = bi;
                probs[row * K + j] = exp(x[base + bi] - total_m) / total_s;
            } else {
                ids[row * K + j] = 0u;
                probs[row * K + j] = 0.0;
            }
        }
    }
}
