//! Activations quantized in blocks of 32 for the integer kernels (8-bit, 16-bit, and the
//! two-part 8-bit form of the K-quants), the per-thread scratch they live in, and which
//! quantized form each weight format takes.

use super::*;

// ---------------------------------------------------------------------------
// Activations quantized to 8-bit blocks of 32
// ---------------------------------------------------------------------------

/// Activation rows quantized in blocks of 32 for the integer kernels: struct-of-arrays, so the
/// K-quant kernels load 8 consecutive scales as one vector.
pub(super) struct QBlocks<T> {
    pub(super) qs: Vec<[T; 32]>,
    /// Scale per block: `x ≈ d·q`.
    pub(super) d: Vec<f32>,
    /// `d·Σq` per block: the block's sum, for the min/offset terms of Q4_1/Q5_1/Q4_K/Q5_K.
    pub(super) s: Vec<f32>,
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
    pub(super) fn resize(&mut self, nb: usize) {
        self.qs.resize(nb, [T::default(); 32]);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
    }

    pub(super) fn row(&self, i: usize, nb: usize) -> ActRow<'_, T> {
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
pub(super) struct Q8Act {
    /// 8-bit blocks (`d = amax/127`): the K-quant kernels, in two parts (see `quantize_split`).
    pub(super) b8: QBlocks<i8>,
    /// 16-bit blocks (`d = amax/32767`): the 32-element formats (see `quantize16`).
    pub(super) b16: QBlocks<i16>,
    /// Scratch of [`Q8Act::quantize_split`]: the rows and their residuals.
    pub(super) split: Vec<f32>,
}

/// One quantized activation row (`cols/32` blocks).
#[derive(Clone, Copy)]
pub(super) struct ActRow<'a, T = i8> {
    pub(super) qs: &'a [[T; 32]],
    pub(super) d: &'a [f32],
    pub(super) s: &'a [f32],
}

impl Q8Act {
    /// Quantize `x` (`[n, cols]`, cols a multiple of 32) to 8-bit blocks. Both levels give
    /// identical bytes: `d = amax/127`, `q = round_ties_even(x·(1/d))` (the AVX2 rounding mode).
    pub(super) fn quantize(&mut self, level: SimdLevel, x: &[f32], cols: usize) {
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
    pub(super) fn quantize16(&mut self, level: SimdLevel, x: &[f32], cols: usize) {
        use rayon::prelude::*;
        debug_assert!(cols.is_multiple_of(32) && x.len().is_multiple_of(cols));
        let b = &mut self.b16;
        b.resize(x.len() / 32);
        let (xb, _) = x.as_chunks::<32>();
        let one = |xb: &[f32; 32], q: &mut [i16; 32], d: &mut f32, s: &mut f32| {
            let sum = match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: callers checked `level <= detected()`, so AVX2+FMA+F16C are present.
                SimdLevel::Avx2 => unsafe { avx2::quantize_block16(xb, q, d) },
                _ => quantize_block16_scalar(xb, q, d),
            };
            *s = *d * sum as f32;
        };
        // A prompt's worth (prefill) on every thread: serial, it was ~10% of a product.
        if x.len() >= PAR_MIN_ELEMS {
            xb.par_iter()
                .with_min_len(64)
                .zip(
                    b.qs.par_iter_mut()
                        .zip(b.d.par_iter_mut())
                        .zip(b.s.par_iter_mut()),
                )
                .for_each(|(xb, ((q, d), s))| one(xb, q, d, s));
        } else {
            xb.iter()
                .zip(b.qs.iter_mut().zip(b.d.iter_mut()).zip(b.s.iter_mut()))
                .for_each(|(xb, ((q, d), s))| one(xb, q, d, s));
        }
    }

    /// Quantize each row of `x` in two 8-bit parts, `x ≈ d₁·q₁ + d₂·q₂`: the usual 8-bit
    /// blocks, then the residual `x − d₁·q₁` quantized the same way. Rows come out as
    /// `[hi₀, lo₀, hi₁, …]`. Used by the K-quant kernels, built around `vpmaddubsw` on 8-bit
    /// activations: the residual brings their error to the 16-bit path's, and every weight
    /// block is unpacked once for both parts.
    pub(super) fn quantize_split(&mut self, level: SimdLevel, x: &[f32], cols: usize) {
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
    pub(super) fn prepare(
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
    pub(super) fn prepared(
        &self,
        format: BlockFormat,
        i: usize,
        nb: usize,
    ) -> Option<Prepared<'_>> {
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
pub(super) enum Prepared<'a> {
    /// 16-bit blocks (the 32-element formats).
    Wide(ActRow<'a, i16>),
    /// Two 8-bit parts, high then residual (the K-quants).
    Split([ActRow<'a, i8>; 2]),
}

/// One block of [`Q8Act::quantize`]; returns `Σq`.
pub(super) fn quantize_block_scalar(x: &[f32; 32], q: &mut [i8; 32], d: &mut f32) -> i32 {
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
pub(super) fn quantize_block16_scalar(x: &[f32; 32], q: &mut [i16; 32], d: &mut f32) -> i32 {
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
pub(super) fn wide_format(f: BlockFormat) -> bool {
    use BlockFormat::*;
    matches!(f, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
}

/// K-quants: their kernels take 8-bit activations in two parts.
pub(super) fn split_format(f: BlockFormat) -> bool {
    use BlockFormat::*;
    matches!(f, Q4_K | Q5_K | Q6_K)
}

/// Formats whose matvec runs on 8-bit activations.
pub(super) fn int8_format(f: BlockFormat) -> bool {
    wide_format(f) || split_format(f)
}
