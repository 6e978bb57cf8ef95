//! What every fuzz target shares: an allocator that turns any allocation sized by an
//! unchecked count into a crash the fuzzer reports, the split of one input into parts, and
//! the checks run on every tokenizer a target manages to build.
//!
//! Why an allocator of our own: libFuzzer's `-malloc_limit_mb` needs a sanitizer's malloc
//! hooks, and the targets are built without a sanitizer (the code under test is safe Rust;
//! panics, hangs and allocations are what can go wrong). With overcommit a 2^40-byte request
//! might not even raise the RSS that `-rss_limit_mb` watches, so single requests over
//! [`MAX_ALLOCATION`] and live totals over [`MAX_LIVE`] abort here, at the allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tandem::tokenizer::{Detokenizer, TokenKind, Tokenizer};

/// No single allocation may be larger: every input is at most a few MB (`-max_len`), and
/// nothing tandem builds from one legitimately needs more.
pub const MAX_ALLOCATION: usize = 256 << 20;
/// Live heap bytes at any moment.
pub const MAX_LIVE: usize = 1536 << 20;

pub struct Guard;

static LIVE: AtomicUsize = AtomicUsize::new(0);

fn refuse(what: &str, size: usize) -> ! {
    // No formatting machinery that could allocate: digits by hand.
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = size;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"\n==tandem-fuzz== ");
    let _ = err.write_all(what.as_bytes());
    let _ = err.write_all(&digits[i..]);
    let _ = err.write_all(b" bytes\n");
    std::process::abort()
}

fn account(size: usize) {
    if size > MAX_ALLOCATION {
        refuse("allocation larger than MAX_ALLOCATION: ", size);
    }
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    if live > MAX_LIVE {
        refuse("live heap above MAX_LIVE: ", live);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GUARD: Guard = Guard;

/// `before NUL after`; without a NUL, all of it is `before`.
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// GPT-2's byte → printable character table (tandem's, re-derived here so the check does not
/// trust the code under test).
fn byte_chars() -> Vec<char> {
    let mut shifted = 0u32;
    (0..256u32)
        .map(|b| {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let code = if printable {
                b
            } else {
                shifted += 1;
                255 + shifted
            };
            char::from_u32(code).unwrap_or('\u{fffd}')
        })
        .collect()
}

/// Whether a byte-level BPE vocabulary promises `decode(encode(text)) == text` for every
/// valid UTF-8 text: each of the 256 byte symbols is an ordinary token (so no byte is ever
/// dropped), and every added token (decoded as written, not through the byte table) that the
/// BPE could produce from byte symbols is plain ASCII, where "as written" and "through the
/// byte table" agree. Real vocabularies (SmolLM2, Qwen2.5) satisfy it.
pub fn promises_round_trip(tok: &Tokenizer) -> bool {
    let table = byte_chars();
    let ordinary = |k: Option<TokenKind>| matches!(k, Some(TokenKind::Normal | TokenKind::Unused));
    let bytes_ok = table.iter().all(|c| {
        tok.token_id(&c.to_string())
            .is_some_and(|id| ordinary(tok.token_kind(id)))
    });
    bytes_ok
        && tok.token_strings().iter().enumerate().all(|(i, s)| {
            ordinary(tok.token_kind(i as u32))
                || !s.chars().all(|c| table.contains(&c))
                || s.bytes().all(|b| (33..=126).contains(&b))
        })
}

/// Encodes `text` both ways, decodes, streams, and decodes arbitrary ids; checks the
/// tokenizer's promises. `round_trip`: the caller established that it holds.
pub fn exercise(tok: &Tokenizer, raw: &[u8], round_trip: bool) {
    let text = String::from_utf8_lossy(raw);
    let n = tok.vocab_size();
    for special in [false, true] {
        let ids = match tok.encode(&text, special) {
            Ok(ids) => ids,
            Err(e) => {
                assert!(!round_trip, "encode failed on a round-trip tokenizer: {e}");
                continue;
            }
        };
        assert!(ids.iter().all(|&id| (id as usize) < n), "id out of range");
        let decoded = tok.decode(&ids).expect("decoding ids the tokenizer made");
        if round_trip {
            assert_eq!(
                decoded, text,
                "decode(encode(text, special={special})) != text"
            );
        }
        let _ = tok
            .decode_skip_special(&ids)
            .expect("decoding ids the tokenizer made");
        // The stream's deltas add up to decode() and are each complete UTF-8 (they are Strings).
        let mut detok = Detokenizer::new(tok, false);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&detok.push(id).expect("streaming ids the tokenizer made"));
        }
        streamed.push_str(&detok.finish().expect("finishing the stream"));
        // decode() drops the space a SentencePiece add_space_prefix put in front; a stream,
        // which continues a prompt, keeps it.
        let stream_matches = streamed == decoded
            || (tok.add_space_prefix() && streamed.strip_prefix(' ') == Some(decoded.as_str()));
        assert!(
            stream_matches,
            "streamed text {streamed:?} differs from decode() {decoded:?}"
        );
    }
    // Ids straight from the input bytes: an out-of-range one must be an error.
    let ids: Vec<u32> = raw
        .chunks(2)
        .map(|c| u32::from(c[0]) | u32::from(*c.get(1).unwrap_or(&0)) << 8)
        .collect();
    if tok.decode(&ids).is_ok() {
        assert!(
            ids.iter().all(|&id| (id as usize) < n),
            "decoded an id out of range"
        );
    }
    let mut detok = Detokenizer::new(tok, true);
    for &id in &ids {
        let _ = detok.push(id);
    }
    let _ = detok.finish();
}
