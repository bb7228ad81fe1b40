//! `compresskv profile`: calibrate a model once and write its profile; `profile show`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use compresskv_profiler::calibrate::{
    ErrorPlan, Grid, QA_MAX_NEW, RunOptions, load_haystack, load_needles, load_qa, parse_needles,
    profile_model,
};
use compresskv_profiler::layer_error::ErrorSettings;
use compresskv_runtime::eval::niah::Haystack;
use compresskv_runtime::loader::hf_config::spec_from_hf_config;
use compresskv_runtime::loader::{LoadedModel, load_model};
use compresskv_runtime::press::plan::{ProfileExport, budget_plan};
use compresskv_runtime::profile::{
    Profile, ProfileSource, builtin, default_profile_out, find_profile_from_env, import_paper,
};
use compresskv_runtime::store;
use indicatif::{ProgressBar, ProgressStyle};

use super::heatmap::heatmap_png;
use super::table::Table;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub sub: Option<ProfileSub>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum ProfileSub {
    /// Print a profile: top SRHs and classic retrieval heads per layer, layer errors and the
    /// layer budgets they imply; optionally a PNG heatmap of the SRH scores.
    Show(ShowArgs),
    /// Turn the CompressKV paper's published head/layer scores (Llama-3.1-8B-Instruct,
    /// Mistral-7B-Instruct-v0.3) into a profile of this format.
    ImportPaper(ImportArgs),
    /// Choose CompressKV's settings (SRH heads, window, mix) per budget on held-out prompts.
    Tune(super::profile_tune::TuneArgs),
    /// Write a profile for other engines (HF transformers / kvpress): a versioned JSON
    /// document with the head scores, layer errors, settings and the per-layer plan at each
    /// budget (schema in the README, "Profile export").
    Export(ExportArgs),
    /// Check that a profile fits the model, measure CompressKV at each budget against the full
    /// cache on held-out needle prompts, and recommend the smallest budget keeping `--target` of
    /// the full cache's score (`--write` stores it for `--budget auto`).
    Verify(super::profile_verify::VerifyArgs),
}

/// The formats `profile export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// `compresskv.profile-export` version 1.
    Json,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model id (its profile is found as `--profile auto` finds it) or profile path.
    pub what: String,
    #[arg(long, value_enum, default_value = "json")]
    pub format: ExportFormat,
    /// Mean budgets (KV entries per compressed layer) to export the per-layer plan at.
    #[arg(long, value_delimiter = ',', default_values_t = vec![64, 128, 256, 512])]
    pub budgets: Vec<usize>,
    /// Write the document to this file (atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --out: print what was written as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model id, HF directory or .gguf file.
    #[arg(long)]
    pub model: Option<String>,
    /// Directory of .txt files (default: the fetched Paul Graham essays).
    #[arg(long)]
    pub haystack: Option<PathBuf>,
    /// Needles jsonl (default: the built-in copy of calibration-data/needles.jsonl).
    #[arg(long)]
    pub needles: Option<PathBuf>,
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 2000])]
    pub lengths: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_values_t = vec![20.0, 50.0, 80.0])]
    pub depths: Vec<f64>,
    #[arg(long, default_value_t = 50)]
    pub max_new: usize,
    /// Output file (default: <org>--<name>.ron in the user's profile directory,
    /// `$COMPRESSKV_HOME/profiles/` or `~/.cache/compresskv/profiles/`, where `--profile auto`
    /// finds it before the built-in profiles).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// LongBench-format jsonl files (`context`, `input`, `answers`, `dataset`) to estimate the
    /// layer eviction errors on (default: the needle calibration prompts).
    #[arg(long, num_args = 1..)]
    pub qa: Vec<PathBuf>,
    /// A LongBench `config` directory (dataset2prompt.json, dataset2maxlen.json) for the QA
    /// templates (default: the built-in calibration-data/qa_templates.json).
    #[arg(long)]
    pub qa_config: Option<PathBuf>,
    /// QA prompts used per file (the first N).
    #[arg(long, default_value_t = 4)]
    pub qa_max_samples: usize,
    /// QA prompts longer than this many tokens are truncated in the middle (LongBench style).
    #[arg(long, default_value_t = 2000)]
    pub qa_max_len: usize,
    /// Cap on QA answer tokens (the data set's own maximum applies when smaller).
    #[arg(long, default_value_t = QA_MAX_NEW)]
    pub qa_max_new: usize,
    /// KV budget of the eviction-error probe (entries kept per layer).
    #[arg(long, default_value_t = 32)]
    pub error_budget: usize,
    /// Continue an interrupted run from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many newly computed samples, keeping the checkpoint (for testing
    /// --resume).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// Write the profile even if no calibration sample was answered (random-weight test models).
    #[arg(long, hide = true)]
    pub allow_uncounted: bool,
    /// After calibration, choose the settings on held-out prompts (`profile tune`).
    #[arg(long)]
    pub tune: bool,
    #[command(flatten)]
    pub tune_options: super::profile_tune::TuneOptions,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Model id (its profile is found as `--profile auto` finds it) or profile path.
    pub what: String,
    /// Also show the per-layer KV budgets the layer errors imply at this mean budget.
    #[arg(long)]
    pub budget: Option<usize>,
    /// Write a heatmap of the SRH scores (layer × query head) to this PNG file.
    #[arg(long)]
    pub png: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Head file: `*_head_idx.json` (per layer, heads in descending order) or a
    /// `{"layer-head": [scores…]}` head-score JSON.
    #[arg(long)]
    pub heads: PathBuf,
    /// Layer file: `*_layer_score.jsonl` (per data set a list of layer errors, `avg_score`).
    #[arg(long)]
    pub layers: Option<PathBuf>,
    /// The model's Hugging Face `config.json`.
    #[arg(long)]
    pub config: PathBuf,
    /// Model id the profile is for, e.g. meta-llama/Llama-3.1-8B-Instruct.
    #[arg(long)]
    pub model_id: String,
    /// Where to write the profile (e.g.
    /// ~/.cache/compresskv/profiles/meta-llama--Llama-3.1-8B-Instruct.ron, where `--profile
    /// auto` finds it).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(device: &super::DeviceArgs, args: ProfileArgs) -> anyhow::Result<()> {
    match args.sub {
        Some(ProfileSub::Show(s)) => show(s),
        Some(ProfileSub::ImportPaper(i)) => import(i),
        Some(ProfileSub::Tune(t)) => super::profile_tune::run(device, t),
        Some(ProfileSub::Export(e)) => export(e),
        Some(ProfileSub::Verify(v)) => super::profile_verify::run(device, v),
        None => calibrate(device, args.run),
    }
}

fn calibrate(device: &super::DeviceArgs, args: RunArgs) -> anyhow::Result<()> {
    let model = args
        .model
        .clone()
        .context("--model is required (e.g. --model google/gemma-3-270m)")?;
    let device = device.runtime()?;
    let loaded = load_model(&model, &device)?;
    // The needles and their bytes (hashed into the profile's provenance): `--needles`, else the
    // built-in copy of calibration-data/needles.jsonl (the same bytes).
    let (needles, needles_bytes) = match &args.needles {
        Some(p) => (
            load_needles(p)?,
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => (
            parse_needles(builtin::NEEDLES, Path::new("built-in:needles.jsonl"))?,
            builtin::NEEDLES.as_bytes().to_vec(),
        ),
    };
    let hay_dir = args.haystack.clone().unwrap_or_else(store::haystack_dir);
    if args.haystack.is_none() && !hay_dir.is_dir() {
        store::fetch_haystack(&mut |l| eprintln!("  {l}"))?;
    }
    let haystack = load_haystack(&hay_dir)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_profile_out(&loaded.id));
    // The checkpoint goes next to the profile, from the first sample on.
    create_parent_dir(&out)?;
    let checkpoint = out.with_extension("ron.partial.jsonl");
    let (opts, calib) = run_options(&args, &loaded, needles_bytes, &haystack)?;
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
    )?);
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (profile, results) = profile_model(
        &loaded,
        &needles,
        &haystack,
        &opts,
        &checkpoint,
        &calib,
        &mut |i, total, msg| {
            bar.set_length(total as u64);
            bar.set_position(i as u64);
            bar.set_message(msg.to_string());
        },
    )?;
    bar.finish_and_clear();
    let mut profile = profile;
    if args.tune {
        super::profile_tune::tune_profile(
            &loaded,
            &mut profile,
            args.haystack.as_deref().and_then(|p| p.to_str()),
            &args.tune_options,
            &out,
            args.resume,
            args.json,
        )?;
    }
    profile.save_atomic(&out)?;
    let _ = std::fs::remove_file(compresskv_profiler::tune::tune_checkpoint_path(&out));
    let _ = std::fs::remove_file(&checkpoint);
    if args.json {
        super::print_json(&serde_json::json!({
            "out": out, "model_id": profile.model_id, "srh_scores": profile.srh_scores,
            "retrieval_scores": profile.retrieval_scores,
            "layer_errors": profile.layer_errors.as_ref().map(|e| e.per_layer.clone()),
            "layer_error_source": profile.layer_errors.as_ref().map(|e| e.source.clone()),
            "samples": results.len(), "counted": results.iter().filter(|r| r.counted).count(),
            "wall_time_s": profile.provenance.wall_time_s,
        }))?;
    } else {
        println!("wrote {}", out.display());
        print_heads(&profile, None);
    }
    Ok(())
}

/// The calibration run's options (grid, error plan, resume) from the flags, and the bytes its
/// provenance hash covers (needles, haystack, QA files).
fn run_options(
    args: &RunArgs,
    loaded: &LoadedModel,
    needles_bytes: Vec<u8>,
    haystack: &Haystack,
) -> anyhow::Result<(RunOptions, Vec<u8>)> {
    let grid = Grid {
        lengths: args.lengths.clone(),
        depths: args.depths.clone(),
        max_new: args.max_new,
    };
    let mut calib = needles_bytes;
    calib.extend_from_slice(haystack.text().as_bytes());
    let qa = if args.qa.is_empty() {
        None
    } else {
        for f in &args.qa {
            calib.extend(std::fs::read(f).with_context(|| {
                format!(
                    "cannot read --qa {} (LongBench jsonl expected)",
                    f.display()
                )
            })?);
        }
        Some(load_qa(
            loaded,
            &args.qa,
            args.qa_config.as_deref(),
            args.qa_max_samples,
            args.qa_max_len,
            args.qa_max_new,
        )?)
    };
    let settings = ErrorSettings {
        budget: args.error_budget,
        ..ErrorSettings::default()
    };
    if settings.budget <= settings.window {
        bail!(
            "--error-budget {} must be larger than the observation window ({})",
            settings.budget,
            settings.window
        );
    }
    let opts = RunOptions {
        grid,
        errors: ErrorPlan { settings, qa },
        resume: args.resume,
        stop_after: args.stop_after,
        allow_uncounted: args.allow_uncounted,
    };
    Ok((opts, calib))
}

/// Creates the directory `path` will be written into (the user's profile directory may not
/// exist yet).
pub fn create_parent_dir(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => std::fs::create_dir_all(d)
            .with_context(|| format!("cannot create the profile directory {}", d.display())),
        _ => Ok(()),
    }
}

/// Per-layer budgets at mean `b` (`None` for layers kept as they are) and the allocator's note.
fn budgets_of(p: &Profile, b: usize) -> anyhow::Result<(Vec<Option<usize>>, Option<String>)> {
    let plan = budget_plan(p, b)?;
    Ok((plan.layer_budgets, plan.note))
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config).with_context(|| {
        format!(
            "cannot read --config {} (the model's Hugging Face config.json)",
            args.config.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--config {} is not JSON", args.config.display()))?;
    let spec = spec_from_hf_config(&json, None)
        .with_context(|| format!("--config {}", args.config.display()))?;
    let p = import_paper(
        &args.heads,
        args.layers.as_deref(),
        &spec,
        &text,
        &args.model_id,
    )?;
    p.save_atomic(&args.out)?;
    if args.json {
        super::print_json(&serde_json::json!({
            "out": args.out, "model_id": p.model_id, "srh_scores": p.srh_scores,
            "retrieval_scores": p.retrieval_scores,
            "layer_errors": p.layer_errors.as_ref().map(|e| e.per_layer.clone()),
            "imported_from": p.provenance.imported_from,
        }))
    } else {
        println!(
            "wrote {} ({}; {})",
            args.out.display(),
            p.fingerprint.describe(),
            p.provenance.imported_from.as_deref().unwrap_or("")
        );
        print_heads(&p, None);
        Ok(())
    }
}

/// A profile path, or a model id's profile as `--profile auto` finds it (next to the model's
/// weights when the model is in the cache).
fn profile_source(what: &str) -> anyhow::Result<ProfileSource> {
    if Path::new(what).exists() || what.ends_with(".ron") {
        return Ok(ProfileSource::File(PathBuf::from(what)));
    }
    let (id, model_path) = match store::resolve_model(what) {
        Ok(r) => (r.id, r.location.path().to_path_buf()),
        Err(_) => (what.to_string(), PathBuf::from(what)),
    };
    Ok(find_profile_from_env(&id, &model_path)?)
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    let ExportFormat::Json = args.format;
    anyhow::ensure!(
        !args.budgets.is_empty(),
        "--budgets is empty: give the mean budgets to export the plan at (e.g. 64,128,256)"
    );
    let source = profile_source(&args.what)?;
    let p = source.load()?;
    let doc = ProfileExport::new(&p, &args.budgets)?;
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    let Some(out) = &args.out else {
        print!("{text}");
        return Ok(());
    };
    create_parent_dir(out)?;
    store::write_file_atomic(out, text.as_bytes())
        .with_context(|| format!("cannot write --out {}", out.display()))?;
    if args.json {
        super::print_json(&serde_json::json!({
            "out": out, "source": source.to_string(), "model_id": doc.model_id,
            "schema": doc.schema, "version": doc.version, "budgets": args.budgets,
        }))
    } else {
        println!(
            "wrote {} ({} v{}, {} from {source}, plans at budgets {:?})",
            out.display(),
            doc.schema,
            doc.version,
            doc.model_id,
            args.budgets
        );
        Ok(())
    }
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let source = profile_source(&args.what)?;
    let p = source.load()?;
    let budgets = args.budget.map(|b| budgets_of(&p, b)).transpose()?;
    if let Some(png) = &args.png {
        let heads: Vec<String> = (0..p.fingerprint.n_heads).map(|h| h.to_string()).collect();
        let layers: Vec<String> = (0..p.fingerprint.n_layers).map(|l| l.to_string()).collect();
        let max = p.srh_scores.iter().flatten().copied().fold(0.0, f64::max);
        heatmap_png(
            png,
            &format!("{}: Semantic Retrieval Head scores", p.model_id),
            "query head",
            "layer",
            &heads,
            &layers,
            &p.srh_scores,
            Some((0.0, max)),
        )?;
    }
    if args.json {
        let mut j = serde_json::json!({
            "source": source.to_string(),
            "model_id": p.model_id, "srh_scores": p.srh_scores,
            "retrieval_scores": p.retrieval_scores,
            "layer_errors": p.layer_errors.as_ref().map(|e| e.per_layer.clone()),
            "layer_error_source": p.layer_errors.as_ref().map(|e| e.source.clone()),
            "defaults": p.defaults,
            "tuning": p.tuning,
            "recommendation": p.recommendation,
        });
        if let Some((b, note)) = &budgets {
            j["budget"] = args.budget.into();
            j["budgets"] = serde_json::json!(b);
            j["budget_note"] = serde_json::json!(note);
        }
        if let Some(png) = &args.png {
            j["png"] = serde_json::json!(png);
        }
        super::print_json(&j)
    } else {
        println!("profile of {}: {source}", p.model_id);
        print_heads(
            &p,
            budgets.as_ref().map(|(b, _)| (args.budget.unwrap_or(0), b)),
        );
        if let Some(le) = &p.layer_errors {
            println!("layer errors: {} prompts", le.source);
        } else {
            println!("no layer errors: CompressKV uses uniform layer budgets with this profile");
        }
        if let Some((_, Some(note))) = &budgets {
            println!("{note}");
        }
        println!("\nCompressKV settings chosen on held-out prompts (`profile tune`):");
        super::profile_tune::print_tuning(&p);
        print_recommendation(&p);
        if let Some(png) = &args.png {
            println!("wrote {}", png.display());
        }
        Ok(())
    }
}

/// The budget `--budget auto` uses, and what it was measured on.
fn print_recommendation(p: &Profile) {
    let Some(r) = &p.recommendation else {
        println!(
            "\nno budget recommendation (run `compresskv profile verify {} --write` for \
             `--budget auto`)",
            p.model_id
        );
        return;
    };
    let shares: Vec<String> = r
        .shares
        .iter()
        .map(|(b, s)| format!("{b}: {:.0}%", 100.0 * s))
        .collect();
    println!(
        "\nrecommended budget (`--budget auto`): {} — the smallest keeping ≥ {:.0}% of the full \
         cache's score ({:.1}) with {}; share of full per budget: {}; {}, lengths {:?}, depths \
         {:?}; measured {}",
        r.budget,
        100.0 * r.target,
        r.full_score,
        r.method,
        shares.join(", "),
        r.prompts,
        r.lengths,
        r.depths,
        r.created
    );
}

/// The per-layer table: top heads by both scores, the error share and, when given, the budget.
fn print_heads(p: &Profile, budgets: Option<(usize, &Vec<Option<usize>>)>) {
    let fmt = |order: Vec<usize>, s: &Vec<f64>| {
        order
            .iter()
            .take(3)
            .map(|&h| format!("{h} ({:.2})", s[h]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut t = Table::new()
        .col("layer", |&l: &usize| l.to_string())
        .col("SRH heads (score)", |&l| {
            fmt(p.top_srh_heads(l, 4), &p.srh_scores[l])
        })
        .col("classic retrieval heads (score)", |&l| {
            fmt(p.top_retrieval_heads(l, 4), &p.retrieval_scores[l])
        })
        .col("error share", |&l| {
            p.layer_errors
                .as_ref()
                .map_or("-".into(), |e| format!("{:.3}", e.per_layer[l]))
        });
    if let Some((budget, b)) = budgets {
        t = t.col(format!("budget @{budget}"), move |&l| {
            b[l].map_or("kept (not compressed)".into(), |x| x.to_string())
        });
    }
    let layers: Vec<usize> = (0..p.srh_scores.len()).collect();
    println!("{}", t.render(&layers));
}
