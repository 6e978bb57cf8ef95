// Softmax over rows with a temperature: y[r, :] = softmax(x[r, :] / temperature)
//   x: [R, V] f32 logits    y: [R, V] f32 probabilities    R = step.t rows, V up to 151,936
// Computed as exp((x - max) * inv_temp) / sum, max taken over the raw logits (temperature > 0).
// One workgroup per row: strided per-thread partials, then a fixed tree over WG partials;
// the order depends only on V and WG, never on R.

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { v: u32, inv_temp: f32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wg.x;
    if (row >= step.t) {
        return;
    }
    let v = params.v;
    let base = row * v;

    // Finite start value: WGSL implementations may assume no infinities.
    var m = -3.0e38;
    for (var i = lid; i < v; i += WG) {
        m = max(m, x[base + i]);
    }
    partial[lid] = m;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] = max(partial[lid], partial[lid + stride]);
        }
        workgroupBarrier();
    }
    let row_max = partial[0];
    workgroupBarrier();

    let k = params.inv_temp;
    var s = 0.0;
    for (var i = lid; i < v; i += WG) {
        s += exp((x[base + i] - row_max) * k);
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];

    for (var i = lid; i < v; i += WG) {
        y[base + i] = exp((x[base + i] - row_max) * k) / total;
    }
}
