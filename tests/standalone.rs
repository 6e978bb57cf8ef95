//! The repository stands alone: no source, script, test or document of the project names the
//! workspace folder beside the checkout, so a plain clone builds, runs and tests by itself.
//! (The fixtures and questions the tests use live in `tests/fixtures/` and
//! `benchmarks/specbench/`.)

use std::path::{Path, PathBuf};

/// Every file of the project below `dir`, skipping build outputs, dependencies and git.
fn project_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() {
            let skip = [
                ".git",
                ".gl",
                ".whl",
                "target",
                "node_modules",
                "pkg",
                "test-results",
                "bench-results",
            ];
            if !skip.contains(&name.as_str()) && !name.starts_with("target") {
                project_files(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

#[test]
fn no_file_refers_to_the_workspace_folder_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Spelled in two pieces so this file does not match itself.
    let needle = format!("..{}shared", '/');
    let mut files = Vec::new();
    project_files(root, &mut files);
    assert!(
        files.len() > 50,
        "walked only {} files under {}",
        files.len(),
        root.display()
    );
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| String::from_utf8_lossy(&b).contains(&needle))
                .unwrap_or(false)
        })
        .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "these files name {needle} (a folder a plain clone does not have); copy what they \
         need into the repository: {offenders:?}"
    );
}

#[test]
fn the_fixtures_the_tests_read_are_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        "tests/fixtures/README.md",
        "tests/fixtures/greedy-smollm2-135m.jsonl",
        "tests/fixtures/tokenize-smollm2-135m.jsonl",
        "benchmarks/specbench/questions.jsonl",
        "benchmarks/specbench/README.md",
        "docs/ARCHITECTURE.md",
    ] {
        assert!(root.join(f).is_file(), "{f} is missing from the repository");
    }
}
