// Per-head RMSNorm of the q and k heads of the fused QKV output, in place (qwen3's
// attn_q_norm / attn_k_norm, after the QKV projection and before RoPE):
//   qkv: [T, (H + 2*KVH) * HD] f32: token t's q heads at columns [0, H*HD), k heads at
//        [H*HD, (H+KVH)*HD), v heads after them (left untouched)
//   q_w, k_w: [HD] f32 — one weight for every q head, one for every k head
//   head h of token t: x = x * (1 / sqrt(mean(x^2) + eps)) * (h < H ? q_w : k_w)
// Not the rmsnorm kernel: the heads sit inside wider qkv rows, q and k take different
// weights, v is skipped and the norm is in place. One workgroup per (token, q-or-k head):
// thread i sums x[i]^2, x[i+WG]^2, … in order, then a fixed tree combines the WG partial sums,
// so a head's reduction order depends only on HD and WG, never on T (batch invariance).

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { n_head: u32, n_kv_head: u32, head_dim: u32, eps: f32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> q_w: array<f32>;
@group(0) @binding(4) var<storage, read> k_w: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let heads = params.n_head + params.n_kv_head;
    let item = wg.x + wg.y * nwg.x;
    let t = item / heads;
    if (t >= step.t) {
        return;
    }
    let head = item - t * heads;
    let hd = params.head_dim;
    let base = t * (params.n_head + 2u * params.n_kv_head) * hd + head * hd;
    var s = 0.0;
    for (var i = lid; i < hd; i += WG) {
        let v = qkv[base + i];
        s += v * v;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(partial[0] / f32(hd) + params.eps);
    let is_q = head < params.n_head;
    for (var i = lid; i < hd; i += WG) {
        let g = select(k_w[i], q_w[i], is_q);
        qkv[base + i] = qkv[base + i] * inv * g;
    }
}
