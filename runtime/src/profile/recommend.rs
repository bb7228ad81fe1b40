//! The budget `--budget auto` uses: from CompressKV's share of the full cache's score at each
//! measured budget (`compresskv profile verify`), the smallest budget that keeps the target.

/// Shares within this of the target count as reaching it (a mean of 0/100 scores divided by
/// another is rarely exact in floating point).
const TOLERANCE: f64 = 1e-9;

/// Why no budget is recommended. Each message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoRecommendation {
    #[error("no budgets were measured. Fix: pass --budgets, e.g. --budgets 64,128,256,512")]
    NoBudgets,
    #[error(
        "the full cache scored 0 on every held-out prompt, so there is no score to keep a share \
         of. Fix: use prompts the model answers with its full cache (shorter --lengths, another \
         --haystack or --needles)"
    )]
    FullScoresZero,
    #[error(
        "no measured budget keeps {:.0}% of the full cache's score from there up (the best, budget \
         {best_budget}, keeps {:.0}%). Fix: measure larger --budgets, or lower --target",
        100.0 * target,
        100.0 * best_share
    )]
    BelowTarget {
        target: f64,
        best_budget: usize,
        best_share: f64,
    },
}

/// The smallest budget `b` such that `b` and every larger measured budget keep at least
/// `target` of the full cache's score. `shares` holds `(budget, score / full score)` in any
/// order; `full_score` is the full cache's mean. Requiring the larger budgets too means that
/// a lucky small budget above a failing larger one (noise on few prompts) is not recommended;
/// when the shares rise with the budget it is simply the smallest budget reaching the target.
pub fn recommend_budget(
    shares: &[(usize, f64)],
    full_score: f64,
    target: f64,
) -> Result<usize, NoRecommendation> {
    if shares.is_empty() {
        return Err(NoRecommendation::NoBudgets);
    }
    if full_score <= 0.0 || !full_score.is_finite() {
        return Err(NoRecommendation::FullScoresZero);
    }
    let mut sorted = shares.to_vec();
    sorted.sort_by_key(|&(b, _)| b);
    let reaches = |s: f64| s >= target - TOLERANCE;
    // Walk down from the largest budget while every budget so far reaches the target.
    let mut best = None;
    for &(b, s) in sorted.iter().rev() {
        if !reaches(s) {
            break;
        }
        best = Some(b);
    }
    best.ok_or_else(|| {
        let &(best_budget, best_share) = sorted
            .iter()
            .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)))
            .expect("shares is not empty");
        NoRecommendation::BelowTarget {
            target,
            best_budget,
            best_share,
        }
    })
}

/// The smallest measured budget below `recommended` that reaches `target` on its own, if any:
/// a larger budget between them fell short, so it was not recommended (worth saying why).
pub fn skipped_below(shares: &[(usize, f64)], recommended: usize, target: f64) -> Option<usize> {
    shares
        .iter()
        .filter(|&&(b, s)| b < recommended && s >= target - TOLERANCE)
        .map(|&(b, _)| b)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_budget_reaching_the_target() {
        let s = [(64, 0.5), (128, 0.85), (256, 0.95), (512, 1.0)];
        assert_eq!(recommend_budget(&s, 80.0, 0.9), Ok(256));
        assert_eq!(recommend_budget(&s, 80.0, 0.8), Ok(128));
        assert_eq!(recommend_budget(&s, 80.0, 1.0), Ok(512));
        // Order of the input does not matter.
        let r = [(512, 1.0), (64, 0.5), (256, 0.95), (128, 0.85)];
        assert_eq!(recommend_budget(&r, 80.0, 0.9), Ok(256));
    }

    #[test]
    fn exactly_the_target_counts_and_ties_go_to_the_smaller_budget() {
        // 0.9 as a ratio of means is not exact in floating point.
        let share = 72.0 / 80.0;
        assert_eq!(
            recommend_budget(&[(64, share), (128, share)], 80.0, 0.9),
            Ok(64)
        );
        assert_eq!(
            recommend_budget(&[(64, 1.0), (128, 1.0)], 80.0, 1.0),
            Ok(64)
        );
        // A share above 1 (the compressed cache answered better) reaches any target.
        assert_eq!(recommend_budget(&[(64, 1.2)], 50.0, 1.0), Ok(64));
    }

    #[test]
    fn a_small_budget_above_a_failing_larger_one_is_not_recommended() {
        let s = [(64, 0.95), (128, 0.7), (256, 0.92)];
        assert_eq!(recommend_budget(&s, 80.0, 0.9), Ok(256));
        assert_eq!(skipped_below(&s, 256, 0.9), Some(64));
        assert_eq!(skipped_below(&s, 256, 0.96), None);
    }

    #[test]
    fn none_reaching_the_target_says_which_came_closest() {
        let s = [(64, 0.4), (128, 0.7), (256, 0.7)];
        let e = recommend_budget(&s, 80.0, 0.9).unwrap_err();
        assert_eq!(
            e,
            NoRecommendation::BelowTarget {
                target: 0.9,
                best_budget: 128,
                best_share: 0.7
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("90%") && msg.contains("budget 128") && msg.contains("70%"),
            "{msg}"
        );
        assert!(msg.contains("--target"), "{msg}");
        // The largest budget failing blocks every smaller one.
        assert!(recommend_budget(&[(64, 0.95), (128, 0.5)], 80.0, 0.9).is_err());
    }

    #[test]
    fn a_full_cache_scoring_zero_recommends_nothing() {
        let s = [(64, 0.0), (128, 0.0)];
        assert_eq!(
            recommend_budget(&s, 0.0, 0.9),
            Err(NoRecommendation::FullScoresZero)
        );
        assert_eq!(
            recommend_budget(&[], 50.0, 0.9),
            Err(NoRecommendation::NoBudgets)
        );
    }
}
