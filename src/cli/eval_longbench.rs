//! `compresskv eval longbench`: LongBench v1 samples with the official templates, truncation,
//! generation lengths and metrics, every method × budget decoded from one prefill per sample,
//! plus the teacher-forced fidelity of each compressed cache against the full cache. The runner
//! is `compresskv_runtime::eval::longbench::run`; this file parses, calls it and renders.
//!
//! One jsonl row per (dataset, sample, method, budget) is appended (and flushed) as soon as it
//! is known, so a killed run resumes where it stopped; the summary is computed from the file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use compresskv_runtime::eval::fidelity::{POSITION_BINS, position_bin_label};
use compresskv_runtime::eval::longbench::run::{
    LongBenchRun, SummaryRow, find_config, find_data_dir, jsonl_names,
};
use compresskv_runtime::eval::longbench::{LongBenchSample, load_samples};
use compresskv_runtime::eval::metrics::metric_for_dataset;
use compresskv_runtime::eval::run::contender_grid;
use compresskv_runtime::loader::load_model;
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::press::method_names;
use indicatif::{ProgressBar, ProgressStyle};

use super::press_args::{BudgetArg, Contenders, PressTuning};
use super::table::{Table, bytes};

#[derive(Args, Debug)]
pub struct LongbenchArgs {
    /// Directory of LongBench jsonl files, `<dataset>.jsonl` directly in it or under `data/`
    /// (e.g. shared/datasets/longbench-v1-minilongbench).
    #[arg(long)]
    pub data: PathBuf,
    /// Datasets, comma-separated (e.g. hotpotqa,trec); default: every `<dataset>.jsonl` found.
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// THUDM/LongBench `config` directory (dataset2prompt.json, dataset2maxlen.json); default:
    /// looked up next to --data (`config/`, `LongBench/config/`, `longbench-thudm/LongBench/config/`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model id (e.g. google/gemma-3-270m), HF model directory, or .gguf file.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub contenders: Contenders,
    /// First N samples of each dataset (default: all).
    #[arg(long)]
    pub max_samples: Option<usize>,
    /// Prompt limit in tokens: longer prompts keep their first and last halves (pred.py's
    /// middle truncation).
    #[arg(long, default_value_t = 4096)]
    pub max_length: usize,
    /// Output directory; rows go to `<out>/longbench.jsonl` (existing rows are kept and skipped).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub tuning: PressTuning,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(device: &super::DeviceArgs, args: LongbenchArgs) -> anyhow::Result<()> {
    let t_start = Instant::now();
    let device = device.runtime()?;
    let (samples, methods, budgets) = read_inputs(&args)?;
    let (config, config_dir) = find_config(args.config.as_deref(), &args.data)?;

    let loaded = load_model(&args.model, &device)?;
    let budgets = args
        .tuning
        .resolve_budgets(&loaded, &args.model, &budgets, args.json)?;
    let contenders = contender_grid(&methods, &budgets, None, |m, b| {
        args.tuning
            .compressor(&loaded, m, BudgetSpec::Entries(b))
            .with_context(|| format!("method {m} at budget {b}"))
    })?;
    let t = &args.tuning;
    let settings = format!(
        "model={} max_length={} profile={} window={:?} kernel={:?} srh_heads={:?} mix={:?} \
         union={:?} error_weight={:?} sliding={:?}",
        loaded.id,
        args.max_length,
        t.profile,
        t.window,
        t.kernel,
        t.srh_heads,
        t.mix,
        t.union,
        t.error_weight,
        t.sliding
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let path = args.out.join("longbench.jsonl");
    let job = LongBenchRun {
        config: &config,
        samples: &samples,
        contenders: &contenders,
        max_length: args.max_length,
        settings,
    };
    let bar = ProgressBar::new(job.total() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}",
    )?);
    let summary = job.run(&loaded, &path, &mut |done, msg| {
        bar.inc(done);
        if !msg.is_empty() {
            bar.set_message(msg.to_string());
        }
    })?;
    bar.finish_and_clear();

    if args.json {
        super::print_json(&serde_json::json!({
            "out": path,
            "model": loaded.id,
            "config": config_dir,
            "max_length": args.max_length,
            "wall_s": t_start.elapsed().as_secs_f64(),
            "rows": summary,
        }))?;
    } else {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        let t = Table::new()
            .col("dataset", |s: &SummaryRow| s.dataset.clone())
            .col("method", |s| s.method.clone())
            .col("budget", |s| {
                s.budget.map_or("-".to_string(), |b| b.to_string())
            })
            .col("n", |s| s.n.to_string())
            .col("score", |s| format!("{:.2}", s.score))
            .col("Δlogprob", |s| opt(s.delta_logprob))
            .col("KL", |s| opt(s.kl))
            .col("KV kept", |s| bytes(s.kv_bytes_kept.round() as usize));
        println!("{}", t.render(&summary));
        println!(
            "\ndecode-length drift: KL per reference-answer position, and how far each free-running \
             decode follows the full cache's greedy output (same prefix in tokens, LCS F1)"
        );
        let mut d = Table::new()
            .col("dataset", |s: &SummaryRow| s.dataset.clone())
            .col("method", |s| s.method.clone())
            .col("budget", |s| {
                s.budget.map_or("-".to_string(), |b| b.to_string())
            })
            .col("answer tok", |s| format!("{:.0}", s.answer_tokens))
            .col("new tok", |s| format!("{:.0}", s.new_tokens))
            .col("same prefix", |s| {
                s.agree_prefix.map_or("-".into(), |x| format!("{x:.1}"))
            })
            .col("LCS F1", |s| {
                s.agree_lcs.map_or("-".into(), |x| format!("{x:.3}"))
            });
        for (i, &bin) in POSITION_BINS.iter().enumerate() {
            d = d.col(format!("KL {}", position_bin_label(bin)), move |s| {
                opt(s.kl_bins[i])
            });
        }
        println!("{}", d.render(&summary));
        eprintln!(
            "rows: {} ({:.0} s)",
            path.display(),
            t_start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The samples per dataset, methods and budgets asked for, checked before the model loads.
#[allow(clippy::type_complexity)]
fn read_inputs(
    args: &LongbenchArgs,
) -> anyhow::Result<(
    Vec<(String, Vec<LongBenchSample>)>,
    Vec<String>,
    Vec<BudgetArg>,
)> {
    let data_dir = find_data_dir(&args.data)?;
    let available = jsonl_names(&data_dir);
    let datasets: Vec<String> = if args.datasets.is_empty() {
        available.clone()
    } else {
        dedup(args.datasets.iter().map(|d| d.trim().to_string()))
    };
    for ds in &datasets {
        let p = data_dir.join(format!("{ds}.jsonl"));
        if !p.is_file() {
            bail!(
                "{} does not exist; the datasets in {} are: {}",
                p.display(),
                data_dir.display(),
                available.join(", ")
            );
        }
        metric_for_dataset(ds).with_context(|| format!("--datasets {ds}"))?;
    }
    let methods = dedup(args.contenders.methods.iter().map(|m| m.trim().to_string()));
    let known = method_names();
    for m in &methods {
        if !known.contains(&m.as_str()) {
            bail!(
                "unknown method `{m}` in --methods; available: {}",
                known.join(", ")
            );
        }
    }
    let budgets = dedup(args.contenders.budgets.iter().copied());
    if methods.iter().any(|m| m != "full") && budgets.is_empty() {
        bail!("--budgets is empty: give at least one KV budget (e.g. --budgets 64,128,256)");
    }

    let mut samples = Vec::new();
    for ds in &datasets {
        let mut s = load_samples(data_dir.join(format!("{ds}.jsonl")))?;
        if let Some(n) = args.max_samples {
            s.truncate(n);
        }
        samples.push((ds.clone(), s));
    }

    Ok((samples, methods, budgets))
}

/// `items` without repeats, first occurrence kept.
fn dedup<T: Eq + std::hash::Hash + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|x| seen.insert(x.clone()))
        .collect()
}
