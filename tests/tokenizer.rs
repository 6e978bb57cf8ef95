//! Tokenizer behaviour on small synthetic vocabularies (no model files): merges, special and
//! user-defined tokens, errors on bad metadata, chat template features, and the streaming
//! detokenizer in both of its modes (byte-level table and HF-decoder window).

use std::collections::BTreeMap;

use tandem::model::gguf::MetaValue;
use tandem::tokenizer::{
    byte_level_chars, ChatMessage, ChatTemplate, Detokenizer, TokenKind, Tokenizer,
};
use tandem::Error;

/// Token strings: the 256 byte-level characters (ids 0..256), then `extra`.
fn tiny_tokens(extra: &[&str]) -> Vec<String> {
    let mut tokens: Vec<String> = byte_level_chars().iter().map(|c| c.to_string()).collect();
    tokens.extend(extra.iter().map(|s| s.to_string()));
    tokens
}

const EXTRA: &[&str] = &["Ġt", "he", "Ġthe", "<|im_start|>", "<|im_end|>", "<tool>"];
const MERGES: &[&str] = &["Ġ t", "h e", "Ġt he"];

fn strings(v: &[String]) -> MetaValue {
    MetaValue::Array(v.iter().map(|s| MetaValue::String(s.clone())).collect())
}

fn tiny_meta() -> BTreeMap<String, MetaValue> {
    let tokens = tiny_tokens(EXTRA);
    let types: Vec<MetaValue> = tokens
        .iter()
        .map(|t| {
            MetaValue::I32(match t.as_str() {
                "<|im_start|>" | "<|im_end|>" => 3,
                "<tool>" => 4,
                _ => 1,
            })
        })
        .collect();
    let merges: Vec<String> = MERGES.iter().map(|s| s.to_string()).collect();
    let mut m = BTreeMap::new();
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String("gpt2".into()),
    );
    m.insert(
        "tokenizer.ggml.pre".into(),
        MetaValue::String("gpt-2".into()),
    );
    m.insert("tokenizer.ggml.tokens".into(), strings(&tokens));
    m.insert("tokenizer.ggml.token_type".into(), MetaValue::Array(types));
    m.insert("tokenizer.ggml.merges".into(), strings(&merges));
    m.insert(
        "tokenizer.ggml.eos_token_id".into(),
        MetaValue::U32(id_of("<|im_end|>")),
    );
    m.insert(
        "tokenizer.ggml.bos_token_id".into(),
        MetaValue::U32(id_of("<|im_start|>")),
    );
    m.insert(
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(false),
    );
    m
}

fn id_of(extra: &str) -> u32 {
    256 + EXTRA.iter().position(|e| *e == extra).expect("extra token") as u32
}

fn byte_id(b: u8) -> u32 {
    b as u32
}

fn tiny() -> Tokenizer {
    Tokenizer::from_gguf_metadata(&tiny_meta()).expect("tiny tokenizer")
}

#[test]
fn merges_apply_in_rank_order() {
    let tok = tiny();
    assert_eq!(tok.vocab_size(), 256 + EXTRA.len());
    assert_eq!(tok.encode(" the", true).unwrap(), vec![id_of("Ġthe")]);
    // "the" at the start has no space: t + (h e).
    assert_eq!(
        tok.encode("the", true).unwrap(),
        vec![byte_id(b't'), id_of("he")]
    );
    assert_eq!(
        tok.encode("the the", false).unwrap(),
        vec![byte_id(b't'), id_of("he"), id_of("Ġthe")]
    );
    assert_eq!(
        tok.decode(&[byte_id(b't'), id_of("he"), id_of("Ġthe")])
            .unwrap(),
        "the the"
    );
    assert!(tok.encode("", true).unwrap().is_empty());
}

#[test]
fn special_tokens_only_with_special_user_defined_always() {
    let tok = tiny();
    let text = "<|im_start|>the<tool><|im_end|>";
    let with = tok.encode(text, true).unwrap();
    assert_eq!(
        with,
        vec![
            id_of("<|im_start|>"),
            byte_id(b't'),
            id_of("he"),
            id_of("<tool>"),
            id_of("<|im_end|>")
        ]
    );
    let without = tok.encode(text, false).unwrap();
    assert!(!without.contains(&id_of("<|im_start|>")) && !without.contains(&id_of("<|im_end|>")));
    // User-defined tokens are split out even as plain text (llama.cpp and HF both do this).
    assert!(without.contains(&id_of("<tool>")), "{without:?}");
    assert_eq!(tok.decode(&with).unwrap(), text);
    assert_eq!(tok.decode(&without).unwrap(), text);
    assert_eq!(tok.decode_skip_special(&with).unwrap(), "the<tool>");
    assert_eq!(
        tok.token_kind(id_of("<|im_end|>")),
        Some(TokenKind::Special)
    );
    assert_eq!(
        tok.token_kind(id_of("<tool>")),
        Some(TokenKind::UserDefined)
    );
    assert_eq!(tok.token_id("<|im_end|>"), Some(id_of("<|im_end|>")));
    assert_eq!(tok.eos_ids()[0], id_of("<|im_end|>"));
    assert_eq!(tok.bos_id(), Some(id_of("<|im_start|>")));
    assert!(!tok.add_bos());
}

#[test]
fn unknown_pre_tokenizer_falls_back_to_gpt2_split() {
    let mut meta = tiny_meta();
    meta.insert(
        "tokenizer.ggml.pre".into(),
        MetaValue::String("no-such-pre".into()),
    );
    let fallback = Tokenizer::from_gguf_metadata(&meta).expect("fallback");
    let tok = tiny();
    for text in ["the the", "  x\n\ty 12 3", "don't"] {
        assert_eq!(
            fallback.encode(text, true).unwrap(),
            tok.encode(text, true).unwrap(),
            "{text:?}"
        );
    }
}

fn err_of(meta: &BTreeMap<String, MetaValue>) -> Error {
    match Tokenizer::from_gguf_metadata(meta) {
        Ok(_) => panic!("bad metadata was accepted"),
        Err(e) => e,
    }
}

fn assert_tokenizer_err(e: Error, needles: &[&str]) {
    let msg = e.to_string();
    assert!(
        matches!(e, Error::Tokenizer(_)),
        "expected Error::Tokenizer, got {e:?}"
    );
    for n in needles {
        assert!(msg.contains(n), "{msg:?} does not mention {n:?}");
    }
}

#[test]
fn merge_naming_unknown_token_is_an_error() {
    let mut meta = tiny_meta();
    let merges = vec!["Ġ t".to_string(), "h zz".to_string()];
    meta.insert("tokenizer.ggml.merges".into(), strings(&merges));
    assert_tokenizer_err(
        err_of(&meta),
        &[
            "tokenizer.ggml.merges[1]",
            "\"zz\"",
            "not in tokenizer.ggml.tokens",
        ],
    );
}

#[test]
fn merge_making_unknown_token_is_an_error() {
    let mut meta = tiny_meta();
    let merges = vec!["a b".to_string()];
    meta.insert("tokenizer.ggml.merges".into(), strings(&merges));
    assert_tokenizer_err(err_of(&meta), &["tokenizer.ggml.merges[0]", "\"ab\""]);
}

#[test]
fn merge_without_separator_is_an_error() {
    let mut meta = tiny_meta();
    meta.insert(
        "tokenizer.ggml.merges".into(),
        strings(&["Ġ t".to_string(), "he".to_string()]),
    );
    assert_tokenizer_err(
        err_of(&meta),
        &["tokenizer.ggml.merges[1]", "separated by a space"],
    );
}

#[test]
fn missing_or_malformed_token_list_is_an_error() {
    let mut meta = tiny_meta();
    meta.remove("tokenizer.ggml.tokens");
    assert_tokenizer_err(err_of(&meta), &["no tokenizer.ggml.tokens"]);

    let mut meta = tiny_meta();
    meta.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::Array(vec![MetaValue::U32(7)]),
    );
    assert_tokenizer_err(
        err_of(&meta),
        &["tokenizer.ggml.tokens[0]", "expected a string"],
    );

    let mut meta = tiny_meta();
    meta.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::String("x".into()),
    );
    assert_tokenizer_err(
        err_of(&meta),
        &["tokenizer.ggml.tokens", "expected a string array"],
    );

    let mut meta = tiny_meta();
    meta.insert(
        "tokenizer.ggml.token_type".into(),
        MetaValue::Array(vec![MetaValue::I32(1); 3]),
    );
    assert_tokenizer_err(err_of(&meta), &["token_type has 3 entries", "has 262"]);

    let mut meta = tiny_meta();
    meta.remove("tokenizer.ggml.merges");
    assert_tokenizer_err(err_of(&meta), &["no tokenizer.ggml.merges"]);

    let mut meta = tiny_meta();
    meta.insert(
        "tokenizer.ggml.eos_token_id".into(),
        MetaValue::U32(100_000),
    );
    assert_tokenizer_err(
        err_of(&meta),
        &[
            "tokenizer.ggml.eos_token_id = 100000",
            "outside the vocabulary",
        ],
    );
}

#[test]
fn unsupported_tokenizer_model_is_unsupported() {
    let mut meta = tiny_meta();
    meta.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String("bert".into()),
    );
    let e = err_of(&meta);
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    assert!(
        e.to_string().contains("'bert'") && e.to_string().contains("WordPiece"),
        "{e}"
    );

    let mut meta = tiny_meta();
    meta.remove("tokenizer.ggml.model");
    assert_tokenizer_err(err_of(&meta), &["no tokenizer.ggml.model"]);
}

#[test]
fn out_of_range_ids_are_invalid() {
    let tok = tiny();
    let e = tok.decode(&[1, 9999]).unwrap_err();
    assert!(
        matches!(e, Error::Invalid(_)) && e.to_string().contains("9999"),
        "{e:?}"
    );
    let mut d = Detokenizer::new(&tok, false);
    assert!(matches!(d.push(9999), Err(Error::Invalid(_))));
}

#[test]
fn bad_tokenizer_json_is_an_error() {
    let e = Tokenizer::from_tokenizer_json(b"{not json").unwrap_err();
    assert!(
        matches!(e, Error::Tokenizer(_)) && e.to_string().contains("tokenizer.json"),
        "{e:?}"
    );
    let e = Tokenizer::from_tokenizer_json(br#"{"model": {"type": "Nope"}}"#).unwrap_err();
    assert!(matches!(e, Error::Tokenizer(_)), "{e:?}");
}

#[test]
fn vocabulary_check_finds_the_first_difference() {
    let tok = tiny();
    tok.check_same_vocab(&tiny()).expect("same vocabulary");
    let mut meta = tiny_meta();
    let mut tokens = tiny_tokens(EXTRA);
    tokens[id_of("<tool>") as usize] = "<tools>".into();
    meta.insert("tokenizer.ggml.tokens".into(), strings(&tokens));
    let other = Tokenizer::from_gguf_metadata(&meta).unwrap();
    let e = tok.check_same_vocab(&other).unwrap_err();
    assert!(
        matches!(e, Error::Mismatch(_)) && e.to_string().contains("261"),
        "{e:?}"
    );
}

// ---- streaming detokenizer -------------------------------------------------------------------

fn stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut d = Detokenizer::new(tok, skip_special);
    let mut deltas: Vec<String> = ids.iter().map(|&id| d.push(id).unwrap()).collect();
    deltas.push(d.finish().unwrap());
    deltas
}

#[test]
fn detokenizer_holds_bytes_of_a_split_character() {
    let tok = tiny();
    // No merges cover these: every byte is its own token.
    let text = "a😀é中";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids.len(), text.len());
    let deltas = stream(&tok, &ids, false);
    assert_eq!(deltas.concat(), text);
    assert_eq!(deltas[..5], ["a", "", "", "", "😀"]);
    assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')));
}

#[test]
fn detokenizer_replaces_invalid_bytes_like_decode() {
    let tok = tiny();
    // 0xE2 0x82 then 'x': a broken character, then 0xFF (never valid), then an unfinished 0xF0.
    let ids: Vec<u32> = [0xE2u8, 0x82, b'x', 0xFF, b'y', 0xF0]
        .iter()
        .map(|&b| byte_id(b))
        .collect();
    let full = tok.decode(&ids).unwrap();
    assert_eq!(full, "\u{FFFD}x\u{FFFD}y\u{FFFD}");
    assert_eq!(stream(&tok, &ids, false).concat(), full);
}

#[test]
fn detokenizer_can_skip_special_tokens() {
    let tok = tiny();
    let ids = tok.encode("<|im_start|>the<|im_end|>", true).unwrap();
    assert_eq!(stream(&tok, &ids, true).concat(), "the");
    assert_eq!(
        stream(&tok, &ids, false).concat(),
        "<|im_start|>the<|im_end|>"
    );
}

/// A SentencePiece-style tokenizer.json (Llama/Mistral layout: ▁ for spaces, byte fallback,
/// a decoder that strips the leading space), which is not byte-level.
fn spm_tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), i.into());
    }
    for b in 0..256u32 {
        vocab.insert(format!("<0x{b:02X}>"), (3 + b).into());
    }
    for (i, t) in ["▁", "a", "b", "▁a", "▁b"].iter().enumerate() {
        vocab.insert(t.to_string(), (259 + i).into());
    }
    let added = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": ["▁ a", "▁ b"]}
    })
    .to_string()
}

#[test]
fn sentencepiece_tokenizer_json_streams_through_the_window() {
    let tok = Tokenizer::from_tokenizer_json(spm_tokenizer_json().as_bytes()).expect("load");
    assert_eq!(tok.bos_id(), Some(1));
    assert!(tok.add_bos(), "the post-processor adds <s>");
    assert_eq!(tok.eos_ids(), &[2]);
    let text = "a é b😀a";
    let ids = tok.encode(text, true).unwrap();
    assert!(!ids.contains(&1), "encode never adds BOS");
    assert!(
        ids.contains(&(3 + 0xC3)),
        "é goes through byte fallback: {ids:?}"
    );
    assert_eq!(tok.decode(&ids).unwrap(), text);
    let deltas = stream(&tok, &ids, false);
    // Incomplete characters are held back until their last byte token arrives.
    assert_eq!(deltas, ["a", " ", "", "é", " b", "", "", "", "😀", "a", ""]);
    assert_eq!(deltas.concat(), text, "{deltas:?}");
    assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
    // Special tokens: recognised only with special = true.
    assert_eq!(tok.encode("</s>", true).unwrap(), vec![2]);
    assert_ne!(tok.encode("</s>", false).unwrap(), vec![2]);
}

// ---- chat templates -----------------------------------------------------------------------------

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("  Be brief.  "),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
    ]
}

#[test]
fn template_without_model_template_is_chatml() {
    let tok = tiny();
    assert!(tok.chat_template().is_none());
    let p = tok
        .apply_chat_template(&[ChatMessage::user("Hi")], true)
        .unwrap();
    assert_eq!(p, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    let p = tok
        .apply_chat_template(&[ChatMessage::user("Hi")], false)
        .unwrap();
    assert_eq!(p, "<|im_start|>user\nHi<|im_end|>\n");
}

#[test]
fn model_template_gets_bos_eos_and_hf_whitespace_rules() {
    let mut meta = tiny_meta();
    // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before one.
    let src = "{{ bos_token }}\n{% for m in messages %}\n    {% if m.role == 'system' %}\n[{{ m.content.strip() }}]\n    {% else %}\n{{ m.role.upper() }}: {{ m.content }}{{ eos_token }}\n    {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}ASSISTANT:{% endif %}";
    meta.insert(
        "tokenizer.chat_template".into(),
        MetaValue::String(src.into()),
    );
    let tok = Tokenizer::from_gguf_metadata(&meta).unwrap();
    assert_eq!(tok.chat_template(), Some(src));
    let p = tok.apply_chat_template(&conversation(), true).unwrap();
    assert_eq!(
        p,
        "<|im_start|>\n[Be brief.]\nUSER: Hi<|im_end|>\nASSISTANT: Hello!<|im_end|>\nASSISTANT:"
    );
}

#[test]
fn template_raise_exception_is_an_error() {
    let t = ChatTemplate::new(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok",
        "",
        "",
    );
    assert_eq!(t.render(&[ChatMessage::user("x")], false).unwrap(), "ok");
    let e = t.render(&[ChatMessage::system("x")], false).unwrap_err();
    assert!(matches!(e, Error::Tokenizer(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("first message must be from the user"),
        "{e}"
    );
}

#[test]
fn template_syntax_error_is_an_error() {
    let e = ChatTemplate::new("{% for m in messages %}{{ m.content }", "", "")
        .render(&conversation(), true)
        .unwrap_err();
    assert!(
        matches!(e, Error::Tokenizer(_)) && e.to_string().contains("does not parse"),
        "{e:?}"
    );
}

#[test]
fn template_tojson_writes_like_python() {
    let t = ChatTemplate::new(
        "{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}",
        "",
        "",
    );
    let tools = serde_json::json!({"tools": [{"name": "f<x>", "args": [1, "é"]}]});
    let out = t.render_with(&conversation(), false, &tools).unwrap();
    assert_eq!(
        out,
        "[{\"args\": [1, \"é\"], \"name\": \"f<x>\"}]|{\n  \"args\": [\n    1,\n    \"é\"\n  ],\n  \"name\": \"f<x>\"\n}"
    );
}

// ---- SentencePiece (GGUF `llama`) ---------------------------------------------------------------

/// A small SentencePiece vocabulary: `<unk> <s> </s>`, the 256 byte tokens, then pieces with
/// scores, a control token and a user-defined one. Token ids: 0..3 specials, 3..259 bytes.
const SPM_PIECES: &[(&str, f32, i32)] = &[
    ("▁", -1.0, 1),
    ("a", -2.0, 1),
    ("b", -2.0, 1),
    ("c", -2.0, 1),
    ("ab", -3.0, 1),
    ("bc", -1.5, 1),
    ("▁a", -2.5, 1),
    ("▁abc", -0.5, 1),
    ("<turn>", 0.0, 3),
    ("<t>", 0.0, 4),
    ("<unused>", 0.0, 5),
];

fn spm_meta(add_space_prefix: bool) -> BTreeMap<String, MetaValue> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut scores = vec![0.0f32; 3];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    for (t, s, ty) in SPM_PIECES {
        tokens.push(t.to_string());
        scores.push(*s);
        types.push(*ty);
    }
    let mut m = BTreeMap::new();
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String("llama".into()),
    );
    m.insert("tokenizer.ggml.tokens".into(), strings(&tokens));
    m.insert(
        "tokenizer.ggml.scores".into(),
        MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect()),
    );
    m.insert(
        "tokenizer.ggml.token_type".into(),
        MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
    );
    m.insert(
        "tokenizer.ggml.add_space_prefix".into(),
        MetaValue::Bool(add_space_prefix),
    );
    m
}

fn spm_id(piece: &str) -> u32 {
    3 + 256 + SPM_PIECES.iter().position(|p| p.0 == piece).expect("piece") as u32
}

fn spm_byte(b: u8) -> u32 {
    3 + b as u32
}

#[test]
fn spm_merges_by_score_with_byte_fallback() {
    let tok = Tokenizer::from_gguf_metadata(&spm_meta(false)).expect("SentencePiece vocabulary");
    // llama.cpp's defaults where the file is silent: BOS 1, EOS 2, BOS added.
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(tok.add_bos());
    assert!(!tok.add_space_prefix());
    // "abc": b+c (-1.5) beats a+b (-3.0), then a + bc is no token: [a, bc].
    assert_eq!(
        tok.encode("abc", false).unwrap(),
        vec![spm_id("a"), spm_id("bc")]
    );
    // " abc": ▁+a (-2.5) … "▁abc" needs ▁a + bc; ▁a(-2.5) is merged after bc(-1.5), then
    // ▁a + bc = ▁abc (-0.5).
    assert_eq!(tok.encode(" abc", false).unwrap(), vec![spm_id("▁abc")]);
    // "ab" alone merges (a+b is the only pair).
    assert_eq!(tok.encode("ab", false).unwrap(), vec![spm_id("ab")]);
    // Characters that are no token fall back to their UTF-8 bytes.
    assert_eq!(
        tok.encode("é", false).unwrap(),
        vec![spm_byte(0xC3), spm_byte(0xA9)]
    );
    for text in ["abc", " abc", "x é ab", "a\nb"] {
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "{ids:?}");
    }
}

#[test]
fn spm_special_and_user_defined_tokens() {
    let tok = Tokenizer::from_gguf_metadata(&spm_meta(false)).unwrap();
    let (turn, t) = (spm_id("<turn>"), spm_id("<t>"));
    assert_eq!(tok.token_kind(turn), Some(TokenKind::Special));
    assert_eq!(tok.token_kind(t), Some(TokenKind::UserDefined));
    // Control tokens only with `special`; user-defined ones always.
    assert_eq!(
        tok.encode("a<turn>b<t>c", true).unwrap(),
        vec![spm_id("a"), turn, spm_id("b"), t, spm_id("c")]
    );
    let plain = tok.encode("<turn><t>", false).unwrap();
    assert!(!plain.contains(&turn) && plain.ends_with(&[t]), "{plain:?}");
    assert_eq!(tok.decode(&plain).unwrap(), "<turn><t>");
    // Decoding: control text as written (skipped on request), unused tokens as nothing.
    let ids = [spm_id("a"), turn, spm_id("<unused>"), spm_id("▁a")];
    assert_eq!(tok.decode(&ids).unwrap(), "a<turn> a");
    assert_eq!(tok.decode_skip_special(&ids).unwrap(), "a a");
    assert_eq!(tok.token_id("<turn>"), Some(turn));
    assert!(tok.is_eos(2));
}

#[test]
fn spm_space_prefix_is_added_and_removed_again() {
    let tok = Tokenizer::from_gguf_metadata(&spm_meta(true)).unwrap();
    assert!(tok.add_space_prefix());
    // "abc" becomes "▁abc"; after a special token the next word gets a space too.
    assert_eq!(tok.encode("abc", false).unwrap(), vec![spm_id("▁abc")]);
    let turn = spm_id("<turn>");
    assert_eq!(
        tok.encode("abc<turn>abc", true).unwrap(),
        vec![spm_id("▁abc"), turn, spm_id("▁abc")]
    );
    // decode drops the first space only (as llama_detokenize does); a stream keeps it.
    let ids = tok.encode("abc", false).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "abc");
    let mut d = Detokenizer::new(&tok, false);
    assert_eq!(d.push_all(&ids).unwrap() + &d.finish().unwrap(), " abc");
    // Skipping a leading BOS keeps the space (llama_detokenize with remove_special).
    assert_eq!(tok.decode_skip_special(&[1, ids[0]]).unwrap(), " abc");
}

#[test]
fn spm_bad_metadata_is_a_clear_error() {
    let err = |m: &BTreeMap<String, MetaValue>| match Tokenizer::from_gguf_metadata(m) {
        Err(e @ Error::Tokenizer(_)) => e.to_string(),
        other => panic!("expected a tokenizer error, got {other:?}"),
    };
    let mut m = spm_meta(false);
    let MetaValue::Array(scores) = m.get_mut("tokenizer.ggml.scores").unwrap() else {
        unreachable!()
    };
    scores[260] = MetaValue::F32(f32::NAN);
    let e = err(&m);
    assert!(e.contains("scores[260]") && e.contains("finite"), "{e}");
    let mut m = spm_meta(false);
    m.insert(
        "tokenizer.ggml.scores".into(),
        MetaValue::Array(vec![MetaValue::F32(0.0); 5]),
    );
    assert!(err(&m).contains("scores has 5 entries"));
    let mut m = spm_meta(false);
    let MetaValue::Array(tokens) = m.get_mut("tokenizer.ggml.tokens").unwrap() else {
        unreachable!()
    };
    tokens[3] = MetaValue::String("<0xZZ>".into());
    assert!(err(&m).contains("token_type 6 (byte)"));
    // A vocabulary without byte tokens cannot encode what it lacks, and says so.
    let mut m = spm_meta(false);
    let MetaValue::Array(tokens) = m.get_mut("tokenizer.ggml.tokens").unwrap() else {
        unreachable!()
    };
    tokens[3 + 0xC3] = MetaValue::String("gone".into());
    let MetaValue::Array(types) = m.get_mut("tokenizer.ggml.token_type").unwrap() else {
        unreachable!()
    };
    types[3 + 0xC3] = MetaValue::I32(1);
    let tok = Tokenizer::from_gguf_metadata(&m).unwrap();
    let e = tok.encode("é", false).unwrap_err().to_string();
    assert!(e.contains("<0xC3>"), "{e}");
}

#[test]
fn a_base_model_without_chat_template_says_so() {
    let tok = Tokenizer::from_gguf_metadata(&spm_meta(false)).unwrap();
    assert!(tok.chat_template().is_none());
    let e = tok
        .apply_chat_template(&[ChatMessage::user("Hi")], true)
        .unwrap_err();
    assert!(matches!(e, Error::NoChatTemplate(_)), "{e:?}");
    assert!(e.to_string().contains("no chat template"), "{e}");
}

#[test]
fn a_completion_prompt_gets_the_bos_the_model_adds_as_tandem_run_does() {
    // The server's and the npm package's `/v1/completions` prompt is continued raw text, as
    // `tandem run` without `--chat`: BOS first where the model adds one (Gemma 3, SPM).
    let tok = Tokenizer::from_gguf_metadata(&spm_meta(false)).expect("SentencePiece vocabulary");
    let limits = tandem::api::Limits {
        n_ctx: 64,
        max_tokens: 8,
        max_draft: 4,
        method: tandem::engine::MethodSpec::plain(),
    };
    let req: tandem::api::CompletionRequest =
        serde_json::from_str(r#"{"prompt": "abc"}"#).expect("request");
    let r = req.resolve(&tok, &limits).expect("resolved");
    assert_eq!(r.prompt, tok.encode_raw_prompt("abc").unwrap());
    assert_eq!(r.prompt[0], 1, "no BOS");
    assert_eq!(&r.prompt[1..], tok.encode("abc", false).unwrap());
    let req: tandem::api::CompletionRequest =
        serde_json::from_str(r#"{"prompt": [5, 6]}"#).expect("request");
    assert_eq!(
        req.resolve(&tok, &limits).expect("ids").prompt,
        vec![5, 6],
        "ids as given"
    );
}
