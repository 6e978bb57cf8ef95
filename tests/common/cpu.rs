//! Test helpers that need neither a GPU context nor the file system, so both the native
//! tests (through `common`) and the browser tests (`tests/web.rs`, as
//! `#[path = "common/cpu.rs"] mod cpu;`) use them.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};

/// Deterministic pseudo-random f32s in [-1, 1) (SmallRng needs no OS entropy, so this
/// runs on wasm32 too).
pub fn rand_f32(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// [`rand_f32`] times `k`.
pub fn scaled(seed: u64, n: usize, k: f32) -> Vec<f32> {
    rand_f32(seed, n).into_iter().map(|v| v * k).collect()
}

/// Largest |a-b| / max(1, |b|) over two slices.
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// The bit patterns, for bitwise comparisons that also tell -0.0 from 0.0 and compare NaNs.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `Y[t, n] = X[t, k] · W[n, k]ᵀ`, summed in f64 (so it measures the GPU's rounding only).
pub fn matmul_f64(x: &[f32], w: &[f32], t: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; t * n];
    for i in 0..t {
        for r in 0..n {
            let mut s = 0.0f64;
            for c in 0..k {
                s += x[i * k + c] as f64 * w[r * k + c] as f64;
            }
            y[i * n + r] = s as f32;
        }
    }
    y
}

/// A random tree of `t` nodes in topological order: node 0 is the root, every other node's
/// parent is an earlier node.
pub fn random_tree(seed: u64, t: usize) -> Vec<Option<usize>> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    (0..t)
        .map(|i| {
            if i == 0 {
                None
            } else {
                Some(rng.random_range(0..i))
            }
        })
        .collect()
}

/// Root-to-node path (root first).
pub fn tree_path(parents: &[Option<usize>], i: usize) -> Vec<usize> {
    let mut p = vec![i];
    while let Some(j) = p.last().and_then(|&n| parents[n]) {
        p.push(j);
    }
    p.reverse();
    p
}

/// One row's GPU probabilities against the rule: the kept set must be the top-k set cut at
/// a valid top-p threshold (mass >= goal with the threshold value, < goal without it; a
/// relative 1e-5 slack for f32 sums where the reference's exact set could differ by a near
/// tie), and the probabilities must be the kept weights renormalized, within 1e-5 absolute.
/// Returns whether the kept set is exactly the reference's.
pub fn check_probs_row(
    row: &[f32],
    got: &[f32],
    sp: &tandem::kernels::sample::SampleParams,
    what: &str,
) -> bool {
    let v = row.len();
    let want = tandem::kernels::reference::sample_probs(row, v, sp.temperature, sp.top_k, sp.top_p);
    let kept: Vec<bool> = got.iter().map(|&p| p > 0.0).collect();
    let exact = kept
        .iter()
        .zip(&want)
        .all(|(&k, &w)| k == (w > 0.0) || w < 1e-30);
    if exact {
        let e = max_rel_err(got, &want);
        assert!(e <= 1e-5, "{what}: probs differ from the CPU by {e}");
        return true;
    }
    // The sets differ: the GPU's must still be a valid cut of the same rule.
    let m = row.iter().copied().fold(f32::MIN, f32::max) as f64;
    let w = |z: f32| ((z as f64 - m) / sp.temperature as f64).exp();
    let mut sorted: Vec<f32> = row.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = if sp.top_k > 0 && (sp.top_k as usize) < v {
        sorted[sp.top_k as usize - 1]
    } else {
        f32::NEG_INFINITY
    };
    let tau = row
        .iter()
        .zip(&kept)
        .filter(|(_, &k)| k)
        .map(|(&z, _)| z)
        .fold(f32::INFINITY, f32::min);
    for (i, &z) in row.iter().enumerate() {
        assert_eq!(
            kept[i],
            z >= tau && z >= kth,
            "{what}: kept set is not a top set (index {i}, logit {z}, cut {tau})"
        );
    }
    let zk: f64 = row.iter().filter(|&&z| z >= kth).map(|&z| w(z)).sum();
    let goal = sp.top_p as f64 * zk;
    let ge: f64 = row
        .iter()
        .filter(|&&z| z >= kth && z >= tau)
        .map(|&z| w(z))
        .sum();
    let gt: f64 = row
        .iter()
        .filter(|&&z| z >= kth && z > tau)
        .map(|&z| w(z))
        .sum();
    assert!(
        ge >= goal * (1.0 - 1e-5) && gt < goal * (1.0 + 1e-5),
        "{what}: cut at {tau} has mass {ge} (without it {gt}) for goal {goal}"
    );
    let renorm: Vec<f32> = row
        .iter()
        .zip(&kept)
        .map(|(&z, &k)| if k { (w(z) / ge) as f32 } else { 0.0 })
        .collect();
    let e = max_rel_err(got, &renorm);
    assert!(
        e <= 1e-5,
        "{what}: probs differ from the renormalized cut by {e}"
    );
    false
}

/// The softmax of `logits` at temperature `temp`, in f64.
pub fn softmax_at(logits: &[f32], temp: f64) -> Vec<f64> {
    let m = logits.iter().copied().fold(f32::MIN, f32::max) as f64;
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - m) / temp).exp())
        .collect();
    let z: f64 = w.iter().sum();
    w.iter().map(|x| x / z).collect()
}

/// A χ² goodness-of-fit statistic of `counts` (from `trials` draws) against `p`: bins with an
/// expected count ≥ 5, the rest merged into one.
pub struct Chi2 {
    pub stat: f64,
    /// Degrees of freedom (bins − 1).
    pub df: usize,
    /// Upper 0.1% point of χ²(df) (Wilson–Hilferty).
    pub critical: f64,
}

pub fn chi2_against(p: &[f64], counts: &[usize], trials: usize) -> Chi2 {
    let (mut stat, mut bins, mut rest_e, mut rest_o) = (0.0, 0usize, 0.0, 0.0);
    for (i, &pi) in p.iter().enumerate() {
        let e = pi * trials as f64;
        if e >= 5.0 {
            stat += (counts[i] as f64 - e).powi(2) / e;
            bins += 1;
        } else {
            rest_e += e;
            rest_o += counts[i] as f64;
        }
    }
    if rest_e > 0.0 {
        stat += (rest_o - rest_e).powi(2) / rest_e.max(1e-9);
        bins += 1;
    }
    let df = bins.saturating_sub(1);
    let k = df.max(1) as f64;
    let critical = k * (1.0 - 2.0 / (9.0 * k) + 3.09 * (2.0 / (9.0 * k)).sqrt()).powi(3);
    Chi2 { stat, df, critical }
}
