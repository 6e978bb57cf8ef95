//! SentencePiece (GGUF `tokenizer.ggml.model = llama`: Llama 1/2, Mistral, Gemma), tokenized the
//! way llama.cpp's `llm_tokenizer_spm` does it:
//! 1. The text is split at special tokens written in it (user-defined ones always, control and
//!    unknown ones only with `special = true`), leftmost first and the longest at a position.
//!    (llama.cpp splits at the longest token everywhere first, then the next longest; the two
//!    differ only where the texts of two special tokens overlap in the text, which Gemma's
//!    cannot: its user-defined tokens are runs of one whitespace character and `<tag>`s.)
//! 2. Each stretch of plain text gets a space in front where the file says `add_space_prefix`
//!    (default on) and the stretch starts the text or follows a special token; then every `' '`
//!    becomes `'▁'` (U+2581), the character SentencePiece vocabularies write spaces with.
//! 3. The stretch starts as one symbol per character; the adjacent pair whose concatenation is a
//!    token with the highest score is merged (ties: the leftmost pair), again and again, until no
//!    pair is a token.
//! 4. A final symbol that is not a token becomes one byte token per byte (`<0x41>`, "byte
//!    fallback"), or the one-byte token itself where the vocabulary has no `<0x..>` form.
//!
//! Decoding is the inverse: `'▁'` back to `' '`, byte tokens to their byte, control and
//! user-defined tokens as written, unused ones as nothing; with `add_space_prefix` the space put
//! in front of the first word is dropped again (llama.cpp's `llama_detokenize`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use super::{
    gguf_chat_template, gguf_special_ids, short, tok_err, Inner, Model, Pieces, SpecialMatcher,
    TokenKind, Tokenizer,
};
use crate::model::gguf::MetaValue;
use crate::Result;

/// llama.cpp's token types that matter here (`llama_token_type`).
const TYPE_UNDEFINED: i64 = 0;
const TYPE_UNUSED: i64 = 5;
const TYPE_BYTE: i64 = 6;

/// SentencePiece's visible space.
const SPACE: char = '\u{2581}';

/// The SentencePiece model: the vocabulary's strings and scores, the byte tokens, and the two
/// special-token splitters.
pub(super) struct Spm {
    /// Token string → id; later duplicates win, as in llama.cpp's `token_to_id`.
    vocab: HashMap<String, u32>,
    scores: Vec<f32>,
    /// The token each byte falls back to (`<0xXX>`, else the one-byte token), if any.
    byte_ids: [Option<u32>; 256],
    /// Longest token in bytes: longer pairs are not looked up.
    max_token_bytes: usize,
    /// Control, unknown and user-defined tokens (`encode(.., special = true)`).
    all_specials: SpecialMatcher,
    /// User-defined tokens only (`special = false`).
    user_defined: SpecialMatcher,
    add_space_prefix: bool,
}

/// One symbol of the text being merged: a byte range and its neighbours in the chain.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols; the heap pops the highest score, then the
/// leftmost pair (llama.cpp's `llm_bigram_spm::comparator`).
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes of the merged text: a pair whose symbols changed since it was queued is stale.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // Scores are checked finite at load, so total_cmp orders them as `<` does.
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl Spm {
    /// Ids for `text` (no BOS), appended to `out`.
    pub(super) fn encode(&self, text: &str, special: bool, out: &mut Vec<u32>) -> Result<()> {
        let matcher = if special {
            &self.all_specials
        } else {
            &self.user_defined
        };
        let bytes = text.as_bytes();
        // llama.cpp: "prefix with space if first token" — the text's start counts as special.
        let mut prev_special = true;
        let (mut start, mut at) = (0, 0);
        while at < bytes.len() {
            match matcher.match_at(bytes, at) {
                Some((id, len)) => {
                    // A match starts with a UTF-8 lead byte, so `at` is a char boundary.
                    if at > start {
                        self.encode_fragment(&text[start..at], prev_special, out)?;
                    }
                    out.push(id);
                    prev_special = true;
                    at += len;
                    start = at;
                }
                None => at += 1,
            }
        }
        if start < bytes.len() {
            self.encode_fragment(&text[start..], prev_special, out)?;
        }
        Ok(())
    }

    /// One stretch of plain text: space prefix, escape, merge, byte fallback.
    fn encode_fragment(&self, raw: &str, prev_special: bool, out: &mut Vec<u32>) -> Result<()> {
        let mut text = String::with_capacity(raw.len() + 3);
        if self.add_space_prefix && prev_special {
            text.push(SPACE);
        }
        for c in raw.chars() {
            text.push(if c == ' ' { SPACE } else { c });
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: Some(i + 1),
            });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        } else {
            return Ok(());
        }
        let mut queue = BinaryHeap::new();
        for i in 1..symbols.len() {
            self.try_add_bigram(&text, &symbols, i - 1, i, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Skip a pair one of whose symbols was merged away or grew since it was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = l.prev {
                self.try_add_bigram(&text, &symbols, p, b.left, &mut queue);
            }
            if let Some(n) = r.next {
                self.try_add_bigram(&text, &symbols, b.left, n, &mut queue);
            }
        }
        let mut i = Some(0);
        while let Some(s) = i {
            let sym = symbols[s];
            let piece = &text[sym.start..sym.start + sym.len];
            match self.vocab.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        out.push(self.byte_ids[b as usize].ok_or_else(|| {
                            tok_err(format!(
                                "cannot encode {piece:?}: it is not a token and the vocabulary \
                                 has no byte token <0x{b:02X}> to fall back to"
                            ))
                        })?);
                    }
                }
            }
            i = sym.next;
        }
        Ok(())
    }

    /// Queues the merge of `left` and `right` if their concatenation is a token.
    fn try_add_bigram(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let start = symbols[left].start;
        let size = symbols[left].len + symbols[right].len;
        if size > self.max_token_bytes {
            return;
        }
        if let Some(&id) = self.vocab.get(&text[start..start + size]) {
            queue.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                size,
            });
        }
    }

    pub(super) fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }
}

/// `<0xXX>` → the byte.
fn byte_token_value(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn meta_bool(meta: &BTreeMap<String, MetaValue>, key: &str) -> Result<Option<bool>> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| tok_err(format!("GGUF {key} is {}, expected a bool", short(v)))),
    }
}

/// The `llama` half of [`Tokenizer::from_gguf_metadata`]: the token list and kinds are read and
/// checked already; `types` are the raw `token_type` values (1 where the file has none).
pub(super) fn from_gguf(
    meta: &BTreeMap<String, MetaValue>,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    types: Vec<i64>,
) -> Result<Tokenizer> {
    let n = tokens.len();
    let scores = match meta.get("tokenizer.ggml.scores") {
        // llama.cpp scores every token 0 when the file has none.
        None => vec![0.0f32; n],
        Some(v) => {
            let arr = v.as_array().ok_or_else(|| {
                tok_err(format!(
                    "GGUF tokenizer.ggml.scores is {}, expected a float array",
                    short(v)
                ))
            })?;
            if arr.len() != n {
                return Err(tok_err(format!(
                    "GGUF tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {n}",
                    arr.len()
                )));
            }
            arr.iter()
                .enumerate()
                .map(|(i, s)| match s.as_f64() {
                    Some(x) if x.is_finite() && (x as f32).is_finite() => Ok(x as f32),
                    _ => Err(tok_err(format!(
                        "GGUF tokenizer.ggml.scores[{i}] is {}, expected a finite float",
                        short(s)
                    ))),
                })
                .collect::<Result<Vec<f32>>>()?
        }
    };

    let mut vocab = HashMap::with_capacity(n);
    let mut pieces = Pieces::empty(n);
    let mut byte_ids: [Option<u32>; 256] = [None; 256];
    let mut all_specials = Vec::new();
    let mut user_defined = Vec::new();
    for (i, ((t, &kind), &ty)) in tokens.iter().zip(&kinds).zip(&types).enumerate() {
        let id = i as u32;
        vocab.insert(t.clone(), id);
        match kind {
            TokenKind::Special => all_specials.push((t.clone(), id)),
            TokenKind::UserDefined => {
                all_specials.push((t.clone(), id));
                user_defined.push((t.clone(), id));
            }
            TokenKind::Normal | TokenKind::Unused => {}
        }
        match (kind, ty) {
            (TokenKind::Special | TokenKind::UserDefined, _) => pieces.push(t.as_bytes()),
            (_, TYPE_BYTE) => {
                let b = byte_token_value(t).ok_or_else(|| {
                    tok_err(format!(
                        "GGUF tokenizer.ggml.tokens[{i}] = {:?} has token_type 6 (byte) but is not written <0xXX>",
                        super::preview(t)
                    ))
                })?;
                pieces.push(&[b]);
            }
            // llama.cpp writes nothing for unused and undefined tokens.
            (_, TYPE_UNUSED | TYPE_UNDEFINED) => pieces.push(&[]),
            _ => pieces.push(t.replace(SPACE, " ").as_bytes()),
        }
        pieces.end_token()?;
    }
    // llama.cpp's byte_to_token: the token written <0xXX>, else the one-byte token.
    for (b, slot) in byte_ids.iter_mut().enumerate() {
        *slot = vocab
            .get(format!("<0x{b:02X}>").as_str())
            .copied()
            .or_else(|| {
                u8::try_from(b)
                    .ok()
                    .filter(u8::is_ascii)
                    .and_then(|b| vocab.get((b as char).to_string().as_str()).copied())
            });
    }
    let max_token_bytes = tokens.iter().map(String::len).max().unwrap_or(0);

    // llama.cpp's defaults for SentencePiece files: BOS 1, EOS 2, BOS added, a space prefix.
    let mut ids = gguf_special_ids(meta, n)?;
    if !meta.contains_key("tokenizer.ggml.bos_token_id") && n > 1 {
        ids.bos = Some(1);
    }
    if !meta.contains_key("tokenizer.ggml.eos_token_id") && n > 2 {
        ids.eos = Some(2);
        ids.eos_ids.insert(0, 2);
    }
    let add_bos = ids.add_bos.unwrap_or(true);
    if add_bos && ids.bos.is_none() {
        return Err(tok_err(
            "GGUF tokenizer.ggml.add_bos_token is set but there is no bos_token_id",
        ));
    }
    let add_space_prefix = meta_bool(meta, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let chat_template = gguf_chat_template(meta)?;

    let spm = Spm {
        vocab,
        scores,
        byte_ids,
        max_token_bytes,
        all_specials: SpecialMatcher::new(all_specials),
        user_defined: SpecialMatcher::new(user_defined),
        add_space_prefix,
    };
    Ok(Tokenizer::assemble(Inner {
        model: Model::Spm(Box::new(spm)),
        tokens,
        kinds,
        pieces: Some(pieces),
        specials: SpecialMatcher::new(Vec::new()),
        bos: ids.bos,
        eos: ids.eos,
        pad: ids.pad,
        eos_ids: ids.eos_ids,
        add_bos,
        add_space_prefix,
        chat_template,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens_parse_only_in_their_exact_form() {
        assert_eq!(byte_token_value("<0x0A>"), Some(10));
        assert_eq!(byte_token_value("<0xff>"), Some(255));
        assert_eq!(byte_token_value("<0x1>"), None);
        assert_eq!(byte_token_value("<0x100>"), None);
        assert_eq!(byte_token_value("0x41"), None);
    }

    #[test]
    fn bigrams_pop_highest_score_then_leftmost() {
        let mut q = BinaryHeap::new();
        for (score, left) in [(1.0, 5), (2.0, 7), (2.0, 3), (-1.0, 0)] {
            q.push(Bigram {
                score,
                left,
                right: left + 1,
                size: 2,
            });
        }
        let order: Vec<usize> = std::iter::from_fn(|| q.pop().map(|b| b.left)).collect();
        assert_eq!(order, vec![3, 7, 5, 0]);
    }
}
