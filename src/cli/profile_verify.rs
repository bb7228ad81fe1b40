//! `compresskv profile verify`: check that a profile fits the model, measure CompressKV at each
//! budget against the full cache on held-out needle prompts, and recommend the smallest budget
//! that keeps a target share of the full cache's score (stored with `--write` for
//! `--budget auto`). The measurement is `eval::verify` in the runtime; this file parses, calls
//! and renders.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use compresskv_runtime::eval::verify::{
    self, Applied, BudgetLine, HeldOutNeedles, METHOD, RowsAt, VerifyPlan, VerifyProgress,
    VerifyReport, VerifyTask,
};
use compresskv_runtime::loader::{LoadedModel, load_model};
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::profile::{Profile, ProfileSource, default_profile_out};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::eval_niah::NiahTask;
use super::press_args::PressTuning;
use super::profile_load::profile_source;
use super::table::{Table, bytes};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Model id, HF directory or .gguf file.
    #[arg(default_value = "google/gemma-3-270m")]
    pub model: String,
    /// `auto` (next to the weights, $COMPRESSKV_PROFILES, <cache>/profiles/, then the built-in
    /// profiles) or a profile file.
    #[arg(long, default_value = "auto")]
    pub profile: String,
    /// Prompt lengths in tokens (the lengths you will run at).
    #[arg(long, value_delimiter = ',', default_values_t = vec![2048, 4096])]
    pub lengths: Vec<usize>,
    /// Needle depths in percent of the haystack.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10.0, 50.0, 90.0])]
    pub depths: Vec<f64>,
    /// Mean budgets measured (KV entries per compressed layer).
    #[arg(long, value_delimiter = ',', default_values_t = vec![64, 128, 256, 512],
          value_parser = parse_budget)]
    pub budgets: Vec<usize>,
    /// The share of the full cache's score the recommended budget must keep, in (0, 1].
    #[arg(long, default_value_t = 0.9, value_parser = parse_target)]
    pub target: f64,
    /// `noise` (default: the repeated-noise haystack, which neither the calibration nor the
    /// tune saw), `longbench:PATH`, `leval:PATH` (documents of LongBench / L-Eval jsonl, as
    /// `eval niah` reads them) or a directory of .txt files.
    #[arg(long, default_value = "noise")]
    pub haystack: String,
    /// Needles jsonl (`needle`, `question`, `answer`), one prompt per needle × length × depth
    /// (default: the peer baseline's San Francisco needle, which the tune never used).
    #[arg(long)]
    pub needles: Option<PathBuf>,
    /// `needle` (recall of the answer's words) or `passkey` (exact match of a 5-digit key; one
    /// key per length × depth, seeded apart from the tune's and `eval niah`'s keys).
    #[arg(long, value_enum, default_value = "needle")]
    pub task: NiahTask,
    /// Store the recommendation in the profile (a built-in profile is copied to the user's
    /// profile directory, `<cache>/profiles/<org>--<name>.ron`, where `--profile auto` finds it
    /// first).
    #[arg(long)]
    pub write: bool,
    /// Keep the answers in this directory (`verify-<key>.jsonl`, the key covering model,
    /// profile and prompts); a rerun with the same directory skips the answers it has.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

fn parse_budget(s: &str) -> Result<usize, String> {
    s.trim().parse::<usize>().map_err(|_| {
        format!(
            "`{s}` is not a budget: give KV entries per compressed layer (e.g. 64,128,256); \
             verify measures these budgets, `auto` is what it recommends"
        )
    })
}

fn parse_target(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 1.0 => Ok(t),
        Ok(_) => {
            Err("must be in (0, 1]: the share of the full cache's score to keep (0.9 = 90%)".into())
        }
        Err(e) => Err(format!("{e} (expected a share such as 0.9)")),
    }
}

pub fn run(device: &super::DeviceArgs, args: VerifyArgs) -> anyhow::Result<()> {
    let budgets = validate(&args)?;
    let device = device.runtime()?;
    let loaded = load_model(&args.model, &device)?;
    let source = profile_source(&loaded, &args.profile)?;
    let mut profile = source.load().with_context(|| format!("profile {source}"))?;
    let fitted = verify::check_fits(&profile, &source, &loaded, &args.model)?;
    if !args.json {
        println!("profile {source} fits {}: {}", loaded.id, fitted.fits());
    }
    let haystack = super::load_haystack(Some(&args.haystack))?;
    let needles = match &args.needles {
        Some(p) => HeldOutNeedles::from_file(p)?,
        None => HeldOutNeedles::built_in(),
    };
    let tuning = PressTuning {
        profile: args.profile.clone(),
        strict_profile: true,
        ..PressTuning::default()
    };
    let contenders = verify::contenders(&budgets, |m, b| {
        tuning
            .compressor(&loaded, m, BudgetSpec::Entries(b))
            .with_context(|| format!("{m} at budget {b}"))
    })?;
    let plan = VerifyPlan {
        profile: fitted,
        task: args.task.task(),
        lengths: &args.lengths,
        depths: &args.depths,
        haystack: &haystack,
        haystack_arg: &args.haystack,
        needles: &needles,
        budgets: &budgets,
        contenders: &contenders,
        target: args.target,
        rows: args.out.clone().map_or(RowsAt::Temporary, RowsAt::Dir),
    };
    let report = run_with_bar(&loaded, &plan, args.json)?;
    let written = if args.write {
        write_recommendation(&report, &mut profile, &source, &loaded)?
    } else {
        None
    };
    if args.json {
        super::print_json(&json_report(&args, &loaded, &source, &report, &written))
    } else {
        print_report(&args, &report, written.as_ref());
        Ok(())
    }
}

/// Runs the verification behind a progress bar of prompts, shown once the prompts are built
/// (never with `--json`).
fn run_with_bar(
    loaded: &LoadedModel,
    plan: &VerifyPlan,
    json: bool,
) -> anyhow::Result<VerifyReport> {
    let bar = ProgressBar::hidden();
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} prompts {msg}",
    )?);
    let mut started = false;
    let report = verify::run(loaded, plan, &mut |p| match p {
        VerifyProgress::Prompts(n) => {
            bar.set_length(n as u64);
            bar.reset_elapsed();
            if !json {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
        VerifyProgress::Prompt(msg) => {
            if std::mem::replace(&mut started, true) {
                bar.inc(1);
            }
            bar.set_message(msg.to_string());
        }
    });
    bar.finish_and_clear();
    Ok(report?)
}

/// `--write`: stores the recommendation in the profile, or drops an earlier one this run
/// contradicts. A built-in profile is copied to the user's profile directory, where `--profile
/// auto` finds it first. Returns what changed and where, or `None` when nothing did.
fn write_recommendation(
    report: &VerifyReport,
    profile: &mut Profile,
    source: &ProfileSource,
    loaded: &LoadedModel,
) -> anyhow::Result<Option<(Applied, PathBuf)>> {
    let applied = report.apply_to(profile);
    if applied == Applied::Unchanged {
        return Ok(None);
    }
    let path = match source {
        ProfileSource::File(p) => p.clone(),
        ProfileSource::BuiltIn(_) => default_profile_out(&loaded.id),
    };
    profile.save_atomic(&path).with_context(|| {
        format!(
            "writing the recommendation into {} (pass --profile with a profile file you may \
             write)",
            path.display()
        )
    })?;
    Ok(Some((applied, path)))
}

fn json_report(
    args: &VerifyArgs,
    loaded: &LoadedModel,
    source: &ProfileSource,
    report: &VerifyReport,
    written: &Option<(Applied, PathBuf)>,
) -> serde_json::Value {
    serde_json::json!({
        "model": loaded.id,
        "profile": source.to_string(),
        "fits": report.fits,
        "method": METHOD,
        "prompts": report.prompts,
        "lengths": args.lengths,
        "depths": args.depths,
        "n_prompts": report.n_prompts,
        "target": args.target,
        "full": report.full,
        "budgets": report.budgets,
        "recommendation": report.recommendation.as_ref().ok(),
        "no_recommendation": report.recommendation.as_ref().err().map(|e| e.to_string()),
        "written": written.as_ref().map(|(_, p)| p),
        "rows_file": report.rows_file,
    })
}

/// The human report: the table per budget, the recommendation or why there is none, and what
/// `--write` did.
fn print_report(args: &VerifyArgs, report: &VerifyReport, written: Option<&(Applied, PathBuf)>) {
    let n = report.n_prompts;
    println!(
        "{METHOD} vs the full cache on {n} prompt{} ({}; lengths {:?}, depths {:?}):",
        if n == 1 { "" } else { "s" },
        report.prompts,
        args.lengths,
        args.depths
    );
    println!("{}", render(report, args.target, args.task.task()));
    match &report.recommendation {
        Ok(r) => {
            println!(
                "recommended: --budget {}, the smallest budget keeping ≥ {:.0}% of the full \
                 cache's score here (and every larger budget measured does too)",
                r.budget,
                100.0 * args.target
            );
            if let Some(s) = report.skipped {
                println!(
                    "(budget {s} reached the target too, but a larger budget fell short of it: \
                     the shares are noisy at this prompt count; more --lengths/--depths/--needles \
                     would settle it)"
                );
            }
        }
        Err(e) => println!("no recommendation: {e}"),
    }
    match written {
        Some((Applied::Dropped(previous), p)) => println!(
            "removed the earlier recommendation (budget {}) from {}: it no longer holds",
            previous.budget,
            p.display()
        ),
        Some((_, p)) => println!(
            "wrote the recommendation into {} (`--budget auto` now uses it)",
            p.display()
        ),
        None if args.write => println!("nothing written: there is no recommendation to store"),
        None => println!(
            "nothing written (pass --write to store the recommendation in the profile for \
             `--budget auto`)"
        ),
    }
    if let Some(rows) = &report.rows_file {
        println!("rows: {}", rows.display());
    }
}

/// The flags checked before the model loads; the budgets deduplicated and ascending.
fn validate(args: &VerifyArgs) -> anyhow::Result<Vec<usize>> {
    anyhow::ensure!(
        !args.lengths.is_empty(),
        "--lengths is empty: give the prompt lengths you run at (e.g. --lengths 2048,4096)"
    );
    anyhow::ensure!(
        !args.depths.is_empty(),
        "--depths is empty: give needle depths in percent (e.g. --depths 10,50,90)"
    );
    for d in &args.depths {
        anyhow::ensure!(
            (0.0..=100.0).contains(d),
            "--depths must be percentages in 0..=100, got {d}"
        );
    }
    if args.needles.is_some() && args.task == NiahTask::Passkey {
        bail!("--needles is for --task needle (passkey prompts hide a random key instead)");
    }
    let mut budgets = args.budgets.clone();
    budgets.sort_unstable();
    budgets.dedup();
    if budgets.is_empty() {
        bail!("--budgets is empty: give the budgets to measure (e.g. --budgets 64,128,256,512)");
    }
    if budgets[0] == 0 {
        bail!("--budgets has 0: a budget is the KV entries kept per compressed layer (≥ 1)");
    }
    Ok(budgets)
}

fn render(report: &VerifyReport, target: f64, task: VerifyTask) -> String {
    let metric = match task {
        VerifyTask::Needle => "recall %",
        VerifyTask::Passkey => "exact %",
    };
    let full = report.full;
    Table::new()
        .col("budget", |l: &BudgetLine| l.budget.to_string())
        .col(metric, |l| format!("{:.1}", l.score))
        .col(format!("full {metric}"), |_| format!("{:.1}", full.score))
        .col("share of full", |l| {
            l.share
                .map_or("- (full scored 0)".into(), |s| format!("{:.0}%", 100.0 * s))
        })
        .col(format!("≥ {:.0}%", 100.0 * target), |l| {
            if l.meets_target { "yes" } else { "no" }.to_string()
        })
        .col("KV cache (full)", |l| {
            format!(
                "{} ({})",
                bytes(l.kv_cache_bytes as usize),
                bytes(full.kv_cache_bytes as usize)
            )
        })
        .render(&report.budgets)
}
