//! Resolving a `--model` argument (a path or an `org/name` id) to a model directory or `.gguf`
//! file in the cache, and the model id a path gets (see the module docs of [`super`]).

use std::fs;
use std::path::{Path, PathBuf};

use super::FetchError;
use super::known::{find_known_model, known_ids};
use super::layout::{cache_home, model_cache_dir_in};

/// Where a `--model` argument points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// Hugging Face layout: directory with `config.json` (+ safetensors, tokenizer).
    HfDir(PathBuf),
    /// A single GGUF file.
    GgufFile(PathBuf),
}

impl ModelLocation {
    pub fn path(&self) -> &Path {
        match self {
            ModelLocation::HfDir(p) | ModelLocation::GgufFile(p) => p,
        }
    }
}

/// A resolved `--model` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// `google/gemma-3-270m` for ids; for paths see the module docs.
    pub id: String,
    pub location: ModelLocation,
}

/// Resolves a `--model` argument (see [`resolve_model_in`]) in [`cache_home`].
pub fn resolve_model(arg: &str) -> Result<ResolvedModel, FetchError> {
    resolve_model_in(&cache_home(), arg)
}

/// Resolves a `--model` argument against the cache rooted at `home`:
///
/// 1. an existing path: a `.gguf` file; a directory with `config.json` (HF form);
///    or a directory without `config.json` holding exactly one `.gguf` file;
/// 2. otherwise a model id (`org/name`), looked up in `model_cache_dir_in(home, id)`:
///    an HF directory there (with `config.json`), the known model's file, or the
///    single `.gguf` file in it.
///
/// Missing or unknown models give an error that says how to fetch them.
pub fn resolve_model_in(home: &Path, arg: &str) -> Result<ResolvedModel, FetchError> {
    let arg = arg.trim();
    let path = expand_tilde(arg);
    match fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {
            if is_gguf_name(&path) {
                Ok(ResolvedModel {
                    id: id_for_path(home, &path, false),
                    location: ModelLocation::GgufFile(path),
                })
            } else {
                Err(FetchError::NotAModel {
                    path,
                    reason: "it is a file but not a .gguf file; pass a .gguf file, a model directory (containing config.json), or a model id".into(),
                })
            }
        }
        Ok(meta) if meta.is_dir() => resolve_dir(home, &path),
        Ok(_) => Err(FetchError::NotAModel {
            path,
            reason: "it is neither a regular file nor a directory; pass a .gguf file, a model directory (containing config.json), or a model id".into(),
        }),
        Err(_) if !arg.is_empty() && looks_like_model_id(arg) => resolve_id_in(home, arg),
        Err(_) if arg.is_empty() => Err(FetchError::UnknownModel {
            id: String::new(),
            known: known_ids(),
        }),
        Err(_) => Err(FetchError::PathNotFound {
            path,
            known: known_ids(),
        }),
    }
}

fn expand_tilde(arg: &str) -> PathBuf {
    if let Some(rest) = arg.strip_prefix("~/")
        && let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty())
    {
        return PathBuf::from(h).join(rest);
    }
    PathBuf::from(arg)
}

fn is_gguf_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// `name` or `org/name`, each segment made of `[A-Za-z0-9._-]`, not `.`/`..`,
/// and not ending in `.gguf` (that is a missing file, not an id).
pub(super) fn looks_like_model_id(s: &str) -> bool {
    let segs: Vec<&str> = s.split('/').collect();
    if segs.len() > 2 || s.to_ascii_lowercase().ends_with(".gguf") {
        return false;
    }
    segs.iter().all(|seg| {
        !seg.is_empty()
            && *seg != "."
            && *seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    })
}

/// `.gguf` files directly in `dir`, ignoring hidden (temporary) files, sorted.
fn gguf_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            is_gguf_name(p)
                && p.is_file()
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

fn resolve_dir(home: &Path, dir: &Path) -> Result<ResolvedModel, FetchError> {
    if dir.join("config.json").is_file() {
        return Ok(ResolvedModel {
            id: id_for_path(home, dir, true),
            location: ModelLocation::HfDir(dir.to_path_buf()),
        });
    }
    let ggufs = gguf_files_in(dir);
    match ggufs.len() {
        1 => {
            let file = ggufs.into_iter().next().expect("one element");
            Ok(ResolvedModel {
                id: id_for_path(home, &file, false),
                location: ModelLocation::GgufFile(file),
            })
        }
        0 => Err(FetchError::NotAModel {
            path: dir.to_path_buf(),
            reason: "the directory has no config.json and no .gguf file; pass a Hugging Face model directory (containing config.json), a .gguf file, or a model id".into(),
        }),
        _ => Err(FetchError::NotAModel {
            path: dir.to_path_buf(),
            reason: format!(
                "the directory has no config.json and several .gguf files ({}); pass one of them directly",
                ggufs
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

fn resolve_id_in(home: &Path, id: &str) -> Result<ResolvedModel, FetchError> {
    let dir = model_cache_dir_in(home, id);
    if dir.join("config.json").is_file() {
        return Ok(ResolvedModel {
            id: id.to_string(),
            location: ModelLocation::HfDir(dir),
        });
    }
    let known = find_known_model(id);
    if let Some(k) = known {
        let file = dir.join(k.file_name);
        if let Ok(meta) = fs::metadata(&file)
            && meta.is_file()
        {
            if meta.len() != k.size {
                return Err(FetchError::NotAModel {
                    path: file,
                    reason: format!(
                        "it has {} bytes but {} expects {} (incomplete or corrupt); rerun `compresskv fetch {}` to repair it",
                        meta.len(),
                        k.id,
                        k.size,
                        k.id
                    ),
                });
            }
            return Ok(ResolvedModel {
                id: id.to_string(),
                location: ModelLocation::GgufFile(file),
            });
        }
    }
    let ggufs = gguf_files_in(&dir);
    if ggufs.len() == 1 {
        return Ok(ResolvedModel {
            id: id.to_string(),
            location: ModelLocation::GgufFile(ggufs.into_iter().next().expect("one element")),
        });
    }
    if ggufs.len() > 1 {
        return Err(FetchError::NotAModel {
            path: dir,
            reason: "the cache directory holds several .gguf files; pass one of them directly"
                .into(),
        });
    }
    match known {
        Some(_) => Err(FetchError::NotFetched {
            id: id.to_string(),
            dir,
        }),
        None => Err(FetchError::UnknownModel {
            id: id.to_string(),
            known: known_ids(),
        }),
    }
}

/// Model id for a path (see the module docs).
fn id_for_path(home: &Path, path: &Path, is_hf_dir: bool) -> String {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let models = home.join("models");
    let models = models.canonicalize().unwrap_or(models);
    if let Ok(rest) = canon.strip_prefix(&models)
        && let Some(first) = rest.components().next()
        && let Some(name) = first.as_os_str().to_str()
        && !name.is_empty()
    {
        return match name.split_once("--") {
            Some((org, model)) if !org.is_empty() && !model.is_empty() => {
                format!("{org}/{model}")
            }
            _ => name.to_string(),
        };
    }
    if is_hf_dir {
        if let Ok(text) = fs::read_to_string(canon.join("config.json"))
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(name) = json.get("_name_or_path").and_then(|v| v.as_str())
            && !name.trim().is_empty()
        {
            return name.trim().to_string();
        }
        canon
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| canon.to_string_lossy().into_owned())
    } else {
        canon
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| canon.to_string_lossy().into_owned())
    }
}
