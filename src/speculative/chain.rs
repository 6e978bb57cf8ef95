//! The drafter model's greedy chain (SpS: Leviathan et al., Chen et al.), fused into the
//! step's one command buffer: the first drafter pass catches the drafter's cache up with the
//! target's and scores the root; each further pass takes the previous pass's argmax by a
//! buffer copy (no readback between passes), and every drafted token is copied into the
//! target's batch rows `1..=len` and into the drafter's `out` buffer for the step's readback.

use super::{DraftContext, Drafter, Proposal, Verdict};
use crate::kernels::Step;
use crate::Result;

/// Drafts a chain of at most `len` tokens per step with the drafter model.
#[derive(Clone, Debug, PartialEq)]
pub struct DraftChain {
    pub len: usize,
    /// Length of the chain proposed this step (its first `len - 1` tokens' KV rows are in
    /// the drafter's cache after the step).
    proposed: usize,
}

impl DraftChain {
    pub fn new(len: usize) -> Self {
        DraftChain { len, proposed: 0 }
    }
}

impl Drafter for DraftChain {
    fn max_budget(&self) -> usize {
        self.len
    }

    fn needs_model(&self) -> bool {
        true
    }

    fn begin(&mut self, ctx: &mut DraftContext<'_>) -> Result<()> {
        let (gpu, committed) = (ctx.gpu, ctx.committed);
        ctx.model("sps")?.catch_up(gpu, committed)
    }

    fn propose(
        &mut self,
        ctx: &mut DraftContext<'_>,
        enc: &mut wgpu::CommandEncoder,
        budget: usize,
    ) -> Result<Proposal> {
        let k = budget.min(self.len);
        let (gpu, committed, root, target_tokens) =
            (ctx.gpu, ctx.committed, ctx.root(), ctx.target_tokens);
        let n_past = committed.len();
        let d = ctx.model("sps")?;
        let t0 = d.feed(gpu, committed, root)?;
        let chain_steps: Vec<Step> = (0..k).map(|i| Step::new(1, (n_past + i) as u32)).collect();
        let chain_pos: Vec<u32> = (0..k).map(|i| (n_past + i) as u32).collect();
        gpu.queue
            .write_buffer(&d.steps, 0, bytemuck::cast_slice(&chain_steps));
        gpu.queue
            .write_buffer(&d.positions, 0, bytemuck::cast_slice(&chain_pos));
        d.model.encode(enc, t0, t0 - 1..t0)?;
        let am = &d.model.argmax_ids;
        for i in 0..k {
            enc.copy_buffer_to_buffer(am, 0, &d.out, 4 * i as u64, 4);
            enc.copy_buffer_to_buffer(am, 0, target_tokens, 4 * (i + 1) as u64, 4);
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
                d.model.encode(enc, 1, 0..1)?;
            }
        }
        let tokens = d.out.clone();
        ctx.passes += k;
        self.proposed = k;
        Ok(Proposal::Gpu { len: k, tokens })
    }

    fn observe(&mut self, ctx: &mut DraftContext<'_>, verdict: &Verdict<'_>) -> Result<()> {
        // The drafter's cache now holds the committed tokens, the root and d1..d(k-1).
        if self.proposed > 0 {
            let k = self.proposed;
            self.proposed = 0;
            let d = ctx.model("sps")?;
            d.model.cache.extend_from_slice(&verdict.batch[1..k]);
        }
        Ok(())
    }
}
