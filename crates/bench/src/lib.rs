//! tandem-bench: the Spec-Bench-style benchmark of the decoding methods behind `tandem bench`
//! (native only).
//!
//! - [`questions`]: the JSONL question format, task groups, the evenly spread sample;
//! - [`run`]: answering the questions with each method through [`tandem::engine::Engine`];
//! - [`metrics`]: per-question records, tokens/s, speedup, τ, acceptance, losslessness;
//! - [`report`]: the JSON, Markdown and SVG outputs;
//! - [`cost`]: a device's step costs and the speed-ups a run's records project onto it.
//!
//! Every output names what it measured on: adapter, backend, the models' files with a
//! sha256 prefix, and the settings.

pub mod cost;
pub mod metrics;
pub mod questions;
pub mod report;
pub mod run;

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tandem::gpu::Gpu;
use tandem::{Error, Result};

pub use metrics::{
    check_lossless, summarize, MethodSummary, Metrics, Mismatch, QuestionRecord, TurnRecord,
    BASELINE,
};
pub use questions::{load_questions, parse_questions, sample_per_category, task_group, Question};
pub use report::BenchReport;
pub use run::{run_questions, BenchMethod, Progress, RunSettings};

/// A model as the reports name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// File (or directory) name, without the directories above it.
    pub file: String,
    /// Hex sha256 of the file's bytes (of a safetensors directory: of its `.safetensors`
    /// files in name order, one stream).
    pub sha256: String,
    pub bytes: u64,
}

impl ModelInfo {
    /// A model file from memory (tests, the browser).
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Self {
        ModelInfo {
            file: name.to_string(),
            sha256: hex(&Sha256::digest(bytes)),
            bytes: bytes.len() as u64,
        }
    }

    /// Hashes the file once (a 1 GB model takes a few seconds).
    pub fn of_path(path: &Path) -> Result<Self> {
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path.display().to_string(), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for f in &files {
            let shown = f.display().to_string();
            let mut file = std::fs::File::open(f).map_err(|e| Error::io(shown.clone(), e))?;
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| Error::io(shown.clone(), e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                total += n as u64;
            }
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(ModelInfo {
            file: name,
            sha256: hex(&hasher.finalize()),
            bytes: total,
        })
    }

    /// `file, sha256 0123456789ab…`.
    pub fn short(&self) -> String {
        format!(
            "{}, sha256 {}…",
            self.file,
            &self.sha256[..12.min(self.sha256.len())]
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The device a run measured on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub shader_f16: bool,
    pub subgroups: bool,
}

impl DeviceInfo {
    pub fn of(gpu: &Gpu) -> Self {
        let i = &gpu.info;
        DeviceInfo {
            adapter: i.name.clone(),
            backend: format!("{:?}", i.backend).to_lowercase(),
            device_type: format!("{:?}", i.device_type),
            driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
            shader_f16: gpu.has_f16(),
            subgroups: gpu.has_subgroups(),
        }
    }
}

/// A method's name and its parameters in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MethodInfo {
    pub name: String,
    pub params: String,
}

impl MethodInfo {
    pub fn of(spec: &BenchMethod, adaptive: bool) -> Self {
        let budget = if adaptive {
            "adaptive budget"
        } else {
            "fixed budget"
        };
        let m = &spec.method;
        let params: Vec<String> = m.params().map(|(k, v)| format!("{k}={v}")).collect();
        let params = if params.is_empty() {
            "one token per target pass".to_string()
        } else {
            format!("{}, {budget}", params.join(", "))
        };
        MethodInfo {
            name: spec.name.clone(),
            params,
        }
    }
}

/// The run's settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub questions_file: String,
    pub questions: usize,
    pub question_turns: usize,
    pub limit_per_category: Option<usize>,
    pub max_new_tokens: usize,
    pub decoding: String,
    pub adaptive: bool,
    pub ctx: usize,
    pub warmup_tokens: usize,
    pub methods: Vec<MethodInfo>,
    /// The drafter drafts among the first this many token ids (None: all of them).
    pub draft_vocab: Option<usize>,
}

/// What every output says about the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchMeta {
    pub tandem_version: String,
    /// The command line (empty when run from code).
    pub command: String,
    /// Seconds since 1970 when the report was made.
    pub unix_time: u64,
    pub device: DeviceInfo,
    pub target: ModelInfo,
    pub drafter: Option<ModelInfo>,
    pub settings: Settings,
}

impl BenchMeta {
    pub fn new(
        device: DeviceInfo,
        target: ModelInfo,
        drafter: Option<ModelInfo>,
        settings: Settings,
        command: String,
    ) -> Self {
        BenchMeta {
            tandem_version: env!("CARGO_PKG_VERSION").to_string(),
            command,
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            device,
            target,
            drafter,
            settings,
        }
    }
}
