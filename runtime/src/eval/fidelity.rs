//! Teacher-forced fidelity of a compressed cache: how far it moves the model's next-token
//! distributions from the full cache's over a reference answer. Small models answer LongBench
//! poorly, so task scores barely separate the methods; these two numbers do.
//!
//! Inputs are log-probability rows (full vocabulary), one per answer token, as
//! [`crate::generate::teacher_forced_logprobs`] returns them.

use serde::{Deserialize, Serialize};

/// Fidelity of one compressed cache against the full cache over one answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Mean log-probability of the answer tokens under the compressed cache minus under the full
    /// cache (nats; negative = the compressed cache finds the reference less likely).
    pub delta_logprob: f64,
    /// Mean over the answer positions of KL(full ‖ compressed) of the next-token distributions
    /// (nats, ≥ 0; 0 exactly when the rows are identical).
    pub kl: f64,
}

/// Fidelity of `comp` against `full` (log-probability rows) over `answer`; `None` for an empty
/// answer. Sums run in f64.
///
/// Panics if the row counts differ from the answer length or rows differ in length (a caller
/// bug: both come from teacher forcing the same answer).
pub fn fidelity(full: &[Vec<f32>], comp: &[Vec<f32>], answer: &[u32]) -> Option<Fidelity> {
    assert_eq!(
        full.len(),
        answer.len(),
        "one full-cache row per answer token"
    );
    assert_eq!(
        comp.len(),
        answer.len(),
        "one compressed row per answer token"
    );
    if answer.is_empty() {
        return None;
    }
    let mut delta = 0.0f64;
    let mut kl = 0.0f64;
    for ((f, c), &tok) in full.iter().zip(comp).zip(answer) {
        assert_eq!(f.len(), c.len(), "rows over the same vocabulary");
        let t = tok as usize;
        delta += c[t] as f64 - f[t] as f64;
        kl += f
            .iter()
            .zip(c)
            .map(|(&lf, &lc)| {
                let p = (lf as f64).exp();
                // 0 · log(0 / q) = 0; skipping also avoids 0 · ∞ when q = 0 too.
                if p == 0.0 {
                    0.0
                } else {
                    p * (lf as f64 - lc as f64)
                }
            })
            .sum::<f64>();
    }
    let n = answer.len() as f64;
    Some(Fidelity {
        delta_logprob: delta / n,
        kl: kl / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(p: &[f64]) -> Vec<f32> {
        p.iter().map(|x| x.ln() as f32).collect()
    }

    #[test]
    fn identical_rows_are_exactly_zero() {
        let rows = vec![logs(&[0.2, 0.3, 0.5]), logs(&[0.9, 0.05, 0.05])];
        let f = fidelity(&rows, &rows, &[2, 0]).unwrap();
        assert_eq!(f.delta_logprob, 0.0);
        assert_eq!(f.kl, 0.0);
        assert!(fidelity(&[], &[], &[]).is_none());
    }

    /// Three answer tokens over a 2-token vocabulary, worked by hand:
    /// full = [.5 .5], [.75 .25], [.5 .5]; compressed = [.5 .5], [.5 .5], [.25 .75]; answer 0 1 1.
    /// Δ = (ln .5 + ln .5 + ln .75 − ln .5 − ln .25 − ln .5) / 3 = ln 3 / 3.
    /// KL rows: 0; .75 ln 1.5 + .25 ln .5; .5 ln 2 + .5 ln(2/3) = .5 ln(4/3).
    #[test]
    fn hand_worked_three_tokens() {
        let full = vec![logs(&[0.5, 0.5]), logs(&[0.75, 0.25]), logs(&[0.5, 0.5])];
        let comp = vec![logs(&[0.5, 0.5]), logs(&[0.5, 0.5]), logs(&[0.25, 0.75])];
        let f = fidelity(&full, &comp, &[0, 1, 1]).unwrap();
        let delta = 3f64.ln() / 3.0;
        let kl = (0.75 * 1.5f64.ln() + 0.25 * 0.5f64.ln() + 0.5 * (4.0f64 / 3.0).ln()) / 3.0;
        assert!((f.delta_logprob - delta).abs() < 1e-6, "{f:?} vs {delta}");
        assert!((f.kl - kl).abs() < 1e-6, "{f:?} vs {kl}");
        assert!((kl - 0.091551).abs() < 1e-5, "hand value {kl}");
        let r = fidelity(&comp, &full, &[0, 1, 1]).unwrap();
        assert!((r.delta_logprob + delta).abs() < 1e-6);
    }

    /// The direction matters: full [.9 .1] vs compressed [.5 .5] at one position.
    /// KL(full ‖ comp) = .9 ln 1.8 + .1 ln .2 ≈ 0.368064; the reverse is .5 ln(5/9) + .5 ln 5 ≈
    /// 0.510826. Δ = ln .5 − ln .9 ≈ −0.587787 for token 0.
    #[test]
    fn kl_is_full_against_compressed() {
        let full = vec![logs(&[0.9, 0.1])];
        let comp = vec![logs(&[0.5, 0.5])];
        let f = fidelity(&full, &comp, &[0]).unwrap();
        assert!((f.kl - 0.368064).abs() < 1e-5, "{f:?}");
        assert!((f.delta_logprob + 0.587787).abs() < 1e-5, "{f:?}");
        let r = fidelity(&comp, &full, &[0]).unwrap();
        assert!((r.kl - 0.510826).abs() < 1e-5, "{r:?}");
    }

    #[test]
    fn zero_probability_in_full_contributes_nothing() {
        let full = vec![vec![0.0f32, f32::NEG_INFINITY]];
        let comp = vec![vec![0.0f32, f32::NEG_INFINITY]];
        let f = fidelity(&full, &comp, &[0]).unwrap();
        assert_eq!(f.kl, 0.0);
        assert!(f.delta_logprob == 0.0);
    }
}
