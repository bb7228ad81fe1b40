//! `compresskv serve` on tiny models, on loopback port 0: the OpenAI endpoints, streaming,
//! sessions decoded among others equal to alone, seeds, admission against `--kv-mem`, client
//! disconnects, and wrong input.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::shared_dir;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tiny(name: &str) -> Option<String> {
    let dir = shared_dir()?.join("reference/tiny").join(name);
    Some(dir.to_str().unwrap().to_string())
}

/// Starts `compresskv serve --port 0 --json ARGS` and reads the address it listens on.
fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args(["serve", "--port", "0", "--json"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "listening", "{first}");
    let base = first["address"].as_str().unwrap().to_string();
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

impl Server {
    fn get(&self, path: &str) -> (u16, String) {
        let mut r = agent().get(format!("{}{path}", self.base)).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, String) {
        let mut req = agent()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let mut r = req.send(body).unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, b) = self.post_raw(path, &body.to_string(), None);
        (
            s,
            serde_json::from_str(&b).unwrap_or_else(|_| panic!("{b}")),
        )
    }

    /// A 200 response's JSON.
    fn ok(&self, path: &str, body: &Value) -> Value {
        let (s, v) = self.post(path, body);
        assert_eq!(s, 200, "{v}");
        v
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        while self.get("/health").0 != 200 {
            assert!(t.elapsed() < Duration::from_secs(120), "never ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("compresskv_{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in {text}"))
            .parse()
            .unwrap()
    }
}

/// The text a streamed completion assembled, and its last chunk.
fn assemble(chunks: &[String], chat: bool) -> (String, Value) {
    assert_eq!(
        chunks.last().map(String::as_str),
        Some("[DONE]"),
        "{chunks:?}"
    );
    let vals: Vec<Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    let text = vals
        .iter()
        .map(|v| {
            let c = &v["choices"][0];
            if chat {
                c["delta"]["content"].as_str().unwrap_or("").to_string()
            } else {
                c["text"].as_str().unwrap().to_string()
            }
        })
        .collect();
    (text, vals.last().unwrap().clone())
}

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}\
<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[test]
fn serve_openai_endpoints_streaming_and_wrong_input() {
    let Some(model) = tiny("tiny-llama") else {
        return; // shared_dir said why (and fails under CI=true)
    };
    let dir = std::env::temp_dir().join(format!("compresskv-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tpl = dir.join("chatml.jinja");
    std::fs::write(&tpl, CHATML).unwrap();
    let s = start(
        &[
            "--model",
            &model,
            "--method",
            "snapkv",
            "--budget",
            "16",
            "--chat-template-file",
            tpl.to_str().unwrap(),
            "--api-key",
            "sekret",
        ],
        &[("COMPRESSKV_SERVE_LOAD_DELAY_MS", "1500")],
    );
    // Loading: 503 in OpenAI's error shape; then 200.
    let (status, body) = s.get("/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("loading"), "{body}");
    s.wait_ready();
    assert_eq!(s.get("/health").1, r#"{"status":"ok"}"#);
    // The API key guards everything but /health.
    let (st, b) = s.post_raw("/v1/completions", r#"{"prompt":"a"}"#, None);
    assert_eq!(st, 401, "{b}");
    assert!(b.contains("authentication_error"), "{b}");
    let key = Some("sekret");
    let call = |path: &str, body: &Value| -> (u16, Value) {
        let (st, b) = s.post_raw(path, &body.to_string(), key);
        (
            st,
            serde_json::from_str(&b).unwrap_or_else(|_| panic!("{b}")),
        )
    };
    let models = agent()
        .get(format!("{}/v1/models", s.base))
        .header("Authorization", "Bearer sekret")
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(models.contains("\"object\":\"list\""), "{models}");

    // Non-streamed = streamed = `compresskv generate` with the same method and budget.
    let prompt = "Once upon a time there was a little model that kept only what mattered, and it";
    let req = json!({"prompt": prompt, "max_tokens": 12, "temperature": 0});
    let (st, full) = call("/v1/completions", &req);
    assert_eq!(st, 200, "{full}");
    assert_eq!(full["object"], "text_completion");
    assert_eq!(full["usage"]["completion_tokens"], 12);
    assert_eq!(full["choices"][0]["finish_reason"], "length");
    assert_eq!(full["kv_compression"]["method"], "snapkv");
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    let mut sreq = req.clone();
    sreq["stream"] = true.into();
    let (st, raw) = s.post_raw("/v1/completions", &sreq.to_string(), key);
    assert_eq!(st, 200, "{raw}");
    let chunks: Vec<String> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(String::from))
        .collect();
    let (streamed, last) = assemble(&chunks, false);
    assert_eq!(streamed, text);
    assert_eq!(last["usage"], full["usage"]);
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args([
            "generate",
            "--model",
            &model,
            "--prompt",
            prompt,
            "--max-new-tokens",
            "12",
        ])
        .args(["--method", "snapkv", "--budget", "16", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(g["text"].as_str().unwrap(), text);
    // Stop strings cut the text and end with "stop".
    let cut = &text[..text.len() / 2];
    let stop = cut
        .rsplit(' ')
        .next()
        .filter(|w| !w.is_empty())
        .unwrap_or("e");
    let mut r = req.clone();
    r["stop"] = json!([stop]);
    let (_, v) = call("/v1/completions", &r);
    let t = v["choices"][0]["text"].as_str().unwrap();
    assert!(
        !t.contains(stop) && text.starts_with(t),
        "{t:?} vs {text:?}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Chat through the template, streamed: the role comes first, then the content.
    let msgs = json!([{"role": "user", "content": "Hello there"}]);
    let (st, c) = call(
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    let (st, raw) = s.post_raw(
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 5, "temperature": 0, "stream": true}).to_string(),
        key,
    );
    assert_eq!(st, 200);
    let chunks: Vec<String> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(String::from))
        .collect();
    let first: Value = serde_json::from_str(&chunks[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["object"], "chat.completion.chunk");
    let (chat_text, _) = assemble(&chunks, true);
    assert_eq!(
        chat_text,
        c["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Wrong input: 400s in OpenAI's shape, never a dropped connection.
    for (path, body, needle) in [
        ("/v1/completions", "{not json", "invalid request body"),
        ("/v1/chat/completions", r#"{"max_tokens": 2}"#, "messages"),
        ("/v1/chat/completions", r#"{"messages": []}"#, "non-empty"),
        ("/v1/completions", r#"{"prompt": "a", "n": 2}"#, "n = 1"),
        (
            "/v1/completions",
            r#"{"prompt": "a", "max_tokens": 0}"#,
            "max_tokens",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "temperature": 9}"#,
            "temperature",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "kv_compression": {"method": "bogus", "budget": 8}}"#,
            "bogus",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "kv_compression": {"budgt": 8}}"#,
            "budgt",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "max_tokens": 100000}"#,
            "context size",
        ),
        (
            "/v1/completions",
            r#"{"prompt": [1, 99999999]}"#,
            "outside the vocabulary",
        ),
    ] {
        let (st, b) = s.post_raw(path, body, key);
        assert_eq!(st, 400, "{body}: {b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{b}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {b}"
        );
    }
    let (st, _) = s.post_raw("/v1/nope", "{}", key);
    assert_eq!(st, 404);
    let (st, t) = call("/tokenize", &json!({"content": "hello world"}));
    assert_eq!(st, 200);
    assert!(!t["tokens"].as_array().unwrap().is_empty(), "{t}");
    drop(s);

    // Wrong flags fail before anything listens; human mode says where it listens.
    for (args, needle) in [
        (vec!["--parallel", "0"], "--parallel"),
        (vec!["--kv-mem", "0"], "--kv-mem"),
        (vec!["--method", "bogus"], "bogus"),
        (
            vec!["--chat-template-file", "/nonexistent/t.jinja"],
            "chat-template-file",
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
            .args(["serve", "--model", &model, "--port", "0"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args(["serve", "--model", "nosuch/model", "--port", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("unknown model id"),
        "{err}"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args([
            "serve", "--model", &model, "--port", "0", "--method", "full",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serve_q8_0_sessions_decoded_together_equal_alone() {
    // Integer weights (`--weights q8_0`): on an AVX-512 VNNI CPU the packed kernels, with up
    // to 8 sessions per step; elsewhere the AVX2/scalar integer kernels, 4 per pass. Either
    // way each session's tokens must be the ones it gets alone.
    let Some(model) = tiny("tiny-qwen2") else {
        return; // shared_dir said why (and fails under CI=true)
    };
    let s = start(
        &[
            "--model",
            &model,
            "--weights",
            "q8_0",
            "--method",
            "snapkv",
            "--budget",
            "16",
            "--parallel",
            "8",
        ],
        // A pause after every step, so the eight requests overlap.
        &[("COMPRESSKV_SERVE_STEP_DELAY_MS", "2")],
    );
    s.wait_ready();
    let words = "the quick brown fox jumps over the lazy dog and keeps running far away ";
    let reqs: Vec<Value> = [
        (3, "full", None, 24),
        (9, "snapkv", Some(16), 19),
        (6, "streamingllm", Some(24), 22),
        (12, "adakv", Some(20), 16),
        (8, "pyramidkv", Some(16), 21),
        (5, "snapkv", Some(12), 18),
        (2, "full", None, 23),
        (10, "snapkv", Some(24), 20),
    ]
    .iter()
    .map(|&(reps, method, budget, max)| {
        json!({"prompt": words.repeat(reps), "max_tokens": max,
            "kv_compression": {"method": method, "budget": budget}, "temperature": 0})
    })
    .collect();
    let text = |v: Value| v["choices"][0]["text"].as_str().unwrap().to_string();
    let alone: Vec<String> = reqs
        .iter()
        .map(|r| text(s.ok("/v1/completions", r)))
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (together, most): (Vec<String>, f64) = std::thread::scope(|sc| {
        let s = &s;
        let done = &done;
        let watch = sc.spawn(move || {
            let mut most = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(s.metric("sessions_active"));
                std::thread::sleep(Duration::from_millis(1));
            }
            most
        });
        let hs: Vec<_> = reqs
            .iter()
            .map(|r| sc.spawn(move || text(s.ok("/v1/completions", r))))
            .collect();
        let texts = hs.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (texts, watch.join().unwrap())
    });
    assert!(most >= 5.0, "only {most} sessions ran at once");
    assert_eq!(together, alone);
}

#[test]
fn serve_sessions_decoded_together_equal_alone() {
    let Some(model) = tiny("tiny-qwen2") else {
        return; // shared_dir said why (and fails under CI=true)
    };
    let s = start(
        &[
            "--model",
            &model,
            "--method",
            "snapkv",
            "--budget",
            "16",
            "--parallel",
            "3",
        ],
        &[],
    );
    s.wait_ready();
    let words = "the quick brown fox jumps over the lazy dog and keeps running far away ";
    let reqs: Vec<Value> = [
        (4, "full", None, 20, None),
        (9, "snapkv", Some(16), 14, None),
        (6, "streamingllm", Some(24), 17, None),
        (12, "adakv", Some(20), 11, Some(7)),
        (8, "pyramidkv", Some(16), 9, None),
        // ~1.7K tokens: prefilled in two pieces between the others' decode steps.
        (120, "snapkv", Some(32), 12, None),
    ]
    .iter()
    .map(|&(reps, method, budget, max, seed)| {
        let mut r = json!({"prompt": words.repeat(reps), "max_tokens": max,
            "kv_compression": {"method": method, "budget": budget}, "temperature": 0});
        if let Some(seed) = seed {
            r["temperature"] = 0.9.into();
            r["seed"] = seed.into();
        }
        r
    })
    .collect();
    let alone: Vec<String> = reqs
        .iter()
        .map(|r| {
            s.ok("/v1/completions", r)["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // The piecewise prefill computes what one offline prefill does.
    let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args(["generate", "--model", &model, "--max-new-tokens", "12"])
        .args(["--method", "snapkv", "--budget", "32", "--json", "--prompt"])
        .arg(words.repeat(120))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        g["prompt_tokens"].as_u64().unwrap() > 1024,
        "{}",
        g["prompt_tokens"]
    );
    assert_eq!(g["text"].as_str().unwrap(), alone[5]);
    // Decoded together (3 slots, the rest queued), several rounds.
    for _ in 0..2 {
        let together: Vec<String> = std::thread::scope(|sc| {
            let hs: Vec<_> = reqs
                .iter()
                .map(|r| {
                    let s = &s;
                    sc.spawn(move || {
                        s.ok("/v1/completions", r)["choices"][0]["text"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(together, alone);
    }
    let t = Instant::now();
    while s.metric("sessions_active") != 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sessions never retired"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.metric("kv_cache_bytes"), 0.0);
    drop(s);
    // The same seed gives the same sample with one slot.
    let one = start(
        &[
            "--model",
            &model,
            "--method",
            "snapkv",
            "--budget",
            "16",
            "--parallel",
            "1",
        ],
        &[],
    );
    one.wait_ready();
    let t = one.ok("/v1/completions", &reqs[3])["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t, alone[3]);
}

#[test]
fn serve_admission_queue_and_disconnect() {
    let Some(model) = tiny("tiny-llama") else {
        return; // shared_dir said why (and fails under CI=true)
    };
    // tiny-llama on the CPU kernels: 3 layers × (K+V) × 2 KV heads × 16 dims × f16 = 384 bytes
    // per token. A (3000 tokens, ~1.16 MB reserved) fits in 1.3 MB; B (700 tokens, ~0.27 MB)
    // does not fit beside it, so it waits; C finds the queue (1) full. A 2 ms pause per step
    // (a test hook) keeps A running for seconds whatever the machine's speed, and
    // `ignore_eos` keeps the random model from ending it early.
    let kv_mem_gib = format!("{:.9}", 1.3e6 / (1u64 << 30) as f64);
    let s = start(
        &[
            "--model",
            &model,
            "--method",
            "snapkv",
            "--budget",
            "16",
            "--parallel",
            "4",
            "--queue",
            "1",
            "--kv-mem",
            &kv_mem_gib,
        ],
        &[("COMPRESSKV_SERVE_STEP_DELAY_MS", "2")],
    );
    s.wait_ready();
    let limit = s.metric("kv_mem_bytes");
    let prompt = "one two three four five six seven eight nine ten";
    let a_body = json!({"prompt": prompt, "max_tokens": 3000, "temperature": 0,
        "stream": true, "ignore_eos": true});
    // A runs (streamed; we read one chunk and keep the connection), B waits, C is refused.
    let mut a = agent()
        .post(format!("{}/v1/completions", s.base))
        .header("Content-Type", "application/json")
        .send(a_body.to_string())
        .unwrap();
    let mut reader = a.body_mut().as_reader();
    let mut buf = [0u8; 64];
    assert!(reader.read(&mut buf).unwrap() > 0);
    let b = std::thread::spawn({
        let base = s.base.clone();
        let body = json!({"prompt": prompt, "max_tokens": 700, "temperature": 0,
            "ignore_eos": true});
        move || {
            let mut r = agent()
                .post(format!("{base}/v1/completions"))
                .header("Content-Type", "application/json")
                .send(body.to_string())
                .unwrap();
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
        }
    });
    let t = Instant::now();
    while s.metric("requests_queued") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(30), "B never queued");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (st, c) = s.post(
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 700}),
    );
    assert_eq!(st, 503, "{c}");
    assert_eq!(c["error"]["type"], "unavailable_error");
    // Too large ever to fit: 400 at once, saying what to change.
    let (st, big) = s.post(
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 4000}),
    );
    assert_eq!(st, 400, "{big}");
    assert!(
        big["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--kv-mem"),
        "{big}"
    );
    let (_, slots) = s.get("/slots");
    let slots: Value = serde_json::from_str(&slots).unwrap();
    assert_eq!(slots["slots"].as_array().unwrap().len(), 1, "{slots}");
    assert_eq!(slots["queued"], 1);
    assert!(s.metric("kv_cache_bytes_reserved") <= limit);
    // A's client leaves: its session is freed, and B runs to the end.
    drop(reader);
    drop(a);
    let (st, body) = b.join().unwrap();
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 700);
    assert!(s.metric("requests_cancelled_total") >= 1.0);
    // The engine publishes its state right after the step that ended B.
    let t = Instant::now();
    while s.metric("sessions_active") != 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "B's session never retired"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.metric("kv_cache_bytes"), 0.0);
    assert_eq!(s.metric("requests_rejected_total"), 2.0);
}

/// `eval niah --server`: the same prompts answered through the server equal the offline
/// answers (greedy, same methods and budgets), in human and `--json` mode; an unreachable
/// server and another model's server are clear errors.
#[test]
fn eval_niah_through_the_server_equals_offline() {
    let Some(model) = tiny("tiny-llama") else {
        return; // shared_dir said why (and fails under CI=true)
    };
    let s = start(
        &["--model", &model, "--method", "snapkv", "--budget", "64"],
        &[],
    );
    s.wait_ready();
    let dir = std::env::temp_dir().join(format!("compresskv-niah-srv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let eval = |out: &str, extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
            .args([
                "eval",
                "niah",
                "--model",
                &model,
                "--methods",
                "full,snapkv",
            ])
            .args([
                "--budgets",
                "64",
                "--lengths",
                "256,512",
                "--depths",
                "0,50",
            ])
            .args(["--haystack", "noise", "--out"])
            .arg(dir.join(out))
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let answers = |out: &str| -> Vec<(String, usize, String)> {
        let text = std::fs::read_to_string(dir.join(out).join("niah-needle.jsonl")).unwrap();
        let mut v: Vec<_> = text
            .lines()
            .map(|l| {
                let r: Value = serde_json::from_str(l).unwrap();
                (
                    format!("{} {} {}", r["method"], r["length"], r["depth"]),
                    r["prompt_tokens"].as_u64().unwrap() as usize,
                    r["answer"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (ok, stdout, stderr) = eval("offline", &["--json"]);
    assert!(ok, "{stderr}");
    let offline: Value = serde_json::from_str(&stdout).unwrap();
    let (ok, stdout, stderr) = eval("served", &["--server", &s.base, "--json"]);
    assert!(ok, "{stderr}");
    let served: Value = serde_json::from_str(&stdout).unwrap();
    let (a, b) = (answers("offline"), answers("served"));
    assert_eq!(a.len(), 8);
    assert_eq!(a, b, "served answers differ from offline ones");
    let scores = |v: &Value| -> Vec<(String, f64)> {
        v["summary"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["method"].to_string(), r["mean_score"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(scores(&offline), scores(&served));
    // Human mode prints the same table; rows already there are not asked again.
    let (ok, stdout, stderr) = eval("served", &["--server", &s.base]);
    assert!(ok && stdout.contains("snapkv"), "{stdout}{stderr}");

    let (ok, _, stderr) = eval("x", &["--server", "http://127.0.0.1:9"]);
    assert!(!ok && stderr.contains("cannot reach"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (ok, stdout, stderr) = eval("x", &["--server", "127.0.0.1:9", "--json"]);
    assert!(
        !ok && stderr.contains("base URL") && stdout.is_empty(),
        "{stderr}"
    );
    let Some(other) = tiny("tiny-qwen2") else {
        return;
    };
    let o = Command::new(env!("CARGO_BIN_EXE_compresskv"))
        .args(["eval", "niah", "--model", &other, "--server", &s.base])
        .args(["--lengths", "256", "--haystack", "noise", "--out"])
        .arg(dir.join("y"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("serves"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
