//! SuffixDecoding (`suffix`): the bounded suffix trie counts every substring and finds the
//! longest match exactly as a brute-force scan of the texts does (seeded random token
//! strings, with texts added and evicted); the earlier-outputs trie stays under its node cap;
//! greedy output with `suffix` drafts equals plain greedy output (a tiny model and SmolLM2);
//! speculative sampling with suffix drafts keeps the target's distribution (χ²); and a
//! second generation that repeats the first's output drafts from the earlier-outputs trie
//! (more accepted tokens, fewer target passes than the first). The same proofs for the
//! `hybrid` combinator (suffix on a long match, else recycling, else a drafter model; its
//! SmolLM2 check is beside recycle's in tests/recycle.rs), plus:
//! with a match length it never reaches it drafts exactly as `recycle` does, and with
//! `model=on` the drafter model drafts where neither does, the output still plain's.
mod common;

use rand::{Rng, SeedableRng};
use tandem::engine::{Engine, EngineOptions, GenerateOptions, MethodSpec};
use tandem::model::config::Arch;
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::speculative::{Suffix, SuffixOptions, SuffixTrie};

fn random_text(rng: &mut rand::rngs::SmallRng, len: usize, alphabet: u32) -> Vec<u32> {
    (0..len).map(|_| rng.random_range(0..alphabet)).collect()
}

/// Occurrences of `pat` in `texts` (windows inside one text).
fn brute_count(texts: &[Vec<u32>], pat: &[u32]) -> u32 {
    texts
        .iter()
        .map(|t| t.windows(pat.len()).filter(|w| *w == pat).count() as u32)
        .sum()
}

/// How often each token follows `pat` in `texts`.
fn brute_continuations(texts: &[Vec<u32>], pat: &[u32]) -> Vec<(u32, u32)> {
    let mut counts = std::collections::BTreeMap::new();
    for t in texts {
        for i in 0..t.len().saturating_sub(pat.len()) {
            if &t[i..i + pat.len()] == pat {
                *counts.entry(t[i + pat.len()]).or_insert(0u32) += 1;
            }
        }
    }
    let mut v: Vec<(u32, u32)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// The longest suffix of `h` (at most `depth − 1` tokens) followed by some token in `texts`.
fn brute_longest_match(texts: &[Vec<u32>], h: &[u32], depth: usize) -> usize {
    (1..=(depth - 1).min(h.len()))
        .rev()
        .find(|&m| !brute_continuations(texts, &h[h.len() - m..]).is_empty())
        .unwrap_or(0)
}

/// Distinct substrings of at most `depth` tokens (the trie's nodes but the root).
fn brute_distinct(texts: &[Vec<u32>], depth: usize) -> usize {
    let mut set = std::collections::BTreeSet::new();
    for t in texts {
        for i in 0..t.len() {
            for j in i + 1..=(i + depth).min(t.len()) {
                set.insert(t[i..j].to_vec());
            }
        }
    }
    set.len()
}

fn check_against_brute_force(
    trie: &SuffixTrie,
    texts: &[Vec<u32>],
    rng: &mut rand::rngs::SmallRng,
) {
    let depth = trie.depth();
    assert_eq!(
        trie.node_count(),
        brute_distinct(texts, depth) + 1,
        "node count"
    );
    for _ in 0..200 {
        // Queries: random strings, and suffixes of the texts (so long matches occur).
        let q = if rng.random_bool(0.5) || texts.is_empty() {
            {
                let n = rng.random_range(1..12);
                random_text(rng, n, 3)
            }
        } else {
            let t = &texts[rng.random_range(0..texts.len())];
            let end = rng.random_range(1..=t.len());
            let start = end.saturating_sub(rng.random_range(1..16));
            let mut q = t[start..end].to_vec();
            if rng.random_bool(0.3) {
                q.push(rng.random_range(0..3));
            }
            q
        };
        let m = brute_longest_match(texts, &q, depth);
        assert_eq!(
            trie.longest_match(&q).map_or(0, |x| x.0),
            m,
            "longest match of {q:?}"
        );
        let pat = &q[q.len() - m.max(1)..];
        assert_eq!(
            trie.continuations(pat),
            brute_continuations(texts, pat),
            "after {pat:?}"
        );
        for k in 1..=q.len().min(depth) {
            let p = &q[q.len() - k..];
            assert_eq!(trie.count(p), brute_count(texts, p), "count of {p:?}");
        }
    }
}

#[test]
fn the_trie_counts_and_matches_like_a_brute_force_scan() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(13);
    for depth in [2, 5, 8] {
        // One text, appended token by token.
        let text = random_text(&mut rng, 300, 3);
        let mut trie = SuffixTrie::new(depth);
        trie.extend(&text);
        check_against_brute_force(&trie, std::slice::from_ref(&text), &mut rng);
        // Several texts, some removed again: counts and nodes follow the texts left.
        let mut trie = SuffixTrie::new(depth);
        let mut texts: Vec<Vec<u32>> = Vec::new();
        for _ in 0..12 {
            let n = rng.random_range(1..60);
            let t = random_text(&mut rng, n, 3);
            trie.end_text();
            trie.extend(&t);
            trie.end_text();
            texts.push(t);
        }
        for _ in 0..6 {
            let t = texts.remove(rng.random_range(0..texts.len()));
            trie.remove_text(&t);
        }
        check_against_brute_force(&trie, &texts, &mut rng);
    }
}

#[test]
fn the_earlier_outputs_trie_stays_under_its_caps() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let options = SuffixOptions {
        max_nodes: 3000,
        max_requests: 20,
        ..Default::default()
    };
    let mut s = Suffix::new(options);
    let mut peak = 0;
    for i in 0..400 {
        let n = rng.random_range(1..150);
        let out = random_text(&mut rng, n, 50);
        s.add_output(out.clone());
        let n = s.global().node_count();
        peak = peak.max(n);
        assert!(n <= 3000, "request {i}: {n} nodes");
        assert!(s.cached_requests() <= 20);
        // The newest output is kept whenever it fits alone (≤ depth nodes per token).
        if out.len() * SuffixOptions::default().depth < 3000 {
            let tail = &out[out.len().saturating_sub(24)..];
            assert!(
                s.global().count(tail) >= 1,
                "request {i}: newest output evicted"
            );
        }
    }
    assert!(peak > 2000, "the cap was never approached ({peak} nodes)");
    // Evicting everything frees every node.
    let mut s = Suffix::new(SuffixOptions {
        max_requests: 1,
        ..Default::default()
    });
    s.add_output(random_text(&mut rng, 100, 50));
    s.add_output(vec![7]);
    assert_eq!(s.global().node_count(), 2);
}

use common::tiny;

fn spec(text: &str) -> MethodSpec {
    MethodSpec::parse(text).unwrap()
}

fn engine_for(target: &ModelFile, max_ctx: usize) -> Option<Engine> {
    let gpu = common::gpu()?;
    Some(
        Engine::new(
            gpu,
            target,
            EngineOptions {
                max_ctx,
                max_draft: 8,
            },
        )
        .unwrap(),
    )
}

/// Greedy: plain, then `method` twice on one engine. Both equal plain; the second run's
/// drafts come from the first's output in the earlier-outputs trie, so it accepts more
/// draft tokens in fewer target passes than the first.
fn greedy_equal_and_second_run_drafts_more(
    engine: &mut Engine,
    prompt: &[u32],
    n: usize,
    method: &str,
) {
    let plain = GenerateOptions {
        max_tokens: n,
        adaptive: false,
        ..Default::default()
    };
    let a = engine.generate(prompt, &plain, |_| true).unwrap();
    let o = GenerateOptions {
        method: spec(method),
        ..plain
    };
    let first = engine.generate(prompt, &o, |_| true).unwrap();
    let second = engine.generate(prompt, &o, |_| true).unwrap();
    assert_eq!(a.tokens, first.tokens, "{method} changed the greedy output");
    assert_eq!(
        a.tokens, second.tokens,
        "{method} changed the greedy output (2nd run)"
    );
    eprintln!(
        "{method}: first run {} accepted / {} passes, second {} / {}",
        first.stats.accepted,
        first.stats.target_passes,
        second.stats.accepted,
        second.stats.target_passes
    );
    assert!(
        second.stats.accepted > first.stats.accepted
            && second.stats.target_passes < first.stats.target_passes,
        "the second run did not draft from the first's output: accepted {} vs {}, passes {} vs {}",
        second.stats.accepted,
        first.stats.accepted,
        second.stats.target_passes,
        first.stats.target_passes
    );
    // A fresh drafter (the engine forgot) is back to the first run's figures.
    engine.reset();
    let fresh = engine.generate(prompt, &o, |_| true).unwrap();
    assert_eq!(fresh.tokens, a.tokens);
    assert_eq!(fresh.stats.accepted, first.stats.accepted);
}

#[test]
fn greedy_suffix_and_hybrid_equal_plain_and_multi_turn_drafts_from_earlier_outputs_tiny() {
    for (method, arch, ty, seed) in [
        ("suffix", Arch::Llama, GgmlType::Q8_0, 7),
        ("hybrid:min_match=3", Arch::Llama, GgmlType::Q8_0, 7),
        ("hybrid:min_match=3", Arch::Qwen2, GgmlType::Q4_K, 3),
    ] {
        let file = tiny(arch, ty, seed);
        let Some(mut engine) = engine_for(&file, 256) else {
            return;
        };
        let prompt = engine
            .tokenizer
            .encode("the world and the world and the", false)
            .unwrap();
        greedy_equal_and_second_run_drafts_more(&mut engine, &prompt, 40, method);
    }
}

/// With a match length it can never reach and short matches off, `hybrid` is Token
/// Recycling: the same drafts, so the same accepted counts and passes, step for step; with
/// short matches on (the default) its drafts differ from `recycle`'s after a repetitive
/// prompt, with the same tokens.
#[test]
fn hybrid_without_long_matches_drafts_exactly_as_recycle() {
    let file = tiny(Arch::Llama, GgmlType::Q8_0, 7);
    let Some(mut engine) = engine_for(&file, 256) else {
        return;
    };
    let prompt = engine
        .tokenizer
        .encode("the world and the world and the", false)
        .unwrap();
    let run = |engine: &mut Engine, method: &str| {
        engine.reset();
        let o = GenerateOptions {
            max_tokens: 40,
            adaptive: false,
            method: spec(method),
            ..Default::default()
        };
        let mut steps = Vec::new();
        let out = engine
            .generate(&prompt, &o, |ev| {
                let tandem::engine::Event::Tokens { ids, proposed, .. } = ev;
                steps.push((ids.len(), *proposed));
                true
            })
            .unwrap();
        (out, steps)
    };
    let (r, r_steps) = run(&mut engine, "recycle:nodes=8");
    let (h, h_steps) = run(&mut engine, "hybrid:nodes=8,min_match=63,short=0");
    assert_eq!(h.tokens, r.tokens);
    assert_eq!(
        h_steps, r_steps,
        "hybrid (no long match) vs recycle, per step"
    );
    assert!(r.stats.drafted > 0);
    let (d, _) = run(&mut engine, "hybrid:nodes=8,min_match=63");
    assert_eq!(d.tokens, r.tokens, "short matches on");
    let (s, _) = run(&mut engine, "hybrid:nodes=8,min_match=2");
    assert_eq!(s.tokens, r.tokens);
    eprintln!(
        "recycle: {} accepted / {} passes; hybrid min_match=2: {} / {}",
        r.stats.accepted, r.stats.target_passes, s.stats.accepted, s.stats.target_passes
    );
    assert_ne!(
        (s.stats.drafted, s.stats.accepted),
        (r.stats.drafted, r.stats.accepted),
        "the suffix branch never drafted"
    );
}

/// `hybrid:model=on`: where neither the suffix tries nor the recycling table draft (the
/// first steps of a fresh engine), the drafter model's chain does (here the target drafts
/// for itself); the output is plain's. Without a drafter model the method is refused.
#[test]
fn hybrid_with_a_drafter_model_falls_back_to_its_chain() {
    let file = tiny(Arch::Llama, GgmlType::Q8_0, 7);
    let Some(mut engine) = engine_for(&file, 256) else {
        return;
    };
    let prompt = engine.tokenizer.encode("the world", false).unwrap();
    let o = GenerateOptions {
        max_tokens: 24,
        adaptive: false,
        method: spec("hybrid:model=on,len=3"),
        ..Default::default()
    };
    let err = engine
        .generate(&prompt, &o, |_| true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a drafter model"), "{err}");
    engine.load_drafter(&file).unwrap();
    let plain = GenerateOptions {
        method: MethodSpec::plain(),
        ..o.clone()
    };
    let a = engine.generate(&prompt, &plain, |_| true).unwrap();
    engine.reset();
    let b = engine.generate(&prompt, &o, |_| true).unwrap();
    assert_eq!(
        a.tokens, b.tokens,
        "hybrid:model=on changed the greedy output"
    );
    assert!(
        b.stats.drafter_passes > 0,
        "the drafter model never drafted ({} passes)",
        b.stats.drafter_passes
    );
    // Self-drafting: the model's chain drafts are the target's own tokens.
    assert!(b.stats.accepted > 0);
}

/// SmolLM2 (one fixture prompt, 16 tokens: lavapipe runs ~3 s per token).
#[test]
fn smollm2_greedy_suffix_equals_plain_and_multi_turn_drafts_from_earlier_outputs() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let file = ModelFile::open(&path).unwrap();
    let Some(mut engine) = engine_for(&file, 512) else {
        return;
    };
    let recs = common::greedy_fixtures("smollm2-135m");
    greedy_equal_and_second_run_drafts_more(&mut engine, &recs[0].prompt_ids, 16, "suffix");
}

/// Speculative sampling with suffix drafts is lossless: the first token is distributed as
/// the target's softmax at that temperature (χ² at the 0.1% level over 800 seeds), while
/// the prompt's repetition makes `suffix` draft at the first step.
#[test]
fn suffix_sampling_first_token_follows_the_target_distribution() {
    suffix_first_token_chi2("suffix");
}

/// The same for `hybrid` with a match length the prompt reaches (its suffix branch drafts).
#[test]
fn hybrid_sampling_first_token_follows_the_target_distribution() {
    suffix_first_token_chi2("hybrid:min_match=1");
}

fn suffix_first_token_chi2(method: &str) {
    let file = tiny(Arch::Llama, GgmlType::Q8_0, 9);
    let Some(mut engine) = engine_for(&file, 256) else {
        return;
    };
    // The prompt is `base, x, base`, so the first step drafts `x` (what followed `base`);
    // `x` is the one of the target's eight likeliest tokens after `base` that is likeliest
    // after the whole prompt, so drafts are accepted often enough to matter.
    let base = engine.tokenizer.encode("the world", false).unwrap();
    let temp = 0.3f64;
    let dist = |prompt: &[u32]| -> Vec<f64> {
        engine.session().prefill(&engine.gpu, prompt, 0).unwrap();
        common::softmax_at(&engine.session().read_logits_blocking(&engine.gpu, 1), temp)
    };
    let after_base = dist(&base);
    let mut top: Vec<u32> = (0..after_base.len() as u32).collect();
    top.sort_by(|&a, &b| after_base[b as usize].total_cmp(&after_base[a as usize]));
    let (mut prompt, mut p, mut px) = (Vec::new(), Vec::new(), -1.0);
    for &x in &top[..8] {
        let q: Vec<u32> = base
            .iter()
            .copied()
            .chain([x])
            .chain(base.iter().copied())
            .collect();
        let d = dist(&q);
        if d[x as usize] > px {
            (prompt, px, p) = (q, d[x as usize], d);
        }
    }
    eprintln!("the drafted token's probability: {px:.3}");
    let trials = 800;
    let mut counts = vec![0usize; p.len()];
    let (mut drafted, mut accepted) = (0, 0);
    for seed in 0..trials {
        engine.reset();
        let o = GenerateOptions {
            max_tokens: 3,
            adaptive: false,
            method: spec(method),
            sampling: Some(tandem::kernels::sample::SampleParams {
                temperature: temp as f32,
                top_k: 0,
                top_p: 1.0,
                seed: seed as u64 + 100,
            }),
            ..Default::default()
        };
        let out = engine.generate(&prompt, &o, |_| true).unwrap();
        counts[out.tokens[0] as usize] += 1;
        drafted += out.stats.drafted;
        accepted += out.stats.accepted;
    }
    let common::Chi2 {
        stat: chi2,
        df,
        critical: crit,
    } = common::chi2_against(&p, &counts, trials);
    eprintln!(
        "{method}: χ² = {chi2:.1}, df = {df}, critical {crit:.1}, drafted {drafted}, accepted {accepted}"
    );
    assert!(df >= 2, "the distribution is too peaked (df = {df})");
    assert!(
        drafted >= trials,
        "{method} drafted {drafted} nodes in {trials} runs"
    );
    assert!(
        accepted > 0 && accepted < drafted,
        "drafts accepted {accepted} of {drafted}"
    );
    assert!(
        chi2 < crit,
        "first-token distribution differs from the target's: χ² = {chi2:.1} ≥ {crit:.1}"
    );
}
