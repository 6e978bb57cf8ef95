//! The GGUF parser on the real reference models (MODELS.md): architecture, block count and
//! tensor counts per type. Header parsing over a memory map is fast, so the Qwen files are
//! parsed without TANDEM_SLOW too; each test SKIPs when its file is absent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tandem::model::config::{Arch, RopeStyle};
use tandem::model::gguf::GgufFile;
use tandem::model::loader::ModelFile;

fn model_path(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("TANDEM_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tandem/models"))
        })?;
    let p = dir.join(file);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} not found (set TANDEM_MODELS or run the fetch script)",
            p.display()
        );
        None
    }
}

fn type_counts(f: &GgufFile) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for t in f.tensors() {
        *m.entry(t.ty.name()).or_insert(0) += 1;
    }
    m
}

fn check(file: &str, arch: &str, blocks: u32, dim: u32, vocab: usize, types: &[(&str, usize)]) {
    let Some(path) = model_path(file) else { return };
    let f = GgufFile::open(&path).expect("parse");
    assert_eq!(f.get_str("general.architecture").unwrap(), arch);
    assert_eq!(f.get_u32(&format!("{arch}.block_count")).unwrap(), blocks);
    assert_eq!(f.get_u32(&format!("{arch}.embedding_length")).unwrap(), dim);
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        vocab
    );
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    let want: BTreeMap<&str, usize> = types.iter().copied().collect();
    assert_eq!(type_counts(&f), want, "tensor types of {file}");

    // Tensor data is aligned, in range, and in-file order matches offsets without overlap.
    let mut spans: Vec<(u64, u64)> = f.tensors().iter().map(|t| (t.offset, t.n_bytes)).collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "overlapping tensors in {file}");
    }
    let emb = f.tensor("token_embd.weight").expect("token_embd");
    assert_eq!(emb.dims, vec![dim as u64, vocab as u64]);
    let data = f.tensor_data(emb).unwrap();
    assert_eq!(data.len() as u64, emb.n_bytes);
    assert_eq!(f.header().data_offset % f.header().alignment, 0);
}

#[test]
fn smollm2_header() {
    check(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "llama",
        30,
        576,
        49152,
        &[("Q4_1", 210), ("F32", 61), ("Q8_0", 1)],
    );
}

#[test]
fn qwen_0_5b_header() {
    check(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2",
        24,
        896,
        151936,
        &[
            ("Q5_0", 133),
            ("F32", 121),
            ("Q8_0", 13),
            ("Q6_K", 12),
            ("Q4_K", 12),
        ],
    );
}

#[test]
fn qwen_1_5b_header() {
    check(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "qwen2",
        28,
        1536,
        151936,
        &[("Q4_K", 169), ("F32", 141), ("Q6_K", 29)],
    );
}

/// ModelFile::open on a real model: config from metadata, weight map checked against every
/// tensor's dims, and the description `tandem inspect` prints.
#[allow(clippy::too_many_arguments)]
fn check_config(
    file: &str,
    arch: Arch,
    (layers, dim, ffn, heads, kv, head_dim): (usize, usize, usize, usize, usize, usize),
    theta: f32,
    eps: f32,
    tied: bool,
    bias: bool,
    (bos, eos): (u32, u32),
) {
    let Some(path) = model_path(file) else { return };
    let m = ModelFile::open(&path).expect("open");
    let c = &m.config;
    assert_eq!(c.arch, arch);
    assert_eq!(
        (
            c.n_layers,
            c.dim,
            c.ffn_dim,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim
        ),
        (layers, dim, ffn, heads, kv, head_dim)
    );
    assert_eq!(c.rope_dims, head_dim);
    assert_eq!(c.rope_theta, theta);
    assert!((c.norm_eps - eps).abs() < eps * 1e-3, "eps {}", c.norm_eps);
    assert_eq!(
        c.rope_style,
        if arch == Arch::Llama {
            RopeStyle::Normal
        } else {
            RopeStyle::Neox
        }
    );
    assert_eq!((c.tied_embeddings, c.qkv_bias), (tied, bias));
    assert_eq!((c.bos_id, c.eos_id), (Some(bos), Some(eos)));
    assert_eq!(m.weights.layers.len(), layers);
    let out = m.tensor(&m.weights.output).unwrap();
    assert_eq!(out.dims, &[dim as u64, c.vocab_size as u64]);
    let d = m.describe();
    println!("{d}");
    assert!(
        d.contains(arch.name()) && d.contains(&format!("{layers} layers")),
        "{d}"
    );
}

#[test]
fn smollm2_config() {
    check_config(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        Arch::Llama,
        (30, 576, 1536, 9, 3, 64),
        1e5,
        1e-5,
        true,
        false,
        (1, 2),
    );
}

#[test]
fn qwen_0_5b_config() {
    check_config(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        Arch::Qwen2,
        (24, 896, 4864, 14, 2, 64),
        1e6,
        1e-6,
        false,
        true,
        (151643, 151645),
    );
}

#[test]
fn qwen_1_5b_config() {
    check_config(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        Arch::Qwen2,
        (28, 1536, 8960, 12, 2, 128),
        1e6,
        1e-6,
        false,
        true,
        (151643, 151645),
    );
}
