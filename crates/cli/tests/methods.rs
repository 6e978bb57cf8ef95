//! The method registry is the one list every face reads: the CLI's `--help` and `tandem
//! methods`, `tandem bench --methods`, the wasm bindings, the npm package's TypeScript types
//! and the demo page must name no method the registry lacks (and the types and help name
//! every one). Also the two bugs the registry fixed, through the binary: `bench --methods
//! plain,tree -d X` loads the drafter, and `run -d X --tree 16` drafts trees of 16 nodes
//! (not capped at the chain length).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use tandem::engine::{MethodSpec, METHODS};
use tandem::model::config::Arch;
use tandem::model::quant::GgmlType;
use tandem::model::writer::tiny_model;

fn registry() -> BTreeSet<String> {
    METHODS.iter().map(|m| m.name.to_string()).collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(common::repo_root().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The quoted words of `text` (between `quote` characters).
fn quoted(text: &str, quote: char) -> Vec<String> {
    text.split(quote)
        .skip(1)
        .step_by(2)
        .map(|s| s.to_string())
        .collect()
}

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env_remove("TANDEM_BACKEND")
        .output()
        .expect("the tandem binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_typescript_types_name_exactly_the_registry() {
    let dts = read("web/src/index.d.ts");
    let line = dts
        .lines()
        .find(|l| l.starts_with("export type MethodName ="))
        .expect("index.d.ts declares MethodName");
    let names: BTreeSet<String> = quoted(line, '\'').into_iter().collect();
    assert_eq!(names, registry(), "index.d.ts MethodName vs the registry");
}

#[test]
fn the_demo_page_and_the_package_name_only_registry_methods() {
    let html = read("web/demo/index.html");
    let select = html
        .split("<select id=\"method\">")
        .nth(1)
        .and_then(|s| s.split("</select>").next())
        .expect("the demo page has a method select");
    let reg = registry();
    for v in quoted(select, '"') {
        assert!(reg.contains(&v), "the demo page offers method '{v}'");
    }
    let js = read("web/src/index.js");
    let line = js
        .lines()
        .find(|l| l.contains("engine.defaultMethod ="))
        .expect("index.js sets defaultMethod");
    for v in quoted(line, '\'') {
        assert!(reg.contains(&v), "index.js defaults to method '{v}'");
    }
}

#[test]
fn the_rust_faces_name_only_registry_methods() {
    let reg = registry();
    for file in [
        "crates/web/src/lib.rs",
        "crates/cli/src/cli.rs",
        "crates/cli/src/bench.rs",
        "crates/cli/src/chat.rs",
        "crates/cli/src/serve.rs",
        "crates/server/src/lib.rs",
        "crates/bench/src/run.rs",
    ] {
        let src = read(file);
        for call in ["MethodSpec::named(\"", "MethodSpec::parse(\""] {
            for piece in src.split(call).skip(1) {
                let spec = piece.split('"').next().unwrap_or_default();
                let name = spec.split(':').next().unwrap_or_default();
                assert!(reg.contains(name), "{file} names method '{spec}'");
                MethodSpec::parse(spec).unwrap_or_else(|e| panic!("{file}: {e}"));
            }
        }
    }
}

/// The method names a `--help` text's "Methods" section lists (first word of its unindented
/// lines).
fn help_methods(help: &str) -> BTreeSet<String> {
    help.split("Methods (--method SPEC")
        .nth(1)
        .unwrap_or_else(|| panic!("no Methods section in:\n{help}"))
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn help_and_the_methods_command_list_the_registry() {
    for args in [&["--help"][..], &["run", "--help"], &["bench", "--help"]] {
        let o = tandem(args);
        assert!(o.status.success(), "{args:?}");
        assert_eq!(help_methods(&text(&o.stdout)), registry(), "{args:?}");
    }
    let o = tandem(&["methods"]);
    assert!(o.status.success());
    let listed: BTreeSet<String> = text(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(listed, registry());
    // An unknown method is a clear error naming the known ones, before any model loads.
    let o = tandem(&[
        "run",
        "-m",
        "no-such-model",
        "-p",
        "x",
        "--method",
        "medusa",
    ]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("unknown method 'medusa'") && err.contains("plain, lookup, sps, tree"),
        "{err}"
    );
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tandem-methods-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn bench_loads_the_drafter_for_the_tree_method() {
    if common::gpu().is_none() {
        return;
    }
    let dir = TempDir::new("bench");
    let model = dir.file(
        "tiny.gguf",
        &tiny_model(Arch::Llama, GgmlType::Q8_0, 11).unwrap(),
    );
    let questions = dir.file(
        "q.jsonl",
        br#"{"question_id": 1, "category": "qa", "turns": ["the world and the"]}
"#,
    );
    let out = dir.0.join("out");
    let o = tandem(&[
        "bench",
        "-m",
        &model,
        "-d",
        &model,
        "--methods",
        "plain,tree",
        "--questions",
        &questions,
        "--max-new-tokens",
        "6",
        "--warmup-tokens",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    let md = std::fs::read_to_string(out.join("specbench.md")).unwrap();
    assert!(md.contains("tree"), "{md}");
}

#[test]
fn run_with_tree_drafts_more_than_the_chain_length() {
    if common::gpu().is_none() {
        return;
    }
    let dir = TempDir::new("run");
    let model = dir.file(
        "tiny.gguf",
        &tiny_model(Arch::Llama, GgmlType::Q8_0, 11).unwrap(),
    );
    let o = tandem(&[
        "run",
        "-m",
        &model,
        "-d",
        &model,
        "--tree",
        "16",
        "--no-adaptive",
        "-n",
        "40",
        "-p",
        "the world and the",
        "--json",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap();
    let drafted = json["stats"]["drafted"].as_u64().unwrap();
    let passes = json["stats"]["target_passes"].as_u64().unwrap();
    // --draft-len's default (6) used to cap every tree; 16-node trees average well above it.
    assert!(
        drafted > 6 * passes,
        "{drafted} drafted in {passes} passes: {out}"
    );
}
