//! Where the cache lives: its root (`$COMPRESSKV_HOME`, else `~/.cache/compresskv`) and the
//! directories under it. Only paths; nothing here touches the network.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable: root of the cache (default `$HOME/.cache/compresskv`).
pub const ENV_HOME: &str = "COMPRESSKV_HOME";

/// Root of the cache: `$COMPRESSKV_HOME`, else `$HOME/.cache/compresskv`.
pub fn cache_home() -> PathBuf {
    cache_home_from(|k| std::env::var_os(k))
}

/// [`cache_home`] with an explicit environment lookup (for tests and embedding).
/// Falls back to `%USERPROFILE%` when `HOME` is unset, then to the temp dir.
pub fn cache_home_from(get: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
    if let Some(h) = non_empty(ENV_HOME) {
        return PathBuf::from(h);
    }
    let user_home = non_empty("HOME")
        .or_else(|| non_empty("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    user_home.join(".cache").join("compresskv")
}

/// `<home>/models/<org>--<name>/` for the current cache home.
pub fn model_cache_dir(model_id: &str) -> PathBuf {
    model_cache_dir_in(&cache_home(), model_id)
}

/// `<home>/models/<org>--<name>/`. Path separators in the id become `--`.
pub fn model_cache_dir_in(home: &Path, model_id: &str) -> PathBuf {
    let name = model_id.trim_matches('/').replace(['/', '\\'], "--");
    home.join("models").join(name)
}

/// `<home>/datasets/paul-graham-essays/` for the current cache home.
pub fn haystack_dir() -> PathBuf {
    haystack_dir_in(&cache_home())
}

/// `<home>/datasets/paul-graham-essays/`.
pub fn haystack_dir_in(home: &Path) -> PathBuf {
    home.join("datasets").join("paul-graham-essays")
}

/// `<home>/wheels/`: where `pip download` puts wheels (kept for reuse).
pub fn wheels_dir_in(home: &Path) -> PathBuf {
    home.join("wheels")
}
