//! The limits on what a model file can make tandem do, each against a hostile input: GGUF
//! headers that claim 2^60 tensors, a 2^40-byte string or arrays nested a million deep; chat
//! templates that loop forever, recurse without end or write gigabytes; tokenizers with
//! absurd merges, tokens or ids; model configs with absurd sizes. Each is a clear error,
//! quickly, before any large allocation. Also the regression tests for what the fuzz targets
//! in `fuzz/` found (RELIABILITY.md lists them).

use std::collections::BTreeMap;
use std::time::Instant;

use tandem::model::config::{Arch, ModelConfig};
use tandem::model::gguf::{parse_header, MetaValue};
use tandem::model::quant::GgmlType;
use tandem::model::writer::{tiny_vocab, GgufWriter};
use tandem::tokenizer::{
    ChatMessage, ChatTemplate, Detokenizer, Tokenizer, MAX_TOKEN_BYTES, TEMPLATE_LIMITS,
};
use tandem::Error;

fn gguf_head(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn kv_head(b: &mut Vec<u8>, key: &str, ty: u32) {
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
}

fn format_err(bytes: &[u8]) -> String {
    match parse_header(bytes) {
        Err(e @ Error::Format { .. }) => e.to_string(),
        other => panic!("expected a format error, got {other:?}"),
    }
}

fn assert_has(e: &str, parts: &[&str]) {
    eprintln!("  {e}");
    for p in parts {
        assert!(e.contains(p), "error {e:?} should mention {p:?}");
    }
}

#[test]
fn gguf_claiming_2_60_tensors_is_refused_before_allocating() {
    let e = format_err(&gguf_head(1 << 60, 0));
    assert_has(&e, &["tensor count 1152921504606846976", "cannot fit"]);
    let e = format_err(&gguf_head(0, 1 << 60));
    assert_has(&e, &["metadata count 1152921504606846976", "cannot fit"]);
}

#[test]
fn gguf_claiming_a_2_40_byte_string_is_refused_before_allocating() {
    let mut b = gguf_head(0, 1);
    kv_head(&mut b, "general.name", 8);
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    b.extend_from_slice(b"only a few bytes follow");
    let e = format_err(&b);
    assert_has(&e, &["key 'general.name'", "length 1099511627776 exceeds"]);
}

#[test]
fn gguf_with_arrays_nested_a_million_deep_is_refused_without_recursing() {
    let mut b = gguf_head(0, 1);
    kv_head(&mut b, "deep", 9);
    for _ in 0..1_000_000 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    let e = format_err(&b);
    assert_has(&e, &["key 'deep'", "nested more than 8 deep"]);
}

fn render(template: &str) -> Result<String, Error> {
    let messages = [ChatMessage::user("hi")];
    ChatTemplate::new(template, "<s>", "</s>").render(&messages, true)
}

fn template_err(template: &str) -> String {
    let t0 = Instant::now();
    let e = render(template).expect_err("a hostile template must fail");
    assert!(matches!(e, Error::Tokenizer(_)), "{e:?}");
    // Not a timing test: a hang would take hours; a limit stops this in well under a minute
    // even on a slow CPU in a debug build.
    assert!(t0.elapsed().as_secs() < 60, "took {:?}", t0.elapsed());
    e.to_string()
}

#[test]
fn a_template_that_loops_forever_runs_out_of_fuel() {
    // 10^10 iterations (range() is capped at 10^5 elements, so nest two).
    let e = template_err(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    );
    assert_has(&e, &["ran out of fuel", &TEMPLATE_LIMITS.fuel.to_string()]);
}

#[test]
fn a_template_that_recurses_without_end_hits_the_recursion_limit() {
    let e = template_err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert_has(&e, &["recursion limit"]);
    // Deep nesting in the source is refused by the parser.
    let deep = "{% if true %}".repeat(1000) + &"{% endif %}".repeat(1000);
    let e = template_err(&deep);
    assert_has(&e, &["does not parse", "recursion"]);
}

#[test]
fn a_template_that_writes_gigabytes_stops_at_the_output_limit() {
    // 10^5 × 10^5 bytes = 10 GB if nothing stopped it.
    let e = template_err("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}");
    assert_has(
        &e,
        &[
            "output exceeds the limit",
            &TEMPLATE_LIMITS.max_output_bytes.to_string(),
        ],
    );
}

#[test]
fn template_size_and_tojson_indent_are_capped() {
    let huge = "x".repeat(TEMPLATE_LIMITS.max_source_bytes + 1);
    assert_has(&template_err(&huge), &["chat template is", "limit"]);
    let e = template_err("{{ messages | tojson(indent=1000000000000) }}");
    assert_has(&e, &["tojson", "indent", "limit"]);
    // A sane indent still works.
    let out = render("{{ messages | tojson(indent=2) }}").unwrap();
    assert!(out.contains("\n  {"), "{out}");
}

#[test]
fn real_conversations_stay_far_inside_the_template_limits() {
    // A thousand turns through a ChatML template with the usual string methods.
    let template = "{% for m in messages %}{% if m.role == 'system' %}{{ m.content.strip() }}{% endif %}\
                    {{ '<|im_start|>' + m.role + '\\n' + m.content | trim + '<|im_end|>\\n' }}{% endfor %}\
                    {% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    let messages: Vec<ChatMessage> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                ChatMessage::user(format!("question {i} with some words in it"))
            } else {
                ChatMessage::assistant(format!("answer {i}, a little longer than the question"))
            }
        })
        .collect();
    let out = ChatTemplate::new(template, "", "")
        .render(&messages, true)
        .expect("a long real conversation renders");
    assert!(out.ends_with("<|im_start|>assistant\n"));
    assert_eq!(out.matches("<|im_start|>").count(), 1001);
}

fn strings<S: AsRef<str>>(v: &[S]) -> MetaValue {
    MetaValue::Array(
        v.iter()
            .map(|s| MetaValue::String(s.as_ref().to_string()))
            .collect(),
    )
}

fn tokenizer_meta(tokens: &[String], merges: &[String]) -> BTreeMap<String, MetaValue> {
    let mut m = BTreeMap::new();
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String("gpt2".into()),
    );
    m.insert(
        "tokenizer.ggml.pre".into(),
        MetaValue::String("gpt-2".into()),
    );
    m.insert("tokenizer.ggml.tokens".into(), strings(tokens));
    m.insert("tokenizer.ggml.merges".into(), strings(merges));
    m
}

fn tokenizer_err(meta: &BTreeMap<String, MetaValue>) -> String {
    match Tokenizer::from_gguf_metadata(meta) {
        Err(e @ Error::Tokenizer(_)) => e.to_string(),
        other => panic!("expected a tokenizer error, got {other:?}"),
    }
}

#[test]
fn a_tokenizer_with_absurd_merges_or_tokens_is_refused() {
    let (tokens, _, merges) = tiny_vocab();
    Tokenizer::from_gguf_metadata(&tokenizer_meta(&tokens, &merges)).expect("the tiny vocabulary");
    // More merges than tokens: the same valid merge a million times.
    let many = vec![merges[0].clone(); 1_000_000];
    let e = tokenizer_err(&tokenizer_meta(&tokens, &many));
    assert_has(
        &e,
        &[
            "tokenizer.ggml.merges",
            "1000000 merges",
            "fewer merges than tokens",
        ],
    );
    // A token (and so a merge result) longer than any real one.
    let mut long = tokens.clone();
    long.push("a".repeat(MAX_TOKEN_BYTES + 1));
    let e = tokenizer_err(&tokenizer_meta(&long, &merges));
    assert_has(&e, &["tokenizer.ggml.tokens[", "bytes long", "limit"]);
}

#[test]
fn a_tokenizer_json_with_a_huge_token_id_is_refused_before_allocating() {
    // One token with id 4·10^9 would size a table of four billion strings.
    let json = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 4000000000}, "merges": []}}"#;
    let e = Tokenizer::from_tokenizer_json(json.as_bytes()).expect_err("must be refused");
    assert_has(&e.to_string(), &["highest token id is 4000000000", "limit"]);
}

#[test]
fn a_gguf_from_the_writer_with_hostile_metadata_round_trips_to_the_same_errors() {
    // The writer makes real files, so the limits hold on bytes, not just on in-memory maps.
    let (tokens, _, merges) = tiny_vocab();
    let many = vec![merges[0].clone(); 100_000];
    let mut w = GgufWriter::new();
    for (k, v) in tokenizer_meta(&tokens, &many) {
        w.meta(k, v);
    }
    let bytes = w.to_bytes().unwrap();
    let header = parse_header(&bytes).expect("a well-formed file");
    let e = tokenizer_err(&header.metadata);
    assert_has(&e, &["100000 merges"]);
}

#[test]
fn a_model_config_with_a_billion_layers_is_refused_before_the_weight_map() {
    // validate() used to accept up to 2^30 layers, and the weight map then built a dozen
    // tensor names for each: gigabytes from one metadata number.
    let json = r#"{"model_type": "llama", "num_hidden_layers": 1000000000, "hidden_size": 8,
        "intermediate_size": 16, "num_attention_heads": 2, "rms_norm_eps": 1e-6,
        "vocab_size": 10, "max_position_embeddings": 64}"#;
    let e = ModelConfig::from_hf_json(json, |_| false).expect_err("must be refused");
    assert_has(
        &e.to_string(),
        &[
            "n_layers",
            "1000000000 is more than the limit of 1024 layers",
        ],
    );
    let mut w = tandem::model::writer::TinyModel::new(Arch::Llama, GgmlType::F32, 1)
        .writer()
        .unwrap();
    w.meta_u32("llama.block_count", 1_000_000_000);
    let file = tandem::model::gguf::GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let e = ModelConfig::from_gguf(&file).expect_err("must be refused");
    assert_has(&e.to_string(), &["n_layers", "limit of 1024 layers"]);
}

/// Found by the `tokenizer_json` fuzz target: a vocabulary in which two strings share an id
/// ("H" and "~" both 93) decoded "Hello" as "~ello", whichever string the hash map gave last.
#[test]
fn a_tokenizer_json_with_two_tokens_under_one_id_is_refused() {
    let json = r#"{"model": {"type": "BPE", "vocab": {"H": 0, "e": 1, "~": 0}, "merges": []}}"#;
    let e = Tokenizer::from_tokenizer_json(json.as_bytes()).expect_err("must be refused");
    assert_has(
        &e.to_string(),
        &["tokenizer.json gives the id 0 to two tokens, \"H\" and \"~\""],
    );
}

/// Found by the `tokenizer_json` fuzz target: the tokenizers crate's `Strip` decoder with
/// `stop` past a token's length subtracts below zero and panics (an index out of bounds in a
/// release build) when decoding.
#[test]
fn a_tokenizer_json_strip_decoder_that_would_panic_is_refused() {
    let json = r#"{"model": {"type": "BPE", "vocab": {"a": 0, " ": 1}, "merges": []},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 5}]}}"#;
    let e = Tokenizer::from_tokenizer_json(json.as_bytes()).expect_err("must be refused");
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    assert_has(&e.to_string(), &["decoder Strip with stop = 5"]);
    // stop = 0, as real SentencePiece files have it, still loads and decodes.
    let ok = json.replace("\"stop\": 5", "\"stop\": 0");
    let tok = Tokenizer::from_tokenizer_json(ok.as_bytes()).expect("stop = 0 is fine");
    assert_eq!(tok.decode(&[1, 0]).unwrap(), "a");
}

/// Found by the `tokenizer_json` fuzz target (#8): the tokenizers crate reads decoders
/// untagged, so a `Strip` whose `"type"` key is missing (or misspelt) is still a `Strip`, and
/// with `stop > 0` it panicked on a short token although the check above looked for
/// `"type": "Strip"`. Every object of the decoder's tree with a `stop` is checked now.
#[test]
fn a_strip_decoder_without_its_type_key_is_refused_too() {
    for strip in [
        r#"{"content": " ", "start": 1, "stop": 1}"#,
        r#"{"Open_Ptype": "Strip", "content": " ", "start": 1, "stop": 1}"#,
    ] {
        let json = format!(
            r#"{{"model": {{"type": "BPE", "vocab": {{"a": 0, " ": 1}}, "merges": []}},
            "decoder": {{"type": "Sequence", "decoders": [{{"type": "Fuse"}}, {strip}]}}}}"#
        );
        let e = Tokenizer::from_tokenizer_json(json.as_bytes()).expect_err("must be refused");
        assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
        assert_has(&e.to_string(), &["decoder Strip with stop = 1"]);
    }
}

/// Found by the `tokenizer_json` fuzz target (#7): a SentencePiece-style decoder whose `Strip`
/// takes up to two spaces off the start of the text. The stream re-decodes a window of ids
/// that started at a lone `▁`, whose text the strip removed entirely, so it went on to eat the
/// next token's space too: the streamed text lost spaces that `decode` keeps.
#[test]
fn a_stream_keeps_the_spaces_a_strip_decoder_takes_only_from_the_start() {
    let json = r#"{"model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true,
        "vocab": {"<unk>": 0, "<s>": 1, "<0x41>": 2, "\u2581": 3, "h": 4, "i": 5,
                  "\u2581h": 6, "\u2581hi": 7},
        "merges": ["\u2581 h", "\u2581h i"]},
        "added_tokens": [{"id": 0, "content": "<unk>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true},
                         {"id": 1, "content": "<s>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 2, "stop": 0}]}}"#;
    let tok = Tokenizer::from_tokenizer_json(json.as_bytes()).expect("a valid tokenizer.json");
    let text = "hi hi A   i       h i h hi";
    let ids = tok.encode(text, false).expect("encodes");
    let decoded = tok.decode(&ids).expect("decodes");
    let mut stream = Detokenizer::new(&tok, false);
    let mut streamed = stream.push_all(&ids).expect("streams");
    streamed.push_str(&stream.finish().expect("finishes"));
    assert_eq!(streamed, decoded, "ids {ids:?}");
    assert_eq!(decoded, text);
}

#[test]
fn a_sentencepiece_vocabulary_with_absurd_scores_or_tokens_is_refused() {
    let spm = |tokens: Vec<String>, scores: Vec<MetaValue>| {
        let mut m = BTreeMap::new();
        m.insert(
            "tokenizer.ggml.model".into(),
            MetaValue::String("llama".into()),
        );
        m.insert("tokenizer.ggml.tokens".into(), strings(&tokens));
        m.insert("tokenizer.ggml.scores".into(), MetaValue::Array(scores));
        m
    };
    let tokens: Vec<String> = ["<unk>", "<s>", "</s>", "a"].map(String::from).to_vec();
    let fine = vec![MetaValue::F32(0.0); 4];
    Tokenizer::from_gguf_metadata(&spm(tokens.clone(), fine.clone())).expect("a tiny vocabulary");
    // A score no f32 holds, and an infinite one.
    for bad in [MetaValue::F64(1e300), MetaValue::F32(f32::INFINITY)] {
        let mut scores = fine.clone();
        scores[3] = bad;
        let e = tokenizer_err(&spm(tokens.clone(), scores));
        assert_has(&e, &["tokenizer.ggml.scores[3]", "finite"]);
    }
    // Scores for another vocabulary's size.
    let e = tokenizer_err(&spm(tokens.clone(), vec![MetaValue::F32(0.0); 1_000_000]));
    assert_has(&e, &["1000000 entries", "has 4"]);
    // A token longer than any real one.
    let mut long = tokens.clone();
    long.push("a".repeat(MAX_TOKEN_BYTES + 1));
    let e = tokenizer_err(&spm(long, vec![MetaValue::F32(0.0); 5]));
    assert_has(&e, &["tokenizer.ggml.tokens[4]", "bytes long", "limit"]);
}
