//! Constrained decoding of arbitrary constraints: `kind text NUL steps` (kind % 4: 0 a JSON
//! schema, 1 a regex, 2 a Lark grammar, 3 an OpenAI `response_format` object). A constraint
//! that compiles is walked for up to 16 steps over the tiny byte-level vocabulary: each step
//! asks for the forced tokens and the token masks of a small draft tree (tokens and parents
//! from the `steps` bytes, the forced chain when there is one), then accepts the allowed
//! token the next byte picks from the root's mask.
//! Invariants: no panic (llguidance's own are caught and become errors); every mask row has
//! an allowed token; the accepted token was allowed; bounded time and allocation.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tandem::constrain::{Constraint, Grammars};
use tandem::model::config::Arch;
use tandem::model::gguf::GgufFile;
use tandem::model::quant::GgmlType;
use tandem::model::writer::tiny_model;
use tandem::tokenizer::Tokenizer;

fn grammars() -> &'static (Grammars, usize) {
    static G: OnceLock<(Grammars, usize)> = OnceLock::new();
    G.get_or_init(|| {
        let bytes = tiny_model(Arch::Qwen2, GgmlType::Q8_0, 1).expect("the tiny model");
        let g = GgufFile::from_bytes(bytes).expect("the tiny GGUF");
        let tok = Tokenizer::from_gguf_metadata(&g.header().metadata).expect("its tokenizer");
        let n = tok.vocab_size();
        (Grammars::new(&tok).expect("the grammar compiler"), n)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (text, steps) = tandem_fuzz::split_nul(rest);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let constraint = match kind % 4 {
        0 => match Constraint::json_schema_text(text) {
            Ok(c) => c,
            Err(_) => return,
        },
        1 => Constraint::Regex(text.to_string()),
        2 => Constraint::Lark(text.to_string()),
        _ => match serde_json::from_str(text).map(|v| Constraint::from_response_format(&v)) {
            Ok(Ok(Some(c))) => c,
            _ => return,
        },
    };
    let (grammars, vocab) = grammars();
    let Ok(mut c) = grammars.compile(&constraint) else {
        return;
    };
    let words = vocab.div_ceil(32);
    let allowed = |m: &[u32], t: u32| (m[t as usize / 32] >> (t % 32)) & 1 == 1;
    for chunk in steps.chunks(4).take(16) {
        if c.is_stopped() {
            break;
        }
        let forced = c.forced(8);
        let (nodes, parents): (Vec<u32>, Vec<Option<usize>>) = if forced.is_empty() {
            // Two children of the root and a grandchild, from the step's bytes.
            let t = |i: usize| *chunk.get(i).unwrap_or(&0) as u32 % *vocab as u32;
            (vec![t(1), t(2), t(3)], vec![None, None, Some(0)])
        } else {
            let p = (0..forced.len()).map(|i| i.checked_sub(1)).collect();
            (forced, p)
        };
        let Ok(masks) = c.masks(&nodes, &parents, *vocab) else {
            return;
        };
        assert_eq!(masks.len(), (nodes.len() + 1) * words);
        for row in masks.chunks(words) {
            assert!(row.iter().any(|&w| w != 0), "a mask row allows nothing");
        }
        // The token the first byte picks among the root's allowed ones.
        let root = &masks[..words];
        let ok: Vec<u32> = (0..*vocab as u32).filter(|&t| allowed(root, t)).collect();
        let pick = ok[chunk[0] as usize % ok.len()];
        if c.accept(&[pick]).is_err() {
            return;
        }
    }
});
