//! `Engine`: a loaded model with its tokenizer, and generation that streams events.
//!
//! Every step goes through the speculative loop of DESIGN.md: a drafter proposes a tree (the
//! empty tree for plain decoding), the target verifies `[root, tree…]` in one forward, the
//! longest path matching the target's greedy choice is accepted plus the target's own next
//! token, and the KV rows of the accepted path are compacted to follow the prefix. Plain
//! decoding is the same loop with no drafter, so both share one code path.

use crate::gpu::{seconds, Gpu};
use crate::kernels::kv_compact::KvCompact;
use crate::kernels::Bound;
use crate::model::loader::ModelFile;
use crate::model::transformer::{ForwardLimits, Transformer};
use crate::spec::tree::{verify_greedy, DraftTree};
use crate::spec::PromptLookup;
use crate::tokenizer::{Detokenizer, Tokenizer};
use crate::{Error, Result};

/// How drafts are made.
#[derive(Clone, Debug, Default)]
pub enum Method {
    /// Plain decoding (the empty tree every step).
    #[default]
    Plain,
    /// Prompt lookup with a node budget per step.
    Lookup { lookup: PromptLookup, budget: usize },
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// Stop when the text ends with one of these (the stop string is kept out of the text).
    pub stop: Vec<String>,
    pub method: Method,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            stop: vec![],
            method: Method::Plain,
        }
    }
}

/// One event of a streaming generation.
#[derive(Clone, Debug)]
pub enum Event {
    /// Tokens emitted by one step: `drafted` of them were drafted and accepted, the last one
    /// is the target's own (correction or bonus) token. `text` is the new complete UTF-8 text.
    Tokens {
        ids: Vec<u32>,
        drafted: usize,
        text: String,
    },
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Forward passes of the target during decoding (Spec-Bench's "target passes").
    pub target_passes: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Generated tokens ÷ target passes (τ).
    pub mean_accepted_tokens: f64,
    pub acceptance_rate: f64,
}

/// The result of a generation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Output {
    pub text: String,
    pub tokens: Vec<u32>,
    pub stop_reason: Option<StopReason>,
    pub stats: Stats,
}

/// A loaded model on a GPU.
pub struct Engine {
    pub gpu: Gpu,
    pub tokenizer: Tokenizer,
    pub model: Transformer,
    compact: KvCompact,
    compact_bound: Vec<Bound>,
    keep: wgpu::Buffer,
    n_keep: wgpu::Buffer,
}

impl Engine {
    /// Load `model` onto `gpu`. `max_tree` bounds the draft tree size per step.
    pub fn new(gpu: Gpu, file: &ModelFile, max_ctx: usize, max_tree: usize) -> Result<Self> {
        let tokenizer = match file.gguf() {
            Some(g) => Tokenizer::from_gguf_metadata(&g.header().metadata)?,
            None => {
                return Err(Error::Unsupported(
                    "engine from safetensors needs its tokenizer.json (not wired yet)".into(),
                ))
            }
        };
        let rows = (max_tree + 1).clamp(1, 64);
        let limits = ForwardLimits {
            max_ctx,
            max_t: 64,
            max_logit_rows: rows,
        };
        let model = Transformer::load(&gpu, file, limits)?;
        let c = &model.config;
        let compact = KvCompact::new(
            &gpu,
            c.n_kv_heads as u32,
            c.head_dim as u32,
            model.limits.max_ctx as u32,
        )?;
        let keep = gpu.storage("keep", 4 * 64)?;
        let n_keep = gpu.storage("n_keep", 4)?;
        let step = model.step_buffer();
        let compact_bound = model
            .kv_caches()
            .map(|(k, v)| compact.bind(&gpu, step, &keep, &n_keep, k, v))
            .collect::<Result<Vec<_>>>()?;
        Ok(Engine {
            gpu,
            tokenizer,
            model,
            compact,
            compact_bound,
            keep,
            n_keep,
        })
    }

    /// Generate after `prompt` (token ids) from an empty cache, calling `on_event` as tokens
    /// arrive; `on_event` returns false to cancel.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_event: impl FnMut(&Event) -> bool,
    ) -> Result<Output> {
        if prompt.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        let ctx = self.model.limits.max_ctx;
        if prompt.len() + opts.max_tokens > ctx {
            return Err(Error::Context(format!(
                "prompt of {} tokens + {} new tokens exceeds the context of {ctx} tokens",
                prompt.len(),
                opts.max_tokens
            )));
        }
        let gpu = &self.gpu;
        let mut stats = Stats {
            prompt_tokens: prompt.len(),
            ..Default::default()
        };
        let t0 = seconds();
        // Prefill all but the last prompt token; the last one is the first step's root.
        let (head, root) = prompt.split_at(prompt.len() - 1);
        if !head.is_empty() {
            self.model.prefill(gpu, head, 0)?;
        }
        let mut n_past = head.len();
        let mut root = root[0];
        let mut history: Vec<u32> = prompt.to_vec();
        let mut out: Vec<u32> = Vec::new();
        let mut detok = Detokenizer::new(&self.tokenizer, true);
        let mut text = String::new();
        let mut stop_reason = None;
        let mut t_decode = None;
        while stop_reason.is_none() {
            let left = opts.max_tokens - out.len();
            let tree = match &opts.method {
                Method::Plain => DraftTree::empty(),
                Method::Lookup { lookup, budget } => {
                    let b = (*budget)
                        .min(left.saturating_sub(1))
                        .min(self.model.limits.max_logit_rows - 1);
                    lookup.propose(&history, b)
                }
            };
            let tokens = tree.batch_tokens(root);
            let t = tokens.len();
            let mask = tree.batch_mask(self.model.mask_words());
            self.model.forward(
                gpu,
                &tokens,
                &tree.batch_positions(n_past as u32),
                &mask,
                n_past,
                0..t,
            )?;
            let argmax = pollster_free_read(self.model.read_argmax(gpu, t))?;
            if t_decode.is_none() {
                stats.prefill_seconds = seconds() - t0;
                t_decode = Some(seconds());
            }
            stats.target_passes += 1;
            let (keep, bonus) = verify_greedy(&tree, &argmax);
            stats.drafted += tree.len();
            stats.accepted += keep.len() - 1;
            if keep.len() < t && keep.iter().enumerate().any(|(j, &r)| r != j) {
                self.compact_kv(&keep)?;
            }
            n_past += keep.len();
            let mut emitted: Vec<u32> = keep[1..].iter().map(|&r| tokens[r]).collect();
            emitted.push(bonus);
            let drafted = emitted.len() - 1;
            let mut new_ids = Vec::new();
            let mut delta = String::new();
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
                if let Some(s) = opts
                    .stop
                    .iter()
                    .find(|s| (text.clone() + &delta).ends_with(s.as_str()))
                {
                    let full = text.clone() + &delta;
                    delta = full[text.len()..full.len() - s.len()].to_string();
                    stop_reason = Some(StopReason::Stop);
                    break;
                }
            }
            if stop_reason.is_none() && out.len() >= opts.max_tokens {
                stop_reason = Some(StopReason::Length);
            }
            text.push_str(&delta);
            root = *history.last().unwrap_or(&root);
            let ev = Event::Tokens {
                drafted: drafted.min(new_ids.len()),
                ids: new_ids,
                text: delta,
            };
            if !on_event(&ev) && stop_reason.is_none() {
                stop_reason = Some(StopReason::Cancelled);
            }
        }
        if stop_reason != Some(StopReason::Stop) {
            text.push_str(&detok.finish()?);
        }
        let dt = t_decode.map(|t| seconds() - t).unwrap_or(0.0);
        stats.generated_tokens = out.len();
        stats.decode_seconds = dt;
        stats.prefill_tokens_per_s = prompt.len() as f64 / stats.prefill_seconds.max(1e-9);
        stats.decode_tokens_per_s = out.len() as f64 / dt.max(1e-9);
        stats.mean_accepted_tokens = out.len() as f64 / stats.target_passes.max(1) as f64;
        stats.acceptance_rate = stats.accepted as f64 / stats.drafted.max(1) as f64;
        Ok(Output {
            text,
            tokens: out,
            stop_reason,
            stats,
        })
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

/// Wait for a readback future (native: the poll inside `read_back` already waited).
fn pollster_free_read<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        pollster::block_on(f)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = f;
        Err(Error::Unsupported(
            "blocking generation in the browser; use the async web API".into(),
        ))
    }
}
