//! Text ↔ token ids: a `tokenizers` BPE built from GGUF `tokenizer.ggml.*` metadata (or loaded
//! from a `tokenizer.json`), the model's own chat template rendered with `minijinja`, and a
//! streaming [`Detokenizer`] that only ever emits complete UTF-8 text.
//!
//! The behaviour follows llama.cpp (the fixtures in `tests/fixtures` come from it):
//! - GGUF control tokens (`token_type` 3) and unknown tokens (2) are *special*: they are recognised
//!   in the text only when `encode(.., special = true)`, otherwise the text is tokenized as plain
//!   characters. User-defined tokens (4) are always recognised, as in llama.cpp and HF.
//! - `encode` never adds BOS; a caller that builds a raw prompt prepends [`Tokenizer::bos_id`] when
//!   [`Tokenizer::add_bos`] says so (chat templates usually write the BOS text themselves).
//! - Decoding writes every token, special ones included, so `decode(encode(s, true)) == s`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::model::gguf::MetaValue;
use crate::{Error, Result};

/// GPT-2's word split, as llama.cpp writes it (it relies on unmatched stretches being kept as
/// pieces of their own, which `Split` with `Isolated` also does).
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Qwen2's split (llama.cpp's case-insensitive contractions without an inline flag group).
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split: like Qwen2's but numbers in groups of up to three digits.
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Every digit on its own (applied before the GPT-2 split by the StarCoder family).
const RE_DIGIT: &str = r"\p{N}";

/// How one `tokenizer.ggml.pre` value splits text before BPE: llama.cpp's regex list (each regex
/// splits every piece the previous ones produced), whether whole words found in the vocabulary skip
/// the merges, and whether BOS is added when the file does not say.
struct PreTokenizerSpec {
    regexes: &'static [&'static str],
    ignore_merges: bool,
    add_bos: bool,
}

fn pre_tokenizer_spec(pre: &str) -> Option<PreTokenizerSpec> {
    let spec = |regexes, ignore_merges, add_bos| PreTokenizerSpec {
        regexes,
        ignore_merges,
        add_bos,
    };
    Some(match pre {
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => spec(&[RE_QWEN2], false, false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            spec(&[RE_DIGIT, RE_GPT2], false, false)
        }
        "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" | "jais" | "exaone4" => {
            spec(&[RE_GPT2], false, false)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => spec(&[RE_LLAMA3], true, true),
        "dbrx" | "smaug-bpe" => spec(&[RE_LLAMA3], false, false),
        _ => return None,
    })
}

/// What a token is, from GGUF `tokenizer.ggml.token_type` (or HF's added-token flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Ordinary vocabulary entry, decoded through the byte-level table.
    Normal,
    /// Control or unknown token (`<|im_start|>`): matched in text only with `special = true`.
    Special,
    /// User-defined token (`<tool_call>` in Qwen2.5): always matched, decoded as written.
    UserDefined,
    /// Reserved/padding entry that the tokenizer never produces.
    Unused,
}

impl TokenKind {
    fn from_gguf(ty: i64) -> Self {
        // llama.cpp's llama_token_type: 0 undefined, 1 normal, 2 unknown, 3 control,
        // 4 user defined, 5 unused, 6 byte.
        match ty {
            2 | 3 => TokenKind::Special,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            _ => TokenKind::Normal,
        }
    }
}

/// GPT-2's reversible byte ↔ printable-character map in which byte-level BPE vocabularies are
/// written (`' '` is `'Ġ'`, `'\n'` is `'Ċ'`): bytes that are printable Latin-1 stand for themselves,
/// the other 68 are shifted to U+0100 and up.
pub fn byte_level_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let code = if printable {
            b
        } else {
            shifted += 1;
            255 + shifted
        };
        table[b as usize] = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
    }
    table
}

/// The bytes one byte-level token stands for. A character outside the table (a malformed entry)
/// stands for its own UTF-8, as in HF's decoder.
fn byte_level_bytes(token: &str, inverse: &[i16], out: &mut Vec<u8>) {
    for c in token.chars() {
        match inverse.get(c as usize) {
            Some(&b) if b >= 0 => out.push(b as u8),
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

fn byte_level_inverse() -> Vec<i16> {
    let table = byte_level_chars();
    let max = table.iter().map(|&c| c as usize).max().unwrap_or(0);
    let mut inverse = vec![-1i16; max + 1];
    for (b, &c) in table.iter().enumerate() {
        inverse[c as usize] = b as i16;
    }
    inverse
}

/// The bytes each token decodes to, flattened (`bytes[offsets[i]..offsets[i + 1]]`).
struct Pieces {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl Pieces {
    fn new(tokens: &[String], kinds: &[TokenKind]) -> Result<Self> {
        let inverse = byte_level_inverse();
        let mut bytes = Vec::with_capacity(tokens.iter().map(|t| t.len()).sum());
        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        offsets.push(0u32);
        for (token, kind) in tokens.iter().zip(kinds) {
            match kind {
                // Added tokens are stored as written, not byte-level encoded (llama.cpp copies
                // control and user-defined token text verbatim).
                TokenKind::Special | TokenKind::UserDefined => {
                    bytes.extend_from_slice(token.as_bytes())
                }
                TokenKind::Normal | TokenKind::Unused => {
                    byte_level_bytes(token, &inverse, &mut bytes)
                }
            }
            let end = u32::try_from(bytes.len())
                .map_err(|_| Error::Tokenizer("vocabulary text exceeds 4 GiB".into()))?;
            offsets.push(end);
        }
        Ok(Pieces { bytes, offsets })
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let start = *self.offsets.get(i)? as usize;
        let end = *self.offsets.get(i + 1)? as usize;
        Some(&self.bytes[start..end])
    }
}

/// Finds special tokens written in text: leftmost, and the longest one at a position.
struct SpecialMatcher {
    /// Sorted by length, longest first.
    tokens: Vec<(String, u32)>,
    first_bytes: [bool; 256],
}

impl SpecialMatcher {
    fn new(mut tokens: Vec<(String, u32)>) -> Self {
        tokens.retain(|(s, _)| !s.is_empty());
        tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut first_bytes = [false; 256];
        for (s, _) in &tokens {
            first_bytes[s.as_bytes()[0] as usize] = true;
        }
        SpecialMatcher {
            tokens,
            first_bytes,
        }
    }

    /// The special token starting at `at`, if any: (id, length in bytes).
    fn match_at(&self, text: &[u8], at: usize) -> Option<(u32, usize)> {
        if !self.first_bytes[text[at] as usize] {
            return None;
        }
        let rest = &text[at..];
        self.tokens
            .iter()
            .find(|(s, _)| rest.starts_with(s.as_bytes()))
            .map(|(s, id)| (*id, s.len()))
    }
}

struct Inner {
    /// Always has `encode_special_tokens` on: special tokens are split out by [`SpecialMatcher`]
    /// here, so one instance serves both `special = true` and `false`.
    hf: tokenizers::Tokenizer,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    /// Byte-level vocabularies decode through this table; others through the HF decoder.
    pieces: Option<Pieces>,
    specials: SpecialMatcher,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    chat_template: Option<String>,
}

/// A model's tokenizer. Cloning is cheap (shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.inner.bos)
            .field("eos_ids", &self.inner.eos_ids)
            .field("add_bos", &self.inner.add_bos)
            .finish_non_exhaustive()
    }
}

fn tok_err(what: impl Into<String>) -> Error {
    Error::Tokenizer(what.into())
}

/// Token texts that end a turn or the text in the vocabularies llama.cpp knows (its EOG list).
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|return|>",
    "<|call|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "</s>",
];

fn meta_u32(meta: &BTreeMap<String, MetaValue>, key: &str) -> Result<Option<u32>> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| tok_err(format!("GGUF {key} is {v:?}, expected a token id"))),
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(file: &crate::model::gguf::GgufFile) -> Result<Self> {
        Self::from_gguf_metadata(&file.header().metadata)
    }

    /// Builds the tokenizer from GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn from_gguf_metadata(meta: &BTreeMap<String, MetaValue>) -> Result<Self> {
        let model = meta
            .get("tokenizer.ggml.model")
            .ok_or_else(|| tok_err("GGUF metadata has no tokenizer.ggml.model"))?;
        let model = model.as_str().ok_or_else(|| {
            tok_err(format!(
                "GGUF tokenizer.ggml.model is {model:?}, expected a string"
            ))
        })?;
        if model != "gpt2" {
            let kind = match model {
                "llama" => " (SentencePiece)",
                "bert" => " (WordPiece)",
                "t5" => " (Unigram)",
                "rwkv" => " (RWKV world)",
                _ => "",
            };
            return Err(Error::Unsupported(format!(
                "GGUF tokenizer.ggml.model = '{model}'{kind}: only 'gpt2' (byte-level BPE) is implemented"
            )));
        }

        let tokens = gguf_str_array(meta, "tokenizer.ggml.tokens")?.ok_or_else(|| {
            tok_err("GGUF metadata has no tokenizer.ggml.tokens (the token list)")
        })?;
        if tokens.is_empty() {
            return Err(tok_err("GGUF tokenizer.ggml.tokens is empty"));
        }
        let n = tokens.len();
        check_vocab_limits("GGUF tokenizer.ggml.tokens", n, &tokens)?;
        let kinds = match meta.get("tokenizer.ggml.token_type") {
            None => {
                log::warn!(
                    "GGUF has no tokenizer.ggml.token_type: every token is treated as normal text"
                );
                vec![TokenKind::Normal; n]
            }
            Some(v) => {
                let arr = v.as_array().ok_or_else(|| {
                    tok_err(format!(
                        "GGUF tokenizer.ggml.token_type is {}, expected an integer array",
                        short(v)
                    ))
                })?;
                if arr.len() != n {
                    return Err(tok_err(format!(
                        "GGUF tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {n}",
                        arr.len()
                    )));
                }
                arr.iter()
                    .enumerate()
                    .map(|(i, t)| {
                        t.as_i64().map(TokenKind::from_gguf).ok_or_else(|| {
                            tok_err(format!(
                                "GGUF tokenizer.ggml.token_type[{i}] is {t:?}, expected an integer"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };

        let merges_raw = gguf_str_array(meta, "tokenizer.ggml.merges")?.ok_or_else(|| {
            tok_err(
                "GGUF metadata has no tokenizer.ggml.merges (required by a 'gpt2' BPE tokenizer)",
            )
        })?;

        check_merge_count("GGUF tokenizer.ggml.merges", merges_raw.len(), n)?;

        let pre_name = match meta.get("tokenizer.ggml.pre") {
            None => "",
            Some(v) => v.as_str().ok_or_else(|| {
                tok_err(format!(
                    "GGUF tokenizer.ggml.pre is {v:?}, expected a string"
                ))
            })?,
        };
        let pre = pre_tokenizer_spec(pre_name).unwrap_or_else(|| {
            log::warn!(
                "GGUF tokenizer.ggml.pre = '{pre_name}' is not known to tandem: splitting words with \
                 the GPT-2 regex, which may tokenize differently from the model's training"
            );
            PreTokenizerSpec {
                regexes: &[RE_GPT2],
                ignore_merges: false,
                add_bos: false,
            }
        });

        // Later duplicates win, as in llama.cpp's token_to_id map.
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut merges = Vec::with_capacity(merges_raw.len());
        for (i, m) in merges_raw.iter().enumerate() {
            // llama.cpp splits at the first space after the first character, so a left part may
            // itself start with a space.
            let first = m.chars().next().map(char::len_utf8).unwrap_or(0);
            let split = m[first..].find(' ').map(|p| p + first);
            let (a, b) = match split {
                Some(p) => (&m[..p], &m[p + 1..]),
                None => {
                    return Err(tok_err(format!(
                        "GGUF tokenizer.ggml.merges[{i}] = {m:?} is not two tokens separated by a space"
                    )))
                }
            };
            for part in [a, b] {
                if !vocab.contains_key(part) {
                    return Err(tok_err(format!(
                        "GGUF tokenizer.ggml.merges[{i}] = {m:?} names {part:?}, which is not in tokenizer.ggml.tokens"
                    )));
                }
            }
            let merged = format!("{a}{b}");
            if !vocab.contains_key(&merged) {
                return Err(tok_err(format!(
                    "GGUF tokenizer.ggml.merges[{i}] = {m:?} makes {merged:?}, which is not in tokenizer.ggml.tokens"
                )));
            }
            merges.push((a.to_string(), b.to_string()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre.ignore_merges)
            .build()
            .map_err(|e| tok_err(format!("building the BPE model from GGUF metadata: {e}")))?;

        let mut hf = tokenizers::Tokenizer::new(bpe);
        hf.with_pre_tokenizer(Some(build_pre_tokenizer(pre.regexes)?));
        hf.with_decoder(Some(ByteLevel::default()));
        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        for (i, (t, k)) in tokens.iter().zip(&kinds).enumerate() {
            match k {
                TokenKind::Special => special.push((t.clone(), i as u32)),
                TokenKind::UserDefined => user_defined.push(AddedToken::from(t.clone(), false)),
                _ => {}
            }
        }
        let added_special: Vec<AddedToken> = special
            .iter()
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        hf.add_special_tokens(&added_special);
        hf.add_tokens(&user_defined);
        hf.set_encode_special_tokens(true);

        let id_in_range = |key: &str| -> Result<Option<u32>> {
            match meta_u32(meta, key)? {
                Some(id) if id as usize >= n => Err(tok_err(format!(
                    "GGUF {key} = {id} is outside the vocabulary of {n} tokens"
                ))),
                other => Ok(other),
            }
        };
        let bos = id_in_range("tokenizer.ggml.bos_token_id")?;
        let eos = id_in_range("tokenizer.ggml.eos_token_id")?;
        let pad = match id_in_range("tokenizer.ggml.padding_token_id") {
            Ok(p) => p,
            Err(e) => {
                log::warn!("{e}; ignoring the padding token");
                None
            }
        };
        let mut eos_ids: Vec<u32> = eos.into_iter().collect();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            eos_ids.extend(id_in_range(key)?);
        }
        let add_bos = match meta.get("tokenizer.ggml.add_bos_token") {
            None => pre.add_bos,
            Some(v) => v.as_bool().ok_or_else(|| {
                tok_err(format!(
                    "GGUF tokenizer.ggml.add_bos_token is {v:?}, expected a bool"
                ))
            })?,
        };
        if add_bos && bos.is_none() {
            return Err(tok_err(
                "GGUF tokenizer.ggml.add_bos_token is set but there is no bos_token_id",
            ));
        }
        let chat_template = match meta.get("tokenizer.chat_template") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| {
                        tok_err(format!(
                            "GGUF tokenizer.chat_template is {}, expected a string",
                            short(v)
                        ))
                    })?
                    .to_string(),
            ),
        };

        let pieces = Pieces::new(&tokens, &kinds)?;
        Ok(Self::assemble(Inner {
            hf,
            tokens,
            kinds,
            pieces: Some(pieces),
            specials: SpecialMatcher::new(special),
            bos,
            eos,
            pad,
            eos_ids,
            add_bos,
            chat_template,
        }))
    }

    /// Loads a Hugging Face `tokenizer.json` (for safetensors models). BOS/EOS are guessed from the
    /// special tokens' names; use [`Tokenizer::from_hf_files`] to read them from
    /// `tokenizer_config.json` as HF does.
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
            Some(Pieces::new(&tokens, &kinds)?)
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
            hf,
            tokens,
            kinds,
            pieces,
            specials: SpecialMatcher::new(special),
            bos,
            eos,
            pad,
            eos_ids: eos.into_iter().collect(),
            add_bos,
            chat_template,
        }))
    }

    /// Adds the end-of-turn tokens the vocabulary has to the EOS set.
    fn assemble(mut inner: Inner) -> Self {
        for (i, (t, k)) in inner.tokens.iter().zip(&inner.kinds).enumerate() {
            if *k != TokenKind::Normal
                && END_OF_GENERATION.contains(&t.as_str())
                && !inner.eos_ids.contains(&(i as u32))
            {
                inner.eos_ids.push(i as u32);
            }
        }
        Tokenizer {
            inner: Arc::new(inner),
        }
    }

    /// Token ids for `text`, without BOS. With `special`, special tokens written in the text
    /// (`<|im_start|>`) become their ids; without, they are tokenized as ordinary characters.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if !special || self.inner.specials.tokens.is_empty() {
            self.encode_plain(text, &mut out)?;
            return Ok(out);
        }
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut at = 0;
        while at < bytes.len() {
            match self.inner.specials.match_at(bytes, at) {
                Some((id, len)) => {
                    // A match starts with a UTF-8 lead byte, so `at` is a char boundary.
                    self.encode_plain(&text[start..at], &mut out)?;
                    out.push(id);
                    at += len;
                    start = at;
                }
                None => at += 1,
            }
        }
        self.encode_plain(&text[start..], &mut out)?;
        Ok(out)
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let enc = self
            .inner
            .hf
            .encode_fast(text, false)
            .map_err(|e| tok_err(format!("encoding {:?}: {e}", preview(text))))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    /// The text of `ids`, special tokens included. Bytes that do not form valid UTF-8 (ids cut in
    /// the middle of a character) become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_inner(ids, false)
    }

    /// Like [`Tokenizer::decode`] but leaves out special (control) tokens.
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<String> {
        self.decode_inner(ids, true)
    }

    fn decode_inner(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.inner.pieces {
            Some(_) => {
                let mut bytes = Vec::new();
                for &id in ids {
                    if !(skip_special && self.is_special(id)) {
                        bytes.extend_from_slice(self.piece(id)?);
                    }
                }
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            None => {
                self.check_id(ids)?;
                self.inner
                    .hf
                    .decode(ids, skip_special)
                    .map_err(|e| tok_err(format!("decoding {} ids: {e}", ids.len())))
            }
        }
    }

    fn check_id(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.vocab_size()) {
            Some(id) => Err(Error::Invalid(format!(
                "token id {id} is outside the vocabulary of {} tokens",
                self.vocab_size()
            ))),
            None => Ok(()),
        }
    }

    fn piece(&self, id: u32) -> Result<&[u8]> {
        self.inner
            .pieces
            .as_ref()
            .and_then(|p| p.get(id))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "token id {id} is outside the vocabulary of {} tokens",
                    self.vocab_size()
                ))
            })
    }

    /// Number of token ids (the GGUF token list's length; for tokenizer.json, highest id + 1).
    /// A model's embedding may have more rows than this (padding).
    pub fn vocab_size(&self) -> usize {
        self.inner.tokens.len()
    }

    /// The vocabulary's token strings by id, as stored (byte-level encoded for BPE vocabularies).
    /// Two models whose lists are equal tokenize identically.
    pub fn token_strings(&self) -> &[String] {
        &self.inner.tokens
    }

    /// The stored string of one token.
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.inner.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a token given its stored string (`"<|im_end|>"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.hf.token_to_id(token)
    }

    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.inner.kinds.get(id as usize).copied()
    }

    /// Whether `id` is a control/unknown token (skipped by [`Tokenizer::decode_skip_special`]).
    pub fn is_special(&self, id: u32) -> bool {
        self.token_kind(id) == Some(TokenKind::Special)
    }

    /// The ids that end generation: EOS plus end-of-turn tokens present in the vocabulary
    /// (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, …), EOS first.
    pub fn eos_ids(&self) -> &[u32] {
        &self.inner.eos_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.inner.eos_ids.contains(&id)
    }

    /// The model's declared EOS token (`tokenizer.ggml.eos_token_id`).
    pub fn eos_id(&self) -> Option<u32> {
        self.inner.eos
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.inner.bos
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.inner.pad
    }

    /// Whether a raw prompt should start with [`Tokenizer::bos_id`].
    pub fn add_bos(&self) -> bool {
        self.inner.add_bos
    }

    /// The model's own Jinja chat template, if it ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.inner.chat_template.as_deref()
    }

    /// The chat template to render prompts with: the model's own, or ChatML when it has none.
    pub fn chat_template_or_default(&self) -> ChatTemplate {
        let bos = self
            .inner
            .bos
            .and_then(|id| self.token_str(id))
            .unwrap_or("");
        let eos = self
            .inner
            .eos
            .and_then(|id| self.token_str(id))
            .unwrap_or("");
        match &self.inner.chat_template {
            Some(t) => ChatTemplate::new(t.clone(), bos, eos),
            None => {
                log::warn!("the model has no chat template: using ChatML");
                ChatTemplate::chatml()
            }
        }
    }

    /// Renders `messages` with the model's chat template (ChatML when the model has none; see
    /// [`ChatTemplate::chatml`]).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.chat_template_or_default()
            .render(messages, add_generation_prompt)
    }

    /// Checks that a drafter's tokenizer gives the same ids as this one: same token list, same
    /// special tokens, same EOS.
    pub fn check_same_vocab(&self, other: &Tokenizer) -> Result<()> {
        let (a, b) = (self.token_strings(), other.token_strings());
        if a.len() != b.len() {
            return Err(Error::Mismatch(format!(
                "vocabularies differ in size: {} vs {} tokens",
                a.len(),
                b.len()
            )));
        }
        if let Some(i) =
            (0..a.len()).find(|&i| a[i] != b[i] || self.inner.kinds[i] != other.inner.kinds[i])
        {
            return Err(Error::Mismatch(format!(
                "vocabularies differ at token {i}: {:?} ({:?}) vs {:?} ({:?})",
                a[i], self.inner.kinds[i], b[i], other.inner.kinds[i]
            )));
        }
        Ok(())
    }
}

fn build_pre_tokenizer(regexes: &[&str]) -> Result<PreTokenizerWrapper> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for re in regexes {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err(format!("pre-tokenizer regex {re:?}: {e}")))?;
        steps.push(split.into());
    }
    // Maps bytes to the printable alphabet the vocabulary is written in; the words are already split.
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(steps).into())
}

/// Vocabularies larger than this are refused (the largest real ones have 262,144 tokens).
pub const MAX_VOCAB: usize = 1 << 22;
/// Tokens longer than this are refused (the longest real ones are 256 bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A token list a model file could really have: not empty, at most [`MAX_VOCAB`] tokens of at
/// most [`MAX_TOKEN_BYTES`] bytes each.
fn check_vocab_limits(what: &str, n: usize, tokens: &[String]) -> Result<()> {
    if n == 0 {
        return Err(tok_err(format!("{what} is empty")));
    }
    if n > MAX_VOCAB {
        return Err(tok_err(format!(
            "{what} has {n} entries, more than the limit of {MAX_VOCAB} tokens"
        )));
    }
    if let Some((i, t)) = tokens
        .iter()
        .enumerate()
        .find(|(_, t)| t.len() > MAX_TOKEN_BYTES)
    {
        return Err(tok_err(format!(
            "{what}[{i}] is {} bytes long, more than the limit of {MAX_TOKEN_BYTES} bytes",
            t.len()
        )));
    }
    Ok(())
}

/// Refuses decoders the tokenizers crate cannot run on every token: its `Strip` decoder with
/// `stop > 0` indexes before the start of a token shorter than `stop` (a panic, found by the
/// `tokenizer_json` fuzz target); real files use `stop = 0`.
fn check_decoder(d: &serde_json::Value) -> Result<()> {
    match d.get("type").and_then(|t| t.as_str()) {
        Some("Sequence") => {
            for inner in d
                .get("decoders")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                check_decoder(inner)?;
            }
            Ok(())
        }
        Some("Strip") => match d.get("stop").and_then(|v| v.as_u64()) {
            Some(0) | None => Ok(()),
            Some(stop) => Err(Error::Unsupported(format!(
                "tokenizer.json decoder Strip with stop = {stop} (only stop = 0 is supported)"
            ))),
        },
        _ => Ok(()),
    }
}

/// Each BPE merge makes a token of the vocabulary, so a real list has fewer merges than tokens.
fn check_merge_count(what: &str, merges: usize, tokens: usize) -> Result<()> {
    if merges > tokens {
        return Err(tok_err(format!(
            "{what} has {merges} merges for {tokens} tokens: a BPE vocabulary has fewer merges than tokens"
        )));
    }
    Ok(())
}

fn gguf_str_array(meta: &BTreeMap<String, MetaValue>, key: &str) -> Result<Option<Vec<String>>> {
    let Some(v) = meta.get(key) else {
        return Ok(None);
    };
    let arr = v.as_array().ok_or_else(|| {
        tok_err(format!(
            "GGUF {key} is {}, expected a string array",
            short(v)
        ))
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_str().map(str::to_string).ok_or_else(|| {
                tok_err(format!(
                    "GGUF {key}[{i}] is {}, expected a string",
                    short(s)
                ))
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A metadata value for an error message, without dumping a whole array.
fn short(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(a) => format!("an array of {} values", a.len()),
        MetaValue::String(s) => format!("the string {:?}", preview(s)),
        other => format!("{other:?}"),
    }
}

fn preview(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Chat templates

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The ChatML format, used for models without a template (llama.cpp does the same).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A Jinja chat template as HF `transformers` renders it: `trim_blocks` and `lstrip_blocks` on,
/// `bos_token`/`eos_token` variables, `raise_exception(msg)`, Python string methods
/// (`.strip()`, `.startswith()`, …) and a `tojson` that writes like Python's `json.dumps`.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    limits: TemplateLimits,
}

impl ChatTemplate {
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Self {
        ChatTemplate {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            limits: TEMPLATE_LIMITS,
        }
    }

    /// Other limits than [`TEMPLATE_LIMITS`] (the fuzz target uses smaller ones to run fast).
    pub fn with_limits(mut self, limits: TemplateLimits) -> Self {
        self.limits = limits;
        self
    }

    /// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), the fallback for template-less models.
    pub fn chatml() -> Self {
        Self::new(CHATML_TEMPLATE, "", "")
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` (any serializable list of `{role, content, ...}` objects).
    pub fn render<M: Serialize + ?Sized>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_with(messages, add_generation_prompt, minijinja::Value::UNDEFINED)
    }

    /// Renders with extra variables (e.g. `tools`), given as a map-like serializable value.
    ///
    /// The template comes from the model file, so it is untrusted: rendering runs under
    /// its [`TemplateLimits`] (source size, fuel, recursion depth, output size; by default
    /// [`TEMPLATE_LIMITS`]) and past any of them fails with an error that names the limit.
    pub fn render_with<M: Serialize + ?Sized, E: Serialize>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
        extra: E,
    ) -> Result<String> {
        let limits = self.limits;
        if self.source.len() > limits.max_source_bytes {
            return Err(tok_err(format!(
                "the chat template is {} bytes, more than the limit of {} bytes",
                self.source.len(),
                limits.max_source_bytes
            )));
        }
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(limits.fuel));
        env.set_recursion_limit(limits.max_recursion);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        let max_indent = limits.max_json_indent;
        env.add_filter("tojson", move |v, kwargs| tojson(v, kwargs, max_indent));
        env.add_template("chat_template", &self.source)
            .map_err(|e| {
                tok_err(format!(
                    "chat template does not parse: {}",
                    describe_jinja(&e)
                ))
            })?;
        let tmpl = env
            .get_template("chat_template")
            .map_err(|e| tok_err(format!("chat template: {}", describe_jinja(&e))))?;
        let base = minijinja::context! {
            messages => minijinja::Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        // The template's own variables win over same-named extras.
        let ctx = minijinja::value::merge_maps([base, minijinja::Value::from_serialize(&extra)]);
        let mut out = CappedOutput {
            bytes: Vec::new(),
            cap: limits.max_output_bytes,
            overflowed: false,
        };
        let rendered = tmpl.render_captured_to(ctx, &mut out);
        if out.overflowed {
            return Err(tok_err(format!(
                "the chat template's output exceeds the limit of {} bytes",
                limits.max_output_bytes
            )));
        }
        match rendered {
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(tok_err(format!(
                "the chat template ran out of fuel: it did not finish within {} steps (a loop that does not end?)",
                limits.fuel
            ))),
            Err(e) => Err(tok_err(format!(
                "rendering the chat template: {}",
                describe_jinja(&e)
            ))),
            // minijinja writes whole `str`s and CappedOutput refuses whole writes.
            Ok(_) => String::from_utf8(out.bytes)
                .map_err(|e| tok_err(format!("the chat template's output is not UTF-8: {e}"))),
        }
    }
}

/// What a chat template may make tandem do. Real templates render a long conversation with
/// tools in well under 1% of each limit; hostile ones (a loop that never ends, recursion
/// without a base case, gigabytes of output) stop at the first limit they reach.
#[derive(Clone, Copy, Debug)]
pub struct TemplateLimits {
    /// Bytes of template source (real ones are under 20 KB).
    pub max_source_bytes: usize,
    /// minijinja instructions per render (one unit each).
    pub fuel: u64,
    /// Nesting of macro calls, includes and blocks at run time (minijinja's own cap is 500).
    pub max_recursion: usize,
    /// Bytes of rendered prompt: more than any context window holds as text.
    pub max_output_bytes: usize,
    /// Largest `indent` of the `tojson` filter.
    pub max_json_indent: usize,
}

/// The limits every chat-template render runs under (see RELIABILITY.md).
pub const TEMPLATE_LIMITS: TemplateLimits = TemplateLimits {
    max_source_bytes: 1 << 20,
    fuel: 2_000_000,
    max_recursion: 64,
    max_output_bytes: 16 << 20,
    max_json_indent: 64,
};

/// A render target that refuses any write that would take it past `cap` bytes.
struct CappedOutput {
    bytes: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn describe_jinja(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

fn raise_exception(msg: String) -> std::result::Result<minijinja::Value, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("the template raised an exception: {msg}"),
    ))
}

/// `json.dumps` separators: `", "` between items and `": "` after keys (minijinja's own `tojson`
/// is compact and HTML-escapes, which changes tool-calling prompts).
struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn tojson(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
    max_indent: usize,
) -> std::result::Result<minijinja::Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    if let Some(n) = indent.filter(|&n| n > max_indent) {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("tojson: indent {n} is larger than the limit of {max_indent}"),
        ));
    }
    let mut out = Vec::new();
    let res = match indent {
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, PythonJson,
        )),
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
        }
    };
    res.map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("tojson: {e}"),
        )
    })?;
    let s = String::from_utf8(out).map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("tojson: {e}"),
        )
    })?;
    Ok(minijinja::Value::from_safe_string(s))
}

// ---------------------------------------------------------------------------------------------
// Streaming detokenizer

/// Turns a stream of token ids into text deltas that are always complete UTF-8: a character
/// spread over several byte tokens is held back until its last byte arrives. The concatenated
/// deltas plus [`Detokenizer::finish`] equal `decode(all ids)`.
pub struct Detokenizer {
    tok: Tokenizer,
    skip_special: bool,
    state: DetokState,
}

enum DetokState {
    /// Byte-level vocabularies: bytes not yet emitted (an incomplete character at the end).
    Bytes { pending: Vec<u8> },
    /// Other decoders (SentencePiece-style `tokenizer.json`): re-decode a short window of ids and
    /// emit what grew, as long as it does not end in a replacement character.
    Window {
        ids: Vec<u32>,
        prefix: usize,
        read: usize,
    },
}

impl Detokenizer {
    /// `skip_special`: leave control tokens (`<|im_end|>`) out of the text.
    pub fn new(tok: &Tokenizer, skip_special: bool) -> Self {
        let state = if tok.inner.pieces.is_some() {
            DetokState::Bytes {
                pending: Vec::new(),
            }
        } else {
            DetokState::Window {
                ids: Vec::new(),
                prefix: 0,
                read: 0,
            }
        };
        Detokenizer {
            tok: tok.clone(),
            skip_special,
            state,
        }
    }

    /// Adds one token; returns the text that is now complete (often empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tok.check_id(&[id])?;
        if self.skip_special && self.tok.is_special(id) {
            return Ok(String::new());
        }
        match &mut self.state {
            DetokState::Bytes { pending } => {
                pending.extend_from_slice(self.tok.piece(id)?);
                Ok(take_complete_utf8(pending))
            }
            DetokState::Window { ids, prefix, read } => {
                ids.push(id);
                let before = self
                    .tok
                    .decode_inner(&ids[*prefix..*read], self.skip_special)?;
                let now = self.tok.decode_inner(&ids[*prefix..], self.skip_special)?;
                if now.len() > before.len() && !now.ends_with(char::REPLACEMENT_CHARACTER) {
                    if let Some(delta) = now.get(before.len()..) {
                        let delta = delta.to_string();
                        *prefix = *read;
                        *read = ids.len();
                        return Ok(delta);
                    }
                }
                Ok(String::new())
            }
        }
    }

    /// Adds several tokens; returns the text that is now complete.
    pub fn push_all(&mut self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        for &id in ids {
            out.push_str(&self.push(id)?);
        }
        Ok(out)
    }

    /// Flushes what is held back (an incomplete character becomes U+FFFD, as `decode` does) and
    /// resets the stream.
    pub fn finish(&mut self) -> Result<String> {
        match &mut self.state {
            DetokState::Bytes { pending } => {
                let out = String::from_utf8_lossy(pending).into_owned();
                pending.clear();
                Ok(out)
            }
            DetokState::Window { ids, prefix, read } => {
                let before = self
                    .tok
                    .decode_inner(&ids[*prefix..*read], self.skip_special)?;
                let now = self.tok.decode_inner(&ids[*prefix..], self.skip_special)?;
                let out = now.get(before.len()..).unwrap_or("").to_string();
                ids.clear();
                *prefix = 0;
                *read = 0;
                Ok(out)
            }
        }
    }
}

/// Removes and returns the longest decodable prefix of `pending`: valid UTF-8, with each invalid
/// sequence replaced by U+FFFD exactly as `String::from_utf8_lossy` would; an incomplete character
/// at the end stays in `pending`.
fn take_complete_utf8(pending: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&pending[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = pending.len();
                break;
            }
            Err(e) => {
                let valid = start + e.valid_up_to();
                out.push_str(&String::from_utf8_lossy(&pending[start..valid]));
                match e.error_len() {
                    None => {
                        start = valid;
                        break;
                    }
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        start = valid + bad;
                    }
                }
            }
        }
    }
    pending.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tokenizer>();
        assert_send_sync::<Detokenizer>();
    }

    #[test]
    fn byte_level_table_is_a_bijection() {
        let table = byte_level_chars();
        let mut seen = std::collections::HashSet::new();
        for c in table {
            assert!(seen.insert(c), "{c:?} twice");
        }
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
        let inv = byte_level_inverse();
        for (b, c) in table.iter().enumerate() {
            assert_eq!(inv[*c as usize], b as i16);
        }
    }

    #[test]
    fn take_complete_utf8_holds_incomplete_and_replaces_invalid() {
        let euro = "€".as_bytes(); // E2 82 AC
        let mut p = vec![b'a', euro[0]];
        assert_eq!(take_complete_utf8(&mut p), "a");
        assert_eq!(p, vec![euro[0]]);
        p.push(euro[1]);
        assert_eq!(take_complete_utf8(&mut p), "");
        p.push(euro[2]);
        assert_eq!(take_complete_utf8(&mut p), "€");
        assert!(p.is_empty());
        // An interrupted sequence is replaced the way from_utf8_lossy does it.
        let bytes = [0xE2, 0x82, b'x', 0xFF, b'y', 0xF0, 0x9F];
        let mut p = bytes.to_vec();
        let got = take_complete_utf8(&mut p) + &String::from_utf8_lossy(&p);
        assert_eq!(got, String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn special_matcher_prefers_longest_leftmost() {
        let m = SpecialMatcher::new(vec![
            ("<a>".into(), 1),
            ("<a><b>".into(), 2),
            ("b".into(), 3),
        ]);
        let text = b"x<a><b>b";
        assert_eq!(m.match_at(text, 0), None);
        assert_eq!(m.match_at(text, 1), Some((2, 6)));
        assert_eq!(m.match_at(text, 7), Some((3, 1)));
    }
}
