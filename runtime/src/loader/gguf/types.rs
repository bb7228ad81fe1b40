//! ggml tensor types: their ids, sizes and the mapping to the kernels' [`BlockFormat`], plus the
//! dequantisation glue that turns a tensor's bytes into `f32` through the shared block decoders.

use std::fmt;

use super::{GgufError, Result};
use crate::kernels::blocks::{BlockFormat, blocks};

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

/// Dequantize `n_elements` values of type `ty` from `bytes` into `out`.
///
/// `out` is cleared first (its capacity is reused). `bytes` must be exactly
/// the encoded size of `n_elements` elements, which must be a whole number of
/// blocks; anything else is an error rather than a silent partial decode.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize, out: &mut Vec<f32>) -> Result<()> {
    dequantize_impl(ty, bytes, n_elements, out, "<buffer>")
}

pub(super) fn dequantize_impl(
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
