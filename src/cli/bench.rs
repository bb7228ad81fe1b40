//! `compresskv bench`: prefill time, compression time, decode speed, KV bytes and peak RSS per
//! (method, length), measured side by side in one process, with the decode cost model.
//!
//! Per repeat and length the prompt is prefilled once (prefill does not depend on the method:
//! compression runs after it) and every method then compresses its own copy of that cache and
//! decodes `--decode-tokens` tokens, so the methods of a row group share the same machine state.
//! A warm-up run precedes the measurements; reported times are medians over `--repeats`.

use anyhow::Context;
use clap::Args;
use compresskv_runtime::eval::niah::{Needle, NiahBuilder};
use compresskv_runtime::generate::{
    CacheCompressor, GenerateOptions, continue_from, continue_owned, prefill,
};
use compresskv_runtime::loader::load_model;
use compresskv_runtime::press::Compressor;
use compresskv_runtime::press::engine::BudgetSpec;
use serde::Serialize;

use super::press_args::PressTuning;
use super::table::{Table, bytes};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value = "google/gemma-3-270m")]
    pub model: String,
    /// Prompt lengths in tokens.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024, 4096, 16384])]
    pub lengths: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "full,snapkv,compresskv")]
    pub methods: Vec<String>,
    /// KV entries kept per compressed layer.
    #[arg(long, default_value_t = 128)]
    pub budget: usize,
    /// Tokens decoded per measurement (EOS ignored so every row decodes the same count).
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Measured repeats per length (medians are reported); one warm-up run comes first.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Haystack directory (default: the fetched essays; `noise` for repeated noise).
    #[arg(long)]
    pub haystack: Option<String>,
    #[command(flatten)]
    pub tuning: PressTuning,
    #[arg(long)]
    pub json: bool,
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

pub fn run(device: &super::DeviceArgs, a: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.repeats >= 1, "--repeats must be at least 1");
    anyhow::ensure!(a.decode_tokens >= 2, "--decode-tokens must be at least 2");
    let say = |s: &str| {
        if !a.json {
            eprintln!("{s}");
        }
    };
    let device = device.runtime()?;
    let lm = load_model(&a.model, &device)?;
    let haystack = super::load_haystack(a.haystack.as_deref())?;
    let builder = NiahBuilder::for_model(&haystack, &lm);
    let needle = Needle::san_francisco();

    let mut compressors: Vec<(String, Option<Compressor>)> = Vec::new();
    for m in &a.methods {
        let c = if m == "full" {
            None
        } else {
            Some(
                a.tuning
                    .compressor(&lm, m, BudgetSpec::Entries(a.budget))
                    .with_context(|| format!("--methods {m}"))?,
            )
        };
        compressors.push((m.clone(), c));
    }
    let window = compressors
        .iter()
        .filter_map(|(_, c)| c.as_ref().map(|c| c.window()))
        .max()
        .unwrap_or(0);
    let opts = GenerateOptions {
        max_new_tokens: a.decode_tokens,
        eos_ids: vec![],
        ..Default::default()
    };
    let weights = lm.model.decode_weight_bytes();
    say("measuring memory bandwidth…");
    let bandwidth = memory_bandwidth_bytes_per_s();
    let fma_peak = if device.uses_cpu_kernels() {
        say("measuring the f32 FMA peak…");
        compresskv_runtime::kernels::peak::fma_peak_macs_per_s()
    } else {
        None
    };

    // Warm-up: the first forward passes allocate and tune kernels.
    {
        let warm = builder.peer_needle(
            &needle,
            a.lengths.iter().copied().min().unwrap().min(512),
            50.0,
        )?;
        let pre = prefill(&lm.model, &warm.prompt_ids, window, a.decode_tokens)?;
        for (_, c) in &compressors {
            continue_from(
                &lm.model,
                &lm.tokenizer,
                &pre,
                &opts,
                c.as_ref().map(|c| c as &dyn CacheCompressor),
            )?;
        }
    }

    let mut rows = Vec::new();
    for &length in &a.lengths {
        let sample = builder
            .peer_needle(&needle, length, 50.0)
            .with_context(|| format!("building a {length}-token prompt"))?;
        // [method][repeat]
        let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); compressors.len()];
        let mut prefills = Vec::new();
        for r in 0..a.repeats {
            say(&format!("length {length}: repeat {}/{}", r + 1, a.repeats));
            reset_peak_rss();
            let pre = prefill(&lm.model, &sample.prompt_ids, window, a.decode_tokens)?;
            let prefill_peak = peak_rss_bytes();
            prefills.push(pre.prefill_ms);
            // Compressing methods first; the last run (an uncompressed one where listed) takes
            // the prefilled cache by value instead of growing a copy of it.
            let mut order: Vec<usize> = (0..compressors.len()).collect();
            order.sort_by_key(|&i| compressors[i].1.is_none());
            let mut pre = Some(pre);
            for (k, &i) in order.iter().enumerate() {
                let c = compressors[i].1.as_ref().map(|c| c as &dyn CacheCompressor);
                reset_peak_rss();
                let o = if k + 1 == order.len() {
                    let pre = pre.take().expect("the prefilled state is taken once");
                    continue_owned(&lm.model, &lm.tokenizer, pre, &opts, c)?
                } else {
                    let pre = pre.as_ref().expect("taken only by the last run");
                    continue_from(&lm.model, &lm.tokenizer, pre, &opts, c)?
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
                });
            }
        }
        let prefill_ms = median(&prefills);
        for ((method, c), r) in compressors.iter().zip(&runs) {
            let compress_ms = median(&r.iter().map(|x| x.compress_ms).collect::<Vec<_>>());
            let kv = r[0].kv;
            let per_token = weights + kv;
            let macs = lm.spec.prefill_macs(length);
            rows.push(BenchRow {
                method: method.clone(),
                length,
                budget: c.as_ref().map(|_| a.budget),
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
                decode_bytes_per_token: per_token,
                bandwidth_bound_tokens_per_s: bandwidth.map(|b| b / per_token as f64),
                prefill_macs: macs,
                prefill_compute_bound_tokens_per_s: fma_peak.map(|p| p * length as f64 / macs),
                repeats: a.repeats,
            });
        }
    }

    if a.json {
        return super::print_json(&serde_json::json!({
            "model": lm.id, "device": device.describe(), "precision": device.precision.name(),
            "weight_formats": lm.model.kernel_formats().iter().map(|(f, n, b)| serde_json::json!({
                "format": f, "tensors": n, "bytes": b })).collect::<Vec<_>>(),
            "budget": a.budget,
            "decode_tokens": a.decode_tokens, "repeats": a.repeats,
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "memory_bandwidth_bytes_per_s": bandwidth, "decode_weight_bytes": weights,
            "fma_peak_macs_per_s": fma_peak,
            "rows": rows,
        }));
    }
    let t = Table::new()
        .col("method", |r: &BenchRow| match r.budget {
            Some(b) => format!("{} @ {b}", r.method),
            None => r.method.clone(),
        })
        .col("length", |r| r.length.to_string())
        .col("prefill", |r| {
            format!(
                "{:.0} ms ({:.0} tok/s)",
                r.prefill_ms, r.prefill_tokens_per_s
            )
        })
        .col("compute bound", |r| {
            r.prefill_compute_bound_tokens_per_s
                .map_or("-".into(), |b| format!("{b:.0} tok/s"))
        })
        .col("compress", |r| {
            format!("{:.1} ms ({:.2}%)", r.compress_ms, 100.0 * r.compress_share)
        })
        .col("decode", |r| format!("{:.1} tok/s", r.decode_tokens_per_s))
        .col("KV cache (full → kept)", |r| {
            format!(
                "{} → {}",
                bytes(r.kv_cache_bytes_full),
                bytes(r.kv_cache_bytes)
            )
        })
        .col("peak RSS", |r| {
            r.peak_rss_bytes.map_or("-".into(), |b| bytes(b as usize))
        })
        .col("bytes/token", |r| bytes(r.decode_bytes_per_token))
        .col("bandwidth bound", |r| {
            r.bandwidth_bound_tokens_per_s
                .map_or("-".into(), |b| format!("{b:.1} tok/s"))
        });
    println!("{}", t.render(&rows));
    println!(
        "{} on {}, {} threads; median of {} repeats after a warm-up; decode of {} tokens; \
         prefill shared by the methods of a length. Decode reads {} of weights per token{}{}.",
        lm.id,
        device.describe(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        a.repeats,
        a.decode_tokens,
        bytes(weights),
        bandwidth.map_or(String::new(), |b| format!(
            "; measured memory read bandwidth {:.1} GB/s",
            b / 1e9
        )),
        fma_peak.map_or(String::new(), |p| format!(
            "; measured f32 FMA peak {:.0} GFLOP/s (the prefill compute bound)",
            2.0 * p / 1e9
        ))
    );
    Ok(())
}

/// One method's measurement in one repeat.
#[derive(Clone)]
struct Measured {
    compress_ms: f64,
    decode_tokens_per_s: f64,
    kv_full: usize,
    kv: usize,
    peak_rss: Option<u64>,
}

fn median(v: &[f64]) -> f64 {
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
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Linux: the process's peak RSS since start or the last [`reset_peak_rss`]; `None` elsewhere.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Read bandwidth of main memory with every core summing its share of a 512 MiB buffer (best
/// of 3): the ceiling a bandwidth-bound decode step can reach on this machine.
fn memory_bandwidth_bytes_per_s() -> Option<f64> {
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
