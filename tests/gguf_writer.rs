//! The GGUF writer round-trips through the parser, and tiny_model builds valid llama/qwen2
//! models in every quant type the project uses, with a sane vocabulary.

use std::collections::HashSet;

use tandem::model::config::{Activation, Arch, RopeStyle};
use tandem::model::gguf::{parse_header, GgufFile, MetaValue};
use tandem::model::loader::ModelFile;
use tandem::model::quant::{dequantize, GgmlType};
use tandem::model::writer::{gpt2_byte_tokens, tiny_model, tiny_vocab, GgufWriter, TinyModel};

#[test]
fn writer_round_trips_metadata_and_tensors() {
    let mut w = GgufWriter::new();
    w.alignment(64).unwrap();
    let values = vec![
        ("u8", MetaValue::U8(200)),
        ("i8", MetaValue::I8(-5)),
        ("u16", MetaValue::U16(65000)),
        ("i16", MetaValue::I16(-32000)),
        ("u32", MetaValue::U32(4_000_000_000)),
        ("i32", MetaValue::I32(-2_000_000_000)),
        ("u64", MetaValue::U64(u64::MAX)),
        ("i64", MetaValue::I64(i64::MIN)),
        ("f32", MetaValue::F32(-0.25)),
        ("f64", MetaValue::F64(1e300)),
        ("bool", MetaValue::Bool(true)),
        ("str", MetaValue::String("ĠHello ✓".into())),
        ("empty", MetaValue::Array(vec![])),
        (
            "nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::String("a".into())]),
                MetaValue::Array(vec![]),
            ]),
        ),
    ];
    for (k, v) in &values {
        w.meta(*k, v.clone());
    }
    let a: Vec<f32> = (0..96).map(|i| i as f32 * 0.5 - 7.0).collect();
    w.tensor_f32("a", &[32, 3], GgmlType::F32, &a).unwrap();
    w.tensor_f32("b", &[7], GgmlType::F16, &a[..7]).unwrap();
    w.tensor_f32(
        "c",
        &[64, 2],
        GgmlType::Q8_0,
        &[a.clone(), a[..32].to_vec()].concat(),
    )
    .unwrap();
    let (bytes, layout) = w.to_bytes_with_layout().unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.header().alignment, 64);
    assert_eq!(f.header().data_offset as usize, layout.data_offset);
    for (k, v) in &values {
        assert_eq!(f.metadata(k), Some(v), "{k}");
    }
    for tl in &layout.tensors {
        let t = f.tensor(&tl.name).unwrap();
        assert_eq!(t.offset % 64, 0);
        assert_eq!(f.header().data_offset + t.offset, tl.data_at as u64);
    }
    let (ta, da) = f.tensor_bytes("a").unwrap();
    assert_eq!((ta.dims.clone(), ta.ty), (vec![32, 3], GgmlType::F32));
    assert_eq!(dequantize(GgmlType::F32, da, 96).unwrap(), a);
    let (_, db) = f.tensor_bytes("b").unwrap();
    assert_eq!(dequantize(GgmlType::F16, db, 7).unwrap(), a[..7].to_vec());
    let (tc, dc) = f.tensor_bytes("c").unwrap();
    assert_eq!(tc.n_bytes, 4 * 34);
    let c = dequantize(GgmlType::Q8_0, dc, 128).unwrap();
    // Q8_0 step is max|x|/127 per 32-block: at most 40.5/127/2 ≈ 0.16 off here.
    assert!(c[..96].iter().zip(&a).all(|(x, y)| (x - y).abs() <= 0.17));
}

#[test]
fn writer_refuses_inconsistent_input() {
    let mut w = GgufWriter::new();
    assert!(w.alignment(48).is_err());
    assert!(w
        .tensor_bytes("x", &[4], GgmlType::F32, vec![0; 15])
        .is_err());
    assert!(
        w.tensor_f32("x", &[48], GgmlType::Q8_0, &[0.0; 48])
            .is_err(),
        "48 % 32 != 0"
    );
    assert!(w
        .tensor_f32("x", &[4, 2], GgmlType::F32, &[0.0; 7])
        .is_err());
    w.tensor_f32("x", &[4], GgmlType::F32, &[0.0; 4]).unwrap();
    assert!(
        w.tensor_f32("x", &[4], GgmlType::F32, &[0.0; 4]).is_err(),
        "duplicate"
    );
    w.meta(
        "mixed",
        MetaValue::Array(vec![MetaValue::U8(1), MetaValue::I8(1)]),
    );
    let e = w.to_bytes().unwrap_err().to_string();
    assert!(e.contains("mixed"), "{e}");
}

#[test]
fn tiny_vocab_is_byte_level_bpe() {
    let bytes = gpt2_byte_tokens();
    assert_eq!(bytes.len(), 256);
    assert_eq!(bytes[0], (b'!', '!'));
    assert!(bytes.contains(&(b' ', 'Ġ')) && bytes.contains(&(b'\n', 'Ċ')));
    let (tokens, types, merges) = tiny_vocab();
    assert_eq!(tokens.len(), types.len());
    assert!((280..=320).contains(&tokens.len()), "{}", tokens.len());
    assert_eq!(
        tokens.iter().collect::<HashSet<_>>().len(),
        tokens.len(),
        "unique"
    );
    // Every merge joins two tokens that exist earlier and yields the next token.
    for (i, m) in merges.iter().enumerate() {
        let (l, r) = m.split_once(' ').unwrap();
        let pos = |s: &str| tokens.iter().position(|t| t == s);
        let out = 256 + i;
        assert!(
            pos(l).is_some_and(|p| p < out) && pos(r).is_some_and(|p| p < out),
            "{m}"
        );
        assert_eq!(tokens[out], format!("{l}{r}"));
    }
    for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        let p = tokens.iter().position(|t| t == s).unwrap();
        assert_eq!(types[p], 3, "{s} is a control token");
    }
}

#[test]
fn tiny_models_load_in_every_type() {
    use GgmlType::*;
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma3] {
        for ty in [F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K] {
            let bytes = tiny_model(arch, ty, 7).unwrap();
            parse_header(&bytes).unwrap();
            let m = ModelFile::from_gguf(GgufFile::from_bytes(bytes.clone()).unwrap())
                .unwrap_or_else(|e| panic!("{arch:?} {ty:?}: {e}"));
            let spec = TinyModel::new(arch, ty, 7);
            let c = &m.config;
            assert_eq!(c.arch, arch);
            let layers = if arch == Arch::Gemma3 { 6 } else { 2 };
            assert_eq!(
                (c.n_layers, c.dim, c.ffn_dim),
                (layers, spec.dim, spec.ffn_dim)
            );
            assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (4, 2, spec.head_dim));
            // qwen3's and gemma3's head size is not dim / heads: it comes from
            // `attention.key_length`.
            let gemma = arch == Arch::Gemma3;
            let hd = if arch == Arch::Qwen3 || gemma {
                spec.dim / 2
            } else {
                spec.dim / 4
            };
            assert_eq!(c.head_dim, hd);
            assert_eq!(c.qk_norm, arch == Arch::Qwen3 || gemma);
            assert!(!c.rope_freq_factors);
            assert_eq!(c.tied_embeddings, arch == Arch::Llama || gemma);
            // gemma3: √dim embeddings, post norms, GeGLU, a window of 8 on layers 0-4.
            assert_eq!(c.post_norms, gemma);
            assert_eq!(
                c.embed_scale,
                if gemma { (spec.dim as f32).sqrt() } else { 1.0 }
            );
            assert_eq!(
                c.activation,
                if gemma {
                    Activation::GeluTanh
                } else {
                    Activation::Silu
                }
            );
            assert_eq!(c.sliding_window, if gemma { 8 } else { 0 });
            let sliding: Vec<bool> = (0..c.n_layers).map(|i| c.layer_is_sliding(i)).collect();
            if gemma {
                assert_eq!(sliding, [true, true, true, true, true, false]);
                assert_eq!(c.layer_rope_theta(0), 10_000.0);
                assert_eq!(c.layer_rope_theta(5), spec.rope_theta);
                assert!(m.tensor("blk.5.post_ffw_norm.weight").is_ok());
            } else {
                assert!(sliding.iter().all(|s| !s));
            }
            assert_eq!(c.attention_scale, 1.0 / (hd as f32).sqrt());
            assert_eq!(c.qkv_bias, arch == Arch::Qwen2);
            assert_eq!(
                c.rope_style,
                if arch == Arch::Llama {
                    RopeStyle::Normal
                } else {
                    RopeStyle::Neox
                }
            );
            assert_eq!(c.vocab_size, tiny_vocab().0.len());
            let g = m.gguf().unwrap();
            assert_eq!(
                g.get_str_array("tokenizer.ggml.tokens").unwrap()[c.eos_id.unwrap() as usize],
                "<|im_end|>"
            );
            assert!(g
                .get_str("tokenizer.chat_template")
                .unwrap()
                .contains("<|im_start|>"));
            let q = m.tensor("blk.1.attn_q.weight").unwrap();
            assert_eq!(q.ty, ty);
            let w = dequantize(ty, q.data, q.n_elements() as usize).unwrap();
            let bound = 1.0 / (spec.dim as f32).sqrt();
            let max = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(
                max <= bound * 1.2 && max > bound * 0.5,
                "{ty:?}: max |w| {max}"
            );
            let norm = m.tensor("blk.0.attn_norm.weight").unwrap();
            assert_eq!(norm.ty, F32);
            // Same seed, same bytes; another seed, other weights.
            assert_eq!(tiny_model(arch, ty, 7).unwrap(), bytes);
            assert_ne!(tiny_model(arch, ty, 8).unwrap(), bytes);
        }
    }
}

#[test]
fn every_supported_type_writes_reads_and_is_described() {
    // Types without a quantizer (Q2_K, Q3_K, IQ4_NL, IQ4_XS) go in as bytes, as a
    // converter's output would; the parser gives back the same bytes and type, and the
    // tensor summary (`tandem inspect`) names each type without a "no kernels" warning.
    let mut w = GgufWriter::new();
    let mut want = Vec::new();
    for (i, ty) in tandem::quant::SUPPORTED.into_iter().enumerate() {
        let dims = [256u64, 2];
        let bytes = tandem::quant::random_blocks(ty, 512, i as u64).unwrap();
        w.tensor_bytes(format!("t.{}", ty.name()), &dims, ty, bytes.clone())
            .unwrap();
        want.push((ty, bytes));
    }
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let mut list = Vec::new();
    for (ty, bytes) in &want {
        let (t, data) = f.tensor_bytes(&format!("t.{}", ty.name())).unwrap();
        assert_eq!((t.ty, t.dims.clone()), (*ty, vec![256, 2]), "{}", ty.name());
        assert_eq!(data, &bytes[..], "{}", ty.name());
        list.push((t.name.as_str(), t.dims.as_slice(), t.ty, t.n_bytes));
    }
    let summary = tandem::model::loader::describe_tensors(&list);
    for (ty, _) in &want {
        assert!(summary.contains(&format!("{} 1 (", ty.name())), "{summary}");
    }
    assert!(!summary.contains("no kernels"), "{summary}");
    // A type tandem cannot run is still named, with the warning.
    let mut w = GgufWriter::new();
    w.tensor_bytes("q8k", &[256], GgmlType::Q8_K, vec![0; 292])
        .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let t = f.tensor("q8k").unwrap();
    let summary = tandem::model::loader::describe_tensors(&[(
        t.name.as_str(),
        t.dims.as_slice(),
        t.ty,
        t.n_bytes,
    )]);
    assert!(summary.contains("no kernels for Q8_K"), "{summary}");
}
