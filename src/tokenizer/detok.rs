//! Streaming detokenization: token ids in, text deltas out, each complete UTF-8.

use super::Tokenizer;
use crate::Result;

/// Turns a stream of token ids into text deltas that are always complete UTF-8: a character
/// spread over several byte tokens is held back until its last byte arrives. The concatenated
/// deltas plus [`Detokenizer::finish`] equal `decode(all ids)`, except for the one space a
/// SentencePiece [`Tokenizer::add_space_prefix`] put in front of the text, which `decode` drops
/// and a stream keeps (it continues a prompt, so that space separates it from the prompt).
pub struct Detokenizer {
    tok: Tokenizer,
    skip_special: bool,
    state: DetokState,
}

enum DetokState {
    /// Byte-level vocabularies: bytes not yet emitted (an incomplete character at the end).
    Bytes { pending: Vec<u8> },
    /// Other decoders (SentencePiece-style `tokenizer.json`): re-decode a short window of ids and
    /// emit what grew, as long as it does not end in a replacement character. `ids[prefix..read]`
    /// was emitted already and decodes to some text (or `prefix` is the stream's start), so a
    /// decoder's treatment of the text's start is the same in the window as in `decode`.
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
                        // The window may start at the old `read` only if what it then starts
                        // with decodes to some text: a decoder that strips the start of the
                        // text (`Strip`, Metaspace) must stop inside text already emitted,
                        // not eat into the tokens that follow (fuzz finding #7).
                        if !self
                            .tok
                            .decode_inner(&ids[*read..], self.skip_special)?
                            .is_empty()
                        {
                            *prefix = *read;
                        }
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
}
