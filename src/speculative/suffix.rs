//! SuffixDecoding (Oliaro et al., 2024; vLLM's `suffix` method): model-free drafting from
//! suffix structures over the current request's prompt + output and over the outputs of
//! this engine's earlier generations. No model, no GPU work.
//!
//! The structure is a suffix trie of bounded depth ([`SuffixTrie`]): every window
//! `text[i..i + depth]` is a path from the root, and a node's count is how many times its
//! string occurs in the text. A bounded trie rather than a full suffix tree (Ukkonen) or a
//! suffix automaton because depth bounds both the match and the draft anyway (vLLM's
//! `max_tree_depth` = 24 bounds their sum), because counts then come out of insertion
//! directly (a window adds 1 along its path), and because removing one request's windows
//! (the global structure's eviction) is the same walk with −1, which neither a suffix tree
//! nor an automaton allows cheaply. Size: at most `depth` nodes per token; appending a token
//! costs `depth` child look-ups (the trie keeps the nodes of the last `depth` suffixes).
//!
//! A step matches the longest suffix of the history (at most `depth − 1` tokens) that has a
//! continuation, in the local trie and in the global one; below the match node the draft is
//! grown best-first by path probability (product of `count(child) / count(parent)`), keeping
//! nodes of probability ≥ `min_prob`, at most `match length × factor` nodes and never deeper
//! than `depth − match length`. The better-scored tree (sum of path probabilities: the
//! expected number of accepted tokens) of the two is proposed.
//!
//! The global trie holds the outputs of the last `max_requests` generations (the oldest is
//! evicted first) and at most `max_nodes` nodes (oldest outputs evicted until it fits).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use super::tree::DraftTree;
use super::{DraftContext, Drafter, Proposal, Verdict};
use crate::Result;

/// One trie node: its occurrence count and its children as `(token, node)`.
#[derive(Clone, Debug, Default)]
struct Node {
    count: u32,
    children: Vec<(u32, u32)>,
}

/// A suffix trie of bounded depth over one growing text (or several texts, for the global
/// structure), with occurrence counts.
#[derive(Clone, Debug)]
pub struct SuffixTrie {
    depth: usize,
    nodes: Vec<Node>,
    /// Freed node slots (after removals).
    free: Vec<u32>,
    /// Nodes of the text's last suffixes of length 1..depth−1 (to extend on append),
    /// shortest first.
    active: Vec<u32>,
}

const ROOT: u32 = 0;

impl SuffixTrie {
    /// An empty trie whose paths are at most `depth` tokens long (`depth` ≥ 1).
    pub fn new(depth: usize) -> Self {
        SuffixTrie {
            depth: depth.max(1),
            nodes: vec![Node::default()],
            free: Vec::new(),
            active: Vec::new(),
        }
    }

    /// Longest path length.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Live nodes, the root included (the memory measure: about 40 bytes each).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    fn child(&self, node: u32, tok: u32) -> Option<u32> {
        self.nodes[node as usize]
            .children
            .iter()
            .find(|c| c.0 == tok)
            .map(|c| c.1)
    }

    fn child_or_new(&mut self, node: u32, tok: u32) -> u32 {
        if let Some(c) = self.child(node, tok) {
            return c;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Node::default();
                id
            }
            None => {
                self.nodes.push(Node::default());
                (self.nodes.len() - 1) as u32
            }
        };
        self.nodes[node as usize].children.push((tok, id));
        id
    }

    /// Start a new text: later appends do not continue the previous one.
    pub fn end_text(&mut self) {
        self.active.clear();
    }

    /// Append `tok` to the current text: each suffix ending here (up to `depth` tokens)
    /// gains one occurrence.
    pub fn push(&mut self, tok: u32) {
        let mut next = Vec::with_capacity(self.depth);
        // The suffix of length 1, then each active suffix extended by `tok`.
        let from: Vec<u32> = std::iter::once(ROOT)
            .chain(self.active.iter().copied())
            .collect();
        for (len, node) in from.into_iter().enumerate() {
            if len + 1 > self.depth {
                break;
            }
            let c = self.child_or_new(node, tok);
            self.nodes[c as usize].count += 1;
            if len + 1 < self.depth {
                next.push(c);
            }
        }
        self.active = next;
    }

    /// Append every token of `text` to the current text.
    pub fn extend(&mut self, text: &[u32]) {
        for &t in text {
            self.push(t);
        }
    }

    /// Remove the occurrences `text` added when it was appended as one whole text (every
    /// window `text[i..i + depth]`); nodes left with no occurrence are freed.
    pub fn remove_text(&mut self, text: &[u32]) {
        for i in 0..text.len() {
            let mut node = ROOT;
            for &tok in &text[i..(i + self.depth).min(text.len())] {
                let Some(c) = self.child(node, tok) else {
                    break;
                };
                let n = &mut self.nodes[c as usize];
                n.count = n.count.saturating_sub(1);
                if n.count == 0 {
                    // Its descendants count no more than it does: free the whole subtree.
                    self.nodes[node as usize].children.retain(|x| x.1 != c);
                    self.free_subtree(c);
                    break;
                }
                node = c;
            }
        }
        self.active.clear();
    }

    fn free_subtree(&mut self, node: u32) {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            let children = std::mem::take(&mut self.nodes[n as usize].children);
            stack.extend(children.into_iter().map(|c| c.1));
            self.nodes[n as usize].count = 0;
            self.free.push(n);
        }
    }

    /// The node of `pattern`, if it occurs.
    fn find(&self, pattern: &[u32]) -> Option<u32> {
        pattern
            .iter()
            .try_fold(ROOT, |node, &tok| self.child(node, tok))
    }

    /// Occurrences of `pattern` (at most `depth` tokens) in the text.
    pub fn count(&self, pattern: &[u32]) -> u32 {
        if pattern.is_empty() || pattern.len() > self.depth {
            return 0;
        }
        self.find(pattern)
            .map_or(0, |n| self.nodes[n as usize].count)
    }

    /// The tokens that follow `pattern` and how often, most frequent first (ties by token).
    pub fn continuations(&self, pattern: &[u32]) -> Vec<(u32, u32)> {
        let Some(node) = self.find(pattern) else {
            return Vec::new();
        };
        let mut c: Vec<(u32, u32)> = self.nodes[node as usize]
            .children
            .iter()
            .map(|&(t, n)| (t, self.nodes[n as usize].count))
            .collect();
        c.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        c
    }

    /// The length of the longest suffix of `history` (at most `depth − 1` tokens) that
    /// occurs followed by at least one token, and its node.
    pub fn longest_match(&self, history: &[u32]) -> Option<(usize, u32)> {
        let hi = (self.depth - 1).min(history.len());
        (1..=hi).rev().find_map(|m| {
            let node = self.find(&history[history.len() - m..])?;
            (!self.nodes[node as usize].children.is_empty()).then_some((m, node))
        })
    }

    /// The draft below the longest match of `history`: best-first by path probability,
    /// nodes of path probability ≥ `min_prob`, at most `max_nodes` of them. `self_count` is
    /// subtracted from the match node's count (1 when the history itself is in this trie,
    /// whose current occurrence has no continuation yet).
    pub fn draft(
        &self,
        history: &[u32],
        max_nodes: usize,
        factor_percent: usize,
        min_prob: f32,
        self_count: u32,
    ) -> SuffixDraft {
        let mut tree = DraftTree::empty();
        let Some((m, node)) = self.longest_match(history) else {
            return SuffixDraft {
                tree,
                score: 0.0,
                matched: 0,
            };
        };
        let cap = max_nodes.min((m * factor_percent).div_ceil(100));
        let room = self.depth - m;
        // (path prob, node, tree parent, conditional prob, depth below the match)
        let mut heap: BinaryHeap<Cand> = BinaryHeap::new();
        let push_children = |heap: &mut BinaryHeap<Cand>,
                             n: u32,
                             parent: Option<usize>,
                             path: f32,
                             level: usize,
                             minus: u32| {
            let node = &self.nodes[n as usize];
            let total = node.count.saturating_sub(minus).max(1) as f32;
            for &(tok, c) in &node.children {
                let p = self.nodes[c as usize].count as f32 / total;
                heap.push(Cand {
                    path: path * p,
                    cond: p,
                    tok,
                    node: c,
                    parent,
                    level,
                });
            }
        };
        push_children(&mut heap, node, None, 1.0, 1, self_count);
        let mut score = 0.0;
        while tree.len() < cap {
            let Some(c) = heap.pop() else { break };
            if c.path < min_prob {
                break;
            }
            tree.tokens.push(c.tok);
            tree.parents.push(c.parent);
            tree.probs.push(c.cond);
            score += c.path;
            if c.level < room {
                let me = tree.len() - 1;
                push_children(&mut heap, c.node, Some(me), c.path, c.level + 1, 0);
            }
        }
        SuffixDraft {
            tree,
            score,
            matched: m,
        }
    }
}

/// A draft below a suffix match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SuffixDraft {
    pub tree: DraftTree,
    /// Sum of the nodes' path probabilities (the expected number of accepted tokens).
    pub score: f32,
    /// Length of the matched suffix of the history (0: no match).
    pub matched: usize,
}

/// A candidate draft node, ordered by path probability (ties: lower token first).
struct Cand {
    path: f32,
    cond: f32,
    tok: u32,
    node: u32,
    parent: Option<usize>,
    level: usize,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.path
            .total_cmp(&o.path)
            .then(o.tok.cmp(&self.tok))
            .then(o.node.cmp(&self.node))
    }
}

/// Settings of the SuffixDecoding drafter (vLLM's defaults: depth 24, min prob 0.1,
/// factor 1.0).
#[derive(Clone, Debug, PartialEq)]
pub struct SuffixOptions {
    /// Most draft nodes per step.
    pub len: usize,
    /// Trie depth: bounds match length + draft depth.
    pub depth: usize,
    /// Least path probability of a draft node, in percent.
    pub min_prob_percent: usize,
    /// Most draft nodes per matched token, in percent (100 = one node per matched token).
    pub factor_percent: usize,
    /// Earlier generations' outputs kept in the global trie.
    pub max_requests: usize,
    /// Most nodes of the global trie.
    pub max_nodes: usize,
}

impl Default for SuffixOptions {
    fn default() -> Self {
        SuffixOptions {
            len: 24,
            depth: 24,
            min_prob_percent: 10,
            factor_percent: 100,
            max_requests: 1000,
            max_nodes: 1 << 20,
        }
    }
}

/// The SuffixDecoding method: a local trie over this request, a global one over earlier
/// outputs (kept across generations while the method stays the same).
#[derive(Clone, Debug)]
pub struct Suffix {
    pub options: SuffixOptions,
    local: SuffixTrie,
    /// Tokens of this request indexed in `local` (prompt + output so far).
    text: Vec<u32>,
    /// Prompt length of this request (its output follows).
    prompt_len: usize,
    global: SuffixTrie,
    /// Outputs in the global trie, oldest first.
    outputs: VecDeque<Vec<u32>>,
}

impl Suffix {
    pub fn new(options: SuffixOptions) -> Self {
        Suffix {
            local: SuffixTrie::new(options.depth),
            global: SuffixTrie::new(options.depth),
            text: Vec::new(),
            prompt_len: 0,
            outputs: VecDeque::new(),
            options,
        }
    }

    /// The global trie (earlier generations' outputs).
    pub fn global(&self) -> &SuffixTrie {
        &self.global
    }

    /// Outputs held by the global trie.
    pub fn cached_requests(&self) -> usize {
        self.outputs.len()
    }

    /// Add one finished generation's output to the global trie, evicting the oldest outputs
    /// beyond `max_requests` or `max_nodes`.
    pub fn add_output(&mut self, output: Vec<u32>) {
        if output.is_empty() {
            return;
        }
        self.global.end_text();
        self.global.extend(&output);
        self.global.end_text();
        self.outputs.push_back(output);
        while self.outputs.len() > self.options.max_requests
            || self.global.node_count() > self.options.max_nodes
        {
            let Some(old) = self.outputs.pop_front() else {
                break;
            };
            self.global.remove_text(&old);
        }
    }

    /// Move the current request's output into the global trie and start a new request.
    fn finish_request(&mut self) {
        let output = self.text.split_off(self.prompt_len.min(self.text.len()));
        self.add_output(output);
        self.text.clear();
        self.local = SuffixTrie::new(self.options.depth);
        self.prompt_len = 0;
    }

    /// Index `history` in the local trie (it extends what is indexed, or a new request began).
    fn sync(&mut self, history: &[u32]) {
        if history.len() < self.text.len() || history[..self.text.len()] != self.text[..] {
            self.text.clear();
            self.local = SuffixTrie::new(self.options.depth);
        }
        let new = &history[self.text.len()..];
        self.local.extend(new);
        self.text.extend_from_slice(new);
    }

    /// The draft after `history` (at most `budget` nodes).
    pub fn propose_for(&mut self, history: &[u32], budget: usize) -> DraftTree {
        self.draft_after(history, budget).tree
    }

    /// The better-scored of the local and the global draft after `history` (at most
    /// `budget` nodes), with the length of its match.
    pub fn draft_after(&mut self, history: &[u32], budget: usize) -> SuffixDraft {
        self.sync(history);
        let o = &self.options;
        let n = budget.min(o.len);
        let min_prob = o.min_prob_percent as f32 / 100.0;
        let local = self.local.draft(history, n, o.factor_percent, min_prob, 1);
        let global = self.global.draft(history, n, o.factor_percent, min_prob, 0);
        if global.score > local.score {
            global
        } else {
            local
        }
    }
}

impl Drafter for Suffix {
    fn max_budget(&self) -> usize {
        self.options.len
    }

    fn begin(&mut self, ctx: &mut DraftContext<'_>) -> Result<()> {
        self.finish_request();
        self.sync(ctx.history);
        self.prompt_len = ctx.history.len();
        Ok(())
    }

    fn propose(
        &mut self,
        ctx: &mut DraftContext<'_>,
        _enc: &mut wgpu::CommandEncoder,
        budget: usize,
    ) -> Result<Proposal> {
        Ok(Proposal::Tree(self.propose_for(ctx.history, budget)))
    }

    fn observe(&mut self, ctx: &mut DraftContext<'_>, verdict: &Verdict<'_>) -> Result<()> {
        self.sync(ctx.history);
        self.local.extend(verdict.emitted);
        self.text.extend_from_slice(verdict.emitted);
        Ok(())
    }

    fn reset(&mut self) {
        *self = Suffix::new(self.options.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_the_most_frequent_continuation_as_a_tree() {
        // After "1 2": "3 4" twice, "5" once; the history ends in "1 2".
        let h = [1, 2, 3, 4, 9, 1, 2, 3, 4, 9, 1, 2, 5, 9, 1, 2];
        let mut s = Suffix::new(SuffixOptions {
            min_prob_percent: 20,
            factor_percent: 300,
            ..Default::default()
        });
        let t = s.propose_for(&h, 8);
        t.validate().unwrap();
        // "5 9 1 2" occurs only now, so "9 1 2" is the match (before: then 3, then 5, each
        // 1/2); 3 is followed by 4 (1/1, path 1/2: ties go to the lower token). A match of
        // 3 × 300% allows 9 nodes, the budget 8.
        assert_eq!(t.len(), 8);
        assert_eq!(&t.tokens[..3], &[3, 4, 5]);
        assert_eq!(&t.parents[..3], &[None, Some(0), None]);
        assert_eq!(&t.probs[..3], &[0.5, 1.0, 0.5]);
    }
}
