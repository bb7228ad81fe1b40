//! `compresskv profile tune` (and `profile --tune`): choose the CompressKV settings on
//! held-out prompts and store them in the profile.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use compresskv_profiler::tune::{HeldOut, TuneGrid, TuneProtocol, tune_checkpoint_path};
use compresskv_runtime::eval::niah::{RulerTask, RulerWords, load_needles, parse_needles};
use compresskv_runtime::loader::{LoadedModel, load_model};
use compresskv_runtime::profile::{
    Axes, Profile, ProfileSource, Settings, builtin, default_profile_out, find_profile_from_env,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::table::Table;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneProtocolArg {
    /// `eval niah`'s peer prompt format with the held-out needles and other passkeys.
    Peer,
    /// The SRH calibration's question form and landmark passkeys.
    Calibration,
}

/// The held-out prompt set and the search grid.
#[derive(Args, Debug, Clone)]
pub struct TuneOptions {
    /// Prompt format of the held-out set: the task format the settings will be judged on
    /// (`peer`, with needles, keys, lengths and depths the evaluation never uses) or the
    /// calibration's (`calibration`).
    #[arg(long, value_enum, default_value = "peer")]
    pub tune_protocol: TuneProtocolArg,
    /// Held-out needles jsonl (default: the built-in copy of calibration-data/tune-needles.jsonl).
    #[arg(long)]
    pub tune_needles: Option<PathBuf>,
    /// Held-out prompt lengths (tokens); differ from the calibration and evaluation grids but
    /// span the evaluation's range.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1200, 2600, 3800])]
    pub tune_lengths: Vec<usize>,
    /// Held-out depths (percent).
    #[arg(long, value_delimiter = ',', default_values_t = vec![10.0, 35.0, 55.0, 70.0, 90.0])]
    pub tune_depths: Vec<f64>,
    /// Passkey prompts per held-out (length, depth). Passkeys score 0 or 100, so they need more
    /// prompts than needles for the same resolution.
    #[arg(long, default_value_t = 2)]
    pub tune_passkeys: usize,
    /// Budgets the settings are scored at (mean entries per compressed layer).
    #[arg(long, value_delimiter = ',', default_values_t = vec![64, 128, 256])]
    pub tune_budgets: Vec<usize>,
    /// Observation windows searched. The default grid spends its time on more held-out
    /// prompts rather than on windows and mixes: on Gemma 3 270M a first tune over windows
    /// {8, 16, 32} × mixes {0, 0.25, 0.5} chose window 8 and no mix at every budget.
    #[arg(long, value_delimiter = ',', default_values_t = vec![8])]
    pub tune_windows: Vec<usize>,
    /// Average-pooling kernels searched (odd). A wider kernel keeps whole evidence spans instead
    /// of their peak tokens: a retrieval head peaks on a few tokens of the needle, and an
    /// answer copied from a half-kept sentence loses words ("in a park" for "in Dolores Park").
    /// Too wide and fewer spans fit the budget: on Gemma 3 270M's broad held-out set (2K-16K
    /// tokens, three haystacks) 21 won, and 31 and 45 scored lower again.
    #[arg(long, value_delimiter = ',', default_values_t = vec![9, 13, 21, 31])]
    pub tune_kernels: Vec<usize>,
    /// Mix weights λ searched (0 = pure SRH score).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.0])]
    pub tune_mixes: Vec<f64>,
    /// Rank-union shares searched (0 = pure SRH ranking). 0.75 was never chosen on Gemma 3 270M.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.0, 0.25, 0.5])]
    pub tune_unions: Vec<f64>,
    /// Layer-budget error weights searched (1 = budgets from the layer errors, 0 = uniform).
    /// The default is the paper's 1 only: uniform budgets won no budget in a tune over {1, 0}
    /// on Gemma 3 270M, and the kernel search needs the time more.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1.0])]
    pub tune_error_weights: Vec<f64>,
    /// Haystacks the held-out prompts rotate over, comma-separated, each as `eval niah
    /// --haystack` takes it: `essays` (the fetched Paul Graham essays), `noise`,
    /// `longbench:PATH`, `leval:PATH` or a directory of .txt files (default: `--haystack`, else
    /// the essays). Several haystacks keep the choice from fitting one genre of prose.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "essays,noise,longbench:PATH,…"
    )]
    pub tune_haystacks: Vec<String>,
    /// RULER tasks asked too, one prompt per length × depth each, scored on whole values (e.g.
    /// niah_single_2,niah_multikey_1; default: none).
    #[arg(long, value_delimiter = ',', value_parser = super::eval_niah::parse_ruler_task,
          value_name = "niah_single_1,…")]
    pub tune_ruler_tasks: Vec<RulerTask>,
    /// RULER's data folder with wonderwords/adjectivelist.txt and nounlist.txt (e.g.
    /// ../shared/datasets/ruler), for the RULER tasks that draw words.
    #[arg(long, value_name = "DIR")]
    pub ruler_dir: Option<PathBuf>,
    /// Every N-th held-out prompt of each task × length is the validation split: scored, never
    /// used to choose; a budget keeps its own choice only where it also wins there (0 = no
    /// validation split).
    #[arg(long, default_value_t = 3)]
    pub tune_validate_every: usize,
}

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Model id, HF directory or .gguf file.
    #[arg(long)]
    pub model: String,
    /// The profile file to tune, in place (default: the profile `--profile auto` finds for the
    /// model; a built-in profile is tuned into a new file in the user's profile directory,
    /// `<cache>/profiles/<org>--<name>.ron`, which then takes its place).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Haystack directory (default: the fetched essays).
    #[arg(long)]
    pub haystack: Option<String>,
    #[command(flatten)]
    pub options: TuneOptions,
    /// Continue an interrupted tune run from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(device: &super::DeviceArgs, args: TuneArgs) -> anyhow::Result<()> {
    let device = device.runtime()?;
    let loaded = load_model(&args.model, &device)?;
    // Read from `--profile`, else where `--profile auto` finds it; written back to the same file,
    // or, for a built-in profile (never written to), to the user's profile directory.
    let source = match &args.profile {
        Some(p) => ProfileSource::File(p.clone()),
        None => find_profile_from_env(&loaded.id, &loaded.path).with_context(|| {
            format!(
                "finding the profile to tune; make one first with `compresskv profile --model {}`",
                args.model
            )
        })?,
    };
    let path = match &source {
        ProfileSource::File(p) => p.clone(),
        ProfileSource::BuiltIn(_) => default_profile_out(&loaded.id),
    };
    let mut profile = source.load().with_context(|| {
        format!(
            "loading the profile to tune ({source}); make one first with `compresskv profile \
             --model {}`",
            args.model
        )
    })?;
    if source.is_builtin() && !args.json {
        eprintln!(
            "tuning the built-in profile {source}; the result goes to {}",
            path.display()
        );
    }
    profile.check_matches(&loaded.spec, &loaded.id, None)?;
    // The checkpoint goes next to the profile.
    super::profile::create_parent_dir(&path)?;
    tune_profile(
        &loaded,
        &mut profile,
        args.haystack.as_deref(),
        &args.options,
        &path,
        args.resume,
        args.json,
    )?;
    // A recommended budget was measured with the settings this tune replaced.
    if let Some(r) = profile.recommendation.take()
        && !args.json
    {
        eprintln!(
            "dropped the budget recommendation ({}, measured {} with the previous settings): \
             rerun `compresskv profile verify {} --write`",
            r.budget, r.created, args.model
        );
    }
    profile.save_atomic(&path)?;
    let _ = std::fs::remove_file(tune_checkpoint_path(&path));
    if args.json {
        super::print_json(&serde_json::json!({
            "out": path, "model_id": profile.model_id, "tuning": profile.tuning,
        }))
    } else {
        println!("wrote {}", path.display());
        print_tuning(&profile);
        Ok(())
    }
}

/// Runs the tune step on `profile` (checkpointing next to `out`) and stores the result in it.
pub fn tune_profile(
    loaded: &LoadedModel,
    profile: &mut Profile,
    haystack: Option<&str>,
    o: &TuneOptions,
    out: &Path,
    resume: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let needles = match &o.tune_needles {
        Some(p) => {
            load_needles(p).with_context(|| format!("reading --tune-needles {}", p.display()))?
        }
        None => parse_needles(builtin::TUNE_NEEDLES, "built-in:tune-needles.jsonl")?,
    };
    if o.tune_validate_every == 1 {
        anyhow::bail!(
            "--tune-validate-every 1 puts every prompt in the validation split and leaves none to \
             choose with: use 2 or more (every N-th prompt validates), or 0 for no split"
        );
    }
    let names: Vec<String> = if o.tune_haystacks.is_empty() {
        vec![haystack.unwrap_or("essays").to_string()]
    } else {
        o.tune_haystacks
            .iter()
            .map(|h| h.trim().to_string())
            .collect()
    };
    let mut hays = Vec::new();
    for name in names {
        let arg = (name != "essays").then_some(name.as_str());
        let hay = super::load_haystack(arg).with_context(|| format!("--tune-haystacks {name}"))?;
        hays.push((haystack_label(&name), hay));
    }
    let wordy: Vec<&str> = o
        .tune_ruler_tasks
        .iter()
        .filter(|t| t.needs_words())
        .map(|t| t.name())
        .collect();
    let ruler_words = match &o.ruler_dir {
        Some(dir) => {
            Some(RulerWords::load(dir).with_context(|| format!("--ruler-dir {}", dir.display()))?)
        }
        None if !wordy.is_empty() => anyhow::bail!(
            "RULER tasks {} draw adjective-noun words from RULER's word lists: pass --ruler-dir \
             DIR, the folder with wonderwords/adjectivelist.txt and nounlist.txt (e.g. \
             ../shared/datasets/ruler)",
            wordy.join(", ")
        ),
        None => None,
    };
    let held = HeldOut {
        protocol: match o.tune_protocol {
            TuneProtocolArg::Peer => TuneProtocol::Peer,
            TuneProtocolArg::Calibration => TuneProtocol::Calibration,
        },
        needles,
        lengths: o.tune_lengths.clone(),
        depths: o.tune_depths.clone(),
        passkeys: o.tune_passkeys,
        seed: 1_000,
        ruler: o.tune_ruler_tasks.clone(),
        ruler_words,
        validate_every: o.tune_validate_every,
    };
    let grid = TuneGrid {
        axes: Axes {
            srh_heads: (1..=loaded.spec.n_heads).collect(),
            window: o.tune_windows.clone(),
            kernel: o.tune_kernels.clone(),
            mix: o.tune_mixes.clone(),
            union: o.tune_unions.clone(),
            error_weight: o.tune_error_weights.clone(),
        },
        budgets: o.tune_budgets.clone(),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} tune prompts {msg}",
    )?);
    if quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    compresskv_profiler::tune::tune_profile(
        loaded,
        profile,
        &hays,
        &held,
        &grid,
        &tune_checkpoint_path(out),
        resume,
        &mut |i, n, msg| {
            bar.set_length(n as u64);
            bar.set_position(i as u64);
            bar.set_message(msg.to_string());
        },
    )?;
    bar.finish_and_clear();
    Ok(())
}

/// How a haystack is named in the profile's provenance: profiles travel between machines, so
/// a path keeps only its last component (`longbench:/data/lb` → `longbench:lb`).
fn haystack_label(arg: &str) -> String {
    let (kind, path) = match arg.split_once(':') {
        Some((k, p)) if k == "longbench" || k == "leval" => (format!("{k}:"), p),
        _ => (String::new(), arg),
    };
    let last = Path::new(path)
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .rfind(|c| !matches!(*c, "." | ".." | "/"))
        .unwrap_or(path);
    format!("{kind}{last}")
}

/// The chosen settings per budget and the best few of the overall table.
pub fn print_tuning(p: &Profile) {
    let Some(t) = &p.tuning else {
        println!(
            "not tuned (run `compresskv profile tune --model {}`)",
            p.model_id
        );
        return;
    };
    // (label, the chosen setting, the table it was chosen from)
    type Choice<'a> = (String, Settings, &'a [(Settings, f64)]);
    let mut rows: Vec<Choice> = vec![("all (mean)".into(), t.chosen, &t.table)];
    rows.extend(
        t.per_budget
            .iter()
            .map(|c| (c.budget.to_string(), c.chosen, &c.table[..])),
    );
    let tab = Table::new()
        .col("budget", |r: &Choice| r.0.clone())
        .col("srh heads", |r| r.1.srh_heads.to_string())
        .col("window", |r| r.1.window.to_string())
        .col("kernel", |r| r.1.kernel.to_string())
        .col("mix", |r| r.1.mix.to_string())
        .col("union", |r| r.1.union.to_string())
        .col("error weight", |r| r.1.error_weight.to_string())
        .col("held-out score", |r| {
            r.2.iter()
                .find(|(x, _)| *x == r.1)
                .map_or("-".into(), |(_, v)| format!("{:.1}", 100.0 * v))
        })
        .col("validation score", |r| {
            let Some(v) = &t.validation else {
                return "-".into();
            };
            let score = match r.0.parse::<usize>() {
                Ok(b) => v
                    .per_budget
                    .iter()
                    .find(|c| c.budget == b)
                    .map(|c| if c.kept { c.candidate_score } else { c.overall }),
                Err(_) => v.table.iter().find(|(x, _)| *x == r.1).map(|(_, s)| *s),
            };
            score.map_or("-".into(), |s| format!("{:.1}", 100.0 * s))
        })
        .col("budget's own best", |r| {
            let Some(c) = t.validation.as_ref().and_then(|v| {
                let b = r.0.parse::<usize>().ok()?;
                v.per_budget.iter().find(|c| c.budget == b)
            }) else {
                return "-".into();
            };
            if c.candidate == t.chosen {
                "= overall".into()
            } else {
                format!(
                    "{} heads k{} u{}: {:.1} on validation ({})",
                    c.candidate.srh_heads,
                    c.candidate.kernel,
                    c.candidate.union,
                    100.0 * c.candidate_score,
                    if c.kept {
                        "kept"
                    } else {
                        "not better: overall kept"
                    }
                )
            }
        });
    println!("{}", tab.render(&rows));
    if let Some(v) = &t.validation {
        println!(
            "held-out score: the search split ({} prompts); validation score: the {} prompts \
             held back from it",
            v.search_prompts, v.prompts
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn haystack_labels_keep_no_machine_paths() {
        let l = super::haystack_label;
        assert_eq!(l("essays"), "essays");
        assert_eq!(l("noise"), "noise");
        assert_eq!(l("/work/main/../shared/reference/tiny"), "tiny");
        assert_eq!(l("longbench:/data/lb/"), "longbench:lb");
        assert_eq!(l("leval:../x/leval.jsonl"), "leval:leval.jsonl");
    }
}
