//! Native GGUF reader with dequantization to `f32`.
//!
//! Why a hand-written reader: the model weights ship as a single GGUF file
//! (llama.cpp's container format). We only need to *read* it: parse the
//! header, metadata and tensor table once, memory-map the data section, and
//! turn individual tensors into `f32` on demand. Nothing here depends on
//! ggml itself; the block decoders follow ggml's reference
//! `dequantize_row_*` functions (ggml-quants.c) so results match llama.cpp /
//! gguf-py bit for bit up to float rounding order.
//!
//! Robustness policy: the file is untrusted input. Every length, count and
//! offset is bounds-checked with checked arithmetic *before* anything is
//! allocated or sliced, so a truncated or corrupted file yields a
//! [`GgufError`] naming the file, key or tensor involved — never a panic,
//! never an out-of-bounds read, never a multi-gigabyte allocation for a
//! tiny file.
//!
//! Layout reminder (all little-endian):
//! `magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv | kv* | tensor_info* | pad to alignment | data`.
//! Tensor dims are stored fastest-varying first (`ne[0]`); [`TensorInfo::shape`]
//! reverses them into PyTorch's row-major order.
//!
//! Files: this one holds the file and its tensor table; `parse` the container parser, `meta` the
//! metadata values, `types` the ggml tensor types and dequantisation, `tests` the unit tests.

mod meta;
mod parse;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::kernels::qmatrix::WeightBytes;
pub use meta::MetaValue;
use parse::parse;
use types::dequantize_impl;
pub use types::{GgmlType, dequantize};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data-section alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`; gguf.cpp rejects tensors with more dimensions.
const MAX_DIMS: u32 = 4;
/// Nested metadata arrays are legal in the format but never used in practice;
/// the cap keeps a malicious file from exhausting the stack via recursion.
const MAX_ARRAY_DEPTH: u32 = 8;
/// ggml uses signed 64-bit element counts; larger products are corrupt.
const MAX_ELEMENTS: u64 = i64::MAX as u64;

/// Everything that can go wrong while reading a GGUF file or dequantizing a
/// tensor. Each message names the file and the key/tensor involved, plus what
/// was expected, so a failure is actionable without a debugger.
#[derive(thiserror::Error, Debug)]
pub enum GgufError {
    #[error("{}: cannot open or memory-map GGUF file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a GGUF file: expected magic \"GGUF\" at byte 0, found \"{found}\"")]
    BadMagic { file: String, found: String },
    #[error("{file}: unsupported GGUF version {version}: {reason}")]
    UnsupportedVersion {
        file: String,
        version: u32,
        reason: &'static str,
    },
    #[error(
        "{file}: truncated or corrupt file while reading {what} at byte {offset}: \
         need {needed} bytes but only {available} remain"
    )]
    Truncated {
        file: String,
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("{file}: {what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        file: String,
        what: String,
        offset: u64,
    },
    #[error("{file}: {what} is implausibly large: {detail}")]
    Implausible {
        file: String,
        what: String,
        detail: String,
    },
    #[error("{file}: metadata key '{key}': unknown value type id {type_id} (expected 0..=12)")]
    UnknownValueType {
        file: String,
        key: String,
        type_id: u32,
    },
    #[error("{file}: duplicate metadata key '{key}'")]
    DuplicateKey { file: String, key: String },
    #[error("{file}: metadata key '{key}': {reason}")]
    BadMetadata {
        file: String,
        key: String,
        reason: String,
    },
    #[error("{file}: missing metadata key '{key}' (expected {expected})")]
    MissingKey {
        file: String,
        key: String,
        expected: &'static str,
    },
    #[error("{file}: metadata key '{key}' holds {found}, expected {expected}")]
    WrongMetaType {
        file: String,
        key: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{file}: tensor '{tensor}': unknown ggml type id {type_id}")]
    UnknownGgmlType {
        file: String,
        tensor: String,
        type_id: u32,
    },
    #[error("{file}: duplicate tensor name '{tensor}'")]
    DuplicateTensor { file: String, tensor: String },
    #[error("{file}: tensor '{tensor}': {reason}")]
    InvalidTensor {
        file: String,
        tensor: String,
        reason: String,
    },
    #[error("{file}: data section: {reason}")]
    BadDataSection { file: String, reason: String },
    #[error("{file}: no tensor named '{tensor}'")]
    TensorNotFound { file: String, tensor: String },
    #[error(
        "tensor '{tensor}': unsupported tensor type {ty} for dequantization \
         (supported: F32 F16 BF16 F64 I8 I16 I32 I64 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K)"
    )]
    UnsupportedTensorType { tensor: String, ty: GgmlType },
    #[error("tensor '{tensor}' ({ty}): {reason}")]
    BadTensorData {
        tensor: String,
        ty: GgmlType,
        reason: String,
    },
}

type Result<T> = std::result::Result<T, GgufError>;

/// One entry of the tensor table. Infos returned by [`GgufFile`] have been
/// validated: dims are sane, the byte range lies inside the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF/ggml order: `dims[0]` (`ne[0]`) is the fastest-varying (contiguous) axis.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Shape in PyTorch (row-major) order, i.e. `dims` reversed: a GGUF
    /// matrix with `ne = [in, out]` is a `[out, in]` `nn.Linear` weight.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Total element count (saturating, so a hand-built bogus info cannot panic).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Size of the tensor's data in bytes (saturating for hand-built infos;
    /// exact for infos coming from a parsed file).
    pub fn n_bytes(&self) -> u64 {
        let bs = self.ggml_type.block_size() as u64;
        (self.n_elements() / bs).saturating_mul(self.ggml_type.type_size() as u64)
    }

    /// Length of one row (`ne[0]`), the unit that quantization blocks tile.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows, i.e. the product of all dims but the first.
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}

/// Backing storage: a read-only memory map for real files (weights are paged
/// in lazily, nothing is copied), or an owned buffer for tests.
enum Backing {
    /// Shared so that weight matrices can borrow their bytes from the map (no copy).
    Mmap(std::sync::Arc<memmap2::Mmap>),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file: header, metadata and tensor table are decoded eagerly;
/// tensor data stays in the map until requested.
pub struct GgufFile {
    /// Label used in error messages (the path, or `<memory>`).
    file: String,
    backing: Backing,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("file", &self.file)
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl GgufFile {
    /// Memory-map and parse `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and we never hand out references that
        // outlive `self`. As with every mmap-based loader (safetensors,
        // llama.cpp), the file must not be truncated or rewritten while it is
        // open; doing so is outside what this reader can defend against.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
        Self::from_backing(
            Backing::Mmap(std::sync::Arc::new(map)),
            path.display().to_string(),
        )
    }

    /// Parse an in-memory GGUF image (same code path as [`GgufFile::open`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_backing(Backing::Owned(bytes), "<memory>".to_string())
    }

    fn from_backing(backing: Backing, file: String) -> Result<Self> {
        let p = parse(backing.bytes(), &file)?;
        Ok(GgufFile {
            file,
            backing,
            version: p.version,
            alignment: p.alignment,
            data_offset: p.data_offset,
            metadata: p.metadata,
            tensors: p.tensors,
            index: p.index,
        })
    }

    /// The label used in error messages (path or `<memory>`).
    pub fn file_label(&self) -> &str {
        &self.file
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Effective data alignment (`general.alignment` or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the data section within the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// Required non-negative integer key (any integer width), for config building.
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        self.meta_typed(key, "a non-negative integer", MetaValue::as_u64)
    }

    /// Required numeric key as f64 (floats or integers).
    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        self.meta_typed(key, "a number", MetaValue::as_f64)
    }

    /// Required string key.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        self.meta_typed(key, "a string", MetaValue::as_str)
    }

    /// Required array key.
    pub fn meta_array(&self, key: &str) -> Result<&[MetaValue]> {
        self.meta_typed(key, "an array", MetaValue::as_array)
    }

    fn meta_typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        get: impl FnOnce(&'a MetaValue) -> Option<T>,
    ) -> Result<T> {
        let v = self
            .metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey {
                file: self.file.clone(),
                key: key.to_string(),
                expected,
            })?;
        get(v).ok_or_else(|| GgufError::WrongMetaType {
            file: self.file.clone(),
            key: key.to_string(),
            found: v.type_name(),
            expected,
        })
    }

    /// Tensor table in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_info(name)
            .ok_or_else(|| GgufError::TensorNotFound {
                file: self.file.clone(),
                tensor: name.to_string(),
            })
    }

    fn bytes_of(&self, info: &TensorInfo) -> Result<&[u8]> {
        // Ranges were validated at parse time; re-check with `get` anyway so
        // this can never panic even if that invariant were broken.
        let start = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|s| usize::try_from(s).ok());
        let len = usize::try_from(info.n_bytes()).ok();
        let range = start.zip(len).and_then(|(s, l)| Some(s..s.checked_add(l)?));
        range
            .and_then(|r| self.backing.bytes().get(r))
            .ok_or_else(|| GgufError::InvalidTensor {
                file: self.file.clone(),
                tensor: info.name.clone(),
                reason: "data range lies outside the file".to_string(),
            })
    }

    /// Raw (still quantized) bytes of a tensor, borrowed from the map.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        self.bytes_of(self.require_tensor(name)?)
    }

    /// A tensor's bytes as a [`WeightBytes`]: borrowed from the memory map (shared, no copy)
    /// when the file is mapped, else copied.
    pub fn tensor_weight_bytes(&self, name: &str) -> Result<WeightBytes> {
        let info = self.require_tensor(name)?;
        let bytes = self.bytes_of(info)?;
        Ok(match &self.backing {
            Backing::Mmap(map) => {
                // `bytes` is a sub-slice of the map: its offset is the pointer difference.
                let start = bytes.as_ptr() as usize - map.as_ptr() as usize;
                WeightBytes::Shared {
                    buf: map.clone(),
                    start,
                    len: bytes.len(),
                }
            }
            Backing::Owned(_) => WeightBytes::Owned(bytes.to_vec()),
        })
    }

    /// Dequantize a whole tensor. Returns the values in row-major order and
    /// the PyTorch-order shape ([`TensorInfo::shape`]).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let mut out = Vec::new();
        let shape = self.tensor_f32_into(name, &mut out)?;
        Ok((out, shape))
    }

    /// Like [`GgufFile::tensor_f32`] but reuses `out`'s allocation (cleared first).
    pub fn tensor_f32_into(&self, name: &str, out: &mut Vec<f32>) -> Result<Vec<usize>> {
        let info = self.require_tensor(name)?;
        let bytes = self.bytes_of(info)?;
        let n = self.elements_usize(info, info.n_elements())?;
        dequantize_impl(info.ggml_type, bytes, n, out, &info.name)?;
        Ok(info.shape())
    }

    /// Dequantize only rows `rows` (rows = PyTorch dim 0 for 2-D tensors;
    /// generally the flattened index over `dims[1..]`). Why: a 262144×640
    /// embedding is 671 MB as f32, but a forward pass needs only a few rows.
    pub fn tensor_rows_f32(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>> {
        let info = self.require_tensor(name)?;
        let n_rows = info.n_rows();
        if rows.start > rows.end || rows.end as u64 > n_rows {
            return Err(GgufError::InvalidTensor {
                file: self.file.clone(),
                tensor: info.name.clone(),
                reason: format!("row range {rows:?} out of bounds for {n_rows} rows"),
            });
        }
        let row_len = info.row_len();
        // Parse-time validation guarantees row_len is a block multiple and the
        // products below fit; checked anyway.
        let row_bytes = info.ggml_type.bytes_for(row_len);
        let span = row_bytes.and_then(|rb| {
            let s = rb.checked_mul(rows.start as u64)?;
            let e = rb.checked_mul(rows.end as u64)?;
            Some((usize::try_from(s).ok()?, usize::try_from(e).ok()?))
        });
        let all = self.bytes_of(info)?;
        let bytes =
            span.and_then(|(s, e)| all.get(s..e))
                .ok_or_else(|| GgufError::InvalidTensor {
                    file: self.file.clone(),
                    tensor: info.name.clone(),
                    reason: format!("row range {rows:?} does not map onto the tensor bytes"),
                })?;
        let n_el = (rows.end - rows.start) as u64 * row_len;
        let n = self.elements_usize(info, n_el)?;
        let mut out = Vec::new();
        dequantize_impl(info.ggml_type, bytes, n, &mut out, &info.name)?;
        Ok(out)
    }

    fn elements_usize(&self, info: &TensorInfo, n: u64) -> Result<usize> {
        usize::try_from(n).map_err(|_| GgufError::InvalidTensor {
            file: self.file.clone(),
            tensor: info.name.clone(),
            reason: format!("{n} elements do not fit in memory on this platform"),
        })
    }
}
