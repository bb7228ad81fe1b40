//! The profiler end to end on the tiny random-weight Gemma 3 (seconds): calibration with layer
//! errors → RON file → load by path → a `compresskv` Compressor decodes with it; an interrupted
//! run resumed from its checkpoint gives the same profile. The CLI: `profile import-paper` on
//! the paper's published Llama/Mistral data, `profile show --budget --json --png`.

use std::path::{Path, PathBuf};
use std::process::Command;

use compresskv_profiler::calibrate::{
    CalibError, ErrorPlan, Grid, RunOptions, load_haystack, load_needles, load_qa, profile_model,
};
use compresskv_profiler::layer_error::ErrorSettings;
use compresskv_runtime::eval::niah::Haystack;
use compresskv_runtime::generate::{GenerateOptions, generate};
use compresskv_runtime::loader::{LoadedModel, load_hf_dir};
use compresskv_runtime::press::budget::ErrorAwareParams;
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::press::{
    Compressor, HeadProfile, PressParams, SlidingPolicy, press_by_name,
};
use compresskv_runtime::profile::Profile;

use crate::common::{cpu, shared_dir};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ckv-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn opts(stop_after: Option<usize>, resume: bool) -> RunOptions {
    RunOptions {
        grid: Grid {
            lengths: vec![300],
            depths: vec![30.0, 70.0],
            max_new: 6,
        },
        errors: ErrorPlan {
            settings: ErrorSettings {
                budget: 12,
                window: 4,
                kernel: 3,
            },
            qa: None,
        },
        resume,
        stop_after,
        // Random weights never answer: the scores are 0, the pipeline is what is tested.
        allow_uncounted: true,
    }
}

fn tiny(
    shared: &Path,
) -> (
    LoadedModel,
    Vec<compresskv_profiler::calibrate::Needle>,
    Haystack,
) {
    let loaded = load_hf_dir(&shared.join("reference/tiny/tiny-gemma3"), &cpu()).unwrap();
    let needles = load_needles(&repo().join("calibration-data/needles.jsonl")).unwrap();
    let hay = load_haystack(&shared.join("reference/tiny")).unwrap();
    (loaded, needles[..2].to_vec(), hay)
}

/// Everything but the timing fields.
fn comparable(mut p: Profile) -> Profile {
    p.provenance.wall_time_s = 0.0;
    p.provenance.created = String::new();
    p
}

#[test]
fn profile_tiny_model_end_to_end_and_resume() {
    let Some(shared) = shared_dir() else { return };
    let (loaded, needles, hay) = tiny(&shared);
    let dir = temp("tiny-profile");
    let ck = dir.join("p.ron.partial.jsonl");
    let mut quiet = |_: usize, _: usize, _: &str| {};
    let (full, results) = profile_model(
        &loaded,
        &needles,
        &hay,
        &opts(None, false),
        &ck,
        b"x",
        &mut quiet,
    )
    .unwrap();
    assert_eq!(results.len(), 4);
    // Layer errors on the one global layer (5) of the tiny Gemma 3; sliding layers are kept.
    let le = full.layer_errors.as_ref().expect("layer errors");
    assert_eq!(le.source, "needles");
    assert_eq!(le.per_layer, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    let raw = &le.per_dataset[0].1;
    assert!(
        raw[5] > 0.0 && raw[..5].iter().all(|&x| x == 0.0),
        "{raw:?}"
    );
    assert!(results.iter().all(|r| r.layer_err_steps > 0));

    // Interrupted after 2 samples, then resumed: the same profile.
    std::fs::remove_file(&ck).ok();
    let e = profile_model(
        &loaded,
        &needles,
        &hay,
        &opts(Some(2), false),
        &ck,
        b"x",
        &mut quiet,
    )
    .unwrap_err();
    assert!(matches!(e, CalibError::Stopped(2)), "{e}");
    assert_eq!(std::fs::read_to_string(&ck).unwrap().lines().count(), 2);
    let mut ran = 0;
    let (resumed, _) = profile_model(
        &loaded,
        &needles,
        &hay,
        &opts(None, true),
        &ck,
        b"x",
        &mut |_, _, _| ran += 1,
    )
    .unwrap();
    assert_eq!(ran, 4);
    assert_eq!(comparable(resumed), comparable(full.clone()));

    // Layer errors on LongBench-format QA prompts instead (2 prompts, built-in templates).
    let qa = load_qa(
        &loaded,
        &[shared.join("datasets/longbench-v1-minilongbench/data/2wikimqa.jsonl")],
        None,
        2,
        300,
        4,
    )
    .unwrap();
    assert_eq!(qa.len(), 2);
    assert!(qa.iter().all(|q| q.ids.len() <= 301 && q.max_new == 4));
    let mut o = opts(None, false);
    o.errors.qa = Some(qa);
    std::fs::remove_file(&ck).ok();
    let (with_qa, _) = profile_model(&loaded, &needles, &hay, &o, &ck, b"x", &mut quiet).unwrap();
    let le = with_qa.layer_errors.as_ref().unwrap();
    assert_eq!(le.source, "qa");
    assert_eq!(le.per_dataset[0].0, "2wikimqa");
    assert_eq!(le.per_layer[5], 1.0);
    assert_eq!(with_qa.srh_scores, full.srh_scores);

    // RON file → load by path → compresskv decodes from a compressed cache with it.
    let path = dir.join("tiny.ron");
    full.save_atomic(&path).unwrap();
    let p = Profile::load(&path).unwrap();
    p.check_matches(&loaded.spec, &loaded.id, None).unwrap();
    let hp = HeadProfile {
        srh_ranking: (0..loaded.spec.n_layers)
            .map(|l| p.top_srh_heads(l, loaded.spec.n_heads))
            .collect(),
        layer_errors: p.layer_errors.as_ref().map(|e| e.per_layer.clone()),
    };
    let c = Compressor::new(
        press_by_name("compresskv").unwrap(),
        PressParams {
            window: 4,
            kernel: 3,
            ..Default::default()
        },
        BudgetSpec::Entries(12),
        SlidingPolicy::Keep,
        ErrorAwareParams {
            min: p.defaults.min_budget.min(12),
            max_factor: p.defaults.max_budget_factor,
            error_weight: 1.0,
        },
        Some(hp),
        &loaded.spec,
    )
    .unwrap();
    let ids = loaded.tokenizer.encode(&hay.text()[..1500], true).unwrap();
    assert!(ids.len() > 40);
    let out = generate(
        &loaded.model,
        &loaded.tokenizer,
        &ids,
        &GenerateOptions {
            max_new_tokens: 4,
            ..Default::default()
        },
        Some(&c),
    )
    .unwrap();
    assert_eq!(out.token_ids.len(), 4);
    std::fs::remove_dir_all(dir).unwrap();
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Llama-3.1-8B-Instruct's config.json (the fields the loader reads).
const LLAMA_31_8B_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
  "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "rms_norm_eps": 1e-05,
  "hidden_act": "silu", "max_position_embeddings": 131072, "rope_theta": 500000.0,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
  "tie_word_embeddings": false, "torch_dtype": "bfloat16"
}"#;

#[test]
fn profile_import_paper_and_show_budgets_png() {
    let Some(shared) = shared_dir() else { return };
    let paper = shared.join("datasets/compresskv-paper");
    let dir = temp("import");
    let config = dir.join("config.json");
    std::fs::write(&config, LLAMA_31_8B_CONFIG).unwrap();
    let out = dir.join("llama.ron");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (ok, stdout, stderr) = cli(&[
        "profile",
        "import-paper",
        "--heads",
        &s(&paper.join("scores/Llama-3.1-8B-Instruct_head_idx.json")),
        "--layers",
        &s(&paper.join("scores/Llama-3.1-8B-Instruct_layer_score.jsonl")),
        "--config",
        &s(&config),
        "--model-id",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--out",
        &s(&out),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["model_id"], "meta-llama/Llama-3.1-8B-Instruct");
    let p = Profile::load(&out).unwrap();
    assert_eq!((p.srh_scores.len(), p.srh_scores[0].len()), (32, 32));
    assert_eq!(p.layer_errors.as_ref().unwrap().source, "imported");
    assert!(
        p.provenance
            .imported_from
            .as_deref()
            .unwrap()
            .contains("head_idx")
    );

    // show --budget: the engine's allocator over the 32 layers, summing to 32 × 128.
    let png = dir.join("heads.png");
    let (ok, stdout, stderr) = cli(&[
        "profile",
        "show",
        &s(&out),
        "--budget",
        "128",
        "--json",
        "--png",
        &s(&png),
    ]);
    assert!(ok, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let errs: Vec<f64> = serde_json::from_value(j["layer_errors"].clone()).unwrap();
    assert!((errs.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    let budgets: Vec<usize> = serde_json::from_value(j["budgets"].clone()).unwrap();
    assert_eq!(budgets.len(), 32);
    assert_eq!(budgets.iter().sum::<usize>(), 32 * 128);
    assert!(
        budgets.iter().all(|&b| (32..=384).contains(&b)),
        "{budgets:?}"
    );
    // Larger error share, no smaller budget.
    for a in 0..32 {
        for b in 0..32 {
            if errs[a] > errs[b] {
                assert!(budgets[a] >= budgets[b]);
            }
        }
    }
    assert_eq!(j["srh_scores"].as_array().unwrap().len(), 32);
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    // A budget inside the window is refused with the fix.
    let (ok, _, stderr) = cli(&["profile", "show", &s(&out), "--budget", "4"]);
    assert!(!ok && stderr.contains("larger --budget"), "{stderr}");

    // export: the versioned JSON document other engines read, to stdout and (atomically) to a
    // file; its plans are the same allocation `show --budget` prints.
    let (ok, stdout, stderr) = cli(&["profile", "export", &s(&out), "--budgets", "64,128"]);
    assert!(ok, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (doc["schema"].as_str(), doc["version"].as_u64()),
        (Some("compresskv.profile-export"), Some(1))
    );
    assert_eq!(doc["model_id"], "meta-llama/Llama-3.1-8B-Instruct");
    let plans = doc["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 2);
    let plan128: Vec<usize> = serde_json::from_value(plans[1]["layer_budgets"].clone()).unwrap();
    assert_eq!(plan128, budgets);
    let heads: Vec<Vec<usize>> = serde_json::from_value(plans[1]["scoring_heads"].clone()).unwrap();
    let k = plans[1]["settings"]["srh_heads"].as_u64().unwrap() as usize;
    for (l, h) in heads.iter().enumerate() {
        let mut top = p.top_srh_heads(l, k);
        top.sort_unstable();
        assert_eq!(h, &top, "layer {l}");
    }
    let file = dir.join("export/llama.json");
    let (ok, stdout, stderr) = cli(&[
        "profile",
        "export",
        &s(&out),
        "--budgets",
        "64,128",
        "--out",
        &s(&file),
    ]);
    assert!(
        ok && stdout.contains("wrote") && stdout.contains("v1"),
        "{stdout}{stderr}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written, doc);
    let (ok, stdout, _) = cli(&["profile", "export", &s(&out), "--out", &s(&file), "--json"]);
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        ok && j["budgets"] == serde_json::json!([64, 128, 256, 512]),
        "{stdout}"
    );
    let (ok, _, stderr) = cli(&["profile", "export", &s(&out), "--budgets", "4"]);
    assert!(!ok && stderr.contains("observation window"), "{stderr}");
    let (ok, _, stderr) = cli(&["profile", "export", &s(&out), "--format", "yaml"]);
    assert!(!ok && stderr.contains("json"), "{stderr}");

    // The `"layer-head": [scores…]` form (retrieval-head detection output) of Mistral.
    let mistral = dir.join("mistral.json");
    let mut cfg: serde_json::Value = serde_json::from_str(LLAMA_31_8B_CONFIG).unwrap();
    cfg["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    cfg["model_type"] = "mistral".into();
    cfg["vocab_size"] = 32768.into();
    cfg["rope_theta"] = 1000000.0.into();
    cfg["rope_scaling"] = serde_json::Value::Null;
    cfg["max_position_embeddings"] = 32768.into();
    std::fs::write(&mistral, cfg.to_string()).unwrap();
    let out2 = dir.join("mistral.ron");
    let (ok, _, stderr) = cli(&[
        "profile",
        "import-paper",
        "--heads",
        &s(&paper.join("Retrieval_Head_Identification/head_score/Mistral-7B-Instruct-v0.3.json")),
        "--layers",
        &s(&paper.join("scores/Mistral-7B-Instruct-v0.3_layer_score.jsonl")),
        "--config",
        &s(&mistral),
        "--model-id",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "--out",
        &s(&out2),
    ]);
    assert!(ok, "{stderr}");
    let p = Profile::load(&out2).unwrap();
    assert_eq!(p.fingerprint.architecture, "mistral");
    assert!(p.retrieval_scores.iter().flatten().any(|&x| x > 0.0));
    // A config of another model is refused, naming both.
    let (ok, _, stderr) = cli(&[
        "profile",
        "import-paper",
        "--heads",
        &s(&paper.join("scores/Llama-3.1-8B-Instruct_head_idx.json")),
        "--config",
        &s(&shared.join("reference/tiny/tiny-llama/config.json")),
        "--model-id",
        "x/y",
        "--out",
        &s(&dir.join("bad.ron")),
    ]);
    assert!(!ok && !dir.join("bad.ron").exists(), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `profile tune` through the CLI on the tiny Gemma 3: the grid is searched, the result (overall
/// and per budget) lands in the profile, a rerun with `--resume` reuses the checkpoint and gives
/// the same tuning, and `generate --method compresskv` runs with the tuned profile.
#[test]
fn profile_tune_tiny_model_cli() {
    let Some(shared) = shared_dir() else { return };
    let (loaded, needles, hay) = tiny(&shared);
    let dir = temp("tiny-tune");
    let mut quiet = |_: usize, _: usize, _: &str| {};
    let ck = dir.join("p.ron.partial.jsonl");
    let (p, _) = profile_model(
        &loaded,
        &needles,
        &hay,
        &opts(None, false),
        &ck,
        b"x",
        &mut quiet,
    )
    .unwrap();
    let path = dir.join("tiny.ron");
    // A budget recommendation measured with the settings the tune replaces is dropped.
    let mut with_rec = p.clone();
    with_rec.recommendation = Some(compresskv_runtime::profile::BudgetRecommendation {
        target: 0.9,
        budget: 24,
        method: "compresskv".into(),
        lengths: vec![384],
        depths: vec![50.0],
        prompts: "test".into(),
        full_score: 50.0,
        shares: vec![(24, 1.0)],
        created: "2026-01-01T00:00:00Z".into(),
    });
    with_rec.save_atomic(&path).unwrap();
    let model = shared.join("reference/tiny/tiny-gemma3");
    let tune = |extra: &[&str]| {
        let mut args = vec![
            "profile",
            "tune",
            "--model",
            model.to_str().unwrap(),
            "--profile",
            path.to_str().unwrap(),
            "--haystack",
            shared
                .join("reference/tiny")
                .to_str()
                .unwrap()
                .to_string()
                .leak(),
            // RULER's fixed parts take 390 of the tiny tokenizer's tokens, its answer 128.
            "--tune-lengths",
            "512",
            "--tune-depths",
            "40,80",
            "--tune-windows",
            "4,8",
            "--tune-kernels",
            "3,5",
            "--tune-mixes",
            "0,0.5",
            "--tune-unions",
            "0,0.5",
            "--tune-error-weights",
            "1",
            "--tune-budgets",
            "24,48",
            // Two haystacks and a RULER task (one that draws no words) with the needles and
            // passkeys; every third prompt of a task × length is the validation split.
            "--tune-haystacks",
            format!("{},noise", shared.join("reference/tiny").display()).leak(),
            "--tune-ruler-tasks",
            "niah_single_1",
            "--ruler-dir",
            shared
                .join("datasets/ruler")
                .to_str()
                .unwrap()
                .to_string()
                .leak(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let j = tune(&[]);
    let tuned = Profile::load(&path).unwrap();
    assert!(
        tuned.recommendation.is_none(),
        "the stale recommendation is dropped"
    );
    let t = tuned.tuning.clone().expect("tuning stored");
    // 4 heads × 2 windows × 2 kernels × 2 mixes × 2 unions, scored overall and per budget.
    assert_eq!(t.table.len(), 64);
    assert_eq!(
        t.per_budget.iter().map(|c| c.budget).collect::<Vec<_>>(),
        vec![24, 48]
    );
    assert!(t.per_budget.iter().all(|c| c.table.len() == 64));
    // The tuned kernel is what the runtime uses at that budget.
    let c48 = t.per_budget[1].chosen;
    assert_eq!(
        tuned
            .effective_at(Some(48), &Default::default())
            .settings
            .kernel,
        c48.kernel
    );
    assert!(t.table.iter().any(|(s, _)| *s == t.chosen));
    let best = t.table.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let chosen_score = t.table.iter().find(|(s, _)| *s == t.chosen).unwrap().1;
    assert_eq!(chosen_score, best, "the chosen setting scores best");
    // The SRH scores are untouched.
    assert_eq!(tuned.srh_scores, p.srh_scores);
    // 2 depths × (needle + 2 passkeys + 1 RULER) = 8 prompts; per task × length the third
    // goes to validation: one passkey prompt.
    let v = t.validation.clone().expect("a validation split");
    assert_eq!((v.prompts, v.search_prompts), (1, 7), "{v:?}");
    assert_eq!(v.table.len(), 64);
    assert_eq!(
        v.per_budget.iter().map(|c| c.budget).collect::<Vec<_>>(),
        vec![24, 48]
    );
    for (c, b) in v.per_budget.iter().zip(&t.per_budget) {
        let own = if c.kept { c.candidate } else { t.chosen };
        assert_eq!(
            b.chosen, own,
            "a budget's choice follows its validation: {c:?}"
        );
    }
    assert_eq!(
        serde_json::from_value::<compresskv_runtime::profile::Validation>(
            j["tuning"]["validation"].clone()
        )
        .unwrap(),
        v
    );
    assert!(
        tuned.provenance.grid.contains("\"niah_single_1\""),
        "{}",
        tuned.provenance.grid
    );
    assert!(
        tuned.provenance.grid.contains("\"noise\""),
        "{}",
        tuned.provenance.grid
    );
    // Wrong input says what to change.
    let bad = |extra: &[&str], want: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
            .args(["profile", "tune", "--model", model.to_str().unwrap()])
            .args(["--profile", path.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(want),
            "{extra:?}: {err}"
        );
    };
    bad(&["--tune-validate-every", "1"], "use 2 or more");
    bad(&["--tune-ruler-tasks", "niah_single_1"], "--ruler-dir");
    bad(&["--tune-ruler-tasks", "niah_nope"], "niah_nope");
    bad(
        &["--tune-haystacks", "/nonexistent-haystack"],
        "--tune-haystacks /nonexistent",
    );

    // A checkpoint from a killed run is reused by --resume: same tuning.
    let ck = path.with_extension("ron.tune.partial.jsonl");
    assert!(
        !ck.exists(),
        "the checkpoint is removed after a finished run"
    );
    let lines: Vec<String> = (0..2)
        .map(|i| {
            serde_json::json!({"grid": "srh_heads [1, 2, 3, 4] x window [4, 8] x kernel [3, 5] x mix [0.0, 0.5] x union [0.0, 0.5] x error_weight [1.0] x budgets [24, 48]",
                "prompt": i, "task": "needle", "scores": vec![100.0; 128]})
            .to_string()
        })
        .collect();
    std::fs::write(&ck, lines.join("\n") + "\n").unwrap();
    tune(&["--resume"]);
    let resumed = Profile::load(&path).unwrap().tuning.unwrap();
    // The two injected prompts score 100 for every setting, so no setting scores lower and
    // some score higher: the checkpoint was used instead of rerunning them.
    assert!(resumed.table.iter().zip(&t.table).all(|(a, b)| a.1 >= b.1));
    assert!(resumed.table.iter().zip(&t.table).any(|(a, b)| a.1 > b.1));

    let text = std::fs::read_to_string(shared.join("reference/tiny/train_text.txt")).unwrap();
    let prompt: String = text.chars().take(1500).collect();
    let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args([
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            &prompt,
            "--method",
            "compresskv",
            "--budget",
            "24",
            "--profile",
            path.to_str().unwrap(),
            "--max-new-tokens",
            "3",
            "--json",
            "--kept-positions",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // --kept-positions: per layer and KV head, the kept original positions — as many as the
    // layer keeps, ascending, the observation window (the prompt's last entries) among them;
    // the sliding layers hold their last `sliding_window − 1` = 15 (as HF's sliding cache), the
    // global layer 5 its budget.
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = j["prompt_token_ids"].as_array().unwrap().len() as i64;
    assert_eq!(n, j["prompt_tokens"].as_i64().unwrap());
    let kept: Vec<Vec<Vec<i64>>> = serde_json::from_value(j["kept_positions"].clone()).unwrap();
    let counts: Vec<usize> =
        serde_json::from_value(j["kv_entries_kept_per_layer"].clone()).unwrap();
    let window = tuned
        .effective_at(Some(24), &Default::default())
        .settings
        .window as i64;
    assert_eq!(kept.len(), 6);
    for (l, heads) in kept.iter().enumerate() {
        assert_eq!(heads.len(), 2, "layer {l}: one list per KV head");
        for pos in heads {
            assert_eq!(pos.len(), counts[l], "layer {l}");
            assert!(pos.windows(2).all(|w| w[0] < w[1]), "layer {l}: {pos:?}");
            assert!(
                ((n - window)..n).all(|p| pos.contains(&p)),
                "layer {l}: {pos:?}"
            );
        }
    }
    assert_eq!(counts, vec![15, 15, 15, 15, 15, 24]);
    let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args([
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "x",
        ])
        .arg("--kept-positions")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--json"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// An installed binary: copied out of the build tree and run from another directory with an
/// empty `HOME`, it finds the built-in Gemma 3 profile (and says so), lists every place it
/// looked when a model has no profile, lets a user profile shadow the built-in one, and
/// generates with CompressKV on the real model (skipped without it, outside CI).
#[cfg(unix)]
#[test]
fn installed_binary_uses_builtin_profile() {
    use compresskv_runtime::store;

    let root = temp("installed");
    let (bin_dir, cwd, home, cache) = (
        root.join("bin"),
        root.join("cwd"),
        root.join("home"),
        root.join("cache"),
    );
    for d in [&bin_dir, &cwd, &home, &cache] {
        std::fs::create_dir_all(d).unwrap();
    }
    let bin = bin_dir.join("compresskv");
    std::fs::copy(env!("CARGO_BIN_EXE_compresskv"), &bin).unwrap();
    // The model cache stays reachable: a fresh cache root ($COMPRESSKV_HOME) whose models/ is
    // the real cache's, so that the user profile directory (<cache>/profiles) starts empty.
    let real_cache = store::cache_home();
    std::os::unix::fs::symlink(real_cache.join("models"), cache.join("models")).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(&bin)
            .args(args)
            .current_dir(&cwd)
            .env("HOME", &home)
            .env("COMPRESSKV_HOME", &cache)
            .env_remove("COMPRESSKV_PROFILES")
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let builtin = "built-in:google--gemma-3-270m.ron";

    // `profile show`, human and --json: the built-in profile, named as such.
    let (code, out, err) = run(&["profile", "show", "google/gemma-3-270m"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(builtin), "{out}");
    let (code, out, err) = run(&["profile", "show", "google/gemma-3-270m", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["source"], builtin);
    assert_eq!(j["model_id"], "google/gemma-3-270m");

    // No profile anywhere: exit 1 with every place searched and the fix, no panic.
    let (code, _, err) = run(&["profile", "show", "nosuch/model"]);
    assert_eq!(code, Some(1), "{err}");
    let user_file = cache.join("profiles/nosuch--model.ron");
    for want in [
        "COMPRESSKV_PROFILES is not set",
        &user_file.display().to_string(),
        "built in: no profile for nosuch/model",
        "compresskv profile --model nosuch/model",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    assert!(!err.contains("panicked"), "{err}");

    let (code, _, err) = run(&["demo", "--help"]);
    assert_eq!(code, Some(0), "{err}");

    // generate with CompressKV on the real model, through the built-in profile.
    match store::resolve_model("google/gemma-3-270m") {
        Ok(_) => {
            let (code, out, err) = run(&[
                "generate",
                "--model",
                "google/gemma-3-270m",
                "--prompt",
                "The capital of France is",
                "--max-new-tokens",
                "4",
                "--method",
                "compresskv",
                "--budget",
                "64",
                "--json",
            ]);
            assert_eq!(code, Some(0), "{err}");
            let j: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(j["profile"], builtin);
            assert!(j["token_ids"].as_array().unwrap().len() <= 4, "{out}");
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the real model is required in CI: {e}")
        }
        Err(e) => eprintln!("SKIPPED generate (real model not available): {e}"),
    }

    // A user profile in <cache>/profiles shadows the built-in one.
    let mine = cache.join("profiles/google--gemma-3-270m.ron");
    std::fs::create_dir_all(mine.parent().unwrap()).unwrap();
    std::fs::write(
        &mine,
        compresskv_runtime::profile::builtin::profile("google--gemma-3-270m.ron")
            .unwrap()
            .1,
    )
    .unwrap();
    let (code, out, err) = run(&["profile", "show", "google/gemma-3-270m", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["source"], mine.display().to_string());
    std::fs::remove_dir_all(root).unwrap();
}
