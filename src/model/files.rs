//! Finding model files: a path, or a short name of one of the reference models in the
//! model cache (`$TANDEM_MODELS`, default `~/.cache/tandem/models`, filled by
//! `tandem fetch`, which `scripts/fetch-models.sh` runs).

use std::path::PathBuf;

use crate::{Error, Result};

/// The reference models by short name: (name, file name, what `tandem fetch` calls it).
pub const REFERENCE_MODELS: &[(&str, &str, &str)] = &[
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2"),
    (
        "qwen-0.5b",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen-0.5b",
    ),
    (
        "qwen-1.5b",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "qwen-1.5b",
    ),
    ("gemma-3-270m", "gemma-3-270m-q4_k_m.gguf", "gemma-3-270m"),
];

/// The model cache directory.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TANDEM_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/tandem/models")
}

/// The cached file of a reference model (it may not exist yet).
pub fn reference_path(short: &str) -> Option<PathBuf> {
    REFERENCE_MODELS
        .iter()
        .find(|(n, _, _)| *n == short)
        .map(|(_, f, _)| models_dir().join(f))
}

/// Resolve `-m` arguments: an existing path, or a reference model's short name.
pub fn resolve(arg: &str) -> Result<PathBuf> {
    let p = PathBuf::from(arg);
    if p.exists() {
        return Ok(p);
    }
    if let Some((_, file, fetch)) = REFERENCE_MODELS.iter().find(|(n, _, _)| *n == arg) {
        let path = models_dir().join(file);
        if path.exists() {
            return Ok(path);
        }
        return Err(Error::Invalid(format!(
            "model '{arg}' is not in the cache ({}); run `tandem fetch {fetch}`",
            path.display()
        )));
    }
    let names: Vec<&str> = REFERENCE_MODELS.iter().map(|m| m.0).collect();
    Err(Error::Invalid(format!(
        "model '{arg}' is neither a file nor a reference model name ({})",
        names.join(", ")
    )))
}
