//! `tandem bench` (Spec-Bench-style harness): question files, task groups, sampling, the
//! metrics arithmetic, the losslessness check, the writers, and an end-to-end run on a tiny
//! synthetic model.
#[path = "../../../tests/common/mod.rs"]
mod common;

use tandem::engine::{Engine, EngineOptions, MethodSpec};
use tandem::kernels::sample::SampleParams;
use tandem::model::config::Arch;
use tandem::model::gguf::GgufFile;
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::model::writer::tiny_model;
use tandem::Error;
use tandem_bench::metrics::{metrics, TurnRecord};
use tandem_bench::questions::{even_indices, group_label, groups_of};
use tandem_bench::{
    check_lossless, parse_questions, run_questions, sample_per_category, task_group, BenchMeta,
    BenchMethod, BenchReport, DeviceInfo, MethodInfo, ModelInfo, QuestionRecord, RunSettings,
    Settings,
};

fn q(id: u32, cat: &str, turns: &[&str]) -> String {
    serde_json::json!({"question_id": id, "category": cat, "turns": turns}).to_string()
}

fn err_text(text: &str) -> String {
    match parse_questions(text, "q.jsonl") {
        Ok(v) => panic!("expected an error, parsed {} questions", v.len()),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Question files

#[test]
fn spec_bench_subset_parses_into_six_task_groups() {
    let path = common::specbench_questions();
    if !path.exists() {
        eprintln!("SKIP: {} is missing", path.display());
        return;
    }
    let qs = tandem_bench::load_questions(&path).unwrap();
    assert_eq!(qs.len(), 240);
    let groups = groups_of(&qs);
    assert_eq!(
        groups,
        [
            "mt_bench",
            "translation",
            "summarization",
            "qa",
            "math_reasoning",
            "rag"
        ]
    );
    for g in &groups {
        let n = qs.iter().filter(|q| &task_group(&q.category) == g).count();
        assert_eq!(n, 40, "group {g}");
    }
    for q in &qs {
        let want = if task_group(&q.category) == "mt_bench" {
            2
        } else {
            1
        };
        assert_eq!(q.turns.len(), want, "question {}", q.id);
    }
    // One per category: 8 MT-bench categories + 5 single-category groups.
    let one = sample_per_category(&qs, Some(1)).unwrap();
    assert_eq!(one.len(), 13);
}

#[test]
fn a_malformed_line_is_an_error_naming_its_line_number() {
    let text = [
        q(1, "qa", &["a?"]),
        String::new(), // blank lines are skipped but still counted
        q(2, "qa", &["b?"]),
        "{\"question_id\": 3, \"category\": \"qa\", \"turns\": [\"c?\"]".to_string(),
    ]
    .join("\n");
    let e = err_text(&text);
    assert!(e.contains("q.jsonl:4"), "{e}");
    let e = err_text("not json at all\n");
    assert!(e.contains("q.jsonl:1"), "{e}");
    match parse_questions(&text, "q.jsonl") {
        Err(Error::Format { at, .. }) => assert_eq!(at, "q.jsonl:4"),
        other => panic!("expected Error::Format, got {other:?}"),
    }
}

#[test]
fn missing_fields_are_errors() {
    let lines = [
        (r#"{"category": "qa", "turns": ["x"]}"#, "question_id"),
        (r#"{"question_id": 1, "turns": ["x"]}"#, "category"),
        (r#"{"question_id": 1, "category": "qa"}"#, "turns"),
        (
            r#"{"question_id": null, "category": "qa", "turns": ["x"]}"#,
            "question_id",
        ),
        (
            r#"{"question_id": 1, "category": "", "turns": ["x"]}"#,
            "category",
        ),
        (
            r#"{"question_id": 1, "category": "qa", "turns": "x"}"#,
            "sequence",
        ),
    ];
    for (line, what) in lines {
        let text = format!("{}\n{line}\n", q(7, "qa", &["ok"]));
        let e = err_text(&text);
        assert!(e.contains("q.jsonl:2"), "{line}: {e}");
        assert!(e.contains(what), "{line}: '{e}' does not name {what}");
    }
}

#[test]
fn empty_turns_and_empty_files_are_errors() {
    let e = err_text(&q(5, "writing", &[]));
    assert!(e.contains("q.jsonl:1") && e.contains("no turns"), "{e}");
    let e = err_text(&format!(
        "{}\n{}",
        q(1, "qa", &["x"]),
        q(6, "writing", &["a", "  "])
    ));
    assert!(
        e.contains("q.jsonl:2") && e.contains("turn 2 is empty"),
        "{e}"
    );
    let e = err_text("\n\n");
    assert!(e.contains("no questions"), "{e}");
    let e = err_text(&format!("{}\n{}", q(9, "qa", &["x"]), q(9, "qa", &["y"])));
    assert!(e.contains("q.jsonl:2") && e.contains("line 1"), "{e}");
}

#[test]
fn other_fields_and_string_ids_are_accepted() {
    let text = format!(
        "{}\n\n{}\n",
        r#"{"question_id": 111, "category": "math", "turns": ["a", "b"], "reference": ["4"]}"#,
        r#"{"question_id": "x-1", "category": "poetry", "turns": ["c"]}"#
    );
    let qs = parse_questions(&text, "q.jsonl").unwrap();
    assert_eq!(qs.len(), 2);
    assert_eq!((qs[0].id.as_str(), qs[0].line), ("111", 1));
    assert_eq!((qs[1].id.as_str(), qs[1].line), ("x-1", 3));
    assert_eq!(task_group("math"), "mt_bench");
    assert_eq!(task_group("math_reasoning"), "math_reasoning");
    // A category Spec-Bench does not have is its own group, after Spec-Bench's.
    assert_eq!(task_group("poetry"), "poetry");
    assert_eq!(groups_of(&qs), ["mt_bench", "poetry"]);
    assert_eq!(group_label("rag"), "Retrieval-aug. Generation");
    assert_eq!(group_label("poetry"), "poetry");
}

// ---------------------------------------------------------------------------------------
// Sampling

#[test]
fn sampling_is_spread_evenly_per_category_and_keeps_file_order() {
    assert_eq!(even_indices(40, 4), [5, 15, 25, 35]);
    assert_eq!(even_indices(40, 1), [20]);
    assert_eq!(even_indices(5, 2), [1, 3]);
    assert_eq!(even_indices(3, 3), [0, 1, 2]);
    assert_eq!(even_indices(3, 10), [0, 1, 2]);
    // Two categories interleaved in the file: 10 of "a" (ids 0..10), 4 of "b" (ids 100..).
    let mut lines = Vec::new();
    for i in 0..10 {
        lines.push(q(i, "a", &["x"]));
        if i < 4 {
            lines.push(q(100 + i, "b", &["y"]));
        }
    }
    let qs = parse_questions(&lines.join("\n"), "q.jsonl").unwrap();
    let ids = |v: &[tandem_bench::Question]| v.iter().map(|q| q.id.clone()).collect::<Vec<_>>();
    let two = sample_per_category(&qs, Some(2)).unwrap();
    // "a": slices [0,5) and [5,10) → 2 and 7; "b": [0,2) and [2,4) → 101 and 103.
    assert_eq!(ids(&two), ["101", "2", "103", "7"]);
    assert_eq!(sample_per_category(&qs, None).unwrap().len(), 14);
    assert_eq!(sample_per_category(&qs, Some(50)).unwrap(), qs);
    assert!(sample_per_category(&qs, Some(0)).is_err());
}

// ---------------------------------------------------------------------------------------
// Metrics

/// A turn of `n` tokens (`first` in the first step), the given times and passes.
fn turn(n: usize, first: usize, decode_s: f64, wall_s: f64, passes: usize) -> TurnRecord {
    TurnRecord {
        tokens: (0..n as u32).collect(),
        first_step_tokens: first,
        decode_seconds: decode_s,
        wall_seconds: wall_s,
        prefill_seconds: wall_s - decode_s,
        target_passes: passes,
        ..Default::default()
    }
}

fn record(method: &str, id: &str, cat: &str, turns: Vec<TurnRecord>) -> QuestionRecord {
    QuestionRecord {
        method: method.into(),
        question_id: id.into(),
        category: cat.into(),
        group: task_group(cat),
        turns,
    }
}

fn hand_records() -> Vec<QuestionRecord> {
    let mut sps1 = turn(11, 1, 2.0, 4.0, 4);
    sps1.drafted = 12;
    sps1.accepted = 6;
    sps1.drafter_passes = 12;
    let mut sps2 = turn(9, 1, 2.0, 3.0, 3);
    sps2.drafted = 6;
    sps2.accepted = 3;
    sps2.drafter_passes = 6;
    let mut sps3 = turn(5, 1, 1.0, 2.0, 2);
    sps3.drafted = 6;
    sps3.accepted = 3;
    sps3.drafter_passes = 6;
    vec![
        // Question 1 (MT-bench, two turns): plain decodes 10 + 8 tokens after the first step
        // in 5 + 4 s → 2.0 tok/s.
        record(
            "plain",
            "1",
            "writing",
            vec![turn(11, 1, 5.0, 6.0, 11), turn(9, 1, 4.0, 5.0, 9)],
        ),
        // Question 2 (qa): 4 tokens in 4 s → 1.0 tok/s.
        record("plain", "2", "qa", vec![turn(5, 1, 4.0, 5.0, 5)]),
        // sps: question 1: 18 tokens in 4 s → 4.5 tok/s; question 2: 4 in 1 s → 4.0 tok/s.
        record("sps", "1", "writing", vec![sps1, sps2]),
        record("sps", "2", "qa", vec![sps3]),
    ]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn metrics_follow_spec_bench_arithmetic() {
    let recs = hand_records();
    let methods = vec!["plain".to_string(), "sps".to_string()];
    let groups = vec!["mt_bench".to_string(), "qa".to_string()];
    let s = tandem_bench::summarize(&recs, &methods, &groups);
    let (plain, sps) = (&s[0], &s[1]);

    // Mean of per-question speeds, not pooled tokens over pooled time.
    assert!(close(plain.overall.tokens_per_s, (2.0 + 1.0) / 2.0));
    assert!(close(sps.overall.tokens_per_s, (4.5 + 4.0) / 2.0));
    assert!(close(sps.overall.speedup.unwrap(), 4.25 / 1.5));
    assert!(close(plain.overall.speedup.unwrap(), 1.0));
    // Per group.
    assert!(close(
        sps.group("mt_bench").unwrap().speedup.unwrap(),
        4.5 / 2.0
    ));
    assert!(close(sps.group("qa").unwrap().speedup.unwrap(), 4.0 / 1.0));
    // End to end: every token over the whole generation time.
    // plain: q1 20 tokens / 11 s, q2 5 / 5; sps: q1 20 / 7, q2 5 / 2.
    let pw = (20.0 / 11.0 + 1.0) / 2.0;
    let sw = (20.0 / 7.0 + 2.5) / 2.0;
    assert!(close(plain.overall.wall_tokens_per_s, pw));
    assert!(close(sps.overall.wall_speedup.unwrap(), sw / pw));
    // τ pools all steps: 25 tokens over 9 target passes; plain is exactly 1.
    assert!(close(sps.overall.tau, 25.0 / 9.0));
    assert!(close(plain.overall.tau, 1.0));
    assert!(close(sps.group("qa").unwrap().tau, 2.5));
    // Acceptance = accepted ÷ drafted; none for plain decoding.
    assert!(close(sps.overall.acceptance_rate.unwrap(), 12.0 / 24.0));
    assert_eq!(plain.overall.acceptance_rate, None);
    // Sums.
    let o = &sps.overall;
    assert_eq!((o.questions, o.turns, o.new_tokens), (2, 3, 25));
    assert_eq!((o.target_passes, o.drafter_passes), (9, 24));
    assert_eq!((o.drafted, o.accepted), (24, 12));
    assert!(close(o.wall_seconds, 9.0) && close(o.decode_seconds, 5.0));
    assert!(close(o.prefill_seconds, 4.0));
}

#[test]
fn drafter_share_is_decode_phase_drafting_over_decode_time() {
    let mut a = turn(10, 2, 4.0, 5.0, 4);
    // The first step holds the prefill: its drafting does not count.
    a.step_drafter_seconds = vec![Some(9.0), Some(0.5), Some(1.0), Some(0.5)];
    let mut b = turn(6, 1, 2.0, 3.0, 3);
    b.step_drafter_seconds = vec![Some(0.0), Some(0.5), Some(0.5)];
    let rec = record("sps", "1", "qa", vec![a.clone(), b]);
    let m = metrics(&[&rec]);
    assert!(close(m.drafter_share.unwrap(), 3.0 / 6.0));
    // One step that could not be timed: no share rather than a wrong one.
    a.step_drafter_seconds[2] = None;
    let rec = record("sps", "1", "qa", vec![a]);
    assert_eq!(metrics(&[&rec]).drafter_share, None);
}

#[test]
fn metrics_without_a_baseline_or_time_have_no_speedup() {
    let recs = hand_records();
    let only_sps: Vec<_> = recs.iter().filter(|r| r.method == "sps").cloned().collect();
    let s = tandem_bench::summarize(&only_sps, &["sps".to_string()], &[]);
    assert_eq!(s[0].overall.speedup, None);
    // A question whose every turn ended at its first step has no decode-phase speed and
    // is left out of the mean instead of counting as 0 tok/s.
    let r = record("plain", "9", "qa", vec![turn(1, 1, 0.0, 1.0, 1)]);
    assert_eq!(r.decode_speed(), None);
    let m = metrics(&[&r, &recs[1]]);
    assert!(close(m.tokens_per_s, 1.0));
}

// ---------------------------------------------------------------------------------------
// Losslessness

#[test]
fn losslessness_check_catches_a_planted_mismatch() {
    let mut recs = hand_records();
    // Same tokens as plain everywhere (the hand-made turns count 0..n).
    assert_eq!(check_lossless(&recs), vec![]);

    // Plant: sps's second turn of question 1 differs at token 3.
    recs[2].turns[1].tokens[3] = 777;
    let m = check_lossless(&recs);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(
        (m[0].method.as_str(), m[0].question_id.as_str(), m[0].turn),
        ("sps", "1", 2)
    );
    assert_eq!(
        (m[0].position, m[0].plain_token, m[0].method_token),
        (3, Some(3), Some(777))
    );
    assert!(m[0].to_string().contains("question 1 turn 2"), "{}", m[0]);

    // A shorter output (early stop) is a mismatch too, at the shorter length.
    let mut recs = hand_records();
    recs[3].turns[0].tokens.truncate(2);
    let m = check_lossless(&recs);
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].position, m[0].plain_token, m[0].method_token),
        (2, Some(2), None)
    );

    // A turn the method never answered is a mismatch.
    let mut recs = hand_records();
    recs[2].turns.pop();
    let m = check_lossless(&recs);
    assert_eq!((m.len(), m[0].turn, m[0].method_len), (1, 2, 0));
}

// ---------------------------------------------------------------------------------------
// Writers

fn meta(questions: usize, turns: usize, max_new: usize) -> BenchMeta {
    let model = ModelInfo::from_bytes("tiny.gguf", b"tiny model bytes");
    BenchMeta::new(
        DeviceInfo {
            adapter: "test adapter".into(),
            backend: "vulkan".into(),
            device_type: "Cpu".into(),
            driver: "test driver".into(),
            shader_f16: true,
            subgroups: false,
        },
        model.clone(),
        Some(model),
        Settings {
            questions_file: "q.jsonl".into(),
            questions,
            question_turns: turns,
            limit_per_category: Some(1),
            max_new_tokens: max_new,
            decoding: "greedy".into(),
            adaptive: true,
            ctx: 256,
            warmup_tokens: 2,
            methods: vec![],
            draft_vocab: None,
        },
        "tandem bench -m tiny.gguf".into(),
    )
}

#[test]
fn writers_name_the_device_models_and_settings() {
    let report = BenchReport::new(meta(2, 3, 16), hand_records());
    assert!(report.is_lossless());
    let sha = &report.meta.target.sha256;
    assert_eq!(sha.len(), 64);

    let md = report.to_markdown();
    for want in [
        "test adapter (vulkan, Cpu)",
        &format!("target: tiny.gguf, sha256 {}…", &sha[..12]),
        "| Method | Multi-turn Conversation | Question Answering | #Mean Accepted Tokens | Overall |",
        "| sps | 2.25x | 4.00x | 2.78 | 2.83x |",
        "| plain | 1.00x | 1.00x | 1.00 | 1.00x |",
        "at most 16 new tokens per turn",
        "command: `tandem bench -m tiny.gguf`",
        "**yes**, all 3 turns of sps",
    ] {
        assert!(md.contains(want), "markdown lacks {want:?}:\n{md}");
    }

    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["records"].as_array().unwrap().len(), 4);
    assert_eq!(json["meta"]["device"]["adapter"], "test adapter");
    assert_eq!(json["meta"]["target"]["sha256"], sha.as_str());
    assert_eq!(json["summary"][1]["method"], "sps");
    assert_eq!(json["mismatches"].as_array().unwrap().len(), 0);

    let svg = report.to_svg().unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    for want in [
        "Multi-turn Conversation",
        "Question Answering",
        "Overall",
        "sps",
        "2.25",
        &sha[..12],
    ] {
        assert!(svg.contains(want), "SVG lacks {want:?}");
    }

    let mut recs = hand_records();
    recs[3].turns[0].tokens[1] = 9;
    let bad = BenchReport::new(meta(2, 3, 16), recs);
    assert!(!bad.is_lossless());
    let md = bad.to_markdown();
    assert!(
        md.contains("**NO**, 1 turns differ") && md.contains("sps question 2 turn 1"),
        "{md}"
    );
}

// ---------------------------------------------------------------------------------------
// End to end

/// A tiny llama model drafting for itself (None without an adapter): every draft is
/// accepted, so τ > 1 shows the mechanics and any drift between T = 1 and batched passes
/// would show as a mismatch.
fn tiny_self_drafting_engine() -> Option<(Engine, ModelInfo)> {
    let gpu = common::gpu()?;
    let bytes = tiny_model(Arch::Llama, GgmlType::Q8_0, 7).unwrap();
    let info = ModelInfo::from_bytes("tiny-llama-q8_0.gguf", &bytes);
    let file = ModelFile::from_gguf(GgufFile::from_bytes(bytes).unwrap()).unwrap();
    let mut engine = Engine::new(
        gpu,
        &file,
        EngineOptions {
            max_ctx: 256,
            max_draft: 4,
        },
    )
    .unwrap();
    engine.load_drafter(&file).unwrap();
    Some((engine, info))
}

#[test]
fn end_to_end_on_a_tiny_model_is_lossless_and_writes_every_output() {
    let Some((mut engine, info)) = tiny_self_drafting_engine() else {
        return;
    };

    let text = format!(
        "{}\n{}\n",
        q(
            81,
            "writing",
            &["the world and the world", "and the world again"]
        ),
        q(321, "qa", &["the world and the"]),
    );
    let questions = parse_questions(&text, "tiny.jsonl").unwrap();
    let methods = vec![
        BenchMethod {
            name: "plain".into(),
            method: MethodSpec::plain(),
        },
        BenchMethod {
            name: "sps".into(),
            method: spec("sps:len=4"),
        },
        BenchMethod {
            name: "lookup".into(),
            method: spec("lookup:len=4"),
        },
    ];
    let settings = RunSettings {
        max_new_tokens: 8,
        adaptive: true,
        warmup_tokens: 2,
        sampling: None,
    };
    let mut done = 0;
    let mut warmups = 0;
    let records = run_questions(&mut engine, &questions, &methods, &settings, |p| match p {
        tandem_bench::Progress::Done { .. } => done += 1,
        tandem_bench::Progress::Warmup { .. } => warmups += 1,
        _ => {}
    })
    .unwrap();
    assert_eq!((done, warmups), (6, 3));
    assert_eq!(records.len(), 6);
    for r in &records {
        let want_turns = if r.question_id == "81" { 2 } else { 1 };
        assert_eq!(r.turns.len(), want_turns, "{} {}", r.method, r.question_id);
        for t in &r.turns {
            assert!(!t.tokens.is_empty() && t.tokens.len() <= 8);
            assert!(t.wall_seconds > 0.0 && t.target_passes > 0);
            // One entry per step; the steps' tokens add up to the turn's.
            assert_eq!(t.accept_lengths.len(), t.target_passes);
            assert_eq!(t.step_seconds.len(), t.target_passes);
            assert_eq!(t.step_proposed.len(), t.target_passes);
            assert_eq!(t.step_proposed.iter().sum::<usize>(), t.drafted);
            assert_eq!(t.step_drafter_seconds.len(), t.target_passes);
            assert_eq!(t.accept_lengths.iter().sum::<usize>(), t.tokens.len());
            assert_eq!(t.first_step_tokens, t.accept_lengths[0]);
            assert!(t.step_seconds.iter().sum::<f64>() <= t.wall_seconds);
        }
    }
    // The second turn's prompt holds the first answer (so it is longer than turn 1's
    // prompt plus the new user text alone) and reuses turn 1's KV rows.
    let t2 = &records[0].turns[1];
    assert!(t2.reused_prompt_tokens > 0, "turn 2 reused no KV rows");

    let mut settings_meta = meta(2, 3, 8).settings;
    settings_meta.methods = methods.iter().map(|m| MethodInfo::of(m, true)).collect();
    let report = BenchReport::new(
        BenchMeta::new(
            DeviceInfo::of(&engine.gpu),
            info.clone(),
            Some(info),
            settings_meta,
            String::new(),
        ),
        records,
    );
    assert!(report.is_lossless(), "mismatches: {:?}", report.mismatches);
    let sps = report.summary.iter().find(|s| s.method == "sps").unwrap();
    assert!(sps.overall.tau > 1.0, "sps τ = {}", sps.overall.tau);
    assert!(sps.overall.drafter_passes > 0);
    assert!(sps.overall.speedup.is_some());
    let plain = report.summary.iter().find(|s| s.method == "plain").unwrap();
    assert_eq!(plain.overall.tau, 1.0);
    assert_eq!(plain.overall.drafter_share, Some(0.0));
    // Lookup drafts on the CPU (timed by the clock); a drafter chain is timed on the GPU
    // where the device has timestamps between passes (lavapipe has).
    let lookup = report
        .summary
        .iter()
        .find(|s| s.method == "lookup")
        .unwrap();
    let share = lookup.overall.drafter_share.unwrap();
    assert!((0.0..1.0).contains(&share), "lookup drafter share {share}");
    let timestamps =
        wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
    if engine.gpu.device.features().contains(timestamps) {
        let share = sps.overall.drafter_share.unwrap();
        assert!(share > 0.0 && share < 1.0, "sps drafter share {share}");
    } else {
        eprintln!("no timestamps inside encoders here: the sps drafter share is not timed");
    }

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench_harness_e2e");
    let _ = std::fs::remove_dir_all(&dir);
    let paths = report.write(&dir).unwrap();
    assert_eq!(paths.len(), 3);
    for p in &paths {
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 200, "{} is missing or nearly empty", p.display());
    }
    let md = std::fs::read_to_string(dir.join("specbench.md")).unwrap();
    assert!(md.contains("| lookup |") && md.contains("**yes**"), "{md}");
    eprintln!("{md}");
}

#[test]
fn sampling_runs_repeat_with_their_seed_and_are_not_compared_token_for_token() {
    let Some((mut engine, _)) = tiny_self_drafting_engine() else {
        return;
    };
    let questions = parse_questions(&q(5, "qa", &["the world and the"]), "s.jsonl").unwrap();
    let methods = vec![
        BenchMethod {
            name: "plain".into(),
            method: MethodSpec::plain(),
        },
        BenchMethod {
            name: "sps".into(),
            method: spec("sps:len=3"),
        },
    ];
    let settings = RunSettings {
        max_new_tokens: 12,
        adaptive: false,
        warmup_tokens: 0,
        sampling: Some(SampleParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            seed: 11,
        }),
    };
    let run = |engine: &mut Engine| {
        run_questions(engine, &questions, &methods, &settings, |_| {})
            .unwrap()
            .into_iter()
            .map(|r| r.turns[0].tokens.clone())
            .collect::<Vec<_>>()
    };
    let first = run(&mut engine);
    assert_eq!(
        first,
        run(&mut engine),
        "the same seed drew different tokens"
    );
    let mut records = run_questions(&mut engine, &questions, &methods, &settings, |_| {}).unwrap();
    // Under sampling, a method whose draws differ from plain decoding's is not a mismatch.
    records[1].turns[0].tokens[0] ^= 1;
    let mut m = meta(1, 1, 12);
    m.settings.decoding = "sampling (temperature 1.5, top-k 0, top-p 1, seed 11)".into();
    let report = BenchReport::new(m, records);
    assert!(report.mismatches.is_empty());
    let md = report.to_markdown();
    assert!(md.contains("not checked token for token"), "{md}");
    assert!(md.contains("sampling (temperature 1.5"), "{md}");
}

fn spec(text: &str) -> MethodSpec {
    MethodSpec::parse(text).unwrap()
}
