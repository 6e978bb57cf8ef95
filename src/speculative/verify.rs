//! Verification set-up: what the target needs after its forward over a step's batch
//! `[root, draft nodes…]` — sampling probabilities (when sampling), greedy or lossless
//! speculative-sampling verification, KV compaction of the accepted path, optionally the
//! target's top-k ids per row (for drafters that learn from them), and the step's one
//! readback: `result = [n, bonus, emitted…]` (`[2 + MAX_STEP_TOKENS]` u32) followed by the
//! GPU-drafted chain (`[MAX_STEP_TOKENS]` u32), the drafter timestamps and the top-k ids.

use super::{DraftTree, Proposal, MAX_STEP_TOKENS};
use crate::gpu::{Gpu, Reservation};
use crate::kernels::kv_compact::KvCompact;
use crate::kernels::sample::{SampleBound, SampleParams, Sampler};
use crate::kernels::topk::{TopK, MAX_K};
use crate::kernels::verify::{Draft, Verifier, VerifyBound, VerifyBuffers};
use crate::kernels::Bound;
use crate::model::session::Session;
use crate::{Error, Result};

/// Timestamp queries around a drafter's GPU work: start, drafter done, verification done.
struct DraftTimer {
    queries: wgpu::QuerySet,
    /// The resolved `[3]` u64 ticks.
    resolved: wgpu::Buffer,
    /// Nanoseconds per tick.
    period_ns: f64,
}

impl DraftTimer {
    /// Present where the device writes timestamps between passes.
    fn new(gpu: &Gpu) -> Option<DraftTimer> {
        let need =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        if !gpu.device.features().contains(need) {
            return None;
        }
        Some(DraftTimer {
            queries: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("drafter timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 3,
            }),
            resolved: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("drafter ticks"),
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

/// The target's top-k over the verified rows.
struct TargetTopK {
    topk: TopK,
    bound: Bound,
    /// `[rows, k]` ids (read back) and probabilities (stay on the GPU).
    ids: wgpu::Buffer,
    _probs: wgpu::Buffer,
}

/// A recorded step awaiting its readback.
pub struct Pending {
    /// Batch tokens (GPU-drafted rows are 0 until read back) and each draft node's parent.
    batch: Vec<u32>,
    parents: Vec<Option<usize>>,
    /// Length of a GPU-drafted chain (0: host tokens).
    gpu_len: usize,
    top_k: usize,
}

/// What the step's readback said.
pub struct Checked {
    pub batch: Vec<u32>,
    pub parents: Vec<Option<usize>>,
    pub emitted: Vec<u32>,
    pub target_top_k: Option<Vec<u32>>,
    /// The drafter's GPU time for a GPU draft (None: not timed or host drafting).
    pub drafter_seconds: Option<f64>,
}

/// Verification buffers, kernels and bind groups, made once at load time.
pub struct Verification {
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
    /// `[2 + 2 * MAX_STEP_TOKENS]` u32: what a step reads back.
    result: wgpu::Buffer,
    timer: Option<DraftTimer>,
    top_k: Option<TargetTopK>,
    /// `[MAX_STEP_TOKENS]` the batch rows the accepted path keeps, and their count: written
    /// by verification, read by the KV compactions.
    keep: wgpu::Buffer,
    n_keep: wgpu::Buffer,
    /// A second session whose KV cache follows the target's row for row (contrastive
    /// decoding's amateur): its compaction, bound to its caches.
    follower: Option<(KvCompact, Vec<Bound>)>,
    _memory: Reservation,
}

/// The KV compaction of `session`'s caches to the rows `keep[..n_keep]` (after its step's
/// `n_past`, from its step uniform).
fn compaction(
    gpu: &Gpu,
    session: &Session,
    keep: &wgpu::Buffer,
    n_keep: &wgpu::Buffer,
) -> Result<(KvCompact, Vec<Bound>)> {
    let c = session.config();
    let compact = KvCompact::new(
        gpu,
        c.n_kv_heads as u32,
        c.head_dim as u32,
        session.limits().max_ctx as u32,
    )?;
    let bound = session
        .kv_caches()
        .map(|(k, v)| compact.bind(gpu, session.step_buffer(), keep, n_keep, k, v))
        .collect::<Result<Vec<_>>>()?;
    Ok((compact, bound))
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

impl Verification {
    /// Bytes the step readback's staging buffer needs.
    pub fn readback_bytes() -> u64 {
        4 * (2 + 2 * MAX_STEP_TOKENS) as u64 + 24 + 4 * (MAX_STEP_TOKENS as u64) * MAX_K as u64
    }

    /// Set up verification of at most `max_draft + 1` rows of `target`.
    pub fn new(gpu: &Gpu, target: &Session, max_draft: usize) -> Result<Self> {
        let c = target.config();
        let rows = (max_draft + 1) as u64;
        let v = c.vocab_size as u64;
        let slots = 4 * MAX_STEP_TOKENS as u64;
        // keep, parents; n_keep; the step result; target probabilities and sample ids.
        let bytes = 2 * slots + 4 + 4 * (2 + 2 * MAX_STEP_TOKENS) as u64 + rows * v * 4 + rows * 4;
        let memory = gpu.reserve("a conversation's verification buffers", bytes)?;
        let keep = gpu.storage("keep", 4 * MAX_STEP_TOKENS as u64)?;
        let n_keep = gpu.storage("n_keep", 4)?;
        let parents = gpu.storage("parents", 4 * MAX_STEP_TOKENS as u64)?;
        let result = gpu.storage("step result", 4 * (2 + 2 * MAX_STEP_TOKENS) as u64)?;
        let v = v as u32;
        let verifier = Verifier::new(gpu, v, MAX_STEP_TOKENS as u32)?;
        let bufs = VerifyBuffers {
            step: target.step_buffer(),
            tokens: target.tokens_buffer(),
            parents: &parents,
            keep: &keep,
            n_keep: &n_keep,
            result: &result,
        };
        let verify_greedy = verifier.bind_greedy(gpu, &bufs, &target.argmax_ids)?;
        let target_probs = gpu.storage("target probs", rows * v as u64 * 4)?;
        let sample_ids = gpu.storage("sample ids", rows * 4)?;
        let sampler = Sampler::with_draws(gpu, v, 0)?;
        let sample_bound = sampler.bind_with_probs(
            gpu,
            target.head_step_buffer(),
            &target.logits,
            &sample_ids,
            &target_probs,
        )?;
        // Drafts are deterministic proposals (prompt lookup, greedy drafter chains and
        // top-K trees), so speculative sampling verifies them with point-mass q (lossless).
        let verify_sampling =
            verifier.bind_sampling(gpu, &bufs, &target_probs, Draft::OneHot, None)?;
        let (compact, compact_bound) = compaction(gpu, target, &keep, &n_keep)?;
        Ok(Verification {
            compact,
            compact_bound,
            parents,
            verifier,
            verify_greedy,
            verify_sampling,
            sampler,
            sample_bound,
            sampling: false,
            _buffers: vec![target_probs, sample_ids],
            result,
            timer: DraftTimer::new(gpu),
            top_k: None,
            keep,
            n_keep,
            follower: None,
            _memory: memory,
        })
    }

    /// Verify greedily (`None`) or by speculative sampling with `params` from now on.
    pub fn set_sampling(&mut self, gpu: &Gpu, params: Option<&SampleParams>) -> Result<()> {
        self.sampling = params.is_some();
        if let Some(p) = params {
            self.sampler.set_params(gpu, p)?;
            self.verifier.set_seed(gpu, p.seed);
        }
        Ok(())
    }

    /// Compute the target's top-`k` ids per verified row from now on (0: not at all). The
    /// kernel and its buffers are made here, at a generation's start, never per step.
    pub fn set_top_k(&mut self, gpu: &Gpu, target: &Session, k: usize) -> Result<()> {
        if k == 0 {
            self.top_k = None;
            return Ok(());
        }
        if self.top_k.as_ref().is_some_and(|t| t.topk.k as usize == k) {
            return Ok(());
        }
        let topk = TopK::new(gpu, target.config().vocab_size as u32, k as u32)?;
        let cells = (target.limits().max_logit_rows * k * 4) as u64;
        let ids = gpu.storage("target topk ids", cells)?;
        let probs = gpu.storage("target topk probs", cells)?;
        let bound = topk.bind(gpu, target.head_step_buffer(), &target.logits, &ids, &probs)?;
        self.top_k = Some(TargetTopK {
            topk,
            bound,
            ids,
            _probs: probs,
        });
        Ok(())
    }

    /// Compact `follower`'s KV cache like the target's from now on (`None`: stop): a session
    /// that ran the same batch at the same rows (contrastive decoding's amateur). Bound here,
    /// at a generation's start.
    pub fn set_follower(&mut self, gpu: &Gpu, follower: Option<&Session>) -> Result<()> {
        self.follower = match follower {
            Some(f) => Some(compaction(gpu, f, &self.keep, &self.n_keep)?),
            None => None,
        };
        Ok(())
    }

    /// Mark the start of a step's drafting (a timestamp, where the device has them).
    pub fn mark_start(&self, enc: &mut wgpu::CommandEncoder) {
        if let Some(t) = &self.timer {
            enc.write_timestamp(&t.queries, 0);
        }
    }

    /// Write the batch of `proposal` after `root` at `n_past` and record, into `enc`, the
    /// target's forward over it, verification and KV compaction.
    pub fn encode(
        &self,
        gpu: &Gpu,
        target: &Session,
        enc: &mut wgpu::CommandEncoder,
        proposal: Proposal,
        root: u32,
        n_past: usize,
    ) -> Result<Pending> {
        let (batch, parents, gpu_len) = match proposal {
            Proposal::Tree(tree) => {
                tree.validate()?;
                let tokens = tree.batch_tokens(root);
                let t = tokens.len();
                let mask = tree.batch_mask(target.mask_words());
                let positions = tree.batch_positions(n_past as u32);
                target.write_inputs(gpu, &tokens, &positions, &mask, n_past, t);
                self.write_parents(gpu, &tree.batch_parents());
                (tokens, tree.parents, 0)
            }
            Proposal::Gpu { len: k, tokens } => {
                // The step's readback: [n, bonus, emitted…], then the drafted chain.
                let tail = 4 * (2 + MAX_STEP_TOKENS) as u64;
                enc.copy_buffer_to_buffer(&tokens, 0, &self.result, tail, 4 * k as u64);
                if let Some(t) = &self.timer {
                    enc.write_timestamp(&t.queries, 1);
                }
                // The root, then the chain (filled in on the GPU by the drafter's copies).
                let mut batch = vec![0u32; k + 1];
                batch[0] = root;
                let tpos: Vec<u32> = (0..=k).map(|i| (n_past + i) as u32).collect();
                target.write_inputs(
                    gpu,
                    &batch,
                    &tpos,
                    &target.causal_mask(k + 1),
                    n_past,
                    k + 1,
                );
                let chain = DraftTree::chain(&vec![0; k]);
                self.write_parents(gpu, &chain.batch_parents());
                (batch, chain.parents, k)
            }
            Proposal::Read(_) => {
                return Err(Error::Invalid(
                    "a read request cannot be verified (the engine resumes the drafter first)"
                        .into(),
                ))
            }
        };
        let t = batch.len();
        if t > MAX_STEP_TOKENS || t > target.limits().max_logit_rows {
            return Err(Error::Invalid(format!(
                "a draft of {} nodes exceeds the step's {} rows",
                t - 1,
                target.limits().max_logit_rows.min(MAX_STEP_TOKENS)
            )));
        }
        target.encode(enc, t, 0..t)?;
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            let t32 = t as u32;
            if self.sampling {
                self.sampler.encode(&mut pass, &self.sample_bound, t32)?;
                self.verifier
                    .encode(&mut pass, &self.verify_sampling, t32)?;
            } else {
                self.verifier.encode(&mut pass, &self.verify_greedy, t32)?;
            }
            if let Some(k) = &self.top_k {
                k.topk.encode(&mut pass, &k.bound, t32)?;
            }
            // A step of the root alone (plain decoding, or a drafter that sat it out) keeps
            // row 0 where it already is: its compaction (a dispatch per layer) moves nothing.
            if t > 1 {
                for b in &self.compact_bound {
                    self.compact.encode(&mut pass, b);
                }
                if let Some((compact, bound)) = &self.follower {
                    for b in bound {
                        compact.encode(&mut pass, b);
                    }
                }
            }
        }
        if gpu_len > 0 {
            if let Some(tm) = &self.timer {
                enc.write_timestamp(&tm.queries, 2);
                enc.resolve_query_set(&tm.queries, 0..3, &tm.resolved, 0);
            }
        }
        Ok(Pending {
            batch,
            parents,
            gpu_len,
            top_k: self.top_k.as_ref().map_or(0, |k| k.topk.k as usize),
        })
    }

    /// The parts of the step's one readback.
    pub fn reads(&self, p: &Pending) -> Vec<(&wgpu::Buffer, u64, u64)> {
        let words = if p.gpu_len > 0 {
            2 + MAX_STEP_TOKENS + p.gpu_len
        } else {
            2 + p.batch.len()
        };
        let mut parts = vec![(&self.result, 0, 4 * words as u64)];
        if p.gpu_len > 0 {
            if let Some(t) = &self.timer {
                parts.push((&t.resolved, 0, 24));
            }
        }
        if let (Some(k), true) = (&self.top_k, p.top_k > 0) {
            parts.push((&k.ids, 0, (4 * p.batch.len() * p.top_k) as u64));
        }
        parts
    }

    /// Decode the readback of [`Verification::reads`].
    pub fn finish(&self, p: Pending, got: &[Vec<u8>]) -> Result<Checked> {
        let all: Vec<u32> = bytemuck::pod_collect_to_vec(&got[0]);
        let emitted = emitted_of(&all)?;
        let mut batch = p.batch;
        let mut next = 1;
        let mut drafter_seconds = None;
        if p.gpu_len > 0 {
            batch[1..].copy_from_slice(&all[2 + MAX_STEP_TOKENS..2 + MAX_STEP_TOKENS + p.gpu_len]);
            if let Some(t) = &self.timer {
                drafter_seconds = got.get(1).and_then(|ticks| t.drafter_seconds(ticks));
                next = 2;
            }
        }
        let target_top_k = (p.top_k > 0)
            .then(|| got.get(next).map(|b| bytemuck::pod_collect_to_vec(b)))
            .flatten();
        Ok(Checked {
            batch,
            parents: p.parents,
            emitted,
            target_top_k,
            drafter_seconds,
        })
    }

    fn write_parents(&self, gpu: &Gpu, parents: &[Option<usize>]) {
        let p: Vec<u32> = parents
            .iter()
            .map(|p| p.map_or(u32::MAX, |p| p as u32))
            .collect();
        gpu.queue
            .write_buffer(&self.parents, 0, bytemuck::cast_slice(&p));
    }
}
