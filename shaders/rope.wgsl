// Rotary position embedding on the q and k heads of the fused QKV output, in place, and
// (entry `rope_kv_append`) the append of the roped k and the v heads to the layer's KV cache.
//   qkv: [T, (H + 2*KVH) * HD] f32: token t's q heads at columns [0, H*HD), k heads at
//        [H*HD, (H+KVH)*HD), v heads at [(H+KVH)*HD, (H+2*KVH)*HD)
//   pos: [T] u32 — each token's RoPE position (a tree node's is prefix + depth)
//   inv_freq: [n_rot/2] f32 — theta^(-2i/n_rot), divided by the model's frequency factor i
//             where it has them (llama3 rope_freqs), computed on the host
//             (kernels::rope::inv_freq_with_factors)
//   k_cache, v_cache: [KVH, max_ctx, HD] f32 — token t goes to row n_past + t
// Pair i (i < n_rot/2) rotates by angle pos * inv_freq[i]:
//   normal (llama GGUF): dims (2i, 2i+1);   NeoX (qwen2): dims (i, i + n_rot/2)
//   (a', b') = (a cos - b sin, a sin + b cos); dims >= n_rot pass through unchanged.
// One invocation per (token, head, pair); pairs i >= n_rot/2 cover dims (2i, 2i+1), which
// are the pass-through dims in both layouts.

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    max_ctx: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(5) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<f32>;

const WG: u32 = 64u;
// 2π split so that k * TWO_PI_HI is exact in f32 for k < 2^16 (TWO_PI_HI has 8 significant
// bits): the reduced angle is then accurate to ~1e-7 even where fma is not fused.
const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

// cos and sin of `a`, reduced to [-π, π] first: WGSL only bounds the error of the builtins
// on that interval, and positions reach tens of thousands of radians.
fn cos_sin(a: f32) -> vec2<f32> {
    let k = round(a * INV_TWO_PI);
    let r = (a - k * TWO_PI_HI) - k * TWO_PI_LO;
    return vec2<f32>(cos(r), sin(r));
}

struct Pair { a: u32, b: u32, rotate: bool, freq: u32 }

fn pair_dims(i: u32) -> Pair {
    let half = params.n_rot / 2u;
    if (i >= half) {
        return Pair(2u * i, 2u * i + 1u, false, 0u);
    }
    if (params.neox != 0u) {
        return Pair(i, i + half, true, i);
    }
    return Pair(2u * i, 2u * i + 1u, true, i);
}

struct Work { t: u32, head: u32, pair: u32, valid: bool }

// Invocation → (token, head, pair) for `heads` heads per token.
fn work_item(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, heads: u32) -> Work {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    let pairs = params.head_dim / 2u;
    let per_token = heads * pairs;
    let t = i / per_token;
    let r = i - t * per_token;
    return Work(t, r / pairs, r % pairs, t < step.t);
}

// Rotates one pair of head `head` (q or k) of token t in place; returns the new values.
fn rotate(t: u32, head: u32, p: Pair) -> vec2<f32> {
    let stride = (params.n_head + 2u * params.n_kv_head) * params.head_dim;
    let base = t * stride + head * params.head_dim;
    let a = qkv[base + p.a];
    let b = qkv[base + p.b];
    if (!p.rotate) {
        return vec2<f32>(a, b);
    }
    let cs = cos_sin(f32(pos[t]) * inv_freq[p.freq]);
    let ra = a * cs.x - b * cs.y;
    let rb = a * cs.y + b * cs.x;
    qkv[base + p.a] = ra;
    qkv[base + p.b] = rb;
    return vec2<f32>(ra, rb);
}

@compute @workgroup_size(WG)
fn rope(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = work_item(wg, nwg, lid, params.n_head + params.n_kv_head);
    if (!w.valid) {
        return;
    }
    let p = pair_dims(w.pair);
    if (p.rotate) {
        rotate(w.t, w.head, p);
    }
}

@compute @workgroup_size(WG)
fn rope_kv_append(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = work_item(wg, nwg, lid, params.n_head + 2u * params.n_kv_head);
    if (!w.valid) {
        return;
    }
    let p = pair_dims(w.pair);
    let hd = params.head_dim;
    let row = step.n_past + w.t;
    if (w.head < params.n_head) {
        if (p.rotate) {
            rotate(w.t, w.head, p);
        }
        return;
    }
    // Rows past the cache would be clamped onto its last row by robust access: drop them.
    if (row >= params.max_ctx) {
        return;
    }
    if (w.head < params.n_head + params.n_kv_head) {
        let kvh = w.head - params.n_head;
        let r = rotate(w.t, w.head, p);
        let dst = (kvh * params.max_ctx + row) * hd;
        k_cache[dst + p.a] = r.x;
        k_cache[dst + p.b] = r.y;
    } else {
        let kvh = w.head - params.n_head - params.n_kv_head;
        let stride = (params.n_head + 2u * params.n_kv_head) * hd;
        let src = w.t * stride + w.head * hd;
        let dst = (kvh * params.max_ctx + row) * hd;
        v_cache[dst + p.a] = qkv[src + p.a];
        v_cache[dst + p.b] = qkv[src + p.b];
    }
}
