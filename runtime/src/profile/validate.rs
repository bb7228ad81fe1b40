//! [`Profile::validate`]: the invariants every profile must hold on read and on write (schema
//! version, shapes, finite non-negative scores, sane settings, nothing machine-local), each
//! failure a [`ProfileError`] that says what is wrong and how to fix it.

use super::{LAYER_ERROR_SOURCES, Profile, ProfileError, SCHEMA_VERSION, SUM_TOLERANCE};

impl Profile {
    /// `per_layer` summing to 1, sane defaults/tuning, no machine-local paths).
    pub fn validate(&self) -> Result<(), ProfileError> {
        self.validate_as("(in memory)")
    }

    pub(super) fn validate_as(&self, origin: &str) -> Result<(), ProfileError> {
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
        self.check_fingerprint()?;
        let fp = &self.fingerprint;
        check_matrix("srh_scores", &self.srh_scores, fp.n_layers, fp.n_heads)?;
        check_matrix(
            "retrieval_scores",
            &self.retrieval_scores,
            fp.n_layers,
            fp.n_heads,
        )?;
        if let Some(le) = &self.layer_errors {
            check_layer_errors(le, fp.n_layers)?;
        }
        let d = &self.defaults;
        d.settings.check("defaults", fp.n_heads)?;
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
            check_tuning(t, fp.n_layers, fp.n_heads)?;
        }
        if let Some(r) = &self.recommendation {
            check_recommendation(r)?;
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

    /// The model's shape is non-degenerate and its hashes are sha256 digests.
    fn check_fingerprint(&self) -> Result<(), String> {
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
        if let Some(r) = &self.recommendation {
            fields.push(("recommendation.prompts".into(), r.prompts.as_str()));
            fields.push(("recommendation.created".into(), r.created.as_str()));
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
}

pub(super) fn schema_error(origin: &str, found: u32, model_id: &str) -> ProfileError {
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

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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

/// Layer errors: one non-negative value per layer summing to 1, named datasets, a known source.
fn check_layer_errors(le: &super::LayerErrors, n_layers: usize) -> Result<(), String> {
    check_vector("layer_errors.per_layer", &le.per_layer, n_layers)?;
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
        check_vector(&format!("layer_errors.per_dataset[{name:?}]"), v, n_layers)?;
    }
    if !LAYER_ERROR_SOURCES.contains(&le.source.as_str()) {
        return Err(format!(
            "layer_errors.source is {:?}; expected one of {LAYER_ERROR_SOURCES:?}",
            le.source
        ));
    }
    Ok(())
}

/// Tuning: every setting valid for `n_heads`, scores in [0, 1], budgets per layer if any.
fn check_tuning(t: &super::Tuning, n_layers: usize, n_heads: usize) -> Result<(), String> {
    let c = &t.chosen;
    c.check("tuning.chosen", n_heads)?;
    for (i, (s, recall)) in t.table.iter().enumerate() {
        s.check(&format!("tuning.table[{i}]"), n_heads)?;
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
        s.check(&at, n_heads)?;
        for (j, (s, v)) in c.table.iter().enumerate() {
            s.check(&format!("{at}.table[{j}]"), n_heads)?;
            if !v.is_finite() || !(0.0..=1.0).contains(v) {
                return Err(format!(
                    "{at}.table[{j}] has mean score {v} (must be in [0, 1])"
                ));
            }
        }
    }
    if let Some(v) = &t.validation {
        let unit = |at: String, x: f64| {
            if x.is_finite() && (0.0..=1.0).contains(&x) {
                Ok(())
            } else {
                Err(format!("{at} has score {x} (must be in [0, 1])"))
            }
        };
        for (i, (s, x)) in v.table.iter().enumerate() {
            s.check(&format!("tuning.validation.table[{i}]"), n_heads)?;
            unit(format!("tuning.validation.table[{i}]"), *x)?;
        }
        for (i, b) in v.per_budget.iter().enumerate() {
            let at = format!("tuning.validation.per_budget[{i}]");
            b.candidate.check(&at, n_heads)?;
            unit(at.clone(), b.overall)?;
            unit(at, b.candidate_score)?;
        }
    }
    if !t.budgets.is_empty() && t.budgets.len() != n_layers {
        return Err(format!(
            "tuning.budgets has {} entries but the model has {} layers",
            t.budgets.len(),
            n_layers
        ));
    }
    Ok(())
}

/// Recommendation: a target in (0, 1], the budget among those measured, one finite
/// non-negative share per distinct positive budget, a non-zero full score, named prompts.
fn check_recommendation(r: &super::BudgetRecommendation) -> Result<(), String> {
    if !(r.target > 0.0 && r.target <= 1.0) {
        return Err(format!(
            "recommendation.target is {} (must be in (0, 1], the share of the full cache's score)",
            r.target
        ));
    }
    if r.method.trim().is_empty() {
        return Err("recommendation.method is empty".into());
    }
    if r.lengths.is_empty() || r.lengths.contains(&0) {
        return Err(format!(
            "recommendation.lengths is {:?} (must be non-empty prompt lengths > 0)",
            r.lengths
        ));
    }
    for (i, &d) in r.depths.iter().enumerate() {
        if !(0.0..=100.0).contains(&d) {
            return Err(format!(
                "recommendation.depths[{i}] is {d} (must be in 0..=100)"
            ));
        }
    }
    if !r.full_score.is_finite() || r.full_score <= 0.0 {
        return Err(format!(
            "recommendation.full_score is {} (must be finite and > 0: nothing is recommended \
             when the full cache scores 0)",
            r.full_score
        ));
    }
    for (i, &(b, s)) in r.shares.iter().enumerate() {
        if b == 0 {
            return Err(format!("recommendation.shares[{i}] has budget 0"));
        }
        if r.shares[..i].iter().any(|&(x, _)| x == b) {
            return Err(format!("recommendation.shares has budget {b} twice"));
        }
        check_value(&format!("recommendation.shares[{i}]"), s)?;
    }
    if !r.shares.iter().any(|&(b, _)| b == r.budget) {
        return Err(format!(
            "recommendation.budget {} is not one of the measured budgets {:?}",
            r.budget,
            r.shares.iter().map(|&(b, _)| b).collect::<Vec<_>>()
        ));
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
