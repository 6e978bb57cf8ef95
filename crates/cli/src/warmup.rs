//! Warm-up before the first timed generation: a software adapter (Mesa's lavapipe) compiles
//! each pipeline's machine code at its first dispatch and the first submit also carries the
//! weight uploads, so without this the first prompt's prefill rate would measure set-up, not
//! prefill. The warm-up runs the generation's own method for two tokens on a two-token
//! prompt, then forgets the KV cache; `run` and `chat` report its time on their own line.

use tandem::engine::{Engine, GenerateOptions};

/// Seconds spent: one short generation with `opts`' method and sampling, then a cache reset.
pub(crate) fn warm_up(engine: &mut Engine, opts: &GenerateOptions) -> tandem::Result<f64> {
    let t0 = std::time::Instant::now();
    let mut ids = engine.tokenizer.encode("Hello, world", false)?;
    ids.truncate(2);
    while ids.len() < 2 {
        // A tokenizer that makes fewer than two tokens of it: repeat what there is (or id 0).
        ids.push(ids.first().copied().unwrap_or(0));
    }
    let warm = GenerateOptions {
        max_tokens: 2,
        stop: vec![],
        ..opts.clone()
    };
    engine.generate(&ids, &warm, |_| true)?;
    engine.reset();
    Ok(t0.elapsed().as_secs_f64())
}
