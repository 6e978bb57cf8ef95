//! Text ↔ token ids, for every tokenizer a model file can carry, behind one [`Tokenizer`]:
//! - `bpe`: byte-level BPE from GGUF `tokenizer.ggml.model = gpt2` (the `tokenizers` crate's BPE
//!   with llama.cpp's pre-tokenizer regexes);
//! - `spm`: SentencePiece from GGUF `tokenizer.ggml.model = llama` (scores-based merging and
//!   byte fallback as llama.cpp's `llm_tokenizer_spm`; Gemma 3, Llama 2, Mistral);
//! - `hf`: a Hugging Face `tokenizer.json` (safetensors models);
//! - `template`: the model's own chat template rendered with `minijinja`, under limits;
//! - `detok`: a streaming [`Detokenizer`] that only ever emits complete UTF-8 text.
//!
//! This file holds the public API, what is shared (token kinds, the special-token matcher, the
//! decoded pieces) and the limits every loader checks (vocabulary size, token length, merges).
//!
//! The behaviour follows llama.cpp (the fixtures in `tests/fixtures` come from it):
//! - GGUF control tokens (`token_type` 3) and unknown tokens (2) are *special*: they are recognised
//!   in the text only when `encode(.., special = true)`, otherwise the text is tokenized as plain
//!   characters. User-defined tokens (4) are always recognised, as in llama.cpp and HF.
//! - `encode` never adds BOS; a caller that builds a raw prompt prepends [`Tokenizer::bos_id`] when
//!   [`Tokenizer::add_bos`] says so (chat templates usually write the BOS text themselves).
//! - Decoding writes every token, special ones included, so `decode(encode(s, true)) == s`
//!   (for a SentencePiece file with `add_space_prefix`, only where no special token is followed by
//!   text: llama.cpp puts a space in front of each such stretch and keeps it when decoding).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::gguf::MetaValue;
use crate::{Error, Result};

mod bpe;
mod detok;
mod hf;
mod spm;
mod template;

pub use bpe::byte_level_chars;
pub use detok::Detokenizer;
pub use template::{ChatMessage, ChatTemplate, TemplateLimits, CHATML_TEMPLATE, TEMPLATE_LIMITS};

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

/// The bytes each token decodes to, flattened (`bytes[offsets[i]..offsets[i + 1]]`).
struct Pieces {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl Pieces {
    /// An empty table for `n` tokens, filled with [`Pieces::push`] and [`Pieces::end_token`].
    fn empty(n: usize) -> Self {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        Pieces {
            bytes: Vec::new(),
            offsets,
        }
    }

    /// Appends bytes to the token being built.
    fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Ends the token being built.
    fn end_token(&mut self) -> Result<()> {
        let end = u32::try_from(self.bytes.len())
            .map_err(|_| Error::Tokenizer("vocabulary text exceeds 4 GiB".into()))?;
        self.offsets.push(end);
        Ok(())
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let start = *self.offsets.get(i)? as usize;
        let end = *self.offsets.get(i + 1)? as usize;
        Some(&self.bytes[start..end])
    }
}

/// Finds special tokens written in text: leftmost, and the longest one at a position (the lowest
/// id among tokens with the same text). A byte trie, so a position costs at most the longest
/// token's length whatever the number of special tokens (Gemma 3 has 6,414).
struct SpecialMatcher {
    nodes: Vec<TrieNode>,
}

#[derive(Default)]
struct TrieNode {
    /// (byte, child node), sorted by byte.
    children: Vec<(u8, u32)>,
    /// The token ending here: (id, length in bytes).
    token: Option<(u32, usize)>,
}

impl SpecialMatcher {
    fn new(mut tokens: Vec<(String, u32)>) -> Self {
        tokens.retain(|(s, _)| !s.is_empty());
        tokens.sort_by_key(|t| t.1);
        let mut nodes = vec![TrieNode::default()];
        for (s, id) in &tokens {
            let mut node = 0usize;
            for &b in s.as_bytes() {
                node = match nodes[node].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(k) => nodes[node].children[k].1 as usize,
                    Err(k) => {
                        let child = nodes.len();
                        nodes[node].children.insert(k, (b, child as u32));
                        nodes.push(TrieNode::default());
                        child
                    }
                };
            }
            nodes[node].token.get_or_insert((*id, s.len()));
        }
        SpecialMatcher { nodes }
    }

    fn is_empty(&self) -> bool {
        self.nodes[0].children.is_empty()
    }

    /// The special token starting at `at`, if any: (id, length in bytes).
    fn match_at(&self, text: &[u8], at: usize) -> Option<(u32, usize)> {
        let mut node = 0usize;
        let mut found = None;
        for &b in &text[at..] {
            let children = &self.nodes[node].children;
            match children.binary_search_by_key(&b, |c| c.0) {
                Ok(k) => node = children[k].1 as usize,
                Err(_) => break,
            }
            if let Some(t) = self.nodes[node].token {
                found = Some(t);
            }
        }
        found
    }
}

/// What turns plain text into ids.
enum Model {
    /// The `tokenizers` crate's pipeline (GGUF byte-level BPE, `tokenizer.json`). Always has
    /// `encode_special_tokens` on: special tokens are split out by [`SpecialMatcher`] here, so
    /// one instance serves both `special = true` and `false`.
    Hf(Box<tokenizers::Tokenizer>),
    /// tandem's own SentencePiece (GGUF `llama`), which splits out special tokens itself.
    Spm(Box<spm::Spm>),
}

struct Inner {
    model: Model,
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
    /// SentencePiece put a space in front of the text; decoding drops it again.
    add_space_prefix: bool,
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
        if model != "gpt2" && model != "llama" {
            let kind = match model {
                "bert" => " (WordPiece)",
                "t5" => " (Unigram)",
                "rwkv" => " (RWKV world)",
                _ => "",
            };
            return Err(Error::Unsupported(format!(
                "GGUF tokenizer.ggml.model = '{model}'{kind}: only 'gpt2' (byte-level BPE) and 'llama' (SentencePiece) are implemented"
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
        // Raw llama.cpp token types (SentencePiece needs "byte" and "unused"); 1 = normal.
        let types = match meta.get("tokenizer.ggml.token_type") {
            None => {
                log::warn!(
                    "GGUF has no tokenizer.ggml.token_type: every token is treated as normal text"
                );
                vec![1i64; n]
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
                        t.as_i64().ok_or_else(|| {
                            tok_err(format!(
                                "GGUF tokenizer.ggml.token_type[{i}] is {t:?}, expected an integer"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let kinds = types.iter().map(|&t| TokenKind::from_gguf(t)).collect();
        match model {
            "llama" => spm::from_gguf(meta, tokens, kinds, types),
            _ => bpe::from_gguf(meta, tokens, kinds),
        }
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
        let hf = match &self.inner.model {
            Model::Spm(spm) => {
                spm.encode(text, special, &mut out)?;
                return Ok(out);
            }
            Model::Hf(hf) => hf,
        };
        if !special || self.inner.specials.is_empty() {
            encode_plain(hf, text, &mut out)?;
            return Ok(out);
        }
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut at = 0;
        while at < bytes.len() {
            match self.inner.specials.match_at(bytes, at) {
                Some((id, len)) => {
                    // A match starts with a UTF-8 lead byte, so `at` is a char boundary.
                    encode_plain(hf, &text[start..at], &mut out)?;
                    out.push(id);
                    at += len;
                    start = at;
                }
                None => at += 1,
            }
        }
        encode_plain(hf, &text[start..], &mut out)?;
        Ok(out)
    }

    /// Token ids of a raw prompt (no chat template): BOS first where the model asks for one
    /// ([`Tokenizer::add_bos`], e.g. Gemma 3), then `text` with special tokens as plain text,
    /// as llama.cpp tokenizes a completion prompt.
    pub fn encode_raw_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = match self.inner.bos {
            Some(bos) if self.inner.add_bos => vec![bos],
            _ => vec![],
        };
        ids.extend(self.encode(text, false)?);
        Ok(ids)
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
                // The space SentencePiece put in front of the text goes again, from the first
                // token only; a BOS skipped in front keeps it (both as llama_detokenize does).
                let mut strip_space = self.inner.add_space_prefix;
                let mut ids = ids;
                if skip_special && self.inner.add_bos {
                    if let Some((&first, rest)) = ids.split_first() {
                        if Some(first) == self.inner.bos {
                            strip_space = false;
                            ids = rest;
                        }
                    }
                }
                let mut bytes = Vec::new();
                for &id in ids {
                    let mut piece = self.piece(id)?;
                    if skip_special && self.is_special(id) {
                        piece = &[];
                    }
                    if std::mem::take(&mut strip_space) {
                        piece = piece.strip_prefix(b" ").unwrap_or(piece);
                    }
                    bytes.extend_from_slice(piece);
                }
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            None => {
                self.check_id(ids)?;
                let Model::Hf(hf) = &self.inner.model else {
                    return Err(tok_err("a SentencePiece tokenizer without its pieces"));
                };
                hf.decode(ids, skip_special)
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

    /// The bytes token `id` decodes to, where the vocabulary maps tokens to bytes (GGUF
    /// vocabularies and byte-level `tokenizer.json`); `None` for other `tokenizer.json`
    /// decoders and ids outside the vocabulary. Control tokens give their written form.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.inner.pieces.as_ref().and_then(|p| p.get(id))
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
        match &self.inner.model {
            Model::Hf(hf) => hf.token_to_id(token),
            Model::Spm(spm) => spm.token_id(token),
        }
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

    /// Whether the text gets a space in front before SentencePiece tokenizes it (GGUF
    /// `tokenizer.ggml.add_space_prefix`; false for BPE). [`Tokenizer::decode`] drops that space
    /// again; a [`Detokenizer`], which continues a prompt, keeps it.
    pub fn add_space_prefix(&self) -> bool {
        self.inner.add_space_prefix
    }

    /// The model's own Jinja chat template, if it ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.inner.chat_template.as_deref()
    }

    /// The chat template to render prompts with: the model's own, or ChatML when it has none but
    /// its vocabulary has ChatML's `<|im_start|>` and `<|im_end|>` tokens. A model with neither
    /// (a base model such as Gemma 3 270M) is [`Error::NoChatTemplate`]: ChatML markers it has
    /// never seen would be split into plain characters and make a meaningless prompt.
    pub fn chat_template_or_default(&self) -> Result<ChatTemplate> {
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
            Some(t) => Ok(ChatTemplate::new(t.clone(), bos, eos)),
            None if ["<|im_start|>", "<|im_end|>"]
                .iter()
                .all(|t| self.token_id(t).is_some_and(|id| self.is_special(id))) =>
            {
                log::warn!("the model has no chat template: using ChatML");
                Ok(ChatTemplate::chatml())
            }
            None => Err(Error::NoChatTemplate(
                "the model file has no tokenizer.chat_template and its vocabulary has no ChatML \
                 tokens (a base model?): give a raw prompt instead of a conversation"
                    .into(),
            )),
        }
    }

    /// Renders `messages` with the model's chat template (see
    /// [`Tokenizer::chat_template_or_default`]).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.chat_template_or_default()?
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

/// Plain text (no special tokens in it) through the `tokenizers` pipeline.
fn encode_plain(hf: &tokenizers::Tokenizer, text: &str, out: &mut Vec<u32>) -> Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let enc = hf
        .encode_fast(text, false)
        .map_err(|e| tok_err(format!("encoding {:?}: {e}", preview(text))))?;
    out.extend_from_slice(enc.get_ids());
    Ok(())
}

/// The special ids GGUF metadata names, each inside the vocabulary of `n` tokens (a padding id
/// outside it is ignored with a warning), and `add_bos_token` as written.
struct GgufSpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    /// EOS, then EOT and EOM where the file names them.
    eos_ids: Vec<u32>,
    add_bos: Option<bool>,
}

fn gguf_special_ids(meta: &BTreeMap<String, MetaValue>, n: usize) -> Result<GgufSpecialIds> {
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
        None => None,
        Some(v) => Some(v.as_bool().ok_or_else(|| {
            tok_err(format!(
                "GGUF tokenizer.ggml.add_bos_token is {v:?}, expected a bool"
            ))
        })?),
    };
    Ok(GgufSpecialIds {
        bos,
        eos,
        pad,
        eos_ids,
        add_bos,
    })
}

/// `tokenizer.chat_template`, if the file has one.
fn gguf_chat_template(meta: &BTreeMap<String, MetaValue>) -> Result<Option<String>> {
    Ok(match meta.get("tokenizer.chat_template") {
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
    })
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
