// Append the step's k and v heads to a layer's KV cache (no RoPE; `rope.wgsl`'s
// `rope_kv_append` is the fused version the forward uses for rotary models).
//   qkv: [T, (H + 2*KVH) * HD] f32 (k heads at columns [H*HD, (H+KVH)*HD), v heads after)
//   k_cache, v_cache: [KVH, max_ctx, HD] f32 — token t goes to row n_past + t
// One invocation per (token, kv head, dim).

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { n_head: u32, n_kv_head: u32, head_dim: u32, max_ctx: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let hd = params.head_dim;
    let kvd = params.n_kv_head * hd;
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    let t = i / kvd;
    let r = i - t * kvd;
    let row = step.n_past + t;
    // Rows past the cache would be clamped onto its last row by robust access: drop them.
    if (t >= step.t || row >= params.max_ctx) {
        return;
    }
    let kvh = r / hd;
    let d = r - kvh * hd;
    let src = t * (params.n_head + 2u * params.n_kv_head) * hd + params.n_head * hd + r;
    let dst = (kvh * params.max_ctx + row) * hd + d;
    k_cache[dst] = qkv[src];
    v_cache[dst] = qkv[src + kvd];
}
