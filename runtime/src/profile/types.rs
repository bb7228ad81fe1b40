//! The profile's data structures, as stored in the RON file, and the small helpers that fill
//! them (fingerprint hashing, provenance timestamps). Checks live in `validate`, reading and
//! writing in `io`, and what the runtime derives from a loaded profile in `lookup`.

pub use crate::store::sha256_hex;
use serde::{Deserialize, Serialize};

use super::settings::Settings;
use crate::spec::ModelSpec;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// `compresskv <version>`, recorded in [`Provenance::tool_version`].
pub const TOOL_VERSION: &str = concat!("compresskv ", env!("CARGO_PKG_VERSION"));

/// Allowed values of [`LayerErrors::source`].
pub const LAYER_ERROR_SOURCES: [&str; 3] = ["qa", "needles", "imported"];

/// Tolerance on `sum(per_layer) == 1`.
pub const SUM_TOLERANCE: f64 = 1e-6;

/// Everything the runtime needs to know about one model beyond its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub schema_version: u32,
    /// Hugging Face style id, e.g. `google/gemma-3-270m`.
    pub model_id: String,
    pub fingerprint: Fingerprint,
    /// `[layer][query head]` Semantic Retrieval Head score (higher = more important).
    pub srh_scores: Vec<Vec<f64>>,
    /// `[layer][query head]` classic retrieval-head score (Wu et al. 2024).
    pub retrieval_scores: Vec<Vec<f64>>,
    /// Offline per-layer eviction-error estimate; `None` => uniform layer budgets.
    #[serde(default)]
    pub layer_errors: Option<LayerErrors>,
    pub defaults: Defaults,
    /// Result of `compresskv profile --tune`.
    #[serde(default)]
    pub tuning: Option<Tuning>,
    /// The budget `--budget auto` uses, from `compresskv profile verify --write`; profiles
    /// written before it existed have none.
    #[serde(default)]
    pub recommendation: Option<BudgetRecommendation>,
    pub provenance: Provenance,
}

/// What identifies the model a profile was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    /// [`crate::spec::Architecture::name`], e.g. `llama`.
    pub architecture: String,
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// sha256 hex of the config text (`config.json`, or the GGUF metadata summary).
    pub config_hash: String,
    /// sha256 hex of layer 0's attention output projection as stored in the weights the
    /// profile was measured on (see `Transformer::weight_hash`), or `""` if unknown. Checked at
    /// load: a difference is a warning (`--strict-profile`: an error).
    pub weight_hash: String,
}

/// Per-layer eviction error estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerErrors {
    /// One value per layer, non-negative, summing to 1.
    pub per_layer: Vec<f64>,
    /// The same estimate per calibration data set (`(name, per layer)`), not normalised.
    pub per_dataset: Vec<(String, Vec<f64>)>,
    /// One of [`LAYER_ERROR_SOURCES`]: `qa`, `needles` or `imported`.
    pub source: String,
}

/// What a profile runs with when neither tuning nor the command line says otherwise: a
/// compression setting plus the layer-budget bounds. The same shape is what is in force after
/// the merge ([`Effective`](super::Effective)).
///
/// Stored flat in RON — the setting's fields and the two bounds side by side — so the setting's
/// fields are listed once, on [`Settings`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Defaults {
    #[serde(flatten)]
    pub settings: Settings,
    /// Smallest per-layer budget.
    pub min_budget: usize,
    /// Largest per-layer budget as a multiple of the mean budget.
    pub max_budget_factor: f64,
}

impl Defaults {
    /// The standard defaults for a model with `n_heads` query heads.
    pub fn for_heads(n_heads: usize) -> Defaults {
        Defaults {
            settings: Settings {
                srh_heads: Profile::default_srh_heads(n_heads),
                window: 8,
                kernel: 5,
                mix: 0.0,
                union: 0.0,
                error_weight: 1.0,
            },
            min_budget: 32,
            max_budget_factor: 3.0,
        }
    }

    /// These bounds with `settings` in force.
    pub fn with(&self, settings: Settings) -> Defaults {
        Defaults { settings, ..*self }
    }
}

/// Reads the flat RON block: the two bounds are taken out and the rest must be a [`Settings`]
/// (its field names, defaults for fields added later, and unknown-field errors).
impl<'de> Deserialize<'de> for Defaults {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = match ron::Value::deserialize(de)? {
            ron::Value::Map(m) => m,
            other => {
                return Err(D::Error::custom(format!(
                    "defaults must be a struct of settings, found {other:?}"
                )));
            }
        };
        let mut bound = |name: &'static str| {
            fields
                .remove(&ron::Value::String(name.into()))
                .ok_or_else(|| D::Error::missing_field(name))
        };
        let min_budget = bound("min_budget")?;
        let max_budget_factor = bound("max_budget_factor")?;
        Ok(Defaults {
            settings: ron::Value::Map(fields)
                .into_rust()
                .map_err(D::Error::custom)?,
            min_budget: min_budget.into_rust().map_err(D::Error::custom)?,
            max_budget_factor: max_budget_factor.into_rust().map_err(D::Error::custom)?,
        })
    }
}

/// Result of `compresskv profile --tune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    pub chosen: Settings,
    /// Every setting tried, with its mean recall in `[0, 1]`.
    pub table: Vec<(Settings, f64)>,
    /// Per-layer budgets of the chosen setting (empty, or one per layer).
    pub budgets: Vec<usize>,
    /// The best setting at each tuned mean budget: how many heads to trust depends on how many
    /// entries may be kept (one sharp head wins at small budgets, a blend at large ones). The
    /// runtime uses the entry whose budget is nearest (log scale) to the requested one.
    #[serde(default)]
    pub per_budget: Vec<BudgetChoice>,
    /// The choices scored on held-out prompts the search did not see (absent in profiles tuned
    /// before the split, or without validation prompts).
    #[serde(default)]
    pub validation: Option<Validation>,
}

/// How the tune's choices score on its validation split: prompts built like the search's
/// (other needles, keys, depths and haystack rotations) but never used to choose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// Validation prompts scored (those the full cache answered) and search prompts.
    pub prompts: usize,
    pub search_prompts: usize,
    /// Every setting's mean validation score in `[0, 1]` over all budgets (same order as
    /// [`Tuning::table`]).
    pub table: Vec<(Settings, f64)>,
    pub per_budget: Vec<BudgetValidation>,
}

/// One budget of [`Validation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetValidation {
    pub budget: usize,
    /// The overall choice's validation score at this budget, in `[0, 1]`.
    pub overall: f64,
    /// The search's best setting at this budget and its validation score.
    pub candidate: Settings,
    pub candidate_score: f64,
    /// Whether the candidate is the budget's choice: only when it beats the overall choice on
    /// the validation split (a search-split win alone can be luck).
    pub kept: bool,
}

/// The tuning result at one mean budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetChoice {
    pub budget: usize,
    pub chosen: Settings,
    /// Every setting's mean score in `[0, 1]` at this budget.
    pub table: Vec<(Settings, f64)>,
}

impl Tuning {
    /// The tuned setting for a mean budget: the per-budget choice nearest on a log scale, or
    /// the overall choice when there is none (or the budget is unknown, e.g. `--ratio`).
    pub fn setting_for(&self, budget: Option<usize>) -> Settings {
        let Some(b) = budget.filter(|&b| b > 0) else {
            return self.chosen;
        };
        self.per_budget
            .iter()
            .filter(|c| c.budget > 0)
            .min_by(|x, y| {
                let d = |c: &BudgetChoice| ((c.budget as f64) / (b as f64)).ln().abs();
                d(x).total_cmp(&d(y))
            })
            .map_or(self.chosen, |c| c.chosen)
    }
}

/// What `compresskv profile verify` measured: CompressKV's score at each budget as a share of
/// the full cache's on held-out prompts, and the smallest budget that keeps `target` of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetRecommendation {
    /// The share of the full cache's score a budget had to keep, in (0, 1].
    pub target: f64,
    /// The recommended mean budget (KV entries per compressed layer).
    pub budget: usize,
    /// The method measured (`compresskv`).
    pub method: String,
    /// Prompt lengths (tokens) and needle depths (percent) of the held-out prompts.
    pub lengths: Vec<usize>,
    pub depths: Vec<f64>,
    /// What the prompts were (task, protocol, haystack and needles by name, never by path).
    pub prompts: String,
    /// The full cache's mean score (the metric's scale, e.g. recall in percent).
    pub full_score: f64,
    /// `(budget, share of the full cache's score)` for every budget measured, ascending.
    pub shares: Vec<(usize, f64)>,
    /// UTC timestamp of the measurement, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
}

/// How the profile was made. Nothing machine-local (no absolute paths).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub tool_version: String,
    /// sha256 hex of the calibration data (or of the imported files).
    pub calibration_hash: String,
    /// Description of the search grid / calibration settings.
    pub grid: String,
    pub seed: u64,
    pub wall_time_s: f64,
    /// File names (never absolute paths) the scores were imported from, and how.
    #[serde(default)]
    pub imported_from: Option<String>,
    /// UTC timestamp, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
}

impl Fingerprint {
    /// Fingerprint of a model: its shape from `spec`, the hash of its config text and, when
    /// given, the hash of one weight tensor's bytes.
    pub fn of(spec: &ModelSpec, config_text: &str, weight_bytes: Option<&[u8]>) -> Fingerprint {
        Fingerprint {
            architecture: spec.architecture.name().to_string(),
            n_layers: spec.n_layers,
            n_heads: spec.n_heads,
            n_kv_heads: spec.n_kv_heads,
            head_dim: spec.head_dim,
            vocab_size: spec.vocab_size,
            config_hash: sha256_hex(config_text.as_bytes()),
            weight_hash: weight_bytes.map(sha256_hex).unwrap_or_default(),
        }
    }

    /// `llama, 32 layers × 32 heads, 8 kv heads, head_dim 128, vocab 128256`.
    pub fn describe(&self) -> String {
        shape_text(
            &self.architecture,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
            self.vocab_size,
        )
    }
}

pub(super) fn shape_text(arch: &str, l: usize, h: usize, kv: usize, d: usize, v: usize) -> String {
    format!("{arch}, {l} layers × {h} heads, {kv} kv heads, head_dim {d}, vocab {v}")
}

/// First 12 hex digits of a hash, for messages.
pub(super) fn short_hash(h: &str) -> &str {
    &h[..h.len().min(12)]
}

impl Profile {
    /// Default number of SRH heads per layer: `max(1, n_heads / 8)`.
    pub fn default_srh_heads(n_heads: usize) -> usize {
        (n_heads / 8).max(1)
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (for [`Provenance::created`]).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_timestamp(secs)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}
