//! Speculative decoding: draft trees, drafters, verification.
pub mod lookup;
pub mod tree;

pub use lookup::PromptLookup;
pub use tree::DraftTree;
