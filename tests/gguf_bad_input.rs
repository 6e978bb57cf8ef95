//! Hostile and broken GGUF files: every one is an error that says what and where, never a
//! panic and never a huge allocation.

use tandem::model::config::Arch;
use tandem::model::gguf::{parse_header, GgufFile, MetaValue};
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::model::writer::{GgufWriter, Layout, TinyModel};
use tandem::Error;

/// A small valid file: every metadata kind (strings, arrays, nested arrays) and three tensors.
fn small() -> (Vec<u8>, Layout) {
    let mut w = GgufWriter::new();
    w.meta_str("general.architecture", "llama")
        .meta_u32("llama.block_count", 1)
        .meta_f32("llama.rope.freq_base", 10000.0)
        .meta_bool("flag", true)
        .meta(
            "tokenizer.ggml.tokens",
            MetaValue::Array(
                ["a", "b", "<|im_end|>"]
                    .map(|s| MetaValue::String(s.into()))
                    .to_vec(),
            ),
        )
        .meta(
            "nested",
            MetaValue::Array(vec![MetaValue::Array(vec![
                MetaValue::I16(-1),
                MetaValue::I16(2),
            ])]),
        )
        .meta("big", MetaValue::U64(1 << 40));
    w.tensor_f32("first", &[4, 2], GgmlType::F32, &[0.5; 8])
        .unwrap();
    w.tensor_f32("second", &[32], GgmlType::Q8_0, &[0.25; 32])
        .unwrap();
    w.tensor_f32("third", &[3], GgmlType::F16, &[1.0; 3])
        .unwrap();
    w.to_bytes_with_layout().unwrap()
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn meta_at(l: &Layout, key: &str) -> (usize, usize) {
    let m = l.metadata.iter().find(|m| m.0 == key).unwrap();
    (m.1, m.2)
}

fn tensor_at<'a>(l: &'a Layout, name: &str) -> &'a tandem::model::writer::TensorLayout {
    l.tensors.iter().find(|t| t.name == name).unwrap()
}

/// The parse error's message; also checks GgufFile::from_bytes agrees.
fn err(bytes: &[u8]) -> String {
    let e = parse_header(bytes)
        .expect_err("must be an error")
        .to_string();
    let e2 = GgufFile::from_bytes(bytes.to_vec())
        .expect_err("must be an error")
        .to_string();
    assert_eq!(e, e2);
    e
}

fn assert_has(e: &str, parts: &[&str]) {
    eprintln!("  {e}");
    for p in parts {
        assert!(e.contains(p), "error {e:?} should mention {p:?}");
    }
}

#[test]
fn the_small_file_is_valid() {
    let (b, l) = small();
    let h = parse_header(&b).unwrap();
    assert_eq!(h.tensors.len(), 3);
    assert_eq!(h.data_offset as usize, l.data_offset);
}

#[test]
fn wrong_magic() {
    let (mut b, _) = small();
    b[..4].copy_from_slice(b"GGML");
    assert_has(&err(&b), &["offset 0", "magic", "GGML"]);
    assert_has(&err(b"PK\x03\x04 a zip"), &["offset 0", "not a GGUF"]);
}

#[test]
fn every_truncation_is_an_error() {
    let (b, _) = small();
    for n in 0..b.len() {
        let e = match parse_header(&b[..n]) {
            Ok(_) => panic!("prefix of {n} of {} bytes parsed", b.len()),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("offset"), "prefix {n}: {e}");
        assert!(
            e.contains("truncated") || e.contains("past the end") || e.contains("remain"),
            "prefix {n}: {e}"
        );
    }
    // The tiny model too, at a stride (it is ~100 KB): header, vocabulary and data.
    let m = TinyModel::new(Arch::Qwen2, GgmlType::Q8_0, 1)
        .build()
        .unwrap();
    for n in (0..m.len()).step_by(997).chain([m.len() - 1]) {
        assert!(parse_header(&m[..n]).is_err(), "tiny model prefix {n}");
    }
}

#[test]
fn truncated_tensor_data_names_the_tensor() {
    let (b, _) = small();
    let e = err(&b[..b.len() - 1]);
    assert_has(&e, &["tensor 'third'", "past the end"]);
}

#[test]
fn huge_string_length_is_not_allocated() {
    let (b, l) = small();
    // The key's own length.
    let (key_at, _) = meta_at(&l, "flag");
    let mut k = b.clone();
    put_u64(&mut k, key_at, 1 << 60);
    assert_has(
        &err(&k),
        &[
            &format!("offset {key_at}"),
            "key length",
            "1152921504606846976",
            "exceeds",
        ],
    );
    // A string value's length.
    let (_, type_at_arch) = meta_at(&l, "general.architecture");
    let mut v = b.clone();
    put_u64(&mut v, type_at_arch + 4, 1 << 60);
    assert_has(
        &err(&v),
        &[
            "key 'general.architecture'",
            "string value length",
            "exceeds",
        ],
    );
    // A string inside an array: element 0 of the token list.
    let (_, tok_type_at) = meta_at(&l, "tokenizer.ggml.tokens");
    let mut a = b.clone();
    put_u64(&mut a, tok_type_at + 4 + 4 + 8, u64::MAX);
    assert_has(&err(&a), &["key 'tokenizer.ggml.tokens'", "length"]);
}

#[test]
fn huge_array_count_is_not_allocated() {
    let (b, l) = small();
    let (_, type_at) = meta_at(&l, "tokenizer.ggml.tokens");
    let count_at = type_at + 4 + 4;
    for count in [1u64 << 60, u64::MAX, 1 << 20] {
        let mut a = b.clone();
        put_u64(&mut a, count_at, count);
        assert_has(
            &err(&a),
            &[
                &format!("offset {count_at}"),
                "key 'tokenizer.ggml.tokens'",
                "array count",
                &count.to_string(),
            ],
        );
    }
    // Nested array count.
    let (_, nested_at) = meta_at(&l, "nested");
    let mut n = b.clone();
    put_u64(&mut n, nested_at + 4 + 4 + 8 + 4, 1 << 60);
    assert_has(&err(&n), &["key 'nested'", "array count"]);
    // Metadata and tensor counts.
    let mut m = b.clone();
    put_u64(&mut m, l.tensor_count_at + 8, 1 << 60);
    assert_has(&err(&m), &["metadata count", "cannot fit"]);
    let mut t = b.clone();
    put_u64(&mut t, l.tensor_count_at, 1 << 60);
    assert_has(&err(&t), &["tensor count", "cannot fit"]);
}

#[test]
fn tensor_offset_past_the_end() {
    let (b, l) = small();
    let t = tensor_at(&l, "second");
    for off in [1u64 << 20, u64::MAX - 31] {
        let mut x = b.clone();
        put_u64(&mut x, t.offset_at, off);
        assert_has(
            &err(&x),
            &[
                &format!("offset {} (tensor 'second')", t.offset_at),
                "past the end",
            ],
        );
    }
}

#[test]
fn misaligned_tensor_offset() {
    let (b, l) = small();
    let t = tensor_at(&l, "second");
    let mut x = b.clone();
    let cur = u64::from_le_bytes(x[t.offset_at..t.offset_at + 8].try_into().unwrap());
    put_u64(&mut x, t.offset_at, cur + 4);
    assert_has(
        &err(&x),
        &["tensor 'second'", "not a multiple of the alignment 32"],
    );
}

#[test]
fn unknown_tensor_type() {
    let (b, l) = small();
    let t = tensor_at(&l, "first");
    let mut x = b.clone();
    put_u32(&mut x, t.type_at, 99);
    let e = parse_header(&x).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert_has(
        &e.to_string(),
        &[
            "type id 99",
            "tensor 'first'",
            &format!("offset {}", t.type_at),
        ],
    );
}

#[test]
fn bad_tensor_infos() {
    let (b, l) = small();
    let t = tensor_at(&l, "first");
    // More than four dims.
    let mut x = b.clone();
    put_u32(&mut x, t.n_dims_at, 5);
    assert_has(&err(&x), &["tensor 'first'", "n_dims is 5"]);
    // Dims whose product overflows u64.
    let mut x = b.clone();
    put_u64(&mut x, t.dims_at, 1 << 40);
    put_u64(&mut x, t.dims_at + 8, 1 << 40);
    assert_has(&err(&x), &["tensor 'first'", "overflows"]);
    // Product fits but the byte count overflows.
    let mut x = b.clone();
    put_u64(&mut x, t.dims_at, 1 << 62);
    put_u64(&mut x, t.dims_at + 8, 1);
    assert_has(&err(&x), &["tensor 'first'", "overflows"]);
    // A zero dimension.
    let mut x = b.clone();
    put_u64(&mut x, t.dims_at + 8, 0);
    assert_has(&err(&x), &["tensor 'first'", "zero"]);
    // Row length not a whole number of quant blocks.
    let q = tensor_at(&l, "second");
    let mut x = b.clone();
    put_u64(&mut x, q.dims_at, 16);
    assert_has(&err(&x), &["tensor 'second'", "row length 16", "Q8_0"]);
}

#[test]
fn duplicate_tensor_name() {
    // Renaming in place needs names of equal length: "ab" becomes "aa".
    let mut w = GgufWriter::new();
    w.tensor_f32("aa", &[4], GgmlType::F32, &[0.0; 4]).unwrap();
    w.tensor_f32("ab", &[4], GgmlType::F32, &[0.0; 4]).unwrap();
    let (mut x, lx) = w.to_bytes_with_layout().unwrap();
    x[lx.tensors[1].name_at + 8 + 1] = b'a';
    assert_has(
        &err(&x),
        &[
            &format!("offset {}", lx.tensors[1].name_at),
            "tensor 'aa'",
            "duplicate tensor name",
        ],
    );
    // Duplicate metadata key, likewise.
    let mut w = GgufWriter::new();
    w.meta_u32("k1", 1).meta_u32("k2", 2);
    let (mut y, ly) = w.to_bytes_with_layout().unwrap();
    y[ly.metadata[1].1 + 8 + 1] = b'1';
    assert_has(&err(&y), &["key 'k1'", "duplicate metadata key"]);
}

#[test]
fn bad_metadata_values() {
    let (b, l) = small();
    // Unknown value type.
    let (_, type_at) = meta_at(&l, "flag");
    let mut x = b.clone();
    put_u32(&mut x, type_at, 13);
    assert_has(
        &err(&x),
        &[
            &format!("offset {type_at}"),
            "key 'flag'",
            "unknown metadata value type 13",
        ],
    );
    // A bool that is neither 0 nor 1.
    let mut x = b.clone();
    x[type_at + 4] = 2;
    assert_has(&err(&x), &["key 'flag'", "bool"]);
    // Unknown array element type.
    let (_, tok_at) = meta_at(&l, "tokenizer.ggml.tokens");
    let mut x = b.clone();
    put_u32(&mut x, tok_at + 4, 77);
    assert_has(
        &err(&x),
        &["key 'tokenizer.ggml.tokens'", "element type 77"],
    );
    // A key that is not UTF-8.
    let (key_at, _) = meta_at(&l, "flag");
    let mut x = b.clone();
    x[key_at + 8] = 0xff;
    assert_has(&err(&x), &[&format!("offset {key_at}"), "not valid UTF-8"]);
}

#[test]
fn deep_array_nesting_is_refused() {
    // 100 arrays, each holding the next: recursion must stop early, not blow the stack.
    let mut v = MetaValue::Array(vec![MetaValue::U8(1)]);
    for _ in 0..100 {
        v = MetaValue::Array(vec![v]);
    }
    let mut w = GgufWriter::new();
    w.meta("deep", v);
    let b = w.to_bytes().unwrap();
    assert_has(&err(&b), &["key 'deep'", "nested"]);
}

#[test]
fn bad_versions_and_alignment() {
    let (b, _) = small();
    for (v, want) in [
        (1u32, "version 1"),
        (99, "version 99"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let mut x = b.clone();
        put_u32(&mut x, 4, v);
        let e = parse_header(&x).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert_has(&e.to_string(), &[want]);
    }
    for bad in [
        MetaValue::U32(48),
        MetaValue::U32(0),
        MetaValue::String("32".into()),
    ] {
        let mut w = GgufWriter::new();
        w.meta("general.alignment", bad);
        let e = err(&w.to_bytes().unwrap());
        assert_has(&e, &["general.alignment", "power of two"]);
    }
}

fn tiny_writer() -> GgufWriter {
    TinyModel::new(Arch::Llama, GgmlType::F32, 3)
        .writer()
        .unwrap()
}

fn model_err(w: &GgufWriter) -> Error {
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).expect("header parses");
    ModelFile::from_gguf(f).expect_err("model must be refused")
}

#[test]
fn unknown_architecture() {
    let mut w = tiny_writer();
    w.meta_str("general.architecture", "xyz");
    let e = model_err(&w);
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert_has(&e.to_string(), &["architecture 'xyz'"]);
}

#[test]
fn missing_or_mistyped_required_keys() {
    for key in [
        "general.architecture",
        "llama.block_count",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.context_length",
    ] {
        let mut b = tiny_writer();
        // Rename the key (same length keeps the writer simple: rebuild without it).
        let mut w = GgufWriter::new();
        let f = GgufFile::from_bytes(b.to_bytes().unwrap()).unwrap();
        for (k, v) in &f.header().metadata {
            if k != key {
                w.meta(k.clone(), v.clone());
            }
        }
        for t in f.tensors() {
            w.tensor_bytes(
                t.name.clone(),
                &t.dims,
                t.ty,
                f.tensor_data(t).unwrap().to_vec(),
            )
            .unwrap();
        }
        let e = model_err(&w).to_string();
        assert_has(&e, &[&format!("key '{key}'"), "missing"]);
        // Present but a string: mistyped.
        b.meta_str(key, "oops");
        if key != "general.architecture" {
            let e = model_err(&b).to_string();
            assert_has(&e, &[&format!("key '{key}'"), "expected"]);
        }
    }
}

#[test]
fn inconsistent_model_config() {
    // kv heads that do not divide heads.
    let mut w = tiny_writer();
    w.meta_u32("llama.attention.head_count_kv", 3);
    assert_has(&model_err(&w).to_string(), &["n_kv_heads", "do not divide"]);
    // heads that do not divide dim (no explicit head size).
    let mut w = tiny_writer();
    w.meta_u32("llama.attention.head_count", 5);
    assert_has(
        &model_err(&w).to_string(),
        &["llama.attention.head_count", "do not divide"],
    );
    // EOS outside the vocabulary.
    let mut w = tiny_writer();
    w.meta_u32("tokenizer.ggml.eos_token_id", 100_000);
    assert_has(
        &model_err(&w).to_string(),
        &["eos_id", "outside the vocabulary"],
    );
}

#[test]
fn weight_map_names_missing_and_misshapen_tensors() {
    let spec = TinyModel::new(Arch::Qwen2, GgmlType::F32, 3);
    let good = spec.writer().unwrap();
    let f = GgufFile::from_bytes(good.to_bytes().unwrap()).unwrap();
    let rebuild = |skip: &str, reshape: Option<(&str, Vec<u64>)>| {
        let mut w = GgufWriter::new();
        for (k, v) in &f.header().metadata {
            w.meta(k.clone(), v.clone());
        }
        for t in f.tensors() {
            if t.name == skip {
                continue;
            }
            let mut dims = t.dims.clone();
            if let Some((n, d)) = &reshape {
                if *n == t.name {
                    dims = d.clone();
                }
            }
            w.tensor_bytes(
                t.name.clone(),
                &dims,
                t.ty,
                f.tensor_data(t).unwrap().to_vec(),
            )
            .unwrap();
        }
        model_err(&w).to_string()
    };
    let e = rebuild("blk.1.ffn_down.weight", None);
    assert_has(
        &e,
        &["tensor 'blk.1.ffn_down.weight'", "missing", "[128, 64]"],
    );
    let e = rebuild("blk.0.attn_v.bias", None);
    assert_has(&e, &["tensor 'blk.0.attn_v.bias'", "missing"]);
    // Same element count, transposed: caught by dims, not by size.
    let e = rebuild("", Some(("blk.0.ffn_up.weight", vec![128, 64])));
    assert_has(
        &e,
        &[
            "tensor 'blk.0.ffn_up.weight'",
            "expected dims [64, 128]",
            "found [128, 64]",
        ],
    );
    // Output head of the wrong vocabulary size.
    let vocab = f.get_array("tokenizer.ggml.tokens").unwrap().len() as u64;
    let mut w = GgufWriter::new();
    for (k, v) in &f.header().metadata {
        w.meta(k.clone(), v.clone());
    }
    for t in f.tensors() {
        let (dims, data) = if t.name == "output.weight" {
            (
                vec![64, vocab - 1],
                vec![0u8; 64 * (vocab as usize - 1) * 4],
            )
        } else {
            (t.dims.clone(), f.tensor_data(t).unwrap().to_vec())
        };
        w.tensor_bytes(t.name.clone(), &dims, t.ty, data).unwrap();
    }
    assert_has(
        &model_err(&w).to_string(),
        &[
            "tensor 'output.weight'",
            &format!("found [64, {}]", vocab - 1),
        ],
    );
}

#[test]
fn unsupported_rope_scaling() {
    let mut w = tiny_writer();
    w.meta_str("llama.rope.scaling.type", "yarn");
    assert_has(&model_err(&w).to_string(), &["RoPE scaling 'yarn'"]);
}

/// A linear RoPE scale that is not a positive number is refused naming the field.
#[test]
fn bad_linear_rope_scale() {
    for factor in [-2.0, f32::NAN, f32::INFINITY] {
        let mut w = tiny_writer();
        w.meta_str("llama.rope.scaling.type", "linear")
            .meta_f32("llama.rope.scaling.factor", factor);
        assert_has(&model_err(&w).to_string(), &["rope_linear_scale"]);
    }
}

/// RoPE frequency factors of the wrong size, or not positive, are refused naming the tensor
/// (the tiny llama has head_dim 16: 8 rotary pairs).
#[test]
fn bad_rope_frequency_factors() {
    let mut w = tiny_writer();
    w.tensor_f32("rope_freqs.weight", &[7], GgmlType::F32, &[1.0; 7])
        .unwrap();
    assert_has(
        &model_err(&w).to_string(),
        &["tensor 'rope_freqs.weight'", "expected dims [8], found [7]"],
    );
    let mut factors = [1.0; 8];
    factors[5] = -2.0;
    let mut w = tiny_writer();
    w.tensor_f32("rope_freqs.weight", &[8], GgmlType::F32, &factors)
        .unwrap();
    assert_has(
        &model_err(&w).to_string(),
        &["tensor 'rope_freqs.weight'", "frequency factor 5 is -2"],
    );
    // The right size loads.
    let mut w = tiny_writer();
    w.tensor_f32("rope_freqs.weight", &[8], GgmlType::F32, &[2.0; 8])
        .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let m = ModelFile::from_gguf(f).unwrap();
    assert_eq!(m.rope_freq_factors().unwrap(), Some(vec![2.0; 8]));
}

/// A qwen3 q/k norm of the wrong length, or a missing one, is refused naming the tensor.
#[test]
fn bad_qwen3_qk_norms() {
    let spec = TinyModel::new(Arch::Qwen3, GgmlType::F32, 3);
    let hd = spec.head_dim as u64;
    let w = spec.writer().unwrap();
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let bytes = rewrite_without(&f, "blk.1.attn_k_norm.weight", Some(hd - 1));
    let e = model_err_bytes(bytes).to_string();
    assert_has(
        &e,
        &[
            "tensor 'blk.1.attn_k_norm.weight'",
            &format!("expected dims [{hd}], found [{}]", hd - 1),
        ],
    );
    let bytes = rewrite_without(&f, "blk.0.attn_q_norm.weight", None);
    let e = model_err_bytes(bytes).to_string();
    assert_has(
        &e,
        &[
            "tensor 'blk.0.attn_q_norm.weight'",
            "required tensor is missing",
        ],
    );
}

/// gemma3: a missing or misshapen post norm is refused naming the tensor; a window given as a
/// string is a format error naming the key; final logit soft-capping (which llama.cpp's gemma3
/// graph applies only without a sliding window) is refused there; a gemma3 without the window
/// key has no sliding layer; and gemma3 from safetensors is refused (its norm weights lack
/// the GGUF converter's + 1).
#[test]
fn bad_gemma3_metadata_and_tensors() {
    let spec = TinyModel::new(Arch::Gemma3, GgmlType::F32, 3);
    let dim = spec.dim as u64;
    let f = GgufFile::from_bytes(spec.writer().unwrap().to_bytes().unwrap()).unwrap();
    let bytes = rewrite_without(&f, "blk.3.post_ffw_norm.weight", None);
    assert_has(
        &model_err_bytes(bytes).to_string(),
        &[
            "tensor 'blk.3.post_ffw_norm.weight'",
            "required tensor is missing",
        ],
    );
    let bytes = rewrite_without(&f, "blk.0.post_attention_norm.weight", Some(dim - 1));
    assert_has(
        &model_err_bytes(bytes).to_string(),
        &[
            "tensor 'blk.0.post_attention_norm.weight'",
            &format!("expected dims [{dim}], found [{}]", dim - 1),
        ],
    );
    let mut w = spec.writer().unwrap();
    w.meta_str("gemma3.attention.sliding_window", "512");
    assert_has(
        &model_err(&w).to_string(),
        &["gemma3.attention.sliding_window", "expected"],
    );
    let no_window = TinyModel {
        sliding_window: 0,
        ..spec.clone()
    };
    let mut w = no_window.writer().unwrap();
    w.meta_f32("gemma3.final_logit_softcapping", 30.0);
    let e = model_err(&w);
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert_has(
        &e.to_string(),
        &["soft-capping", "without a sliding window"],
    );
    let m = ModelFile::from_gguf(
        GgufFile::from_bytes(no_window.writer().unwrap().to_bytes().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(m.config.sliding_window, 0);
    assert!((0..m.config.n_layers).all(|i| !m.config.layer_is_sliding(i)));
    // With the window the cap is ignored, as llama.cpp does.
    let mut w = spec.writer().unwrap();
    w.meta_f32("gemma3.final_logit_softcapping", 30.0);
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert!(ModelFile::from_gguf(f).is_ok());
    let json = r#"{"model_type": "gemma3", "hidden_size": 640, "num_attention_heads": 4,
        "num_hidden_layers": 18, "intermediate_size": 2048, "rms_norm_eps": 1e-6,
        "vocab_size": 262144, "max_position_embeddings": 32768}"#;
    let e = tandem::model::config::ModelConfig::from_hf_json(json, |_| false).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert_has(&e.to_string(), &["gemma3", "GGUF"]);
}

/// `f`'s tensors rewritten without `name`, or with `name` shortened to `len` elements.
fn rewrite_without(f: &GgufFile, name: &str, len: Option<u64>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in &f.header().metadata {
        w.meta(k.clone(), v.clone());
    }
    for t in f.tensors() {
        let data = f.tensor_data(t).unwrap();
        if t.name == name {
            if let Some(n) = len {
                w.tensor_bytes(t.name.clone(), &[n], t.ty, data[..n as usize * 4].to_vec())
                    .unwrap();
            }
            continue;
        }
        w.tensor_bytes(t.name.clone(), &t.dims, t.ty, data.to_vec())
            .unwrap();
    }
    w.to_bytes().unwrap()
}

fn model_err_bytes(bytes: Vec<u8>) -> Error {
    let f = GgufFile::from_bytes(bytes).expect("header parses");
    ModelFile::from_gguf(f).expect_err("model must be refused")
}

#[test]
fn total_array_elements_are_capped() {
    // 2^24 + 1 one-byte elements fit in the file's bytes but would decode to ~0.5 GB.
    let n = (1u64 << 24) + 1;
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(b"bulk");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    b.resize(b.len() + n as usize, 0);
    assert_has(&err(&b), &["key 'bulk'", "exceeds the limit"]);
}
