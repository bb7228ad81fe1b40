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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::kernels::blocks::BlockFormat;
use crate::kernels::qmatrix::WeightBytes;

/// File magic, the first four bytes of every GGUF file.
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

// ---------------------------------------------------------------------------
// Metadata values
// ---------------------------------------------------------------------------

/// One metadata value. Variant order mirrors the on-disk type ids 0..=12.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// Any integer that is non-negative, widened to u64. Config code should not
    /// care whether the converter wrote `u32` or `i32` for e.g. a head count.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer that fits in i64 (e.g. token ids stored as `i32`, `-1` sentinels).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => i64::try_from(v).ok(),
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Any numeric value as f64 (floats, and integers so that e.g. a
    /// `rope.freq_base` written as an integer still reads).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Human-readable type name, used in error messages.
    pub fn type_name(&self) -> &'static str {
        value_type_name(self.type_id())
    }

    /// On-disk GGUF value type id (0..=12).
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }
}

fn value_type_name(id: u32) -> &'static str {
    match id {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

/// Smallest possible encoded size of one value of type `id`; used to reject
/// element counts that cannot possibly fit in the remaining bytes *before*
/// allocating for them.
fn min_value_size(id: u32) -> Option<u64> {
    Some(match id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,     // u64 length prefix
        9 => 4 + 8, // element type + count
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// ggml tensor types
// ---------------------------------------------------------------------------

/// ggml tensor element types, with the on-disk ids from ggml.h.
///
/// Every known id is listed (so files containing e.g. IQ types still parse and
/// their raw bytes are reachable); [`GgmlType::can_dequantize`] says which
/// ones [`dequantize`] implements.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

impl GgmlType {
    /// Map an on-disk type id; `None` for ids this reader does not know
    /// (including the removed 4, 5 and 31..=33 and anything newer).
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            _ => return None,
        })
    }

    /// On-disk type id.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            MXFP4 => 39,
        }
    }

    /// Elements per block (ggml `blck_size`). Rows (`ne[0]`) must be a
    /// multiple of this.
    /// The kernels' block format for this type, where the CPU kernels compute on it directly.
    pub fn block_format(self) -> Option<BlockFormat> {
        use GgmlType::*;
        Some(match self {
            F32 => BlockFormat::F32,
            F16 => BlockFormat::F16,
            BF16 => BlockFormat::BF16,
            Q4_0 => BlockFormat::Q4_0,
            Q4_1 => BlockFormat::Q4_1,
            Q5_0 => BlockFormat::Q5_0,
            Q5_1 => BlockFormat::Q5_1,
            Q8_0 => BlockFormat::Q8_0,
            Q2_K => BlockFormat::Q2_K,
            Q3_K => BlockFormat::Q3_K,
            Q4_K => BlockFormat::Q4_K,
            Q5_K => BlockFormat::Q5_K,
            Q6_K => BlockFormat::Q6_K,
            Q8_K => BlockFormat::Q8_K,
            _ => return None,
        })
    }

    pub fn block_size(self) -> usize {
        if let Some(f) = self.block_format() {
            return f.block_len();
        }
        use GgmlType::*;
        match self {
            I8 | I16 | I32 | I64 | F64 => 1,
            Q8_1 | IQ4_NL | MXFP4 => 32,
            _ => 256, // the IQ and TQ families
        }
    }

    /// Bytes per block (ggml `type_size`, i.e. `sizeof(block_xx)`).
    pub fn type_size(self) -> usize {
        if let Some(f) = self.block_format() {
            return f.block_bytes();
        }
        use GgmlType::*;
        match self {
            I16 => 2,
            I8 => 1,
            I32 => 4,
            I64 | F64 => 8,
            Q8_1 => 36, // f16 d, f16 s, i8 qs[32] (current ggml; old ggml used f32 d/s = 40)
            IQ2_XXS => 66,
            IQ2_XS => 74,
            IQ3_XXS => 98,
            IQ1_S => 50,
            IQ4_NL => 18,
            IQ3_S => 110,
            IQ2_S => 82,
            IQ4_XS => 136,
            IQ1_M => 56,
            TQ1_0 => 54,
            TQ2_0 => 66,
            MXFP4 => 17,
            F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K
            | Q6_K | Q8_K => unreachable!("block formats answer above"),
        }
    }

    /// Whether [`dequantize`] implements this type. (Q8_1 is excluded because
    /// ggml itself has no `dequantize_row_q8_1`: it is a scratch format for
    /// dot products, never stored in model files.)
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16
                | BF16
                | F64
                | I8
                | I16
                | I32
                | I64
                | Q4_0
                | Q4_1
                | Q5_0
                | Q5_1
                | Q8_0
                | Q2_K
                | Q3_K
                | Q4_K
                | Q5_K
                | Q6_K
                | Q8_K
        )
    }

    /// ggml's name for the type (e.g. `"Q4_K"`).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1_M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
        }
    }

    /// Bytes needed for `n_elements` elements, or `None` if `n_elements` is
    /// not a whole number of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n_elements.is_multiple_of(bs) {
            return None;
        }
        (n_elements / bs).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------
// Tensor table
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

/// Bounds-checked little-endian cursor. Error context is passed as a closure
/// so the happy path (hundreds of thousands of tokenizer strings) never
/// formats a string.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
}

type What<'w> = &'w dyn Fn() -> String;

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: What<'_>) -> Result<&'a [u8]> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                file: self.file.to_string(),
                what: what(),
                offset: self.pos as u64,
                needed: n,
                available,
            });
        }
        let start = self.pos;
        self.pos += n as usize; // n <= remaining, so this fits in usize
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: What<'_>) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: What<'_>) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: What<'_>) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: What<'_>) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: What<'_>) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: What<'_>) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let offset = self.pos as u64;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                file: self.file.to_string(),
                what: what(),
                offset,
            }),
        }
    }

    /// Reject `count` items of at least `min_size` bytes each if they cannot
    /// fit in the rest of the file — this is what bounds every allocation.
    fn check_count(&self, count: u64, min_size: u64, what: What<'_>) -> Result<()> {
        let remaining = self.remaining();
        match count.checked_mul(min_size) {
            Some(need) if need <= remaining => Ok(()),
            _ => Err(GgufError::Implausible {
                file: self.file.to_string(),
                what: what(),
                detail: format!(
                    "{count} items of at least {min_size} bytes each cannot fit in the \
                     {remaining} bytes left after byte {}",
                    self.pos
                ),
            }),
        }
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32, what: What<'_>) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.u8(what)?),
            1 => MetaValue::I8(self.u8(what)? as i8),
            2 => MetaValue::U16(self.u16(what)?),
            3 => MetaValue::I16(self.u16(what)? as i16),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(self.u32(what)? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32(what)?)),
            // gguf.cpp reads bools as a raw byte; accept any non-zero as true.
            7 => MetaValue::Bool(self.u8(what)? != 0),
            8 => MetaValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::BadMetadata {
                        file: self.file.to_string(),
                        key: key.to_string(),
                        reason: format!("arrays nested deeper than {MAX_ARRAY_DEPTH} levels"),
                    });
                }
                let elem_ty = self.u32(&|| format!("element type of {}", what()))?;
                let Some(min) = min_value_size(elem_ty) else {
                    return Err(GgufError::UnknownValueType {
                        file: self.file.to_string(),
                        key: key.to_string(),
                        type_id: elem_ty,
                    });
                };
                let count = self.u64(&|| format!("element count of {}", what()))?;
                self.check_count(count, min, &|| {
                    format!("{} ({} elements)", what(), value_type_name(elem_ty))
                })?;
                // Bounded by check_count: count <= remaining bytes.
                let mut items = Vec::with_capacity(count as usize);
                for i in 0..count {
                    let elem_what = || format!("element {i} of {}", what());
                    items.push(self.value(elem_ty, key, depth + 1, &elem_what)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(self.u64(what)? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64(what)?)),
            other => {
                return Err(GgufError::UnknownValueType {
                    file: self.file.to_string(),
                    key: key.to_string(),
                    type_id: other,
                });
            }
        })
    }
}

fn parse(buf: &[u8], file: &str) -> Result<Parsed> {
    let mut r = Reader { buf, pos: 0, file };

    // Check the magic on whatever is there, so a short non-GGUF file reports
    // "not a GGUF file" rather than "truncated".
    let head = &buf[..buf.len().min(4)];
    if head != &GGUF_MAGIC[..head.len()] {
        return Err(GgufError::BadMagic {
            file: file.to_string(),
            found: head.escape_ascii().to_string(),
        });
    }
    r.array::<4>(&|| "magic".to_string())?;

    let version = r.u32(&|| "header version".to_string())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(GgufError::UnsupportedVersion {
                file: file.to_string(),
                version,
                reason: "GGUF v1 (32-bit counts) is obsolete; re-convert the model (expected 2 or 3)",
            });
        }
        v if matches!(v.swap_bytes(), 2 | 3) => {
            return Err(GgufError::UnsupportedVersion {
                file: file.to_string(),
                version,
                reason: "this looks like a big-endian GGUF; only little-endian is supported",
            });
        }
        _ => {
            return Err(GgufError::UnsupportedVersion {
                file: file.to_string(),
                version,
                reason: "expected 2 or 3",
            });
        }
    }

    let n_tensors = r.u64(&|| "tensor count".to_string())?;
    let n_kv = r.u64(&|| "metadata key/value count".to_string())?;
    // Minimum encodings: kv = key len (8) + type (4) + 1-byte value;
    // tensor info = name len (8) + n_dims (4) + type (4) + offset (8).
    r.check_count(n_kv, 13, &|| "metadata key/value count".to_string())?;
    r.check_count(n_tensors, 24, &|| "tensor count".to_string())?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r.string(&|| format!("key of metadata entry {i}"))?;
        let ty = r.u32(&|| format!("value type of metadata key '{key}'"))?;
        let value = r.value(ty, &key, 0, &|| format!("value of metadata key '{key}'"))?;
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                file: file.to_string(),
                key,
            });
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(v) => {
            let reason = match v {
                MetaValue::U32(a) => format!("alignment {a} must be a non-zero power of two"),
                other => format!("expected u32 alignment, found {}", other.type_name()),
            };
            return Err(GgufError::BadMetadata {
                file: file.to_string(),
                key: "general.alignment".to_string(),
                reason,
            });
        }
    };

    let invalid = |tensor: &str, reason: String| GgufError::InvalidTensor {
        file: file.to_string(),
        tensor: tensor.to_string(),
        reason,
    };

    // Bounded by check_count above.
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = r.string(&|| format!("name of tensor info {i}"))?;
        let n_dims = r.u32(&|| format!("n_dims of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return Err(invalid(
                &name,
                format!("has {n_dims} dimensions, expected at most {MAX_DIMS}"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(r.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
        }
        let type_id = r.u32(&|| format!("ggml type of tensor '{name}'"))?;
        let offset = r.u64(&|| format!("data offset of tensor '{name}'"))?;
        let Some(ggml_type) = GgmlType::from_id(type_id) else {
            return Err(GgufError::UnknownGgmlType {
                file: file.to_string(),
                tensor: name,
                type_id,
            });
        };

        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| invalid(&name, format!("dims {dims:?}: element count overflows i64")))?;
        let row_len = dims.first().copied().unwrap_or(1);
        let bs = ggml_type.block_size() as u64;
        if !row_len.is_multiple_of(bs) {
            return Err(invalid(
                &name,
                format!(
                    "row length ne[0]={row_len} is not a multiple of the {ggml_type} block size {bs}"
                ),
            ));
        }
        // Divisible by construction (row_len is a block multiple).
        if ggml_type.bytes_for(n_elements).is_none() {
            return Err(invalid(
                &name,
                format!("byte size of {n_elements} {ggml_type} elements overflows"),
            ));
        }
        if !offset.is_multiple_of(alignment) {
            return Err(invalid(
                &name,
                format!("data offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        if index.insert(name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor {
                file: file.to_string(),
                tensor: name,
            });
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }

    let infos_end = r.pos as u64;
    let data_offset = infos_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::BadDataSection {
            file: file.to_string(),
            reason: "data offset overflows".to_string(),
        })?;
    let file_len = buf.len() as u64;
    if !tensors.is_empty() && data_offset > file_len {
        return Err(GgufError::BadDataSection {
            file: file.to_string(),
            reason: format!(
                "starts at byte {data_offset} (tensor infos end at {infos_end}, aligned to \
                 {alignment}) but the file is only {file_len} bytes"
            ),
        });
    }
    let data_len = file_len.saturating_sub(data_offset);
    for t in &tensors {
        let n_bytes = t.n_bytes(); // exact: validated above
        match t.offset.checked_add(n_bytes) {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(invalid(
                    &t.name,
                    format!(
                        "{} bytes of {} data at data offset {} extend past the end of the file \
                         (data section holds {data_len} bytes from byte {data_offset})",
                        n_bytes, t.ggml_type, t.offset
                    ),
                ));
            }
        }
    }

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
        index,
    })
}

// ---------------------------------------------------------------------------
// Dequantization
// ---------------------------------------------------------------------------

/// Dequantize `n_elements` values of type `ty` from `bytes` into `out`.
///
/// `out` is cleared first (its capacity is reused). `bytes` must be exactly
/// the encoded size of `n_elements` elements, which must be a whole number of
/// blocks; anything else is an error rather than a silent partial decode.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize, out: &mut Vec<f32>) -> Result<()> {
    dequantize_impl(ty, bytes, n_elements, out, "<buffer>")
}

fn dequantize_impl(
    ty: GgmlType,
    bytes: &[u8],
    n: usize,
    out: &mut Vec<f32>,
    tensor: &str,
) -> Result<()> {
    if !ty.can_dequantize() {
        return Err(GgufError::UnsupportedTensorType {
            tensor: tensor.to_string(),
            ty,
        });
    }
    let bad = |reason: String| GgufError::BadTensorData {
        tensor: tensor.to_string(),
        ty,
        reason,
    };
    let bs = ty.block_size();
    if !n.is_multiple_of(bs) {
        return Err(bad(format!(
            "element count {n} is not a multiple of the block size {bs}"
        )));
    }
    let expected = (n / bs).checked_mul(ty.type_size());
    if expected != Some(bytes.len()) {
        return Err(bad(format!(
            "{n} elements need {} bytes but {} were given",
            expected.map_or_else(|| "an overflowing number of".to_string(), |e| e.to_string()),
            bytes.len()
        )));
    }

    out.clear();
    if out.capacity() < n {
        // Fresh zeroed allocation comes straight from the OS (no memset pass),
        // which matters for the 168M-element embedding table.
        *out = vec![0.0; n];
    } else {
        out.resize(n, 0.0);
    }
    let y = &mut out[..];
    // The block formats (floats and quants) have one home, shared with the CPU kernels.
    if let Some(format) = ty.block_format() {
        format.dequantize(bytes, y);
        return Ok(());
    }
    use GgmlType::*;
    match ty {
        F64 => blocks::<8, 1>(bytes, y, |b, y| y[0] = f64::from_le_bytes(*b) as f32),
        I8 => blocks::<1, 1>(bytes, y, |b, y| y[0] = f32::from(b[0] as i8)),
        I16 => blocks::<2, 1>(bytes, y, |b, y| y[0] = f32::from(i16::from_le_bytes(*b))),
        I32 => blocks::<4, 1>(bytes, y, |b, y| y[0] = i32::from_le_bytes(*b) as f32),
        I64 => blocks::<8, 1>(bytes, y, |b, y| y[0] = i64::from_le_bytes(*b) as f32),
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
        | Q8_K => unreachable!("block formats are decoded above"),
        // Rejected by can_dequantize() above.
        Q8_1 | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S | IQ4_NL | IQ3_S | IQ2_S | IQ4_XS | IQ1_M
        | TQ1_0 | TQ2_0 | MXFP4 => {
            return Err(GgufError::UnsupportedTensorType {
                tensor: tensor.to_string(),
                ty,
            });
        }
    }
    Ok(())
}

/// Drive a per-block decoder over fixed-size array views, so each block
/// function sees `&[u8; B]` / `&mut [f32; N]` and the compiler can drop all
/// bounds checks inside it. Lengths were validated by the caller.
#[inline(always)]
fn blocks<const B: usize, const N: usize>(
    src: &[u8],
    dst: &mut [f32],
    f: impl Fn(&[u8; B], &mut [f32; N]),
) {
    let (src, _) = src.as_chunks::<B>();
    let (dst, _) = dst.as_chunks_mut::<N>();
    for (b, y) in src.iter().zip(dst.iter_mut()) {
        f(b, y);
    }
}

#[cfg(test)]
// Index loops mirror the documented per-element layout arithmetic.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    // ----- helpers ---------------------------------------------------------

    fn h(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_bits().to_le_bytes()
    }

    use crate::kernels::test_rng::Rng;

    fn deq(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
        let n = bytes.len() / ty.type_size() * ty.block_size();
        let mut out = vec![123.0; 3]; // stale content must be discarded
        dequantize(ty, bytes, n, &mut out).unwrap();
        assert_eq!(out.len(), n);
        out
    }

    /// Minimal GGUF writer used to build test files.
    struct TensorSpec {
        name: String,
        dims: Vec<u64>,
        type_id: u32,
        data: Vec<u8>,
        /// Overrides the computed (aligned, sequential) offset.
        offset: Option<u64>,
    }

    struct Builder {
        version: u32,
        alignment: u64,
        kvs: Vec<(String, MetaValue)>,
        tensors: Vec<TensorSpec>,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                version: 3,
                alignment: DEFAULT_ALIGNMENT,
                kvs: Vec::new(),
                tensors: Vec::new(),
            }
        }
        fn kv(mut self, k: &str, v: MetaValue) -> Self {
            self.kvs.push((k.to_string(), v));
            self
        }
        fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
            self.tensors.push(TensorSpec {
                name: name.to_string(),
                dims: dims.to_vec(),
                type_id: ty.id(),
                data,
                offset: None,
            });
            self
        }

        fn put_str(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }

        fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
            match v {
                MetaValue::U8(x) => out.push(*x),
                MetaValue::I8(x) => out.push(*x as u8),
                MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::Bool(x) => out.push(*x as u8),
                MetaValue::String(s) => Self::put_str(out, s),
                MetaValue::Array(items) => {
                    let elem = items.first().map_or(0, MetaValue::type_id);
                    out.extend_from_slice(&elem.to_le_bytes());
                    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for it in items {
                        Self::put_value(out, it);
                    }
                }
                MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
                MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            }
        }

        /// Serialize. No padding after the last tensor, so cutting even the
        /// final byte makes the file invalid (the truncation test relies on it).
        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(b"GGUF");
            out.extend_from_slice(&self.version.to_le_bytes());
            out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
            out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
            for (k, v) in &self.kvs {
                Self::put_str(&mut out, k);
                out.extend_from_slice(&v.type_id().to_le_bytes());
                Self::put_value(&mut out, v);
            }
            // Data is always laid out sequentially; `offset` overrides only
            // what the header claims (so absurd offsets cost no memory).
            let mut next = 0u64;
            let mut positions = Vec::new();
            for t in &self.tensors {
                Self::put_str(&mut out, &t.name);
                out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
                for d in &t.dims {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.extend_from_slice(&t.type_id.to_le_bytes());
                out.extend_from_slice(&t.offset.unwrap_or(next).to_le_bytes());
                positions.push(next);
                next = (next + t.data.len() as u64).next_multiple_of(self.alignment);
            }
            let data_start = (out.len() as u64).next_multiple_of(self.alignment) as usize;
            out.resize(data_start, 0);
            for (t, off) in self.tensors.iter().zip(positions) {
                let at = data_start + off as usize;
                if out.len() < at + t.data.len() {
                    out.resize(at + t.data.len(), 0);
                }
                out[at..at + t.data.len()].copy_from_slice(&t.data);
            }
            out
        }
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Valid file with every metadata type and several tensor types.
    fn sample_builder() -> Builder {
        let s = |x: &str| MetaValue::String(x.to_string());
        let mut q8 = Vec::new();
        for blk in 0..2 {
            q8.extend_from_slice(&h(0.5));
            q8.extend((0..32).map(|j| (j as i8 - 16 + blk) as u8));
        }
        Builder::new()
            .kv("general.architecture", s("gemma3"))
            .kv("t.u8", MetaValue::U8(200))
            .kv("t.i8", MetaValue::I8(-5))
            .kv("t.u16", MetaValue::U16(60000))
            .kv("t.i16", MetaValue::I16(-30000))
            .kv("t.u32", MetaValue::U32(4_000_000_000))
            .kv("t.i32", MetaValue::I32(-2_000_000_000))
            .kv("t.f32", MetaValue::F32(1.5))
            .kv("t.bool", MetaValue::Bool(true))
            .kv("t.u64", MetaValue::U64(u64::MAX))
            .kv("t.i64", MetaValue::I64(i64::MIN))
            .kv("t.f64", MetaValue::F64(-0.125))
            .kv("t.utf8", s("héllo ▁wörld"))
            .kv("t.empty", MetaValue::Array(vec![]))
            .kv(
                "t.tokens",
                MetaValue::Array(vec![s("<pad>"), s("<eos>"), s("▁the")]),
            )
            .kv(
                "t.nested",
                MetaValue::Array(vec![
                    MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-2)]),
                    MetaValue::Array(vec![MetaValue::I32(3)]),
                ]),
            )
            .tensor(
                "w.f32",
                &[3, 2],
                GgmlType::F32,
                f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
            )
            .tensor(
                "w.f16",
                &[4],
                GgmlType::F16,
                [1.0f32, -2.0, 0.5, 65504.0]
                    .iter()
                    .flat_map(|&x| h(x))
                    .collect(),
            )
            .tensor("w.q8", &[32, 2], GgmlType::Q8_0, q8)
            .tensor(
                "w.bf16",
                &[2, 1, 1],
                GgmlType::BF16,
                // bf16 bits: 0x3FC0 = 1.5, 0xC100 = -8.0
                vec![0xC0, 0x3F, 0x00, 0xC1],
            )
    }

    // ----- round trip -------------------------------------------------------

    #[test]
    fn round_trip_metadata_and_tensors() {
        let b = sample_builder();
        let g = GgufFile::from_bytes(b.build()).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.alignment(), 32);
        assert_eq!(g.data_offset() % 32, 0);
        assert_eq!(g.metadata().len(), b.kvs.len());
        for (k, v) in &b.kvs {
            assert_eq!(g.meta(k), Some(v), "key {k}");
        }
        assert_eq!(
            g.meta("general.architecture").and_then(MetaValue::as_str),
            Some("gemma3")
        );
        assert_eq!(
            g.meta("t.u32").and_then(MetaValue::as_u64),
            Some(4_000_000_000)
        );
        assert_eq!(g.meta("t.i8").and_then(MetaValue::as_u64), None);
        assert_eq!(g.meta("t.i8").and_then(MetaValue::as_i64), Some(-5));
        assert_eq!(g.meta("t.i8").and_then(MetaValue::as_f64), Some(-5.0));
        assert_eq!(g.meta("t.f32").and_then(MetaValue::as_f64), Some(1.5));
        assert_eq!(g.meta("t.bool").and_then(MetaValue::as_bool), Some(true));
        assert_eq!(
            g.meta("t.tokens")
                .and_then(MetaValue::as_array)
                .map(<[_]>::len),
            Some(3)
        );
        assert_eq!(g.meta_u64("t.u16").unwrap(), 60000);
        assert_eq!(g.meta_str("t.utf8").unwrap(), "héllo ▁wörld");
        let e = g.meta_u64("t.utf8").unwrap_err().to_string();
        assert!(
            e.contains("t.utf8") && e.contains("string") && e.contains("integer"),
            "{e}"
        );
        let e = g.meta_f64("nope").unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("nope"), "{e}");

        let names: Vec<_> = g.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w.f32", "w.f16", "w.q8", "w.bf16"]);
        let t = g.tensor_info("w.f32").unwrap();
        assert_eq!(t.dims, [3, 2]);
        assert_eq!(t.shape(), [2, 3]);
        assert_eq!((t.n_elements(), t.n_bytes()), (6, 24));
        assert_eq!(g.tensor_bytes("w.f32").unwrap().len(), 24);

        let (v, shape) = g.tensor_f32("w.f32").unwrap();
        assert_eq!(shape, [2, 3]);
        assert_eq!(v, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let (v, shape) = g.tensor_f32("w.f16").unwrap();
        assert_eq!((v, shape), (vec![1.0, -2.0, 0.5, 65504.0], vec![4]));
        let (v, shape) = g.tensor_f32("w.bf16").unwrap();
        assert_eq!((v, shape), (vec![1.5, -8.0], vec![1, 1, 2]));

        let (v, shape) = g.tensor_f32("w.q8").unwrap();
        assert_eq!(shape, [2, 32]);
        // block 0, j=0: q = 0-16 = -16 -> -16 * 0.5 = -8; block 1, j=31: q = 31-16+1 = 16 -> 8
        assert_eq!((v[0], v[63]), (-8.0, 8.0));
        // Row access must agree with the full decode.
        assert_eq!(g.tensor_rows_f32("w.q8", 1..2).unwrap(), &v[32..64]);
        assert_eq!(
            g.tensor_rows_f32("w.f32", 0..2).unwrap(),
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        assert!(g.tensor_rows_f32("w.q8", 1..3).is_err());

        assert!(g.tensor_info("missing").is_none());
        let e = g.tensor_f32("missing").unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("<memory>"), "{e}");
        assert!(matches!(
            g.tensor_bytes("missing"),
            Err(GgufError::TensorNotFound { .. })
        ));
    }

    #[test]
    fn custom_alignment_and_v2() {
        let mut b = sample_builder().kv("general.alignment", MetaValue::U32(64));
        b.alignment = 64;
        b.version = 2;
        let g = GgufFile::from_bytes(b.build()).unwrap();
        assert_eq!((g.version(), g.alignment()), (2, 64));
        assert_eq!(g.data_offset() % 64, 0);
        for t in g.tensors() {
            assert_eq!(t.offset % 64, 0);
        }
        assert_eq!(g.tensor_f32("w.f32").unwrap().0[5], 5.0);
    }

    #[test]
    fn open_via_mmap() {
        let path = std::env::temp_dir().join(format!("gguf-test-{}.gguf", std::process::id()));
        std::fs::write(&path, sample_builder().build()).unwrap();
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.tensor_f32("w.f32").unwrap().0[4], 4.0);
        drop(g);
        std::fs::remove_file(&path).unwrap();
        let e = GgufFile::open(&path).unwrap_err().to_string();
        assert!(e.contains("gguf-test-"), "{e}");
    }

    // ----- per-type block decoding -------------------------------------------

    #[test]
    fn dequant_plain_types() {
        assert_eq!(deq(GgmlType::F32, &f32_bytes(&[1.25, -3.0])), [1.25, -3.0]);
        let f16s: Vec<u8> = [0x3C00u16, 0xC000, 0x3555, 0x7C00]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let v = deq(GgmlType::F16, &f16s);
        // 0x3C00 = 1.0, 0xC000 = -2.0, 0x7C00 = +inf;
        // 0x3555: exponent 0b01101 = 13 -> 2^(13-15) = 0.25, mantissa 0x155 = 341
        //         -> (1 + 341/1024) * 0.25 = 0.333251953125
        assert_eq!(v, [1.0, -2.0, (1.0 + 341.0 / 1024.0) * 0.25, f32::INFINITY]);
        // bf16 0x4049 -> f32 bits 0x40490000 = 3.140625
        assert_eq!(deq(GgmlType::BF16, &[0x49, 0x40]), [3.140625]);
        assert_eq!(deq(GgmlType::I8, &[0xFF, 7]), [-1.0, 7.0]);
        assert_eq!(deq(GgmlType::I16, &(-300i16).to_le_bytes()), [-300.0]);
        assert_eq!(deq(GgmlType::I32, &70000i32.to_le_bytes()), [70000.0]);
        assert_eq!(deq(GgmlType::I64, &(-9i64).to_le_bytes()), [-9.0]);
        assert_eq!(deq(GgmlType::F64, &0.75f64.to_le_bytes()), [0.75]);
    }

    #[test]
    fn dequant_multiple_blocks_are_independent() {
        // Two Q4_K blocks: the second must not reuse the first block's d.
        let mut rng = Rng(10);
        let mut b = rng.bytes(288);
        b[0..2].copy_from_slice(&h(1.0));
        b[144..146].copy_from_slice(&h(2.0));
        b[2..4].copy_from_slice(&h(0.0));
        b[146..148].copy_from_slice(&h(0.0));
        b.copy_within(4..144, 148); // same scales and quants, only d differs
        let v = deq(GgmlType::Q4_K, &b);
        for i in 0..256 {
            assert_eq!(v[256 + i], 2.0 * v[i], "i={i}");
        }
    }

    #[test]
    fn dequant_rejects_bad_lengths_and_types() {
        let mut out = Vec::new();
        let e = dequantize(GgmlType::Q4_K, &[0; 144], 128, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("multiple of the block size 256"),
            "{e}"
        );
        let e = dequantize(GgmlType::Q4_K, &[0; 143], 256, &mut out).unwrap_err();
        assert!(e.to_string().contains("144 bytes"), "{e}");
        let e = dequantize(GgmlType::Q8_0, &[0; 68], 32, &mut out).unwrap_err();
        assert!(matches!(e, GgufError::BadTensorData { .. }), "{e}");
        let e = dequantize(GgmlType::IQ2_XXS, &[0; 66], 256, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("unsupported tensor type IQ2_XXS"),
            "{e}"
        );
        let e = dequantize(GgmlType::Q8_1, &[0; 36], 32, &mut out).unwrap_err();
        assert!(matches!(e, GgufError::UnsupportedTensorType { .. }), "{e}");
        // Zero elements is fine and clears stale content.
        out.push(1.0);
        dequantize(GgmlType::Q6_K, &[], 0, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn type_table() {
        for id in 0..64 {
            if let Some(t) = GgmlType::from_id(id) {
                assert_eq!(t.id(), id);
                assert!(t.block_size() > 0 && t.type_size() > 0);
            }
        }
        for id in [4, 5, 31, 32, 33, 36, 1000] {
            assert!(GgmlType::from_id(id).is_none(), "{id}");
        }
        assert_eq!(GgmlType::Q6_K.bytes_for(512), Some(420));
        assert_eq!(GgmlType::Q6_K.bytes_for(100), None);
    }

    // ----- corruption --------------------------------------------------------

    fn err_of(bytes: Vec<u8>) -> String {
        match GgufFile::from_bytes(bytes) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = sample_builder().build();
        assert!(GgufFile::from_bytes(full.clone()).is_ok());
        for len in 0..full.len() {
            let r = GgufFile::from_bytes(full[..len].to_vec());
            assert!(
                r.is_err(),
                "truncation to {len} of {} bytes parsed",
                full.len()
            );
        }
    }

    #[test]
    fn random_corruption_never_panics() {
        let full = sample_builder().build();
        let mut rng = Rng(42);
        let mut ok = 0;
        for _ in 0..3000 {
            let mut b = full.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = match rng.below(3) {
                    0 => rng.next() as u8,
                    1 => 0xFF,
                    _ => b[at] ^ (1 << rng.below(8)),
                };
            }
            if let Ok(g) = GgufFile::from_bytes(b) {
                ok += 1;
                for t in g.tensors() {
                    let _ = g.tensor_f32(&t.name);
                }
            }
        }
        // Most flips land in tensor data or string bodies and stay valid.
        assert!(ok > 0);
    }

    #[test]
    fn header_errors() {
        let e = err_of(b"GGML\x03\0\0\0".to_vec());
        assert!(e.contains("not a GGUF file") && e.contains("GGML"), "{e}");
        let e = err_of(b"PK".to_vec());
        assert!(e.contains("not a GGUF file"), "{e}");
        let e = err_of(b"GG".to_vec());
        assert!(e.contains("truncated") && e.contains("magic"), "{e}");

        let mut b = sample_builder();
        b.version = 1;
        let e = err_of(b.build());
        assert!(e.contains("version 1") && e.contains("obsolete"), "{e}");
        b.version = 4;
        assert!(err_of(b.build()).contains("expected 2 or 3"));
        b.version = 3u32.swap_bytes();
        assert!(err_of(b.build()).contains("big-endian"));
    }

    fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend(n_tensors.to_le_bytes());
        v.extend(n_kv.to_le_bytes());
        v
    }

    fn with_kv(key: &[u8], ty: u32, value: &[u8]) -> Vec<u8> {
        let mut v = header(0, 1);
        v.extend((key.len() as u64).to_le_bytes());
        v.extend_from_slice(key);
        v.extend(ty.to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn absurd_counts_and_lengths() {
        let e = err_of(header(u64::MAX, 0));
        assert!(
            e.contains("tensor count") && e.contains("implausibly"),
            "{e}"
        );
        let e = err_of(header(0, 1 << 40));
        assert!(e.contains("key/value count"), "{e}");
        // Key length far past EOF.
        let mut v = header(0, 1);
        v.extend(u64::MAX.to_le_bytes());
        v.extend([0u8; 16]); // enough bytes that the kv count itself is plausible
        let e = err_of(v);
        assert!(
            e.contains("key of metadata entry 0") && e.contains("truncated"),
            "{e}"
        );
        // String value length far past EOF.
        let e = err_of(with_kv(b"k.s", 8, &(1u64 << 50).to_le_bytes()));
        assert!(e.contains("'k.s'"), "{e}");
        // Array claiming 2^60 u32 elements.
        let mut arr = 4u32.to_le_bytes().to_vec();
        arr.extend((1u64 << 60).to_le_bytes());
        let e = err_of(with_kv(b"k.arr", 9, &arr));
        assert!(e.contains("'k.arr'") && e.contains("implausibly"), "{e}");
        // Array claiming u64::MAX strings (overflow in count * min size).
        let mut arr = 8u32.to_le_bytes().to_vec();
        arr.extend(u64::MAX.to_le_bytes());
        assert!(err_of(with_kv(b"k.arr", 9, &arr)).contains("implausibly"));
        // Deeply nested arrays.
        let mut nest = Vec::new();
        for _ in 0..100 {
            nest.extend(9u32.to_le_bytes());
            nest.extend(1u64.to_le_bytes());
        }
        nest.extend(0u32.to_le_bytes());
        nest.extend(0u64.to_le_bytes());
        let e = err_of(with_kv(b"k.deep", 9, &nest));
        assert!(e.contains("nested") && e.contains("k.deep"), "{e}");
    }

    #[test]
    fn bad_metadata() {
        let e = err_of(with_kv(b"k.x", 13, &[0; 8]));
        assert!(
            e.contains("k.x") && e.contains("unknown value type id 13"),
            "{e}"
        );
        let mut arr = 77u32.to_le_bytes().to_vec();
        arr.extend(0u64.to_le_bytes());
        assert!(err_of(with_kv(b"k.arr", 9, &arr)).contains("77"));
        // Non-UTF-8 key and value.
        assert!(err_of(with_kv(b"k\xFF", 0, &[1])).contains("not valid UTF-8"));
        let mut s = 2u64.to_le_bytes().to_vec();
        s.extend([0xC3, 0x28]);
        let e = err_of(with_kv(b"k.bad", 8, &s));
        assert!(e.contains("'k.bad'") && e.contains("UTF-8"), "{e}");
        // Duplicate key.
        let b = Builder::new()
            .kv("a", MetaValue::U8(1))
            .kv("a", MetaValue::U8(2));
        assert!(err_of(b.build()).contains("duplicate metadata key 'a'"));
        // Alignment must be a power-of-two u32.
        for bad in [MetaValue::U32(0), MetaValue::U32(24), MetaValue::U64(32)] {
            let e = err_of(sample_builder().kv("general.alignment", bad).build());
            assert!(e.contains("general.alignment"), "{e}");
        }
    }

    #[test]
    fn bad_tensor_infos() {
        let q = |b: Builder| err_of(b.build());
        let one = |name: &str, dims: &[u64], ty: GgmlType, n: usize| {
            Builder::new().tensor(name, dims, ty, vec![0; n])
        };

        // Unknown ggml type id names the tensor.
        let mut b = one("blk.0.w", &[4], GgmlType::F32, 16);
        b.tensors[0].type_id = 99;
        let e = q(b);
        assert!(
            e.contains("'blk.0.w'") && e.contains("unknown ggml type id 99"),
            "{e}"
        );

        // Row length not a block multiple.
        let e = q(one("t.q", &[48, 2], GgmlType::Q8_0, 102));
        assert!(e.contains("'t.q'") && e.contains("block size 32"), "{e}");

        // Too many dims; element count overflow.
        let e = q(one("t.5d", &[1, 1, 1, 1, 1], GgmlType::F32, 4));
        assert!(e.contains("5 dimensions"), "{e}");
        let e = q(one("t.big", &[1 << 32, 1 << 32], GgmlType::F32, 0));
        assert!(e.contains("'t.big'") && e.contains("overflow"), "{e}");

        // Misaligned offset.
        let mut b = one("t.mis", &[4], GgmlType::F32, 16);
        b.tensors[0].offset = Some(8);
        let e = q(b);
        assert!(
            e.contains("'t.mis'") && e.contains("multiple of the alignment 32"),
            "{e}"
        );

        // Offset far past the end.
        let mut b = one("t.far", &[4], GgmlType::F32, 16);
        b.tensors[0].offset = Some(1 << 40);
        let e = q(b);
        assert!(e.contains("'t.far'") && e.contains("past the end"), "{e}");
        let mut b = one("t.wrap", &[4], GgmlType::F32, 16);
        b.tensors[0].offset = Some(u64::MAX - 31);
        assert!(q(b).contains("'t.wrap'"));

        // Tensor bytes past EOF: declare 8 floats but write 4.
        let e = q(one("t.short", &[8], GgmlType::F32, 16));
        assert!(e.contains("'t.short'") && e.contains("32 bytes"), "{e}");

        // Data section past EOF: header (24) + info for "t.empty" (15 + 4 + 8 + 4 + 8)
        // ends at byte 63, so the data section would start at 64; cut the file at 63.
        let mut bytes = one("t.empty", &[4], GgmlType::F32, 16).build();
        assert_eq!(bytes.len(), 64 + 16);
        bytes.truncate(63);
        let e = err_of(bytes);
        assert!(
            e.contains("data section") && e.contains("starts at byte 64"),
            "{e}"
        );

        // Duplicate tensor names.
        let b = one("dup", &[4], GgmlType::F32, 16).tensor("dup", &[4], GgmlType::F32, vec![0; 16]);
        assert!(q(b).contains("duplicate tensor name 'dup'"));
    }

    #[test]
    fn unsupported_type_parses_but_dequant_names_tensor() {
        let b = Builder::new().tensor("blk.0.iq", &[256], GgmlType::IQ2_XXS, vec![0; 66]);
        let g = GgufFile::from_bytes(b.build()).unwrap();
        assert_eq!(g.tensor_bytes("blk.0.iq").unwrap().len(), 66);
        let e = g.tensor_f32("blk.0.iq").unwrap_err().to_string();
        assert!(
            e.contains("'blk.0.iq'") && e.contains("unsupported tensor type IQ2_XXS"),
            "{e}"
        );
    }

    #[test]
    fn empty_file_with_no_tensors_is_ok() {
        let g = GgufFile::from_bytes(header(0, 0)).unwrap();
        assert!(g.tensors().is_empty() && g.metadata().is_empty());
    }
}
