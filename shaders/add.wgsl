// Residual add, in place: y[t, i] += x[t, i]
//   y: [T, D] f32 (read-write)    x: [T, D] f32
// One invocation per element; T * D elements, dispatched 2-D when there are more than
// 65,535 workgroups (linear index = (wg.x + wg.y * num_workgroups.x) * WG + lid).

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { d: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= step.t * params.d) {
        return;
    }
    y[i] = y[i] + x[i];
}
