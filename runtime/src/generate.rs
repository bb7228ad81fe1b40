//! Generation: one prefill of the whole prompt, an optional cache compression step, then decode
//! one token at a time from the (possibly compressed) cache. Decode never re-runs the prompt.

use std::time::Instant;

use burn::tensor::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cache::KvCache;
use crate::loader::{LoadError, TextTokenizer};
use crate::model::{CausalLM, ForwardCtx, WindowCapture};

/// What to do with the cache between prefill and decode. Implemented by the compression engine;
/// the generation loop knows nothing about particular methods.
pub trait CacheCompressor {
    /// How many final prompt queries per layer the compressor needs (0 = none).
    fn window(&self) -> usize;
    /// Compresses `cache` in place after the prompt of `prompt_len` tokens was prefilled.
    fn compress(
        &self,
        model: &dyn CausalLM,
        cache: &mut KvCache,
        capture: &WindowCapture,
        prompt_len: usize,
    ) -> Result<CompressionReport, CompressError>;
}

/// A borrowed compressor compresses like the one it borrows (so evaluation lists can hold
/// compressors owned or borrowed).
impl<T: CacheCompressor + ?Sized> CacheCompressor for &T {
    fn window(&self) -> usize {
        (**self).window()
    }
    fn compress(
        &self,
        model: &dyn CausalLM,
        cache: &mut KvCache,
        capture: &WindowCapture,
        prompt_len: usize,
    ) -> Result<CompressionReport, CompressError> {
        (**self).compress(model, cache, capture, prompt_len)
    }
}

/// Why a compression step failed; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error(
        "the budget ({budget} entries from --ratio) is not larger than the observation \
         window ({window}): raise --ratio or lower --window"
    )]
    BudgetNotAboveWindow { budget: usize, window: usize },
    #[error("the prefill captured {captured} observation queries but the method needs {needed}")]
    WindowNotCaptured { captured: usize, needed: usize },
    #[error("no observation-window queries were captured")]
    NoQueries,
    /// The method's own error (e.g. a press that needs a profile and has none).
    #[error(transparent)]
    Method(Box<dyn std::error::Error + Send + Sync>),
}

/// What a compression step did, for reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompressionReport {
    pub method: String,
    /// Entries kept per layer (mean over KV heads).
    pub kept_per_layer: Vec<usize>,
    pub notes: Vec<String>,
    /// Per layer and KV head, the original positions kept (not serialized: only
    /// `generate --kept-positions` prints them, to check other engines' selections).
    #[serde(skip)]
    pub kept_positions: Vec<Vec<Vec<i64>>>,
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop_strings: Vec<String>,
    /// Stop on these ids (in addition to nothing else: fill from the model and tokenizer).
    pub eos_ids: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_strings: vec![],
            eos_ids: vec![],
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    StopString,
    MaxTokens,
}

impl StopReason {
    /// The name `--json` output and result rows use (`eos`, `stop_string`, `max_tokens`).
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::StopString => "stop_string",
            StopReason::MaxTokens => "max_tokens",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateOutput {
    pub text: String,
    /// Generated ids only (not the prompt).
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub prefill_ms: f64,
    pub compress_ms: f64,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
    /// Cache bytes right after prefill (before compression).
    pub kv_cache_bytes_full: usize,
    /// Cache bytes decode started from (after compression, if any).
    pub kv_cache_bytes: usize,
    pub kv_entries_per_layer: Vec<usize>,
    pub compression: Option<CompressionReport>,
    pub stop_reason: StopReason,
}

/// [`GenerateError::TooLong`]'s message: says how many positions the answer takes, so that a
/// prompt of exactly the context's length is not reported as longer than it is.
fn too_long(prompt: usize, reserve: usize, max: usize) -> String {
    if reserve == 0 || prompt >= max {
        format!(
            "the prompt has {prompt} tokens but the model's context is {max} tokens; shorten the \
             prompt"
        )
    } else {
        format!(
            "the prompt has {prompt} tokens and {reserve} more are kept for the answer, but the \
             model's context is {max} tokens; ask for at most {} new tokens, or shorten the prompt",
            max - prompt
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty: give some text (or a prompt file with text)")]
    EmptyPrompt,
    #[error("{}", too_long(*prompt, *reserve, *max))]
    TooLong {
        prompt: usize,
        /// Positions kept free for the tokens to generate.
        reserve: usize,
        max: usize,
    },
    /// Not `#[from]`: the message carries the cause, so it is not also the error's `source`
    /// (which `{:#}` would print a second time).
    #[error("compression failed: {0}")]
    Compression(CompressError),
    #[error(transparent)]
    Tokenizer(#[from] LoadError),
    #[error("the device failed while computing: {0}; try a shorter prompt, or `--device cpu`")]
    Device(String),
    #[error(
        "the model's logits are NaN: its activations overflowed the float type it computes in \
         (f16's largest value is 65504; Gemma's activations exceed it); use `--dtype bf16` or \
         `--dtype f32`"
    )]
    NotFinite,
}

/// Logits `[n, vocab]` read back to the host in f32, flattened: a device failure since the last
/// sync becomes [`GenerateError::Device`], NaN logits (a half-precision overflow) become
/// [`GenerateError::NotFinite`] instead of a stream of token 0.
pub fn host_logits(logits: Tensor<2>) -> Result<Vec<f32>, GenerateError> {
    let device_err = |e: &dyn std::fmt::Display| {
        let mut msg = e.to_string().trim_end().to_string();
        if msg.contains("selected by autotune") {
            // Seen on CUDA (H200, 2026-12-04): Burn 0.22.1's attention autotune picked a
            // kernel that then had no tile size for an 8K prompt; the minimal level ran 8K/16K.
            msg.push_str(
                " (a kernel that CubeCL's autotune chose failed: `CUBECL_AUTOTUNE_LEVEL=minimal` \
                 avoided this for 8K and 16K prompts on CUDA)",
            );
        }
        GenerateError::Device(msg)
    };
    let v = logits
        .try_into_data()
        .map_err(|e| device_err(&e))?
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| device_err(&format!("{e:?}")))?;
    if v.iter().any(|x| x.is_nan()) {
        return Err(GenerateError::NotFinite);
    }
    Ok(v)
}

impl From<CompressError> for GenerateError {
    fn from(e: CompressError) -> Self {
        GenerateError::Compression(e)
    }
}

/// Greedy or temperature / nucleus sampling over host logits.
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: StdRng,
}

impl Sampler {
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Self {
        Sampler {
            temperature,
            top_p,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A token drawn from `softmax(logits / temperature)` restricted to the nucleus: the
    /// most probable tokens (ties: lower id first) whose mass first reaches `top_p`. Greedy
    /// at temperature 0.
    ///
    /// The nucleus is found without sorting the vocabulary: the top `k` candidates are
    /// selected in linear time and only they are sorted, `k` growing ×8 until their mass
    /// reaches `top_p` (a full sort of Gemma's 262144 logits took ~15 ms per token, as long as
    /// the rest of a decode step). With `top_p = 1` every token is in the nucleus and the draw
    /// walks the vocabulary in id order, without any selection.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = logits
            .iter()
            .map(|&l| ((l - max) / self.temperature).exp())
            .collect();
        let total: f32 = w.iter().sum();
        if self.top_p >= 1.0 {
            let mut r = self.rng.random::<f32>() * total;
            for (i, &p) in w.iter().enumerate() {
                r -= p;
                if r <= 0.0 {
                    return i as u32;
                }
            }
            // Rounding left a sliver of `r`: the last token with any mass.
            return w.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32;
        }
        let n = w.len();
        // Descending probability, then ascending id: a strict order, so the selected head is
        // exactly the first `k` of a full sort.
        let order = |a: &u32, b: &u32| w[*b as usize].total_cmp(&w[*a as usize]).then(a.cmp(b));
        let mut ids: Vec<u32> = (0..n as u32).collect();
        let mut k = 64.min(n);
        loop {
            if k < n {
                ids.select_nth_unstable_by(k - 1, order);
            }
            let head = &mut ids[..k];
            head.sort_unstable_by(order);
            let mut cum = 0.0;
            let mut cut = None;
            for (i, &id) in head.iter().enumerate() {
                cum += w[id as usize] / total;
                if cum >= self.top_p {
                    cut = Some(i + 1);
                    break;
                }
            }
            if let Some(cut) = cut.or((k == n).then_some(n)) {
                let kept = &head[..cut];
                let mass: f32 = kept.iter().map(|&id| w[id as usize]).sum();
                let mut r = self.rng.random::<f32>() * mass;
                for &id in kept {
                    r -= w[id as usize];
                    if r <= 0.0 {
                        return id;
                    }
                }
                return *kept.last().expect("the nucleus holds at least one token");
            }
            k = (k * 8).min(n);
        }
    }
}

/// Index of the largest logit (lowest index on ties; NaNs never win; 0 when nothing is larger
/// than −∞). In two passes, 16 lanes wide so it vectorizes: the running-index loop it replaces
/// is serial over Gemma's 262144 logits, and greedy sampling was ~5% of an 8-session decode
/// step (`perf`).
pub fn argmax(logits: &[f32]) -> u32 {
    let (chunks, tail) = logits.as_chunks::<16>();
    let mut m = [f32::NEG_INFINITY; 16];
    for c in chunks {
        for k in 0..16 {
            m[k] = if c[k] > m[k] { c[k] } else { m[k] };
        }
    }
    let max = m
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    if max == f32::NEG_INFINITY {
        return 0;
    }
    logits.iter().position(|&l| l == max).unwrap_or(0) as u32
}

/// The state right after prefill: reused by every method that compresses the same prompt
/// (eval and bench prefill once, then clone the cache per method; a clone shares the tensors
/// or, on the host, the buffers copy-on-write).
#[derive(Debug)]
pub struct Prefilled {
    pub cache: KvCache,
    /// The last `capture.window` queries of every layer (compressors use the tail they need).
    pub capture: WindowCapture,
    /// Next-token logits after the last prompt token.
    pub first_logits: Vec<f32>,
    pub prompt_tokens: usize,
    pub prefill_ms: f64,
    /// Cache bytes before any compression.
    pub kv_cache_bytes_full: usize,
}

/// Runs the prompt through the model, capturing the last `capture_window` queries per layer
/// (0 = no capture: plain generation). `reserve` new tokens must still fit the context.
pub fn prefill(
    model: &dyn CausalLM,
    prompt_ids: &[u32],
    capture_window: usize,
    reserve: usize,
) -> Result<Prefilled, GenerateError> {
    match ChunkedPrefill::new(model, prompt_ids.to_vec(), capture_window, reserve)?
        .advance(model, usize::MAX)?
    {
        Progress::Done(p) => Ok(p),
        Progress::More(_) => unreachable!("an unbounded piece runs the whole prompt"),
    }
}

/// A prefill run piece by piece, so a server can interleave the pieces with other sessions'
/// decode steps. Pieces are whole multiples of the model's prefill chunk
/// ([`CausalLM::prefill_chunk`]), so the result is exactly [`prefill`]'s.
pub struct ChunkedPrefill {
    ids: Vec<u32>,
    done: usize,
    cache: KvCache,
    capture: WindowCapture,
    capture_on: bool,
    ms: f64,
}

/// What [`ChunkedPrefill::advance`] left.
pub enum Progress {
    Done(Prefilled),
    More(ChunkedPrefill),
}

impl ChunkedPrefill {
    /// Checks the prompt (not empty, `reserve` new tokens still fit the context) and sets up
    /// the cache; nothing runs yet.
    pub fn new(
        model: &dyn CausalLM,
        prompt_ids: Vec<u32>,
        capture_window: usize,
        reserve: usize,
    ) -> Result<Self, GenerateError> {
        if prompt_ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        let spec = model.spec();
        let max = spec.max_position_embeddings.max(1);
        if prompt_ids.len() + reserve > max {
            return Err(GenerateError::TooLong {
                prompt: prompt_ids.len(),
                reserve,
                max,
            });
        }
        let mut cache = KvCache::new(spec);
        cache.reserve_tokens(prompt_ids.len() + reserve);
        Ok(ChunkedPrefill {
            ids: prompt_ids,
            done: 0,
            cache,
            capture: WindowCapture::new(capture_window.max(1), spec.n_layers),
            capture_on: capture_window > 0,
            ms: 0.0,
        })
    }

    /// Prompt tokens still to run.
    pub fn remaining(&self) -> usize {
        self.ids.len() - self.done
    }

    /// Runs the next piece: about `max_tokens` prompt tokens, rounded down to whole prefill
    /// chunks (at least one chunk); the finished state once the prompt is through.
    pub fn advance(
        mut self,
        model: &dyn CausalLM,
        max_tokens: usize,
    ) -> Result<Progress, GenerateError> {
        let chunk = model.prefill_chunk().max(1);
        let piece = (max_tokens / chunk).max(1).saturating_mul(chunk);
        let end = self.done.saturating_add(piece).min(self.ids.len());
        let t0 = Instant::now();
        let logits = {
            let mut ctx = ForwardCtx::new(&mut self.cache);
            if self.capture_on {
                ctx = ctx.capture(&mut self.capture);
            }
            model.forward(&self.ids[self.done..end], &mut ctx)
        };
        self.done = end;
        if self.done < self.ids.len() {
            model.device().sync();
            self.ms += t0.elapsed().as_secs_f64() * 1e3;
            return Ok(Progress::More(self));
        }
        let first_logits: Vec<f32> = host_logits(logits)?;
        model.device().sync();
        self.ms += t0.elapsed().as_secs_f64() * 1e3;
        let kv_cache_bytes_full = self.cache.bytes();
        Ok(Progress::Done(Prefilled {
            cache: self.cache,
            capture: self.capture,
            first_logits,
            prompt_tokens: self.ids.len(),
            prefill_ms: self.ms,
            kv_cache_bytes_full,
        }))
    }
}

/// Prefill, compress (if a compressor is given), then decode. The cache is compressed in place:
/// the evicted entries are freed before decoding starts.
pub fn generate(
    model: &dyn CausalLM,
    tokenizer: &TextTokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    compressor: Option<&dyn CacheCompressor>,
) -> Result<GenerateOutput, GenerateError> {
    let window = compressor.map_or(0, |c| c.window());
    let pre = prefill(model, prompt_ids, window, opts.max_new_tokens)?;
    continue_owned(model, tokenizer, pre, opts, compressor)
}

/// Compresses a copy of a prefilled cache and decodes from it; `pre` is left untouched so
/// the next method starts from the same state.
pub fn continue_from(
    model: &dyn CausalLM,
    tokenizer: &TextTokenizer,
    pre: &Prefilled,
    opts: &GenerateOptions,
    compressor: Option<&dyn CacheCompressor>,
) -> Result<GenerateOutput, GenerateError> {
    let (cache, compression, compress_ms) = compress_copy(model, pre, compressor)?;
    finish(model, tokenizer, pre, cache, compression, compress_ms, opts)
}

/// [`continue_from`] for the last method of a prompt: takes the prefilled cache by value, so a
/// method that keeps every entry decodes into it instead of into a copy (a copy-on-write clone
/// would copy the whole cache at its first append).
pub fn continue_owned(
    model: &dyn CausalLM,
    tokenizer: &TextTokenizer,
    mut pre: Prefilled,
    opts: &GenerateOptions,
    compressor: Option<&dyn CacheCompressor>,
) -> Result<GenerateOutput, GenerateError> {
    let cache = std::mem::replace(&mut pre.cache, KvCache::new(model.spec()));
    let (cache, compression, compress_ms) = compress_into(model, &pre, cache, compressor)?;
    finish(
        model,
        tokenizer,
        &pre,
        cache,
        compression,
        compress_ms,
        opts,
    )
}

/// Decodes from `cache` and reports it together with the prefill and compression figures.
fn finish(
    model: &dyn CausalLM,
    tokenizer: &TextTokenizer,
    pre: &Prefilled,
    cache: KvCache,
    compression: Option<CompressionReport>,
    compress_ms: f64,
    opts: &GenerateOptions,
) -> Result<GenerateOutput, GenerateError> {
    let kv_cache_bytes = cache.bytes();
    let kv_entries_per_layer = cache.entries_per_layer();
    let d = decode(model, tokenizer, cache, &pre.first_logits, opts)?;
    Ok(GenerateOutput {
        text: d.text,
        token_ids: d.token_ids,
        prompt_tokens: pre.prompt_tokens,
        prefill_ms: pre.prefill_ms,
        compress_ms,
        decode_ms: d.decode_ms,
        decode_tokens_per_s: d.decode_tokens_per_s,
        kv_cache_bytes_full: pre.kv_cache_bytes_full,
        kv_cache_bytes,
        kv_entries_per_layer,
        compression,
        stop_reason: d.stop_reason,
    })
}

/// What [`decode`] produced.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
    pub stop_reason: StopReason,
}

/// The decode loop: samples the first token from `first_logits` (the prompt's last logits),
/// then feeds one token at a time through `cache` until EOS, a stop string or the limit.
pub fn decode(
    model: &dyn CausalLM,
    tokenizer: &TextTokenizer,
    mut cache: KvCache,
    first_logits: &[f32],
    opts: &GenerateOptions,
) -> Result<Decoded, GenerateError> {
    let mut sampler = Sampler::new(opts.temperature, opts.top_p, opts.seed);
    let mut out_ids = Vec::new();
    let mut stop_reason = StopReason::MaxTokens;
    let mut text = String::new();
    let t = Instant::now();
    let mut next = sampler.sample(first_logits);
    let mut decoded_steps = 0usize;
    while out_ids.len() < opts.max_new_tokens {
        if opts.eos_ids.contains(&next) {
            stop_reason = StopReason::Eos;
            break;
        }
        out_ids.push(next);
        if !opts.stop_strings.is_empty() {
            text = tokenizer.decode(&out_ids)?;
            if let Some(cut) = opts
                .stop_strings
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(cut);
                stop_reason = StopReason::StopString;
                break;
            }
        }
        if out_ids.len() == opts.max_new_tokens {
            break;
        }
        let logits = model.forward(&[next], &mut ForwardCtx::new(&mut cache));
        let l: Vec<f32> = host_logits(logits)?;
        decoded_steps += 1;
        next = sampler.sample(&l);
    }
    model.device().sync();
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    if stop_reason != StopReason::StopString {
        text = tokenizer.decode(&out_ids)?;
    }
    Ok(Decoded {
        text,
        token_ids: out_ids,
        decode_ms,
        decode_tokens_per_s: if decoded_steps > 0 {
            decoded_steps as f64 / (decode_ms / 1e3)
        } else {
            0.0
        },
        stop_reason,
    })
}

/// A copy of the prefilled cache, compressed by `compressor` (untouched without one), with
/// the report and the wall time of the compression.
pub fn compress_copy(
    model: &dyn CausalLM,
    pre: &Prefilled,
    compressor: Option<&dyn CacheCompressor>,
) -> Result<(KvCache, Option<CompressionReport>, f64), GenerateError> {
    compress_into(model, pre, pre.cache.clone(), compressor)
}

/// Compresses `cache` (the prefill's cache or a copy of it) with `pre`'s captured queries.
pub fn compress_into(
    model: &dyn CausalLM,
    pre: &Prefilled,
    mut cache: KvCache,
    compressor: Option<&dyn CacheCompressor>,
) -> Result<(KvCache, Option<CompressionReport>, f64), GenerateError> {
    let Some(c) = compressor else {
        return Ok((cache, None, 0.0));
    };
    if c.window() > pre.capture.window {
        return Err(CompressError::WindowNotCaptured {
            captured: pre.capture.window,
            needed: c.window(),
        }
        .into());
    }
    let t = Instant::now();
    let report = c.compress(model, &mut cache, &pre.capture, pre.prompt_tokens)?;
    model.device().sync();
    Ok((cache, Some(report), t.elapsed().as_secs_f64() * 1e3))
}

/// Teacher forcing: the next-token log-probabilities (full vocabulary) at each token of
/// `answer`, given the prompt state in `cache` and the prompt's last logits. Used to measure
/// how far a compressed cache moves the model from the full-cache distribution.
pub fn teacher_forced_logprobs(
    model: &dyn CausalLM,
    mut cache: KvCache,
    first_logits: &[f32],
    answer: &[u32],
) -> Result<Vec<Vec<f32>>, GenerateError> {
    let mut rows = vec![log_softmax(first_logits)];
    if answer.len() > 1 {
        let feed = &answer[..answer.len() - 1];
        let logits = model.forward(
            feed,
            &mut ForwardCtx::new(&mut cache).logits_last(feed.len()),
        );
        let v: Vec<f32> = host_logits(logits)?;
        let vocab = first_logits.len();
        rows.extend(v.chunks(vocab).map(log_softmax));
    }
    rows.truncate(answer.len());
    Ok(rows)
}

/// Numerically stable log-softmax.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = logits
        .iter()
        .map(|&l| ((l - max) as f64).exp())
        .sum::<f64>()
        .ln() as f32
        + max;
    logits.iter().map(|&l| l - lse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_long_says_what_would_fit() {
        let m = too_long(3, 40000, 32768);
        assert!(m.contains("ask for at most 32765 new tokens"), "{m}");
        // A prompt that alone fills the context: only shortening it helps.
        let m = too_long(32768, 64, 32768);
        assert!(
            m.ends_with("shorten the prompt") && !m.contains("ask for"),
            "{m}"
        );
        assert!(too_long(9, 0, 8).contains("has 9 tokens"));
    }

    #[test]
    fn stop_reason_names_match_the_json_output() {
        for r in [
            StopReason::Eos,
            StopReason::StopString,
            StopReason::MaxTokens,
        ] {
            assert_eq!(serde_json::to_value(&r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn argmax_takes_the_first_maximum_across_lanes_and_tail() {
        // A plain scan is the reference: first strictly larger wins, NaNs never do.
        let scan = |l: &[f32]| {
            let mut best: Option<usize> = None;
            for (i, &v) in l.iter().enumerate() {
                if best.is_none_or(|b| v > l[b]) && v > f32::NEG_INFINITY {
                    best = Some(i);
                }
            }
            best.unwrap_or(0) as u32
        };
        let mut cases: Vec<Vec<f32>> = vec![
            vec![],
            vec![f32::NAN],
            vec![f32::NEG_INFINITY; 40],
            vec![f32::NAN, 1.0, 1.0],
        ];
        for n in [1, 15, 16, 17, 40, 1000] {
            for at in [0, n / 3, n - 1] {
                let mut l: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 * 0.1).collect();
                l[at] = 5.0;
                if n > 2 {
                    l[n - 1 - at.min(n - 2)] = 5.0; // a tie, possibly in the tail
                    l[(at + 1) % n] = f32::NAN;
                }
                cases.push(l);
            }
        }
        for l in &cases {
            assert_eq!(argmax(l), scan(l), "{l:?}");
        }
    }

    #[test]
    fn greedy_picks_first_max_and_top_p_restricts_support() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        let mut s = Sampler::new(1.0, 0.5, 7);
        // One token holds > 50% of the mass: nucleus sampling must always return it.
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.0, 5.0, 0.0, 1.0]), 1);
        }
        let mut a = Sampler::new(1.0, 1.0, 3);
        let mut b = Sampler::new(1.0, 1.0, 3);
        let l = [0.1, 0.2, 0.3, 0.4];
        let xa: Vec<u32> = (0..20).map(|_| a.sample(&l)).collect();
        let xb: Vec<u32> = (0..20).map(|_| b.sample(&l)).collect();
        assert_eq!(xa, xb, "same seed, same samples");
    }

    /// The nucleus without a full sort: over a vocabulary large enough that the selection
    /// grows several times, every drawn token lies in the nucleus a full sort gives, and the
    /// draws follow the renormalised probabilities (and plain softmax at `top_p = 1`).
    #[test]
    fn nucleus_by_selection_matches_a_full_sort() {
        let n = 5000;
        // A peaked head over a long flat tail, with ties.
        let logits: Vec<f32> = (0..n)
            .map(|i| {
                if i % 97 == 0 {
                    6.0 - (i / 97) as f32 * 0.05
                } else {
                    (i % 7) as f32 * 0.1
                }
            })
            .collect();
        for (top_p, t) in [(0.3f32, 1.0f32), (0.9, 1.0), (0.99, 0.7), (1.0, 1.3)] {
            let w: Vec<f64> = logits
                .iter()
                .map(|&l| (f64::from(l) / f64::from(t)).exp())
                .collect();
            let total: f64 = w.iter().sum();
            let mut ids: Vec<usize> = (0..n).collect();
            ids.sort_by(|&a, &b| w[b].total_cmp(&w[a]).then(a.cmp(&b)));
            let (mut cum, mut cut) = (0.0, n);
            for (i, &id) in ids.iter().enumerate() {
                cum += w[id] / total;
                if cum >= f64::from(top_p) + 1e-4 {
                    cut = i + 1;
                    break;
                }
            }
            let nucleus: std::collections::HashSet<usize> = ids[..cut].iter().copied().collect();
            let mass: f64 = ids[..cut].iter().map(|&i| w[i]).sum();
            let mut s = Sampler::new(t, top_p, 11);
            let draws = 8000;
            let mut counts = vec![0usize; n];
            for _ in 0..draws {
                let id = s.sample(&logits) as usize;
                assert!(
                    top_p >= 1.0 || nucleus.contains(&id),
                    "top_p {top_p}: {id} outside"
                );
                counts[id] += 1;
            }
            // The three most probable tokens are drawn at their renormalised rates.
            for &id in &ids[..3] {
                let want = w[id] / mass;
                let got = counts[id] as f64 / draws as f64;
                let sd = (want * (1.0 - want) / draws as f64).sqrt();
                assert!(
                    (got - want).abs() < 5.0 * sd + 1e-3,
                    "top_p {top_p} id {id}: {got} vs {want}"
                );
            }
        }
    }
}
