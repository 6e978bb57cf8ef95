//! The drafter model: a smaller model with the target's tokenizer on the same device. The
//! weights are loaded once ([`DraftModel::load_model`], shared); each conversation has its
//! own session (KV cache; `model.cache` says which tokens its rows hold), the buffers that
//! chain its passes on the GPU (`steps`, `positions`, `out`: `[MAX_STEP_TOKENS]` each) and
//! those that score a tree level (`topk_ids`, `topk_probs`: `[TREE_WIDTH, TREE_BRANCH]`).
//! Both drafter-model methods ([`super::DraftChain`], [`super::DynamicTree`]) share it.

use std::sync::Arc;

use super::MAX_STEP_TOKENS;
use crate::gpu::Gpu;
use crate::kernels::topk::TopK;
use crate::kernels::Bound;
use crate::model::loader::ModelFile;
use crate::model::session::Session;
use crate::model::transformer::{ForwardLimits, GpuModel};
use crate::{Error, Result};

/// Most rows a tree-drafting pass expands, and the children considered per row.
pub const TREE_WIDTH: usize = 8;
pub const TREE_BRANCH: u32 = 4;

/// How a drafter model is loaded.
#[derive(Clone, Copy, Debug, Default)]
pub struct DrafterOptions {
    /// Draft only among the first `vocab` token ids (None: all). The drafter's output head
    /// then scores those rows alone, which makes each drafter pass cheaper; drafts stay
    /// verified by the target, so the output is unchanged (only acceptance can move).
    pub vocab: Option<usize>,
}

/// The drafter model in one conversation: a session over the shared drafter model (its own
/// KV cache; `model.cache` says which tokens its rows hold) and the buffers that chain its
/// passes on the GPU.
pub struct DraftModel {
    pub model: Session,
    /// `[MAX_STEP_TOKENS]` Step values for chained passes, copied into the step uniform.
    pub steps: wgpu::Buffer,
    /// `[MAX_STEP_TOKENS]` positions for chained passes.
    pub positions: wgpu::Buffer,
    /// `[MAX_STEP_TOKENS]` the drafted tokens.
    pub out: wgpu::Buffer,
    topk: TopK,
    topk_bound: Bound,
    /// `[TREE_WIDTH, TREE_BRANCH]` ids and probabilities of the top-K of each expanded row.
    pub topk_ids: wgpu::Buffer,
    pub topk_probs: wgpu::Buffer,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl DraftModel {
    /// Load `file` (whose vocabulary the engine has checked against the target's) as a
    /// drafter model whose sessions have a KV cache of `max_ctx` tokens and at least
    /// `logit_rows` logits rows (a verification batch's, for contrastive decoding's amateur;
    /// tree drafting needs [`TREE_WIDTH`]); shared by every conversation's [`DraftModel`].
    pub fn load_model(
        gpu: &Gpu,
        file: &ModelFile,
        max_ctx: usize,
        logit_rows: usize,
        options: DrafterOptions,
    ) -> Result<Arc<GpuModel>> {
        if options.vocab == Some(0) {
            return Err(Error::Invalid(
                "a drafter vocabulary of 0 tokens cannot propose anything".into(),
            ));
        }
        let limits = ForwardLimits {
            max_ctx,
            max_t: MAX_STEP_TOKENS,
            max_logit_rows: TREE_WIDTH.max(logit_rows),
        };
        Ok(Arc::new(GpuModel::load_with_head(
            gpu,
            file,
            limits,
            options.vocab,
        )?))
    }

    /// Load `file` and open one conversation's drafter over it.
    pub fn load(
        gpu: &Gpu,
        file: &ModelFile,
        max_ctx: usize,
        options: DrafterOptions,
    ) -> Result<DraftModel> {
        DraftModel::new(gpu, Self::load_model(gpu, file, max_ctx, 0, options)?)
    }

    /// Open a session over the drafter `model` with the buffers its drafting needs.
    pub fn new(gpu: &Gpu, model: Arc<GpuModel>) -> Result<DraftModel> {
        let model = Session::new(gpu, model)?;
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
        Ok(DraftModel {
            model,
            steps: gpu.storage("draft steps", 16 * n)?,
            positions: gpu.storage("draft positions", 4 * n)?,
            out: gpu.storage("draft tokens", 4 * n)?,
            topk,
            topk_bound,
            topk_ids,
            topk_probs,
        })
    }

    /// Prefill what the drafter's cache lacks of `committed` (the prompt, at a generation's
    /// start, so its cost counts as prefill rather than landing on the first step).
    pub fn catch_up(&mut self, gpu: &Gpu, committed: &[u32]) -> Result<()> {
        let c = common_prefix(&self.model.cache, committed);
        if c < committed.len() {
            self.model.prefill(gpu, &committed[c..], c)?;
        }
        self.model.cache.truncate(c);
        self.model.cache.extend_from_slice(&committed[c..]);
        Ok(())
    }

    /// Bring the drafter's cache up to the target's `committed` tokens and write the inputs of
    /// a pass over the tokens it lacks plus `root` (logits of its last row). Long gaps are
    /// prefilled in chunks first. Afterwards `cache` holds `committed` and the root (their
    /// rows are written by the pass the caller records). Returns the pass's token count.
    pub fn feed(&mut self, gpu: &Gpu, committed: &[u32], root: u32) -> Result<usize> {
        let c = common_prefix(&self.model.cache, committed);
        let mut feed: Vec<u32> = committed[c..].to_vec();
        let max_t = self.model.limits().max_t;
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
        self.model.cache.truncate(c);
        self.model.cache.extend_from_slice(&committed[c..]);
        self.model.cache.push(root);
        Ok(t0)
    }

    /// Record the top-K of the last pass's `rows` scored rows and return the reads that
    /// bring their ids and probabilities back.
    pub fn encode_topk(
        &self,
        enc: &mut wgpu::CommandEncoder,
        rows: usize,
    ) -> Result<Vec<(wgpu::Buffer, u64, u64)>> {
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.topk.encode(&mut pass, &self.topk_bound, rows as u32)?;
        }
        let bytes = (4 * rows * TREE_BRANCH as usize) as u64;
        Ok(vec![
            (self.topk_ids.clone(), 0, bytes),
            (self.topk_probs.clone(), 0, bytes),
        ])
    }
}
