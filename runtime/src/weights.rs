//! Where a model's tensors come from, as the model sees it: the [`WeightSource`] trait the
//! safetensors and GGUF readers implement, and the [`LoadError`] they report.
//!
//! Lives below both `model` (which builds from a source) and `loader` (which opens the files and
//! calls `model::build`), so neither imports the other's internals and there is no cycle.

use std::path::{Path, PathBuf};

use crate::kernels::blocks::BlockFormat;
use crate::kernels::qmatrix::WeightBytes;
use crate::store::FetchError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("missing tensor `{name}` (expected shape {expected})")]
    MissingTensor { name: String, expected: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error(
        "unexpected tensors not used by the model: {}{} — is the config's architecture right?",
        .0.iter().take(8).cloned().collect::<Vec<_>>().join(", "),
        if .0.len() > 8 { format!(" (+{} more)", .0.len() - 8) } else { String::new() }
    )]
    ExtraTensors(Vec<String>),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}; try a smaller model, or `--device cpu`")]
    Device(String),
    /// Boxed: fetch errors carry pip's output and would make every `Result<_, LoadError>` large.
    #[error(transparent)]
    Fetch(Box<FetchError>),
}

impl From<FetchError> for LoadError {
    fn from(e: FetchError) -> Self {
        LoadError::Fetch(Box::new(e))
    }
}

impl LoadError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Which container the weights came from (decides tensor names and per-source transforms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Safetensors,
    Gguf,
}

/// A tensor in the block format it is stored in (no conversion), in PyTorch (row-major,
/// `[out, in]`) order: what the CPU kernels compute on, so the weights stay compact in memory.
pub struct RawTensor {
    pub format: BlockFormat,
    pub shape: Vec<usize>,
    pub bytes: WeightBytes,
}

/// A set of named tensors, returned as f32 in PyTorch (row-major, `[out, in]`) layout.
pub trait WeightSource {
    fn kind(&self) -> SourceKind;
    fn contains(&self, name: &str) -> bool;
    fn names(&self) -> Vec<String>;
    fn load(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), LoadError>;
    /// The tensor in its stored format, borrowed from the file's memory map where possible;
    /// `None` when the format has no CPU kernel (the caller falls back to [`Self::load`]).
    fn load_raw(&self, _name: &str) -> Result<Option<RawTensor>, LoadError> {
        Ok(None)
    }
    /// Tensors that may be present without being used.
    fn ignorable(&self, _name: &str) -> bool {
        false
    }
}
