//! `Engine`: a target model (and optionally a drafter model) on one GPU with the tokenizer,
//! and generation that streams events.
//!
//! Every step is the speculative loop of DESIGN.md: a drafter proposes a tree (the empty tree
//! for plain decoding), the target verifies `[root, tree…]` in one forward, the longest path
//! matching the target's greedy choice is accepted plus the target's own next token, and the
//! KV rows of the accepted path are compacted to follow the prefix. Plain decoding is the
//! same loop with no drafter, so every method shares one code path.
//!
//! With a drafter model, the whole step — k drafter passes, each feeding its argmax to the
//! next on the GPU, and the target's verification pass — is one command buffer with one
//! readback at the end (the draft tokens and the target's choices: a few u32s).

use crate::gpu::{seconds, Gpu};
use crate::kernels::kv_compact::KvCompact;
use crate::kernels::{Bound, Step};
use crate::model::loader::ModelFile;
use crate::model::transformer::{ForwardLimits, Transformer};
use crate::spec::budget::Budget;
use crate::spec::tree::{verify_greedy, DraftTree};
use crate::spec::{Drafter, PromptLookup};
use crate::tokenizer::{Detokenizer, Tokenizer};
use crate::{Error, Result};

/// Most tokens one step verifies (root + draft nodes).
pub const MAX_STEP_TOKENS: usize = 64;

/// How drafts are made.
#[derive(Clone, Debug, Default)]
pub enum Method {
    /// Plain decoding (the empty tree every step).
    #[default]
    Plain,
    /// Prompt lookup with at most `budget` draft nodes per step.
    Lookup { lookup: PromptLookup, budget: usize },
    /// The drafter model drafts a chain of at most `k` tokens per step (SpS).
    Draft { k: usize },
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Plain => "plain",
            Method::Lookup { .. } => "lookup",
            Method::Draft { .. } => "sps",
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// Stop when the text ends with one of these (the stop string is kept out of the text).
    pub stop: Vec<String>,
    pub method: Method,
    /// Choose the draft size each step from measured acceptance and step times, backing off
    /// to plain decoding where drafting does not pay. On by default.
    pub adaptive: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            stop: vec![],
            method: Method::Plain,
            adaptive: true,
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
    },
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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

/// The drafter model with its own KV cache and the buffers that chain its passes on the GPU.
struct DraftModel {
    model: Transformer,
    /// Tokens whose KV rows are valid in the drafter's cache.
    cache: Vec<u32>,
    /// `[MAX_STEP_TOKENS]` Step values for chained passes, copied into the step uniform.
    steps: wgpu::Buffer,
    /// `[MAX_STEP_TOKENS]` positions for chained passes.
    positions: wgpu::Buffer,
    /// `[MAX_STEP_TOKENS]` the drafted tokens.
    out: wgpu::Buffer,
}

/// A loaded target (and optional drafter) on a GPU.
pub struct Engine {
    pub gpu: Gpu,
    pub tokenizer: Tokenizer,
    pub target: Transformer,
    drafter: Option<DraftModel>,
    options: EngineOptions,
    compact: KvCompact,
    compact_bound: Vec<Bound>,
    keep: wgpu::Buffer,
    n_keep: wgpu::Buffer,
    /// `[2 * MAX_STEP_TOKENS]` u32: what a step reads back.
    result: wgpu::Buffer,
    /// Tokens whose KV rows are valid in the target's cache (reused by the next generation
    /// when its prompt starts with them: multi-turn chat prefills only the new part).
    cache: Vec<u32>,
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
        let target = Transformer::load(&gpu, file, limits)?;
        let c = &target.config;
        let compact = KvCompact::new(
            &gpu,
            c.n_kv_heads as u32,
            c.head_dim as u32,
            target.limits.max_ctx as u32,
        )?;
        let keep = gpu.storage("keep", 4 * MAX_STEP_TOKENS as u64)?;
        let n_keep = gpu.storage("n_keep", 4)?;
        let result = gpu.storage("step result", 8 * MAX_STEP_TOKENS as u64)?;
        let compact_bound = target
            .kv_caches()
            .map(|(k, v)| compact.bind(&gpu, target.step_buffer(), &keep, &n_keep, k, v))
            .collect::<Result<Vec<_>>>()?;
        Ok(Engine {
            gpu,
            tokenizer,
            target,
            drafter: None,
            options,
            compact,
            compact_bound,
            keep,
            n_keep,
            result,
            cache: Vec::new(),
        })
    }

    /// Load a drafter model (same tokenizer) for `Method::Draft`. A drafter whose token list
    /// differs from the target's is refused with `Error::Mismatch`.
    pub fn load_drafter(&mut self, file: &ModelFile) -> Result<()> {
        let tok = tokenizer_of(file)?;
        self.tokenizer.check_same_vocab(&tok)?;
        if file.config.vocab_size != self.target.config.vocab_size {
            return Err(Error::Mismatch(format!(
                "the drafter's embedding has {} rows but the target's has {}; the token lists \
                 agree, but tandem compares logits row for row and needs equal vocabulary sizes",
                file.config.vocab_size, self.target.config.vocab_size
            )));
        }
        let limits = ForwardLimits {
            max_ctx: self.target.limits.max_ctx,
            max_t: MAX_STEP_TOKENS,
            max_logit_rows: 1,
        };
        let model = Transformer::load(&self.gpu, file, limits)?;
        let n = MAX_STEP_TOKENS as u64;
        self.drafter = Some(DraftModel {
            model,
            cache: Vec::new(),
            steps: self.gpu.storage("draft steps", 16 * n)?,
            positions: self.gpu.storage("draft positions", 4 * n)?,
            out: self.gpu.storage("draft tokens", 4 * n)?,
        });
        Ok(())
    }

    pub fn has_drafter(&self) -> bool {
        self.drafter.is_some()
    }

    /// Forget the KV caches (the next generation prefills its whole prompt).
    pub fn reset(&mut self) {
        self.cache.clear();
        if let Some(d) = &mut self.drafter {
            d.cache.clear();
        }
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

    /// Generate after `prompt` (token ids), calling `on_event` as tokens arrive; `on_event`
    /// returns false to cancel. KV rows of a previous generation are reused for the longest
    /// common prefix of its tokens and `prompt`.
    pub async fn generate_async(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_event: impl FnMut(&Event) -> bool,
    ) -> Result<Output> {
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
        if matches!(opts.method, Method::Draft { .. }) && self.drafter.is_none() {
            return Err(Error::Invalid(
                "the draft-model method needs a drafter (load_drafter)".into(),
            ));
        }
        let mut stats = Stats {
            prompt_tokens: prompt.len(),
            ..Default::default()
        };
        let t0 = seconds();
        // Reuse the cached prefix; prefill the rest of the prompt but its last token, which
        // is the first step's root.
        let reuse = common_prefix(&self.cache, &prompt[..prompt.len() - 1]);
        stats.reused_prompt_tokens = reuse;
        let head = &prompt[reuse..prompt.len() - 1];
        if !head.is_empty() {
            self.target.prefill(&self.gpu, head, reuse)?;
        }
        self.cache.truncate(reuse);
        self.cache.extend_from_slice(head);
        let mut root = prompt[prompt.len() - 1];
        let mut history: Vec<u32> = prompt.to_vec();
        let mut out: Vec<u32> = Vec::new();
        let mut detok = Detokenizer::new(&self.tokenizer, true);
        let mut text = String::new();
        let mut stop_reason = None;
        let mut t_decode = None;
        let max_draft = self.options.max_draft;
        let mut budget = Budget::new(match &opts.method {
            Method::Plain => 0,
            Method::Lookup { budget, .. } => (*budget).min(max_draft),
            Method::Draft { k } => (*k).min(max_draft),
        });
        while stop_reason.is_none() {
            let left = opts.max_tokens - out.len();
            let want = if opts.adaptive {
                budget.choose()
            } else {
                budget.max()
            };
            let want = want.min(left.saturating_sub(1));
            let step_start = seconds();
            let n_past = self.cache.len();
            let (tree, argmax) = match &opts.method {
                Method::Plain => self.verify_tree(DraftTree::empty(), root, n_past).await?,
                Method::Lookup { lookup, .. } => {
                    let tree = lookup.propose(&history, want);
                    self.verify_tree(tree, root, n_past).await?
                }
                Method::Draft { .. } if want == 0 => {
                    self.verify_tree(DraftTree::empty(), root, n_past).await?
                }
                Method::Draft { .. } => {
                    stats.drafter_passes += want;
                    self.draft_and_verify_chain(root, want).await?
                }
            };
            if t_decode.is_none() {
                stats.prefill_seconds = seconds() - t0;
                t_decode = Some(seconds());
            }
            stats.target_passes += 1;
            let (keep, bonus) = verify_greedy(&tree, &argmax);
            let tokens = tree.batch_tokens(root);
            stats.drafted += tree.len();
            stats.accepted += keep.len() - 1;
            budget.record(tree.len(), keep.len() - 1, seconds() - step_start);
            if keep.iter().enumerate().any(|(j, &r)| r != j) {
                self.compact_kv(&keep)?;
            }
            self.cache.extend(keep.iter().map(|&r| tokens[r]));
            let mut emitted: Vec<u32> = keep[1..].iter().map(|&r| tokens[r]).collect();
            emitted.push(bonus);
            let drafted = emitted.len() - 1;
            let mut new_ids = Vec::new();
            let mut delta = String::new();
            let mut drafted_text = 0;
            for id in emitted {
                if out.len() >= opts.max_tokens {
                    break;
                }
                out.push(id);
                history.push(id);
                new_ids.push(id);
                if self.tokenizer.is_eos(id) {
                    stop_reason = Some(StopReason::Eos);
                    break;
                }
                delta.push_str(&detok.push(id)?);
                if new_ids.len() <= drafted {
                    drafted_text = delta.len();
                }
                let full = format!("{text}{delta}");
                if let Some(s) = opts
                    .stop
                    .iter()
                    .find(|s| !s.is_empty() && full.ends_with(s.as_str()))
                {
                    delta = full[text.len()..full.len() - s.len()].to_string();
                    stop_reason = Some(StopReason::Stop);
                    break;
                }
            }
            if stop_reason.is_none() && out.len() >= opts.max_tokens {
                stop_reason = Some(StopReason::Length);
            }
            text.push_str(&delta);
            root = history[history.len() - 1];
            let ev = Event::Tokens {
                drafted: drafted.min(new_ids.len()),
                ids: new_ids,
                drafted_text: drafted_text.min(delta.len()),
                text: delta,
                proposed: tree.len(),
            };
            if !on_event(&ev) && stop_reason.is_none() {
                stop_reason = Some(StopReason::Cancelled);
            }
        }
        if stop_reason != Some(StopReason::Stop) {
            text.push_str(&detok.finish()?);
        }
        stats.generated_tokens = out.len();
        stats.decode_seconds = t_decode.map(|t| seconds() - t).unwrap_or(0.0);
        stats.finish();
        Ok(Output {
            text,
            tokens: out,
            stop_reason,
            stats,
        })
    }

    /// One target pass over `[root, tree…]`; returns the tree and the target's argmax per row.
    async fn verify_tree(
        &self,
        tree: DraftTree,
        root: u32,
        n_past: usize,
    ) -> Result<(DraftTree, Vec<u32>)> {
        let tokens = tree.batch_tokens(root);
        let t = tokens.len();
        let mask = tree.batch_mask(self.target.mask_words());
        self.target.forward(
            &self.gpu,
            &tokens,
            &tree.batch_positions(n_past as u32),
            &mask,
            n_past,
            0..t,
        )?;
        let argmax = self.target.read_argmax(&self.gpu, t).await?;
        Ok((tree, argmax))
    }

    /// The drafter drafts a greedy chain of `k` tokens and the target verifies it, all in one
    /// command buffer: each drafter pass's argmax is copied into the next pass's input and
    /// into the target's batch on the GPU. One readback: the chain and the target's argmax.
    async fn draft_and_verify_chain(
        &mut self,
        root: u32,
        k: usize,
    ) -> Result<(DraftTree, Vec<u32>)> {
        let gpu = &self.gpu;
        let d = self
            .drafter
            .as_mut()
            .ok_or_else(|| Error::Invalid("no drafter".into()))?;
        let n_past = self.cache.len();
        // Bring the drafter's cache up to the target's committed tokens.
        let c = common_prefix(&d.cache, &self.cache);
        let mut feed: Vec<u32> = self.cache[c..].to_vec();
        // Long gaps (the first step after a prompt) are prefilled in chunks first.
        let max_t = d.model.limits.max_t;
        if feed.len() + 1 > max_t {
            let pre = feed.len() + 1 - max_t;
            d.model.prefill(gpu, &feed[..pre], c)?;
            feed.drain(..pre);
        }
        let start = n_past - feed.len();
        feed.push(root);
        let t0 = feed.len();
        let positions: Vec<u32> = (start..start + t0).map(|p| p as u32).collect();
        d.model
            .write_inputs(gpu, &feed, &positions, &d.model.causal_mask(t0), start, 1);
        let chain_steps: Vec<Step> = (0..k).map(|i| Step::new(1, (n_past + i) as u32)).collect();
        let chain_pos: Vec<u32> = (0..k).map(|i| (n_past + i) as u32).collect();
        gpu.queue
            .write_buffer(&d.steps, 0, bytemuck::cast_slice(&chain_steps));
        gpu.queue
            .write_buffer(&d.positions, 0, bytemuck::cast_slice(&chain_pos));
        // The target's batch: root, then the chain (filled in by copies below).
        let mut batch = vec![0u32; k + 1];
        batch[0] = root;
        let tpos: Vec<u32> = (0..=k).map(|i| (n_past + i) as u32).collect();
        self.target.write_inputs(
            gpu,
            &batch,
            &tpos,
            &self.target.causal_mask(k + 1),
            n_past,
            k + 1,
        );
        let mut enc = gpu.encoder("draft chain + verify");
        d.model.encode(&mut enc, t0, t0 - 1..t0)?;
        let am = &d.model.argmax_ids;
        for i in 0..k {
            enc.copy_buffer_to_buffer(am, 0, &d.out, 4 * i as u64, 4);
            enc.copy_buffer_to_buffer(am, 0, self.target.tokens_buffer(), 4 * (i + 1) as u64, 4);
            if i + 1 < k {
                enc.copy_buffer_to_buffer(
                    &d.steps,
                    16 * (i + 1) as u64,
                    d.model.step_buffer(),
                    0,
                    16,
                );
                enc.copy_buffer_to_buffer(
                    &d.positions,
                    4 * (i + 1) as u64,
                    d.model.positions_buffer(),
                    0,
                    4,
                );
                enc.copy_buffer_to_buffer(am, 0, d.model.tokens_buffer(), 0, 4);
                d.model.encode(&mut enc, 1, 0..1)?;
            }
        }
        self.target.encode(&mut enc, k + 1, 0..k + 1)?;
        enc.copy_buffer_to_buffer(&d.out, 0, &self.result, 0, 4 * k as u64);
        enc.copy_buffer_to_buffer(
            &self.target.argmax_ids,
            0,
            &self.result,
            4 * k as u64,
            4 * (k + 1) as u64,
        );
        gpu.submit(enc);
        let got: Vec<u32> = gpu.read_vec(&self.result, 2 * k + 1).await?;
        // The drafter's cache now holds the committed tokens, the root and d1..d(k-1).
        d.cache.truncate(c);
        d.cache.extend_from_slice(&self.cache[c..]);
        d.cache.push(root);
        d.cache.extend_from_slice(&got[..k - 1]);
        Ok((DraftTree::chain(&got[..k]), got[k..].to_vec()))
    }

    /// Move the accepted batch rows `keep` of the last step to follow the prefix, in every
    /// layer's KV cache (the step uniform still holds that step's `n_past` and `t`).
    fn compact_kv(&self, keep: &[usize]) -> Result<()> {
        let keep32: Vec<u32> = keep.iter().map(|&r| r as u32).collect();
        self.gpu
            .queue
            .write_buffer(&self.keep, 0, bytemuck::cast_slice(&keep32));
        self.gpu
            .queue
            .write_buffer(&self.n_keep, 0, bytemuck::bytes_of(&(keep32.len() as u32)));
        let mut enc = self.gpu.encoder("kv compact");
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for b in &self.compact_bound {
                self.compact.encode(&mut pass, b);
            }
        }
        self.gpu.submit(enc);
        Ok(())
    }
}

/// A host-side drafter the engine can drive generically (prompt lookup); the model drafter
/// is fused into the GPU step instead (see [`Engine::load_drafter`]).
impl Drafter for PromptLookup {
    fn propose(&mut self, history: &[u32], budget: usize) -> DraftTree {
        PromptLookup::propose(self, history, budget)
    }
}
