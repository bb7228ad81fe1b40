//! `compresskv profile verify` and `--budget auto` through the CLI: on the tiny Gemma 3 (random
//! weights: the full cache never answers, so nothing is recommended) human and `--json` output,
//! resuming from `--out`, wrong input, and `--budget auto` reading a stored recommendation; on
//! the real model (skipped without it, outside CI) `--write` into the user's profile directory
//! and `generate --budget auto` using what was written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use compresskv_runtime::profile::{BudgetRecommendation, Profile};

use crate::common::shared_dir;

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("compresskv-verify-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary with `COMPRESSKV_HOME` at `home` (when given), no backtraces.
fn run(home: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_compresskv"));
    c.args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("COMPRESSKV_PROFILES");
    if let Some(h) = home {
        c.env("COMPRESSKV_HOME", h);
    }
    c.output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok_json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", err(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(o)))
}

/// Exit ≠ 0, no panic, and one error line containing every `want`.
fn refused(o: &Output, want: &[&str]) {
    let e = err(o);
    assert!(!o.status.success(), "accepted: {}", out(o));
    assert!(!e.contains("panicked"), "{e}");
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "{e}");
    for w in want {
        assert!(e.contains(w), "missing {w:?} in {e}");
    }
}

#[test]
fn profile_verify_tiny_model_and_wrong_input() {
    let Some(shared) = shared_dir() else { return };
    let dir = tmp_dir("tiny");
    let model = shared.join("reference/tiny/tiny-gemma3");
    let m = model.to_str().unwrap();
    let prof = dir.join("tiny.ron");
    let p = prof.to_str().unwrap();
    let hay = shared.join("reference/tiny");
    let made = run(
        None,
        &[
            "profile",
            "--model",
            m,
            "--haystack",
            hay.to_str().unwrap(),
            "--lengths",
            "300",
            "--depths",
            "50",
            "--max-new",
            "4",
            "--error-budget",
            "12",
            "--allow-uncounted",
            "--out",
            p,
            "--json",
        ],
    );
    ok_json(&made);
    let before = std::fs::read(&prof).unwrap();
    let verify = |extra: &[&str]| {
        let mut a = vec![
            "profile",
            "verify",
            m,
            "--profile",
            p,
            "--lengths",
            "300",
            "--depths",
            "20,80",
            "--budgets",
            "48,24,48",
        ];
        a.extend_from_slice(extra);
        run(None, &a)
    };

    // Human mode: the check, the table per budget, and why nothing is recommended.
    let o = verify(&["--write"]);
    assert!(o.status.success(), "{}", err(&o));
    let s = out(&o);
    for want in [
        "fits tiny-gemma3",
        "weight sha256 matches",
        "budget",
        "share of full",
        "≥ 90%",
        "KV cache (full)",
        "no recommendation: the full cache scored 0",
        "nothing written",
    ] {
        assert!(s.contains(want), "missing {want:?} in {s}");
    }
    // Budgets deduplicated and ascending: 24 then 48.
    let (i24, i48) = (s.find("\n24 ").unwrap(), s.find("\n48 ").unwrap());
    assert!(i24 < i48, "{s}");
    assert_eq!(std::fs::read(&prof).unwrap(), before, "nothing was written");

    // --json, resumed from --out: the second run answers nothing new.
    let rows_dir = dir.join("rows");
    let r = rows_dir.to_str().unwrap();
    let j = ok_json(&verify(&["--json", "--out", r]));
    assert_eq!(j["target"], 0.9);
    assert_eq!(j["n_prompts"], 2);
    let budgets: Vec<u64> = j["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["budget"].as_u64().unwrap())
        .collect();
    assert_eq!(budgets, vec![24, 48]);
    assert!(j["budgets"][0]["share"].is_null(), "{j}");
    assert!(j["recommendation"].is_null(), "{j}");
    assert!(
        j["no_recommendation"]
            .as_str()
            .unwrap()
            .contains("scored 0"),
        "{j}"
    );
    assert!(j["written"].is_null(), "{j}");
    let rows_file = PathBuf::from(j["rows_file"].as_str().unwrap());
    // Two prompts × (full + two budgets).
    let count = || std::fs::read_to_string(&rows_file).unwrap().lines().count();
    assert_eq!(count(), 6);
    let again = ok_json(&verify(&["--json", "--out", r]));
    assert_eq!(count(), 6, "the rerun resumed instead of answering again");
    assert_eq!(again["budgets"], j["budgets"]);

    // Passkeys instead of needles: exact match, the task named in the prompts.
    let pk = ok_json(&verify(&["--task", "passkey", "--json"]));
    assert_eq!(pk["n_prompts"], 2);
    assert!(
        pk["prompts"].as_str().unwrap().starts_with("passkey task"),
        "{pk}"
    );

    // Wrong input: one clear error each, exit ≠ 0, no panic.
    refused(&verify(&["--target", "0"]), &["--target", "(0, 1]"]);
    refused(&verify(&["--target", "1.5"]), &["--target", "(0, 1]"]);
    refused(&verify(&["--budgets", "auto"]), &["not a budget"]);
    refused(&verify(&["--budgets", "0"]), &["--budgets has 0"]);
    refused(
        &verify(&["--task", "passkey", "--needles", "n.jsonl"]),
        &["--needles is for --task needle"],
    );
    let llama = shared.join("reference/tiny/tiny-llama");
    refused(
        &run(
            None,
            &["profile", "verify", llama.to_str().unwrap(), "--profile", p],
        ),
        &["does not fit", "tiny-llama", "architecture differs"],
    );
    // Same shape, other weights: verify is strict about the recorded weight hash.
    let mut other = Profile::load(&prof).unwrap();
    other.fingerprint.weight_hash = "0".repeat(64);
    let other_path = dir.join("other-weights.ron");
    other.save_atomic(&other_path).unwrap();
    refused(
        &run(
            None,
            &[
                "profile",
                "verify",
                m,
                "--profile",
                other_path.to_str().unwrap(),
            ],
        ),
        &[
            "does not fit",
            "other weights",
            "compresskv profile --model",
        ],
    );

    // --budget auto: no recommendation is an error saying how to make one…
    let text = std::fs::read_to_string(shared.join("reference/tiny/train_text.txt")).unwrap();
    let prompt: String = text.chars().take(1500).collect();
    let generate = |budget: &str, profile: &str| {
        run(
            None,
            &[
                "generate",
                "--model",
                m,
                "--prompt",
                &prompt,
                "--method",
                "compresskv",
                "--budget",
                budget,
                "--profile",
                profile,
                "--max-new-tokens",
                "3",
                "--json",
            ],
        )
    };
    refused(
        &generate("auto", p),
        &[
            "has no budget recommendation",
            "compresskv profile verify",
            "--write",
        ],
    );
    refused(&generate("lots", p), &["not a budget", "auto"]);
    // …and with one stored, auto is exactly that budget.
    let mut with = Profile::load(&prof).unwrap();
    with.recommendation = Some(BudgetRecommendation {
        target: 0.9,
        budget: 24,
        method: "compresskv".into(),
        lengths: vec![300],
        depths: vec![50.0],
        prompts: "hand-made for the test".into(),
        full_score: 50.0,
        shares: vec![(24, 0.95), (48, 1.0)],
        created: "2026-01-01T00:00:00Z".into(),
    });
    let with_path = dir.join("with.ron");
    with.save_atomic(&with_path).unwrap();
    let wp = with_path.to_str().unwrap();
    let auto = ok_json(&generate("auto", wp));
    let fixed = ok_json(&generate("24", wp));
    let larger = ok_json(&generate("48", wp));
    assert_eq!(
        auto["kv_entries_kept_per_layer"],
        fixed["kv_entries_kept_per_layer"]
    );
    assert_eq!(auto["token_ids"], fixed["token_ids"]);
    assert_ne!(
        auto["kv_entries_kept_per_layer"],
        larger["kv_entries_kept_per_layer"]
    );
    // `profile show` prints it.
    let shown = run(None, &["profile", "show", wp]);
    assert!(shown.status.success(), "{}", err(&shown));
    assert!(
        out(&shown).contains("recommended budget (`--budget auto`): 24"),
        "{}",
        out(&shown)
    );
    let shown = ok_json(&run(None, &["profile", "show", wp, "--json"]));
    assert_eq!(shown["recommendation"]["budget"], 24);
    // A verify that recommends nothing, with --write, removes the earlier recommendation
    // rather than leave one this measurement contradicts.
    let o = run(
        None,
        &[
            "profile",
            "verify",
            m,
            "--profile",
            wp,
            "--lengths",
            "300",
            "--depths",
            "50",
            "--budgets",
            "24",
            "--write",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("removed the earlier recommendation (budget 24)"),
        "{}",
        out(&o)
    );
    assert!(Profile::load(&with_path).unwrap().recommendation.is_none());
    refused(&generate("auto", wp), &["has no budget recommendation"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The real model: `--write` puts the recommendation into the user's profile directory (the
/// built-in profile is never written to), `--profile auto` then finds it, and `generate
/// --budget auto` compresses to that budget.
#[cfg(unix)]
#[test]
fn profile_verify_write_then_budget_auto_on_gemma() {
    use compresskv_runtime::store;
    if let Err(e) = store::resolve_model("google/gemma-3-270m") {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the real model is required in CI: {e}");
        }
        eprintln!("SKIPPED (real model not available): {e}");
        return;
    }
    let home = tmp_dir("gemma");
    std::os::unix::fs::symlink(store::cache_home().join("models"), home.join("models")).unwrap();
    let rows = home.join("rows");
    let verify = |extra: &[&str]| {
        let mut a = vec![
            "profile",
            "verify",
            "google/gemma-3-270m",
            "--lengths",
            "1024",
            "--depths",
            "50",
            "--budgets",
            "64,128",
            "--out",
            rows.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        run(Some(&home), &a)
    };
    let written = home.join("profiles/google--gemma-3-270m.ron");
    // Human mode with --write.
    let o = verify(&["--write"]);
    assert!(o.status.success(), "{}", err(&o));
    let s = out(&o);
    for want in [
        "profile built-in:google--gemma-3-270m.ron fits google/gemma-3-270m",
        "share of full",
        "recommended: --budget ",
        &format!("wrote the recommendation into {}", written.display()),
    ] {
        assert!(s.contains(want), "missing {want:?} in {s}");
    }
    let rec = Profile::load(&written)
        .unwrap()
        .recommendation
        .expect("written");
    assert!([64, 128].contains(&rec.budget), "{rec:?}");
    // --json, resumed from the rows: the same measurement, now from the written profile.
    let j = ok_json(&verify(&["--json"]));
    assert_eq!(j["profile"], written.display().to_string());
    assert_eq!(j["recommendation"]["budget"], rec.budget);
    assert!(j["written"].is_null());
    let shares: Vec<(usize, f64)> =
        serde_json::from_value(j["recommendation"]["shares"].clone()).unwrap();
    assert_eq!(shares, rec.shares);

    // ~1000 tokens: longer than either budget, so the global layers are compressed.
    let prompt: String = (0..80)
        .map(|i| format!("Line {i}: the value is {}. ", i * 7))
        .collect();
    let generate = |budget: &str| {
        ok_json(&run(
            Some(&home),
            &[
                "generate",
                "--model",
                "google/gemma-3-270m",
                "--prompt",
                &prompt,
                "--max-new-tokens",
                "2",
                "--method",
                "compresskv",
                "--budget",
                budget,
                "--json",
            ],
        ))
    };
    let auto = generate("auto");
    assert_eq!(auto["profile"], written.display().to_string());
    let fixed = generate(&rec.budget.to_string());
    assert_eq!(
        auto["kv_entries_kept_per_layer"],
        fixed["kv_entries_kept_per_layer"]
    );
    std::fs::remove_dir_all(home).unwrap();
}
