//! Per-question records and the arithmetic Spec-Bench reports from them: tokens/s, speedup
//! over plain decoding, mean accepted tokens per target pass (τ), acceptance rate; and the
//! losslessness check (greedy speculative output == greedy plain output, turn by turn).
//!
//! Averaging follows Spec-Bench's `evaluation/speed.py`: a question's speed is its tokens
//! over its time (summed over its turns), a group's tokens/s is the mean of its questions'
//! speeds, and the speedup is that mean over plain decoding's mean for the same questions.
//! τ pools every step: all generated tokens over all target passes.

use serde::{Deserialize, Serialize};

use tandem::engine::StopReason;

/// The method every speedup is measured against.
pub const BASELINE: &str = "plain";

/// One answered turn.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TurnRecord {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV rows came from the previous turn.
    pub reused_prompt_tokens: usize,
    /// The generated token ids (what the losslessness check compares).
    pub tokens: Vec<u32>,
    /// Tokens emitted by the first step; that step's time includes the prompt's prefill, so
    /// the decode phase starts after it.
    pub first_step_tokens: usize,
    /// The whole `generate` call: prefill, first step and decode.
    pub wall_seconds: f64,
    /// Prefill and the first step.
    pub prefill_seconds: f64,
    /// Every step after the first.
    pub decode_seconds: f64,
    pub target_passes: usize,
    pub drafter_passes: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Tokens emitted by each step (accepted drafts + the target's own token; Spec-Bench's
    /// `accept_lengths`).
    pub accept_lengths: Vec<usize>,
    /// Seconds of each step, from the previous step's end (the first from the call's start,
    /// so it holds the prefill).
    pub step_seconds: Vec<f64>,
    /// Seconds of drafting in each step (see `Event::Tokens`); None where a step could not
    /// be timed.
    pub step_drafter_seconds: Vec<Option<f64>>,
    /// Draft tokens (tree nodes) each step verified: what the adaptive budget chose.
    pub step_proposed: Vec<usize>,
    pub stop_reason: Option<StopReason>,
    /// The answer's text (it goes into the next turn's prompt).
    pub text: String,
}

impl TurnRecord {
    pub fn new_tokens(&self) -> usize {
        self.tokens.len()
    }
    /// Tokens emitted in the decode phase (after the first step).
    pub fn decode_tokens(&self) -> usize {
        self.tokens.len().saturating_sub(self.first_step_tokens)
    }
    /// Seconds of drafting in the decode phase (after the first step); None when a step
    /// was not timed.
    pub fn decode_drafter_seconds(&self) -> Option<f64> {
        self.step_drafter_seconds
            .iter()
            .skip(1)
            .try_fold(0.0, |acc, s| s.map(|s| acc + s))
    }
}

/// One question answered by one method.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecord {
    pub method: String,
    pub question_id: String,
    pub category: String,
    pub group: String,
    pub turns: Vec<TurnRecord>,
}

impl QuestionRecord {
    fn sum(&self, f: impl Fn(&TurnRecord) -> f64) -> f64 {
        self.turns.iter().map(f).sum()
    }
    /// Decode-phase tokens/s (None when the decode phase took no time: every turn ended
    /// at its first step).
    pub fn decode_speed(&self) -> Option<f64> {
        let secs = self.sum(|t| t.decode_seconds);
        (secs > 0.0).then(|| self.sum(|t| t.decode_tokens() as f64) / secs)
    }
    /// End-to-end tokens/s, prefill included (Spec-Bench's `wall_time`).
    pub fn wall_speed(&self) -> Option<f64> {
        let secs = self.sum(|t| t.wall_seconds);
        (secs > 0.0).then(|| self.sum(|t| t.new_tokens() as f64) / secs)
    }
}

/// Aggregates of one method over a set of questions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub questions: usize,
    pub turns: usize,
    pub new_tokens: usize,
    /// Mean over questions of decode-phase tokens/s (the headline figure).
    pub tokens_per_s: f64,
    /// Mean over questions of end-to-end tokens/s (prefill included).
    pub wall_tokens_per_s: f64,
    /// `tokens_per_s` over plain decoding's on the same questions (None without a baseline).
    pub speedup: Option<f64>,
    /// `wall_tokens_per_s` over plain decoding's.
    pub wall_speedup: Option<f64>,
    /// Mean accepted tokens per target pass: generated tokens ÷ target passes (1 for plain).
    pub tau: f64,
    /// Accepted ÷ drafted tokens (None when nothing was drafted).
    pub acceptance_rate: Option<f64>,
    pub wall_seconds: f64,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub target_passes: usize,
    pub drafter_passes: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Drafting's share of the decode phase's time (None where the drafting was not timed).
    pub drafter_share: Option<f64>,
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// Aggregates `records` (one method's, any questions) without speedups.
pub fn metrics(records: &[&QuestionRecord]) -> Metrics {
    let turns = || records.iter().flat_map(|r| r.turns.iter());
    let sum_u = |f: fn(&TurnRecord) -> usize| turns().map(f).sum::<usize>();
    let sum_f = |f: fn(&TurnRecord) -> f64| turns().map(f).sum::<f64>();
    let new_tokens = sum_u(TurnRecord::new_tokens);
    let target_passes = sum_u(|t| t.target_passes);
    let drafted = sum_u(|t| t.drafted);
    let accepted = sum_u(|t| t.accepted);
    Metrics {
        questions: records.len(),
        turns: turns().count(),
        new_tokens,
        tokens_per_s: mean(records.iter().filter_map(|r| r.decode_speed())),
        wall_tokens_per_s: mean(records.iter().filter_map(|r| r.wall_speed())),
        speedup: None,
        wall_speedup: None,
        tau: if target_passes == 0 {
            0.0
        } else {
            new_tokens as f64 / target_passes as f64
        },
        acceptance_rate: (drafted > 0).then(|| accepted as f64 / drafted as f64),
        wall_seconds: sum_f(|t| t.wall_seconds),
        prefill_seconds: sum_f(|t| t.prefill_seconds),
        decode_seconds: sum_f(|t| t.decode_seconds),
        target_passes,
        drafter_passes: sum_u(|t| t.drafter_passes),
        drafted,
        accepted,
        drafter_share: turns()
            .map(TurnRecord::decode_drafter_seconds)
            .sum::<Option<f64>>()
            .and_then(|d| ratio(d, sum_f(|t| t.decode_seconds)).or(Some(0.0))),
    }
}

/// One task group's metrics (or the overall ones: group "overall").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupMetrics {
    pub group: String,
    pub metrics: Metrics,
}

/// Everything one method scored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MethodSummary {
    pub method: String,
    /// In the order of `groups` given to [`summarize`].
    pub groups: Vec<GroupMetrics>,
    pub overall: Metrics,
}

impl MethodSummary {
    pub fn group(&self, g: &str) -> Option<&Metrics> {
        self.groups
            .iter()
            .find(|m| m.group == g)
            .map(|m| &m.metrics)
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

/// Metrics per method (in `methods` order) per group (in `groups` order) and overall, with
/// speedups over [`BASELINE`] when the records hold it.
pub fn summarize(
    records: &[QuestionRecord],
    methods: &[String],
    groups: &[String],
) -> Vec<MethodSummary> {
    let of = |m: &str, g: Option<&str>| -> Metrics {
        let rs: Vec<&QuestionRecord> = records
            .iter()
            .filter(|r| r.method == m && g.is_none_or(|g| r.group == g))
            .collect();
        metrics(&rs)
    };
    let has_base = records.iter().any(|r| r.method == BASELINE);
    let with_speedup = |mut x: Metrics, base: &Metrics| {
        if has_base {
            x.speedup = ratio(x.tokens_per_s, base.tokens_per_s);
            x.wall_speedup = ratio(x.wall_tokens_per_s, base.wall_tokens_per_s);
        }
        x
    };
    let base_groups: Vec<Metrics> = groups.iter().map(|g| of(BASELINE, Some(g))).collect();
    let base_overall = of(BASELINE, None);
    methods
        .iter()
        .map(|m| MethodSummary {
            method: m.clone(),
            groups: groups
                .iter()
                .zip(&base_groups)
                .map(|(g, base)| GroupMetrics {
                    group: g.clone(),
                    metrics: with_speedup(of(m, Some(g)), base),
                })
                .collect(),
            overall: with_speedup(of(m, None), &base_overall),
        })
        .collect()
}

/// A turn where a method's greedy tokens differ from plain decoding's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub method: String,
    pub question_id: String,
    /// 1-based.
    pub turn: usize,
    /// First differing position (the shorter length when one output is a prefix of the other).
    pub position: usize,
    /// Plain decoding's token there (None: plain's output ended).
    pub plain_token: Option<u32>,
    /// The method's token there (None: the method's output ended).
    pub method_token: Option<u32>,
    pub plain_len: usize,
    pub method_len: usize,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tok = |t: Option<u32>| t.map_or("(end)".to_string(), |t| t.to_string());
        write!(
            f,
            "{} question {} turn {}: first difference at token {} (plain {}, {} {}); lengths {} vs {}",
            self.method,
            self.question_id,
            self.turn,
            self.position,
            tok(self.plain_token),
            self.method,
            tok(self.method_token),
            self.plain_len,
            self.method_len
        )
    }
}

/// Every turn whose tokens differ from [`BASELINE`]'s for the same question and turn, and
/// every question turn a method answered that the baseline did not (or vice versa).
pub fn check_lossless(records: &[QuestionRecord]) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let base = |q: &str| {
        records
            .iter()
            .find(|r| r.method == BASELINE && r.question_id == q)
    };
    for r in records.iter().filter(|r| r.method != BASELINE) {
        let empty = QuestionRecord::default();
        let b = base(&r.question_id).unwrap_or(&empty);
        for turn in 0..r.turns.len().max(b.turns.len()) {
            let p: &[u32] = b.turns.get(turn).map_or(&[], |t| &t.tokens);
            let m: &[u32] = r.turns.get(turn).map_or(&[], |t| &t.tokens);
            let missing = b.turns.get(turn).is_none() || r.turns.get(turn).is_none();
            if p == m && !missing {
                continue;
            }
            let position = p.iter().zip(m).take_while(|(x, y)| x == y).count();
            out.push(Mismatch {
                method: r.method.clone(),
                question_id: r.question_id.clone(),
                turn: turn + 1,
                position,
                plain_token: p.get(position).copied(),
                method_token: m.get(position).copied(),
                plain_len: p.len(),
                method_len: m.len(),
            });
        }
    }
    out
}
