//! Token Recycling (Luo et al. 2024, method `recycle`): a model-free drafter that recycles the
//! target's own top-k candidates. Each verification already computes the target's logits at
//! every batch row; the `k` most likely ids there (computed on the GPU inside the verification
//! submit, only `k` ids per row come back) are the successors of the row's token, so they
//! overwrite that token's row of an adjacency table. The next step fills a static tree
//! template from the table, starting at the root.
//!
//! Shapes and storage:
//! - the adjacency table is `[vocab, k]` in meaning but sparse in memory: `slots` maps a token
//!   to its row of `succ`, a flat `Vec<u32>` of `k` ids per row, so only tokens that were a
//!   verified row take room: `4·k` bytes of ids plus about 16 bytes of hash map per token
//!   (48 bytes at `k` = 8; a fully seen 152k vocabulary would be ≈ 7 MB, a dense table 4.9 MB,
//!   but a generation touches a few thousand tokens). Rows are overwritten, never appended
//!   twice, so memory is bounded by the vocabulary. The table is knowledge about the target
//!   alone (no context), so it outlives generations; [`Drafter::reset`] clears it.
//! - the tree template is `[nodes]` (≤ `MAX_STEP_TOKENS - 1`) pairs `(parent, rank)`, best-first:
//!   a node's token is the `rank`-th successor of its parent's token. A path's prior is
//!   `∏ 1 / (rank + 2)` (the first choice ½, the second ⅓, …: the target's top-1 after a row
//!   is accepted more often than its top-2), and nodes are ordered by prior, descending
//!   (ties: breadth-first order). A child's prior is below its parent's, so every prefix
//!   of the template is a tree: the adaptive budget takes the first `budget` nodes (the
//!   paper's 80-node tree is too big for small devices; here the budget chooses the size).

use std::collections::HashMap;

use super::tree::DraftTree;
use super::{DraftContext, Drafter, Proposal, Verdict, MAX_STEP_TOKENS};
use crate::kernels::topk::MAX_K;
use crate::{Error, Result};

/// One node of the tree template: the `rank`-th successor of `parent`'s token (`None` = of
/// the root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateNode {
    pub parent: Option<usize>,
    pub rank: usize,
}

/// The Token Recycling drafter: the adjacency table and the tree template.
#[derive(Clone, Debug)]
pub struct Recycle {
    k: usize,
    nodes: usize,
    slots: HashMap<u32, usize>,
    succ: Vec<u32>,
    template: Vec<TemplateNode>,
}

impl Recycle {
    /// A drafter with `k` successors per token (clamped to 1..=8, the GPU top-k's limit)
    /// proposing at most `nodes` nodes per step (clamped to 1..=`MAX_STEP_TOKENS - 1`).
    pub fn new(k: usize, nodes: usize) -> Self {
        let k = k.clamp(1, MAX_K as usize);
        let nodes = nodes.clamp(1, MAX_STEP_TOKENS - 1);
        Recycle {
            k,
            nodes,
            slots: HashMap::new(),
            succ: Vec::new(),
            template: template(k, nodes),
        }
    }

    /// Successors kept per token.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The tree template, best-first (the first `budget` nodes are a step's tree shape).
    pub fn template(&self) -> &[TemplateNode] {
        &self.template
    }

    /// The successors of `token`, most likely first (None: never a verified row).
    pub fn row(&self, token: u32) -> Option<&[u32]> {
        self.slots
            .get(&token)
            .map(|&s| &self.succ[s * self.k..(s + 1) * self.k])
    }

    /// Every table row as `(token, successors)`, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = (u32, &[u32])> + '_ {
        self.slots
            .iter()
            .map(|(&t, &s)| (t, &self.succ[s * self.k..(s + 1) * self.k]))
    }

    /// Tokens with a row.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes the table holds (ids plus an estimate of the hash map's share per token).
    pub fn table_bytes(&self) -> usize {
        self.succ.len() * 4 + self.slots.capacity() * 16
    }

    /// Set `token`'s successors (`k` ids, most likely first).
    pub fn set_row(&mut self, token: u32, successors: &[u32]) -> Result<()> {
        if successors.len() != self.k {
            return Err(Error::Invalid(format!(
                "recycle: a table row holds k = {} successors, got {}",
                self.k,
                successors.len()
            )));
        }
        let slot = match self.slots.get(&token) {
            Some(&s) => s,
            None => {
                let s = self.slots.len();
                self.slots.insert(token, s);
                self.succ.resize((s + 1) * self.k, 0);
                s
            }
        };
        self.succ[slot * self.k..(slot + 1) * self.k].copy_from_slice(successors);
        Ok(())
    }

    /// Refresh the table from one verification: `top_k` is `[batch.len(), k]`, row `r`'s ids
    /// are the target's most likely tokens after `batch[r]`, so they become `batch[r]`'s
    /// successors (rows in batch order: a later row of the same token wins).
    pub fn learn(&mut self, batch: &[u32], top_k: &[u32]) -> Result<()> {
        if top_k.len() != batch.len() * self.k {
            return Err(Error::Invalid(format!(
                "recycle: {} top-k ids for {} rows of k = {}",
                top_k.len(),
                batch.len(),
                self.k
            )));
        }
        for (&tok, ids) in batch.iter().zip(top_k.chunks_exact(self.k)) {
            self.set_row(tok, ids)?;
        }
        Ok(())
    }

    /// Fill the first `budget` template nodes from the table after `root`. A node whose
    /// parent's token has no row (or was itself left out) is left out with its subtree, as is
    /// a token equal to an earlier sibling's (the verifier needs distinct siblings).
    pub fn fill(&self, root: u32, budget: usize) -> DraftTree {
        let mut tree = DraftTree::empty();
        // Tree node of each template node that was filled.
        let mut placed: Vec<Option<usize>> = Vec::with_capacity(budget);
        for node in self.template.iter().take(budget) {
            let parent = match node.parent {
                None => Some(None),
                Some(p) => placed[p].map(Some),
            };
            let tok = parent.and_then(|parent| {
                let from = parent.map_or(root, |p| tree.tokens[p]);
                let tok = *self.row(from)?.get(node.rank)?;
                let dup =
                    (0..tree.len()).any(|i| tree.parents[i] == parent && tree.tokens[i] == tok);
                (!dup).then_some((tok, parent))
            });
            placed.push(tok.map(|(tok, parent)| {
                tree.tokens.push(tok);
                tree.parents.push(parent);
                tree.probs.push(1.0);
                tree.len() - 1
            }));
        }
        tree
    }
}

/// The best-first template of at most `nodes` nodes over ranks `0..k` (see the file header).
fn template(k: usize, nodes: usize) -> Vec<TemplateNode> {
    // Candidates: (1 / prior, order of creation, node); the best prior (the smallest
    // denominator: a product of small integers, exact in f64 for every node a template
    // reaches) wins, then the earliest created.
    let mut cand: Vec<(f64, usize, TemplateNode)> = (0..k)
        .map(|rank| {
            (
                inverse_prior(1.0, rank),
                rank,
                TemplateNode { parent: None, rank },
            )
        })
        .collect();
    let mut created = k;
    let mut out: Vec<TemplateNode> = Vec::with_capacity(nodes);
    while out.len() < nodes && !cand.is_empty() {
        let best = (0..cand.len())
            .max_by(|&a, &b| {
                cand[b]
                    .0
                    .total_cmp(&cand[a].0)
                    .then(cand[b].1.cmp(&cand[a].1))
            })
            .unwrap_or(0);
        let (p, _, node) = cand.swap_remove(best);
        out.push(node);
        let me = out.len() - 1;
        for rank in 0..k {
            cand.push((
                inverse_prior(p, rank),
                created,
                TemplateNode {
                    parent: Some(me),
                    rank,
                },
            ));
            created += 1;
        }
    }
    out
}

/// `1 / prior` of a child of rank `rank` under a node of `1 / prior` = `parent`.
fn inverse_prior(parent: f64, rank: usize) -> f64 {
    parent * (rank as f64 + 2.0)
}

impl Drafter for Recycle {
    fn max_budget(&self) -> usize {
        self.nodes
    }

    fn target_top_k(&self) -> usize {
        self.k
    }

    fn propose(
        &mut self,
        ctx: &mut DraftContext<'_>,
        _enc: &mut wgpu::CommandEncoder,
        budget: usize,
    ) -> Result<Proposal> {
        Ok(Proposal::Tree(
            self.fill(ctx.root(), budget.min(self.nodes)),
        ))
    }

    fn observe(&mut self, _ctx: &mut DraftContext<'_>, verdict: &Verdict<'_>) -> Result<()> {
        let top = verdict.target_top_k.ok_or_else(|| {
            Error::Invalid("recycle: the verdict lacks the target's top-k it asked for".into())
        })?;
        self.learn(verdict.batch, top)
    }

    fn reset(&mut self) {
        self.slots.clear();
        self.succ.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_best_first_and_every_prefix_is_a_tree() {
        let r = Recycle::new(3, 10);
        let t = r.template();
        assert_eq!(t.len(), 10);
        // Priors: r0 ½, r1 ⅓, r2 ¼, r0·r0 ¼ (the tie goes breadth-first), then ⅙ for r0·r1 and r1·r0, …
        let want = [
            (None, 0),
            (None, 1),
            (None, 2),
            (Some(0), 0),
            (Some(0), 1),
            (Some(1), 0),
        ];
        for (i, &(parent, rank)) in want.iter().enumerate() {
            assert_eq!(t[i], TemplateNode { parent, rank }, "template node {i}");
        }
        for (i, n) in t.iter().enumerate() {
            assert!(n.parent.is_none_or(|p| p < i), "node {i} before its parent");
            assert!(n.rank < 3);
        }
        assert_eq!(Recycle::new(8, 200).template().len(), MAX_STEP_TOKENS - 1);
    }

    #[test]
    fn the_tree_filled_from_a_hand_made_table_is_the_expected_tree() {
        let mut r = Recycle::new(2, 6);
        // 1 → [2, 3], 2 → [4, 5], 3 → [6, 2]; 4, 5 and 6 have no row.
        r.set_row(1, &[2, 3]).unwrap();
        r.set_row(2, &[4, 5]).unwrap();
        r.set_row(3, &[6, 2]).unwrap();
        // Template for k = 2: r0, r1, r0·r0, r0·r1, r1·r0, r0·r0·r0, …
        let t = r.fill(1, 6);
        t.validate().unwrap();
        assert_eq!(
            t,
            DraftTree {
                tokens: vec![2, 3, 4, 5, 6],
                parents: vec![None, None, Some(0), Some(0), Some(1)],
                probs: vec![1.0; 5],
            },
            "template {:?}",
            r.template()
        );
        // The budget caps the tree; an unknown root drafts nothing.
        assert_eq!(r.fill(1, 3).tokens, vec![2, 3, 4]);
        assert!(r.fill(9, 6).is_empty());
        // A repeated successor under one parent is left out (siblings must differ).
        r.set_row(1, &[2, 2]).unwrap();
        assert_eq!(r.fill(1, 2).tokens, vec![2]);
    }

    #[test]
    fn learning_overwrites_each_rows_token_and_checks_shapes() {
        let mut r = Recycle::new(2, 4);
        r.learn(&[7, 8, 7], &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(r.row(7), Some(&[5, 6][..]), "the later row of 7 wins");
        assert_eq!(r.row(8), Some(&[3, 4][..]));
        assert_eq!(r.len(), 2);
        assert!(r.learn(&[7], &[1, 2, 3]).is_err());
        assert!(r.set_row(1, &[1]).is_err());
        r.reset();
        assert!(r.is_empty() && r.row(7).is_none());
    }
}
