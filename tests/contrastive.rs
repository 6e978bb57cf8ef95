//! Contrastive decoding with the drafter model as the amateur: the GPU's scores equal a CPU
//! reference on a tiny pair (both forwards on the CPU, the scores in f64), greedy contrastive
//! generation follows the CPU's contrastive argmax, and with every drafting method greedy
//! contrastive output equals plain contrastive output token for token (alone and together
//! with a constraint). Bad parameters and a missing or mismatched amateur are clear errors.

mod common;

use tandem::engine::{
    Constraint, ContrastiveParams, DrafterOptions, Engine, EngineOptions, GenerateOptions,
    MethodSpec, SampleParams,
};
use tandem::kernels::contrastive::reference_row;
use tandem::model::config::Arch;
use tandem::model::cpu::CpuModel;
use tandem::model::quant::GgmlType;
use tandem::model::session::Session;
use tandem::model::transformer::ForwardLimits;

use common::tiny;

const P: ContrastiveParams = ContrastiveParams {
    alpha: 0.1,
    beta: 0.5,
};

fn pair() -> (
    tandem::model::loader::ModelFile,
    tandem::model::loader::ModelFile,
) {
    (
        tiny(Arch::Qwen2, GgmlType::Q8_0, 7),
        tiny(Arch::Qwen2, GgmlType::Q8_0, 8),
    )
}

fn engine() -> Option<Engine> {
    let gpu = common::gpu()?;
    let (t, d) = pair();
    let mut e = Engine::new(
        gpu,
        &t,
        EngineOptions {
            max_ctx: 256,
            max_draft: 10,
        },
    )
    .unwrap();
    e.load_drafter(&d).unwrap();
    Some(e)
}

fn opts(method: &str, n: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: n,
        method: MethodSpec::parse(method).unwrap(),
        contrastive: Some(P),
        ..Default::default()
    }
}

/// (max over the plausible set, the runner-up) of a scores row.
fn top2(s: &[f32]) -> (usize, f32, f32) {
    let mut best = (0, f32::MIN, f32::MIN);
    for (i, &v) in s.iter().enumerate() {
        if v > best.1 {
            best = (i, v, best.1);
        } else if v > best.2 {
            best.2 = v;
        }
    }
    best
}

#[test]
fn gpu_contrastive_scores_equal_the_cpu_reference() {
    let Some(gpu) = common::gpu() else { return };
    let (tf, df) = pair();
    let limits = ForwardLimits {
        max_ctx: 64,
        max_t: 64,
        max_logit_rows: 8,
    };
    let mut target = Session::load(&gpu, &tf, limits).unwrap();
    let amateur = Session::load(&gpu, &df, limits).unwrap();
    let tokens: Vec<u32> = vec![5, 77, 300, 12, 9, 140];
    let t = tokens.len();
    let pos: Vec<u32> = (0..t as u32).collect();
    let mask = target.causal_mask(t);
    amateur
        .forward(&gpu, &tokens, &pos, &mask, 0, 0..t)
        .unwrap();
    target.set_contrastive(&gpu, Some((&amateur, P))).unwrap();
    target.forward(&gpu, &tokens, &pos, &mask, 0, 0..t).unwrap();
    let got = target.read_logits_blocking(&gpu, t);
    let v = target.head_rows();
    let (mut ct, mut ca) = (CpuModel::load(&tf).unwrap(), CpuModel::load(&df).unwrap());
    let mut in_set = 0;
    for (r, &tok) in tokens.iter().enumerate() {
        let (e, a) = (ct.forward(tok), ca.forward(tok));
        let want = reference_row(&e, &a, P);
        let row = &got[r * v..(r + 1) * v];
        let emax = e.iter().cloned().fold(f32::MIN, f32::max);
        for i in 0..v {
            let edge = (e[i] - emax - P.alpha.ln()).abs() < 2e-2;
            match (row[i] == f32::MIN, want[i] == f32::MIN) {
                (true, true) => {}
                (false, false) => {
                    in_set += 1;
                    assert!(
                        (row[i] - want[i]).abs() < 2e-2,
                        "row {r} token {i}: GPU {} vs CPU {}",
                        row[i],
                        want[i]
                    );
                }
                _ => assert!(edge, "row {r} token {i}: plausible on one side only"),
            }
        }
        // Same top token unless the CPU's two best are within the tolerance.
        let (g, w) = (top2(row), top2(&want));
        assert!(
            g.0 == w.0 || w.1 - w.2 < 2e-2,
            "row {r}: argmax {} vs {}",
            g.0,
            w.0
        );
    }
    assert!(in_set > t, "the plausible sets were empty");
    // Off again: the target's own logits.
    target.set_contrastive(&gpu, None).unwrap();
    target.forward(&gpu, &tokens, &pos, &mask, 0, 0..t).unwrap();
    let plain = target.read_logits_blocking(&gpu, t);
    assert!(plain.iter().all(|&x| x > f32::MIN));
}

#[test]
fn greedy_contrastive_generation_follows_the_cpu_contrastive_argmax() {
    let Some(mut engine) = engine() else { return };
    let prompt = engine.tokenizer.encode("the world and the", false).unwrap();
    let out = engine
        .generate(&prompt, &opts("plain", 12), |_| true)
        .unwrap();
    let plain = engine
        .generate(
            &prompt,
            &GenerateOptions {
                max_tokens: 12,
                ..Default::default()
            },
            |_| true,
        )
        .unwrap();
    let (tf, df) = pair();
    let (mut ct, mut ca) = (CpuModel::load(&tf).unwrap(), CpuModel::load(&df).unwrap());
    for &tok in &prompt[..prompt.len() - 1] {
        ct.advance(tok);
        ca.advance(tok);
    }
    let mut last = prompt[prompt.len() - 1];
    for (i, &tok) in out.tokens.iter().enumerate() {
        let s = reference_row(&ct.forward(last), &ca.forward(last), P);
        let (best, b1, _) = top2(&s);
        if best as u32 != tok {
            // Only a near tie on the CPU may go the other way; after it the texts part.
            assert!(
                b1 - s[tok as usize] < 2e-2,
                "token {i}: GPU {tok}, CPU {best}"
            );
            break;
        }
        last = tok;
    }
    assert_ne!(
        out.tokens, plain.tokens,
        "contrastive decoding changed nothing (β = 0.5 on two random models)"
    );
}

#[test]
fn every_method_gives_plain_contrastive_decodings_tokens() {
    let Some(mut engine) = engine() else { return };
    let prompt = engine
        .tokenizer
        .encode("the world and the world and the world and the", false)
        .unwrap();
    let want = engine
        .generate(&prompt, &opts("plain", 32), |_| true)
        .unwrap();
    for m in [
        "lookup",
        "suffix",
        "recycle",
        "hybrid",
        "sps:len=4",
        "tree:nodes=8",
    ] {
        engine.reset();
        let got = engine.generate(&prompt, &opts(m, 32), |_| true).unwrap();
        assert_eq!(got.tokens, want.tokens, "{m}");
    }
    // With a constraint too: the mask follows the contrastive scores.
    let c = Constraint::Regex("(the|a|world|and| )+".into());
    let with = |m: &str| GenerateOptions {
        constraint: Some(c.clone()),
        ..opts(m, 24)
    };
    engine.reset();
    let want = engine.generate(&prompt, &with("plain"), |_| true).unwrap();
    for m in ["lookup", "sps:len=4", "hybrid"] {
        engine.reset();
        let got = engine.generate(&prompt, &with(m), |_| true).unwrap();
        assert_eq!(got.tokens, want.tokens, "{m} with a constraint");
    }
    // Sampling from the contrastive distribution: the seed repeats a run. The adaptive
    // budget sizes drafts from measured step times, and a different draft size draws the
    // seed's numbers in another order, so a seeded speculative run repeats only with a
    // fixed budget.
    let sampled = |m: &str, e: &mut Engine| {
        e.reset();
        let o = GenerateOptions {
            adaptive: false,
            sampling: Some(SampleParams {
                temperature: 0.8,
                top_k: 0,
                top_p: 1.0,
                seed: 3,
            }),
            ..opts(m, 16)
        };
        e.generate(&prompt, &o, |_| true).unwrap().tokens
    };
    for m in ["plain", "sps:len=3"] {
        let a = sampled(m, &mut engine);
        assert_eq!(a.len(), 16);
        assert_eq!(a, sampled(m, &mut engine), "{m}: the same seed");
    }
}

#[test]
fn contrastive_needs_a_matching_amateur_and_sane_parameters() {
    let Some(gpu) = common::gpu() else { return };
    let (t, d) = pair();
    let options = EngineOptions {
        max_ctx: 128,
        max_draft: 6,
    };
    let mut e = Engine::new(gpu, &t, options).unwrap();
    let prompt = e.tokenizer.encode("the world", false).unwrap();
    let err = e
        .generate(&prompt, &opts("plain", 4), |_| true)
        .unwrap_err();
    assert!(err.to_string().contains("drafter model"), "{err}");
    // A drafter that scores fewer tokens than the target cannot be compared row for row.
    e.load_drafter_with(&d, DrafterOptions { vocab: Some(100) })
        .unwrap();
    let err = e
        .generate(&prompt, &opts("plain", 4), |_| true)
        .unwrap_err();
    assert!(matches!(err, tandem::Error::Mismatch(_)), "{err}");
    e.load_drafter(&d).unwrap();
    for p in [(0.0, 0.5), (1.5, 0.5), (0.1, -1.0), (0.1, f32::INFINITY)] {
        let o = GenerateOptions {
            contrastive: Some(ContrastiveParams {
                alpha: p.0,
                beta: p.1,
            }),
            ..opts("plain", 4)
        };
        let err = e.generate(&prompt, &o, |_| true).unwrap_err();
        assert!(matches!(err, tandem::Error::Invalid(_)), "{p:?}: {err}");
    }
    // And the engine still decodes, contrastive and not.
    assert_eq!(
        e.generate(&prompt, &opts("plain", 4), |_| true)
            .unwrap()
            .tokens
            .len(),
        4
    );
    let plain = GenerateOptions {
        max_tokens: 3,
        ..Default::default()
    };
    assert_eq!(
        e.generate(&prompt, &plain, |_| true).unwrap().tokens.len(),
        3
    );
}
