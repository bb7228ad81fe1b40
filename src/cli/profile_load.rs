//! Finds and checks the profile of a loaded model, and turns it into what presses read.

use std::path::PathBuf;

use anyhow::Context;
use compresskv_runtime::loader::LoadedModel;
use compresskv_runtime::press::HeadProfile;
use compresskv_runtime::profile::{
    BudgetRecommendation, Effective, Overrides, ProfileSource, find_profile_from_env,
};

/// Where `--profile auto|PATH` points for `loaded`.
pub fn profile_source(loaded: &LoadedModel, arg: &str) -> anyhow::Result<ProfileSource> {
    Ok(if arg == "auto" {
        find_profile_from_env(&loaded.id, &loaded.path)?
    } else {
        ProfileSource::File(PathBuf::from(arg))
    })
}

/// What `--budget auto` stands for: the budget recommendation of the profile `--profile
/// auto|PATH` names for `loaded` (checked to fit it), and where that profile came from. No
/// recommendation is an error saying how to make one (`model` is the `--model` given).
pub fn recommended_budget(
    loaded: &LoadedModel,
    arg: &str,
    model: &str,
) -> anyhow::Result<(BudgetRecommendation, ProfileSource)> {
    let source = profile_source(loaded, arg)?;
    let p = source
        .load()
        .with_context(|| format!("profile {source} (for --budget auto)"))?;
    p.check_matches(&loaded.spec, &loaded.id, None)?;
    match p.recommendation {
        Some(r) => Ok((r, source)),
        None => anyhow::bail!(
            "the profile has no budget recommendation ({source}): run `compresskv profile \
             verify {model} --write` to measure one, or give a number instead of --budget auto"
        ),
    }
}

/// Loads `--profile auto|PATH` for `loaded`, checks it fits the model, and returns the head ranking
/// and layer errors plus the settings in force at the mean `budget` (the tuning can differ
/// per budget; `overrides` checked and applied), and where the profile came from. A profile measured on other weights
/// of the same shape (its `weight_hash` differs) is a warning, or an error when `strict`.
pub fn load_head_profile(
    loaded: &LoadedModel,
    arg: &str,
    budget: Option<usize>,
    strict: bool,
    overrides: &Overrides,
) -> anyhow::Result<(HeadProfile, Effective, ProfileSource)> {
    let source = profile_source(loaded, arg)?;
    let p = source.load().with_context(|| format!("profile {source}"))?;
    p.check_matches(&loaded.spec, &loaded.id, None)?;
    if let Some(msg) = p.weight_mismatch(loaded.model.weight_hash()) {
        if strict {
            anyhow::bail!("{msg} (--strict-profile)");
        }
        eprintln!("warning: {msg}; pass --strict-profile to refuse it");
    }
    Ok((
        HeadProfile::from_profile(&p),
        p.effective_checked_at(budget, overrides)?,
        source,
    ))
}
