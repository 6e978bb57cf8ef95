//! One model, several conversations: sessions over a shared `GpuModel` keep their own KV
//! caches (two sessions decoded step by step, interleaved, give the tokens of two models
//! loaded apart), an engine's conversations give the tokens of fresh engines, and a session
//! the memory budget cannot hold is a clear `Error::OutOfMemory`, with its memory back when
//! one closes.
mod common;

use std::sync::Arc;

use common::tiny;
use tandem::engine::{Engine, EngineOptions, GenerateOptions, MethodSpec};
use tandem::gpu::GpuOptions;
use tandem::model::config::Arch;
use tandem::model::quant::GgmlType;
use tandem::model::session::Session;
use tandem::model::transformer::{ForwardLimits, GpuModel};
use tandem::Error;

const LIMITS: ForwardLimits = ForwardLimits {
    max_ctx: 128,
    max_t: 16,
    max_logit_rows: 4,
};

/// One greedy decode step of `s`: `token` at `n_past`; returns the argmax.
fn step(gpu: &tandem::gpu::Gpu, s: &Session, token: u32, n_past: usize) -> u32 {
    s.forward(
        gpu,
        &[token],
        &[n_past as u32],
        &s.causal_mask(1),
        n_past,
        0..1,
    )
    .unwrap();
    pollster::block_on(s.read_argmax(gpu, 1)).unwrap()[0]
}

#[test]
fn two_sessions_over_one_model_decode_like_two_models_interleaved_step_by_step() {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny(Arch::Llama, GgmlType::Q8_0, 11);
    let shared = Arc::new(GpuModel::load(&gpu, &file, LIMITS).unwrap());
    let (a, b) = (
        Session::new(&gpu, shared.clone()).unwrap(),
        Session::new(&gpu, shared.clone()).unwrap(),
    );
    let (lone_a, lone_b) = (
        Session::load(&gpu, &file, LIMITS).unwrap(),
        Session::load(&gpu, &file, LIMITS).unwrap(),
    );
    let prompts: [Vec<u32>; 2] = [(30..41).collect(), (200..205).rev().collect()];
    let mut outs = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for (pair, (x, y)) in [(&a, &b), (&lone_a, &lone_b)].into_iter().enumerate() {
        let mut next = [0u32; 2];
        for (i, s) in [x, y].into_iter().enumerate() {
            s.prefill(&gpu, &prompts[i], 0).unwrap();
            next[i] = pollster::block_on(s.read_argmax(&gpu, 1)).unwrap()[0];
        }
        // Alternate: a step of the first conversation, then one of the second, …
        for k in 0..12 {
            for (i, s) in [x, y].into_iter().enumerate() {
                outs[pair][i].push(next[i]);
                next[i] = step(&gpu, s, next[i], prompts[i].len() + k);
            }
        }
    }
    assert_eq!(
        outs[0], outs[1],
        "shared-model sessions vs separately loaded models"
    );
    assert_ne!(
        outs[0][0], outs[0][1],
        "the two prompts should continue differently"
    );
    // The sessions share the weights: the shared model is uploaded once.
    assert_eq!(Arc::strong_count(&shared), 3);
}

#[test]
#[allow(clippy::needless_range_loop)] // turn by turn across both conversations
fn conversations_of_one_engine_continue_like_fresh_engines() {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny(Arch::Qwen2, GgmlType::Q4_K, 5);
    let options = EngineOptions {
        max_ctx: 256,
        max_draft: 8,
    };
    let engine = Engine::new(gpu, &file, options).unwrap();
    let tok = &engine.tokenizer;
    let turns = [
        [
            "the world and the world and the",
            " and the world and the world",
        ],
        ["a b c d a b c d a b", " c d a b c d"],
    ];
    let gen = |method: &str| GenerateOptions {
        max_tokens: 16,
        method: MethodSpec::parse(method).unwrap(),
        ..Default::default()
    };
    // Two conversations on one engine, turn by turn, interleaved; each turn's prompt is the
    // conversation so far, so the second turn reuses the conversation's own KV rows.
    let mut convs = [
        engine.conversation().unwrap(),
        engine.conversation().unwrap(),
    ];
    let mut history = [Vec::new(), Vec::new()];
    let mut shared = [Vec::new(), Vec::new()];
    for turn in 0..2 {
        for c in 0..2 {
            history[c].extend(tok.encode(turns[c][turn], false).unwrap());
            let method = if c == 0 { "lookup" } else { "suffix" };
            let out = engine
                .generate_in(&mut convs[c], &history[c], &gen(method), |_| true)
                .unwrap();
            if turn == 1 {
                assert!(
                    out.stats.reused_prompt_tokens > 0,
                    "conversation {c}: the second turn reuses its own cache"
                );
            }
            history[c].extend(&out.tokens);
            shared[c].push(out.tokens);
        }
    }
    // The same conversations, each on a fresh engine of its own, plain decoding.
    for c in 0..2 {
        let gpu = common::gpu().unwrap();
        let mut fresh = Engine::new(gpu, &file, options).unwrap();
        let mut h = Vec::new();
        for (turn, text) in turns[c].iter().enumerate() {
            h.extend(tok.encode(text, false).unwrap());
            let out = fresh.generate(&h, &gen("plain"), |_| true).unwrap();
            assert_eq!(out.tokens, shared[c][turn], "conversation {c}, turn {turn}");
            h.extend(&out.tokens);
        }
    }
}

#[test]
fn a_session_past_the_memory_budget_is_out_of_memory_until_one_closes() {
    let Some(probe) = common::gpu() else { return };
    let file = tiny(Arch::Llama, GgmlType::Q8_0, 3);
    let model = GpuModel::load(&probe, &file, LIMITS).unwrap();
    let (weights, session) = (model.weight_bytes(), Session::bytes_for(&model));
    assert!(weights > 0 && session > 0);
    assert_eq!(probe.memory_in_use(), weights);
    drop(model);
    assert_eq!(probe.memory_in_use(), 0, "the weights' memory is back");
    // Room for the weights and one and a half sessions.
    let gpu = common::gpu_with(&GpuOptions {
        memory_budget: Some(weights + session + session / 2),
        ..GpuOptions::from_env()
    })
    .unwrap();
    let model = Arc::new(GpuModel::load(&gpu, &file, LIMITS).unwrap());
    let first = Session::new(&gpu, model.clone()).unwrap();
    assert_eq!(first.bytes(), session);
    let err = match Session::new(&gpu, model.clone()) {
        Err(e) => e,
        Ok(_) => panic!("a second session fit a budget of one and a half"),
    };
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("out of GPU memory") && msg.contains("session") && msg.contains("MiB"),
        "{msg}"
    );
    drop(first);
    let again = Session::new(&gpu, model.clone()).unwrap();
    assert_eq!(gpu.memory_in_use(), weights + again.bytes());
    // The engine says the same when asked for another conversation.
    let engine = Engine::new(
        common::gpu_with(&GpuOptions {
            memory_budget: Some(2 * weights + 3 * session),
            ..GpuOptions::from_env()
        })
        .unwrap(),
        &file,
        EngineOptions {
            max_ctx: LIMITS.max_ctx,
            max_draft: 8,
        },
    );
    // (The engine's sessions are sized by its own limits; only the error kind is checked.)
    let engine = engine.unwrap();
    let mut opened = Vec::new();
    let err = loop {
        match engine.conversation() {
            Ok(c) => opened.push(c),
            Err(e) => break e,
        }
        assert!(opened.len() < 64, "the budget never ran out");
    };
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
}

#[test]
fn a_stop_string_across_tokens_is_never_streamed_and_ends_the_text_before_it() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let Some(gpu) = common::gpu() else { return };
    let file = tandem::model::loader::ModelFile::open(&path).unwrap();
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
        .encode(
            "The capital of France is Paris. The capital of Italy is",
            false,
        )
        .unwrap();
    let free = engine
        .generate(
            &prompt,
            &GenerateOptions {
                max_tokens: 24,
                ..Default::default()
            },
            |_| true,
        )
        .unwrap();
    // A stop string from the middle of one token's text to the middle of a later one's.
    let pieces: Vec<String> = free
        .tokens
        .iter()
        .map(|&t| engine.tokenizer.decode(&[t]).unwrap())
        .collect();
    let k = (2..pieces.len() - 2)
        .find(|&i| pieces[i].len() >= 2 && !pieces[i + 1].is_empty())
        .unwrap_or_else(|| panic!("a token of two or more bytes in {pieces:?}"));
    let start: usize = pieces[..k].iter().map(String::len).sum::<usize>() + 1;
    let stop = free.text[start..start + pieces[k].len()].to_string();
    let cut = &free.text[..free.text.find(&stop).unwrap()];
    for method in ["plain", "lookup"] {
        let mut streamed = String::new();
        let out = engine
            .generate(
                &prompt,
                &GenerateOptions {
                    max_tokens: 24,
                    stop: vec![stop.clone()],
                    method: MethodSpec::parse(method).unwrap(),
                    ..Default::default()
                },
                |ev| {
                    let tandem::engine::Event::Tokens { text, .. } = ev;
                    streamed.push_str(text);
                    true
                },
            )
            .unwrap();
        assert_eq!(
            out.text, cut,
            "{method}: the text ends before the stop string {stop:?}"
        );
        assert_eq!(
            streamed, cut,
            "{method}: no part of the stop string was streamed"
        );
        assert_eq!(out.stop_reason, Some(tandem::engine::StopReason::Stop));
    }
}
