//! Speculative decoding is exact: greedy output with drafts equals plain greedy output token
//! for token, and a tree node's logits equal the same token decoded alone, bit for bit.
mod common;

use tandem::engine::{Engine, EngineOptions, GenerateOptions, Method};
use tandem::model::config::Arch;
use tandem::model::gguf::GgufFile;
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::model::transformer::{ForwardLimits, Transformer};
use tandem::model::writer::tiny_model;
use tandem::spec::{DraftTree, PromptLookup};

fn tiny(arch: Arch, ty: GgmlType, seed: u64) -> ModelFile {
    ModelFile::from_gguf(GgufFile::from_bytes(tiny_model(arch, ty, seed).unwrap()).unwrap())
        .unwrap()
}

fn lookup(budget: usize) -> Method {
    Method::Lookup {
        lookup: PromptLookup::default(),
        budget,
    }
}

#[test]
fn greedy_prompt_lookup_equals_plain_on_tiny_models() {
    for (arch, ty) in [(Arch::Llama, GgmlType::Q8_0), (Arch::Qwen2, GgmlType::Q4_K)] {
        let Some(gpu) = common::gpu() else { return };
        let file = tiny(arch, ty, 7);
        let mut engine = Engine::new(
            gpu,
            &file,
            EngineOptions {
                max_ctx: 256,
                max_draft: 8,
            },
        )
        .unwrap();
        let prompt = engine
            .tokenizer
            .encode("the world and the world and the world and the", false)
            .unwrap();
        let plain = GenerateOptions {
            max_tokens: 48,
            ..Default::default()
        };
        let a = engine.generate(&prompt, &plain, |_| true).unwrap();
        let spec = GenerateOptions {
            method: lookup(6),
            ..plain.clone()
        };
        // The events split each step's text into the drafted tokens' part and the rest.
        let (mut drafted_text, mut events_text) = (String::new(), String::new());
        let (mut proposed_sum, mut drafted_sum) = (0, 0);
        let b = engine
            .generate(&prompt, &spec, |ev| {
                let tandem::engine::Event::Tokens {
                    text,
                    drafted,
                    drafted_text: n,
                    proposed,
                    ..
                } = ev;
                proposed_sum += proposed;
                drafted_sum += drafted;
                if *drafted == 0 {
                    assert_eq!(*n, 0, "no drafted tokens, yet drafted text");
                }
                drafted_text.push_str(&text[..*n]);
                events_text.push_str(text);
                true
            })
            .unwrap();
        assert!(
            b.text.starts_with(&events_text),
            "{arch:?}: the events' text is not the output's"
        );
        assert_eq!(
            (proposed_sum, drafted_sum),
            (b.stats.drafted, b.stats.accepted),
            "{arch:?}: the events' proposed/drafted counts disagree with the stats"
        );
        assert!(
            !drafted_text.is_empty(),
            "{arch:?}: accepted drafts but no drafted text"
        );
        assert_eq!(
            a.tokens, b.tokens,
            "{arch:?}/{ty:?}: prompt lookup changed the greedy output"
        );
        assert_eq!(
            a.stats.target_passes,
            a.tokens.len(),
            "plain decoding: one pass per token"
        );
        // The check only means something if drafts were accepted.
        assert!(
            b.stats.accepted > 0,
            "{arch:?}: no draft accepted (τ = {})",
            b.stats.mean_accepted_tokens
        );
        assert!(b.stats.target_passes < a.stats.target_passes);
        eprintln!("{arch:?}/{ty:?}: τ = {:.2}", b.stats.mean_accepted_tokens);
    }
}

/// Logits of every node of a branching tree equal, bit for bit, the logits of the same token
/// decoded alone (T = 1) after the prefix extended by its ancestors.
#[test]
fn tree_node_logits_equal_the_token_decoded_alone_bitwise() {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny(Arch::Qwen2, GgmlType::Q5_0, 3);
    let limits = ForwardLimits {
        max_ctx: 128,
        max_t: 16,
        max_logit_rows: 16,
    };
    let tf = Transformer::load(&gpu, &file, limits).unwrap();
    let v = tf.config.vocab_size;
    let prefix: Vec<u32> = (10..30).collect();
    // root ─ 40 ─ 41 ─ 42
    //      ├ 50 ─ 51
    //      └ 60
    let mut tree = DraftTree::empty();
    let a = tree.push(40, None, 1.0).unwrap();
    let b = tree.push(41, Some(a), 1.0).unwrap();
    tree.push(42, Some(b), 1.0).unwrap();
    let c = tree.push(50, None, 1.0).unwrap();
    tree.push(51, Some(c), 1.0).unwrap();
    tree.push(60, None, 1.0).unwrap();
    let root = 99;
    let n_past = prefix.len();
    tf.prefill(&gpu, &prefix, 0).unwrap();
    let tokens = tree.batch_tokens(root);
    let t = tokens.len();
    tf.forward(
        &gpu,
        &tokens,
        &tree.batch_positions(n_past as u32),
        &tree.batch_mask(tf.mask_words()),
        n_past,
        0..t,
    )
    .unwrap();
    let tree_logits = tf.read_logits_blocking(&gpu, t);
    let parents = tree.batch_parents();
    for row in 0..t {
        // The path root → row, decoded one token at a time after the same prefix.
        let mut path = vec![row];
        while let Some(p) = parents[*path.last().unwrap()] {
            path.push(p);
        }
        path.reverse();
        tf.prefill(&gpu, &prefix, 0).unwrap();
        for (depth, &r) in path.iter().enumerate() {
            let pos = (n_past + depth) as u32;
            tf.forward(
                &gpu,
                &[tokens[r]],
                &[pos],
                &tf.causal_mask(1),
                n_past + depth,
                0..1,
            )
            .unwrap();
        }
        let alone = tf.read_logits_blocking(&gpu, 1);
        let in_tree = &tree_logits[row * v..(row + 1) * v];
        let same = alone
            .iter()
            .zip(in_tree)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "tree row {row} (path {path:?}) differs from the token decoded alone"
        );
    }
}

/// SmolLM2: GPU greedy generation follows llama.cpp's fixture, and prompt lookup gives the
/// same tokens. One prompt in CI (lavapipe runs ~3 s per token); all prompts with TANDEM_SLOW=1.
#[test]
fn smollm2_gpu_greedy_follows_fixtures_and_lookup_is_lossless() {
    let Some(gpu) = common::gpu() else { return };
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let file = ModelFile::open(&path).unwrap();
    let mut engine = Engine::new(
        gpu,
        &file,
        EngineOptions {
            max_ctx: 512,
            max_draft: 8,
        },
    )
    .unwrap();
    let recs = common::greedy_fixtures("smollm2-135m");
    let n = if common::slow("all SmolLM2 GPU fixture prompts") {
        recs.len()
    } else {
        1
    };
    let mut outright = 0;
    for rec in &recs[..n] {
        let plain = GenerateOptions {
            max_tokens: 16,
            ..Default::default()
        };
        let a = engine.generate(&rec.prompt_ids, &plain, |_| true).unwrap();
        if common::check_greedy(&a.tokens, rec, 16).unwrap() {
            outright += 1;
        }
        let spec = GenerateOptions {
            method: lookup(8),
            ..plain
        };
        let b = engine.generate(&rec.prompt_ids, &spec, |_| true).unwrap();
        assert_eq!(
            a.tokens, b.tokens,
            "prompt lookup changed the output for {:?}",
            rec.prompt
        );
    }
    if n == recs.len() {
        assert!(
            outright * 2 >= n,
            "only {outright} of {n} prompts match the fixture outright"
        );
    }
}

fn engine_with_drafter(target: &ModelFile, drafter: &ModelFile) -> Option<Engine> {
    let gpu = common::gpu()?;
    let mut e = Engine::new(
        gpu,
        target,
        EngineOptions {
            max_ctx: 256,
            max_draft: 8,
        },
    )
    .unwrap();
    e.load_drafter(drafter).unwrap();
    Some(e)
}

/// A model drafting for itself: every draft is accepted, so each target pass yields the draft
/// length + 1 tokens, and the output equals plain decoding.
#[test]
fn self_drafting_accepts_every_draft_and_tau_is_k_plus_one() {
    let file = tiny(Arch::Llama, GgmlType::Q8_0, 7);
    let Some(mut engine) = engine_with_drafter(&file, &file) else {
        return;
    };
    let prompt = engine.tokenizer.encode("the world and the", false).unwrap();
    let k = 4;
    let plain = GenerateOptions {
        max_tokens: 25,
        adaptive: false,
        ..Default::default()
    };
    let a = engine.generate(&prompt, &plain, |_| true).unwrap();
    engine.reset();
    let sps = GenerateOptions {
        method: Method::Draft { k },
        ..plain.clone()
    };
    let b = engine.generate(&prompt, &sps, |_| true).unwrap();
    assert_eq!(
        a.tokens, b.tokens,
        "self-drafting changed the greedy output"
    );
    assert_eq!(
        b.stats.accepted, b.stats.drafted,
        "a model must accept its own greedy drafts"
    );
    // 25 tokens at k + 1 = 5 per pass.
    assert_eq!(b.stats.target_passes, 5);
    assert!((b.stats.mean_accepted_tokens - (k + 1) as f64).abs() < 1e-9);
}

/// A different drafter (another random model with the same vocabulary): output still equals
/// plain decoding, with the KV cache reused across calls (multi-turn) in both runs.
#[test]
fn greedy_draft_model_equals_plain_and_multi_turn_reuses_the_cache() {
    let target = tiny(Arch::Qwen2, GgmlType::Q4_K, 7);
    let drafter = tiny(Arch::Qwen2, GgmlType::Q4_K, 8);
    let Some(mut engine) = engine_with_drafter(&target, &drafter) else {
        return;
    };
    let p1 = engine
        .tokenizer
        .encode("the world and the world", false)
        .unwrap();
    for method in [Method::Plain, Method::Draft { k: 3 }] {
        engine.reset();
        let o = GenerateOptions {
            max_tokens: 20,
            adaptive: false,
            method,
            ..Default::default()
        };
        let first = engine.generate(&p1, &o, |_| true).unwrap();
        // Second turn: the first prompt + answer + more text; only the new part is prefilled.
        let mut p2 = p1.clone();
        p2.extend(&first.tokens);
        p2.extend(engine.tokenizer.encode(" and the", false).unwrap());
        let second = engine.generate(&p2, &o, |_| true).unwrap();
        assert!(second.stats.reused_prompt_tokens >= p1.len() + first.tokens.len() - 1);
        // Reference: the same second prompt from an empty cache with plain decoding.
        engine.reset();
        let fresh = GenerateOptions {
            method: Method::Plain,
            ..o.clone()
        };
        let reference = engine.generate(&p2, &fresh, |_| true).unwrap();
        assert_eq!(
            second.tokens,
            reference.tokens,
            "{}: cached multi-turn output differs",
            o.method.name()
        );
    }
}

#[test]
fn adaptive_budget_output_equals_plain() {
    let target = tiny(Arch::Llama, GgmlType::Q4_0, 5);
    let Some(mut engine) = engine_with_drafter(&target, &target) else {
        return;
    };
    let prompt = engine.tokenizer.encode("the world", false).unwrap();
    let plain = GenerateOptions {
        max_tokens: 30,
        adaptive: false,
        ..Default::default()
    };
    let a = engine.generate(&prompt, &plain, |_| true).unwrap();
    engine.reset();
    let adaptive = GenerateOptions {
        method: Method::Draft { k: 6 },
        adaptive: true,
        ..plain
    };
    let b = engine.generate(&prompt, &adaptive, |_| true).unwrap();
    assert_eq!(a.tokens, b.tokens);
}

#[test]
fn a_drafter_with_another_vocabulary_is_refused() {
    let Some(gpu) = common::gpu() else { return };
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let target = tiny(Arch::Llama, GgmlType::Q8_0, 1);
    let mut engine = Engine::new(
        gpu,
        &target,
        EngineOptions {
            max_ctx: 64,
            max_draft: 4,
        },
    )
    .unwrap();
    let err = engine
        .load_drafter(&ModelFile::open(path).unwrap())
        .unwrap_err();
    assert!(matches!(err, tandem::Error::Mismatch(_)), "{err}");
}
