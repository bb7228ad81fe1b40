//! Conversion of the CompressKV paper's published data (TUDa-HWAI/CompressKV) into a profile.
//!
//! Accepted head files:
//! - `scores/<Model>_head_idx.json`: `{"0": [11, 25, …], "1": […], …}` (or a JSON array of
//!   lists), per layer the head indices in descending score order. The file has no raw scores,
//!   so a rank-derived score is synthesised: `(n_heads - rank) / n_heads` (1 for the best head),
//!   0 for heads not listed.
//! - `Retrieval_Head_Identification/head_score/<Model>.json`: `{"<layer>-<head>": [s, s, …]}`,
//!   one score per detection trial; the head's score is the mean of its list.
//!
//! Accepted layer file: `scores/<Model>_layer_score.jsonl` (one JSON object despite the name):
//! `{"<data set>": [one error per layer], …, "avg_score": [one per layer]}`. The data set lists
//! become `per_dataset` (file order), `avg_score` normalised to sum 1 becomes `per_layer` (the
//! mean of the data sets when `avg_score` is absent).

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;

use super::{
    Defaults, Fingerprint, LayerErrors, Profile, ProfileError, Provenance, SCHEMA_VERSION,
    TOOL_VERSION, sha256_hex, utc_now,
};
use crate::spec::ModelSpec;

/// The files to import; at least one of `srh` / `retrieval` must be given. Either head file may
/// be in either accepted form; when only one is given the other score set is a copy of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PaperFiles<'a> {
    /// Semantic Retrieval Head ranking/scores (`*_head_idx.json`, or a `*_SRH.json` head score).
    pub srh: Option<&'a Path>,
    /// Classic retrieval-head scores (`head_score/<Model>.json`).
    pub retrieval: Option<&'a Path>,
    /// Per-layer errors (`*_layer_score.jsonl`).
    pub layers: Option<&'a Path>,
}

/// Imports one head file (and optionally the layer file). A `*_head_idx.json` ranking, or a
/// `layer-head` score file whose name contains `SRH`, gives the SRH scores; any other
/// `layer-head` score file gives the classic retrieval scores. The other score set is a copy.
pub fn import_paper(
    heads: &Path,
    layers: Option<&Path>,
    spec: &ModelSpec,
    config_text: &str,
    model_id: &str,
) -> Result<Profile, ProfileError> {
    let (text, name) = read(heads)?;
    let form = detect_form(&parse_json(&text, &name)?, &name)?;
    let is_srh = match form {
        HeadForm::Ranking => true,
        HeadForm::Scores => name.to_ascii_lowercase().contains("srh"),
    };
    let files = if is_srh {
        PaperFiles {
            srh: Some(heads),
            retrieval: None,
            layers,
        }
    } else {
        PaperFiles {
            srh: None,
            retrieval: Some(heads),
            layers,
        }
    };
    import_paper_files(&files, spec, config_text, model_id)
}

/// Imports the given paper files into a profile for the model `spec` / `config_text`.
pub fn import_paper_files(
    files: &PaperFiles<'_>,
    spec: &ModelSpec,
    config_text: &str,
    model_id: &str,
) -> Result<Profile, ProfileError> {
    if files.srh.is_none() && files.retrieval.is_none() {
        return Err(ProfileError::Import {
            file: "(no head file)".into(),
            problem: "neither an SRH nor a retrieval-head file was given".into(),
        });
    }
    let mut hasher_input = Vec::new();
    let mut notes = Vec::new();

    let mut load_heads = |path: &Path, role: &str| -> Result<Vec<Vec<f64>>, ProfileError> {
        let (text, name) = read(path)?;
        hasher_input.extend_from_slice(text.as_bytes());
        let (scores, form) = head_scores(&text, &name, spec)?;
        notes.push(format!(
            "{role} from {name} ({})",
            match form {
                HeadForm::Ranking =>
                    "rank-derived: the file lists head indices in descending order without raw \
                     scores; score = (n_heads - rank) / n_heads, 1 for the best head, 0 for \
                     unlisted heads",
                HeadForm::Scores => "mean of each head's per-trial scores",
            }
        ));
        Ok(scores)
    };
    let srh = files.srh.map(|p| load_heads(p, "srh_scores")).transpose()?;
    let retrieval = files
        .retrieval
        .map(|p| load_heads(p, "retrieval_scores"))
        .transpose()?;
    let (srh_scores, retrieval_scores) = match (srh, retrieval) {
        (Some(s), Some(r)) => (s, r),
        (Some(s), None) => {
            notes.push("retrieval_scores = copy of srh_scores (no retrieval-head file)".into());
            (s.clone(), s)
        }
        (None, Some(r)) => {
            notes.push(
                "srh_scores = copy of retrieval_scores (no SRH file; classic retrieval heads \
                 stand in for semantic retrieval heads)"
                    .into(),
            );
            (r.clone(), r)
        }
        (None, None) => unreachable!("checked above"),
    };

    let layer_errors = match files.layers {
        None => None,
        Some(path) => {
            let (text, name) = read(path)?;
            hasher_input.extend_from_slice(text.as_bytes());
            let (le, had_avg) = layer_errors(&text, &name, spec)?;
            notes.push(format!(
                "layer_errors from {name} (per_layer = {} normalised to sum 1; per_dataset = the \
                 {} data sets as published)",
                if had_avg {
                    "avg_score"
                } else {
                    "the mean over data sets"
                },
                le.per_dataset.len()
            ));
            Some(le)
        }
    };

    let profile = Profile {
        schema_version: SCHEMA_VERSION,
        model_id: model_id.to_string(),
        fingerprint: Fingerprint::of(spec, config_text, None),
        srh_scores,
        retrieval_scores,
        layer_errors,
        defaults: Defaults::for_heads(spec.n_heads),
        tuning: None,
        recommendation: None,
        provenance: Provenance {
            tool_version: TOOL_VERSION.to_string(),
            calibration_hash: sha256_hex(&hasher_input),
            grid:
                "none: imported from the published CompressKV paper data (TUDa-HWAI/CompressKV), \
                   no calibration run"
                    .to_string(),
            seed: 0,
            wall_time_s: 0.0,
            imported_from: Some(format!("CompressKV paper data: {}", notes.join("; "))),
            created: utc_now(),
        },
    };
    profile.validate()?;
    Ok(profile)
}

fn import_err(file: &str, problem: impl Into<String>) -> ProfileError {
    ProfileError::Import {
        file: file.to_string(),
        problem: problem.into(),
    }
}

/// Reads a file; returns its text and its file name (never the full path: that goes in messages
/// only through I/O errors, and never into the profile).
fn read(path: &Path) -> Result<(String, String), ProfileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ProfileError::io("read the paper data file", path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "(unnamed)".to_string());
    Ok((text, name))
}

fn parse_json(text: &str, name: &str) -> Result<Value, ProfileError> {
    serde_json::from_str(text).map_err(|e| import_err(name, format!("not valid JSON: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadForm {
    /// Per layer, head indices best first.
    Ranking,
    /// `"layer-head": [scores…]`.
    Scores,
}

fn detect_form(v: &Value, name: &str) -> Result<HeadForm, ProfileError> {
    match v {
        Value::Array(_) => Ok(HeadForm::Ranking),
        Value::Object(m) if m.is_empty() => Err(import_err(name, "the JSON object is empty")),
        Value::Object(m) => {
            if m.keys().all(|k| k.parse::<usize>().is_ok()) {
                Ok(HeadForm::Ranking)
            } else if m.keys().all(|k| parse_layer_head(k).is_some()) {
                Ok(HeadForm::Scores)
            } else {
                let bad = m
                    .keys()
                    .find(|k| k.parse::<usize>().is_err() && parse_layer_head(k).is_none())
                    .cloned()
                    .unwrap_or_default();
                Err(import_err(
                    name,
                    format!(
                        "key {bad:?} is neither a layer index (head_idx form) nor \
                         \"<layer>-<head>\" (head_score form)"
                    ),
                ))
            }
        }
        _ => Err(import_err(
            name,
            "expected a JSON object (or array) of per-layer head lists",
        )),
    }
}

fn parse_layer_head(k: &str) -> Option<(usize, usize)> {
    let (l, h) = k.split_once('-')?;
    Some((l.trim().parse().ok()?, h.trim().parse().ok()?))
}

fn other_model(name: &str, what: String, spec: &ModelSpec) -> ProfileError {
    import_err(
        name,
        format!(
            "{what}, but the model has {} layers × {} heads: the file is for another model",
            spec.n_layers, spec.n_heads
        ),
    )
}

/// `[layer][head]` scores from a head file of either form.
fn head_scores(
    text: &str,
    name: &str,
    spec: &ModelSpec,
) -> Result<(Vec<Vec<f64>>, HeadForm), ProfileError> {
    let (nl, nh) = (spec.n_layers, spec.n_heads);
    let v = parse_json(text, name)?;
    let form = detect_form(&v, name)?;
    let mut scores = vec![vec![0.0; nh]; nl];
    match form {
        HeadForm::Ranking => ranking_scores(&v, name, spec, &mut scores)?,
        HeadForm::Scores => score_lists(&v, name, spec, &mut scores)?,
    }
    Ok((scores, form))
}

/// A ranking file (`[[head, …] per layer]` or `{"layer": [head, …]}`, best first): rank `r`
/// of `nh` scores `(nh − r)/nh`.
fn ranking_scores(
    v: &Value,
    name: &str,
    spec: &ModelSpec,
    scores: &mut [Vec<f64>],
) -> Result<(), ProfileError> {
    let (nl, nh) = (spec.n_layers, spec.n_heads);
    let rows: Vec<(usize, &Value)> = match v {
        Value::Array(a) => a.iter().enumerate().collect(),
        Value::Object(m) => {
            let mut r: Vec<(usize, &Value)> =
                m.iter().map(|(k, v)| (k.parse().unwrap(), v)).collect();
            r.sort_by_key(|(l, _)| *l);
            r
        }
        _ => unreachable!(),
    };
    if rows.len() != nl || rows.iter().enumerate().any(|(i, (l, _))| i != *l) {
        let max = rows.iter().map(|(l, _)| l + 1).max().unwrap_or(0);
        return Err(if rows.len() != nl || max != nl {
            other_model(
                name,
                format!("the file ranks heads of {} layers", rows.len()),
                spec,
            )
        } else {
            import_err(name, "layer indices are not 0..n_layers")
        });
    }
    for (l, row) in rows {
        let list = row.as_array().ok_or_else(|| {
            import_err(name, format!("layer {l}: expected a list of head indices"))
        })?;
        if list.is_empty() {
            return Err(import_err(name, format!("layer {l}: empty head list")));
        }
        if list.len() > nh {
            return Err(other_model(
                name,
                format!("layer {l} lists {} heads", list.len()),
                spec,
            ));
        }
        let mut seen = vec![false; nh];
        for (rank, h) in list.iter().enumerate() {
            let h = h
                .as_u64()
                .ok_or_else(|| import_err(name, format!("layer {l}: {h} is not a head index")))?
                as usize;
            if h >= nh {
                return Err(other_model(name, format!("layer {l} lists head {h}"), spec));
            }
            if std::mem::replace(&mut seen[h], true) {
                return Err(import_err(name, format!("layer {l} lists head {h} twice")));
            }
            scores[l][h] = (nh - rank) as f64 / nh as f64;
        }
    }
    Ok(())
}

/// A score file (`{"layer-head": [score, …]}`): each head's mean score; every head of the
/// model must have one.
fn score_lists(
    v: &Value,
    name: &str,
    spec: &ModelSpec,
    scores: &mut [Vec<f64>],
) -> Result<(), ProfileError> {
    let (nl, nh) = (spec.n_layers, spec.n_heads);
    let m = v.as_object().expect("detected as an object");
    let mut seen = vec![vec![false; nh]; nl];
    for (k, list) in m {
        let (l, h) = parse_layer_head(k).expect("detected as layer-head keys");
        if l >= nl || h >= nh {
            let (ml, mh) = m
                .keys()
                .filter_map(|k| parse_layer_head(k))
                .fold((0, 0), |(a, b), (l, h)| (a.max(l + 1), b.max(h + 1)));
            return Err(other_model(
                name,
                format!("the file scores heads of {ml} layers × {mh} heads (key {k:?})"),
                spec,
            ));
        }
        let list = list
            .as_array()
            .ok_or_else(|| import_err(name, format!("{k:?}: expected a list of scores")))?;
        let mut sum = 0.0;
        for x in list {
            let x = x
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| {
                    import_err(
                        name,
                        format!("{k:?}: {x} is not a finite non-negative score"),
                    )
                })?;
            sum += x;
        }
        scores[l][h] = if list.is_empty() {
            0.0
        } else {
            sum / list.len() as f64
        };
        seen[l][h] = true;
    }
    let missing = seen.iter().flatten().filter(|s| !**s).count();
    if missing > 0 {
        let (l, h) = (0..nl)
            .flat_map(|l| (0..nh).map(move |h| (l, h)))
            .find(|&(l, h)| !seen[l][h])
            .unwrap();
        return Err(other_model(
            name,
            format!(
                "{missing} of the model's {} heads have no score (first: \"{l}-{h}\")",
                nl * nh
            ),
            spec,
        ));
    }
    Ok(())
}

/// A JSON object's entries in file order (serde_json's map is sorted without `preserve_order`).
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Layer errors from a `*_layer_score.jsonl` file; also says whether it had `avg_score`.
fn layer_errors(
    text: &str,
    name: &str,
    spec: &ModelSpec,
) -> Result<(LayerErrors, bool), ProfileError> {
    let nl = spec.n_layers;
    let Ordered(entries) = serde_json::from_str(text).map_err(|e| {
        import_err(
            name,
            format!("expected one JSON object of per-layer lists: {e}"),
        )
    })?;
    let mut per_dataset: Vec<(String, Vec<f64>)> = Vec::new();
    let mut avg: Option<Vec<f64>> = None;
    for (k, v) in entries {
        let list = v
            .as_array()
            .ok_or_else(|| import_err(name, format!("{k:?}: expected a list of numbers")))?;
        if list.len() != nl {
            return Err(other_model(
                name,
                format!("{k:?} has {} per-layer values", list.len()),
                spec,
            ));
        }
        let mut vals = Vec::with_capacity(nl);
        for (i, x) in list.iter().enumerate() {
            let x = x
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| {
                    import_err(
                        name,
                        format!("{k:?}[{i}] = {x} is not a finite non-negative number"),
                    )
                })?;
            vals.push(x);
        }
        if k == "avg_score" {
            avg = Some(vals);
        } else {
            if k.trim().is_empty() {
                return Err(import_err(name, "a data set has an empty name"));
            }
            if per_dataset.iter().any(|(n, _)| *n == k) {
                return Err(import_err(name, format!("data set {k:?} appears twice")));
            }
            per_dataset.push((k, vals));
        }
    }
    let had_avg = avg.is_some();
    let raw = match avg {
        Some(a) => a,
        None if per_dataset.is_empty() => {
            return Err(import_err(name, "the object has no per-layer lists"));
        }
        None => (0..nl)
            .map(|l| per_dataset.iter().map(|(_, v)| v[l]).sum::<f64>() / per_dataset.len() as f64)
            .collect(),
    };
    let total: f64 = raw.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(import_err(
            name,
            format!("the per-layer values sum to {total}; cannot normalise"),
        ));
    }
    let per_layer = raw.iter().map(|x| x / total).collect();
    Ok((
        LayerErrors {
            per_layer,
            per_dataset,
            source: "imported".to_string(),
        },
        had_avg,
    ))
}

#[cfg(test)]
mod tests;
