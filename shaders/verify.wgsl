// Tree verification: which rows of the draft tree the target accepts, and the token it adds.
//   tokens:  [T] u32   batch tokens; row 0 is the root (the last accepted token)
//   parents: [T] u32   parent batch row of each row (row 0's entry is never read)
//   keep:    [trials, MAX_T] u32         accepted rows, keep[0] = 0, increasing (kv_compact's input)
//   n_keep:  [trials] u32                n = accepted rows, root included (kv_compact's n_keep)
//   result:  [trials, 2 + MAX_T] u32     [n, bonus, tokens of rows keep[1..n]…, bonus]
//   greedy:   target_argmax: [T] u32      (the argmax kernel's output for the T rows)
//   sampling: target_probs: [T, V] f32    (the target's final distribution at each row)
//             rng: [4] u32 = [counter, seed_lo, seed_hi, 0] (`advance` adds the trials used)
//             scratch: [trials, V] f32    (the residual distribution)
//             draft_probs: [T, V] f32     (q at each row: the distribution its children were
//                                          drawn from; unused when params.onehot = 1)
// T = min(step.t, MAX_T). One workgroup per trial: the decode loop runs one; tests run
// thousands of independent trials (trial k uses counter + k) in one dispatch.
//
// The children of row r are the rows c with parents[c] = r, taken in row order (all after r).
// Greedy: from the root, move to the first child whose token is target_argmax[current];
// the bonus is target_argmax of the last accepted row. Equals `spec::tree::verify_greedy`.
// Sampling (Chen et al. / Leviathan et al.; SpecInfer's multi-round rule for siblings): at
// row r with p = target_probs[r], q = the draft distribution, for each child c (token x):
// accept with probability min(1, p[x] / q[x]) (u·q[x] < p[x], u uniform); if accepted, go
// on from c. If rejected, p ← normalize(max(p − q, 0)) and try the next child. When no child
// is left, the bonus is drawn from the current p (the residual after a rejection). This is
// lossless (emits tokens distributed as the target's p) when each child was drawn from its
// q independently of its siblings' draws: i.i.d. from draft_probs[r] with replacement
// (duplicates kept as rows), or (onehot = 1) proposed deterministically, q = δ(token).
// Bonus draws invert the CDF in sample.wgsl's fixed order.

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { v: u32, max_t: u32, onehot: u32, _p0: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> parents: array<u32>;
@group(0) @binding(4) var<storage, read_write> keep: array<u32>;
@group(0) @binding(5) var<storage, read_write> n_keep: array<u32>;
@group(0) @binding(6) var<storage, read_write> result: array<u32>;
@group(0) @binding(7) var<storage, read> target_argmax: array<u32>;
@group(0) @binding(8) var<storage, read> target_probs: array<f32>;
@group(0) @binding(9) var<storage, read_write> rng: array<u32>;
@group(0) @binding(10) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(11) var<storage, read> draft_probs: array<f32>;

const WG: u32 = 256u;
// Domain of this kernel's random stream (sample.wgsl uses another).
const DOMAIN: u32 = 0x56455246u;
const BONUS_DRAW: u32 = 0xffffu;
const CMD_RESIDUAL: u32 = 0u;
const CMD_BONUS: u32 = 1u;
const CMD_DEGENERATE: u32 = 2u;

var<workgroup> wg_cmd: u32;
var<workgroup> wg_cur: u32;
var<workgroup> wg_x: u32;
var<workgroup> wg_res: u32;
var<workgroup> wg_s: f32;
var<workgroup> wg_pick: u32;
var<workgroup> part: array<f32, WG>;
var<workgroup> cum: array<f32, 257>;

// Same hash as sample.wgsl (Jarzynski & Olano 2020, PCG4D applied twice).
fn pcg4d(a: vec4<u32>) -> vec4<u32> {
    var v = a * 1664525u + 1013904223u;
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    v ^= v >> vec4<u32>(16u);
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    return v;
}

// Uniform in [0, 1) with 24 bits; mirrored on the host by `kernels::sample::rng_uniform`.
fn uniform01(counter: u32, row: u32, draw: u32) -> f32 {
    let h = pcg4d(pcg4d(vec4<u32>(rng[1], rng[2] ^ DOMAIN, counter, (row << 16u) | (draw & 0xffffu))));
    return f32(h.x >> 8u) * (1.0 / 16777216.0);
}

// Writes n_keep and result from the accepted rows already in keep.
fn finish(trial: u32, n: u32, bonus: u32) {
    let kb = trial * params.max_t;
    let rb = trial * (2u + params.max_t);
    n_keep[trial] = n;
    result[rb] = n;
    result[rb + 1u] = bonus;
    for (var k = 1u; k < n; k++) {
        result[rb + 1u + k] = tokens[keep[kb + k]];
    }
    result[rb + 1u + n] = bonus;
}

@compute @workgroup_size(1)
fn greedy(@builtin(workgroup_id) wg: vec3<u32>) {
    let trial = wg.x;
    let t = min(step.t, params.max_t);
    let kb = trial * params.max_t;
    var cur = 0u;
    var n = 1u;
    keep[kb] = 0u;
    // Written as bounded for loops with the state in plain variables: a `while` with a
    // compound condition nested in `loop` came out of naga's GLSL backend wrong on Mesa's
    // llvmpipe GL: a draft rejected at the root gave the bonus 0, not the root's argmax.
    for (var depth = 1u; depth < t; depth++) {
        let want = target_argmax[cur];
        var next = t;
        for (var c = cur + 1u; c < t; c++) {
            if (parents[c] == cur && tokens[c] == want) {
                next = c;
                break;
            }
        }
        if (next >= t) {
            break;
        }
        keep[kb + n] = next;
        n++;
        cur = next;
    }
    finish(trial, n, target_argmax[cur]);
}

// q[i] at row r, where x is the token of the child being tested.
fn q_at(r: u32, i: u32, x: u32) -> f32 {
    if (params.onehot != 0u) {
        return select(0.0, 1.0, i == x);
    }
    return draft_probs[r * params.v + i];
}

// The current (unnormalized) p[i]: the residual in scratch (sum s) or the target's row r.
fn p_at(res: bool, r: u32, sb: u32, s: f32, i: u32) -> f32 {
    if (res) {
        return scratch[sb + i] / s;
    }
    return target_probs[r * params.v + i];
}

// Sum of thread partials in thread order (one thread, fixed order) into cum; returns nothing,
// cum[WG] is the total.
fn scan_parts(lid: u32) {
    workgroupBarrier();
    if (lid == 0u) {
        var c = 0.0;
        for (var t = 0u; t < WG; t++) {
            cum[t] = c;
            c += part[t];
        }
        cum[WG] = c;
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let trial = wg.x;
    let v = params.v;
    let t = min(step.t, params.max_t);
    let kb = trial * params.max_t;
    let sb = trial * v;
    let counter = rng[0] + trial;
    // The walk's state lives in thread 0; the others join for vocabulary-wide steps.
    var n = 1u;
    var cur = 0u;
    var c = 1u;
    var j = 0u;
    var res = false;
    var s = 1.0;
    if (lid == 0u) {
        keep[kb] = 0u;
    }
    loop {
        if (lid == 0u) {
            var cmd = CMD_BONUS;
            loop {
                while (c < t && parents[c] != cur) {
                    c++;
                }
                if (c >= t) {
                    break;
                }
                let x = tokens[c];
                let p = p_at(res, cur, sb, s, x);
                let q = q_at(cur, x, x);
                if (uniform01(counter, cur, j) * q < p) {
                    keep[kb + n] = c;
                    n++;
                    cur = c;
                    c++;
                    j = 0u;
                    res = false;
                    s = 1.0;
                } else {
                    cmd = CMD_RESIDUAL;
                    wg_x = x;
                    break;
                }
            }
            wg_cmd = cmd;
            wg_cur = cur;
            wg_res = select(0u, 1u, res);
            wg_s = s;
        }
        let cmd = workgroupUniformLoad(&wg_cmd);
        let r = wg_cur;
        let rs = wg_res != 0u;
        let ss = wg_s;
        let x = wg_x;
        if (cmd == CMD_RESIDUAL) {
            // p ← max(p − q, 0) (normalized lazily by its sum).
            var acc = 0.0;
            for (var i = lid; i < v; i += WG) {
                let d = max(p_at(rs, r, sb, ss, i) - q_at(r, i, x), 0.0);
                scratch[sb + i] = d;
                acc += d;
            }
            part[lid] = acc;
            storageBarrier();
            scan_parts(lid);
            if (lid == 0u) {
                let z = cum[WG];
                res = true;
                s = z;
                j++;
                c++;
                wg_cmd = select(CMD_DEGENERATE, CMD_RESIDUAL, z > 0.0);
            }
            if (workgroupUniformLoad(&wg_cmd) == CMD_DEGENERATE) {
                // max(p − q, 0) = 0 means p ≤ q everywhere, so p ≈ q up to rounding (and
                // a rejection had probability ~0): q stands in for the residual.
                var acc2 = 0.0;
                for (var i = lid; i < v; i += WG) {
                    let qi = q_at(r, i, x);
                    scratch[sb + i] = qi;
                    acc2 += qi;
                }
                part[lid] = acc2;
                storageBarrier();
                scan_parts(lid);
                if (lid == 0u) {
                    s = cum[WG];
                }
            }
        } else {
            // Bonus: draw from the current p by inverting its CDF.
            var acc = 0.0;
            for (var i = lid; i < v; i += WG) {
                acc += p_at(rs, r, sb, 1.0, i);
            }
            part[lid] = acc;
            scan_parts(lid);
            let total = cum[WG];
            if (!(total > 0.0)) {
                if (lid == 0u) {
                    wg_pick = 0u;
                }
            } else {
                let u = uniform01(counter, r, BONUS_DRAW);
                let goal = min(u * total, bitcast<f32>(bitcast<u32>(total) - 1u));
                var lo = 0u;
                var hi = WG - 1u;
                while (lo < hi) {
                    let mid = (lo + hi) / 2u;
                    if (cum[mid + 1u] > goal) {
                        hi = mid;
                    } else {
                        lo = mid + 1u;
                    }
                }
                if (lid == lo) {
                    let start = cum[lid];
                    var sum = 0.0;
                    var pick = 0xffffffffu;
                    var last = 0u;
                    for (var i = lid; i < v; i += WG) {
                        let w = p_at(rs, r, sb, 1.0, i);
                        if (w > 0.0) {
                            last = i;
                        }
                        sum += w;
                        if (start + sum > goal) {
                            pick = i;
                            break;
                        }
                    }
                    wg_pick = select(pick, last, pick == 0xffffffffu);
                }
            }
            workgroupBarrier();
            if (lid == 0u) {
                finish(trial, n, wg_pick);
            }
            break;
        }
    }
}

// Runs after verification (its own dispatch): adds the trials used to the counter.
@compute @workgroup_size(1)
fn advance(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    if (wg.x == 0u) {
        rng[0] = rng[0] + nw.x;
    }
}
