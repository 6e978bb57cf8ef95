//! The server's request parsing, from the raw bytes of one HTTP/1.1 request: the head
//! parsed by `httparse` (the parser inside hyper, which `tandem serve` runs on), the route
//! taken from the path as `tandem serve` routes it, the `Authorization` header checked
//! against a key, and the body (after `--max-body`) through `tandem::api`: a chat or
//! completion request parsed, its model checked, resolved against a tiny Qwen2-style model
//! (ChatML template, byte-level BPE, a context of 256) with its constraint compiled, or a
//! `/tokenize` / `/detokenize` body answered. Everything between the socket and the engine
//! that does not touch the GPU.
//! Invariants: no panic, bounded time and allocation; a refusal is an OpenAI-shaped error
//! (status 400, 401, 404 or 413, JSON body with a message); an accepted request fits the
//! context (1 ≤ max_tokens ≤ n_ctx − prompt) with every prompt id in the vocabulary and a
//! finite positive temperature when it samples; `/tokenize` answers ids in the vocabulary.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tandem::api::{self, ApiError, ChatRequest, CompletionRequest, Limits, Resolved, Served};
use tandem::constrain::Grammars;
use tandem::engine::MethodSpec;
use tandem::model::config::Arch;
use tandem::model::gguf::GgufFile;
use tandem::model::quant::GgmlType;
use tandem::model::writer::tiny_model;
use tandem::tokenizer::Tokenizer;

const MODEL_ID: &str = "tiny";
const KEY: &str = "sk-fuzz";
/// The server's `--max-body` default is 1 MiB; this target's inputs stay far smaller, so a
/// smaller cap exercises the 413 path.
const MAX_BODY: usize = 16 << 10;

struct Model {
    tokenizer: Tokenizer,
    grammars: Grammars,
    limits: Limits,
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let bytes = tiny_model(Arch::Qwen2, GgmlType::Q8_0, 1).expect("the tiny model");
        let g = GgufFile::from_bytes(bytes).expect("the tiny GGUF");
        let tokenizer = Tokenizer::from_gguf_metadata(&g.header().metadata).expect("its tokenizer");
        let grammars = Grammars::new(&tokenizer).expect("the grammar compiler");
        let limits = Limits {
            n_ctx: 256,
            max_tokens: 128,
            max_draft: 16,
            method: MethodSpec::plain(),
        };
        Model {
            tokenizer,
            grammars,
            limits,
        }
    })
}

fn check_error(e: &ApiError) {
    assert!(
        matches!(e.status, 400 | 401 | 404 | 413),
        "status {} for {e:?}",
        e.status
    );
    let body = e.body();
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "an error without a message: {body}");
    assert!(serde_json::to_string(&body).is_ok());
}

fn check_resolved(r: &Resolved, m: &Model) {
    let n_ctx = m.limits.n_ctx;
    let vocab = m.tokenizer.vocab_size() as u32;
    assert!(!r.prompt.is_empty());
    assert!(r.prompt.iter().all(|&t| t < vocab), "a prompt id past the vocabulary");
    assert!(r.prompt.len() < n_ctx);
    let max = r.options.max_tokens;
    assert!(max >= 1 && max <= n_ctx - r.prompt.len() && max <= m.limits.max_tokens);
    if let Some(s) = &r.options.sampling {
        assert!(s.temperature.is_finite() && s.temperature > 0.0);
    }
    assert!(r.options.method.max_budget() < tandem::speculative::MAX_STEP_TOKENS);
}

fn answer(path: &str, auth: Option<&[u8]>, body: &[u8]) -> Result<(), ApiError> {
    // Every endpoint but /health needs the key (the server's `auth` layer).
    let path = path.split('?').next().unwrap_or_default();
    if matches!(path, "/health" | "/v1/health") {
        return Ok(());
    }
    api::check_auth(Some(KEY), auth)?;
    if body.len() > MAX_BODY {
        return Err(ApiError::new(413, "invalid_request_error", "body too large"));
    }
    let m = model();
    let served = Served {
        tokenizer: &m.tokenizer,
        limits: &m.limits,
        grammars: Ok(&m.grammars),
        has_drafter: false,
    };
    match path {
        "/v1/chat/completions" | "/chat/completions" => {
            let req: ChatRequest = api::parse_request(body, MODEL_ID)?;
            check_resolved(&served.resolve(&req)?, m);
        }
        "/v1/completions" | "/completions" => {
            let req: CompletionRequest = api::parse_request(body, MODEL_ID)?;
            check_resolved(&served.resolve(&req)?, m);
        }
        "/tokenize" => {
            let v = served.tokenize(body)?;
            let vocab = m.tokenizer.vocab_size() as u64;
            for t in v["tokens"].as_array().into_iter().flatten() {
                let id = t.as_u64().or_else(|| t["id"].as_u64());
                assert!(id.is_some_and(|id| id < vocab), "a token past the vocabulary: {t}");
            }
        }
        "/detokenize" => {
            let v = served.detokenize(body)?;
            assert!(v["content"].is_string());
        }
        _ => {}
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = req.parse(data) else {
        return;
    };
    let Some(path) = req.path else { return };
    let auth = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .map(|h| h.value);
    if let Err(e) = answer(path, auth, &data[head..]) {
        check_error(&e);
    }
});
