//! A weight matrix kept in its stored block format, and its products with f32 activations.
//!
//! # How the products are computed (and how they round)
//!
//! * **matvec, quantized weights** (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K): decode is
//!   memory-bound, so the weights are read once, in their packed form, and never widened to
//!   f32. As in ggml, `x` is first quantized in blocks of 32 (`q = round(x/d)`, `d` kept in
//!   f32) — to 16 bits (`d = amax/32767`) for the 32-element formats, to two 8-bit parts (the
//!   8-bit blocks, `d = amax/127`, plus their quantized residual) for the K-quants — then
//!   every 32-element piece of a row is an exact integer dot product scaled by `d_w·d_x` and
//!   accumulated in f32. The result therefore
//!   differs from the exact product with the dequantized weights by the activation rounding:
//!   at most `Σ_c |W[r,c]|·d_x(c)/2` (plus f32 summation error), typically far less because
//!   the rounding errors cancel. The scalar and AVX2 kernels do identical integer math and
//!   differ only in f32 summation order.
//! * **matvec, other formats**: F32/F16/BF16 rows are dotted with `x` in f32 (FMA, converting
//!   on the fly); Q2_K/Q3_K/Q8_K decode one block at a time to the stack and dot in f32.
//! * **matmul** with few rows (up to 16 for the integer formats, 8 for float rows): the matvec
//!   kernels, each weight block unpacked once per 4 rows (per row for the K-quants), with the
//!   same rounding as matvec: each row's result is bit-identical to its matvec.
//! * **matmul** with more rows: compute-bound, so tiles of rows are dequantized to f32 and
//!   multiplied with `gemm` (f32 throughout, no activation quantization). `gemm` picks its own
//!   micro-kernel at run time, whatever [`SimdLevel`] is asked for; the level only selects
//!   this module's kernels.
//! * **packed** ([`QMatrix::pack`], done at load where the CPU has AVX-512 VNNI): the integer
//!   formats repacked exactly into signed bytes, 16 rows interleaved, so one `vpdpwssd` serves
//!   16 weight rows; matvec, batched decode (8 rows per pass) and prefill (weight tiles held in
//!   cache while all activation rows pass) then run one integer kernel on 16-bit activation
//!   blocks, and a row's result never depends on the row count (see `packed`).
//! * **prefill on AMX** (where the CPU has AMX-TILE/BF16 and the OS grants the tile state;
//!   products of at least `AMX_MIN_ROWS` rows on packed weights): the weights are dequantized
//!   to bf16 per product and the product runs on `tdpbf16ps` tiles with f32 accumulation
//!   (see `amx`): weights and activations rounded to bf16, so it is not bit-identical to the
//!   integer kernels; decode and batched decode never take it.

use std::cell::RefCell;
use std::ops::{Deref, Range};
use std::sync::Arc;

use super::blocks::{self, BlockFormat};
use super::simd::{self, SimdLevel};

mod act;
/// The prefill product on AMX tiles (bf16).
#[cfg(target_arch = "x86_64")]
mod amx;
/// The same math with AVX2+FMA+F16C.
#[cfg(target_arch = "x86_64")]
#[allow(non_camel_case_types)]
mod avx2;
/// The interleaved product with AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
mod avx512;
/// Weights repacked 16 rows per group for batched decode.
#[allow(clippy::needless_range_loop)] // index loops mirror the interleaved layout
mod packed;
mod rows;
/// The reference integer math, portable.
#[allow(clippy::needless_range_loop)] // index loops mirror the block layouts
mod scalar;
#[cfg(test)]
mod speed;
#[cfg(test)]
mod tests;

/// `$body` with `$N` a const row count equal to `$n` (1..=8; 8 for anything larger): the
/// packed kernels take the activation rows of one pass as a const-sized array.
macro_rules! with_rows {
    ($n:expr, $N:ident => $body:expr) => {
        match $n {
            1 => {
                const $N: usize = 1;
                $body
            }
            2 => {
                const $N: usize = 2;
                $body
            }
            3 => {
                const $N: usize = 3;
                $body
            }
            4 => {
                const $N: usize = 4;
                $body
            }
            5 => {
                const $N: usize = 5;
                $body
            }
            6 => {
                const $N: usize = 6;
                $body
            }
            7 => {
                const $N: usize = 7;
                $body
            }
            _ => {
                const $N: usize = 8;
                $body
            }
        }
    };
}

use act::*;
use packed::{GROUP, Packed, packable};
use rows::*;

/// Up to this many activation rows `matmul` runs the matvec kernels (one pass over the weights
/// per 4 rows); above it, dequantized tiles go through `gemm`, whose packing and dequantization
/// only pay off with enough rows. Crossovers measured on Zen 2 (2 threads): about 20-30 rows
/// for the 32-element formats, 14 for Q6_K, 48+ for Q4_K, 12 for F16.
fn small_n_limit(format: BlockFormat) -> usize {
    use BlockFormat::*;
    match format {
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K => 16,
        F32 | F16 | BF16 => 8,
        // Decode-a-block formats decode every block once per group of 4 rows.
        Q2_K | Q3_K | Q8_K => 4,
    }
}

/// From this many activation rows on, packed products run on AMX tiles in bf16 where the CPU
/// has them (see `amx`): below it the per-product dequantization of the weights to bf16
/// costs more than the tiles save, and decode (1-8 rows) keeps its exact integer math.
const AMX_MIN_ROWS: usize = 64;

/// gemm products smaller than this (`n·rows·cols`) run on the calling thread: splitting them
/// costs more than it saves.
const PAR_MIN_ELEMS: usize = 64 * 1024;

/// Bytes of a weight matrix: owned, or borrowed from a memory map (GGUF, safetensors) without
/// copying.
pub enum WeightBytes {
    Owned(Vec<u8>),
    /// `buf[start..start + len]`; [`QMatrix::new`] checks the range.
    Shared {
        buf: Arc<dyn AsRef<[u8]> + Send + Sync>,
        start: usize,
        len: usize,
    },
}

impl WeightBytes {
    /// The bytes, or `None` if a shared range lies outside its buffer.
    fn try_bytes(&self) -> Option<&[u8]> {
        match self {
            WeightBytes::Owned(v) => Some(v),
            WeightBytes::Shared { buf, start, len } => {
                let all: &[u8] = (**buf).as_ref();
                all.get(*start..start.checked_add(*len)?)
            }
        }
    }
}

impl Deref for WeightBytes {
    type Target = [u8];

    /// # Panics
    /// If a shared range lies outside its buffer (never for one inside a [`QMatrix`]).
    fn deref(&self) -> &[u8] {
        self.try_bytes()
            .expect("WeightBytes::Shared range outside its buffer")
    }
}

impl std::fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightBytes::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            WeightBytes::Shared { start, len, .. } => {
                write!(f, "Shared({len} bytes at {start})")
            }
        }
    }
}

/// A matrix shape that does not fit its format or bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

/// A row-major `[rows, cols]` weight matrix in a [`BlockFormat`]; each row is `cols/block_len`
/// whole blocks (rows never share a block), so any row range is a contiguous byte range.
/// After [`QMatrix::pack`] the values live only in the interleaved form.
pub struct QMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    /// The stored bytes; empty once packed.
    data: WeightBytes,
    packed: Option<Packed>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("data", &self.data)
            .field("packed", &self.packed.is_some())
            .finish()
    }
}

impl QMatrix {
    /// Wrap stored bytes. Fails if `cols` is not a whole number of blocks or `data` is not
    /// exactly `rows` rows.
    pub fn new(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: WeightBytes,
    ) -> Result<Self, ShapeError> {
        let row_bytes = format.row_bytes(cols).ok_or_else(|| {
            ShapeError(format!(
                "{cols} columns are not a whole number of {} blocks of {}",
                format.name(),
                format.block_len()
            ))
        })?;
        let bytes = data
            .try_bytes()
            .ok_or_else(|| ShapeError("shared weight range lies outside its buffer".to_string()))?;
        let want = rows.checked_mul(row_bytes);
        if want != Some(bytes.len()) {
            return Err(ShapeError(format!(
                "[{rows}, {cols}] {} needs {} bytes but {} were given",
                format.name(),
                want.map_or_else(|| "an overflowing number of".to_string(), |w| w.to_string()),
                bytes.len()
            )));
        }
        Ok(QMatrix {
            format,
            rows,
            cols,
            row_bytes,
            data,
            packed: None,
        })
    }

    /// Encode f32 weights (row-major `[rows, cols]`) as Q8_0, F16, BF16 or F32.
    pub fn from_f32(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: &[f32],
    ) -> Result<Self, ShapeError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(ShapeError(format!(
                "[{rows}, {cols}] needs {} values but {} were given",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        if !matches!(
            format,
            BlockFormat::Q8_0 | BlockFormat::F16 | BlockFormat::BF16 | BlockFormat::F32
        ) {
            return Err(ShapeError(format!(
                "cannot encode weights as {}",
                format.name()
            )));
        }
        if format.row_bytes(cols).is_none() {
            return Err(ShapeError(format!(
                "{cols} columns are not a whole number of {} blocks of {}",
                format.name(),
                format.block_len()
            )));
        }
        // Whole rows are whole blocks, so the matrix encodes as one run.
        let bytes = blocks::quantize(format, data).expect("format and length checked above");
        QMatrix::new(format, rows, cols, WeightBytes::Owned(bytes))
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

    /// Bytes the matrix occupies in memory: its format's, or the interleaved form's once
    /// packed.
    pub fn byte_len(&self) -> usize {
        match &self.packed {
            Some(p) => p.byte_len(),
            None => self.rows * self.row_bytes,
        }
    }

    /// Repack the weights 16 rows per group for the AVX-512 integer product (see
    /// [`packed`](self::packed)), where the format allows; the stored bytes are released
    /// (a memory-mapped range is handed back to the kernel). The weights stay exact; every
    /// product then quantizes its activations to 16-bit blocks (prefill too, which was f32),
    /// so results move within that rounding bound. Returns whether the matrix is now packed.
    pub fn pack(&mut self) -> bool {
        if self.packed.is_some() {
            return true;
        }
        if !packable(self.format) || self.rows == 0 || self.cols == 0 {
            return false;
        }
        let (data, rb) = (&self.data, self.row_bytes);
        let packed = Packed::new(self.format, self.rows, self.cols, data, |rows| {
            if let WeightBytes::Shared { .. } = data {
                release_pages(&data[rows.start * rb..rows.end * rb]);
            }
        });
        self.packed = Some(packed);
        self.data = WeightBytes::Owned(Vec::new());
        true
    }

    /// Activation rows a [`QMatrix::matmul`] may take while each row's result stays
    /// bit-identical to its [`QMatrix::matvec`]: any number once packed (every path runs the
    /// same per-row kernel), else the matvec kernels' limit.
    pub fn exact_rows(&self) -> usize {
        if self.packed.is_some() {
            usize::MAX
        } else {
            small_n_limit(self.format)
        }
    }

    /// Whether [`QMatrix::pack`] repacked this matrix.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Whether its prefill products (at least 64 rows) run in bf16 on AMX tiles: packed, and
    /// [`simd::amx`] on.
    pub fn prefill_on_tiles(&self) -> bool {
        self.is_packed() && simd::amx()
    }

    /// Decode rows `rows` into `out` (`rows.len() * cols` values): the embedding lookup.
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        assert!(
            rows.start <= rows.end && rows.end <= self.rows,
            "rows {rows:?} of {}",
            self.rows
        );
        assert_eq!(out.len(), rows.len() * self.cols, "output length");
        if let Some(p) = &self.packed {
            return p.dequantize_rows(rows, out);
        }
        let w = &self.data[rows.start * self.row_bytes..rows.end * self.row_bytes];
        dequantize_at(simd::active(), self.format, w, out);
    }

    /// `y[r] = Σ_c W[r,c]·x[c]`: decode's hot path (see the module docs for the rounding).
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        self.matvec_at(simd::active(), x, y)
    }

    /// `x` `[n, cols]` → `y` `[n, rows]` (row-major): prefill's hot path.
    pub fn matmul(&self, x: &[f32], n: usize, y: &mut [f32]) {
        self.matmul_at(simd::active(), x, n, y)
    }

    /// [`QMatrix::matvec`] with the kernels of `level`.
    ///
    /// # Panics
    /// On wrong lengths, or if this CPU cannot run `level`.
    pub fn matvec_at(&self, level: SimdLevel, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), self.cols, "matvec: x length");
        assert_eq!(y.len(), self.rows, "matvec: y length");
        if self.cols == 0 {
            y.fill(0.0);
            return;
        }
        self.small_n::<1>(level, x, [y], self.grain());
    }

    /// Rows of this matrix times one activation row, with the activation already quantized
    /// in the forms the integer formats need (`act`) — the body of [`matvec_many`].
    fn matvec_prepared(&self, level: SimdLevel, x: &[f32], act: Option<&Q8Act>, y: &mut [f32]) {
        let grain = self.grain();
        if self.packed.is_some() {
            let act = act.expect("packed matrices get 16-bit activations");
            let row = act.b16.row(0, self.cols / 32);
            return self.packed_product(level, [row], [y], grain);
        }
        match act.and_then(|a| a.prepared(self.format, 0, self.cols / 32)) {
            Some(p) => self.int_product(level, [p], [y], grain),
            None => {
                let w: &[u8] = &self.data;
                let xs = [x];
                split_rows(0, [y], grain, &|r0, outs| {
                    let n_rows = outs[0].len();
                    let w = &w[r0 * self.row_bytes..(r0 + n_rows) * self.row_bytes];
                    float_rows(level, self.format, w, self.row_bytes, &xs, outs);
                });
            }
        }
    }

    /// `ys[i] = W·act[i]` for activation rows quantized for this matrix's format (all of
    /// one kind), in parallel over row ranges. 16-bit rows share one pass over the weights.
    fn int_product<const N: usize>(
        &self,
        level: SimdLevel,
        acts: [Prepared<'_>; N],
        ys: [&mut [f32]; N],
        grain: usize,
    ) {
        if let Prepared::Wide(_) = acts[0] {
            let rows: [ActRow<'_, i16>; N] = acts.map(|a| match a {
                Prepared::Wide(r) => r,
                Prepared::Split(_) => unreachable!("one format, one activation kind"),
            });
            let w: &[u8] = &self.data;
            split_rows(0, ys, grain, &|r0, outs| {
                let n_rows = outs[0].len();
                let w = &w[r0 * self.row_bytes..(r0 + n_rows) * self.row_bytes];
                wide_rows(level, self.format, w, self.row_bytes, &rows, outs);
            });
        } else {
            let parts = acts.map(|a| match a {
                Prepared::Split(p) => p,
                Prepared::Wide(_) => unreachable!("one format, one activation kind"),
            });
            match N {
                1 => self.int8_split::<N, 2>(level, parts, ys, grain),
                2 => self.int8_split::<N, 4>(level, parts, ys, grain),
                3 => self.int8_split::<N, 6>(level, parts, ys, grain),
                4 => self.int8_split::<N, 8>(level, parts, ys, grain),
                _ => {
                    // More rows than one pass takes: groups of 4 (the small path never
                    // gives more).
                    for (p, y) in parts.into_iter().zip(ys) {
                        self.int8_split::<1, 2>(level, [p], [y], grain);
                    }
                }
            }
        }
    }

    /// `ys[i] = W·x[i]` for `N` activation rows, each given as its two int8 parts (`x ≈ hi +
    /// lo`, see [`Q8Act::quantize_split`]), in one pass over the weights: each block is
    /// unpacked once and dotted with all `M = 2N` parts. Every part keeps its own accumulators,
    /// so a row's result is the same whatever `N` (a session decoded in a batch equals it alone).
    fn int8_split<const N: usize, const M: usize>(
        &self,
        level: SimdLevel,
        parts: [[ActRow<'_>; 2]; N],
        ys: [&mut [f32]; N],
        grain: usize,
    ) {
        debug_assert_eq!(M, 2 * N);
        let w: &[u8] = &self.data;
        let rows = ys[0].len();
        let acts: [ActRow<'_>; M] = std::array::from_fn(|j| parts[j / 2][j % 2]);
        let mut ys = ys;
        with_scratch(&TILE, |lo: &mut Vec<f32>| {
            lo.clear();
            lo.resize(N * rows, 0.0);
            let mut los: Vec<&mut [f32]> = lo.chunks_mut(rows).collect();
            {
                // Outputs in the order of `acts`: row i's high part into ys[i], its residual
                // into its own scratch row.
                let mut flat: Vec<&mut [f32]> = Vec::with_capacity(M);
                for (y, l) in ys.iter_mut().zip(los.iter_mut()) {
                    flat.push(&mut **y);
                    flat.push(&mut **l);
                }
                let outs: [&mut [f32]; M] = flat
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("two outputs per row"));
                split_rows(0, outs, grain, &|r0, outs| {
                    let n_rows = outs[0].len();
                    let w = &w[r0 * self.row_bytes..(r0 + n_rows) * self.row_bytes];
                    int8_rows(level, self.format, w, self.row_bytes, &acts, outs);
                });
            }
            for (y, l) in ys.iter_mut().zip(&los) {
                y.iter_mut().zip(l.iter()).for_each(|(y, l)| *y += l);
            }
        });
    }

    /// [`QMatrix::matmul`] with the kernels of `level`.
    ///
    /// # Panics
    /// On wrong lengths, or if this CPU cannot run `level`.
    pub fn matmul_at(&self, level: SimdLevel, x: &[f32], n: usize, y: &mut [f32]) {
        assert_eq!(Some(x.len()), n.checked_mul(self.cols), "matmul: x length");
        assert_eq!(Some(y.len()), n.checked_mul(self.rows), "matmul: y length");
        if self.cols == 0 || y.is_empty() {
            y.fill(0.0);
            return;
        }
        assert!(
            level <= simd::detected(),
            "SIMD level {level} not available"
        );
        if self.packed.is_some() {
            self.matmul_packed(level, x, n, y);
        } else if n <= small_n_limit(self.format) {
            self.matmul_small(level, x, n, y);
        } else {
            self.matmul_gemm(level, x, n, y);
        }
    }

    /// The matvec kernels on groups of up to 4 activation rows (one pass over the weights per
    /// group).
    fn matmul_small(&self, level: SimdLevel, x: &[f32], n: usize, y: &mut [f32]) {
        let (c, r) = (self.cols, self.rows);
        let grain = self.grain();
        for (x, y) in x.chunks(4 * c).zip(y.chunks_mut(4 * r)) {
            match x.len() / c {
                1 => self.small_n::<1>(level, x, [y], grain),
                2 => {
                    let (y0, y1) = y.split_at_mut(r);
                    self.small_n::<2>(level, x, [y0, y1], grain);
                }
                3 => {
                    let (y0, rest) = y.split_at_mut(r);
                    let (y1, y2) = rest.split_at_mut(r);
                    self.small_n::<3>(level, x, [y0, y1, y2], grain);
                }
                _ => {
                    let (y01, y23) = y.split_at_mut(2 * r);
                    let (y0, y1) = y01.split_at_mut(r);
                    let (y2, y3) = y23.split_at_mut(r);
                    self.small_n::<4>(level, x, [y0, y1, y2, y3], grain);
                }
            }
        }
        debug_assert!(n == 0 || x.len() == n * c);
    }

    /// `N` activation rows (`x` is `[N, cols]`) against every weight row, in parallel over
    /// row ranges; each weight block is read once for all `N` rows.
    fn small_n<const N: usize>(
        &self,
        level: SimdLevel,
        x: &[f32],
        ys: [&mut [f32]; N],
        grain: usize,
    ) {
        assert!(
            level <= simd::detected(),
            "SIMD level {level} not available"
        );
        debug_assert_eq!(x.len(), N * self.cols);
        if self.packed.is_some() {
            with_scratch(&ACT, |act: &mut Q8Act| {
                act.quantize16(level, x, self.cols);
                let nb = self.cols / 32;
                let rows = std::array::from_fn(|i| act.b16.row(i, nb));
                self.packed_product(level, rows, ys, grain);
            });
            return;
        }
        let w: &[u8] = &self.data;
        if int8_format(self.format) {
            with_scratch(&ACT, |act: &mut Q8Act| {
                act.prepare(level, x, self.cols, std::iter::once(self.format));
                let nb = self.cols / 32;
                let acts = std::array::from_fn(|i| {
                    act.prepared(self.format, i, nb)
                        .expect("an integer format has a quantized form")
                });
                self.int_product(level, acts, ys, grain);
            });
        } else {
            let xs: [&[f32]; N] = std::array::from_fn(|i| &x[i * self.cols..(i + 1) * self.cols]);
            split_rows(0, ys, grain, &|r0, outs| {
                let n_rows = outs[0].len();
                let w = &w[r0 * self.row_bytes..(r0 + n_rows) * self.row_bytes];
                float_rows(level, self.format, w, self.row_bytes, &xs, outs);
            });
        }
    }

    /// Rows per parallel task for the matvec kernels: about 4 tasks per thread (so stealing
    /// evens out uneven cores), but at least 32 KiB of weights per task (a few microseconds of
    /// work, well above rayon's scheduling cost); small matrices stay on the calling thread.
    fn grain(&self) -> usize {
        const MIN_TASK_BYTES: usize = 32 * 1024;
        let min_rows = MIN_TASK_BYTES.div_ceil(self.row_bytes.max(1));
        let per_task = self.rows.div_ceil(4 * rayon::current_num_threads());
        per_task.max(min_rows).max(16)
    }

    /// `ys[i] = W·act[i]` on the interleaved weights, in parallel over row ranges of whole
    /// groups; each activation row keeps its own accumulators, so its result is the same
    /// whatever `N` (a session decoded in a batch equals it alone).
    fn packed_product<const N: usize>(
        &self,
        level: SimdLevel,
        acts: [ActRow<'_, i16>; N],
        ys: [&mut [f32]; N],
        grain: usize,
    ) {
        let p = self.packed.as_ref().expect("a packed matrix");
        let fast = level >= SimdLevel::Avx2 && simd::avx512();
        split_rows(0, ys, grain.next_multiple_of(GROUP), &|r0, outs| {
            p.rows(fast, r0, &acts, outs);
        });
    }

    /// Any number of activation rows on the interleaved weights. Up to 8 rows (decode, a
    /// batch of sessions): one pass over the weights, split over row ranges. More (prefill):
    /// the whole `x` is quantized once and each task takes a tile of weight rows, which stays
    /// in cache while every group of 8 activation rows passes over it — a GEMM blocked on the
    /// weights, with the integer kernel instead of f32 FMAs on dequantized tiles.
    fn matmul_packed(&self, level: SimdLevel, x: &[f32], n: usize, y: &mut [f32]) {
        let (c, r) = (self.cols, self.rows);
        if n > 8 {
            return self.matmul_packed_tiles(level, x, n, y);
        }
        let grain = self.grain();
        for (x, y) in x.chunks(8 * c).zip(y.chunks_mut(8 * r)) {
            let mut it = y.chunks_mut(r);
            with_rows!(x.len() / c, N => {
                let ys: [&mut [f32]; N] = std::array::from_fn(|_| it.next().unwrap());
                self.small_n::<N>(level, x, ys, grain)
            });
        }
        debug_assert!(n == 0 || x.len() == n * c);
    }

    /// The prefill form of [`QMatrix::matmul_packed`].
    fn matmul_packed_tiles(&self, level: SimdLevel, x: &[f32], n: usize, y: &mut [f32]) {
        use rayon::prelude::*;
        let p = self.packed.as_ref().expect("a packed matrix");
        let fast = level >= SimdLevel::Avx2 && simd::avx512();
        let (rows, cols) = (self.rows, self.cols);
        let nb = cols / 32;
        #[cfg(target_arch = "x86_64")]
        if fast && n >= AMX_MIN_ROWS && simd::amx() {
            // SAFETY: `simd::amx()` said yes (AMX-TILE/BF16 usable, AVX-512 F/BW present);
            // the caller checked x.len() == n·cols and y.len() == n·rows.
            unsafe { amx::matmul(p, x, n, y, n * rows * cols >= PAR_MIN_ELEMS) };
            return;
        }
        // About 8 tiles per thread, each a whole number of groups.
        let per = rows.div_ceil(8 * rayon::current_num_threads());
        let tile = per.next_multiple_of(GROUP).clamp(GROUP, 256);
        let y_ptr = SendPtr(y.as_mut_ptr());
        with_scratch(&ACT, |act: &mut Q8Act| {
            act.quantize16(level, x, cols);
            let act = &*act;
            let run = |t: usize| {
                let (r0, r1) = (t * tile, ((t + 1) * tile).min(rows));
                for i0 in (0..n).step_by(8) {
                    let m = (n - i0).min(8);
                    // SAFETY: row i of `y` is y[i·rows..(i+1)·rows] (length n·rows checked
                    // by the caller); this task alone writes columns r0..r1 of rows
                    // i0..i0+m, so the slices are disjoint from every other task's.
                    let out = |i: usize| unsafe {
                        std::slice::from_raw_parts_mut(
                            y_ptr.get().add((i0 + i) * rows + r0),
                            r1 - r0,
                        )
                    };
                    let a = |i: usize| act.b16.row(i0 + i, nb);
                    with_rows!(m, M => {
                        let acts: [ActRow<'_, i16>; M] = std::array::from_fn(a);
                        p.rows::<M>(fast, r0, &acts, std::array::from_fn(out))
                    });
                }
            };
            let n_tiles = rows.div_ceil(tile);
            if n * rows * cols >= PAR_MIN_ELEMS {
                (0..n_tiles).into_par_iter().for_each(run);
            } else {
                (0..n_tiles).for_each(run);
            }
        });
    }

    /// Prefill: dequantize tiles of rows to f32 and multiply them with `gemm`, tiles in
    /// parallel (each tile's gemm single-threaded; measured faster than one multi-threaded
    /// gemm per tile for the model's shapes).
    fn matmul_gemm(&self, level: SimdLevel, x: &[f32], n: usize, y: &mut [f32]) {
        // At least two tiles per thread where the matrix allows, so every thread gets work.
        let per_thread = self.rows.div_ceil(2 * rayon::current_num_threads());
        let tile = tile_rows(self.cols).min(per_thread.next_multiple_of(16));
        self.matmul_gemm_with(level, x, n, y, tile, true);
    }

    /// [`QMatrix::matmul_gemm`] with the tiling as parameters (for tuning).
    fn matmul_gemm_with(
        &self,
        level: SimdLevel,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        tile: usize,
        parallel_tiles: bool,
    ) {
        let (rows, cols) = (self.rows, self.cols);
        let tile = tile.clamp(1, rows.max(1));
        let n_tiles = rows.div_ceil(tile);
        let y_ptr = SendPtr(y.as_mut_ptr());
        let w: &[u8] = &self.data;
        let run = |t: usize| {
            let r0 = t * tile;
            let r1 = (r0 + tile).min(rows);
            with_scratch(&TILE, |buf: &mut Vec<f32>| {
                buf.resize((r1 - r0) * cols, 0.0);
                match &self.packed {
                    Some(p) => p.dequantize_rows(r0..r1, buf),
                    None => dequantize_at(
                        level,
                        self.format,
                        &w[r0 * self.row_bytes..r1 * self.row_bytes],
                        buf,
                    ),
                }
                // SAFETY: gemm reads `x` as [n, cols] (row stride cols) and `buf` as the
                // [cols, r1-r0] transpose of the tile (column stride cols): both in bounds.
                // It writes y[i, r0..r1] for i < n (row stride `rows`), inside `y` whose
                // length was checked to be n*rows; tiles write disjoint column ranges, so
                // the parallel calls never touch the same element.
                unsafe {
                    gemm::gemm(
                        n,
                        r1 - r0,
                        cols,
                        y_ptr.get().add(r0),
                        1,
                        rows as isize,
                        false,
                        x.as_ptr(),
                        1,
                        cols as isize,
                        buf.as_ptr(),
                        cols as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        if parallel_tiles {
                            gemm::Parallelism::None
                        } else {
                            gemm::Parallelism::Rayon(0)
                        },
                    );
                }
            });
        };
        if parallel_tiles && n_tiles > 1 && n * rows * cols >= PAR_MIN_ELEMS {
            use rayon::prelude::*;
            (0..n_tiles).into_par_iter().for_each(run);
        } else {
            (0..n_tiles).for_each(run);
        }
    }
}

/// [`BlockFormat::dequantize`] with the vector decoders where `level` has them (bit-identical:
/// same operations in the same order).
fn dequantize_at(level: SimdLevel, format: BlockFormat, src: &[u8], dst: &mut [f32]) {
    assert!(
        level <= simd::detected(),
        "SIMD level {level} not available"
    );
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        // SAFETY: AVX2+FMA+F16C present (asserted above); the length check is inside.
        if unsafe { avx2::dequantize(format, src, dst) } {
            return;
        }
    }
    format.dequantize(src, dst);
}

/// Rows per gemm tile: about 256 KiB of f32 (fits L2 with room for the activations).
fn tile_rows(cols: usize) -> usize {
    ((64 * 1024) / cols.max(1))
        .clamp(16, 512)
        .next_multiple_of(16)
}

/// Hand the whole pages of a memory-mapped range back to the kernel once its values were
/// repacked: without it the mapped file pages would stay resident next to the packed copy.
/// Only for bytes of a [`WeightBytes::Shared`] range (read-only file maps).
fn release_pages(b: &[u8]) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let (start, end) = (b.as_ptr() as usize, b.as_ptr() as usize + b.len());
        let (lo, hi) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if hi > lo {
            // SAFETY: `Shared` ranges are read-only file mappings (the GGUF and safetensors
            // loaders); MADV_DONTNEED on them only drops resident pages, which a later read
            // would fault back in from the file unchanged. The range lies inside the mapping.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED) };
        }
    }
    #[cfg(not(unix))]
    let _ = b;
}

/// A raw pointer that may cross threads; users guarantee disjoint access.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used by the tiled products (`matmul_gemm`, the packed and AMX prefill), whose
// tasks write disjoint parts of one `&mut [f32]`.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// A method (not field access) so closures capture the whole `Sync` wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `ys[i] = mats[i]·x` for matrices of the same width (a layer's q/k/v, gate/up): `x` is
/// quantized once and all their rows run in one parallel region, instead of one activation
/// quantization and one fork/join per matrix. Each result is bit-identical to
/// [`QMatrix::matvec`].
///
/// # Panics
/// On matrices of different widths or wrong lengths.
pub fn matvec_many(mats: &[&QMatrix], x: &[f32], ys: &mut [&mut [f32]]) {
    let level = simd::active();
    assert_eq!(mats.len(), ys.len(), "matvec_many: one output per matrix");
    for (m, y) in mats.iter().zip(ys.iter()) {
        assert_eq!(x.len(), m.cols, "matvec_many: x length");
        assert_eq!(y.len(), m.rows, "matvec_many: y length");
    }
    if x.is_empty() {
        ys.iter_mut().for_each(|y| y.fill(0.0));
        return;
    }
    fn run(
        level: SimdLevel,
        mats: &[&QMatrix],
        x: &[f32],
        act: Option<&Q8Act>,
        ys: &mut [&mut [f32]],
    ) {
        match mats.len() {
            0 => {}
            1 => mats[0].matvec_prepared(level, x, act, ys[0]),
            n => {
                let (ma, mb) = mats.split_at(n / 2);
                let (ya, yb) = ys.split_at_mut(n / 2);
                rayon::join(|| run(level, ma, x, act, ya), || run(level, mb, x, act, yb));
            }
        }
    }
    if mats.iter().any(|m| int8_format(m.format)) {
        with_scratch(&ACT, |act: &mut Q8Act| {
            // Packed matrices take the 16-bit form, whatever their format.
            let forms = mats.iter().map(|m| match m.packed {
                Some(_) => BlockFormat::Q8_0,
                None => m.format,
            });
            act.prepare(level, x, x.len(), forms);
            run(level, mats, x, Some(&*act), ys);
        });
    } else {
        run(level, mats, x, None, ys);
    }
}

/// `ys[i] = mats[i]·x` for `n` activation rows (`x` `[n, cols]`, `ys[i]` `[n, rows_i]`): a
/// batched decode step's q/k/v or gate/up. Packed matrices with up to 8 rows share one
/// activation quantization and one parallel region, like [`matvec_many`] for one row; other
/// cases run [`QMatrix::matmul`] per matrix. Each result is bit-identical to `matmul`.
///
/// # Panics
/// On matrices of different widths or wrong lengths.
pub fn matmul_many(mats: &[&QMatrix], x: &[f32], n: usize, ys: &mut [&mut [f32]]) {
    assert_eq!(mats.len(), ys.len(), "matmul_many: one output per matrix");
    if n == 1 {
        return matvec_many(mats, x, ys);
    }
    if n == 0 || n > 8 || !mats.iter().all(|m| m.packed.is_some() && m.cols > 0) {
        for (m, y) in mats.iter().zip(ys.iter_mut()) {
            m.matmul(x, n, y);
        }
        return;
    }
    let cols = mats[0].cols;
    for (m, y) in mats.iter().zip(ys.iter()) {
        assert_eq!(m.cols, cols, "matmul_many: matrices of one width");
        assert_eq!(Some(x.len()), n.checked_mul(cols), "matmul_many: x length");
        assert_eq!(
            Some(y.len()),
            n.checked_mul(m.rows),
            "matmul_many: y length"
        );
    }
    fn run<const N: usize>(
        level: SimdLevel,
        mats: &[&QMatrix],
        act: &Q8Act,
        ys: &mut [&mut [f32]],
    ) {
        match mats.len() {
            0 => {}
            1 => {
                let m = mats[0];
                let nb = m.cols / 32;
                let mut rows = ys[0].chunks_mut(m.rows);
                let outs: [&mut [f32]; N] = std::array::from_fn(|_| rows.next().unwrap());
                let acts = std::array::from_fn(|i| act.b16.row(i, nb));
                m.packed_product(level, acts, outs, m.grain());
            }
            k => {
                let (ma, mb) = mats.split_at(k / 2);
                let (ya, yb) = ys.split_at_mut(k / 2);
                rayon::join(
                    || run::<N>(level, ma, act, ya),
                    || run::<N>(level, mb, act, yb),
                );
            }
        }
    }
    let level = simd::active();
    with_scratch(&ACT, |act: &mut Q8Act| {
        act.quantize16(level, x, cols);
        let act = &*act;
        with_rows!(n, N => run::<N>(level, mats, act, ys));
    });
}

/// Run `f(first_row, outs)` over row ranges of at most `grain` rows, splitting all `N`
/// outputs at the same row with `rayon::join` (safe disjoint borrows, no allocation).
fn split_rows<const N: usize, F>(first: usize, outs: [&mut [f32]; N], grain: usize, f: &F)
where
    F: Fn(usize, [&mut [f32]; N]) + Sync,
{
    let len = outs[0].len();
    if len <= grain {
        f(first, outs);
        return;
    }
    // Split on a multiple of 16 rows: neighbouring tasks do not share cache lines of y, and
    // packed matrices split on whole groups.
    let mid = (len / 2).next_multiple_of(GROUP).min(len);
    if mid == len {
        f(first, outs);
        return;
    }
    let mut halves = outs.map(|o| {
        let (a, b) = o.split_at_mut(mid);
        (Some(a), Some(b))
    });
    let left: [&mut [f32]; N] = std::array::from_fn(|i| halves[i].0.take().unwrap());
    let right: [&mut [f32]; N] = std::array::from_fn(|i| halves[i].1.take().unwrap());
    rayon::join(
        || split_rows(first, left, grain, f),
        || split_rows(first + mid, right, grain, f),
    );
}

// ---------------------------------------------------------------------------
// Per-thread scratch
// ---------------------------------------------------------------------------

thread_local! {
    static ACT: RefCell<Q8Act> = RefCell::new(Q8Act::default());
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Lend this thread's reusable buffer to `f`. The buffer is moved out for the duration, so a
/// nested call on the same thread (rayon may run another product here while this one waits)
/// gets a fresh one instead of a `RefCell` panic.
fn with_scratch<T: Default + 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut buf = key.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let r = f(&mut buf);
    key.with(|c| *c.borrow_mut() = buf);
    r
}
