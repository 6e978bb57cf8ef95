//! Token Recycling (`recycle`) through the engine: after every step its adjacency table equals
//! a CPU reference (the table before the step, with each verified row's token given the CPU
//! top-k of the target's logits at that row, read back from the GPU by decoding the row's
//! path alone, which is bit-identical to the row in the tree); and greedy output equals plain
//! decoding token for token on tiny models and on SmolLM2.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use tandem::engine::{Engine, EngineOptions, GenerateOptions, MethodSpec};
use tandem::model::config::Arch;
use tandem::model::loader::ModelFile;
use tandem::model::quant::GgmlType;
use tandem::speculative::{DraftContext, Drafter, Proposal, Recycle, Verdict};
use tandem::Result;

type Table = BTreeMap<u32, Vec<u32>>;

use common::tiny;

fn table(r: &Recycle) -> Table {
    r.rows().map(|(t, s)| (t, s.to_vec())).collect()
}

/// One step as the recorder saw it: the cached tokens, batch, parents, the table after.
struct Step {
    committed: Vec<u32>,
    batch: Vec<u32>,
    parents: Vec<Option<usize>>,
    after: Table,
}

/// A `Recycle` drafter that records every step.
struct Recorder {
    inner: Recycle,
    steps: Rc<RefCell<Vec<Step>>>,
}

impl Drafter for Recorder {
    fn max_budget(&self) -> usize {
        self.inner.max_budget()
    }

    fn target_top_k(&self) -> usize {
        self.inner.target_top_k()
    }

    fn propose(
        &mut self,
        ctx: &mut DraftContext<'_>,
        enc: &mut wgpu::CommandEncoder,
        budget: usize,
    ) -> Result<Proposal> {
        self.inner.propose(ctx, enc, budget)
    }

    fn observe(&mut self, ctx: &mut DraftContext<'_>, v: &Verdict<'_>) -> Result<()> {
        self.inner.observe(ctx, v)?;
        self.steps.borrow_mut().push(Step {
            committed: ctx.committed.to_vec(),
            batch: v.batch.to_vec(),
            parents: v.parents.to_vec(),
            after: table(&self.inner),
        });
        Ok(())
    }
}

/// The `k` largest logits' ids, descending, ties to the lower id (the GPU top-k's order).
fn cpu_top_k(logits: &[f32], k: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    ids.truncate(k);
    ids
}

#[test]
fn the_table_after_each_step_equals_a_cpu_reference_from_the_target_logits() {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny(Arch::Llama, GgmlType::Q8_0, 5);
    let mut engine = Engine::new(
        gpu,
        &file,
        EngineOptions {
            max_ctx: 256,
            max_draft: 8,
        },
    )
    .unwrap();
    let k = 4;
    let method = MethodSpec::parse(&format!("recycle:k={k},nodes=6")).unwrap();
    let steps = Rc::new(RefCell::new(Vec::new()));
    engine.set_drafter(
        method.clone(),
        Box::new(Recorder {
            inner: Recycle::new(k, 6),
            steps: steps.clone(),
        }),
    );
    let prompt: Vec<u32> = vec![1, 17, 42, 99, 7, 3, 17, 42];
    let opts = GenerateOptions {
        max_tokens: 20,
        method,
        adaptive: false,
        ..Default::default()
    };
    engine.generate(&prompt, &opts, |_| true).unwrap();
    let steps = steps.take();
    assert!(!steps.is_empty());
    let drafted: usize = steps.iter().map(|s| s.batch.len() - 1).sum();
    assert!(
        drafted > 0,
        "recycle drafted nothing in {} steps",
        steps.len()
    );
    // Rebuild every step's table on the CPU from the target's logits at each verified row.
    let tf = engine.session();
    let v = tf.config().vocab_size;
    let mut reference = Table::new();
    for (n, step) in steps.iter().enumerate() {
        for row in 0..step.batch.len() {
            // The path root → row, decoded one token at a time after the cached tokens.
            let mut path = vec![row];
            let mut r = row;
            while r > 0 {
                // Draft node r - 1's parent: a node (row p + 1) or the root (row 0).
                r = step.parents[r - 1].map_or(0, |p| p + 1);
                path.push(r);
            }
            path.reverse();
            let n_past = step.committed.len();
            tf.prefill(&engine.gpu, &step.committed, 0).unwrap();
            for (depth, &r) in path.iter().enumerate() {
                tf.forward(
                    &engine.gpu,
                    &[step.batch[r]],
                    &[(n_past + depth) as u32],
                    &tf.causal_mask(1),
                    n_past + depth,
                    0..1,
                )
                .unwrap();
            }
            let logits = tf.read_logits_blocking(&engine.gpu, 1);
            assert_eq!(logits.len(), v);
            reference.insert(step.batch[row], cpu_top_k(&logits, k));
        }
        assert_eq!(
            step.after, reference,
            "the table after step {n} (batch {:?}, parents {:?})",
            step.batch, step.parents
        );
    }
    engine.reset();
}

#[test]
fn greedy_recycle_equals_plain_on_tiny_models() {
    for (arch, ty, seed) in [
        (Arch::Llama, GgmlType::Q8_0, 7),
        (Arch::Qwen2, GgmlType::Q4_K, 3),
    ] {
        let Some(gpu) = common::gpu() else { return };
        let file = tiny(arch, ty, seed);
        let mut engine = Engine::new(
            gpu,
            &file,
            EngineOptions {
                max_ctx: 256,
                max_draft: 16,
            },
        )
        .unwrap();
        let prompt = engine.tokenizer.encode("the world and the", false).unwrap();
        let plain = GenerateOptions {
            max_tokens: 40,
            ..Default::default()
        };
        let a = engine.generate(&prompt, &plain, |_| true).unwrap();
        for adaptive in [false, true] {
            let o = GenerateOptions {
                method: MethodSpec::parse("recycle:nodes=12").unwrap(),
                adaptive,
                ..plain.clone()
            };
            let b = engine.generate(&prompt, &o, |_| true).unwrap();
            assert_eq!(
                a.tokens, b.tokens,
                "{arch:?}/{ty:?} adaptive={adaptive}: recycle changed the greedy output"
            );
            assert!(b.stats.drafted > 0, "{arch:?}: recycle drafted nothing");
            eprintln!(
                "{arch:?}/{ty:?} adaptive={adaptive}: τ = {:.2}, {} of {} drafted accepted",
                b.stats.mean_accepted_tokens, b.stats.accepted, b.stats.drafted
            );
        }
    }
}

/// SmolLM2 (one fixture prompt in CI, all with TANDEM_SLOW=1): recycle, and hybrid (suffix
/// on long matches, else recycle), give plain's tokens.
#[test]
fn smollm2_greedy_recycle_and_hybrid_equal_plain() {
    let Some(gpu) = common::gpu() else { return };
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let file = ModelFile::open(&path).unwrap();
    let mut engine = Engine::new(
        gpu,
        &file,
        EngineOptions {
            max_ctx: 512,
            max_draft: 16,
        },
    )
    .unwrap();
    let recs = common::greedy_fixtures("smollm2-135m");
    let n = if common::slow("all SmolLM2 recycle and hybrid prompts") {
        recs.len()
    } else {
        1
    };
    for rec in &recs[..n] {
        let plain = GenerateOptions {
            max_tokens: 16,
            ..Default::default()
        };
        let a = engine.generate(&rec.prompt_ids, &plain, |_| true).unwrap();
        for method in ["recycle", "hybrid"] {
            let o = GenerateOptions {
                method: MethodSpec::parse(method).unwrap(),
                ..plain.clone()
            };
            let b = engine.generate(&rec.prompt_ids, &o, |_| true).unwrap();
            assert_eq!(
                a.tokens, b.tokens,
                "{method} changed the output for {:?}",
                rec.prompt
            );
        }
    }
}
