//! Quantized matmul and embedding gather kernels against the CPU dequantizer
//! (`tandem::model::quant`), for every weight type the GPU takes.
mod common;

use tandem::gpu::{Gpu, GpuOptions};
use tandem::kernels::embed::Embedding;
use tandem::kernels::matmul::{
    small_rows, Epilogue, Glu, Matmul, MatmulBinding, MatmulPath, QuantMatrix,
};
use tandem::kernels::Layout;
use tandem::kernels::Step;
use tandem::model::quant::{dequantize, quantize, GgmlType};
use tandem::Error;

use GgmlType::*;

/// Every type with GPU kernels.
const TYPES: [GgmlType; 15] = tandem::quant::SUPPORTED;
// Both layouts of the small-T kernel (`Layout::ALL`) are checked on whatever adapter runs
// the tests; a device uses one of them (`Layout::for_gpu`).

/// The GPU's result is compared with an f64 matmul over the *dequantized* weights, so only
/// f32 rounding separates them: relative error ≤ 1e-3 (|a - b| / max(1, |b|)) is loose
/// for K ≤ 768 and catches any wrong element (a wrong nibble moves a result by ~|x|·d).
const TOL: f32 = 1e-3;

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
/// blocks (every bit pattern of the quant bytes) whose f16 scales keep each block's values
/// within ±1. (GGUF bytes, dequantized reference.)
fn weights(ty: GgmlType, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let bytes = if tandem::quant::can_quantize(ty) {
        quantize(ty, &common::rand_f32(seed, n * k)).unwrap()
    } else {
        tandem::quant::random_blocks(ty, n * k, seed).unwrap()
    };
    let w = dequantize(ty, &bytes, n * k).unwrap();
    (bytes, w)
}

/// Buffers for one matmul: the step uniform, x: [max_t, K], y: [max_t, N].
struct Setup {
    n: usize,
    step: wgpu::Buffer,
    x: wgpu::Buffer,
    y: wgpu::Buffer,
}

impl Setup {
    fn new(gpu: &Gpu, x: &[f32], n: usize, max_t: usize) -> Setup {
        Setup {
            n,
            step: gpu.uniform("step", &Step::new(1, 0)),
            x: gpu.upload("x", x).unwrap(),
            y: gpu.storage("y", (max_t * n * 4) as u64).unwrap(),
        }
    }
}

/// Run one matmul for T = `t` and read back y[0..t*n]. y is filled with NaN first unless
/// `keep_y`, so a row the kernel skips cannot pass by accident.
fn run(
    gpu: &Gpu,
    mm: &Matmul,
    s: &Setup,
    b: &MatmulBinding,
    t: usize,
    path: MatmulPath,
    keep_y: bool,
) -> Vec<f32> {
    gpu.queue
        .write_buffer(&s.step, 0, bytemuck::bytes_of(&Step::new(t as u32, 0)));
    if !keep_y {
        let nan = vec![f32::NAN; s.y.size() as usize / 4];
        gpu.queue.write_buffer(&s.y, 0, bytemuck::cast_slice(&nan));
    }
    let mut enc = gpu.encoder("matmul test");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        mm.encode_path(&mut pass, b, t as u32, path).unwrap();
    }
    gpu.submit(enc);
    gpu.read_vec_blocking::<f32>(&s.y, t * s.n).unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = common::max_rel_err(got, want);
    assert!(e <= TOL, "{what}: max relative error {e} > {TOL}");
}

#[test]
fn matmul_matches_cpu_reference_for_every_type() {
    let Some(gpu) = common::gpu() else { return };
    let n = 37;
    let ts = [1usize, 3, 17, 64, 100];
    let max_t = 100;
    for (i, ty) in TYPES.into_iter().enumerate() {
        let k = awkward_k(ty);
        let (bytes, w) = weights(ty, n, k, 10 + i as u64);
        let x = common::rand_f32(100 + i as u64, max_t * k);
        let want = common::matmul_f64(&x, &w, max_t, n, k);
        let m = QuantMatrix::upload(&gpu, "w", ty, n, k, &bytes).unwrap();
        let s = Setup::new(&gpu, &x, n, max_t);
        for layout in Layout::ALL {
            let mm = Matmul::with_layout(&gpu, ty, layout).unwrap();
            let b = mm
                .bind(&gpu, &s.step, &m, &s.x, &s.y, Epilogue::default())
                .unwrap();
            for t in ts {
                let got = run(&gpu, &mm, &s, &b, t, MatmulPath::Auto, false);
                let what = format!("{} {layout:?} T={t}", ty.name());
                assert_close(&got, &want[..t * n], &what);
            }
            // Each kernel also outside its usual range: tiled for tiny T, small for T > 64.
            for (t, path) in [
                (1, MatmulPath::Tiled),
                (17, MatmulPath::Tiled),
                (100, MatmulPath::Small),
            ] {
                let got = run(&gpu, &mm, &s, &b, t, path, false);
                let what = format!("{} {layout:?} T={t} {path:?}", ty.name());
                assert_close(&got, &want[..t * n], &what);
            }
        }
    }
}

#[test]
fn bias_and_accumulate_epilogues() {
    let Some(gpu) = common::gpu() else { return };
    let n = 45;
    for ty in [Q8_0, Q4_K, F16] {
        let k = awkward_k(ty);
        let (bytes, w) = weights(ty, n, k, 3);
        let max_t = 80;
        let x = common::rand_f32(4, max_t * k);
        let bias = common::rand_f32(5, n);
        let y0 = common::rand_f32(6, max_t * n);
        let xw = common::matmul_f64(&x, &w, max_t, n, k);
        let m = QuantMatrix::upload(&gpu, "w", ty, n, k, &bytes).unwrap();
        let s = Setup::new(&gpu, &x, n, max_t);
        let bias_buf = gpu.upload("bias", &bias).unwrap();
        let cases = [
            (Some(&bias_buf), false),
            (None, true),
            (Some(&bias_buf), true),
        ];
        for ((bias_opt, accumulate), layout) in
            cases.into_iter().flat_map(|c| Layout::ALL.map(|l| (c, l)))
        {
            let mm = Matmul::with_layout(&gpu, ty, layout).unwrap();
            let b = mm
                .bind(
                    &gpu,
                    &s.step,
                    &m,
                    &s.x,
                    &s.y,
                    Epilogue {
                        bias: bias_opt,
                        accumulate,
                        ..Epilogue::default()
                    },
                )
                .unwrap();
            for (t, path) in [(5, MatmulPath::Small), (80, MatmulPath::Tiled)] {
                gpu.queue.write_buffer(&s.y, 0, bytemuck::cast_slice(&y0));
                let got = run(&gpu, &mm, &s, &b, t, path, true);
                let want: Vec<f32> = (0..t * n)
                    .map(|i| {
                        let mut v = xw[i];
                        if bias_opt.is_some() {
                            v += bias[i % n];
                        }
                        if accumulate {
                            v += y0[i];
                        }
                        v
                    })
                    .collect();
                let what = format!(
                    "{} {layout:?} T={t} {path:?} bias={} accumulate={accumulate}",
                    ty.name(),
                    bias_opt.is_some()
                );
                assert_close(&got, &want, &what);
                // Rows past T are left alone.
                let rest: Vec<f32> = gpu.read_vec_blocking(&s.y, max_t * n).unwrap();
                assert_eq!(&rest[t * n..], &y0[t * n..], "{what}: wrote past T");
            }
        }
    }
}

#[test]
fn rmsnorm_prologue_matches_norm_then_matmul_and_is_batch_invariant() {
    // `Epilogue::norm`: y = W·(rmsnorm(x)·g), the norm fused into the small-T kernel. Against
    // the CPU norm then the f64 matmul (same tolerance), with bias and accumulate on; then
    // every row of a T = 64 batch bit for bit equal to the token alone (T = 1).
    let Some(gpu) = common::gpu() else { return };
    let n = 41;
    let eps = 1e-5;
    for (i, ty) in [Q4_K, Q6_K, Q8_0, Q4_1, F16, F32].into_iter().enumerate() {
        let k = awkward_k(ty);
        let (bytes, w) = weights(ty, n, k, 60 + i as u64);
        let max_t = 70;
        // Rows of different scales, so that a wrong or missing 1/rms shows.
        let x: Vec<f32> = common::rand_f32(61 + i as u64, max_t * k)
            .iter()
            .enumerate()
            .map(|(j, v)| v * (1 + j / k % 5) as f32)
            .collect();
        let g: Vec<f32> = common::rand_f32(62 + i as u64, k)
            .iter()
            .map(|v| 0.5 + v)
            .collect();
        let bias = common::rand_f32(63 + i as u64, n);
        let y0 = common::rand_f32(64 + i as u64, max_t * n);
        let xn = tandem::kernels::reference::rmsnorm(&x, &g, eps);
        let xw = common::matmul_f64(&xn, &w, max_t, n, k);
        let m = QuantMatrix::upload(&gpu, "w", ty, n, k, &bytes).unwrap();
        let g_buf = gpu.upload("g", &g).unwrap();
        let bias_buf = gpu.upload("bias", &bias).unwrap();
        let ep = Epilogue {
            bias: Some(&bias_buf),
            accumulate: true,
            norm: Some((&g_buf, eps)),
            ..Epilogue::default()
        };
        for layout in Layout::ALL {
            let name = format!("{} {layout:?}", ty.name());
            let mm = Matmul::with_layout(&gpu, ty, layout).unwrap();
            let s = Setup::new(&gpu, &x, n, max_t);
            let b = mm.bind(&gpu, &s.step, &m, &s.x, &s.y, ep).unwrap();
            // T = 70 takes the small-T kernel on the automatic path too.
            for t in [1usize, 5, 17, 64, 70] {
                gpu.queue.write_buffer(&s.y, 0, bytemuck::cast_slice(&y0));
                let got = run(&gpu, &mm, &s, &b, t, MatmulPath::Auto, true);
                let want: Vec<f32> = (0..t * n).map(|j| xw[j] + bias[j % n] + y0[j]).collect();
                assert_close(&got, &want, &format!("{name} T={t} with the norm prologue"));
            }
            prologue_refuses_tiled_and_is_batch_invariant(&gpu, &mm, &m, &s, ep, &x, k, &name);
        }
    }
}

/// With a prologue bound (`ep`, over `x: [70, xk]` in `s`): the tiled kernel refuses it, and
/// every row of a T = 64 batch is bit for bit the token alone (T = 1).
#[allow(clippy::too_many_arguments)]
fn prologue_refuses_tiled_and_is_batch_invariant(
    gpu: &Gpu,
    mm: &Matmul,
    m: &QuantMatrix,
    s: &Setup,
    ep: Epilogue,
    x: &[f32],
    xk: usize,
    name: &str,
) {
    let (n, max_t) = (s.n, 70);
    let b = mm.bind(gpu, &s.step, m, &s.x, &s.y, ep).unwrap();
    let tiled = {
        let mut enc = gpu.encoder("tiled with a prologue");
        let mut pass = enc.begin_compute_pass(&Default::default());
        mm.encode_path(&mut pass, &b, 64, MatmulPath::Tiled)
    };
    assert!(
        matches!(tiled, Err(tandem::Error::Invalid(_))),
        "{name}: the tiled kernel took a prologue"
    );
    let zero = vec![0.0f32; max_t * n];
    gpu.queue.write_buffer(&s.y, 0, bytemuck::cast_slice(&zero));
    let y64 = run(gpu, mm, s, &b, 64, MatmulPath::Auto, true);
    let one = Setup::new(gpu, &x[..xk], n, 1);
    let b1 = mm.bind(gpu, &one.step, m, &one.x, &one.y, ep).unwrap();
    for t in [0usize, 1, 15, 16, 33, 63] {
        gpu.queue
            .write_buffer(&one.x, 0, bytemuck::cast_slice(&x[t * xk..(t + 1) * xk]));
        gpu.queue
            .write_buffer(&one.y, 0, bytemuck::cast_slice(&zero[..n]));
        let alone = run(gpu, mm, &one, &b1, 1, MatmulPath::Auto, true);
        assert_eq!(
            common::bits(&alone),
            common::bits(&y64[t * n..(t + 1) * n]),
            "{name}: row {t} of T=64 with the prologue differs from T=1"
        );
    }
}

#[test]
fn glu_prologue_matches_the_activation_then_matmul_and_is_batch_invariant() {
    // `Epilogue::glu`: y = W·(act(gate)·up) with x = gate|up [T, 2K], the gated activation
    // fused into the small-T kernel (the down projection). Against the CPU activation
    // (`reference::silu_mul` / `gelu_mul`) then the f64 matmul (same tolerance), with
    // accumulate on; then every row of T = 64 bit for bit equal to T = 1; and a binding whose
    // x is one K wide (not gate|up) is refused.
    let Some(gpu) = common::gpu() else { return };
    let n = 37;
    for (i, ty) in [Q4_K, Q6_K, Q8_0, Q5_0, F16, F32].into_iter().enumerate() {
        let k = awkward_k(ty);
        let (bytes, w) = weights(ty, n, k, 70 + i as u64);
        let max_t = 70;
        // Gates over ±4 (where SiLU and GELU bend) and beyond ±90 (the exp clamps).
        let mut gu: Vec<f32> = common::rand_f32(71 + i as u64, max_t * 2 * k)
            .iter()
            .map(|v| 8.0 * v)
            .collect();
        gu[3] = -95.0;
        gu[2 * k + 5] = 120.0;
        let y0 = common::rand_f32(72 + i as u64, max_t * n);
        let m = QuantMatrix::upload(&gpu, "w", ty, n, k, &bytes).unwrap();
        for (glu, act) in [
            (
                Glu::Silu,
                tandem::kernels::reference::silu_mul as fn(&[f32], usize) -> Vec<f32>,
            ),
            (Glu::GeluTanh, tandem::kernels::reference::gelu_mul),
        ] {
            let xw = common::matmul_f64(&act(&gu, k), &w, max_t, n, k);
            let ep = Epilogue {
                accumulate: true,
                glu: Some(glu),
                ..Epilogue::default()
            };
            for layout in Layout::ALL {
                let name = format!("{} {glu:?} {layout:?}", ty.name());
                let mm = Matmul::with_layout(&gpu, ty, layout).unwrap();
                let s = Setup::new(&gpu, &gu, n, max_t);
                let b = mm.bind(&gpu, &s.step, &m, &s.x, &s.y, ep).unwrap();
                assert_eq!(b.max_t, max_t as u32, "{name}: x holds 70 gate|up rows");
                for t in [1usize, 5, 17, 64, 70] {
                    gpu.queue.write_buffer(&s.y, 0, bytemuck::cast_slice(&y0));
                    let got = run(&gpu, &mm, &s, &b, t, MatmulPath::Auto, true);
                    let want: Vec<f32> = (0..t * n).map(|j| xw[j] + y0[j]).collect();
                    assert_close(&got, &want, &format!("{name} T={t} with the GLU prologue"));
                }
                prologue_refuses_tiled_and_is_batch_invariant(
                    &gpu,
                    &mm,
                    &m,
                    &s,
                    ep,
                    &gu,
                    2 * k,
                    &name,
                );
                // x of one K-wide row only: no gate|up row fits.
                let narrow = gpu.upload("narrow x", &gu[..k]).unwrap();
                assert!(
                    mm.bind(&gpu, &s.step, &m, &narrow, &s.y, ep).is_err(),
                    "{name}: a GLU prologue bound over x narrower than gate|up"
                );
            }
        }
        // One prologue at most.
        let g_buf = gpu.upload("g", &vec![1.0f32; k]).unwrap();
        let both = Epilogue {
            norm: Some((&g_buf, 1e-5)),
            glu: Some(Glu::Silu),
            ..Epilogue::default()
        };
        let mm = Matmul::new(&gpu, ty).unwrap();
        let s = Setup::new(&gpu, &gu, n, max_t);
        assert!(matches!(
            mm.bind(&gpu, &s.step, &m, &s.x, &s.y, both),
            Err(Error::Invalid(_))
        ));
    }
}

#[test]
fn small_path_is_batch_invariant() {
    // Each row of a T = 5, 17 and 64 batch (a partial tile, several tiles, all full tiles)
    // must equal, bit for bit, the same token multiplied alone (T = 1): verification and
    // plain decoding then see identical logits.
    let Some(gpu) = common::gpu() else { return };
    let n = 29;
    for (i, ty) in TYPES.into_iter().enumerate() {
        let k = awkward_k(ty);
        let (bytes, _) = weights(ty, n, k, 20 + i as u64);
        let m = QuantMatrix::upload(&gpu, "w", ty, n, k, &bytes).unwrap();
        let x = common::rand_f32(200 + i as u64, 64 * k);
        for layout in Layout::ALL {
            let mm = Matmul::with_layout(&gpu, ty, layout).unwrap();
            let name = format!("{} {layout:?}", ty.name());
            let batch = Setup::new(&gpu, &x, n, 64);
            let bb = mm
                .bind(
                    &gpu,
                    &batch.step,
                    &m,
                    &batch.x,
                    &batch.y,
                    Epilogue::default(),
                )
                .unwrap();
            let y5 = run(&gpu, &mm, &batch, &bb, 5, MatmulPath::Auto, false);
            let y17 = run(&gpu, &mm, &batch, &bb, 17, MatmulPath::Auto, false);
            let y64 = run(&gpu, &mm, &batch, &bb, 64, MatmulPath::Auto, false);
            let one = Setup::new(&gpu, &x[..k], n, 1);
            let b1 = mm
                .bind(&gpu, &one.step, &m, &one.x, &one.y, Epilogue::default())
                .unwrap();
            for t in (0..17).chain([31, 47, 63]) {
                gpu.queue
                    .write_buffer(&one.x, 0, bytemuck::cast_slice(&x[t * k..(t + 1) * k]));
                let alone = run(&gpu, &mm, &one, &b1, 1, MatmulPath::Auto, false);
                if t < 5 {
                    assert_eq!(
                        common::bits(&alone),
                        common::bits(&y5[t * n..(t + 1) * n]),
                        "{name}: row {t} of T=5 differs from T=1"
                    );
                }
                if t < 17 {
                    assert_eq!(
                        common::bits(&alone),
                        common::bits(&y17[t * n..(t + 1) * n]),
                        "{name}: row {t} of T=17 differs from T=1"
                    );
                }
                assert_eq!(
                    common::bits(&alone),
                    common::bits(&y64[t * n..(t + 1) * n]),
                    "{name}: row {t} of T=64 differs from T=1"
                );
            }
        }
    }
}

#[test]
fn matrices_over_the_binding_limit_are_split_by_rows() {
    let Some(full) = common::gpu() else { return };
    let n = 37;
    for (ty, layout) in [
        (Q6_K, Layout::Gpu),
        (Q5_0, Layout::Cpu),
        (Q3_K, Layout::Gpu),
        (IQ4_NL, Layout::Cpu),
        (F32, Layout::Gpu),
        (Q4_1, Layout::Cpu),
    ] {
        let k = awkward_k(ty);
        let row_bytes = ty.bytes_for(k as u64).unwrap();
        // 7 rows (plus change) per binding: 37 rows become parts of 7,7,7,7,7,2. The limit
        // counts whole 16-byte words (weights are read as vec4<u32>).
        let options = GpuOptions {
            max_binding_override: Some((row_bytes * 7).next_multiple_of(16) + 5),
            ..GpuOptions::from_env()
        };
        let Some(gpu) = common::gpu_with(&options) else {
            return;
        };
        let (bytes, w) = weights(ty, n, k, 7);
        let m = QuantMatrix::upload(&gpu, "w", ty, n, k, &bytes).unwrap();
        assert_eq!(m.parts.len(), 6, "{}", ty.name());
        assert_eq!(m.parts[5].rows, 2);
        let max_t = 70;
        let x = common::rand_f32(8, max_t * k);
        let want = common::matmul_f64(&x, &w, max_t, n, k);
        let bias = common::rand_f32(9, n);

        // The same matmul on an unsplit matrix, for a bitwise comparison.
        let m_full = QuantMatrix::upload(&full, "w", ty, n, k, &bytes).unwrap();
        assert_eq!(m_full.parts.len(), 1);
        let mm_full = Matmul::with_layout(&full, ty, layout).unwrap();
        let s_full = Setup::new(&full, &x, n, max_t);
        let bias_full = full.upload("bias", &bias).unwrap();
        let ep_full = Epilogue {
            bias: Some(&bias_full),
            accumulate: false,
            ..Epilogue::default()
        };
        let b_full = mm_full
            .bind(&full, &s_full.step, &m_full, &s_full.x, &s_full.y, ep_full)
            .unwrap();

        let mm = Matmul::with_layout(&gpu, ty, layout).unwrap();
        let s = Setup::new(&gpu, &x, n, max_t);
        let bias_buf = gpu.upload("bias", &bias).unwrap();
        let ep = Epilogue {
            bias: Some(&bias_buf),
            accumulate: false,
            ..Epilogue::default()
        };
        let b = mm.bind(&gpu, &s.step, &m, &s.x, &s.y, ep).unwrap();
        for t in [1usize, 9, 70] {
            let got = run(&gpu, &mm, &s, &b, t, MatmulPath::Auto, false);
            let want_t: Vec<f32> = (0..t * n).map(|i| want[i] + bias[i % n]).collect();
            assert_close(&got, &want_t, &format!("split {} T={t}", ty.name()));
            let unsplit = run(
                &full,
                &mm_full,
                &s_full,
                &b_full,
                t,
                MatmulPath::Auto,
                false,
            );
            assert!(
                got.iter()
                    .zip(&unsplit)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "split {} T={t}: differs from the unsplit matrix",
                ty.name()
            );
        }
    }
}

#[test]
fn more_than_65535_workgroups_use_a_2d_dispatch() {
    // More than 65,535 workgroups of the gpu layout's 16 rows: over a million rows, kept
    // to ~36 MB by K = 32.
    let Some(gpu) = common::gpu() else { return };
    let layout = Layout::Gpu;
    let n = 65_536 * small_rows(layout) as usize + 77;
    let (k, t) = (32usize, 2usize);
    let (bytes, w) = weights(Q8_0, n, k, 11);
    let x = common::rand_f32(12, t * k);
    let want = common::matmul_f64(&x, &w, t, n, k);
    let m = QuantMatrix::upload(&gpu, "head", Q8_0, n, k, &bytes).unwrap();
    let mm = Matmul::with_layout(&gpu, Q8_0, layout).unwrap();
    let s = Setup::new(&gpu, &x, n, t);
    let b = mm
        .bind(&gpu, &s.step, &m, &s.x, &s.y, Epilogue::default())
        .unwrap();
    let got = run(&gpu, &mm, &s, &b, t, MatmulPath::Auto, false);
    assert_close(&got, &want, &format!("{n}-row head"));
}

/// Gather `ids` from `table` on the GPU.
fn gather(gpu: &Gpu, m: &QuantMatrix, ids: &[u32]) -> Vec<f32> {
    let t = ids.len();
    let step = gpu.uniform("step", &Step::new(t as u32, 0));
    let ids_buf = gpu.upload("ids", ids).unwrap();
    let out = gpu.storage("out", (t * m.k * 4) as u64).unwrap();
    let nan = vec![f32::NAN; t * m.k];
    gpu.queue.write_buffer(&out, 0, bytemuck::cast_slice(&nan));
    let e = Embedding::new(gpu, m.ty).unwrap();
    let b = e.bind(gpu, &step, m, &ids_buf, &out).unwrap();
    let mut enc = gpu.encoder("embed test");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        e.encode(&mut pass, &b, t as u32).unwrap();
    }
    gpu.submit(enc);
    gpu.read_vec_blocking(&out, t * m.k).unwrap()
}

/// The CPU's dequantized rows for `ids` (zeros for ids outside the table).
fn cpu_gather(w: &[f32], n: usize, k: usize, ids: &[u32]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| {
            if (id as usize) < n {
                w[id as usize * k..(id as usize + 1) * k].to_vec()
            } else {
                vec![0.0; k]
            }
        })
        .collect()
}

#[test]
fn embedding_gather_equals_cpu_dequant_for_every_type() {
    // Tolerance: none for types whose element is one product ((q - o) · d): the kernel does
    // the same f32 operations as the CPU dequantizer. Q4_1 and Q5_1 (q·d + m), Q2_K, Q4_K
    // and Q5_K (d·s·q - m) end in a multiply-add that a GPU compiler may fuse into an FMA, so they may differ by
    // rounding: 1e-6 relative (equal on lavapipe).
    let Some(full) = common::gpu() else { return };
    let n = 37;
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
    for (i, ty) in TYPES.into_iter().enumerate() {
        let k = awkward_k(ty);
        let (bytes, w) = weights(ty, n, k, 30 + i as u64);
        let want = cpu_gather(&w, n, k, &ids);
        let check = |got: Vec<f32>, want: &[f32], what: &str| {
            if matches!(ty, Q4_1 | Q4_K | Q5_1 | Q2_K | Q5_K) {
                let e = common::max_rel_err(&got, want);
                assert!(e <= 1e-6, "{what} {}: error {e}", ty.name());
            } else {
                assert_eq!(got, want, "{what} {}", ty.name());
            }
        };
        let m = QuantMatrix::upload(&full, "emb", ty, n, k, &bytes).unwrap();
        check(gather(&full, &m, &ids), &want, "T=17");
        check(gather(&full, &m, &ids[..1]), &want[..k], "T=1");
        // Split into parts of 5 rows (the limit counts whole 16-byte words).
        let row_bytes = ty.bytes_for(k as u64).unwrap();
        let options = GpuOptions {
            max_binding_override: Some((row_bytes * 5).next_multiple_of(16)),
            ..GpuOptions::from_env()
        };
        let Some(gpu) = common::gpu_with(&options) else {
            return;
        };
        let m = QuantMatrix::upload(&gpu, "emb", ty, n, k, &bytes).unwrap();
        assert_eq!(m.parts.len(), 8, "{}", ty.name());
        check(gather(&gpu, &m, &ids), &want, "split");
    }
}

/// gemma3's scaled gather (`Embedding::bind_scaled`, × √dim): each value is the dequantized
/// value times the scale, rounded once (the CPU forward's f32 product), on a table split over
/// buffers as gemma3's 178 MB Q8_0 table is on lavapipe. Bit for bit for Q8_0 (one product,
/// then the scale); 1e-6 relative for Q4_K (its multiply-add may be fused).
#[test]
fn scaled_embedding_gather_multiplies_after_dequant_on_a_split_table() {
    let scale = (640f32).sqrt();
    let (n, ids) = (37usize, [5u32, 0, 36, 17, 37, 8]);
    for (i, ty) in [Q8_0, Q4_K].into_iter().enumerate() {
        let k = awkward_k(ty);
        let (bytes, w) = weights(ty, n, k, 70 + i as u64);
        let want: Vec<f32> = cpu_gather(&w, n, k, &ids)
            .iter()
            .map(|v| v * scale)
            .collect();
        let row_bytes = ty.bytes_for(k as u64).unwrap();
        let options = GpuOptions {
            max_binding_override: Some((row_bytes * 5).next_multiple_of(16)),
            ..GpuOptions::from_env()
        };
        let Some(gpu) = common::gpu_with(&options) else {
            return;
        };
        let m = QuantMatrix::upload(&gpu, "emb", ty, n, k, &bytes).unwrap();
        assert_eq!(m.parts.len(), 8, "{}", ty.name());
        let t = ids.len();
        let step = gpu.uniform("step", &Step::new(t as u32, 0));
        let ids_buf = gpu.upload("ids", &ids).unwrap();
        let out = gpu.storage("out", (t * k * 4) as u64).unwrap();
        let e = Embedding::new(&gpu, ty).unwrap();
        assert!(e
            .bind_scaled(&gpu, &step, &m, &ids_buf, &out, f32::NAN)
            .is_err());
        let b = e
            .bind_scaled(&gpu, &step, &m, &ids_buf, &out, scale)
            .unwrap();
        let mut enc = gpu.encoder("embed test");
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            e.encode(&mut pass, &b, t as u32).unwrap();
        }
        gpu.submit(enc);
        let got: Vec<f32> = gpu.read_vec_blocking(&out, t * k).unwrap();
        if ty == Q8_0 {
            assert_eq!(got, want, "{}", ty.name());
        } else {
            let e = common::max_rel_err(&got, &want);
            assert!(e <= 1e-6, "{}: error {e}", ty.name());
        }
        // The unscaled gather of the same ids differs (the scale is applied, not dropped).
        assert_ne!(got, cpu_gather(&w, n, k, &ids), "{}", ty.name());
    }
}

#[test]
fn vocabulary_sized_q5_0_table_split_over_buffers() {
    // Qwen2.5-0.5B's token_embd: 151,936 × 896 Q5_0 (~93 MB), with the binding limit forced
    // to 32 MiB so it spans three buffers. The bytes are random (quantizing 136M floats
    // would dominate the test) with each block's f16 scale set to a finite value.
    let (n, k) = (151_936usize, 896usize);
    let options = GpuOptions {
        max_binding_override: Some(32 << 20),
        ..GpuOptions::from_env()
    };
    let Some(gpu) = common::gpu_with(&options) else {
        return;
    };
    let row_bytes = 896 / 32 * 22;
    let mut bytes = vec![0u8; n * row_bytes];
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in bytes.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        chunk.copy_from_slice(&s.to_le_bytes()[..chunk.len()]);
    }
    for (b, block) in bytes.chunks_mut(22).enumerate() {
        // d between 2^-8 and ~2^-7 (f16 0x1C00 + a few mantissa bits).
        let d: u16 = 0x1C00 | (b as u16 & 0x3FF);
        block[..2].copy_from_slice(&d.to_le_bytes());
    }
    let m = QuantMatrix::upload(&gpu, "token_embd", Q5_0, n, k, &bytes).unwrap();
    assert_eq!(m.parts.len(), 3);
    let boundary = m.parts[1].row0 as u32;
    let ids = [
        0,
        151_935,
        boundary - 1,
        boundary,
        boundary + 1,
        151_645,
        77,
        200_000,
    ];
    let got = gather(&gpu, &m, &ids);
    for (i, &id) in ids.iter().enumerate() {
        let want = if (id as usize) < n {
            let r = id as usize * row_bytes;
            dequantize(Q5_0, &bytes[r..r + row_bytes], k).unwrap()
        } else {
            vec![0.0; k]
        };
        assert_eq!(&got[i * k..(i + 1) * k], &want[..], "token {id}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let Some(gpu) = common::gpu() else { return };
    let (bytes, _) = weights(Q4_0, 4, 64, 1);
    // Wrong byte length.
    let e = QuantMatrix::upload(&gpu, "blk.0.attn_q.weight", Q4_0, 4, 64, &bytes[1..]).unwrap_err();
    assert!(
        matches!(e, Error::Invalid(_)) && e.to_string().contains("blk.0.attn_q.weight"),
        "{e}"
    );
    // Types without a kernel.
    let e = QuantMatrix::upload(&gpu, "w", Q8_K, 1, 256, &[0u8; 292]).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(_)) && e.to_string().contains("Q8_K"),
        "{e}"
    );
    assert!(matches!(
        Matmul::new(&gpu, Q8_1),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        Embedding::new(&gpu, Q8_K),
        Err(Error::Unsupported(_))
    ));
    // Rows that are not whole blocks / units.
    let e = QuantMatrix::upload(&gpu, "w", Q4_K, 1, 128, &[0u8; 72]).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    let e = QuantMatrix::upload(&gpu, "w", F32, 1, 20, &[0u8; 80]).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    // A single row over the binding limit.
    let small = GpuOptions {
        max_binding_override: Some(400),
        ..GpuOptions::from_env()
    };
    if let Some(g) = common::gpu_with(&small) {
        let (b, _) = weights(Q6_K, 2, 512, 2);
        let e = QuantMatrix::upload(&g, "output.weight", Q6_K, 2, 512, &b).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, Error::Gpu(_)) && msg.contains("output.weight") && msg.contains("400"),
            "{msg}"
        );
    }
    // Binding and encoding mistakes.
    let m = QuantMatrix::upload(&gpu, "w", Q4_0, 4, 64, &bytes).unwrap();
    let mm = Matmul::new(&gpu, Q4_0).unwrap();
    let q8 = Matmul::new(&gpu, Q8_0).unwrap();
    let s = Setup::new(&gpu, &common::rand_f32(1, 3 * 64), 4, 3);
    assert!(matches!(
        q8.bind(&gpu, &s.step, &m, &s.x, &s.y, Epilogue::default()),
        Err(Error::Invalid(_))
    ));
    let short_bias = gpu.storage("bias", 8).unwrap();
    let ep = Epilogue {
        bias: Some(&short_bias),
        accumulate: false,
        ..Epilogue::default()
    };
    assert!(matches!(
        mm.bind(&gpu, &s.step, &m, &s.x, &s.y, ep),
        Err(Error::Invalid(_))
    ));
    let b = mm
        .bind(&gpu, &s.step, &m, &s.x, &s.y, Epilogue::default())
        .unwrap();
    assert_eq!(b.max_t, 3);
    let mut enc = gpu.encoder("bad");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        assert!(matches!(
            mm.encode(&mut pass, &b, 4),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            q8.encode(&mut pass, &b, 1),
            Err(Error::Invalid(_))
        ));
    }
    drop(enc);
}

#[test]
fn bench_matmul_returns_positive_numbers() {
    let Some(gpu) = common::gpu() else { return };
    let r = tandem::kernels::bench::bench_matmul(&gpu, Q4_K, 64, 512, 1, 3).unwrap();
    assert!(r.us_per_call > 0.0 && r.gb_per_s > 0.0, "{r:?}");
    assert_eq!(r.weight_bytes, 64 * 2 * 144);
    assert!(tandem::kernels::bench::bench_matmul(&gpu, Q4_K, 64, 100, 1, 3).is_err());
}
