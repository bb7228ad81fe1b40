//! Parsing the GGUF container: header, metadata and tensor table, read through a bounds-checked
//! cursor so that a truncated or corrupt file is an error, never a panic or a huge allocation.

use std::collections::{BTreeMap, HashMap};

use super::meta::{MetaValue, min_value_size, value_type_name};
use super::types::GgmlType;
use super::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufError, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_ELEMENTS, Result,
    TensorInfo,
};

pub(super) struct Parsed {
    pub(super) version: u32,
    pub(super) alignment: u64,
    pub(super) data_offset: u64,
    pub(super) metadata: BTreeMap<String, MetaValue>,
    pub(super) tensors: Vec<TensorInfo>,
    pub(super) index: HashMap<String, usize>,
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

pub(super) fn parse(buf: &[u8], file: &str) -> Result<Parsed> {
    let mut r = Reader { buf, pos: 0, file };
    let version = read_header(&mut r)?;
    let n_tensors = r.u64(&|| "tensor count".to_string())?;
    let n_kv = r.u64(&|| "metadata key/value count".to_string())?;
    // Minimum encodings: kv = key len (8) + type (4) + 1-byte value;
    // tensor info = name len (8) + n_dims (4) + type (4) + offset (8).
    r.check_count(n_kv, 13, &|| "metadata key/value count".to_string())?;
    r.check_count(n_tensors, 24, &|| "tensor count".to_string())?;

    let metadata = read_metadata(&mut r, n_kv)?;
    let alignment = alignment_of(&metadata, file)?;
    // Bounded by check_count above.
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let t = read_tensor_info(&mut r, i, alignment)?;
        if index.insert(t.name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor {
                file: file.to_string(),
                tensor: t.name,
            });
        }
        tensors.push(t);
    }
    let data_offset =
        check_data_section(r.pos as u64, buf.len() as u64, alignment, &tensors, file)?;
    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
        index,
    })
}

/// The magic and a supported version (2 or 3); the errors say what the file is instead.
fn read_header(r: &mut Reader<'_>) -> Result<u32> {
    let (buf, file) = (r.buf, r.file);
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
    let reason = match version {
        2 | 3 => return Ok(version),
        1 => "GGUF v1 (32-bit counts) is obsolete; re-convert the model (expected 2 or 3)",
        v if matches!(v.swap_bytes(), 2 | 3) => {
            "this looks like a big-endian GGUF; only little-endian is supported"
        }
        _ => "expected 2 or 3",
    };
    Err(GgufError::UnsupportedVersion {
        file: file.to_string(),
        version,
        reason,
    })
}

/// `n_kv` metadata entries; a key given twice is an error.
fn read_metadata(r: &mut Reader<'_>, n_kv: u64) -> Result<BTreeMap<String, MetaValue>> {
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r.string(&|| format!("key of metadata entry {i}"))?;
        let ty = r.u32(&|| format!("value type of metadata key '{key}'"))?;
        let value = r.value(ty, &key, 0, &|| format!("value of metadata key '{key}'"))?;
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                file: r.file.to_string(),
                key,
            });
        }
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// `general.alignment` (a non-zero power of two) or the default.
fn alignment_of(metadata: &BTreeMap<String, MetaValue>, file: &str) -> Result<u64> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(MetaValue::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(v) => {
            let reason = match v {
                MetaValue::U32(a) => format!("alignment {a} must be a non-zero power of two"),
                other => format!("expected u32 alignment, found {}", other.type_name()),
            };
            Err(GgufError::BadMetadata {
                file: file.to_string(),
                key: "general.alignment".to_string(),
                reason,
            })
        }
    }
}

fn invalid(file: &str, tensor: &str, reason: String) -> GgufError {
    GgufError::InvalidTensor {
        file: file.to_string(),
        tensor: tensor.to_string(),
        reason,
    }
}

/// Tensor info `i`: name, shape, type and data offset, checked for a whole number of blocks
/// per row, a byte size that fits, and an aligned offset.
fn read_tensor_info(r: &mut Reader<'_>, i: u64, alignment: u64) -> Result<TensorInfo> {
    let file = r.file;
    let name = r.string(&|| format!("name of tensor info {i}"))?;
    let n_dims = r.u32(&|| format!("n_dims of tensor '{name}'"))?;
    if n_dims > MAX_DIMS {
        return Err(invalid(
            file,
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
        .ok_or_else(|| {
            invalid(
                file,
                &name,
                format!("dims {dims:?}: element count overflows i64"),
            )
        })?;
    let row_len = dims.first().copied().unwrap_or(1);
    let bs = ggml_type.block_size() as u64;
    if !row_len.is_multiple_of(bs) {
        return Err(invalid(
            file,
            &name,
            format!(
                "row length ne[0]={row_len} is not a multiple of the {ggml_type} block size {bs}"
            ),
        ));
    }
    // Divisible by construction (row_len is a block multiple).
    if ggml_type.bytes_for(n_elements).is_none() {
        return Err(invalid(
            file,
            &name,
            format!("byte size of {n_elements} {ggml_type} elements overflows"),
        ));
    }
    if !offset.is_multiple_of(alignment) {
        return Err(invalid(
            file,
            &name,
            format!("data offset {offset} is not a multiple of the alignment {alignment}"),
        ));
    }
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
    })
}

/// The data section's start (the tensor infos' end, aligned), checked to hold every tensor.
fn check_data_section(
    infos_end: u64,
    file_len: u64,
    alignment: u64,
    tensors: &[TensorInfo],
    file: &str,
) -> Result<u64> {
    let data_offset = infos_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::BadDataSection {
            file: file.to_string(),
            reason: "data offset overflows".to_string(),
        })?;
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
    for t in tensors {
        let n_bytes = t.n_bytes(); // exact: validated above
        match t.offset.checked_add(n_bytes) {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(invalid(
                    file,
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
    Ok(data_offset)
}
