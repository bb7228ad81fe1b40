//! Model profiles: what the profiler (`compresskv profile`) learns once per model and the runtime
//! reads by model id.
//!
//! A profile holds the Semantic Retrieval Head (SRH) score and the classic retrieval-head score of
//! every query head, the offline per-layer eviction-error estimate used for layer budgets, the
//! model's default press settings (optionally tuned), a fingerprint of the model it was made for
//! and the provenance of the run. It is stored as versioned RON in `<org>--<name>.ron` (the
//! repository's `profiles/`, built into the binary, or the user's profile directory; see
//! [`registry`]) and contains nothing machine-local.
//!
//! - [`Profile`]: the file's contents, (de)serialisation, validation, atomic save, model check,
//!   head ranking and effective settings.
//! - [`registry`]: file naming and the search order used to find a model's profile.
//! - [`builtin`]: the profiles and calibration data embedded in the binary.
//! - [`import`]: conversion of the CompressKV paper's published scores into a profile.

pub mod builtin;
mod error;
pub mod import;
pub mod registry;
mod write;

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::ModelSpec;

pub use error::ProfileError;
pub use import::{PaperFiles, import_paper, import_paper_files};
pub use registry::{
    MODEL_DIR_PROFILE, PROFILES_ENV, ProfileSource, default_profile_out, env_profiles_dir,
    find_profile, find_profile_from_env, profile_file_name, user_profiles_dir,
};

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

/// Press settings used when neither tuning nor the command line says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// SRH heads per layer used to score tokens.
    pub srh_heads: usize,
    /// Observation window (last prompt tokens whose attention scores the cache).
    pub window: usize,
    /// Pooling kernel over token scores.
    pub kernel: usize,
    /// Smallest per-layer budget.
    pub min_budget: usize,
    /// Largest per-layer budget as a multiple of the mean budget.
    pub max_budget_factor: f64,
    /// Mix between SRH scores (0) and all-head scores (1).
    pub mix: f64,
    /// Share of the kept entries ranked by all heads, merged with the SRH ranking (0 = none).
    #[serde(default)]
    pub union: f64,
    /// How far layer budgets follow the layer errors (1 = the paper, 0 = uniform).
    #[serde(default = "one")]
    pub error_weight: f64,
}

fn one() -> f64 {
    1.0
}

fn five() -> usize {
    5
}

impl Defaults {
    /// The standard defaults for a model with `n_heads` query heads.
    pub fn for_heads(n_heads: usize) -> Defaults {
        Defaults {
            srh_heads: Profile::default_srh_heads(n_heads),
            window: 8,
            kernel: 5,
            min_budget: 32,
            max_budget_factor: 3.0,
            mix: 0.0,
            union: 0.0,
            error_weight: 1.0,
        }
    }
}

/// Result of `compresskv profile --tune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    pub chosen: TuneSetting,
    /// Every setting tried, with its mean recall in `[0, 1]`.
    pub table: Vec<(TuneSetting, f64)>,
    /// Per-layer budgets of the chosen setting (empty, or one per layer).
    pub budgets: Vec<usize>,
    /// The best setting at each tuned mean budget: how many heads to trust depends on how many
    /// entries may be kept (one sharp head wins at small budgets, a blend at large ones). The
    /// runtime uses the entry whose budget is nearest (log scale) to the requested one.
    #[serde(default)]
    pub per_budget: Vec<BudgetChoice>,
}

/// The tuning result at one mean budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetChoice {
    pub budget: usize,
    pub chosen: TuneSetting,
    /// Every setting's mean score in `[0, 1]` at this budget.
    pub table: Vec<(TuneSetting, f64)>,
}

impl Tuning {
    /// The tuned setting for a mean budget: the per-budget choice nearest on a log scale, or
    /// the overall choice when there is none (or the budget is unknown, e.g. `--ratio`).
    pub fn setting_for(&self, budget: Option<usize>) -> TuneSetting {
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

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSetting {
    pub srh_heads: usize,
    pub window: usize,
    /// Average-pooling kernel over the scores (absent = 5, the kernel every earlier tune ran
    /// with). Wider kernels keep whole evidence spans rather than their peak tokens.
    #[serde(default = "five")]
    pub kernel: usize,
    pub mix: f64,
    /// Rank-level union with the all-heads ranking (absent in profiles made before it).
    #[serde(default)]
    pub union: f64,
    /// Layer budgets: weight of the error shares against uniform (absent = 1, the paper).
    #[serde(default = "one")]
    pub error_weight: f64,
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

/// Command-line overrides of the profile's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Overrides {
    pub srh_heads: Option<usize>,
    pub window: Option<usize>,
    pub kernel: Option<usize>,
    pub mix: Option<f64>,
    pub union: Option<f64>,
    pub error_weight: Option<f64>,
}

/// Settings in force: defaults, overridden by tuning, overridden by the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    pub srh_heads: usize,
    pub window: usize,
    pub kernel: usize,
    pub mix: f64,
    pub union: f64,
    pub error_weight: f64,
    pub min_budget: usize,
    pub max_budget_factor: f64,
}

/// Lower-case sha256 hex of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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

fn shape_text(arch: &str, l: usize, h: usize, kv: usize, d: usize, v: usize) -> String {
    format!("{arch}, {l} layers × {h} heads, {kv} kv heads, head_dim {d}, vocab {v}")
}

/// First 12 hex digits of a hash, for messages.
fn short_hash(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// Just enough of a profile to report its version when the rest does not parse.
#[derive(Deserialize)]
#[serde(rename = "Profile")]
struct VersionProbe {
    schema_version: u32,
    #[serde(default)]
    model_id: String,
}

impl Profile {
    /// Default number of SRH heads per layer: `max(1, n_heads / 8)`.
    pub fn default_srh_heads(n_heads: usize) -> usize {
        (n_heads / 8).max(1)
    }

    /// Serialises to the profile file format: RON with a header comment, one line per layer.
    pub fn to_ron_string(&self) -> Result<String, ProfileError> {
        write::to_ron(self)
    }

    /// Parses and validates a profile. `origin` (usually the file path) is used in messages.
    pub fn from_ron_str(s: &str, origin: &str) -> Result<Profile, ProfileError> {
        let parsed: Result<Profile, ron::error::SpannedError> = ron::from_str(s);
        let profile = match parsed {
            Ok(p) => p,
            Err(e) => {
                // A profile from another schema version may not parse at all: report the version
                // rather than the first unknown field.
                if let Ok(probe) = ron::from_str::<VersionProbe>(s)
                    && probe.schema_version != SCHEMA_VERSION
                {
                    return Err(schema_error(origin, probe.schema_version, &probe.model_id));
                }
                return Err(ProfileError::Parse {
                    origin: origin.to_string(),
                    line: e.span.start.line,
                    col: e.span.start.col,
                    msg: e.code.to_string(),
                });
            }
        };
        profile.validate_as(origin)?;
        Ok(profile)
    }

    /// Checks the profile's invariants (schema version, shapes, finite non-negative scores,
    /// `per_layer` summing to 1, sane defaults/tuning, no machine-local paths).
    pub fn validate(&self) -> Result<(), ProfileError> {
        self.validate_as("(in memory)")
    }

    fn validate_as(&self, origin: &str) -> Result<(), ProfileError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(schema_error(origin, self.schema_version, &self.model_id));
        }
        self.check_consistency()
            .map_err(|problem| ProfileError::Invalid {
                origin: origin.to_string(),
                model_id: if self.model_id.is_empty() {
                    "<MODEL_ID>".to_string()
                } else {
                    self.model_id.clone()
                },
                problem,
            })?;
        self.check_no_machine_local()
    }

    fn check_consistency(&self) -> Result<(), String> {
        let fp = &self.fingerprint;
        if self.model_id.trim().is_empty() {
            return Err("model_id is empty".into());
        }
        if fp.architecture.trim().is_empty() {
            return Err("fingerprint.architecture is empty".into());
        }
        for (name, v) in [
            ("n_layers", fp.n_layers),
            ("n_heads", fp.n_heads),
            ("n_kv_heads", fp.n_kv_heads),
            ("head_dim", fp.head_dim),
            ("vocab_size", fp.vocab_size),
        ] {
            if v == 0 {
                return Err(format!("fingerprint.{name} is 0"));
            }
        }
        if !fp.n_heads.is_multiple_of(fp.n_kv_heads) {
            return Err(format!(
                "fingerprint.n_heads ({}) is not a multiple of fingerprint.n_kv_heads ({})",
                fp.n_heads, fp.n_kv_heads
            ));
        }
        if !is_sha256_hex(&fp.config_hash) {
            return Err(format!(
                "fingerprint.config_hash {:?} is not a sha256 hex digest",
                fp.config_hash
            ));
        }
        if !fp.weight_hash.is_empty() && !is_sha256_hex(&fp.weight_hash) {
            return Err(format!(
                "fingerprint.weight_hash {:?} is neither empty nor a sha256 hex digest",
                fp.weight_hash
            ));
        }
        check_matrix("srh_scores", &self.srh_scores, fp.n_layers, fp.n_heads)?;
        check_matrix(
            "retrieval_scores",
            &self.retrieval_scores,
            fp.n_layers,
            fp.n_heads,
        )?;
        if let Some(le) = &self.layer_errors {
            check_vector("layer_errors.per_layer", &le.per_layer, fp.n_layers)?;
            let sum: f64 = le.per_layer.iter().sum();
            if (sum - 1.0).abs() > SUM_TOLERANCE {
                return Err(format!(
                    "layer_errors.per_layer sums to {sum}, not 1 (tolerance {SUM_TOLERANCE})"
                ));
            }
            for (i, (name, v)) in le.per_dataset.iter().enumerate() {
                if name.trim().is_empty() {
                    return Err(format!("layer_errors.per_dataset[{i}] has an empty name"));
                }
                if le.per_dataset[..i].iter().any(|(n, _)| n == name) {
                    return Err(format!("layer_errors.per_dataset has {name:?} twice"));
                }
                check_vector(
                    &format!("layer_errors.per_dataset[{name:?}]"),
                    v,
                    fp.n_layers,
                )?;
            }
            if !LAYER_ERROR_SOURCES.contains(&le.source.as_str()) {
                return Err(format!(
                    "layer_errors.source is {:?}; expected one of {LAYER_ERROR_SOURCES:?}",
                    le.source
                ));
            }
        }
        let d = &self.defaults;
        let ds = TuneSetting {
            srh_heads: d.srh_heads,
            window: d.window,
            kernel: d.kernel,
            mix: d.mix,
            union: d.union,
            error_weight: d.error_weight,
        };
        check_setting("defaults", &ds, fp.n_heads)?;
        if d.min_budget == 0 {
            return Err("defaults.min_budget is 0 (must be ≥ 1)".into());
        }
        if !d.max_budget_factor.is_finite() || d.max_budget_factor < 1.0 {
            return Err(format!(
                "defaults.max_budget_factor is {} (must be finite and ≥ 1)",
                d.max_budget_factor
            ));
        }
        if let Some(t) = &self.tuning {
            let c = &t.chosen;
            check_setting("tuning.chosen", c, fp.n_heads)?;
            for (i, (s, recall)) in t.table.iter().enumerate() {
                check_setting(&format!("tuning.table[{i}]"), s, fp.n_heads)?;
                if !recall.is_finite() || !(0.0..=1.0).contains(recall) {
                    return Err(format!(
                        "tuning.table[{i}] has mean recall {recall} (must be in [0, 1])"
                    ));
                }
            }
            for (i, c) in t.per_budget.iter().enumerate() {
                let at = format!("tuning.per_budget[{i}]");
                if c.budget == 0 {
                    return Err(format!("{at} has budget 0"));
                }
                let s = &c.chosen;
                check_setting(&at, s, fp.n_heads)?;
                for (j, (s, v)) in c.table.iter().enumerate() {
                    check_setting(&format!("{at}.table[{j}]"), s, fp.n_heads)?;
                    if !v.is_finite() || !(0.0..=1.0).contains(v) {
                        return Err(format!(
                            "{at}.table[{j}] has mean score {v} (must be in [0, 1])"
                        ));
                    }
                }
            }
            if !t.budgets.is_empty() && t.budgets.len() != fp.n_layers {
                return Err(format!(
                    "tuning.budgets has {} entries but the model has {} layers",
                    t.budgets.len(),
                    fp.n_layers
                ));
            }
        }
        let p = &self.provenance;
        if !p.wall_time_s.is_finite() || p.wall_time_s < 0.0 {
            return Err(format!(
                "provenance.wall_time_s is {} (must be finite and ≥ 0)",
                p.wall_time_s
            ));
        }
        Ok(())
    }

    /// Rejects strings that look like absolute (machine-local) paths.
    fn check_no_machine_local(&self) -> Result<(), ProfileError> {
        let p = &self.provenance;
        let mut fields: Vec<(String, &str)> = vec![
            ("model_id".into(), self.model_id.as_str()),
            ("provenance.tool_version".into(), p.tool_version.as_str()),
            (
                "provenance.calibration_hash".into(),
                p.calibration_hash.as_str(),
            ),
            ("provenance.grid".into(), p.grid.as_str()),
            ("provenance.created".into(), p.created.as_str()),
        ];
        if let Some(i) = &p.imported_from {
            fields.push(("provenance.imported_from".into(), i.as_str()));
        }
        if let Some(le) = &self.layer_errors {
            fields.push(("layer_errors.source".into(), le.source.as_str()));
            for (i, (n, _)) in le.per_dataset.iter().enumerate() {
                fields.push((format!("layer_errors.per_dataset[{i}].0"), n.as_str()));
            }
        }
        for (field, value) in fields {
            if let Some(token) = absolute_path_in(value) {
                return Err(ProfileError::MachineLocal {
                    field,
                    value: value.to_string(),
                    token: token.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Writes the profile to `path` atomically: a temporary file in the same directory, fsync,
    /// rename. Creates missing parent directories. Validates first.
    pub fn save_atomic(&self, path: &Path) -> Result<(), ProfileError> {
        self.validate_as(&path.display().to_string())?;
        let text = self.to_ron_string()?;
        let file_name = path.file_name().ok_or_else(|| {
            ProfileError::io(
                "write the profile to",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| ProfileError::io("create the profile directory", &dir, e))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            file_name.to_string_lossy(),
            std::process::id(),
            unique_suffix()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(ProfileError::io("write the profile", path, e));
        }
        // Make the rename durable; not every platform can open a directory, so best effort.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProfileError::io("read the profile", path, e))?;
        Profile::from_ron_str(&text, &path.display().to_string())
    }

    /// `Some(message)` when this profile records a weight hash and the loaded weights hash
    /// differently (`model_hash`, see `Transformer::weight_hash`): same shape, other weights.
    pub fn weight_mismatch(&self, model_hash: Option<&str>) -> Option<String> {
        let (p, m) = (&self.fingerprint.weight_hash, model_hash?);
        (!p.is_empty() && !p.eq_ignore_ascii_case(m)).then(|| {
            format!(
                "the profile of {} was measured on other weights (weight sha256 {}…, these \
                 weights {}…): a fine-tune or another quantization of the same model; its head \
                 scores and layer budgets may not fit",
                self.model_id,
                short_hash(p),
                short_hash(m)
            )
        })
    }

    /// Checks that this profile was made for the model described by `spec` (`model_id` is the
    /// loaded model's id, for messages). When `config_hash` is given and the profile records
    /// one, they must be equal too. A different `model_id` alone is not an error (a profile may
    /// be reused, on purpose, for a model of identical shape and config).
    pub fn check_matches(
        &self,
        spec: &ModelSpec,
        model_id: &str,
        config_hash: Option<&str>,
    ) -> Result<(), ProfileError> {
        let fp = &self.fingerprint;
        let mut diffs = Vec::new();
        let arch = spec.architecture.name();
        if fp.architecture != arch {
            diffs.push(format!(
                "architecture differs (profile {}, model {arch})",
                fp.architecture
            ));
        }
        if fp.n_layers != spec.n_layers || fp.n_heads != spec.n_heads {
            diffs.push(format!(
                "profile has {} layers × {} heads, model has {} layers × {} heads",
                fp.n_layers, fp.n_heads, spec.n_layers, spec.n_heads
            ));
        }
        if fp.n_kv_heads != spec.n_kv_heads {
            diffs.push(format!(
                "profile has {} kv heads, model has {}",
                fp.n_kv_heads, spec.n_kv_heads
            ));
        }
        if fp.head_dim != spec.head_dim {
            diffs.push(format!(
                "profile has head_dim {}, model has {}",
                fp.head_dim, spec.head_dim
            ));
        }
        if fp.vocab_size != spec.vocab_size {
            diffs.push(format!(
                "profile has vocab {}, model has {}",
                fp.vocab_size, spec.vocab_size
            ));
        }
        if let Some(h) = config_hash
            && !h.is_empty()
            && !fp.config_hash.is_empty()
            && !h.eq_ignore_ascii_case(&fp.config_hash)
        {
            diffs.push(format!(
                "the config differs (profile config sha256 {}…, model {}…)",
                short_hash(&fp.config_hash),
                short_hash(h)
            ));
        }
        if diffs.is_empty() {
            return Ok(());
        }
        Err(ProfileError::ModelMismatch {
            profile_model: self.model_id.clone(),
            profile_shape: fp.describe(),
            model: if model_id.is_empty() {
                "<unknown id>".to_string()
            } else {
                model_id.to_string()
            },
            model_shape: shape_text(
                arch,
                spec.n_layers,
                spec.n_heads,
                spec.n_kv_heads,
                spec.head_dim,
                spec.vocab_size,
            ),
            detail: diffs.join("; "),
        })
    }

    /// The `k` query heads of `layer` with the highest SRH score, best first (ties: lower head
    /// index first). `k` is capped at the head count. Panics if `layer` is out of range.
    pub fn top_srh_heads(&self, layer: usize, k: usize) -> Vec<usize> {
        top_k(&self.srh_scores, "srh_scores", layer, k)
    }

    /// Like [`Profile::top_srh_heads`] for the classic retrieval-head score.
    pub fn top_retrieval_heads(&self, layer: usize, k: usize) -> Vec<usize> {
        top_k(&self.retrieval_scores, "retrieval_scores", layer, k)
    }

    /// Settings in force: [`Defaults`], overridden by [`Tuning::chosen`], overridden by explicit
    /// command-line `overrides`. Not range-checked; see [`Profile::effective_checked`].
    pub fn effective(&self, overrides: &Overrides) -> Effective {
        self.effective_at(None, overrides)
    }

    /// [`Profile::effective`] at a mean budget: the tuning for the nearest tuned budget
    /// ([`Tuning::setting_for`]) replaces the overall tuned setting.
    pub fn effective_at(&self, budget: Option<usize>, overrides: &Overrides) -> Effective {
        let d = &self.defaults;
        let mut e = Effective {
            srh_heads: d.srh_heads,
            window: d.window,
            kernel: d.kernel,
            mix: d.mix,
            union: d.union,
            error_weight: d.error_weight,
            min_budget: d.min_budget,
            max_budget_factor: d.max_budget_factor,
        };
        if let Some(t) = &self.tuning {
            let c = t.setting_for(budget);
            e.srh_heads = c.srh_heads;
            e.window = c.window;
            e.kernel = c.kernel;
            e.mix = c.mix;
            e.union = c.union;
            e.error_weight = c.error_weight;
        }
        if let Some(v) = overrides.srh_heads {
            e.srh_heads = v;
        }
        if let Some(v) = overrides.window {
            e.window = v;
        }
        if let Some(v) = overrides.kernel {
            e.kernel = v;
        }
        if let Some(v) = overrides.mix {
            e.mix = v;
        }
        if let Some(v) = overrides.union {
            e.union = v;
        }
        if let Some(v) = overrides.error_weight {
            e.error_weight = v;
        }
        e
    }

    /// [`Profile::effective`], rejecting overrides outside their valid range.
    pub fn effective_checked(&self, overrides: &Overrides) -> Result<Effective, ProfileError> {
        let n = self.fingerprint.n_heads;
        if let Some(h) = overrides.srh_heads
            && (h == 0 || h > n)
        {
            return Err(ProfileError::BadOverride {
                what: "--srh-heads",
                problem: format!(
                    "{h} is outside 1..={n} ({} has {n} query heads)",
                    self.model_id
                ),
                fix: format!("pass a value between 1 and {n}"),
            });
        }
        if overrides.window == Some(0) {
            return Err(ProfileError::BadOverride {
                what: "--window",
                problem: "0 (the observation window needs at least one token)".into(),
                fix: "pass a window of at least 1 (the default is 8)".into(),
            });
        }
        if overrides.kernel == Some(0) {
            return Err(ProfileError::BadOverride {
                what: "--kernel",
                problem: "0 (the pooling kernel needs at least one token)".into(),
                fix: "pass a kernel of at least 1 (the default is 5; 1 disables pooling)".into(),
            });
        }
        for (what, value, fix) in [
            (
                "--mix",
                overrides.mix,
                "pass a value between 0 (SRH heads only) and 1 (all heads)",
            ),
            (
                "--union",
                overrides.union,
                "pass the share of kept entries ranked by all heads, between 0 and 1",
            ),
            (
                "--error-weight",
                overrides.error_weight,
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
        Ok(self.effective(overrides))
    }
}

fn schema_error(origin: &str, found: u32, model_id: &str) -> ProfileError {
    ProfileError::SchemaVersion {
        origin: origin.to_string(),
        found,
        supported: SCHEMA_VERSION,
        model_id: if model_id.trim().is_empty() {
            "<MODEL_ID>".to_string()
        } else {
            model_id.to_string()
        },
    }
}

fn top_k(scores: &[Vec<f64>], what: &str, layer: usize, k: usize) -> Vec<usize> {
    let row = scores.get(layer).unwrap_or_else(|| {
        panic!(
            "{what}: layer {layer} out of range (profile has {} layers)",
            scores.len()
        )
    });
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn check_value(what: &str, v: f64) -> Result<(), String> {
    if v.is_nan() {
        Err(format!("{what} is NaN (values must be finite and ≥ 0)"))
    } else if !v.is_finite() || v < 0.0 {
        Err(format!("{what} is {v} (values must be finite and ≥ 0)"))
    } else {
        Ok(())
    }
}

fn check_vector(what: &str, v: &[f64], n_layers: usize) -> Result<(), String> {
    if v.len() != n_layers {
        return Err(format!(
            "{what} has {} entries but fingerprint.n_layers is {n_layers}",
            v.len()
        ));
    }
    for (i, &x) in v.iter().enumerate() {
        check_value(&format!("{what}[{i}]"), x)?;
    }
    Ok(())
}

fn check_matrix(what: &str, m: &[Vec<f64>], n_layers: usize, n_heads: usize) -> Result<(), String> {
    if m.len() != n_layers {
        return Err(format!(
            "{what} has {} rows (layers) but fingerprint.n_layers is {n_layers}",
            m.len()
        ));
    }
    for (l, row) in m.iter().enumerate() {
        if row.len() != n_heads {
            return Err(format!(
                "{what}[{l}] has {} entries (heads) but fingerprint.n_heads is {n_heads}",
                row.len()
            ));
        }
        for (h, &x) in row.iter().enumerate() {
            check_value(&format!("{what}[{l}][{h}]"), x)?;
        }
    }
    Ok(())
}

fn check_setting(what: &str, s: &TuneSetting, n_heads: usize) -> Result<(), String> {
    let TuneSetting {
        srh_heads,
        window,
        kernel,
        mix,
        union,
        error_weight,
    } = *s;
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

/// The first token of `s` that looks like an absolute path (`/home/…`, `~/…`, `C:\…`,
/// `\\server\…`, `file:///…`), if any. URLs such as `https://…` are allowed.
pub fn absolute_path_in(s: &str) -> Option<&str> {
    let separators = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';'
                    | '('
                    | ')'
                    | '['
                    | ']'
                    | '{'
                    | '}'
                    | '<'
                    | '>'
                    | '"'
                    | '\''
                    | '='
                    | '|'
                    | '`'
            )
    };
    for token in s.split(separators).filter(|t| !t.is_empty()) {
        let lower = token.to_ascii_lowercase();
        if lower.starts_with("file:") {
            return Some(token);
        }
        let b = token.as_bytes();
        // Windows drive (`C:\x`, `C:/x`) and UNC (`\\server\share`).
        if b.len() >= 3
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && matches!(b[2], b'\\' | b'/')
        {
            return Some(token);
        }
        if token.starts_with("\\\\") {
            return Some(token);
        }
        if token.starts_with('~') && (token == "~" || token.contains('/') || token.contains('\\')) {
            return Some(token);
        }
        if token.contains("://") {
            continue; // a URL (http, https, hf, s3…), not machine-local
        }
        // `/abs/path`, also after `key:` (`path:/home/x`).
        for piece in token.split(':') {
            let pb = piece.as_bytes();
            if pb.len() >= 2
                && pb[0] == b'/'
                && (pb[1].is_ascii_alphanumeric() || matches!(pb[1], b'.' | b'_' | b'~' | b'-'))
            {
                return Some(token);
            }
        }
    }
    None
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
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

#[cfg(test)]
pub(crate) mod test_support {
    use crate::spec::{
        Activation, Architecture, AttentionKind, LayerSpec, ModelSpec, RopeScaling, RopeSpec,
    };

    /// A hand-built spec with the given shape.
    pub fn spec(
        architecture: Architecture,
        n_layers: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        vocab_size: usize,
    ) -> ModelSpec {
        let layer = LayerSpec {
            attention: AttentionKind::Full,
            rope: RopeSpec {
                theta: 10_000.0,
                scaling: RopeScaling::None,
            },
        };
        ModelSpec {
            architecture,
            hidden_size: n_heads * head_dim,
            intermediate_size: 4 * n_heads * head_dim,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: 1e-5,
            activation: Activation::Silu,
            qkv_bias: false,
            qk_norm: false,
            sandwich_norms: false,
            embed_scale: None,
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
            attn_logit_softcap: None,
            final_logit_softcap: None,
            tie_embeddings: false,
            max_position_embeddings: 131_072,
            layers: vec![layer; n_layers],
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
        }
    }

    pub fn llama_8b() -> ModelSpec {
        spec(Architecture::Llama, 32, 32, 8, 128, 128_256)
    }

    pub fn mistral_7b() -> ModelSpec {
        spec(Architecture::Mistral, 32, 32, 8, 128, 32_768)
    }

    pub fn gemma_270m() -> ModelSpec {
        spec(Architecture::Gemma3, 18, 4, 1, 256, 262_144)
    }

    /// A fresh empty directory under the system temp dir.
    pub fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "compresskv-profile-test-{tag}-{}-{}",
            std::process::id(),
            super::unique_suffix()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    const GEMMA_CONFIG: &str = r#"{"architectures":["Gemma3ForCausalLM"],"num_hidden_layers":18}"#;

    /// A full profile for a small gemma-shaped model with tuning, layer errors and odd floats.
    fn sample() -> Profile {
        let spec = gemma_270m();
        let (l, h) = (spec.n_layers, spec.n_heads);
        let srh: Vec<Vec<f64>> = (0..l)
            .map(|i| (0..h).map(|j| ((i * 7 + j * 3) % 5) as f64 / 4.0).collect())
            .collect();
        let ret: Vec<Vec<f64>> = (0..l)
            .map(|i| (0..h).map(|j| 0.1 * (i + j) as f64 + 1e-300).collect())
            .collect();
        let raw: Vec<f64> = (0..l).map(|i| 1.0 + (i as f64).sin().abs()).collect();
        let total: f64 = raw.iter().sum();
        let per_layer: Vec<f64> = raw.iter().map(|x| x / total).collect();
        Profile {
            schema_version: SCHEMA_VERSION,
            model_id: "google/gemma-3-270m".into(),
            fingerprint: Fingerprint::of(&spec, GEMMA_CONFIG, Some(b"weights")),
            srh_scores: srh,
            retrieval_scores: ret,
            layer_errors: Some(LayerErrors {
                per_layer,
                per_dataset: vec![
                    ("qa \"quoted\" set".into(), raw.clone()),
                    ("needles".into(), vec![0.1 + 0.2; l]),
                ],
                source: "qa".into(),
            }),
            defaults: Defaults::for_heads(h),
            tuning: Some(Tuning {
                chosen: TuneSetting {
                    srh_heads: 2,
                    window: 16,
                    kernel: 9,
                    mix: 0.25,
                    union: 0.5,
                    error_weight: 1.0,
                },
                table: vec![
                    (
                        TuneSetting {
                            srh_heads: 1,
                            window: 8,
                            kernel: 5,
                            mix: 0.0,
                            union: 0.0,
                            error_weight: 1.0,
                        },
                        0.5,
                    ),
                    (
                        TuneSetting {
                            srh_heads: 2,
                            window: 16,
                            kernel: 5,
                            mix: 0.25,
                            union: 0.0,
                            error_weight: 1.0,
                        },
                        0.875,
                    ),
                ],
                budgets: vec![64; l],
                per_budget: vec![BudgetChoice {
                    budget: 256,
                    chosen: TuneSetting {
                        srh_heads: 4,
                        window: 8,
                        kernel: 5,
                        mix: 0.5,
                        union: 0.0,
                        error_weight: 1.0,
                    },
                    table: vec![(
                        TuneSetting {
                            srh_heads: 4,
                            window: 8,
                            kernel: 5,
                            mix: 0.5,
                            union: 0.0,
                            error_weight: 1.0,
                        },
                        0.9,
                    )],
                }],
            }),
            provenance: Provenance {
                tool_version: TOOL_VERSION.into(),
                calibration_hash: sha256_hex(b"calibration"),
                grid: "srh_heads=1/2/4 window=8,16 mix=0,0.25".into(),
                seed: 42,
                wall_time_s: 12.5,
                imported_from: None,
                created: utc_timestamp(1_700_000_000),
            },
        }
    }

    #[test]
    fn round_trip_through_atomic_save_and_load() {
        let p = sample();
        p.validate().unwrap();
        let dir = temp_dir("roundtrip");
        let path = dir
            .join("nested/deeper")
            .join(profile_file_name(&p.model_id));
        p.save_atomic(&path).unwrap();
        let back = Profile::load(&path).unwrap();
        assert_eq!(back, p);
        // Saving again over an existing file works and leaves no temporary files behind.
        let mut q = p.clone();
        q.tuning = None;
        q.layer_errors = None;
        q.save_atomic(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), q);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["google--gemma-3-270m.ron".to_string()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn file_format_is_readable_and_serde_ron_is_accepted_too() {
        let p = sample();
        let text = p.to_ron_string().unwrap();
        assert!(text.starts_with("// CompressKV profile"));
        assert!(text.contains("schema_version: 1,"));
        // One line per layer.
        assert_eq!(text.matches("// layer 17").count(), 2, "{text}");
        // Plain serde RON (no layout) reads back identically.
        let plain = ron::to_string(&p).unwrap();
        assert_eq!(Profile::from_ron_str(&plain, "plain").unwrap(), p);
        let named =
            ron::ser::to_string_pretty(&p, ron::ser::PrettyConfig::default().struct_names(true))
                .unwrap();
        assert_eq!(Profile::from_ron_str(&named, "named").unwrap(), p);
    }

    #[test]
    fn rejects_other_schema_versions_saying_how_to_fix() {
        let p = sample();
        let old = p
            .to_ron_string()
            .unwrap()
            .replace("schema_version: 1,", "schema_version: 0,");
        let e = Profile::from_ron_str(&old, "profiles/old.ron").unwrap_err();
        assert!(matches!(
            e,
            ProfileError::SchemaVersion {
                found: 0,
                supported: 1,
                ..
            }
        ));
        let m = e.to_string();
        assert!(m.contains("schema_version 0"), "{m}");
        assert!(m.contains("supports only schema_version 1"), "{m}");
        assert!(
            m.contains("compresskv profile --model google/gemma-3-270m"),
            "{m}"
        );
        assert!(m.contains("profiles/old.ron"), "{m}");
        // A future version with fields this build does not know is reported as a version
        // problem, not as a parse error.
        let future = p.to_ron_string().unwrap().replace(
            "schema_version: 1,",
            "schema_version: 2,\n    new_field: [1, 2],",
        );
        let e = Profile::from_ron_str(&future, "f.ron").unwrap_err();
        assert!(
            matches!(e, ProfileError::SchemaVersion { found: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn corrupt_ron_error_names_the_file() {
        let dir = temp_dir("corrupt");
        let path = dir.join("broken-profile.ron");
        let text = sample().to_ron_string().unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let e = Profile::load(&path).unwrap_err();
        assert!(matches!(e, ProfileError::Parse { .. }), "{e}");
        let m = e.to_string();
        assert!(m.contains("broken-profile.ron"), "{m}");
        assert!(m.contains("line"), "{m}");
        assert!(m.contains("compresskv profile --model"), "{m}");
        std::fs::write(&path, "not ron at all {{{").unwrap();
        let m = Profile::load(&path).unwrap_err().to_string();
        assert!(m.contains("broken-profile.ron"), "{m}");
        // A missing file is an I/O error naming it.
        let missing = dir.join("missing.ron");
        let m = Profile::load(&missing).unwrap_err().to_string();
        assert!(m.contains("missing.ron"), "{m}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn invalid(p: &Profile) -> String {
        match p.validate() {
            Err(e @ ProfileError::Invalid { .. }) => e.to_string(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn rejects_nan_and_negative_scores_on_read_and_write() {
        let mut p = sample();
        p.srh_scores[3][1] = f64::NAN;
        let m = invalid(&p);
        assert!(m.contains("srh_scores[3][1] is NaN"), "{m}");
        // NaN written by hand (or by another tool) is rejected when read.
        let text = sample().to_ron_string().unwrap().replacen(
            "srh_scores: [\n        [0.0,",
            "srh_scores: [\n        [NaN,",
            1,
        );
        assert!(text.contains("[NaN,"));
        let m = Profile::from_ron_str(&text, "nan.ron")
            .unwrap_err()
            .to_string();
        assert!(m.contains("srh_scores[0][0] is NaN"), "{m}");
        assert!(m.contains("nan.ron"), "{m}");
        // And never written.
        let dir = temp_dir("nan");
        assert!(p.save_atomic(&dir.join("x.ron")).is_err());
        assert!(!dir.join("x.ron").exists());
        std::fs::remove_dir_all(dir).unwrap();

        let mut p = sample();
        p.retrieval_scores[0][0] = -0.5;
        assert!(invalid(&p).contains("retrieval_scores[0][0] is -0.5"));
        let mut p = sample();
        p.retrieval_scores[0][0] = f64::INFINITY;
        assert!(invalid(&p).contains("retrieval_scores[0][0] is inf"));
    }

    #[test]
    fn rejects_inconsistent_shapes_and_settings() {
        let base = sample();
        type Case = (Box<dyn Fn(&mut Profile)>, &'static str);
        let mut cases: Vec<Case> = vec![
            (
                Box::new(|p| {
                    p.srh_scores.pop();
                }),
                "srh_scores has 17 rows (layers) but fingerprint.n_layers is 18",
            ),
            (
                Box::new(|p| {
                    p.retrieval_scores[5].push(0.0);
                }),
                "retrieval_scores[5] has 5 entries (heads) but fingerprint.n_heads is 4",
            ),
            (
                Box::new(|p| {
                    let le = p.layer_errors.as_mut().unwrap();
                    le.per_layer.pop();
                }),
                "layer_errors.per_layer has 17 entries but fingerprint.n_layers is 18",
            ),
            (
                Box::new(|p| {
                    let le = p.layer_errors.as_mut().unwrap();
                    le.per_layer[0] += 1e-5;
                }),
                "layer_errors.per_layer sums to",
            ),
            (
                Box::new(|p| {
                    let le = p.layer_errors.as_mut().unwrap();
                    le.per_dataset[1].1.push(0.0);
                }),
                "layer_errors.per_dataset[\"needles\"] has 19 entries",
            ),
            (
                Box::new(|p| p.layer_errors.as_mut().unwrap().source = "vibes".into()),
                "layer_errors.source is \"vibes\"",
            ),
            (Box::new(|p| p.defaults.window = 0), "defaults.window is 0"),
            (Box::new(|p| p.defaults.kernel = 0), "defaults.kernel is 0"),
            (
                Box::new(|p| p.tuning.as_mut().unwrap().chosen.kernel = 4),
                "tuning.chosen.kernel is 4 (must be odd",
            ),
            (
                Box::new(|p| p.defaults.srh_heads = 5),
                "defaults.srh_heads is 5 (must be in 1..=4)",
            ),
            (Box::new(|p| p.defaults.mix = 1.5), "defaults.mix is 1.5"),
            (
                Box::new(|p| p.defaults.max_budget_factor = 0.5),
                "defaults.max_budget_factor is 0.5",
            ),
            (
                Box::new(|p| p.tuning.as_mut().unwrap().chosen.window = 0),
                "tuning.chosen.window is 0",
            ),
            (
                Box::new(|p| p.tuning.as_mut().unwrap().table[1].1 = f64::NAN),
                "tuning.table[1] has mean recall NaN",
            ),
            (
                Box::new(|p| {
                    p.tuning
                        .as_mut()
                        .unwrap()
                        .budgets
                        .pop()
                        .map(|_| ())
                        .unwrap()
                }),
                "tuning.budgets has 17 entries",
            ),
            (
                Box::new(|p| p.fingerprint.config_hash = "abc".into()),
                "fingerprint.config_hash \"abc\"",
            ),
            (Box::new(|p| p.fingerprint.n_kv_heads = 3), "not a multiple"),
            (Box::new(|p| p.model_id = " ".into()), "model_id is empty"),
        ];
        for (i, (mutate, expect)) in cases.drain(..).enumerate() {
            let mut p = base.clone();
            mutate(&mut p);
            let m = invalid(&p);
            assert!(m.contains(expect), "case {i}: expected {expect:?} in {m}");
            assert!(m.contains("compresskv profile --model"), "case {i}: {m}");
            // The same problem is found when the text is read.
            let text = ron::to_string(&p).unwrap();
            let e = Profile::from_ron_str(&text, "case.ron")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(expect) && e.contains("case.ron"),
                "case {i}: {e}"
            );
        }
    }

    #[test]
    fn rejects_absolute_paths_in_provenance() {
        let bad = [
            "/home/alice/calib.jsonl",
            "calibration from /data/x.json",
            "path:/srv/models",
            "~/models/x",
            "C:\\Users\\bob\\x.json",
            "d:/x",
            "\\\\server\\share\\x",
            "file:///tmp/x",
            "(\"/abs\")",
        ];
        for v in bad {
            let mut p = sample();
            p.provenance.imported_from = Some(v.into());
            let e = p.validate().unwrap_err();
            assert!(
                matches!(&e, ProfileError::MachineLocal { field, .. } if field == "provenance.imported_from"),
                "{v}: {e}"
            );
            assert!(e.to_string().contains("absolute path"), "{e}");
            let dir = temp_dir("abs");
            assert!(p.save_atomic(&dir.join("p.ron")).is_err(), "{v}");
            assert!(!dir.join("p.ron").exists());
            std::fs::remove_dir_all(dir).unwrap();
        }
        let mut p = sample();
        p.provenance.grid = "calibration-data/qa.jsonl /opt/x".into();
        assert!(matches!(
            p.validate(),
            Err(ProfileError::MachineLocal { ref field, .. }) if field == "provenance.grid"
        ));
        let mut p = sample();
        p.provenance.tool_version = "/usr/bin/compresskv".into();
        assert!(p.validate().is_err());
        let good = [
            "Llama-3.1-8B-Instruct_head_idx.json",
            "calibration-data/qa.jsonl",
            "https://github.com/TUDa-HWAI/CompressKV scores/x.json",
            "srh_heads=1/2/4 window 4 / 8",
            "2025-08-05T10:00:00Z",
        ];
        for v in good {
            assert_eq!(absolute_path_in(v), None, "{v}");
            let mut p = sample();
            p.provenance.imported_from = Some(v.into());
            p.validate().unwrap();
        }
    }

    #[test]
    fn check_matches_names_both_models_and_how_to_fix() {
        let p = sample(); // google/gemma-3-270m, 18 × 4
        p.check_matches(&gemma_270m(), "google/gemma-3-270m", None)
            .unwrap();
        // Another model: both named, specific counts, how to fix.
        let e = p
            .check_matches(&llama_8b(), "meta-llama/Llama-3.1-8B-Instruct", None)
            .unwrap_err();
        assert!(matches!(e, ProfileError::ModelMismatch { .. }));
        let m = e.to_string();
        for want in [
            "google/gemma-3-270m",
            "gemma3, 18 layers × 4 heads",
            "meta-llama/Llama-3.1-8B-Instruct",
            "llama, 32 layers × 32 heads",
            "profile has 18 layers × 4 heads, model has 32 layers × 32 heads",
            "architecture differs (profile gemma3, model llama)",
            "--profile PATH",
            "compresskv profile --model meta-llama/Llama-3.1-8B-Instruct",
        ] {
            assert!(m.contains(want), "missing {want:?} in {m}");
        }
    }

    #[test]
    fn check_matches_is_specific_about_counts_and_config() {
        let mut p = sample();
        // Same architecture, different counts.
        p.fingerprint.n_layers = 32;
        p.fingerprint.n_heads = 32;
        let spec = gemma_270m();
        let m = p
            .check_matches(&spec, "google/gemma-3-270m", None)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("profile has 32 layers × 32 heads, model has 18 layers × 4 heads"),
            "{m}"
        );
        assert!(!m.contains("architecture differs"), "{m}");
        // Only the head count differs.
        p.fingerprint.n_layers = 18;
        p.fingerprint.n_heads = 8;
        let m = p
            .check_matches(&spec, "google/gemma-3-270m", None)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("profile has 18 layers × 8 heads, model has 18 layers × 4 heads"),
            "{m}"
        );
        // kv heads / head_dim / vocab.
        let p = sample();
        let mut other = gemma_270m();
        other.n_kv_heads = 2;
        other.vocab_size = 1000;
        let m = p
            .check_matches(&other, "x/y", None)
            .unwrap_err()
            .to_string();
        assert!(m.contains("profile has 1 kv heads, model has 2"), "{m}");
        assert!(
            m.contains("profile has vocab 262144, model has 1000"),
            "{m}"
        );
        // Config hash: equal is fine, different is an error, unknown is skipped.
        let same = sha256_hex(GEMMA_CONFIG.as_bytes());
        p.check_matches(&spec, "google/gemma-3-270m", Some(&same))
            .unwrap();
        let diff = sha256_hex(b"{}");
        let m = p
            .check_matches(&spec, "google/gemma-3-270m-it", Some(&diff))
            .unwrap_err()
            .to_string();
        assert!(m.contains("config differs"), "{m}");
        assert!(m.contains("google/gemma-3-270m-it"), "{m}");
        p.check_matches(&spec, "google/gemma-3-270m", Some(""))
            .unwrap();
    }

    #[test]
    fn fingerprint_of_hashes_config_and_weights() {
        let spec = llama_8b();
        let a = Fingerprint::of(&spec, "{\"a\":1}", None);
        assert_eq!(a.architecture, "llama");
        assert_eq!((a.n_layers, a.n_heads, a.n_kv_heads), (32, 32, 8));
        assert_eq!((a.head_dim, a.vocab_size), (128, 128_256));
        assert_eq!(a.weight_hash, "");
        // sha256("") is well known.
        assert_eq!(
            Fingerprint::of(&spec, "", None).config_hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let b = Fingerprint::of(&spec, "{\"a\":2}", Some(b"abc"));
        assert_ne!(a.config_hash, b.config_hash);
        assert_eq!(
            b.weight_hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn top_heads_descending_with_ties_by_lower_index() {
        let mut p = sample();
        p.srh_scores[0] = vec![0.5, 0.9, 0.5, 0.9];
        p.retrieval_scores[0] = vec![0.0, 0.0, 0.3, 0.0];
        assert_eq!(p.top_srh_heads(0, 4), vec![1, 3, 0, 2]);
        assert_eq!(p.top_srh_heads(0, 2), vec![1, 3]);
        assert_eq!(p.top_srh_heads(0, 0), Vec::<usize>::new());
        assert_eq!(p.top_srh_heads(0, 99), vec![1, 3, 0, 2]);
        assert_eq!(p.top_retrieval_heads(0, 3), vec![2, 0, 1]);
        p.srh_scores[1] = vec![0.0; 4];
        assert_eq!(p.top_srh_heads(1, 4), vec![0, 1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "layer 18 out of range")]
    fn top_heads_panics_on_bad_layer() {
        sample().top_srh_heads(18, 1);
    }

    #[test]
    fn effective_precedence_defaults_then_tuning_then_overrides() {
        let mut p = sample();
        p.defaults = Defaults {
            srh_heads: 1,
            window: 8,
            kernel: 5,
            min_budget: 32,
            max_budget_factor: 3.0,
            mix: 0.0,
            union: 0.0,
            error_weight: 1.0,
        };
        let tuning = p.tuning.take();
        let none = Overrides::default();
        assert_eq!(
            p.effective(&none),
            Effective {
                srh_heads: 1,
                window: 8,
                kernel: 5,
                mix: 0.0,
                union: 0.0,
                error_weight: 1.0,
                min_budget: 32,
                max_budget_factor: 3.0
            }
        );
        p.tuning = tuning; // chosen: 2 heads, window 16, kernel 9, mix 0.25
        let e = p.effective(&none);
        assert_eq!((e.srh_heads, e.window, e.mix, e.kernel), (2, 16, 0.25, 9));
        let o = Overrides {
            srh_heads: Some(3),
            window: None,
            kernel: Some(7),
            mix: Some(1.0),
            union: Some(0.5),
            error_weight: Some(0.0),
        };
        let e = p.effective(&o);
        assert_eq!((e.srh_heads, e.window, e.mix, e.kernel), (3, 16, 1.0, 7));
        assert_eq!((e.union, e.error_weight), (0.5, 0.0));
        assert_eq!((e.min_budget, e.max_budget_factor), (32, 3.0));
        let o = Overrides {
            window: Some(32),
            ..Overrides::default()
        };
        assert_eq!(p.effective(&o).window, 32);
        assert_eq!(p.effective_checked(&o).unwrap(), p.effective(&o));
    }

    #[test]
    fn effective_checked_rejects_out_of_range_overrides() {
        let p = sample();
        for (o, want) in [
            (
                Overrides {
                    srh_heads: Some(5),
                    ..Overrides::default()
                },
                "--srh-heads",
            ),
            (
                Overrides {
                    srh_heads: Some(0),
                    ..Overrides::default()
                },
                "--srh-heads",
            ),
            (
                Overrides {
                    window: Some(0),
                    ..Overrides::default()
                },
                "--window",
            ),
            (
                Overrides {
                    kernel: Some(0),
                    ..Overrides::default()
                },
                "--kernel",
            ),
            (
                Overrides {
                    mix: Some(f64::NAN),
                    ..Overrides::default()
                },
                "--mix",
            ),
            (
                Overrides {
                    union: Some(1.5),
                    ..Overrides::default()
                },
                "--union",
            ),
            (
                Overrides {
                    error_weight: Some(-0.1),
                    ..Overrides::default()
                },
                "--error-weight",
            ),
        ] {
            let m = p.effective_checked(&o).unwrap_err().to_string();
            assert!(m.contains(want) && m.contains("Fix:"), "{m}");
        }
    }

    #[test]
    fn default_srh_heads_is_an_eighth_at_least_one() {
        assert_eq!(Profile::default_srh_heads(1), 1);
        assert_eq!(Profile::default_srh_heads(4), 1);
        assert_eq!(Profile::default_srh_heads(8), 1);
        assert_eq!(Profile::default_srh_heads(16), 2);
        assert_eq!(Profile::default_srh_heads(32), 4);
        assert_eq!(Defaults::for_heads(32).srh_heads, 4);
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_now().len(), 20);
    }

    #[test]
    fn settings_from_before_union_error_weight_and_kernel_keep_the_papers_behaviour() {
        let s: TuneSetting = ron::from_str("(srh_heads: 1, window: 8, mix: 0.0)").unwrap();
        assert_eq!((s.union, s.error_weight, s.kernel), (0.0, 1.0, 5));
        let d: Defaults = ron::from_str(
            "(srh_heads: 1, window: 8, kernel: 5, min_budget: 32, max_budget_factor: 3.0, \
             mix: 0.0)",
        )
        .unwrap();
        assert_eq!((d.union, d.error_weight), (0.0, 1.0));
    }

    #[test]
    fn tuned_setting_follows_the_nearest_tuned_budget() {
        let t = Tuning {
            chosen: TuneSetting {
                srh_heads: 1,
                window: 8,
                kernel: 5,
                mix: 0.0,
                union: 0.0,
                error_weight: 1.0,
            },
            table: vec![],
            budgets: vec![],
            per_budget: [(64, 1), (256, 3)]
                .iter()
                .map(|&(budget, srh_heads)| BudgetChoice {
                    budget,
                    chosen: TuneSetting {
                        srh_heads,
                        window: 8,
                        kernel: 5,
                        mix: 0.0,
                        union: 0.0,
                        error_weight: 1.0,
                    },
                    table: vec![],
                })
                .collect(),
        };
        assert_eq!(t.setting_for(None).srh_heads, 1);
        assert_eq!(t.setting_for(Some(32)).srh_heads, 1);
        assert_eq!(t.setting_for(Some(100)).srh_heads, 1); // ln(100/64) < ln(256/100)
        assert_eq!(t.setting_for(Some(160)).srh_heads, 3);
        assert_eq!(t.setting_for(Some(4096)).srh_heads, 3);
        let empty = Tuning {
            per_budget: vec![],
            ..t
        };
        assert_eq!(empty.setting_for(Some(256)).srh_heads, 1);
    }
}
