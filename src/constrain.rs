//! Constrained decoding: JSON schema, regex and Lark grammars (llguidance) turned into token
//! masks for the rows the target verifies, and the tokens a grammar forces.
//!
//! ```text
//! Constraint ──Grammars::compile──▶ Constrained (an llguidance Matcher after the emitted tokens)
//! each step:  forced()              the tokens the grammar allows as the only continuation
//!             forced_after(path)    … after a draft's path (a drafter's draft gets them appended)
//!             masks(batch, parents) [rows, ceil(V / 32)] u32: the token set after each row's
//!                                   path (root, then every draft node), uploaded for the GPU
//!                                   mask before argmax, sampling and verification
//!             accept(emitted)       the matcher follows the emitted tokens
//! ```
//!
//! A row's set depends only on the tokens of its path, never on the tree around it, so the
//! masked logits of a token are the same alone and as a tree node: greedy constrained output
//! with any drafting method equals plain constrained output. A drafted token the grammar
//! forbids stays in the batch (the drafter's verdict must match its proposal) and is simply
//! rejected: its parent's row does not allow it; its own row and its descendants' rows are
//! left unmasked, as nothing after it can be accepted.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::kernels::logit_mask::mask_words;
use crate::tokenizer::{TokenKind, Tokenizer};
use crate::{Error, Result};

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// A JSON value valid under this JSON schema (`{"type": "object"}`: any object), written
    /// on one line with `, ` and `: ` separators (llguidance's `x-guidance` options; a
    /// schema that sets its own keeps them).
    JsonSchema(Value),
    /// Text matching this regular expression (whole output).
    Regex(String),
    /// Text of this Lark grammar (llguidance's dialect: `start: …` rules, `%json` and more).
    Lark(String),
}

impl Constraint {
    /// Any JSON object (OpenAI's `{"type": "json_object"}`).
    pub fn json_object() -> Self {
        Constraint::JsonSchema(serde_json::json!({ "type": "object" }))
    }

    /// A JSON schema from its text.
    pub fn json_schema_text(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("the JSON schema is not JSON: {e}")))?;
        Ok(Constraint::JsonSchema(v))
    }

    /// OpenAI's `response_format`: `{"type": "text"}` (no constraint), `{"type":
    /// "json_object"}` (any object; llama-server's `"schema"` field beside it narrows it) or
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
    pub fn from_response_format(format: &Value) -> Result<Option<Self>> {
        let kind = format.get("type").and_then(Value::as_str);
        match kind {
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(match format.get("schema") {
                Some(s) => Constraint::JsonSchema(s.clone()),
                None => Constraint::json_object(),
            })),
            Some("json_schema") => {
                let schema = format
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    // Some clients put the schema one level up.
                    .or_else(|| format.get("schema"));
                match schema {
                    Some(s) if s.is_object() || s.is_boolean() => {
                        Ok(Some(Constraint::JsonSchema(s.clone())))
                    }
                    Some(_) => Err(Error::Invalid(
                        "response_format.json_schema.schema must be a JSON schema object".into(),
                    )),
                    None => Err(Error::Invalid(
                        "response_format of type json_schema needs json_schema.schema".into(),
                    )),
                }
            }
            Some(other) => Err(Error::Invalid(format!(
                "response_format type {other:?} (text, json_object or json_schema)"
            ))),
            None => Err(Error::Invalid(
                "response_format needs a \"type\" (text, json_object or json_schema)".into(),
            )),
        }
    }

    /// The kind, for messages and statistics.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonSchema(_) => "json_schema",
            Constraint::Regex(_) => "regex",
            Constraint::Lark(_) => "grammar",
        }
    }

    fn grammar(&self) -> TopLevelGrammar {
        match self {
            Constraint::JsonSchema(v) => {
                let mut v = v.clone();
                // One line with `, ` and `: ` between items: the separators and the keys of a
                // fixed schema become forced tokens. A schema's own x-guidance options win.
                if let Some(o) = v.as_object_mut() {
                    o.entry("x-guidance").or_insert_with(|| {
                        serde_json::json!({
                            "whitespace_flexible": false,
                            "item_separator": ", ",
                            "key_separator": ": ",
                        })
                    });
                }
                TopLevelGrammar::from_json_schema(v)
            }
            Constraint::Regex(r) => TopLevelGrammar::from_regex(r),
            Constraint::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }
}

/// tandem's tokenizer as llguidance sees it: the token trie (each token's bytes; control
/// tokens behind llguidance's 0xFF marker) and the real encoder for forced bytes.
struct Env {
    trie: TokTrie,
    tok: Tokenizer,
    canonical: bool,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        match std::str::from_utf8(s) {
            Ok(text) => match self.tok.encode(text, false) {
                Ok(ids) => ids,
                Err(_) => self.trie.greedy_tokenize(s),
            },
            // A fragment cut inside a character: the trie's greedy split.
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }

    fn tokenize_is_canonical(&self) -> bool {
        self.canonical
    }
}

/// A tokenizer's grammar compiler (llguidance's parser factory: the token trie and its
/// slices), built once per engine and shared by every constrained generation.
pub struct Grammars {
    factory: ParserFactory,
    /// Tokens the tokenizer has (the trie's size).
    vocab: usize,
    eos: Vec<u32>,
}

impl Grammars {
    /// Build the compiler for `tok`. Tokenizers whose tokens do not map to bytes (a
    /// non-byte-level `tokenizer.json`) and models without an end-of-sequence token are
    /// refused.
    pub fn new(tok: &Tokenizer) -> Result<Self> {
        let vocab = tok.vocab_size();
        let mut words = Vec::with_capacity(vocab);
        for id in 0..vocab as u32 {
            let bytes = tok.token_bytes(id).ok_or_else(|| {
                Error::Unsupported(
                    "constrained decoding needs a tokenizer whose tokens map to bytes (GGUF \
                     vocabularies and byte-level tokenizer.json); this one decodes through \
                     its tokenizer.json decoder"
                        .into(),
                )
            })?;
            words.push(match tok.token_kind(id) {
                Some(TokenKind::Special) => {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(bytes);
                    w
                }
                Some(TokenKind::Unused) => Vec::new(),
                _ => bytes.to_vec(),
            });
        }
        let eos = tok.eos_ids();
        let Some(&first_eos) = eos.first() else {
            return Err(Error::Unsupported(
                "constrained decoding needs an end-of-sequence token, and the model names none"
                    .into(),
            ));
        };
        let info = TokRxInfo {
            vocab_size: vocab as u32,
            tok_eos: first_eos,
            tok_bos: tok.bos_id(),
            tok_pad: tok.pad_id(),
            tok_unk: None,
            tok_end_of_turn: None,
        };
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
        // A SentencePiece space prefix makes the encoder's split of a fragment differ from its
        // split inside a text, so forced tokens would not be the model's: none are forced.
        let env: TokEnv = Arc::new(Env {
            trie,
            tok: tok.clone(),
            canonical: !tok.add_space_prefix(),
        });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Tokenizer(format!("constrained decoding: {e}")))?;
        factory.quiet();
        Ok(Grammars {
            factory,
            vocab,
            eos: eos.to_vec(),
        })
    }

    /// Compile `c` into a matcher at the start of the output. An invalid schema, regex or
    /// grammar is `Error::Invalid` with llguidance's reason.
    pub fn compile(&self, c: &Constraint) -> Result<Constrained> {
        let parser = self
            .factory
            .create_parser(c.grammar())
            .map_err(|e| Error::Invalid(format!("invalid {}: {e}", c.kind())))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::Invalid(format!("invalid {}: {e}", c.kind())));
        }
        Ok(Constrained {
            matcher,
            vocab: self.vocab,
            eos: self.eos.clone(),
        })
    }
}

/// One generation's grammar state: the matcher after the tokens emitted so far.
pub struct Constrained {
    matcher: Matcher,
    vocab: usize,
    eos: Vec<u32>,
}

fn grammar_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("constrained decoding: {what}: {e}"))
}

impl Constrained {
    /// The tokens the grammar forces next (the only continuation it allows), at most `max`.
    pub fn forced(&mut self, max: usize) -> Vec<u32> {
        let mut f = self.matcher.compute_ff_tokens();
        f.truncate(max);
        f
    }

    /// The tokens the grammar forces after the path `path` (draft tokens after the emitted
    /// ones), at most `max`; none when the grammar does not allow the whole path. The
    /// matcher is back at the emitted tokens afterwards.
    pub fn forced_after(&mut self, path: &[u32], max: usize) -> Result<Vec<u32>> {
        if max == 0 || path.iter().any(|t| self.eos.contains(t)) {
            return Ok(Vec::new());
        }
        let taken = self
            .matcher
            .try_consume_tokens(path)
            .map_err(|e| grammar_error("following a draft path", e))?;
        let forced = if taken == path.len() {
            self.forced(max)
        } else {
            Vec::new()
        };
        if taken > 0 {
            self.matcher
                .rollback(taken)
                .map_err(|e| grammar_error("rolling back a draft path", e))?;
        }
        Ok(forced)
    }

    /// Whether the grammar is complete: nothing but end-of-sequence may follow.
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// The token set after the current state, copied into `row` (`ceil(head_rows / 32)`
    /// words; tokens past the tokenizer's vocabulary, padding rows of the embedding, stay out).
    fn mask_into(&mut self, row: &mut [u32]) -> Result<()> {
        let set = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| grammar_error("computing the token mask", e))?;
        let words = set.as_slice();
        let n = row.len().min(words.len()).min(mask_words(self.vocab));
        row[..n].copy_from_slice(&words[..n]);
        row[n..].fill(0);
        if row.iter().all(|&w| w == 0) {
            return Err(grammar_error(
                "the grammar allows no token here",
                "an empty token set",
            ));
        }
        Ok(())
    }

    /// The token sets of a step's batch `[root, nodes…]`: row 0 after the emitted tokens
    /// (the root is the last of them), row `i + 1` after the path to draft node `i`
    /// (`parents[i]`: its parent node, `None` = a child of the root; parents come before
    /// their children). `head_rows`: the logits row's length. The matcher is back at the
    /// emitted tokens afterwards.
    pub fn masks(
        &mut self,
        nodes: &[u32],
        parents: &[Option<usize>],
        head_rows: usize,
    ) -> Result<Vec<u32>> {
        let words = mask_words(head_rows);
        let n = nodes.len().min(parents.len());
        let mut out = vec![u32::MAX; (n + 1) * words];
        self.mask_into(&mut out[..words])?;
        // Node i is live when its token is allowed after its parent's path; a dead node's
        // row (and its subtree's) stays all-ones: it cannot be accepted.
        let mut live = vec![false; n];
        // The live nodes whose tokens the matcher holds beyond the emitted ones: a path.
        let mut path: Vec<usize> = Vec::new();
        let result = (|| {
            for i in 0..n {
                let parent = parents[i];
                if parent.is_some_and(|p| p >= i || !live[p]) {
                    continue;
                }
                let prow = parent.map_or(0, |p| p + 1) * words;
                let tok = nodes[i] as usize;
                let allowed = tok < head_rows && (out[prow + tok / 32] >> (tok % 32)) & 1 == 1;
                // Nothing follows the end of sequence: its row stays open, its subtree dead.
                if !allowed || self.eos.contains(&nodes[i]) {
                    continue;
                }
                // The matcher to the parent's path: back up to the common part, then on.
                let mut chain = Vec::new();
                let mut a = parent;
                while let Some(p) = a {
                    chain.push(p);
                    a = parents[p];
                }
                chain.reverse();
                let common = path.iter().zip(&chain).take_while(|(x, y)| x == y).count();
                if path.len() > common {
                    self.matcher
                        .rollback(path.len() - common)
                        .map_err(|e| grammar_error("rolling back a draft branch", e))?;
                    path.truncate(common);
                }
                for &p in &chain[common..] {
                    self.matcher
                        .consume_token(nodes[p])
                        .map_err(|e| grammar_error("following a draft token", e))?;
                    path.push(p);
                }
                self.matcher
                    .consume_token(nodes[i])
                    .map_err(|e| grammar_error("following a draft token", e))?;
                path.push(i);
                live[i] = true;
                let r = (i + 1) * words;
                self.mask_into(&mut out[r..r + words])?;
            }
            Ok(())
        })();
        if !path.is_empty() {
            self.matcher
                .rollback(path.len())
                .map_err(|e| grammar_error("rolling back the draft", e))?;
        }
        result.map(|()| out)
    }

    /// Follow the emitted tokens (each allowed by the masks it was chosen under).
    pub fn accept(&mut self, emitted: &[u32]) -> Result<()> {
        for &t in emitted {
            if self.matcher.is_stopped() {
                break;
            }
            self.matcher
                .consume_token(t)
                .map_err(|e| grammar_error("following an emitted token", e))?;
        }
        Ok(())
    }
}
