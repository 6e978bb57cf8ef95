//! Speculative decoding: the drafter lifecycle, draft trees, today's drafting methods, the
//! verification set-up and the adaptive budget.
//!
//! A [`Drafter`] is a synchronous state machine the engine drives once per generation and
//! once per step (after llama.cpp's `common_speculative`: begin / draft / accept):
//!
//! ```text
//! begin(ctx)                         a generation starts after a prompt (prefill a drafter model)
//! loop:
//!     p = propose(ctx, enc, budget)  host tokens, GPU work recorded into `enc`, or a read request
//!     while p is Read: the engine submits `enc` with the reads, awaits, and calls resume(…)
//!     verify(p) in the same encoder  (the engine: target pass + verification + KV compaction)
//!     observe(ctx, verdict)          emitted tokens, kept rows, the target's top-k if asked for
//! ```
//!
//! The engine owns every `await`; drafters never wait on the GPU themselves, so a step is
//! one submit and one readback whenever the drafter asks for no intermediate read (plain,
//! prompt lookup, a drafter model's chain), and one more per read it asks for (a drafter
//! model's tree, level by level). A drafter lives across generations (the engine keeps it
//! while the method stays the same), so state such as a corpus of earlier outputs can carry
//! over from a chat's first turn to its second.

pub mod budget;
pub mod chain;
pub mod draft_model;
pub mod dynamic_tree;
pub mod hybrid;
pub mod lookup;
pub mod plain;
pub mod recycle;
pub mod registry;
pub mod suffix;
pub mod tree;
pub mod verify;

pub use budget::Budget;
pub use chain::DraftChain;
pub use draft_model::{DraftModel, DrafterOptions};
pub use dynamic_tree::DynamicTree;
pub use hybrid::{Hybrid, Source};
pub use lookup::{Lookup, PromptLookup};
pub use plain::Plain;
pub use recycle::Recycle;
pub use registry::{MethodDef, MethodSpec, METHODS};
pub use suffix::{Suffix, SuffixDraft, SuffixOptions, SuffixTrie};
pub use tree::DraftTree;

use crate::gpu::Gpu;
use crate::{Error, Result};

/// Most tokens one step verifies (root + draft nodes).
pub const MAX_STEP_TOKENS: usize = 64;

/// What a drafter sees of the engine during one call.
pub struct DraftContext<'a> {
    pub gpu: &'a Gpu,
    /// The drafter model, when one is loaded (methods that need it refuse to start without).
    pub model: Option<&'a mut DraftModel>,
    /// Tokens whose KV rows are in the target's cache; the root (the last emitted token)
    /// follows them and is the first row of the verification batch.
    pub committed: &'a [u32],
    /// Prompt + generated tokens; its last token is the root.
    pub history: &'a [u32],
    /// The target's input token buffer: a GPU draft writes its tokens into rows `1..=len`.
    pub target_tokens: &'a wgpu::Buffer,
    /// Drafter-model forward passes this call recorded (statistics; the drafter adds to it).
    pub passes: usize,
}

impl DraftContext<'_> {
    /// The root of this step (the last token of the history).
    pub fn root(&self) -> u32 {
        self.history.last().copied().unwrap_or(0)
    }

    /// The drafter model, or a clear error for a method that needs one.
    pub fn model(&mut self, method: &str) -> Result<&mut DraftModel> {
        self.model.as_deref_mut().ok_or_else(|| {
            Error::Invalid(format!(
                "the {method} method needs a drafter model (load_drafter, --drafter)"
            ))
        })
    }
}

/// A drafter's answer to `propose` / `resume`.
pub enum Proposal {
    /// Draft nodes as host tokens (a chain is a tree with one child per node); the engine
    /// uploads them with the verification batch.
    Tree(DraftTree),
    /// A chain of `len` tokens that GPU work the drafter recorded into the step's encoder
    /// writes into the target's batch rows `1..=len` (`DraftContext::target_tokens`), and
    /// into `tokens[0..len]` for the step's readback. Verification follows in the same
    /// command buffer, so drafting and verifying are one submit.
    Gpu { len: usize, tokens: wgpu::Buffer },
    /// Submit the encoder with these reads (buffer, byte offset, byte count), then call
    /// [`Drafter::resume`] with their bytes.
    Read(Vec<(wgpu::Buffer, u64, u64)>),
}

/// The target's verdict on one step's draft.
#[derive(Clone, Debug)]
pub struct Verdict<'a> {
    /// The verified batch: the root, then the draft nodes' tokens (GPU drafts as read back).
    pub batch: &'a [u32],
    /// Parent of each draft node (`None` = a child of the root), in batch order after the root.
    pub parents: &'a [Option<usize>],
    /// The emitted tokens: the accepted draft tokens, then the target's own next token.
    pub emitted: &'a [u32],
    /// `[batch.len(), k]` the target's `k` most likely next tokens after each batch row,
    /// when the drafter asked for them ([`Drafter::target_top_k`]); computed on the GPU in
    /// the verification submit, only the ids come back.
    pub target_top_k: Option<&'a [u32]>,
}

impl Verdict<'_> {
    /// Draft tokens accepted (the emitted tokens but the last).
    pub fn accepted(&self) -> usize {
        self.emitted.len().saturating_sub(1)
    }

    /// Batch rows the accepted path kept: the root (row 0), then one row per accepted
    /// draft token (draft node `i` is row `i + 1`). Sibling tokens are distinct in every
    /// draft tandem builds, so the path is found by following the emitted tokens.
    pub fn kept_rows(&self) -> Vec<usize> {
        let mut rows = vec![0];
        let mut parent: Option<usize> = None;
        for &tok in &self.emitted[..self.accepted()] {
            let next = (0..self.parents.len())
                .find(|&i| self.parents[i] == parent && self.batch.get(i + 1) == Some(&tok));
            match next {
                Some(i) => {
                    rows.push(i + 1);
                    parent = Some(i);
                }
                None => break,
            }
        }
        rows
    }
}

/// A drafting method: proposes draft trees after the history and learns from the target's
/// verdicts. Drafters know nothing of verification: the proposal is the contract.
pub trait Drafter {
    /// The most draft nodes one step of this drafter proposes (the adaptive budget's ceiling).
    fn max_budget(&self) -> usize;

    /// Whether it needs the engine's drafter model.
    fn needs_model(&self) -> bool {
        false
    }

    /// `k` > 0 asks for the target's top-`k` next-token ids after every verified row in each
    /// [`Verdict`] (at most 8).
    fn target_top_k(&self) -> usize {
        0
    }

    /// A generation starts: the target's cache holds `ctx.committed` (the prompt but its
    /// last token, which is the first root). A drafter model prefills here.
    fn begin(&mut self, ctx: &mut DraftContext<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Propose at most `budget` nodes after `ctx.history` (`budget` ≥ 1), recording any GPU
    /// work into `enc` (the step's command buffer).
    fn propose(
        &mut self,
        ctx: &mut DraftContext<'_>,
        enc: &mut wgpu::CommandEncoder,
        budget: usize,
    ) -> Result<Proposal>;

    /// Continue after a [`Proposal::Read`]: `read` holds the bytes of each requested part,
    /// `enc` is a fresh encoder.
    fn resume(
        &mut self,
        ctx: &mut DraftContext<'_>,
        enc: &mut wgpu::CommandEncoder,
        read: &[Vec<u8>],
    ) -> Result<Proposal> {
        let _ = (ctx, enc, read);
        Err(Error::Invalid(
            "this drafter asked for no read, so there is nothing to resume".into(),
        ))
    }

    /// The target's verdict on the step (called for every step, drafted or not). The
    /// engine's cache does not include this step's tokens yet (`ctx.committed` is as in
    /// the `propose` call).
    fn observe(&mut self, ctx: &mut DraftContext<'_>, verdict: &Verdict<'_>) -> Result<()> {
        let _ = (ctx, verdict);
        Ok(())
    }

    /// Forget everything learned (the engine's caches were cleared).
    fn reset(&mut self) {}
}
