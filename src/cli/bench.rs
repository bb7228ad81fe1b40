//! `compresskv bench`: prefill time, compression time, decode speed, KV bytes and peak RSS per
//! (method, length), measured side by side in one process, with the decode cost model. The
//! measurement is `compresskv_runtime::eval::bench`; this file parses, calls it and renders.

use anyhow::Context;
use clap::Args;
use compresskv_runtime::device::BackendKind;
use compresskv_runtime::eval::bench::{BenchPlan, BenchRow, Machine};
use compresskv_runtime::eval::run::contender_grid;
use compresskv_runtime::loader::load_model;
use compresskv_runtime::press::engine::BudgetSpec;

use super::press_args::{BudgetArg, PressTuning};
use super::table::{Table, bytes, bytes_kept};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value = "google/gemma-3-270m")]
    pub model: String,
    /// Prompt lengths in tokens.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024, 4096, 16384])]
    pub lengths: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "full,snapkv,compresskv")]
    pub methods: Vec<String>,
    /// KV entries kept per compressed layer, or `auto` (the profile's recommendation).
    #[arg(long, default_value = "128")]
    pub budget: BudgetArg,
    /// Tokens decoded per measurement (EOS ignored so every row decodes the same count).
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Measured repeats per length (medians are reported); one warm-up run comes first.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Haystack directory (default: the fetched essays); `noise` for repeated noise;
    /// `longbench:PATH` / `leval:PATH` for LongBench / L-Eval documents (as `eval niah`).
    #[arg(long)]
    pub haystack: Option<String>,
    #[command(flatten)]
    pub tuning: PressTuning,
    #[arg(long)]
    pub json: bool,
}

pub fn run(device: &super::DeviceArgs, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    anyhow::ensure!(
        args.decode_tokens >= 2,
        "--decode-tokens must be at least 2"
    );
    let say = |s: &str| {
        if !args.json {
            eprintln!("{s}");
        }
    };
    let device = device.runtime()?;
    let loaded = load_model(&args.model, &device)?;
    let haystack = super::load_haystack(args.haystack.as_deref())?;
    let budgets = args
        .tuning
        .resolve_budgets(&loaded, &args.model, &[args.budget], args.json)?;
    let contenders = contender_grid(&args.methods, &budgets, None, |m, b| {
        args.tuning
            .compressor(&loaded, m, BudgetSpec::Entries(b))
            .with_context(|| format!("--methods {m}"))
    })?;
    let weights = loaded.model.decode_weight_bytes();
    let on_host = device.kind == BackendKind::Flex;
    let plan = BenchPlan {
        lengths: &args.lengths,
        contenders: &contenders,
        decode_tokens: args.decode_tokens,
        repeats: args.repeats,
        warm_every_length: !on_host,
    };
    plan.check(&loaded.spec)?;
    let machine = Machine::measure(on_host, device.uses_cpu_kernels(), &say);
    let bandwidth = machine.memory_bandwidth_bytes_per_s;
    let fma_peak = machine.fma_peak_macs_per_s;
    let rows = plan.run(&loaded, &haystack, &machine, &say)?;
    // GPUs always run the exact path, whatever `--precision` says.
    let precision = if on_host {
        device.precision.name()
    } else {
        "exact"
    };

    if args.json {
        return super::print_json(&serde_json::json!({
            "model": loaded.id, "device": device.describe(), "precision": precision,
            "weight_formats": loaded.model.kernel_formats().iter().map(|(f, n, b)| serde_json::json!({
                "format": f, "tensors": n, "bytes": b })).collect::<Vec<_>>(),
            "budget": budgets[0],
            "decode_tokens": args.decode_tokens, "repeats": args.repeats,
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "memory_bandwidth_bytes_per_s": bandwidth, "decode_weight_bytes": weights,
            "fma_peak_macs_per_s": fma_peak,
            "rows": rows,
        }));
    }
    println!("{}", render_rows(&rows));
    println!(
        "{} on {}, {} threads; median of {} repeats after a warm-up; decode of {} tokens; \
         prefill shared by the methods of a length. Decode reads {} of weights per token{}{}.",
        loaded.id,
        device.describe(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        args.repeats,
        args.decode_tokens,
        bytes(weights),
        bandwidth.map_or(String::new(), |b| format!(
            "; measured memory read bandwidth {:.1} GB/s",
            b / 1e9
        )),
        fma_peak.map_or(String::new(), |p| format!(
            "; measured f32 FMA peak {:.0} GFLOP/s ({})",
            2.0 * p / 1e9,
            // The "compute bound" column is an f32 prefill's; bf16 tiles are not held to it.
            if compresskv_runtime::kernels::simd::amx() {
                "an f32 prefill's compute bound; quantized weights prefill on AMX tiles here, \
                 products and attention"
            } else {
                "the prefill compute bound"
            }
        ))
    );
    Ok(())
}

/// The human table of the bench rows.
fn render_rows(rows: &[BenchRow]) -> String {
    Table::new()
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
            bytes_kept(r.kv_cache_bytes_full, r.kv_cache_bytes)
        })
        .col("peak RSS", |r| {
            r.peak_rss_bytes.map_or("-".into(), |b| bytes(b as usize))
        })
        .col("bytes/token", |r| bytes(r.decode_bytes_per_token))
        .col("bandwidth bound", |r| {
            r.bandwidth_bound_tokens_per_s
                .map_or("-".into(), |b| format!("{b:.1} tok/s"))
        })
        .render(rows)
}
