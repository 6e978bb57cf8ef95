//! The layers of DESIGN.md's module table, checked: every path into another module of the
//! crate (`crate::…` and `super::…` in the library, `tandem::…` in the face crates under
//! `crates/`: the CLI, the server, the bench harness and the wasm bindings) is
//! resolved to the top-level module it names, and one the table below does not allow fails
//! the test with the file, the line, the path as written and the rule it breaks.
//!
//! Why a test and not a convention: the layering is what lets a kernel be tested without a
//! model, the model be loaded without the engine, and the faces change without touching a
//! shader. Each broken edge is small when it lands and expensive to take out later.
//!
//! The scan strips comments and string/char literals first (doc links and WGSL sources are
//! not imports), tracks inline `mod name { … }` blocks so `super::` resolves like rustc does,
//! and expands grouped imports (`crate::{gpu::Gpu, kernels::{Bound, Step}}`).

use std::path::{Path, PathBuf};

/// Modules the speculative layer may use (`src/speculative/`, once `src/spec/`; both names
/// are accepted).
const SPECULATIVE_MAY: &[&str] = &["error", "quant", "gpu", "kernels", "model", "tokenizer"];
/// What the engine and the faces may use below them. The faces (bench, web, the CLI, the
/// server) reach the kernels only through the engine: sampling parameters are
/// `engine::SampleParams`, the mask format is behind the engine's step.
const ENGINE_MAY: &[&str] = &[
    "error",
    "quant",
    "gpu",
    "kernels",
    "model",
    "tokenizer",
    "spec",
    "speculative",
    "constrain",
];
const FACE_MAY: &[&str] = &[
    "error",
    "quant",
    "gpu",
    "model",
    "tokenizer",
    "spec",
    "speculative",
    "constrain",
    "engine",
    "api",
];

/// Which top-level module may import which (DESIGN.md, "Modules"), bottom layer first. An
/// entry `"model::gguf"` allows that submodule only. A module may always use itself.
const LAYERS: &[(&str, &[&str], &str)] = &[
    ("error", &[], "the error type is the very bottom"),
    (
        "quant",
        &["error"],
        "GGML block formats are the bottom layer kernels and model share",
    ),
    (
        "gpu",
        &["error"],
        "the device layer knows no kernels or models",
    ),
    (
        "kernels",
        &["error", "gpu", "quant"],
        "a kernel is tested on its own, without a model; the mask format and RoPE style live here",
    ),
    (
        "model",
        &["error", "gpu", "kernels", "quant"],
        "models are built from kernels and files, not from drafters, the engine or tokenizers",
    ),
    (
        "tokenizer",
        &["error", "model::gguf"],
        "the tokenizer reads GGUF metadata and nothing else of the model",
    ),
    (
        "constrain",
        &["error", "kernels", "tokenizer"],
        "grammars become token masks: the tokenizer's bytes in, the mask kernel's layout out",
    ),
    (
        "spec",
        SPECULATIVE_MAY,
        "drafters and trees sit on the model; the engine drives them",
    ),
    (
        "speculative",
        SPECULATIVE_MAY,
        "drafters and trees sit on the model; the engine drives them",
    ),
    (
        "engine",
        ENGINE_MAY,
        "the engine is the top of the library: the faces use it",
    ),
    (
        "api",
        FACE_MAY,
        "request/response types are shared by the faces, over the engine",
    ),
    (
        "bench",
        FACE_MAY,
        "the faces reach the kernels through the engine",
    ),
    (
        "web",
        FACE_MAY,
        "the faces reach the kernels through the engine",
    ),
    (
        "serve",
        FACE_MAY,
        "the faces reach the kernels through the engine",
    ),
    (
        "cli",
        FACE_MAY,
        "the faces reach the kernels through the engine",
    ),
];

/// Files allowed one edge their module's row forbids, and why.
const EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "crates/cli/src/bench_kernels.rs",
    "kernels",
    "`tandem bench-kernels` times the kernels themselves, so it names them",
)];

/// Top-level items of the crate that are not modules but re-exports, and their module.
const ROOT_ITEMS: &[(&str, &str)] = &[("Error", "error"), ("Result", "error")];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// Blanks out comments and string/char literals (keeping newlines, so lines still count).
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
                out.push(' ');
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident(c[i - 1]))
        {
            // Raw string r"…" / r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            while j < c.len() {
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &c[i..j.min(c.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only the former is blanked.
            if next == Some('\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                for _ in i..=j.min(c.len() - 1) {
                    out.push(' ');
                }
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push(c[i]);
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Tokens with their 1-based line numbers.
fn tokens(stripped: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = stripped.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident(ch) {
            let start = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// The paths of a use tree or expression path starting at `t[i]`, and where it ends:
/// `a::{b::c, d}` gives `[a, b, c]`, `[a, d]`.
fn parse_tree(t: &[(Tok, usize)], mut i: usize) -> (Vec<Vec<String>>, usize) {
    match t.get(i).map(|x| &x.0) {
        Some(Tok::Punct('{')) => {
            i += 1;
            let mut paths = Vec::new();
            while let Some((tok, _)) = t.get(i) {
                match tok {
                    Tok::Punct('}') => {
                        i += 1;
                        break;
                    }
                    Tok::Punct(',') => i += 1,
                    _ => {
                        let (sub, j) = parse_tree(t, i);
                        paths.extend(sub);
                        // A token the grammar does not expect: step over it.
                        i = if j == i { i + 1 } else { j };
                    }
                }
            }
            (paths, i)
        }
        Some(Tok::Punct('*')) => (vec![vec!["*".to_string()]], i + 1),
        Some(Tok::Ident(name)) => {
            let name = name.clone();
            if t.get(i + 1).map(|x| &x.0) == Some(&Tok::Path) {
                let (sub, j) = parse_tree(t, i + 2);
                let paths = sub
                    .into_iter()
                    .map(|mut p| {
                        p.insert(0, name.clone());
                        p
                    })
                    .collect();
                (paths, j)
            } else {
                (vec![vec![name]], i + 1)
            }
        }
        _ => (vec![vec![]], i),
    }
}

/// The face crates of the workspace and the layer each one is in the table. Their own
/// `crate::` is not the library; `tandem::` is.
const FACE_CRATES: &[(&str, &str)] = &[
    ("crates/cli/", "cli"),
    ("crates/server/", "serve"),
    ("crates/bench/", "bench"),
    ("crates/web/", "web"),
];

/// The face crate a repository path is in, as its layer.
fn face_of(rel: &str) -> Option<&'static str> {
    FACE_CRATES
        .iter()
        .find(|(dir, _)| rel.starts_with(dir))
        .map(|(_, layer)| *layer)
}

/// A library file's module path from the crate root (`src/model/arch/llama.rs` →
/// `[model, arch, llama]`, `src/gpu/mod.rs` → `[gpu]`), or `None` for the crate root and the
/// face crates.
fn file_module(rel: &str) -> Option<Vec<String>> {
    let rel = rel.strip_prefix("src/")?;
    if rel == "lib.rs" {
        return None;
    }
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// The top-level module a file belongs to, as the table names it.
fn layer_of(rel: &str) -> &str {
    if let Some(face) = face_of(rel) {
        return face;
    }
    let lib = rel.strip_prefix("src/").unwrap_or(rel);
    let first = lib.split('/').next().unwrap_or(lib);
    first.trim_end_matches(".rs")
}

/// One reference from a file into the crate: line, the path as resolved from the crate root.
struct Edge {
    line: usize,
    path: Vec<String>,
}

/// Every path from `rel` (relative to the repository) into the library's modules.
fn edges(rel: &str, src: &str) -> Vec<Edge> {
    let t = tokens(&strip(src));
    let in_bin = face_of(rel).is_some();
    let base = file_module(rel).unwrap_or_default();
    // Inline `mod name { … }` blocks: (name, brace depth inside the block).
    let mut mods: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let (tok, line) = (&t[i].0, t[i].1);
        let followed_by_path = t.get(i + 1).map(|x| &x.0) == Some(&Tok::Path);
        let prev_is_path = i > 0 && t[i - 1].0 == Tok::Path;
        match tok {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                while mods.last().is_some_and(|(_, d)| *d > depth) {
                    mods.pop();
                }
                i += 1;
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Punct('{'), _))) =
                    (t.get(i + 1), t.get(i + 2))
                {
                    mods.push((name.clone(), depth + 1));
                }
                i += 1;
            }
            Tok::Ident(kw)
                if followed_by_path
                    && !prev_is_path
                    && ((kw == "crate" && !in_bin) || (kw == "tandem" && in_bin)) =>
            {
                let (paths, j) = parse_tree(&t, i + 2);
                out.extend(paths.into_iter().map(|path| Edge { line, path }));
                i = j.max(i + 1);
            }
            Tok::Ident(kw) if kw == "super" && followed_by_path && !prev_is_path && !in_bin => {
                let mut here: Vec<String> = base
                    .iter()
                    .cloned()
                    .chain(mods.iter().map(|(n, _)| n.clone()))
                    .collect();
                let mut j = i;
                while let (Some((Tok::Ident(s), _)), Some((Tok::Path, _))) =
                    (t.get(j), t.get(j + 1))
                {
                    if s != "super" {
                        break;
                    }
                    here.pop();
                    j += 2;
                }
                let (paths, k) = parse_tree(&t, j);
                out.extend(paths.into_iter().map(|p| Edge {
                    line,
                    path: here.iter().cloned().chain(p).collect(),
                }));
                i = k.max(i + 1);
            }
            _ => i += 1,
        }
    }
    out
}

/// The rule each forbidden edge of `rel` breaks, as messages.
fn check(rel: &str, src: &str) -> Vec<String> {
    let layer = layer_of(rel);
    let Some(&(_, allowed, why)) = LAYERS.iter().find(|(m, _, _)| *m == layer) else {
        return vec![format!(
            "{rel}: module '{layer}' has no row in the layering table of tests/layering.rs \
             (add it where DESIGN.md's module table puts it)"
        )];
    };
    let mut bad = Vec::new();
    for e in edges(rel, src) {
        let Some(first) = e.path.first() else {
            continue;
        };
        if first == "*" || first == "self" {
            continue;
        }
        let top = ROOT_ITEMS
            .iter()
            .find(|(item, _)| item == first)
            .map_or(first.as_str(), |(_, m)| m);
        if top == layer {
            continue;
        }
        let written = format!(
            "{}::{}",
            if face_of(rel).is_some() {
                "tandem"
            } else {
                "crate"
            },
            e.path.join("::")
        );
        if !LAYERS.iter().any(|(m, _, _)| *m == top) {
            bad.push(format!(
                "{rel}:{}: `{written}` names '{top}', which is neither a module in the \
                 layering table nor a known re-export",
                e.line
            ));
            continue;
        }
        let sub = e.path.get(1).map(|s| format!("{top}::{s}"));
        let ok = allowed
            .iter()
            .any(|a| *a == top || sub.as_deref() == Some(*a))
            || EXCEPTIONS
                .iter()
                .any(|(file, m, _)| *file == rel && *m == top);
        if !ok {
            let hint = if top == "model" && e.path.get(1).is_some_and(|s| s == "quant") {
                " (the quant formats are their own layer: `crate::quant`)"
            } else {
                ""
            };
            bad.push(format!(
                "{rel}:{}: `{written}` — '{layer}' may import only [{}], not '{top}': \
                 {why}{hint}",
                e.line,
                allowed.join(", ")
            ));
        }
    }
    bad
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("source folder is readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_import_follows_the_layering_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let n_lib = files.len();
    for (dir, _) in FACE_CRATES {
        rust_files(&root.join(dir).join("src"), &mut files);
    }
    let (mut bad, mut n_edges, mut kernels_to_gpu) = (Vec::new(), 0, false);
    let mut faces_seen = std::collections::BTreeSet::new();
    for f in &files {
        let rel = f
            .strip_prefix(root)
            .expect("under the repository")
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "src/lib.rs" {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("source is UTF-8");
        for e in edges(&rel, &text) {
            n_edges += 1;
            if let Some(face) = face_of(&rel) {
                faces_seen.insert(face);
            }
            kernels_to_gpu |=
                layer_of(&rel) == "kernels" && e.path.first().is_some_and(|m| m == "gpu");
        }
        bad.extend(check(&rel, &text));
    }
    // The scan must have seen the crate's real edges, or it proves nothing.
    assert!(
        n_lib > 40 && n_edges > 150 && kernels_to_gpu && faces_seen.len() == FACE_CRATES.len(),
        "the scan found only {n_edges} paths in {} files (faces with edges: {faces_seen:?})",
        files.len()
    );
    assert!(
        bad.is_empty(),
        "{} import(s) break the layering (DESIGN.md's module table; rules in tests/layering.rs):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn a_forbidden_import_is_reported_with_file_line_and_rule() {
    let src = "//! Uses crate::engine in a comment, which is fine.\n\
               use crate::{gpu::Gpu, Error};\n\
               use crate::model::quant::GgmlType;\n\
               const S: &str = \"crate::engine::Engine\";\n\
               fn f() { let _ = crate::kernels::rope::inv_freq(1.0, 2); }\n";
    let bad = check("src/kernels/matmul.rs", src);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    let msg = &bad[0];
    for part in [
        "src/kernels/matmul.rs:3",
        "`crate::model::quant::GgmlType`",
        "'kernels' may import only [error, gpu, quant], not 'model'",
        "crate::quant",
    ] {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }
}

#[test]
fn grouped_super_and_inline_module_paths_resolve_like_rustc() {
    // In model/arch/llama.rs (module model::arch::llama), `super::super` is `model` and one
    // more `super` the crate root: an edge to engine.
    let src = "use super::super::super::{engine::Engine, kernels::Step};\n\
               use super::super::config::Arch;\nuse super::Plan;\n";
    let bad = check("src/model/arch/llama.rs", src);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(bad[0].contains("`crate::engine::Engine`"), "{}", bad[0]);
    // In an inline test module, `super::*` is the file's own module.
    assert!(check("src/gpu/mod.rs", "mod tests {\n use super::*;\n}\n").is_empty());
    // A face may not name the kernels; the table's submodule entries are exact.
    let bad = check(
        "crates/web/src/lib.rs",
        "use tandem::kernels::sample::SampleParams;\n",
    );
    assert!(
        bad.len() == 1 && bad[0].contains("not 'kernels'"),
        "{bad:#?}"
    );
    assert!(check("src/tokenizer.rs", "use crate::model::gguf::MetaValue;\n").is_empty());
    assert_eq!(
        check("src/tokenizer.rs", "use crate::model::loader::ModelFile;\n").len(),
        1
    );
    // A face crate's own `crate::` is not the library; `tandem::` is.
    assert!(check("crates/cli/src/cli.rs", "use crate::bench::BenchArgs;\n").is_empty());
    assert_eq!(
        check("crates/cli/src/cli.rs", "use tandem::kernels::Layout;\n").len(),
        1
    );
    // Both names of the speculative module are in the table.
    assert!(check(
        "src/speculative/sps.rs",
        "use crate::model::loader::ModelFile;\n"
    )
    .is_empty());
    assert!(check("src/speculative/tree.rs", "use crate::engine::Engine;\n").len() == 1);
    // A raw string holding a path and a lifetime next to a char literal are not imports.
    let src = "fn f<'a>(x: &'a str) -> char { let _ = r#\"crate::engine\"#; '{' }\n";
    assert!(check("src/kernels/add.rs", src).is_empty());
}
