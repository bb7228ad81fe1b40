use super::blocks::{self, BlockFormat};
use std::sync::Arc;
pub enum WeightBytes {
    Owned(Vec<u8>),
    Shared {
        buf: Arc<dyn AsRef<[u8]> + Send + Sync>,
        start: usize,
        len: usize,
    },
}
impl std::ops::Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WeightBytes::Owned(v) => v,
            WeightBytes::Shared { buf, start, len } => &(**buf).as_ref()[*start..*start + *len],
        }
    }
}
impl std::fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBytes({})", self.len())
    }
}
#[derive(Debug)]
pub struct ShapeError(pub String);
#[derive(Debug)]
pub struct QMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    data: WeightBytes,
}
impl QMatrix {
    pub fn new(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: WeightBytes,
    ) -> Result<Self, ShapeError> {
        let rb = format
            .row_bytes(cols)
            .ok_or_else(|| ShapeError("cols".into()))?;
        if data.len() != rb * rows {
            return Err(ShapeError("len".into()));
        }
        Ok(QMatrix {
            format,
            rows,
            cols,
            data,
        })
    }
    pub fn from_f32(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: &[f32],
    ) -> Result<Self, ShapeError> {
        let b = blocks::quantize(format, data).ok_or_else(|| ShapeError("fmt".into()))?;
        Self::new(format, rows, cols, WeightBytes::Owned(b))
    }
    pub fn format(&self) -> BlockFormat {
        self.format
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }
    pub fn dequantize_rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let rb = self.format.row_bytes(self.cols).unwrap();
        self.format
            .dequantize(&self.data[rows.start * rb..rows.end * rb], out);
    }
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        self.matmul(x, 1, y)
    }
    pub fn matmul(&self, x: &[f32], n: usize, y: &mut [f32]) {
        let mut row = vec![0.0f32; self.cols];
        for r in 0..self.rows {
            self.dequantize_rows(r..r + 1, &mut row);
            for i in 0..n {
                y[i * self.rows + r] = row
                    .iter()
                    .zip(&x[i * self.cols..(i + 1) * self.cols])
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
    }
}
