//! What the runtime asks of a loaded profile: whether it fits the loaded model, which heads
//! rank highest in a layer, and which press settings are in force once tuning and command-line
//! overrides are applied.

use super::types::{shape_text, short_hash};
use super::{Effective, Overrides, Profile, ProfileError};
use crate::spec::ModelSpec;

impl Profile {
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
    ///
    /// [`Defaults`]: super::Defaults
    /// [`Tuning::chosen`]: super::Tuning::chosen
    pub fn effective(&self, overrides: &Overrides) -> Effective {
        self.effective_at(None, overrides)
    }

    /// [`Profile::effective`] at a mean budget: the tuning for the nearest tuned budget
    /// ([`Tuning::setting_for`]) replaces the overall tuned setting.
    ///
    /// [`Tuning::setting_for`]: super::Tuning::setting_for
    pub fn effective_at(&self, budget: Option<usize>, overrides: &Overrides) -> Effective {
        let base = match &self.tuning {
            Some(t) => t.setting_for(budget),
            None => self.defaults.settings,
        };
        self.defaults.with(base.overridden(overrides))
    }

    /// [`Profile::effective`], rejecting overrides outside their valid range.
    pub fn effective_checked(&self, overrides: &Overrides) -> Result<Effective, ProfileError> {
        self.effective_checked_at(None, overrides)
    }

    /// [`Profile::effective_at`], rejecting overrides outside their valid range: the one merge
    /// of profile → tuning → overrides the runtime uses.
    pub fn effective_checked_at(
        &self,
        budget: Option<usize>,
        overrides: &Overrides,
    ) -> Result<Effective, ProfileError> {
        overrides.check(self.fingerprint.n_heads, &self.model_id)?;
        Ok(self.effective_at(budget, overrides))
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
