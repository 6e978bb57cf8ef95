//! Step costs and projected speed-ups: a benchmark's tokens on one device, its time on
//! another.
//!
//! Batch invariance makes a greedy benchmark's per-step records — how many draft nodes each
//! step verified (`step_proposed`), how many tokens it emitted (`accept_lengths`), how many
//! drafter passes it ran — the same on every device. Only the time of a step changes, and a
//! step's time is set by the target's pass over `T = proposed + 1` rows, the drafter's passes
//! and the host's drafting. A [`CostTable`] (written by `tandem bench-cost`, possibly on
//! synthetic weights where the real ones cannot travel) holds the first two for one device;
//! [`project`] replays the records against it and Spec-Bench's arithmetic
//! ([`super::summarize`]) gives each method's projected speed-up per task group.
//!
//! Shapes: `target_steps` is `[(T, seconds)]` with T increasing (1, 2, 4, … 32); between two
//! measured T the cost is interpolated linearly, past the last it is extrapolated from the
//! last two (a pass's cost is close to affine in T at these sizes).

use serde::{Deserialize, Serialize};

use super::{DeviceInfo, ModelInfo, QuestionRecord};
use tandem::engine::MethodSpec;
use tandem::{Error, Result};

/// The time of one target pass over `t` rows (median of the repetitions).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepCost {
    pub t: usize,
    pub seconds: f64,
}

/// One device's step costs for one target (and drafter) model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostTable {
    pub tandem_version: String,
    /// The command line that measured it.
    pub command: String,
    pub device: DeviceInfo,
    pub target: ModelInfo,
    /// The weights were random blocks of each tensor's type (`--synthetic-weights`).
    pub synthetic_weights: bool,
    /// Tokens in the KV cache while the steps were timed.
    pub context_tokens: usize,
    /// Compute dispatches of one target pass with one logits row.
    pub target_dispatches: usize,
    /// Microseconds per dispatch of a minimal kernel, many in one submit: the floor under
    /// every dispatch on this device.
    pub dispatch_us: f64,
    /// A target pass over T rows, with its head and argmax over every row, and the readback.
    pub target_steps: Vec<StepCost>,
    pub drafter: Option<ModelInfo>,
    /// One drafter pass over one row (its head over its vocabulary).
    pub drafter_pass_seconds: Option<f64>,
}

impl CostTable {
    /// Parses and checks a cost table (an untrusted file: clear errors, no panics).
    pub fn from_json(json: &str) -> Result<Self> {
        let table: CostTable = serde_json::from_str(json)
            .map_err(|e| Error::Invalid(format!("not a tandem cost table: {e}")))?;
        table.validate()?;
        Ok(table)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Invalid(format!("cost table: {what}")));
        if self.target_steps.is_empty() {
            return bad("no target step costs".into());
        }
        for (i, s) in self.target_steps.iter().enumerate() {
            if s.t == 0 || !(s.seconds.is_finite() && s.seconds > 0.0) {
                return bad(format!("step {i}: T = {}, {} s", s.t, s.seconds));
            }
            if i > 0 && s.t <= self.target_steps[i - 1].t {
                return bad(format!("step {i}: T = {} does not increase", s.t));
            }
        }
        if let Some(d) = self.drafter_pass_seconds {
            if !(d.is_finite() && d > 0.0) {
                return bad(format!("drafter pass of {d} s"));
            }
        }
        Ok(())
    }

    /// Seconds of a target pass over `t` rows (see the module's note on interpolation).
    pub fn target_step(&self, t: usize) -> f64 {
        let s = &self.target_steps;
        let t = t.max(1) as f64;
        let at = |i: usize| (s[i].t as f64, s[i].seconds);
        if s.len() == 1 || t <= s[0].t as f64 {
            return s[0].seconds;
        }
        let i = s
            .iter()
            .position(|c| c.t as f64 >= t)
            .unwrap_or(s.len() - 1)
            .max(1);
        let ((t0, c0), (t1, c1)) = (at(i - 1), at(i));
        (c0 + (c1 - c0) * (t - t0) / (t1 - t0)).max(c0.min(c1))
    }
}

/// The records with each turn's decode time replaced by its projection on `costs`' device:
/// every step after the first (the decode phase, as the benchmark times it) costs the
/// target's pass over its `proposed + 1` rows, plus, for methods that draft with a model,
/// that turn's drafter passes per step times one drafter pass, or, for model-free drafters,
/// the host drafting time the records hold (host work, not the GPU's).
pub fn project(costs: &CostTable, records: &[QuestionRecord]) -> Result<Vec<QuestionRecord>> {
    costs.validate()?;
    records
        .iter()
        .map(|r| {
            let needs_drafter = MethodSpec::parse(&r.method)
                .map(|m| m.needs_drafter_model())
                .unwrap_or(false);
            let pass = match (needs_drafter, costs.drafter_pass_seconds) {
                (false, _) => None,
                (true, Some(p)) => Some(p),
                (true, None) => {
                    return Err(Error::Invalid(format!(
                        "method {} drafts with a model, and the cost table has no drafter \
                         pass: run bench-cost with --drafter",
                        r.method
                    )))
                }
            };
            let mut r = r.clone();
            for turn in &mut r.turns {
                let steps = turn.step_proposed.len();
                let per_step = turn.drafter_passes as f64 / steps.max(1) as f64;
                turn.decode_seconds = (1..steps)
                    .map(|s| {
                        let draft = match pass {
                            Some(p) => per_step * p,
                            None => turn
                                .step_drafter_seconds
                                .get(s)
                                .copied()
                                .flatten()
                                .unwrap_or(0.0),
                        };
                        costs.target_step(turn.step_proposed[s] + 1) + draft
                    })
                    .sum();
            }
            Ok(r)
        })
        .collect()
}

/// A benchmark's records from its JSON report (`specbench.json`: an object with
/// `records`) or its JSON-lines record file (`specbench.records.jsonl`).
pub fn records_from_json(text: &str) -> Result<Vec<QuestionRecord>> {
    let bad = |e: serde_json::Error| Error::Invalid(format!("not tandem bench records: {e}"));
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        if let Ok(serde_json::Value::Object(mut o)) = serde_json::from_str(trimmed) {
            if let Some(records) = o.remove("records") {
                return serde_json::from_value(records).map_err(bad);
            }
        }
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(bad))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TurnRecord;

    fn table(steps: &[(usize, f64)], drafter: Option<f64>) -> CostTable {
        CostTable {
            tandem_version: "test".into(),
            command: "test".into(),
            device: DeviceInfo {
                adapter: "a".into(),
                backend: "vulkan".into(),
                device_type: "Cpu".into(),
                driver: "d".into(),
                shader_f16: false,
                subgroups: false,
            },
            target: ModelInfo {
                file: "m.gguf".into(),
                sha256: "00".into(),
                bytes: 1,
            },
            synthetic_weights: true,
            context_tokens: 128,
            target_dispatches: 10,
            dispatch_us: 5.0,
            target_steps: steps
                .iter()
                .map(|&(t, seconds)| StepCost { t, seconds })
                .collect(),
            drafter: None,
            drafter_pass_seconds: drafter,
        }
    }

    #[test]
    fn step_costs_interpolate_between_and_extrapolate_past_the_measured_t() {
        let c = table(&[(1, 1.0), (2, 1.5), (4, 2.5)], None);
        assert_eq!(c.target_step(0), 1.0);
        assert_eq!(c.target_step(1), 1.0);
        assert_eq!(c.target_step(2), 1.5);
        assert_eq!(c.target_step(3), 2.0);
        assert_eq!(c.target_step(4), 2.5);
        assert_eq!(c.target_step(8), 4.5);
        assert!(table(&[(2, 1.0), (1, 1.0)], None).validate().is_err());
        assert!(table(&[], None).validate().is_err());
        assert!(table(&[(1, f64::NAN)], None).validate().is_err());
    }

    fn record(method: &str, proposed: &[usize], drafter_passes: usize) -> QuestionRecord {
        QuestionRecord {
            method: method.into(),
            question_id: "q".into(),
            category: "c".into(),
            group: "g".into(),
            turns: vec![TurnRecord {
                tokens: vec![0; 10],
                first_step_tokens: 1,
                decode_seconds: 99.0,
                target_passes: proposed.len(),
                drafter_passes,
                step_proposed: proposed.to_vec(),
                // The benchmark records 0 s of drafting for plain steps.
                step_drafter_seconds: vec![
                    Some(if method == "plain" { 0.0 } else { 0.25 });
                    proposed.len()
                ],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_projection_costs_each_decode_step_by_its_rows_and_its_drafting() -> Result<()> {
        let c = table(&[(1, 1.0), (2, 1.5), (4, 2.5)], Some(0.5));
        // The first step (prefill) is not in the decode phase.
        let plain = project(&c, &[record("plain", &[0, 0, 0], 0)])?;
        assert_eq!(plain[0].turns[0].decode_seconds, 2.0);
        // Model-free: the host's drafting time as recorded, 0.25 s a step.
        let lookup = project(&c, &[record("lookup", &[0, 1, 3], 0)])?;
        assert_eq!(lookup[0].turns[0].decode_seconds, 1.5 + 0.25 + 2.5 + 0.25);
        // A drafter model: 6 passes over 3 steps, 2 per step at 0.5 s.
        let sps = project(&c, &[record("sps", &[0, 1, 3], 6)])?;
        assert_eq!(sps[0].turns[0].decode_seconds, 1.5 + 1.0 + 2.5 + 1.0);
        let e = project(&table(&[(1, 1.0)], None), &[record("sps", &[0, 1], 2)]);
        assert!(e.is_err_and(|e| e.to_string().contains("--drafter")));
        Ok(())
    }

    #[test]
    fn records_come_from_a_report_or_a_jsonl_file_and_bad_files_are_errors() -> Result<()> {
        let r = record("lookup", &[0, 2], 0);
        let line = serde_json::to_string(&r).map_err(|e| Error::Invalid(e.to_string()))?;
        assert_eq!(records_from_json(&format!("{line}\n{line}\n"))?.len(), 2);
        let report = format!("{{\"meta\": {{}}, \"records\": [{line}]}}");
        assert_eq!(records_from_json(&report)?, vec![r]);
        assert!(records_from_json("{\"records\": 3}").is_err());
        assert!(records_from_json("not json").is_err());
        assert!(CostTable::from_json("{}").is_err());
        Ok(())
    }
}
