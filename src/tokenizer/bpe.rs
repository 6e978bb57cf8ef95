//! Byte-level BPE (GGUF `tokenizer.ggml.model = gpt2`): llama.cpp's pre-tokenizer regexes per
//! `tokenizer.ggml.pre`, the merges, and GPT-2's byte <-> printable-character table in which these
//! vocabularies are written. Encoding runs on the `tokenizers` crate's BPE; decoding goes through
//! [`Pieces`] built from the byte table.

use std::collections::BTreeMap;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::{
    check_merge_count, gguf_chat_template, gguf_special_ids, gguf_str_array, tok_err, Inner, Model,
    Pieces, SpecialMatcher, TokenKind, Tokenizer,
};
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

impl Pieces {
    /// The pieces of a byte-level vocabulary: ordinary tokens through the byte table, added
    /// tokens as written.
    pub(super) fn byte_level(tokens: &[String], kinds: &[TokenKind]) -> Result<Self> {
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
}

/// The `gpt2` half of [`Tokenizer::from_gguf_metadata`]: the token list and kinds are read and
/// checked already.
pub(super) fn from_gguf(
    meta: &BTreeMap<String, MetaValue>,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
) -> Result<Tokenizer> {
    let n = tokens.len();

    let merges_raw = gguf_str_array(meta, "tokenizer.ggml.merges")?.ok_or_else(|| {
        tok_err("GGUF metadata has no tokenizer.ggml.merges (required by a 'gpt2' BPE tokenizer)")
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
    let ids = gguf_special_ids(meta, n)?;
    let add_bos = ids.add_bos.unwrap_or(pre.add_bos);
    if add_bos && ids.bos.is_none() {
        return Err(tok_err(
            "GGUF tokenizer.ggml.add_bos_token is set but there is no bos_token_id",
        ));
    }
    let chat_template = gguf_chat_template(meta)?;

    let pieces = Pieces::byte_level(&tokens, &kinds)?;
    Ok(Tokenizer::assemble(Inner {
        model: Model::Hf(Box::new(hf)),
        tokens,
        kinds,
        pieces: Some(pieces),
        specials: SpecialMatcher::new(special),
        bos: ids.bos,
        eos: ids.eos,
        pad: ids.pad,
        eos_ids: ids.eos_ids,
        add_bos,
        add_space_prefix: false,
        chat_template,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
