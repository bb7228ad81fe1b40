//! The scheduler: one thread owns the model and steps every session, admitting queued requests
//! between decode steps while their KV cache fits `--kv-mem`; a prompt is prefilled in pieces
//! between decode steps, so running sessions keep decoding while a long prompt comes in.
//!
//! Each session keeps its own (compressed, ragged) cache; a step runs one token of every active
//! session, their weight matmuls batched (up to [`DECODE_BATCH`] rows per pass over the
//! weights) and attention per session over its own entries. A session's tokens do not depend on
//! what else is running (greedy output decoded among others equals the output decoded alone).
//! Memory is accounted before it is used: a request is admitted only when the peak of its
//! prefill (the full prompt cache, before compression) fits next to what the running sessions
//! may still grow to.

use rayon::prelude::*;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, mpsc};

use compresskv_runtime::cache::KvCache;
use compresskv_runtime::generate::{
    CacheCompressor, ChunkedPrefill, Progress, Sampler, compress_into,
};
use compresskv_runtime::loader::LoadedModel;
use compresskv_runtime::model::CausalLM;
use compresskv_runtime::press::Compressor;
use serde::Serialize;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

/// How a request's cache is compressed after prefill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compression {
    pub method: String,
    /// Mean entries kept per compressed layer; `None` with `full`.
    pub budget: Option<usize>,
}

impl Compression {
    pub fn label(&self) -> String {
        match self.budget {
            Some(b) => format!("{}@{b}", self.method),
            None => self.method.clone(),
        }
    }
}

/// Builds the compressor of a method at a budget (the CLI's press flags and the model's
/// profile, found by model id).
pub type CompressorFactory =
    Box<dyn Fn(&LoadedModel, &str, usize) -> anyhow::Result<Compressor> + Send>;

/// Sampling and stopping of one request.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub max_tokens: usize,
    /// Decode through end-of-generation tokens (only `max_tokens` and stop strings end it).
    pub ignore_eos: bool,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop: Vec<String>,
}

/// A request for the scheduler.
pub struct Job {
    pub prompt_ids: Vec<u32>,
    pub sampling: Sampling,
    pub compression: Compression,
    pub events: UnboundedSender<Event>,
}

/// Why a session ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// End of generation or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// What a session reports back to its request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text (already cut at a stop string; never half a UTF-8 character).
    Delta(String),
    Done {
        finish: Finish,
        prompt_tokens: usize,
        completion_tokens: usize,
        kv_cache_bytes: usize,
        kv_cache_bytes_full: usize,
    },
    /// The request failed; `status` is the HTTP status it maps to.
    Error { status: u16, message: String },
}

/// Commands from the HTTP side.
pub enum Cmd {
    Submit(Job),
    Tokenize {
        text: String,
        /// Special-token text becomes those tokens, no BOS added (a rendered chat prompt).
        chat: bool,
        reply: oneshot::Sender<Result<Vec<u32>, String>>,
    },
}

/// Scheduler limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub parallel: usize,
    pub kv_mem_bytes: usize,
    pub queue: usize,
    pub ctx_size: usize,
}

/// One running session, as `GET /slots` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotInfo {
    pub id: u64,
    pub compression: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Positions the session has seen (prompt + generated).
    pub logical_length: usize,
    pub kv_cache_bytes: usize,
    /// What the full cache of the same length would take.
    pub kv_cache_bytes_full: usize,
    /// `kv_cache_bytes / kv_cache_bytes_full`.
    pub kv_ratio: f64,
}

/// What the HTTP side reads: readiness, slots, counters (for `/health`, `/slots`, `/metrics`).
#[derive(Debug, Default)]
pub struct Shared {
    /// Set once the model is loaded: the limits in force and the default compression.
    pub settings: Option<(Limits, Compression)>,
    pub model_id: String,
    /// Where the model's profile came from (`None`: none found).
    pub profile: Option<String>,
    pub slots: Vec<SlotInfo>,
    pub queued: usize,
    /// Bytes the running sessions hold now.
    pub kv_bytes_used: usize,
    /// Bytes reserved for them (now plus what their remaining tokens may add).
    pub kv_bytes_reserved: usize,
    pub requests_total: u64,
    pub requests_rejected: u64,
    pub requests_cancelled: u64,
    pub prompt_tokens_total: u64,
    pub completion_tokens_total: u64,
}

/// The KV cache's size model: bytes per entry as the cache stores them (f16 rows on the CPU
/// kernel path, f32 tensors otherwise) and each layer's window.
#[derive(Debug, Clone)]
pub struct KvSizing {
    /// Per layer: `Some(w)` for a sliding window of `w`, `None` for full attention.
    windows: Vec<Option<usize>>,
    /// Bytes of one entry (K and V of every KV head) in one layer.
    entry: usize,
}

impl KvSizing {
    pub fn new(loaded: &LoadedModel) -> Self {
        let spec = &loaded.spec;
        let elem = if loaded.model.device().uses_cpu_kernels() {
            2
        } else {
            4
        };
        KvSizing {
            windows: spec.layers.iter().map(|l| l.attention.window()).collect(),
            entry: 2 * spec.kv_dim() * elem,
        }
    }

    /// A full (uncompressed) cache after `n` positions: every full-attention layer holds `n`
    /// entries, a sliding layer at most its window.
    pub fn full(&self, n: usize) -> usize {
        self.windows
            .iter()
            .map(|w| w.map_or(n, |w| n.min(w)))
            .sum::<usize>()
            * self.entry
    }

    /// The peak of prefilling `n` tokens: the full cache plus one layer holding the whole
    /// prompt (a sliding layer trims to its window only after its attention ran).
    pub fn prefill_peak(&self, n: usize) -> usize {
        self.full(n) + n * self.entry
    }

    /// What a request may hold at most: its prefill peak, or its cache after compression (to
    /// `budget`, or whole) plus what the tokens it may generate can add.
    pub fn need(&self, n: usize, budget: Option<usize>, max_tokens: usize) -> usize {
        self.prefill_peak(n).max(self.steady(n, budget, max_tokens))
    }

    /// What a running session holds reserved right after admission: its cache after
    /// compression plus what its `max_tokens` may still add (see [`Self::growth`]).
    pub fn steady(&self, n: usize, budget: Option<usize>, max_tokens: usize) -> usize {
        let kept: Vec<usize> = self
            .windows
            .iter()
            .map(|w| match w {
                Some(w) => n.min(*w),
                None => n.min(budget.unwrap_or(n)),
            })
            .collect();
        kept.iter().sum::<usize>() * self.entry + self.growth(&kept, max_tokens)
    }

    /// Bytes `left` more tokens may add to a cache holding `entries[l]` per layer: a
    /// full-attention layer one entry per token, a sliding layer only up to its window.
    pub fn growth(&self, entries: &[usize], left: usize) -> usize {
        self.windows
            .iter()
            .zip(entries)
            .map(|(w, &e)| w.map_or(left, |w| left.min(w.saturating_sub(e))))
            .sum::<usize>()
            * self.entry
    }

    /// How many sessions of `n` prompt tokens and `max_tokens` answers the admission rule
    /// lets run at once in `mem` bytes: each reserves [`Self::steady`], and the last one
    /// admitted needs [`Self::need`] on top of the others.
    pub fn sessions_that_fit(
        &self,
        mem: usize,
        n: usize,
        budget: Option<usize>,
        max_tokens: usize,
    ) -> usize {
        let need = self.need(n, budget, max_tokens);
        if need > mem {
            return 0;
        }
        1 + (mem - need) / self.steady(n, budget, max_tokens).max(1)
    }
}

struct Session {
    id: u64,
    job: Job,
    cache: KvCache,
    sampler: Sampler,
    eos_ids: Vec<u32>,
    prompt_tokens: usize,
    out_ids: Vec<u32>,
    /// Sampled, not yet emitted.
    next: u32,
    /// Bytes of the decoded text already sent.
    sent: usize,
    finished: bool,
}

impl Session {
    fn reserved_bytes(&self, kv: &KvSizing) -> usize {
        let left = self
            .job
            .sampling
            .max_tokens
            .saturating_sub(self.out_ids.len());
        self.cache.bytes() + kv.growth(&self.cache.entries_per_layer(), left)
    }

    fn info(&self, kv: &KvSizing) -> SlotInfo {
        let logical = self.prompt_tokens + self.out_ids.len();
        let full = kv.full(self.cache.next_pos);
        let kept = self.cache.bytes();
        SlotInfo {
            id: self.id,
            compression: self.job.compression.label(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.out_ids.len(),
            logical_length: logical,
            kv_cache_bytes: kept,
            kv_cache_bytes_full: full,
            kv_ratio: if full > 0 {
                kept as f64 / full as f64
            } else {
                1.0
            },
        }
    }

    fn send(&self, e: Event) {
        let _ = self.job.events.send(e);
    }

    fn finish(&mut self, finish: Finish, kv: &KvSizing) {
        let full = kv.full(self.cache.next_pos);
        self.send(Event::Done {
            finish,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.out_ids.len(),
            kv_cache_bytes: self.cache.bytes(),
            kv_cache_bytes_full: full,
        });
        self.finished = true;
    }

    /// Emits `self.next` (the loop of [`compresskv_runtime::generate::decode`], one token at a
    /// time); `true` when the session goes on and needs `self.next` run through the model.
    fn emit(&mut self, loaded: &LoadedModel, kv: &KvSizing) -> Result<bool, String> {
        if self.eos_ids.contains(&self.next) {
            self.finish(Finish::Stop, kv);
            return Ok(false);
        }
        self.out_ids.push(self.next);
        let text = loaded
            .tokenizer
            .decode(&self.out_ids)
            .map_err(|e| e.to_string())?;
        let stop_at = self
            .job
            .sampling
            .stop
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min();
        let done = stop_at.is_some() || self.out_ids.len() >= self.job.sampling.max_tokens;
        let end = match stop_at {
            Some(cut) => cut,
            None if done => text.len(),
            None => safe_end(&text, &self.job.sampling.stop),
        };
        if end > self.sent {
            self.send(Event::Delta(text[self.sent..end].to_string()));
            self.sent = end;
        }
        if done {
            let finish = if stop_at.is_some() {
                Finish::Stop
            } else {
                Finish::Length
            };
            self.finish(finish, kv);
        }
        Ok(!done)
    }
}

/// A request being prefilled, one piece per engine step.
struct Pending {
    job: Job,
    prefill: ChunkedPrefill,
    compressor: Option<Compressor>,
    /// What it holds reserved meanwhile ([`KvSizing::need`]).
    need: usize,
}

/// Prompt tokens one prefill piece runs between two decode steps (rounded to the model's
/// prefill chunks): running sessions wait at most one piece for their next token.
const PREFILL_PIECE: usize = 1024;

/// Most rows of one batched decode step: the interleaved integer kernels read each weight
/// block once per 8 activation rows. A model may allow fewer ([`CausalLM::exact_batch`]: as
/// many as keep each row's arithmetic what it is alone, so a session's tokens do not depend on
/// its neighbours).
const DECODE_BATCH: usize = 8;

/// Answers a request that cannot start with a 400 saying why.
fn refuse(job: Job, message: String) {
    let _ = job.events.send(Event::Error {
        status: 400,
        message,
    });
}

/// How much of `text` can be sent: not a trailing replacement character (half a UTF-8
/// character whose next token completes it) and not a tail that may begin a stop string.
fn safe_end(text: &str, stop: &[String]) -> usize {
    let mut end = text.trim_end_matches('\u{FFFD}').len();
    let kept = end;
    for s in stop {
        // The longest proper prefix of `s` the text ends with.
        if let Some(i) = s
            .char_indices()
            .rev()
            .map(|(i, _)| i)
            .filter(|&i| i > 0)
            .find(|&i| text[..kept].ends_with(&s[..i]))
        {
            end = end.min(kept - i);
        }
    }
    end
}

/// The scheduler's state on its thread.
pub struct Engine {
    loaded: LoadedModel,
    kv: KvSizing,
    factory: CompressorFactory,
    limits: Limits,
    shared: Arc<Mutex<Shared>>,
    queue: VecDeque<Job>,
    /// The one request being prefilled (pieces interleave with the decode steps).
    pending: Option<Pending>,
    active: Vec<Session>,
    next_id: u64,
    /// Test hook (`COMPRESSKV_SERVE_STEP_DELAY_MS`): a pause after every step, so tests can
    /// hold a session running while they look at the queue.
    step_delay: Option<std::time::Duration>,
}

impl Engine {
    pub fn new(
        loaded: LoadedModel,
        factory: CompressorFactory,
        limits: Limits,
        shared: Arc<Mutex<Shared>>,
    ) -> Self {
        Engine {
            kv: KvSizing::new(&loaded),
            loaded,
            factory,
            limits,
            shared,
            queue: VecDeque::new(),
            pending: None,
            active: Vec::new(),
            next_id: 0,
            step_delay: std::env::var("COMPRESSKV_SERVE_STEP_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(std::time::Duration::from_millis),
        }
    }

    /// Runs until the command channel closes (the server shut down).
    pub fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        loop {
            if self.active.is_empty() && self.queue.is_empty() && self.pending.is_none() {
                match rx.recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => return,
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                self.handle(cmd);
            }
            self.drop_cancelled();
            self.admit();
            self.prefill_piece();
            self.step();
            if let Some(d) = self.step_delay {
                std::thread::sleep(d);
            }
            self.retire();
            self.publish();
        }
    }

    /// One token of every active session: each emits what it sampled, then the ones that go
    /// on run their token through the model together ([`CausalLM::forward_batch`]) and sample
    /// the next.
    fn step(&mut self) {
        let mut going: Vec<&mut Session> = Vec::new();
        for s in &mut self.active {
            match s.emit(&self.loaded, &self.kv) {
                Ok(true) => going.push(s),
                Ok(false) => {}
                Err(message) => {
                    s.send(Event::Error {
                        status: 500,
                        message,
                    });
                    s.finished = true;
                }
            }
        }
        let rows = DECODE_BATCH.min(self.loaded.model.exact_batch()).max(1);
        for batch in going.chunks_mut(rows) {
            let tokens: Vec<u32> = batch.iter().map(|s| s.next).collect();
            let mut caches: Vec<&mut KvCache> = batch.iter_mut().map(|s| &mut s.cache).collect();
            let logits = self.loaded.model.forward_batch(&tokens, &mut caches);
            // Each session draws from its own sampler (its own seed): in parallel, the same
            // draws as in sequence.
            batch
                .par_iter_mut()
                .zip(logits.par_iter())
                .for_each(|(s, l)| s.next = s.sampler.sample(l));
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Tokenize { text, chat, reply } => {
                let t = &self.loaded.tokenizer;
                let ids = if chat {
                    t.encode_chat(&text)
                } else {
                    t.encode(&text, true)
                };
                let _ = reply.send(ids.map_err(|e| e.to_string()));
            }
            Cmd::Submit(job) => {
                let mut sh = self.shared.lock().unwrap();
                sh.requests_total += 1;
                match self.check(&job) {
                    Ok(()) => self.queue.push_back(job),
                    Err((status, message)) => {
                        sh.requests_rejected += 1;
                        let _ = job.events.send(Event::Error { status, message });
                    }
                }
            }
        }
    }

    /// Refuses what can never run, and what finds the queue full.
    fn check(&self, job: &Job) -> Result<(), (u16, String)> {
        let (n, max_new) = (job.prompt_ids.len(), job.sampling.max_tokens);
        let vocab = self.loaded.spec.vocab_size;
        if let Some(bad) = job.prompt_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err((
                400,
                format!("prompt token id {bad} is outside the vocabulary (0..{vocab})"),
            ));
        }
        if n + max_new > self.limits.ctx_size {
            return Err((
                400,
                format!(
                    "the prompt ({n} tokens) plus max_tokens ({max_new}) exceeds the context \
                     size ({}): shorten the prompt or lower max_tokens",
                    self.limits.ctx_size
                ),
            ));
        }
        let need = self.kv.need(n, job.compression.budget, max_new);
        if need > self.limits.kv_mem_bytes {
            return Err((
                400,
                format!(
                    "{n} prompt tokens and max_tokens {max_new} need up to {:.2} MiB of KV cache, \
                     more than --kv-mem allows ({:.2} MiB): shorten the prompt, lower \
                     max_tokens, compress harder, or start the server with a larger --kv-mem",
                    need as f64 / 1048576.0,
                    self.limits.kv_mem_bytes as f64 / 1048576.0
                ),
            ));
        }
        if self.queue.len() >= self.limits.queue {
            return Err((
                503,
                format!(
                    "the server is busy: {} requests are waiting (--queue {}); retry later",
                    self.queue.len(),
                    self.limits.queue
                ),
            ));
        }
        Ok(())
    }

    fn drop_cancelled(&mut self) {
        let before = self.active.len() + self.queue.len();
        self.active.retain(|s| !s.job.events.is_closed());
        self.queue.retain(|j| !j.events.is_closed());
        let mut gone = before - self.active.len() - self.queue.len();
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.job.events.is_closed())
        {
            self.pending = None;
            gone += 1;
        }
        self.shared.lock().unwrap().requests_cancelled += gone as u64;
    }

    fn reserved(&self) -> usize {
        let running: usize = self.active.iter().map(|s| s.reserved_bytes(&self.kv)).sum();
        running + self.pending.as_ref().map_or(0, |p| p.need)
    }

    /// Starts prefilling the oldest queued request when none is prefilling, a slot is free
    /// and its peak fits next to what the running sessions hold reserved.
    fn admit(&mut self) {
        if self.pending.is_some() || self.active.len() >= self.limits.parallel {
            return;
        }
        let Some(job) = self.queue.front() else {
            return;
        };
        let need = self.kv.need(
            job.prompt_ids.len(),
            job.compression.budget,
            job.sampling.max_tokens,
        );
        if self.reserved() + need > self.limits.kv_mem_bytes {
            return;
        }
        let job = self.queue.pop_front().expect("front exists");
        let loaded = &self.loaded;
        let compressor = match job.compression.budget {
            Some(b) if job.compression.method != "full" => {
                match (self.factory)(loaded, &job.compression.method, b) {
                    Ok(c) => Some(c),
                    Err(e) => return refuse(job, format!("{e:#}")),
                }
            }
            _ => None,
        };
        let window = compressor.as_ref().map_or(0, |c| c.window());
        let prompt = job.prompt_ids.clone();
        match ChunkedPrefill::new(&loaded.model, prompt, window, job.sampling.max_tokens) {
            Ok(prefill) => {
                self.pending = Some(Pending {
                    job,
                    prefill,
                    compressor,
                    need,
                })
            }
            Err(e) => refuse(job, e.to_string()),
        }
    }

    /// Runs one piece of the pending prefill; after the last one, compresses the cache and
    /// starts the session (its first token is sampled, and emitted at the next step).
    fn prefill_piece(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let loaded = &self.loaded;
        let pre = match p.prefill.advance(&loaded.model, PREFILL_PIECE) {
            Ok(Progress::More(prefill)) => {
                self.pending = Some(Pending { prefill, ..p });
                return;
            }
            Ok(Progress::Done(pre)) => pre,
            Err(e) => return refuse(p.job, e.to_string()),
        };
        let Pending {
            job, compressor, ..
        } = p;
        let mut pre = pre;
        let cache = std::mem::replace(&mut pre.cache, KvCache::new(&loaded.spec));
        let c = compressor.as_ref().map(|c| c as &dyn CacheCompressor);
        let cache = match compress_into(&loaded.model, &pre, cache, c) {
            Ok((cache, _, _)) => cache,
            Err(e) => return refuse(job, e.to_string()),
        };
        let s = &job.sampling;
        let mut sampler = Sampler::new(s.temperature, s.top_p, s.seed);
        let next = sampler.sample(&pre.first_logits);
        let eos_ids = if s.ignore_eos {
            Vec::new()
        } else {
            loaded.eos_ids()
        };
        self.next_id += 1;
        self.shared.lock().unwrap().prompt_tokens_total += job.prompt_ids.len() as u64;
        self.active.push(Session {
            id: self.next_id,
            prompt_tokens: job.prompt_ids.len(),
            job,
            cache,
            sampler,
            eos_ids,
            out_ids: Vec::new(),
            next,
            sent: 0,
            finished: false,
        });
    }

    fn retire(&mut self) {
        let mut sh = self.shared.lock().unwrap();
        for s in self.active.iter().filter(|s| s.finished) {
            sh.completion_tokens_total += s.out_ids.len() as u64;
        }
        self.active.retain(|s| !s.finished);
    }

    fn publish(&self) {
        let slots = self.active.iter().map(|s| s.info(&self.kv)).collect();
        let used = self.active.iter().map(|s| s.cache.bytes()).sum();
        let reserved = self.reserved();
        let mut sh = self.shared.lock().unwrap();
        sh.slots = slots;
        sh.queued = self.queue.len();
        sh.kv_bytes_used = used;
        sh.kv_bytes_reserved = reserved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemma 3 270M's shape: 18 layers, every sixth global, the others a 512 window; one KV
    /// head of 256 dims in f16.
    fn gemma() -> KvSizing {
        KvSizing {
            windows: (0..18).map(|i| (i % 6 != 5).then_some(512)).collect(),
            entry: 2 * 256 * 2,
        }
    }

    #[test]
    fn sessions_that_fit_follow_the_admission_rule() {
        let kv = gemma();
        assert_eq!(kv.full(16384), (3 * 16384 + 15 * 512) * 1024);
        assert_eq!(kv.steady(16384, Some(128), 0), (3 * 128 + 15 * 512) * 1024);
        assert_eq!(kv.steady(100, Some(128), 0), 18 * 100 * 1024);
        // Sliding layers at their window do not grow; global ones grow by every token.
        assert_eq!(kv.steady(16384, Some(128), 10), (3 * 138 + 15 * 512) * 1024);
        assert_eq!(kv.steady(100, None, 10), 18 * 110 * 1024);
        let mem = 1 << 30;
        for budget in [None, Some(128)] {
            let (n, max) = (16384 - 256, 256);
            // Admit one after another as the engine does.
            let (mut reserved, mut count) = (0, 0);
            while reserved + kv.need(n, budget, max) <= mem {
                reserved += kv.steady(n, budget, max);
                count += 1;
            }
            assert_eq!(
                kv.sessions_that_fit(mem, n, budget, max),
                count,
                "{budget:?}"
            );
        }
        let full = kv.sessions_that_fit(mem, 16128, None, 256);
        let compressed = kv.sessions_that_fit(mem, 16128, Some(128), 256);
        assert!(compressed >= 6 * full, "{compressed} vs {full}");
        assert_eq!(kv.sessions_that_fit(1000, 16128, None, 256), 0);
    }

    #[test]
    fn safe_end_holds_back_half_characters_and_stop_prefixes() {
        assert_eq!(safe_end("hello", &[]), 5);
        assert_eq!(safe_end("hel\u{FFFD}", &[]), 3);
        let stop = vec!["END".to_string()];
        assert_eq!(safe_end("the E", &stop), 4);
        assert_eq!(safe_end("the EN", &stop), 4);
        assert_eq!(safe_end("the ENx", &stop), 7);
        assert_eq!(safe_end("the", &stop), 3);
        assert_eq!(safe_end("xaba", &["abab".to_string()]), 1);
    }
}
