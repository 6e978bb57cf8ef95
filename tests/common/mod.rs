//! Shared test helpers: a GPU context or a clear skip message.
#![allow(dead_code)]

use tandem::gpu::{Gpu, GpuOptions};

/// The test GPU, or `None` (with a message saying why the GPU tests skip) when the
/// machine has no adapter. CI installs lavapipe, so there it is always `Some`.
pub fn gpu() -> Option<Gpu> {
    gpu_with(&GpuOptions::from_env())
}

pub fn gpu_with(options: &GpuOptions) -> Option<Gpu> {
    match Gpu::new_blocking(options) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("TANDEM_REQUIRE_GPU").is_ok_and(|v| v != "0") {
                panic!("TANDEM_REQUIRE_GPU is set but no GPU is usable: {e}");
            }
            eprintln!("SKIP: no GPU adapter ({e})");
            None
        }
    }
}

/// Deterministic pseudo-random f32s in [-1, 1).
pub fn rand_f32(seed: u64, n: usize) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Largest |a-b| / max(1, |b|) over two slices.
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}
