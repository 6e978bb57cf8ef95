//! Sampling and tree verification on the GPU (`shaders/sample.wgsl`, `shaders/verify.wgsl`)
//! against CPU references: the sampled distribution by χ² tests (at the 0.1% level, with the
//! test's power shown on wrong rules), the probabilities output to 1e-5, determinism, greedy
//! verification equal to `spec::tree::verify_greedy`, and lossless speculative sampling.

mod common;

use common::{bits, check_probs_row, random_tree, scaled};
use rand::{Rng, SeedableRng};
use tandem::gpu::Gpu;
use tandem::kernels::kv_compact::KvCompact;
use tandem::kernels::reference as cpu;
use tandem::kernels::sample::{cdf_order, rng_uniform, SampleParams, Sampler, DOMAIN};
use tandem::kernels::verify::{self, Draft, Verifier, VerifyBuffers};
use tandem::kernels::Step;
use tandem::speculative::tree::{verify_greedy, DraftTree};

fn step(gpu: &Gpu, t: u32) -> wgpu::Buffer {
    gpu.uniform("step", &Step::new(t, 0))
}

fn run(gpu: &Gpu, f: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut enc = gpu.encoder("test");
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        f(&mut pass);
    }
    gpu.submit(enc);
}

fn params(temperature: f32, top_k: u32, top_p: f32, seed: u64) -> SampleParams {
    SampleParams {
        temperature,
        top_k,
        top_p,
        seed,
    }
}

/// Samples `x: [t, V]`: (ids `[t, draws]`, probs `[t, V]`).
fn sample(gpu: &Gpu, s: &Sampler, x: &[f32], t: u32) -> (Vec<u32>, Vec<f32>) {
    let v = s.vocab() as usize;
    let xb = gpu.upload("x", x).unwrap();
    let ids = gpu
        .storage("ids", (t * s.draws().max(1)) as u64 * 4)
        .unwrap();
    let probs = gpu.storage("probs", (t as usize * v * 4) as u64).unwrap();
    let st = step(gpu, t);
    let b = s.bind_with_probs(gpu, &st, &xb, &ids, &probs).unwrap();
    run(gpu, |p| s.encode(p, &b, t).unwrap());
    (
        gpu.read_vec_blocking(&ids, (t * s.draws()) as usize)
            .unwrap(),
        gpu.read_vec_blocking(&probs, t as usize * v).unwrap(),
    )
}

// ---------------------------------------------------------------------------------------
// χ² goodness of fit

/// Upper 0.1% point of χ² with `df` degrees of freedom (Wilson–Hilferty; within ~1% of the
/// exact value for df >= 3, and conservative for smaller df).
fn chi2_crit_001(df: usize) -> f64 {
    let d = df as f64;
    let z = 3.090_232; // the standard normal's upper 0.1% point
    let a = 2.0 / (9.0 * d);
    d * (1.0 - a + z * a.sqrt()).powi(3)
}

/// χ² test of `counts` against the distribution `p` (bins with expectation < 5 pooled).
/// Err with the statistic when it rejects at 0.1%, or when a zero-probability bin was hit.
fn chi2(counts: &[u64], p: &[f64]) -> Result<(f64, f64), String> {
    let n: u64 = counts.iter().sum();
    let total_p: f64 = p.iter().sum();
    let (mut stat, mut df) = (0.0, 0usize);
    let (mut pool_o, mut pool_e) = (0.0, 0.0);
    for (i, (&o, &pi)) in counts.iter().zip(p).enumerate() {
        let e = n as f64 * pi / total_p;
        if pi == 0.0 {
            if o > 0 {
                return Err(format!("bin {i} has probability 0 but was drawn {o} times"));
            }
            continue;
        }
        if e < 5.0 {
            pool_o += o as f64;
            pool_e += e;
            continue;
        }
        stat += (o as f64 - e).powi(2) / e;
        df += 1;
    }
    if pool_e > 0.0 {
        stat += (pool_o - pool_e).powi(2) / pool_e;
        df += 1;
    }
    let crit = chi2_crit_001(df.saturating_sub(1).max(1));
    if stat > crit {
        Err(format!(
            "χ² = {stat:.1} > {crit:.1} (df {}, n {n})",
            df.saturating_sub(1)
        ))
    } else {
        Ok((stat, crit))
    }
}

fn histogram(ids: impl IntoIterator<Item = u32>, v: usize) -> Vec<u64> {
    let mut h = vec![0u64; v];
    for id in ids {
        h[id as usize] += 1;
    }
    h
}

/// Multinomial draws from `p` on the CPU (to show the χ² test's power on wrong rules).
fn cpu_draws(p: &[f64], n: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let total: f64 = p.iter().sum();
    (0..n)
        .map(|_| {
            let mut u = rng.random::<f64>() * total;
            for (i, &pi) in p.iter().enumerate() {
                if u < pi {
                    return i as u32;
                }
                u -= pi;
            }
            (p.len() - 1) as u32
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Sampling

fn settings() -> Vec<SampleParams> {
    vec![
        params(1.0, 0, 1.0, 1),
        params(0.7, 40, 1.0, 2),
        params(1.3, 0, 0.9, 3),
        params(0.8, 50, 0.95, 4),
        params(1.0, 7, 0.5, 5),
    ]
}

#[test]
fn probs_match_cpu_every_id_is_kept_and_rows_are_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    for v in [50u32, 1001, 151_936] {
        let s = Sampler::with_draws(&gpu, v, 2).unwrap();
        let ts: &[u32] = if v > 10_000 { &[1, 3] } else { &[1, 3, 17, 64] };
        let (mut rows, mut exact) = (0, 0);
        for sp in settings() {
            s.set_params(&gpu, &sp).unwrap();
            let vu = v as usize;
            for &t in ts {
                let x = scaled(v as u64 * 7 + t as u64, t as usize * vu, 12.0);
                s.set_counter(&gpu, 0);
                let (ids, probs) = sample(&gpu, &s, &x, t);
                for r in 0..t as usize {
                    let what = format!("V={v} T={t} row {r} {sp:?}");
                    let got = &probs[r * vu..(r + 1) * vu];
                    exact += check_probs_row(&x[r * vu..(r + 1) * vu], got, &sp, &what) as usize;
                    rows += 1;
                    for &id in &ids[r * 2..r * 2 + 2] {
                        assert!(
                            got[id as usize] > 0.0,
                            "{what}: drew {id}, which is not kept"
                        );
                    }
                }
                // Row r alone (T = 1) gives the same probabilities bit for bit …
                let r = (t / 2) as usize;
                let (_, alone) = sample(&gpu, &s, &x[r * vu..(r + 1) * vu], 1);
                assert_eq!(
                    bits(&alone),
                    bits(&probs[r * vu..(r + 1) * vu]),
                    "V={v}: row {r} of T={t} alone"
                );
                // … and the first rows of a smaller batch draw the same ids (same counter).
                if t > 1 {
                    s.set_counter(&gpu, 0);
                    let (ids1, _) = sample(&gpu, &s, &x[..vu], 1);
                    assert_eq!(ids1, ids[..2], "V={v}: row 0's draws depend on T={t}");
                }
            }
        }
        eprintln!("V={v}: {exact} of {rows} rows kept exactly the reference's set");
        assert!(
            exact * 10 >= rows * 9,
            "too many near-tie cuts: {exact}/{rows}"
        );
    }
}

#[test]
fn top_k_1_and_tiny_top_p_pick_the_argmax() {
    let Some(gpu) = common::gpu() else { return };
    for v in [1000u32, 151_936] {
        let s = Sampler::with_draws(&gpu, v, 3).unwrap();
        let vu = v as usize;
        let t = if v > 10_000 { 3 } else { 17 };
        let x = scaled(v as u64, t as usize * vu, 5.0);
        let want = cpu::argmax(&x, vu);
        for sp in [
            params(1.0, 1, 1.0, 9),
            params(2.0, 0, 1e-6, 9),
            params(0.5, 0, 0.0, 9),
            params(1.0, 100, 1e-6, 9),
        ] {
            s.set_params(&gpu, &sp).unwrap();
            let (ids, probs) = sample(&gpu, &s, &x, t);
            for r in 0..t as usize {
                assert_eq!(
                    &ids[r * 3..r * 3 + 3],
                    &[want[r]; 3],
                    "V={v} row {r} {sp:?}"
                );
                assert_eq!(
                    probs[r * vu + want[r] as usize],
                    1.0,
                    "V={v} row {r} {sp:?}"
                );
            }
        }
    }
}

#[test]
fn same_seed_same_ids_other_counter_or_seed_other_ids() {
    let Some(gpu) = common::gpu() else { return };
    let (v, t) = (1000u32, 64u32);
    let s = Sampler::with_draws(&gpu, v, 4).unwrap();
    let x = scaled(3, (t * v) as usize, 3.0);
    let xb = gpu.upload("x", &x).unwrap();
    let n = (t * 4) as usize;
    let ids = gpu.storage("ids", n as u64 * 4).unwrap();
    let ids2 = gpu.storage("ids2", n as u64 * 4).unwrap();
    let st = step(&gpu, t);
    let b = s.bind(&gpu, &st, &xb, &ids).unwrap();
    let b2 = s.bind(&gpu, &st, &xb, &ids2).unwrap();
    let draw = |bound| {
        run(&gpu, |p| s.encode(p, bound, t).unwrap());
        gpu.read_vec_blocking::<u32>(&ids, n).unwrap()
    };
    let differ = |a: &[u32], b: &[u32]| a.iter().zip(b).filter(|(x, y)| x != y).count();
    s.set_params(&gpu, &params(1.0, 0, 1.0, 42)).unwrap();
    let first = draw(&b);
    let second = draw(&b); // counter 1
    s.set_params(&gpu, &params(1.0, 0, 1.0, 42)).unwrap();
    assert_eq!(draw(&b), first, "same seed and counter, different ids");
    s.set_counter(&gpu, 1);
    assert_eq!(
        draw(&b),
        second,
        "set_counter(1) must repeat the second call"
    );
    // Broad rows (T = 1 over logits in ±3): two independent draws agree ~1% of the time.
    assert!(differ(&first, &second) > n * 9 / 10, "counter 0 vs 1");
    s.set_params(&gpu, &params(1.0, 0, 1.0, 43)).unwrap();
    assert!(differ(&first, &draw(&b)) > n * 9 / 10, "seed 42 vs 43");
    // The draws of one row are independent of each other too.
    let same_row = first
        .chunks(4)
        .filter(|c| c.iter().all(|&i| i == c[0]))
        .count();
    assert!(same_row < 4, "{same_row} rows drew the same token 4 times");
    // Two samples recorded in one pass use two counters (the GPU advances it).
    s.set_params(&gpu, &params(1.0, 0, 1.0, 42)).unwrap();
    run(&gpu, |p| {
        s.encode(p, &b, t).unwrap();
        s.encode(p, &b2, t).unwrap();
    });
    assert_eq!(gpu.read_vec_blocking::<u32>(&ids, n).unwrap(), first);
    assert_eq!(gpu.read_vec_blocking::<u32>(&ids2, n).unwrap(), second);
    let words = gpu.read_vec_blocking::<u32>(s.rng_buffer(), 4).unwrap();
    assert_eq!(words, vec![2, 42, 0, 0], "rng state after two encodes");
}

/// The GPU's random numbers are the host mirror's, and its CDF walk is in `cdf_order`:
/// with all logits equal (V = 512, weights exactly 1, sums exact), the draw for u is
/// `cdf_order[floor(u · V)]`.
#[test]
fn gpu_draws_follow_the_host_mirror_of_the_random_stream() {
    let Some(gpu) = common::gpu() else { return };
    let (v, t, d) = (512u32, 40u32, 8u32);
    let s = Sampler::with_draws(&gpu, v, d).unwrap();
    let seed = 0x1234_5678_9abc_def0;
    s.set_params(&gpu, &params(1.0, 0, 1.0, seed)).unwrap();
    s.set_counter(&gpu, 7);
    let (ids, _) = sample(&gpu, &s, &vec![0.25; (t * v) as usize], t);
    let order = cdf_order(v as usize);
    for r in 0..t {
        for j in 0..d {
            let u = rng_uniform(seed, DOMAIN, 7, r, j);
            let want = order[(u * v as f32) as usize] as u32;
            assert_eq!(
                ids[(r * d + j) as usize],
                want,
                "row {r} draw {j} (u = {u})"
            );
        }
    }
}

/// 20,000 draws (20 rows × 1,000 draws) on V = 50 against the CPU reference distribution.
#[test]
fn sampled_distribution_passes_chi_square() {
    let Some(gpu) = common::gpu() else { return };
    let (v, t, d) = (50u32, 20u32, 1000u32);
    let s = Sampler::with_draws(&gpu, v, d).unwrap();
    let row = scaled(77, v as usize, 3.0);
    let x: Vec<f32> = row.iter().copied().cycle().take((t * v) as usize).collect();
    let mut failures = Vec::new();
    for sp in [
        params(1.0, 0, 1.0, 11),
        params(0.8, 20, 0.9, 12),
        params(1.5, 10, 1.0, 13),
        params(1.0, 0, 0.7, 14),
        params(0.6, 30, 0.95, 15),
    ] {
        s.set_params(&gpu, &sp).unwrap();
        let (ids, _) = sample(&gpu, &s, &x, t);
        let p: Vec<f64> = cpu::sample_probs(&row, v as usize, sp.temperature, sp.top_k, sp.top_p)
            .iter()
            .map(|&p| p as f64)
            .collect();
        match chi2(&histogram(ids, v as usize), &p) {
            Ok((stat, crit)) => eprintln!("{sp:?}: χ² {stat:.1} <= {crit:.1}"),
            Err(e) => failures.push(format!("{sp:?}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The χ² test above has the power to see plausible mistakes: draws from a top-k rule that
/// forgets to renormalize (the missing mass lands on the CDF's last kept token), from a
/// temperature applied after top-p, and from top-p without ties are all rejected.
#[test]
fn chi_square_rejects_wrong_sampling_rules() {
    let v = 50;
    let row = scaled(77, v, 3.0);
    let n = 20_000;
    // Forgot to renormalize after top-k = 10.
    let right = cpu::sample_probs(&row, v, 1.5, 10, 1.0);
    let full = cpu::softmax(&row, v, 1.5);
    let mut wrong: Vec<f64> = right
        .iter()
        .zip(&full)
        .map(|(&r, &f)| if r > 0.0 { f as f64 } else { 0.0 })
        .collect();
    let last = *cdf_order(v)
        .iter()
        .rev()
        .find(|&&i| right[i] > 0.0)
        .unwrap();
    wrong[last] += 1.0 - wrong.iter().sum::<f64>();
    let right64: Vec<f64> = right.iter().map(|&p| p as f64).collect();
    assert!(chi2(&histogram(cpu_draws(&wrong, n, 1), v), &right64).is_err());
    // Top-p = 0.7 computed at temperature 1, then sampled at temperature 0.8.
    let right = cpu::sample_probs(&row, v, 0.8, 0, 0.7);
    let set = cpu::sample_probs(&row, v, 1.0, 0, 0.7);
    let t08 = cpu::softmax(&row, v, 0.8);
    let wrong: Vec<f64> = set
        .iter()
        .zip(&t08)
        .map(|(&k, &p)| if k > 0.0 { p as f64 } else { 0.0 })
        .collect();
    let right64: Vec<f64> = right.iter().map(|&p| p as f64).collect();
    assert!(chi2(&histogram(cpu_draws(&wrong, n, 2), v), &right64).is_err());
    // And the right rule passes the same test with the same number of CPU draws.
    assert!(chi2(&histogram(cpu_draws(&right64, n, 3), v), &right64).is_ok());
}

#[test]
fn bad_sampling_parameters_are_refused() {
    let Some(gpu) = common::gpu() else { return };
    let s = Sampler::new(&gpu, 10).unwrap();
    assert!(s.set_params(&gpu, &params(0.0, 0, 1.0, 0)).is_err());
    assert!(s.set_params(&gpu, &params(f32::NAN, 0, 1.0, 0)).is_err());
    assert!(s.set_params(&gpu, &params(1.0, 0, 1.5, 0)).is_err());
    assert!(s.set_params(&gpu, &params(1.0, 0, -0.1, 0)).is_err());
    assert!(Sampler::new(&gpu, 0).is_err());
    let x = gpu.storage("x", 3 * 10 * 4).unwrap();
    let ids = gpu.storage("ids", 3 * 4).unwrap();
    let st = step(&gpu, 3);
    let b = s.bind(&gpu, &st, &x, &ids).unwrap();
    assert_eq!(b.bound.max_t, 3);
    let mut enc = gpu.encoder("t");
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
    assert!(s.encode(&mut pass, &b, 4).is_err());
    assert!(s.encode(&mut pass, &b, 3).is_ok());
}

// ---------------------------------------------------------------------------------------
// Verification

const NONE: u32 = u32::MAX;

/// Batch parents as the GPU reads them (row 0: NONE).
fn gpu_parents(parents: &[Option<usize>]) -> Vec<u32> {
    parents
        .iter()
        .map(|p| p.map_or(NONE, |p| p as u32))
        .collect()
}

/// A verifier's buffers for up to `max_t` rows and `trials` trials.
struct VerifyIo {
    step: wgpu::Buffer,
    tokens: wgpu::Buffer,
    parents: wgpu::Buffer,
    keep: wgpu::Buffer,
    n_keep: wgpu::Buffer,
    result: wgpu::Buffer,
    max_t: u32,
}

impl VerifyIo {
    fn new(gpu: &Gpu, max_t: u32, trials: u32) -> Self {
        VerifyIo {
            step: step(gpu, 1),
            tokens: gpu.storage("tokens", max_t as u64 * 4).unwrap(),
            parents: gpu.storage("parents", max_t as u64 * 4).unwrap(),
            keep: gpu.storage("keep", (trials * max_t) as u64 * 4).unwrap(),
            n_keep: gpu.storage("n_keep", trials as u64 * 4).unwrap(),
            result: gpu
                .storage("result", (trials * (2 + max_t)) as u64 * 4)
                .unwrap(),
            max_t,
        }
    }

    fn buffers(&self) -> VerifyBuffers<'_> {
        VerifyBuffers {
            step: &self.step,
            tokens: &self.tokens,
            parents: &self.parents,
            keep: &self.keep,
            n_keep: &self.n_keep,
            result: &self.result,
        }
    }

    fn write_tree(&self, gpu: &Gpu, tokens: &[u32], parents: &[Option<usize>]) {
        let q = &gpu.queue;
        q.write_buffer(
            &self.step,
            0,
            bytemuck::bytes_of(&Step::new(tokens.len() as u32, 0)),
        );
        q.write_buffer(&self.tokens, 0, bytemuck::cast_slice(tokens));
        q.write_buffer(
            &self.parents,
            0,
            bytemuck::cast_slice(&gpu_parents(parents)),
        );
    }

    /// Each trial's result row `[n, bonus, emitted…]` (trimmed to its n + 2 entries).
    fn results(&self, gpu: &Gpu, trials: u32) -> Vec<Vec<u32>> {
        let w = (2 + self.max_t) as usize;
        let all = gpu
            .read_vec_blocking::<u32>(&self.result, trials as usize * w)
            .unwrap();
        all.chunks(w)
            .map(|r| r[..2 + r[0] as usize].to_vec())
            .collect()
    }
}

/// Batch rows → DraftTree (node i = row i + 1).
fn draft_tree(tokens: &[u32], parents: &[Option<usize>]) -> DraftTree {
    let mut tree = DraftTree::empty();
    for r in 1..tokens.len() {
        let p = parents[r].and_then(|p| p.checked_sub(1));
        tree.push(tokens[r], p, 1.0).unwrap();
    }
    tree
}

#[test]
fn greedy_verification_equals_the_host_reference_on_random_trees() {
    let Some(gpu) = common::gpu() else { return };
    let max_t = 64u32;
    let ver = Verifier::new(&gpu, 8, max_t).unwrap();
    let io = VerifyIo::new(&gpu, max_t, 1);
    let argmax_b = gpu.storage("argmax", max_t as u64 * 4).unwrap();
    let bound = ver.bind_greedy(&gpu, &io.buffers(), &argmax_b).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
    let mut longest = 0;
    for case in 0..400u64 {
        let t = match case {
            0 => 1,
            1 => 64,
            _ => rng.random_range(1..=max_t as usize),
        };
        let parents = random_tree(case, t);
        // Few distinct tokens so that long accepted paths are common.
        let k = rng.random_range(1..4u32);
        let tokens: Vec<u32> = (0..t).map(|_| rng.random_range(0..k)).collect();
        let argmax: Vec<u32> = (0..t).map(|_| rng.random_range(0..k)).collect();
        io.write_tree(&gpu, &tokens, &parents);
        gpu.queue
            .write_buffer(&argmax_b, 0, bytemuck::cast_slice(&argmax));
        run(&gpu, |p| ver.encode(p, &bound, t as u32).unwrap());

        let (keep, bonus) = verify_greedy(&draft_tree(&tokens, &parents), &argmax);
        let n = keep.len();
        longest = longest.max(n);
        let mut want = vec![n as u32, bonus];
        want.extend(keep[1..].iter().map(|&r| tokens[r]));
        want.push(bonus);
        assert_eq!(io.results(&gpu, 1)[0], want, "case {case}: result, T={t}");
        let got_keep = gpu.read_vec_blocking::<u32>(&io.keep, n).unwrap();
        let want_keep: Vec<u32> = keep.iter().map(|&r| r as u32).collect();
        assert_eq!(got_keep, want_keep, "case {case}: keep");
        assert_eq!(
            gpu.read_vec_blocking::<u32>(&io.n_keep, 1).unwrap(),
            vec![n as u32],
            "case {case}: n_keep"
        );
    }
    assert!(
        longest >= 6,
        "the random trees never accepted a long path ({longest})"
    );
}

/// Verification writes keep/n_keep on the GPU and kv_compact reads them in the same pass:
/// the caches end up holding the accepted rows in order, zeros after.
#[test]
fn greedy_verification_feeds_kv_compact_in_one_pass() {
    let Some(gpu) = common::gpu() else { return };
    let (kvh, hd, max_ctx, n_past) = (2u32, 8u32, 64u32, 5u32);
    let max_t = 16u32;
    let ver = Verifier::new(&gpu, 8, max_t).unwrap();
    let io = VerifyIo::new(&gpu, max_t, 1);
    // Root ─ 1(a) ─ 3(c) ─ 5(e)
    //      └ 2(b) ─ 4(d)
    let parents = vec![None, Some(0), Some(0), Some(1), Some(2), Some(3)];
    let tokens = vec![9, 1, 2, 3, 4, 5];
    let argmax = vec![1, 3, 0, 5, 0, 7];
    let t = tokens.len() as u32;
    io.write_tree(&gpu, &tokens, &parents);
    let argmax_b = gpu.upload("argmax", &argmax).unwrap();
    let vstep = gpu.uniform("step", &Step::new(t, n_past));
    let len = (kvh * max_ctx * hd) as usize;
    let cache = common::rand_f32(4, len);
    let kc = gpu.upload("k", &cache).unwrap();
    let vc = gpu.upload("v", &cache).unwrap();
    let compact = KvCompact::new(&gpu, kvh, hd, max_ctx).unwrap();
    let cb = compact
        .bind(&gpu, &vstep, &io.keep, &io.n_keep, &kc, &vc)
        .unwrap();
    let b = ver.bind_greedy(&gpu, &io.buffers(), &argmax_b).unwrap();
    run(&gpu, |p| {
        ver.encode(p, &b, t).unwrap();
        compact.encode(p, &cb);
    });
    assert_eq!(io.results(&gpu, 1)[0], vec![4, 7, 1, 3, 5, 7]);
    let mut want = cache.clone();
    for g in 0..kvh as usize {
        let row = |r: usize| (g * max_ctx as usize + n_past as usize + r) * hd as usize;
        for (j, &src) in [0usize, 1, 3, 5].iter().enumerate() {
            let s = cache[row(src)..row(src) + hd as usize].to_vec();
            want[row(j)..row(j) + hd as usize].copy_from_slice(&s);
        }
        want[row(4)..row(t as usize)].fill(0.0);
    }
    assert_eq!(bits(&gpu.read_vec_blocking(&kc, len).unwrap()), bits(&want));
    assert_eq!(bits(&gpu.read_vec_blocking(&vc, len).unwrap()), bits(&want));
}

// Speculative sampling

const V8: usize = 8;
/// The target's distribution at the root, with mass where the drafter has none.
const P: [f64; V8] = [0.05, 0.10, 0.30, 0.15, 0.10, 0.10, 0.15, 0.05];
/// The drafter's distribution at the root: multiples of 1/10, so stratified trial counts
/// (20,000 · q(x) per child x) are whole numbers.
const Q: [f64; V8] = [0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0];
const TRIALS: u32 = 20_000;

/// A sampling verifier over V = 8 with `[t, V]` target and draft probabilities.
struct SpecCase {
    ver: Verifier,
    io: VerifyIo,
    bound: verify::VerifyBound,
    t: u32,
}

impl SpecCase {
    fn new(gpu: &Gpu, target: &[Vec<f64>], draft: Option<&[Vec<f64>]>, max_trials: u32) -> Self {
        let t = target.len() as u32;
        let ver = Verifier::new(gpu, V8 as u32, t).unwrap();
        let io = VerifyIo::new(gpu, t, max_trials);
        let flat =
            |rows: &[Vec<f64>]| -> Vec<f32> { rows.iter().flatten().map(|&p| p as f32).collect() };
        let tp = gpu.upload("target probs", &flat(target)).unwrap();
        let scratch = gpu
            .storage("scratch", (max_trials as usize * V8 * 4) as u64)
            .unwrap();
        let dp = draft.map(|d| gpu.upload("draft probs", &flat(d)).unwrap());
        let d = match &dp {
            Some(b) => Draft::Probs(b),
            None => Draft::OneHot,
        };
        let bound = ver
            .bind_sampling(gpu, &io.buffers(), &tp, d, Some(&scratch))
            .unwrap();
        ver.set_seed(gpu, 2024);
        SpecCase { ver, io, bound, t }
    }

    /// Runs `trials` verifications of the tree and returns their results.
    fn run(
        &self,
        gpu: &Gpu,
        tokens: &[u32],
        parents: &[Option<usize>],
        trials: u32,
    ) -> Vec<Vec<u32>> {
        assert_eq!(tokens.len() as u32, self.t);
        self.io.write_tree(gpu, tokens, parents);
        run(gpu, |p| {
            self.ver
                .encode_trials(p, &self.bound, self.t, trials)
                .unwrap()
        });
        self.io.results(gpu, trials)
    }
}

fn other_row(seed: u64) -> Vec<f64> {
    let r: Vec<f64> = common::rand_f32(seed, V8)
        .iter()
        .map(|&x| x as f64 + 1.1)
        .collect();
    let s: f64 = r.iter().sum();
    r.iter().map(|x| x / s).collect()
}

/// The wrong rule "on rejection, draw the bonus from p itself (no residual)": the
/// first-token distribution it gives for one draft token from q.
fn no_residual_chain(p: &[f64], q: &[f64]) -> Vec<f64> {
    let reject: f64 = (0..V8).map(|x| q[x] * (1.0 - (p[x] / q[x]).min(1.0))).sum();
    (0..V8)
        .map(|y| q[y] * (p[y] / q[y]).min(1.0) * (q[y] > 0.0) as u8 as f64 + reject * p[y])
        .collect()
}

/// (a) one draft token x ~ q under the root: the first emitted token is distributed as p.
#[test]
fn speculative_sampling_one_draft_token_is_lossless() {
    let Some(gpu) = common::gpu() else { return };
    let target = vec![P.to_vec(), other_row(1)];
    let draft = vec![Q.to_vec(), vec![0.0; V8]];
    let case = SpecCase::new(&gpu, &target, Some(&draft), TRIALS);
    let parents = [None, Some(0)];
    let mut first = vec![0u64; V8];
    let mut accepted = 0u64;
    for (x, &qx) in Q.iter().enumerate() {
        let n = (TRIALS as f64 * qx).round() as u32;
        if n == 0 {
            continue;
        }
        for r in case.run(&gpu, &[7, x as u32], &parents, n) {
            let n_acc = r[0];
            assert!(n_acc == 1 || n_acc == 2, "{r:?}");
            if n_acc == 2 {
                assert_eq!(r[2], x as u32, "accepted row's token");
                accepted += 1;
            }
            first[r[2] as usize] += 1;
        }
    }
    // Acceptance rate Σ min(p, q) = 0.05 + 0.1 + 0.2 + 0.1 = 0.45.
    let rate = accepted as f64 / TRIALS as f64;
    assert!((rate - 0.45).abs() < 0.02, "acceptance rate {rate}");
    let (stat, crit) = chi2(&first, &P).unwrap_or_else(|e| panic!("first token: {e}"));
    eprintln!("one draft token: χ² {stat:.1} <= {crit:.1}, acceptance {rate:.3}");
    // The same number of draws from the no-residual rule would fail.
    let wrong = no_residual_chain(&P, &Q);
    assert!(chi2(&histogram(cpu_draws(&wrong, TRIALS as usize, 5), V8), &P).is_err());
}

/// (b) three i.i.d. children of the root (SpecInfer's multi-round rule): the first emitted
/// token is distributed as p. Every ordered triple (x1, x2, x3) runs 20 · 10q(x1) · 10q(x2) ·
/// 10q(x3) trials: exactly q's product measure over 20,000 trials.
#[test]
fn speculative_sampling_three_iid_children_is_lossless() {
    let Some(gpu) = common::gpu() else { return };
    let target = vec![P.to_vec(), other_row(1), other_row(2), other_row(3)];
    let draft = vec![Q.to_vec(), vec![0.0; V8], vec![0.0; V8], vec![0.0; V8]];
    let case = SpecCase::new(&gpu, &target, Some(&draft), TRIALS);
    let parents = [None, Some(0), Some(0), Some(0)];
    let support: Vec<usize> = (0..V8).filter(|&x| Q[x] > 0.0).collect();
    let mut first = vec![0u64; V8];
    let mut total = 0;
    for &a in &support {
        for &b in &support {
            for &c in &support {
                let w = |x: usize| (Q[x] * 10.0).round() as u32;
                let n = 20 * w(a) * w(b) * w(c);
                let toks = [7, a as u32, b as u32, c as u32];
                for r in case.run(&gpu, &toks, &parents, n) {
                    if r[0] == 2 {
                        // The accepted row's token is the first emitted.
                        assert!(toks[1..].contains(&r[2]));
                    }
                    first[r[2] as usize] += 1;
                }
                total += n;
            }
        }
    }
    assert_eq!(total, TRIALS);
    let (stat, crit) = chi2(&first, &P).unwrap_or_else(|e| panic!("first token: {e}"));
    eprintln!("three i.i.d. children: χ² {stat:.1} <= {crit:.1}");
    // Wrong rule: no residual between siblings or for the bonus (every child tested against
    // p, the bonus drawn from p). Its distribution, by enumeration:
    let mut wrong = vec![0.0; V8];
    for &a in &support {
        for &b in &support {
            for &c in &support {
                let w = Q[a] * Q[b] * Q[c];
                let mut left = w;
                for x in [a, b, c] {
                    let acc = (P[x] / Q[x]).min(1.0);
                    wrong[x] += left * acc;
                    left *= 1.0 - acc;
                }
                for y in 0..V8 {
                    wrong[y] += left * P[y];
                }
            }
        }
    }
    assert!(chi2(&histogram(cpu_draws(&wrong, TRIALS as usize, 6), V8), &P).is_err());
}

/// Deterministic proposals (q = a point mass on each child's token, as prompt lookup makes):
/// two different children of the root; the first emitted token is distributed as p.
#[test]
fn speculative_sampling_with_deterministic_drafts_is_lossless() {
    let Some(gpu) = common::gpu() else { return };
    let target = vec![P.to_vec(), other_row(1), other_row(2)];
    let case = SpecCase::new(&gpu, &target, None, TRIALS);
    let res = case.run(&gpu, &[7, 2, 6], &[None, Some(0), Some(0)], TRIALS);
    let first = histogram(res.iter().map(|r| r[2]), V8);
    let (stat, crit) = chi2(&first, &P).unwrap_or_else(|e| panic!("first token: {e}"));
    eprintln!("deterministic drafts: χ² {stat:.1} <= {crit:.1}");
    // Accepted: token 2 with probability p(2) = 0.3, else token 6 with p(6) / (1 - p(2)).
    let acc = res.iter().filter(|r| r[0] == 2).count() as f64 / TRIALS as f64;
    assert!((acc - 0.45).abs() < 0.02, "acceptance {acc}");
}

/// A chain root → x → y with x ~ q0, y ~ q1: given that x is accepted, the second emitted
/// token (y accepted, or the bonus from row 1's residual) is distributed as row 1's target.
#[test]
fn speculative_sampling_second_token_follows_the_accepted_rows_target() {
    let Some(gpu) = common::gpu() else { return };
    let p1 = [0.20, 0.05, 0.05, 0.10, 0.30, 0.10, 0.10, 0.10];
    let q1 = [0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.0];
    let target = vec![P.to_vec(), p1.to_vec(), other_row(4)];
    let draft = vec![Q.to_vec(), q1.to_vec(), vec![0.0; V8]];
    let case = SpecCase::new(&gpu, &target, Some(&draft), TRIALS);
    let mut second = vec![0u64; V8];
    for (x, &qx) in Q.iter().enumerate() {
        for (y, &qy) in q1.iter().enumerate() {
            let n = (qx * 10.0).round() as u32 * (qy * 10.0).round() as u32 * 200;
            if n == 0 {
                continue;
            }
            for r in case.run(&gpu, &[7, x as u32, y as u32], &[None, Some(0), Some(1)], n) {
                if r[0] >= 2 {
                    second[r[3] as usize] += 1;
                }
            }
        }
    }
    let (stat, crit) = chi2(&second, &p1).unwrap_or_else(|e| panic!("second token: {e}"));
    eprintln!(
        "second token ({} trials): χ² {stat:.1} <= {crit:.1}",
        second.iter().sum::<u64>()
    );
}

/// Same seed → same verification; the counter advances by the trials each encode uses; and
/// the bonus follows the host mirror of the random stream (uniform p over 8 tokens: the
/// bonus after a leaf root is `cdf_order[floor(u · 8)]` with u = (seed, counter, row 0,
/// BONUS_DRAW) in verify's stream).
#[test]
fn speculative_sampling_is_repeatable_and_uses_the_host_mirror_stream() {
    let Some(gpu) = common::gpu() else { return };
    let case = SpecCase::new(&gpu, &[vec![0.125; V8]], None, 64);
    let a = case.run(&gpu, &[3], &[None], 64);
    let words = gpu
        .read_vec_blocking::<u32>(case.ver.rng_buffer(), 4)
        .unwrap();
    assert_eq!(words, vec![64, 2024, 0, 0]);
    let b = case.run(&gpu, &[3], &[None], 64);
    assert_ne!(a, b, "the counter must move on");
    case.ver.set_seed(&gpu, 2024);
    assert_eq!(
        case.run(&gpu, &[3], &[None], 64),
        a,
        "same seed, same draws"
    );
    let order = cdf_order(V8);
    for (k, r) in a.iter().enumerate() {
        let u = rng_uniform(2024, verify::DOMAIN, k as u32, 0, verify::BONUS_DRAW);
        assert_eq!(
            r,
            &vec![
                1,
                order[(u * 8.0) as usize] as u32,
                order[(u * 8.0) as usize] as u32
            ]
        );
    }
}

#[test]
fn verifier_refuses_what_its_buffers_cannot_hold() {
    let Some(gpu) = common::gpu() else { return };
    assert!(Verifier::new(&gpu, 0, 4).is_err());
    assert!(Verifier::new(&gpu, 8, 0).is_err());
    let ver = Verifier::new(&gpu, 8, 4).unwrap();
    let io = VerifyIo::new(&gpu, 4, 2);
    let am = gpu.storage("argmax", 3 * 4).unwrap();
    let b = ver.bind_greedy(&gpu, &io.buffers(), &am).unwrap();
    assert_eq!((b.max_t, b.max_trials), (3, 2));
    let tp = gpu.storage("tp", 4 * 8 * 4).unwrap();
    let short_scratch = gpu.storage("scratch", 4).unwrap();
    assert!(ver
        .bind_sampling(
            &gpu,
            &io.buffers(),
            &tp,
            Draft::OneHot,
            Some(&short_scratch)
        )
        .is_err());
    let s = ver
        .bind_sampling(&gpu, &io.buffers(), &tp, Draft::OneHot, None)
        .unwrap();
    assert_eq!((s.max_t, s.max_trials), (4, 1));
    let mut enc = gpu.encoder("t");
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
    assert!(ver.encode(&mut pass, &b, 4).is_err());
    assert!(ver.encode_trials(&mut pass, &b, 3, 3).is_err());
    assert!(ver.encode_trials(&mut pass, &s, 4, 2).is_err());
    assert!(ver.encode(&mut pass, &s, 4).is_ok());
}

/// Chains rejected at the root, in the middle and at the end: the bonus is the argmax of the
/// last accepted row. (Mesa's GL driver once gave 0 for a root rejection: random trees of
/// few distinct tokens rarely reject at the root with an argmax other than 0.)
#[test]
fn greedy_verification_of_a_chain_rejected_at_each_depth() {
    let Some(gpu) = common::gpu() else { return };
    let max_t = 64u32;
    let ver = Verifier::new(&gpu, 306, max_t).unwrap();
    let io = VerifyIo::new(&gpu, max_t, 1);
    let argmax_b = gpu.storage("argmax", 17 * 4).unwrap();
    let bound = ver.bind_greedy(&gpu, &io.buffers(), &argmax_b).unwrap();
    for (tokens, argmax, want) in [
        (
            vec![97u32, 24, 71, 97],
            vec![175u32, 71, 77, 175],
            vec![1u32, 175, 175],
        ),
        (vec![97, 24], vec![5, 71], vec![1, 5, 5]),
        (
            vec![97, 24, 71, 97],
            vec![24, 70, 77, 175],
            vec![2, 70, 24, 70],
        ),
        (
            vec![97, 24, 71, 97],
            vec![24, 71, 77, 175],
            vec![3, 77, 24, 71, 77],
        ),
        (
            vec![97, 24, 71, 97],
            vec![24, 71, 97, 175],
            vec![4, 175, 24, 71, 97, 175],
        ),
    ] {
        let parents: Vec<Option<usize>> = (0..tokens.len()).map(|i| i.checked_sub(1)).collect();
        io.write_tree(&gpu, &tokens, &parents);
        gpu.queue
            .write_buffer(&argmax_b, 0, bytemuck::cast_slice(&argmax));
        run(&gpu, |p| {
            ver.encode(p, &bound, tokens.len() as u32).unwrap()
        });
        assert_eq!(
            io.results(&gpu, 1)[0],
            want,
            "{tokens:?} with argmax {argmax:?}"
        );
    }
}
