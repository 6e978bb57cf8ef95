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

use crate::gpu::{seconds, Gpu, Readback};
use crate::kernels::kv_compact::KvCompact;
use crate::kernels::sample::{SampleBound, Sampler};
use crate::kernels::topk::TopK;
use crate::kernels::verify::{Draft, Verifier, VerifyBound, VerifyBuffers};
use crate::kernels::{Bound, Step};
use crate::model::loader::ModelFile;
use crate::model::transformer::{ForwardLimits, Transformer};
use crate::speculative::budget::Budget;
use crate::speculative::tree::DraftTree;
use crate::speculative::{Drafter, PromptLookup};
use crate::tokenizer::{Detokenizer, Tokenizer};
use crate::{Error, Result};

/// Sampling parameters (temperature, top-k, top-p, seed): the faces set them through the
/// engine, which hands them to the GPU sampler.
pub use crate::kernels::sample::SampleParams;

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
    /// The drafter model grows a tree of at most `nodes` nodes per step, EAGLE-2 style: each
    /// drafter pass expands the most probable nodes of the newest level by their top-K
    /// children and keeps the `width` best by cumulative probability.
    DraftTree { nodes: usize, width: usize },
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Plain => "plain",
            Method::Lookup { .. } => "lookup",
            Method::Draft { .. } => "sps",
            Method::DraftTree { .. } => "tree",
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
    /// Sample with temperature / top-k / top-p and a seed (lossless speculative sampling for
    /// every method); `None` = greedy.
    pub sampling: Option<SampleParams>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            stop: vec![],
            method: Method::Plain,
            adaptive: true,
            sampling: None,
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
    /// Seconds spent drafting, over all steps (see [`Event::Tokens`]); None where a step
    /// could not be timed.
    pub drafter_seconds: Option<f64>,
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

/// What one step produced: how many nodes were drafted and the emitted tokens (the accepted
/// draft tokens, then the target's own bonus/correction token).
struct StepOutcome {
    drafted: usize,
    emitted: Vec<u32>,
    /// Seconds of drafting measured inside the step (a drafter chain's GPU time).
    drafter_seconds: Option<f64>,
}

/// Timestamp queries around a drafter chain: start, drafter done, verification done.
struct ChainTimer {
    queries: wgpu::QuerySet,
    /// The resolved `[3]` u64 ticks.
    resolved: wgpu::Buffer,
    /// Nanoseconds per tick.
    period_ns: f64,
}

impl ChainTimer {
    /// Present where the device writes timestamps between passes.
    fn new(gpu: &Gpu) -> Option<ChainTimer> {
        let need =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        if !gpu.device.features().contains(need) {
            return None;
        }
        Some(ChainTimer {
            queries: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("drafter chain timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 3,
            }),
            resolved: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("drafter chain ticks"),
                size: 24,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            period_ns: gpu.queue.get_timestamp_period() as f64,
        })
    }

    /// Seconds between the first two timestamps (the drafter's part), from resolved ticks.
    fn drafter_seconds(&self, ticks: &[u8]) -> Option<f64> {
        let t: Vec<u64> = bytemuck::pod_collect_to_vec(ticks);
        (t.len() == 3 && t[1] >= t[0]).then(|| (t[1] - t[0]) as f64 * self.period_ns * 1e-9)
    }
}

/// The emitted tokens of a verification result `[n, bonus, tokens of keep[1..n]…, bonus]`.
fn emitted_of(result: &[u32]) -> Result<Vec<u32>> {
    let n = result.first().copied().unwrap_or(0) as usize;
    if n == 0 || result.len() < 2 + n {
        return Err(Error::Gpu(format!(
            "verification returned a malformed result (n = {n})"
        )));
    }
    Ok(result[2..2 + n].to_vec())
}

/// How a drafter model is loaded.
#[derive(Clone, Copy, Debug, Default)]
pub struct DrafterOptions {
    /// Draft only among the first `vocab` token ids (None: all). The drafter's output head
    /// then scores those rows alone, which makes each drafter pass cheaper; drafts stay
    /// verified by the target, so the output is unchanged (only acceptance can move).
    pub vocab: Option<usize>,
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
    topk: TopK,
    topk_bound: Bound,
    /// `[TREE_WIDTH, K]` ids and probabilities of the top-K of each expanded row.
    topk_ids: wgpu::Buffer,
    topk_probs: wgpu::Buffer,
}

impl DraftModel {
    /// Appends the top-K of the last pass's `rows` scored rows to `enc`, submits it and reads
    /// back their ids and probabilities (one readback).
    async fn read_topk(
        &self,
        gpu: &Gpu,
        readback: &Readback,
        mut enc: wgpu::CommandEncoder,
        rows: usize,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.topk.encode(&mut pass, &self.topk_bound, rows as u32)?;
        }
        let bytes = (4 * rows * TREE_BRANCH as usize) as u64;
        let parts = readback
            .read(
                gpu,
                enc,
                &[(&self.topk_ids, 0, bytes), (&self.topk_probs, 0, bytes)],
            )
            .await?;
        Ok((
            bytemuck::pod_collect_to_vec(&parts[0]),
            bytemuck::pod_collect_to_vec(&parts[1]),
        ))
    }

    /// Bring the drafter's cache up to the target's `committed` tokens and write the inputs of
    /// a pass over the tokens it lacks plus `root` (logits of its last row). Long gaps (the
    /// first step after a prompt) are prefilled in chunks first. Returns the length of the
    /// drafter's still-valid cache prefix and the pass's token count.
    fn feed(&mut self, gpu: &Gpu, committed: &[u32], root: u32) -> Result<(usize, usize)> {
        let c = common_prefix(&self.cache, committed);
        let mut feed: Vec<u32> = committed[c..].to_vec();
        let max_t = self.model.limits.max_t;
        if feed.len() + 1 > max_t {
            let pre = feed.len() + 1 - max_t;
            self.model.prefill(gpu, &feed[..pre], c)?;
            feed.drain(..pre);
        }
        let start = committed.len() - feed.len();
        feed.push(root);
        let t0 = feed.len();
        let positions: Vec<u32> = (start..start + t0).map(|p| p as u32).collect();
        let mask = self.model.causal_mask(t0);
        self.model
            .write_inputs(gpu, &feed, &positions, &mask, start, 1);
        Ok((c, t0))
    }
}

/// Most rows a tree-drafting pass expands, and the children considered per row.
const TREE_WIDTH: usize = 8;
const TREE_BRANCH: u32 = 4;

/// A loaded target (and optional drafter) on a GPU.
pub struct Engine {
    pub gpu: Gpu,
    pub tokenizer: Tokenizer,
    pub target: Transformer,
    drafter: Option<DraftModel>,
    options: EngineOptions,
    compact: KvCompact,
    compact_bound: Vec<Bound>,
    parents: wgpu::Buffer,
    verifier: Verifier,
    verify_greedy: VerifyBound,
    verify_sampling: VerifyBound,
    sampler: Sampler,
    sample_bound: SampleBound,
    /// Whether the current generation samples (else greedy).
    sampling: bool,
    _buffers: Vec<wgpu::Buffer>,
    /// `[2 * MAX_STEP_TOKENS]` u32: what a step reads back.
    result: wgpu::Buffer,
    /// The staging buffer every step's readback goes through.
    readback: Readback,
    /// Times the drafter's share of a chain step (None: the device has no timestamps).
    chain_timer: Option<ChainTimer>,
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
        let parents = gpu.storage("parents", 4 * MAX_STEP_TOKENS as u64)?;
        let result = gpu.storage("step result", 4 * (2 + 2 * MAX_STEP_TOKENS) as u64)?;
        let readback = Readback::new(&gpu, "step readback", result.size() + 24);
        let chain_timer = ChainTimer::new(&gpu);
        let v = target.config.vocab_size as u32;
        let verifier = Verifier::new(&gpu, v, MAX_STEP_TOKENS as u32)?;
        let bufs = VerifyBuffers {
            step: target.step_buffer(),
            tokens: target.tokens_buffer(),
            parents: &parents,
            keep: &keep,
            n_keep: &n_keep,
            result: &result,
        };
        let verify_greedy = verifier.bind_greedy(&gpu, &bufs, &target.argmax_ids)?;
        let rows = (max_draft + 1) as u64;
        let target_probs = gpu.storage("target probs", rows * v as u64 * 4)?;
        let sample_ids = gpu.storage("sample ids", rows * 4)?;
        let sampler = Sampler::with_draws(&gpu, v, 0)?;
        let sample_bound = sampler.bind_with_probs(
            &gpu,
            target.head_step_buffer(),
            &target.logits,
            &sample_ids,
            &target_probs,
        )?;
        // Drafts are deterministic proposals (prompt lookup, greedy drafter chains and
        // top-K trees), so speculative sampling verifies them with point-mass q (lossless).
        let verify_sampling =
            verifier.bind_sampling(&gpu, &bufs, &target_probs, Draft::OneHot, None)?;
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
            parents,
            verifier,
            verify_greedy,
            verify_sampling,
            sampler,
            sample_bound,
            sampling: false,
            _buffers: vec![keep, n_keep, target_probs, sample_ids],
            readback,
            chain_timer,
            result,
            cache: Vec::new(),
        })
    }

    /// Load a drafter model (same tokenizer) for `Method::Draft`. A drafter whose token list
    /// differs from the target's is refused with `Error::Mismatch`.
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
        let limits = ForwardLimits {
            max_ctx: self.target.limits.max_ctx,
            max_t: MAX_STEP_TOKENS,
            max_logit_rows: TREE_WIDTH,
        };
        let gpu = &self.gpu;
        let model = Transformer::load_with_head(gpu, file, limits, options.vocab)?;
        let n = MAX_STEP_TOKENS as u64;
        let topk = TopK::new(gpu, model.head_rows() as u32, TREE_BRANCH)?;
        let cells = (TREE_WIDTH as u64) * TREE_BRANCH as u64 * 4;
        let topk_ids = gpu.storage("draft topk ids", cells)?;
        let topk_probs = gpu.storage("draft topk probs", cells)?;
        let topk_bound = topk.bind(
            gpu,
            model.head_step_buffer(),
            &model.logits,
            &topk_ids,
            &topk_probs,
        )?;
        self.drafter = Some(DraftModel {
            model,
            cache: Vec::new(),
            steps: gpu.storage("draft steps", 16 * n)?,
            positions: gpu.storage("draft positions", 4 * n)?,
            out: gpu.storage("draft tokens", 4 * n)?,
            topk,
            topk_bound,
            topk_ids,
            topk_probs,
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
        if matches!(opts.method, Method::Draft { .. } | Method::DraftTree { .. })
            && self.drafter.is_none()
        {
            return Err(Error::Invalid(
                "the draft-model method needs a drafter (load_drafter)".into(),
            ));
        }
        self.sampling = opts.sampling.is_some();
        if let Some(p) = &opts.sampling {
            self.sampler.set_params(&self.gpu, p)?;
            self.verifier.set_seed(&self.gpu, p.seed);
        }
        let mut stats = Stats {
            prompt_tokens: prompt.len(),
            drafter_seconds: Some(0.0),
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
        // The drafter prefills the prompt here too (DESIGN.md's loop), so its cost counts as
        // prefill rather than landing on the first drafting step of the decode phase.
        if matches!(opts.method, Method::Draft { .. } | Method::DraftTree { .. }) {
            if let Some(d) = &mut self.drafter {
                let c = common_prefix(&d.cache, &self.cache);
                if c < self.cache.len() {
                    d.model.prefill(&self.gpu, &self.cache[c..], c)?;
                }
                d.cache.truncate(c);
                d.cache.extend_from_slice(&self.cache[c..]);
            }
        }
        let mut root = prompt[prompt.len() - 1];
        let mut history: Vec<u32> = prompt.to_vec();
        let mut out: Vec<u32> = Vec::new();
        let mut detok = Detokenizer::new(&self.tokenizer, true);
        let mut text = String::new();
        let mut stop_reason = None;
        // Prefill ends here (once its GPU work is done); decoding (every step, the first one
        // included) starts.
        self.gpu.finish().await?;
        stats.prefill_seconds = seconds() - t0;
        let t_decode = seconds();
        let max_draft = self.options.max_draft;
        let mut budget = Budget::new(match &opts.method {
            Method::Plain => 0,
            Method::Lookup { budget, .. } => (*budget).min(max_draft),
            Method::Draft { k } => (*k).min(max_draft),
            Method::DraftTree { nodes, .. } => (*nodes).min(max_draft),
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
            // Drafting on the CPU side (lookup, tree levels) is timed by the clock; a drafter
            // chain inside the step's single submit by the GPU's timestamps.
            let (outcome, drafter_seconds) = match &opts.method {
                Method::Plain => (
                    self.verify_tree(DraftTree::empty(), root, n_past).await?,
                    Some(0.0),
                ),
                Method::Lookup { lookup, .. } => {
                    let tree = lookup.propose(&history, want);
                    let drafting = seconds() - step_start;
                    (self.verify_tree(tree, root, n_past).await?, Some(drafting))
                }
                Method::Draft { .. } | Method::DraftTree { .. } if want == 0 => (
                    self.verify_tree(DraftTree::empty(), root, n_past).await?,
                    Some(0.0),
                ),
                Method::DraftTree { width, .. } => {
                    let (tree, passes) = self
                        .draft_tree(root, want, (*width).clamp(1, TREE_WIDTH))
                        .await?;
                    let drafting = seconds() - step_start;
                    stats.drafter_passes += passes;
                    (self.verify_tree(tree, root, n_past).await?, Some(drafting))
                }
                Method::Draft { .. } => {
                    stats.drafter_passes += want;
                    let o = self.draft_and_verify_chain(root, want).await?;
                    let drafting = o.drafter_seconds;
                    (o, drafting)
                }
            };
            stats.drafter_seconds = stats
                .drafter_seconds
                .zip(drafter_seconds)
                .map(|(a, b)| a + b);
            stats.target_passes += 1;
            let emitted = outcome.emitted;
            let accepted = emitted.len() - 1;
            let outcome_drafted = outcome.drafted;
            stats.drafted += outcome.drafted;
            stats.accepted += accepted;
            budget.record(outcome.drafted, accepted, seconds() - step_start);
            // The root and the accepted rows are in the KV cache now (compacted on the GPU).
            self.cache.push(root);
            self.cache.extend_from_slice(&emitted[..accepted]);
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
                proposed: outcome_drafted,
                drafter_seconds,
            };
            if !on_event(&ev) && stop_reason.is_none() {
                stop_reason = Some(StopReason::Cancelled);
            }
        }
        if stop_reason != Some(StopReason::Stop) {
            text.push_str(&detok.finish()?);
        }
        stats.generated_tokens = out.len();
        stats.decode_seconds = seconds() - t_decode;
        stats.finish();
        Ok(Output {
            text,
            tokens: out,
            stop_reason,
            stats,
        })
    }

    /// One target pass over `[root, tree…]`, then verification and KV compaction on the
    /// GPU in the same submit; one readback.
    async fn verify_tree(&self, tree: DraftTree, root: u32, n_past: usize) -> Result<StepOutcome> {
        let tokens = tree.batch_tokens(root);
        let t = tokens.len();
        let mask = tree.batch_mask(self.target.mask_words());
        let positions = tree.batch_positions(n_past as u32);
        self.target
            .write_inputs(&self.gpu, &tokens, &positions, &mask, n_past, t);
        self.write_parents(&tree.batch_parents());
        let mut enc = self.gpu.encoder("verify tree");
        self.target.encode(&mut enc, t, 0..t)?;
        self.encode_verify(&mut enc, t)?;
        let got: Vec<u32> = self
            .readback
            .read_vec(&self.gpu, enc, &self.result, 2 + t)
            .await?;
        Ok(StepOutcome {
            drafted: tree.len(),
            emitted: emitted_of(&got)?,
            drafter_seconds: None,
        })
    }

    fn write_parents(&self, parents: &[Option<usize>]) {
        let p: Vec<u32> = parents
            .iter()
            .map(|p| p.map_or(u32::MAX, |p| p as u32))
            .collect();
        self.gpu
            .queue
            .write_buffer(&self.parents, 0, bytemuck::cast_slice(&p));
    }

    /// Record, after the target's forward of `t` rows: sampling probabilities (when
    /// sampling), verification (writing keep / n_keep / result) and KV compaction.
    fn encode_verify(&self, enc: &mut wgpu::CommandEncoder, t: usize) -> Result<()> {
        let mut pass = enc.begin_compute_pass(&Default::default());
        let t32 = t as u32;
        if self.sampling {
            self.sampler.encode(&mut pass, &self.sample_bound, t32)?;
            self.verifier
                .encode(&mut pass, &self.verify_sampling, t32)?;
        } else {
            self.verifier.encode(&mut pass, &self.verify_greedy, t32)?;
        }
        for b in &self.compact_bound {
            self.compact.encode(&mut pass, b);
        }
        Ok(())
    }

    /// The drafter drafts a greedy chain of `k` tokens and the target verifies it, all in one
    /// command buffer: each drafter pass's argmax is copied into the next pass's input and
    /// into the target's batch on the GPU. One readback: the chain and the target's argmax.
    async fn draft_and_verify_chain(&mut self, root: u32, k: usize) -> Result<StepOutcome> {
        let n_past = self.cache.len();
        let mut enc = self.gpu.encoder("draft chain + verify");
        let c = {
            if let Some(t) = &self.chain_timer {
                enc.write_timestamp(&t.queries, 0);
            }
            let gpu = &self.gpu;
            let d = self
                .drafter
                .as_mut()
                .ok_or_else(|| Error::Invalid("no drafter".into()))?;
            let (c, t0) = d.feed(gpu, &self.cache, root)?;
            let chain_steps: Vec<Step> =
                (0..k).map(|i| Step::new(1, (n_past + i) as u32)).collect();
            let chain_pos: Vec<u32> = (0..k).map(|i| (n_past + i) as u32).collect();
            gpu.queue
                .write_buffer(&d.steps, 0, bytemuck::cast_slice(&chain_steps));
            gpu.queue
                .write_buffer(&d.positions, 0, bytemuck::cast_slice(&chain_pos));
            d.model.encode(&mut enc, t0, t0 - 1..t0)?;
            let am = &d.model.argmax_ids;
            for i in 0..k {
                enc.copy_buffer_to_buffer(am, 0, &d.out, 4 * i as u64, 4);
                enc.copy_buffer_to_buffer(
                    am,
                    0,
                    self.target.tokens_buffer(),
                    4 * (i + 1) as u64,
                    4,
                );
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
            // The step's readback: [n, bonus, emitted…], then the drafted chain.
            let tail = 4 * (2 + MAX_STEP_TOKENS) as u64;
            enc.copy_buffer_to_buffer(&d.out, 0, &self.result, tail, 4 * k as u64);
            if let Some(t) = &self.chain_timer {
                enc.write_timestamp(&t.queries, 1);
            }
            c
        };
        // The target's batch: the root, then the chain (filled in by the copies above).
        let mut batch = vec![0u32; k + 1];
        batch[0] = root;
        let tpos: Vec<u32> = (0..=k).map(|i| (n_past + i) as u32).collect();
        self.target.write_inputs(
            &self.gpu,
            &batch,
            &tpos,
            &self.target.causal_mask(k + 1),
            n_past,
            k + 1,
        );
        self.write_parents(&DraftTree::chain(&vec![0; k]).batch_parents());
        self.target.encode(&mut enc, k + 1, 0..k + 1)?;
        self.encode_verify(&mut enc, k + 1)?;
        let result_bytes = (4 * (2 + MAX_STEP_TOKENS + k)) as u64;
        let mut parts = vec![(&self.result, 0, result_bytes)];
        if let Some(t) = &self.chain_timer {
            enc.write_timestamp(&t.queries, 2);
            enc.resolve_query_set(&t.queries, 0..3, &t.resolved, 0);
            parts.push((&t.resolved, 0, 24));
        }
        let got = self.readback.read(&self.gpu, enc, &parts).await?;
        let all: Vec<u32> = bytemuck::pod_collect_to_vec(&got[0]);
        let drafter_seconds = match (&self.chain_timer, got.get(1)) {
            (Some(t), Some(ticks)) => t.drafter_seconds(ticks),
            _ => None,
        };
        let drafted = &all[2 + MAX_STEP_TOKENS..];
        // The drafter's cache now holds the committed tokens, the root and d1..d(k-1).
        if let Some(d) = self.drafter.as_mut() {
            d.cache.truncate(c);
            d.cache.extend_from_slice(&self.cache[c..]);
            d.cache.push(root);
            d.cache.extend_from_slice(&drafted[..k - 1]);
        }
        Ok(StepOutcome {
            drafted: k,
            emitted: emitted_of(&all)?,
            drafter_seconds,
        })
    }

    /// Grow a draft tree of at most `nodes` nodes with the drafter model (EAGLE-2 style):
    /// the first pass brings the drafter up to date and scores the root's children; each
    /// further pass runs every node drafted so far under the tree mask (batch invariance
    /// makes re-running them free of drift) and expands the newest level's `width` best
    /// nodes by their top-K children, keeping the `width` most probable by cumulative
    /// probability. One small readback per pass (ids and probabilities of the top-K).
    /// Returns the tree and the number of drafter passes.
    async fn draft_tree(
        &mut self,
        root: u32,
        nodes: usize,
        width: usize,
    ) -> Result<(DraftTree, usize)> {
        let gpu = &self.gpu;
        let readback = &self.readback;
        let d = self
            .drafter
            .as_mut()
            .ok_or_else(|| Error::Invalid("no drafter".into()))?;
        let n_past = self.cache.len();
        let max_t = d.model.limits.max_t;
        let (c, t0) = d.feed(gpu, &self.cache, root)?;
        d.cache.truncate(c);
        d.cache.extend_from_slice(&self.cache[c..]);
        d.cache.push(root);
        let kb = TREE_BRANCH as usize;
        let mut enc = gpu.encoder("draft tree level 0");
        d.model.encode(&mut enc, t0, t0 - 1..t0)?;
        let (mut ids, mut probs) = d.read_topk(gpu, readback, enc, 1).await?;
        let mut tree = DraftTree::empty();
        let mut cum: Vec<f32> = Vec::new();
        // Candidates of the next level: (cumulative probability, parent, token).
        let mut cand: Vec<(f32, Option<usize>, u32)> =
            (0..kb).map(|j| (probs[j], None, ids[j])).collect();
        let mut passes = 1;
        loop {
            cand.sort_by(|a, b| b.0.total_cmp(&a.0));
            cand.truncate(width.min(nodes - tree.len()));
            if cand.is_empty() {
                break;
            }
            let first = tree.len();
            for &(p, parent, tok) in &cand {
                tree.push(tok, parent, p)?;
                cum.push(p);
            }
            let last = tree.len();
            if tree.len() >= nodes || tree.len() + 1 > max_t {
                break;
            }
            // Score the newest level: all nodes under the tree mask after the root.
            let depths = tree.depths();
            let pos: Vec<u32> = depths.iter().map(|&dp| (n_past as u32) + dp).collect();
            let mask = crate::speculative::tree::ancestor_mask(&tree.parents, d.model.mask_words());
            d.model
                .write_inputs(gpu, &tree.tokens, &pos, &mask, n_past + 1, last - first);
            let mut enc = gpu.encoder("draft tree level");
            d.model.encode(&mut enc, tree.len(), first..last)?;
            (ids, probs) = d.read_topk(gpu, readback, enc, last - first).await?;
            passes += 1;
            cand = (first..last)
                .flat_map(|node| (0..kb).map(move |j| (node, j)))
                .map(|(node, j)| {
                    (
                        cum[node] * probs[(node - first) * kb + j],
                        Some(node),
                        ids[(node - first) * kb + j],
                    )
                })
                .collect();
        }
        Ok((tree, passes))
    }
}

/// A host-side drafter the engine can drive generically (prompt lookup); the model drafter
/// is fused into the GPU step instead (see [`Engine::load_drafter`]).
impl Drafter for PromptLookup {
    fn propose(&mut self, history: &[u32], budget: usize) -> DraftTree {
        PromptLookup::propose(self, history, budget)
    }
}
