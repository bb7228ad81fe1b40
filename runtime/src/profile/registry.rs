//! Where profiles live and how a model's profile is found.
//!
//! Search order for model `org/name` loaded from `MODEL_PATH` (the first hit wins):
//! 1. `<model dir>/compresskv.ron` (the model dir is `MODEL_PATH` if it is a directory, else its
//!    parent: a profile shipped next to the weights),
//! 2. `$COMPRESSKV_PROFILES/org--name.ron`,
//! 3. the user's profiles in the cache, `<cache>/profiles/org--name.ron`, where `<cache>` is
//!    `$COMPRESSKV_HOME`, else `~/.cache/compresskv` (the cache the models are fetched into;
//!    `compresskv profile` writes here by default),
//! 4. the profiles built into the binary ([`super::builtin`]: the repository's `profiles/`,
//!    embedded at build time).
//!
//! A file the user put in places 1–3 therefore shadows the built-in profile of the same model.
//! [`find_profile`] says where the profile came from ([`ProfileSource`]); when there is none,
//! its error lists every place it looked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Profile, ProfileError, builtin};

/// File name of a profile stored next to a model's weights.
pub const MODEL_DIR_PROFILE: &str = "compresskv.ron";

/// Environment variable naming an extra profiles directory.
pub const PROFILES_ENV: &str = "COMPRESSKV_PROFILES";

/// Sub-directory of the cache root holding the user's profiles.
pub const USER_PROFILES_SUBDIR: &str = "profiles";

/// How a built-in profile is named in messages and `--json` output: `built-in:<file name>`.
pub const BUILTIN_PREFIX: &str = "built-in:";

/// Where a profile comes from: a file, or the copy built into the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    File(PathBuf),
    /// A file name of [`builtin::PROFILES`], e.g. `google--gemma-3-270m.ron`.
    BuiltIn(&'static str),
}

impl ProfileSource {
    /// Reads and validates the profile, with the same checks for both kinds of source.
    pub fn load(&self) -> Result<Profile, ProfileError> {
        match self {
            ProfileSource::File(p) => Profile::load(p),
            ProfileSource::BuiltIn(name) => match builtin::profile(name) {
                Some((_, text)) => Profile::from_ron_str(text, &self.to_string()),
                None => Err(ProfileError::io(
                    "find the built-in profile",
                    self.to_string(),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "this binary has no such built-in profile",
                    ),
                )),
            },
        }
    }

    /// The file, or `None` for a built-in profile.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ProfileSource::File(p) => Some(p),
            ProfileSource::BuiltIn(_) => None,
        }
    }

    pub fn is_builtin(&self) -> bool {
        matches!(self, ProfileSource::BuiltIn(_))
    }
}

/// The file's path, or `built-in:<file name>`.
impl std::fmt::Display for ProfileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileSource::File(p) => write!(f, "{}", p.display()),
            ProfileSource::BuiltIn(name) => write!(f, "{BUILTIN_PREFIX}{name}"),
        }
    }
}

/// `google/gemma-3-270m` → `google--gemma-3-270m.ron`. Characters other than ASCII
/// alphanumerics, `-`, `_` and `.` become `_`; empty parts and leading dots of each part are
/// dropped, so the name never escapes the directory or hides the file.
pub fn profile_file_name(model_id: &str) -> String {
    let parts: Vec<String> = model_id
        .trim()
        .split(['/', '\\'])
        .map(|p| p.trim_start_matches('.'))
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .collect();
    let stem = parts.join("--");
    if stem.is_empty() {
        "unnamed.ron".to_string()
    } else {
        format!("{stem}.ron")
    }
}

/// The user's profile directory: `<cache>/profiles`, with the cache root of
/// [`crate::store::cache_home`] (`$COMPRESSKV_HOME`, else `~/.cache/compresskv`).
/// `compresskv profile` writes here unless given `--out`.
pub fn user_profiles_dir() -> PathBuf {
    user_profiles_dir_in(&crate::store::cache_home())
}

/// `<home>/profiles` for the cache rooted at `home`.
pub fn user_profiles_dir_in(home: &Path) -> PathBuf {
    home.join(USER_PROFILES_SUBDIR)
}

/// Where `compresskv profile` writes the profile of `model_id` by default:
/// `<user profiles dir>/<org>--<name>.ron`.
pub fn default_profile_out(model_id: &str) -> PathBuf {
    user_profiles_dir().join(profile_file_name(model_id))
}

/// `$COMPRESSKV_PROFILES`, if set and non-empty.
pub fn env_profiles_dir() -> Option<PathBuf> {
    std::env::var_os(PROFILES_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// [`find_profile`] with the directories of this process's environment: `$COMPRESSKV_PROFILES`
/// and [`user_profiles_dir`].
pub fn find_profile_from_env(
    model_id: &str,
    model_path: &Path,
) -> Result<ProfileSource, ProfileError> {
    find_profile(
        model_id,
        model_path,
        env_profiles_dir().as_deref(),
        Some(&user_profiles_dir()),
    )
}

/// Finds the profile of `model_id` loaded from `model_path`; see the module docs for the order.
/// `env_dir` is the value of `$COMPRESSKV_PROFILES` (see [`env_profiles_dir`]) and `user_dir`
/// the user's profile directory (see [`user_profiles_dir`]); the built-in profiles come last.
pub fn find_profile(
    model_id: &str,
    model_path: &Path,
    env_dir: Option<&Path>,
    user_dir: Option<&Path>,
) -> Result<ProfileSource, ProfileError> {
    let file = profile_file_name(model_id);
    let mut searched = String::new();
    fn try_path(searched: &mut String, p: PathBuf, what: &str) -> Option<ProfileSource> {
        if p.is_file() {
            Some(ProfileSource::File(p))
        } else {
            let _ = writeln!(searched, "  - {} ({what}): not found", p.display());
            None
        }
    }

    let model_dir = if model_path.is_dir() {
        Some(model_path.to_path_buf())
    } else if model_path.exists() {
        Some(match model_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
    } else {
        None
    };
    match model_dir {
        Some(d) => {
            if let Some(p) = try_path(
                &mut searched,
                d.join(MODEL_DIR_PROFILE),
                "next to the model",
            ) {
                return Ok(p);
            }
        }
        None => {
            let _ = writeln!(
                searched,
                "  - <model dir>/{MODEL_DIR_PROFILE}: skipped, the model is not on disk or in \
                 the model cache ({} does not exist)",
                model_path.display()
            );
        }
    }
    match env_dir {
        Some(d) => {
            if let Some(p) = try_path(&mut searched, d.join(&file), &format!("${PROFILES_ENV}")) {
                return Ok(p);
            }
        }
        None => {
            let _ = writeln!(
                searched,
                "  - ${PROFILES_ENV}/{file}: ${PROFILES_ENV} is not set"
            );
        }
    }
    match user_dir {
        Some(d) => {
            if let Some(p) = try_path(&mut searched, d.join(&file), "user profiles") {
                return Ok(p);
            }
        }
        None => {
            let _ = writeln!(
                searched,
                "  - <cache>/{USER_PROFILES_SUBDIR}/{file}: no user profile directory given"
            );
        }
    }
    if let Some((name, _)) = builtin::profile(&file) {
        return Ok(ProfileSource::BuiltIn(name));
    }
    let _ = writeln!(searched, "  - built in: no profile for {model_id}");
    let write_to = match user_dir {
        Some(d) => d.join(&file).display().to_string(),
        None => format!("<cache>/{USER_PROFILES_SUBDIR}/{file}"),
    };
    Err(ProfileError::NotFound {
        model_id: model_id.to_string(),
        write_to,
        searched: searched.trim_end().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_dir;
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            profile_file_name("google/gemma-3-270m"),
            "google--gemma-3-270m.ron"
        );
        assert_eq!(
            profile_file_name("meta-llama/Llama-3.1-8B-Instruct"),
            "meta-llama--Llama-3.1-8B-Instruct.ron"
        );
        assert_eq!(profile_file_name("gpt2"), "gpt2.ron");
        assert_eq!(profile_file_name("/models/x y/"), "models--x_y.ron");
        assert_eq!(profile_file_name("../../etc"), "etc.ron");
        assert_eq!(profile_file_name("org/.hidden"), "org--hidden.ron");
        assert_eq!(profile_file_name(""), "unnamed.ron");
    }

    #[test]
    fn user_dir_is_in_the_cache_root() {
        let home = Path::new("/some/cache");
        assert_eq!(user_profiles_dir_in(home), home.join("profiles"));
        assert_eq!(
            user_profiles_dir(),
            crate::store::cache_home().join("profiles")
        );
        assert_eq!(
            default_profile_out("google/gemma-3-270m"),
            user_profiles_dir().join("google--gemma-3-270m.ron")
        );
    }

    #[test]
    fn source_display_and_load() {
        let b = ProfileSource::BuiltIn("google--gemma-3-270m.ron");
        assert_eq!(b.to_string(), "built-in:google--gemma-3-270m.ron");
        assert!(b.is_builtin() && b.path().is_none());
        assert_eq!(b.load().unwrap().model_id, "google/gemma-3-270m");
        let f = ProfileSource::File(PathBuf::from("/x/y.ron"));
        assert_eq!(f.to_string(), "/x/y.ron");
        assert_eq!(f.path(), Some(Path::new("/x/y.ron")));
        // An unknown built-in name is an error, not a panic.
        let e = ProfileSource::BuiltIn("nosuch.ron").load().unwrap_err();
        assert!(e.to_string().contains("built-in:nosuch.ron"), "{e}");
    }

    /// A model without a built-in profile: model dir → $COMPRESSKV_PROFILES → user dir.
    #[test]
    fn search_order_model_dir_then_env_then_user() {
        let root = temp_dir("registry");
        let (model, env, user) = (root.join("model"), root.join("env"), root.join("user"));
        for d in [&model, &env, &user] {
            std::fs::create_dir_all(d).unwrap();
        }
        let id = "meta-llama/Llama-3.1-8B-Instruct";
        let file = profile_file_name(id);
        let f = |p: PathBuf| ProfileSource::File(p);
        std::fs::write(model.join("config.json"), "{}").unwrap();
        std::fs::write(model.join(MODEL_DIR_PROFILE), "model").unwrap();
        std::fs::write(env.join(&file), "env").unwrap();
        std::fs::write(user.join(&file), "user").unwrap();
        let find = |path: &Path| find_profile(id, path, Some(&env), Some(&user)).unwrap();

        // All three present: the one next to the model wins, whether the model path is the
        // directory or a file in it.
        assert_eq!(find(&model), f(model.join(MODEL_DIR_PROFILE)));
        assert_eq!(
            find(&model.join("config.json")),
            f(model.join(MODEL_DIR_PROFILE))
        );
        // Then $COMPRESSKV_PROFILES.
        std::fs::remove_file(model.join(MODEL_DIR_PROFILE)).unwrap();
        assert_eq!(find(&model), f(env.join(&file)));
        // Then the user's profile directory.
        std::fs::remove_file(env.join(&file)).unwrap();
        assert_eq!(find(&model), f(user.join(&file)));
        // Env dir not given: straight to the user directory.
        std::fs::write(env.join(&file), "env").unwrap();
        assert_eq!(
            find_profile(id, &model, None, Some(&user)).unwrap(),
            f(user.join(&file))
        );
        // A profile for another model in the env dir does not count.
        std::fs::remove_file(env.join(&file)).unwrap();
        std::fs::write(env.join("other--model.ron"), "x").unwrap();
        assert_eq!(find(&model), f(user.join(&file)));
        // A directory with the profile's name is not a profile; no built-in either.
        std::fs::remove_file(user.join(&file)).unwrap();
        std::fs::create_dir(user.join(&file)).unwrap();
        assert!(find_profile(id, &model, Some(&env), Some(&user)).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }

    /// A model with a built-in profile: any file the user put in the search path shadows it;
    /// without one, the built-in profile is found, and loads.
    #[test]
    fn builtin_fallback_and_user_files_shadow_it() {
        let root = temp_dir("registry-builtin");
        let (model, env, user) = (root.join("model"), root.join("env"), root.join("user"));
        std::fs::create_dir_all(&model).unwrap();
        let id = "google/gemma-3-270m";
        let file = profile_file_name(id);
        let builtin = ProfileSource::BuiltIn("google--gemma-3-270m.ron");

        // Nothing on disk (the directories need not even exist): the built-in profile.
        let found = find_profile(id, &model, Some(&env), Some(&user)).unwrap();
        assert_eq!(found, builtin);
        assert_eq!(found.load().unwrap().model_id, id);
        assert_eq!(
            find_profile(id, &root.join("nope"), None, None).unwrap(),
            builtin
        );

        // A user file shadows it…
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join(&file), "user").unwrap();
        assert_eq!(
            find_profile(id, &model, Some(&env), Some(&user)).unwrap(),
            ProfileSource::File(user.join(&file))
        );
        // …and so do $COMPRESSKV_PROFILES and the model directory, in that order.
        std::fs::create_dir_all(&env).unwrap();
        std::fs::write(env.join(&file), "env").unwrap();
        assert_eq!(
            find_profile(id, &model, Some(&env), Some(&user)).unwrap(),
            ProfileSource::File(env.join(&file))
        );
        std::fs::write(model.join(MODEL_DIR_PROFILE), "model").unwrap();
        assert_eq!(
            find_profile(id, &model, Some(&env), Some(&user)).unwrap(),
            ProfileSource::File(model.join(MODEL_DIR_PROFILE))
        );
        // The file found is loaded as it is: a broken user file is an error, not a silent
        // fall-back to the built-in profile.
        let e = find_profile(id, &model, Some(&env), Some(&user))
            .unwrap()
            .load()
            .unwrap_err();
        assert!(matches!(e, ProfileError::Parse { .. }), "{e}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn not_found_lists_where_it_looked_and_how_to_fix() {
        let root = temp_dir("registry-missing");
        let (model, env, user) = (root.join("model"), root.join("env"), root.join("user"));
        std::fs::create_dir_all(&model).unwrap();
        let id = "meta-llama/Llama-3.1-8B-Instruct";
        let e = find_profile(id, &model, Some(&env), Some(&user)).unwrap_err();
        assert!(matches!(e, ProfileError::NotFound { .. }));
        let m = e.to_string();
        for want in [
            model.join(MODEL_DIR_PROFILE).display().to_string(),
            env.join("meta-llama--Llama-3.1-8B-Instruct.ron")
                .display()
                .to_string(),
            user.join("meta-llama--Llama-3.1-8B-Instruct.ron")
                .display()
                .to_string(),
            "built in: no profile for meta-llama/Llama-3.1-8B-Instruct".to_string(),
            "compresskv profile --model meta-llama/Llama-3.1-8B-Instruct".to_string(),
            "one of the paths above".to_string(),
            "--profile PATH".to_string(),
        ] {
            assert!(m.contains(&want), "missing {want:?} in {m}");
        }
        // Nothing given and model path missing: still says what was skipped.
        let m = find_profile(id, &root.join("nope"), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("does not exist")
                && m.contains("COMPRESSKV_PROFILES is not set")
                && m.contains("built in: no profile"),
            "{m}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
