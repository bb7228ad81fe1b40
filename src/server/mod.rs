//! `compresskv serve`: an OpenAI-compatible HTTP server over the compressed-cache runtime.
//!
//! The HTTP side (axum on tokio) parses, renders chat templates and streams; one engine thread
//! ([`engine`]) owns the model, steps every session and admits requests against `--kv-mem`.

pub mod api;
pub mod engine;
pub mod template;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use compresskv_runtime::loader::LoadedModel;
use serde_json::{Value, json};
use tokio::sync::{mpsc::UnboundedReceiver, mpsc::unbounded_channel, oneshot};

use api::{ApiError, ChatRequest, CommonParams, CompletionRequest, Head, Kind, Outcome, Prompt};
use engine::{Cmd, Compression, CompressorFactory, Event, Job, Limits, Sampling, Shared};
use template::ChatTemplate;

/// Everything `serve` is started with (what depends on the model comes with [`Loaded`]).
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub parallel: usize,
    pub kv_mem_bytes: usize,
    pub queue: usize,
    /// `max_tokens` when a request does not say.
    pub default_max_tokens: usize,
    pub api_key: Option<String>,
    /// A template file replacing the model's.
    pub chat_template: Option<String>,
    /// One JSON line per server event on stdout (instead of text).
    pub json: bool,
}

/// The model and what is resolved with it.
pub struct Loaded {
    pub loaded: LoadedModel,
    pub factory: CompressorFactory,
    /// Where the default method's profile came from.
    pub profile: Option<String>,
    pub ctx_size: usize,
    /// Compression when a request does not say (`--budget auto` resolved).
    pub compression: Compression,
}

/// Loads the model (on the engine thread, so the server answers meanwhile).
pub type Loader = Box<dyn FnOnce() -> anyhow::Result<Loaded> + Send>;

struct AppState {
    tx: Mutex<mpsc::Sender<Cmd>>,
    shared: Arc<Mutex<Shared>>,
    config: ServerConfig,
    template: Mutex<Option<Arc<ChatTemplate>>>,
    counter: AtomicU64,
}

type AppStateRef = Arc<AppState>;

/// Binds, reports the address, serves HTTP on tokio's threads, and loads the model and runs
/// the engine on the calling thread (`/health` says 503 until the model is ready) until the
/// process is stopped. The calling thread must be the one `main` made a worker of rayon's pool
/// ([`compresskv_runtime::kernels::join_thread_pool`]): the kernels then use every core, where
/// another thread's calls would leave the blocked main thread's share idle (measured: time to
/// first token 1.9x the offline prefill with the engine on a thread of its own).
pub fn run(config: ServerConfig, loader: Loader) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = format!("{}:{}", config.host, config.port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr}: {e} (pick another --port, or 0 for any free one)"
            )
        })?;
    let local: SocketAddr = listener.local_addr()?;
    say(
        config.json,
        json!({"event": "listening", "address": format!("http://{local}")}),
        &format!("compresskv serve: listening on http://{local} (loading the model…)"),
    );
    let (tx, rx) = mpsc::channel::<Cmd>();
    let state = Arc::new(AppState {
        tx: Mutex::new(tx),
        shared: Arc::new(Mutex::new(Shared::default())),
        template: Mutex::new(None),
        counter: AtomicU64::new(0),
        config,
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/props", get(props))
        .route("/slots", get(slots))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .fallback(|| async { ApiError::new(404, "no such endpoint") })
        .with_state(state.clone());
    rt.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("error: the HTTP server stopped: {e}");
            std::process::exit(1);
        }
    });
    run_engine(state, loader, rx);
    Ok(())
}

fn say(json: bool, v: Value, text: &str) {
    if json {
        println!("{v}");
    } else {
        println!("{text}");
    }
}

/// Loads the model, then runs the engine (on the calling thread; see [`run`]).
fn run_engine(state: AppStateRef, loader: Loader, rx: mpsc::Receiver<Cmd>) {
    // Test hook: hold the load so a test sees `/health` answer 503 first.
    if let Some(ms) = std::env::var("COMPRESSKV_SERVE_LOAD_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let l = match loader() {
        Ok(v) => v,
        Err(e) => {
            // Nothing can be served: say why and stop, as llama-server does.
            eprintln!("error: loading the model failed: {e:#}");
            std::process::exit(1);
        }
    };
    let cfg = &state.config;
    let loaded = &l.loaded;
    let template = cfg.chat_template.clone().or(loaded.chat_template.clone());
    let text_of = |id: Option<u32>| id.and_then(|i| loaded.tokenizer.token_text(i));
    let bos = text_of(loaded.spec.bos_token_id).unwrap_or_default();
    let eos = text_of(loaded.spec.eos_token_ids.first().copied()).unwrap_or_default();
    if let Some(t) = template {
        match ChatTemplate::new(t, bos, eos) {
            Ok(t) => *state.template.lock().unwrap() = Some(Arc::new(t)),
            Err(e) => eprintln!("warning: {e}; /v1/chat/completions is unavailable"),
        }
    }
    let limits = Limits {
        parallel: cfg.parallel,
        kv_mem_bytes: cfg.kv_mem_bytes,
        queue: cfg.queue,
        ctx_size: l.ctx_size,
    };
    report_capacity(cfg, &l, &limits);
    {
        let mut sh = state.shared.lock().unwrap();
        sh.model_id = loaded.id.clone();
        sh.profile = l.profile.clone();
        sh.settings = Some((limits, l.compression.clone()));
    }
    engine::Engine::new(l.loaded, l.factory, limits, state.shared.clone()).run(rx);
}

/// How many sessions of the full context (a prompt of `ctx − --max-tokens` tokens and a
/// `--max-tokens` answer) the admission rule lets run at once in `--kv-mem`, with the full cache
/// and with the default compression.
fn report_capacity(cfg: &ServerConfig, l: &Loaded, limits: &Limits) {
    let kv = engine::KvSizing::new(&l.loaded);
    let (ctx, mem, max) = (limits.ctx_size, limits.kv_mem_bytes, cfg.default_max_tokens);
    let prompt = ctx.saturating_sub(max).max(1);
    let full = kv.steady(prompt, None, max);
    let compressed = kv.steady(prompt, l.compression.budget, max);
    let n_full = kv.sessions_that_fit(mem, prompt, None, max);
    let n_comp = kv.sessions_that_fit(mem, prompt, l.compression.budget, max);
    let label = l.compression.label();
    let id = &l.loaded.id;
    let profile = &l.profile;
    say(
        cfg.json,
        json!({"event": "ready", "model": id, "profile": profile, "ctx_size": ctx,
            "kv_mem_bytes": mem, "parallel": limits.parallel, "prompt_tokens": prompt,
            "max_tokens": max, "session_kv_bytes_full": full,
            "session_kv_bytes_compressed": compressed, "sessions_full": n_full,
            "sessions_compressed": n_comp, "compression": label}),
        &format!(
            "ready: {id} ({}); sessions of {prompt} + {max} tokens that fit in --kv-mem {:.2} GiB: \
             {n_full} with the full cache ({:.1} MiB each), {n_comp} with {label} ({:.1} MiB \
             each); --parallel {} runs at most that many at once",
            profile.as_deref().unwrap_or("no profile"),
            mem as f64 / (1u64 << 30) as f64,
            full as f64 / 1048576.0,
            compressed as f64 / 1048576.0,
            limits.parallel
        ),
    );
}

fn check_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.config.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError::new(
            401,
            "missing or wrong API key: send `Authorization: Bearer <key>` with the server's --api-key",
        ))
    }
}

/// The model's limits and default compression once it is loaded; 503 before.
fn ready(state: &AppState) -> Result<(Limits, Compression), ApiError> {
    let sh = state.shared.lock().unwrap();
    sh.settings
        .clone()
        .ok_or_else(|| ApiError::new(503, "the model is loading"))
}

async fn health(State(state): State<AppStateRef>) -> Response {
    match ready(&state) {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn models(
    State(state): State<AppStateRef>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_key(&state, &headers)?;
    ready(&state)?;
    let sh = state.shared.lock().unwrap();
    Ok(Json(json!({"object": "list", "data": [{
        "id": sh.model_id, "object": "model", "created": 0, "owned_by": "compresskv",
        "profile": sh.profile,
    }]}))
    .into_response())
}

async fn props(State(state): State<AppStateRef>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_key(&state, &headers)?;
    let (limits, compression) = ready(&state)?;
    let has_template = state.template.lock().unwrap().is_some();
    let sh = state.shared.lock().unwrap();
    let c = &state.config;
    Ok(Json(json!({
        "model": sh.model_id, "profile": sh.profile, "ctx_size": limits.ctx_size,
        "parallel": limits.parallel, "kv_mem_bytes": limits.kv_mem_bytes,
        "queue": limits.queue, "default_compression": compression,
        "default_max_tokens": c.default_max_tokens, "chat_template": has_template,
    }))
    .into_response())
}

async fn slots(State(state): State<AppStateRef>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_key(&state, &headers)?;
    ready(&state)?;
    let sh = state.shared.lock().unwrap();
    Ok(Json(json!({"slots": sh.slots, "queued": sh.queued})).into_response())
}

async fn metrics(
    State(state): State<AppStateRef>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_key(&state, &headers)?;
    let sh = state.shared.lock().unwrap();
    let rows: [(&str, &str, &str, f64); 11] = [
        (
            "kv_cache_bytes",
            "gauge",
            "KV cache bytes the running sessions hold",
            sh.kv_bytes_used as f64,
        ),
        (
            "kv_cache_bytes_reserved",
            "gauge",
            "KV cache bytes reserved for the running sessions (held plus what their remaining tokens may add)",
            sh.kv_bytes_reserved as f64,
        ),
        (
            "kv_mem_bytes",
            "gauge",
            "The --kv-mem budget",
            state.config.kv_mem_bytes as f64,
        ),
        (
            "sessions_active",
            "gauge",
            "Sessions decoding",
            sh.slots.len() as f64,
        ),
        (
            "requests_queued",
            "gauge",
            "Requests waiting for memory or a slot",
            sh.queued as f64,
        ),
        (
            "requests_total",
            "counter",
            "Requests submitted",
            sh.requests_total as f64,
        ),
        (
            "requests_rejected_total",
            "counter",
            "Requests refused (queue full, too long)",
            sh.requests_rejected as f64,
        ),
        (
            "requests_cancelled_total",
            "counter",
            "Requests whose client went away before the end",
            sh.requests_cancelled as f64,
        ),
        (
            "prompt_tokens_total",
            "counter",
            "Prompt tokens prefilled",
            sh.prompt_tokens_total as f64,
        ),
        (
            "completion_tokens_total",
            "counter",
            "Tokens generated by finished requests",
            sh.completion_tokens_total as f64,
        ),
        (
            "ready",
            "gauge",
            "1 once the model is loaded",
            f64::from(u8::from(sh.settings.is_some())),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, v) in rows {
        out.push_str(&format!(
            "# HELP compresskv_{name} {help}.\n# TYPE compresskv_{name} {kind}\ncompresskv_{name} {v}\n"
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// Sends a command to the engine.
fn send(state: &AppState, cmd: Cmd) -> Result<(), ApiError> {
    state
        .tx
        .lock()
        .unwrap()
        .send(cmd)
        .map_err(|_| ApiError::new(500, "the engine stopped; restart the server"))
}

async fn tokenize_text(state: &AppState, text: String, chat: bool) -> Result<Vec<u32>, ApiError> {
    let (reply, rx) = oneshot::channel();
    send(state, Cmd::Tokenize { text, chat, reply })?;
    rx.await
        .map_err(|_| ApiError::new(500, "the engine stopped; restart the server"))?
        .map_err(|e| ApiError::bad_request(format!("tokenizing failed: {e}")))
}

async fn tokenize(
    State(state): State<AppStateRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_key(&state, &headers)?;
    ready(&state)?;
    let r: api::TokenizeRequest = api::parse(&body)?;
    let ids = tokenize_text(&state, r.content, !r.add_special).await?;
    Ok(Json(json!({"tokens": ids})).into_response())
}

async fn completions(
    State(state): State<AppStateRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_key(&state, &headers)?;
    ready(&state)?;
    let r: CompletionRequest = api::parse(&body)?;
    let ids = match r.prompt {
        Prompt::Text(t) => tokenize_text(&state, t, false).await?,
        Prompt::Texts(mut v) if v.len() == 1 => tokenize_text(&state, v.remove(0), false).await?,
        Prompt::Texts(_) => {
            return Err(ApiError::bad_request(
                "one prompt per request: send the prompts of a batch as separate requests (they \
                 run concurrently)",
            ));
        }
        Prompt::Ids(ids) => ids,
    };
    respond(state, ids, r.common, Kind::Completion).await
}

async fn chat(
    State(state): State<AppStateRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_key(&state, &headers)?;
    ready(&state)?;
    let r: ChatRequest = api::parse(&body)?;
    if r.messages.as_array().is_none_or(|m| m.is_empty()) {
        return Err(ApiError::bad_request("`messages` must be a non-empty list"));
    }
    let template = state.template.lock().unwrap().clone().ok_or_else(|| {
        ApiError::bad_request(
            "this model has no chat template: start the server with --chat-template-file, or use \
             /v1/completions",
        )
    })?;
    let text = template
        .render(&r.messages, true)
        .map_err(ApiError::bad_request)?;
    let ids = tokenize_text(&state, text, true).await?;
    respond(state, ids, r.common, Kind::Chat).await
}

/// Validates the sampling fields against the server's defaults.
fn sampling(
    c: &CommonParams,
    state: &AppState,
    d: &Compression,
) -> Result<(Sampling, Compression), ApiError> {
    if c.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only n = 1 is supported"));
    }
    let max_tokens = c
        .max_completion_tokens
        .or(c.max_tokens)
        .unwrap_or(state.config.default_max_tokens);
    if max_tokens == 0 {
        return Err(ApiError::bad_request("max_tokens must be at least 1"));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::bad_request("temperature must be in [0, 2]"));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request("top_p must be in (0, 1]"));
    }
    let compression = match &c.kv_compression {
        None => d.clone(),
        Some(k) => {
            let method = k.method.clone().unwrap_or_else(|| d.method.clone());
            let budget = if method == "full" {
                None
            } else {
                match k.budget.or(d.budget) {
                    Some(0) => {
                        return Err(ApiError::bad_request(
                            "kv_compression.budget must be at least 1",
                        ));
                    }
                    Some(b) => Some(b),
                    None => {
                        return Err(ApiError::bad_request(format!(
                            "kv_compression: method {method} needs a budget (mean KV entries kept per \
                         compressed layer)"
                        )));
                    }
                }
            };
            Compression { method, budget }
        }
    };
    let seed = c.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let stop = c
        .stop
        .clone()
        .map_or_else(Vec::new, api::OneOrMany::into_vec);
    Ok((
        Sampling {
            ignore_eos: c.ignore_eos,
            max_tokens,
            temperature,
            top_p,
            seed,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        },
        compression,
    ))
}

/// Submits the request and answers it: one JSON body, or an SSE stream ending in `[DONE]`.
async fn respond(
    state: AppStateRef,
    prompt_ids: Vec<u32>,
    common: CommonParams,
    kind: Kind,
) -> Result<Response, ApiError> {
    if prompt_ids.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty"));
    }
    let (_, default) = ready(&state)?;
    let (sampling, compression) = sampling(&common, &state, &default)?;
    let (events, mut rx) = unbounded_channel();
    send(
        &state,
        Cmd::Submit(Job {
            prompt_ids,
            sampling,
            compression: compression.clone(),
            events,
        }),
    )?;
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let id = match kind {
        Kind::Completion => format!("cmpl-{n}"),
        Kind::Chat => format!("chatcmpl-{n}"),
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let model = common
        .model
        .unwrap_or_else(|| state.shared.lock().unwrap().model_id.clone());
    // The first event says whether the request runs at all (an error is a plain JSON error).
    let first = rx
        .recv()
        .await
        .ok_or_else(|| ApiError::new(500, "the engine dropped the request"))?;
    if let Event::Error { status, message } = first {
        return Err(ApiError::new(status, message));
    }
    if !common.stream {
        let mut o = Outcome::default();
        o.absorb(first)?;
        while o.finish.is_none() {
            match rx.recv().await {
                Some(e) => o.absorb(e)?,
                None => return Err(ApiError::new(500, "the engine dropped the request")),
            }
        }
        let head = Head {
            id: &id,
            created,
            model: &model,
            kind,
        };
        return Ok(Json(head.full(&o, &compression)).into_response());
    }
    let stream = sse_stream(StreamState {
        rx,
        pending: Some(first),
        id,
        created,
        model,
        kind,
        first: true,
        phase: Phase::Events,
        compression,
    });
    Ok(Sse::new(stream).into_response())
}

struct StreamState {
    rx: UnboundedReceiver<Event>,
    pending: Option<Event>,
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    first: bool,
    phase: Phase,
    compression: Compression,
}

/// Where a stream is: relaying events, owing the closing `[DONE]`, or over.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Events,
    Done,
    End,
}

/// The SSE events of a request: one chunk per delta, a last chunk with `finish_reason`,
/// `usage` and `kv_compression`, then `[DONE]`. Dropping it (the client left) drops the
/// receiver, which the engine sees and frees the session.
fn sse_stream(
    st: StreamState,
) -> impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    futures_util::stream::unfold(st, |mut st| async move {
        match st.phase {
            Phase::End => return None,
            Phase::Done => {
                st.phase = Phase::End;
                return Some((Ok(SseEvent::default().data("[DONE]")), st));
            }
            Phase::Events => {}
        }
        let ev = match st.pending.take() {
            Some(e) => Some(e),
            None => st.rx.recv().await,
        };
        let head = Head {
            id: &st.id,
            created: st.created,
            model: &st.model,
            kind: st.kind,
        };
        let data = match ev {
            Some(Event::Delta(t)) => {
                let v = head.chunk(Some(&t), None, st.first);
                st.first = false;
                v
            }
            Some(done @ Event::Done { .. }) => {
                let mut o = Outcome::default();
                o.absorb(done).expect("done is not an error");
                let mut v = head.chunk(None, o.finish, st.first);
                v["usage"] = o.usage();
                v["kv_compression"] = o.kv(&st.compression);
                st.phase = Phase::Done;
                v
            }
            Some(Event::Error { status, message }) => {
                st.phase = Phase::Done;
                json!({"error": {"message": message, "code": status}})
            }
            None => {
                st.phase = Phase::Done;
                json!({"error": {"message": "the engine dropped the request", "code": 500}})
            }
        };
        Some((Ok(SseEvent::default().data(data.to_string())), st))
    })
}
