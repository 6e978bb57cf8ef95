//! One model, whatever file it came from: a GGUF file or a Hugging Face safetensors directory,
//! with its [`ModelConfig`], its checked [`WeightMap`] and zero-copy tensor access.

use std::collections::BTreeMap;

use super::config::{ModelConfig, WeightMap};
use super::gguf::GgufFile;
use super::safetensors::SafetensorsModel;
use crate::quant::GgmlType;
use crate::{Error, Result};

/// Where a model's bytes and metadata live.
#[derive(Debug)]
pub enum ModelSource {
    Gguf(GgufFile),
    Safetensors(SafetensorsModel),
}

/// A tensor as the engine sees it. `dims` in GGML order (`dims[0]` is the row length).
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub dims: &'a [u64],
    pub ty: GgmlType,
    pub data: &'a [u8],
}

impl TensorRef<'_> {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A model file with its description, checked against the tensors it holds.
#[derive(Debug)]
pub struct ModelFile {
    pub source: ModelSource,
    pub config: ModelConfig,
    pub weights: WeightMap,
}

impl ModelFile {
    /// Opens a GGUF file, a safetensors directory, or a `.safetensors` file (its directory
    /// must hold `config.json`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        use std::io::Read;
        let path = path.as_ref();
        let shown = path.display().to_string();
        if path.is_dir() {
            return Self::from_safetensors(SafetensorsModel::open_dir(path)?);
        }
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(&shown, e))?;
        let n = f.read(&mut magic).map_err(|e| Error::io(&shown, e))?;
        if n == 4 && &magic == super::gguf::GGUF_MAGIC {
            return Self::from_gguf(GgufFile::open(path)?);
        }
        if path.extension().is_some_and(|e| e == "safetensors") {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            return Self::from_safetensors(SafetensorsModel::open_dir(
                dir.unwrap_or(std::path::Path::new(".")),
            )?);
        }
        Err(Error::format(
            shown,
            "neither a GGUF file (no GGUF magic) nor a safetensors model directory",
        ))
    }

    /// Opens a GGUF file's header (a whole file, or one `tandem header-only` wrote) with
    /// every tensor filled with random blocks of its type from `seed`: the model's shapes,
    /// types, tokenizer and template with synthetic weights, for measuring step costs where
    /// the real weights cannot travel. See [`super::synthetic`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_synthetic(path: impl AsRef<std::path::Path>, seed: u64) -> Result<Self> {
        let path = path.as_ref();
        let storage = super::gguf::Storage::map(path)?;
        let file =
            super::synthetic::synthesize(storage.bytes(), seed, &path.display().to_string())?;
        Self::from_gguf(file)
    }

    pub fn from_gguf(file: GgufFile) -> Result<Self> {
        let config = ModelConfig::from_gguf(&file)?;
        let weights = config.weight_map();
        weights
            .check(|n| file.tensor(n).map(|t| t.dims.as_slice()))
            .map_err(|e| in_source(e, file.source()))?;
        let m = ModelFile {
            source: ModelSource::Gguf(file),
            config,
            weights,
        };
        m.rope_freq_factors()?;
        Ok(m)
    }

    pub fn from_safetensors(model: SafetensorsModel) -> Result<Self> {
        let config = model.config().clone();
        let weights = config.weight_map();
        weights.check(|n| model.tensor(n).map(|t| t.dims.as_slice()))?;
        Ok(ModelFile {
            source: ModelSource::Safetensors(model),
            config,
            weights,
        })
    }

    /// The GGUF file, for its metadata (tokenizer, chat template).
    pub fn gguf(&self) -> Option<&GgufFile> {
        match &self.source {
            ModelSource::Gguf(g) => Some(g),
            ModelSource::Safetensors(_) => None,
        }
    }

    /// The RoPE frequency factors (`rope_freqs.weight`, `[rope_dims / 2]`, dims checked at
    /// open) as f32, or `None` for a model without them. Each must be finite and positive: a
    /// pair's frequency is divided by its factor.
    pub fn rope_freq_factors(&self) -> Result<Option<Vec<f32>>> {
        let Some(name) = &self.weights.rope_freqs else {
            return Ok(None);
        };
        let t = self.tensor(name)?;
        let f = crate::quant::dequantize(t.ty, t.data, t.n_elements() as usize)?;
        if let Some((i, v)) = f
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v > 0.0))
        {
            return Err(Error::format(
                format!("tensor '{name}'"),
                format!("frequency factor {i} is {v} (each must be finite and positive)"),
            ));
        }
        Ok(Some(f))
    }

    /// A tensor by its GGUF name; a missing tensor is an error naming it.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let missing = || Error::format(format!("tensor '{name}'"), "tensor missing from the model");
        match &self.source {
            ModelSource::Gguf(g) => {
                let t = g.tensor(name).ok_or_else(missing)?;
                Ok(TensorRef {
                    name: &t.name,
                    dims: &t.dims,
                    ty: t.ty,
                    data: g.tensor_data(t)?,
                })
            }
            ModelSource::Safetensors(s) => {
                let t = s.tensor(name).ok_or_else(missing)?;
                Ok(TensorRef {
                    name: &t.name,
                    dims: &t.dims,
                    ty: t.ty,
                    data: s.tensor_data(t)?,
                })
            }
        }
    }

    /// Every tensor: (name, dims, type, bytes).
    pub fn tensor_list(&self) -> Vec<(&str, &[u64], GgmlType, u64)> {
        match &self.source {
            ModelSource::Gguf(g) => g
                .tensors()
                .iter()
                .map(|t| (t.name.as_str(), t.dims.as_slice(), t.ty, t.n_bytes))
                .collect(),
            ModelSource::Safetensors(s) => s
                .tensors()
                .iter()
                .map(|t| {
                    (
                        t.name.as_str(),
                        t.dims.as_slice(),
                        t.ty,
                        t.range.len() as u64,
                    )
                })
                .collect(),
        }
    }

    /// A human-readable description (what `tandem inspect` prints).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        match &self.source {
            ModelSource::Gguf(g) => {
                let h = g.header();
                out += &format!(
                    "file:     {} (GGUF v{}, {} bytes, {} metadata keys)\n",
                    g.source(),
                    h.version,
                    g.bytes().len(),
                    h.metadata.len()
                );
                if let Some(t) = g.metadata("tokenizer.ggml.model").and_then(|v| v.as_str()) {
                    let pre = g.metadata("tokenizer.ggml.pre").and_then(|v| v.as_str());
                    out += &format!(
                        "tokenizer: {t}{}\n",
                        pre.map(|p| format!(" (pre-tokenizer {p})"))
                            .unwrap_or_default()
                    );
                }
            }
            ModelSource::Safetensors(s) => {
                out += &format!("file:     safetensors, shards {:?}\n", s.shard_names());
            }
        }
        out += &self.config.to_string();
        out.push('\n');
        out += &describe_tensors(&self.tensor_list());
        out
    }
}

/// Per-type tensor counts, bytes and parameters, plus types tandem cannot run.
pub fn describe_tensors(tensors: &[(&str, &[u64], GgmlType, u64)]) -> String {
    let mut by_type: BTreeMap<&str, (usize, u64, GgmlType)> = BTreeMap::new();
    let (mut bytes, mut params) = (0u64, 0u64);
    for &(_, dims, ty, n) in tensors {
        let e = by_type.entry(ty.name()).or_insert((0, 0, ty));
        e.0 += 1;
        e.1 += n;
        bytes += n;
        params += dims.iter().product::<u64>();
    }
    let mut counts: Vec<_> = by_type.iter().collect();
    counts.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    let list: Vec<String> = counts
        .iter()
        .map(|(name, (n, b, _))| format!("{name} {n} ({:.1} MB)", *b as f64 / 1e6))
        .collect();
    let mut out = format!(
        "tensors:  {} — {}; {:.1} MB, {:.1} M parameters",
        tensors.len(),
        list.join(", "),
        bytes as f64 / 1e6,
        params as f64 / 1e6
    );
    let unsupported: Vec<&str> = counts
        .iter()
        .filter(|(_, (_, _, ty))| !ty.is_supported())
        .map(|(name, _)| **name)
        .collect();
    if !unsupported.is_empty() {
        out += &format!(
            "\nwarning:  tandem has no kernels for {}",
            unsupported.join(", ")
        );
    }
    out
}

fn in_source(e: Error, source: &str) -> Error {
    match e {
        Error::Format { at, what } if source != "<memory>" => Error::Format {
            at: format!("{source}: {at}"),
            what,
        },
        e => e,
    }
}
