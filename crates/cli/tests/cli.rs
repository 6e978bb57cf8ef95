//! The `tandem` binary as a user runs it: chat over a pipe, bench-decode, and bad input
//! on the command line (a clear message and a non-zero exit, never a panic).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use tandem::model::config::Arch;
use tandem::model::gguf::GgufFile;
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::model::writer::tiny_model;

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let p = std::env::temp_dir().join(format!("tandem-cli-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        TempFile(p)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tiny_bytes() -> Vec<u8> {
    tiny_model(Arch::Llama, GgmlType::Q8_0, 11).unwrap()
}

fn tandem(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env_remove("TANDEM_BACKEND")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tandem binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `tandem ARGS`, which must succeed; its stdout.
fn succeeds(args: &[&str]) -> String {
    let o = tandem(args, "");
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    eprintln!("{out}{err}");
    assert!(o.status.success(), "{err}");
    out
}

/// The cells of the Markdown table row of `out` that contains `needle`.
fn row_cells<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle:?}:\n{out}"))
        .split('|')
        .map(str::trim)
        .collect()
}

/// (prompt tokens, reused tokens) of every stats line `[N prompt tokens (M reused), …]`.
fn stats_lines(stderr: &str) -> Vec<(usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once('[')?.1;
            let (n, rest) = rest.split_once(" prompt tokens (")?;
            let (m, _) = rest.split_once(" reused)")?;
            Some((n.parse().ok()?, m.parse().ok()?))
        })
        .collect()
}

#[test]
fn chat_keeps_history_reuses_the_cache_and_resets() {
    if common::gpu().is_none() {
        return;
    }
    let model = TempFile::new("chat.gguf", &tiny_bytes());
    let args = ["chat", "-m", model.arg(), "-n", "5"];

    // One turn, ended by EOF.
    let one = tandem(&args, "Hello world\n");
    let (out1, err1) = (text(&one.stdout), text(&one.stderr));
    eprintln!("--- one turn\n{err1}");
    assert!(one.status.success(), "{err1}");
    let s1 = stats_lines(&err1);
    assert_eq!(s1.len(), 1, "{err1}");
    assert_eq!(s1[0].1, 0, "the first turn has nothing to reuse");
    assert!(!out1.trim().is_empty(), "no answer streamed");

    // Two turns, /reset, the first question again, /exit, and a line that must not run.
    let many = tandem(
        &args,
        "Hello world\nand the world\n/reset\nHello world\n/exit\nnot asked\n",
    );
    let (out, err) = (text(&many.stdout), text(&many.stderr));
    eprintln!("--- three turns\n{err}");
    assert!(many.status.success(), "{err}");
    let s = stats_lines(&err);
    assert_eq!(s.len(), 3, "three answers before /exit: {err}");
    // Turn 2's prompt is turn 1's prompt + answer + the new message. The cache holds turn
    // 1's prompt and its answer but the last token (never fed back): all of it is reused
    // when the answer's text tokenizes back to the same tokens, as it does here.
    let (p1, p2) = (s[0].0, s[1].0);
    assert!(p2 > p1 + 5, "turn 2's prompt holds turn 1: {s:?}");
    assert_eq!(s[1].1, p1 + 5 - 1, "turn 2 reuses all of turn 1: {s:?}");
    assert!(err.contains("[history cleared]"), "{err}");
    // After /reset: nothing reused, and the same prompt as the first turn, so (greedy) the
    // same answer as the one-turn session.
    assert_eq!(s[2], (p1, 0), "{s:?}");
    assert!(
        out.starts_with(&out1),
        "first answer differs:\n{out1:?}\n{out:?}"
    );
    assert!(
        out.ends_with(&out1),
        "answer after /reset differs:\n{out1:?}\n{out:?}"
    );
}

#[test]
fn bench_decode_prints_a_row_per_model() {
    if common::gpu().is_none() {
        return;
    }
    let bytes = tiny_bytes();
    let model = TempFile::new("bench.gguf", &bytes);
    let out = succeeds(&[
        "bench-decode",
        model.arg(),
        "--prompt-tokens",
        "20",
        "-n",
        "4",
    ]);
    assert!(out.contains("adapter: ") && out.contains("command: `tandem bench-decode"));
    let cells = row_cells(&out, "bench.gguf (");
    let row = cells.join(" | ");
    // | model (sha) | MB | dispatches | prompt | prefill | decoded | decode | ms | GB/s |
    assert_eq!(cells.len(), 11, "{row}");
    // The tiny model ties its output head to the embedding: every tensor is read per token.
    let file = ModelFile::from_gguf(GgufFile::from_bytes(bytes).unwrap()).unwrap();
    let total: u64 = file.tensor_list().iter().map(|t| t.3).sum();
    assert_eq!(cells[2], format!("{:.1} MB", total as f64 / 1e6), "{row}");
    // Embedding 1 + 2 layers × (norm, QKV, RoPE, attention, out, norm, gate|up, SiLU, down)
    // + final norm, head, argmax (the cpu layout: no norm runs in a matmul's prologue).
    assert_eq!(cells[3], "22", "{row}");
    assert_eq!(cells[4], "20", "{row}");
    assert_eq!(
        cells[6], "3",
        "4 tokens: 1 from the prefill step, 3 decoded: {row}"
    );
    for c in [5, 7, 8, 9] {
        let v: f64 = cells[c].parse().unwrap();
        assert!(v.is_finite() && v > 0.0, "column {c} of {row}");
    }
}

/// `header-only` writes the header; `bench-decode --synthetic-weights` measures it (the same
/// row as the real file: weights read, dispatches), and without the flag it is a clear error.
#[test]
fn bench_decode_runs_a_header_with_synthetic_weights() {
    let bytes = tiny_bytes();
    let model = TempFile::new("whole.gguf", &bytes);
    let header = TempFile::new("header.gguf", b"");
    let out = succeeds(&["header-only", model.arg(), header.arg()]);
    let written = std::fs::metadata(&header.0).unwrap().len();
    assert!(written > 0 && written < bytes.len() as u64 / 4, "{written}");
    assert!(
        out.contains(&format!("{written} of {} bytes", bytes.len())),
        "{out}"
    );
    if common::gpu().is_none() {
        return;
    }
    let plain = tandem(
        &[
            "bench-decode",
            header.arg(),
            "--prompt-tokens",
            "8",
            "-n",
            "4",
        ],
        "",
    );
    let err = text(&plain.stderr);
    assert!(!plain.status.success());
    assert!(
        err.contains("--synthetic-weights") && !err.contains("panicked"),
        "{err}"
    );
    let out = succeeds(&[
        "bench-decode",
        header.arg(),
        "--synthetic-weights",
        "--prompt-tokens",
        "8",
        "-n",
        "4",
    ]);
    let cells = row_cells(&out, "header.gguf, synthetic weights (seed 0) (");
    let row = cells.join(" | ");
    let file = ModelFile::from_gguf(GgufFile::from_bytes(bytes).unwrap()).unwrap();
    let total: u64 = file.tensor_list().iter().map(|t| t.3).sum();
    assert_eq!(cells[2], format!("{:.1} MB", total as f64 / 1e6), "{row}");
    assert_eq!(cells[3], "22", "{row}");
    assert_eq!(
        cells[6], "3",
        "exactly 4 tokens, end-of-sequence or not: {row}"
    );
}

/// `bench-cost` writes a cost table; `bench --project` replays records against it: plain
/// projects to 1.00×, a method whose steps verify more rows for more tokens projects to its
/// own figure beside the measured one; a file that is not a cost table is a clear error.
#[test]
fn bench_cost_writes_a_table_that_bench_project_replays_records_against() {
    if common::gpu().is_none() {
        return;
    }
    let model = TempFile::new("cost.gguf", &tiny_bytes());
    let costs = TempFile::new("costs.json", b"");
    succeeds(&[
        "bench-cost",
        "-m",
        model.arg(),
        "--context-tokens",
        "8",
        "--max-t",
        "4",
        "--reps",
        "1",
        "--out",
        costs.arg(),
    ]);
    let table =
        tandem_bench::cost::CostTable::from_json(&std::fs::read_to_string(&costs.0).unwrap())
            .unwrap();
    let ts: Vec<usize> = table.target_steps.iter().map(|s| s.t).collect();
    assert_eq!(ts, [1, 2, 4]);
    assert_eq!(table.target_dispatches, 22);
    assert!(table.dispatch_us > 0.0 && table.drafter_pass_seconds.is_none());

    use tandem_bench::{QuestionRecord, TurnRecord};
    let record = |method: &str, proposed: Vec<usize>, lengths: Vec<usize>| QuestionRecord {
        method: method.into(),
        question_id: "q1".into(),
        category: "qa".into(),
        group: "qa".into(),
        turns: vec![TurnRecord {
            tokens: vec![1; lengths.iter().sum()],
            first_step_tokens: lengths[0],
            decode_seconds: 1.0,
            wall_seconds: 1.0,
            target_passes: lengths.len(),
            step_drafter_seconds: vec![Some(0.0); lengths.len()],
            accept_lengths: lengths,
            step_proposed: proposed,
            ..Default::default()
        }],
    };
    let lines: Vec<String> = [
        record("plain", vec![0; 9], vec![1; 9]),
        record("lookup", vec![0, 3, 3, 3], vec![1, 4, 2, 2]),
    ]
    .iter()
    .map(|r| serde_json::to_string(r).unwrap())
    .collect();
    let records = TempFile::new("records.jsonl", lines.join("\n").as_bytes());
    let out = succeeds(&["bench", "--project", costs.arg(), records.arg()]);
    let row = |m: &str| row_cells(&out, &format!("| {m} |")).join(" | ");
    assert!(row("plain").contains("1.00× (1.00×)"), "{out}");
    // Measured: 8 tokens in 1 s each way, 1.00×; projected: 8 tokens in 8 passes of T = 1
    // against 8 tokens in 3 passes of T = 4.
    let want = 8.0 * table.target_step(1) / (3.0 * table.target_step(4));
    assert!(
        row("lookup").contains(&format!("{want:.2}× (1.00×)")),
        "{out}"
    );

    let o = tandem(&["bench", "--project", records.arg(), records.arg()], "");
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("not a tandem cost table") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn an_unknown_backend_is_a_clear_error() {
    let model = TempFile::new("backend.gguf", &tiny_bytes());
    let o = tandem(
        &["run", "--backend", "glide", "-m", model.arg(), "-p", "hi"],
        "",
    );
    let err = text(&o.stderr);
    eprintln!("{err}");
    assert!(!o.status.success());
    assert!(
        err.contains("unknown backend 'glide'") && err.contains("vulkan"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_truncated_model_file_is_a_clear_error() {
    let bytes = tiny_bytes();
    // Cut in the metadata, and cut in the tensor data.
    for (what, len) in [("header", 100), ("data", bytes.len() - 1000)] {
        let model = TempFile::new(&format!("truncated-{what}.gguf"), &bytes[..len]);
        let o = tandem(&["run", "-m", model.arg(), "-p", "hi", "-n", "2"], "");
        let err = text(&o.stderr);
        eprintln!("{what}: {err}");
        assert!(!o.status.success(), "{what}");
        assert!(
            err.starts_with("error: ") && err.contains(model.arg()),
            "{what}: the message names the file: {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

/// The llama.cpp fixture models (qwen3, llama3 with RoPE frequency factors) are runnable, and
/// `tandem run` on the qwen3 one prints llama.cpp's first 8 greedy tokens.
#[test]
fn inspect_says_qwen3_and_llama3_can_run_and_run_follows_the_fixture() {
    for (file, extra) in [
        ("tiny-qwen3.gguf", "per-head q/k RMSNorm"),
        ("tiny-llama3.gguf", "RoPE frequency factors"),
    ] {
        let path = common::fixture(file);
        let out = tandem(&["inspect", "-m", path.to_str().unwrap()], "");
        let s = text(&out.stdout) + &text(&out.stderr);
        assert!(out.status.success(), "{file}: {s}");
        assert!(!s.contains("cannot run"), "{file}: {s}");
        assert!(s.contains(extra), "{file}: {s}");
    }
    if common::gpu().is_none() {
        return;
    }
    let rec = &common::greedy_fixtures("tiny-qwen3")[0];
    assert_eq!(rec.prompt, "The capital of France is");
    let path = common::fixture("tiny-qwen3.gguf");
    let out = tandem(
        &[
            "run",
            "-m",
            path.to_str().unwrap(),
            "-p",
            &rec.prompt,
            "-n",
            "8",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let printed = printed.trim_end_matches('\n');
    assert!(!printed.is_empty());
    let fixture: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(common::fixture("greedy-tiny-qwen3.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let want = fixture["text"].as_str().unwrap();
    assert!(
        want.starts_with(printed),
        "tandem run printed {printed:?}; llama.cpp's continuation is {want:?}"
    );
    // 8 tokens of this text are longer than the first 2 words.
    assert!(printed.split_whitespace().count() >= 4, "{printed:?}");
}

/// Gemma 3 270M: `inspect` describes the gemma3 parts, `run` on a raw prompt adds the BOS the
/// model asks for (`add_bos_token`) and prints llama.cpp's greedy continuation, and `chat` on
/// this base model (no chat template, no ChatML tokens) stops with a clear message.
#[test]
fn gemma3_inspect_run_follows_the_fixture_and_chat_says_there_is_no_template() {
    let Some(path) = common::model("gemma-3-270m") else {
        return;
    };
    let path = path.to_str().unwrap();
    let out = tandem(&["inspect", "-m", path], "");
    let s = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{s}");
    for want in [
        "arch:     gemma3",
        "head_dim 256",
        "GeGLU",
        "post-attention and post-FFN RMSNorm",
        "window:   512 tokens",
        "global layers [5, 11, 17]",
    ] {
        assert!(s.contains(want), "inspect lacks {want:?}: {s}");
    }
    if common::gpu().is_none() {
        return;
    }
    let rec = &common::greedy_fixtures("gemma3-270m")[0];
    assert_eq!(rec.prompt, "The capital of France is");
    let out = tandem(&["run", "-m", path, "-p", &rec.prompt, "-n", "8"], "");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("[{} prompt tokens", rec.prompt_ids.len())),
        "the prompt with its BOS is {} tokens: {err}",
        rec.prompt_ids.len()
    );
    let printed = text(&out.stdout);
    let printed = printed.trim_end_matches('\n');
    let want: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(common::fixture("greedy-gemma3-270m.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let want = want["text"].as_str().unwrap();
    assert!(
        printed.split_whitespace().count() >= 5 && want.starts_with(printed),
        "tandem run printed {printed:?}; llama.cpp's continuation is {want:?}"
    );

    let out = tandem(&["chat", "-m", path], "hello\n");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no chat template"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `run --json-schema examples/person.json` prints JSON of the schema, the same with every
/// method; `--regex` and `--grammar` constrain the same way; bad constraints are clear errors.
#[test]
fn run_with_a_json_schema_prints_valid_json_with_every_method() {
    let model = TempFile::new("constrained.gguf", &tiny_bytes());
    let schema = common::repo_root().join("examples/person.json");
    let schema = schema.to_str().unwrap();
    let last_json = |o: &Output| -> serde_json::Value {
        let out = text(&o.stdout);
        assert!(o.status.success(), "{}", text(&o.stderr));
        serde_json::from_str(out.trim().lines().last().unwrap_or("")).unwrap()
    };
    let mut tokens = None;
    for method in ["plain", "lookup", "suffix", "hybrid"] {
        let o = tandem(
            &[
                "run",
                "-m",
                model.arg(),
                "-p",
                "the world",
                "-n",
                "200",
                "--method",
                method,
                "--json-schema",
                schema,
                "--json",
            ],
            "",
        );
        let v = last_json(&o);
        assert_eq!(v["stop_reason"], "eos", "{method}: {v}");
        let person: serde_json::Value = serde_json::from_str(v["text"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{method}: {e}: {v}"));
        assert!(
            person["name"].is_string() && person["city"].is_string(),
            "{person}"
        );
        assert!(person["age"].as_u64().is_some_and(|a| a <= 130), "{person}");
        assert!(
            v["stats"]["forced"].as_u64().unwrap() > 0,
            "{method}: no forced draft: {v}"
        );
        match &tokens {
            None => tokens = Some(v["tokens"].clone()),
            Some(t) => assert_eq!(&v["tokens"], t, "{method} differs from plain"),
        }
    }
    let grammar = TempFile::new("yes-no.lark", b"start: (\"yes\" | \"no\") \"!\"\n");
    for args in [["--regex", "(yes|no)!"], ["--grammar", grammar.arg()]] {
        let mut a = vec![
            "run",
            "-m",
            model.arg(),
            "-p",
            "the world",
            "-n",
            "8",
            "--json",
        ];
        a.extend(args);
        let v = last_json(&tandem(&a, ""));
        assert!(
            ["yes!", "no!"].contains(&v["text"].as_str().unwrap()),
            "{v}"
        );
    }
    for (args, want) in [
        (vec!["--regex", "(unclosed"], "invalid regex"),
        (
            vec!["--json-schema", "/nonexistent/schema.json"],
            "/nonexistent/schema.json",
        ),
        (vec!["--json-schema", grammar.arg()], "not JSON"),
        (vec!["--regex", "a", "--json-object"], "cannot be used with"),
    ] {
        let mut a = vec!["run", "-m", model.arg(), "-p", "hi", "-n", "4"];
        a.extend(args.iter().copied());
        let o = tandem(&a, "");
        let err = text(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `run --contrastive ALPHA,BETA -d DRAFTER`: the same tokens with every method, other
/// tokens than without it; bad values and a missing drafter are clear errors.
#[test]
fn run_with_contrastive_decoding() {
    let target = TempFile::new("cd-target.gguf", &tiny_bytes());
    let drafter = TempFile::new(
        "cd-drafter.gguf",
        &tiny_model(Arch::Llama, GgmlType::Q8_0, 12).unwrap(),
    );
    let tokens = |extra: &[&str]| -> serde_json::Value {
        let mut a = vec![
            "run",
            "-m",
            target.arg(),
            "-p",
            "the world",
            "-n",
            "16",
            "--json",
        ];
        a.extend_from_slice(extra);
        let o = tandem(&a, "");
        assert!(o.status.success(), "{extra:?}: {}", text(&o.stderr));
        let out = text(&o.stdout);
        let v: serde_json::Value =
            serde_json::from_str(out.trim().lines().last().unwrap_or("")).unwrap();
        v["tokens"].clone()
    };
    let cd = ["-d", drafter.arg(), "--contrastive", "0.1,0.5"];
    let plain = tokens(&[&cd[..], &["--method", "plain"]].concat());
    for m in ["sps", "lookup", "tree:nodes=6"] {
        assert_eq!(tokens(&[&cd[..], &["--method", m]].concat()), plain, "{m}");
    }
    assert_ne!(
        tokens(&["--method", "plain"]),
        plain,
        "--contrastive changed nothing"
    );
    for (args, want) in [
        (vec!["--contrastive", "0.1,0.5"], "drafter model"),
        (vec!["-d", drafter.arg(), "--contrastive", "2,0.5"], "alpha"),
        (
            vec!["-d", drafter.arg(), "--contrastive", "0.5"],
            "ALPHA,BETA",
        ),
    ] {
        let mut a = vec!["run", "-m", target.arg(), "-p", "hi", "-n", "2"];
        a.extend(args.iter().copied());
        let o = tandem(&a, "");
        let err = text(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `tandem bench` checks its sampling options before it loads anything.
#[test]
fn cli_rejects_bad_sampling_options_with_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "bench",
            "-m",
            "smollm2",
            "--temperature",
            "0.8",
            "--top-p",
            "1.5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("top_p must be in [0, 1], got 1.5"), "{err}");
}
