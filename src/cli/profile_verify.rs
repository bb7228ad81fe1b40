//! `compresskv profile verify`: check that a profile fits the model, measure CompressKV at each
//! budget against the full cache on held-out needle prompts, and recommend the smallest budget
//! that keeps a target share of the full cache's score (stored with `--write` for
//! `--budget auto`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use compresskv_runtime::eval::niah::run::{NiahGrid, SummaryRow, run_niah, summarize, task_name};
use compresskv_runtime::eval::niah::{Needle, Protocol, Task, load_needles};
use compresskv_runtime::eval::run::contender_grid;
use compresskv_runtime::loader::{LoadedModel, load_model};
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::profile::{
    BudgetRecommendation, Profile, ProfileSource, default_profile_out, recommend_budget,
    sha256_hex, skipped_below, utc_now,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::press_args::PressTuning;
use super::profile_load::profile_source;
use super::table::{Table, bytes};

/// Base seed of the passkeys: `eval niah` uses 0 and the tune 1000, so these keys are new to
/// both.
const PASSKEY_SEED: u64 = 2_000;

/// The method whose budgets are verified (the one `--budget auto` is meant for).
const METHOD: &str = "compresskv";

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
    /// tune saw) or a directory of .txt files.
    #[arg(long, default_value = "noise")]
    pub haystack: String,
    /// Needles jsonl (`needle`, `question`, `answer`), one prompt per needle × length × depth
    /// (default: the peer baseline's San Francisco needle, which the tune never used).
    #[arg(long)]
    pub needles: Option<PathBuf>,
    /// `needle` (recall of the answer's words) or `passkey` (exact match of a 5-digit key; one
    /// key per length × depth, seeded apart from the tune's and `eval niah`'s keys).
    #[arg(long, value_enum, default_value = "needle")]
    pub task: super::eval_niah::NiahTask,
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

/// One budget's line of the report.
#[derive(Serialize, Debug, Clone)]
struct BudgetLine {
    budget: usize,
    /// Mean score of CompressKV at this budget (the metric's scale: recall or exact match in
    /// percent).
    score: f64,
    /// Its share of the full cache's mean score (`None` when the full cache scored 0).
    share: Option<f64>,
    meets_target: bool,
    kv_cache_bytes: f64,
}

pub fn run(device: &super::DeviceArgs, args: VerifyArgs) -> anyhow::Result<()> {
    let budgets = validate(&args)?;
    let device = device.runtime()?;
    let lm = load_model(&args.model, &device)?;
    let source = profile_source(&lm, &args.profile)?;
    let mut profile = source.load().with_context(|| format!("profile {source}"))?;
    let fits = check_fits(&profile, &lm, &source, &args.model)?;
    let say = |s: &str| {
        if !args.json {
            println!("{s}");
        }
    };
    say(&format!("profile {source} fits {}: {fits}", lm.id));

    let haystack = super::load_haystack(Some(&args.haystack))?;
    let (needles, needles_name, needles_bytes) = match &args.needles {
        Some(p) => (
            load_needles(p).with_context(|| format!("reading --needles {}", p.display()))?,
            file_name(p),
            std::fs::read(p).with_context(|| format!("reading --needles {}", p.display()))?,
        ),
        None => {
            let n = Needle::san_francisco();
            let bytes = format!("{}\n{}\n{}", n.needle, n.question, n.answer).into_bytes();
            (vec![n], "built-in San Francisco".to_string(), bytes)
        }
    };
    let haystack_name = if args.haystack == "noise" {
        "noise".to_string()
    } else {
        format!(
            "{} ({} files)",
            file_name(Path::new(&args.haystack)),
            haystack.files().len()
        )
    };
    let task = args.task.task();
    let prompts = match task {
        Task::Needle => format!(
            "needle task, peer protocol; haystack {haystack_name}; needles {needles_name} ({})",
            needles.len()
        ),
        Task::Passkey => {
            format!("passkey task, peer protocol; haystack {haystack_name}; seed {PASSKEY_SEED}")
        }
        Task::Ruler(_) => unreachable!("NiahTask::task is the needle or the passkey task"),
    };
    let grid = NiahGrid {
        task,
        protocol: Protocol::Peer,
        lengths: &args.lengths,
        depths: &args.depths,
        needles: &needles,
        passkeys: 1,
        seed: PASSKEY_SEED,
        ruler_words: None,
    };
    let samples = grid.samples(&lm, &haystack)?;
    let tuning = PressTuning {
        profile: args.profile.clone(),
        strict_profile: true,
        ..PressTuning::default()
    };
    let contenders = contender_grid(&["full".into(), METHOD.into()], &budgets, None, |m, b| {
        tuning
            .compressor(&lm, m, BudgetSpec::Entries(b))
            .with_context(|| format!("{m} at budget {b}"))
    })?;

    // The rows file's name carries a hash of everything the answers depend on, so a rerun in
    // the same --out resumes only answers made with this model, profile and these prompts.
    let mut keyed = profile.clone();
    keyed.recommendation = None;
    let mut key = format!(
        "{}\n{}\n{}\n{}\n",
        lm.id,
        lm.model.weight_hash().unwrap_or(""),
        sha256_hex(lm.config_text.as_bytes()),
        keyed.to_ron_string()?
    );
    key.push_str(&sha256_hex(haystack.text().as_bytes()));
    key.push_str(&sha256_hex(&needles_bytes));
    key.push_str(task_name(task));
    let key = &sha256_hex(key.as_bytes())[..12];
    let (rows_path, temporary) = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating --out {}", dir.display()))?;
            (dir.join(format!("verify-{key}.jsonl")), false)
        }
        None => (
            std::env::temp_dir().join(format!(
                "compresskv-verify-{key}-{}.jsonl",
                std::process::id()
            )),
            true,
        ),
    };

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
    });
    bar.finish_and_clear();
    if temporary {
        let _ = std::fs::remove_file(&rows_path);
    }
    let rows = rows?;

    let summary = summarize(&rows, &args.lengths);
    let full = summary
        .iter()
        .find(|s| s.method == "full")
        .context("no full-cache answers were made (a bug: the full cache always runs)")?;
    let lines = budget_lines(&summary, full.mean_score, &budgets, args.target);
    let shares: Vec<(usize, f64)> = lines
        .iter()
        .map(|l| (l.budget, l.share.unwrap_or(0.0)))
        .collect();
    let choice = recommend_budget(&shares, full.mean_score, args.target);

    // What --write does: store this run's recommendation, or drop a stale one.
    let target_path = match &source {
        ProfileSource::File(p) => p.clone(),
        ProfileSource::BuiltIn(_) => default_profile_out(&lm.id),
    };
    let recommendation = choice.as_ref().ok().map(|&budget| BudgetRecommendation {
        target: args.target,
        budget,
        method: METHOD.into(),
        lengths: args.lengths.clone(),
        depths: args.depths.clone(),
        prompts: prompts.clone(),
        full_score: full.mean_score,
        shares: shares.clone(),
        created: utc_now(),
    });
    let previous = profile.recommendation.clone();
    let written = if args.write && (recommendation.is_some() || previous.is_some()) {
        profile.recommendation = recommendation.clone();
        profile.save_atomic(&target_path).with_context(|| {
            format!(
                "writing the recommendation into {} (pass --profile with a profile file you \
                 may write)",
                target_path.display()
            )
        })?;
        Some(target_path.clone())
    } else {
        None
    };

    if args.json {
        return super::print_json(&serde_json::json!({
            "model": lm.id,
            "profile": source.to_string(),
            "fits": fits,
            "method": METHOD,
            "prompts": prompts,
            "lengths": args.lengths,
            "depths": args.depths,
            "n_prompts": samples.len(),
            "target": args.target,
            "full": {"score": full.mean_score, "kv_cache_bytes": full.mean_kv_cache_bytes},
            "budgets": lines,
            "recommendation": recommendation,
            "no_recommendation": choice.as_ref().err().map(|e| e.to_string()),
            "written": written,
            "rows_file": (!temporary).then_some(&rows_path),
        }));
    }
    println!(
        "{METHOD} vs the full cache on {} prompt{} ({prompts}; lengths {:?}, depths {:?}):",
        samples.len(),
        if samples.len() == 1 { "" } else { "s" },
        args.lengths,
        args.depths
    );
    println!("{}", render(&lines, full, args.target, task));
    match &choice {
        Ok(b) => {
            println!(
                "recommended: --budget {b}, the smallest budget keeping ≥ {:.0}% of the full \
                 cache's score here (and every larger budget measured does too)",
                100.0 * args.target
            );
            if let Some(s) = skipped_below(&shares, *b, args.target) {
                println!(
                    "(budget {s} reached the target too, but a larger budget fell short of it: \
                     the shares are noisy at this prompt count; more --lengths/--depths/--needles \
                     would settle it)"
                );
            }
        }
        Err(e) => println!("no recommendation: {e}"),
    }
    match (&written, args.write) {
        (Some(p), _) if recommendation.is_some() => println!(
            "wrote the recommendation into {} (`--budget auto` now uses it)",
            p.display()
        ),
        (Some(p), _) => println!(
            "removed the earlier recommendation (budget {}) from {}: it no longer holds",
            previous.map_or(0, |r| r.budget),
            p.display()
        ),
        (None, true) => println!("nothing written: there is no recommendation to store"),
        (None, false) => println!(
            "nothing written (pass --write to store the recommendation in the profile for \
             `--budget auto`)"
        ),
    }
    if !temporary {
        println!("rows: {}", rows_path.display());
    }
    Ok(())
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
    if args.needles.is_some() && args.task == super::eval_niah::NiahTask::Passkey {
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

/// Checks that `p` was made for `lm`: its shape, its config hash and, where the profile records
/// one, its weight hash (verify is the strict check: other weights are an error here, not the
/// warning `generate` gives). Returns what was checked, for the report.
fn check_fits(
    p: &Profile,
    lm: &LoadedModel,
    source: &ProfileSource,
    model: &str,
) -> anyhow::Result<String> {
    let config_hash = sha256_hex(lm.config_text.as_bytes());
    p.check_matches(&lm.spec, &lm.id, Some(&config_hash))
        .with_context(|| format!("profile {source} does not fit {model}"))?;
    if let Some(msg) = p.weight_mismatch(lm.model.weight_hash()) {
        bail!(
            "profile {source} does not fit {model}: {msg}. Fix: make a profile for these \
             weights with `compresskv profile --model {model}`, or pass `--profile PATH`"
        );
    }
    let weights = match (p.fingerprint.weight_hash.is_empty(), lm.model.weight_hash()) {
        (false, Some(_)) => "weight sha256 matches",
        (true, _) => "no weight hash recorded",
        (false, None) => "weight hash not computed for this model",
    };
    Ok(format!(
        "{}; config sha256 matches; {weights}",
        p.fingerprint.describe()
    ))
}

/// Per budget: CompressKV's mean score, its share of the full cache's, and its KV bytes.
fn budget_lines(
    summary: &[SummaryRow],
    full_score: f64,
    budgets: &[usize],
    target: f64,
) -> Vec<BudgetLine> {
    budgets
        .iter()
        .filter_map(|&b| {
            let s = summary
                .iter()
                .find(|s| s.method == METHOD && s.budget == Some(b))?;
            let share = (full_score > 0.0).then(|| s.mean_score / full_score);
            Some(BudgetLine {
                budget: b,
                score: s.mean_score,
                share,
                meets_target: share.is_some_and(|x| x >= target - 1e-9),
                kv_cache_bytes: s.mean_kv_cache_bytes,
            })
        })
        .collect()
}

fn render(lines: &[BudgetLine], full: &SummaryRow, target: f64, task: Task) -> String {
    let metric = match task {
        Task::Needle => "recall %",
        Task::Passkey => "exact %",
        Task::Ruler(_) => "match %",
    };
    Table::new()
        .col("budget", |l: &BudgetLine| l.budget.to_string())
        .col(metric, |l| format!("{:.1}", l.score))
        .col(format!("full {metric}"), |_| {
            format!("{:.1}", full.mean_score)
        })
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
                bytes(full.mean_kv_cache_bytes as usize)
            )
        })
        .render(lines)
}

/// The last component of a path (profiles never record machine-local paths).
fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || "(unnamed)".to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
