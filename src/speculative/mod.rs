//! Speculative decoding: draft trees, drafters, the adaptive budget, verification.
pub mod budget;
pub mod lookup;
pub mod tree;

pub use budget::Budget;
pub use lookup::PromptLookup;
pub use tree::DraftTree;

/// Something that proposes a draft tree after the history (prompt + generated tokens, whose
/// last token is the root). Drafters know nothing of verification: the tree is the contract.
pub trait Drafter {
    fn propose(&mut self, history: &[u32], budget: usize) -> DraftTree;
}
