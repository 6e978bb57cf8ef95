//! The non-matmul kernels against the CPU reference (`tandem::kernels::reference`) on random
//! data with awkward sizes, and batch invariance: a row's result is bit-identical whether it
//! is computed alone (T = 1) or inside a larger T. Tolerances are stated at each check.

mod common;

use common::{bits, random_tree, scaled, tree_path as path};
use rand::{Rng, SeedableRng};
use tandem::gpu::Gpu;
use tandem::kernels::add::Add;
use tandem::kernels::argmax::Argmax;
use tandem::kernels::attention::{Attention, AttentionOptions, AttentionShape};
use tandem::kernels::gelu_mul::GeluMul;
use tandem::kernels::kv_append::KvAppend;
use tandem::kernels::kv_compact::KvCompact;
use tandem::kernels::qk_norm::QkNorm;
use tandem::kernels::reference as cpu;
use tandem::kernels::rmsnorm::RmsNorm;
use tandem::kernels::rope::{Rope, RopeKvAppend, RopeShape, RopeStyle};
use tandem::kernels::silu_mul::SiluMul;
use tandem::kernels::softmax::Softmax;
use tandem::kernels::{Layout, Step};

const TS: [u32; 4] = [1, 3, 17, 64];

fn step(gpu: &Gpu, t: u32, n_past: u32) -> wgpu::Buffer {
    gpu.uniform("step", &Step::new(t, n_past))
}

/// Records `f` into one compute pass and submits it.
fn run(gpu: &Gpu, f: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut enc = gpu.encoder("test");
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        f(&mut pass);
    }
    gpu.submit(enc);
}

fn read(gpu: &Gpu, buf: &wgpu::Buffer, n: usize) -> Vec<f32> {
    gpu.read_vec_blocking::<f32>(buf, n).unwrap()
}

/// Runs a row-wise kernel through `go(data, t)` for every T in `TS`, checks it against
/// `reference` within `tol` (max_rel_err: |a-b| / max(1, |b|)) and checks that the middle
/// row computed alone (T = 1) is bit-identical to the same row inside the batch.
#[allow(clippy::too_many_arguments)]
fn check_rows(
    name: &str,
    in_width: usize,
    out_width: usize,
    tol: f32,
    seed: u64,
    gen: impl Fn(u64, usize) -> Vec<f32>,
    go: impl Fn(&[f32], u32) -> Vec<f32>,
    reference: impl Fn(&[f32]) -> Vec<f32>,
) {
    for t in TS {
        let x = gen(seed + t as u64, t as usize * in_width);
        let got = go(&x, t);
        let want = reference(&x);
        let err = common::max_rel_err(&got, &want);
        assert!(
            err <= tol,
            "{name}: T={t} width {in_width}: max rel err {err} > {tol}"
        );
        let r = (t / 2) as usize;
        let alone = go(&x[r * in_width..(r + 1) * in_width], 1);
        assert_eq!(
            bits(&alone),
            bits(&got[r * out_width..(r + 1) * out_width]),
            "{name}: row {r} of T={t} differs from the same row computed alone"
        );
    }
}

#[test]
fn rmsnorm_matches_cpu_and_is_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    for (i, d) in [5u32, 576, 897, 1536].into_iter().enumerate() {
        let eps = 1e-6;
        let norm = RmsNorm::new(&gpu, d, eps).unwrap();
        let w = scaled(100 + i as u64, d as usize, 2.0);
        let wb = gpu.upload("w", &w).unwrap();
        let go = |x: &[f32], t: u32| {
            let xb = gpu.upload("x", x).unwrap();
            let yb = gpu.storage("y", (x.len() * 4) as u64).unwrap();
            let s = step(&gpu, t, 0);
            let bound = norm.bind(&gpu, &s, &xb, &wb, &yb).unwrap();
            run(&gpu, |p| norm.encode(p, &bound, t).unwrap());
            read(&gpu, &yb, x.len())
        };
        // f32 sum of D squares in a fixed tree vs an f64 sum: ~1e-6 relative; 1e-5 stated.
        let d = d as usize;
        check_rows(
            "rmsnorm",
            d,
            d,
            1e-5,
            7,
            |s, n| scaled(s, n, 3.0),
            go,
            |x| cpu::rmsnorm(x, &w, eps),
        );
    }
}

/// qwen3's per-head q/k norm, in place on the q and k heads of a qkv buffer: against the f64
/// reference, v heads bit-for-bit untouched, and batch invariant.
#[test]
fn qk_norm_matches_cpu_leaves_v_alone_and_is_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    // (heads, kv heads, head size): qwen3-0.6B's 16/8/128, the fixture's 4/2/64, an odd
    // head size below the workgroup width and one above it.
    for (i, (nh, nkv, hd)) in [(16u32, 8u32, 128u32), (4, 2, 64), (3, 1, 17), (2, 2, 80)]
        .into_iter()
        .enumerate()
    {
        let eps = 1e-6;
        let kernel = QkNorm::new(&gpu, nh, nkv, hd, eps).unwrap();
        let qw = scaled(200 + i as u64, hd as usize, 2.0);
        let kw = scaled(300 + i as u64, hd as usize, 2.0);
        let (qwb, kwb) = (
            gpu.upload("q_w", &qw).unwrap(),
            gpu.upload("k_w", &kw).unwrap(),
        );
        let w = ((nh + 2 * nkv) * hd) as usize;
        let go = |x: &[f32], t: u32| {
            let xb = gpu.upload("qkv", x).unwrap();
            let s = step(&gpu, t, 0);
            let bound = kernel.bind(&gpu, &s, &xb, &qwb, &kwb).unwrap();
            run(&gpu, |p| kernel.encode(p, &bound, t).unwrap());
            read(&gpu, &xb, x.len())
        };
        let reference = |x: &[f32]| {
            let mut y = x.to_vec();
            cpu::qk_norm(&mut y, nh as usize, nkv as usize, &qw, &kw, eps);
            y
        };
        // As rmsnorm: an f32 tree sum of HD squares vs an f64 sum, ~1e-6 relative; 1e-5 stated.
        check_rows(
            "qk_norm",
            w,
            w,
            1e-5,
            11 + i as u64,
            |s, n| scaled(s, n, 3.0),
            go,
            reference,
        );
        let x = scaled(5, 3 * w, 3.0);
        let got = go(&x, 3);
        let v0 = ((nh + nkv) * hd) as usize;
        for r in 0..3 {
            assert_eq!(
                bits(&got[r * w + v0..(r + 1) * w]),
                bits(&x[r * w + v0..(r + 1) * w]),
                "qk_norm changed the v heads of row {r}"
            );
        }
    }
}

#[test]
fn qk_norm_refuses_short_weights() {
    let Some(gpu) = common::gpu() else { return };
    let kernel = QkNorm::new(&gpu, 4, 2, 64, 1e-6).unwrap();
    let s = step(&gpu, 1, 0);
    let qkv = gpu.storage("qkv", 4 * 8 * 64).unwrap();
    let short = gpu.storage("w", 4 * 63).unwrap();
    let ok = gpu.storage("w", 4 * 64).unwrap();
    let err = kernel.bind(&gpu, &s, &qkv, &short, &ok).unwrap_err();
    assert!(err.to_string().contains("q_w"), "{err}");
    assert!(QkNorm::new(&gpu, 0, 2, 64, 1e-6).is_err());
}

#[test]
fn add_is_exact_and_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    let d = 577u32;
    let add = Add::new(&gpu, d).unwrap();
    let go = |xy: &[f32], t: u32| {
        // xy holds rows of [y | x] so check_rows can slice one row of both.
        let (mut y, mut x) = (Vec::new(), Vec::new());
        for row in xy.chunks(2 * d as usize) {
            y.extend_from_slice(&row[..d as usize]);
            x.extend_from_slice(&row[d as usize..]);
        }
        let yb = gpu.upload("y", &y).unwrap();
        let xb = gpu.upload("x", &x).unwrap();
        let s = step(&gpu, t, 0);
        let bound = add.bind(&gpu, &s, &yb, &xb).unwrap();
        run(&gpu, |p| add.encode(p, &bound, t).unwrap());
        read(&gpu, &yb, y.len())
    };
    // An f32 add is correctly rounded on both sides: exact.
    check_rows(
        "add",
        2 * d as usize,
        d as usize,
        0.0,
        11,
        common::rand_f32,
        go,
        |xy| {
            xy.chunks(2 * d as usize)
                .flat_map(|r| (0..d as usize).map(move |i| r[i] + r[d as usize + i]))
                .collect()
        },
    );
}

#[test]
fn silu_mul_matches_cpu_and_is_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    for f in [7u32, 1537, 4865] {
        let k = SiluMul::new(&gpu, f).unwrap();
        let go = |gu: &[f32], t: u32| {
            let gb = gpu.upload("gu", gu).unwrap();
            let ob = gpu.storage("out", (gu.len() * 2) as u64).unwrap();
            let s = step(&gpu, t, 0);
            let bound = k.bind(&gpu, &s, &gb, &ob).unwrap();
            run(&gpu, |p| k.encode(p, &bound, t).unwrap());
            read(&gpu, &ob, gu.len() / 2)
        };
        let f = f as usize;
        // One exp and a division in f32: a few ulp; 1e-5 stated. Gates span ±12 so that
        // both tails of silu (and the exp clamp region below -88 is covered separately).
        check_rows(
            "silu_mul",
            2 * f,
            f,
            1e-5,
            13,
            |s, n| scaled(s, n, 12.0),
            go,
            |gu| cpu::silu_mul(gu, f),
        );
    }
    // Extreme gates: exp(-g) overflows f32 for g < -88; the kernel clamps, result ~0.
    let k = SiluMul::new(&gpu, 4).unwrap();
    let gu = [-1000.0f32, -89.0, 89.0, 1000.0, 1.0, 2.0, 3.0, 4.0];
    let gb = gpu.upload("gu", &gu).unwrap();
    let ob = gpu.storage("out", 16).unwrap();
    let s = step(&gpu, 1, 0);
    let bound = k.bind(&gpu, &s, &gb, &ob).unwrap();
    run(&gpu, |p| k.encode(p, &bound, 1).unwrap());
    let got = read(&gpu, &ob, 4);
    let want = cpu::silu_mul(&gu, 4);
    assert!(got.iter().all(|v| v.is_finite()), "{got:?}");
    assert!(
        common::max_rel_err(&got, &want) <= 1e-5,
        "{got:?} vs {want:?}"
    );
}

/// GeGLU (gemma3): tanh GELU of the gate times the up half, against an f64 reference.
#[test]
fn gelu_mul_matches_cpu_and_is_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    for f in [7u32, 1537, 2048] {
        let k = GeluMul::new(&gpu, f).unwrap();
        let go = |gu: &[f32], t: u32| {
            let gb = gpu.upload("gu", gu).unwrap();
            let ob = gpu.storage("out", (gu.len() * 2) as u64).unwrap();
            let s = step(&gpu, t, 0);
            let bound = k.bind(&gpu, &s, &gb, &ob).unwrap();
            run(&gpu, |p| k.encode(p, &bound, t).unwrap());
            read(&gpu, &ob, gu.len() / 2)
        };
        let f = f as usize;
        // A tanh and a few products in f32: a few ulp; 1e-5 stated (relative to max(1, |b|)).
        // Gates span ±6: the negative tail (gelu → 0), the bend near 0 and the linear part.
        check_rows(
            "gelu_mul",
            2 * f,
            f,
            1e-5,
            17,
            |s, n| scaled(s, n, 6.0),
            go,
            |gu| cpu::gelu_mul(gu, f),
        );
    }
    // Extreme gates: the tanh argument is clamped, so no NaN from an overflowing exp; gelu
    // is 0 far left and the identity far right. And it is not SiLU: gelu(1) = 0.8412 where
    // silu(1) = 0.7311.
    let k = GeluMul::new(&gpu, 4).unwrap();
    let gu = [-1000.0f32, -20.0, 1.0, 1000.0, 1.0, 2.0, 3.0, 4.0];
    let gb = gpu.upload("gu", &gu).unwrap();
    let ob = gpu.storage("out", 16).unwrap();
    let s = step(&gpu, 1, 0);
    let bound = k.bind(&gpu, &s, &gb, &ob).unwrap();
    run(&gpu, |p| k.encode(p, &bound, 1).unwrap());
    let got = read(&gpu, &ob, 4);
    let want = cpu::gelu_mul(&gu, 4);
    assert!(got.iter().all(|v| v.is_finite()), "{got:?}");
    assert!(
        common::max_rel_err(&got, &want) <= 1e-5,
        "{got:?} vs {want:?}"
    );
    assert!(
        (got[2] / 3.0 - 0.841_192).abs() < 1e-5,
        "gelu(1) = {}",
        got[2] / 3.0
    );
    assert_eq!(got[3], 4000.0);
}

#[test]
fn softmax_matches_cpu_and_is_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    for (v, temp) in [(1001u32, 1.0f32), (151_936, 0.7)] {
        let k = Softmax::new(&gpu, v, 1.0).unwrap();
        k.set_temperature(&gpu, temp).unwrap();
        let go = |x: &[f32], t: u32| {
            let xb = gpu.upload("x", x).unwrap();
            let yb = gpu.storage("y", (x.len() * 4) as u64).unwrap();
            let s = step(&gpu, t, 0);
            let bound = k.bind(&gpu, &s, &xb, &yb).unwrap();
            run(&gpu, |p| k.encode(p, &bound, t).unwrap());
            read(&gpu, &yb, x.len())
        };
        let v = v as usize;
        // Logits in ±15 (peaked rows). Probabilities are < 1, so max_rel_err is an absolute
        // error here; also check the relative error of the largest probabilities below.
        // exp in f32 (a few ulp at |x| <= 43) and an f32 sum of V terms: 1e-6 absolute.
        check_rows(
            "softmax",
            v,
            v,
            1e-6,
            17,
            |s, n| scaled(s, n, 15.0),
            go,
            |x| cpu::softmax(x, v, temp),
        );
        let x = scaled(99, 3 * v, 15.0);
        let got = go(&x, 3);
        let want = cpu::softmax(&x, v, temp);
        let rel = got
            .iter()
            .zip(&want)
            .filter(|(_, &w)| w > 1e-3)
            .map(|(&g, &w)| (g - w).abs() / w)
            .fold(0.0f32, f32::max);
        // Relative error of the probabilities that matter for sampling: 1e-4 stated.
        assert!(
            rel <= 1e-4,
            "softmax V={v}: relative error {rel} on large probabilities"
        );
    }
    assert!(
        Softmax::new(&gpu, 10, 0.0).is_err(),
        "temperature 0 must be refused"
    );
}

#[test]
fn argmax_picks_lowest_index_on_ties_ignores_nan_and_is_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    for v in [1u32, 1000, 151_936] {
        let k = Argmax::new(&gpu, v).unwrap();
        let v = v as usize;
        let go = |x: &[f32], t: u32| {
            let xb = gpu.upload("x", x).unwrap();
            let ob = gpu.storage("out", t as u64 * 4).unwrap();
            let s = step(&gpu, t, 0);
            let bound = k.bind(&gpu, &s, &xb, &ob).unwrap();
            run(&gpu, |p| k.encode(p, &bound, t).unwrap());
            gpu.read_vec_blocking::<u32>(&ob, t as usize).unwrap()
        };
        for t in TS {
            let mut x = scaled(t as u64, t as usize * v, 10.0);
            let mut rng = rand::rngs::SmallRng::seed_from_u64(v as u64 + t as u64);
            for (r, row) in x.chunks_mut(v).enumerate() {
                match r % 5 {
                    // A tie for the maximum: the lower index must win, whichever thread has it.
                    0 if v > 1 => {
                        let a = rng.random_range(0..v);
                        let b = rng.random_range(0..v);
                        row[a] = 50.0;
                        row[b] = 50.0;
                    }
                    // NaN before and after the maximum, and a NaN "larger" by bits.
                    1 => {
                        for _ in 0..3 {
                            row[rng.random_range(0..v)] = f32::NAN;
                        }
                        row[0] = f32::from_bits(0x7fff_ffff);
                    }
                    // Only -inf and NaN: -inf wins over NaN.
                    2 => {
                        row.fill(f32::NEG_INFINITY);
                        row[0] = f32::NAN;
                    }
                    // All NaN: index 0 by definition.
                    3 => row.fill(f32::NAN),
                    // -0.0 and +0.0 tie: the lower index wins.
                    _ if v > 2 => {
                        row.fill(-1.0);
                        row[v - 1] = 0.0;
                        row[v / 2] = -0.0;
                    }
                    _ => {}
                }
            }
            let got = go(&x, t);
            assert_eq!(got, cpu::argmax(&x, v), "argmax V={v} T={t}");
            let r = (t / 2) as usize;
            assert_eq!(
                go(&x[r * v..(r + 1) * v], 1),
                vec![got[r]],
                "argmax V={v}: row {r} alone"
            );
        }
    }
}

fn rope_shapes() -> Vec<RopeShape> {
    let shape = |n_head, n_kv_head, head_dim, n_rot, theta, style| RopeShape {
        n_head,
        n_kv_head,
        head_dim,
        n_rot,
        theta,
        style,
        max_ctx: 300,
    };
    vec![
        shape(14, 2, 64, 64, 1_000_000.0, RopeStyle::Neox),
        shape(9, 3, 128, 128, 10_000.0, RopeStyle::Normal),
        shape(4, 2, 64, 32, 10_000.0, RopeStyle::Normal),
        shape(4, 4, 128, 96, 500_000.0, RopeStyle::Neox),
    ]
}

fn width(s: &RopeShape) -> usize {
    ((s.n_head + 2 * s.n_kv_head) * s.head_dim) as usize
}

/// Llama 3.x frequency factors (`rope_freqs.weight`): each pair's frequency divided by its
/// factor, against the reference; and a model without factors gets exactly the plain table.
#[test]
fn rope_with_frequency_factors_matches_cpu_and_is_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    assert_eq!(
        bits(&tandem::kernels::rope::inv_freq_with_factors(500_000.0, 128, None).unwrap()),
        bits(&tandem::kernels::rope::inv_freq(500_000.0, 128))
    );
    for (si, shape) in rope_shapes().into_iter().enumerate() {
        let pairs = (shape.n_rot / 2) as usize;
        // Llama 3.x's shape: 1 for the fast pairs, up to 8 (the scaling factor) for the slow.
        let factors: Vec<f32> = (0..pairs)
            .map(|i| 1.0 + 7.0 * (i as f32 / (pairs - 1).max(1) as f32))
            .collect();
        let rope = Rope::with_freq_factors(&gpu, &shape, Some(&factors)).unwrap();
        let w = width(&shape);
        let go = |rows: &[f32], t: u32| {
            let pos: Vec<u32> = rows.chunks(w + 1).map(|r| r[0] as u32).collect();
            let qkv: Vec<f32> = rows.chunks(w + 1).flat_map(|r| r[1..].to_vec()).collect();
            let pb = gpu.upload("pos", &pos).unwrap();
            let qb = gpu.upload("qkv", &qkv).unwrap();
            let s = step(&gpu, t, 0);
            let bound = rope.bind(&gpu, &s, &pb, &qb).unwrap();
            run(&gpu, |p| rope.encode(p, &bound, t).unwrap());
            read(&gpu, &qb, qkv.len())
        };
        let gen = |seed: u64, n: usize| {
            let mut v = common::rand_f32(seed, n);
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            for row in v.chunks_mut(w + 1) {
                row[0] = rng.random_range(0..33_000u32) as f32;
            }
            v
        };
        let reference = |rows: &[f32]| {
            let pos: Vec<u32> = rows.chunks(w + 1).map(|r| r[0] as u32).collect();
            let mut qkv: Vec<f32> = rows.chunks(w + 1).flat_map(|r| r[1..].to_vec()).collect();
            cpu::rope_with_factors(&mut qkv, &pos, &shape, Some(&factors));
            qkv
        };
        // The kernel's table divides theta^(-2i/n) by the factor in f64 and rounds once; the
        // reference divides the rounded plain table. The two frequencies may differ by an ulp
        // (6e-8 relative), which at positions up to 33k turns the angle by up to ~2e-3 rad:
        // 1e-2 absolute on values |x| <= 1.
        check_rows(
            "rope with factors",
            w + 1,
            w,
            1e-2,
            29 + si as u64,
            gen,
            go,
            reference,
        );
    }
    // Wrong length and non-positive factors are refused.
    let shape = rope_shapes()[2];
    assert!(Rope::with_freq_factors(&gpu, &shape, Some(&[1.0; 15])).is_err());
    let mut bad = vec![1.0; 16];
    bad[3] = 0.0;
    assert!(Rope::with_freq_factors(&gpu, &shape, Some(&bad)).is_err());
}

#[test]
fn rope_matches_cpu_in_both_layouts_and_is_batch_invariant() {
    let Some(gpu) = common::gpu() else { return };
    for (si, shape) in rope_shapes().into_iter().enumerate() {
        let rope = Rope::new(&gpu, &shape).unwrap();
        let w = width(&shape);
        // Each row carries its position in its first element (an integer-valued f32), so
        // check_rows can slice a row with its position.
        let go = |rows: &[f32], t: u32| {
            let pos: Vec<u32> = rows.chunks(w + 1).map(|r| r[0] as u32).collect();
            let qkv: Vec<f32> = rows.chunks(w + 1).flat_map(|r| r[1..].to_vec()).collect();
            let pb = gpu.upload("pos", &pos).unwrap();
            let qb = gpu.upload("qkv", &qkv).unwrap();
            let s = step(&gpu, t, 0);
            let bound = rope.bind(&gpu, &s, &pb, &qb).unwrap();
            run(&gpu, |p| rope.encode(p, &bound, t).unwrap());
            read(&gpu, &qb, qkv.len())
        };
        let gen = |seed: u64, n: usize| {
            let mut v = common::rand_f32(seed, n);
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            for row in v.chunks_mut(w + 1) {
                // Positions up to 33k (qwen2.5's context) so range reduction is exercised.
                row[0] = rng.random_range(0..33_000u32) as f32;
            }
            v
        };
        let reference = |rows: &[f32]| {
            let pos: Vec<u32> = rows.chunks(w + 1).map(|r| r[0] as u32).collect();
            let mut qkv: Vec<f32> = rows.chunks(w + 1).flat_map(|r| r[1..].to_vec()).collect();
            cpu::rope(&mut qkv, &pos, &shape);
            qkv
        };
        // Both sides use the same f32 angle p * inv_freq[i]; the GPU reduces it to [-π, π]
        // (error ~ulp(2π·k)·k_lo ≈ 1e-7 rad at 33k) and uses the builtin cos/sin (WGSL only
        // bounds them to 2^-11 absolute, lavapipe is ~1e-7). |values| <= 1, so 1e-5 absolute.
        check_rows("rope", w + 1, w, 1e-5, 19 + si as u64, gen, go, |x| {
            reference(x)
        });

        // Untouched parts: v heads and the dims past n_rot are bit-for-bit the input.
        let rows = gen(5, 3 * (w + 1));
        let got = go(&rows, 3);
        let hd = shape.head_dim as usize;
        for (t, row) in rows.chunks(w + 1).enumerate() {
            let inp = &row[1..];
            let out = &got[t * w..(t + 1) * w];
            let qk = ((shape.n_head + shape.n_kv_head) as usize) * hd;
            assert_eq!(
                bits(&inp[qk..]),
                bits(&out[qk..]),
                "v heads must not change"
            );
            for h in 0..(shape.n_head + shape.n_kv_head) as usize {
                let r = h * hd + shape.n_rot as usize..(h + 1) * hd;
                assert_eq!(
                    bits(&inp[r.clone()]),
                    bits(&out[r]),
                    "dims past n_rot must not change"
                );
            }
        }
    }
}

/// Runs [`RopeKvAppend`] for `t` tokens after `n_past` on given caches; returns
/// (qkv, k_cache, v_cache) after the kernel.
fn rope_append(
    gpu: &Gpu,
    shape: &RopeShape,
    qkv: &[f32],
    pos: &[u32],
    caches: (&[f32], &[f32]),
    t: u32,
    n_past: u32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let k = RopeKvAppend::new(gpu, shape).unwrap();
    let qb = gpu.upload("qkv", qkv).unwrap();
    let pb = gpu.upload("pos", pos).unwrap();
    let kc = gpu.upload("k_cache", caches.0).unwrap();
    let vc = gpu.upload("v_cache", caches.1).unwrap();
    let s = step(gpu, t, n_past);
    let bound = k.bind(gpu, &s, &pb, &qb, &kc, &vc).unwrap();
    run(gpu, |p| k.encode(p, &bound, t).unwrap());
    (
        read(gpu, &qb, qkv.len()),
        read(gpu, &kc, caches.0.len()),
        read(gpu, &vc, caches.1.len()),
    )
}

/// The cache a plain append of `qkv`'s k and v rows at `n_past` gives (CPU).
fn cpu_append(
    shape: &RopeShape,
    qkv: &[f32],
    caches: (&[f32], &[f32]),
    n_past: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (h, kvh, hd, ctx) = (
        shape.n_head as usize,
        shape.n_kv_head as usize,
        shape.head_dim as usize,
        shape.max_ctx as usize,
    );
    let (mut kc, mut vc) = (caches.0.to_vec(), caches.1.to_vec());
    for (t, row) in qkv.chunks(width(shape)).enumerate() {
        if n_past + t >= ctx {
            continue;
        }
        for g in 0..kvh {
            let dst = (g * ctx + n_past + t) * hd;
            kc[dst..dst + hd].copy_from_slice(&row[(h + g) * hd..][..hd]);
            vc[dst..dst + hd].copy_from_slice(&row[(h + kvh + g) * hd..][..hd]);
        }
    }
    (kc, vc)
}

#[test]
fn rope_kv_append_equals_rope_then_append() {
    let Some(gpu) = common::gpu() else { return };
    for (si, shape) in rope_shapes().into_iter().enumerate() {
        let w = width(&shape);
        let cache_len = (shape.n_kv_head * shape.max_ctx * shape.head_dim) as usize;
        let rope = Rope::new(&gpu, &shape).unwrap();
        for (t, n_past) in [(1u32, 0u32), (3, 5), (17, 100), (64, 236)] {
            let qkv = common::rand_f32(si as u64 * 100 + t as u64, t as usize * w);
            let pos: Vec<u32> = (0..t).map(|i| n_past + i / 2).collect();
            let kc0 = common::rand_f32(1, cache_len);
            let vc0 = common::rand_f32(2, cache_len);
            let (q_fused, kc, vc) = rope_append(&gpu, &shape, &qkv, &pos, (&kc0, &vc0), t, n_past);

            // The in-place rope kernel gives the same q/k bits as the fused one.
            let qb = gpu.upload("qkv", &qkv).unwrap();
            let pb = gpu.upload("pos", &pos).unwrap();
            let s = step(&gpu, t, n_past);
            let bound = rope.bind(&gpu, &s, &pb, &qb).unwrap();
            run(&gpu, |p| rope.encode(p, &bound, t).unwrap());
            let q_rope = read(&gpu, &qb, qkv.len());
            assert_eq!(
                bits(&q_fused),
                bits(&q_rope),
                "fused and in-place rope differ"
            );

            // The whole caches: exactly the roped k / raw v at rows n_past.., the rest intact.
            let (ek, ev) = cpu_append(&shape, &q_rope, (&kc0, &vc0), n_past as usize);
            assert_eq!(
                bits(&kc),
                bits(&ek),
                "k cache, shape {si} T={t} n_past={n_past}"
            );
            assert_eq!(
                bits(&vc),
                bits(&ev),
                "v cache, shape {si} T={t} n_past={n_past}"
            );
        }
    }
}

#[test]
fn kv_append_copies_rows_and_drops_rows_past_the_cache() {
    let Some(gpu) = common::gpu() else { return };
    for (si, shape) in rope_shapes().into_iter().enumerate() {
        let w = width(&shape);
        let cache_len = (shape.n_kv_head * shape.max_ctx * shape.head_dim) as usize;
        let k = KvAppend::new(
            &gpu,
            shape.n_head,
            shape.n_kv_head,
            shape.head_dim,
            shape.max_ctx,
        )
        .unwrap();
        // The last case runs past max_ctx = 300: those rows must be dropped, not clamped
        // onto the last row.
        for (t, n_past) in [(1u32, 0u32), (3, 7), (17, 200), (64, 236), (17, 290)] {
            let qkv = common::rand_f32(40 + si as u64 + t as u64, t as usize * w);
            let kc0 = common::rand_f32(3, cache_len);
            let vc0 = common::rand_f32(4, cache_len);
            let qb = gpu.upload("qkv", &qkv).unwrap();
            let kc = gpu.upload("k", &kc0).unwrap();
            let vc = gpu.upload("v", &vc0).unwrap();
            let s = step(&gpu, t, n_past);
            let bound = k.bind(&gpu, &s, &qb, &kc, &vc).unwrap();
            run(&gpu, |p| k.encode(p, &bound, t).unwrap());
            let (ek, ev) = cpu_append(&shape, &qkv, (&kc0, &vc0), n_past as usize);
            assert_eq!(
                bits(&read(&gpu, &kc, cache_len)),
                bits(&ek),
                "k, T={t} n_past={n_past}"
            );
            assert_eq!(
                bits(&read(&gpu, &vc, cache_len)),
                bits(&ev),
                "v, T={t} n_past={n_past}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Attention

fn attention_shapes(mask_words: u32) -> Vec<AttentionShape> {
    let shape = |n_head, n_kv_head, head_dim| AttentionShape {
        n_head,
        n_kv_head,
        head_dim,
        max_ctx: 400,
        mask_words,
    };
    vec![shape(14, 2, 64), shape(9, 3, 128), shape(4, 4, 64)]
}

fn depth(parents: &[Option<usize>], mut i: usize) -> usize {
    let mut d = 0;
    while let Some(p) = parents[i] {
        i = p;
        d += 1;
    }
    d
}

fn attn_width(s: &AttentionShape) -> usize {
    ((s.n_head + 2 * s.n_kv_head) * s.head_dim) as usize
}

/// Runs the attention kernel on uploaded copies of the given arrays.
#[allow(clippy::too_many_arguments)]
fn gpu_attention(
    gpu: &Gpu,
    layout: Layout,
    shape: &AttentionShape,
    qkv: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    mask: &[u32],
    t: u32,
    n_past: u32,
) -> Vec<f32> {
    let none = AttentionOptions::default();
    gpu_attention_with(
        gpu, layout, shape, none, qkv, k_cache, v_cache, mask, t, n_past,
    )
}

/// [`gpu_attention`] with a window and a score scale.
#[allow(clippy::too_many_arguments)]
fn gpu_attention_with(
    gpu: &Gpu,
    layout: Layout,
    shape: &AttentionShape,
    options: AttentionOptions,
    qkv: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    mask: &[u32],
    t: u32,
    n_past: u32,
) -> Vec<f32> {
    let att = Attention::with_options(gpu, shape, layout, options).unwrap();
    let qb = gpu.upload("qkv", qkv).unwrap();
    let kb = gpu.upload("k", k_cache).unwrap();
    let vb = gpu.upload("v", v_cache).unwrap();
    let mb = gpu.upload("mask", mask).unwrap();
    let n_out = t as usize * (shape.n_head * shape.head_dim) as usize;
    let ob = gpu.storage("out", n_out as u64 * 4).unwrap();
    let s = step(gpu, t, n_past);
    let bound = att.bind(gpu, &s, &qb, &kb, &vb, &mb, &ob).unwrap();
    run(gpu, |p| att.encode(p, &bound, t).unwrap());
    read(gpu, &ob, n_out)
}

/// Sliding-window attention (gemma3's local layers): against the CPU reference, which applies
/// the window by position (`p - k < window`, positions from the tree's depths), in both
/// layouts, for windows smaller than the step (the window starts inside the tree), inside the
/// prefix, across 64-key tiles, and larger than everything (equal to no window); with a score
/// scale that is not 1/sqrt(HD). And the batch-invariance claim under a window: each node
/// equals the same token decoded alone after its ancestors.
#[test]
fn windowed_attention_matches_cpu_and_a_node_equals_itself_alone() {
    let Some(gpu) = common::gpu() else { return };
    let mw = 2u32;
    let mut case = 0u64;
    for layout in Layout::ALL {
        for shape in [attention_shapes(mw)[0], attention_shapes(mw)[2]] {
            let (hd, ctx, kvh) = (
                shape.head_dim as usize,
                shape.max_ctx as usize,
                shape.n_kv_head as usize,
            );
            let w = attn_width(&shape);
            let hw = (shape.n_head * shape.head_dim) as usize;
            let cache_len = kvh * ctx * hd;
            for (t, n_past, window) in [
                (17u32, 0u32, 3u32),
                (40, 0, 8),
                (17, 100, 1),
                (17, 100, 5),
                (9, 150, 70),
                (64, 62, 90),
                (17, 37, 1000),
            ] {
                case += 1;
                let options = AttentionOptions {
                    window,
                    scale: Some(0.0625 + 0.01 * case as f32),
                };
                let parents = if case.is_multiple_of(2) {
                    random_tree(case + 40, t as usize)
                } else {
                    (0..t as usize).map(|i| i.checked_sub(1)).collect()
                };
                let mask = cpu::ancestor_mask(&parents, mw as usize);
                let qkv = scaled(case, t as usize * w, 2.0);
                let kc = scaled(case + 1000, cache_len, 2.0);
                let vc = common::rand_f32(case + 2000, cache_len);
                let got = gpu_attention_with(
                    &gpu, layout, &shape, options, &qkv, &kc, &vc, &mask, t, n_past,
                );
                let want = cpu::attention_with(
                    &qkv,
                    &kc,
                    &vc,
                    &mask,
                    t as usize,
                    n_past as usize,
                    &shape,
                    &options,
                );
                let err = common::max_rel_err(&got, &want);
                let what = format!(
                    "{layout:?} H={} T={t} n_past={n_past} W={window}",
                    shape.n_head
                );
                assert!(err <= 1e-4, "windowed attention {what}: err {err}");
                // The window matters wherever a query has more keys than the window.
                let unwindowed = cpu::attention_with(
                    &qkv,
                    &kc,
                    &vc,
                    &mask,
                    t as usize,
                    n_past as usize,
                    &shape,
                    &AttentionOptions {
                        window: 0,
                        ..options
                    },
                );
                let longest = n_past as usize
                    + (0..t as usize)
                        .map(|i| depth(&parents, i) + 1)
                        .max()
                        .unwrap_or(0);
                if longest > window as usize {
                    assert!(
                        common::max_rel_err(&got, &unwindowed) > 1e-3,
                        "{what}: the window changed nothing"
                    );
                } else {
                    assert!(common::max_rel_err(&got, &unwindowed) <= 1e-4, "{what}");
                }
                for node in 0..t as usize {
                    let chain = path(&parents, node);
                    let d = chain.len() - 1;
                    let (mut k1, mut v1) = (kc.clone(), vc.clone());
                    for g in 0..kvh {
                        for (k, &j) in chain.iter().enumerate() {
                            let src = (g * ctx + n_past as usize + j) * hd;
                            let dst = (g * ctx + n_past as usize + k) * hd;
                            k1[dst..dst + hd].copy_from_slice(&kc[src..src + hd]);
                            v1[dst..dst + hd].copy_from_slice(&vc[src..src + hd]);
                        }
                    }
                    let alone = gpu_attention_with(
                        &gpu,
                        layout,
                        &shape,
                        options,
                        &qkv[node * w..(node + 1) * w],
                        &k1,
                        &v1,
                        &[1, 0],
                        1,
                        n_past + d as u32,
                    );
                    assert_eq!(
                        bits(&alone),
                        bits(&got[node * hw..(node + 1) * hw]),
                        "{what}: node {node} at depth {d} differs from T=1 after n_past+{d}"
                    );
                }
            }
        }
    }
}

#[test]
fn tree_attention_matches_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut case = 0u64;
    let sizes = [(2u32, &TS[..]), (3, &[70u32][..])];
    for ((mw, ts), layout) in sizes.into_iter().flat_map(|s| Layout::ALL.map(|l| (s, l))) {
        for shape in attention_shapes(mw) {
            let cache_len = (shape.n_kv_head * shape.max_ctx * shape.head_dim) as usize;
            for &t in ts {
                // n_past = 150 puts keys in several 64-key tiles.
                for n_past in [0u32, 37, 150] {
                    case += 1;
                    let qkv = scaled(case, t as usize * attn_width(&shape), 2.0);
                    // Random everywhere: rows past n_past + T and masked-out step rows hold
                    // values the kernel must not read.
                    let kc = scaled(case + 1000, cache_len, 2.0);
                    let vc = common::rand_f32(case + 2000, cache_len);
                    let parents = random_tree(case, t as usize);
                    let mask = cpu::ancestor_mask(&parents, mw as usize);
                    let got = gpu_attention(&gpu, layout, &shape, &qkv, &kc, &vc, &mask, t, n_past);
                    let want =
                        cpu::attention(&qkv, &kc, &vc, &mask, t as usize, n_past as usize, &shape);
                    // Online softmax in f32 over up to 220 keys vs an f64 reference: ~1e-6;
                    // 1e-4 stated (DESIGN's attention tolerance).
                    let err = common::max_rel_err(&got, &want);
                    assert!(
                        err <= 1e-4,
                        "attention {layout:?} H={} KVH={} HD={} T={t} n_past={n_past}: err {err}",
                        shape.n_head,
                        shape.n_kv_head,
                        shape.head_dim
                    );
                }
            }
        }
    }
}

/// The main claim: RoPE + KV append + attention of a branching tree give, for every node,
/// the bits that each root-to-leaf chain gives when it runs on its own (its tokens at
/// positions n_past.., contiguous cache rows, a lower-triangular mask).
#[test]
fn tree_attention_equals_each_chain_bitwise() {
    let Some(gpu) = common::gpu() else { return };
    let mw = 2u32;
    let shapes = attention_shapes(mw).into_iter().enumerate();
    for ((si, shape), layout) in shapes.flat_map(|s| Layout::ALL.map(|l| (s, l))) {
        let rope = RopeShape {
            n_head: shape.n_head,
            n_kv_head: shape.n_kv_head,
            head_dim: shape.head_dim,
            n_rot: shape.head_dim,
            theta: 10_000.0,
            style: if si % 2 == 0 {
                RopeStyle::Neox
            } else {
                RopeStyle::Normal
            },
            max_ctx: shape.max_ctx,
        };
        let w = attn_width(&shape);
        let cache_len = (shape.n_kv_head * shape.max_ctx * shape.head_dim) as usize;
        // n_past = 60: nodes of depth >= 4 cross the first 64-key tile boundary.
        for (t, n_past) in [(17u32, 60u32), (64, 5), (9, 0)] {
            let seed = 300 + si as u64 * 10 + t as u64;
            let parents = random_tree(seed, t as usize);
            let qkv = scaled(seed, t as usize * w, 2.0);
            let prefix_k = scaled(seed + 1, cache_len, 2.0);
            let prefix_v = common::rand_f32(seed + 2, cache_len);
            let pos: Vec<u32> = (0..t as usize)
                .map(|i| n_past + depth(&parents, i) as u32)
                .collect();
            let mask = cpu::ancestor_mask(&parents, mw as usize);
            let (tree_qkv, tree_k, tree_v) =
                rope_append(&gpu, &rope, &qkv, &pos, (&prefix_k, &prefix_v), t, n_past);
            let tree_out = gpu_attention(
                &gpu, layout, &shape, &tree_qkv, &tree_k, &tree_v, &mask, t, n_past,
            );
            let hw = (shape.n_head * shape.head_dim) as usize;

            let is_leaf = |i: usize| !parents.contains(&Some(i));
            let mut leaves = 0;
            for leaf in (0..t as usize).filter(|&i| is_leaf(i)) {
                leaves += 1;
                let chain = path(&parents, leaf);
                let n = chain.len();
                let chain_qkv: Vec<f32> = chain
                    .iter()
                    .flat_map(|&i| qkv[i * w..(i + 1) * w].to_vec())
                    .collect();
                let chain_pos: Vec<u32> = (0..n as u32).map(|k| n_past + k).collect();
                let chain_mask = cpu::ancestor_mask(
                    &(0..n).map(|k| k.checked_sub(1)).collect::<Vec<_>>(),
                    mw as usize,
                );
                let (cq, ck, cv) = rope_append(
                    &gpu,
                    &rope,
                    &chain_qkv,
                    &chain_pos,
                    (&prefix_k, &prefix_v),
                    n as u32,
                    n_past,
                );
                let chain_out = gpu_attention(
                    &gpu,
                    layout,
                    &shape,
                    &cq,
                    &ck,
                    &cv,
                    &chain_mask,
                    n as u32,
                    n_past,
                );
                for (k, &node) in chain.iter().enumerate() {
                    assert_eq!(
                        bits(&chain_out[k * hw..(k + 1) * hw]),
                        bits(&tree_out[node * hw..(node + 1) * hw]),
                        "{layout:?} shape {si} T={t} n_past={n_past}: node {node} (depth {k}) of the tree \
                         differs from its chain to leaf {leaf}"
                    );
                }
            }
            assert!(leaves > 1 || t < 3, "the test tree should branch");
        }
    }
}

/// A node at depth d gives the same bits as the token decoded alone (T = 1) after a prefix
/// of n_past + d rows built from the same k/v rows (the prefix, then its ancestors).
#[test]
fn tree_node_equals_the_token_decoded_alone_bitwise() {
    let Some(gpu) = common::gpu() else { return };
    let mw = 2u32;
    let shapes = attention_shapes(mw).into_iter().enumerate();
    for ((si, shape), layout) in shapes.flat_map(|s| Layout::ALL.map(|l| (s, l))) {
        let w = attn_width(&shape);
        let (hd, ctx, kvh) = (
            shape.head_dim as usize,
            shape.max_ctx as usize,
            shape.n_kv_head as usize,
        );
        let cache_len = kvh * ctx * hd;
        for (t, n_past) in [(17u32, 100u32), (64, 62)] {
            let seed = 700 + si as u64 * 10 + t as u64;
            let parents = random_tree(seed, t as usize);
            let mask = cpu::ancestor_mask(&parents, mw as usize);
            let qkv = scaled(seed, t as usize * w, 2.0);
            let kc = scaled(seed + 1, cache_len, 2.0);
            let vc = common::rand_f32(seed + 2, cache_len);
            let tree_out = gpu_attention(&gpu, layout, &shape, &qkv, &kc, &vc, &mask, t, n_past);
            let hw = (shape.n_head * shape.head_dim) as usize;
            for node in 0..t as usize {
                let chain = path(&parents, node);
                let d = chain.len() - 1;
                // Prefix rows as they are, then the chain's rows (ancestors, then the node).
                let (mut k1, mut v1) = (kc.clone(), vc.clone());
                for g in 0..kvh {
                    for (k, &j) in chain.iter().enumerate() {
                        let src = (g * ctx + n_past as usize + j) * hd;
                        let dst = (g * ctx + n_past as usize + k) * hd;
                        k1[dst..dst + hd].copy_from_slice(&kc[src..src + hd]);
                        v1[dst..dst + hd].copy_from_slice(&vc[src..src + hd]);
                    }
                }
                let alone = gpu_attention(
                    &gpu,
                    layout,
                    &shape,
                    &qkv[node * w..(node + 1) * w],
                    &k1,
                    &v1,
                    &[1, 0],
                    1,
                    n_past + d as u32,
                );
                assert_eq!(
                    bits(&alone),
                    bits(&tree_out[node * hw..(node + 1) * hw]),
                    "{layout:?} shape {si} T={t}: node {node} at depth {d} differs from T=1 \
                     after n_past+{d}"
                );
            }
        }
    }
}

#[test]
fn attention_rejects_unsupported_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let s = |n_head, n_kv_head, head_dim| AttentionShape {
        n_head,
        n_kv_head,
        head_dim,
        max_ctx: 16,
        mask_words: 1,
    };
    assert!(
        Attention::new(&gpu, &s(9, 2, 64)).is_err(),
        "9 heads over 2 kv heads"
    );
    assert!(
        Attention::new(&gpu, &s(4, 2, 66)).is_err(),
        "head_dim not a multiple of 4"
    );
    assert!(
        Attention::new(&gpu, &s(4, 2, 512)).is_err(),
        "head_dim over 256"
    );
}

// ---------------------------------------------------------------------------------------
// KV compaction

/// After compaction the whole cache equals the cache of a plain run that appended only
/// the accepted tokens.
#[test]
fn kv_compact_equals_appending_only_the_accepted_rows() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    for (si, (kvh, hd)) in [(2u32, 64u32), (3, 128)].into_iter().enumerate() {
        let (h, max_ctx) = (3 * kvh, 200u32);
        let w = ((h + 2 * kvh) * hd) as usize;
        let cache_len = (kvh * max_ctx * hd) as usize;
        let append = KvAppend::new(&gpu, h, kvh, hd, max_ctx).unwrap();
        let compact = KvCompact::new(&gpu, kvh, hd, max_ctx).unwrap();
        let mut keeps: Vec<(u32, Vec<u32>)> = vec![
            (1, vec![0]),
            (3, vec![0, 2]),
            (4, vec![0, 2, 3]), // the overlapping case: 2→1 and 3→2
            (9, vec![0, 1, 2, 3, 4, 5, 6, 7, 8]),
            (9, vec![0, 3, 7, 8]),
            (64, vec![0]),
        ];
        let mut big: Vec<u32> = (1..64).filter(|_| rng.random_bool(0.3)).collect();
        big.insert(0, 0);
        keeps.push((64, big));
        for (t, keep) in keeps {
            let n_past = 37u32;
            let qkv = common::rand_f32(si as u64 * 1000 + t as u64, t as usize * w);
            // The prefix holds data; the rest of the cache starts zeroed.
            let mut base = common::rand_f32(9, cache_len);
            for g in 0..kvh as usize {
                let r = (g * max_ctx as usize + n_past as usize) * hd as usize;
                base[r..(g + 1) * (max_ctx * hd) as usize].fill(0.0);
            }

            // Tree run: append all T nodes, then compact to the accepted path.
            let kc = gpu.upload("k", &base).unwrap();
            let vc = gpu.upload("v", &base).unwrap();
            let qb = gpu.upload("qkv", &qkv).unwrap();
            let keep_b = gpu.upload("keep", &keep).unwrap();
            let n_b = gpu.upload("n_keep", &[keep.len() as u32]).unwrap();
            let s = step(&gpu, t, n_past);
            let ab = append.bind(&gpu, &s, &qb, &kc, &vc).unwrap();
            let cb = compact.bind(&gpu, &s, &keep_b, &n_b, &kc, &vc).unwrap();
            run(&gpu, |p| {
                append.encode(p, &ab, t).unwrap();
                compact.encode(p, &cb);
            });

            // Plain run: append only the accepted tokens.
            let n = keep.len() as u32;
            let plain_qkv: Vec<f32> = keep
                .iter()
                .flat_map(|&j| qkv[j as usize * w..(j as usize + 1) * w].to_vec())
                .collect();
            let pk = gpu.upload("k", &base).unwrap();
            let pv = gpu.upload("v", &base).unwrap();
            let pq = gpu.upload("qkv", &plain_qkv).unwrap();
            let ps = step(&gpu, n, n_past);
            let pb = append.bind(&gpu, &ps, &pq, &pk, &pv).unwrap();
            run(&gpu, |p| append.encode(p, &pb, n).unwrap());

            assert_eq!(
                bits(&read(&gpu, &kc, cache_len)),
                bits(&read(&gpu, &pk, cache_len)),
                "k cache after compacting T={t} to {keep:?}"
            );
            assert_eq!(
                bits(&read(&gpu, &vc, cache_len)),
                bits(&read(&gpu, &pv, cache_len)),
                "v cache after compacting T={t} to {keep:?}"
            );
        }
    }
}

#[test]
fn encode_refuses_a_t_the_buffers_cannot_hold() {
    let Some(gpu) = common::gpu() else { return };
    let norm = RmsNorm::new(&gpu, 8, 1e-5).unwrap();
    let x = gpu.storage("x", 3 * 8 * 4).unwrap();
    let w = gpu.storage("w", 8 * 4).unwrap();
    let y = gpu.storage("y", 3 * 8 * 4).unwrap();
    let s = step(&gpu, 4, 0);
    let bound = norm.bind(&gpu, &s, &x, &w, &y).unwrap();
    let mut enc = gpu.encoder("t");
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
    assert!(norm.encode(&mut pass, &bound, 3).is_ok());
    let err = norm.encode(&mut pass, &bound, 4).unwrap_err();
    assert!(err.to_string().contains("rmsnorm"), "{err}");
    assert!(
        norm.bind(&gpu, &s, &x, &gpu.storage("w", 4).unwrap(), &y)
            .is_err(),
        "short w"
    );
}

/// Top-K ids by logit (ties to the lower index, NaN never chosen) and their softmax
/// probabilities, against a CPU reference (probabilities to 1e-5 relative).
#[test]
fn topk_matches_cpu_with_ties_and_nan() {
    use tandem::kernels::topk::TopK;
    let Some(gpu) = common::gpu() else { return };
    for (v, k) in [(50u32, 4u32), (1001, 1), (151_936, 8)] {
        let kern = TopK::new(&gpu, v, k).unwrap();
        let (vu, ku) = (v as usize, k as usize);
        let t = 3u32;
        let mut x = scaled(v as u64, t as usize * vu, 8.0);
        for (r, row) in x.chunks_mut(vu).enumerate() {
            if r == 1 {
                // A tie across the top: the lower indices come first.
                row[vu - 1] = 20.0;
                row[vu / 2] = 20.0;
                row[3] = f32::NAN;
            }
        }
        let xb = gpu.upload("x", &x).unwrap();
        let ib = gpu.storage("ids", (t * k) as u64 * 4).unwrap();
        let pb = gpu.storage("probs", (t * k) as u64 * 4).unwrap();
        let s = step(&gpu, t, 0);
        let bound = kern.bind(&gpu, &s, &xb, &ib, &pb).unwrap();
        run(&gpu, |p| kern.encode(p, &bound, t).unwrap());
        let ids = gpu.read_vec_blocking::<u32>(&ib, (t * k) as usize).unwrap();
        let probs = read(&gpu, &pb, (t * k) as usize);
        for (r, row) in x.chunks(vu).enumerate() {
            let mut order: Vec<usize> = (0..vu).filter(|&i| !row[i].is_nan()).collect();
            order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
            let m = row
                .iter()
                .copied()
                .filter(|f| !f.is_nan())
                .fold(f32::MIN, f32::max) as f64;
            let sum: f64 = row
                .iter()
                .filter(|f| !f.is_nan())
                .map(|&f| (f as f64 - m).exp())
                .sum();
            for j in 0..ku {
                assert_eq!(ids[r * ku + j] as usize, order[j], "v={v} row {r} rank {j}");
                let want = (row[order[j]] as f64 - m).exp() / sum;
                let got = probs[r * ku + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * want.max(1e-3),
                    "v={v} row {r} rank {j}: {got} vs {want}"
                );
            }
        }
        if v == 151_936 {
            assert_eq!(&ids[ku..ku + 2], &[v / 2, v - 1]);
        }
    }
}

#[test]
fn logit_mask_keeps_exactly_the_allowed_tokens_and_is_batch_invariant() {
    use tandem::kernels::logit_mask::{mask_words, LogitMask, MASKED};
    let Some(gpu) = common::gpu() else { return };
    // A row length that is not a multiple of 32 (the last word is partial).
    let v = 1000usize;
    let w = mask_words(v);
    let kernel = LogitMask::new(&gpu, v as u32).unwrap();
    let go = |logits: &[f32], mask: &[u32], t: u32| {
        let lb = gpu.upload("logits", logits).unwrap();
        let mb = gpu.upload("mask", mask).unwrap();
        let s = step(&gpu, t, 0);
        let bound = kernel.bind(&gpu, &s, &mb, &lb).unwrap();
        run(&gpu, |p| kernel.encode(p, &bound, t).unwrap());
        read(&gpu, &lb, logits.len())
    };
    for t in TS {
        let t = t as usize;
        let logits = common::rand_f32(t as u64, t * v);
        // Row r allows every token whose id is ≡ r (mod 3) or below r, and nothing else.
        let mut mask = vec![0u32; t * w];
        for r in 0..t {
            for tok in (0..v).filter(|&tok| tok % 3 == r % 3 || tok < r) {
                mask[r * w + tok / 32] |= 1 << (tok % 32);
            }
        }
        let got = go(&logits, &mask, t as u32);
        for r in 0..t {
            for tok in 0..v {
                let allowed = tok % 3 == r % 3 || tok < r;
                let want = if allowed { logits[r * v + tok] } else { MASKED };
                assert_eq!(
                    got[r * v + tok].to_bits(),
                    want.to_bits(),
                    "T={t} row {r} token {tok} (allowed: {allowed})"
                );
            }
        }
        // The middle row masked alone equals the same row inside the batch.
        let r = t / 2;
        let alone = go(&logits[r * v..(r + 1) * v], &mask[r * w..(r + 1) * w], 1);
        assert_eq!(bits(&alone), bits(&got[r * v..(r + 1) * v]), "T={t}");
    }
    assert!(LogitMask::new(&gpu, 0).is_err());
}

#[test]
fn contrastive_scores_match_the_f64_reference_and_are_batch_invariant() {
    use tandem::kernels::contrastive::{reference_row, Contrastive, ContrastiveParams};
    let Some(gpu) = common::gpu() else { return };
    let v = 1003usize;
    for p in [
        ContrastiveParams {
            alpha: 0.1,
            beta: 0.5,
        },
        ContrastiveParams {
            alpha: 1e-3,
            beta: 1.0,
        },
        ContrastiveParams {
            alpha: 1.0,
            beta: 0.0,
        },
    ] {
        let kernel = Contrastive::new(&gpu, v as u32, p).unwrap();
        let go = |e: &[f32], a: &[f32], t: u32| {
            let eb = gpu.upload("expert", e).unwrap();
            let ab = gpu.upload("amateur", a).unwrap();
            let s = step(&gpu, t, 0);
            let bound = kernel.bind(&gpu, &s, &eb, &ab).unwrap();
            run(&gpu, |pass| kernel.encode(pass, &bound, t).unwrap());
            read(&gpu, &eb, e.len())
        };
        for t in TS {
            let t = t as usize;
            // Logits of a realistic spread (±8).
            let e = scaled(t as u64, t * v, 8.0);
            let a = scaled(100 + t as u64, t * v, 8.0);
            let got = go(&e, &a, t as u32);
            for r in 0..t {
                let want = reference_row(&e[r * v..(r + 1) * v], &a[r * v..(r + 1) * v], p);
                for i in 0..v {
                    let (g, w) = (got[r * v + i], want[i]);
                    if w == f32::MIN || g == f32::MIN {
                        // The plausible set agrees, but for a logit on its very edge.
                        let edge = (e[r * v + i]
                            - e[r * v..(r + 1) * v]
                                .iter()
                                .cloned()
                                .fold(f32::MIN, f32::max)
                            - p.alpha.ln())
                        .abs();
                        assert!(
                            g == w || edge < 1e-5,
                            "{p:?} T={t} row {r} token {i}: {g} vs {w}"
                        );
                    } else {
                        assert!(
                            (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                            "{p:?} T={t} row {r} token {i}: {g} vs {w}"
                        );
                    }
                }
            }
            let r = t / 2;
            let alone = go(&e[r * v..(r + 1) * v], &a[r * v..(r + 1) * v], 1);
            assert_eq!(bits(&alone), bits(&got[r * v..(r + 1) * v]), "{p:?} T={t}");
        }
    }
    let bad = ContrastiveParams {
        alpha: 0.0,
        beta: 0.5,
    };
    assert!(Contrastive::new(&gpu, 10, bad).is_err());
    let bad = ContrastiveParams {
        alpha: 0.5,
        beta: f32::NAN,
    };
    assert!(Contrastive::new(&gpu, 10, bad).is_err());
}
