//! The drafter model's dynamic draft tree (EAGLE-2 style), level by level: the first pass
//! catches the drafter up and scores the root's children; each further pass runs every node
//! drafted so far under the tree mask (batch invariance makes re-running them free of drift)
//! and expands the newest level's `width` best nodes by their top-K children, keeping the
//! `width` most probable by cumulative probability. Each level ends in a small read
//! (`[rows, TREE_BRANCH]` ids and probabilities) that the engine performs and hands back
//! through `resume`; the finished tree is verified by the target as host tokens.

use super::draft_model::{TREE_BRANCH, TREE_WIDTH};
use super::tree::ancestor_mask;
use super::{DraftContext, DraftTree, Drafter, Proposal};
use crate::{Error, Result};

/// Grows a tree of at most `nodes` nodes per step, expanding `width` nodes per level.
#[derive(Clone, Debug, PartialEq)]
pub struct DynamicTree {
    pub nodes: usize,
    pub width: usize,
    level: Option<Level>,
}

/// The tree of the step in progress.
#[derive(Clone, Debug, PartialEq)]
struct Level {
    tree: DraftTree,
    /// Cumulative probability of each node.
    cum: Vec<f32>,
    /// The nodes `first..last` whose children the pending read scores.
    first: usize,
    last: usize,
    n_past: usize,
    nodes: usize,
    width: usize,
}

impl DynamicTree {
    pub fn new(nodes: usize, width: usize) -> Self {
        DynamicTree {
            nodes,
            width,
            level: None,
        }
    }
}

impl Drafter for DynamicTree {
    fn max_budget(&self) -> usize {
        self.nodes
    }

    fn needs_model(&self) -> bool {
        true
    }

    fn begin(&mut self, ctx: &mut DraftContext<'_>) -> Result<()> {
        self.level = None;
        let (gpu, committed) = (ctx.gpu, ctx.committed);
        ctx.model("tree")?.catch_up(gpu, committed)
    }

    fn propose(
        &mut self,
        ctx: &mut DraftContext<'_>,
        enc: &mut wgpu::CommandEncoder,
        budget: usize,
    ) -> Result<Proposal> {
        let (gpu, committed, root) = (ctx.gpu, ctx.committed, ctx.root());
        let d = ctx.model("tree")?;
        let t0 = d.feed(gpu, committed, root)?;
        d.model.encode(enc, t0, t0 - 1..t0)?;
        let reads = d.encode_topk(enc, 1)?;
        ctx.passes += 1;
        self.level = Some(Level {
            tree: DraftTree::empty(),
            cum: Vec::new(),
            first: 0,
            last: 0,
            n_past: committed.len(),
            nodes: budget.min(self.nodes),
            width: self.width.clamp(1, TREE_WIDTH),
        });
        Ok(Proposal::Read(reads))
    }

    fn resume(
        &mut self,
        ctx: &mut DraftContext<'_>,
        enc: &mut wgpu::CommandEncoder,
        read: &[Vec<u8>],
    ) -> Result<Proposal> {
        let mut l = self
            .level
            .take()
            .ok_or_else(|| Error::Invalid("tree drafting resumed without a level".into()))?;
        let (ids, probs): (Vec<u32>, Vec<f32>) = match read {
            [ids, probs] => (
                bytemuck::pod_collect_to_vec(ids),
                bytemuck::pod_collect_to_vec(probs),
            ),
            _ => {
                return Err(Error::Invalid(
                    "tree drafting expects the top-K ids and probabilities".into(),
                ))
            }
        };
        let kb = TREE_BRANCH as usize;
        // Candidates of the next level: (cumulative probability, parent, token).
        let mut cand: Vec<(f32, Option<usize>, u32)> = if l.tree.is_empty() {
            (0..kb.min(ids.len()))
                .map(|j| (probs[j], None, ids[j]))
                .collect()
        } else {
            (l.first..l.last)
                .flat_map(|node| (0..kb).map(move |j| (node, j)))
                .map(|(node, j)| {
                    let r = (node - l.first) * kb + j;
                    (l.cum[node] * probs[r], Some(node), ids[r])
                })
                .collect()
        };
        cand.sort_by(|a, b| b.0.total_cmp(&a.0));
        cand.truncate(l.width.min(l.nodes - l.tree.len()));
        if cand.is_empty() {
            return Ok(Proposal::Tree(l.tree));
        }
        let first = l.tree.len();
        for &(p, parent, tok) in &cand {
            l.tree.push(tok, parent, p)?;
            l.cum.push(p);
        }
        let last = l.tree.len();
        let gpu = ctx.gpu;
        let d = ctx.model("tree")?;
        if l.tree.len() >= l.nodes || l.tree.len() + 1 > d.model.limits().max_t {
            return Ok(Proposal::Tree(l.tree));
        }
        // Score the newest level: all nodes under the tree mask after the root.
        let pos: Vec<u32> = l
            .tree
            .depths()
            .iter()
            .map(|&dp| l.n_past as u32 + dp)
            .collect();
        let mask = ancestor_mask(&l.tree.parents, d.model.mask_words());
        d.model
            .write_inputs(gpu, &l.tree.tokens, &pos, &mask, l.n_past + 1, last - first);
        d.model.encode(enc, l.tree.len(), first..last)?;
        let reads = d.encode_topk(enc, last - first)?;
        ctx.passes += 1;
        l.first = first;
        l.last = last;
        self.level = Some(l);
        Ok(Proposal::Read(reads))
    }

    fn reset(&mut self) {
        self.level = None;
    }
}
