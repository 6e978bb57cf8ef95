//! Hugging Face model directories: `config.json` + `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), F32/F16/BF16 tensors renamed to tandem's (GGUF) names.
//!
//! Safetensors shapes are row-major `[rows, row length]`; they are exposed in GGML order
//! (reversed, `dims[0]` = row length) so a matrix looks exactly like its GGUF counterpart.
//! The data layout is the same in both (little-endian, rows contiguous), so tensor bytes are
//! handed out zero-copy.

use std::collections::HashMap;
use std::ops::Range;
#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use super::config::ModelConfig;
use super::gguf::Storage;
use crate::quant::GgmlType;
use crate::{Error, Result};

/// The GGUF name for a Hugging Face llama/qwen2 tensor name, `None` for tensors tandem does
/// not read (e.g. `rotary_emb.inv_freq`).
pub fn hf_to_gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let name = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{name}.{kind}"))
}

/// One tensor of a safetensors model, under its GGUF name.
#[derive(Clone, Debug)]
pub struct StTensor {
    /// tandem (GGUF) name.
    pub name: String,
    /// Name in the safetensors file.
    pub hf_name: String,
    /// GGML order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Index into the shards.
    pub shard: usize,
    /// Byte range inside that shard.
    pub range: Range<usize>,
}

/// A loaded Hugging Face model directory.
pub struct SafetensorsModel {
    shards: Vec<(String, Storage)>,
    tensors: Vec<StTensor>,
    by_name: HashMap<String, usize>,
    config: ModelConfig,
    #[cfg(not(target_arch = "wasm32"))]
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for SafetensorsModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsModel")
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.0).collect::<Vec<_>>(),
            )
            .field("tensors", &self.tensors.len())
            .field("config", &self.config)
            .finish()
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[derive(serde::Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

/// Shard file names from an index must stay inside the model directory.
#[cfg(not(target_arch = "wasm32"))]
fn check_shard_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.contains('\\') || name == ".." || name == "." {
        return Err(Error::format(
            "model.safetensors.index.json 'weight_map'",
            format!("shard file name {name:?} is not a plain file name in the model directory"),
        ));
    }
    Ok(())
}

impl SafetensorsModel {
    /// Loads `config.json` and `model.safetensors` (or the shards listed in
    /// `model.safetensors.index.json`) from a directory; shards are memory-mapped.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| Error::io(p.display().to_string(), e))
        };
        let config_json = read("config.json")?;
        let index_path = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if index_path.is_file() {
            let text = read("model.safetensors.index.json")?;
            let index: Index = serde_json::from_str(&text).map_err(|e| {
                Error::format(
                    format!("{} line {}", index_path.display(), e.line()),
                    e.to_string(),
                )
            })?;
            let mut names: Vec<String> = index.weight_map.into_values().collect();
            names.sort();
            names.dedup();
            names
        } else {
            vec!["model.safetensors".into()]
        };
        let mut shards = Vec::with_capacity(shard_names.len());
        for name in shard_names {
            check_shard_name(&name)?;
            let storage = Storage::map(&dir.join(&name))?;
            shards.push((name, storage));
        }
        let mut m = Self::build(&config_json, shards)?;
        m.dir = Some(dir.to_path_buf());
        Ok(m)
    }

    /// From bytes already in memory (the web): the `config.json` text and each shard's
    /// (file name, bytes).
    pub fn from_parts(config_json: &str, shards: Vec<(String, Vec<u8>)>) -> Result<Self> {
        let shards = shards
            .into_iter()
            .map(|(n, b)| (n, Storage::Vec(b)))
            .collect();
        Self::build(config_json, shards)
    }

    fn build(config_json: &str, shards: Vec<(String, Storage)>) -> Result<Self> {
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        for (si, (shard_name, storage)) in shards.iter().enumerate() {
            let bytes = storage.bytes();
            let (header_len, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
                Error::format(
                    format!("safetensors file '{shard_name}' header"),
                    e.to_string(),
                )
            })?;
            let data_start = 8 + header_len;
            let mut infos: Vec<_> = meta.tensors().into_iter().collect();
            infos.sort_by(|a, b| a.0.cmp(&b.0));
            for (hf_name, info) in infos {
                let Some(name) = hf_to_gguf_name(&hf_name) else {
                    log::debug!("safetensors: ignoring tensor '{hf_name}'");
                    continue;
                };
                let at = || format!("safetensors file '{shard_name}', tensor '{hf_name}'");
                let ty = match info.dtype {
                    Dtype::F32 => GgmlType::F32,
                    Dtype::F16 => GgmlType::F16,
                    Dtype::BF16 => GgmlType::BF16,
                    other => {
                        return Err(Error::Unsupported(format!(
                            "dtype {other:?} of {} (supported: F32, F16, BF16)",
                            at()
                        )))
                    }
                };
                let (s, e) = info.data_offsets;
                // read_metadata checked that the offsets match shape × dtype and lie in the file.
                let range = data_start
                    .checked_add(s)
                    .zip(data_start.checked_add(e))
                    .map(|(s, e)| s..e)
                    .filter(|r| r.start <= r.end && r.end <= bytes.len())
                    .ok_or_else(|| Error::format(at(), "data offsets outside the file"))?;
                let dims: Vec<u64> = info.shape.iter().rev().map(|&d| d as u64).collect();
                if by_name.insert(name.clone(), tensors.len()).is_some() {
                    return Err(Error::format(
                        at(),
                        format!("tensor '{name}' appears twice"),
                    ));
                }
                tensors.push(StTensor {
                    name,
                    hf_name,
                    dims,
                    ty,
                    shard: si,
                    range,
                });
            }
        }
        let config = ModelConfig::from_hf_json(config_json, |n| by_name.contains_key(n))?;
        Ok(SafetensorsModel {
            shards,
            tensors,
            by_name,
            config,
            #[cfg(not(target_arch = "wasm32"))]
            dir: None,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Tensors tandem reads, under their GGUF names.
    pub fn tensors(&self) -> &[StTensor] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&StTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's bytes (zero-copy); an error only for a `StTensor` not from this model.
    pub fn tensor_data(&self, t: &StTensor) -> Result<&[u8]> {
        self.shards
            .get(t.shard)
            .and_then(|(_, s)| s.bytes().get(t.range.clone()))
            .ok_or_else(|| Error::Invalid(format!("tensor '{}' is not from this model", t.name)))
    }

    /// The shard file names.
    pub fn shard_names(&self) -> Vec<&str> {
        self.shards.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The directory's `tokenizer.json`, when it exists (the tokenizer module reads it).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn tokenizer_json_path(&self) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join("tokenizer.json"))
            .filter(|p| p.is_file())
    }

    /// The directory the model was loaded from.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_gguf_names() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.0.input_layernorm.weight",
                "blk.0.attn_norm.weight",
            ),
            (
                "model.layers.11.self_attn.q_proj.weight",
                "blk.11.attn_q.weight",
            ),
            ("model.layers.3.self_attn.k_proj.bias", "blk.3.attn_k.bias"),
            (
                "model.layers.3.self_attn.v_proj.weight",
                "blk.3.attn_v.weight",
            ),
            (
                "model.layers.3.self_attn.o_proj.weight",
                "blk.3.attn_output.weight",
            ),
            (
                "model.layers.2.post_attention_layernorm.weight",
                "blk.2.ffn_norm.weight",
            ),
            (
                "model.layers.2.mlp.gate_proj.weight",
                "blk.2.ffn_gate.weight",
            ),
            ("model.layers.2.mlp.up_proj.weight", "blk.2.ffn_up.weight"),
            (
                "model.layers.2.mlp.down_proj.weight",
                "blk.2.ffn_down.weight",
            ),
        ];
        for (hf, gguf) in cases {
            assert_eq!(hf_to_gguf_name(hf).as_deref(), Some(gguf), "{hf}");
        }
        for other in [
            "model.layers.0.self_attn.rotary_emb.inv_freq",
            "model.layers.x.mlp.up_proj.weight",
            "model.layers.1.mlp.up_proj.scales",
            "something.else",
        ] {
            assert_eq!(hf_to_gguf_name(other), None, "{other}");
        }
    }

    #[test]
    fn shard_names_cannot_escape_the_directory() {
        assert!(check_shard_name("model-00001-of-00002.safetensors").is_ok());
        for bad in ["../x.safetensors", "/etc/passwd", "a\\b", "..", ""] {
            assert!(check_shard_name(bad).is_err(), "{bad}");
        }
    }
}
