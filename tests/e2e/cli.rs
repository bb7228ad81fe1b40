//! The CLI as people run it (issue 12): every command in plain human mode, and a matrix of
//! bad inputs that must each end in exit ≠ 0 with one clear error line — never a panic.
//! Tiny model only (fast); the Gemma-specific paths are covered in `profile.rs`/`gemma.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::shared_dir;

fn compresskv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("compresskv-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Plain human mode: exit 0, the table printed (header and its rule), no panic.
#[test]
fn every_command_in_human_mode() {
    let Some(shared) = shared_dir() else { return };
    let model = shared.join("reference/tiny/tiny-llama");
    let m = model.to_str().unwrap();
    let hay = shared.join("datasets/compresskv-paper/needle/PaulGrahamEssays");
    let h = hay.to_str().unwrap();
    let out = tmp_dir("human");
    let niah_out = out.join("niah");
    let ruler_out = out.join("ruler");
    let ruler_dir = shared.join("datasets/ruler");
    let ruler = ruler_dir.to_str().unwrap();
    let lb_out = out.join("longbench");
    let lb_data = shared.join("datasets/longbench-v1-minilongbench");
    let qwen = shared.join("reference/tiny/tiny-qwen2");
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec![
                "generate",
                "--model",
                m,
                "--prompt",
                "Once upon a time",
                "--max-new-tokens",
                "6",
            ],
            &["method", "prompt tokens", "decode", "KV cache", "full"],
        ),
        (
            vec![
                "generate",
                "--model",
                m,
                "--prompt",
                "Once upon a time",
                "--max-new-tokens",
                "6",
                "--method",
                "snapkv",
                "--budget",
                "8",
                "--window",
                "2",
                "--temperature",
                "0.8",
                "--top-p",
                "0.9",
                "--seed",
                "7",
            ],
            &["snapkv", "prompt tokens", "KV cache"],
        ),
        (
            vec![
                "bench",
                "--model",
                m,
                "--haystack",
                h,
                "--lengths",
                "256",
                "--methods",
                "full,snapkv",
                "--budget",
                "32",
                "--window",
                "4",
                "--decode-tokens",
                "3",
                "--repeats",
                "1",
            ],
            &["method", "prefill", "compute bound", "decode", "peak RSS"],
        ),
        (
            vec![
                "demo",
                "--model",
                m,
                "--length",
                "300",
                "--method",
                "snapkv",
                "--budget",
                "32",
                "--window",
                "4",
                "--haystack",
                h,
            ],
            &["cache", "answer", "recall %"],
        ),
        (
            vec![
                "eval",
                "niah",
                "--model",
                m,
                "--haystack",
                h,
                "--lengths",
                "256",
                "--depths",
                "50",
                "--methods",
                "full,snapkv",
                "--budgets",
                "32",
                "--window",
                "4",
                "--out",
                niah_out.to_str().unwrap(),
            ],
            &["method", "snapkv", "≈ full answer"],
        ),
        (
            vec![
                "eval",
                "niah",
                "--model",
                m,
                "--task",
                "ruler",
                "--ruler-tasks",
                "niah_single_1,niah_multikey_3",
                "--ruler-dir",
                ruler,
                "--haystack",
                h,
                "--lengths",
                "640",
                "--depths",
                "50",
                "--methods",
                "full,snapkv",
                "--budgets",
                "32",
                "--window",
                "4",
                "--out",
                ruler_out.to_str().unwrap(),
            ],
            &[
                "task",
                "niah_single_1",
                "niah_multikey_3",
                "mean match %",
                "whole-value %",
            ],
        ),
        (
            vec![
                "eval",
                "longbench",
                "--data",
                lb_data.to_str().unwrap(),
                "--datasets",
                "hotpotqa",
                "--max-samples",
                "1",
                "--model",
                qwen.to_str().unwrap(),
                "--methods",
                "full,snapkv",
                "--budgets",
                "24",
                "--max-length",
                "256",
                "--out",
                lb_out.to_str().unwrap(),
            ],
            &[
                "dataset",
                "hotpotqa",
                "KL",
                "same prefix",
                "LCS F1",
                "KL 1-16",
            ],
        ),
        (
            vec!["profile", "show", "google/gemma-3-270m", "--budget", "128"],
            &["SRH heads (score)", "budget @128", "held-out score"],
        ),
    ];
    for (args, expect) in cases {
        let o = compresskv(&args);
        let (stdout, stderr) = text(&o);
        let all = format!("{stdout}\n{stderr}");
        assert!(o.status.success(), "{args:?} failed:\n{all}");
        assert!(!all.contains("panicked"), "{args:?} panicked:\n{all}");
        assert!(all.contains("---"), "{args:?}: no table rule in\n{all}");
        for e in expect {
            assert!(all.contains(e), "{args:?}: `{e}` missing from\n{all}");
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Each class of bad input: exit ≠ 0, no panic, and an error that names the problem.
#[test]
fn bad_input_matrix() {
    let Some(shared) = shared_dir() else { return };
    let model = shared.join("reference/tiny/tiny-llama");
    let m = model.to_str().unwrap();
    let dir = tmp_dir("bad");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(dir.join("empty.txt"), "").unwrap();
    std::fs::write(dir.join("latin1.txt"), b"caf\xe9 au lait").unwrap();
    std::fs::write(dir.join("trunc.gguf"), b"GGUF\x03\x00\x00\x00\x01").unwrap();
    std::fs::write(dir.join("junk.gguf"), vec![0x5au8; 4096]).unwrap();
    // A model directory with a corrupt config.json, one with truncated safetensors.
    let broken_cfg = dir.join("broken-config");
    copy_model(&model, &broken_cfg);
    std::fs::write(
        broken_cfg.join("config.json"),
        "{\"model_type\": \"llama\", ",
    )
    .unwrap();
    let broken_st = dir.join("broken-safetensors");
    copy_model(&model, &broken_st);
    let st = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(broken_st.join("model.safetensors"), &st[..st.len() / 3]).unwrap();
    let empty_file = p("empty.txt");
    let latin1 = p("latin1.txt");
    let missing = p("missing.txt");
    let trunc = p("trunc.gguf");
    let junk = p("junk.gguf");
    let bcfg = broken_cfg.to_str().unwrap().to_string();
    let bst = broken_st.to_str().unwrap().to_string();
    let generate = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["generate", "--model", m, "--max-new-tokens", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !extra.iter().any(|a| a.starts_with("--prompt")) {
            v.extend(["--prompt".to_string(), "hello there".to_string()]);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let no_longbench = format!("longbench:{}", p("no-longbench"));
    let ruler = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "eval",
            "niah",
            "--model",
            m,
            "--task",
            "ruler",
            "--lengths",
            "640",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(p("ruler-bad"));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // (args, a fragment the error must contain, case-insensitive)
    let bogus_profile = p("bogus.ron");
    std::fs::write(&bogus_profile, "(this is not a profile").unwrap();
    let mut cases: Vec<(Vec<String>, &str)> = vec![
        (generate(&["--top-p", "2"]), "top-p"),
        (generate(&["--top-p", "0"]), "top-p"),
        (generate(&["--temperature", "-1"]), "temperature"),
        (generate(&["--temperature", "nan"]), "temperature"),
        (generate(&["--prompt", ""]), "prompt is empty"),
        (generate(&["--prompt-file", &empty_file]), "prompt is empty"),
        (generate(&["--prompt-file", &missing]), "missing.txt"),
        (generate(&["--prompt-file", &latin1]), "utf-8"),
        (generate(&["--method", "nosuch"]), "nosuch"),
        (generate(&["--method", "snapkv", "--budget", "0"]), "budget"),
        (generate(&["--method", "snapkv", "--ratio", "1.5"]), "ratio"),
        (
            generate(&[
                "--method", "snapkv", "--budget", "16", "--window", "4", "--kernel", "0",
            ]),
            "kernel",
        ),
        (
            generate(&["--method", "snapkv", "--budget", "16", "--window", "0"]),
            "window",
        ),
        (generate(&["--method", "snapkv", "--budget", "8"]), "budget"),
        (
            generate(&["--method", "snapkv", "--ratio", "0.01", "--window", "4"]),
            "raise --ratio",
        ),
        // No profile for the tiny model: CompressKV says where it looked and how to make one.
        (
            generate(&["--method", "compresskv", "--budget", "16"]),
            "compresskv profile",
        ),
        (
            vec!["generate", "--model", &trunc, "--prompt", "hi"]
                .into_iter()
                .map(String::from)
                .collect(),
            "gguf",
        ),
        (
            vec!["generate", "--model", &junk, "--prompt", "hi"]
                .into_iter()
                .map(String::from)
                .collect(),
            "gguf",
        ),
        (
            vec!["generate", "--model", &bcfg, "--prompt", "hi"]
                .into_iter()
                .map(String::from)
                .collect(),
            "config.json",
        ),
        (
            vec!["generate", "--model", &bst, "--prompt", "hi"]
                .into_iter()
                .map(String::from)
                .collect(),
            "safetensors",
        ),
        (
            vec!["generate", "--model", "nosuch/model", "--prompt", "hi"]
                .into_iter()
                .map(String::from)
                .collect(),
            "nosuch/model",
        ),
        (
            vec!["profile", "show", "nosuch/model"]
                .into_iter()
                .map(String::from)
                .collect(),
            "no compresskv profile",
        ),
        (
            vec![
                "eval",
                "niah",
                "--model",
                m,
                "--lengths",
                "256",
                "--depths",
                "150",
                "--out",
                &p("niah-bad"),
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "depth",
        ),
        (
            [
                "generate",
                "--model",
                m,
                "--prompt",
                "hello there",
                "--max-new-tokens",
                "5000",
            ]
            .map(String::from)
            .to_vec(),
            "ask for at most 4088 new tokens",
        ),
        (
            [
                "bench",
                "--model",
                m,
                "--haystack",
                "noise",
                "--methods",
                "full",
                "--lengths",
                "256,4090",
                "--decode-tokens",
                "8",
            ]
            .map(String::from)
            .to_vec(),
            "--lengths 4090: with --decode-tokens 8 a prompt may have at most 4088 tokens",
        ),
        (
            ruler(&["--ruler-tasks", "niah_single_1,niah_bogus"]),
            "unknown RULER task `niah_bogus`",
        ),
        (ruler(&[]), "--ruler-dir"),
        (
            ruler(&["--ruler-dir", &missing]),
            "wonderwords/nounlist.txt",
        ),
        (ruler(&["--protocol", "paper"]), "--protocol"),
        (
            vec![
                "eval",
                "niah",
                "--model",
                m,
                "--haystack",
                &no_longbench,
                "--out",
                &p("niah-bad"),
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "no-longbench",
        ),
        (
            vec![
                "eval",
                "longbench",
                "--model",
                m,
                "--data",
                &p("no-such-dir"),
                "--out",
                &p("lb-bad"),
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "no-such-dir",
        ),
    ];
    // Knobs checked against the model need one with a profile: Gemma 3 270M (built in).
    if crate::common::real_model().is_some() {
        let g = |extra: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = [
                "generate",
                "--model",
                "google/gemma-3-270m",
                "--prompt",
                "hi",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        cases.push((
            g(&[
                "--method",
                "compresskv",
                "--budget",
                "64",
                "--srh-heads",
                "99",
            ]),
            "srh-heads",
        ));
        cases.push((
            g(&[
                "--method",
                "compresskv",
                "--budget",
                "64",
                "--srh-heads",
                "0",
            ]),
            "srh-heads",
        ));
        cases.push((
            g(&[
                "--method",
                "compresskv",
                "--budget",
                "64",
                "--profile",
                &bogus_profile,
            ]),
            "profile",
        ));
    }
    let mut failures = Vec::new();
    for (args, want) in &cases {
        for json in [false, true] {
            let mut args = args.clone();
            if json && args[0] != "profile" {
                args.push("--json".into());
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = compresskv(&refs);
            let (_, stderr) = text(&o);
            let bad = if o.status.success() {
                "exited 0"
            } else if stderr.contains("panicked") {
                "panicked"
            } else if !stderr.to_lowercase().contains(&want.to_lowercase()) {
                "the error does not name the problem"
            } else if repeats_itself(&stderr) {
                "the error repeats itself"
            } else {
                continue;
            };
            failures.push(format!("{args:?}: {bad}:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An error chain that prints the same clause twice (an error whose message embeds its cause
/// and also returns it as `source`, so `{:#}` shows it again).
fn repeats_itself(stderr: &str) -> bool {
    stderr.lines().any(|line| {
        let parts: Vec<&str> = line.split(": ").filter(|p| p.len() > 20).collect();
        (1..parts.len()).any(|i| parts[..i].contains(&parts[i]))
    })
}

fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Output into a closed pipe (`compresskv … | head`) ends the process quietly (SIGPIPE), as
/// with other Unix tools — it used to panic in `println!`. The built-in profile as JSON is
/// larger than a pipe buffer, so the write always meets the closed pipe.
#[cfg(unix)]
#[test]
fn closed_stdout_pipe_is_not_a_panic() {
    for _ in 0..3 {
        let o = Command::new("bash")
            .arg("-c")
            .arg(r#""$0" profile show google/gemma-3-270m --json | true; exit "${PIPESTATUS[0]}""#)
            .arg(env!("CARGO_BIN_EXE_compresskv"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_ne!(o.status.code(), Some(101), "{stderr}");
    }
}

/// Provenance: the shipped Gemma profile records the hash of the weights it was measured on,
/// the fetched GGUF hashes the same (no warning), and a profile from other weights of the same
/// model gets a warning naming both hashes — an error with `--strict-profile`.
#[test]
fn profile_weight_hash_is_checked() {
    let Some(loaded) = crate::common::real_model() else {
        return;
    };
    let shipped = compresskv_runtime::profile::Profile::from_ron_str(
        include_str!("../../profiles/google--gemma-3-270m.ron"),
        "shipped",
    )
    .unwrap();
    let hash = loaded
        .model
        .weight_hash()
        .expect("GGUF tensors hash")
        .to_string();
    assert_eq!(shipped.fingerprint.weight_hash, hash);
    assert_eq!(shipped.weight_mismatch(Some(&hash)), None);
    let dir = tmp_dir("weights");
    let other = dir.join("other.ron");
    let other_text =
        include_str!("../../profiles/google--gemma-3-270m.ron").replace(&hash, &"ab".repeat(32));
    std::fs::write(&other, other_text).unwrap();
    let args = |strict: bool| {
        let mut a = vec![
            "generate",
            "--model",
            "google/gemma-3-270m",
            "--prompt",
            "The capital of France is",
            "--max-new-tokens",
            "2",
            "--method",
            "compresskv",
            "--budget",
            "64",
            "--profile",
            other.to_str().unwrap(),
            "--json",
        ];
        if strict {
            a.push("--strict-profile");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| compresskv(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let o = run(args(false));
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning")
            && stderr.contains("abababababab")
            && stderr.contains(&hash[..12]),
        "{stderr}"
    );
    let o = run(args(true));
    let (_, stderr) = text(&o);
    assert!(
        !o.status.success() && stderr.contains("--strict-profile") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--dtype` on the exact path (Burn on the CPU here; the GPUs use the same code): f16 and bf16
/// hold the KV cache in half the bytes and decode the f32 path's greedy tokens (measured: the
/// first 10 on every tiny family except bf16 Gemma 3, which parts at token 7 — bf16 keeps 8
/// mantissa bits, and these random weights attend sharply); f16 on the real Gemma 3 270M
/// overflows (its activations exceed 65504) and says so instead of printing token 0 forever;
/// the CPU kernels refuse a dtype they do not compute in.
#[test]
fn dtype_halves_the_kv_cache_and_keeps_the_tokens() {
    let Some(shared) = shared_dir() else { return };
    let run = |model: &str, dtype: &str| -> serde_json::Value {
        let o = compresskv(&[
            "generate",
            "--model",
            model,
            "--precision",
            "exact",
            "--dtype",
            dtype,
            "--prompt",
            "In a distant land, numbers like 12345 were written on stones.",
            "--max-new-tokens",
            "6",
            "--json",
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{model} --dtype {dtype}: {err}");
        serde_json::from_str(&out).unwrap()
    };
    for arch in ["llama", "qwen3", "gemma3"] {
        let dir = shared.join(format!("reference/tiny/tiny-{arch}"));
        let m = dir.to_str().unwrap();
        let full = run(m, "f32");
        for dtype in ["f16", "bf16"] {
            let half = run(m, dtype);
            assert_eq!(
                half["token_ids"], full["token_ids"],
                "{arch} {dtype}: tokens"
            );
            assert_eq!(
                half["kv_cache_bytes"].as_u64().unwrap() * 2,
                full["kv_cache_bytes"].as_u64().unwrap(),
                "{arch} {dtype}: KV bytes"
            );
        }
    }
    let m = shared.join("reference/tiny/tiny-llama");
    let o = compresskv(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--dtype",
        "bf16",
        "--prompt",
        "x",
    ]);
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("--precision exact"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    if crate::common::real_model_on(&crate::common::cpu()).is_none() {
        return;
    }
    let o = compresskv(&[
        "generate",
        "--model",
        "google/gemma-3-270m",
        "--precision",
        "exact",
        "--dtype",
        "f16",
        "--prompt",
        "The capital of France is",
        "--max-new-tokens",
        "4",
    ]);
    let (_, err) = text(&o);
    assert!(
        !o.status.success(),
        "f16 Gemma must not print garbage: {err}"
    );
    assert!(err.contains("NaN") && err.contains("--dtype bf16"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
