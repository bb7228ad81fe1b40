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
mod tests {
    use std::path::PathBuf;

    use super::super::test_support::{gemma_270m, llama_8b, mistral_7b, spec, temp_dir};
    use super::*;
    use crate::spec::Architecture;

    /// `datasets/compresskv-paper` in the shared data directory, or `None` (skip) when the
    /// shared directory is absent. Panics when it is absent and `CI=true`.
    fn paper_dir() -> Option<PathBuf> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(d) = std::env::var_os("COMPRESSKV_SHARED_DIR") {
            candidates.push(d.into());
        }
        candidates.push(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared").into());
        candidates.push(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").into());
        match candidates.iter().find(|d| d.is_dir()) {
            Some(shared) => Some(shared.join("datasets/compresskv-paper")),
            None => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!(
                        "shared data directory not found (tried {candidates:?}); CI must provide \
                         it (or set COMPRESSKV_SHARED_DIR)"
                    );
                }
                eprintln!("skipping: shared data directory not found (tried {candidates:?})");
                None
            }
        }
    }

    const LLAMA: &str = "Llama-3.1-8B-Instruct";
    const MISTRAL: &str = "Mistral-7B-Instruct-v0.3";

    fn files(dir: &Path, model: &str) -> (PathBuf, PathBuf, PathBuf) {
        (
            dir.join(format!("scores/{model}_head_idx.json")),
            dir.join(format!("scores/{model}_layer_score.jsonl")),
            dir.join(format!(
                "Retrieval_Head_Identification/head_score/{model}.json"
            )),
        )
    }

    fn assert_shapes(p: &Profile) {
        assert_eq!(p.srh_scores.len(), 32);
        assert!(p.srh_scores.iter().all(|r| r.len() == 32));
        assert_eq!(p.retrieval_scores.len(), 32);
        assert!(p.retrieval_scores.iter().all(|r| r.len() == 32));
        let le = p.layer_errors.as_ref().unwrap();
        assert_eq!(le.per_layer.len(), 32);
        assert!((le.per_layer.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(le.per_dataset.len(), 16);
        assert_eq!(le.per_dataset[0].0, "narrativeqa");
        assert_eq!(le.per_dataset[15].0, "gov_report");
        assert!(le.per_dataset.iter().all(|(_, v)| v.len() == 32));
        assert_eq!(le.source, "imported");
        let from = p.provenance.imported_from.as_deref().unwrap();
        assert_eq!(super::super::absolute_path_in(from), None, "{from}");
        assert!(!from.contains(&*std::env::temp_dir().to_string_lossy()));
    }

    #[test]
    fn imports_llama_head_ranking_and_layer_scores() {
        let Some(dir) = paper_dir() else { return };
        let (idx, layers, _) = files(&dir, LLAMA);
        let spec = llama_8b();
        let config = r#"{"model_type":"llama","num_hidden_layers":32}"#;
        let p = import_paper(
            &idx,
            Some(&layers),
            &spec,
            config,
            "meta-llama/Llama-3.1-8B-Instruct",
        )
        .unwrap();
        assert_shapes(&p);
        // Layer 0 of the published ranking starts 11, 25, 23 and ends with 31.
        assert_eq!(p.top_srh_heads(0, 3), vec![11, 25, 23]);
        assert_eq!(p.srh_scores[0][11], 1.0);
        assert_eq!(p.srh_scores[0][31], 1.0 / 32.0);
        assert_eq!(p.retrieval_scores, p.srh_scores);
        // avg_score is already normalised in the file: layer 31 is its minimum.
        let le = p.layer_errors.as_ref().unwrap();
        assert!((le.per_layer[31] - 0.0070584572248985995).abs() < 1e-12);
        assert!((le.per_dataset[0].1[0] - 0.019020800703559864).abs() < 1e-15);
        let from = p.provenance.imported_from.as_deref().unwrap();
        assert!(
            from.contains("Llama-3.1-8B-Instruct_head_idx.json"),
            "{from}"
        );
        assert!(
            from.contains("Llama-3.1-8B-Instruct_layer_score.jsonl"),
            "{from}"
        );
        assert!(from.contains("rank-derived"), "{from}");
        assert_eq!(p.fingerprint, Fingerprint::of(&spec, config, None));
        assert_eq!(p.defaults.srh_heads, 4);
        p.check_matches(&spec, "meta-llama/Llama-3.1-8B-Instruct", None)
            .unwrap();
        // Same shape but another vocabulary: Mistral is another model.
        assert!(p.check_matches(&mistral_7b(), "mistralai/x", None).is_err());
        // Survives a save/load round trip.
        let tmp = temp_dir("import-llama");
        let path = tmp.join(super::super::profile_file_name(&p.model_id));
        p.save_atomic(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), p);
        std::fs::remove_dir_all(tmp).unwrap();
    }

    #[test]
    fn imports_mistral_ranking_and_retrieval_head_scores() {
        let Some(dir) = paper_dir() else { return };
        let (idx, layers, head_score) = files(&dir, MISTRAL);
        let spec = mistral_7b();
        let id = "mistralai/Mistral-7B-Instruct-v0.3";
        // Head-score form alone: classic retrieval heads (mean per head), copied into SRH.
        let p = import_paper(&head_score, Some(&layers), &spec, "{}", id).unwrap();
        assert_shapes(&p);
        assert_eq!(p.top_retrieval_heads(18, 1), vec![0]);
        assert_eq!(p.top_retrieval_heads(12, 2), vec![7, 6]);
        assert!((p.retrieval_scores[18][0] - 0.9010151016382508).abs() < 1e-9);
        assert_eq!(p.srh_scores, p.retrieval_scores);
        let from = p.provenance.imported_from.as_deref().unwrap();
        assert!(
            from.contains("retrieval_scores from Mistral-7B-Instruct-v0.3.json"),
            "{from}"
        );
        assert!(from.contains("srh_scores = copy"), "{from}");
        // Both head files: SRH from the ranking, retrieval from the scores.
        let both = import_paper_files(
            &PaperFiles {
                srh: Some(&idx),
                retrieval: Some(&head_score),
                layers: Some(&layers),
            },
            &spec,
            "{}",
            id,
        )
        .unwrap();
        assert_shapes(&both);
        assert_eq!(both.top_srh_heads(0, 2), vec![26, 28]);
        assert_eq!(both.top_srh_heads(0, 32).last(), Some(&31));
        assert_eq!(both.retrieval_scores, p.retrieval_scores);
        assert_ne!(both.srh_scores, both.retrieval_scores);
        both.check_matches(&spec, id, None).unwrap();
        // Without the layer file: no layer errors (uniform budgets).
        let no_layers = import_paper(&idx, None, &spec, "{}", id).unwrap();
        assert!(no_layers.layer_errors.is_none());
    }

    #[test]
    fn imports_llama_retrieval_head_scores() {
        let Some(dir) = paper_dir() else { return };
        let (_, layers, head_score) = files(&dir, LLAMA);
        let p = import_paper(
            &head_score,
            Some(&layers),
            &llama_8b(),
            "{}",
            "meta-llama/x",
        )
        .unwrap();
        assert_shapes(&p);
        assert_eq!(p.top_retrieval_heads(15, 1), vec![30]);
    }

    #[test]
    fn import_rejects_files_of_another_model_shape() {
        let Some(dir) = paper_dir() else { return };
        let (idx, layers, head_score) = files(&dir, LLAMA);
        let gemma = gemma_270m();
        for heads in [&idx, &head_score] {
            let m = import_paper(heads, None, &gemma, "{}", "google/gemma-3-270m")
                .unwrap_err()
                .to_string();
            assert!(
                m.contains("18 layers × 4 heads") && m.contains("another model"),
                "{m}"
            );
        }
        // Right head count, wrong layer count, for the layer file.
        let short = spec(Architecture::Llama, 16, 32, 8, 128, 128_256);
        let m = import_paper_files(
            &PaperFiles {
                srh: None,
                retrieval: None,
                layers: Some(&layers),
            },
            &short,
            "{}",
            "x/y",
        )
        .unwrap_err()
        .to_string();
        assert!(
            m.contains("neither an SRH nor a retrieval-head file"),
            "{m}"
        );
        let m = import_paper(&idx, Some(&layers), &short, "{}", "x/y")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("32 layers") || m.contains("ranks heads of 32 layers"),
            "{m}"
        );
    }

    /// Small synthetic files in both forms; runs without the shared data.
    #[test]
    fn synthetic_files_in_every_form() {
        let tmp = temp_dir("import-synthetic");
        let small = spec(Architecture::Qwen2, 2, 4, 2, 64, 1000);
        let w = |name: &str, text: &str| {
            let p = tmp.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        // Array form, partial ranking of layer 1.
        let ranks = w("m_head_idx.json", "[[2, 0, 3, 1], [3]]");
        // Layer file without avg_score, data sets out of alphabetical order.
        let layers = w(
            "m_layer_score.jsonl",
            r#"{"zeta": [1, 3], "alpha": [3, 1]}"#,
        );
        let p = import_paper(&ranks, Some(&layers), &small, "{}", "org/m").unwrap();
        assert_eq!(
            p.srh_scores,
            vec![vec![0.75, 0.25, 1.0, 0.5], vec![0.0, 0.0, 0.0, 1.0]]
        );
        let le = p.layer_errors.as_ref().unwrap();
        assert_eq!(le.per_layer, vec![0.5, 0.5]);
        assert_eq!(le.per_dataset[0], ("zeta".to_string(), vec![1.0, 3.0]));
        assert_eq!(le.per_dataset[1].0, "alpha");
        assert!(
            p.provenance
                .imported_from
                .as_deref()
                .unwrap()
                .contains("mean over data sets")
        );
        // avg_score present: normalised.
        let layers = w(
            "n_layer_score.jsonl",
            r#"{"a": [1, 1], "avg_score": [1, 3]}"#,
        );
        let p = import_paper(&ranks, Some(&layers), &small, "{}", "org/m").unwrap();
        assert_eq!(p.layer_errors.unwrap().per_layer, vec![0.25, 0.75]);
        // Head-score form; a name with SRH makes it the SRH scores.
        let scores = r#"{"0-0":[1,0],"0-1":[0],"0-2":[],"0-3":[0.5],"1-0":[0],"1-1":[0],"1-2":[2,0],"1-3":[0]}"#;
        let srh_file = w("m_SRH.json", scores);
        let p = import_paper(&srh_file, None, &small, "{}", "org/m").unwrap();
        assert_eq!(p.srh_scores[0], vec![0.5, 0.0, 0.0, 0.5]);
        assert_eq!(p.top_srh_heads(1, 1), vec![2]);
        assert!(
            p.provenance
                .imported_from
                .as_deref()
                .unwrap()
                .starts_with("CompressKV paper data: srh_scores from m_SRH.json")
        );

        // Errors: each names the file and the problem.
        for (name, text, want) in [
            ("dup.json", "[[0, 0], [1]]", "lists head 0 twice"),
            ("range.json", "[[7], [1]]", "lists head 7"),
            ("layers.json", "[[0]]", "ranks heads of 1 layers"),
            (
                "neg.json",
                r#"{"0-0":[-1]}"#,
                "not a finite non-negative score",
            ),
            (
                "missing.json",
                r#"{"0-0":[1]}"#,
                "7 of the model's 8 heads have no score",
            ),
            ("bad.json", r#"{"x": [1]}"#, "neither a layer index"),
            ("notjson.json", "{", "not valid JSON"),
        ] {
            let p = w(name, text);
            let m = import_paper(&p, None, &small, "{}", "org/m")
                .unwrap_err()
                .to_string();
            assert!(m.contains(name) && m.contains(want), "{name}: {m}");
            assert!(m.contains("Fix:"), "{m}");
        }
        for (name, text, want) in [
            ("l1.jsonl", r#"{"a": [1, 2, 3]}"#, "has 3 per-layer values"),
            (
                "l2.jsonl",
                r#"{"a": [1, "x"]}"#,
                "is not a finite non-negative number",
            ),
            ("l3.jsonl", r#"{"avg_score": [0, 0]}"#, "cannot normalise"),
            ("l4.jsonl", "[1, 2]", "expected one JSON object"),
            ("l5.jsonl", r#"{"a": [1, 1], "a": [1, 1]}"#, "appears twice"),
        ] {
            let p = w(name, text);
            let m = import_paper(&ranks, Some(&p), &small, "{}", "org/m")
                .unwrap_err()
                .to_string();
            assert!(m.contains(name) && m.contains(want), "{name}: {m}");
        }
        std::fs::remove_dir_all(tmp).unwrap();
    }
}
