//! The OpenAI-shaped API in one place: request types (chat messages, a completion prompt as
//! text or token ids, limits, stop strings, sampling, seed, the drafting method and
//! llama-server's `speculative.n_max` / `n_min`), the one function that turns a request into
//! token ids and [`GenerateOptions`] (chat template, then encode), and the builders from
//! engine events and outputs to OpenAI chunks and responses with llama-server's `timings`
//! and tandem's own `tandem` field (method, τ, which text was drafted). Serde only: it builds
//! for wasm32 too. `tandem serve` speaks it over HTTP.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::constrain::Grammars;
use crate::engine::{
    Constraint, ContrastiveParams, GenerateOptions, MethodSpec, Output, SampleParams, Stats,
    StopReason,
};
use crate::tokenizer::{ChatMessage, Tokenizer};
use crate::{Error, Result};

/// A chat message's `content`: a string, or OpenAI's array of parts (text parts are joined;
/// other parts are refused).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    fn text(&self) -> Result<String> {
        match self {
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => out.push_str(t),
                        (kind, _) => {
                            return Err(Error::Invalid(format!(
                            "message content part of type '{kind}' (tandem reads text parts only)"
                        )))
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    pub role: String,
    /// Absent or null for an assistant message that only called tools (read as empty).
    #[serde(default)]
    pub content: Option<Content>,
}

/// `stop`: one string or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A completion's `prompt`: text, one text in a list, or token ids.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// llama-server's draft-length bounds.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
pub struct Speculative {
    pub n_max: Option<usize>,
    pub n_min: Option<usize>,
}

/// The fields chat and completion requests share. Unknown fields are ignored, as OpenAI
/// clients send many (penalties, `user`, …) that do not change greedy output.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    /// llama-server's name for `max_tokens` (-1: until the context is full).
    pub n_predict: Option<i64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub seed: Option<u64>,
    pub n: Option<usize>,
    /// A drafting method of the registry (`"hybrid"`, `"tree:nodes=16"`, `"plain"`).
    pub method: Option<String>,
    pub speculative: Option<Speculative>,
    /// tandem's name for `speculative.n_max` (the npm package's `draft_len`).
    pub draft_len: Option<usize>,
    /// Adapt the draft size to measured acceptance and speed (default on).
    pub adaptive: Option<bool>,
    /// OpenAI's `{"type": "text" | "json_object" | "json_schema", …}`: constrained decoding.
    pub response_format: Option<Value>,
    /// A Lark grammar the output must match (llguidance's dialect), instead of a format.
    pub grammar: Option<String>,
    /// A regular expression the output must match.
    pub regex: Option<String>,
    /// With a constraint, draft the tokens the grammar forces (default on).
    pub forced_drafts: Option<bool>,
    /// Contrastive decoding with the drafter model as the amateur.
    pub contrastive: Option<Contrastive>,
    /// Keep generating past end-of-sequence tokens, up to `max_tokens` (llama-server's
    /// `ignore_eos`).
    pub ignore_eos: Option<bool>,
}

/// `"contrastive": {"alpha": 0.1, "beta": 0.5}` (both optional, these are the defaults,
/// O'Brien & Lewis's): the target's scores minus β times the drafter's, over the tokens
/// within α of the target's top probability.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contrastive {
    pub alpha: Option<f32>,
    pub beta: Option<f32>,
}

impl Contrastive {
    pub const DEFAULT: ContrastiveParams = ContrastiveParams {
        alpha: 0.1,
        beta: 0.5,
    };

    /// The parameters, checked (α in (0, 1], β ≥ 0).
    pub fn params(&self) -> Result<ContrastiveParams> {
        let p = ContrastiveParams {
            alpha: self.alpha.unwrap_or(Self::DEFAULT.alpha),
            beta: self.beta.unwrap_or(Self::DEFAULT.beta),
        };
        p.check()?;
        Ok(p)
    }
}

impl Common {
    /// The constraint the request asks for (at most one of response_format, grammar, regex).
    pub fn constraint(&self) -> std::result::Result<Option<Constraint>, ApiError> {
        let format = match &self.response_format {
            Some(f) => Constraint::from_response_format(f)?,
            None => None,
        };
        let grammar = self.grammar.clone().map(Constraint::Lark);
        let regex = self.regex.clone().map(Constraint::Regex);
        let mut all = [format, grammar, regex].into_iter().flatten();
        let first = all.next();
        if all.next().is_some() {
            return Err(ApiError::invalid(
                "response_format (json), grammar and regex exclude each other: give one",
            ));
        }
        Ok(first)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(flatten)]
    pub common: Common,
}

/// Which endpoint a request came through (it shapes the response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// The server's limits and defaults a request is resolved against.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Tokens of context (prompt + new tokens).
    pub n_ctx: usize,
    /// Most new tokens a request may ask for; also the default.
    pub max_tokens: usize,
    /// Most draft nodes per step (the engine's `max_draft`).
    pub max_draft: usize,
    /// The method of requests that name none.
    pub method: MethodSpec,
}

/// A request ready for the engine.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub kind: Kind,
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    pub stream: bool,
    pub include_usage: bool,
    /// The draft-length bounds used (echoed back).
    pub speculative: Speculative,
}

/// Why a request was refused: an OpenAI-shaped error with its HTTP status.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    /// Extra fields of the error object (`n_prompt_tokens`, `n_ctx` for a context overflow).
    pub extra: Vec<(&'static str, Value)>,
    /// The crate error it came from ([`Error::kind`]), if any: the npm package's error kind.
    pub cause: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            extra: vec![],
            cause: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    /// The prompt (plus the tokens asked for) does not fit the context.
    pub fn context(n_prompt: usize, n_ctx: usize, message: impl Into<String>) -> Self {
        ApiError {
            extra: vec![
                ("n_prompt_tokens", json!(n_prompt)),
                ("n_ctx", json!(n_ctx)),
            ],
            ..Self::new(400, "exceed_context_size_error", message)
        }
    }

    /// `{"error": {"code", "message", "type", …}}`.
    pub fn body(&self) -> Value {
        let mut e = json!({"code": self.status, "message": self.message, "type": self.kind});
        for (k, v) in &self.extra {
            e[*k] = v.clone();
        }
        json!({ "error": e })
    }

    /// The npm package's error kind: the crate error's, else what the status means.
    pub fn js_kind(&self) -> &'static str {
        self.cause.unwrap_or(match self.kind {
            "exceed_context_size_error" => "context",
            "unavailable_error" => "busy",
            "authentication_error" => "unauthorized",
            "server_error" => "error",
            _ => "invalid",
        })
    }
}

impl From<Error> for ApiError {
    /// Bad input is the client's (400); the rest is the server's (500).
    fn from(e: Error) -> Self {
        let api = match &e {
            Error::Invalid(_)
            | Error::Tokenizer(_)
            | Error::NoChatTemplate(_)
            | Error::Mismatch(_)
            | Error::Unsupported(_) => ApiError::invalid(e.to_string()),
            Error::Context(_) => ApiError::new(400, "exceed_context_size_error", e.to_string()),
            Error::OutOfMemory(_) => ApiError::new(503, "unavailable_error", e.to_string()),
            _ => ApiError::new(500, "server_error", e.to_string()),
        };
        ApiError {
            cause: Some(e.kind()),
            ..api
        }
    }
}

/// Parse a JSON body into `T`, with the reason in a 400.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> std::result::Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("malformed request: {e}")))
}

/// Parse a chat or completion body and check the model it names (none, empty or the
/// served one): the part of a request that needs no loaded model.
pub fn parse_request<R: Request>(body: &[u8], model_id: &str) -> std::result::Result<R, ApiError> {
    let req: R = parse(body)?;
    match req.common().model.as_deref() {
        Some(m) if !m.is_empty() && m != model_id => Err(ApiError::new(
            404,
            "not_found_error",
            format!("model '{m}' is not served here (GET /v1/models: '{model_id}')"),
        )),
        _ => Ok(req),
    }
}

/// `Authorization: Bearer KEY` against the server's key (none set: every request passes).
pub fn check_auth(
    key: Option<&str>,
    authorization: Option<&[u8]>,
) -> std::result::Result<(), ApiError> {
    let Some(key) = key else { return Ok(()) };
    let given = authorization
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key) {
        Ok(())
    } else {
        Err(ApiError::new(
            401,
            "authentication_error",
            "invalid or missing API key (Authorization: Bearer KEY)",
        ))
    }
}

/// The loaded model a server checks requests against: everything between a request's bytes
/// and the engine that does not touch the GPU (what the `server_request` fuzz target runs).
pub struct Served<'a> {
    pub tokenizer: &'a Tokenizer,
    pub limits: &'a Limits,
    /// The tokenizer's grammar compiler, or why there is none.
    pub grammars: std::result::Result<&'a Grammars, &'a str>,
    /// Whether a drafter model is loaded (contrastive decoding's amateur).
    pub has_drafter: bool,
}

impl Served<'_> {
    /// A parsed request resolved against the model; its constraint compiled, so that an
    /// invalid schema is a 400 before anything streams.
    pub fn resolve<R: Request>(&self, req: &R) -> std::result::Result<Resolved, ApiError> {
        let resolved = req.resolve(self.tokenizer, self.limits)?;
        if resolved.options.contrastive.is_some() && !self.has_drafter {
            return Err(ApiError::invalid(
                "contrastive decoding needs a drafter model as the amateur: start the server \
                 with --drafter",
            ));
        }
        if let Some(c) = &resolved.options.constraint {
            let grammars = self.grammars.map_err(ApiError::invalid)?;
            grammars.compile(c)?;
        }
        Ok(resolved)
    }

    /// llama-server's `/tokenize`: `{"content", "add_special"?, "with_pieces"?}` →
    /// `{"tokens"}` (ids, or `{"id", "piece"}` objects).
    pub fn tokenize(&self, body: &[u8]) -> std::result::Result<Value, ApiError> {
        #[derive(Deserialize)]
        struct Req {
            content: String,
            #[serde(default)]
            add_special: bool,
            #[serde(default)]
            with_pieces: bool,
        }
        let req: Req = parse(body)?;
        let tok = self.tokenizer;
        let mut ids = tok.encode(&req.content, true)?;
        if req.add_special && tok.add_bos() {
            if let Some(bos) = tok.bos_id().filter(|b| ids.first() != Some(b)) {
                ids.insert(0, bos);
            }
        }
        Ok(if req.with_pieces {
            let pieces: Vec<Value> = ids
                .iter()
                .map(|&id| json!({"id": id, "piece": tok.decode(&[id]).unwrap_or_default()}))
                .collect();
            json!({ "tokens": pieces })
        } else {
            json!({ "tokens": ids })
        })
    }

    /// llama-server's `/detokenize`: `{"tokens"}` → `{"content"}`.
    pub fn detokenize(&self, body: &[u8]) -> std::result::Result<Value, ApiError> {
        #[derive(Deserialize)]
        struct Req {
            tokens: Vec<u32>,
        }
        let req: Req = parse(body)?;
        let v = self.tokenizer.vocab_size() as u32;
        if let Some(bad) = req.tokens.iter().find(|&&t| t >= v) {
            return Err(ApiError::invalid(format!(
                "token id {bad} is outside the vocabulary of {v} tokens"
            )));
        }
        Ok(json!({ "content": self.tokenizer.decode(&req.tokens)? }))
    }
}

/// A request the engine can answer: chat or completion.
pub trait Request: serde::de::DeserializeOwned {
    /// The fields both kinds share.
    fn common(&self) -> &Common;
    /// Token ids and generation options for the engine.
    fn resolve(&self, tok: &Tokenizer, limits: &Limits) -> std::result::Result<Resolved, ApiError>;
}

impl Request for ChatRequest {
    fn common(&self) -> &Common {
        &self.common
    }
    fn resolve(&self, tok: &Tokenizer, limits: &Limits) -> std::result::Result<Resolved, ApiError> {
        ChatRequest::resolve(self, tok, limits)
    }
}

impl Request for CompletionRequest {
    fn common(&self) -> &Common {
        &self.common
    }
    fn resolve(&self, tok: &Tokenizer, limits: &Limits) -> std::result::Result<Resolved, ApiError> {
        CompletionRequest::resolve(self, tok, limits)
    }
}

impl ChatRequest {
    /// The conversation rendered with the model's chat template and tokenized.
    pub fn resolve(
        &self,
        tok: &Tokenizer,
        limits: &Limits,
    ) -> std::result::Result<Resolved, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages must not be empty"));
        }
        let msgs = self
            .messages
            .iter()
            .map(|m| {
                let content = match &m.content {
                    Some(c) => c.text()?,
                    None => String::new(),
                };
                Ok(ChatMessage::new(m.role.clone(), content))
            })
            .collect::<Result<Vec<_>>>()?;
        let text = tok.apply_chat_template(&msgs, true)?;
        let prompt = tok.encode(&text, true)?;
        resolve(Kind::Chat, prompt, &self.common, limits)
    }
}

impl CompletionRequest {
    /// The prompt text (special tokens in it read as plain text, with the model's BOS where
    /// it adds one) or the token ids as given.
    pub fn resolve(
        &self,
        tok: &Tokenizer,
        limits: &Limits,
    ) -> std::result::Result<Resolved, ApiError> {
        let prompt = match &self.prompt {
            Prompt::Ids(ids) => {
                let v = tok.vocab_size() as u32;
                if let Some(bad) = ids.iter().find(|&&i| i >= v) {
                    return Err(ApiError::invalid(format!(
                        "prompt token id {bad} is outside the vocabulary of {v} tokens"
                    )));
                }
                ids.clone()
            }
            Prompt::Text(t) => tok.encode_raw_prompt(t)?,
            Prompt::Texts(ts) if ts.len() == 1 => tok.encode_raw_prompt(&ts[0])?,
            Prompt::Texts(ts) => {
                return Err(ApiError::invalid(format!(
                    "a list of {} prompts: tandem completes one prompt per request",
                    ts.len()
                )))
            }
        };
        resolve(Kind::Completion, prompt, &self.common, limits)
    }
}

fn resolve(
    kind: Kind,
    prompt: Vec<u32>,
    c: &Common,
    limits: &Limits,
) -> std::result::Result<Resolved, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid("the prompt is empty"));
    }
    if c.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n must be 1 (one choice per request)"));
    }
    let constraint = c.constraint()?;
    let n_prompt = prompt.len();
    if n_prompt >= limits.n_ctx {
        return Err(ApiError::context(
            n_prompt,
            limits.n_ctx,
            format!(
                "the request has {n_prompt} prompt tokens, which exceeds the context of {} tokens",
                limits.n_ctx
            ),
        ));
    }
    let room = limits.n_ctx - n_prompt;
    let asked = match (c.max_completion_tokens.or(c.max_tokens), c.n_predict) {
        (Some(n), _) => Some(n),
        (None, Some(n)) if n >= 0 => Some(n as usize),
        _ => None,
    };
    let max_tokens = match asked {
        Some(0) => return Err(ApiError::invalid("max_tokens must be at least 1")),
        Some(n) if n > room => {
            return Err(ApiError::context(
                n_prompt,
                limits.n_ctx,
                format!(
                    "{n_prompt} prompt tokens + max_tokens {n} exceed the context of {} tokens",
                    limits.n_ctx
                ),
            ))
        }
        Some(n) => n.min(limits.max_tokens),
        None => room.min(limits.max_tokens),
    };
    let mut method = match &c.method {
        Some(m) => MethodSpec::parse(m)?,
        None => limits.method.clone(),
    };
    // speculative.n_max / n_min bound the draft: n_max sets the method's length where it
    // has one; both are capped at the server's max_draft.
    let mut spec = c.speculative.unwrap_or_default();
    spec.n_max = spec.n_max.or(c.draft_len);
    if let Some(n) = spec.n_max {
        let n = n.min(limits.max_draft);
        spec.n_max = Some(n);
        if n == 0 {
            method = MethodSpec::plain();
        } else if method.has("len") {
            method = method.with("len", n)?;
        } else if method.has("nodes") {
            method = method.with("nodes", n)?;
        }
    }
    if let Some(n) = spec.n_min {
        spec.n_min = Some(n.min(spec.n_max.unwrap_or(limits.max_draft)));
    }
    let stop = match &c.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    let sampling = match c.temperature {
        Some(t) if t > 0.0 => Some(SampleParams {
            temperature: t,
            top_k: c.top_k.unwrap_or(0),
            top_p: c.top_p.unwrap_or(1.0),
            seed: c.seed.unwrap_or_else(random_seed),
        }),
        Some(t) if t < 0.0 || !t.is_finite() => {
            return Err(ApiError::invalid(format!("temperature {t} must be >= 0")))
        }
        _ => None,
    };
    // n_min: never adapt below it (adaptation may stop drafting altogether otherwise).
    let adaptive = c.adaptive.unwrap_or(true) && spec.n_min.unwrap_or(0) == 0;
    Ok(Resolved {
        kind,
        prompt,
        options: GenerateOptions {
            max_tokens,
            stop,
            method,
            adaptive,
            sampling,
            constraint,
            forced_drafts: c.forced_drafts.unwrap_or(true),
            contrastive: c.contrastive.map(|x| x.params()).transpose()?,
            ignore_eos: c.ignore_eos.unwrap_or(false),
        },
        stream: c.stream,
        include_usage: c.stream_options.as_ref().is_some_and(|o| o.include_usage),
        speculative: spec,
    })
}

/// A seed for a sampling request that names none.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::gpu::seconds().to_bits());
    h.finish()
}

/// OpenAI's `finish_reason`; `on_cancel` is what a generation stopped from outside reports
/// ([`Meta::on_cancel`]).
pub fn finish_reason(r: Option<StopReason>, on_cancel: &'static str) -> &'static str {
    match r {
        Some(StopReason::Length) => "length",
        Some(StopReason::Cancelled) => on_cancel,
        _ => "stop",
    }
}

/// One step of a streamed generation as the faces report it.
#[derive(Clone, Debug, Default)]
pub struct Step {
    pub ids: Vec<u32>,
    /// The first `drafted` ids were drafted and accepted; the rest is the target's own.
    pub drafted: usize,
    pub text: String,
    /// Bytes of `text` that came from drafted tokens.
    pub drafted_text: usize,
    /// Draft nodes the step verified.
    pub proposed: usize,
    /// Seconds since the generation started (the first step includes the prefill).
    pub elapsed: f64,
}

impl Step {
    pub fn from_event(ev: &crate::engine::Event, elapsed: f64) -> Step {
        let crate::engine::Event::Tokens {
            ids,
            drafted,
            text,
            drafted_text,
            proposed,
            ..
        } = ev;
        Step {
            ids: ids.clone(),
            drafted: *drafted,
            text: text.clone(),
            drafted_text: *drafted_text,
            proposed: *proposed,
            elapsed,
        }
    }
}

/// Running figures of a stream, step by step: the `tandem` field of each chunk (the npm
/// package's chunks carry the same fields).
#[derive(Clone, Debug, Default)]
pub struct Live {
    tokens: usize,
    steps: usize,
    drafted_accepted: usize,
    proposed: usize,
    first_tokens: usize,
    first_elapsed: f64,
}

impl Live {
    pub fn add(&mut self, step: &Step) -> Value {
        self.tokens += step.ids.len();
        self.steps += 1;
        self.drafted_accepted += step.drafted;
        self.proposed += step.proposed;
        if self.steps == 1 {
            self.first_tokens = self.tokens;
            self.first_elapsed = step.elapsed;
        }
        // The first step carries the prefill; the rate counts the steps after it.
        let decode = step.elapsed - self.first_elapsed;
        json!({
            "token_ids": step.ids,
            "drafted": step.drafted,
            "drafted_text": step.text.get(..step.drafted_text).unwrap_or(""),
            "proposed": step.proposed,
            "tokens": self.tokens,
            "steps": self.steps,
            "drafted_accepted": self.drafted_accepted,
            "acceptance": (self.proposed > 0).then(|| self.drafted_accepted as f64 / self.proposed as f64),
            "tau": self.tokens as f64 / self.steps as f64,
            "tokens_per_s": (decode > 0.0).then(|| (self.tokens - self.first_tokens) as f64 / decode),
            "elapsed_s": step.elapsed,
        })
    }

    pub fn steps(&self) -> usize {
        self.steps
    }
}

/// What every chunk and response of one request shares.
#[derive(Clone, Debug)]
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub kind: Kind,
    /// The `finish_reason` of a generation stopped from outside: `"length"` for the server's
    /// time limit, `"abort"` for the npm package's `interruptGenerate()` (WebLLM's word).
    pub on_cancel: &'static str,
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    /// One streamed step's chunk: its text, the assistant role on the first chunk of a chat,
    /// and `tandem` (see [`Live::add`]).
    pub fn chunk(&self, step: &Step, live: &mut Live) -> Value {
        let tandem = live.add(step);
        let (text, first) = (step.text.as_str(), live.steps() == 1);
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = json!({ "content": text });
                if first {
                    delta["role"] = json!("assistant");
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": null})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null})
            }
        };
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice], "tandem": tandem,
        })
    }

    /// The last chunk: the finish reason (and the role if nothing came before), with the
    /// timings and tandem's figures.
    pub fn final_chunk(&self, out: &Output, tail: &str, first: bool, used: &Speculative) -> Value {
        let reason = finish_reason(out.stop_reason, self.on_cancel);
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = if tail.is_empty() {
                    json!({})
                } else {
                    json!({ "content": tail })
                };
                if first {
                    delta["role"] = json!("assistant");
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason})
            }
            Kind::Completion => {
                json!({"index": 0, "text": tail, "logprobs": null, "finish_reason": reason})
            }
        };
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice],
            "timings": timings(&out.stats), "tandem": extras(out, used),
        })
    }

    /// The usage chunk of `stream_options.include_usage` (no choices).
    pub fn usage_chunk(&self, out: &Output) -> Value {
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [], "usage": usage(&out.stats),
        })
    }

    /// The whole (non-streamed) response.
    pub fn response(&self, out: &Output, used: &Speculative) -> Value {
        let reason = finish_reason(out.stop_reason, self.on_cancel);
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": out.text},
                "logprobs": null,
                "finish_reason": reason,
            }),
            Kind::Completion => json!({
                "index": 0, "text": out.text, "finish_reason": reason, "logprobs": null,
            }),
        };
        json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "choices": [choice], "usage": usage(&out.stats),
            "timings": timings(&out.stats), "tandem": extras(out, used),
        })
    }
}

/// OpenAI's `usage`.
pub fn usage(s: &Stats) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.generated_tokens,
        "total_tokens": s.prompt_tokens + s.generated_tokens,
    })
}

/// llama-server's `timings`.
pub fn timings(s: &Stats) -> Value {
    let prompt_n = s.prompt_tokens - s.reused_prompt_tokens;
    json!({
        "cache_n": s.reused_prompt_tokens,
        "prompt_n": prompt_n,
        "prompt_ms": s.prefill_seconds * 1e3,
        "prompt_per_second": s.prefill_tokens_per_s,
        "predicted_n": s.generated_tokens,
        "predicted_ms": s.decode_seconds * 1e3,
        "predicted_per_second": s.decode_tokens_per_s,
        "draft_n": s.drafted,
        "draft_n_accepted": s.accepted,
    })
}

/// tandem's figures: the method, τ, acceptance, target passes, the draft bounds used, the
/// whole statistics (`stats`), why the generation stopped and every token id it made.
pub fn extras(out: &Output, used: &Speculative) -> Value {
    let s = &out.stats;
    json!({
        "stats": s,
        "stop_reason": out.stop_reason,
        "output_token_ids": out.tokens,
        "method": s.method,
        "tau": s.mean_accepted_tokens,
        "acceptance_rate": s.acceptance_rate,
        "target_passes": s.target_passes,
        "drafted": s.drafted,
        "accepted": s.accepted,
        "speculative": used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            n_ctx: 100,
            max_tokens: 50,
            max_draft: 16,
            method: MethodSpec::plain(),
        }
    }

    fn common(v: Value) -> Common {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn limits_context_and_speculative_bounds_resolve_as_documented() {
        let ids: Vec<u32> = (1..=10).collect();
        let r = resolve(Kind::Completion, ids.clone(), &common(json!({})), &limits()).unwrap();
        assert_eq!(r.options.max_tokens, 50, "the cap is the default");
        let r = resolve(
            Kind::Completion,
            ids.clone(),
            &common(json!({"max_tokens": 7})),
            &limits(),
        )
        .unwrap();
        assert_eq!(r.options.max_tokens, 7);
        let e = resolve(
            Kind::Completion,
            ids.clone(),
            &common(json!({"max_tokens": 95})),
            &limits(),
        )
        .unwrap_err();
        assert_eq!((e.status, e.kind), (400, "exceed_context_size_error"));
        assert_eq!(e.body()["error"]["n_ctx"], 100);
        let long: Vec<u32> = (0..100).collect();
        let e = resolve(Kind::Completion, long, &common(json!({})), &limits()).unwrap_err();
        assert_eq!(e.body()["error"]["n_prompt_tokens"], 100);
        let r = resolve(
            Kind::Chat,
            ids.clone(),
            &common(json!({"method": "lookup", "speculative": {"n_max": 99, "n_min": 2}})),
            &limits(),
        )
        .unwrap();
        assert_eq!(r.options.method.to_string(), "lookup:len=16");
        assert_eq!(
            (r.speculative.n_max, r.speculative.n_min),
            (Some(16), Some(2))
        );
        assert!(!r.options.adaptive, "n_min > 0 drafts every step");
        let r = resolve(
            Kind::Chat,
            ids.clone(),
            &common(json!({"method": "lookup", "speculative": {"n_max": 0}})),
            &limits(),
        )
        .unwrap();
        assert_eq!(r.options.method.name(), "plain");
        let e = resolve(
            Kind::Chat,
            ids.clone(),
            &common(json!({"method": "nope"})),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(e.status, 400, "{}", e.message);
        let r = resolve(
            Kind::Chat,
            ids,
            &common(json!({"temperature": 0.7, "seed": 5, "stop": "x"})),
            &limits(),
        )
        .unwrap();
        assert_eq!(r.options.sampling.map(|s| s.seed), Some(5));
        assert_eq!(r.options.stop, vec!["x".to_string()]);
    }

    #[test]
    fn draft_len_is_n_max_and_errors_keep_their_kind_for_the_npm_package() {
        let ids: Vec<u32> = (1..=10).collect();
        let r = resolve(
            Kind::Chat,
            ids.clone(),
            &common(json!({"method": "sps", "draft_len": 3})),
            &limits(),
        )
        .unwrap();
        assert_eq!(r.options.method.to_string(), "sps:len=3");
        assert_eq!(r.speculative.n_max, Some(3));
        let r = resolve(
            Kind::Chat,
            ids.clone(),
            &common(json!({"method": "sps", "draft_len": 3, "speculative": {"n_max": 2}})),
            &limits(),
        )
        .unwrap();
        assert_eq!(r.options.method.to_string(), "sps:len=2", "n_max wins");
        let e = resolve(
            Kind::Chat,
            ids,
            &common(json!({"max_tokens": 95})),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(e.js_kind(), "context");
        let e = ApiError::from(Error::NoChatTemplate("base model".into()));
        assert_eq!((e.status, e.js_kind()), (400, "no_chat_template"));
        assert_eq!(ApiError::invalid("x").js_kind(), "invalid");
    }

    #[test]
    fn finish_reasons_and_the_final_extras() {
        assert_eq!(finish_reason(Some(StopReason::Cancelled), "abort"), "abort");
        assert_eq!(
            finish_reason(Some(StopReason::Cancelled), "length"),
            "length"
        );
        assert_eq!(finish_reason(Some(StopReason::Length), "abort"), "length");
        assert_eq!(finish_reason(Some(StopReason::Eos), "abort"), "stop");
        let out = Output {
            text: "ab".into(),
            tokens: vec![7, 8],
            stop_reason: Some(StopReason::Cancelled),
            stats: Stats::default(),
        };
        let meta = Meta {
            id: "chatcmpl-1".into(),
            created: 0,
            model: "m".into(),
            kind: Kind::Chat,
            on_cancel: "abort",
        };
        let used = Speculative::default();
        let whole = meta.response(&out, &used);
        assert_eq!(whole["choices"][0]["finish_reason"], "abort");
        assert_eq!(whole["choices"][0]["logprobs"], Value::Null);
        assert_eq!(whole["tandem"]["output_token_ids"], json!([7, 8]));
        assert_eq!(whole["tandem"]["stop_reason"], "cancelled");
        let last = meta.final_chunk(&out, "", true, &used);
        assert_eq!(last["choices"][0]["delta"], json!({"role": "assistant"}));
        assert_eq!(last["tandem"]["output_token_ids"], json!([7, 8]));
        let usage = meta.usage_chunk(&out);
        assert_eq!(usage["choices"], json!([]));
    }

    #[test]
    fn message_content_parts_join_and_other_parts_are_refused() {
        let m: Message = serde_json::from_value(json!({
            "role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
        }))
        .unwrap();
        assert_eq!(m.content.unwrap().text().unwrap(), "ab");
        let m: Message = serde_json::from_value(json!({
            "role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]
        }))
        .unwrap();
        assert!(m.content.unwrap().text().is_err());
    }
}
