//! Driving the engine through a question set: each question is answered as a chat with the
//! target's template (a later turn sees the earlier answers), by every method in turn, from
//! empty KV caches, so each method starts every question from the same state and load that
//! drifts during a long run touches all methods alike.

use super::metrics::{QuestionRecord, TurnRecord, BASELINE};
use super::questions::{task_group, Question};
use tandem::engine::{Engine, Event, GenerateOptions, MethodSpec, SampleParams};
use tandem::gpu::seconds;
use tandem::tokenizer::ChatMessage;
use tandem::{Error, Result};

/// A method as the benchmark names it (its spec's text: `plain`, `sps`, `tree:nodes=16`)
/// with its parameters.
#[derive(Clone, Debug)]
pub struct BenchMethod {
    pub name: String,
    pub method: MethodSpec,
}

impl BenchMethod {
    pub fn new(method: MethodSpec) -> Self {
        BenchMethod {
            name: method.to_string(),
            method,
        }
    }
}

/// How every question is answered.
#[derive(Clone, Copy, Debug)]
pub struct RunSettings {
    pub max_new_tokens: usize,
    /// The engine's adaptive draft budget (off: every step drafts the full budget).
    pub adaptive: bool,
    /// Tokens of the warm-up generation each method runs before anything is timed
    /// (0: no warm-up).
    pub warmup_tokens: usize,
    /// Sampling rule (None: greedy). Under sampling every method draws from the target's
    /// distribution, so outputs are compared in distribution, not token for token.
    pub sampling: Option<SampleParams>,
}

/// What the runner is doing, for a progress display.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A method's warm-up generation is starting.
    Warmup { method: &'a str },
    /// A question turn is starting (`turn` is 1-based).
    Turn {
        method: &'a str,
        question: &'a Question,
        turn: usize,
    },
    /// A step emitted `n` tokens; `done` tokens of this turn so far.
    Tokens { n: usize, done: usize },
    /// A question is answered by one method; `records` holds every record so far.
    Done {
        record: &'a QuestionRecord,
        records: &'a [QuestionRecord],
    },
}

/// Puts the question (and method) in front of an error's message.
fn at_question(e: Error, method: &str, q: &Question, turn: usize) -> Error {
    let w = |m: String| {
        format!(
            "question {} (line {}) turn {turn}, {method}: {m}",
            q.id, q.line
        )
    };
    match e {
        Error::Context(m) => Error::Context(w(m)),
        Error::Invalid(m) => Error::Invalid(w(m)),
        Error::Tokenizer(m) => Error::Tokenizer(w(m)),
        Error::Gpu(m) => Error::Gpu(w(m)),
        Error::Unsupported(m) => Error::Unsupported(w(m)),
        other => other,
    }
}

/// The methods in run order: the baseline first (its speed is what the others are divided
/// by, and it must exist before the losslessness check can compare).
pub fn run_order(methods: &[BenchMethod]) -> Vec<BenchMethod> {
    let mut v: Vec<BenchMethod> = methods
        .iter()
        .filter(|m| m.name == BASELINE)
        .cloned()
        .collect();
    v.extend(methods.iter().filter(|m| m.name != BASELINE).cloned());
    v
}

/// Answers one question with one method, from empty KV caches. The method's drafter keeps
/// what it learned from earlier questions (a suffix trie of earlier outputs, a recycling
/// table), as it would in a server; the warm-up's is forgotten.
pub fn answer(
    engine: &mut Engine,
    question: &Question,
    spec: &BenchMethod,
    settings: &RunSettings,
    progress: &mut dyn FnMut(Progress),
) -> Result<QuestionRecord> {
    engine.clear_cache();
    let mut messages: Vec<ChatMessage> = Vec::new();
    let mut turns = Vec::new();
    for (i, user) in question.turns.iter().enumerate() {
        progress(Progress::Turn {
            method: &spec.name,
            question,
            turn: i + 1,
        });
        messages.push(ChatMessage::user(user.clone()));
        let turn = answer_turn(engine, &messages, spec, settings, progress)
            .map_err(|e| at_question(e, &spec.name, question, i + 1))?;
        // Spec-Bench feeds the decoded answer back, stripped.
        messages.push(ChatMessage::assistant(turn.text.trim()));
        turns.push(turn);
    }
    Ok(QuestionRecord {
        method: spec.name.clone(),
        question_id: question.id.clone(),
        category: question.category.clone(),
        group: task_group(&question.category),
        turns,
    })
}

fn answer_turn(
    engine: &mut Engine,
    messages: &[ChatMessage],
    spec: &BenchMethod,
    settings: &RunSettings,
    progress: &mut dyn FnMut(Progress),
) -> Result<TurnRecord> {
    let prompt = engine.tokenizer.apply_chat_template(messages, true)?;
    let ids = engine.tokenizer.encode(&prompt, true)?;
    let opts = GenerateOptions {
        max_tokens: settings.max_new_tokens,
        stop: vec![],
        method: spec.method.clone(),
        adaptive: settings.adaptive,
        sampling: settings.sampling,
        ..Default::default()
    };
    let mut accept_lengths = Vec::new();
    let mut step_seconds = Vec::new();
    let mut step_drafter_seconds = Vec::new();
    let mut step_proposed = Vec::new();
    let mut done = 0;
    let t0 = seconds();
    let mut last = t0;
    let out = engine.generate(&ids, &opts, |ev| {
        let Event::Tokens {
            ids,
            drafter_seconds,
            proposed,
            ..
        } = ev;
        step_drafter_seconds.push(*drafter_seconds);
        step_proposed.push(*proposed);
        let now = seconds();
        step_seconds.push(now - last);
        last = now;
        accept_lengths.push(ids.len());
        done += ids.len();
        progress(Progress::Tokens { n: ids.len(), done });
        true
    })?;
    let wall = seconds() - t0;
    let s = &out.stats;
    Ok(TurnRecord {
        prompt_tokens: s.prompt_tokens,
        reused_prompt_tokens: s.reused_prompt_tokens,
        first_step_tokens: accept_lengths.first().copied().unwrap_or(0),
        wall_seconds: wall,
        prefill_seconds: s.prefill_seconds,
        decode_seconds: s.decode_seconds,
        target_passes: s.target_passes,
        drafter_passes: s.drafter_passes,
        drafted: s.drafted,
        accepted: s.accepted,
        accept_lengths,
        step_seconds,
        step_drafter_seconds,
        step_proposed,
        stop_reason: out.stop_reason,
        text: out.text,
        tokens: out.tokens,
    })
}

/// One short untimed generation per method (pipelines compiled, buffers touched), on the
/// question with the shortest first turn. Drafting runs at full budget so its paths are warm.
pub fn warm_up(
    engine: &mut Engine,
    questions: &[Question],
    methods: &[BenchMethod],
    settings: &RunSettings,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let Some(q) = questions.iter().min_by_key(|q| q.turns[0].len()) else {
        return Ok(());
    };
    if settings.warmup_tokens == 0 {
        return Ok(());
    }
    let short = RunSettings {
        max_new_tokens: settings.warmup_tokens,
        adaptive: false,
        ..*settings
    };
    let first = [ChatMessage::user(q.turns[0].clone())];
    for spec in methods {
        progress(Progress::Warmup { method: &spec.name });
        engine.reset();
        answer_turn(engine, &first, spec, &short, &mut |_| {})
            .map_err(|e| at_question(e, &format!("{} (warm-up)", spec.name), q, 1))?;
    }
    engine.reset();
    Ok(())
}

/// Warms up, then answers every question with every method (baseline first, methods
/// interleaved per question). Returns the records in run order.
pub fn run_questions(
    engine: &mut Engine,
    questions: &[Question],
    methods: &[BenchMethod],
    settings: &RunSettings,
    mut progress: impl FnMut(Progress),
) -> Result<Vec<QuestionRecord>> {
    if settings.max_new_tokens == 0 {
        return Err(Error::Invalid("max new tokens must be at least 1".into()));
    }
    let methods = run_order(methods);
    warm_up(engine, questions, &methods, settings, &mut progress)?;
    let mut records = Vec::with_capacity(questions.len() * methods.len());
    for q in questions {
        for spec in &methods {
            let r = answer(engine, q, spec, settings, &mut progress)?;
            records.push(r);
            if let Some(r) = records.last() {
                progress(Progress::Done {
                    record: r,
                    records: &records,
                });
            }
        }
    }
    engine.reset();
    Ok(records)
}
