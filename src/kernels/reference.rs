//! Plain CPU versions of the non-matmul kernels, with the GPU kernels' exact semantics
//! (layouts, RoPE angles, mask meaning, argmax ties). The kernel tests compare against
//! them, and the CPU reference forward can use them. Sums run in f64 (as ggml's CPU
//! backend does for norms and softmax), so they measure the GPU's error, not their own.

use super::attention::{AttentionOptions, AttentionShape};
use super::rope::{inv_freq, RopeShape, RopeStyle};

/// `y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * w[:]` for `x: [T, D]`, `w: [D]`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let ss: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
        let inv = (1.0 / (ss / d as f64 + eps as f64).sqrt()) as f32;
        y.extend(row.iter().zip(w).map(|(&v, &g)| v * inv * g));
    }
    y
}

/// Per-head RMSNorm in place of the `n_head` q heads (weight `q_w`) and the `n_kv_head` k
/// heads (weight `k_w`, both `[HD]`) of `qkv: [T, (H + 2*KVH) * HD]`; v heads untouched.
pub fn qk_norm(
    qkv: &mut [f32],
    n_head: usize,
    n_kv_head: usize,
    q_w: &[f32],
    k_w: &[f32],
    eps: f32,
) {
    let hd = q_w.len();
    let width = (n_head + 2 * n_kv_head) * hd;
    for row in qkv.chunks_mut(width) {
        for (h, head) in row[..(n_head + n_kv_head) * hd].chunks_mut(hd).enumerate() {
            let w = if h < n_head { q_w } else { k_w };
            let y = rmsnorm(head, w, eps);
            head.copy_from_slice(&y);
        }
    }
}

/// RoPE in place on the q and k heads of `qkv: [T, (H + 2*KVH) * HD]` for positions `pos`.
/// Pair i of position p turns by `p as f32 * inv_freq(theta, n_rot)[i]` (an f32 product).
pub fn rope(qkv: &mut [f32], pos: &[u32], shape: &RopeShape) {
    rope_with_factors(qkv, pos, shape, None)
}

/// [`rope`] with pair i's frequency divided by `factors[i]` (f64 division, rounded once).
pub fn rope_with_factors(qkv: &mut [f32], pos: &[u32], shape: &RopeShape, factors: Option<&[f32]>) {
    let hd = shape.head_dim as usize;
    let n_rot = shape.n_rot as usize;
    let half = n_rot / 2;
    let width = (shape.n_head as usize + 2 * shape.n_kv_head as usize) * hd;
    let mut freqs = inv_freq(shape.theta, shape.n_rot);
    if let Some(f) = factors {
        for (q, f) in freqs.iter_mut().zip(f) {
            *q = (*q as f64 / *f as f64) as f32;
        }
    }
    for (row, &p) in qkv.chunks_mut(width).zip(pos) {
        let rotated = (shape.n_head + shape.n_kv_head) as usize * hd;
        for head in row[..rotated].chunks_mut(hd) {
            for (i, &f) in freqs.iter().enumerate() {
                let angle = p as f32 * f;
                let (s, c) = (angle as f64).sin_cos();
                let (s, c) = (s as f32, c as f32);
                let (ia, ib) = match shape.style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * c - b * s;
                head[ib] = a * s + b * c;
            }
        }
    }
}

/// `out[t, i] = silu(gu[t, i]) * gu[t, f + i]` for `gu: [T, 2f]`.
pub fn silu_mul(gu: &[f32], f: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(gu.len() / 2);
    for row in gu.chunks(2 * f) {
        let (g, u) = row.split_at(f);
        out.extend(g.iter().zip(u).map(|(&g, &u)| {
            let g = g as f64;
            (g / (1.0 + (-g).exp()) * u as f64) as f32
        }));
    }
    out
}

/// `out[t, i] = gelu(gu[t, i]) * gu[t, f + i]` for `gu: [T, 2f]`, tanh-approximated GELU
/// `0.5 g (1 + tanh(√(2/π) g (1 + 0.044715 g²)))`, in f64.
pub fn gelu_mul(gu: &[f32], f: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(gu.len() / 2);
    let c = (2.0 / std::f64::consts::PI).sqrt();
    for row in gu.chunks(2 * f) {
        let (g, u) = row.split_at(f);
        out.extend(g.iter().zip(u).map(|(&g, &u)| {
            let g = g as f64;
            (0.5 * g * (1.0 + (c * g * (1.0 + 0.044715 * g * g)).tanh()) * u as f64) as f32
        }));
    }
    out
}

/// Softmax of each row of `x: [R, v]` divided by `temperature`.
pub fn softmax(x: &[f32], v: usize, temperature: f32) -> Vec<f32> {
    let k = 1.0 / temperature as f64;
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(v) {
        let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let e: Vec<f64> = row.iter().map(|&z| ((z as f64 - m) * k).exp()).collect();
        let s: f64 = e.iter().sum();
        y.extend(e.iter().map(|&z| (z / s) as f32));
    }
    y
}

/// The final sampling distribution of `shaders/sample.wgsl` for each row of `x: [R, v]`:
/// softmax at `temperature`; keep the logits >= the k-th largest (`top_k` 0 or >= v: all;
/// ties kept); of those, keep the logits >= the largest value τ whose kept mass
/// (x >= τ) reaches `top_p` of the kept total (`top_p` >= 1: all; ties kept); renormalize.
/// NaN is never kept. Sums in f64.
pub fn sample_probs(x: &[f32], v: usize, temperature: f32, top_k: u32, top_p: f32) -> Vec<f32> {
    let inv_t = 1.0 / temperature as f64;
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(v) {
        let mut vals: Vec<f32> = row.iter().copied().filter(|z| !z.is_nan()).collect();
        vals.sort_by(|a, b| b.total_cmp(a));
        let Some(&m) = vals.first() else {
            y.extend(std::iter::repeat_n(0.0, row.len()));
            continue;
        };
        let k = top_k as usize;
        let mut thr = if k > 0 && k < vals.len() {
            vals[k - 1]
        } else {
            f32::NEG_INFINITY
        };
        let w = |z: f32| ((z as f64 - m as f64) * inv_t).exp();
        if top_p < 1.0 {
            let total: f64 = vals.iter().filter(|&&z| z >= thr).map(|&z| w(z)).sum();
            let goal = (top_p as f64 * total).max(1e-30);
            let mut c = 0.0;
            for &z in vals.iter().filter(|&&z| z >= thr) {
                c += w(z);
                // Ties: the threshold is a value, so all equal logits go in together.
                if c >= goal {
                    thr = z;
                    break;
                }
            }
        }
        let kept = |z: f32| !z.is_nan() && z >= thr;
        let z: f64 = row.iter().filter(|&&z| kept(z)).map(|&z| w(z)).sum();
        y.extend(
            row.iter()
                .map(|&v| if kept(v) { (w(v) / z) as f32 } else { 0.0 }),
        );
    }
    y
}

/// Index of each row's largest value: ties → lowest index, NaN never wins (an all-NaN
/// row gives 0), -0.0 == +0.0.
pub fn argmax(x: &[f32], v: usize) -> Vec<u32> {
    x.chunks(v)
        .map(|row| {
            let mut best: Option<(usize, f32)> = None;
            for (i, &z) in row.iter().enumerate() {
                if z.is_nan() {
                    continue;
                }
                if best.is_none_or(|(_, b)| z > b) {
                    best = Some((i, z));
                }
            }
            best.map_or(0, |(i, _)| i as u32)
        })
        .collect()
}

/// The ancestor bitset of a tree in topological order (`parents[i] < i`, `None` for a
/// root): bit j of row i is set iff j is i or one of its ancestors. Rows of `mask_words`
/// u32 words.
pub fn ancestor_mask(parents: &[Option<usize>], mask_words: usize) -> Vec<u32> {
    let mut mask = vec![0u32; parents.len() * mask_words];
    for i in 0..parents.len() {
        let mut node = Some(i);
        while let Some(j) = node {
            mask[i * mask_words + j / 32] |= 1 << (j % 32);
            node = parents[j];
        }
    }
    mask
}

/// Tree-masked attention for `t` query tokens after `n_past` cached rows. Layouts as in
/// `shaders/attention.wgsl`: `qkv: [t, (H + 2*KVH) * HD]`, caches `[KVH, max_ctx, HD]`
/// (the step's k/v already at rows `n_past..n_past + t`), `mask: [t, MW]`; returns
/// `[t, H * HD]`.
pub fn attention(
    qkv: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    mask: &[u32],
    t: usize,
    n_past: usize,
    shape: &AttentionShape,
) -> Vec<f32> {
    let none = AttentionOptions::default();
    attention_with(qkv, k_cache, v_cache, mask, t, n_past, shape, &none)
}

/// [`attention`] with a sliding window and a score scale. The window is applied by
/// position, as llama.cpp states it: a cached prefix row r is at position r, step row j at
/// `n_past + depth(j)` (its ancestors in the mask, not counting itself), and the query at
/// position p sees key position k iff `p - k < window`.
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    qkv: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    mask: &[u32],
    t: usize,
    n_past: usize,
    shape: &AttentionShape,
    options: &AttentionOptions,
) -> Vec<f32> {
    let (h_n, kvh_n) = (shape.n_head as usize, shape.n_kv_head as usize);
    let hd = shape.head_dim as usize;
    let (ctx, mw) = (shape.max_ctx as usize, shape.mask_words as usize);
    let width = (h_n + 2 * kvh_n) * hd;
    let scale = options.scale.unwrap_or(shape.scale()) as f64;
    let sees = |i: usize, j: usize| mask[i * mw + j / 32] >> (j % 32) & 1 == 1;
    let pos_of_step = |j: usize| n_past + (0..t).filter(|&a| a != j && sees(j, a)).count();
    let mut out = vec![0f32; t * h_n * hd];
    for i in 0..t {
        let p = pos_of_step(i);
        let in_window = |k: usize| options.window == 0 || p - k.min(p) < options.window as usize;
        let rows: Vec<usize> = (0..n_past)
            .filter(|&r| in_window(r))
            .chain(
                (0..t)
                    .filter(|&j| sees(i, j) && in_window(pos_of_step(j)))
                    .map(|j| n_past + j),
            )
            .collect();
        for h in 0..h_n {
            let kvh = h / (h_n / kvh_n);
            let q = &qkv[i * width + h * hd..][..hd];
            let scores: Vec<f64> = rows
                .iter()
                .map(|&r| {
                    let k = &k_cache[(kvh * ctx + r) * hd..][..hd];
                    q.iter()
                        .zip(k)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f64 = p.iter().sum();
            let o = &mut out[(i * h_n + h) * hd..][..hd];
            for (d, od) in o.iter_mut().enumerate() {
                let acc: f64 = rows
                    .iter()
                    .zip(&p)
                    .map(|(&r, &pk)| pk * v_cache[(kvh * ctx + r) * hd + d] as f64)
                    .sum();
                *od = if l > 0.0 { (acc / l) as f32 } else { 0.0 };
            }
        }
    }
    out
}
