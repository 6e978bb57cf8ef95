// Attention of the step's T query tokens over the KV cache, with a tree mask.
//   qkv: [T, (H + 2*KVH) * HD] f32 — q head h of token i at columns [h*HD, (h+1)*HD)
//   k_cache, v_cache: [KVH, max_ctx, HD] f32 — rows 0..n_past: the prefix; row n_past + j:
//        step token j (appended before this kernel runs)
//   mask: [T, MW] u32 — bit j of row i set iff node j is an ancestor of node i or i itself
//   out: [T, H*HD] f32
// Query i, head h (kv head h / (H/KVH)) attends to its *visible keys*, in this order:
// ordinals 0..n_past are prefix rows 0..n_past, then ordinal n_past + k is the k-th set bit
// (ascending j < T) of mask row i, i.e. cache row n_past + j. Scores are scaled by
// params.scale (1/sqrt(HD) unless the model says otherwise); softmax is online
// (flash-attention style), tile by tile. With params.window = W > 0 (a sliding-window layer)
// only the last W ordinals are visible: ordinal o is the key's position (prefix rows are
// positions 0..n_past, a node's visible step rows its ancestors and itself at n_past + depth),
// so this is llama.cpp's rule, query position p sees key position k iff p - k < W.
//
// Batch invariance: everything below depends only on the list of visible keys — tiles
// are WG consecutive ordinals, thread `lid` scores ordinal tile*WG + lid, every thread
// folds the tile's scores in ordinal order. So a tree node at depth d and the same token
// decoded alone after a prefix extended by its d ancestors (T = 1) see the same list and
// produce bit-identical outputs, whatever T, the tree shape or the raw row indices.
//
// One workgroup per (head h = wg.x, query i = wg.y). HD must be a multiple of 4, <= 4 * WG.

struct Step { t: u32, n_past: u32, _p0: u32, _p1: u32 }
struct Params {
    n_head: u32,
    n_kv_head: u32,
    max_ctx: u32,
    mask_words: u32,
    scale: f32,
    window: u32,
    _p1: u32,
    _p2: u32,
}

override HD: u32 = 64u;
// 32 * mask_words: the most step rows one query can see.
override MAX_T: u32 = 64u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
// Output dims per thread: thread lid owns dims lid, lid + WG, … (up to 4, so HD <= 256).
const MAX_DPT: u32 = 4u;

var<workgroup> q_sh: array<vec4<f32>, HD / 4u>;
var<workgroup> visible: array<u32, MAX_T>;
var<workgroup> n_visible: u32;
var<workgroup> score: array<f32, WG>;
var<workgroup> prob: array<f32, WG>;
var<workgroup> key_row: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let i = wg.y;
    let n_past = step.n_past;
    let t = min(step.t, MAX_T);
    let mw = params.mask_words;
    let group = params.n_head / params.n_kv_head;
    let kvh = h / group;
    let hd4 = HD / 4u;
    let head_base = kvh * params.max_ctx;

    let q_base = (i * (params.n_head + 2u * params.n_kv_head) + h) * hd4;
    for (var c = lid; c < hd4; c += WG) {
        q_sh[c] = qkv[q_base + c];
    }
    // The visible step rows in order: node j's place is the number of set bits below it.
    let mrow = i * mw;
    for (var j = lid; j < t; j += WG) {
        let word = mask[mrow + j / 32u];
        let b = j % 32u;
        if (((word >> b) & 1u) != 0u) {
            var place = countOneBits(word & ((1u << b) - 1u));
            for (var w = 0u; w < j / 32u; w++) {
                place += countOneBits(mask[mrow + w]);
            }
            visible[place] = j;
        }
    }
    if (lid == 0u) {
        var c = 0u;
        for (var w = 0u; w * 32u < t; w++) {
            var word = mask[mrow + w];
            let left = t - w * 32u;
            if (left < 32u) {
                word &= (1u << left) - 1u;
            }
            c += countOneBits(word);
        }
        n_visible = c;
    }
    let n_keys = n_past + workgroupUniformLoad(&n_visible);
    // The first visible ordinal: n_keys - window on a sliding-window layer.
    var o_first = 0u;
    if (params.window > 0u && n_keys > params.window) {
        o_first = n_keys - params.window;
    }

    var m = -3.0e38;
    var l = 0.0;
    var acc = array<f32, MAX_DPT>(0.0, 0.0, 0.0, 0.0);
    let dpt = (HD + WG - 1u) / WG;
    let n_tiles = (n_keys - o_first + WG - 1u) / WG;
    for (var tile = 0u; tile < n_tiles; tile++) {
        let first = o_first + tile * WG;
        let n_valid = min(WG, n_keys - first);
        if (lid < n_valid) {
            let o = first + lid;
            var row = o;
            if (o >= n_past) {
                row = n_past + visible[o - n_past];
            }
            let k_base = (head_base + row) * hd4;
            var s = 0.0;
            for (var c = 0u; c < hd4; c++) {
                s += dot(q_sh[c], k_cache[k_base + c]);
            }
            score[lid] = s * params.scale;
            key_row[lid] = row;
        }
        workgroupBarrier();
        var m_new = m;
        for (var k = 0u; k < n_valid; k++) {
            m_new = max(m_new, score[k]);
        }
        let correction = exp(m - m_new);
        if (lid < n_valid) {
            prob[lid] = exp(score[lid] - m_new);
        }
        workgroupBarrier();
        for (var j = 0u; j < dpt; j++) {
            acc[j] *= correction;
        }
        var p_sum = 0.0;
        for (var k = 0u; k < n_valid; k++) {
            let p = prob[k];
            p_sum += p;
            let v_base = (head_base + key_row[k]) * HD;
            for (var j = 0u; j < dpt; j++) {
                let d = lid + j * WG;
                if (d < HD) {
                    acc[j] += p * v_cache[v_base + d];
                }
            }
        }
        l = l * correction + p_sum;
        m = m_new;
        // The next tile overwrites score/prob/key_row.
        workgroupBarrier();
    }
    // No visible key (a mask row without its own bit and no prefix): output zeros.
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let o_base = (i * params.n_head + h) * HD;
    for (var j = 0u; j < dpt; j++) {
        let d = lid + j * WG;
        if (d < HD) {
            out[o_base + d] = acc[j] * inv;
        }
    }
}
