//! The tokenizer on the real reference models against llama.cpp's fixtures
//! (`tests/fixtures/tokenize-*.jsonl`, `greedy-*.jsonl`): token ids with and without special
//! tokens, decoding, chat templates, streaming detokenization, and a `tokenizer.json` built
//! independently from the same vocabulary.
//!
//! Only GGUF metadata is read (the file is memory-mapped; building the 151,936-token Qwen
//! tokenizer takes a fraction of a second), so the Qwen files are tested without TANDEM_SLOW.
//! Each test prints SKIP and returns when its model file is absent (CI fetches every one).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use tandem::model::gguf::{GgufFile, MetaValue};
use tandem::tokenizer::{ChatMessage, Detokenizer, Tokenizer};
use tandem::Error;

const SMOLLM: (&str, &str) = ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m");
const QWEN_05: (&str, &str) = (
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-0.5b",
);
const QWEN_15: (&str, &str) = (
    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-1.5b",
);
const ALL: [(&str, &str); 3] = [SMOLLM, QWEN_05, QWEN_15];
/// SentencePiece (GGUF `llama`), a base model without a chat template.
const GEMMA3: (&str, &str) = ("gemma-3-270m-q4_k_m.gguf", "gemma3-270m");

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

/// Each model's GGUF file, opened once per test binary (tests run in parallel).
fn gguf(file: &str) -> Option<&'static GgufFile> {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static GgufFile>>> = OnceLock::new();
    let path = model_path(file)?;
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    let f = cache
        .entry(file.to_string())
        .or_insert_with(|| Box::leak(Box::new(GgufFile::open(&path).expect("parse GGUF"))));
    Some(*f)
}

fn tokenizer(file: &str) -> Option<Tokenizer> {
    static CACHE: OnceLock<Mutex<HashMap<String, Tokenizer>>> = OnceLock::new();
    let f = gguf(file)?;
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    Some(
        cache
            .entry(file.to_string())
            .or_insert_with(|| Tokenizer::from_gguf(f).expect("tokenizer from GGUF"))
            .clone(),
    )
}

fn fixture(name: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/tests/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).expect("id list")
}

/// Every tokenize record: `ids` with special tokens, `ids_no_special` without, and decoding
/// both gives the text back.
fn check_tokenize(tok: &Tokenizer, fixture_name: &str) {
    let records = fixture(&format!("tokenize-{fixture_name}"));
    assert!(
        records.len() >= 20,
        "{fixture_name}: only {} records",
        records.len()
    );
    let mut failures = Vec::new();
    for r in &records {
        let text = r["text"].as_str().expect("text");
        let (want, want_plain) = (ids(&r["ids"]), ids(&r["ids_no_special"]));
        let got = tok.encode(text, true).unwrap();
        let got_plain = tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!(
                "special {text:?}:\n  got  {got:?}\n  want {want:?}"
            ));
        }
        if got_plain != want_plain {
            failures.push(format!(
                "plain {text:?}:\n  got  {got_plain:?}\n  want {want_plain:?}"
            ));
        }
        assert_eq!(tok.decode(&want).unwrap(), text, "decode(ids)");
        assert_eq!(
            tok.decode(&want_plain).unwrap(),
            text,
            "decode(ids_no_special)"
        );
    }
    assert!(
        failures.is_empty(),
        "{fixture_name}: {} mismatches\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Records with `messages`: the model's template renders exactly the fixture's prompt, and the
/// prompt tokenizes to `prompt_ids`.
fn check_chat_template(tok: &Tokenizer, fixture_name: &str) {
    let records = fixture(&format!("greedy-{fixture_name}"));
    let mut chats = 0;
    for r in &records {
        let prompt = r["prompt"].as_str().expect("prompt");
        assert_eq!(
            tok.encode(prompt, true).unwrap(),
            ids(&r["prompt_ids"]),
            "prompt_ids of {prompt:?}"
        );
        if let Some(m) = r.get("messages") {
            let messages: Vec<ChatMessage> = serde_json::from_value(m.clone()).expect("messages");
            assert_eq!(tok.apply_chat_template(&messages, true).unwrap(), prompt);
            chats += 1;
        }
    }
    assert!(chats >= 3, "{fixture_name}: only {chats} chat records");
}

/// Streams every fixture id list (tokenize texts, prompts and generated tokens) one id at a time:
/// the deltas add up to `decode`, and none holds U+FFFD unless the decoded text does. Also checks
/// the fixtures really contain tokens that end inside a character, so holding bytes back is tested.
fn check_detokenizer(tok: &Tokenizer, fixture_name: &str) {
    check_detokenizer_with(tok, fixture_name, Vec::new());
}

/// [`check_detokenizer`] with more id lists to stream than the fixtures have.
fn check_detokenizer_with(tok: &Tokenizer, fixture_name: &str, extra: Vec<Vec<u32>>) {
    let mut lists: Vec<Vec<u32>> = fixture(&format!("tokenize-{fixture_name}"))
        .iter()
        .flat_map(|r| [ids(&r["ids"]), ids(&r["ids_no_special"])])
        .collect();
    lists.extend(extra);
    for r in fixture(&format!("greedy-{fixture_name}")) {
        let mut all = ids(&r["prompt_ids"]);
        all.extend(ids(&r["tokens"]));
        lists.push(ids(&r["tokens"]));
        lists.push(all);
    }
    let mut partial_tokens = 0;
    for list in &lists {
        for skip_special in [false, true] {
            let full = if skip_special {
                tok.decode_skip_special(list)
            } else {
                tok.decode(list)
            }
            .unwrap();
            let mut d = Detokenizer::new(tok, skip_special);
            let mut streamed = String::new();
            for &id in list {
                let delta = d.push(id).unwrap();
                assert!(
                    !delta.contains('\u{FFFD}') || full.contains('\u{FFFD}'),
                    "{fixture_name}: delta {delta:?} after id {id} of {list:?}"
                );
                streamed.push_str(&delta);
                if !skip_special && tok.decode(&[id]).unwrap().contains('\u{FFFD}') {
                    partial_tokens += 1;
                }
            }
            streamed.push_str(&d.finish().unwrap());
            assert_eq!(streamed, full, "{fixture_name}: streamed text of {list:?}");
        }
    }
    assert!(
        partial_tokens > 0,
        "{fixture_name}: no fixture token ends inside a character"
    );
}

#[test]
fn smollm2_tokenize_fixtures() {
    let Some(tok) = tokenizer(SMOLLM.0) else {
        return;
    };
    check_tokenize(&tok, SMOLLM.1);
}

#[test]
fn qwen_0_5b_tokenize_fixtures() {
    let Some(tok) = tokenizer(QWEN_05.0) else {
        return;
    };
    check_tokenize(&tok, QWEN_05.1);
}

#[test]
fn qwen_1_5b_tokenize_fixtures() {
    let Some(tok) = tokenizer(QWEN_15.0) else {
        return;
    };
    check_tokenize(&tok, QWEN_15.1);
}

#[test]
fn chat_templates_render_fixture_prompts() {
    for (file, name) in ALL {
        let Some(tok) = tokenizer(file) else { continue };
        assert!(tok.chat_template().is_some(), "{name} ships a template");
        check_chat_template(&tok, name);
    }
}

#[test]
fn detokenizer_streams_fixture_texts() {
    for (file, name) in ALL {
        let Some(tok) = tokenizer(file) else { continue };
        check_detokenizer(&tok, name);
    }
}

#[test]
fn special_ids_from_metadata() {
    if let Some(tok) = tokenizer(SMOLLM.0) {
        assert_eq!(tok.vocab_size(), 49_152);
        assert_eq!(tok.bos_id(), Some(1));
        assert_eq!(tok.eos_id(), Some(2));
        assert!(!tok.add_bos());
        // <|im_end|> is the EOS; <|endoftext|> also ends generation.
        assert_eq!(tok.eos_ids(), &[2, 0]);
        assert_eq!(tok.token_str(2), Some("<|im_end|>"));
    }
    for file in [QWEN_05.0, QWEN_15.0] {
        let Some(tok) = tokenizer(file) else { continue };
        assert_eq!(tok.vocab_size(), 151_936);
        assert_eq!(tok.bos_id(), Some(151_643));
        assert_eq!(tok.pad_id(), Some(151_643));
        assert!(!tok.add_bos());
        assert_eq!(tok.eos_ids(), &[151_645, 151_643]);
        assert_eq!(tok.token_id("<|im_end|>"), Some(151_645));
    }
}

#[test]
fn drafter_and_target_vocabularies() {
    let (Some(draft), Some(target)) = (tokenizer(QWEN_05.0), tokenizer(QWEN_15.0)) else {
        return;
    };
    draft
        .check_same_vocab(&target)
        .expect("the Qwen pair shares one vocabulary");
    assert_eq!(draft.token_strings(), target.token_strings());
    let Some(smol) = tokenizer(SMOLLM.0) else {
        return;
    };
    let e = smol.check_same_vocab(&target).unwrap_err();
    assert!(matches!(e, Error::Mismatch(_)), "{e:?}");
}

// ---- tokenizer.json ----------------------------------------------------------------------------

fn strs(meta: &MetaValue) -> Vec<String> {
    meta.as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

/// A `tokenizer.json` (+ `tokenizer_config.json`) written the way the models' HF repositories
/// write theirs: HF's own pre-tokenizers (SmolLM: Digits + ByteLevel with its built-in GPT-2
/// regex; Qwen2: the original `(?i:...)` Split + ByteLevel), not the llama.cpp regexes the GGUF
/// path uses. Qwen2's NFC normalizer is left out because llama.cpp (the fixtures) has none.
fn hf_files(f: &GgufFile, fixture_name: &str) -> (String, String) {
    let md = &f.header().metadata;
    let tokens = strs(&md["tokenizer.ggml.tokens"]);
    let types: Vec<i64> = md["tokenizer.ggml.token_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i.into()))
        .collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, ty))| **ty == 3 || **ty == 4)
        .map(|(i, (t, ty))| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": *ty == 4, "special": *ty == 3})
        })
        .collect();
    let pre = if fixture_name.starts_with("smollm") {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]})
    } else {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]})
    };
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": strs(&md["tokenizer.ggml.merges"])}
    });
    let id = |key: &str| md[key].as_u64().unwrap() as usize;
    let config = serde_json::json!({
        "add_bos_token": false,
        "bos_token": tokens[id("tokenizer.ggml.bos_token_id")],
        "eos_token": {"content": tokens[id("tokenizer.ggml.eos_token_id")], "special": true},
        "chat_template": md["tokenizer.chat_template"].as_str().unwrap(),
    });
    (json.to_string(), config.to_string())
}

#[test]
fn tokenizer_json_reproduces_fixtures() {
    for (file, name) in ALL {
        let Some(f) = gguf(file) else { continue };
        let (json, config) = hf_files(f, name);
        let tok = Tokenizer::from_hf_files(json.as_bytes(), Some(config.as_bytes()))
            .expect("tokenizer.json");
        let from_gguf = tokenizer(file).unwrap();
        assert_eq!(tok.token_strings(), from_gguf.token_strings());
        assert_eq!(tok.bos_id(), from_gguf.bos_id());
        assert_eq!(tok.eos_ids(), from_gguf.eos_ids());
        assert_eq!(tok.add_bos(), from_gguf.add_bos());
        check_tokenize(&tok, name);
        check_chat_template(&tok, name);
        check_detokenizer(&tok, name);
    }
}

// ---- Gemma 3 270M: SentencePiece -----------------------------------------------------------------

#[test]
fn gemma3_tokenize_fixtures() {
    let Some(tok) = tokenizer(GEMMA3.0) else {
        return;
    };
    check_tokenize(&tok, GEMMA3.1);
    // Special tokens written in the text: recognised only when asked.
    let ids = tok
        .encode("<start_of_turn>user\nHi<end_of_turn>", true)
        .unwrap();
    assert_eq!(ids.first(), Some(&105));
    assert!(ids.contains(&106), "{ids:?}");
    let plain = tok.encode("<start_of_turn>", false).unwrap();
    assert!(plain.len() > 1 && !plain.contains(&105), "{plain:?}");
    assert_eq!(tok.decode(&plain).unwrap(), "<start_of_turn>");
}

/// The greedy fixtures' prompts: BOS (the file says add_bos_token) plus the prompt's ids.
#[test]
fn gemma3_prompt_ids_start_with_bos() {
    let Some(tok) = tokenizer(GEMMA3.0) else {
        return;
    };
    let records = fixture(&format!("greedy-{}", GEMMA3.1));
    assert!(!records.is_empty());
    for r in &records {
        let prompt = r["prompt"].as_str().expect("prompt");
        let mut got = vec![tok.bos_id().expect("a BOS id")];
        got.extend(tok.encode(prompt, true).unwrap());
        assert_eq!(got, ids(&r["prompt_ids"]), "prompt_ids of {prompt:?}");
    }
}

#[test]
fn gemma3_detokenizer_streams_fixture_texts() {
    let Some(tok) = tokenizer(GEMMA3.0) else {
        return;
    };
    // Gemma's 262k pieces hold whole characters for every fixture text; characters it lacks
    // (a rare CJK ideograph, a hieroglyph) fall back to byte tokens, which must be held back.
    let rare = tok.encode("x 𠜎𓀀 y", false).unwrap();
    assert!(
        rare.iter().any(|&id| (238..494).contains(&id)),
        "byte fallback expected: {rare:?}"
    );
    assert_eq!(tok.decode(&rare).unwrap(), "x 𠜎𓀀 y");
    check_detokenizer_with(&tok, GEMMA3.1, vec![rare]);
}

#[test]
fn gemma3_special_ids_and_no_chat_template() {
    let Some(tok) = tokenizer(GEMMA3.0) else {
        return;
    };
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.bos_id(), Some(2));
    assert_eq!(tok.eos_id(), Some(1));
    assert_eq!(tok.pad_id(), Some(0));
    assert!(tok.add_bos());
    assert!(!tok.add_space_prefix());
    assert_eq!(tok.token_id("<end_of_turn>"), Some(106));
    assert!(tok.is_eos(1) && tok.is_eos(106), "{:?}", tok.eos_ids());
    assert!(tok.chat_template().is_none());
    let e = tok
        .apply_chat_template(&[ChatMessage::user("Hi")], true)
        .unwrap_err();
    assert!(matches!(e, Error::NoChatTemplate(_)), "{e:?}");
    // A different vocabulary from the BPE models (no drafting across them).
    if let Some(smol) = tokenizer(SMOLLM.0) {
        assert!(matches!(
            smol.check_same_vocab(&tok),
            Err(Error::Mismatch(_))
        ));
    }
}
