// Logit mask (constrained decoding): logits[r, v] = lowest f32 where bit v of row r's mask
// is clear, unchanged where it is set.
//   logits: [T, V] f32 (read-write)    mask: [T, W] u32, W = ceil(V / 32), bit v % 32 of word
//   v / 32 (llguidance's token-set layout)
// One invocation per logit; T * V of them, dispatched 2-D when there are more than 65,535
// workgroups (linear index = (wg.x + wg.y * num_workgroups.x) * WG + lid). Elementwise, so a
// row's result does not depend on the other rows (batch-invariant).
// The lowest finite f32 rather than -inf: a softmax over a row keeps max(row) finite, and
// exp(lowest - max) is exactly 0, so a masked token has probability 0 and is never the argmax.

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { v: u32, words: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;

const WG: u32 = 256u;
// The lowest finite f32, written so that every WGSL compiler accepts it as an f32 (Tint
// refuses the 9-digit form, which rounds past it); both round it to -3.4028234664e38.
const LOWEST: f32 = -3.4028234e38;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= step.t * params.v) {
        return;
    }
    let r = i / params.v;
    let v = i % params.v;
    let word = mask[r * params.words + v / 32u];
    if (((word >> (v % 32u)) & 1u) == 0u) {
        logits[i] = LOWEST;
    }
}
