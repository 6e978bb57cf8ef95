//! Browser tests: run in headless Chromium on its WebGPU adapter (SwiftShader, no shader-f16)
//! via `scripts/test-browser.sh`. Native builds compile this file to nothing.
//!
//! The kernels against the CPU references (`tandem::kernels::reference`,
//! `tandem::model::quant`) on the browser's WebGPU: the same claims as the native kernel
//! tests (tests/kernels_*.rs), on fewer sizes because SwiftShader is slow. Only async
//! readbacks (`read_vec(..).await`): the browser cannot block.
#![cfg(target_arch = "wasm32")]

#[path = "common/cpu.rs"]
mod cpu;

use cpu::{
    bits, check_probs_row, matmul_f64, max_rel_err, rand_f32, random_tree, scaled, tree_path,
};
use rand::{Rng, SeedableRng};
use tandem::gpu::{Gpu, GpuOptions};
use tandem::kernels::argmax::Argmax;
use tandem::kernels::attention::{Attention, AttentionShape};
use tandem::kernels::embed::Embedding;
use tandem::kernels::matmul::{Epilogue, Matmul, MatmulBinding, MatmulPath, QuantMatrix};
use tandem::kernels::reference;
use tandem::kernels::sample::{SampleParams, Sampler};
use tandem::kernels::verify::{Draft, Verifier, VerifyBuffers};
use tandem::kernels::Layout;
use tandem::kernels::Step;
use tandem::model::quant::{dequantize, quantize, GgmlType};
use tandem::speculative::tree::{verify_greedy, DraftTree};
use wasm_bindgen_test::*;

use GgmlType::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Every weight type the GPU kernels take.
const TYPES: [GgmlType; 15] = tandem::quant::SUPPORTED;

async fn gpu() -> Gpu {
    Gpu::new(&GpuOptions::default())
        .await
        .expect("the browser offers WebGPU (start Chromium with --enable-unsafe-webgpu)")
}

fn log(msg: &str) {
    web_sys::console::log_1(&msg.into());
}

/// Milliseconds since `start` (the browser's clock; `std::time` panics on wasm32).
fn ms_since(start: f64) -> f64 {
    js_sys::Date::now() - start
}

/// Records `f` into one compute pass and submits it.
fn submit(gpu: &Gpu, f: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut enc = gpu.encoder("web test");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        f(&mut pass);
    }
    gpu.submit(enc);
}

#[wasm_bindgen_test]
async fn browser_adapter_has_no_f16_and_round_trips_a_buffer() {
    let gpu = gpu().await;
    log(&format!("adapter: {:?}", gpu.summary()));
    let src = "@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&a)) { a[id.x] = a[id.x] * 3u; }
}";
    let p = gpu.pipeline("web-triple", src, "main", &[]).unwrap();
    let data: Vec<u32> = (0..1000).collect();
    let buf = gpu.upload("a", &data).unwrap();
    let bg = gpu.bind("a", &p, &[&buf]);
    let mut enc = gpu.encoder("t");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&p);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(16, 1, 1);
    }
    gpu.submit(enc);
    let out: Vec<u32> = gpu.read_vec(&buf, 1000).await.unwrap();
    assert_eq!(out, (0..1000).map(|x| x * 3).collect::<Vec<u32>>());
}

// ---------------------------------------------------------------------------------------
// Quantized matmul

/// K: a whole number of blocks that is not a multiple of the kernels' tiles
/// (3 K-quant blocks; 7 blocks of 32 otherwise).
fn awkward_k(ty: GgmlType) -> usize {
    if ty.block_size() == 256 {
        256 * 3
    } else {
        32 * 7
    }
}

/// Random weights: quantized with the CPU quantizer where tandem has one, else random
/// blocks (`quant::random_blocks`). (GGUF bytes, dequantized reference.)
fn weights(ty: GgmlType, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let bytes = if tandem::quant::can_quantize(ty) {
        quantize(ty, &rand_f32(seed, n * k)).unwrap()
    } else {
        tandem::quant::random_blocks(ty, n * k, seed).unwrap()
    };
    let w = dequantize(ty, &bytes, n * k).unwrap();
    (bytes, w)
}

/// One matmul's buffers: the step uniform, x: [max_t, K] f32, y: [max_t, N] f32.
struct MatmulCase {
    n: usize,
    step: wgpu::Buffer,
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    binding: MatmulBinding,
}

impl MatmulCase {
    fn new(gpu: &Gpu, mm: &Matmul, m: &QuantMatrix, x: &[f32], max_t: usize) -> MatmulCase {
        let step = gpu.uniform("step", &Step::new(1, 0));
        let xb = gpu.upload("x", x).unwrap();
        let y = gpu.storage("y", (max_t * m.n * 4) as u64).unwrap();
        let binding = mm
            .bind(gpu, &step, m, &xb, &y, Epilogue::default())
            .unwrap();
        MatmulCase {
            n: m.n,
            step,
            x: xb,
            y,
            binding,
        }
    }

    /// y[0..t] for T = `t` on `path`. y is filled with NaN first, so a row the kernel
    /// skips cannot pass by accident.
    async fn run(&self, gpu: &Gpu, mm: &Matmul, t: usize, path: MatmulPath) -> Vec<f32> {
        gpu.queue
            .write_buffer(&self.step, 0, bytemuck::bytes_of(&Step::new(t as u32, 0)));
        let nan = vec![f32::NAN; self.y.size() as usize / 4];
        gpu.queue
            .write_buffer(&self.y, 0, bytemuck::cast_slice(&nan));
        submit(gpu, |p| {
            mm.encode_path(p, &self.binding, t as u32, path).unwrap()
        });
        gpu.read_vec(&self.y, t * self.n).await.unwrap()
    }
}

/// The GPU's result against an f64 matmul over the *dequantized* weights: only f32
/// rounding separates them, so relative error ≤ 1e-3 (|a - b| / max(1, |b|)) is loose for
/// K ≤ 768 and still catches any wrong element (a wrong nibble moves a result by ~|x|·d).
const MATMUL_TOL: f32 = 1e-3;

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = max_rel_err(got, want);
    assert!(e <= tol, "{what}: max relative error {e} > {tol}");
}

/// For every weight type against the CPU: T = 1, 3, 17, 64 (small-T kernel), T = 100
/// (tiled kernel, two row tiles, on the automatic path), and each kernel outside its usual
/// range (T = 17 tiled, T = 100 small). Then batch invariance: rows 0, 8, 16, 40 and 63
/// multiplied alone (T = 1) equal their rows of the T = 17 and T = 64 batches bit for bit.
/// Both layouts of the small-T kernel (the adapter's own first).
#[wasm_bindgen_test]
async fn matmul_matches_cpu_and_is_batch_invariant_for_every_type() {
    let gpu = gpu().await;
    let own = Layout::for_gpu(&gpu);
    let other = match own {
        Layout::Gpu => Layout::Cpu,
        Layout::Cpu => Layout::Gpu,
    };
    log(&format!("layout for this adapter: {own:?}"));
    let (n, max_t) = (37usize, 100usize);
    let cases = TYPES
        .into_iter()
        .enumerate()
        .flat_map(|c| [(c, own), (c, other)]);
    for ((i, ty), layout) in cases {
        let start = js_sys::Date::now();
        let name = format!("{} {layout:?}", ty.name());
        let k = awkward_k(ty);
        let (bytes, w) = weights(ty, n, k, 10 + i as u64);
        let x = rand_f32(100 + i as u64, max_t * k);
        let want = matmul_f64(&x, &w, max_t, n, k);
        let m = QuantMatrix::upload(&gpu, "w", ty, n, k, &bytes).unwrap();
        let mm = Matmul::with_layout(&gpu, ty, layout).unwrap();
        let batch = MatmulCase::new(&gpu, &mm, &m, &x, max_t);
        let (mut y17, mut y64) = (Vec::new(), Vec::new());
        for (t, path) in [
            (1, MatmulPath::Auto),
            (3, MatmulPath::Auto),
            (17, MatmulPath::Auto),
            (64, MatmulPath::Auto),
            (100, MatmulPath::Auto),
            (17, MatmulPath::Tiled),
            (100, MatmulPath::Small),
        ] {
            let got = batch.run(&gpu, &mm, t, path).await;
            assert_close(
                &got,
                &want[..t * n],
                MATMUL_TOL,
                &format!("{name} T={t} {path:?}"),
            );
            match (t, path) {
                (17, MatmulPath::Auto) => y17 = got,
                (64, MatmulPath::Auto) => y64 = got,
                _ => {}
            }
        }
        let one = MatmulCase::new(&gpu, &mm, &m, &x[..k], 1);
        for r in [0usize, 8, 16, 40, 63] {
            gpu.queue
                .write_buffer(&one.x, 0, bytemuck::cast_slice(&x[r * k..(r + 1) * k]));
            let alone = one.run(&gpu, &mm, 1, MatmulPath::Auto).await;
            if r < 17 {
                assert_eq!(
                    bits(&alone),
                    bits(&y17[r * n..(r + 1) * n]),
                    "{name}: row {r} of T=17 differs from the same row at T=1"
                );
            }
            assert_eq!(
                bits(&alone),
                bits(&y64[r * n..(r + 1) * n]),
                "{name}: row {r} of T=64 differs from the same row at T=1"
            );
        }
        log(&format!("matmul {name}: {:.0} ms", ms_since(start)));
    }
}

// ---------------------------------------------------------------------------------------
// Tree attention

fn attn_width(s: &AttentionShape) -> usize {
    ((s.n_head + 2 * s.n_kv_head) * s.head_dim) as usize
}

/// Runs the attention kernel on uploaded copies of the given arrays.
#[allow(clippy::too_many_arguments)]
async fn gpu_attention(
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
    let att = Attention::with_layout(gpu, shape, layout).unwrap();
    let qb = gpu.upload("qkv", qkv).unwrap();
    let kb = gpu.upload("k", k_cache).unwrap();
    let vb = gpu.upload("v", v_cache).unwrap();
    let mb = gpu.upload("mask", mask).unwrap();
    let n_out = t as usize * (shape.n_head * shape.head_dim) as usize;
    let ob = gpu.storage("out", n_out as u64 * 4).unwrap();
    let s = gpu.uniform("step", &Step::new(t, n_past));
    let bound = att.bind(gpu, &s, &qb, &kb, &vb, &mb, &ob).unwrap();
    submit(gpu, |p| att.encode(p, &bound, t).unwrap());
    gpu.read_vec(&ob, n_out).await.unwrap()
}

fn attention_shapes() -> [AttentionShape; 2] {
    let shape = |n_head, n_kv_head, head_dim| AttentionShape {
        n_head,
        n_kv_head,
        head_dim,
        max_ctx: 256,
        mask_words: 2,
    };
    // Qwen2.5-0.5B's grouping (14 q heads over 2 kv heads), and a head dim of 128.
    [shape(14, 2, 64), shape(9, 3, 128)]
}

/// A random branching tree of T tokens after n_past cached rows against the CPU reference.
/// Every cache row, including rows past n_past + T and the rows of masked-out step tokens,
/// holds random values the kernel must not read. Both layouts.
#[wasm_bindgen_test]
async fn tree_attention_matches_cpu() {
    let gpu = gpu().await;
    let start = js_sys::Date::now();
    let mut case = 0u64;
    let cases = attention_shapes()
        .into_iter()
        .flat_map(|s| Layout::ALL.map(|l| (s, l)));
    for (shape, layout) in cases {
        let cache_len = (shape.n_kv_head * shape.max_ctx * shape.head_dim) as usize;
        // n_past = 150 puts keys in several 64-key tiles; T = 40 needs both mask words.
        for (t, n_past) in [(1u32, 37u32), (17, 0), (17, 150), (40, 90)] {
            case += 1;
            let qkv = scaled(case, t as usize * attn_width(&shape), 2.0);
            let kc = scaled(case + 1000, cache_len, 2.0);
            let vc = rand_f32(case + 2000, cache_len);
            let parents = random_tree(case, t as usize);
            let mask = reference::ancestor_mask(&parents, shape.mask_words as usize);
            let got = gpu_attention(&gpu, layout, &shape, &qkv, &kc, &vc, &mask, t, n_past).await;
            let want =
                reference::attention(&qkv, &kc, &vc, &mask, t as usize, n_past as usize, &shape);
            // Online softmax in f32 over at most 190 keys against an f64 reference: ~1e-6
            // in practice; 1e-4 stated (DESIGN's attention tolerance).
            let err = max_rel_err(&got, &want);
            assert!(
                err <= 1e-4,
                "attention {layout:?} H={} KVH={} HD={} T={t} n_past={n_past}: error {err}",
                shape.n_head,
                shape.n_kv_head,
                shape.head_dim
            );
        }
    }
    log(&format!("tree attention vs CPU: {:.0} ms", ms_since(start)));
}

/// The claim speculative decoding rests on: each node of a branching tree gets the bits
/// its root-to-leaf chain gets when the chain runs alone (its k/v rows contiguous after the
/// prefix, a lower-triangular mask). Both layouts.
#[wasm_bindgen_test]
async fn tree_attention_equals_each_chain_bitwise() {
    let gpu = gpu().await;
    for layout in Layout::ALL {
        tree_equals_chains(&gpu, layout).await;
    }
}

async fn tree_equals_chains(gpu: &Gpu, layout: Layout) {
    let start = js_sys::Date::now();
    let shape = attention_shapes()[0];
    let (hd, ctx, kvh) = (
        shape.head_dim as usize,
        shape.max_ctx as usize,
        shape.n_kv_head as usize,
    );
    let w = attn_width(&shape);
    let hw = (shape.n_head * shape.head_dim) as usize;
    let mw = shape.mask_words as usize;
    let cache_len = kvh * ctx * hd;
    // n_past = 60: nodes of depth >= 4 cross the first 64-key tile boundary.
    let (t, n_past) = (17usize, 60usize);
    let parents = random_tree(300, t);
    let qkv = scaled(301, t * w, 2.0);
    let kc = scaled(302, cache_len, 2.0);
    let vc = rand_f32(303, cache_len);
    let mask = reference::ancestor_mask(&parents, mw);
    let tree_out = gpu_attention(
        gpu,
        layout,
        &shape,
        &qkv,
        &kc,
        &vc,
        &mask,
        t as u32,
        n_past as u32,
    )
    .await;

    let mut leaves = 0;
    for leaf in (0..t).filter(|&i| !parents.contains(&Some(i))) {
        leaves += 1;
        let chain = tree_path(&parents, leaf);
        let len = chain.len();
        let chain_qkv: Vec<f32> = chain
            .iter()
            .flat_map(|&i| qkv[i * w..(i + 1) * w].to_vec())
            .collect();
        // The prefix as it is, then the chain's rows in order; rows after it stay random.
        let (mut ck, mut cv) = (kc.clone(), vc.clone());
        for g in 0..kvh {
            for (d, &j) in chain.iter().enumerate() {
                let src = (g * ctx + n_past + j) * hd;
                let dst = (g * ctx + n_past + d) * hd;
                ck[dst..dst + hd].copy_from_slice(&kc[src..src + hd]);
                cv[dst..dst + hd].copy_from_slice(&vc[src..src + hd]);
            }
        }
        let lower: Vec<Option<usize>> = (0..len).map(|d| d.checked_sub(1)).collect();
        let chain_mask = reference::ancestor_mask(&lower, mw);
        let chain_out = gpu_attention(
            gpu,
            layout,
            &shape,
            &chain_qkv,
            &ck,
            &cv,
            &chain_mask,
            len as u32,
            n_past as u32,
        )
        .await;
        for (d, &node) in chain.iter().enumerate() {
            assert_eq!(
                bits(&chain_out[d * hw..(d + 1) * hw]),
                bits(&tree_out[node * hw..(node + 1) * hw]),
                "{layout:?}: node {node} (depth {d}) of the tree differs from its chain to leaf \
                 {leaf}"
            );
        }
    }
    assert!(
        leaves > 2,
        "the test tree should branch (it has {leaves} leaves)"
    );
    log(&format!(
        "tree attention == {leaves} chains: {:.0} ms",
        ms_since(start)
    ));
}

// ---------------------------------------------------------------------------------------
// Argmax

async fn gpu_argmax(gpu: &Gpu, k: &Argmax, rows: &[f32], t: u32) -> Vec<u32> {
    let xb = gpu.upload("x", rows).unwrap();
    let ob = gpu.storage("out", t as u64 * 4).unwrap();
    let s = gpu.uniform("step", &Step::new(t, 0));
    let bound = k.bind(gpu, &s, &xb, &ob).unwrap();
    submit(gpu, |p| k.encode(p, &bound, t).unwrap());
    gpu.read_vec::<u32>(&ob, t as usize).await.unwrap()
}

/// Qwen2.5's vocabulary width with planted ties (the lowest index must win, wherever the
/// threads that hold the tied values sit), NaNs and ±0; exact against the CPU reference
/// and against the indices the rules give. Row 2 alone (T = 1) gives what it gave in the
/// batch.
#[wasm_bindgen_test]
async fn argmax_over_a_vocabulary_with_ties() {
    let gpu = gpu().await;
    let start = js_sys::Date::now();
    let v = 151_936usize;
    let t = 5usize;
    let mut x = scaled(7, t * v, 10.0);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(8);
    let mut expect = vec![0u32; t];
    {
        let mut rows = x.chunks_mut(v);
        // Row 0: a two-way tie at random places.
        let row = rows.next().unwrap();
        let (a, b) = (rng.random_range(0..v), rng.random_range(0..v));
        row[a] = 50.0;
        row[b] = 50.0;
        expect[0] = a.min(b) as u32;
        // Row 1: a three-way tie at the very end, the middle and one past the first
        // 256-element stretch.
        let row = rows.next().unwrap();
        for i in [v - 1, v / 2, 257] {
            row[i] = 20.0;
        }
        expect[1] = 257;
        // Row 2: NaNs (one of them "larger" by bits) around a tie.
        let row = rows.next().unwrap();
        row[0] = f32::from_bits(0x7fff_ffff);
        row[100] = f32::NAN;
        row[v - 2] = 30.0;
        row[9_999] = 30.0;
        row[v - 1] = f32::NAN;
        expect[2] = 9_999;
        // Row 3: -0.0 and +0.0 tie; the lower index wins whatever the sign.
        let row = rows.next().unwrap();
        row.fill(-1.0);
        row[v - 1] = 0.0;
        row[v / 3] = -0.0;
        expect[3] = (v / 3) as u32;
        // Row 4: all NaN gives 0.
        rows.next().unwrap().fill(f32::NAN);
        expect[4] = 0;
    }
    assert_eq!(reference::argmax(&x, v), expect, "the CPU reference itself");
    let k = Argmax::new(&gpu, v as u32).unwrap();
    let got = gpu_argmax(&gpu, &k, &x, t as u32).await;
    assert_eq!(got, expect, "argmax V={v} T={t}");
    let alone = gpu_argmax(&gpu, &k, &x[2 * v..3 * v], 1).await;
    assert_eq!(alone, vec![expect[2]], "row 2 alone");
    log(&format!("argmax: {:.0} ms", ms_since(start)));
}

// ---------------------------------------------------------------------------------------
// Embedding gather

/// Gathers ids (repeats, the first and last rows, ids past the table) for every weight
/// type. Exact for types whose element is one product ((q - o) · d): the kernel does the
/// CPU dequantizer's f32 operations. Q4_1 and Q5_1 (q·d + m), Q2_K, Q4_K and Q5_K
/// (d·s·q - m) end in a multiply-add a shader compiler may fuse into an FMA: 1e-6 relative there.
#[wasm_bindgen_test]
async fn embedding_gather_equals_cpu_dequant() {
    let gpu = gpu().await;
    let start = js_sys::Date::now();
    let n = 37usize;
    let ids: Vec<u32> = vec![
        5,
        0,
        36,
        5,
        17,
        1,
        35,
        20,
        37,
        u32::MAX,
        8,
        9,
        10,
        29,
        3,
        2,
        36,
    ];
    let t = ids.len();
    for (i, ty) in TYPES.into_iter().enumerate() {
        let k = awkward_k(ty);
        let (bytes, w) = weights(ty, n, k, 30 + i as u64);
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&id| {
                let id = id as usize;
                if id < n {
                    w[id * k..(id + 1) * k].to_vec()
                } else {
                    vec![0.0; k]
                }
            })
            .collect();
        let m = QuantMatrix::upload(&gpu, "emb", ty, n, k, &bytes).unwrap();
        let e = Embedding::new(&gpu, ty).unwrap();
        let step = gpu.uniform("step", &Step::new(t as u32, 0));
        let ids_buf = gpu.upload("ids", &ids).unwrap();
        let out = gpu.storage("out", (t * k * 4) as u64).unwrap();
        let nan = vec![f32::NAN; t * k];
        gpu.queue.write_buffer(&out, 0, bytemuck::cast_slice(&nan));
        let b = e.bind(&gpu, &step, &m, &ids_buf, &out).unwrap();
        submit(&gpu, |p| e.encode(p, &b, t as u32).unwrap());
        let got: Vec<f32> = gpu.read_vec(&out, t * k).await.unwrap();
        if matches!(ty, Q4_1 | Q4_K | Q5_1 | Q2_K | Q5_K) {
            let err = max_rel_err(&got, &want);
            assert!(err <= 1e-6, "gather {}: error {err}", ty.name());
        } else {
            assert_eq!(bits(&got), bits(&want), "gather {}", ty.name());
        }
    }
    log(&format!("embedding gather: {:.0} ms", ms_since(start)));
}

// ---------------------------------------------------------------------------------------
// Sampling and tree verification

/// Over V = 1000 and Qwen2.5's vocabulary width: top-k = 1 and a tiny top-p sample the
/// argmax; top-k/top-p probabilities match the CPU reference (1e-5) and every draw is kept.
/// (This caught SwiftShader keeping a loop-local array's values between iterations.)
#[wasm_bindgen_test]
async fn sampling_matches_cpu_and_top_k_1_is_the_argmax() {
    let gpu = gpu().await;
    let start = js_sys::Date::now();
    for v in [1000usize, 151_936] {
        let (t, d) = (2u32, 3u32);
        let x = scaled(11 + v as u64, t as usize * v, 5.0);
        let want = reference::argmax(&x, v);
        let s = Sampler::with_draws(&gpu, v as u32, d).unwrap();
        let xb = gpu.upload("x", &x).unwrap();
        let ids = gpu.storage("ids", (t * d) as u64 * 4).unwrap();
        let probs = gpu.storage("probs", (t as usize * v * 4) as u64).unwrap();
        let st = gpu.uniform("step", &Step::new(t, 0));
        let b = s.bind_with_probs(&gpu, &st, &xb, &ids, &probs).unwrap();
        for (temperature, top_k, top_p) in [
            (1.0f32, 1u32, 1.0f32),
            (1.0, 0, 1e-6),
            (0.8, 40, 1.0),
            (1.0, 0, 0.9),
            (0.7, 50, 0.8),
        ] {
            let sp = SampleParams {
                temperature,
                top_k,
                top_p,
                seed: 5,
            };
            s.set_params(&gpu, &sp).unwrap();
            submit(&gpu, |p| s.encode(p, &b, t).unwrap());
            let got: Vec<u32> = gpu.read_vec(&ids, (t * d) as usize).await.unwrap();
            let pr: Vec<f32> = gpu.read_vec(&probs, t as usize * v).await.unwrap();
            for r in 0..t as usize {
                let what = format!("V={v} row {r} {sp:?}");
                let row = &pr[r * v..(r + 1) * v];
                check_probs_row(&x[r * v..(r + 1) * v], row, &sp, &what);
                for &id in &got[r * d as usize..(r + 1) * d as usize] {
                    assert!(row[id as usize] > 0.0, "{what}: drew {id}, not kept");
                    if top_k == 1 || top_p < 1e-3 {
                        assert_eq!(id, want[r], "{what}");
                    }
                }
            }
        }
    }
    log(&format!("sampling: {:.0} ms", ms_since(start)));
}

/// Speculative sampling with one draft token x ~ q: over 8,000 stratified trials the first
/// emitted token's counts pass a χ² test (0.1%, df 7: 24.32) against the target's p.
#[wasm_bindgen_test]
async fn speculative_sampling_one_draft_token_is_lossless() {
    let gpu = gpu().await;
    let start = js_sys::Date::now();
    let p = [0.05f32, 0.10, 0.30, 0.15, 0.10, 0.10, 0.15, 0.05];
    let q = [0.4f32, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0];
    let trials = 8000u32;
    let (v, t) = (8u32, 2u32);
    let ver = Verifier::new(&gpu, v, t).unwrap();
    let st = gpu.uniform("step", &Step::new(t, 0));
    let parents = gpu.upload("parents", &[u32::MAX, 0]).unwrap();
    let tokens = gpu.storage("tokens", 8).unwrap();
    let keep = gpu.storage("keep", (trials * t) as u64 * 4).unwrap();
    let n_keep = gpu.storage("n_keep", trials as u64 * 4).unwrap();
    let result = gpu
        .storage("result", (trials * (2 + t)) as u64 * 4)
        .unwrap();
    let scratch = gpu.storage("scratch", (trials * v) as u64 * 4).unwrap();
    let mut tp = p.to_vec();
    tp.extend([0.125f32; 8]);
    let mut dp = q.to_vec();
    dp.extend([0.0f32; 8]);
    let tp = gpu.upload("target probs", &tp).unwrap();
    let dp = gpu.upload("draft probs", &dp).unwrap();
    let io = VerifyBuffers {
        step: &st,
        tokens: &tokens,
        parents: &parents,
        keep: &keep,
        n_keep: &n_keep,
        result: &result,
    };
    let bound = ver
        .bind_sampling(&gpu, &io, &tp, Draft::Probs(&dp), Some(&scratch))
        .unwrap();
    ver.set_seed(&gpu, 99);
    let mut counts = [0u64; 8];
    for x in 0..4u32 {
        let n = (trials as f32 * q[x as usize]).round() as u32;
        gpu.queue
            .write_buffer(&tokens, 0, bytemuck::cast_slice(&[5u32, x]));
        submit(&gpu, |pass| ver.encode_trials(pass, &bound, t, n).unwrap());
        let res: Vec<u32> = gpu.read_vec(&result, (n * (2 + t)) as usize).await.unwrap();
        for r in res.chunks(4) {
            counts[r[2] as usize] += 1;
        }
    }
    let chi2: f64 = counts
        .iter()
        .zip(p)
        .map(|(&o, p)| {
            let e = trials as f64 * p as f64;
            (o as f64 - e).powi(2) / e
        })
        .sum();
    log(&format!(
        "speculative sampling: χ² {chi2:.1}, counts {counts:?}, {:.0} ms",
        ms_since(start)
    ));
    assert!(chi2 < 24.32, "χ² {chi2:.1} >= 24.32: counts {counts:?}");
}

/// Greedy tree verification on the GPU equals `speculative::tree::verify_greedy` on random trees
/// (rows, n_keep and the `[n, bonus, emitted…]` result).
#[wasm_bindgen_test]
async fn greedy_verification_equals_the_host_reference() {
    let gpu = gpu().await;
    let max_t = 64u32;
    let ver = Verifier::new(&gpu, 8, max_t).unwrap();
    let st = gpu.uniform("step", &Step::new(1, 0));
    let buf = |label| gpu.storage(label, max_t as u64 * 4).unwrap();
    let (tokens, parents, keep, argmax) =
        (buf("tokens"), buf("parents"), buf("keep"), buf("argmax"));
    let n_keep = gpu.storage("n_keep", 4).unwrap();
    let result = gpu.storage("result", (2 + max_t) as u64 * 4).unwrap();
    let io = VerifyBuffers {
        step: &st,
        tokens: &tokens,
        parents: &parents,
        keep: &keep,
        n_keep: &n_keep,
        result: &result,
    };
    let bound = ver.bind_greedy(&gpu, &io, &argmax).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    for case in 0..60u64 {
        let t = rng.random_range(1..=max_t as usize);
        let par = random_tree(case, t);
        let k = rng.random_range(1..4u32);
        let toks: Vec<u32> = (0..t).map(|_| rng.random_range(0..k)).collect();
        let am: Vec<u32> = (0..t).map(|_| rng.random_range(0..k)).collect();
        let gp: Vec<u32> = par
            .iter()
            .map(|p| p.map_or(u32::MAX, |p| p as u32))
            .collect();
        gpu.queue
            .write_buffer(&st, 0, bytemuck::bytes_of(&Step::new(t as u32, 0)));
        gpu.queue
            .write_buffer(&tokens, 0, bytemuck::cast_slice(&toks));
        gpu.queue
            .write_buffer(&parents, 0, bytemuck::cast_slice(&gp));
        gpu.queue
            .write_buffer(&argmax, 0, bytemuck::cast_slice(&am));
        submit(&gpu, |p| ver.encode(p, &bound, t as u32).unwrap());

        let mut tree = DraftTree::empty();
        for r in 1..t {
            tree.push(toks[r], par[r].and_then(|p| p.checked_sub(1)), 1.0)
                .unwrap();
        }
        let (rows, bonus) = verify_greedy(&tree, &am);
        let n = rows.len();
        let mut want = vec![n as u32, bonus];
        want.extend(rows[1..].iter().map(|&r| toks[r]));
        want.push(bonus);
        let got: Vec<u32> = gpu.read_vec(&result, 2 + n).await.unwrap();
        assert_eq!(got, want, "case {case}: result, T={t}");
        let got_keep: Vec<u32> = gpu.read_vec(&keep, n).await.unwrap();
        let want_keep: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        assert_eq!(got_keep, want_keep, "case {case}: keep");
        let got_n: Vec<u32> = gpu.read_vec(&n_keep, 1).await.unwrap();
        assert_eq!(got_n, vec![n as u32], "case {case}: n_keep");
    }
}
