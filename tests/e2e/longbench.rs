//! `compresskv eval longbench` end to end through the binary, on a tiny random-weight model and
//! real MiniLongBench samples: rows written, fidelity of the full cache exactly zero and of an
//! evicting cache positive, the drift numbers (KL per answer-position bin, agreement with the
//! full cache's greedy output) consistent, resume skips everything (also after a half-written last line) and
//! gives the same summary, a run with other settings is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use compresskv_runtime::loader::load_hf_dir;
use compresskv_runtime::profile::{
    Defaults, Fingerprint, Profile, Provenance, SCHEMA_VERSION, TOOL_VERSION, sha256_hex, utc_now,
};
use serde_json::Value;

use crate::common::{cpu, shared_dir};

/// A profile for the tiny model so `compresskv` runs: SRH scores favour the last heads.
fn write_profile(model_dir: &Path, out: &Path) {
    let loaded = load_hf_dir(model_dir, &cpu()).unwrap();
    let s = &loaded.spec;
    let scores: Vec<Vec<f64>> = (0..s.n_layers)
        .map(|_| (0..s.n_heads).map(|h| h as f64).collect())
        .collect();
    let p = Profile {
        schema_version: SCHEMA_VERSION,
        model_id: "test/tiny".into(),
        fingerprint: Fingerprint::of(s, &loaded.config_text, None),
        srh_scores: scores.clone(),
        retrieval_scores: scores,
        layer_errors: None,
        defaults: Defaults {
            min_budget: 8,
            ..Defaults::for_heads(s.n_heads)
        },
        tuning: None,
        recommendation: None,
        provenance: Provenance {
            tool_version: TOOL_VERSION.into(),
            calibration_hash: sha256_hex(b"test"),
            grid: "hand-made for the e2e test".into(),
            seed: 0,
            wall_time_s: 0.0,
            imported_from: None,
            created: utc_now(),
        },
    };
    p.save_atomic(out).unwrap();
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn eval(args: &[String]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args(["--device", "cpu", "eval", "longbench"])
        .args(args)
        .output()
        .unwrap();
    Run {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn rows(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("longbench.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn summary(r: &Run) -> Value {
    assert!(r.ok, "eval failed:\n{}", r.stderr);
    serde_json::from_str::<Value>(&r.stdout).unwrap()["rows"].clone()
}

#[test]
fn eval_longbench_on_a_tiny_model_writes_rows_and_resumes() {
    let Some(shared) = shared_dir() else { return };
    let model = shared.join("reference/tiny/tiny-qwen2");
    let data = shared.join("datasets/longbench-v1-minilongbench");
    let tmp: PathBuf =
        std::env::temp_dir().join(format!("compresskv-e2e-longbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let profile = tmp.join("tiny.ron");
    write_profile(&model, &profile);
    let out = tmp.join("out");
    let args = |max_length: &str| -> Vec<String> {
        [
            "--data",
            data.to_str().unwrap(),
            "--datasets",
            "hotpotqa,passage_count",
            "--max-samples",
            "1",
            "--model",
            model.to_str().unwrap(),
            "--methods",
            "full,snapkv,compresskv",
            // 24 evicts most of the ≤ 256-token prompt; 100000 keeps all of it.
            "--budgets",
            "24,100000",
            "--max-length",
            max_length,
            "--profile",
            profile.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]
        .map(String::from)
        .to_vec()
    };

    let first = summary(&eval(&args("256")));
    let written = rows(&out);
    // 2 datasets × 1 sample × (full + 2 methods × 2 budgets).
    assert_eq!(written.len(), 10);
    for r in &written {
        let (method, budget) = (r["method"].as_str().unwrap(), r["budget"].as_u64());
        let score = r["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{r}");
        let prompt = r["prompt_tokens"].as_u64().unwrap();
        assert!(prompt > 24 && prompt <= 256, "{r}");
        assert!(r["answer_tokens"].as_u64().unwrap() > 0, "{r}");
        let (d, kl) = (
            r["delta_logprob"].as_f64().unwrap(),
            r["kl"].as_f64().unwrap(),
        );
        let (full_b, kept_b) = (r["kv_bytes_full"].as_u64(), r["kv_bytes_kept"].as_u64());
        // Drift numbers: the first bin holds the first ≤ 16 answer positions' KL, so on these
        // short answers it is the whole KL; past the answer's end a bin is null.
        let answer = r["answer_tokens"].as_u64().unwrap();
        let bins = r["kl_bins"].as_array().unwrap();
        assert_eq!(bins.len(), 4, "{r}");
        if answer <= 16 {
            assert!((bins[0].as_f64().unwrap() - kl).abs() < 1e-9, "{r}");
            assert!(bins[1].is_null(), "{r}");
        }
        let (prefix, lcs) = (
            r["agree_prefix"].as_u64().unwrap(),
            r["agree_lcs"].as_f64().unwrap(),
        );
        assert!(prefix <= r["new_tokens"].as_u64().unwrap() && (0.0..=1.0).contains(&lcs));
        match budget {
            None => {
                assert_eq!(method, "full");
                assert_eq!((d, kl), (0.0, 0.0), "full cache against itself: {r}");
                assert_eq!(kept_b, full_b);
                assert_eq!(lcs, 1.0, "{r}");
                assert_eq!(prefix, r["new_tokens"].as_u64().unwrap(), "{r}");
            }
            Some(100000) => {
                assert!(d.abs() < 1e-5 && kl.abs() < 1e-5, "nothing evicted: {r}");
                assert_eq!(kept_b, full_b);
                assert_eq!(lcs, 1.0, "nothing evicted, the same greedy output: {r}");
            }
            Some(24) => {
                assert!(kl > 0.0, "evicting must move the distribution: {r}");
                assert!(kept_b.unwrap() < full_b.unwrap(), "{r}");
            }
            Some(b) => panic!("unexpected budget {b}"),
        }
    }
    let hotpot_full = written
        .iter()
        .find(|r| r["dataset"] == "hotpotqa" && r["method"] == "full")
        .unwrap();
    assert_eq!(
        hotpot_full["truncated"], true,
        "hotpotqa prompts are ≫ 256 tokens"
    );
    let s = first.as_array().unwrap();
    // Per dataset (2 × 5 combos) plus the mean over datasets (5).
    assert_eq!(s.len(), 15);
    for row in s {
        let score = row["score"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&score), "{row}");
        let n = if row["dataset"] == "mean" { 2 } else { 1 };
        assert_eq!(row["n"], n, "{row}");
        let lcs = row["agree_lcs"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&lcs), "{row}");
        if row["method"] == "full" {
            assert_eq!(lcs, 1.0, "{row}");
        }
        assert!(row["kl_bins"][0].as_f64().is_some(), "{row}");
    }

    // Resume: nothing is recomputed, the file is untouched, the summary is identical.
    let before = std::fs::read(out.join("longbench.jsonl")).unwrap();
    let again = summary(&eval(&args("256")));
    assert_eq!(again, first);
    assert_eq!(std::fs::read(out.join("longbench.jsonl")).unwrap(), before);

    // A killed run leaves half a line: it is dropped, that row redone, the summary the same.
    let cut = &before[..before.len() - 40];
    std::fs::write(out.join("longbench.jsonl"), cut).unwrap();
    let redone = eval(&args("256"));
    assert!(redone.stderr.contains("half-written"), "{}", redone.stderr);
    assert_eq!(summary(&redone), first);
    assert_eq!(rows(&out).len(), 10);

    // Other settings into the same file are refused with the reason.
    let other = eval(&args("200"));
    assert!(!other.ok);
    assert!(other.stderr.contains("other settings"), "{}", other.stderr);

    // Helpful errors: a missing dataset lists what exists; an unknown method lists the methods.
    let mut bad = args("256");
    bad[3] = "hotpot".into();
    let e = eval(&bad);
    assert!(!e.ok && e.stderr.contains("hotpotqa, lcc"), "{}", e.stderr);
    let mut bad = args("256");
    bad[9] = "full,nope".into();
    let e = eval(&bad);
    assert!(
        !e.ok && e.stderr.contains("available: full, streamingllm"),
        "{}",
        e.stderr
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
