// After verification, keep only the accepted path of the tree in a layer's KV cache:
// for j < n: row n_past + keep[j] → row n_past + j (every kv head, k and v), then rows
// n_past + n .. n_past + T are zeroed, so the cache equals that of a plain run that
// appended only the accepted tokens.
//   keep: [≥ n] u32 — tree node indices of the accepted path, strictly increasing, keep[0] = 0
//   n_keep: [1] u32 — n, the accepted path's length (written by the verifier on the GPU, so
//           no readback is needed between verification and compaction); clamped to T
//   k_cache, v_cache: [KVH, max_ctx, HD] f32;  step.n_past / step.t: the verified step's
// Race freedom: a copy at column d only touches column d, and one invocation owns each
// (kv head, column) and walks j upward. keep is strictly increasing with keep[0] >= 0, so
// keep[j] >= j: the source row of step j was not yet written (writes so far hit rows < j),
// except keep[j] == j, a copy onto itself. No barriers, one dispatch.

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { n_kv_head: u32, head_dim: u32, max_ctx: u32, _p0: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> keep: array<u32>;
@group(0) @binding(3) var<storage, read> n_keep: array<u32>;
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hd = params.head_dim;
    let col = gid.x;
    if (col >= params.n_kv_head * hd) {
        return;
    }
    let kvh = col / hd;
    let d = col - kvh * hd;
    let head_base = kvh * params.max_ctx * hd + d;
    let t = min(step.t, params.max_ctx - min(step.n_past, params.max_ctx));
    let n = min(n_keep[0], t);
    for (var j = 0u; j < n; j++) {
        let src = head_base + (step.n_past + min(keep[j], t - 1u)) * hd;
        let dst = head_base + (step.n_past + j) * hd;
        k_cache[dst] = k_cache[src];
        v_cache[dst] = v_cache[src];
    }
    for (var j = n; j < t; j++) {
        let dst = head_base + (step.n_past + j) * hd;
        k_cache[dst] = 0.0;
        v_cache[dst] = 0.0;
    }
}
