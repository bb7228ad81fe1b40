//! Where profiles live and how a model's profile is found.
//!
//! Search order for model `org/name` loaded from `MODEL_PATH`:
//! 1. `<model dir>/compresskv.ron` (the model dir is `MODEL_PATH` if it is a directory, else its
//!    parent: a profile shipped next to the weights),
//! 2. `$COMPRESSKV_PROFILES/org--name.ron`,
//! 3. the repository's `profiles/org--name.ron`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::ProfileError;

/// File name of a profile stored next to a model's weights.
pub const MODEL_DIR_PROFILE: &str = "compresskv.ron";

/// Environment variable naming an extra profiles directory.
pub const PROFILES_ENV: &str = "COMPRESSKV_PROFILES";

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

/// The repository's `profiles/` directory (next to the runtime crate).
pub fn default_repo_profiles_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles"))
}

/// `$COMPRESSKV_PROFILES`, if set and non-empty.
pub fn env_profiles_dir() -> Option<PathBuf> {
    std::env::var_os(PROFILES_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Finds the profile of `model_id` loaded from `model_path`; see the module docs for the order.
/// `env_dir` is the value of `$COMPRESSKV_PROFILES` (see [`env_profiles_dir`]) and `repo_dir` the
/// repository's `profiles/` (see [`default_repo_profiles_dir`]).
pub fn find_profile(
    model_id: &str,
    model_path: &Path,
    env_dir: Option<&Path>,
    repo_dir: Option<&Path>,
) -> Result<PathBuf, ProfileError> {
    let file = profile_file_name(model_id);
    let mut searched = String::new();
    fn try_path(searched: &mut String, p: PathBuf, what: &str) -> Option<PathBuf> {
        if p.is_file() {
            Some(p)
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
                "  - <model dir>/{MODEL_DIR_PROFILE}: skipped, model path {} does not exist",
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
    match repo_dir {
        Some(d) => {
            if let Some(p) = try_path(&mut searched, d.join(&file), "repository profiles/") {
                return Ok(p);
            }
        }
        None => {
            let _ = writeln!(
                searched,
                "  - profiles/{file}: no repository profiles/ directory given"
            );
        }
    }
    Err(ProfileError::NotFound {
        model_id: model_id.to_string(),
        file_name: file,
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
    fn repo_dir_points_at_profiles() {
        assert!(default_repo_profiles_dir().ends_with("../profiles"));
    }

    #[test]
    fn search_order_model_dir_then_env_then_repo() {
        let root = temp_dir("registry");
        let (model, env, repo) = (root.join("model"), root.join("env"), root.join("repo"));
        for d in [&model, &env, &repo] {
            std::fs::create_dir_all(d).unwrap();
        }
        let id = "google/gemma-3-270m";
        let file = profile_file_name(id);
        std::fs::write(model.join("config.json"), "{}").unwrap();
        std::fs::write(model.join(MODEL_DIR_PROFILE), "model").unwrap();
        std::fs::write(env.join(&file), "env").unwrap();
        std::fs::write(repo.join(&file), "repo").unwrap();
        let find = |path: &Path| find_profile(id, path, Some(&env), Some(&repo)).unwrap();

        // All three present: the one next to the model wins, whether the model path is the
        // directory or a file in it.
        assert_eq!(find(&model), model.join(MODEL_DIR_PROFILE));
        assert_eq!(
            find(&model.join("config.json")),
            model.join(MODEL_DIR_PROFILE)
        );
        // Then $COMPRESSKV_PROFILES.
        std::fs::remove_file(model.join(MODEL_DIR_PROFILE)).unwrap();
        assert_eq!(find(&model), env.join(&file));
        // Then the repository.
        std::fs::remove_file(env.join(&file)).unwrap();
        assert_eq!(find(&model), repo.join(&file));
        // Env dir not given: straight to the repository.
        std::fs::write(env.join(&file), "env").unwrap();
        assert_eq!(
            find_profile(id, &model, None, Some(&repo)).unwrap(),
            repo.join(&file)
        );
        // A profile for another model in the env dir does not count.
        std::fs::remove_file(env.join(&file)).unwrap();
        std::fs::write(env.join("other--model.ron"), "x").unwrap();
        assert_eq!(find(&model), repo.join(&file));
        // A directory with the profile's name is not a profile.
        std::fs::remove_file(repo.join(&file)).unwrap();
        std::fs::create_dir(repo.join(&file)).unwrap();
        assert!(find_profile(id, &model, Some(&env), Some(&repo)).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn not_found_lists_where_it_looked_and_how_to_fix() {
        let root = temp_dir("registry-missing");
        let (model, env, repo) = (root.join("model"), root.join("env"), root.join("repo"));
        std::fs::create_dir_all(&model).unwrap();
        let id = "meta-llama/Llama-3.1-8B-Instruct";
        let e = find_profile(id, &model, Some(&env), Some(&repo)).unwrap_err();
        assert!(matches!(e, ProfileError::NotFound { .. }));
        let m = e.to_string();
        for want in [
            model.join(MODEL_DIR_PROFILE).display().to_string(),
            env.join("meta-llama--Llama-3.1-8B-Instruct.ron")
                .display()
                .to_string(),
            repo.join("meta-llama--Llama-3.1-8B-Instruct.ron")
                .display()
                .to_string(),
            "compresskv profile --model meta-llama/Llama-3.1-8B-Instruct".to_string(),
            "--profile PATH".to_string(),
        ] {
            assert!(m.contains(&want), "missing {want:?} in {m}");
        }
        // Nothing given and model path missing: still says what was skipped.
        let m = find_profile(id, &root.join("nope"), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("does not exist") && m.contains("COMPRESSKV_PROFILES is not set"),
            "{m}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
