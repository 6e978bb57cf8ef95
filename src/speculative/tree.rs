//! `DraftTree`: the contract between a drafter and the verifier.
//!
//! A tree holds draft nodes in topological order (a parent comes before its children). The
//! verification batch the target sees is `[root, node 0, node 1, …]`, where the root is the
//! last accepted token (not yet in the target's KV cache). So node `i` is batch row `i + 1`,
//! its position is `n_past + depth`, and its attention mask row lets it see the prefix, the
//! root and its own ancestors. A chain is a tree with one child per node.

use crate::{Error, Result};

/// Draft nodes in topological order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DraftTree {
    /// Proposed token of each node.
    pub tokens: Vec<u32>,
    /// Parent node of each node; `None` = a child of the root.
    pub parents: Vec<Option<usize>>,
    /// The drafter's probability of each node's token given its parent (1.0 when the drafter
    /// has none, e.g. prompt lookup). Speculative sampling uses the drafter's full distribution;
    /// this is only for tree shaping and statistics.
    pub probs: Vec<f32>,
}

impl DraftTree {
    /// The empty tree: plain decoding goes through the same loop with it.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A chain of `tokens`, each the child of the one before.
    pub fn chain(tokens: &[u32]) -> Self {
        DraftTree {
            tokens: tokens.to_vec(),
            parents: (0..tokens.len()).map(|i| i.checked_sub(1)).collect(),
            probs: vec![1.0; tokens.len()],
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Add a node under `parent` (None = under the root); returns its index.
    pub fn push(&mut self, token: u32, parent: Option<usize>, prob: f32) -> Result<usize> {
        if let Some(p) = parent {
            if p >= self.tokens.len() {
                return Err(Error::Invalid(format!(
                    "draft node parent {p} does not exist (tree has {} nodes)",
                    self.tokens.len()
                )));
            }
        }
        self.tokens.push(token);
        self.parents.push(parent);
        self.probs.push(prob);
        Ok(self.tokens.len() - 1)
    }

    /// Add `other`'s nodes under the same root, in its order, until the tree holds `budget`
    /// nodes: a node whose token equals a sibling's already here is merged into that sibling
    /// (the verifier needs distinct siblings), a node whose parent was left out is left out.
    /// Returns how many nodes were added.
    pub fn graft(&mut self, other: &DraftTree, budget: usize) -> usize {
        let before = self.len();
        // Node of `self` that each node of `other` became (None: left out).
        let mut placed: Vec<Option<usize>> = Vec::with_capacity(other.len());
        for i in 0..other.len() {
            let parent = match other.parents[i] {
                None => Some(None),
                Some(p) => placed.get(p).copied().flatten().map(Some),
            };
            let at = parent.and_then(|parent| {
                let tok = other.tokens[i];
                let same =
                    (0..self.len()).find(|&j| self.parents[j] == parent && self.tokens[j] == tok);
                same.or_else(|| {
                    (self.len() < budget).then(|| {
                        self.tokens.push(tok);
                        self.parents.push(parent);
                        self.probs.push(other.probs[i]);
                        self.len() - 1
                    })
                })
            });
            placed.push(at);
        }
        self.len() - before
    }

    /// Depth of each node (children of the root have depth 1).
    pub fn depths(&self) -> Vec<u32> {
        let mut d = vec![0u32; self.len()];
        for i in 0..self.len() {
            d[i] = match self.parents[i] {
                None => 1,
                Some(p) => d[p] + 1,
            };
        }
        d
    }

    pub fn max_depth(&self) -> u32 {
        self.depths().into_iter().max().unwrap_or(0)
    }

    /// Check the invariants a drafter must keep (parents before children).
    pub fn validate(&self) -> Result<()> {
        if self.parents.len() != self.tokens.len() || self.probs.len() != self.tokens.len() {
            return Err(Error::Invalid("draft tree arrays differ in length".into()));
        }
        for (i, p) in self.parents.iter().enumerate() {
            if let Some(p) = *p {
                if p >= i {
                    return Err(Error::Invalid(format!(
                        "draft node {i} has parent {p}: nodes must be in topological order"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Batch tokens for the verification pass: `[root, nodes…]`.
    pub fn batch_tokens(&self, root: u32) -> Vec<u32> {
        std::iter::once(root)
            .chain(self.tokens.iter().copied())
            .collect()
    }

    /// Batch positions: `n_past` for the root, `n_past + depth` for each node.
    pub fn batch_positions(&self, n_past: u32) -> Vec<u32> {
        std::iter::once(n_past)
            .chain(self.depths().into_iter().map(|d| n_past + d))
            .collect()
    }

    /// Parent of each batch row (`None` for the root at row 0).
    pub fn batch_parents(&self) -> Vec<Option<usize>> {
        std::iter::once(None)
            .chain(self.parents.iter().map(|p| Some(p.map_or(0, |p| p + 1))))
            .collect()
    }

    /// Ancestor bitsets of the batch, `[T, words]` u32 with T = len + 1: bit j of row i is set
    /// iff batch row j is row i itself or one of its ancestors.
    pub fn batch_mask(&self, words: usize) -> Vec<u32> {
        ancestor_mask(&self.batch_parents(), words)
    }
}

/// The mask format belongs to the attention kernel that reads it.
pub use crate::kernels::attention::ancestor_mask;

/// Greedy verification on the host (the GPU does the same in `shaders/verify.wgsl`; this is
/// the reference and the fallback). `target_argmax[r]` is the target's choice after batch row
/// `r`. Returns the accepted batch rows (starting with the root, 0) and the bonus token.
pub fn verify_greedy(tree: &DraftTree, target_argmax: &[u32]) -> (Vec<usize>, u32) {
    let parents = tree.batch_parents();
    let mut keep = vec![0usize];
    let mut cur = 0usize;
    loop {
        let want = target_argmax[cur];
        let next =
            (1..parents.len()).find(|&r| parents[r] == Some(cur) && tree.tokens[r - 1] == want);
        match next {
            Some(r) => {
                keep.push(r);
                cur = r;
            }
            None => return (keep, want),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_positions_and_mask() {
        let t = DraftTree::chain(&[5, 6, 7]);
        assert_eq!(t.batch_tokens(4), vec![4, 5, 6, 7]);
        assert_eq!(t.batch_positions(10), vec![10, 11, 12, 13]);
        assert_eq!(t.batch_mask(1), vec![0b1, 0b11, 0b111, 0b1111]);
    }

    #[test]
    fn branching_tree_mask_sees_only_ancestors() {
        // root ─ a(0) ─ c(2)
        //      └ b(1) ─ d(3)
        let mut t = DraftTree::empty();
        let a = t.push(1, None, 0.6).unwrap();
        let b = t.push(2, None, 0.3).unwrap();
        t.push(3, Some(a), 0.5).unwrap();
        t.push(4, Some(b), 0.5).unwrap();
        t.validate().unwrap();
        assert_eq!(t.depths(), vec![1, 1, 2, 2]);
        assert_eq!(t.batch_positions(7), vec![7, 8, 8, 9, 9]);
        // Batch rows: 0 root, 1 a, 2 b, 3 c, 4 d.
        assert_eq!(
            t.batch_mask(1),
            vec![0b00001, 0b00011, 0b00101, 0b01011, 0b10101]
        );
        assert!(t.push(9, Some(17), 1.0).is_err());
    }

    #[test]
    fn greedy_verification_takes_the_longest_matching_path_and_a_bonus() {
        let mut t = DraftTree::empty();
        let a = t.push(1, None, 0.6).unwrap(); // row 1
        t.push(2, None, 0.3).unwrap(); // row 2
        t.push(3, Some(a), 0.5).unwrap(); // row 3
                                          // Target: after root → 1 (matches a), after a → 3 (matches c), after c → 9 (bonus).
        let argmax = [1, 3, 0, 9, 0];
        assert_eq!(verify_greedy(&t, &argmax), (vec![0, 1, 3], 9));
        // Target disagrees at once: nothing accepted, its token is the correction.
        assert_eq!(verify_greedy(&t, &[8, 3, 0, 9, 0]), (vec![0], 8));
        // Plain decoding: empty tree, the bonus is the next token.
        assert_eq!(verify_greedy(&DraftTree::empty(), &[42]), (vec![0], 42));
    }

    #[test]
    fn masks_span_several_words() {
        let toks: Vec<u32> = (0..40).collect();
        let t = DraftTree::chain(&toks);
        let m = t.batch_mask(2);
        assert_eq!(m[40 * 2], u32::MAX); // row 40 sees rows 0..=31 …
        assert_eq!(m[40 * 2 + 1], (1 << 9) - 1); // … and rows 32..=40
    }

    #[test]
    fn a_grafted_tree_merges_equal_siblings_and_stops_at_the_budget() -> Result<()> {
        // self: root → 1 → 2; other: root → 1 → 3, root → 4 → 5.
        let mut t = DraftTree::chain(&[1, 2]);
        let mut o = DraftTree::empty();
        let a = o.push(1, None, 0.5)?;
        o.push(3, Some(a), 0.5)?;
        let b = o.push(4, None, 0.5)?;
        o.push(5, Some(b), 0.5)?;
        let mut full = t.clone();
        assert_eq!(full.graft(&o, 16), 3);
        full.validate()?;
        assert_eq!(full.tokens, [1, 2, 3, 4, 5]);
        assert_eq!(full.parents, [None, Some(0), Some(0), None, Some(3)]);
        // A budget of 4: no room is left for "5".
        assert_eq!(t.graft(&o, 4), 2);
        assert_eq!(t.tokens, [1, 2, 3, 4]);
        Ok(())
    }
}
