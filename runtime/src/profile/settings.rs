//! One compression setting — the knobs every method reads — and the command line's overrides
//! of it. The profile's defaults and tune rows, the tune grid, the layer-error probe and the
//! CLI flags all speak this type; [`Profile::effective_checked_at`] is the one merge of
//! profile → tuning → overrides into validated settings. Adding a knob touches this file, its
//! flag and the press that reads it.
//!
//! [`Profile::effective_checked_at`]: super::Profile::effective_checked_at

use serde::{Deserialize, Serialize};

use super::{Defaults, ProfileError};

/// A compression setting (stored as the profile's tune rows; absent fields take the values
/// profiles made before them ran with).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Semantic Retrieval Heads per layer that score the tokens.
    pub srh_heads: usize,
    /// Observation window: the last prompt queries that score the entries (always kept).
    pub window: usize,
    /// Average-pooling kernel over the scores (absent = 5, the kernel every earlier tune ran
    /// with). Wider kernels keep whole evidence spans rather than their peak tokens.
    #[serde(default = "five")]
    pub kernel: usize,
    /// Blend of the SRH score with the all-heads score (0 = pure SRH, the paper).
    pub mix: f64,
    /// Rank-level union with the all-heads ranking (absent in profiles made before it).
    #[serde(default)]
    pub union: f64,
    /// Layer budgets: weight of the error shares against uniform (absent = 1, the paper).
    #[serde(default = "one")]
    pub error_weight: f64,
}

fn one() -> f64 {
    1.0
}

fn five() -> usize {
    5
}

impl Settings {
    /// These settings with every knob `o` sets replaced.
    pub fn overridden(mut self, o: &Overrides) -> Settings {
        fn set<T: Copy>(knob: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *knob = v;
            }
        }
        set(&mut self.srh_heads, o.srh_heads);
        set(&mut self.window, o.window);
        set(&mut self.kernel, o.kernel);
        set(&mut self.mix, o.mix);
        set(&mut self.union, o.union);
        set(&mut self.error_weight, o.error_weight);
        self
    }

    /// Checks a stored setting (`what` names it in the message): heads in `1..=n_heads`, a
    /// window, an odd kernel, blends in [0, 1].
    pub fn check(&self, what: &str, n_heads: usize) -> Result<(), String> {
        let Settings {
            srh_heads,
            window,
            kernel,
            mix,
            union,
            error_weight,
        } = *self;
        if srh_heads == 0 || srh_heads > n_heads {
            return Err(format!(
                "{what}.srh_heads is {srh_heads} (must be in 1..={n_heads})"
            ));
        }
        if window == 0 {
            return Err(format!("{what}.window is 0 (must be ≥ 1)"));
        }
        if kernel == 0 || kernel.is_multiple_of(2) {
            return Err(format!(
                "{what}.kernel is {kernel} (must be odd: 1 = no pooling, 5 = the paper's)"
            ));
        }
        if !mix.is_finite() || !(0.0..=1.0).contains(&mix) {
            return Err(format!("{what}.mix is {mix} (must be in [0, 1])"));
        }
        if !union.is_finite() || !(0.0..=1.0).contains(&union) {
            return Err(format!("{what}.union is {union} (must be in [0, 1])"));
        }
        if !error_weight.is_finite() || !(0.0..=1.0).contains(&error_weight) {
            return Err(format!(
                "{what}.error_weight is {error_weight} (must be in [0, 1])"
            ));
        }
        Ok(())
    }
}

/// Something per knob of a [`Settings`] — the knobs listed once for every such use: the
/// flags' [`Overrides`] hold an `Option` per knob, a tune's search axes ([`Axes`]) a list.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Knobs<U, F> {
    pub srh_heads: U,
    pub window: U,
    pub kernel: U,
    pub mix: F,
    pub union: F,
    pub error_weight: F,
}

/// Command-line overrides of a setting (`None`: keep the profile's).
pub type Overrides = Knobs<Option<usize>, Option<f64>>;

/// The values a tune tries for each knob (every combination is one setting).
pub type Axes = Knobs<Vec<usize>, Vec<f64>>;

impl Axes {
    /// Every combination, in search order: earlier values of earlier knobs first (the tune
    /// lists the simplest setting first, so ties go to it).
    pub fn settings(&self) -> Vec<Settings> {
        let mut v = Vec::new();
        for &srh_heads in &self.srh_heads {
            for &window in &self.window {
                for &kernel in &self.kernel {
                    for &mix in &self.mix {
                        for &union in &self.union {
                            for &error_weight in &self.error_weight {
                                v.push(Settings {
                                    srh_heads,
                                    window,
                                    kernel,
                                    mix,
                                    union,
                                    error_weight,
                                });
                            }
                        }
                    }
                }
            }
        }
        v
    }
}

impl Overrides {
    /// Rejects overrides outside their valid range for model `model_id` with `n_heads` query
    /// heads; each error names the flag and how to fix it.
    pub fn check(&self, n_heads: usize, model_id: &str) -> Result<(), ProfileError> {
        if let Some(h) = self.srh_heads
            && (h == 0 || h > n_heads)
        {
            return Err(ProfileError::BadOverride {
                what: "--srh-heads",
                problem: format!(
                    "{h} is outside 1..={n_heads} ({model_id} has {n_heads} query heads)"
                ),
                fix: format!("pass a value between 1 and {n_heads}"),
            });
        }
        if self.window == Some(0) {
            return Err(ProfileError::BadOverride {
                what: "--window",
                problem: "0 (the observation window needs at least one token)".into(),
                fix: "pass a window of at least 1 (the default is 8)".into(),
            });
        }
        if self.kernel == Some(0) {
            return Err(ProfileError::BadOverride {
                what: "--kernel",
                problem: "0 (the pooling kernel needs at least one token)".into(),
                fix: "pass a kernel of at least 1 (the default is 5; 1 disables pooling)".into(),
            });
        }
        for (what, value, fix) in [
            (
                "--mix",
                self.mix,
                "pass a value between 0 (SRH heads only) and 1 (all heads)",
            ),
            (
                "--union",
                self.union,
                "pass the share of kept entries ranked by all heads, between 0 and 1",
            ),
            (
                "--error-weight",
                self.error_weight,
                "pass 1 (layer budgets from the eviction errors), 0 (uniform) or between",
            ),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && (0.0..=1.0).contains(&v))
            {
                return Err(ProfileError::BadOverride {
                    what,
                    problem: format!("{v} is outside [0, 1]"),
                    fix: fix.into(),
                });
            }
        }
        Ok(())
    }
}

/// Settings in force: a profile's [`Defaults`] after the merge with its tuning and the flags
/// (the setting in force, the profile's layer-budget bounds).
pub type Effective = Defaults;

impl Defaults {
    /// The standard settings of a model with `n_heads` query heads and no profile,
    /// overridden by `o` (checked).
    pub fn without_profile(
        n_heads: usize,
        model_id: &str,
        o: &Overrides,
    ) -> Result<Effective, ProfileError> {
        o.check(n_heads, model_id)?;
        let d = Defaults::for_heads(n_heads);
        Ok(d.with(d.settings.overridden(o)))
    }
}
