//! `compresskv eval niah` end to end on a tiny model: rows, resume, reproducibility, PNGs.

use std::path::Path;
use std::process::Command;

use crate::common::shared_dir;

fn niah(model: &Path, hay: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "eval",
        "niah",
        "--model",
        model.to_str().unwrap(),
        "--haystack",
        hay.to_str().unwrap(),
        "--lengths",
        "320,448",
        "--depths",
        "0,50,100",
        "--methods",
        "full,streamingllm,snapkv,pyramidkv,adakv",
        "--budgets",
        "24,48",
        "--window",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn niah_runs_resumes_and_reproduces_with_heatmaps() {
    let Some(shared) = shared_dir() else { return };
    let model = shared.join("reference/tiny/tiny-llama");
    let hay = shared.join("datasets/compresskv-paper/needle/PaulGrahamEssays");
    let tmp = std::env::temp_dir().join(format!("ckv-e2e-niah-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (a, b) = (tmp.join("a"), tmp.join("b"));

    for task in ["needle", "passkey"] {
        let s = niah(&model, &hay, &a, &["--task", task]);
        let file = a.join(format!("niah-{task}.jsonl"));
        let r = rows(&file);
        // 2 lengths × 3 depths × (full + 4 methods × 2 budgets).
        assert_eq!(r.len(), 6 * 9, "{task}");
        for row in &r {
            let score = row["score"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&score));
            assert_eq!(
                row["prompt_tokens"], row["length"],
                "peer prompts are exactly `length`"
            );
            if row["method"] != "full" {
                assert!(row["kv_cache_bytes"].as_u64() < row["kv_cache_bytes_full"].as_u64());
            }
        }
        let summary = s["summary"].as_array().unwrap();
        assert_eq!(summary.len(), 9);
        assert_eq!(summary[0]["method"], "full");
        // Every answer is held against the full cache's on the same prompt.
        assert_eq!(summary[0]["agree_with_full"], 1.0);
        for row in summary {
            let a = row["agree_with_full"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&a), "{row}");
        }
        // One heatmap per method×budget, real PNGs.
        let pngs = s["heatmaps"].as_array().unwrap();
        assert_eq!(pngs.len(), 9);
        for p in pngs {
            let bytes = std::fs::read(p.as_str().unwrap()).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        }
        // Resume: a second run adds nothing and summarises the same rows.
        let s2 = niah(&model, &hay, &a, &["--task", task]);
        assert_eq!(rows(&file).len(), r.len());
        assert_eq!(s2["summary"], s["summary"]);
        // Same seed, fresh directory: the same prompts and answers.
        niah(&model, &hay, &b, &["--task", task]);
        let rb = rows(&b.join(format!("niah-{task}.jsonl")));
        let key = |v: &serde_json::Value| {
            (
                v["method"].to_string(),
                v["budget"].to_string(),
                v["length"].to_string(),
                v["depth"].to_string(),
                v["answer"].to_string(),
                v["reference"].to_string(),
            )
        };
        let mut ka: Vec<_> = r.iter().map(key).collect();
        let mut kb: Vec<_> = rb.iter().map(key).collect();
        ka.sort();
        kb.sort();
        assert_eq!(ka, kb, "{task}: same seed must give the same rows");
    }
    // Another seed changes the passkeys.
    let c = tmp.join("c");
    niah(
        &model,
        &hay,
        &c,
        &["--task", "passkey", "--seed", "7", "--methods", "full"],
    );
    let keys = |p: &Path| -> Vec<String> {
        rows(p)
            .iter()
            .filter(|r| r["method"] == "full")
            .map(|r| r["reference"].to_string())
            .collect()
    };
    assert_ne!(
        keys(&a.join("niah-passkey.jsonl")),
        keys(&c.join("niah-passkey.jsonl"))
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `bench` and `demo` end to end on a tiny model with `--json`.
#[test]
fn bench_and_demo_report_every_field() {
    let Some(shared) = shared_dir() else { return };
    let model = shared.join("reference/tiny/tiny-llama");
    let hay = shared.join("datasets/compresskv-paper/needle/PaulGrahamEssays");
    let run = |args: &[&str]| -> serde_json::Value {
        let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let b = run(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--haystack",
        hay.to_str().unwrap(),
        "--lengths",
        "320,448",
        "--methods",
        "full,snapkv",
        "--budget",
        "48",
        "--window",
        "4",
        "--decode-tokens",
        "4",
        "--repeats",
        "2",
        "--json",
    ]);
    let rows = b["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        for f in [
            "method",
            "length",
            "prefill_ms",
            "compress_ms",
            "decode_tokens_per_s",
            "kv_cache_bytes",
            "peak_rss_bytes",
            "decode_bytes_per_token",
        ] {
            assert!(!r[f].is_null(), "{f} missing in {r}");
        }
        assert!(r["prefill_ms"].as_f64().unwrap() > 0.0);
        assert!(r["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
        // The roofline: the prefill's multiply-adds over the measured FMA peak (CPU kernels on
        // an AVX2 machine; null elsewhere, together with the peak).
        let macs = r["prefill_macs"].as_f64().unwrap();
        assert!(macs > 0.0);
        match (
            b["fma_peak_macs_per_s"].as_f64(),
            r["prefill_compute_bound_tokens_per_s"].as_f64(),
        ) {
            (Some(p), Some(bound)) => {
                let n = r["length"].as_f64().unwrap();
                assert!((bound - p * n / macs).abs() <= 1e-9 * bound, "{r}");
            }
            (None, None) => {}
            other => panic!("peak and compute bound disagree: {other:?}"),
        }
        let (kv, full) = (
            r["kv_cache_bytes"].as_u64(),
            r["kv_cache_bytes_full"].as_u64(),
        );
        if r["method"] == "full" {
            assert_eq!(kv, full);
        } else {
            assert!(kv < full);
        }
    }
    let d = run(&[
        "demo",
        "--model",
        model.to_str().unwrap(),
        "--length",
        "400",
        "--method",
        "snapkv",
        "--budget",
        "48",
        "--window",
        "4",
        "--haystack",
        hay.to_str().unwrap(),
        "--json",
    ]);
    let runs = d["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["method"], "full");
    assert!(runs[1]["kv_cache_bytes"].as_u64() < runs[0]["kv_cache_bytes"].as_u64());
}

/// `eval niah --task ruler` on a tiny model: every RULER task, one rows file each, prompts that
/// leave room for the 128-token answer, references of the task's kind, heatmaps, resume and
/// seeds.
#[test]
fn ruler_tasks_run_resume_and_reproduce() {
    let Some(shared) = shared_dir() else { return };
    let model = shared.join("reference/tiny/tiny-llama");
    let hay = shared.join("datasets/compresskv-paper/needle/PaulGrahamEssays");
    let ruler = shared.join("datasets/ruler");
    let tmp = std::env::temp_dir().join(format!("ckv-e2e-ruler-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let run = |out: &Path, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "eval",
            "niah",
            "--task",
            "ruler",
            "--ruler-dir",
            ruler.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--haystack",
            hay.to_str().unwrap(),
            "--lengths",
            "640,768",
            "--depths",
            "0,100",
            "--methods",
            "full,snapkv",
            "--budgets",
            "32",
            "--window",
            "4",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let a = tmp.join("a");
    let s = run(&a, &[]);
    assert_eq!(s["task"], "ruler");
    let tasks = s["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 8, "all eight tasks by default");
    let is_uuid = |v: &str| {
        v.len() == 36 && v.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
    };
    let references = |out: &Path| -> Vec<String> {
        let mut v: Vec<String> = tasks
            .iter()
            .flat_map(|t| {
                let name = t["task"].as_str().unwrap();
                rows(&out.join(format!("ruler-{name}.jsonl")))
                    .iter()
                    .map(|r| format!("{name} {} {} {}", r["method"], r["length"], r["reference"]))
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    };
    for t in tasks {
        let name = t["task"].as_str().unwrap();
        let r = rows(Path::new(t["rows_file"].as_str().unwrap()));
        // 2 lengths × 2 depths × (full + snapkv@32).
        assert_eq!(r.len(), 8, "{name}");
        for row in &r {
            assert_eq!(row["task"], name);
            assert_eq!(row["protocol"], "ruler");
            let (len, got) = (
                row["length"].as_u64().unwrap(),
                row["prompt_tokens"].as_u64().unwrap(),
            );
            assert!(
                got <= len - 128 && got + 100 > len - 128,
                "{name}: {got} of {len}"
            );
            let values: Vec<&str> = row["reference"].as_str().unwrap().split(", ").collect();
            let want = match name {
                "niah_multivalue" | "niah_multiquery" => 4,
                _ => 1,
            };
            assert_eq!(values.len(), want, "{name}");
            for v in values {
                match name {
                    "niah_single_3" | "niah_multikey_3" => assert!(is_uuid(v), "{v}"),
                    _ => assert!(v.len() == 7 && v.parse::<u32>().is_ok(), "{v}"),
                }
            }
        }
        assert_eq!(t["summary"].as_array().unwrap().len(), 2);
        // The whole-value score never exceeds RULER's substring score.
        for m in t["summary"].as_array().unwrap() {
            let whole = m["mean_whole_score"].as_f64().unwrap();
            assert!(whole <= m["mean_score"].as_f64().unwrap(), "{m}");
            assert_eq!(m["whole_per_length"].as_array().unwrap().len(), 2);
        }
        for p in t["heatmaps"].as_array().unwrap() {
            let bytes = std::fs::read(p.as_str().unwrap()).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        }
    }
    // The mean over tasks: 8 tasks × 4 prompts per method.
    let mean = s["summary"].as_array().unwrap();
    assert_eq!(mean.len(), 2);
    assert_eq!(mean[0]["n"], 32);
    // Resume adds nothing; the same seed elsewhere gives the same keys, another seed others.
    let before = references(&a);
    let s2 = run(&a, &[]);
    assert_eq!(references(&a), before);
    assert_eq!(s2["summary"], s["summary"]);
    let b = tmp.join("b");
    run(&b, &[]);
    assert_eq!(references(&b), before);
    let c = tmp.join("c");
    let sc = run(&c, &["--seed", "3", "--ruler-tasks", "niah_multikey_3"]);
    assert_eq!(sc["tasks"].as_array().unwrap().len(), 1);
    let other = rows(&c.join("ruler-niah_multikey_3.jsonl"));
    let same = rows(&a.join("ruler-niah_multikey_3.jsonl"));
    assert_ne!(other[0]["reference"], same[0]["reference"]);
    let _ = std::fs::remove_dir_all(&tmp);
}
