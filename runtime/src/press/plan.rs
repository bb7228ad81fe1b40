//! What a profile implies at a mean budget — the settings in force, the heads that score each
//! layer and the per-layer budgets — and the profile export for other engines: a versioned
//! JSON document with the scores and those plans, so that an HF transformers / kvpress press
//! can apply CompressKV's selection without reading our RON format.

use serde::{Deserialize, Serialize};

use super::PressError;
use super::budget::{Allocator, ErrorAwareParams};
use super::engine::layer_budgets;
use crate::profile::{Fingerprint, Profile, Settings};

/// The export format's name, in every document.
pub const EXPORT_SCHEMA: &str = "compresskv.profile-export";
/// Bumped on any change a reader of the previous version would misread.
pub const EXPORT_VERSION: u32 = 1;

/// The runtime's plan for one mean budget (entries kept per compressed layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetPlan {
    /// The mean budget asked for.
    pub budget: usize,
    /// The settings in force at this budget (tuning for the nearest tuned budget, else the
    /// defaults).
    pub settings: Settings,
    /// Per layer, the query heads whose attention scores the tokens (the top `srh_heads`
    /// Semantic Retrieval Heads, ascending).
    pub scoring_heads: Vec<Vec<usize>>,
    /// Per layer, the entries kept (window included); `None` for a layer kept whole (Gemma 3's
    /// sliding-window layers under the default `--sliding keep`).
    pub layer_budgets: Vec<Option<usize>>,
    /// Set when the bounds could not all be met (e.g. the budget is below the minimum).
    pub note: Option<String>,
}

/// The plan of `p` at mean budget `b`. The compressed layers are those with an error share
/// (the profiler measures exactly the layers the runtime compresses under `--sliding keep`);
/// without layer errors, every layer, uniformly.
pub fn budget_plan(p: &Profile, b: usize) -> Result<BudgetPlan, PressError> {
    let effective = p.effective_at(Some(b), &Default::default());
    let settings = effective.settings;
    if b <= settings.window {
        return Err(PressError::BadBudget(format!(
            "--budget {b} is not larger than the profile's observation window ({}), which is \
             always kept: pass a larger --budget",
            settings.window
        )));
    }
    let n = p.fingerprint.n_layers;
    let errors = p.layer_errors.as_ref().map(|e| e.per_layer.as_slice());
    let layers: Vec<usize> = match errors {
        Some(e) => (0..n).filter(|&l| e[l] > 0.0).collect(),
        None => (0..n).collect(),
    };
    let (budgets, note) = layer_budgets(
        Allocator::ErrorAware,
        &layers,
        b,
        settings.window,
        ErrorAwareParams::from(&effective),
        errors,
    );
    let mut layer_budgets = vec![None; n];
    for (&l, &bl) in layers.iter().zip(&budgets) {
        layer_budgets[l] = Some(bl);
    }
    let scoring_heads = (0..n)
        .map(|l| {
            let mut h = p.top_srh_heads(l, settings.srh_heads);
            h.sort_unstable();
            h
        })
        .collect();
    Ok(BudgetPlan {
        budget: b,
        settings,
        scoring_heads,
        layer_budgets,
        note,
    })
}

/// `compresskv profile export --format json`: everything another engine needs to apply
/// CompressKV's selection (see the README's "Profile export" section for the field meanings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileExport {
    /// [`EXPORT_SCHEMA`].
    pub schema: String,
    /// [`EXPORT_VERSION`].
    pub version: u32,
    pub model_id: String,
    /// The model the profile was measured on (shape, config and weight hashes).
    pub fingerprint: Fingerprint,
    /// `[layer][query head]` Semantic Retrieval Head scores (higher = more retrieval).
    pub srh_scores: Vec<Vec<f64>>,
    /// `[layer][query head]` classic retrieval-head (copy-paste) scores.
    pub retrieval_scores: Vec<Vec<f64>>,
    /// Normalised per-layer eviction errors (sum 1), if measured.
    pub layer_errors: Option<Vec<f64>>,
    /// The settings used where neither tuning nor the user says otherwise.
    pub defaults: Settings,
    /// Smallest per-layer budget, and the largest as a multiple of the mean.
    pub min_budget: usize,
    pub max_budget_factor: f64,
    /// The tuned setting overall and per tuned budget (`None`: not tuned).
    pub tuned: Option<TunedSettings>,
    /// The plan at each exported mean budget.
    pub plans: Vec<BudgetPlan>,
}

/// The tuning's choices, without its score tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunedSettings {
    pub overall: Settings,
    /// `(budget, setting)`: the runtime uses the entry nearest (log scale) to its budget.
    pub per_budget: Vec<(usize, Settings)>,
}

impl ProfileExport {
    /// The export of `p` with its plans at `budgets`.
    pub fn new(p: &Profile, budgets: &[usize]) -> Result<Self, PressError> {
        Ok(ProfileExport {
            schema: EXPORT_SCHEMA.to_string(),
            version: EXPORT_VERSION,
            model_id: p.model_id.clone(),
            fingerprint: p.fingerprint.clone(),
            srh_scores: p.srh_scores.clone(),
            retrieval_scores: p.retrieval_scores.clone(),
            layer_errors: p.layer_errors.as_ref().map(|e| e.per_layer.clone()),
            defaults: p.defaults.settings,
            min_budget: p.defaults.min_budget,
            max_budget_factor: p.defaults.max_budget_factor,
            tuned: p.tuning.as_ref().map(|t| TunedSettings {
                overall: t.chosen,
                per_budget: t.per_budget.iter().map(|c| (c.budget, c.chosen)).collect(),
            }),
            plans: budgets
                .iter()
                .map(|&b| budget_plan(p, b))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::sample;

    #[test]
    fn plan_keeps_the_budget_and_scores_with_the_top_heads() {
        let p = sample();
        let plan = budget_plan(&p, 128).unwrap();
        let kept: Vec<usize> = plan.layer_budgets.iter().flatten().copied().collect();
        assert!(!kept.is_empty());
        let mean = kept.iter().sum::<usize>() as f64 / kept.len() as f64;
        assert!((mean - 128.0).abs() <= 1.0, "mean {mean}");
        for (l, heads) in plan.scoring_heads.iter().enumerate() {
            assert_eq!(
                heads.len(),
                plan.settings.srh_heads.min(p.fingerprint.n_heads)
            );
            let best = p.top_srh_heads(l, 1)[0];
            assert!(heads.contains(&best), "layer {l}: {heads:?} lacks {best}");
        }
    }

    #[test]
    fn budget_not_above_the_window_is_refused() {
        let p = sample();
        let w = p.effective_at(Some(4), &Default::default()).settings.window;
        let e = budget_plan(&p, w).unwrap_err().to_string();
        assert!(e.contains("observation window"), "{e}");
    }

    #[test]
    fn export_round_trips_through_json() {
        let p = sample();
        let x = ProfileExport::new(&p, &[64, 128]).unwrap();
        assert_eq!(
            (x.schema.as_str(), x.version),
            (EXPORT_SCHEMA, EXPORT_VERSION)
        );
        assert_eq!(x.plans.len(), 2);
        let back: ProfileExport =
            serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
        // serde_json parses floats to within an ulp (no `float_roundtrip`).
        assert_eq!(
            (&back.plans, &back.tuned, back.defaults),
            (&x.plans, &x.tuned, x.defaults)
        );
        for (a, b) in back
            .srh_scores
            .iter()
            .flatten()
            .zip(x.srh_scores.iter().flatten())
        {
            assert!((a - b).abs() <= 1e-15 * b.abs().max(1.0));
        }
    }
}
