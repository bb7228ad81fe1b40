//! `compresskv profile`: calibrate a model once and write its profile; `profile show`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use compresskv_profiler::calibrate::{Grid, load_haystack, load_needles, profile_model};
use compresskv_runtime::RuntimeDevice;
use compresskv_runtime::loader::{fetch, load_model};
use compresskv_runtime::profile::{Profile, default_repo_profiles_dir, profile_file_name};
use indicatif::{ProgressBar, ProgressStyle};

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
    /// Print a profile: top SRHs and classic retrieval heads per layer.
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model id, HF directory or .gguf file.
    #[arg(long)]
    pub model: Option<String>,
    /// Directory of .txt files (default: the fetched Paul Graham essays).
    #[arg(long)]
    pub haystack: Option<PathBuf>,
    /// Needles jsonl (default: calibration-data/needles.jsonl).
    #[arg(long)]
    pub needles: Option<PathBuf>,
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 2000])]
    pub lengths: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_values_t = vec![20.0, 50.0, 80.0])]
    pub depths: Vec<f64>,
    #[arg(long, default_value_t = 50)]
    pub max_new: usize,
    /// Output file (default: profiles/<org>--<name>.ron in the repository).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Model id or profile path.
    pub what: String,
    #[arg(long)]
    pub json: bool,
}

pub fn run(device: &str, a: ProfileArgs) -> anyhow::Result<()> {
    match a.sub {
        Some(ProfileSub::Show(s)) => show(s),
        None => calibrate(device, a.run),
    }
}

fn calibrate(device: &str, a: RunArgs) -> anyhow::Result<()> {
    let model = a
        .model
        .context("--model is required (e.g. --model google/gemma-3-270m)")?;
    let device = RuntimeDevice::parse(device)?;
    let lm = load_model(&model, &device)?;
    let needles_path = a.needles.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("calibration-data/needles.jsonl")
    });
    let needles = load_needles(&needles_path)?;
    let hay_dir = a.haystack.clone().unwrap_or_else(fetch::haystack_dir);
    if a.haystack.is_none() && !hay_dir.is_dir() {
        fetch::fetch_haystack(&mut |l| eprintln!("  {l}"))?;
    }
    let haystack = load_haystack(&hay_dir)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_repo_profiles_dir().join(profile_file_name(&lm.id)));
    let checkpoint = out.with_extension("ron.partial.jsonl");
    let grid = Grid {
        lengths: a.lengths.clone(),
        depths: a.depths.clone(),
        max_new: a.max_new,
    };
    let mut calib = std::fs::read(&needles_path)?;
    calib.extend_from_slice(haystack.as_bytes());
    let total = needles.len() * grid.lengths.len() * grid.depths.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
    )?);
    if a.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (profile, results) = profile_model(
        &lm,
        &needles,
        &haystack,
        &grid,
        &checkpoint,
        a.resume,
        &calib,
        &mut |i, _, msg| {
            bar.set_position(i as u64);
            bar.set_message(msg.to_string());
        },
    )?;
    bar.finish_and_clear();
    profile.save_atomic(&out)?;
    let _ = std::fs::remove_file(&checkpoint);
    if a.json {
        super::print_json(&serde_json::json!({
            "out": out, "model_id": profile.model_id, "srh_scores": profile.srh_scores,
            "retrieval_scores": profile.retrieval_scores,
            "samples": results.len(), "counted": results.iter().filter(|r| r.counted).count(),
            "wall_time_s": profile.provenance.wall_time_s,
        }))?;
    } else {
        println!("wrote {}", out.display());
        print_heads(&profile);
    }
    Ok(())
}

fn show(a: ShowArgs) -> anyhow::Result<()> {
    let path = if std::path::Path::new(&a.what).exists() {
        PathBuf::from(&a.what)
    } else {
        default_repo_profiles_dir().join(profile_file_name(&a.what))
    };
    let p = Profile::load(&path)?;
    if a.json {
        super::print_json(&serde_json::json!({
            "model_id": p.model_id, "srh_scores": p.srh_scores,
            "retrieval_scores": p.retrieval_scores,
            "layer_errors": p.layer_errors.as_ref().map(|e| e.per_layer.clone()),
        }))
    } else {
        print_heads(&p);
        Ok(())
    }
}

fn print_heads(p: &Profile) {
    let mut t = Table::new([
        "layer",
        "SRH heads (score)",
        "classic retrieval heads (score)",
    ]);
    for l in 0..p.srh_scores.len() {
        let fmt = |order: Vec<usize>, s: &Vec<f64>| {
            order
                .iter()
                .take(3)
                .map(|&h| format!("{h} ({:.2})", s[h]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        t.row([
            l.to_string(),
            fmt(p.top_srh_heads(l, 4), &p.srh_scores[l]),
            fmt(p.top_retrieval_heads(l, 4), &p.retrieval_scores[l]),
        ]);
    }
    println!("{}", t.render());
}
