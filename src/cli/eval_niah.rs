//! `compresskv eval niah`: Needle-in-a-Haystack and passkey retrieval, every method on the
//! same prompts, one jsonl row per answer, a summary table and one heatmap per method×budget.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use compresskv_runtime::eval::niah::run::{
    NiahGrid, NiahRow, SummaryRow, run_niah, summarize, task_name,
};
use compresskv_runtime::eval::niah::{Needle, Protocol, Task, load_needles};
use compresskv_runtime::eval::run::contender_grid;
use compresskv_runtime::loader::load_model;
use compresskv_runtime::press::engine::BudgetSpec;
use indicatif::{ProgressBar, ProgressStyle};

use super::press_args::{BudgetArg, PressTuning};
use super::table::Table;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NiahTask {
    Needle,
    Passkey,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NiahProtocol {
    /// The prompts and scoring of shared/notes/peer-baseline.md (HF transformers + kvpress).
    Peer,
    /// The CompressKV paper's needle script (template, 200-token buffer, stemmed ROUGE-1).
    Paper,
    /// The classic passkey prompt ("The pass key is N. Remember it. N is the pass key.").
    Landmark,
}

#[derive(Args, Debug, Clone)]
pub struct NiahArgs {
    /// Model id, HF directory or .gguf file.
    #[arg(long, default_value = "google/gemma-3-270m")]
    pub model: String,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "full,streamingllm,snapkv,pyramidkv,adakv,compresskv"
    )]
    pub methods: Vec<String>,
    /// KV entries kept per compressed layer (the full cache runs once, without a budget);
    /// `auto` is the profile's recommendation.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    pub budgets: Vec<BudgetArg>,
    /// Prompt lengths in tokens (BOS and question included).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024, 2048, 4096])]
    pub lengths: Vec<usize>,
    /// Needle depths in percent of the haystack.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.0, 25.0, 50.0, 75.0, 100.0])]
    pub depths: Vec<f64>,
    /// Directory of .txt files read in name order and repeated as needed (default: the
    /// fetched Paul Graham essays), or `noise` for the repeated-noise haystack.
    #[arg(long)]
    pub haystack: Option<String>,
    /// Needles jsonl (`needle`, `question`, `answer`), one sample per needle
    /// (default: the peer baseline's San Francisco needle).
    #[arg(long)]
    pub needles: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "needle")]
    pub task: NiahTask,
    #[arg(long, value_enum, default_value = "peer")]
    pub protocol: NiahProtocol,
    /// Passkey samples per (length, depth).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Base seed of the passkeys: same seed ⇒ same prompts for every method.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory: niah-<task>.jsonl, summary.json, heatmaps.
    #[arg(long, default_value = "results/niah")]
    pub out: PathBuf,
    #[command(flatten)]
    pub tuning: PressTuning,
    /// Label the rows of compressing methods `METHOD+VARIANT` (e.g. `--srh-heads 1 --variant
    /// top1`), so runs with other settings can share an output directory and summary.
    #[arg(long)]
    pub variant: Option<String>,
    #[arg(long)]
    pub json: bool,
}

impl NiahTask {
    pub fn task(self) -> Task {
        match self {
            NiahTask::Needle => Task::Needle,
            NiahTask::Passkey => Task::Passkey,
        }
    }
}

impl NiahProtocol {
    fn protocol(self) -> Protocol {
        match self {
            NiahProtocol::Peer => Protocol::Peer,
            NiahProtocol::Paper => Protocol::Paper,
            NiahProtocol::Landmark => Protocol::Landmark,
        }
    }
}

pub fn run(device: &super::DeviceArgs, args: NiahArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let device = device.runtime()?;
    let lm = load_model(&args.model, &device)?;
    let haystack = super::load_haystack(args.haystack.as_deref())?;
    let needles = match &args.needles {
        Some(p) => load_needles(p).with_context(|| format!("reading --needles {}", p.display()))?,
        None => vec![Needle::san_francisco()],
    };
    let task = args.task.task();
    let grid = NiahGrid {
        task,
        protocol: args.protocol.protocol(),
        lengths: &args.lengths,
        depths: &args.depths,
        needles: &needles,
        passkeys: args.samples,
        seed: args.seed,
    };
    let samples = grid.samples(&lm, &haystack)?;
    let budgets = args
        .tuning
        .resolve_budgets(&lm, &args.model, &args.budgets, args.json)?;
    let contenders = contender_grid(&args.methods, &budgets, args.variant.as_deref(), |m, b| {
        args.tuning
            .compressor(&lm, m, BudgetSpec::Entries(b))
            .with_context(|| format!("--methods {m} at budget {b}"))
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let rows_path = args.out.join(format!("niah-{}.jsonl", task_name(task)));

    let bar = ProgressBar::new(samples.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} prompts {msg}",
    )?);
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut started = false;
    let rows = run_niah(&lm, task, &samples, &contenders, &rows_path, &mut |msg| {
        if std::mem::replace(&mut started, true) {
            bar.inc(1);
        }
        bar.set_message(msg.to_string());
    })?;
    bar.finish_and_clear();

    // The summary covers every method in the file (e.g. earlier `--variant` runs) on this
    // run's prompts.
    let summary = summarize(&rows, &args.lengths);
    let pngs = write_heatmaps(&args, &rows)?;
    let summary_json = serde_json::json!({
        "model": lm.id, "task": task_name(task), "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "lengths": args.lengths, "depths": args.depths, "rows_file": rows_path,
        "heatmaps": pngs, "summary": summary,
    });
    std::fs::write(
        args.out.join(format!("summary-{}.json", task_name(task))),
        serde_json::to_string_pretty(&summary_json)?,
    )?;
    if args.json {
        super::print_json(&summary_json)?;
    } else {
        println!("{}", render_summary(&summary, &args.lengths, args.task));
        println!("rows: {}", rows_path.display());
        if !pngs.is_empty() {
            println!("heatmaps: {}", args.out.display());
        }
    }
    Ok(())
}

fn validate(args: &NiahArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.methods.is_empty(), "--methods is empty");
    anyhow::ensure!(!args.lengths.is_empty(), "--lengths is empty");
    anyhow::ensure!(!args.depths.is_empty(), "--depths is empty");
    for d in &args.depths {
        anyhow::ensure!(
            (0.0..=100.0).contains(d),
            "--depths must be percentages in 0..=100, got {d}"
        );
    }
    if args.methods.iter().any(|m| m != "full") {
        anyhow::ensure!(
            !args.budgets.is_empty(),
            "--budgets is empty but compressing methods were asked for"
        );
    }
    match (args.task, args.protocol) {
        (NiahTask::Needle, NiahProtocol::Landmark) => {
            anyhow::bail!("--protocol landmark is a passkey prompt: use it with --task passkey")
        }
        (NiahTask::Passkey, NiahProtocol::Paper) => {
            anyhow::bail!("--protocol paper is a needle prompt: use --protocol peer or landmark")
        }
        _ => Ok(()),
    }
}

fn render_summary(summary: &[SummaryRow], lengths: &[usize], task: NiahTask) -> String {
    let mut t = Table::new()
        .col("method", |s: &SummaryRow| s.method.clone())
        .col("budget", |s| s.budget.map_or("-".into(), |b| b.to_string()));
    for &l in lengths {
        t = t.col(l.to_string(), move |s| {
            s.per_length
                .iter()
                .find(|(len, _)| *len == l)
                .map_or("-".into(), |(_, m)| format!("{m:.1}"))
        });
    }
    let mean = if task == NiahTask::Needle {
        "mean recall %"
    } else {
        "mean exact %"
    };
    t.col(mean, |s| format!("{:.1}", s.mean_score))
        .col("% of full", |s| {
            s.pct_of_full.map_or("-".into(), |p| format!("{p:.0}"))
        })
        .col("KV cache", |s| {
            super::table::bytes(s.mean_kv_cache_bytes as usize)
        })
        .col("n", |s| s.n.to_string())
        .render(summary)
}

/// One PNG per method×budget: mean score per (depth, length), like the paper's figures.
fn write_heatmaps(args: &NiahArgs, rows: &[NiahRow]) -> anyhow::Result<Vec<PathBuf>> {
    let mut groups: BTreeMap<(String, Option<usize>), Vec<&NiahRow>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.method.clone(), r.budget))
            .or_default()
            .push(r);
    }
    let mut paths = Vec::new();
    for ((method, budget), v) in groups {
        let values: Vec<Vec<f64>> = args
            .depths
            .iter()
            .map(|&d| {
                args.lengths
                    .iter()
                    .map(|&l| {
                        let g: Vec<f64> = v
                            .iter()
                            .filter(|r| r.length == l && r.depth == d)
                            .map(|r| r.score)
                            .collect();
                        if g.is_empty() {
                            f64::NAN
                        } else {
                            g.iter().sum::<f64>() / g.len() as f64
                        }
                    })
                    .collect()
            })
            .collect();
        let name = match budget {
            Some(b) => format!("{}-{method}-{b}.png", task_name(args.task.task())),
            None => format!("{}-{method}.png", task_name(args.task.task())),
        };
        let path = args.out.join(name);
        let title = match budget {
            Some(b) => format!("{method}, budget {b} ({})", task_name(args.task.task())),
            None => format!("{method} ({})", task_name(args.task.task())),
        };
        super::heatmap::heatmap_png(
            &path,
            &title,
            "context length (tokens)",
            "needle depth (%)",
            &args
                .lengths
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>(),
            &args
                .depths
                .iter()
                .map(|d| format!("{d}"))
                .collect::<Vec<_>>(),
            &values,
            Some((0.0, 100.0)),
        )?;
        paths.push(path);
    }
    Ok(paths)
}
