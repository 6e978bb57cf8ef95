//! Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) loading, for safetensors models:
//! the `tokenizers` crate runs the file's pipeline; tandem reads the vocabulary, the added tokens
//! and BOS/EOS/`add_bos_token`/`chat_template` from it and refuses what would panic in that crate.

use super::{
    check_merge_count, tok_err, Inner, Model, Pieces, SpecialMatcher, TokenKind, Tokenizer,
    END_OF_GENERATION, MAX_VOCAB,
};
use crate::{Error, Result};

impl Tokenizer {
    pub fn from_tokenizer_json(bytes: &[u8]) -> Result<Self> {
        Self::from_hf_files(bytes, None)
    }

    /// Loads `tokenizer.json` plus, if given, `tokenizer_config.json` (for `bos_token`,
    /// `eos_token`, `add_bos_token` and `chat_template`). Special added tokens are matched by
    /// tandem's own splitter (so `encode(.., special)` can switch them off), which ignores their
    /// `lstrip`/`rstrip`/`single_word` flags; non-special added tokens keep HF's handling.
    pub fn from_hf_files(tokenizer_json: &[u8], tokenizer_config: Option<&[u8]>) -> Result<Self> {
        let json: serde_json::Value = serde_json::from_slice(tokenizer_json)
            .map_err(|e| tok_err(format!("tokenizer.json is not valid JSON: {e}")))?;
        if let Some(d) = json.get("decoder") {
            check_decoder(d)?;
        }
        let mut hf = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| tok_err(format!("tokenizer.json: {e}")))?;
        let config: Option<serde_json::Value> = tokenizer_config
            .map(|b| {
                serde_json::from_slice(b)
                    .map_err(|e| tok_err(format!("tokenizer_config.json is not valid JSON: {e}")))
            })
            .transpose()?;

        let vocab = hf.get_vocab(true);
        let n = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if n == 0 {
            return Err(tok_err("tokenizer.json has an empty vocabulary"));
        }
        // Ids index a table of n strings: a hostile id must not size it.
        if n > MAX_VOCAB {
            return Err(tok_err(format!(
                "tokenizer.json's highest token id is {}, more than the limit of {MAX_VOCAB} tokens",
                n - 1
            )));
        }
        let n_merges = json
            .pointer("/model/merges")
            .and_then(|m| m.as_array())
            .map_or(0, Vec::len);
        check_merge_count("tokenizer.json model.merges", n_merges, vocab.len())?;
        let mut tokens = vec![String::new(); n];
        let mut by_id: Vec<Option<String>> = vec![None; n];
        for (t, id) in vocab {
            // Two strings under one id would make decoding depend on which one wins.
            if let Some(other) = by_id[id as usize].replace(t.clone()) {
                let (a, b) = if other < t { (other, t) } else { (t, other) };
                return Err(tok_err(format!(
                    "tokenizer.json gives the id {id} to two tokens, {a:?} and {b:?}"
                )));
            }
            tokens[id as usize] = t;
        }
        let mut kinds = vec![TokenKind::Normal; n];
        let mut special = Vec::new();
        for (id, added) in hf.get_added_tokens_decoder() {
            let i = id as usize;
            if i < n {
                kinds[i] = if added.special {
                    TokenKind::Special
                } else {
                    TokenKind::UserDefined
                };
                tokens[i] = added.content.clone();
                if added.special {
                    special.push((added.content.clone(), id));
                }
            }
        }
        hf.set_encode_special_tokens(true);

        let byte_level = json
            .pointer("/decoder/type")
            .and_then(|t| t.as_str())
            .is_some_and(|t| t == "ByteLevel");
        let pieces = if byte_level {
            Some(Pieces::byte_level(&tokens, &kinds)?)
        } else {
            None
        };

        let token_id = |name: &str| tokens.iter().position(|t| t == name).map(|i| i as u32);
        // tokenizer_config.json writes special tokens as a string or as {"content": ...}.
        let config_token = |key: &str| -> Option<String> {
            let v = config.as_ref()?.get(key)?;
            v.as_str()
                .or_else(|| v.get("content").and_then(|c| c.as_str()))
                .map(str::to_string)
        };
        let is_special = |id: &u32| kinds[*id as usize] != TokenKind::Normal;
        let bos = match config_token("bos_token") {
            Some(t) => token_id(&t),
            None => ["<|begin_of_text|>", "<s>", "<bos>"]
                .iter()
                .find_map(|t| token_id(t).filter(is_special)),
        };
        let eos = match config_token("eos_token") {
            Some(t) => token_id(&t),
            None => END_OF_GENERATION
                .iter()
                .find_map(|t| token_id(t).filter(is_special)),
        };
        let pad = config_token("pad_token").and_then(|t| token_id(&t));
        let add_bos = match config
            .as_ref()
            .and_then(|c| c.get("add_bos_token"))
            .and_then(|v| v.as_bool())
        {
            Some(b) => b,
            // Without a config, trust the post-processor: does it put BOS in front of plain text?
            None => match (bos, hf.encode("", true)) {
                (Some(b), Ok(enc)) => enc.get_ids().first() == Some(&b),
                _ => false,
            },
        };
        let chat_template = config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .and_then(|t| match t {
                serde_json::Value::String(s) => Some(s.clone()),
                // A list of named templates: HF picks "default".
                serde_json::Value::Array(list) => list
                    .iter()
                    .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|e| e.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                _ => None,
            });

        Ok(Self::assemble(Inner {
            model: Model::Hf(Box::new(hf)),
            tokens,
            kinds,
            pieces,
            specials: SpecialMatcher::new(special),
            bos,
            eos,
            pad,
            eos_ids: eos.into_iter().collect(),
            add_bos,
            add_space_prefix: false,
            chat_template,
        }))
    }
}

/// Refuses decoders the tokenizers crate cannot run on every token: its `Strip` decoder with
/// `stop > 0` indexes before the start of a token shorter than `stop` (a panic, found by the
/// `tokenizer_json` fuzz target); real files use `stop = 0`. The crate reads decoders
/// untagged (a `Strip` is known by its fields, with or without `"type"`), so every object in
/// the decoder's tree with a `stop` field is checked, whatever it says its type is.
fn check_decoder(d: &serde_json::Value) -> Result<()> {
    match d {
        serde_json::Value::Array(items) => items.iter().try_for_each(check_decoder),
        serde_json::Value::Object(fields) => {
            match fields.get("stop") {
                None | Some(serde_json::Value::Null) => {}
                Some(v) if v.as_u64() == Some(0) => {}
                Some(stop) => {
                    return Err(Error::Unsupported(format!(
                        "tokenizer.json decoder Strip with stop = {stop} (only stop = 0 is \
                         supported)"
                    )))
                }
            }
            fields.values().try_for_each(check_decoder)
        }
        _ => Ok(()),
    }
}
