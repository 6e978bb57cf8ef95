//! wasm-bindgen bindings over [`Engine`] for the npm package (`web/`).
//!
//! Thin on purpose: model bytes in, OpenAI-shaped chunks and responses out. Requests are
//! parsed, templated, tokenized and resolved by [`tandem::api`] and the chunks built there,
//! exactly as `tandem serve` does, so the npm package and the server answer in one shape;
//! downloads, the Cache API, the Web Worker and async iteration live in JavaScript
//! (`web/src/`).
//!
//! Errors reach JavaScript as `Error` objects whose message is tandem's own and whose `kind`
//! property names the [`Error`] variant (`"gpu"`, `"context"`, …).
//!
//! Built for wasm32 only (`cargo build -p tandem-web --target wasm32-unknown-unknown`, which
//! `web/scripts/build.mjs` runs); on other targets the crate is empty.
#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect};
use serde_json::Value;
use wasm_bindgen::prelude::*;

use tandem::api::{self, ApiError, ChatRequest, CompletionRequest, Kind, Limits, Meta, Resolved};
use tandem::engine::{Engine, EngineOptions, MethodSpec};
use tandem::gpu::{Gpu, GpuOptions};
use tandem::model::gguf::GgufFile;
use tandem::model::loader::ModelFile;
use tandem::Error;

/// A JS `Error` carrying tandem's message and the variant as `kind`.
fn js_error(e: Error) -> JsValue {
    error_object(&e.to_string(), e.kind())
}

/// A refused request as a JS `Error`: its message, `kind` and HTTP-style `status`.
fn api_error(e: ApiError) -> JsValue {
    let err = error_object(&e.message, e.js_kind());
    let _ = Reflect::set(&err, &"status".into(), &e.status.into());
    err
}

fn error_object(message: &str, kind: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = Reflect::set(&err, &"kind".into(), &kind.into());
    err.into()
}

fn invalid(msg: impl Into<String>) -> JsValue {
    js_error(Error::Invalid(msg.into()))
}

/// Panics abort the wasm instance; say why on the console instead of "unreachable".
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("tandem panicked: {info}").into());
    }));
}

/// A model file being received in chunks (straight from a download or the Cache API into
/// wasm memory, so the page never holds a second copy of the whole file).
#[wasm_bindgen]
pub struct ModelBytes {
    bytes: Vec<u8>,
}

#[wasm_bindgen]
impl ModelBytes {
    /// `expected` is the file size when known (0 otherwise); it reserves memory up front, so
    /// a file too large for wasm memory fails before its download.
    #[wasm_bindgen(constructor)]
    pub fn new(expected: f64) -> Result<ModelBytes, JsValue> {
        let expected = expected.max(0.0);
        if expected >= u32::MAX as f64 {
            return Err(too_large(expected));
        }
        let mut bytes = Vec::new();
        reserve(&mut bytes, expected as usize)?;
        Ok(ModelBytes { bytes })
    }

    /// Append one chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), JsValue> {
        reserve(&mut self.bytes, chunk.len())?;
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// Bytes received so far.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> f64 {
        self.bytes.len() as f64
    }
}

fn too_large(size: f64) -> JsValue {
    js_error(Error::Unsupported(format!(
        "a model file of {:.0} MB does not fit in WebAssembly memory (a wasm32 page holds at \
         most 4 GiB, and the browser may allow less): use a smaller model",
        size / 1048576.0
    )))
}

fn reserve(bytes: &mut Vec<u8>, more: usize) -> Result<(), JsValue> {
    bytes
        .try_reserve(more)
        .map_err(|_| too_large(bytes.len() as f64 + more as f64))
}

fn model_file(bytes: ModelBytes) -> tandem::Result<ModelFile> {
    ModelFile::from_gguf(GgufFile::from_bytes(bytes.bytes)?)
}

/// The method registry as JSON: `[{ name, about, needs_drafter_model, params: [{ key,
/// default, min, max, about }] }]` (the npm package and the demo page list methods from it).
#[wasm_bindgen(js_name = methodsJson)]
pub fn methods_json() -> String {
    serde_json::to_string(tandem::engine::METHODS).unwrap_or_default()
}

/// The engine for JavaScript. One generation at a time; [`WebEngine::interrupt`] may be
/// called while one runs (the worker handles messages while a step awaits the GPU).
#[wasm_bindgen]
pub struct WebEngine {
    engine: Rc<RefCell<Engine>>,
    cancel: Rc<Cell<bool>>,
    max_draft: usize,
}

fn busy() -> JsValue {
    invalid("the engine is busy with another generation (interrupt it and wait for it to end)")
}

#[wasm_bindgen]
impl WebEngine {
    /// Load a target model onto the browser's WebGPU adapter. `max_ctx` is the KV cache size
    /// in tokens, `max_draft` the most draft tokens per step any method may use.
    pub async fn create(
        target: ModelBytes,
        max_ctx: usize,
        max_draft: usize,
    ) -> Result<WebEngine, JsValue> {
        let gpu = Gpu::new(&GpuOptions::default()).await.map_err(js_error)?;
        let file = model_file(target).map_err(js_error)?;
        let engine =
            Engine::new(gpu, &file, EngineOptions { max_ctx, max_draft }).map_err(js_error)?;
        // Errors wgpu reports asynchronously (out of memory, limits) surface here, not at
        // the first token.
        engine.gpu.check_errors().map_err(js_error)?;
        Ok(WebEngine {
            engine: Rc::new(RefCell::new(engine)),
            cancel: Rc::new(Cell::new(false)),
            max_draft,
        })
    }

    /// Load a drafter model (same tokenizer as the target) for the methods that need one (`"sps"`, `"tree"`, `"hybrid:model=on"`).
    #[wasm_bindgen(js_name = loadDrafter)]
    pub fn load_drafter(&self, draft: ModelBytes) -> Result<(), JsValue> {
        let mut engine = self.engine.try_borrow_mut().map_err(|_| busy())?;
        let file = model_file(draft).map_err(js_error)?;
        engine.load_drafter(&file).map_err(js_error)?;
        engine.gpu.check_errors().map_err(js_error)
    }

    #[wasm_bindgen(js_name = hasDrafter)]
    pub fn has_drafter(&self) -> bool {
        self.engine.try_borrow().is_ok_and(|e| e.has_drafter())
    }

    /// Whether the target's tokenizer can format a chat: a template in the file, or a ChatML
    /// vocabulary (a base model such as Gemma 3 270M has neither: continue raw text).
    #[wasm_bindgen(js_name = hasChatTemplate)]
    pub fn has_chat_template(&self) -> bool {
        self.engine
            .try_borrow()
            .is_ok_and(|e| e.tokenizer.chat_template_or_default().is_ok())
    }

    /// The adapter (name, features, limits) as JSON.
    #[wasm_bindgen(js_name = adapterJson)]
    pub fn adapter_json(&self) -> Result<String, JsValue> {
        let engine = self.engine.try_borrow().map_err(|_| busy())?;
        serde_json::to_string(&engine.gpu.summary()).map_err(|e| invalid(e.to_string()))
    }

    /// Token ids of `text` (`special`: parse special tokens such as `<|im_start|>`).
    pub fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, JsValue> {
        let engine = self.engine.try_borrow().map_err(|_| busy())?;
        engine.tokenizer.encode(text, special).map_err(js_error)
    }

    /// Answer an OpenAI-shaped request (`kind` `"chat"`: a chat completion, `"completion"`: a
    /// text completion), given as JSON: the fields of `tandem serve`'s
    /// `/v1/chat/completions` and `/v1/completions` ([`api::Common`]), `model` ignored. A
    /// request without `method` uses `default_method`. Streaming (`"stream": true`):
    /// `on_chunk` gets every chunk (one per step, then the last with the finish reason, the
    /// timings and the statistics, then the usage chunk if `stream_options.include_usage`)
    /// and the promise resolves to `null`; otherwise it resolves to the whole response. A
    /// refused request throws at once (kind `invalid`, `context`, `no_chat_template`, …).
    #[wasm_bindgen(js_name = createCompletion)]
    pub fn create_completion(
        &self,
        kind: &str,
        request: &str,
        model: &str,
        default_method: &str,
        on_chunk: Function,
    ) -> Result<Promise, JsValue> {
        let resolved = {
            let engine = self.engine.try_borrow().map_err(|_| busy())?;
            self.resolve(&engine, kind, request, default_method)
                .map_err(api_error)?
        };
        let n = COUNTER.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        let created = (js_sys::Date::now() / 1000.0) as u64;
        let meta = Meta {
            id: format!(
                "{}-{created:x}{:08x}{n:04}",
                if resolved.kind == Kind::Chat {
                    "chatcmpl"
                } else {
                    "cmpl"
                },
                (js_sys::Math::random() * u32::MAX as f64) as u32,
            ),
            created,
            model: model.to_string(),
            kind: resolved.kind,
            on_cancel: "abort",
        };
        let engine = self.engine.clone();
        let cancel = self.cancel.clone();
        cancel.set(false);
        // The generation holds the engine across its awaits on purpose: every other entry
        // point uses `try_borrow*` and answers "busy" meanwhile (`interrupt` needs no borrow).
        #[allow(clippy::await_holding_refcell_ref)]
        let generation = async move {
            let mut engine = engine.try_borrow_mut().map_err(|_| busy())?;
            let Resolved {
                prompt,
                options,
                stream,
                include_usage,
                speculative,
                ..
            } = resolved;
            let t0 = tandem::gpu::seconds();
            let (mut live, mut streamed, mut callback_error) =
                (api::Live::default(), String::new(), None);
            let out = engine
                .generate_async(&prompt, &options, |ev| {
                    if !stream {
                        return !cancel.get();
                    }
                    let step = api::Step::from_event(ev, tandem::gpu::seconds() - t0);
                    streamed.push_str(&step.text);
                    if let Err(e) = send(&on_chunk, &meta.chunk(&step, &mut live)) {
                        callback_error = Some(e);
                        return false;
                    }
                    !cancel.get()
                })
                .await
                .map_err(js_error)?;
            drop(engine);
            if let Some(e) = callback_error {
                return Err(e);
            }
            if !stream {
                return to_js(&meta.response(&out, &speculative));
            }
            let tail = out.text.strip_prefix(streamed.as_str()).unwrap_or("");
            send(
                &on_chunk,
                &meta.final_chunk(&out, tail, live.steps() == 0, &speculative),
            )?;
            if include_usage {
                send(&on_chunk, &meta.usage_chunk(&out))?;
            }
            Ok(JsValue::NULL)
        };
        Ok(wasm_bindgen_futures::future_to_promise(generation))
    }

    /// Stop the running generation after its current step.
    pub fn interrupt(&self) {
        self.cancel.set(true);
    }

    /// Forget the KV caches (the next generation prefills its whole prompt).
    pub fn reset(&self) -> Result<(), JsValue> {
        self.engine.try_borrow_mut().map_err(|_| busy())?.reset();
        Ok(())
    }

    /// The request resolved as the server resolves it: the context is the engine's KV
    /// cache, a request without `max_tokens` may fill it.
    fn resolve(
        &self,
        engine: &Engine,
        kind: &str,
        request: &str,
        default_method: &str,
    ) -> std::result::Result<Resolved, ApiError> {
        let n_ctx = engine.target.limits.max_ctx;
        let limits = Limits {
            n_ctx,
            max_tokens: n_ctx,
            max_draft: self.max_draft.clamp(1, tandem::engine::MAX_STEP_TOKENS - 1),
            method: MethodSpec::parse(default_method)?,
        };
        match kind {
            "chat" => resolve_with(
                engine,
                &limits,
                api::parse::<ChatRequest>(request.as_bytes())?,
            ),
            "completion" => resolve_with(
                engine,
                &limits,
                api::parse::<CompletionRequest>(request.as_bytes())?,
            ),
            other => Err(ApiError::invalid(format!(
                "request kind '{other}' (chat or completion)"
            ))),
        }
    }
}

/// [`api::Served::resolve`] against the engine; the grammar compiler is built (once) only
/// for a request that asks for a constraint.
fn resolve_with<R: api::Request>(
    engine: &Engine,
    limits: &Limits,
    req: R,
) -> std::result::Result<Resolved, ApiError> {
    let c = req.common();
    let constrained = c.response_format.is_some() || c.grammar.is_some() || c.regex.is_some();
    let grammars = constrained.then(|| engine.grammars().map_err(|e| e.to_string()));
    let served = api::Served {
        tokenizer: &engine.tokenizer,
        limits,
        grammars: match &grammars {
            Some(Ok(g)) => Ok(g.as_ref()),
            Some(Err(e)) => Err(e.as_str()),
            None => Err("no constraint was asked for"),
        },
        has_drafter: engine.has_drafter(),
    };
    served.resolve(&req)
}

thread_local! {
    /// Requests answered in this worker (a part of each response id).
    static COUNTER: Cell<u32> = const { Cell::new(0) };
}

fn to_js(v: &Value) -> Result<JsValue, JsValue> {
    js_sys::JSON::parse(&v.to_string())
}

fn send(on_chunk: &Function, chunk: &Value) -> Result<(), JsValue> {
    on_chunk.call1(&JsValue::NULL, &to_js(chunk)?).map(|_| ())
}
