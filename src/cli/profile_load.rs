//! Finds and checks the profile of a loaded model, and turns it into what presses read.

use std::path::PathBuf;

use anyhow::Context;
use compresskv_runtime::loader::LoadedModel;
use compresskv_runtime::press::HeadProfile;
use compresskv_runtime::profile::{
    Effective, Overrides, Profile, default_repo_profiles_dir, find_profile,
};

/// Loads `--profile auto|PATH` for `lm`, checks it fits the model, and returns the head ranking
/// and layer errors plus the profile's settings in force at the mean `budget` (the tuning
/// can differ per budget).
pub fn load_head_profile(
    lm: &LoadedModel,
    arg: &str,
    budget: Option<usize>,
) -> anyhow::Result<(HeadProfile, Effective)> {
    let path = if arg == "auto" {
        let env = std::env::var_os("COMPRESSKV_PROFILES").map(PathBuf::from);
        find_profile(
            &lm.id,
            &lm.path,
            env.as_deref(),
            Some(&default_repo_profiles_dir()),
        )?
    } else {
        PathBuf::from(arg)
    };
    let p = Profile::load(&path).with_context(|| format!("profile {}", path.display()))?;
    p.check_matches(&lm.spec, &lm.id, None)?;
    Ok((
        HeadProfile::from_profile(&p),
        p.effective_at(budget, &Overrides::default()),
    ))
}
