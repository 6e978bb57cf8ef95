//! `Engine`: a target model (and optionally a drafter model) on one GPU with the tokenizer,
//! and generation that streams events.
//!
//! Every step is the speculative loop of DESIGN.md: a drafter proposes a tree (the empty tree
//! for plain decoding), the target verifies `[root, tree…]` in one forward, the longest path
//! matching the target's greedy choice is accepted plus the target's own next token, and the
//! KV rows of the accepted path are compacted to follow the prefix. Plain decoding is the
//! same loop with no drafter, so every method shares one code path.
//!
//! The drafting methods are [`Drafter`]s (`src/speculative/`); the engine keeps the one in
//! use across generations, owns every `await` (drafters record GPU work and ask for reads,
//! the engine submits and waits) and the target's verification ([`Verification`]). With a
//! drafter model's chain the whole step — k drafter passes, each feeding its argmax to the
//! next on the GPU, and the target's verification pass — is one command buffer with one
//! readback at the end (the draft tokens and the target's choices: a few u32s).

use crate::gpu::{seconds, Gpu, Readback};
use crate::model::loader::ModelFile;
use std::sync::{Arc, OnceLock};

use crate::constrain::{Constrained, Grammars};

use crate::model::session::Session;
use crate::model::transformer::{ForwardLimits, GpuModel};
use crate::speculative::budget::Budget;
use crate::speculative::tree::DraftTree;
use crate::speculative::verify::Verification;
use crate::speculative::{DraftContext, DraftModel, Drafter, Proposal, Verdict};
use crate::tokenizer::{Detokenizer, Tokenizer};
use crate::{Error, Result};

/// How a drafter model is loaded.
pub use crate::speculative::DrafterOptions;

/// Sampling parameters (temperature, top-k, top-p, seed): the faces set them through the
/// engine, which hands them to the GPU sampler.
pub use crate::kernels::sample::SampleParams;

/// Most tokens one step verifies (root + draft nodes).
pub use crate::speculative::MAX_STEP_TOKENS;

/// How drafts are made: a method of the registry with its parameters
/// (`"tree:nodes=16,width=4".parse()`).
pub use crate::speculative::registry::{MethodSpec, METHODS};

/// What a constrained output must match (JSON schema, regex, Lark grammar).
pub use crate::constrain::Constraint;

/// Contrastive decoding's α (plausibility cut) and β (the amateur's weight).
pub use crate::kernels::contrastive::ContrastiveParams;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// Stop when the text ends with one of these (the stop string is kept out of the text).
    pub stop: Vec<String>,
    pub method: MethodSpec,
    /// Choose the draft size each step from measured acceptance and step times, backing off
    /// to plain decoding where drafting does not pay. On by default.
    pub adaptive: bool,
    /// Sample with temperature / top-k / top-p and a seed (lossless speculative sampling for
    /// every method); `None` = greedy.
    pub sampling: Option<SampleParams>,
    /// Constrain the output to a JSON schema, regex or grammar: the target's logits are
    /// masked on the GPU before argmax, sampling and verification, so every method stays
    /// exact. `None` = free text.
    pub constraint: Option<Constraint>,
    /// With a constraint, draft the tokens the grammar forces (the only continuation it
    /// allows: JSON punctuation, a fixed schema's keys), verified like any draft. On by default.
    pub forced_drafts: bool,
    /// Contrastive decoding with the drafter model as the amateur: the target's scores
    /// become `log p_target − β·log p_drafter` over the tokens within α of the target's top
    /// probability, computed on the GPU for every verified row before verification, so
    /// every method gives the same output as plain contrastive decoding. Needs a drafter
    /// model. `None` = the target's own distribution.
    pub contrastive: Option<ContrastiveParams>,
    /// Keep generating past end-of-sequence tokens (as llama.cpp's `--ignore-eos`): for
    /// benchmarks that need exactly `max_tokens`, and for synthetic weights, whose argmax
    /// lands anywhere. Off by default.
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            stop: vec![],
            method: MethodSpec::plain(),
            adaptive: true,
            sampling: None,
            constraint: None,
            forced_drafts: true,
            contrastive: None,
            ignore_eos: false,
        }
    }
}

/// One event of a streaming generation.
#[derive(Clone, Debug)]
pub enum Event {
    /// Tokens emitted by one step: the first `drafted` were drafted and accepted, the rest
    /// (the last one) is the target's own correction or bonus token. `text` is the new text;
    /// its first `drafted_text` bytes (a char boundary) came from the drafted tokens.
    /// `proposed` draft tokens (tree nodes) were verified in the step.
    Tokens {
        ids: Vec<u32>,
        drafted: usize,
        text: String,
        drafted_text: usize,
        proposed: usize,
        /// Seconds this step spent drafting (the drafter's GPU time for a drafter chain,
        /// measured with timestamp queries; wall time for tree drafting and prompt lookup;
        /// 0 for plain steps). None where the device cannot time it.
        drafter_seconds: Option<f64>,
    },
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    Eos,
    Stop,
    Length,
    Cancelled,
}

/// Statistics of one generation.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// The method's name ([`MethodSpec::name`]).
    pub method: &'static str,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV cache was reused from the previous generation (multi-turn).
    pub reused_prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Forward passes of the target during decoding (Spec-Bench's target passes).
    pub target_passes: usize,
    /// Forward passes of the drafter model.
    pub drafter_passes: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Generated tokens ÷ target passes (τ).
    pub mean_accepted_tokens: f64,
    pub acceptance_rate: f64,
    /// Seconds spent drafting, over all steps (see [`Event::Tokens`]); None where a step
    /// could not be timed.
    pub drafter_seconds: Option<f64>,
    /// Draft tokens the grammar forced (part of `drafted`), with a constraint.
    pub forced: usize,
    /// Host seconds computing the constraint's token masks, over all steps.
    pub mask_seconds: f64,
}

impl Stats {
    fn finish(&mut self) {
        self.prefill_tokens_per_s = (self.prompt_tokens - self.reused_prompt_tokens) as f64
            / self.prefill_seconds.max(1e-9);
        self.decode_tokens_per_s = self.generated_tokens as f64 / self.decode_seconds.max(1e-9);
        self.mean_accepted_tokens = self.generated_tokens as f64 / self.target_passes.max(1) as f64;
        self.acceptance_rate = self.accepted as f64 / self.drafted.max(1) as f64;
    }
}

/// The result of a generation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Output {
    pub text: String,
    pub tokens: Vec<u32>,
    pub stop_reason: Option<StopReason>,
    pub stats: Stats,
}

/// Sizes fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// KV cache size in tokens (capped by the model's context length).
    pub max_ctx: usize,
    /// Largest draft (tree nodes) any method may propose per step; at most 63.
    pub max_draft: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_ctx: 4096,
            max_draft: 16,
        }
    }
}

/// Most drafters (methods with their parameters) an engine keeps; the least recently used
/// is dropped beyond it.
pub const KEPT_DRAFTERS: usize = 8;

/// One conversation on an engine's models: the target's session (KV cache, activations, the
/// tokens its rows hold), the drafter model's session, the verification buffers and the
/// drafters with what they learned. [`Engine::conversation`] opens one, [`Engine::generate_in`]
/// continues it; the engine's own generations ([`Engine::generate`]) run in one of these too.
/// Conversations over one engine share its weights and pipelines; each holds its own device
/// memory (`Error::OutOfMemory` when the device cannot hold another).
pub struct Conversation {
    session: Session,
    draft_model: Option<DraftModel>,
    /// One drafter per method used, most recent last (at most [`KEPT_DRAFTERS`]): a method's
    /// state (a suffix trie of earlier outputs, a recycling table) survives generations with
    /// other methods in between, as a bench that cycles through methods needs.
    drafters: Vec<(MethodSpec, Box<dyn Drafter>)>,
    verification: Verification,
    /// The staging buffer every step's readback goes through.
    readback: Readback,
    /// Contrastive decoding's amateur: a session over the drafter model whose KV cache
    /// follows the target's row for row (made at the first contrastive generation).
    amateur: Option<Session>,
}

impl Conversation {
    fn open(gpu: &Gpu, target: &Arc<GpuModel>, options: &EngineOptions) -> Result<Self> {
        let session = Session::new(gpu, target.clone())?;
        let verification = Verification::new(gpu, &session, options.max_draft)?;
        Ok(Conversation {
            session,
            draft_model: None,
            drafters: Vec::new(),
            verification,
            readback: Readback::new(gpu, "step readback", Verification::readback_bytes()),
            amateur: None,
        })
    }

    /// The target's session: its KV cache holds the tokens of `session().cache`.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Use `drafter` for the generations whose method is `method` (until another method
    /// runs): a drafter from outside the registry, or one whose state the caller prepared.
    pub fn set_drafter(&mut self, method: MethodSpec, drafter: Box<dyn Drafter>) {
        self.drafters.retain(|(m, _)| *m != method);
        self.drafters.push((method, drafter));
        if self.drafters.len() > KEPT_DRAFTERS {
            self.drafters.remove(0);
        }
    }

    /// Forget the KV caches and what the drafters learned (the next generation prefills its
    /// whole prompt and drafts from nothing).
    pub fn reset(&mut self) {
        self.clear_cache();
        for (_, d) in &mut self.drafters {
            d.reset();
        }
    }

    /// Forget the KV caches (the next generation prefills its whole prompt) but keep what
    /// the drafters learned, as a server keeps it between requests.
    pub fn clear_cache(&mut self) {
        self.session.cache.clear();
        if let Some(d) = &mut self.draft_model {
            d.model.cache.clear();
        }
        if let Some(a) = &mut self.amateur {
            a.cache.clear();
        }
    }
}

/// A loaded target (and optional drafter model) on a GPU, with one conversation of its own.
pub struct Engine {
    pub gpu: Gpu,
    pub tokenizer: Tokenizer,
    /// The target's weights and pipelines, shared by every conversation.
    pub target: Arc<GpuModel>,
    draft: Option<Arc<GpuModel>>,
    options: EngineOptions,
    /// The tokenizer's grammar compiler, built at the first constrained generation.
    grammars: OnceLock<Arc<Grammars>>,
    /// The conversation [`Engine::generate`] continues.
    main: Conversation,
}

fn tokenizer_of(file: &ModelFile) -> Result<Tokenizer> {
    match file.gguf() {
        Some(g) => Tokenizer::from_gguf_metadata(&g.header().metadata),
        #[cfg(not(target_arch = "wasm32"))]
        None => {
            let path = match &file.source {
                crate::model::loader::ModelSource::Safetensors(s) => s.tokenizer_json_path(),
                _ => None,
            };
            match path {
                Some(p) => {
                    let bytes =
                        std::fs::read(&p).map_err(|e| Error::io(p.display().to_string(), e))?;
                    Tokenizer::from_tokenizer_json(&bytes)
                }
                _ => Err(Error::Tokenizer(
                    "the model directory has no tokenizer.json".into(),
                )),
            }
        }
        // In the browser models arrive as GGUF bytes; a safetensors directory (with its
        // tokenizer.json beside it) exists only on disk.
        #[cfg(target_arch = "wasm32")]
        None => Err(Error::Unsupported(
            "in the browser tandem loads GGUF files (safetensors needs a tokenizer.json from disk)"
                .into(),
        )),
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Turns each step's emitted tokens into output, text and events, applying the stop rules.
/// Text that could be the start of a stop string is held back until the next tokens show
/// whether it is (then it is cut with the stop string) or not (then it is released), so no
/// part of a stop string is ever streamed.
struct Emitter<'t> {
    tokenizer: &'t Tokenizer,
    detok: Detokenizer,
    max_tokens: usize,
    stop: &'t [String],
    out: Vec<u32>,
    /// The text released so far (streamed in events).
    text: String,
    /// Decoded text not yet released: a proper prefix of some stop string.
    held: String,
    stop_reason: Option<StopReason>,
    ignore_eos: bool,
}

impl<'t> Emitter<'t> {
    fn new(tokenizer: &'t Tokenizer, opts: &'t GenerateOptions) -> Self {
        Emitter {
            tokenizer,
            detok: Detokenizer::new(tokenizer, true),
            max_tokens: opts.max_tokens,
            stop: &opts.stop,
            out: Vec::new(),
            text: String::new(),
            held: String::new(),
            stop_reason: None,
            ignore_eos: opts.ignore_eos,
        }
    }

    /// Bytes at the end of `pending` that begin some stop string (0 if none): the longest
    /// such suffix, starting at a char boundary.
    fn stop_prefix_len(&self, pending: &str) -> usize {
        let longest = self.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        (1..longest.min(pending.len() + 1))
            .rev()
            .filter(|&k| pending.is_char_boundary(pending.len() - k))
            .find(|&k| {
                let tail = &pending[pending.len() - k..];
                self.stop.iter().any(|s| s.len() > k && s.starts_with(tail))
            })
            .unwrap_or(0)
    }

    /// Emit `emitted` (the accepted draft tokens, then the target's own); returns the event
    /// and pushes the tokens taken onto `history`.
    fn emit(
        &mut self,
        emitted: &[u32],
        proposed: usize,
        drafter_seconds: Option<f64>,
        history: &mut Vec<u32>,
    ) -> Result<Event> {
        let drafted = emitted.len() - 1;
        let mut new_ids = Vec::new();
        let mut delta = String::new();
        let mut drafted_text = 0;
        for &id in emitted {
            if self.out.len() >= self.max_tokens {
                break;
            }
            self.out.push(id);
            history.push(id);
            new_ids.push(id);
            if !self.ignore_eos && self.tokenizer.is_eos(id) {
                self.stop_reason = Some(StopReason::Eos);
                break;
            }
            let mut pending = std::mem::take(&mut self.held);
            pending.push_str(&self.detok.push(id)?);
            // The earliest stop string in the pending text ends the generation there.
            let hit = self
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| pending.find(s.as_str()))
                .min();
            if let Some(at) = hit {
                delta.push_str(&pending[..at]);
                self.stop_reason = Some(StopReason::Stop);
                break;
            }
            let keep = self.stop_prefix_len(&pending);
            self.held = pending.split_off(pending.len() - keep);
            delta.push_str(&pending);
            if new_ids.len() <= drafted {
                drafted_text = delta.len();
            }
        }
        if self.stop_reason.is_none() && self.out.len() >= self.max_tokens {
            self.stop_reason = Some(StopReason::Length);
        }
        // At the end (length, EOS) held text was no stop string after all.
        if matches!(self.stop_reason, Some(StopReason::Length | StopReason::Eos)) {
            delta.push_str(&std::mem::take(&mut self.held));
        }
        self.text.push_str(&delta);
        Ok(Event::Tokens {
            drafted: drafted.min(new_ids.len()),
            ids: new_ids,
            drafted_text: drafted_text.min(delta.len()),
            text: delta,
            proposed,
            drafter_seconds,
        })
    }

    fn finish(mut self, mut stats: Stats) -> Result<Output> {
        if self.stop_reason != Some(StopReason::Stop) {
            // A cancelled generation's held text is released too.
            self.text.push_str(&std::mem::take(&mut self.held));
            self.text.push_str(&self.detok.finish()?);
        }
        stats.generated_tokens = self.out.len();
        stats.finish();
        Ok(Output {
            text: self.text,
            tokens: self.out,
            stop_reason: self.stop_reason,
            stats,
        })
    }
}

impl Engine {
    /// Load the target `file` onto `gpu`.
    pub fn new(gpu: Gpu, file: &ModelFile, options: EngineOptions) -> Result<Self> {
        let tokenizer = tokenizer_of(file)?;
        let max_draft = options.max_draft.min(MAX_STEP_TOKENS - 1);
        let options = EngineOptions {
            max_draft,
            ..options
        };
        let limits = ForwardLimits {
            max_ctx: options.max_ctx,
            max_t: MAX_STEP_TOKENS,
            max_logit_rows: max_draft + 1,
        };
        let target = Arc::new(GpuModel::load(&gpu, file, limits)?);
        let main = Conversation::open(&gpu, &target, &options)?;
        Ok(Engine {
            gpu,
            tokenizer,
            target,
            draft: None,
            options,
            grammars: OnceLock::new(),
            main,
        })
    }

    /// Load a drafter model (same tokenizer) for the drafter-model methods. A drafter whose
    /// token list differs from the target's is refused with `Error::Mismatch`.
    pub fn load_drafter(&mut self, file: &ModelFile) -> Result<()> {
        self.load_drafter_with(file, DrafterOptions::default())
    }

    /// [`Engine::load_drafter`] with options.
    pub fn load_drafter_with(&mut self, file: &ModelFile, options: DrafterOptions) -> Result<()> {
        if options.vocab == Some(0) {
            return Err(Error::Invalid(
                "a drafter vocabulary of 0 tokens cannot propose anything".into(),
            ));
        }
        let tok = tokenizer_of(file)?;
        self.tokenizer.check_same_vocab(&tok)?;
        if file.config.vocab_size != self.target.config.vocab_size {
            return Err(Error::Mismatch(format!(
                "the drafter's embedding has {} rows but the target's has {}; the token lists \
                 agree, but tandem compares logits row for row and needs equal vocabulary sizes",
                file.config.vocab_size, self.target.config.vocab_size
            )));
        }
        // The old drafter's memory goes first.
        self.main.draft_model = None;
        self.draft = None;
        let model = DraftModel::load_model(
            &self.gpu,
            file,
            self.target.limits.max_ctx,
            self.target.limits.max_logit_rows,
            options,
        )?;
        self.main.draft_model = Some(DraftModel::new(&self.gpu, model.clone())?);
        self.draft = Some(model);
        Ok(())
    }

    /// Use `drafter` for the generations of the engine's own conversation whose method is
    /// `method` (see [`Conversation::set_drafter`]).
    pub fn set_drafter(&mut self, method: MethodSpec, drafter: Box<dyn Drafter>) {
        self.main.set_drafter(method, drafter);
    }

    pub fn has_drafter(&self) -> bool {
        self.draft.is_some()
    }

    /// The target's session of the engine's own conversation.
    pub fn session(&self) -> &Session {
        &self.main.session
    }

    /// Open another conversation over the engine's models (its own KV caches and drafters;
    /// the weights are shared). `Error::OutOfMemory` when the device cannot hold it.
    pub fn conversation(&self) -> Result<Conversation> {
        let mut c = Conversation::open(&self.gpu, &self.target, &self.options)?;
        if let Some(d) = &self.draft {
            c.draft_model = Some(DraftModel::new(&self.gpu, d.clone())?);
        }
        Ok(c)
    }

    /// Forget the KV caches and what the drafters learned (the next generation prefills its
    /// whole prompt and drafts from nothing).
    pub fn reset(&mut self) {
        self.main.reset();
    }

    /// Forget the KV caches (the next generation prefills its whole prompt) but keep what
    /// the drafters learned, as a server keeps it between requests.
    pub fn clear_cache(&mut self) {
        self.main.clear_cache();
    }

    /// Blocking [`Engine::generate_async`] for native programs.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_event: impl FnMut(&Event) -> bool,
    ) -> Result<Output> {
        pollster::block_on(self.generate_async(prompt, opts, on_event))
    }

    /// Generate after `prompt` (token ids) in the engine's own conversation, calling
    /// `on_event` as tokens arrive; `on_event` returns false to cancel. KV rows of a previous
    /// generation are reused for the longest common prefix of its tokens and `prompt`.
    pub async fn generate_async(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_event: impl FnMut(&Event) -> bool,
    ) -> Result<Output> {
        Models {
            gpu: &self.gpu,
            tokenizer: &self.tokenizer,
            target: &self.target,
            draft: self.draft.as_ref(),
            options: &self.options,
            grammars: &self.grammars,
        }
        .generate(&mut self.main, prompt, opts, on_event)
        .await
    }

    /// Blocking [`Engine::generate_in_async`] for native programs.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_in(
        &self,
        conversation: &mut Conversation,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_event: impl FnMut(&Event) -> bool,
    ) -> Result<Output> {
        pollster::block_on(self.generate_in_async(conversation, prompt, opts, on_event))
    }

    /// [`Engine::generate_async`] in `conv`, a conversation opened by [`Engine::conversation`].
    pub async fn generate_in_async(
        &self,
        conv: &mut Conversation,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_event: impl FnMut(&Event) -> bool,
    ) -> Result<Output> {
        self.models().generate(conv, prompt, opts, on_event).await
    }

    /// The target tokenizer's grammar compiler (built at the first call or the first
    /// constrained generation, then shared): a server checks a request's constraint with it
    /// before it answers (an invalid schema, regex or grammar is `Error::Invalid`).
    pub fn grammars(&self) -> Result<Arc<Grammars>> {
        self.models().grammars()
    }

    fn models(&self) -> Models<'_> {
        Models {
            gpu: &self.gpu,
            tokenizer: &self.tokenizer,
            target: &self.target,
            draft: self.draft.as_ref(),
            options: &self.options,
            grammars: &self.grammars,
        }
    }
}

/// What a generation reads of the engine (borrowed apart from the conversation it writes).
struct Models<'e> {
    gpu: &'e Gpu,
    tokenizer: &'e Tokenizer,
    target: &'e Arc<GpuModel>,
    draft: Option<&'e Arc<GpuModel>>,
    options: &'e EngineOptions,
    grammars: &'e OnceLock<Arc<Grammars>>,
}

impl Models<'_> {
    /// The target tokenizer's grammar compiler (built at the first call, then shared).
    fn grammars(&self) -> Result<Arc<Grammars>> {
        if let Some(g) = self.grammars.get() {
            return Ok(g.clone());
        }
        let g = Arc::new(Grammars::new(self.tokenizer)?);
        // Another thread may have set it meanwhile: either compiler is the same.
        Ok(self.grammars.get_or_init(|| g).clone())
    }

    /// `c` compiled for the target's tokenizer.
    fn constrain(&self, c: &Constraint) -> Result<Constrained> {
        self.grammars()?.compile(c)
    }

    async fn generate(
        &self,
        conv: &mut Conversation,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_event: impl FnMut(&Event) -> bool,
    ) -> Result<Output> {
        if !Arc::ptr_eq(conv.session.model(), self.target) {
            return Err(Error::Invalid(
                "the conversation was opened on another engine's model".into(),
            ));
        }
        if prompt.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        let ctx = self.target.limits.max_ctx;
        if prompt.len() + opts.max_tokens > ctx {
            return Err(Error::Context(format!(
                "prompt of {} tokens + {} new tokens exceeds the context of {ctx} tokens",
                prompt.len(),
                opts.max_tokens
            )));
        }
        // The conversation's drafter-model session follows the engine's drafter model.
        let current = conv.draft_model.as_ref().map(|d| d.model.model().clone());
        match (self.draft, current) {
            (Some(d), Some(c)) if Arc::ptr_eq(d, &c) => {}
            (Some(d), _) => {
                conv.draft_model = None;
                conv.draft_model = Some(DraftModel::new(self.gpu, (*d).clone())?);
            }
            (None, _) => conv.draft_model = None,
        }
        // Contrastive: the amateur's session over the drafter model.
        if opts.contrastive.is_some() {
            let Some(d) = self.draft else {
                return Err(Error::Invalid(
                    "contrastive decoding needs a drafter model as the amateur (load_drafter, \
                     --drafter)"
                        .into(),
                ));
            };
            if !conv
                .amateur
                .as_ref()
                .is_some_and(|a| Arc::ptr_eq(a.model(), d))
            {
                conv.amateur = None;
                conv.amateur = Some(Session::new(self.gpu, (*d).clone())?);
            }
        }
        let Conversation {
            session: target,
            draft_model,
            drafters,
            verification,
            readback,
            amateur,
        } = conv;
        let mut amateur = match opts.contrastive {
            Some(_) => amateur.as_mut(),
            None => None,
        };
        let gpu = self.gpu;
        // Each method's drafter stays across generations (most recently used last).
        match drafters.iter().position(|(m, _)| *m == opts.method) {
            Some(i) => {
                let d = drafters.remove(i);
                drafters.push(d);
            }
            None => {
                drafters.push((opts.method.clone(), opts.method.drafter()));
                if drafters.len() > KEPT_DRAFTERS {
                    drafters.remove(0);
                }
            }
        }
        let Some((_, drafter)) = drafters.last_mut() else {
            return Err(Error::Invalid("no drafter for the method".into()));
        };
        if drafter.needs_model() && draft_model.is_none() {
            return Err(Error::Invalid(format!(
                "method {} needs a drafter model (load_drafter, --drafter)",
                opts.method.name()
            )));
        }
        verification.set_sampling(gpu, opts.sampling.as_ref())?;
        verification.set_top_k(gpu, target, drafter.target_top_k())?;
        let mut stats = Stats {
            method: opts.method.name(),
            prompt_tokens: prompt.len(),
            drafter_seconds: Some(0.0),
            ..Default::default()
        };
        let t0 = seconds();
        // Reuse the cached prefix; prefill the rest of the prompt but its last token, which
        // is the first step's root.
        let reuse = common_prefix(&target.cache, &prompt[..prompt.len() - 1]);
        stats.reused_prompt_tokens = reuse;
        let head = &prompt[reuse..prompt.len() - 1];
        if !head.is_empty() {
            target.prefill(gpu, head, reuse)?;
        }
        target.cache.truncate(reuse);
        target.cache.extend_from_slice(head);
        // The amateur's cache holds what the target's does (its own reuse, the rest prefilled),
        // and verification compacts it like the target's.
        match (amateur.as_deref_mut(), opts.contrastive) {
            (Some(a), Some(p)) => {
                let reuse = common_prefix(&a.cache, &target.cache);
                let head = &target.cache[reuse..];
                if !head.is_empty() {
                    a.prefill(gpu, head, reuse)?;
                }
                a.cache.truncate(reuse);
                a.cache.extend_from_slice(head);
                target.set_contrastive(gpu, Some((a, p)))?;
                verification.set_follower(gpu, Some(a))?;
            }
            _ => {
                target.set_contrastive(gpu, None)?;
                verification.set_follower(gpu, None)?;
            }
        }
        let mut history: Vec<u32> = prompt.to_vec();
        // The drafter begins here (a drafter model prefills the prompt: DESIGN.md's loop), so
        // its cost counts as prefill rather than landing on the first step of the decode phase.
        drafter.begin(&mut DraftContext {
            gpu,
            model: draft_model.as_mut(),
            committed: &target.cache,
            history: &history,
            target_tokens: target.tokens_buffer(),
            passes: 0,
        })?;
        // Constrained: the grammar's state follows the emitted tokens; the target's logits
        // are masked with its token sets from the first step on.
        let mut constrained = match &opts.constraint {
            Some(c) => Some(self.constrain(c)?),
            None => None,
        };
        target.set_logit_mask(gpu, constrained.is_some())?;
        let mut emitter = Emitter::new(self.tokenizer, opts);
        // Prefill ends here (once its GPU work is done); decoding (every step, the first one
        // included) starts.
        gpu.finish().await?;
        stats.prefill_seconds = seconds() - t0;
        let t_decode = seconds();
        let mut budget = Budget::new(drafter.max_budget().min(self.options.max_draft));
        while emitter.stop_reason.is_none() {
            let want = if opts.adaptive {
                budget.choose()
            } else {
                budget.max()
            };
            let want = want.min((opts.max_tokens - emitter.out.len()).saturating_sub(1));
            let step_start = seconds();
            let root = history[history.len() - 1];
            let mut ctx = DraftContext {
                gpu,
                model: draft_model.as_mut(),
                committed: &target.cache,
                history: &history,
                target_tokens: target.tokens_buffer(),
                passes: 0,
            };
            // Tokens the grammar forces are this step's draft (the drafter sits it out).
            let forced = match (&mut constrained, opts.forced_drafts) {
                (Some(c), true) => {
                    let room = (opts.max_tokens - emitter.out.len()).saturating_sub(1);
                    c.forced(self.options.max_draft.min(room))
                }
                _ => Vec::new(),
            };
            // Draft: host tokens, GPU work in this step's encoder, or reads first.
            let mut enc = gpu.encoder("step");
            let mut proposal = if !forced.is_empty() {
                Proposal::Tree(DraftTree::chain(&forced))
            } else if want == 0 {
                Proposal::Tree(DraftTree::empty())
            } else {
                verification.mark_start(&mut enc);
                drafter.propose(&mut ctx, &mut enc, want)?
            };
            while let Proposal::Read(reads) = proposal {
                let parts: Vec<_> = reads.iter().map(|(b, o, n)| (b, *o, *n)).collect();
                let read = readback.read(gpu, enc, &parts).await?;
                enc = gpu.encoder("draft level");
                proposal = drafter.resume(&mut ctx, &mut enc, &read)?;
            }
            // The token sets and the amateur's batch follow the draft's tokens: a chain
            // drafted on the GPU comes back first (one more readback per step, only when
            // constrained or contrastive).
            if constrained.is_some() || opts.contrastive.is_some() {
                if let Proposal::Gpu { len, tokens } = proposal {
                    let read = readback
                        .read(gpu, enc, &[(&tokens, 0, 4 * len as u64)])
                        .await?;
                    enc = gpu.encoder("host-drafted step");
                    let ids: Vec<u32> = bytemuck::pod_collect_to_vec(&read[0]);
                    proposal = Proposal::Tree(DraftTree::chain(&ids[..len.min(ids.len())]));
                }
            }
            // A drafter's draft continues with what the grammar forces after its deepest path
            // (a JSON value drafted, then the punctuation and the next key).
            let mut extended = 0;
            if let (Some(c), true, true, Proposal::Tree(tree)) = (
                &mut constrained,
                opts.forced_drafts,
                forced.is_empty(),
                &mut proposal,
            ) {
                let room = self
                    .options
                    .max_draft
                    .min((opts.max_tokens - emitter.out.len()).saturating_sub(1))
                    .saturating_sub(tree.len());
                let depths = tree.depths();
                if let Some(leaf) = (0..tree.len()).max_by_key(|&i| (depths[i], usize::MAX - i)) {
                    let mut path = vec![leaf];
                    while let Some(p) = tree.parents[path[path.len() - 1]] {
                        path.push(p);
                    }
                    let tokens: Vec<u32> = path.iter().rev().map(|&i| tree.tokens[i]).collect();
                    let mut parent = leaf;
                    for t in c.forced_after(&tokens, room)? {
                        parent = tree.push(t, Some(parent), 1.0)?;
                        extended += 1;
                    }
                }
            }
            // Contrastive: the amateur's forward over the same batch, first in the step.
            if let (Some(a), Proposal::Tree(tree)) = (amateur.as_deref(), &proposal) {
                tree.validate()?;
                let tokens = tree.batch_tokens(root);
                let n_past = target.cache.len();
                a.write_inputs(
                    gpu,
                    &tokens,
                    &tree.batch_positions(n_past as u32),
                    &tree.batch_mask(a.mask_words()),
                    n_past,
                    tokens.len(),
                );
                a.encode(&mut enc, tokens.len(), 0..tokens.len())?;
            }
            if let Some(c) = &mut constrained {
                if let Proposal::Tree(tree) = &proposal {
                    let t_mask = seconds();
                    let masks = c.masks(&tree.tokens, &tree.parents, target.head_rows())?;
                    target.write_logit_mask(gpu, &masks)?;
                    stats.mask_seconds += seconds() - t_mask;
                }
            }
            let gpu_draft = matches!(proposal, Proposal::Gpu { .. });
            let drafting = seconds() - step_start;
            // Verify: the target's pass over [root, draft…] and acceptance, same submit.
            let pending =
                verification.encode(gpu, target, &mut enc, proposal, root, target.cache.len())?;
            let parts = verification.reads(&pending);
            let got = readback.read(gpu, enc, &parts).await?;
            let step = verification.finish(pending, &got)?;
            if let Some(c) = &mut constrained {
                c.accept(&step.emitted)?;
            }
            drafter.observe(
                &mut ctx,
                &Verdict {
                    batch: &step.batch,
                    parents: &step.parents,
                    emitted: &step.emitted,
                    target_top_k: step.target_top_k.as_deref(),
                },
            )?;
            // Accept: the root and the accepted rows are in the KV cache now (compacted).
            let (proposed, accepted) = (step.batch.len() - 1, step.emitted.len() - 1);
            let drafter_seconds = match (want, gpu_draft) {
                (0, _) => Some(0.0),
                (_, true) => step.drafter_seconds,
                (_, false) => Some(drafting),
            };
            stats.drafter_passes += ctx.passes;
            stats.drafter_seconds = stats
                .drafter_seconds
                .zip(drafter_seconds)
                .map(|(a, b)| a + b);
            stats.target_passes += 1;
            stats.drafted += proposed;
            stats.accepted += accepted;
            stats.forced += extended;
            if forced.is_empty() {
                // The drafter's own part of the draft (the grammar's continuation aside).
                let own = proposed - extended;
                budget.record(own, accepted.min(own), seconds() - step_start);
            } else {
                // A forced draft says nothing of the drafter's acceptance.
                stats.forced += proposed;
            }
            target.cache.push(root);
            target.cache.extend_from_slice(&step.emitted[..accepted]);
            if let Some(a) = amateur.as_deref_mut() {
                a.cache.push(root);
                a.cache.extend_from_slice(&step.emitted[..accepted]);
            }
            // Emit.
            let ev = emitter.emit(&step.emitted, proposed, drafter_seconds, &mut history)?;
            if !on_event(&ev) && emitter.stop_reason.is_none() {
                emitter.stop_reason = Some(StopReason::Cancelled);
            }
        }
        stats.decode_seconds = seconds() - t_decode;
        emitter.finish(stats)
    }
}
