//! Prompt lookup decoding (PLD / LLMA): draft by copying what followed an earlier occurrence
//! of the last few tokens in the prompt or the text generated so far. No model, no GPU work.
//! Several different continuations become branches of one tree (merged as a trie).

use super::tree::DraftTree;
use super::{DraftContext, Drafter, Proposal};
use crate::Result;

/// Settings of the prompt-lookup drafter.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptLookup {
    /// Longest suffix n-gram to match (tried first).
    pub max_ngram: usize,
    /// Shortest suffix n-gram to match.
    pub min_ngram: usize,
    /// Most continuations merged into the tree.
    pub max_branches: usize,
}

impl Default for PromptLookup {
    fn default() -> Self {
        PromptLookup {
            max_ngram: 4,
            min_ngram: 1,
            max_branches: 3,
        }
    }
}

impl PromptLookup {
    /// Propose up to `budget` nodes continuing `history` (whose last token is the root).
    /// Matches of longer n-grams come first, then more recent ones; each distinct
    /// continuation (up to `budget` tokens) is merged into the tree as a branch.
    pub fn propose(&self, history: &[u32], budget: usize) -> DraftTree {
        let mut tree = DraftTree::empty();
        if budget == 0 || history.len() < 2 {
            return tree;
        }
        let mut branches = 0;
        let hi = self.max_ngram.min(history.len() - 1);
        for n in (self.min_ngram.max(1)..=hi).rev() {
            let pattern = &history[history.len() - n..];
            // Most recent earlier occurrence first; the suffix itself is excluded.
            for start in (0..history.len() - n).rev() {
                if &history[start..start + n] != pattern {
                    continue;
                }
                let from = start + n;
                let room = budget - tree.len();
                let cont = &history[from..(from + room).min(history.len())];
                if cont.is_empty() || !insert_branch(&mut tree, cont, room) {
                    continue;
                }
                branches += 1;
                if branches >= self.max_branches || tree.len() >= budget {
                    return tree;
                }
            }
        }
        tree
    }
}

/// The prompt-lookup method: [`PromptLookup`] proposing at most `len` nodes per step.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    pub lookup: PromptLookup,
    pub len: usize,
}

impl Drafter for Lookup {
    fn max_budget(&self) -> usize {
        self.len
    }

    fn propose(
        &mut self,
        ctx: &mut DraftContext<'_>,
        _enc: &mut wgpu::CommandEncoder,
        budget: usize,
    ) -> Result<Proposal> {
        Ok(Proposal::Tree(
            self.lookup.propose(ctx.history, budget.min(self.len)),
        ))
    }
}

/// Merge `cont` into the tree as a path from the root, sharing existing prefixes; adds at most
/// `room` new nodes. Returns whether any node was added.
fn insert_branch(tree: &mut DraftTree, cont: &[u32], room: usize) -> bool {
    let mut parent: Option<usize> = None;
    let mut added = 0;
    for &tok in cont {
        let existing =
            (0..tree.len()).find(|&i| tree.parents[i] == parent && tree.tokens[i] == tok);
        parent = Some(match existing {
            Some(i) => i,
            None => {
                if added == room {
                    break;
                }
                added += 1;
                tree.tokens.push(tok);
                tree.parents.push(parent);
                tree.probs.push(1.0);
                tree.tokens.len() - 1
            }
        });
    }
    added > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_continuation_of_the_longest_match() {
        // "a b c d e ... a b c" → propose "d e".
        let h = [1, 2, 3, 4, 5, 9, 1, 2, 3];
        let t = PromptLookup {
            max_branches: 1,
            ..Default::default()
        }
        .propose(&h, 2);
        assert_eq!(
            t,
            DraftTree {
                tokens: vec![4, 5],
                parents: vec![None, Some(0)],
                probs: vec![1.0, 1.0]
            }
        );
    }

    #[test]
    fn different_continuations_become_branches() {
        // After "7" came 1 1 and later 2 2 7: the recent one fills the budget first, the
        // older one gets the remaining node as a second branch under the root.
        let h = [7, 1, 1, 7, 2, 2, 7];
        let t = PromptLookup {
            max_ngram: 1,
            min_ngram: 1,
            max_branches: 3,
        }
        .propose(&h, 4);
        t.validate().unwrap();
        assert_eq!(t.tokens, vec![2, 2, 7, 1]);
        assert_eq!(t.parents, vec![None, Some(0), Some(1), None]);
    }

    #[test]
    fn no_match_gives_an_empty_tree_and_budget_is_respected() {
        assert!(PromptLookup::default().propose(&[1, 2, 3, 4], 5).is_empty());
        let h: Vec<u32> = [5, 6, 7, 8, 9, 10, 5].to_vec();
        assert_eq!(PromptLookup::default().propose(&h, 3).len(), 3);
        assert!(PromptLookup::default().propose(&h, 0).is_empty());
    }
}
