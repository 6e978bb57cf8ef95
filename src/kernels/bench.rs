//! Kernel micro-benchmarks (native only): wall-clock time of many dispatches in one submit.

use std::time::Instant;

use crate::gpu::Gpu;
use crate::kernels::matmul::{Epilogue, Matmul, QuantMatrix};
use crate::kernels::Layout;
use crate::kernels::Step;
use crate::quant::{can_quantize, quantize, random_blocks, GgmlType};
use crate::{Error, Result};

/// One matmul shape's timing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MatmulBench {
    pub ty: GgmlType,
    pub n: usize,
    pub k: usize,
    pub t: usize,
    /// The small-T kernel's layout (used when `t` ≤ `SMALL_T_MAX`).
    pub layout: Layout,
    pub iters: usize,
    /// Wall-clock microseconds per dispatch (averaged over `iters` in one submit).
    pub us_per_call: f64,
    /// Weight bytes read per call divided by the time per call.
    pub gb_per_s: f64,
    pub weight_bytes: u64,
}

/// Deterministic values in [-1, 1) (xorshift; no RNG dependency in the library).
fn pseudo_random(seed: u32, n: usize) -> Vec<f32> {
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Time `Y[t, n] = X[t, k] · W[n, k]ᵀ` for weights of type `ty`: one warm-up call, then
/// `iters` dispatches recorded into one command buffer and waited for.
pub fn bench_matmul(
    gpu: &Gpu,
    ty: GgmlType,
    n: usize,
    k: usize,
    t: usize,
    iters: usize,
) -> Result<MatmulBench> {
    bench_matmul_layout(gpu, ty, n, k, t, iters, Layout::for_gpu(gpu))
}

/// [`bench_matmul`] with the small-T kernel's layout chosen by the caller.
pub fn bench_matmul_layout(
    gpu: &Gpu,
    ty: GgmlType,
    n: usize,
    k: usize,
    t: usize,
    iters: usize,
    layout: Layout,
) -> Result<MatmulBench> {
    if n == 0 || k == 0 || t == 0 || iters == 0 {
        return Err(Error::Invalid(format!(
            "bench_matmul needs positive sizes, got n={n} k={k} t={t} iters={iters}"
        )));
    }
    let row_bytes = QuantMatrix::check_shape("bench", ty, n, k)?;
    // Quantizing a whole vocabulary head on the CPU takes long; a few distinct random
    // rows repeated read the same number of bytes.
    let distinct = n.min(16);
    let sample = if can_quantize(ty) {
        quantize(ty, &pseudo_random(1, distinct * k))?
    } else {
        random_blocks(ty, distinct * k, 1)?
    };
    let mut bytes = Vec::with_capacity(n * row_bytes);
    for r in 0..n {
        let s = r % distinct;
        bytes.extend_from_slice(&sample[s * row_bytes..(s + 1) * row_bytes]);
    }
    let m = QuantMatrix::upload(gpu, "bench W", ty, n, k, &bytes)?;
    drop(bytes);
    let x = gpu.upload("bench X", &pseudo_random(2, t * k))?;
    let y = gpu.storage("bench Y", (t * n * 4) as u64)?;
    let step = gpu.uniform("step", &Step::new(t as u32, 0));
    let mm = Matmul::with_layout(gpu, ty, layout)?;
    let b = mm.bind(gpu, &step, &m, &x, &y, Epilogue::default())?;

    let run = |count: usize| -> Result<f64> {
        let mut enc = gpu.encoder("bench");
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..count {
                mm.encode(&mut pass, &b, t as u32)?;
            }
        }
        let start = Instant::now();
        gpu.submit(enc);
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the benchmark: {e}")))?;
        gpu.check_errors()?;
        Ok(start.elapsed().as_secs_f64())
    };
    run(1)?;
    let secs = run(iters)?;
    let per_call = secs / iters as f64;
    Ok(MatmulBench {
        ty,
        n,
        k,
        t,
        layout,
        iters,
        us_per_call: per_call * 1e6,
        gb_per_s: m.weight_bytes() as f64 / per_call / 1e9,
        weight_bytes: m.weight_bytes(),
    })
}
