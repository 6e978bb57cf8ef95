//! Hugging Face safetensors directories written by the test itself: tensors come out under
//! GGUF names with GGML-order dims and their exact bytes, config.json becomes the same
//! ModelConfig shape as a GGUF, shards are followed, and bad directories give clear errors.

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::tensor::{Dtype, TensorView};
use tandem::model::config::{Arch, RopeStyle};
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::model::safetensors::SafetensorsModel;

const DIM: usize = 8;
const FFN: usize = 16;
const HEADS: usize = 2;
const KV: usize = 1;
const HD: usize = 4;
const VOCAB: usize = 10;

fn config_json(model_type: &str, extra: &str) -> String {
    format!(
        r#"{{"model_type": "{model_type}", "num_hidden_layers": 2, "hidden_size": {DIM},
        "intermediate_size": {FFN}, "num_attention_heads": {HEADS}, "num_key_value_heads": {KV},
        "rope_theta": 500000.0, "rms_norm_eps": 1e-6, "vocab_size": {VOCAB},
        "max_position_embeddings": 128, "hidden_act": "silu", "bos_token_id": 1,
        "eos_token_id": [2, 3], "rope_scaling": null{extra}}}"#
    )
}

/// (HF name, row-major shape, dtype) of a tiny model; bias and lm_head optional.
fn tensor_specs(bias: bool, lm_head: bool) -> Vec<(String, Vec<usize>, Dtype)> {
    let mut v = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![VOCAB, DIM],
            Dtype::F16,
        ),
        ("model.norm.weight".to_string(), vec![DIM], Dtype::F32),
    ];
    if lm_head {
        v.push(("lm_head.weight".to_string(), vec![VOCAB, DIM], Dtype::BF16));
    }
    for i in 0..2 {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        v.extend([
            (p("input_layernorm.weight"), vec![DIM], Dtype::F32),
            (
                p("self_attn.q_proj.weight"),
                vec![HEADS * HD, DIM],
                Dtype::BF16,
            ),
            (
                p("self_attn.k_proj.weight"),
                vec![KV * HD, DIM],
                Dtype::BF16,
            ),
            (p("self_attn.v_proj.weight"), vec![KV * HD, DIM], Dtype::F16),
            (
                p("self_attn.o_proj.weight"),
                vec![DIM, HEADS * HD],
                Dtype::F32,
            ),
            (p("post_attention_layernorm.weight"), vec![DIM], Dtype::F32),
            (p("mlp.gate_proj.weight"), vec![FFN, DIM], Dtype::F16),
            (p("mlp.up_proj.weight"), vec![FFN, DIM], Dtype::F16),
            (p("mlp.down_proj.weight"), vec![DIM, FFN], Dtype::F32),
            // A tensor tandem does not read: ignored.
            (p("self_attn.rotary_emb.inv_freq"), vec![HD / 2], Dtype::F32),
        ]);
        if bias {
            v.extend([
                (p("self_attn.q_proj.bias"), vec![HEADS * HD], Dtype::F32),
                (p("self_attn.k_proj.bias"), vec![KV * HD], Dtype::F32),
                (p("self_attn.v_proj.bias"), vec![KV * HD], Dtype::F32),
            ]);
        }
    }
    v
}

/// Distinct bytes per tensor, so a mix-up between tensors or shards shows.
fn tensor_bytes(name: &str, shape: &[usize], dt: Dtype) -> Vec<u8> {
    let n: usize = shape.iter().product::<usize>() * dt.bitsize() / 8;
    let seed = name
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..n).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn serialize(specs: &[(String, Vec<usize>, Dtype)], data: &HashMap<String, Vec<u8>>) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = specs
        .iter()
        .map(|(n, s, d)| (n.clone(), TensorView::new(*d, s.clone(), &data[n]).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tandem-st-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a model directory; `shards` > 1 splits the tensors round-robin with an index.
fn write_model(
    tag: &str,
    model_type: &str,
    bias: bool,
    lm_head: bool,
    shards: usize,
) -> (TempDir, HashMap<String, Vec<u8>>) {
    let dir = TempDir::new(tag);
    let specs = tensor_specs(bias, lm_head);
    let data: HashMap<String, Vec<u8>> = specs
        .iter()
        .map(|(n, s, d)| (n.clone(), tensor_bytes(n, s, *d)))
        .collect();
    std::fs::write(dir.0.join("config.json"), config_json(model_type, "")).unwrap();
    std::fs::write(dir.0.join("tokenizer.json"), "{}").unwrap();
    if shards == 1 {
        std::fs::write(dir.0.join("model.safetensors"), serialize(&specs, &data)).unwrap();
    } else {
        let mut weight_map = serde_json::Map::new();
        for s in 0..shards {
            let file = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
            let part: Vec<_> = specs
                .iter()
                .enumerate()
                .filter(|(i, _)| i % shards == s)
                .map(|(_, t)| t.clone())
                .collect();
            for (n, _, _) in &part {
                weight_map.insert(n.clone(), file.clone().into());
            }
            std::fs::write(dir.0.join(&file), serialize(&part, &data)).unwrap();
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(
            dir.0.join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
    }
    (dir, data)
}

fn check_model(m: &ModelFile, data: &HashMap<String, Vec<u8>>, bias: bool, lm_head: bool) {
    let c = &m.config;
    assert_eq!(
        (
            c.n_layers,
            c.dim,
            c.ffn_dim,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim
        ),
        (2, DIM, FFN, HEADS, KV, HD)
    );
    assert_eq!(
        c.rope_style,
        RopeStyle::Neox,
        "HF Q/K are not permuted: rotate-half RoPE"
    );
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(c.rope_dims, HD);
    assert_eq!((c.vocab_size, c.context_length), (VOCAB, 128));
    assert_eq!(
        (c.bos_id, c.eos_id, c.extra_eos_ids.clone()),
        (Some(1), Some(2), vec![3])
    );
    assert_eq!(c.tied_embeddings, !lm_head);
    assert_eq!(c.qkv_bias, bias);
    assert_eq!(
        m.weights.output,
        if lm_head {
            "output.weight"
        } else {
            "token_embd.weight"
        }
    );

    let q = m.tensor("blk.1.attn_q.weight").unwrap();
    assert_eq!(
        q.dims,
        &[DIM as u64, (HEADS * HD) as u64],
        "GGML order: row length first"
    );
    assert_eq!(q.ty, GgmlType::BF16);
    assert_eq!(
        q.data,
        data["model.layers.1.self_attn.q_proj.weight"].as_slice()
    );
    let e = m.tensor("token_embd.weight").unwrap();
    assert_eq!(e.ty, GgmlType::F16);
    assert_eq!(e.data, data["model.embed_tokens.weight"].as_slice());
    let d = m.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!(
        (d.dims, d.ty),
        (&[FFN as u64, DIM as u64][..], GgmlType::F32)
    );
    assert_eq!(
        d.data,
        data["model.layers.0.mlp.down_proj.weight"].as_slice()
    );
    if bias {
        let b = m.tensor("blk.0.attn_k.bias").unwrap();
        assert_eq!(b.dims, &[(KV * HD) as u64]);
        assert_eq!(
            b.data,
            data["model.layers.0.self_attn.k_proj.bias"].as_slice()
        );
    }
    let desc = m.describe();
    assert!(desc.contains("neox") && desc.contains("2 layers"), "{desc}");
}

#[test]
fn llama_single_file_tied() {
    let (dir, data) = write_model("llama1", "llama", false, false, 1);
    let m = ModelFile::open(&dir.0).unwrap();
    assert_eq!(m.config.arch, Arch::Llama);
    check_model(&m, &data, false, false);
    // The .safetensors file path works too, and the tokenizer.json path is exposed.
    let m2 = ModelFile::open(dir.0.join("model.safetensors")).unwrap();
    assert_eq!(m2.config, m.config);
    let st = SafetensorsModel::open_dir(&dir.0).unwrap();
    assert_eq!(st.tokenizer_json_path(), Some(dir.0.join("tokenizer.json")));
    assert!(st.tensor("blk.0.rotary_emb.inv_freq").is_none());
}

#[test]
fn qwen2_sharded_with_bias_and_head() {
    let (dir, data) = write_model("qwen3shards", "qwen2", true, true, 3);
    let m = ModelFile::open(&dir.0).unwrap();
    assert_eq!(m.config.arch, Arch::Qwen2);
    check_model(&m, &data, true, true);
    let st = SafetensorsModel::open_dir(&dir.0).unwrap();
    assert_eq!(st.shard_names().len(), 3);
}

#[test]
fn from_parts_in_memory() {
    let specs = tensor_specs(false, true);
    let data: HashMap<String, Vec<u8>> = specs
        .iter()
        .map(|(n, s, d)| (n.clone(), tensor_bytes(n, s, *d)))
        .collect();
    let bytes = serialize(&specs, &data);
    let st = SafetensorsModel::from_parts(
        &config_json("llama", ""),
        vec![("model.safetensors".into(), bytes)],
    )
    .unwrap();
    let m = ModelFile::from_safetensors(st).unwrap();
    check_model(&m, &data, false, true);
}

fn open_err(dir: &TempDir) -> String {
    ModelFile::open(&dir.0).unwrap_err().to_string()
}

#[test]
fn bad_directories_say_what_and_where() {
    // A required tensor missing.
    let (dir, data) = write_model("missing", "llama", false, false, 1);
    let mut specs = tensor_specs(false, false);
    specs.retain(|(n, _, _)| n != "model.layers.1.mlp.up_proj.weight");
    std::fs::write(dir.0.join("model.safetensors"), serialize(&specs, &data)).unwrap();
    let e = open_err(&dir);
    assert!(
        e.contains("blk.1.ffn_up.weight") && e.contains("missing"),
        "{e}"
    );

    // Wrong dims: expected vs found.
    let mut specs = tensor_specs(false, false);
    let mut data2 = data.clone();
    for (n, s, d) in specs.iter_mut() {
        if n == "model.layers.0.mlp.gate_proj.weight" {
            *s = vec![FFN + 1, DIM];
            data2.insert(n.clone(), tensor_bytes(n, s, *d));
        }
    }
    std::fs::write(dir.0.join("model.safetensors"), serialize(&specs, &data2)).unwrap();
    let e = open_err(&dir);
    assert!(
        e.contains("blk.0.ffn_gate.weight") && e.contains("[8, 16]") && e.contains("[8, 17]"),
        "{e}"
    );

    // Unsupported dtype names the tensor.
    let mut specs = tensor_specs(false, false);
    let mut data3 = data.clone();
    for (n, s, d) in specs.iter_mut() {
        if n == "model.norm.weight" {
            *d = Dtype::I32;
            data3.insert(n.clone(), tensor_bytes(n, s, *d));
        }
    }
    std::fs::write(dir.0.join("model.safetensors"), serialize(&specs, &data3)).unwrap();
    let e = open_err(&dir);
    assert!(e.contains("model.norm.weight") && e.contains("I32"), "{e}");

    // Corrupt safetensors header.
    std::fs::write(
        dir.0.join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7f{}",
    )
    .unwrap();
    let e = open_err(&dir);
    assert!(
        e.contains("model.safetensors") && e.contains("header"),
        "{e}"
    );

    // config.json problems: unknown architecture, missing key, RoPE scaling, no config.
    std::fs::write(
        dir.0.join("model.safetensors"),
        serialize(&tensor_specs(false, false), &data),
    )
    .unwrap();
    std::fs::write(dir.0.join("config.json"), config_json("mamba", "")).unwrap();
    let e = open_err(&dir);
    assert!(e.contains("unsupported") && e.contains("'mamba'"), "{e}");
    let no_eps = config_json("llama", "").replace("\"rms_norm_eps\": 1e-6,", "");
    std::fs::write(dir.0.join("config.json"), no_eps).unwrap();
    let e = open_err(&dir);
    assert!(e.contains("rms_norm_eps") && e.contains("missing"), "{e}");
    let scaled = config_json("llama", "").replace(
        "\"rope_scaling\": null",
        "\"rope_scaling\": {\"rope_type\": \"llama3\"}",
    );
    std::fs::write(dir.0.join("config.json"), scaled).unwrap();
    let e = open_err(&dir);
    assert!(e.contains("rope_scaling"), "{e}");
    std::fs::write(dir.0.join("config.json"), "{not json").unwrap();
    let e = open_err(&dir);
    assert!(e.contains("config.json") && e.contains("line 1"), "{e}");
    std::fs::remove_file(dir.0.join("config.json")).unwrap();
    let e = open_err(&dir);
    assert!(e.contains("config.json"), "{e}");

    // A shard index pointing outside the directory.
    std::fs::write(dir.0.join("config.json"), config_json("llama", "")).unwrap();
    let index = r#"{"weight_map": {"model.norm.weight": "../evil.safetensors"}}"#;
    std::fs::write(dir.0.join("model.safetensors.index.json"), index).unwrap();
    let e = open_err(&dir);
    assert!(e.contains("evil.safetensors") && e.contains("index"), "{e}");
}
