// RMSNorm: y[t, :] = x[t, :] * (1 / sqrt(mean(x[t, :]^2) + eps)) * w[:]
//   x: [T, D] f32    w: [D] f32    y: [T, D] f32 (a different buffer from x)
// One workgroup per row. Thread i sums x[i]^2, x[i+WG]^2, … in order, then a fixed
// tree combines the WG partial sums: a row's reduction order depends only on D and WG,
// never on T (batch invariance).

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { d: u32, eps: f32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wg.x;
    if (row >= step.t) {
        return;
    }
    let d = params.d;
    let base = row * d;
    var s = 0.0;
    for (var i = lid; i < d; i += WG) {
        let v = x[base + i];
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
    let inv = 1.0 / sqrt(partial[0] / f32(d) + params.eps);
    for (var i = lid; i < d; i += WG) {
        y[base + i] = x[base + i] * inv * w[i];
    }
}
