//! `tandem serve`: an OpenAI-compatible HTTP server (llama-server's conventions where it has
//! them) over one engine.
//!
//! Shape: axum handlers on a tokio runtime parse and resolve requests (`tandem::api`: chat
//! template, tokenization, limits, the method) and queue them; one engine thread owns the GPU
//! and runs them one at a time, each in the conversation whose KV cache shares the longest
//! prefix with its prompt (`--parallel` conversations are kept, least recently used replaced),
//! streaming each step's text back over a channel. A full queue is a 503 with `Retry-After`;
//! a client that goes away closes its channel, which cancels its generation after the current
//! step. The port is bound before the model loads, so `/health` says 503 while it loads.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tandem::api::{self, ApiError, ChatRequest, CompletionRequest, Kind, Limits, Meta, Resolved};
use tandem::engine::{Conversation, Engine, MethodSpec, Output};
use tandem::tokenizer::Tokenizer;
use tokio::sync::mpsc;

/// What `tandem serve` runs with: the CLI's flags, parsed (`crates/cli/src/serve.rs`). The
/// model itself comes from the `load` closure [`run`] is given.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The id /v1/models lists.
    pub model_id: String,
    /// The model file or name, for the log line.
    pub model_source: String,
    /// The method of requests that name none.
    pub method: MethodSpec,
    /// The drafter model's path, when one is loaded (/v1/models says it).
    pub drafter: Option<String>,
    pub host: String,
    pub port: u16,
    /// `Authorization: Bearer KEY` on every endpoint but /health (none or empty: no key).
    pub api_key: Option<String>,
    /// Origins allowed cross-origin requests (CORS is off when empty).
    pub cors_origin: Vec<String>,
    /// Conversations whose KV caches are kept.
    pub parallel: usize,
    /// Requests that may wait; past it a 503 with Retry-After.
    pub queue: usize,
    /// Most new tokens per request, and the default.
    pub max_tokens: usize,
    /// Most draft nodes per step any request may use.
    pub max_draft: usize,
    /// Time a request may generate before it is stopped.
    pub timeout: Duration,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Time a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Fault injection for the recovery tests: destroy the GPU device once after this many
    /// decoding steps in all.
    pub fault_device_lost_after_steps: Option<usize>,
}

/// Loads the model on a GPU and warms it up: at start, and again after a lost device.
pub type Loader = dyn Fn() -> tandem::Result<Engine> + Send;

/// One step's text, the end, or a failure: what the engine thread sends a request's handler.
enum Msg {
    Step(api::Step),
    Done(Box<Output>),
    Failed(ApiError),
}

struct Job {
    req: Resolved,
    tx: mpsc::UnboundedSender<Msg>,
    deadline: Instant,
    endpoint: &'static str,
}

/// Set once the model is loaded.
struct Ready {
    tokenizer: Tokenizer,
    limits: Limits,
    /// What /v1/models says beyond the id: the adapter, the drafter, the method registry.
    adapter: Value,
    drafter: Option<String>,
    /// The tokenizer's grammar compiler: a request's constraint is compiled here first, so
    /// an invalid schema is a 400 before any streaming starts (or why there is none).
    grammars: Result<Arc<tandem::constrain::Grammars>, String>,
}

impl Ready {
    fn served(&self) -> api::Served<'_> {
        api::Served {
            tokenizer: &self.tokenizer,
            limits: &self.limits,
            grammars: match &self.grammars {
                Ok(g) => Ok(g.as_ref()),
                Err(e) => Err(e.as_str()),
            },
            has_drafter: self.drafter.is_some(),
        }
    }
}

/// A lost GPU device, as /health reports it.
#[derive(Clone)]
struct Fault {
    /// `reloading` while the model loads again, `error` when that failed.
    status: &'static str,
    message: String,
}

impl Shared {
    fn fault(&self) -> Option<Fault> {
        self.fault.lock().ok().and_then(|f| f.clone())
    }

    fn set_fault(&self, f: Option<Fault>) {
        if let Ok(mut g) = self.fault.lock() {
            *g = f;
        }
    }
}

impl Fault {
    fn error(&self) -> ApiError {
        ApiError::new(503, "unavailable_error", self.message.clone())
    }
}

/// Counters for /metrics.
#[derive(Default)]
struct Counters {
    requests: BTreeMap<&'static str, u64>,
    errors: u64,
    prompt_tokens: u64,
    reused_tokens: u64,
    generated_tokens: u64,
    prefill_seconds: f64,
    decode_seconds: f64,
    /// Per method: requests, drafted and accepted tokens, target passes.
    methods: BTreeMap<&'static str, [u64; 4]>,
}

struct Shared {
    model_id: String,
    api_key: Option<String>,
    ready: OnceLock<Ready>,
    /// Why the server cannot answer now although the model was loaded once: the GPU device
    /// was lost and the model is being reloaded, or could not be (`/health` says it).
    fault: Mutex<Option<Fault>>,
    jobs: mpsc::Sender<Job>,
    queued: AtomicUsize,
    busy: AtomicBool,
    timeout: Duration,
    counters: Mutex<Counters>,
    next_id: AtomicU64,
    started: u64,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, axum::Json(e.body())).into_response();
    if e.status == 503 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// Serve until Ctrl-C: bind the port, then load the model with `load` on the engine thread
/// (`/health` says 503 meanwhile) and answer requests.
pub fn run(
    args: ServeOptions,
    load: impl Fn() -> tandem::Result<Engine> + Send + 'static,
) -> tandem::Result<()> {
    if args.method.needs_drafter_model() && args.drafter.is_none() {
        return Err(tandem::Error::Invalid(format!(
            "method {} needs a drafter model: pass --drafter PATH",
            args.method.name()
        )));
    }
    if args.parallel == 0 || args.queue == 0 {
        return Err(tandem::Error::Invalid(
            "--parallel and --queue must be at least 1".into(),
        ));
    }
    let model_id = args.model_id.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| tandem::Error::io("the server's runtime", e))?;
    let (jobs, rx) = mpsc::channel(args.queue);
    let shared = Arc::new(Shared {
        model_id,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        ready: OnceLock::new(),
        fault: Mutex::new(None),
        jobs,
        queued: AtomicUsize::new(0),
        busy: AtomicBool::new(false),
        timeout: args.timeout.max(Duration::from_secs(1)),
        counters: Mutex::new(Counters::default()),
        next_id: AtomicU64::new(1),
        started: now_unix(),
    });
    let addr = format!("{}:{}", args.host, args.port);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&addr))
        .map_err(|e| tandem::Error::io(format!("binding {addr}"), e))?;
    eprintln!(
        "tandem serve: http://{addr}/v1 (OpenAI API), http://{addr}/health; loading {} …",
        args.model_source
    );
    let engine_shared = shared.clone();
    let engine_args = args.clone();
    std::thread::Builder::new()
        .name("tandem engine".into())
        .spawn(move || {
            if let Err(e) = engine_thread(&engine_args, &load, &engine_shared, rx) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        })
        .map_err(|e| tandem::Error::io("starting the engine thread", e))?;
    let app = router(shared, &args);
    let limits = (
        args.header_timeout.max(Duration::from_secs(1)),
        args.max_connections.max(1),
    );
    runtime.block_on(async move {
        tokio::select! {
            r = accept_loop(listener, app, limits.0, limits.1) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

/// Accept connections and serve each on its own task: HTTP/1 with a header-read timeout
/// (a client that sends its request a byte at a time is disconnected), at most
/// `max_connections` at once (past it a new connection is closed at once).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    max_connections: usize,
) -> tandem::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let builder = Arc::new(builder);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of file descriptors and the like: wait a moment rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

fn router(shared: Arc<Shared>, args: &ServeOptions) -> Router {
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth));
    let mut app = Router::new()
        .route("/", get(to_page))
        .route("/demo", get(to_page))
        .route("/demo/", get(page))
        .route("/demo/{file}", get(page_file))
        .route("/dist/{file}", get(page_file))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .merge(api)
        .fallback(|| async {
            error_response(&ApiError::new(404, "not_found_error", "no such endpoint"))
        })
        .layer(DefaultBodyLimit::max(args.max_body))
        .with_state(shared);
    if !args.cors_origin.is_empty() {
        let origins: Vec<HeaderValue> = args
            .cors_origin
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        app = app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any),
        );
    }
    app
}

/// `/` and `/demo` lead to the page (with their query: it presets the page's controls).
async fn to_page(uri: axum::http::Uri) -> axum::response::Redirect {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    axum::response::Redirect::to(&format!("/demo/{query}"))
}

/// The demo page, served as it is in `web/demo/` with a marker that tells it to use this
/// server's API (`web/src/server.js`) instead of loading the wasm engine.
async fn page() -> Response {
    let html = include_str!("../../../web/demo/index.html").replacen(
        "<head>",
        "<head>\n  <meta name=\"tandem-server\" content=\"/\">",
        1,
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// The page's scripts and style: the demo's own and the npm package's JavaScript that runs
/// in the page (the wasm engine and its worker are not needed here).
async fn page_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "demo.js" => (include_str!("../../../web/demo/demo.js"), "text/javascript"),
        "demo.css" => (include_str!("../../../web/demo/demo.css"), "text/css"),
        "index.js" => (include_str!("../../../web/src/index.js"), "text/javascript"),
        "models.js" => (
            include_str!("../../../web/src/models.js"),
            "text/javascript",
        ),
        "server.js" => (
            include_str!("../../../web/src/server.js"),
            "text/javascript",
        ),
        _ => return error_response(&ApiError::new(404, "not_found_error", "no such file")),
    };
    (
        [(header::CONTENT_TYPE, format!("{kind}; charset=utf-8"))],
        body,
    )
        .into_response()
}

/// Every endpoint but /health needs the key when one is set.
async fn auth(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match api::check_auth(s.api_key.as_deref(), given) {
        Ok(()) => next.run(req).await,
        Err(e) => error_response(&e),
    }
}

/// The `finish_reason` of a generation the server stopped (its per-request time limit).
const SERVER_CANCEL: &str = "length";

fn loading() -> ApiError {
    ApiError::new(503, "unavailable_error", "the model is loading")
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let down = |status: &str, e: ApiError| {
        let mut body = e.body();
        body["status"] = json!(status);
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    };
    match (s.ready.get(), s.fault()) {
        (_, Some(f)) => down(f.status, f.error()),
        (Some(_), None) => axum::Json(json!({"status": "ok"})).into_response(),
        (None, None) => down("loading", loading()),
    }
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    let meta = s.ready.get().map(|r| {
        json!({"n_ctx": r.limits.n_ctx, "n_vocab": r.tokenizer.vocab_size(),
               "method": r.limits.method.to_string(), "max_draft": r.limits.max_draft,
               "drafter": r.drafter, "adapter": r.adapter,
               "chat_template": r.tokenizer.chat_template_or_default().is_ok(),
               "methods": tandem::engine::METHODS})
    });
    axum::Json(json!({
        "object": "list",
        "data": [{"id": s.model_id, "object": "model", "created": s.started,
                  "owned_by": "tandem", "meta": meta}],
    }))
    .into_response()
}

async fn chat(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let r = resolve_body::<ChatRequest>(&s, &body);
    respond(s, r, "chat").await
}

async fn completions(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let r = resolve_body::<CompletionRequest>(&s, &body);
    respond(s, r, "completions").await
}

/// Parse a chat or completion body, check its model, resolve it against the loaded model.
fn resolve_body<R: api::Request>(s: &Shared, body: &[u8]) -> Result<Resolved, ApiError> {
    let req: R = api::parse_request(body, &s.model_id)?;
    let ready = s.ready.get().ok_or_else(loading)?;
    if let Some(f) = s.fault() {
        return Err(f.error());
    }
    ready.served().resolve(&req)
}

fn count_error(s: &Shared) {
    if let Ok(mut c) = s.counters.lock() {
        c.errors += 1;
    }
}

/// Queue a resolved request and answer it, streamed or whole.
async fn respond(
    s: Arc<Shared>,
    req: Result<Resolved, ApiError>,
    endpoint: &'static str,
) -> Response {
    if let Ok(mut c) = s.counters.lock() {
        *c.requests.entry(endpoint).or_default() += 1;
    }
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            count_error(&s);
            return error_response(&e);
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = Meta {
        id: format!(
            "{}-{:x}{n:04}",
            if req.kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            s.started
        ),
        created: now_unix(),
        model: s.model_id.clone(),
        kind: req.kind,
        on_cancel: SERVER_CANCEL,
    };
    let (stream, include_usage, used) = (req.stream, req.include_usage, req.speculative);
    let job = Job {
        req,
        tx,
        deadline: Instant::now() + s.timeout,
        endpoint,
    };
    s.queued.fetch_add(1, Ordering::AcqRel);
    if s.jobs.try_send(job).is_err() {
        s.queued.fetch_sub(1, Ordering::AcqRel);
        count_error(&s);
        return error_response(&ApiError::new(
            503,
            "unavailable_error",
            "the server's queue is full; retry shortly",
        ));
    }
    if !stream {
        let mut streamed = String::new();
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Step(step) => streamed.push_str(&step.text),
                Msg::Done(out) => return axum::Json(meta.response(&out, &used)).into_response(),
                Msg::Failed(e) => {
                    count_error(&s);
                    return error_response(&e);
                }
            }
        }
        return error_response(&ApiError::new(
            500,
            "server_error",
            "the engine stopped before answering",
        ));
    }
    let events = sse_events(rx, meta, include_usage, used);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The SSE stream of one request: a chunk per step (the first with the assistant role), the
/// final chunk with the finish reason and timings, the usage chunk if asked, `[DONE]`. A
/// failure mid-stream is an `error` object, then `[DONE]`.
fn sse_events(
    rx: mpsc::UnboundedReceiver<Msg>,
    meta: Meta,
    include_usage: bool,
    used: tandem::api::Speculative,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct St {
        rx: mpsc::UnboundedReceiver<Msg>,
        meta: Meta,
        include_usage: bool,
        used: tandem::api::Speculative,
        first: bool,
        live: api::Live,
        streamed: String,
        /// Data lines still to send once the end has come.
        pending: std::collections::VecDeque<String>,
        finished: bool,
    }
    let st = St {
        rx,
        meta,
        include_usage,
        used,
        first: true,
        live: api::Live::default(),
        streamed: String::new(),
        pending: Default::default(),
        finished: false,
    };
    stream::unfold(st, |mut st| async move {
        loop {
            if let Some(data) = st.pending.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), st));
            }
            if st.finished {
                return None;
            }
            match st.rx.recv().await {
                Some(Msg::Step(step)) => {
                    if step.text.is_empty() && step.drafted == 0 {
                        continue;
                    }
                    let chunk = st.meta.chunk(&step, &mut st.live);
                    st.first = false;
                    st.streamed.push_str(&step.text);
                    return Some((Ok(SseEvent::default().data(chunk.to_string())), st));
                }
                Some(Msg::Done(out)) => {
                    let tail = out.text.strip_prefix(st.streamed.as_str()).unwrap_or("");
                    let last = st.meta.final_chunk(&out, tail, st.first, &st.used);
                    st.pending.push_back(last.to_string());
                    if st.include_usage {
                        st.pending.push_back(st.meta.usage_chunk(&out).to_string());
                    }
                }
                Some(Msg::Failed(e)) => st.pending.push_back(e.body().to_string()),
                None => st.pending.push_back(
                    ApiError::new(500, "server_error", "the engine stopped before the end")
                        .body()
                        .to_string(),
                ),
            }
            st.pending.push_back("[DONE]".to_string());
            st.finished = true;
        }
    })
}

/// llama-server's `/tokenize` (`api::Served::tokenize`).
async fn tokenize(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let r = s
        .ready
        .get()
        .ok_or_else(loading)
        .and_then(|ready| ready.served().tokenize(&body));
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

/// llama-server's `/detokenize` (`api::Served::detokenize`).
async fn detokenize(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let r = s
        .ready
        .get()
        .ok_or_else(loading)
        .and_then(|ready| ready.served().detokenize(&body));
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

/// Prometheus text: requests, tokens, prefill/decode seconds, drafted and accepted tokens per
/// method, queue length.
async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
        out.push_str(&format!(
            "# HELP tandem_{name} {help}\n# TYPE tandem_{name} {kind}\n"
        ));
        for (labels, v) in lines {
            out.push_str(&format!("tandem_{name}{labels} {v}\n"));
        }
    };
    let c = match s.counters.lock() {
        Ok(c) => c,
        Err(_) => return error_response(&ApiError::new(500, "server_error", "metrics poisoned")),
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "requests_total",
        "counter",
        "Requests per endpoint.",
        c.requests
            .iter()
            .map(|(e, n)| (format!("{{endpoint=\"{e}\"}}"), n.to_string()))
            .collect(),
    );
    metric(
        "request_errors_total",
        "counter",
        "Requests answered with an error.",
        one(c.errors.to_string()),
    );
    metric(
        "prompt_tokens_total",
        "counter",
        "Prompt tokens of finished requests.",
        one(c.prompt_tokens.to_string()),
    );
    metric(
        "prompt_tokens_reused_total",
        "counter",
        "Prompt tokens whose KV cache was reused.",
        one(c.reused_tokens.to_string()),
    );
    metric(
        "tokens_predicted_total",
        "counter",
        "Generated tokens.",
        one(c.generated_tokens.to_string()),
    );
    metric(
        "prompt_seconds_total",
        "counter",
        "Prefill time.",
        one(format!("{:.6}", c.prefill_seconds)),
    );
    metric(
        "tokens_predicted_seconds_total",
        "counter",
        "Decode time.",
        one(format!("{:.6}", c.decode_seconds)),
    );
    let per = |i: usize| {
        c.methods
            .iter()
            .map(|(m, v)| (format!("{{method=\"{m}\"}}"), v[i].to_string()))
            .collect::<Vec<_>>()
    };
    metric(
        "method_requests_total",
        "counter",
        "Finished requests per drafting method.",
        per(0),
    );
    metric(
        "draft_tokens_total",
        "counter",
        "Drafted tokens per method.",
        per(1),
    );
    metric(
        "draft_tokens_accepted_total",
        "counter",
        "Accepted drafted tokens per method.",
        per(2),
    );
    metric(
        "target_passes_total",
        "counter",
        "Target forward passes per method.",
        per(3),
    );
    metric(
        "requests_deferred",
        "gauge",
        "Requests waiting in the queue.",
        one(s.queued.load(Ordering::Acquire).to_string()),
    );
    metric(
        "requests_processing",
        "gauge",
        "Requests generating now.",
        one(u8::from(s.busy.load(Ordering::Acquire)).to_string()),
    );
    drop(c);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The conversation for `prompt`: the one whose cache shares the longest prefix with it, a
/// new one while fewer than `parallel` are open (and the device holds one), else the least
/// recently used. `slots` is ordered least recently used first.
fn pick(
    engine: &Engine,
    slots: &mut Vec<Conversation>,
    parallel: usize,
    prompt: &[u32],
) -> tandem::Result<Conversation> {
    let best = slots
        .iter()
        .enumerate()
        .map(|(i, c)| (common_prefix(&c.session().cache, prompt), i))
        .max();
    match best {
        Some((shared, i)) if shared > 0 => return Ok(slots.remove(i)),
        _ => {}
    }
    if slots.len() < parallel {
        match engine.conversation() {
            Ok(c) => return Ok(c),
            Err(tandem::Error::OutOfMemory(why)) if !slots.is_empty() => {
                eprintln!("[serve] keeping {} conversations: {why}", slots.len());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(slots.remove(0))
}

fn engine_thread(
    args: &ServeOptions,
    load: &Loader,
    shared: &Shared,
    mut rx: mpsc::Receiver<Job>,
) -> tandem::Result<()> {
    let t0 = Instant::now();
    let method = args.method.clone();
    let engine = load()?;
    let limits = Limits {
        n_ctx: engine.target.limits.max_ctx,
        max_tokens: args.max_tokens,
        max_draft: args.max_draft.min(tandem::engine::MAX_STEP_TOKENS - 1),
        method: method.clone(),
    };
    eprintln!(
        "[serve] {} ready in {:.1} s on {} ({}): ctx {}, method {}, {} conversations kept, queue {}{}",
        shared.model_id,
        t0.elapsed().as_secs_f64(),
        engine.gpu.info.name,
        format!("{:?}", engine.gpu.info.backend).to_lowercase(),
        limits.n_ctx,
        limits.method,
        args.parallel,
        args.queue,
        if shared.api_key.is_some() { ", API key required" } else { "" },
    );
    let _ = shared.ready.set(Ready {
        tokenizer: engine.tokenizer.clone(),
        limits,
        adapter: serde_json::to_value(engine.gpu.summary()).unwrap_or(Value::Null),
        drafter: args.drafter.clone(),
        grammars: engine.grammars().map_err(|e| e.to_string()),
    });
    // None while the model could not be reloaded after a lost device.
    let mut engine = Some(engine);
    // Decoding steps left before the injected fault (`--fault-device-lost-after-steps`).
    let mut fault_in = args.fault_device_lost_after_steps;
    let mut slots: Vec<Conversation> = Vec::new();
    while let Some(job) = rx.blocking_recv() {
        shared.queued.fetch_sub(1, Ordering::AcqRel);
        if job.tx.is_closed() {
            continue; // the client left while it waited
        }
        if engine.is_none() {
            engine = reload(load, shared);
        }
        let Some(eng) = engine.as_ref() else {
            let f = shared.fault().map(|f| f.error());
            let _ = job.tx.send(Msg::Failed(f.unwrap_or_else(loading)));
            continue;
        };
        shared.busy.store(true, Ordering::Release);
        let t = Instant::now();
        let result = pick(eng, &mut slots, args.parallel, &job.req.prompt).and_then(|mut conv| {
            let tx = &job.tx;
            let r = eng.generate_in(&mut conv, &job.req.prompt, &job.req.options, |ev| {
                if let Some(n) = fault_in.as_mut() {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        eprintln!("[serve] fault injection: destroying the GPU device");
                        eng.gpu.lose_device();
                        fault_in = None;
                    }
                }
                let step = api::Step::from_event(ev, t.elapsed().as_secs_f64());
                let sent = tx.send(Msg::Step(step)).is_ok();
                sent && Instant::now() < job.deadline
            });
            if r.is_ok() {
                slots.push(conv);
            }
            r
        });
        shared.busy.store(false, Ordering::Release);
        // A lost device: every buffer on it is dead. The request fails with a 503 (an error
        // event mid-stream), /health reports it, and the model is loaded on a new device.
        if let Some(why) = eng.gpu.lost().map(str::to_string) {
            eprintln!("[serve] GPU {why}: reloading the model");
            shared.set_fault(Some(Fault {
                status: "reloading",
                message: format!("GPU {why}: the server is reloading the model"),
            }));
            let _ = job.tx.send(Msg::Failed(
                shared.fault().map(|f| f.error()).unwrap_or_else(loading),
            ));
            // The dead device's buffers go before a new device's are made.
            slots.clear();
            drop(engine.take());
            engine = reload(load, shared);
            continue;
        }
        let p = job.req.prompt.len();
        match result {
            Ok(out) => {
                let st = &out.stats;
                if let Ok(mut c) = shared.counters.lock() {
                    c.prompt_tokens += st.prompt_tokens as u64;
                    c.reused_tokens += st.reused_prompt_tokens as u64;
                    c.generated_tokens += st.generated_tokens as u64;
                    c.prefill_seconds += st.prefill_seconds;
                    c.decode_seconds += st.decode_seconds;
                    let m = c.methods.entry(st.method).or_default();
                    m[0] += 1;
                    m[1] += st.drafted as u64;
                    m[2] += st.accepted as u64;
                    m[3] += st.target_passes as u64;
                }
                eprintln!(
                    "[serve] {} {p} prompt tokens ({} reused) + {} generated in {:.2} s; {} τ {:.2}, decode {:.1} tok/s; {}",
                    job.endpoint,
                    st.reused_prompt_tokens,
                    st.generated_tokens,
                    t.elapsed().as_secs_f64(),
                    st.method,
                    st.mean_accepted_tokens,
                    st.decode_tokens_per_s,
                    if job.tx.is_closed() { "client gone" } else { api::finish_reason(out.stop_reason, SERVER_CANCEL) },
                );
                let _ = job.tx.send(Msg::Done(Box::new(out)));
            }
            Err(e) => {
                eprintln!("[serve] {} {p} prompt tokens: error: {e}", job.endpoint);
                let _ = job.tx.send(Msg::Failed(ApiError::from(e)));
            }
        }
    }
    Ok(())
}

/// Load the model again after a lost device: on success the fault is cleared, else /health
/// says why (and the next request tries again).
fn reload(load: &Loader, shared: &Shared) -> Option<Engine> {
    let t0 = Instant::now();
    match load() {
        Ok(e) => {
            eprintln!(
                "[serve] reloaded in {:.1} s on {}",
                t0.elapsed().as_secs_f64(),
                e.gpu.info.name
            );
            shared.set_fault(None);
            Some(e)
        }
        Err(err) => {
            eprintln!("[serve] reloading the model failed: {err}");
            shared.set_fault(Some(Fault {
                status: "error",
                message: format!(
                    "the GPU device was lost and the model could not be reloaded: {err}"
                ),
            }));
            None
        }
    }
}
