//! The drafter lifecycle from outside the registry: a drafter installed with
//! `Engine::set_drafter` is begun once per generation, proposes host trees, and observes
//! every step's verdict — including, when it asks, the target's top-k ids per verified row,
//! computed on the GPU in the verification submit. The top-1 after each kept row must be the
//! token the target emitted there (greedy), and drafting must not change the output.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use tandem::engine::{Engine, EngineOptions, GenerateOptions, MethodSpec};
use tandem::model::config::Arch;
use tandem::model::gguf::GgufFile;
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::model::writer::tiny_model;
use tandem::speculative::{DraftContext, DraftTree, Drafter, Proposal, Verdict};
use tandem::Result;

const K: usize = 4;

/// One observed step: batch, parents, emitted, top-k ids.
type Seen = (Vec<u32>, Vec<Option<usize>>, Vec<u32>, Vec<u32>);

/// Proposes a two-branch tree of the previous verdict's top-2 successors of the last kept
/// row's parent (any guess will do: the test checks what comes back, not acceptance).
struct Probe {
    begun: Rc<RefCell<usize>>,
    seen: Rc<RefCell<Vec<Seen>>>,
    guess: Vec<u32>,
}

impl Drafter for Probe {
    fn max_budget(&self) -> usize {
        3
    }

    fn target_top_k(&self) -> usize {
        K
    }

    fn begin(&mut self, _ctx: &mut DraftContext<'_>) -> Result<()> {
        *self.begun.borrow_mut() += 1;
        Ok(())
    }

    fn propose(
        &mut self,
        _ctx: &mut DraftContext<'_>,
        _enc: &mut wgpu::CommandEncoder,
        budget: usize,
    ) -> Result<Proposal> {
        let mut tree = DraftTree::empty();
        for (i, &tok) in self.guess.iter().enumerate().take(budget.min(2)) {
            let n = tree.push(tok, None, 1.0)?;
            if i == 0 && budget >= 3 {
                tree.push(tok, Some(n), 1.0)?;
            }
        }
        Ok(Proposal::Tree(tree))
    }

    fn observe(&mut self, _ctx: &mut DraftContext<'_>, v: &Verdict<'_>) -> Result<()> {
        let top = v.target_top_k.expect("the top-k was asked for").to_vec();
        // Next step's guess: the target's 2nd and 3rd choices after the last kept row.
        let last = *v.kept_rows().last().unwrap_or(&0);
        self.guess = top[last * K + 1..last * K + 3].to_vec();
        self.seen.borrow_mut().push((
            v.batch.to_vec(),
            v.parents.to_vec(),
            v.emitted.to_vec(),
            top,
        ));
        Ok(())
    }
}

#[test]
fn a_custom_drafter_sees_the_target_top_k_of_every_verified_row() {
    let Some(gpu) = common::gpu() else {
        return;
    };
    let file = ModelFile::from_gguf(
        GgufFile::from_bytes(tiny_model(Arch::Llama, GgmlType::Q8_0, 5).unwrap()).unwrap(),
    )
    .unwrap();
    let mut engine = Engine::new(
        gpu,
        &file,
        EngineOptions {
            max_ctx: 256,
            max_draft: 8,
        },
    )
    .unwrap();
    let prompt: Vec<u32> = vec![1, 17, 42, 99, 7, 3];
    let plain = engine
        .generate(
            &prompt,
            &GenerateOptions {
                max_tokens: 24,
                ..Default::default()
            },
            |_| true,
        )
        .unwrap();
    engine.reset();
    let (begun, seen) = (Rc::new(RefCell::new(0)), Rc::new(RefCell::new(Vec::new())));
    let method = MethodSpec::parse("lookup:len=3").unwrap();
    engine.set_drafter(
        method.clone(),
        Box::new(Probe {
            begun: begun.clone(),
            seen: seen.clone(),
            guess: vec![5, 6],
        }),
    );
    let opts = GenerateOptions {
        max_tokens: 24,
        method,
        adaptive: false,
        ..Default::default()
    };
    let out = engine.generate(&prompt, &opts, |_| true).unwrap();
    assert_eq!(
        out.tokens, plain.tokens,
        "a custom drafter changed the output"
    );
    assert_eq!(*begun.borrow(), 1);
    let seen = seen.take();
    assert_eq!(seen.len(), out.stats.target_passes);
    let mut drafted = 0;
    for (batch, parents, emitted, top) in seen.iter() {
        assert_eq!(top.len(), batch.len() * K);
        assert_eq!(parents.len() + 1, batch.len());
        drafted += batch.len() - 1;
        let v = Verdict {
            batch,
            parents,
            emitted,
            target_top_k: Some(top),
        };
        let kept = v.kept_rows();
        assert_eq!(
            kept.len(),
            emitted.len(),
            "every accepted token is a kept row"
        );
        for (i, &row) in kept.iter().enumerate() {
            assert_eq!(
                top[row * K],
                emitted[i],
                "top-1 after row {row} of {batch:?}"
            );
        }
    }
    assert!(drafted > 0, "the probe drafted nothing");
    // The drafter stays with the engine: a second generation with the same method begins it
    // again rather than building a fresh one.
    engine.generate(&prompt, &opts, |_| true).unwrap();
    assert_eq!(*begun.borrow(), 2);
}
