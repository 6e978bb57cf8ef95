// SwiGLU activation: out[t, i] = silu(gu[t, i]) * gu[t, F + i],  silu(g) = g / (1 + exp(-g))
//   gu: [T, 2F] f32 (gate in columns [0, F), up in [F, 2F): one fused gate|up matmul)
//   out: [T, F] f32
// One invocation per output element, 2-D dispatch as in add.wgsl; silu_mul() is in
// glu.inc.wgsl.

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { f: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> gu: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let f = params.f;
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= step.t * f) {
        return;
    }
    let t = i / f;
    let c = i - t * f;
    let g = gu[t * 2u * f + c];
    let u = gu[t * 2u * f + f + c];
    out[i] = silu_mul(g, u);
}
