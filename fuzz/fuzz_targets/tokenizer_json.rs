//! The tokenizer from `tokenizer.json` (+ `tokenizer_config.json`):
//! `text NUL tokenizer.json [NUL tokenizer_config.json]`; then the same encode / decode /
//! stream checks as `tokenizer_gguf`, with the round trip asserted when the file is plain
//! byte-level BPE (no normalizer, ByteLevel pre-tokenizer without a prefix space, no
//! stripping added tokens) and its vocabulary promises it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tandem::tokenizer::Tokenizer;

/// The file's pipeline leaves text unchanged up to the byte-level BPE.
fn plain_byte_level(json: &Value) -> bool {
    let byte_level_pre = |p: &Value| {
        p.get("type").and_then(Value::as_str) == Some("ByteLevel")
            && p.get("add_prefix_space").and_then(Value::as_bool) == Some(false)
    };
    let pre_ok = match json.get("pre_tokenizer") {
        Some(p) if byte_level_pre(p) => true,
        Some(p) if p.get("type").and_then(Value::as_str) == Some("Sequence") => {
            match p.get("pretokenizers").and_then(Value::as_array) {
                Some(steps) => {
                    steps.last().is_some_and(byte_level_pre)
                        && steps[..steps.len() - 1].iter().all(|s| {
                            s.get("type").and_then(Value::as_str) == Some("Split")
                                && s.get("invert").and_then(Value::as_bool) == Some(false)
                                && s.get("behavior").and_then(Value::as_str) == Some("Isolated")
                        })
                }
                None => false,
            }
        }
        _ => false,
    };
    let model = json.get("model");
    let model_field_null = |k: &str| model.and_then(|m| m.get(k)).is_none_or(Value::is_null);
    pre_ok
        && json.get("normalizer").is_none_or(Value::is_null)
        && json.pointer("/decoder/type").and_then(Value::as_str) == Some("ByteLevel")
        && model.and_then(|m| m.get("type")).and_then(Value::as_str) == Some("BPE")
        && model_field_null("continuing_subword_prefix")
        && model_field_null("end_of_word_suffix")
        && json
            .get("added_tokens")
            .and_then(Value::as_array)
            .is_none_or(|a| {
                a.iter().all(|t| {
                    t.get("lstrip").and_then(Value::as_bool) != Some(true)
                        && t.get("rstrip").and_then(Value::as_bool) != Some(true)
                })
            })
}

fuzz_target!(|data: &[u8]| {
    let (text, rest) = tandem_fuzz::split_nul(data);
    let (json, config) = tandem_fuzz::split_nul(rest);
    let config = (!config.is_empty()).then_some(config);
    let Ok(tok) = Tokenizer::from_hf_files(json, config) else {
        return;
    };
    let round_trip = serde_json::from_slice::<Value>(json).is_ok_and(|v| plain_byte_level(&v))
        && tandem_fuzz::promises_round_trip(&tok);
    tandem_fuzz::exercise(&tok, text, round_trip);
});
