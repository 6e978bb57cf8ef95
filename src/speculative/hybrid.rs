//! The hybrid drafter (`hybrid`; SAM-Decoding's rule, Hu et al. 2024): SuffixDecoding's draft
//! when its match is long enough (at least `min_match` tokens of the history's suffix occur
//! earlier, in this request or in an earlier output), else Token Recycling's tree (after a
//! shorter match's few nodes, when there is one), and, optionally, the drafter model's chain
//! as the last resort (when neither knows anything after the root yet).
//!
//! A combinator, not a copy: it owns one [`Suffix`], one [`Recycle`] and optionally one
//! [`DraftChain`], asks them in that order, and lets every one of them observe every verdict
//! (the suffix tries index each emitted token, the recycling table learns each verified row's
//! top-k, whichever drafted), so switching between them costs nothing. A long match is the
//! case where a retrieved continuation beats the target's one-token-ahead guesses (a repeated
//! passage, code, a quoted prompt); elsewhere recycling's table is the better guess.

use super::tree::DraftTree;
use super::{DraftChain, DraftContext, Drafter, Proposal, Recycle, Suffix, Verdict};
use crate::Result;

/// Which part of the hybrid made a step's draft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Nothing drafted (no long match, no table row for the root, no model).
    None,
    Suffix,
    Recycle,
    Model,
    /// A short suffix match's nodes with the recycling tree grafted after them.
    Both,
}

/// The hybrid drafter and how often each part drafted.
pub struct Hybrid {
    /// Shortest suffix match whose draft is taken alone.
    pub min_match: usize,
    /// A shorter match's nodes are drafted too, before the recycling tree (`short=0`: the
    /// recycling tree alone, SAM-Decoding's rule as published).
    short_matches: bool,
    suffix: Suffix,
    recycle: Recycle,
    model: Option<DraftChain>,
    /// Steps each source drafted: `[none, suffix, recycle, model, both]`.
    steps: [usize; 5],
}

impl Hybrid {
    /// `model`: the drafter model's chain as the last resort (the engine then needs a drafter
    /// model).
    pub fn new(
        min_match: usize,
        suffix: Suffix,
        recycle: Recycle,
        model: Option<DraftChain>,
    ) -> Self {
        Hybrid {
            min_match: min_match.max(1),
            short_matches: true,
            suffix,
            recycle,
            model,
            steps: [0; 5],
        }
    }

    /// Whether a shorter match's nodes are drafted before the recycling tree (default on).
    pub fn short_matches(mut self, on: bool) -> Self {
        self.short_matches = on;
        self
    }

    /// Steps drafted by `source` since the drafter was made (or reset).
    pub fn steps_by(&self, source: Source) -> usize {
        self.steps[source as usize]
    }

    /// The host draft after `history` (the suffix draft on a long match, else the recycling
    /// tree after the root): what `propose` proposes unless both are empty and a drafter
    /// model is there. Indexes `history` in the suffix tries.
    pub fn draft_after(&mut self, history: &[u32], budget: usize) -> (DraftTree, Source) {
        let s = self.suffix.draft_after(history, budget);
        if s.matched >= self.min_match && !s.tree.is_empty() {
            return (s.tree, Source::Suffix);
        }
        let root = history.last().copied().unwrap_or(0);
        let r = self
            .recycle
            .fill(root, budget.min(self.recycle.max_budget()));
        // A short match still drafts its few nodes (SuffixDecoding sizes a draft by its
        // match), with recycling's tree grafted after them: on structured output the value
        // to copy from the prompt follows punctuation the prompt does not hold, so the match
        // is short exactly where the recycling table, filled only from verified rows, knows
        // least.
        let short = if self.short_matches {
            s.tree
        } else {
            DraftTree::empty()
        };
        match (short.is_empty(), r.is_empty()) {
            (true, true) => (r, Source::None),
            (true, false) => (r, Source::Recycle),
            (false, true) => (short, Source::Suffix),
            (false, false) => {
                let mut t = short;
                t.graft(&r, budget);
                (t, Source::Both)
            }
        }
    }
}

impl Drafter for Hybrid {
    fn max_budget(&self) -> usize {
        let host = self.suffix.max_budget().max(self.recycle.max_budget());
        self.model
            .as_ref()
            .map_or(host, |m| host.max(m.max_budget()))
    }

    fn needs_model(&self) -> bool {
        self.model.is_some()
    }

    fn target_top_k(&self) -> usize {
        self.recycle.target_top_k()
    }

    fn begin(&mut self, ctx: &mut DraftContext<'_>) -> Result<()> {
        self.suffix.begin(ctx)?;
        self.recycle.begin(ctx)?;
        if let Some(m) = &mut self.model {
            m.begin(ctx)?;
        }
        Ok(())
    }

    fn propose(
        &mut self,
        ctx: &mut DraftContext<'_>,
        enc: &mut wgpu::CommandEncoder,
        budget: usize,
    ) -> Result<Proposal> {
        let (tree, mut source) = self.draft_after(ctx.history, budget);
        let proposal = match (&mut self.model, source) {
            (Some(m), Source::None) => {
                source = Source::Model;
                m.propose(ctx, enc, budget)?
            }
            _ => Proposal::Tree(tree),
        };
        self.steps[source as usize] += 1;
        Ok(proposal)
    }

    fn observe(&mut self, ctx: &mut DraftContext<'_>, verdict: &Verdict<'_>) -> Result<()> {
        self.suffix.observe(ctx, verdict)?;
        self.recycle.observe(ctx, verdict)?;
        if let Some(m) = &mut self.model {
            m.observe(ctx, verdict)?;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.suffix.reset();
        self.recycle.reset();
        if let Some(m) = &mut self.model {
            m.reset();
        }
        self.steps = [0; 5];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speculative::SuffixOptions;

    fn hybrid(min_match: usize) -> Hybrid {
        Hybrid::new(
            min_match,
            Suffix::new(SuffixOptions {
                len: 8,
                ..Default::default()
            }),
            Recycle::new(2, 4),
            None,
        )
    }

    #[test]
    fn a_long_match_drafts_from_the_suffix_trie_else_from_the_recycling_table() {
        let mut h = hybrid(3);
        // Nothing known: no draft.
        let (t, s) = h.draft_after(&[1, 2, 3], 8);
        assert_eq!((t.len(), s), (0, Source::None));
        // The table knows the successors of 9: recycling drafts after a root of 9.
        h.recycle.set_row(9, &[4, 5]).unwrap();
        let (t, s) = h.draft_after(&[1, 2, 9], 8);
        assert_eq!((s, &t.tokens[..2]), (Source::Recycle, &[4u32, 5][..]));
        // "7 8 6 9" occurred with "3" after it: a 4-token match beats the table...
        let hist = [7, 8, 6, 9, 3, 0, 7, 8, 6, 9];
        let (t, s) = h.draft_after(&hist, 8);
        assert_eq!((s, t.tokens[0]), (Source::Suffix, 3));
        // ...but when the rule asks for 5, the match's 4 nodes (3 0 7 8) come first and the
        // table's successors of 9 are grafted after them.
        let mut h5 = hybrid(5);
        h5.recycle.set_row(9, &[4, 5]).unwrap();
        let (t, s) = h5.draft_after(&hist, 8);
        assert_eq!(s, Source::Both);
        assert_eq!(t.tokens, [3, 0, 7, 8, 4, 5]);
        assert_eq!(t.parents, [None, Some(0), Some(1), Some(2), None, None]);
        // The budget bounds the graft.
        let (t, _) = h5.draft_after(&hist, 5);
        assert_eq!(t.tokens, [3, 0, 7, 8, 4]);
    }
}
