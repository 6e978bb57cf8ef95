// Attention of the step's T query tokens over the KV cache with a tree mask, cpu layout
// (`Layout::Cpu`, src/kernels/mod.rs). Same buffers, same visible keys in the same order
// as attention.wgsl (read its header); here as vec4s:
//   qkv: [T, (H + 2*KVH) * HD] f32, k_cache / v_cache: [KVH, max_ctx, HD] f32,
//   mask: [T, MW] u32, out: [T, H*HD] f32.
//
// One thread per (head, query): workgroup (x, y) takes heads x·WG .. x·WG + WG of query y,
// one SIMD group on a CPU adapter. Each thread walks its visible keys in ordinal order, TK
// at a time: TK scores (q·k over HD), an online-softmax update, then its HD accumulators
// (kept in its own slice of workgroup memory) += the TK weighted value rows. The gpu layout
// spends a workgroup on one (head, query) and has every thread read all scores and
// probabilities of a tile from workgroup memory; a CPU executes each of those reads lane
// by lane, with barriers between, which made attention the bottleneck of decoding beyond
// a few hundred tokens of context on llvmpipe. Here there is no barrier, no cross-thread
// data, and about 2.4·HD/4 load instructions per key for 8 heads at once. Loops test at
// the bottom where they run at least once (see matmul.q.wgsl).
//
// Batch invariance: a query's output depends only on its list of visible keys (prefix rows
// 0..n_past, then the step rows n_past + j for the set bits j of its mask row, ascending):
// tiles are TK consecutive ordinals and every sum runs in a fixed order. Padding keys past
// the last ordinal get probability 0. With params.window = W > 0 (a sliding-window layer)
// only the last W ordinals are visible (attention.wgsl's header says why that is the
// position rule p - k < W); the cursor skips the step rows before the first of them.

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
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> mask: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;

// Heads per workgroup (src/kernels/attention.rs: CPU_HEADS).
const WG: u32 = 8u;

// Each thread's HD accumulators: thread lid owns [lid * HD / 4, (lid + 1) * HD / 4).
var<workgroup> acc: array<vec4<f32>, WG * HD / 4u>;

// Mask word w of row `mrow`, without the bits of rows past the step's T.
fn mask_word(mrow: u32, w: u32, t: u32) -> u32 {
    let word = mask[mrow + w];
    let left = t - min(t, w * 32u);
    return select(word & ((1u << left) - 1u), word, left >= 32u);
}

// The cache row (within kv head `kvh`'s block, as an index into k_cache rows) of
// visible ordinal `o`; ordinals are asked for in order, and `wi` / `word` carry the
// position in the mask row between calls. Ordinals past the last give row 0 of the block.
fn key_row(o: u32, n_past: u32, n_keys: u32, mrow: u32, t: u32,
           wi: ptr<function, u32>, word: ptr<function, u32>) -> u32 {
    if (o < n_past) {
        return o;
    }
    if (o >= n_keys) {
        return 0u;
    }
    loop {
        if (*word != 0u || *wi + 1u >= params.mask_words) {
            break;
        }
        *wi += 1u;
        *word = mask_word(mrow, *wi, t);
    }
    let row = n_past + *wi * 32u + countTrailingZeros(*word);
    *word &= *word - 1u;
    return row;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x * WG + lid;
    if (h >= params.n_head) {
        return;
    }
    let i = wg.y;
    let n_past = step.n_past;
    let t = min(step.t, MAX_T);
    let mw = params.mask_words;
    let mrow = i * mw;
    let hd4 = HD / 4u;
    let kvh = h / (params.n_head / params.n_kv_head);
    let q_base = (i * (params.n_head + 2u * params.n_kv_head) + h) * hd4;
    let a_base = lid * hd4;

    var n_step = 0u;
    for (var w = 0u; w * 32u < t; w++) {
        n_step += countOneBits(mask_word(mrow, w, t));
    }
    let n_keys = n_past + n_step;

    for (var c = 0u; c < hd4; c++) {
        acc[a_base + c] = vec4<f32>(0.0);
    }
    var m = -3.0e38;
    var l = 0.0;
    // Cursor over the set bits of the mask row: the next visible step row is bit
    // `countTrailingZeros(word)` of word `wi`.
    var wi = 0u;
    var word = mask_word(mrow, 0u, t);
    let head_base = kvh * params.max_ctx * hd4;
    var o0 = 0u;
    if (params.window > 0u && n_keys > params.window) {
        o0 = n_keys - params.window;
    }
    // Step rows before the first visible ordinal: move the cursor past them.
    for (var o = n_past; o < o0; o++) {
        _ = key_row(o, n_past, n_keys, mrow, t, &wi, &word);
    }
    if (n_keys > o0) {
        loop {
            // The cache rows of ordinals o0 .. o0 + 8, as vec4 offsets.
            let r0 = head_base + hd4 * key_row(o0, n_past, n_keys, mrow, t, &wi, &word);
            let r1 = head_base + hd4 * key_row(o0 + 1u, n_past, n_keys, mrow, t, &wi, &word);
            let r2 = head_base + hd4 * key_row(o0 + 2u, n_past, n_keys, mrow, t, &wi, &word);
            let r3 = head_base + hd4 * key_row(o0 + 3u, n_past, n_keys, mrow, t, &wi, &word);
            let r4 = head_base + hd4 * key_row(o0 + 4u, n_past, n_keys, mrow, t, &wi, &word);
            let r5 = head_base + hd4 * key_row(o0 + 5u, n_past, n_keys, mrow, t, &wi, &word);
            let r6 = head_base + hd4 * key_row(o0 + 6u, n_past, n_keys, mrow, t, &wi, &word);
            let r7 = head_base + hd4 * key_row(o0 + 7u, n_past, n_keys, mrow, t, &wi, &word);
            var s0 = 0.0;
            var s1 = 0.0;
            var s2 = 0.0;
            var s3 = 0.0;
            var s4 = 0.0;
            var s5 = 0.0;
            var s6 = 0.0;
            var s7 = 0.0;
            var c = 0u;
            loop {
                let q = qkv[q_base + c];
                s0 += dot(q, k_cache[r0 + c]);
                s1 += dot(q, k_cache[r1 + c]);
                s2 += dot(q, k_cache[r2 + c]);
                s3 += dot(q, k_cache[r3 + c]);
                s4 += dot(q, k_cache[r4 + c]);
                s5 += dot(q, k_cache[r5 + c]);
                s6 += dot(q, k_cache[r6 + c]);
                s7 += dot(q, k_cache[r7 + c]);
                continuing {
                    c += 1u;
                    break if c >= hd4;
                }
            }
            let n_valid = min(8u, n_keys - o0);
            let sa = vec4<f32>(s0, s1, s2, s3) * params.scale;
            let sb = vec4<f32>(s4, s5, s6, s7) * params.scale;
            let va = vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n_valid);
            let vb = vec4<u32>(4u, 5u, 6u, 7u) < vec4<u32>(n_valid);
            let lo = vec4<f32>(-3.0e38);
            let ma = select(lo, sa, va);
            let mb = select(lo, sb, vb);
            let mx = max(ma, mb);
            let m_new = max(m, max(max(mx.x, mx.y), max(mx.z, mx.w)));
            let corr = exp(m - m_new);
            let pa = select(vec4<f32>(0.0), exp(sa - m_new), va);
            let pb = select(vec4<f32>(0.0), exp(sb - m_new), vb);
            l = l * corr + (((pa.x + pa.y) + (pa.z + pa.w)) + ((pb.x + pb.y) + (pb.z + pb.w)));
            c = 0u;
            loop {
                var a = acc[a_base + c] * corr;
                a += pa.x * v_cache[r0 + c];
                a += pa.y * v_cache[r1 + c];
                a += pa.z * v_cache[r2 + c];
                a += pa.w * v_cache[r3 + c];
                a += pb.x * v_cache[r4 + c];
                a += pb.y * v_cache[r5 + c];
                a += pb.z * v_cache[r6 + c];
                a += pb.w * v_cache[r7 + c];
                acc[a_base + c] = a;
                continuing {
                    c += 1u;
                    break if c >= hd4;
                }
            }
            m = m_new;
            continuing {
                o0 += 8u;
                break if o0 >= n_keys;
            }
        }
    }
    // No visible key (a mask row without its own bit and no prefix): output zeros.
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let o_base = (i * params.n_head + h) * hd4;
    for (var c = 0u; c < hd4; c++) {
        out[o_base + c] = acc[a_base + c] * inv;
    }
}
