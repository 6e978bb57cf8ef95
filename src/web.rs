//! wasm-bindgen bindings over [`Engine`] for the npm package (`web/`).
//!
//! Thin on purpose: model bytes in, the engine's events and statistics out. Everything the
//! engine does natively happens the same way here; the OpenAI-shaped API, downloads, the
//! Cache API and the Web Worker live in JavaScript (`web/src/`).
//!
//! Errors reach JavaScript as `Error` objects whose message is tandem's own and whose `kind`
//! property names the [`Error`] variant (`"gpu"`, `"context"`, …).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect, Uint32Array};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::engine::{Engine, EngineOptions, Event, GenerateOptions, MethodSpec};
use crate::gpu::{Gpu, GpuOptions};
use crate::model::gguf::GgufFile;
use crate::model::loader::ModelFile;
use crate::tokenizer::ChatMessage;
use crate::Error;

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Io { .. } => "io",
        Error::Format { .. } => "format",
        Error::Unsupported(_) => "unsupported",
        Error::Gpu(_) => "gpu",
        Error::OutOfMemory(_) => "out_of_memory",
        Error::Tokenizer(_) => "tokenizer",
        Error::NoChatTemplate(_) => "no_chat_template",
        Error::Context(_) => "context",
        Error::Mismatch(_) => "mismatch",
        Error::Invalid(_) => "invalid",
    }
}

/// A JS `Error` carrying tandem's message and the variant as `kind`.
fn js_error(e: Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = Reflect::set(&err, &"kind".into(), &kind(&e).into());
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

fn model_file(bytes: ModelBytes) -> crate::Result<ModelFile> {
    ModelFile::from_gguf(GgufFile::from_bytes(bytes.bytes)?)
}

/// Generation options as JSON (`snake_case`, all optional).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct GenerateJson {
    max_tokens: Option<usize>,
    stop: Vec<String>,
    /// A method of the registry, `name[:key=value,...]` (`"plain"`, `"lookup"`, `"sps"`,
    /// `"tree:nodes=16"`; [`methods_json`] lists them); default: `sps` when a drafter model is
    /// loaded, else plain.
    method: Option<String>,
    /// Sets the method's draft size (`len`, or `nodes` for tree; default: the engine's
    /// `max_draft`).
    draft_len: Option<usize>,
    adaptive: Option<bool>,
    temperature: Option<f64>,
    top_k: Option<u32>,
    top_p: Option<f64>,
    seed: Option<u64>,
    /// OpenAI's `response_format` (`{"type": "json_object"}`, `{"type": "json_schema",
    /// "json_schema": {"schema": …}}`): constrained decoding.
    response_format: Option<serde_json::Value>,
    /// A Lark grammar or a regular expression the output must match.
    grammar: Option<String>,
    regex: Option<String>,
    /// With a constraint, draft the tokens the grammar forces (default on).
    forced_drafts: Option<bool>,
    /// Contrastive decoding with the drafter model as the amateur: `{alpha, beta}`.
    contrastive: Option<crate::api::Contrastive>,
    /// Keep generating past end-of-sequence tokens, up to `max_tokens`.
    ignore_eos: Option<bool>,
}

impl GenerateJson {
    fn parse(json: &str, engine: &Engine, max_draft: usize) -> crate::Result<GenerateOptions> {
        let o: GenerateJson = serde_json::from_str(json)
            .map_err(|e| Error::Invalid(format!("generation options: {e}")))?;
        let sampling = match o.temperature {
            Some(t) if t > 0.0 => Some(crate::engine::SampleParams {
                temperature: t as f32,
                top_k: o.top_k.unwrap_or(0),
                top_p: o.top_p.unwrap_or(1.0) as f32,
                seed: o.seed.unwrap_or(0),
            }),
            _ => None,
        };
        let method = match o.method.as_deref() {
            Some(m) => MethodSpec::parse(m)?,
            None if engine.has_drafter() => MethodSpec::named("sps")?,
            None => MethodSpec::plain(),
        };
        // The draft size: `draft_len`, else the engine's `max_draft` unless the spec set it.
        let explicit = o.method.as_deref().is_some_and(|m| m.contains(':'));
        let size = ["len", "nodes"].into_iter().find(|k| method.has(k));
        let method = match (size, o.draft_len) {
            (Some(key), Some(k)) => method.with(key, k)?,
            (Some(key), None) if !explicit => {
                method.with(key, max_draft.clamp(1, crate::engine::MAX_STEP_TOKENS - 1))?
            }
            _ => method,
        };
        let constraint = crate::api::Common {
            response_format: o.response_format,
            grammar: o.grammar,
            regex: o.regex,
            ..Default::default()
        }
        .constraint()
        .map_err(|e| Error::Invalid(e.message))?;
        Ok(GenerateOptions {
            max_tokens: o.max_tokens.unwrap_or(256),
            stop: o.stop,
            method,
            adaptive: o.adaptive.unwrap_or(true),
            sampling,
            constraint,
            forced_drafts: o.forced_drafts.unwrap_or(true),
            contrastive: o.contrastive.map(|c| c.params()).transpose()?,
            ignore_eos: o.ignore_eos.unwrap_or(false),
        })
    }
}

/// The method registry as JSON: `[{ name, about, needs_drafter_model, params: [{ key,
/// default, min, max, about }] }]` (the npm package and the demo page list methods from it).
#[wasm_bindgen(js_name = methodsJson)]
pub fn methods_json() -> String {
    serde_json::to_string(crate::engine::METHODS).unwrap_or_default()
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

    /// Generate a chat answer: `messages` is JSON `[{"role", "content"}, …]`, rendered with
    /// the target's own chat template. See [`WebEngine::complete`] for the rest.
    pub fn chat(
        &self,
        messages: &str,
        options: &str,
        on_step: Function,
    ) -> Result<Promise, JsValue> {
        let msgs: Vec<ChatMessage> = serde_json::from_str::<Vec<ChatJson>>(messages)
            .map_err(|e| invalid(format!("chat messages: {e}")))?
            .into_iter()
            .map(|m| ChatMessage::new(m.role, m.content))
            .collect();
        let ids = {
            let engine = self.engine.try_borrow().map_err(|_| busy())?;
            let text = engine
                .tokenizer
                .apply_chat_template(&msgs, true)
                .map_err(js_error)?;
            engine.tokenizer.encode(&text, true).map_err(js_error)?
        };
        self.run(ids, options, on_step)
    }

    /// Continue raw `prompt` text (no chat template; special tokens in it are plain text, BOS
    /// first where the model asks for one, as `tandem run` without `--chat`). `options` is JSON (`max_tokens`, `stop`, `method`,
    /// `draft_len`, `adaptive`, `temperature`); `on_step({ids, drafted, proposed, text, draftedText})`
    /// is called after every step. Resolves to the output as JSON: text, tokens,
    /// stop_reason, stats.
    pub fn complete(
        &self,
        prompt: &str,
        options: &str,
        on_step: Function,
    ) -> Result<Promise, JsValue> {
        let ids = {
            let engine = self.engine.try_borrow().map_err(|_| busy())?;
            engine
                .tokenizer
                .encode_raw_prompt(prompt)
                .map_err(js_error)?
        };
        self.run(ids, options, on_step)
    }

    /// Like [`WebEngine::complete`] with the prompt given as token ids.
    #[wasm_bindgen(js_name = completeIds)]
    pub fn complete_ids(
        &self,
        ids: Vec<u32>,
        options: &str,
        on_step: Function,
    ) -> Result<Promise, JsValue> {
        self.run(ids, options, on_step)
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

    fn run(&self, prompt: Vec<u32>, options: &str, on_step: Function) -> Result<Promise, JsValue> {
        let opts = {
            let engine = self.engine.try_borrow().map_err(|_| busy())?;
            GenerateJson::parse(options, &engine, self.max_draft).map_err(js_error)?
        };
        let engine = self.engine.clone();
        let cancel = self.cancel.clone();
        cancel.set(false);
        // The generation holds the engine across its awaits on purpose: every other entry
        // point uses `try_borrow*` and answers "busy" meanwhile (`interrupt` needs no borrow).
        #[allow(clippy::await_holding_refcell_ref)]
        let generation = async move {
            let mut engine = engine.try_borrow_mut().map_err(|_| busy())?;
            let mut callback_error = None;
            let out = engine
                .generate_async(&prompt, &opts, |ev| {
                    let Event::Tokens {
                        ids,
                        drafted,
                        text,
                        drafted_text,
                        proposed,
                        ..
                    } = ev;
                    let step = Object::new();
                    let _ = Reflect::set(&step, &"ids".into(), &Uint32Array::from(&ids[..]));
                    let _ = Reflect::set(&step, &"drafted".into(), &(*drafted as u32).into());
                    let _ = Reflect::set(&step, &"proposed".into(), &(*proposed as u32).into());
                    let _ = Reflect::set(&step, &"text".into(), &text.as_str().into());
                    let _ = Reflect::set(
                        &step,
                        &"draftedText".into(),
                        &text.get(..*drafted_text).unwrap_or("").into(),
                    );
                    if let Err(e) = on_step.call1(&JsValue::NULL, &step) {
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
            let json = serde_json::to_string(&out).map_err(|e| invalid(e.to_string()))?;
            js_sys::JSON::parse(&json)
        };
        Ok(wasm_bindgen_futures::future_to_promise(generation))
    }
}

#[derive(Deserialize)]
struct ChatJson {
    role: String,
    content: String,
}
