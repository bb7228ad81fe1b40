//! Teacher-forced fidelity of a compressed cache: how far it moves the model's next-token
//! distributions from the full cache's over a reference answer. Small models answer LongBench
//! poorly, so task scores barely separate the methods; these two numbers do. On long answers
//! (summaries, several values) two more show drift: the KL per answer-position bin, and how far
//! a free-running decode follows the full cache's own greedy output ([`Agreement`]).
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
    /// The same KL averaged over each of [`POSITION_BINS`] (`None` past the answer's end): on
    /// long answers, drift shows as a KL that grows from the first bin to the last.
    pub kl_bins: [Option<f64>; POSITION_BINS.len()],
}

/// Answer positions (1-based, inclusive) over which per-token values are averaged to show how
/// a long answer drifts: the first tokens, a sentence, a paragraph, and the rest.
pub const POSITION_BINS: [(usize, usize); 4] = [(1, 16), (17, 64), (65, 256), (257, usize::MAX)];

/// Column names of [`POSITION_BINS`]: `1-16`, `17-64`, `65-256`, `257+`.
pub fn position_bin_label(bin: (usize, usize)) -> String {
    if bin.1 == usize::MAX {
        format!("{}+", bin.0)
    } else {
        format!("{}-{}", bin.0, bin.1)
    }
}

/// Mean of `values` (one per answer position, first position first) over each of
/// [`POSITION_BINS`]; `None` for a bin the answer does not reach.
pub fn binned(values: &[f64]) -> [Option<f64>; POSITION_BINS.len()] {
    POSITION_BINS.map(|(lo, hi)| {
        let part = values.get(lo - 1..hi.min(values.len()))?;
        (!part.is_empty()).then(|| part.iter().sum::<f64>() / part.len() as f64)
    })
}

/// How closely a free-running decode follows the full cache's greedy output, token ids against
/// token ids: teacher forcing keeps the compressed cache on the reference, so it cannot show a
/// decode that wanders off after one different token; these two numbers do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Leading tokens identical to the full cache's (the first divergence is at this index).
    pub prefix: usize,
    /// Longest-common-subsequence F1 of the two token sequences (1 = identical, 0 = nothing in
    /// common): ROUGE-L on token ids, so it also credits a continuation that re-joins the full
    /// cache's after a divergence.
    pub lcs_f1: f64,
}

/// [`Agreement`] of `comp` with `full` (token ids, or words where only text is kept); two empty
/// outputs agree fully.
pub fn agreement<T: PartialEq>(full: &[T], comp: &[T]) -> Agreement {
    let prefix = full.iter().zip(comp).take_while(|(a, b)| a == b).count();
    if full.is_empty() && comp.is_empty() {
        return Agreement {
            prefix,
            lcs_f1: 1.0,
        };
    }
    let lcs = crate::eval::metrics::lcs_len(full, comp) as f64;
    Agreement {
        prefix,
        lcs_f1: 2.0 * lcs / (full.len() + comp.len()) as f64,
    }
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
    let mut kls = Vec::with_capacity(answer.len());
    for ((f, c), &tok) in full.iter().zip(comp).zip(answer) {
        assert_eq!(f.len(), c.len(), "rows over the same vocabulary");
        let t = tok as usize;
        delta += c[t] as f64 - f[t] as f64;
        kls.push(
            f.iter()
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
                .sum::<f64>(),
        );
    }
    let n = answer.len() as f64;
    Some(Fidelity {
        delta_logprob: delta / n,
        kl: kls.iter().sum::<f64>() / n,
        kl_bins: binned(&kls),
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

    #[test]
    fn bins_average_their_positions_and_stop_at_the_answer_end() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let b = binned(&v);
        assert_eq!(b[0], Some(8.5)); // mean of 1..=16
        assert_eq!(b[1], Some(18.5)); // mean of 17..=20
        assert_eq!((b[2], b[3]), (None, None));
        assert_eq!(binned(&[]), [None; 4]);
        let long: Vec<f64> = (0..300).map(|i| if i < 256 { 0.0 } else { 1.0 }).collect();
        assert_eq!(binned(&long), [Some(0.0), Some(0.0), Some(0.0), Some(1.0)]);
        let labels: Vec<String> = POSITION_BINS
            .iter()
            .map(|&b| position_bin_label(b))
            .collect();
        assert_eq!(labels, ["1-16", "17-64", "65-256", "257+"]);
    }

    #[test]
    fn fidelity_bins_hold_the_per_position_kl() {
        // Identical first row, different second: bin 1 is the mean of 0 and the second KL.
        let full = vec![logs(&[0.5, 0.5]), logs(&[0.9, 0.1])];
        let comp = vec![logs(&[0.5, 0.5]), logs(&[0.5, 0.5])];
        let f = fidelity(&full, &comp, &[0, 0]).unwrap();
        assert!((f.kl_bins[0].unwrap() - f.kl).abs() < 1e-12);
        assert!((f.kl - 0.368064 / 2.0).abs() < 1e-5, "{f:?}");
        assert_eq!(f.kl_bins[1], None);
    }

    /// Worked by hand: full 1 2 3 4 5, comp 1 2 9 4 5 9 → prefix 2, LCS 1 2 4 5 = 4,
    /// F1 = 2 · 4 / (5 + 6) = 8/11.
    #[test]
    fn agreement_counts_the_prefix_and_the_common_subsequence() {
        let a = agreement(&[1, 2, 3, 4, 5], &[1, 2, 9, 4, 5, 9]);
        assert_eq!(a.prefix, 2);
        assert!((a.lcs_f1 - 8.0 / 11.0).abs() < 1e-12, "{a:?}");
        let same = agreement(&[7, 8, 9], &[7, 8, 9]);
        assert_eq!((same.prefix, same.lcs_f1), (3, 1.0));
        let none = agreement(&[1, 2], &[3, 4, 5]);
        assert_eq!((none.prefix, none.lcs_f1), (0, 0.0));
        assert_eq!(agreement::<u32>(&[], &[]).lcs_f1, 1.0);
        assert_eq!(agreement(&[1], &[]).lcs_f1, 0.0);
        fn w(t: &str) -> Vec<&str> {
            t.split_whitespace().collect()
        }
        assert_eq!(agreement(&w("a b c d"), &w("a x c d")).lcs_f1, 0.75);
        // Both numbers are symmetric.
        let b = agreement(&[1, 2, 9, 4, 5, 9], &[1, 2, 3, 4, 5]);
        assert_eq!((b.prefix, b.lcs_f1), (a.prefix, a.lcs_f1));
    }
}
