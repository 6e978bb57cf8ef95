//! A new user's first commands (issue 12): every command the README names is one
//! `tandem --help` lists (with the flags the README gives it), `tandem run -p …` without `-m`
//! answers with the default model and no error-looking lines, and `tandem fetch` of a cached
//! model or a wrong name says what it did. Runs the built binary.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .expect("the tandem binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The README's code: fenced blocks and inline `code` spans.
fn readme_code() -> Vec<String> {
    let readme =
        std::fs::read_to_string(common::repo_root().join("README.md")).expect("README.md readable");
    let mut code = Vec::new();
    let mut fenced = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            code.push(line.to_string());
        } else {
            // Inline spans: the text between pairs of backticks.
            code.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    code
}

/// `(subcommand, flags)` for every `tandem CMD …` / `cargo run … -- CMD …` in the README.
fn readme_commands() -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for code in readme_code() {
        let code = code.replace("\\|", "|");
        let rest = if let Some(i) = code.find("cargo run") {
            code[i..].split_once(" -- ").map(|(_, r)| r.to_string())
        } else {
            code.strip_prefix("tandem ").map(str::to_string)
        };
        let Some(rest) = rest else { continue };
        let mut words = rest.split_whitespace();
        let Some(cmd) = words.next() else { continue };
        if !cmd.chars().all(|c| c.is_ascii_lowercase() || c == '-') || cmd.starts_with('-') {
            continue;
        }
        let flags = words
            .take_while(|w| !w.starts_with('#'))
            .filter_map(|w| {
                let w = w.trim_start_matches(['[', '(']);
                let flag = w.split(['=', ']', ')', ',']).next()?;
                (flag.starts_with("--") && flag.len() > 2).then(|| flag.to_string())
            })
            .collect();
        out.push((cmd.to_string(), flags));
    }
    out
}

#[test]
fn every_command_the_readme_names_is_in_help() {
    let help = text(&tandem(&["--help"]).stdout);
    let listed: BTreeSet<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(listed.contains("run") && listed.contains("fetch"), "{help}");
    let named = readme_commands();
    assert!(
        named.len() >= 10,
        "the README names its commands in code: {named:?}"
    );
    for (cmd, flags) in named {
        assert!(
            listed.contains(&cmd),
            "README names `tandem {cmd}`, which `tandem --help` does not list:\n{help}"
        );
        let sub = text(&tandem(&[&cmd, "--help"]).stdout);
        for f in flags {
            assert!(
                sub.contains(&format!("{f} ")) || sub.contains(&format!("{f}\n")),
                "README gives `tandem {cmd}` the flag {f}, which `tandem {cmd} --help` does not list:\n{sub}"
            );
        }
    }
}

#[test]
fn fetch_of_an_unknown_model_is_a_clear_error() {
    let o = tandem(&["fetch", "llama-70b"]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.starts_with("error: ") && err.contains("'llama-70b'") && err.contains("smollm2"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn fetch_of_a_cached_model_checks_it_and_keeps_it() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let o = tandem(&["fetch", "smollm2"]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("is cached at"), "{err}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn run_without_a_model_answers_with_the_default_quietly() {
    if common::gpu().is_none() || common::model("smollm2").is_none() {
        return;
    }
    let o = tandem(&["run", "-p", "The capital of France is", "-n", "4"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    eprintln!("{out}{err}");
    assert!(o.status.success(), "{err}");
    assert!(out.contains("Paris"), "{out}");
    for line in err.lines() {
        let l = line.to_lowercase();
        assert!(
            !l.contains("error") && !l.contains("warn") && !l.contains("xdg_runtime_dir"),
            "an error-looking line on stderr: {line}"
        );
    }
    assert!(
        err.contains("SmolLM2-135M-Instruct.Q4_1.gguf on ") && err.contains("warm-up"),
        "load and warm-up reported apart: {err}"
    );
    let stats = err
        .lines()
        .find(|l| l.contains(" prompt tokens ("))
        .unwrap_or_else(|| panic!("a stats line: {err}"));
    assert!(
        stats.contains("method plain") && stats.contains("adapter "),
        "{stats}"
    );
}
