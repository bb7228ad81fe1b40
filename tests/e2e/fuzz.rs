//! Mutation fuzzing of every parser that reads user-supplied files, on stable Rust: the GGUF
//! container (+ the model spec and SentencePiece tokenizer read from it), safetensors headers,
//! `config.json` → model spec, `tokenizer.json`, RON profiles and needle JSONL. Seeds are the
//! real files; each input gets 1–4 mutations (bit flips, interesting integers written over
//! length/count fields, deleted, duplicated or truncated ranges). A parser may reject an
//! input with an error, never panic.
//!
//! CI runs a short bounded pass (`COMPRESSKV_FUZZ_SECS`, default 2 s per parser); a long run:
//! `COMPRESSKV_FUZZ_SECS=1800 cargo test --release --test e2e fuzz:: -- --nocapture`.
//! A panicking input is written to `target/fuzz-crashes/` and the test fails naming it (turn it
//! into a regression test).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use compresskv_runtime::loader::WeightSource;
use compresskv_runtime::loader::gguf::GgufFile;
use compresskv_runtime::loader::gguf_spec::{spec_from_gguf, tokenizer_from_gguf};
use compresskv_runtime::loader::hf_config::spec_from_hf_config;
use compresskv_runtime::loader::safetensors::SafetensorsSource;
use compresskv_runtime::loader::tokenizer::TextTokenizer;

use crate::common::shared_dir;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// 1–4 random mutations of `seed`, positions drawn from `0..focus` (e.g. a file's header).
fn mutate(seed: &[u8], focus: usize, rng: &mut Rng) -> Vec<u8> {
    const INTERESTING: [u64; 9] = [
        0,
        1,
        0x7f,
        0xff,
        0xffff,
        0x7fff_ffff,
        0xffff_ffff,
        1 << 40,
        u64::MAX,
    ];
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let focus = focus.min(v.len()).max(1);
        let at = rng.below(focus);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let x = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let n = [1, 2, 4, 8][rng.below(4)];
                for (k, b) in x.iter().take(n).enumerate() {
                    if let Some(slot) = v.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
            2 => {
                let end = (at + 1 + rng.below(64)).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 => {
                let end = (at + 1 + rng.below(64)).min(v.len());
                let piece = v[at.min(end)..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, piece);
            }
            4 => v.truncate(rng.below(v.len() + 1)),
            _ => {
                if !v.is_empty() {
                    let i = at.min(v.len() - 1);
                    v[i] = rng.next() as u8;
                }
            }
        }
    }
    v
}

fn budget() -> Duration {
    let secs = std::env::var("COMPRESSKV_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Runs `parse` on mutations of `seed` for the time budget; returns (inputs tried, failures).
fn fuzz(
    name: &str,
    seed: &[u8],
    focus: usize,
    parse: &dyn Fn(&[u8]),
    failures: &mut Vec<String>,
) -> usize {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < budget() {
        let input = mutate(seed, focus, &mut rng);
        n += 1;
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}-{n}.bin"));
            std::fs::write(&path, &input).unwrap();
            failures.push(format!(
                "{name}: input {n} panicked, saved to {}",
                path.display()
            ));
            if failures.len() > 20 {
                break;
            }
        }
    }
    eprintln!(
        "fuzz {name}: {n} inputs in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    n
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("compresskv-fuzz-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn parsers_never_panic_on_mutated_files() {
    let Some(shared) = shared_dir() else { return };
    // Panics are expected to be caught here; keep the default hook from flooding the log.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let tiny = shared.join("reference/tiny/tiny-llama");

    // RON profile.
    let profile = include_bytes!("../../profiles/google--gemma-3-270m.ron");
    fuzz(
        "profile-ron",
        profile,
        profile.len(),
        &|b| {
            let _ = compresskv_runtime::profile::Profile::from_ron_str(
                &String::from_utf8_lossy(b),
                "fuzz",
            );
        },
        &mut failures,
    );

    // Needle JSONL.
    let needles = include_bytes!("../../calibration-data/needles.jsonl");
    fuzz(
        "needles-jsonl",
        needles,
        needles.len(),
        &|b| {
            let _ =
                compresskv_runtime::eval::niah::parse_needles(&String::from_utf8_lossy(b), "fuzz");
        },
        &mut failures,
    );

    // config.json → model spec (each tiny family's config).
    for fam in [
        "tiny-llama",
        "tiny-gemma3",
        "tiny-qwen2",
        "tiny-qwen3",
        "tiny-mistral",
    ] {
        let cfg =
            std::fs::read(shared.join("reference/tiny").join(fam).join("config.json")).unwrap();
        fuzz(
            &format!("config-{fam}"),
            &cfg,
            cfg.len(),
            &|b| {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) {
                    let _ = spec_from_hf_config(&v, None);
                }
            },
            &mut failures,
        );
    }

    // tokenizer.json (through the file loader, as the runtime reads it).
    let tok = std::fs::read(tiny.join("tokenizer.json")).unwrap();
    let dir = scratch("tok");
    fuzz(
        "tokenizer-json",
        &tok,
        tok.len(),
        &|b| {
            let p = dir.join("tokenizer.json");
            std::fs::write(&p, b).unwrap();
            if let Ok(t) = TextTokenizer::from_hf_file(&p) {
                let _ = t.encode("hello world", true).map(|ids| t.decode(&ids));
            }
        },
        &mut failures,
    );

    // safetensors: mutate the header (8-byte length + JSON), then read every tensor.
    let st = std::fs::read(tiny.join("model.safetensors")).unwrap();
    let header_len = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let dir = scratch("st");
    fuzz(
        "safetensors",
        &st,
        header_len,
        &|b| {
            write_model_dir(&tiny, &dir, b);
            if let Ok(src) = SafetensorsSource::open_dir(&dir) {
                for name in src.names() {
                    let _ = src.load_raw(&name);
                }
            }
        },
        &mut failures,
    );

    // GGUF: the real model's metadata and tensor index (the data region cut off, so every
    // input also meets the tensor bounds checks).
    use compresskv_runtime::store::{ModelLocation, resolve_model};
    let gguf = match resolve_model("google/gemma-3-270m").map(|r| r.location) {
        Ok(ModelLocation::GgufFile(p)) => Some(p),
        _ => None,
    };
    if let Some(path) = gguf {
        let f = GgufFile::open(&path).unwrap();
        let head = std::fs::read(&path).unwrap()[..f.data_offset() as usize].to_vec();
        fuzz(
            "gguf-header",
            &head,
            head.len(),
            &|b| {
                if let Ok(f) = GgufFile::from_bytes(b.to_vec()) {
                    let _ = spec_from_gguf(&f);
                    let _ = tokenizer_from_gguf(&f);
                }
            },
            &mut failures,
        );
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("fuzzing the GGUF reader needs the fetched model: run `compresskv fetch`");
    }

    std::panic::set_hook(hook);
    let _ = std::fs::remove_dir_all(scratch("tok"));
    let _ = std::fs::remove_dir_all(scratch("st"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn write_model_dir(from: &Path, to: &Path, safetensors: &[u8]) {
    std::fs::write(to.join("model.safetensors"), safetensors).unwrap();
    let cfg = to.join("config.json");
    if !cfg.exists() {
        std::fs::copy(from.join("config.json"), cfg).unwrap();
    }
}
