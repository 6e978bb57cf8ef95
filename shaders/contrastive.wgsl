// Contrastive scores, in place (contrastive decoding: the target is the expert, the drafter
// model the amateur). For each logits row r, with log-softmax ls_e of the expert's row and
// ls_a of the amateur's:
//   s[v] = ls_e[v] - beta * ls_a[v]   where e[v] - max(e) >= log(alpha)  (the plausible set)
//   s[v] = lowest f32                  elsewhere
//   expert: [T, V] f32 (read-write: logits in, scores out)    amateur: [T, V] f32
// One workgroup per row (T = the head step's rows): the row's max and sum of exponentials
// are reduced over the workgroup in a fixed order, so a row's scores do not depend on the
// other rows (batch-invariant) and are the same at every T.

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params { v: u32, beta: f32, log_alpha: f32, _p0: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> amateur: array<f32>;
@group(0) @binding(3) var<storage, read_write> expert: array<f32>;

const WG: u32 = 256u;
// The lowest finite f32, written so that every WGSL compiler accepts it as an f32 (Tint
// refuses the 9-digit form, which rounds past it); both round it to -3.4028234664e38.
const LOWEST: f32 = -3.4028234e38;

var<workgroup> red: array<f32, 256>;

fn reduce_max(x: f32, lid: u32) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(x: f32, lid: u32) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = wg.x;
    if (r >= step.t) {
        return;
    }
    let base = r * params.v;
    var me = LOWEST;
    var ma = LOWEST;
    for (var i = lid; i < params.v; i = i + WG) {
        me = max(me, expert[base + i]);
        ma = max(ma, amateur[base + i]);
    }
    me = reduce_max(me, lid);
    ma = reduce_max(ma, lid);
    var se = 0.0;
    var sa = 0.0;
    for (var i = lid; i < params.v; i = i + WG) {
        se = se + exp(expert[base + i] - me);
        sa = sa + exp(amateur[base + i] - ma);
    }
    se = reduce_sum(se, lid);
    sa = reduce_sum(sa, lid);
    let lse_e = me + log(se);
    let lse_a = ma + log(sa);
    for (var i = lid; i < params.v; i = i + WG) {
        let e = expert[base + i];
        var s = LOWEST;
        if (e - me >= params.log_alpha) {
            s = (e - lse_e) - params.beta * (amateur[base + i] - lse_a);
        }
        expert[base + i] = s;
    }
}
