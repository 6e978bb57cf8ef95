//! The adaptive draft budget: how many tokens to draft this step, chosen from the measured
//! acceptance and the measured wall time of steps of each size on this device.
//!
//! With per-token acceptance `a`, a chain of k drafts yields `E(k) = (1 - a^(k+1)) / (1 - a)`
//! tokens per target pass (Leviathan et al.); a step of size k takes `time(k)` (drafter passes
//! plus one verification of k + 1 tokens). The budget picks the k with the most tokens per
//! second, so where drafting does not pay (a slow drafter, verification that grows with T, low
//! acceptance) it settles on k = 0: plain decoding.

/// Exponential moving average weight of a new observation.
const EMA: f64 = 0.3;

#[derive(Clone, Debug)]
pub struct Budget {
    candidates: Vec<usize>,
    /// Smoothed seconds per step for each candidate (`None` until tried).
    time: Vec<Option<f64>>,
    /// Smoothed accepted and rejected draft tokens (a truncated-geometric estimate of `a`).
    accepted: f64,
    rejected: f64,
}

impl Budget {
    /// Candidates 0, 1, 2, 3, 4, 6, 8, 12, 16, … up to `max`.
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
        // A mildly optimistic prior (a ≈ 0.6) so drafting gets tried.
        Budget {
            candidates,
            time: vec![None; n],
            accepted: 3.0,
            rejected: 2.0,
        }
    }

    /// The largest budget (what a non-adaptive run drafts every step).
    pub fn max(&self) -> usize {
        *self.candidates.last().unwrap_or(&0)
    }

    /// Estimated per-token acceptance.
    pub fn acceptance(&self) -> f64 {
        self.accepted / (self.accepted + self.rejected)
    }

    /// Expected tokens per target pass for a chain of `k` drafts.
    pub fn expected_tokens(&self, k: usize) -> f64 {
        let a = self.acceptance().min(0.999);
        (1.0 - a.powi(k as i32 + 1)) / (1.0 - a)
    }

    /// The budget for the next step: each candidate is tried once (smallest first), then the
    /// one with the most expected tokens per second.
    pub fn choose(&self) -> usize {
        if let Some(i) = self.time.iter().position(|t| t.is_none()) {
            return self.candidates[i];
        }
        let mut best = (0, f64::MIN);
        for (i, &k) in self.candidates.iter().enumerate() {
            let rate = self.expected_tokens(k) / self.time[i].unwrap_or(f64::MAX).max(1e-9);
            if rate > best.1 {
                best = (k, rate);
            }
        }
        best.0
    }

    /// Record a step that drafted `drafted` tokens, of which `accepted` were accepted, and
    /// took `seconds`.
    pub fn record(&mut self, drafted: usize, accepted: usize, seconds: f64) {
        let i = self
            .candidates
            .iter()
            .rposition(|&k| k <= drafted)
            .unwrap_or(0);
        self.time[i] = Some(match self.time[i] {
            None => seconds,
            Some(t) => t + EMA * (seconds - t),
        });
        if drafted > 0 {
            let rejected = if accepted < drafted { 1.0 } else { 0.0 };
            self.accepted = (1.0 - EMA) * self.accepted + EMA * accepted as f64;
            self.rejected = (1.0 - EMA) * self.rejected + EMA * rejected;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_and_expected_tokens() {
        let b = Budget::new(10);
        assert_eq!(b.candidates, vec![0, 1, 2, 3, 4, 6, 9, 10]);
        assert!((b.expected_tokens(0) - 1.0).abs() < 1e-12);
        assert!(b.expected_tokens(4) > b.expected_tokens(2));
        assert_eq!(Budget::new(0).choose(), 0);
    }

    #[test]
    fn backs_off_to_plain_when_drafting_is_slow_or_rejected() {
        let mut b = Budget::new(4);
        // Plain steps take 1 s; drafted steps take 1 s + 1 s per draft and nothing is accepted.
        for _ in 0..50 {
            let k = b.choose();
            b.record(k, 0, 1.0 + k as f64);
        }
        assert_eq!(b.choose(), 0);
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
        assert!(b.acceptance() > 0.9);
    }
}
