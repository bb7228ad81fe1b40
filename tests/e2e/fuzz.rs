//! Mutation fuzzing of every parser that reads user-supplied files, on stable Rust: the GGUF
//! container (+ the model spec and SentencePiece tokenizer read from it), safetensors headers,
//! `config.json` → model spec, `tokenizer.json`, RON profiles, needle and LongBench JSONL and
//! LongBench's prompt config. Seeds are the
//! real files; each input gets 1–4 mutations (bit flips, interesting integers written over
//! length/count fields, deleted, duplicated or truncated ranges). A parser may reject an
//! input with an error, never panic.
//!
//! Besides panics, an input fails when it takes longer than [`MAX_SECS_PER_INPUT`] (a hang) or
//! makes the parser hold more heap than [`heap_bound`] (an unchecked length field), measured by
//! a counting global allocator.
//!
//! CI runs a short bounded pass (`COMPRESSKV_FUZZ_SECS`, default 2 s per parser); a long run,
//! split over processes with `COMPRESSKV_FUZZ_ONLY` (parsers: `gguf`, `safetensors`, `config`,
//! `tokenizer-json`, `profile-ron`, `jsonl`):
//! `COMPRESSKV_FUZZ_SECS=1800 COMPRESSKV_FUZZ_ONLY=gguf cargo test --release --test e2e fuzz:: -- --nocapture`.
//! A failing input is written to `target/fuzz-crashes/` and the test fails naming it (turn it
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

/// Time for one parser (`COMPRESSKV_FUZZ_SECS`, default 2 s); targets of one parser (the five
/// `config.json` families) share it.
fn budget() -> Duration {
    let secs = std::env::var("COMPRESSKV_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Whether parser `name` runs: `COMPRESSKV_FUZZ_ONLY` is a comma-separated list of parser names
/// (all when unset), so long runs can be split across processes.
fn selected(name: &str) -> bool {
    match std::env::var("COMPRESSKV_FUZZ_ONLY") {
        Ok(list) => list.split(',').any(|n| n.trim() == name),
        Err(_) => true,
    }
}

/// No input may take longer than this to parse (a hang; typical inputs take 0.01–50 ms).
const MAX_SECS_PER_INPUT: f64 = 5.0;

/// No input may make its parser hold more heap than this at once: 64 MiB plus 16× the input
/// (a count or length field read from the input must not size an allocation unchecked).
fn heap_bound(input_len: usize) -> usize {
    (64 << 20) + 16 * input_len
}

/// Heap accounting per thread, for the allocation bound: live bytes and their peak.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    /// The system allocator, counting each thread's live bytes (a block freed on another
    /// thread is counted there; the parsers are single-threaded).
    pub struct Counting;

    fn add(n: isize) {
        let _ = LIVE.try_with(|live| {
            let v = live.get().wrapping_add(n);
            live.set(v);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(v)));
        });
    }

    // SAFETY: every call forwards to `System` unchanged; the counters are plain thread-locals
    // without destructors and allocate nothing.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded contract.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded contract.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded contract.
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded contract.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    /// Start measuring this thread's peak from its current live bytes.
    pub fn reset_peak() -> isize {
        let live = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(live));
        live
    }

    /// Bytes above `base` this thread held at its peak since [`reset_peak`].
    pub fn peak_above(base: isize) -> usize {
        (PEAK.with(Cell::get) - base).max(0) as usize
    }
}

#[global_allocator]
static HEAP: heap::Counting = heap::Counting;

/// What one fuzz target saw: inputs tried, the slowest input and the largest heap peak.
#[derive(Default)]
struct Stats {
    inputs: usize,
    slowest: Duration,
    max_heap: usize,
    max_heap_input: usize,
}

/// Runs `parse` on mutations of `seed` for `time`; a panic, an input slower than
/// [`MAX_SECS_PER_INPUT`] or a heap peak above [`heap_bound`] is a failure, saved to
/// `target/fuzz-crashes/`.
fn fuzz(
    name: &str,
    seed: &[u8],
    focus: usize,
    time: Duration,
    parse: &dyn Fn(&[u8]),
    failures: &mut Vec<String>,
) -> Stats {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    let start = Instant::now();
    let mut st = Stats::default();
    while start.elapsed() < time {
        let input = mutate(seed, focus, &mut rng);
        st.inputs += 1;
        let base = heap::reset_peak();
        let t = Instant::now();
        let panicked = catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err();
        let took = t.elapsed();
        let peak = heap::peak_above(base);
        st.slowest = st.slowest.max(took);
        if peak > st.max_heap {
            (st.max_heap, st.max_heap_input) = (peak, input.len());
        }
        let problem = if panicked {
            Some("panicked".to_string())
        } else if took.as_secs_f64() > MAX_SECS_PER_INPUT {
            Some(format!("took {:.1} s", took.as_secs_f64()))
        } else if peak > heap_bound(input.len()) {
            Some(format!("held {} MiB of heap", peak >> 20))
        } else {
            None
        };
        if let Some(problem) = problem {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}-{}.bin", st.inputs));
            std::fs::write(&path, &input).unwrap();
            failures.push(format!(
                "{name}: input {} {problem}, saved to {}",
                st.inputs,
                path.display()
            ));
            if failures.len() > 20 {
                break;
            }
        }
    }
    eprintln!(
        "fuzz {name}: {} inputs in {:.1} s, slowest {:.1} ms, largest heap peak {:.1} MiB \
         (input {} KiB)",
        st.inputs,
        start.elapsed().as_secs_f64(),
        st.slowest.as_secs_f64() * 1e3,
        st.max_heap as f64 / (1 << 20) as f64,
        st.max_heap_input >> 10
    );
    st
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("compresskv-fuzz-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A LongBench jsonl seed: the first record of a few datasets (Chinese, code, a label set),
/// their contexts cut to 400 characters so mutations reach the structure.
fn longbench_seed(data: &Path) -> Vec<u8> {
    let mut out = String::new();
    for ds in ["trec", "hotpotqa", "dureader", "lcc"] {
        let text = std::fs::read_to_string(data.join(format!("{ds}.jsonl"))).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let ctx: String = v["context"].as_str().unwrap().chars().take(400).collect();
        v["context"] = ctx.into();
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

#[test]
fn parsers_never_panic_on_mutated_files() {
    let Some(shared) = shared_dir() else { return };
    // Panics are expected to be caught here; keep the default hook from flooding the log.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let tiny = shared.join("reference/tiny/tiny-llama");
    let time = budget();

    // RON profile.
    if selected("profile-ron") {
        let profile = include_bytes!("../../profiles/google--gemma-3-270m.ron");
        fuzz(
            "profile-ron",
            profile,
            profile.len(),
            time,
            &|b| {
                let _ = compresskv_runtime::profile::Profile::from_ron_str(
                    &String::from_utf8_lossy(b),
                    "fuzz",
                );
            },
            &mut failures,
        );
    }

    // The JSONL and JSON readers of the evaluations: needles, LongBench records (+ the prompt
    // they build) and LongBench's config (+ every template it holds, formatted).
    if selected("jsonl") {
        use compresskv_runtime::eval::longbench::{LongBenchConfig, parse_samples};
        let needles = include_bytes!("../../calibration-data/needles.jsonl");
        fuzz(
            "needles-jsonl",
            needles,
            needles.len(),
            time / 3,
            &|b| {
                let _ = compresskv_runtime::eval::niah::parse_needles(
                    &String::from_utf8_lossy(b),
                    "fuzz",
                );
            },
            &mut failures,
        );
        let cfg_dir = shared.join("datasets/longbench-thudm/LongBench/config");
        let prompts = std::fs::read_to_string(cfg_dir.join("dataset2prompt.json")).unwrap();
        let maxlen = std::fs::read_to_string(cfg_dir.join("dataset2maxlen.json")).unwrap();
        let config = LongBenchConfig::from_json(&prompts, &maxlen, &cfg_dir).unwrap();
        let seed = longbench_seed(&shared.join("datasets/longbench-v1-minilongbench/data"));
        fuzz(
            "longbench-jsonl",
            &seed,
            seed.len(),
            time / 3,
            &|b| {
                if let Ok(samples) = parse_samples(&String::from_utf8_lossy(b), Path::new("f")) {
                    for s in &samples {
                        let _ = config.build_prompt(s);
                    }
                }
            },
            &mut failures,
        );
        let samples = parse_samples(&String::from_utf8_lossy(&seed), Path::new("seed")).unwrap();
        fuzz(
            "longbench-config",
            prompts.as_bytes(),
            prompts.len(),
            time / 3,
            &|b| {
                let text = String::from_utf8_lossy(b);
                if let Ok(c) = LongBenchConfig::from_json(&text, &maxlen, Path::new("f")) {
                    for s in &samples {
                        let _ = c.build_prompt(s);
                        let _ = c.max_new_tokens(&s.dataset);
                    }
                }
            },
            &mut failures,
        );
    }

    // config.json → model spec (each tiny family's config; they share the parser's time).
    if selected("config") {
        let families = [
            "tiny-llama",
            "tiny-gemma3",
            "tiny-qwen2",
            "tiny-qwen3",
            "tiny-mistral",
        ];
        for fam in families {
            let cfg =
                std::fs::read(shared.join("reference/tiny").join(fam).join("config.json")).unwrap();
            fuzz(
                &format!("config-{fam}"),
                &cfg,
                cfg.len(),
                time / families.len() as u32,
                &|b| {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) {
                        let _ = spec_from_hf_config(&v, None);
                    }
                },
                &mut failures,
            );
        }
    }

    // tokenizer.json (through the file loader, as the runtime reads it).
    if selected("tokenizer-json") {
        let tok = std::fs::read(tiny.join("tokenizer.json")).unwrap();
        let dir = scratch("tok");
        fuzz(
            "tokenizer-json",
            &tok,
            tok.len(),
            time,
            &|b| {
                let p = dir.join("tokenizer.json");
                std::fs::write(&p, b).unwrap();
                if let Ok(t) = TextTokenizer::from_hf_file(&p) {
                    let _ = t.encode("hello world", true).map(|ids| t.decode(&ids));
                }
            },
            &mut failures,
        );
    }

    // safetensors: mutate the header (8-byte length + JSON), then read every tensor.
    if selected("safetensors") {
        let st = std::fs::read(tiny.join("model.safetensors")).unwrap();
        let header_len = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        let dir = scratch("st");
        fuzz(
            "safetensors",
            &st,
            header_len,
            time,
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
    }

    // GGUF: the real model's metadata and tensor index (the data region cut off, so every
    // input also meets the tensor bounds checks).
    if selected("gguf") {
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
                time,
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
