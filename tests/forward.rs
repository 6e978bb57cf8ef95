//! The GPU forward against the CPU reference forward (prefill, chunked prefill and
//! step-by-step decode) on SmolLM2-135M and on the qwen3 and llama3 fixture models
//! (tests/fixtures/tiny-*.gguf).
mod common;

use tandem::model::{
    cpu::CpuModel, loader::ModelFile, session::Session, transformer::ForwardLimits,
};

/// GPU logits vs the CPU reference: |Δ| ≤ 2e-2 absolute on logits of magnitude ~10-30
/// (f32 sums in different orders over 30 layers; the argmax must agree exactly).
const LOGIT_TOL: f32 = 2e-2;

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn gpu_logits_match_cpu_for_prefill_chunked_prefill_and_decode() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    gpu_matches_cpu(&path, "smollm2-135m", 3);
}

/// qwen3: per-head q/k RMSNorm before RoPE, head size 64 with dim 128 / 4 heads.
#[test]
fn qwen3_gpu_logits_match_cpu_for_prefill_chunked_prefill_and_decode() {
    gpu_matches_cpu(&common::fixture("tiny-qwen3.gguf"), "tiny-qwen3", 16);
}

/// llama 3.x: RoPE frequencies divided by `rope_freqs.weight`.
#[test]
fn llama3_gpu_logits_match_cpu_for_prefill_chunked_prefill_and_decode() {
    gpu_matches_cpu(&common::fixture("tiny-llama3.gguf"), "tiny-llama3", 16);
}

/// Every fixture prompt of `fixture` on the model at `path`: prefill, prefill in chunks of 2
/// and `decode` decode steps of the fixture's tokens, GPU logits against the CPU forward's.
fn gpu_matches_cpu(path: &std::path::Path, fixture: &str, decode: usize) {
    let Some(gpu) = common::gpu() else { return };
    let model = ModelFile::open(path).unwrap();
    let limits = ForwardLimits {
        max_ctx: 256,
        max_t: 32,
        max_logit_rows: 8,
    };
    let recs = common::greedy_fixtures(fixture);
    // SmolLM2 (30 layers on lavapipe) checks its first prompt; the tiny models all.
    let n = if decode > 3 { recs.len() } else { 1 };
    for rec in &recs[..n] {
        check_prompt(&gpu, &model, limits, rec, decode);
    }
}

fn check_prompt(
    gpu: &tandem::gpu::Gpu,
    model: &ModelFile,
    limits: ForwardLimits,
    rec: &common::GreedyRecord,
    decode: usize,
) {
    let mut cpu = CpuModel::load(model).unwrap();
    let tf = Session::load(gpu, model, limits).unwrap();
    let prompt = &rec.prompt_ids;

    let mut cpu_logits = Vec::new();
    for &t in prompt {
        cpu_logits = cpu.forward(t);
    }
    tf.prefill(gpu, prompt, 0).unwrap();
    let gpu_logits = tf.read_logits_blocking(gpu, 1);
    let err = max_abs(&gpu_logits, &cpu_logits);
    assert!(err < LOGIT_TOL, "prefill logits differ by {err}");

    // Chunked prefill (chunks of 2) gives the same logits as one chunk.
    let small = Session::load(
        gpu,
        model,
        ForwardLimits {
            max_t: 2,
            max_logit_rows: 2,
            ..limits
        },
    )
    .unwrap();
    small.prefill(gpu, prompt, 0).unwrap();
    let chunked = small.read_logits_blocking(gpu, 1);
    let err = max_abs(&chunked, &gpu_logits);
    assert!(err < LOGIT_TOL, "chunked prefill differs by {err}");

    // Step-by-step decode of the fixture's tokens.
    for (n_past, &next) in (prompt.len()..).zip(rec.tokens.iter().take(decode)) {
        cpu_logits = cpu.forward(next);
        tf.forward(
            gpu,
            &[next],
            &[n_past as u32],
            &tf.causal_mask(1),
            n_past,
            0..1,
        )
        .unwrap();
        let g = tf.read_logits_blocking(gpu, 1);
        let err = max_abs(&g, &cpu_logits);
        assert!(
            err < LOGIT_TOL,
            "decode at {n_past}: logits differ by {err}"
        );
        let ids = pollster::block_on(tf.read_argmax(gpu, 1)).unwrap();
        assert_eq!(ids[0], tandem::model::cpu::argmax(&cpu_logits));
    }
}
