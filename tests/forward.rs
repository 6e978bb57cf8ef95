//! The GPU forward against the CPU reference forward (prefill, chunked prefill and
//! step-by-step decode) on SmolLM2-135M, on the qwen3 and llama3 fixture models
//! (tests/fixtures/tiny-*.gguf), and on gemma3: Gemma 3 270M and a tiny written gemma3 whose
//! sliding window (8) is shorter than the prompts. Also the layer plan's range: the forward
//! through the first layers only equals the CPU reference cut to those layers.
mod common;

use tandem::model::{
    config::Arch, cpu::CpuModel, gguf::GgufFile, loader::ModelFile, quant::GgmlType,
    session::Session, transformer::ForwardLimits, writer::TinyModel,
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

/// gemma3 on Gemma 3 270M: head size 256, GeGLU, post norms, √dim embedding scale, the tied
/// 262,144-row Q8_0 head (split over buffers on lavapipe), 18 layers of which 5, 11 and 17
/// are global.
#[test]
fn gemma3_gpu_logits_match_cpu_for_prefill_chunked_prefill_and_decode() {
    let Some(path) = common::model("gemma-3-270m") else {
        return;
    };
    gpu_matches_cpu(&path, "gemma3-270m", 3);
}

/// BOS, then fixture prompt 2's text tokens and continuation repeated, `n` tokens in all.
fn gemma3_long_prompt(n: usize) -> Vec<u32> {
    let rec = &common::greedy_fixtures("gemma3-270m")[2];
    let body: Vec<u32> = rec.prompt_ids[1..]
        .iter()
        .chain(&rec.tokens)
        .copied()
        .collect();
    let mut prompt = vec![rec.prompt_ids[0]];
    prompt.extend(body.iter().cycle().take(n - 1));
    prompt
}

/// Gemma 3 270M on a 72-token prompt, more than one 64-token chunk, prefilled in chunks of 64
/// and of 5, then decode steps, against the CPU forward; with the sliding window cut to 16
/// (in the config both forwards read), so that the real weights and shapes (head size 256,
/// one kv head) run through the window in a short test: 15 of the 18 layers cut into the
/// prefix, the chunk and each decode step.
#[test]
fn gemma3_prompt_over_one_chunk_with_a_short_window_matches_cpu() {
    let Some(path) = common::model("gemma-3-270m") else {
        return;
    };
    let mut model = ModelFile::open(&path).unwrap();
    assert_eq!(model.config.sliding_window, 512);
    model.config.sliding_window = 16;
    long_prompt_matches_cpu(&model, &gemma3_long_prompt(72), &[64, 5], 2, 256);
}

/// Gemma 3 270M with its own window (512) on a 530-token prompt: the sliding layers drop the
/// first keys. In the slower set (about five minutes of CPU forward on 2 cores).
#[test]
fn gemma3_prompt_past_the_window_matches_cpu() {
    let Some(path) = common::model("gemma-3-270m") else {
        return;
    };
    if !common::slow("the Gemma 3 270M 530-token prompt test") {
        return;
    }
    let model = ModelFile::open(&path).unwrap();
    long_prompt_matches_cpu(&model, &gemma3_long_prompt(530), &[64], 4, 1024);
}

/// A tiny gemma3 (6 layers: 0-4 slide over a window of 8, 5 is global) on prompts of 80
/// tokens: prefill in one chunk, in chunks of 64 and of 3, then 16 decode steps, against the
/// CPU forward, so the window cuts into the prefix, into a chunk and into every decode step.
/// Without the window (the same weights, window 0) the CPU logits differ: the test sees it.
#[test]
fn gemma3_tiny_sliding_window_gpu_matches_cpu_in_chunks_and_decode() {
    for ty in [GgmlType::Q8_0, GgmlType::Q4_K] {
        let spec = TinyModel::new(Arch::Gemma3, ty, 11);
        let bytes = spec.build().unwrap();
        let model = ModelFile::from_gguf(GgufFile::from_bytes(bytes).unwrap()).unwrap();
        assert_eq!(model.config.sliding_window, 8);
        assert!((0..5).all(|i| model.config.layer_is_sliding(i)));
        assert!(!model.config.layer_is_sliding(5));
        let v = model.config.vocab_size as u32;
        let prompt: Vec<u32> = (0..80u32).map(|i| (i * 37 + 5) % v).collect();
        long_prompt_matches_cpu(&model, &prompt, &[80, 64, 3], 16, 256);

        let mut no_window = TinyModel {
            sliding_window: 0,
            ..spec
        };
        no_window.seed = 11;
        let plain = ModelFile::from_gguf(GgufFile::from_bytes(no_window.build().unwrap()).unwrap())
            .unwrap();
        let (mut a, mut b) = (
            CpuModel::load(&model).unwrap(),
            CpuModel::load(&plain).unwrap(),
        );
        let (mut la, mut lb) = (vec![], vec![]);
        for &t in &prompt[..20] {
            la = a.forward(t);
            lb = b.forward(t);
        }
        assert!(
            max_abs(&la, &lb) > 1e-2,
            "{ty:?}: the window of 8 changed nothing at position 19"
        );
    }
}

/// `prompt` prefilled with each step size in `chunks` (`max_t`), GPU logits against the CPU
/// forward's; after the first prefill, `decode` greedy steps too (KV cache of `max_ctx`).
fn long_prompt_matches_cpu(
    model: &ModelFile,
    prompt: &[u32],
    chunks: &[usize],
    decode: usize,
    max_ctx: usize,
) {
    let Some(gpu) = common::gpu() else { return };
    let mut cpu = CpuModel::load(model).unwrap();
    let mut cpu_logits = Vec::new();
    for &t in prompt {
        cpu_logits = cpu.forward(t);
    }
    // The CPU's greedy continuation and its logits after each token.
    let mut steps: Vec<(u32, Vec<f32>)> = Vec::new();
    let mut last = cpu_logits.clone();
    for _ in 0..decode {
        let next = tandem::model::cpu::argmax(&last);
        last = cpu.forward(next);
        steps.push((next, last.clone()));
    }
    drop(cpu);
    for (ci, &max_t) in chunks.iter().enumerate() {
        let limits = ForwardLimits {
            max_ctx,
            max_t,
            max_logit_rows: max_t.min(8),
        };
        let tf = Session::load(&gpu, model, limits).unwrap();
        tf.prefill(&gpu, prompt, 0).unwrap();
        let g = tf.read_logits_blocking(&gpu, 1);
        let err = max_abs(&g, &cpu_logits);
        assert!(
            err < LOGIT_TOL,
            "{} tokens in chunks of {max_t}: prefill logits differ by {err}",
            prompt.len()
        );
        if ci > 0 {
            continue;
        }
        for (i, (next, want)) in steps.iter().enumerate() {
            let n_past = prompt.len() + i;
            tf.forward(
                &gpu,
                &[*next],
                &[n_past as u32],
                &tf.causal_mask(1),
                n_past,
                0..1,
            )
            .unwrap();
            let g = tf.read_logits_blocking(&gpu, 1);
            let err = max_abs(&g, want);
            assert!(
                err < LOGIT_TOL,
                "decode at {n_past}: logits differ by {err}"
            );
        }
    }
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

/// `Session::encode_layers` with the first `keep` of the model's layers: the logits of a
/// prompt's last token equal the CPU reference forward cut to those layers (and differ from
/// the whole model's, so the cut took effect).
fn first_layers_match_cpu(model: &ModelFile, prompt: &[u32], keep: usize) {
    let Some(gpu) = common::gpu() else { return };
    let limits = ForwardLimits {
        max_ctx: 64,
        max_t: 32,
        max_logit_rows: 4,
    };
    let s = Session::load(&gpu, model, limits).unwrap();
    let t = prompt.len();
    let positions: Vec<u32> = (0..t as u32).collect();
    s.write_inputs(&gpu, prompt, &positions, &s.causal_mask(t), 0, 1);
    let mut enc = gpu.encoder("first layers");
    s.encode_layers(&mut enc, t, 0..keep, t - 1..t).unwrap();
    gpu.submit(enc);
    let cut = s.read_logits_blocking(&gpu, 1);

    let mut cpu = CpuModel::load(model).unwrap();
    cpu.keep_layers(keep);
    let mut want = Vec::new();
    for &tok in prompt {
        want = cpu.forward(tok);
    }
    let err = max_abs(&cut, &want);
    assert!(
        err < LOGIT_TOL,
        "first {keep} layers: logits differ by {err}"
    );

    s.prefill(&gpu, prompt, 0).unwrap();
    let full = s.read_logits_blocking(&gpu, 1);
    assert!(
        max_abs(&full, &cut) > 10.0 * LOGIT_TOL,
        "the cut ran every layer"
    );
    let n = model.config.n_layers;
    let mut enc = gpu.encoder("bad range");
    assert!(s.encode_layers(&mut enc, t, 0..n + 1, 0..1).is_err());
}

#[test]
fn qwen3_first_layers_match_the_cpu_reference_cut_to_them() {
    let model = ModelFile::open(common::fixture("tiny-qwen3.gguf")).unwrap();
    let prompt = &common::greedy_fixtures("tiny-qwen3")[0].prompt_ids;
    first_layers_match_cpu(&model, prompt, model.config.n_layers - 1);
}

#[test]
fn gemma3_first_layers_match_the_cpu_reference_cut_to_them() {
    let model = common::tiny(Arch::Gemma3, GgmlType::Q8_0, 7);
    let prompt: Vec<u32> = (1..20).map(|i| (i * 37) % 200).collect();
    first_layers_match_cpu(&model, &prompt, 5);
}

/// Linear RoPE scaling (Gemma 3 4B+: `rope.scaling.type = linear`, factor 8): the GPU's
/// frequency table divided by the factor on the global layers equals the CPU reference's
/// positions divided by it, prefill and decode; and it changes the logits.
#[test]
fn gemma3_linear_rope_scaling_matches_cpu_and_changes_the_logits() {
    let Some(gpu) = common::gpu() else { return };
    let tiny = TinyModel::new(Arch::Gemma3, GgmlType::Q8_0, 11);
    let mut w = tiny.writer().unwrap();
    w.meta_str("gemma3.rope.scaling.type", "linear")
        .meta_f32("gemma3.rope.scaling.factor", 8.0);
    let open = |b: Vec<u8>| ModelFile::from_gguf(GgufFile::from_bytes(b).unwrap()).unwrap();
    let scaled = open(w.to_bytes().unwrap());
    let plain = open(tiny.build().unwrap());
    assert_eq!(scaled.config.rope_linear_scale, 8.0);
    assert_eq!(scaled.config.layer_rope_scale(0), 1.0, "a sliding layer");
    assert_eq!(scaled.config.layer_rope_scale(5), 8.0, "a global layer");
    let prompt: Vec<u32> = (1..24).map(|i| (i * 53) % 250).collect();
    let limits = ForwardLimits {
        max_ctx: 64,
        max_t: 32,
        max_logit_rows: 4,
    };
    let s = Session::load(&gpu, &scaled, limits).unwrap();
    let mut cpu = CpuModel::load(&scaled).unwrap();
    let mut want = Vec::new();
    for &t in &prompt {
        want = cpu.forward(t);
    }
    s.prefill(&gpu, &prompt, 0).unwrap();
    let err = max_abs(&s.read_logits_blocking(&gpu, 1), &want);
    assert!(err < LOGIT_TOL, "prefill: logits differ by {err}");
    for (n_past, next) in (prompt.len()..).zip([5u32, 77, 140]) {
        want = cpu.forward(next);
        s.forward(
            &gpu,
            &[next],
            &[n_past as u32],
            &s.causal_mask(1),
            n_past,
            0..1,
        )
        .unwrap();
        let err = max_abs(&s.read_logits_blocking(&gpu, 1), &want);
        assert!(
            err < LOGIT_TOL,
            "decode at {n_past}: logits differ by {err}"
        );
    }
    let mut unscaled = CpuModel::load(&plain).unwrap();
    let mut other = Vec::new();
    for &t in prompt.iter().chain(&[5, 77, 140]) {
        other = unscaled.forward(t);
    }
    let moved = max_abs(&other, &want);
    // (one global layer of six in the tiny model: 0.18 here, against GPU-CPU errors ~1e-5)
    assert!(
        moved > 4.0 * LOGIT_TOL,
        "the scale moved the logits by only {moved}"
    );
}

/// The prologue fusion (`GpuModel::load_with_options(.., fuse: true)`, the gpu layout's
/// default: every pre-norm in its projections' prologue, the gated activation in the down
/// projection's, the final norm in the head's): on the qwen3 and llama3 fixture models
/// (SwiGLU) and a tiny written gemma3 (GeGLU, post norms, which stay), the logits of a
/// prompt's every row equal the CPU reference's (same tolerance), the plan records three
/// dispatches per layer and one more fewer than without it, and each row of the one-chunk
/// prefill equals, bit for bit, the same token decoded alone after the rows before it (batch
/// invariance with the prologues).
#[test]
fn fused_prologues_match_cpu_and_stay_batch_invariant() {
    use std::sync::Arc;
    use tandem::model::transformer::GpuModel;
    let Some(gpu) = common::gpu() else { return };
    let gemma = TinyModel::new(Arch::Gemma3, GgmlType::Q8_0, 12)
        .build()
        .unwrap();
    for (name, model) in [
        (
            "tiny-qwen3",
            ModelFile::open(common::fixture("tiny-qwen3.gguf")).unwrap(),
        ),
        (
            "tiny-llama3",
            ModelFile::open(common::fixture("tiny-llama3.gguf")).unwrap(),
        ),
        (
            "tiny gemma3",
            ModelFile::from_gguf(GgufFile::from_bytes(gemma).unwrap()).unwrap(),
        ),
    ] {
        let limits = ForwardLimits {
            max_ctx: 256,
            max_t: 32,
            max_logit_rows: 32,
        };
        let open = |fuse: bool| {
            let m = GpuModel::load_with_options(&gpu, &model, limits, None, fuse).unwrap();
            assert_eq!(m.fused_prologues, fuse);
            Session::new(&gpu, Arc::new(m)).unwrap()
        };
        let (fused, plain) = (open(true), open(false));
        let layers = model.config.n_layers;
        assert_eq!(
            fused.dispatches(1) + 3 * layers + 1,
            plain.dispatches(1),
            "{name}: two norms and the activation per layer and the final norm fused"
        );
        let v = model.config.vocab_size as u32;
        let prompt: Vec<u32> = match name {
            "tiny gemma3" => (0..24u32).map(|i| (i * 37 + 5) % v).collect(),
            fixture => {
                let rec = &common::greedy_fixtures(fixture)[0];
                rec.prompt_ids[..rec.prompt_ids.len().min(32)].to_vec()
            }
        };
        let prompt = &prompt[..];
        let t = prompt.len();
        let positions: Vec<u32> = (0..t as u32).collect();
        fused
            .forward(&gpu, prompt, &positions, &fused.causal_mask(t), 0, 0..t)
            .unwrap();
        let rows = fused.read_logits_blocking(&gpu, t);
        let mut cpu = CpuModel::load(&model).unwrap();
        let v = rows.len() / t;
        for (i, &tok) in prompt.iter().enumerate() {
            let want = cpu.forward(tok);
            let err = max_abs(&rows[i * v..(i + 1) * v], &want);
            assert!(
                err < LOGIT_TOL,
                "{name}: fused row {i} differs from the CPU by {err}"
            );
        }
        // Token by token on the fused model: bit for bit the rows of the chunk.
        let alone = open(true);
        for (i, &tok) in prompt.iter().enumerate() {
            alone
                .forward(&gpu, &[tok], &[i as u32], &alone.causal_mask(1), i, 0..1)
                .unwrap();
            let one = alone.read_logits_blocking(&gpu, 1);
            assert!(
                one.iter()
                    .zip(&rows[i * v..(i + 1) * v])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: fused row {i} of the chunk differs from the token alone"
            );
        }
    }
}
