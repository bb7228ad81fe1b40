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
    assert_eq!(p.defaults.settings.srh_heads, 4);
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
    let scores =
        r#"{"0-0":[1,0],"0-1":[0],"0-2":[],"0-3":[0.5],"1-0":[0],"1-1":[0],"1-2":[2,0],"1-3":[0]}"#;
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
