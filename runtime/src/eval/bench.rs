//! The speed benchmark behind `compresskv bench`: prefill time, compression time, decode speed,
//! KV bytes and peak RSS per (contender, length), measured side by side in one process, with the
//! decode cost model (bytes per token against the measured memory bandwidth) and the prefill
//! roofline (multiply-adds against the measured FMA peak).
//!
//! Per repeat and length the prompt is prefilled once (prefill does not depend on the method:
//! compression runs after it) and every contender then compresses its own copy of that cache
//! and decodes `decode_tokens` tokens, so the contenders of a length share the same machine
//! state. A warm-up run precedes the measurements; reported times are medians over `repeats`.

use serde::Serialize;

use crate::eval::niah::{Haystack, Needle, NiahBuilder, NiahError};
use crate::eval::run::Contender;
use crate::generate::{
    CacheCompressor, GenerateError, GenerateOptions, continue_from, continue_owned, prefill,
};
use crate::loader::LoadedModel;
use crate::model::CausalLM;
use crate::spec::ModelSpec;

/// Why a benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("building a {length}-token prompt")]
    Prompt {
        length: usize,
        #[source]
        source: NiahError,
    },
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("{0}")]
    Input(String),
}

/// One (method, length) measurement.
#[derive(Serialize, Debug, Clone)]
pub struct BenchRow {
    pub method: String,
    pub length: usize,
    pub budget: Option<usize>,
    /// Median prefill time of the shared prefill.
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub compress_ms: f64,
    /// Compression time as a share of prefill time.
    pub compress_share: f64,
    pub decode_tokens_per_s: f64,
    pub kv_cache_bytes_full: usize,
    pub kv_cache_bytes: usize,
    /// Peak resident set size of the process over the prefill, compression and decode of this
    /// row (the model's weights included).
    pub peak_rss_bytes: Option<u64>,
    /// GPU backends: the bytes the device's allocator holds after this row's prefill and decode
    /// (its pools keep their pages, so this is the row's high-water mark, weights included);
    /// `None` on the CPU.
    pub device_memory_bytes: Option<u64>,
    /// Bytes one decode step must read: weights + the kept KV cache.
    pub decode_bytes_per_token: usize,
    /// Decode speed if every step were limited by the measured memory bandwidth alone.
    pub bandwidth_bound_tokens_per_s: Option<f64>,
    /// Multiply-adds of this prefill (projections, MLP, attention, one LM head row).
    pub prefill_macs: f64,
    /// Prefill speed if every multiply-add ran at the measured f32 FMA peak (CPU kernels only):
    /// the roofline of prefill's f32 `gemm` on dequantized tiles.
    pub prefill_compute_bound_tokens_per_s: Option<f64>,
    pub repeats: usize,
}

/// What to measure.
pub struct BenchPlan<'a> {
    pub lengths: &'a [usize],
    pub contenders: &'a [Contender],
    /// Tokens decoded per measurement (EOS ignored so every row decodes the same count).
    pub decode_tokens: usize,
    /// Measured repeats per length (medians are reported).
    pub repeats: usize,
    /// An unmeasured run at every length, not only one short warm-up: GPU backends compile and
    /// autotune kernels per shape, and on CUDA the first 8K prefill took 58 s where the next
    /// 16K one took 9 s (2026-12-04, H200).
    pub warm_every_length: bool,
}

/// The machine-wide numbers measured once per benchmark.
#[derive(Serialize, Debug, Clone)]
pub struct Machine {
    /// Main-memory read bandwidth, all cores.
    pub memory_bandwidth_bytes_per_s: Option<f64>,
    /// f32 FMA peak, all threads (CPU kernels only).
    pub fma_peak_macs_per_s: Option<f64>,
}

impl Machine {
    /// Measures the host's memory bandwidth when `host` (the model runs on the CPU: on a GPU
    /// the host's bandwidth bounds nothing), and the FMA peak when `cpu_kernels` (the CPU
    /// kernels run the model).
    pub fn measure(host: bool, cpu_kernels: bool, say: &dyn Fn(&str)) -> Self {
        let memory_bandwidth_bytes_per_s = if host {
            say("measuring memory bandwidth…");
            memory_bandwidth_bytes_per_s()
        } else {
            None
        };
        let fma_peak_macs_per_s = if cpu_kernels {
            say("measuring the f32 FMA peak…");
            crate::kernels::peak::fma_peak_macs_per_s()
        } else {
            None
        };
        Machine {
            memory_bandwidth_bytes_per_s,
            fma_peak_macs_per_s,
        }
    }
}

impl BenchPlan<'_> {
    /// The plan's mistakes a user can make, found before anything is measured: no repeats, too
    /// few decode tokens, no lengths, or a length whose prompt and decode do not fit the
    /// model's context.
    pub fn check(&self, spec: &ModelSpec) -> Result<(), BenchError> {
        if self.repeats == 0 {
            return Err(BenchError::Input("--repeats must be at least 1".into()));
        }
        if self.decode_tokens < 2 {
            return Err(BenchError::Input(
                "--decode-tokens must be at least 2".into(),
            ));
        }
        if self.lengths.is_empty() {
            return Err(BenchError::Input("--lengths is empty".into()));
        }
        let max = spec.max_position_embeddings;
        if let Some(&length) = self.lengths.iter().find(|&&l| l + self.decode_tokens > max) {
            return Err(BenchError::Input(format!(
                "--lengths {length}: with --decode-tokens {d} a prompt may have at most {fit} \
                 tokens (the model's context is {max}); give a shorter length or fewer decode \
                 tokens",
                d = self.decode_tokens,
                fit = max.saturating_sub(self.decode_tokens),
            )));
        }
        Ok(())
    }

    /// Runs the plan on peer needle prompts (depth 50%) built from `haystack`; `say` reports
    /// progress.
    pub fn run(
        &self,
        loaded: &LoadedModel,
        haystack: &Haystack,
        machine: &Machine,
        say: &dyn Fn(&str),
    ) -> Result<Vec<BenchRow>, BenchError> {
        self.check(&loaded.spec)?;
        let shortest = *self.lengths.iter().min().expect("checked: not empty");
        let builder = NiahBuilder::for_model(haystack, loaded);
        let needle = Needle::san_francisco();
        let contenders = self.contenders;
        let window = contenders
            .iter()
            .filter_map(|c| c.compressor.as_ref().map(CacheCompressor::window))
            .max()
            .unwrap_or(0);
        let opts = GenerateOptions {
            max_new_tokens: self.decode_tokens,
            eos_ids: vec![],
            ..Default::default()
        };
        let weights = loaded.model.decode_weight_bytes();

        // Warm-up: the first forward passes allocate and tune kernels.
        let warm_up = |length: usize| -> Result<(), BenchError> {
            let warm = builder
                .peer_needle(&needle, length, 50.0)
                .map_err(|source| BenchError::Prompt { length, source })?;
            let pre = prefill(&loaded.model, &warm.prompt_ids, window, self.decode_tokens)?;
            for c in contenders {
                continue_from(&loaded.model, &loaded.tokenizer, &pre, &opts, dyn_c(c))?;
            }
            Ok(())
        };
        if !self.warm_every_length {
            warm_up(shortest.min(512))?;
        }

        let mut rows = Vec::new();
        for &length in self.lengths {
            if self.warm_every_length {
                say(&format!(
                    "length {length}: warm-up (kernels compile and tune per shape)"
                ));
                warm_up(length)?;
            }
            let sample = builder
                .peer_needle(&needle, length, 50.0)
                .map_err(|source| BenchError::Prompt { length, source })?;
            let (prefills, runs) = self.measure(loaded, &sample.prompt_ids, window, &opts, say)?;
            let prefill_ms = median(&prefills);
            for (c, r) in contenders.iter().zip(&runs) {
                let compress_ms = median(&r.iter().map(|x| x.compress_ms).collect::<Vec<_>>());
                let kv = r[0].kv;
                let per_token = weights + kv;
                let macs = loaded.spec.prefill_macs(length);
                rows.push(BenchRow {
                    method: c.method.clone(),
                    length,
                    budget: c.budget,
                    prefill_ms,
                    prefill_tokens_per_s: length as f64 / (prefill_ms / 1e3),
                    compress_ms,
                    compress_share: compress_ms / prefill_ms,
                    decode_tokens_per_s: median(
                        &r.iter().map(|x| x.decode_tokens_per_s).collect::<Vec<_>>(),
                    ),
                    kv_cache_bytes_full: r[0].kv_full,
                    kv_cache_bytes: kv,
                    peak_rss_bytes: r.iter().filter_map(|x| x.peak_rss).max(),
                    device_memory_bytes: r.iter().filter_map(|x| x.device_memory).max(),
                    decode_bytes_per_token: per_token,
                    bandwidth_bound_tokens_per_s: machine
                        .memory_bandwidth_bytes_per_s
                        .map(|b| b / per_token as f64),
                    prefill_macs: macs,
                    prefill_compute_bound_tokens_per_s: machine
                        .fma_peak_macs_per_s
                        .map(|p| p * length as f64 / macs),
                    repeats: self.repeats,
                });
            }
        }
        Ok(rows)
    }

    /// `repeats` rounds on one prompt: a prefill, then every contender from it. The prefill
    /// times, and each contender's measurements (`[contender][repeat]`).
    #[allow(clippy::type_complexity)]
    fn measure(
        &self,
        loaded: &LoadedModel,
        ids: &[u32],
        window: usize,
        opts: &GenerateOptions,
        say: &dyn Fn(&str),
    ) -> Result<(Vec<f64>, Vec<Vec<Measured>>), BenchError> {
        let contenders = self.contenders;
        // [contender][repeat]
        let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); contenders.len()];
        let mut prefills = Vec::new();
        for r in 0..self.repeats {
            say(&format!(
                "length {}: repeat {}/{}",
                ids.len(),
                r + 1,
                self.repeats
            ));
            reset_peak_rss();
            let pre = prefill(&loaded.model, ids, window, self.decode_tokens)?;
            let prefill_peak = peak_rss_bytes();
            let prefill_device = device_memory_bytes(loaded);
            prefills.push(pre.prefill_ms);
            // Compressing contenders first; the last run (an uncompressed one where listed)
            // takes the prefilled cache by value instead of growing a copy of it.
            let mut order: Vec<usize> = (0..contenders.len()).collect();
            order.sort_by_key(|&i| contenders[i].compressor.is_none());
            let mut pre = Some(pre);
            for (k, &i) in order.iter().enumerate() {
                let c = dyn_c(&contenders[i]);
                reset_peak_rss();
                let o = if k + 1 == order.len() {
                    let pre = pre.take().expect("the prefilled state is taken once");
                    continue_owned(&loaded.model, &loaded.tokenizer, pre, opts, c)?
                } else {
                    let pre = pre.as_ref().expect("taken only by the last run");
                    continue_from(&loaded.model, &loaded.tokenizer, pre, opts, c)?
                };
                let peak = match (prefill_peak, peak_rss_bytes()) {
                    (Some(p), Some(q)) => Some(p.max(q)),
                    _ => None,
                };
                runs[i].push(Measured {
                    compress_ms: o.compress_ms,
                    decode_tokens_per_s: o.decode_tokens_per_s,
                    kv_full: o.kv_cache_bytes_full,
                    kv: o.kv_cache_bytes,
                    peak_rss: peak,
                    device_memory: device_memory_bytes(loaded).max(prefill_device),
                });
            }
        }
        Ok((prefills, runs))
    }
}

/// A contender's compressor as the generation functions take it.
fn dyn_c(c: &Contender) -> Option<&dyn CacheCompressor> {
    c.compressor.as_ref().map(|c| c as &dyn CacheCompressor)
}

/// One method's measurement in one repeat.
#[derive(Clone)]
struct Measured {
    compress_ms: f64,
    decode_tokens_per_s: f64,
    kv_full: usize,
    kv: usize,
    peak_rss: Option<u64>,
    device_memory: Option<u64>,
}

/// What the device's allocator holds now (GPU backends; `None` where it does not report).
fn device_memory_bytes(loaded: &LoadedModel) -> Option<u64> {
    let device = &loaded.model.device().device;
    device.sync().ok()?;
    device.memory_pool_usage().map(|u| u.bytes_reserved)
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Linux: resets the process's peak RSS (`VmHWM`) so the next reading covers only what follows.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Linux: the process's peak RSS since start or the last [`reset_peak_rss`]; `None` elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Read bandwidth of main memory with every core summing its share of a 512 MiB buffer (best
/// of 3): the ceiling a bandwidth-bound decode step can reach on this machine.
pub fn memory_bandwidth_bytes_per_s() -> Option<f64> {
    let n: usize = (512 << 20) / 8; // u64 words
    let buf: Vec<u64> = (0..n as u64).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = n.div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a.wrapping_add(x))))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max((n * 8) as f64 / t.elapsed().as_secs_f64());
    }
    (best > 0.0).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
