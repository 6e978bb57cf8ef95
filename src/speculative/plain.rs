//! Plain decoding as a drafter: the empty tree every step, so the target emits one token per
//! pass through the same verify → accept loop as every other method.

use super::{DraftContext, DraftTree, Drafter, Proposal};
use crate::Result;

/// Proposes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Drafter for Plain {
    fn max_budget(&self) -> usize {
        0
    }

    fn propose(
        &mut self,
        _ctx: &mut DraftContext<'_>,
        _enc: &mut wgpu::CommandEncoder,
        _budget: usize,
    ) -> Result<Proposal> {
        Ok(Proposal::Tree(DraftTree::empty()))
    }
}
