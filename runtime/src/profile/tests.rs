use super::test_support::*;
use super::*;

/// A full profile for a small gemma-shaped model with tuning, layer errors and odd floats.

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

/// Profiles written before `profile verify` existed have no `recommendation` field: they still
/// parse (with none), and one written with a recommendation reads back with it.
#[test]
fn recommendation_is_optional_and_round_trips() {
    let p = sample();
    let text = p.to_ron_string().unwrap();
    assert!(text.contains("recommendation: Some(("), "{text}");
    assert_eq!(Profile::from_ron_str(&text, "rec").unwrap(), p);
    let mut old = p.clone();
    old.recommendation = None;
    let old_text = old.to_ron_string().unwrap();
    let without: String = old_text
        .lines()
        .filter(|l| !l.contains("recommendation: None"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!without.contains("recommendation"));
    assert_eq!(Profile::from_ron_str(&without, "old").unwrap(), old);
    // The shipped profile predates it too.
    for (name, text) in builtin::PROFILES {
        Profile::from_ron_str(text, name).unwrap();
    }
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
        (
            Box::new(|p| p.defaults.settings.window = 0),
            "defaults.window is 0",
        ),
        (
            Box::new(|p| p.defaults.settings.kernel = 0),
            "defaults.kernel is 0",
        ),
        (
            Box::new(|p| p.tuning.as_mut().unwrap().chosen.kernel = 4),
            "tuning.chosen.kernel is 4 (must be odd",
        ),
        (
            Box::new(|p| p.defaults.settings.srh_heads = 5),
            "defaults.srh_heads is 5 (must be in 1..=4)",
        ),
        (
            Box::new(|p| p.defaults.settings.mix = 1.5),
            "defaults.mix is 1.5",
        ),
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
        (
            Box::new(|p| p.recommendation.as_mut().unwrap().target = 1.5),
            "recommendation.target is 1.5 (must be in (0, 1]",
        ),
        (
            Box::new(|p| p.recommendation.as_mut().unwrap().target = 0.0),
            "recommendation.target is 0",
        ),
        (
            Box::new(|p| p.recommendation.as_mut().unwrap().budget = 96),
            "recommendation.budget 96 is not one of the measured budgets [64, 128, 256]",
        ),
        (
            Box::new(|p| p.recommendation.as_mut().unwrap().shares[0].1 = f64::NAN),
            "recommendation.shares[0] is NaN",
        ),
        (
            Box::new(|p| p.recommendation.as_mut().unwrap().full_score = 0.0),
            "recommendation.full_score is 0",
        ),
        (
            Box::new(|p| p.recommendation.as_mut().unwrap().shares.push((64, 1.0))),
            "recommendation.shares has budget 64 twice",
        ),
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
        settings: Settings {
            srh_heads: 1,
            window: 8,
            kernel: 5,
            mix: 0.0,
            union: 0.0,
            error_weight: 1.0,
        },
        min_budget: 32,
        max_budget_factor: 3.0,
    };
    let tuning = p.tuning.take();
    let none = Overrides::default();
    assert_eq!(
        p.effective(&none),
        Effective {
            settings: Settings {
                srh_heads: 1,
                window: 8,
                kernel: 5,
                mix: 0.0,
                union: 0.0,
                error_weight: 1.0,
            },
            min_budget: 32,
            max_budget_factor: 3.0
        }
    );
    p.tuning = tuning; // chosen: 2 heads, window 16, kernel 9, mix 0.25
    let e = p.effective(&none).settings;
    assert_eq!((e.srh_heads, e.window, e.mix, e.kernel), (2, 16, 0.25, 9));
    let o = Overrides {
        srh_heads: Some(3),
        window: None,
        kernel: Some(7),
        mix: Some(1.0),
        union: Some(0.5),
        error_weight: Some(0.0),
    };
    let eff = p.effective(&o);
    let e = eff.settings;
    assert_eq!((e.srh_heads, e.window, e.mix, e.kernel), (3, 16, 1.0, 7));
    assert_eq!((e.union, e.error_weight), (0.5, 0.0));
    assert_eq!((eff.min_budget, eff.max_budget_factor), (32, 3.0));
    let o = Overrides {
        window: Some(32),
        ..Overrides::default()
    };
    assert_eq!(p.effective(&o).settings.window, 32);
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
    assert_eq!(Defaults::for_heads(32).settings.srh_heads, 4);
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
    let s: Settings = ron::from_str("(srh_heads: 1, window: 8, mix: 0.0)").unwrap();
    assert_eq!((s.union, s.error_weight, s.kernel), (0.0, 1.0, 5));
    let d: Defaults = ron::from_str(
        "(srh_heads: 1, window: 8, kernel: 5, min_budget: 32, max_budget_factor: 3.0, \
             mix: 0.0)",
    )
    .unwrap();
    assert_eq!((d.settings.union, d.settings.error_weight), (0.0, 1.0));
}

#[test]
fn tuned_setting_follows_the_nearest_tuned_budget() {
    let t = Tuning {
        chosen: Settings {
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
                chosen: Settings {
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
        validation: None,
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
