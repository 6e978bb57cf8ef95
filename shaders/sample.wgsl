// Sampling: draw tokens from each row of logits after temperature, top-k and top-p.
//   x:     [R, V] f32 logits                    R = step.t rows, V up to 151,936
//   ids:   [R, D] u32 sampled tokens            D = params.draws independent draws per row
//   rng:   [4] u32 = [counter, seed_lo, seed_hi, 0]; `advance` adds 1 to the counter
//   probs: [R, V] f32 the final distribution    (entry `sample_probs` only)
//
// Semantics (Hugging Face's warper order): p = softmax(x / T); keep the top-k logits (ties
// with the k-th largest value are all kept; top_k = 0 or >= V: off); of those, keep the
// smallest top set whose renormalized mass is >= top_p (ties at the threshold all kept;
// top_p >= 1: off); renormalize over what is kept. NaN logits are never kept.
//
// Deterministic for a (seed, counter): the draw for (row r, draw j) uses
// u = hash(seed, counter, r, j) in [0, 1) (PCG4D, twice) and inverts the CDF in a FIXED
// order: thread-major over the strided split, i.e. by (i mod 256, i div 256). Any fixed
// order samples the same distribution; this one keeps the loads coalesced.
//
// One workgroup of 256 per row. Thresholds are found by radix select on the order-preserving
// u32 key of each logit (argmax.wgsl's key): top-k by 4 passes of 8-bit count histograms
// (u32 atomics: exact and order-free), top-p by 8 passes of 4-bit *mass* histograms (per-
// thread f32 bins reduced in a fixed order). All sums have a fixed order that depends only on
// V and the workgroup size, never on R (batch invariance).

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params {
    v: u32,
    top_k: u32,
    top_p: f32,
    inv_temp: f32,
    draws: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> rng: array<u32>;
@group(0) @binding(5) var<storage, read_write> probs: array<f32>;

const WG: u32 = 256u;
// Domain of this kernel's random stream; verify.wgsl uses another, so a drafter's samples
// and the verifier's acceptance tests are independent even under one seed.
const DOMAIN: u32 = 0x53414d50u;

var<workgroup> wg_max: atomic<u32>;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> red: array<f32, 2048>;
var<workgroup> red2: array<f32, 128>;
var<workgroup> bins: array<f32, 16>;
var<workgroup> part: array<f32, WG>;
var<workgroup> cum: array<f32, 257>;
var<workgroup> sel: u32;
var<workgroup> sel_count: u32;
var<workgroup> sel_mass: f32;

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

fn unkey(k: u32) -> f32 {
    if ((k & 0x80000000u) != 0u) {
        return bitcast<f32>(k & 0x7fffffffu);
    }
    return bitcast<f32>(~k);
}

// Jarzynski & Olano, "Hash Functions for GPU Rendering" (2020).
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

// Unnormalized weight of element i of the row (0 when not kept).
fn weight(xv: f32, m: f32, thr: u32) -> f32 {
    if (key(xv) < thr) {
        return 0.0;
    }
    return exp((xv - m) * params.inv_temp);
}

// Sums the kept weights: part[t] = thread t's strided partial, cum[t] = exclusive prefix of
// part in thread order (one thread, fixed order), cum[WG] = the total.
fn scan_kept(base: u32, lid: u32, m: f32, thr: u32) {
    var s = 0.0;
    for (var i = lid; i < params.v; i += WG) {
        s += weight(x[base + i], m, thr);
    }
    part[lid] = s;
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

// Smallest key kept by top-k: the k-th largest key (4 passes, 8 bits each, most significant
// first). Only called with 0 < k < V.
fn top_k_threshold(base: u32, lid: u32) -> u32 {
    var prefix = 0u;
    for (var level = 0u; level < 4u; level++) {
        let shift = 24u - 8u * level;
        let hi = select(0u, 0xffffffffu << (shift + 8u), level > 0u);
        atomicStore(&hist[lid], 0u);
        workgroupBarrier();
        for (var i = lid; i < params.v; i += WG) {
            let k = key(x[base + i]);
            if ((k & hi) == prefix) {
                atomicAdd(&hist[(k >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            // Elements with a larger prefix than the current range are already counted.
            var above = select(0u, sel_count, level > 0u);
            var d = 255u;
            loop {
                let h = atomicLoad(&hist[d]);
                if (above + h >= params.top_k || d == 0u) {
                    break;
                }
                above += h;
                d -= 1u;
            }
            sel = d;
            sel_count = above;
        }
        workgroupBarrier();
        prefix |= sel << shift;
    }
    return prefix;
}

// Smallest key kept by top-p among keys >= thr: the largest key τ whose mass
// (sum of weights with key >= τ) reaches `top_p` of the kept total (8 passes, 4 bits each).
fn top_p_threshold(base: u32, lid: u32, m: f32, thr: u32) -> u32 {
    // cum[WG] holds the kept total (from scan_kept); at least 1 (the maximum weighs exp(0)).
    let goal = max(params.top_p * cum[WG], 1.0e-30);
    var prefix = 0u;
    var acc: array<f32, 16>;
    for (var level = 0u; level < 8u; level++) {
        let shift = 28u - 4u * level;
        let hi = select(0u, 0xffffffffu << (shift + 4u), level > 0u);
        // Zeroed by hand: Chromium's SwiftShader WebGPU kept a loop-local array's values
        // from the previous iteration instead of re-initializing it.
        for (var b = 0u; b < 16u; b++) {
            acc[b] = 0.0;
        }
        for (var i = lid; i < params.v; i += WG) {
            let xv = x[base + i];
            let k = key(xv);
            if (k >= thr && (k & hi) == prefix) {
                acc[(k >> shift) & 15u] += exp((xv - m) * params.inv_temp);
            }
        }
        // Fixed-order reduction of 16 bins × 256 threads, 8 bins at a time.
        for (var half = 0u; half < 2u; half++) {
            for (var b = 0u; b < 8u; b++) {
                red[b * WG + lid] = acc[half * 8u + b];
            }
            workgroupBarrier();
            if (lid < 128u) {
                let b = lid / 16u;
                let s = lid % 16u;
                var z = 0.0;
                for (var q = 0u; q < 16u; q++) {
                    z += red[b * WG + s * 16u + q];
                }
                red2[lid] = z;
            }
            workgroupBarrier();
            if (lid < 8u) {
                var z = 0.0;
                for (var s = 0u; s < 16u; s++) {
                    z += red2[lid * 16u + s];
                }
                bins[half * 8u + lid] = z;
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            // Mass with a larger prefix than the current range; always < goal.
            let above = select(0.0, sel_mass, level > 0u);
            var c = above;
            var d = 16u;
            var lowest = 0u;
            for (var e = 16u; e > 0u; e--) {
                let b = bins[e - 1u];
                if (b > 0.0) {
                    lowest = e - 1u;
                }
                if (d == 16u) {
                    if (c + b >= goal) {
                        d = e - 1u;
                    } else {
                        c += b;
                    }
                }
            }
            // Rounding left the goal out of reach: keep the whole range down to its lowest
            // non-empty bin.
            if (d == 16u) {
                d = lowest;
            }
            sel = d;
            sel_mass = c;
        }
        workgroupBarrier();
        prefix |= sel << shift;
    }
    return prefix;
}

struct Kept {
    m: f32,
    thr: u32,
}

// Finds the row maximum and the kept set; leaves part/cum holding the kept weights' scan.
fn prepare(row: u32, lid: u32) -> Kept {
    let v = params.v;
    let base = row * v;
    if (lid == 0u) {
        atomicStore(&wg_max, 0u);
    }
    workgroupBarrier();
    var mk = 0u;
    for (var i = lid; i < v; i += WG) {
        mk = max(mk, key(x[base + i]));
    }
    atomicMax(&wg_max, mk);
    workgroupBarrier();
    let m = unkey(atomicLoad(&wg_max));
    var thr = 1u;
    if (params.top_k > 0u && params.top_k < v) {
        thr = max(top_k_threshold(base, lid), 1u);
    }
    scan_kept(base, lid, m, thr);
    if (params.top_p < 1.0) {
        thr = max(thr, top_p_threshold(base, lid, m, thr));
        scan_kept(base, lid, m, thr);
    }
    return Kept(m, thr);
}

// Each draw's inverse-CDF walk runs on the one thread whose strided share holds the target.
fn draw_all(row: u32, lid: u32, k: Kept) {
    let v = params.v;
    let base = row * v;
    let total = cum[WG];
    let counter = rng[0];
    for (var j = 0u; j < params.draws; j++) {
        let out = row * params.draws + j;
        if (!(total > 0.0)) {
            if (lid == 0u) {
                ids[out] = 0u;
            }
            continue;
        }
        let u = uniform01(counter, row, j);
        // u < 1, but u * total may round up to total: stay strictly below it.
        let goal = min(u * total, bitcast<f32>(bitcast<u32>(total) - 1u));
        // The owner: the first thread whose inclusive prefix exceeds the goal.
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
            // Same additions in the same order as part[lid], so the running sum reaches
            // cum[lid + 1] > goal; `last` guards against a compiler that rounds differently.
            let start = cum[lid];
            var s = 0.0;
            var pick = 0xffffffffu;
            var last = 0u;
            for (var i = lid; i < v; i += WG) {
                let w = weight(x[base + i], k.m, k.thr);
                if (w > 0.0) {
                    last = i;
                }
                s += w;
                if (start + s > goal) {
                    pick = i;
                    break;
                }
            }
            ids[out] = select(pick, last, pick == 0xffffffffu);
        }
    }
}

@compute @workgroup_size(WG)
fn sample(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wg.x;
    if (row >= step.t) {
        return;
    }
    let k = prepare(row, lid);
    draw_all(row, lid, k);
}

@compute @workgroup_size(WG)
fn sample_probs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wg.x;
    if (row >= step.t) {
        return;
    }
    let k = prepare(row, lid);
    draw_all(row, lid, k);
    let total = cum[WG];
    let base = row * params.v;
    for (var i = lid; i < params.v; i += WG) {
        let w = weight(x[base + i], k.m, k.thr);
        probs[base + i] = select(0.0, w / total, w > 0.0);
    }
}

// Runs after a sampling dispatch (its own dispatch, so every row has read the counter):
// adds the number of workgroups it is dispatched with to the counter.
@compute @workgroup_size(1)
fn advance(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    if (wg.x == 0u) {
        rng[0] = rng[0] + n.x;
    }
}
