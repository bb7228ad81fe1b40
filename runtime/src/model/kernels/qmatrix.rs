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

use std::cell::RefCell;
use std::ops::{Deref, Range};
use std::sync::Arc;

use super::blocks::{self, BlockFormat};
use super::simd::{self, SimdLevel};

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
#[derive(Debug)]
pub struct QMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: WeightBytes,
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

    /// Bytes the matrix occupies in its format.
    pub fn byte_len(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// Decode rows `rows` into `out` (`rows.len() * cols` values): the embedding lookup.
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        assert!(
            rows.start <= rows.end && rows.end <= self.rows,
            "rows {rows:?} of {}",
            self.rows
        );
        assert_eq!(out.len(), rows.len() * self.cols, "output length");
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
            for (a, y) in acts.into_iter().zip(ys) {
                let Prepared::Split(parts) = a else {
                    unreachable!("one format, one activation kind")
                };
                self.int8_split(level, parts, y, grain);
            }
        }
    }

    /// `y = W·x` for one activation row given as its two int8 parts (`x ≈ hi + lo`, see
    /// [`Q8Act::quantize_split`]): each weight block is unpacked once and dotted with both.
    fn int8_split(&self, level: SimdLevel, parts: [ActRow<'_>; 2], y: &mut [f32], grain: usize) {
        let w: &[u8] = &self.data;
        with_scratch(&TILE, |lo: &mut Vec<f32>| {
            lo.clear();
            lo.resize(y.len(), 0.0);
            split_rows(0, [&mut *y, &mut lo[..]], grain, &|r0, outs| {
                let n_rows = outs[0].len();
                let w = &w[r0 * self.row_bytes..(r0 + n_rows) * self.row_bytes];
                int8_rows(level, self.format, w, self.row_bytes, &parts, outs);
            });
            y.iter_mut().zip(lo.iter()).for_each(|(y, l)| *y += l);
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
        if n <= small_n_limit(self.format) {
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
                dequantize_at(
                    level,
                    self.format,
                    &w[r0 * self.row_bytes..r1 * self.row_bytes],
                    buf,
                );
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

/// A raw pointer that may cross threads; users guarantee disjoint access.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used by `matmul_gemm`, whose tasks write disjoint parts of one `&mut [f32]`.
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
            act.prepare(level, x, x.len(), mats.iter().map(|m| m.format));
            run(level, mats, x, Some(&*act), ys);
        });
    } else {
        run(level, mats, x, None, ys);
    }
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
    // Split on a multiple of 8 rows so neighbouring tasks do not share cache lines of y.
    let mid = (len / 2).next_multiple_of(8).min(len);
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

// ---------------------------------------------------------------------------
// Activations quantized to 8-bit blocks of 32
// ---------------------------------------------------------------------------

/// Activation rows quantized in blocks of 32 for the integer kernels: struct-of-arrays, so the
/// K-quant kernels load 8 consecutive scales as one vector.
struct QBlocks<T> {
    qs: Vec<[T; 32]>,
    /// Scale per block: `x ≈ d·q`.
    d: Vec<f32>,
    /// `d·Σq` per block: the block's sum, for the min/offset terms of Q4_1/Q5_1/Q4_K/Q5_K.
    s: Vec<f32>,
}

impl<T> Default for QBlocks<T> {
    fn default() -> Self {
        Self {
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
        }
    }
}

impl<T: Copy + Default> QBlocks<T> {
    fn resize(&mut self, nb: usize) {
        self.qs.resize(nb, [T::default(); 32]);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
    }

    fn row(&self, i: usize, nb: usize) -> ActRow<'_, T> {
        let r = i * nb..(i + 1) * nb;
        ActRow {
            qs: &self.qs[r.clone()],
            d: &self.d[r.clone()],
            s: &self.s[r],
        }
    }
}

/// The quantized forms of the activations a product needs (per-thread scratch).
#[derive(Default)]
struct Q8Act {
    /// 8-bit blocks (`d = amax/127`): the K-quant kernels, in two parts (see `quantize_split`).
    b8: QBlocks<i8>,
    /// 16-bit blocks (`d = amax/32767`): the 32-element formats (see `quantize16`).
    b16: QBlocks<i16>,
    /// Scratch of [`Q8Act::quantize_split`]: the rows and their residuals.
    split: Vec<f32>,
}

/// One quantized activation row (`cols/32` blocks).
#[derive(Clone, Copy)]
struct ActRow<'a, T = i8> {
    qs: &'a [[T; 32]],
    d: &'a [f32],
    s: &'a [f32],
}

impl Q8Act {
    /// Quantize `x` (`[n, cols]`, cols a multiple of 32) to 8-bit blocks. Both levels give
    /// identical bytes: `d = amax/127`, `q = round_ties_even(x·(1/d))` (the AVX2 rounding mode).
    fn quantize(&mut self, level: SimdLevel, x: &[f32], cols: usize) {
        debug_assert!(cols.is_multiple_of(32) && x.len().is_multiple_of(cols));
        let b = &mut self.b8;
        b.resize(x.len() / 32);
        let (xb, _) = x.as_chunks::<32>();
        for (i, xb) in xb.iter().enumerate() {
            let sum = match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: callers checked `level <= detected()`, so AVX2+FMA+F16C are present.
                SimdLevel::Avx2 => unsafe { avx2::quantize_block(xb, &mut b.qs[i], &mut b.d[i]) },
                _ => quantize_block_scalar(xb, &mut b.qs[i], &mut b.d[i]),
            };
            b.s[i] = b.d[i] * sum as f32;
        }
    }

    /// Quantize `x` to 16-bit blocks: `d = amax/32767`, `q = round_ties_even(x·(1/d))`,
    /// identical on both levels. Why 16 bits for the 32-element formats: a single 8-bit
    /// quantization of the activations (ggml's scheme) flips the greedy token at ~2.5% of
    /// Gemma 3 270M's positions; 16 bits are ~258× finer, and widening a weight block to 16
    /// bits costs fewer instructions than a second 8-bit pass (`vpmaddwd` straight on the
    /// widened weights, no sign juggling), which matters because the decode mat-vecs are
    /// bound by instructions on 2 cores, not by memory bandwidth.
    fn quantize16(&mut self, level: SimdLevel, x: &[f32], cols: usize) {
        debug_assert!(cols.is_multiple_of(32) && x.len().is_multiple_of(cols));
        let b = &mut self.b16;
        b.resize(x.len() / 32);
        let (xb, _) = x.as_chunks::<32>();
        for (i, xb) in xb.iter().enumerate() {
            let sum = match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: callers checked `level <= detected()`, so AVX2+FMA+F16C are present.
                SimdLevel::Avx2 => unsafe { avx2::quantize_block16(xb, &mut b.qs[i], &mut b.d[i]) },
                _ => quantize_block16_scalar(xb, &mut b.qs[i], &mut b.d[i]),
            };
            b.s[i] = b.d[i] * sum as f32;
        }
    }

    /// Quantize each row of `x` in two 8-bit parts, `x ≈ d₁·q₁ + d₂·q₂`: the usual 8-bit
    /// blocks, then the residual `x − d₁·q₁` quantized the same way. Rows come out as
    /// `[hi₀, lo₀, hi₁, …]`. Used by the K-quant kernels, built around `vpmaddubsw` on 8-bit
    /// activations: the residual brings their error to the 16-bit path's, and every weight
    /// block is unpacked once for both parts.
    fn quantize_split(&mut self, level: SimdLevel, x: &[f32], cols: usize) {
        let mut both = std::mem::take(&mut self.split);
        both.clear();
        for row in x.chunks_exact(cols) {
            self.quantize(level, row, cols);
            both.extend_from_slice(row);
            for (b, xb) in row.chunks_exact(32).enumerate() {
                let (d, q) = (self.b8.d[b], &self.b8.qs[b]);
                both.extend(xb.iter().zip(q).map(|(&x, &q)| x - d * f32::from(q)));
            }
        }
        self.quantize(level, &both, cols);
        self.split = both;
    }

    /// Quantize `x` in the forms that matrices of `formats` need.
    fn prepare(
        &mut self,
        level: SimdLevel,
        x: &[f32],
        cols: usize,
        formats: impl Iterator<Item = BlockFormat> + Clone,
    ) {
        if formats.clone().any(wide_format) {
            self.quantize16(level, x, cols);
        }
        if formats.clone().any(split_format) {
            self.quantize_split(level, x, cols);
        }
    }

    /// Activation row `i` in the form `format`'s kernels take.
    fn prepared(&self, format: BlockFormat, i: usize, nb: usize) -> Option<Prepared<'_>> {
        if wide_format(format) {
            Some(Prepared::Wide(self.b16.row(i, nb)))
        } else if split_format(format) {
            Some(Prepared::Split([
                self.b8.row(2 * i, nb),
                self.b8.row(2 * i + 1, nb),
            ]))
        } else {
            None
        }
    }
}

/// One activation row quantized for an integer kernel.
#[derive(Clone, Copy)]
enum Prepared<'a> {
    /// 16-bit blocks (the 32-element formats).
    Wide(ActRow<'a, i16>),
    /// Two 8-bit parts, high then residual (the K-quants).
    Split([ActRow<'a, i8>; 2]),
}

/// One block of [`Q8Act::quantize`]; returns `Σq`.
fn quantize_block_scalar(x: &[f32; 32], q: &mut [i8; 32], d: &mut f32) -> i32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    *d = amax / 127.0;
    let id = if *d != 0.0 { 1.0 / *d } else { 0.0 };
    let mut sum = 0;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
        sum += i32::from(*q);
    }
    sum
}

/// One block of [`Q8Act::quantize16`]; returns `Σq`.
fn quantize_block16_scalar(x: &[f32; 32], q: &mut [i16; 32], d: &mut f32) -> i32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    *d = amax / 32767.0;
    let id = if *d != 0.0 { 1.0 / *d } else { 0.0 };
    let mut sum = 0;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i16;
        sum += i32::from(*q);
    }
    sum
}

/// 32-element formats: their kernels take 16-bit activations.
fn wide_format(f: BlockFormat) -> bool {
    use BlockFormat::*;
    matches!(f, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
}

/// K-quants: their kernels take 8-bit activations in two parts.
fn split_format(f: BlockFormat) -> bool {
    use BlockFormat::*;
    matches!(f, Q4_K | Q5_K | Q6_K)
}

/// Formats whose matvec runs on 8-bit activations.
fn int8_format(f: BlockFormat) -> bool {
    wide_format(f) || split_format(f)
}

// ---------------------------------------------------------------------------
// Row-range kernels (dispatch)
// ---------------------------------------------------------------------------

/// `outs[i][r] = W[r]·act[i]` for the rows in `w` (K-quants, 8-bit activations).
fn int8_rows<const N: usize>(
    level: SimdLevel,
    format: BlockFormat,
    w: &[u8],
    row_bytes: usize,
    acts: &[ActRow; N],
    mut outs: [&mut [f32]; N],
) {
    debug_assert_eq!(w.len(), outs[0].len() * row_bytes);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        use BlockFormat::*;
        use avx2::*;
        // SAFETY: `level <= detected()` was asserted by the caller, so the CPU has
        // AVX2+FMA+F16C; `w` holds whole rows of `row_bytes` and each activation row has
        // cols/32 blocks, which is what the kernels index.
        unsafe {
            match format {
                Q4_K => int8_rows_avx2::<Q4_Kx, N>(w, row_bytes, acts, &mut outs),
                Q5_K => int8_rows_avx2::<Q5_Kx, N>(w, row_bytes, acts, &mut outs),
                Q6_K => int8_rows_avx2::<Q6_Kx, N>(w, row_bytes, acts, &mut outs),
                _ => unreachable!("not a K-quant"),
            }
        }
        return;
    }
    let _ = level;
    let dot: fn(&[u8], &ActRow) -> f32 = match format {
        BlockFormat::Q4_K => scalar::dot_q4_k,
        BlockFormat::Q5_K => scalar::dot_q5_k,
        BlockFormat::Q6_K => scalar::dot_q6_k,
        _ => unreachable!("not a K-quant"),
    };
    for (r, wr) in w.chunks_exact(row_bytes).enumerate() {
        for (out, a) in outs.iter_mut().zip(acts) {
            out[r] = dot(wr, a);
        }
    }
}

/// `outs[i][r] = W[r]·act[i]` for the rows in `w` (32-element formats, 16-bit activations).
fn wide_rows<const N: usize>(
    level: SimdLevel,
    format: BlockFormat,
    w: &[u8],
    row_bytes: usize,
    acts: &[ActRow<'_, i16>; N],
    mut outs: [&mut [f32]; N],
) {
    debug_assert_eq!(w.len(), outs[0].len() * row_bytes);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        use BlockFormat::*;
        use avx2::*;
        // SAFETY: as in `int8_rows`.
        unsafe {
            match format {
                Q4_0 => int8_rows_avx2::<Q4_0x, N>(w, row_bytes, acts, &mut outs),
                Q4_1 => int8_rows_avx2::<Q4_1x, N>(w, row_bytes, acts, &mut outs),
                Q5_0 => int8_rows_avx2::<Q5_0x, N>(w, row_bytes, acts, &mut outs),
                Q5_1 => int8_rows_avx2::<Q5_1x, N>(w, row_bytes, acts, &mut outs),
                Q8_0 => int8_rows_avx2::<Q8_0x, N>(w, row_bytes, acts, &mut outs),
                _ => unreachable!("not a 32-element format"),
            }
        }
        return;
    }
    let _ = level;
    let dot: fn(&[u8], &ActRow<i16>) -> f32 = match format {
        BlockFormat::Q4_0 => scalar::dot_q4_0,
        BlockFormat::Q4_1 => scalar::dot_q4_1,
        BlockFormat::Q5_0 => scalar::dot_q5_0,
        BlockFormat::Q5_1 => scalar::dot_q5_1,
        BlockFormat::Q8_0 => scalar::dot_q8_0,
        _ => unreachable!("not a 32-element format"),
    };
    for (r, wr) in w.chunks_exact(row_bytes).enumerate() {
        for (out, a) in outs.iter_mut().zip(acts) {
            out[r] = dot(wr, a);
        }
    }
}

/// `outs[i][r] = W[r]·x[i]` in f32 for the rows in `w` (float formats and the generic
/// decode-a-block path).
fn float_rows<const N: usize>(
    level: SimdLevel,
    format: BlockFormat,
    w: &[u8],
    row_bytes: usize,
    xs: &[&[f32]; N],
    mut outs: [&mut [f32]; N],
) {
    debug_assert_eq!(w.len(), outs[0].len() * row_bytes);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2 {
        // SAFETY: `level <= detected()` was asserted by the caller; `w` holds whole rows of
        // `row_bytes` = cols elements of `format`, and every `xs[i]` has cols values.
        unsafe { avx2::float_rows(format, w, row_bytes, xs, &mut outs) };
        return;
    }
    let _ = level;
    for (r, wr) in w.chunks_exact(row_bytes).enumerate() {
        match format {
            BlockFormat::F32 | BlockFormat::F16 | BlockFormat::BF16 => {
                for (out, x) in outs.iter_mut().zip(xs) {
                    out[r] = scalar::dot_float(format, wr, x);
                }
            }
            _ => {
                let mut acc = [0.0f32; N];
                let mut buf = [0.0f32; 256];
                let (bl, bb) = (format.block_len(), format.block_bytes());
                for (k, b) in wr.chunks_exact(bb).enumerate() {
                    format.dequantize(b, &mut buf[..bl]);
                    for (acc, x) in acc.iter_mut().zip(xs) {
                        *acc += scalar::dot_f32(&buf[..bl], &x[k * bl..(k + 1) * bl]);
                    }
                }
                for (out, acc) in outs.iter_mut().zip(acc) {
                    out[r] = acc;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Scalar kernels: the reference integer math
// ---------------------------------------------------------------------------

#[allow(clippy::needless_range_loop)] // index loops mirror the block layouts
mod scalar {
    //! Each block is unpacked to 32 signed bytes with plain loops, then dotted as integers:
    //! simple enough for LLVM to vectorize with the baseline instruction set (SSE2, NEON).
    use super::super::blocks::BlockFormat;
    use super::super::blocks::{bf16, f16, k4_scales_mins};
    use super::ActRow;

    #[inline(always)]
    fn idot<const L: usize, T: Copy + Into<i32>>(w: &[i8], x: &[T]) -> i32 {
        let (w, x) = (&w[..L], &x[..L]);
        let mut s = 0i32;
        for k in 0..L {
            s += i32::from(w[k]) * x[k].into();
        }
        s
    }

    /// A Q4/Q5 block's 32 nibbles in element order (low nibbles, then high), plus bit k of
    /// `qh` as bit 4 of element k, minus `off`.
    #[inline(always)]
    fn unpack32(qs: &[u8], qh: u32, off: i8) -> [i8; 32] {
        let mut w = [0i8; 32];
        for k in 0..16 {
            let h0 = ((qh >> k) & 1) as u8;
            let h1 = ((qh >> (k + 16)) & 1) as u8;
            w[k] = ((qs[k] & 15) | (h0 << 4)) as i8 - off;
            w[k + 16] = ((qs[k] >> 4) | (h1 << 4)) as i8 - off;
        }
        w
    }

    fn qh(b: &[u8]) -> u32 {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn dot_q8_0(w: &[u8], a: &ActRow<i16>) -> f32 {
        let mut sum = 0.0;
        for (j, b) in w.as_chunks::<34>().0.iter().enumerate() {
            let q: [i8; 32] = std::array::from_fn(|k| b[2 + k] as i8);
            let i = idot::<32, _>(&q, &a.qs[j]);
            sum += f16(b[0], b[1]) * a.d[j] * i as f32;
        }
        sum
    }

    pub fn dot_q4_0(w: &[u8], a: &ActRow<i16>) -> f32 {
        let mut sum = 0.0;
        for (j, b) in w.as_chunks::<18>().0.iter().enumerate() {
            let i = idot::<32, _>(&unpack32(&b[2..], 0, 8), &a.qs[j]);
            sum += f16(b[0], b[1]) * a.d[j] * i as f32;
        }
        sum
    }

    pub fn dot_q4_1(w: &[u8], a: &ActRow<i16>) -> f32 {
        let mut sum = 0.0;
        for (j, b) in w.as_chunks::<20>().0.iter().enumerate() {
            let i = idot::<32, _>(&unpack32(&b[4..], 0, 0), &a.qs[j]);
            sum += f16(b[0], b[1]) * a.d[j] * i as f32 + f16(b[2], b[3]) * a.s[j];
        }
        sum
    }

    pub fn dot_q5_0(w: &[u8], a: &ActRow<i16>) -> f32 {
        let mut sum = 0.0;
        for (j, b) in w.as_chunks::<22>().0.iter().enumerate() {
            let i = idot::<32, _>(&unpack32(&b[6..], qh(&b[2..]), 16), &a.qs[j]);
            sum += f16(b[0], b[1]) * a.d[j] * i as f32;
        }
        sum
    }

    pub fn dot_q5_1(w: &[u8], a: &ActRow<i16>) -> f32 {
        let mut sum = 0.0;
        for (j, b) in w.as_chunks::<24>().0.iter().enumerate() {
            let i = idot::<32, _>(&unpack32(&b[8..], qh(&b[4..]), 0), &a.qs[j]);
            sum += f16(b[0], b[1]) * a.d[j] * i as f32 + f16(b[2], b[3]) * a.s[j];
        }
        sum
    }

    /// Q4_K and Q5_K: sub-block `k` (32 elements) is `d·sc_k·q - dmin·m_k`.
    fn dot_k4<const B: usize, const Q5: bool>(w: &[u8], a: &ActRow) -> f32 {
        let mut sum = 0.0;
        for (blk, b) in w.as_chunks::<B>().0.iter().enumerate() {
            let d = f16(b[0], b[1]);
            let dmin = f16(b[2], b[3]);
            let (sc, mn) = k4_scales_mins(b[4..16].try_into().unwrap());
            let qs = if Q5 { &b[48..] } else { &b[16..] };
            for k in 0..8 {
                let (g, shift) = (k / 2, 4 * (k % 2));
                let mut q = [0i8; 32];
                for l in 0..32 {
                    let high = if Q5 { ((b[16 + l] >> k) & 1) << 4 } else { 0 };
                    q[l] = (((qs[32 * g + l] >> shift) & 15) | high) as i8;
                }
                let j = 8 * blk + k;
                let i = idot::<32, _>(&q, &a.qs[j]);
                sum += d * f32::from(sc[k]) * a.d[j] * i as f32 - dmin * f32::from(mn[k]) * a.s[j];
            }
        }
        sum
    }

    pub fn dot_q4_k(w: &[u8], a: &ActRow) -> f32 {
        dot_k4::<144, false>(w, a)
    }

    pub fn dot_q5_k(w: &[u8], a: &ActRow) -> f32 {
        dot_k4::<176, true>(w, a)
    }

    pub fn dot_q6_k(w: &[u8], a: &ActRow) -> f32 {
        let mut sum = 0.0;
        for (blk, b) in w.as_chunks::<210>().0.iter().enumerate() {
            let d = f16(b[208], b[209]);
            for n in 0..2 {
                let ql = &b[64 * n..64 * n + 64];
                let qh = &b[128 + 32 * n..128 + 32 * n + 32];
                let sc = &b[192 + 8 * n..192 + 8 * n + 8];
                for k in 0..4 {
                    let mut q = [0i8; 32];
                    for l in 0..32 {
                        let low = (ql[l + 32 * (k & 1)] >> (4 * (k >> 1))) & 15;
                        let high = (qh[l] >> (2 * k)) & 3;
                        q[l] = (low | (high << 4)) as i8 - 32;
                    }
                    let j = 8 * blk + 4 * n + k;
                    let x = &a.qs[j];
                    // Scales per 16 elements: sc[2k] for 0..16, sc[2k+1] for 16..32.
                    let i = i32::from(sc[2 * k] as i8) * idot::<16, _>(&q[..16], &x[..16])
                        + i32::from(sc[2 * k + 1] as i8) * idot::<16, _>(&q[16..], &x[16..]);
                    sum += d * a.d[j] * i as f32;
                }
            }
        }
        sum
    }

    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        // 8 partial sums: independent chains, and the vector kernels' summation shape.
        let mut acc = [0.0f32; 8];
        let (ac, at) = a.as_chunks::<8>();
        let (bc, bt) = b.as_chunks::<8>();
        for (x, y) in ac.iter().zip(bc) {
            for k in 0..8 {
                acc[k] += x[k] * y[k];
            }
        }
        let tail: f32 = at.iter().zip(bt).map(|(x, y)| x * y).sum();
        acc.iter().sum::<f32>() + tail
    }

    pub fn dot_float(format: BlockFormat, w: &[u8], x: &[f32]) -> f32 {
        match format {
            BlockFormat::F32 => dot_conv::<4>(w, x, f32::from_le_bytes),
            BlockFormat::F16 => dot_conv::<2>(w, x, |b| f16_fast(u16::from_le_bytes(b))),
            _ => dot_conv::<2>(w, x, |b| bf16(b[0], b[1])),
        }
    }

    /// `Σ conv(w[c])·x[c]` with 8 partial sums (independent chains, vectorizable).
    #[inline(always)]
    fn dot_conv<const E: usize>(w: &[u8], x: &[f32], conv: impl Fn([u8; E]) -> f32) -> f32 {
        let (w, _) = w.as_chunks::<E>();
        let (wc, wt) = w.as_chunks::<8>();
        let (xc, xt) = x.as_chunks::<8>();
        let mut acc = [0.0f32; 8];
        for (w, x) in wc.iter().zip(xc) {
            for k in 0..8 {
                acc[k] += conv(w[k]) * x[k];
            }
        }
        let tail: f32 = wt.iter().zip(xt).map(|(&w, x)| conv(w) * x).sum();
        acc.iter().sum::<f32>() + tail
    }

    /// Exact f16 → f32 without table or branch on the common path (the `half` crate checks
    /// for F16C on every call): move exponent and mantissa into f32 position and rescale by
    /// 2^112, which also normalizes subnormals exactly; infinities and NaNs keep their payload.
    #[inline(always)]
    pub fn f16_fast(h: u16) -> f32 {
        let sign = u32::from(h & 0x8000) << 16;
        let em = u32::from(h & 0x7fff);
        let v = if em >= 0x7c00 {
            f32::from_bits((em << 13) | 0x7f80_0000)
        } else {
            f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)
        };
        f32::from_bits(v.to_bits() | sign)
    }
}

// ---------------------------------------------------------------------------
// AVX2 kernels
// ---------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
#[allow(non_camel_case_types)]
mod avx2 {
    //! Every function here is compiled for AVX2+FMA+F16C and must only be called after
    //! [`super::simd::detected`] reported [`SimdLevel::Avx2`](super::SimdLevel::Avx2).
    use std::arch::x86_64::*;

    use super::super::blocks::{BlockFormat, k4_scales_mins};
    use super::ActRow;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The little-endian f16 at `p`, converted with F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn f16_at(p: *const u8) -> f32 {
        // SAFETY: the caller guarantees 2 readable bytes at `p`.
        let bits = unsafe { p.cast::<u16>().read_unaligned() };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load256(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes at `p`.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load128(p: *const u8) -> __m128i {
        // SAFETY: the caller guarantees 16 readable bytes at `p`.
        unsafe { _mm_loadu_si128(p.cast()) }
    }

    /// Activation block `j` of `a` (caller guarantees `j < a.qs.len()`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn act(a: &ActRow, j: usize) -> __m256i {
        debug_assert!(j < a.qs.len());
        // SAFETY: in bounds per the caller; `[i8; 32]` is 32 bytes.
        unsafe { load256(a.qs.as_ptr().add(j).cast()) }
    }

    /// 32 nibbles of a Q4/Q5 block in element order: low nibbles of the 16 bytes, then high.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 16 readable bytes at `p`.
        let q = unsafe { load128(p) };
        let v = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
        _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
    }

    /// Byte k = 0xFF where bit k of the 32-bit `qh` at `p` is set (ggml `bytes_from_bits_32`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 4 readable bytes at `p`.
        let x = unsafe { p.cast::<i32>().read_unaligned() };
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x), shuf);
        let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }

    /// Lane k of the result = sum of the 8 i32 lanes of `v[k]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn sum8x8(v: [__m256i; 8]) -> __m256i {
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        let a = _mm256_hadd_epi32(h01, h23);
        let b = _mm256_hadd_epi32(h45, h67);
        let lo = _mm256_permute2x128_si256::<0x20>(a, b);
        let hi = _mm256_permute2x128_si256::<0x31>(a, b);
        _mm256_add_epi32(lo, hi)
    }

    /// 8 bytes widened to 8 f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn u8x8_to_f32(b: [u8; 8]) -> __m256 {
        let v = _mm_cvtsi64_si128(i64::from_le_bytes(b));
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    /// Quantize one 32-value block like `quantize_block_scalar` (identical results); returns Σq.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn quantize_block(x: &[f32; 32], q: &mut [i8; 32], d: &mut f32) -> i32 {
        // SAFETY: `x` is 32 f32 = four 8-lane loads.
        let v: [__m256; 4] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) });
        let sign = _mm256_set1_ps(-0.0);
        let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
            _mm256_max_ps(m, _mm256_andnot_ps(sign, v))
        });
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let amax = _mm_cvtss_f32(m);
        *d = amax / 127.0;
        let id = _mm256_set1_ps(if *d != 0.0 { 1.0 / *d } else { 0.0 });
        let i: [__m256i; 4] = std::array::from_fn(|k| {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v[k], id),
            );
            _mm256_cvtps_epi32(r)
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let s = _mm_hadd_epi32(s, s);
        let s = _mm_hadd_epi32(s, s);
        // packs work within 128-bit lanes; the permute restores element order.
        let p16a = _mm256_packs_epi32(i[0], i[1]);
        let p16b = _mm256_packs_epi32(i[2], i[3]);
        let p8 = _mm256_packs_epi16(p16a, p16b);
        let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `q` is 32 bytes.
        unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), p8) };
        _mm_cvtsi128_si32(s)
    }

    /// Quantize one block to 16 bits like `quantize_block16_scalar` (identical results);
    /// returns Σq.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn quantize_block16(x: &[f32; 32], q: &mut [i16; 32], d: &mut f32) -> i32 {
        // SAFETY: `x` is 32 f32 = four 8-lane loads.
        let v: [__m256; 4] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) });
        let sign = _mm256_set1_ps(-0.0);
        let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
            _mm256_max_ps(m, _mm256_andnot_ps(sign, v))
        });
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let amax = _mm_cvtss_f32(m);
        *d = amax / 32767.0;
        let id = _mm256_set1_ps(if *d != 0.0 { 1.0 / *d } else { 0.0 });
        let i: [__m256i; 4] = std::array::from_fn(|k| {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v[k], id),
            );
            _mm256_cvtps_epi32(r)
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let s = _mm_hadd_epi32(s, s);
        let s = _mm_hadd_epi32(s, s);
        // packs work within 128-bit lanes; the permute restores element order.
        let p01 = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(i[0], i[1]));
        let p23 = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(i[2], i[3]));
        // SAFETY: `q` is 64 bytes.
        unsafe {
            _mm256_storeu_si256(q.as_mut_ptr().cast(), p01);
            _mm256_storeu_si256(q.as_mut_ptr().add(16).cast(), p23);
        }
        _mm_cvtsi128_si32(s)
    }

    /// A weight format with an integer AVX2 dot product.
    pub trait Int8Block {
        /// Bytes per weight block.
        const BB: usize;
        /// Activation blocks (of 32) per weight block.
        const SUB: usize;
        /// Activation element: `i16` for the 32-element formats, `i8` for the K-quants.
        type A: Copy;
        /// The weight block after the unpacking shared by all activation rows.
        type W: Copy;
        /// # Safety
        /// AVX2+FMA+F16C present; `BB` readable bytes at `p`.
        unsafe fn unpack(p: *const u8) -> Self::W;
        /// Add `W·a[j..j+SUB]` to the accumulators (`accm` gets scalar min terms).
        /// # Safety
        /// AVX2+FMA+F16C present; `j + SUB <= a.qs.len()`; `w` from `unpack` of a live block.
        unsafe fn dot(
            w: &Self::W,
            a: &ActRow<Self::A>,
            j: usize,
            acc: __m256,
            accm: f32,
        ) -> (__m256, f32);
    }

    /// 16-bit activation block `j` of `a` as two vectors of 16 lanes (caller guarantees
    /// `j < a.qs.len()`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn act16(a: &ActRow<i16>, j: usize) -> (__m256i, __m256i) {
        debug_assert!(j < a.qs.len());
        // SAFETY: in bounds per the caller; `[i16; 32]` is 64 bytes.
        unsafe {
            let p = a.qs.as_ptr().add(j).cast::<u8>();
            (load256(p), load256(p.add(32)))
        }
    }

    /// 32 signed bytes widened to two vectors of 16 i16 (elements 0..16, 16..32).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn widen_i8(w: __m256i) -> (__m256i, __m256i) {
        (
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(w)),
        )
    }

    /// 32 unsigned bytes widened to two vectors of 16 i16.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn widen_u8(w: __m256i) -> (__m256i, __m256i) {
        (
            _mm256_cvtepu8_epi16(_mm256_castsi256_si128(w)),
            _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(w)),
        )
    }

    /// A 32-element block widened to 16 bits: `d·Σw·x` (+ `m·Σx` with a min).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_wide<const MIN: bool>(
        (d, m, lo, hi): (f32, f32, __m256i, __m256i),
        a: &ActRow<i16>,
        j: usize,
        acc: __m256,
        accm: f32,
    ) -> (__m256, f32) {
        // SAFETY: forwarded caller guarantee `j < a.qs.len()`.
        let (xl, xh) = unsafe { act16(a, j) };
        let s = _mm256_add_epi32(_mm256_madd_epi16(lo, xl), _mm256_madd_epi16(hi, xh));
        // SAFETY: as above.
        let dx = unsafe { *a.d.get_unchecked(j) };
        let acc = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(s), acc);
        if MIN {
            // SAFETY: as above.
            (acc, m.mul_add(unsafe { *a.s.get_unchecked(j) }, accm))
        } else {
            (acc, accm)
        }
    }

    /// The 32-element formats: `unpack` widens the block's bytes (`$bytes(p)` gives `(d, m,
    /// 32 bytes)`, signed or not per `$widen`) to `(d, m, w[0..16], w[16..32])` in i16, and
    /// one `dot` serves them all (`$min`: whether the format has a min term).
    macro_rules! wide_block {
        ($name:ident, $bb:expr, $bytes:ident, $widen:ident, $min:expr) => {
            pub struct $name;
            impl Int8Block for $name {
                const BB: usize = $bb;
                const SUB: usize = 1;
                type A = i16;
                type W = (f32, f32, __m256i, __m256i);
                #[target_feature(enable = "avx2,fma,f16c")]
                #[inline]
                unsafe fn unpack(p: *const u8) -> Self::W {
                    // SAFETY: the caller guarantees `BB` readable bytes at `p`.
                    let (d, m, w) = unsafe { $bytes(p) };
                    let (lo, hi) = $widen(w);
                    (d, m, lo, hi)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                #[inline]
                unsafe fn dot(
                    w: &Self::W,
                    a: &ActRow<i16>,
                    j: usize,
                    acc: __m256,
                    m: f32,
                ) -> (__m256, f32) {
                    // SAFETY: forwarded caller guarantees.
                    unsafe { dot_wide::<$min>(*w, a, j, acc, m) }
                }
            }
        };
    }

    wide_block!(Q8_0x, 34, q8_0_bytes, widen_i8, false);
    wide_block!(Q4_0x, 18, q4_0_bytes, widen_i8, false);
    wide_block!(Q5_0x, 22, q5_0_bytes, widen_i8, false);
    wide_block!(Q4_1x, 20, q4_1_bytes, widen_u8, true);
    wide_block!(Q5_1x, 24, q5_1_bytes, widen_u8, true);

    /// Q8_0: f16 d, then 32 signed quants.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q8_0_bytes(p: *const u8) -> (f32, f32, __m256i) {
        // SAFETY: the caller guarantees 34 bytes at `p`.
        unsafe { (f16_at(p), 0.0, load256(p.add(2))) }
    }

    /// Q4_0: f16 d, then 16 bytes of nibbles; values `q - 8`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q4_0_bytes(p: *const u8) -> (f32, f32, __m256i) {
        // SAFETY: the caller guarantees 18 bytes at `p`.
        let (d, q) = unsafe { (f16_at(p), nibbles(p.add(2))) };
        (d, 0.0, _mm256_sub_epi8(q, _mm256_set1_epi8(8)))
    }

    /// Q5_0: f16 d, 4 bytes qh, 16 bytes of nibbles; values `q - 16`, as a signed byte: a
    /// clear fifth bit means "minus 16" = set the top nibble.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q5_0_bytes(p: *const u8) -> (f32, f32, __m256i) {
        // SAFETY: the caller guarantees 22 bytes at `p`.
        let (d, q, hb) = unsafe { (f16_at(p), nibbles(p.add(6)), bits_to_bytes(p.add(2))) };
        let w = _mm256_or_si256(q, _mm256_andnot_si256(hb, _mm256_set1_epi8(0xF0u8 as i8)));
        (d, 0.0, w)
    }

    /// Q4_1: f16 d, f16 m, 16 bytes of nibbles; values `d·q + m`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q4_1_bytes(p: *const u8) -> (f32, f32, __m256i) {
        // SAFETY: the caller guarantees 20 bytes at `p`.
        unsafe { (f16_at(p), f16_at(p.add(2)), nibbles(p.add(4))) }
    }

    /// Q5_1: f16 d, f16 m, 4 bytes qh, 16 bytes of nibbles.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q5_1_bytes(p: *const u8) -> (f32, f32, __m256i) {
        // SAFETY: the caller guarantees 24 bytes at `p`.
        let (d, m, q, hb) = unsafe {
            (
                f16_at(p),
                f16_at(p.add(2)),
                nibbles(p.add(8)),
                bits_to_bytes(p.add(4)),
            )
        };
        (
            d,
            m,
            _mm256_or_si256(q, _mm256_and_si256(hb, _mm256_set1_epi8(0x10))),
        )
    }

    /// Q4_K/Q5_K block header: `d·sc` and `dmin·m` per sub-block as vectors, and where the
    /// quants start.
    #[derive(Clone, Copy)]
    pub struct K4 {
        dsc: __m256,
        dmin: __m256,
        p: *const u8,
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn k4_header(p: *const u8) -> K4 {
        // SAFETY: the caller guarantees a whole Q4_K/Q5_K block at `p` (16-byte header).
        let (d, dmin, sc) = unsafe { (f16_at(p), f16_at(p.add(2)), &*p.add(4).cast::<[u8; 12]>()) };
        let (sc, mn) = k4_scales_mins(sc);
        K4 {
            dsc: _mm256_mul_ps(_mm256_set1_ps(d), u8x8_to_f32(sc)),
            dmin: _mm256_mul_ps(_mm256_set1_ps(dmin), u8x8_to_f32(mn)),
            p,
        }
    }

    /// Finish a K4 block: `Σ_k d·sc_k·dx_k·isum_k - dmin·m_k·sx_k`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn k4_finish(w: &K4, v: [__m256i; 8], a: &ActRow, j: usize, acc: __m256) -> __m256 {
        debug_assert!(j + 8 <= a.d.len());
        // SAFETY: `j + 8 <= len` per the caller.
        let (dx, sx) = unsafe {
            (
                _mm256_loadu_ps(a.d.as_ptr().add(j)),
                _mm256_loadu_ps(a.s.as_ptr().add(j)),
            )
        };
        let isum = _mm256_cvtepi32_ps(sum8x8(v));
        let acc = _mm256_fmadd_ps(_mm256_mul_ps(w.dsc, dx), isum, acc);
        _mm256_fnmadd_ps(w.dmin, sx, acc)
    }

    pub struct Q4_Kx;
    impl Int8Block for Q4_Kx {
        const BB: usize = 144;
        const SUB: usize = 8;
        type A = i8;
        type W = K4;
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn unpack(p: *const u8) -> K4 {
            // SAFETY: forwarded caller guarantee (144 bytes at `p`).
            unsafe { k4_header(p) }
        }
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn dot(w: &K4, a: &ActRow, j: usize, acc: __m256, m: f32) -> (__m256, f32) {
            let low = _mm256_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            let mut v = [_mm256_setzero_si256(); 8];
            for g in 0..4 {
                // SAFETY: quants are bytes 16..144 of the block; activation blocks j..j+8
                // exist per the caller.
                let (q, x0, x1) = unsafe {
                    (
                        load256(w.p.add(16 + 32 * g)),
                        act(a, j + 2 * g),
                        act(a, j + 2 * g + 1),
                    )
                };
                let lo = _mm256_and_si256(q, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
                v[2 * g] = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), ones);
                v[2 * g + 1] = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), ones);
            }
            // SAFETY: as above.
            (unsafe { k4_finish(w, v, a, j, acc) }, m)
        }
    }

    pub struct Q5_Kx;
    impl Int8Block for Q5_Kx {
        const BB: usize = 176;
        const SUB: usize = 8;
        type A = i8;
        type W = K4;
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn unpack(p: *const u8) -> K4 {
            // SAFETY: forwarded caller guarantee (176 bytes at `p`).
            unsafe { k4_header(p) }
        }
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn dot(w: &K4, a: &ActRow, j: usize, acc: __m256, m: f32) -> (__m256, f32) {
            let low = _mm256_set1_epi8(0x0F);
            let bit4 = _mm256_set1_epi8(0x10);
            let ones = _mm256_set1_epi16(1);
            // SAFETY: qh is bytes 16..48 of the block.
            let mut qh = unsafe { load256(w.p.add(16)) };
            let mut v = [_mm256_setzero_si256(); 8];
            for g in 0..4 {
                // SAFETY: quants are bytes 48..176 of the block; activation blocks j..j+8
                // exist per the caller.
                let (q, x0, x1) = unsafe {
                    (
                        load256(w.p.add(48 + 32 * g)),
                        act(a, j + 2 * g),
                        act(a, j + 2 * g + 1),
                    )
                };
                // Bit 2g of qh is bit 4 of the low-nibble element, bit 2g+1 of the high one.
                let h0 = _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bit4);
                let h1 = _mm256_and_si256(_mm256_slli_epi16::<3>(qh), bit4);
                qh = _mm256_srli_epi16::<2>(qh);
                let lo = _mm256_or_si256(_mm256_and_si256(q, low), h0);
                let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q), low), h1);
                v[2 * g] = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), ones);
                v[2 * g + 1] = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), ones);
            }
            // SAFETY: as above.
            (unsafe { k4_finish(w, v, a, j, acc) }, m)
        }
    }

    #[derive(Clone, Copy)]
    pub struct K6 {
        d: f32,
        /// The 16 signed scales.
        sc: __m128i,
        p: *const u8,
    }

    pub struct Q6_Kx;
    impl Int8Block for Q6_Kx {
        const BB: usize = 210;
        const SUB: usize = 8;
        type A = i8;
        type W = K6;
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn unpack(p: *const u8) -> K6 {
            // SAFETY: 210 bytes at `p`: scales at 192..208, f16 d at 208.
            unsafe {
                K6 {
                    d: f16_at(p.add(208)),
                    sc: load128(p.add(192)),
                    p,
                }
            }
        }
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn dot(w: &K6, a: &ActRow, j: usize, acc: __m256, m: f32) -> (__m256, f32) {
            let low = _mm256_set1_epi8(0x0F);
            let two = _mm256_set1_epi8(0x30);
            let m32 = _mm256_set1_epi8(32);
            let mut v = [_mm256_setzero_si256(); 8];
            for n in 0..2 {
                // SAFETY: ql is bytes 0..128, qh 128..192 of the block.
                let (ql0, ql1, qh) = unsafe {
                    (
                        load256(w.p.add(64 * n)),
                        load256(w.p.add(64 * n + 32)),
                        load256(w.p.add(128 + 32 * n)),
                    )
                };
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, low),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), two),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, low),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), two),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                        _mm256_and_si256(qh, two),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), two),
                    ),
                ];
                for (k, &q) in q.iter().enumerate() {
                    // SAFETY: activation blocks j..j+8 exist per the caller.
                    let x = unsafe { act(a, j + 4 * n + k) };
                    let p =
                        _mm256_sub_epi16(_mm256_maddubs_epi16(q, x), _mm256_maddubs_epi16(m32, x));
                    // Scales 8n+2k (elements 0..16) and 8n+2k+1 (16..32) as i16 halves.
                    let s = (8 * n + 2 * k) as i64 * 0x0101_0101_0101_0101;
                    let mask = _mm_set_epi64x(s + 0x0101_0101_0101_0101, s);
                    let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(w.sc, mask));
                    v[4 * n + k] = _mm256_madd_epi16(p, sc);
                }
            }
            debug_assert!(j + 8 <= a.d.len());
            // SAFETY: `j + 8 <= len` per the caller.
            let dx = unsafe { _mm256_loadu_ps(a.d.as_ptr().add(j)) };
            let isum = _mm256_cvtepi32_ps(sum8x8(v));
            (
                _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(w.d), dx), isum, acc),
                m,
            )
        }
    }

    /// Bytes ahead of the weight block being read that [`int8_rows_avx2`] prefetches.
    const PREFETCH: usize = 4096;

    /// `outs[i][r] = W[r]·acts[i]` for the rows in `w`.
    ///
    /// # Safety
    /// AVX2+FMA+F16C present; `w.len() == outs[i].len() * row_bytes`, `row_bytes` a multiple
    /// of `F::BB`, and every activation row has `row_bytes / F::BB * F::SUB` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn int8_rows_avx2<F: Int8Block, const N: usize>(
        w: &[u8],
        row_bytes: usize,
        acts: &[ActRow<F::A>; N],
        outs: &mut [&mut [f32]; N],
    ) {
        let nb = row_bytes / F::BB;
        for a in acts {
            assert!(a.qs.len() >= nb * F::SUB && a.d.len() >= nb * F::SUB);
            assert!(a.s.len() >= nb * F::SUB);
        }
        for (r, row) in w.chunks_exact(row_bytes).enumerate() {
            let p = row.as_ptr();
            // SAFETY (all block accesses below): block b < nb lies inside `row`, and its
            // activation blocks b*SUB..(b+1)*SUB exist (asserted above).
            // Two accumulator chains per activation row (even and odd blocks) so FMA
            // latency does not bound the loop; the same shape for every N, so a row's
            // result does not depend on how many rows share the pass.
            let mut acc0 = [_mm256_setzero_ps(); N];
            let mut acc1 = [_mm256_setzero_ps(); N];
            let mut m0 = [0.0f32; N];
            let mut m1 = [0.0f32; N];
            let mut b = 0;
            while b + 2 <= nb {
                unsafe {
                    // Software prefetch well ahead of the stream: with both cores streaming
                    // weights, the hardware prefetcher alone leaves decode ~7% slower
                    // (measured 1-8 KiB ahead, interleaved runs; 4 KiB was best). Past the
                    // end of the rows it is a harmless no-op (prefetches never fault).
                    _mm_prefetch::<_MM_HINT_T0>(p.add(b * F::BB).wrapping_add(PREFETCH).cast());
                    let w0 = F::unpack(p.add(b * F::BB));
                    for i in 0..N {
                        (acc0[i], m0[i]) = F::dot(&w0, &acts[i], b * F::SUB, acc0[i], m0[i]);
                    }
                    let w1 = F::unpack(p.add((b + 1) * F::BB));
                    for i in 0..N {
                        let j = (b + 1) * F::SUB;
                        (acc1[i], m1[i]) = F::dot(&w1, &acts[i], j, acc1[i], m1[i]);
                    }
                }
                b += 2;
            }
            if b < nb {
                unsafe {
                    let w0 = F::unpack(p.add(b * F::BB));
                    for i in 0..N {
                        (acc0[i], m0[i]) = F::dot(&w0, &acts[i], b * F::SUB, acc0[i], m0[i]);
                    }
                }
            }
            for i in 0..N {
                outs[i][r] = hsum(_mm256_add_ps(acc0[i], acc1[i])) + (m0[i] + m1[i]);
            }
        }
    }

    /// Store 32 signed bytes times `d` as f32 (`f32::from(q) * d`, as the scalar decoders).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn store_scaled(q: __m256i, d: __m256, out: *mut f32) {
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256::<1>(q);
        let parts = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
        for (k, p) in parts.into_iter().enumerate() {
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(p)), d);
            // SAFETY: the caller guarantees 32 writable f32 at `out`.
            unsafe { _mm256_storeu_ps(out.add(8 * k), v) };
        }
    }

    /// Store 32 unsigned bytes as `f32::from(q) * d + m` (Q4_1/Q5_1), or `d * q - m` with
    /// `m` negated by the caller's choice of `sub` (Q4_K/Q5_K), matching the scalar rounding.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn store_affine(q: __m256i, d: __m256, m: __m256, sub: bool, out: *mut f32) {
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256::<1>(q);
        let parts = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
        for (k, p) in parts.into_iter().enumerate() {
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(p)), d);
            let v = if sub {
                _mm256_sub_ps(v, m)
            } else {
                _mm256_add_ps(v, m)
            };
            // SAFETY: the caller guarantees 32 writable f32 at `out`.
            unsafe { _mm256_storeu_ps(out.add(8 * k), v) };
        }
    }

    /// Vector [`BlockFormat::dequantize`], bit-identical to it; `false` (nothing written) for
    /// formats without a vector decoder.
    ///
    /// # Safety
    /// AVX2+FMA+F16C present.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dequantize(format: BlockFormat, src: &[u8], dst: &mut [f32]) -> bool {
        use BlockFormat::*;
        let (bl, bb) = (format.block_len(), format.block_bytes());
        let nb = dst.len() / bl;
        assert!(
            dst.len().is_multiple_of(bl) && src.len() == nb * bb,
            "{}: {} bytes cannot decode into {} elements",
            format.name(),
            src.len(),
            dst.len()
        );
        let (p, out) = (src.as_ptr(), dst.as_mut_ptr());
        // SAFETY (every access below): block b < nb occupies src[b*bb..(b+1)*bb] and
        // dst[b*bl..(b+1)*bl], in bounds by the assertion above.
        match format {
            // SAFETY: `src` holds dst.len() elements (asserted above).
            F32 => unsafe { convert::<E_F32>(format, src, dst) },
            F16 => unsafe { convert::<E_F16>(format, src, dst) },
            BF16 => unsafe { convert::<E_BF16>(format, src, dst) },
            Q8_0 | Q4_0 | Q5_0 => {
                for b in 0..nb {
                    unsafe {
                        let (d, _, w) = match format {
                            Q8_0 => q8_0_bytes(p.add(b * bb)),
                            Q4_0 => q4_0_bytes(p.add(b * bb)),
                            _ => q5_0_bytes(p.add(b * bb)),
                        };
                        store_scaled(w, _mm256_set1_ps(d), out.add(b * 32));
                    }
                }
            }
            Q4_1 | Q5_1 => {
                for b in 0..nb {
                    unsafe {
                        let (d, m, q) = if format == Q4_1 {
                            q4_1_bytes(p.add(b * bb))
                        } else {
                            q5_1_bytes(p.add(b * bb))
                        };
                        let (d, m) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
                        store_affine(q, d, m, false, out.add(b * 32));
                    }
                }
            }
            Q4_K | Q5_K => {
                let low = _mm256_set1_epi8(0x0F);
                let bit4 = _mm256_set1_epi8(0x10);
                for b in 0..nb {
                    let bp = unsafe { p.add(b * bb) };
                    let o = unsafe { out.add(b * 256) };
                    let (d, dmin, sc) = unsafe {
                        (
                            f16_at(bp),
                            f16_at(bp.add(2)),
                            &*bp.add(4).cast::<[u8; 12]>(),
                        )
                    };
                    let (sc, mn) = k4_scales_mins(sc);
                    let q5 = format == Q5_K;
                    let mut qh = if q5 {
                        unsafe { load256(bp.add(16)) }
                    } else {
                        low
                    };
                    for g in 0..4 {
                        let q = unsafe { load256(bp.add(if q5 { 48 } else { 16 } + 32 * g)) };
                        let mut lo = _mm256_and_si256(q, low);
                        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
                        if q5 {
                            lo = _mm256_or_si256(
                                lo,
                                _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bit4),
                            );
                            hi = _mm256_or_si256(
                                hi,
                                _mm256_and_si256(_mm256_slli_epi16::<3>(qh), bit4),
                            );
                            qh = _mm256_srli_epi16::<2>(qh);
                        }
                        let (k0, k1) = (2 * g, 2 * g + 1);
                        let d0 = _mm256_set1_ps(d * f32::from(sc[k0]));
                        let m0 = _mm256_set1_ps(dmin * f32::from(mn[k0]));
                        let d1 = _mm256_set1_ps(d * f32::from(sc[k1]));
                        let m1 = _mm256_set1_ps(dmin * f32::from(mn[k1]));
                        unsafe {
                            store_affine(lo, d0, m0, true, o.add(64 * g));
                            store_affine(hi, d1, m1, true, o.add(64 * g + 32));
                        }
                    }
                }
            }
            Q6_K => {
                let low = _mm256_set1_epi8(0x0F);
                let two = _mm256_set1_epi8(0x30);
                let m32 = _mm256_set1_epi8(32);
                for b in 0..nb {
                    let bp = unsafe { p.add(b * bb) };
                    let o = unsafe { out.add(b * 256) };
                    let d = unsafe { f16_at(bp.add(208)) };
                    let sc = unsafe { std::slice::from_raw_parts(bp.add(192), 16) };
                    for n in 0..2 {
                        let (ql0, ql1, qh) = unsafe {
                            (
                                load256(bp.add(64 * n)),
                                load256(bp.add(64 * n + 32)),
                                load256(bp.add(128 + 32 * n)),
                            )
                        };
                        let q = [
                            _mm256_or_si256(
                                _mm256_and_si256(ql0, low),
                                _mm256_and_si256(_mm256_slli_epi16::<4>(qh), two),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(ql1, low),
                                _mm256_and_si256(_mm256_slli_epi16::<2>(qh), two),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                                _mm256_and_si256(qh, two),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), two),
                            ),
                        ];
                        for (k, q) in q.into_iter().enumerate() {
                            // q - 32 as signed bytes; elements 0..16 and 16..32 have their own
                            // scale: `d * sc * q`, multiplied in the scalar decoder's order.
                            let q = _mm256_sub_epi8(q, m32);
                            let s0 = d * f32::from(sc[8 * n + 2 * k] as i8);
                            let s1 = d * f32::from(sc[8 * n + 2 * k + 1] as i8);
                            let lo = _mm256_castsi256_si128(q);
                            let hi = _mm256_extracti128_si256::<1>(q);
                            let parts = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
                            for (h, part) in parts.into_iter().enumerate() {
                                let s = _mm256_set1_ps(if h < 2 { s0 } else { s1 });
                                let v = _mm256_mul_ps(
                                    s,
                                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part)),
                                );
                                unsafe { _mm256_storeu_ps(o.add(128 * n + 32 * k + 8 * h), v) };
                            }
                        }
                    }
                }
            }
            Q2_K | Q3_K | Q8_K => return false,
        }
        true
    }

    /// Float element encodings as const parameters, so the per-8-element load is chosen at
    /// compile time rather than matched in the inner loop.
    const E_F32: u8 = 0;
    const E_F16: u8 = 1;
    const E_BF16: u8 = 2;

    /// 8 weights of encoding `E` at element `c` of the row at `p`, as f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8<const E: u8>(p: *const u8, c: usize) -> __m256 {
        // SAFETY: the caller guarantees elements c..c+8 exist.
        unsafe {
            match E {
                E_F32 => _mm256_loadu_ps(p.add(4 * c).cast()),
                E_F16 => _mm256_cvtph_ps(load128(p.add(2 * c))),
                _ => {
                    let h = _mm256_cvtepu16_epi32(load128(p.add(2 * c)));
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
                }
            }
        }
    }

    /// The const encoding of a float format.
    fn encoding(format: BlockFormat) -> Option<u8> {
        match format {
            BlockFormat::F32 => Some(E_F32),
            BlockFormat::F16 => Some(E_F16),
            BlockFormat::BF16 => Some(E_BF16),
            _ => None,
        }
    }

    /// Decode a run of encoding `E` (element count = `dst.len()`).
    ///
    /// # Safety
    /// AVX2+FMA+F16C present; `src` holds `dst.len()` elements of encoding `E`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn convert<const E: u8>(format: BlockFormat, src: &[u8], dst: &mut [f32]) {
        let mut c = 0;
        while c + 8 <= dst.len() {
            // SAFETY: elements c..c+8 exist in both.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(c), load8::<E>(src.as_ptr(), c)) };
            c += 8;
        }
        let es = format.block_bytes();
        format.dequantize(&src[c * es..], &mut dst[c..]);
    }

    /// `Σ W[c]·x[c]` for a float-format row at `p` with `x.len()` elements.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_float_row<const E: u8>(p: *const u8, x: &[f32]) -> f32 {
        let n = x.len();
        let xp = x.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        // SAFETY (loads): c + 32 <= n (resp. c + 8) elements exist in both rows.
        while c + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                unsafe {
                    let w = load8::<E>(p, c + 8 * k);
                    *acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(c + 8 * k)), *acc);
                }
            }
            c += 32;
        }
        while c + 8 <= n {
            unsafe {
                let w = load8::<E>(p, c);
                acc[0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(c)), acc[0]);
            }
            c += 8;
        }
        let mut sum = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        let es = if E == E_F32 { 4 } else { 2 };
        for (c, &x) in x.iter().enumerate().skip(c) {
            // SAFETY: element c < n exists.
            let b = unsafe { std::slice::from_raw_parts(p.add(c * es), es) };
            let w = match E {
                E_F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                E_F16 => super::super::blocks::f16(b[0], b[1]),
                _ => super::super::blocks::bf16(b[0], b[1]),
            };
            sum += w * x;
        }
        sum
    }

    /// `Σ a·b` over two f32 slices of equal length.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len());
        // SAFETY: the bytes of `a` are `a.len()` little-endian f32 (x86 is little-endian).
        unsafe {
            let p = a.as_ptr().cast::<u8>();
            dot_float_row::<E_F32>(p, &b[..a.len()])
        }
    }

    /// AVX2 counterpart of the scalar `float_rows`.
    ///
    /// # Safety
    /// AVX2+FMA+F16C present; `w` holds whole rows of `row_bytes` bytes of `format`, each
    /// `xs[i].len()` elements long.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn float_rows<const N: usize>(
        format: BlockFormat,
        w: &[u8],
        row_bytes: usize,
        xs: &[&[f32]; N],
        outs: &mut [&mut [f32]; N],
    ) {
        for x in xs {
            assert_eq!(format.row_bytes(x.len()), Some(row_bytes));
        }
        // SAFETY (calls): every row has exactly `xs[i].len()` elements (asserted above).
        match encoding(format) {
            Some(E_F32) => unsafe { float_rows_e::<E_F32, N>(w, row_bytes, xs, outs) },
            Some(E_F16) => unsafe { float_rows_e::<E_F16, N>(w, row_bytes, xs, outs) },
            Some(_) => unsafe { float_rows_e::<E_BF16, N>(w, row_bytes, xs, outs) },
            None => {
                let (bl, bb) = (format.block_len(), format.block_bytes());
                let mut buf = [0.0f32; 256];
                for (r, row) in w.chunks_exact(row_bytes).enumerate() {
                    let mut acc = [0.0f32; N];
                    for (k, b) in row.chunks_exact(bb).enumerate() {
                        format.dequantize(b, &mut buf[..bl]);
                        for i in 0..N {
                            acc[i] += dot_f32(&buf[..bl], &xs[i][k * bl..(k + 1) * bl]);
                        }
                    }
                    for i in 0..N {
                        outs[i][r] = acc[i];
                    }
                }
            }
        }
    }

    /// # Safety
    /// As [`float_rows`], for rows of encoding `E`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn float_rows_e<const E: u8, const N: usize>(
        w: &[u8],
        row_bytes: usize,
        xs: &[&[f32]; N],
        outs: &mut [&mut [f32]; N],
    ) {
        for (r, row) in w.chunks_exact(row_bytes).enumerate() {
            for i in 0..N {
                // SAFETY: `row` has `xs[i].len()` elements per the caller.
                outs[i][r] = unsafe { dot_float_row::<E>(row.as_ptr(), xs[i]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::kernels::test_rng::Rng;

    fn put_f16(b: &mut [u8], at: usize, x: f32) {
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(x).to_bits().to_le_bytes());
    }

    /// Random bytes for `n` blocks, with every scale a sensible finite value (~1e-2) and float
    /// elements in [-1, 1], so no NaN/inf patterns and products of realistic size.
    fn random_blocks(format: BlockFormat, n: usize, rng: &mut Rng) -> Vec<u8> {
        use BlockFormat::*;
        let bb = format.block_bytes();
        let mut out = Vec::with_capacity(n * bb);
        for _ in 0..n {
            let mut b: Vec<u8> = (0..bb).map(|_| rng.next() as u8).collect();
            let scale = |rng: &mut Rng| 0.01 * rng.unit();
            match format {
                F32 => b.copy_from_slice(&rng.unit().to_le_bytes()),
                F16 => put_f16(&mut b, 0, rng.unit()),
                BF16 => {
                    b.copy_from_slice(&half::bf16::from_f32(rng.unit()).to_bits().to_le_bytes())
                }
                Q4_0 | Q5_0 | Q8_0 => put_f16(&mut b, 0, scale(rng)),
                Q4_1 | Q5_1 | Q4_K | Q5_K => {
                    put_f16(&mut b, 0, scale(rng));
                    put_f16(&mut b, 2, scale(rng));
                }
                Q2_K => {
                    put_f16(&mut b, 80, scale(rng));
                    put_f16(&mut b, 82, scale(rng));
                }
                Q3_K => put_f16(&mut b, 108, scale(rng)),
                Q6_K => put_f16(&mut b, 208, scale(rng)),
                Q8_K => b[0..4].copy_from_slice(&scale(rng).to_le_bytes()),
            }
            out.extend_from_slice(&b);
        }
        out
    }

    fn random_matrix(format: BlockFormat, rows: usize, cols: usize, seed: u64) -> QMatrix {
        let mut rng = Rng(seed);
        let n = rows * cols / format.block_len();
        let bytes = random_blocks(format, n, &mut rng);
        QMatrix::new(format, rows, cols, WeightBytes::Owned(bytes)).unwrap()
    }

    /// Activations with a spread of magnitudes and a few outliers, like real hidden states.
    fn random_x(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        (0..len)
            .map(|i| {
                let v = rng.unit();
                if i % 97 == 13 { 20.0 * v } else { v }
            })
            .collect()
    }

    /// The matrix through the reference decoders of `blocks`.
    fn dense(m: &QMatrix) -> Vec<f32> {
        let mut w = vec![0.0; m.rows() * m.cols()];
        m.format().dequantize(&m.data, &mut w);
        w
    }

    /// Per output: the exact product (f64), `Σ|w·x|` (scale of f32 rounding error), and the
    /// bound on the activation-quantization error `Σ |w_c|·d_x(c)/2`.
    fn reference(m: &QMatrix, w: &[f32], x: &[f32], n: usize) -> Vec<(f64, f64, f64)> {
        let c = m.cols();
        let mut out = Vec::new();
        for i in 0..n {
            let x = &x[i * c..(i + 1) * c];
            let dx: Vec<f64> = if c.is_multiple_of(32) {
                x.chunks(32)
                    .map(|b| b.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64 / 127.0)
                    .collect()
            } else {
                vec![0.0; c.div_ceil(32)]
            };
            for r in 0..m.rows() {
                let wr = &w[r * c..(r + 1) * c];
                let (mut y, mut abs, mut q) = (0.0f64, 0.0f64, 0.0f64);
                for k in 0..c {
                    let p = wr[k] as f64 * x[k] as f64;
                    y += p;
                    abs += p.abs();
                    q += (wr[k] as f64).abs() * dx[k / 32] / 2.0;
                }
                out.push((y, abs, q));
            }
        }
        out
    }

    /// Check `y` (`[n, rows]`) against the reference. `int8`: the activations were quantized.
    fn check(what: &str, y: &[f32], reference: &[(f64, f64, f64)], int8: bool) {
        assert_eq!(y.len(), reference.len());
        for (k, (&y, &(want, abs, q))) in y.iter().zip(reference).enumerate() {
            // f32 accumulation over at most a few thousand terms: 1e-5 of Σ|w·x| is ample
            // (and what "1e-4 relative" means for sums that cancel).
            let tol = if int8 {
                q * 1.001 + 1e-5 * (abs + q)
            } else {
                1e-5 * abs
            } + 1e-30;
            let err = (y as f64 - want).abs();
            assert!(
                err <= tol,
                "{what}: output {k}: got {y}, want {want}, err {err:e} > {tol:e}"
            );
        }
    }

    fn col_choices(format: BlockFormat) -> Vec<usize> {
        match format.block_len() {
            1 => vec![1, 3, 17, 640, 2048],
            32 => vec![32, 96, 640, 2048],
            _ => vec![256, 768],
        }
    }

    fn uses_int8(format: BlockFormat, n: usize) -> bool {
        int8_format(format) && n <= small_n_limit(format)
    }

    #[test]
    fn matvec_every_format_level_and_shape() {
        let levels = simd::available_levels();
        for (fi, format) in BlockFormat::ALL.into_iter().enumerate() {
            for cols in col_choices(format) {
                for rows in [1, 3, 17, 257] {
                    let m = random_matrix(format, rows, cols, 1 + fi as u64 * 1000 + rows as u64);
                    let w = dense(&m);
                    let x = random_x(cols, rows as u64 + cols as u64);
                    let want = reference(&m, &w, &x, 1);
                    let mut ys = Vec::new();
                    for &level in &levels {
                        let mut y = vec![f32::NAN; rows];
                        m.matvec_at(level, &x, &mut y);
                        let what = format!("{format} [{rows}x{cols}] matvec {level}");
                        check(&what, &y, &want, int8_format(format));
                        ys.push(y);
                    }
                    // Same integer math: levels agree far tighter than the bound above.
                    for y in &ys[1..] {
                        for (k, (a, b)) in ys[0].iter().zip(y).enumerate() {
                            let tol = 1e-5 * (want[k].1 + want[k].2) + 1e-30;
                            assert!(
                                ((a - b).abs() as f64) <= tol,
                                "{format} [{rows}x{cols}] row {k}: scalar {a} vs simd {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_every_format_level_and_shape() {
        let levels = simd::available_levels();
        for (fi, format) in BlockFormat::ALL.into_iter().enumerate() {
            let cols_list = match format.block_len() {
                1 => vec![3, 640],
                32 => vec![32, 640],
                _ => vec![256, 768],
            };
            for cols in cols_list {
                for rows in [1, 17, 33, 257] {
                    let m = random_matrix(format, rows, cols, 7 + fi as u64 * 977 + cols as u64);
                    let w = dense(&m);
                    // Both sides of each format's small-n limit, and gemm tails (tiles of 16
                    // rows for 33 rows; the long matrix only with the cheaper n, to keep
                    // debug-build test time down).
                    let ns: &[usize] = if rows > 100 {
                        &[1, 3, 5, 17]
                    } else {
                        &[1, 2, 3, 4, 5, 8, 9, 16, 17, 64, 130]
                    };
                    for &n in ns {
                        let x = random_x(n * cols, n as u64 * 31 + rows as u64);
                        let want = reference(&m, &w, &x, n);
                        for &level in &levels {
                            let mut y = vec![f32::NAN; n * rows];
                            m.matmul_at(level, &x, n, &mut y);
                            let what = format!("{format} [{rows}x{cols}] matmul n={n} {level}");
                            check(&what, &y, &want, uses_int8(format, n));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_rows_equal_matvec_for_small_n() {
        // Small n shares the matvec kernels: bit-for-bit the same per row.
        for format in [
            BlockFormat::Q4_K,
            BlockFormat::Q5_0,
            BlockFormat::Q6_K,
            BlockFormat::F16,
        ] {
            let cols = if format.block_len() == 256 { 512 } else { 640 };
            let rows = 100;
            let m = random_matrix(format, rows, cols, 5);
            for level in simd::available_levels() {
                for n in [1, 2, 3, 4, 5, 7, small_n_limit(format)] {
                    let x = random_x(n * cols, 9);
                    let mut y = vec![0.0; n * rows];
                    m.matmul_at(level, &x, n, &mut y);
                    for i in 0..n {
                        let mut yi = vec![0.0; rows];
                        m.matvec_at(level, &x[i * cols..(i + 1) * cols], &mut yi);
                        assert_eq!(
                            yi,
                            y[i * rows..(i + 1) * rows],
                            "{format} {level} n={n} i={i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn activation_quantization_is_identical_across_levels() {
        let mut x = random_x(32 * 64, 3);
        // Exact ties at the rounding boundary, zeros, and an all-zero block.
        for (k, v) in x[..32].iter_mut().enumerate() {
            *v = k as f32 - 15.5;
        }
        x[32..64].iter_mut().for_each(|v| *v = 0.0);
        x[64] = -3.0;
        let mut acts = Vec::new();
        for level in simd::available_levels() {
            let mut a = Q8Act::default();
            a.quantize(level, &x, 32 * 64);
            a.quantize16(level, &x, 32 * 64);
            acts.push(a);
        }
        for a in &acts[1..] {
            assert_eq!(a.b8.qs, acts[0].b8.qs);
            assert_eq!(a.b8.d, acts[0].b8.d);
            assert_eq!(a.b8.s, acts[0].b8.s);
            assert_eq!(a.b16.qs, acts[0].b16.qs);
            assert_eq!(a.b16.d, acts[0].b16.d);
            assert_eq!(a.b16.s, acts[0].b16.s);
        }
        let a = &acts[0];
        assert!(a.b8.qs[1].iter().all(|&q| q == 0) && a.b8.d[1] == 0.0);
        assert!(a.b16.qs[1].iter().all(|&q| q == 0) && a.b16.d[1] == 0.0);
        // x = d·q within d/2 everywhere, and the extreme value maps to ±127 / ±32767.
        for (j, xb) in x.chunks(32).enumerate() {
            for (k, &v) in xb.iter().enumerate() {
                let err = (v - a.b8.d[j] * f32::from(a.b8.qs[j][k])).abs();
                assert!(err <= a.b8.d[j] * 0.5001 + 1e-7, "block {j} elem {k}");
                let err = (v - a.b16.d[j] * f32::from(a.b16.qs[j][k])).abs();
                // d/2 is ~amax/65534: the f32 rounding of `d·q` (~amax·6e-8) counts too.
                let tol = a.b16.d[j] * 0.5 + v.abs() * 2.4e-7 + 1e-12;
                assert!(err <= tol, "16-bit block {j} elem {k}");
            }
            if a.b16.d[j] != 0.0 {
                assert_eq!(a.b8.qs[j].iter().map(|q| q.unsigned_abs()).max(), Some(127));
                assert_eq!(
                    a.b16.qs[j].iter().map(|q| q.unsigned_abs()).max(),
                    Some(32767)
                );
            }
            let sum: i32 = a.b16.qs[j].iter().map(|&q| i32::from(q)).sum();
            assert_eq!(a.b16.s[j], a.b16.d[j] * sum as f32, "16-bit block sum {j}");
        }
    }

    #[test]
    fn nested_parallel_calls_share_scratch_safely() {
        use rayon::prelude::*;
        let m = random_matrix(BlockFormat::Q5_0, 1024, 640, 11);
        let x = random_x(640, 1);
        let mut want = vec![0.0; 1024];
        m.matvec(&x, &mut want);
        let ys: Vec<Vec<f32>> = (0..16)
            .into_par_iter()
            .map(|_| {
                let mut y = vec![0.0; 1024];
                m.matvec(&x, &mut y);
                y
            })
            .collect();
        assert!(ys.iter().all(|y| *y == want));
        let x8 = random_x(8 * 640, 2);
        let mut want = vec![0.0; 8 * 1024];
        m.matmul(&x8, 8, &mut want);
        (0..8).into_par_iter().for_each(|_| {
            let mut y = vec![0.0; 8 * 1024];
            m.matmul(&x8, 8, &mut y);
            assert_eq!(y, want);
        });
    }

    #[test]
    fn from_f32_round_trips() {
        let (rows, cols) = (5, 64);
        let x = random_x(rows * cols, 4);
        for format in [
            BlockFormat::F32,
            BlockFormat::F16,
            BlockFormat::BF16,
            BlockFormat::Q8_0,
        ] {
            let m = QMatrix::from_f32(format, rows, cols, &x).unwrap();
            assert_eq!(m.byte_len(), rows * format.row_bytes(cols).unwrap());
            let w = dense(&m);
            for (k, (&a, &b)) in x.iter().zip(&w).enumerate() {
                let tol = match format {
                    BlockFormat::F32 => 0.0,
                    BlockFormat::F16 => a.abs() / 1024.0,
                    BlockFormat::BF16 => a.abs() / 128.0,
                    _ => {
                        let blk = &x[k / 32 * 32..k / 32 * 32 + 32];
                        let amax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        // half a step, plus the f16 rounding of d times |q| <= 127
                        amax / 127.0 * 0.5 + amax / 2048.0
                    }
                };
                assert!((a - b).abs() <= tol, "{format} elem {k}: {a} vs {b}");
            }
        }
        assert!(QMatrix::from_f32(BlockFormat::Q4_K, 1, 256, &[0.0; 256]).is_err());
        assert!(QMatrix::from_f32(BlockFormat::Q8_0, 1, 48, &[0.0; 48]).is_err());
        assert!(QMatrix::from_f32(BlockFormat::F32, 2, 3, &[0.0; 5]).is_err());
    }

    #[test]
    fn new_validates_shape_and_bytes() {
        let ok =
            |f: BlockFormat, r, c, len| QMatrix::new(f, r, c, WeightBytes::Owned(vec![0; len]));
        assert!(ok(BlockFormat::Q4_K, 2, 512, 2 * 2 * 144).is_ok());
        let e = ok(BlockFormat::Q4_K, 2, 512, 2 * 2 * 144 - 1).unwrap_err();
        assert!(e.0.contains("576 bytes"), "{e}");
        let e = ok(BlockFormat::Q4_K, 1, 300, 144).unwrap_err();
        assert!(e.0.contains("300 columns"), "{e}");
        assert!(ok(BlockFormat::F16, 3, 7, 42).is_ok());
        assert!(ok(BlockFormat::F16, 3, 7, 43).is_err());
        assert!(ok(BlockFormat::Q8_0, usize::MAX, 32, 34).is_err());

        // Shared bytes are borrowed, and a range outside the buffer is rejected.
        let buf: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![0u8; 100]);
        let shared = |start, len| WeightBytes::Shared {
            buf: buf.clone(),
            start,
            len,
        };
        let m = QMatrix::new(BlockFormat::Q8_0, 2, 32, shared(10, 68)).unwrap();
        assert_eq!(m.byte_len(), 68);
        assert!(QMatrix::new(BlockFormat::Q8_0, 2, 32, shared(40, 68)).is_err());
        assert!(QMatrix::new(BlockFormat::Q8_0, 2, 32, shared(usize::MAX, 68)).is_err());
    }

    #[test]
    fn shared_bytes_compute_like_owned() {
        let owned = random_matrix(BlockFormat::Q6_K, 9, 512, 21);
        let mut backing = vec![7u8; 13];
        backing.extend_from_slice(&owned.data);
        let buf: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(backing);
        let len = owned.byte_len();
        let shared = QMatrix::new(
            BlockFormat::Q6_K,
            9,
            512,
            WeightBytes::Shared {
                buf,
                start: 13,
                len,
            },
        )
        .unwrap();
        let x = random_x(512, 8);
        let (mut a, mut b) = (vec![0.0; 9], vec![0.0; 9]);
        owned.matvec(&x, &mut a);
        shared.matvec(&x, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn vector_dequantize_is_bit_identical() {
        for (fi, format) in BlockFormat::ALL.into_iter().enumerate() {
            let cols = format.block_len().max(8) * 3 + usize::from(format.block_len() == 1);
            let m = random_matrix(format, 7, cols, 40 + fi as u64);
            let want = dense(&m);
            for level in simd::available_levels() {
                let mut got = vec![f32::NAN; want.len()];
                dequantize_at(level, format, &m.data, &mut got);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{format} {level}");
            }
        }
    }

    #[test]
    fn dequantize_rows_is_a_slice_of_the_whole() {
        let m = random_matrix(BlockFormat::Q4_K, 6, 512, 3);
        let all = dense(&m);
        let mut part = vec![0.0; 2 * 512];
        m.dequantize_rows(3..5, &mut part);
        assert_eq!(part, all[3 * 512..5 * 512]);
        m.dequantize_rows(6..6, &mut []);
    }

    #[test]
    #[should_panic(expected = "x length")]
    fn matvec_rejects_wrong_lengths() {
        let m = random_matrix(BlockFormat::Q8_0, 2, 32, 1);
        m.matvec(&[0.0; 31], &mut [0.0; 2]);
    }

    #[test]
    fn fast_f16_conversion_is_exact() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = scalar::f16_fast(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn matrices_are_shareable_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<QMatrix>();
        shareable::<WeightBytes>();
    }

    #[test]
    fn empty_products() {
        let m = random_matrix(BlockFormat::Q8_0, 3, 64, 1);
        m.matmul(&[], 0, &mut []);
        let z = QMatrix::new(BlockFormat::Q8_0, 0, 64, WeightBytes::Owned(vec![])).unwrap();
        z.matvec(&[0.0; 64], &mut []);
        z.matmul(&[0.0; 64 * 8], 8, &mut []);
    }
}

/// Throughput numbers and tuning sweeps, not tests. Run one at a time so they do not share the
/// cores: `cargo test --release -- --ignored --nocapture --test-threads=1 qmatrix::speed::speed`
/// (likewise `::crossover`, `::tiling`, `::grain`).
#[cfg(test)]
mod speed {
    use super::*;
    use std::time::{Duration, Instant};

    fn matrix(format: BlockFormat, rows: usize, cols: usize) -> QMatrix {
        // Any bytes decode (scales land anywhere), which is all a timing needs; keep f16
        // scales finite by clearing their exponent's top bit.
        let bytes: Vec<u8> = (0..rows * format.row_bytes(cols).unwrap())
            .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 & 0xBF)
            .collect();
        QMatrix::new(format, rows, cols, WeightBytes::Owned(bytes)).unwrap()
    }

    /// Best seconds per call over ~0.5 s (after a warm-up call): the machine this was tuned on
    /// was shared, and the minimum is the least disturbed by other load.
    fn time(mut f: impl FnMut()) -> f64 {
        f();
        let mut v = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(500) || v.len() < 5 {
            let t = Instant::now();
            f();
            v.push(t.elapsed().as_secs_f64());
        }
        v.into_iter().fold(f64::INFINITY, f64::min)
    }

    #[test]
    #[ignore]
    fn speed() {
        println!("threads: {}", rayon::current_num_threads());
        {
            // Ceiling: touch every cache line of a Q8_0 LM-head-sized buffer, in parallel.
            use rayon::prelude::*;
            let m = matrix(BlockFormat::Q8_0, 262144, 640);
            let w: &[u8] = &m.data;
            let s = time(|| {
                let t: u64 = w
                    .par_chunks(1 << 20)
                    .map(|c| c.iter().step_by(64).map(|&b| u64::from(b)).sum::<u64>())
                    .sum();
                std::hint::black_box(t);
            });
            println!(
                "read-only baseline {} MB: {:.2} GB/s",
                w.len() >> 20,
                w.len() as f64 / s / 1e9
            );
        }
        let mv = [
            (BlockFormat::Q8_0, 262144, 640),
            (BlockFormat::Q5_0, 2048, 640),
            (BlockFormat::Q4_K, 640, 2048),
            (BlockFormat::Q4_0, 2048, 640),
            (BlockFormat::Q8_0, 2048, 640),
            (BlockFormat::Q6_K, 2048, 768),
            (BlockFormat::F16, 2048, 640),
            (BlockFormat::Q5_0, 16384, 2048),
        ];
        for (format, rows, cols) in mv {
            let m = matrix(format, rows, cols);
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y = vec![0.0; rows];
            for level in simd::available_levels() {
                let s = time(|| m.matvec_at(level, &x, &mut y));
                println!(
                    "matvec {format} {rows}x{cols} {level}: {:.1} us, {:.2} GB/s",
                    s * 1e6,
                    m.byte_len() as f64 / s / 1e9
                );
            }
        }
        let mm = [
            (BlockFormat::Q5_0, 2048, 640, 512),
            (BlockFormat::Q5_0, 640, 2048, 512),
            (BlockFormat::Q5_0, 1024, 640, 512),
            (BlockFormat::Q5_0, 256, 640, 512),
            (BlockFormat::Q4_K, 2048, 1024, 512),
            (BlockFormat::Q8_0, 2048, 640, 1024),
            (BlockFormat::Q5_0, 2048, 640, 4),
            (BlockFormat::Q5_0, 2048, 640, 16),
        ];
        for (format, rows, cols, n) in mm {
            let m = matrix(format, rows, cols);
            let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y = vec![0.0; n * rows];
            for level in simd::available_levels() {
                let s = time(|| m.matmul_at(level, &x, n, &mut y));
                println!(
                    "matmul {format} n={n} {cols}->{rows} {level}: {:.2} ms, {:.1} GFLOP/s",
                    s * 1e3,
                    2.0 * (n * rows * cols) as f64 / s / 1e9
                );
            }
        }
    }

    /// Where the gemm path overtakes the matvec kernels:
    /// `cargo test --release -- --ignored --nocapture --test-threads=1 qmatrix::speed::crossover`.
    #[test]
    #[ignore]
    fn crossover() {
        let level = simd::detected();
        for (format, rows, cols) in [
            (BlockFormat::Q5_0, 2048, 640),
            (BlockFormat::Q8_0, 2048, 640),
            (BlockFormat::Q4_K, 640, 2048),
            (BlockFormat::Q6_K, 1024, 768),
            (BlockFormat::F16, 2048, 640),
        ] {
            let m = matrix(format, rows, cols);
            for n in [4, 8, 12, 16, 24, 32, 48] {
                let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
                let mut y = vec![0.0; n * rows];
                let (mut a, mut b) = (f64::INFINITY, f64::INFINITY);
                for _ in 0..20 {
                    let t = Instant::now();
                    m.matmul_small(level, &x, n, &mut y);
                    a = a.min(t.elapsed().as_secs_f64());
                    let t = Instant::now();
                    m.matmul_gemm(level, &x, n, &mut y);
                    b = b.min(t.elapsed().as_secs_f64());
                }
                println!(
                    "{format} {cols}->{rows} n={n}: small {:.3} ms, gemm {:.3} ms",
                    a * 1e3,
                    b * 1e3
                );
            }
        }
    }

    /// Tile size and parallel strategy of the gemm path:
    /// `cargo test --release -- --ignored --nocapture --test-threads=1 qmatrix::speed::tiling`.
    #[test]
    #[ignore]
    fn tiling() {
        let level = simd::detected();
        for (format, rows, cols, n) in [
            (BlockFormat::Q5_0, 2048, 640, 512),
            (BlockFormat::Q5_0, 640, 2048, 512),
            (BlockFormat::Q5_0, 1024, 640, 512),
            (BlockFormat::Q5_0, 256, 640, 512),
        ] {
            let m = matrix(format, rows, cols);
            let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y = vec![0.0; n * rows];
            let flop = 2.0 * (n * rows * cols) as f64;
            // Interleave the configurations over rounds and keep each one's best, so load
            // from other processes drifting over time does not favour one of them.
            let configs: Vec<(usize, bool)> = [true, false]
                .into_iter()
                .flat_map(|par| {
                    [
                        16 * 1024,
                        32 * 1024,
                        64 * 1024,
                        128 * 1024,
                        256 * 1024,
                        1 << 20,
                    ]
                    .map(|e| ((e / cols).clamp(16, 4096).next_multiple_of(16), par))
                })
                .collect();
            let mut best = vec![f64::INFINITY; configs.len()];
            for _ in 0..8 {
                for (k, &(tile, par)) in configs.iter().enumerate() {
                    for _ in 0..3 {
                        let t = Instant::now();
                        m.matmul_gemm_with(level, &x, n, &mut y, tile, par);
                        best[k] = best[k].min(t.elapsed().as_secs_f64());
                    }
                }
            }
            for (&(tile, par), s) in configs.iter().zip(best) {
                println!(
                    "{format} n={n} {cols}->{rows} tile {tile} rows, parallel tiles {par}: {:.1} GFLOP/s",
                    flop / s / 1e9
                );
            }
        }
    }

    /// Rows per task of the parallel matvec:
    /// `cargo test --release -- --ignored --nocapture --test-threads=1 qmatrix::speed::grain`.
    #[test]
    #[ignore]
    fn grain() {
        let level = simd::detected();
        for (format, rows, cols) in [
            (BlockFormat::Q5_0, 2048, 640),
            (BlockFormat::Q5_0, 1024, 640),
            (BlockFormat::Q5_0, 256, 640),
            (BlockFormat::Q8_0, 262144, 640),
        ] {
            let m = matrix(format, rows, cols);
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y = vec![0.0; rows];
            let grains: Vec<usize> = [16, 64, 256, 1024, 4096, 16384, rows]
                .into_iter()
                .filter(|&g| g <= rows)
                .collect();
            let mut best = vec![f64::INFINITY; grains.len()];
            let reps = if rows > 100_000 { 3 } else { 200 };
            for _ in 0..5 {
                for (k, &g) in grains.iter().enumerate() {
                    for _ in 0..reps {
                        let t = Instant::now();
                        m.small_n::<1>(level, &x, [&mut y], g);
                        best[k] = best[k].min(t.elapsed().as_secs_f64());
                    }
                }
            }
            let chosen = m.grain();
            for (g, s) in grains.iter().zip(best) {
                println!(
                    "matvec {format} {rows}x{cols} grain {g}: {:.1} us, {:.2} GB/s{}",
                    s * 1e6,
                    m.byte_len() as f64 / s / 1e9,
                    if *g == chosen { " (default)" } else { "" }
                );
            }
        }
    }
}
