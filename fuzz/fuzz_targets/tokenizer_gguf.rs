//! The tokenizer built from GGUF metadata (`text NUL gguf`): token list, types, merges,
//! special ids, pre-tokenizer name, chat template; then `text` encoded with and without
//! special tokens, decoded, streamed, and arbitrary ids decoded.
//! Invariants: no panic; ids in range; streamed text == decode(); and for byte-level
//! vocabularies that promise it, decode(encode(text)) == text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::model::gguf::parse_header;
use tandem::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let (text, gguf) = tandem_fuzz::split_nul(data);
    let Ok(header) = parse_header(gguf) else {
        return;
    };
    let Ok(tok) = Tokenizer::from_gguf_metadata(&header.metadata) else {
        return;
    };
    let round_trip = tandem_fuzz::promises_round_trip(&tok);
    tandem_fuzz::exercise(&tok, text, round_trip);
});
