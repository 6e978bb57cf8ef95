//! The adaptive draft budget: how many draft nodes to propose this step, chosen from what
//! steps of each size measured on this device during this generation: the tokens a step
//! emitted (its accepted drafts + the target's own token) and its wall time.
//!
//! Candidates are 0, 1, 2, 3, 4, 6, 9, 13, … up to the drafter's ceiling. Each keeps
//! exponential moving averages of tokens and seconds per step over the steps that proposed
//! that many nodes (while it is being probed: the mean tokens and the fastest step) (what a step actually proposed, which can be less than asked: a drafter
//! with no match proposes nothing). A chain's tokens per step would follow the geometric
//! formula `(1 - a^(k+1)) / (1 - a)` (Leviathan et al.), but a tree's do not (a recycling
//! template's siblings, a suffix tree's branches add width, not depth), so the budget
//! measures every size instead of modelling it.
//!
//! Exploration goes upward, [`PROBES`] steps per size: the next size is tried only while
//! the size below it still reaches [`EXPLORE_MARGIN`] of the best rate so far (tokens per
//! second rises and then falls with the size; on a CPU adapter a large verification batch
//! costs several plain steps, so once a size loses, larger ones are not tried). Then the
//! best measured rate wins, and every [`REPROBE`]-th step tries the next larger size once
//! more, so one unlucky early measurement cannot shut drafting out for a whole generation;
//! where drafting does not pay the choice is size 0: plain decoding.

/// Exponential moving average weight of a new observation.
const EMA: f64 = 0.3;

/// A larger size is tried while the largest tried size reaches this share of the best rate
/// (below 1 so that one noisy measurement does not stop the exploration).
pub const EXPLORE_MARGIN: f64 = 0.9;

/// Steps each size is measured before the exploration judges it.
pub const PROBES: usize = 2;

/// Every this many steps, the size above the best is measured once more.
pub const REPROBE: usize = 16;

#[derive(Clone, Debug)]
pub struct Budget {
    candidates: Vec<usize>,
    /// Smoothed `(tokens, seconds)` per step for each candidate (`None` until tried).
    measured: Vec<Option<(f64, f64)>>,
    /// Steps recorded for each candidate.
    samples: Vec<usize>,
    /// Steps recorded in all.
    steps: usize,
}

impl Budget {
    /// Candidates 0, 1, 2, 3, 4, 6, 9, 13, … up to `max`.
    pub fn new(max: usize) -> Self {
        let mut candidates = vec![0];
        let mut k = 1;
        while k <= max {
            candidates.push(k);
            k = if k < 4 { k + 1 } else { k + k / 2 };
        }
        if *candidates.last().unwrap_or(&0) != max {
            candidates.push(max);
        }
        let n = candidates.len();
        Budget {
            candidates,
            measured: vec![None; n],
            samples: vec![0; n],
            steps: 0,
        }
    }

    /// The largest budget (what a non-adaptive run drafts every step).
    pub fn max(&self) -> usize {
        *self.candidates.last().unwrap_or(&0)
    }

    /// Measured tokens per second of candidate `i`.
    fn rate(&self, i: usize) -> Option<f64> {
        self.measured[i].map(|(tokens, secs)| tokens / secs.max(1e-9))
    }

    /// Measured tokens per step with budget `k` (None until a step of that size ran).
    pub fn tokens_per_step(&self, k: usize) -> Option<f64> {
        let i = self.candidates.iter().position(|&c| c == k)?;
        self.measured[i].map(|m| m.0)
    }

    /// The budget for the next step: the next larger size while the sizes measured so far
    /// still pay, else the size with the best measured rate, or the one above it on a
    /// re-probing step (see the file header).
    pub fn choose(&self) -> usize {
        let best = (0..self.candidates.len())
            .filter_map(|i| self.rate(i).map(|r| (i, r)))
            .fold(None, |b: Option<(usize, f64)>, (i, r)| match b {
                Some((_, br)) if br >= r => b,
                _ => Some((i, r)),
            });
        let Some((best_i, best_rate)) = best else {
            return self.candidates[0];
        };
        if let Some(next) = self.samples.iter().position(|&n| n < PROBES) {
            let below = (0..next).rev().find_map(|i| self.rate(i));
            if next == 0 || below.is_some_and(|r| r >= EXPLORE_MARGIN * best_rate) {
                return self.candidates[next];
            }
        }
        if self.steps % REPROBE == REPROBE - 1 && best_i + 1 < self.candidates.len() {
            return self.candidates[best_i + 1];
        }
        self.candidates[best_i]
    }

    /// Record a step that proposed `drafted` nodes, of which `accepted` were accepted, and
    /// took `seconds`.
    pub fn record(&mut self, drafted: usize, accepted: usize, seconds: f64) {
        let i = self
            .candidates
            .iter()
            .rposition(|&k| k <= drafted)
            .unwrap_or(0);
        let tokens = (accepted + 1) as f64;
        let n = self.samples[i] as f64;
        self.measured[i] = Some(match self.measured[i] {
            None => (tokens, seconds),
            // While probing: the mean of the tokens and the fastest step (timing noise on a
            // shared machine only ever adds time).
            Some((t, s)) if self.samples[i] < PROBES => {
                (t + (tokens - t) / (n + 1.0), s.min(seconds))
            }
            Some((t, s)) => (t + EMA * (tokens - t), s + EMA * (seconds - s)),
        });
        self.samples[i] += 1;
        self.steps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates() {
        let b = Budget::new(10);
        assert_eq!(b.candidates, vec![0, 1, 2, 3, 4, 6, 9, 10]);
        assert_eq!(Budget::new(0).choose(), 0);
        assert_eq!(
            Budget::new(16).candidates,
            vec![0, 1, 2, 3, 4, 6, 9, 13, 16]
        );
    }

    #[test]
    fn backs_off_to_plain_when_drafting_is_slow_or_rejected() {
        let mut b = Budget::new(4);
        // Plain steps take 1 s; drafted steps take 1 s + 1 s per draft and nothing is accepted.
        let mut tried = Vec::new();
        for _ in 0..50 {
            let k = b.choose();
            tried.push(k);
            b.record(k, 0, 1.0 + k as f64);
        }
        assert_eq!(b.choose(), 0);
        // Size 1 lost to plain, so larger sizes were tried only on re-probing steps, and
        // size 1 at most PROBES times plus once per REPROBE steps.
        assert!(tried.iter().all(|&k| k <= 2), "{tried:?}");
        let drafted = tried.iter().filter(|&&k| k > 0).count();
        assert!(drafted <= PROBES + 50 / REPROBE + 1, "{tried:?}");
    }

    #[test]
    fn drafts_long_when_cheap_and_accepted() {
        let mut b = Budget::new(8);
        // Verification is almost free and every draft is accepted.
        for _ in 0..50 {
            let k = b.choose();
            b.record(k, k, 1.0 + 0.01 * k as f64);
        }
        assert_eq!(b.choose(), 8);
        assert_eq!(b.tokens_per_step(8), Some(9.0));
    }

    #[test]
    fn a_tree_whose_width_adds_nothing_settles_on_the_size_that_pays() {
        // Tree-like: any draft gains one token on average, a step costs 1 s + 0.1 s per node;
        // the best rate is size 1 (2 tokens in 1.1 s), though larger sizes accept as much.
        let mut b = Budget::new(16);
        for _ in 0..60 {
            let k = b.choose();
            b.record(k, k.min(1), 1.0 + 0.1 * k as f64);
        }
        assert_eq!(b.choose(), 1);
    }

    #[test]
    fn one_unlucky_first_measurement_does_not_shut_drafting_out() {
        let mut b = Budget::new(4);
        // Drafting pays (every draft accepted, cheap), but the first drafted step was slow.
        let mut first = true;
        for _ in 0..80 {
            let k = b.choose();
            let secs = if k > 0 && first {
                first = false;
                10.0
            } else {
                1.0 + 0.05 * k as f64
            };
            b.record(k, k, secs);
        }
        assert_eq!(b.choose(), 4);
    }

    #[test]
    fn a_drafter_that_proposes_less_than_asked_is_measured_at_the_size_it_proposed() {
        let mut b = Budget::new(16);
        // The drafter never has more than 3 nodes: steps are recorded at 3, drafting pays.
        for _ in 0..40 {
            let k = b.choose();
            let got = k.min(3);
            b.record(got, got, 1.0 + 0.05 * got as f64);
        }
        assert_eq!(b.tokens_per_step(3), Some(4.0));
        assert!(b.choose() >= 3);
    }
}
