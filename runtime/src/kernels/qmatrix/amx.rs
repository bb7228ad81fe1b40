//! The prefill product of [`super::packed`] weights on AMX tiles (Intel Advanced Matrix
//! Extensions), in bf16 with f32 accumulation.
//!
//! Why: prefill multiplies every weight matrix by up to a chunk (1024) of activation rows. The
//! VNNI kernel runs those products at 150–250 G multiply-adds/s on 2 cores of this machine's
//! Xeon; `tdpbf16ps` does 16×16×32 of them per instruction, and this file's 2×2 tile loop
//! alone reaches 540–770 G/s per core (a register-and-cache-only loop). The whole product —
//! with the per-product conversions (~20%) and the output stores (~15%) — runs at 310–500 G/s
//! on 2 cores at the model's prefill shapes (`qmatrix::speed::prefill`, 512 rows): 2.2x the
//! VNNI kernel; prefill at 1K/4K tokens went from ~980/820 to ~1350/1060 tok/s (`bench`).
//!
//! Tried first and dropped: an exact integer product on the tiles (16-bit activations split
//! into two bytes, `tdpbusd` + `tdpbssd`). The per-32-column scales forbid accumulating across
//! blocks, so every block took two tile stores and an f32 scaling pass, which (microcoded)
//! do not overlap with the tile unit: no faster than VNNI. And the activations in two bf16
//! parts (`hi + lo`, 16 significant bits): twice the tile work for half the KL (below), so
//! only 12% faster than VNNI.
//!
//! Rounding: weights (dequantized exactly, `a·q − b`) and activations are rounded to bf16
//! (relative error ≤ 2⁻⁹ each) and their products summed in f32, so `|y − W·x| ≲
//! Σ|w·x|·2⁻⁸`; the integer path's 16-bit activations are ~100× tighter. On Gemma 3 270M,
//! against the exact f32 path over the 2146 reference positions: the same top-1 token at
//! 99.2% of positions, mean KL 1.1e-4 (integer prefill: 100%, 4.9e-7); the 1K–8K needle table
//! at B=128 kept every answer of full and CompressKV. Decode (fewer than
//! [`super::AMX_MIN_ROWS`] rows) never comes here, so decode steps and batches of sessions keep
//! the exact integer math; `COMPRESSKV_SIMD=avx512` keeps prefill on the VNNI kernel.
//!
//! Every function here must only run after [`super::simd::amx`] said yes (AMX-TILE/BF16
//! present and the tile state granted by the OS, AVX-512 F/BW present).

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::SendPtr;
use super::packed::{GROUP, Packed, Scales};
use crate::kernels::tiles::{self, Tiles, bf16x16};

/// Columns per tile step: one 64-byte tile row of bf16.
const K: usize = tiles::K;
/// Bytes of one 16 × 32 bf16 tile.
const TILE_BYTES: usize = tiles::BYTES;

/// `y[i·rows + r] = W[r]·x[i]` for `n` rows of `x` (`[n, cols]`), every weight row.
///
/// # Safety
/// AMX-TILE/BF16 and AVX-512 F/BW usable (module contract); `x.len() == n·cols`,
/// `y.len() == n·rows`, `p.cols` a multiple of 32.
pub(super) unsafe fn matmul(p: &Packed, x: &[f32], n: usize, y: &mut [f32], parallel: bool) {
    let (rows, cols) = (p.rows, p.cols);
    debug_assert!(x.len() == n * cols && y.len() == n * rows && cols.is_multiple_of(K));
    if n == 0 || rows == 0 {
        return;
    }
    super::with_scratch(&ACTS, |acts: &mut Vec<u8>| {
        to_tiles(x, n, cols, parallel, acts);
        // SAFETY: forwarded caller guarantees; `acts` holds x's tiles.
        unsafe { weight_tiles(p, acts, n, y, parallel) };
    });
}

/// Every weight tile times the activation tiles `acts` (from [`to_tiles`]), in parallel
/// over the weight tiles when `parallel`.
///
/// # Safety
/// As [`matmul`].
unsafe fn weight_tiles(p: &Packed, acts: &[u8], n: usize, y: &mut [f32], parallel: bool) {
    let rows = p.rows;
    // Weight tiles of whole group pairs, about 4 per thread (each is dequantized once and
    // then meets every activation row), at most 128 rows (their bf16 copy, 256·cols bytes,
    // stays in L2).
    let threads = rayon::current_num_threads();
    let tile = rows
        .div_ceil(4 * threads)
        .next_multiple_of(2 * GROUP)
        .clamp(2 * GROUP, 128);
    let y_ptr = SendPtr(y.as_mut_ptr());
    let run = |t: usize| {
        let (r0, r1) = (t * tile, ((t + 1) * tile).min(rows));
        // SAFETY: module contract; this task alone writes columns r0..r1 of y.
        unsafe { weight_tile(p, r0, r1, acts, n, y_ptr.get()) };
    };
    let tiles = rows.div_ceil(tile);
    if parallel {
        (0..tiles).into_par_iter().for_each(run);
    } else {
        (0..tiles).for_each(run);
    }
}

thread_local! {
    /// The activation tiles of the last product on this thread (reused; lent out by
    /// `with_scratch`, so a product nested on this thread by rayon gets its own).
    static ACTS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A task's weight tile in bf16 (reused).
    static WEIGHTS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `x` in bf16 into `a`, laid out tile by tile: `[16-row tile][32-column step][row of
/// 16][32]`, the row count padded to an even number of tiles with zeros (the kernel takes two
/// at a time).
fn to_tiles(x: &[f32], n: usize, cols: usize, parallel: bool, a: &mut Vec<u8>) {
    let per_tile = GROUP * cols * 2;
    let tiles = n.div_ceil(GROUP).next_multiple_of(2);
    a.resize(tiles * per_tile, 0);
    let one = |(t, bytes): (usize, &mut [u8])| {
        let r = (t * GROUP).min(n)..((t + 1) * GROUP).min(n);
        if r.len() < GROUP {
            bytes.fill(0);
        }
        // SAFETY: AVX-512 F/BW (module contract); `bytes` is tile t's region.
        unsafe { acts_tile(&x[r.start * cols..r.end * cols], cols, bytes) };
    };
    if parallel {
        a.par_chunks_mut(per_tile).enumerate().for_each(one);
    } else {
        a.chunks_mut(per_tile).enumerate().for_each(one);
    }
}

/// Rows `x` (at most 16, `cols` each) of one activation tile into `bytes`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn acts_tile(x: &[f32], cols: usize, bytes: &mut [u8]) {
    for (r, row) in x.chunks_exact(cols).enumerate() {
        for (c, v) in row.chunks_exact(K).enumerate() {
            let at = (c * GROUP + r) * K * 2;
            let out = &mut bytes[at..at + 2 * K];
            // SAFETY: 32 f32 in, 64 bytes out.
            unsafe {
                let lo = bf16x16(_mm512_loadu_ps(v.as_ptr()));
                let hi = bf16x16(_mm512_loadu_ps(v.as_ptr().add(16)));
                _mm256_storeu_si256(out.as_mut_ptr().cast(), lo);
                _mm256_storeu_si256(out.as_mut_ptr().add(32).cast(), hi);
            }
        }
    }
}

/// Weight groups `g0..g1` dequantized to bf16 in the tile layout
/// `[group][32-column step][pair of columns][row of 16][2]` (one 1 KiB tile per group and
/// step), plus a zero group when the count is odd.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn weights_tile(p: &Packed, g0: usize, g1: usize, out: &mut Vec<u8>) {
    let cols = p.cols;
    let (sub, nsub, nblk) = (p.sub, cols / p.sub, cols / 32);
    let groups = (g1 - g0).next_multiple_of(2);
    // Every byte is written below except the padding group's, which must be zero.
    let group_bytes = GROUP * cols * 2;
    out.resize(groups * group_bytes, 0);
    out[(g1 - g0) * group_bytes..].fill(0);
    // Lane 2n+e of a pair holds row n: rows 0..8 in the first 16 lanes, 8..16 in the next.
    let idx_lo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    let idx_hi = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    let scales = |at: usize| -> __m512 {
        // SAFETY: `at + 16` scales exist (whole groups).
        unsafe {
            match &p.a {
                Scales::F16(v) => _mm512_cvtph_ps(_mm256_loadu_si256(v.as_ptr().add(at).cast())),
                Scales::F32(v) => _mm512_loadu_ps(v.as_ptr().add(at)),
            }
        }
    };
    for g in g0..g1 {
        let q = &p.q[g * GROUP * cols..(g + 1) * GROUP * cols];
        let dst = &mut out[(g - g0) * GROUP * cols * 2..(g - g0 + 1) * GROUP * cols * 2];
        for s in 0..nsub {
            let a = scales((g * nsub + s) * GROUP);
            let (a_lo, a_hi) = (
                _mm512_permutexvar_ps(idx_lo, a),
                _mm512_permutexvar_ps(idx_hi, a),
            );
            let b = if p.b.is_empty() {
                None
            } else {
                let j = s * sub / 32;
                // SAFETY: 16 mins per group and 32-column block.
                let b = unsafe { _mm512_loadu_ps(p.b.as_ptr().add((g * nblk + j) * GROUP)) };
                Some((
                    _mm512_permutexvar_ps(idx_lo, b),
                    _mm512_permutexvar_ps(idx_hi, b),
                ))
            };
            for kp in s * sub / 2..(s + 1) * sub / 2 {
                // Pair kp of 16 rows: 32 bytes in, 64 out (its place in step kp/16's tile).
                // SAFETY: inside the group's quants and the output group (bounds above).
                unsafe {
                    let v = _mm256_loadu_si256(q.as_ptr().add(kp * 32).cast());
                    let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(v)));
                    let hi =
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256::<1>(v)));
                    let (mut lo, mut hi) = (_mm512_mul_ps(a_lo, lo), _mm512_mul_ps(a_hi, hi));
                    if let Some((b_lo, b_hi)) = b {
                        lo = _mm512_sub_ps(lo, b_lo);
                        hi = _mm512_sub_ps(hi, b_hi);
                    }
                    let o = dst.as_mut_ptr().add(kp * 64);
                    _mm256_storeu_si256(o.cast(), bf16x16(lo));
                    _mm256_storeu_si256(o.add(32).cast(), bf16x16(hi));
                }
            }
        }
    }
}

/// Weight rows `r0..r1` (whole group pairs from `r0`) times every activation row.
///
/// # Safety
/// Module contract; `acts` from [`with_acts`] for these `n` rows and `p.cols`; `y` valid for
/// `n·p.rows` floats, and columns `r0..r1` written by this call alone.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn weight_tile(p: &Packed, r0: usize, r1: usize, acts: &[u8], n: usize, y: *mut f32) {
    let (rows, cols) = (p.rows, p.cols);
    let steps = cols / K;
    let (g0, g1) = (r0 / GROUP, r1.div_ceil(GROUP));
    WEIGHTS.with_borrow_mut(|w| {
        // SAFETY: module contract; groups g0..g1 exist.
        unsafe { weights_tile(p, g0, g1, w) };
        #[repr(C, align(64))]
        struct Out([[[f32; GROUP]; GROUP]; 4]);
        let mut out = Out([[[0.0; GROUP]; GROUP]; 4]);
        let a_tiles = n.div_ceil(GROUP).next_multiple_of(2);
        // SAFETY: AMX usable (module contract).
        let mut t = unsafe { Tiles::new() };
        for mt in (0..a_tiles).step_by(2) {
            for gl in (0..g1 - g0).step_by(2) {
                let a0 = acts[mt * GROUP * cols * 2..].as_ptr();
                let b0 = w[gl * GROUP * cols * 2..].as_ptr();
                let o = out.0.as_mut_ptr().cast::<f32>();
                t.zero();
                // SAFETY: tiles mt, mt+1 of the activations and groups gl, gl+1 of the
                // weight tile exist (both padded to pairs); each step reads one 1 KiB tile
                // of each; the stores go to `out` (4 KiB).
                unsafe {
                    t.dot(
                        [a0, a0.add(GROUP * cols * 2)],
                        TILE_BYTES,
                        [b0, b0.add(GROUP * cols * 2)],
                        TILE_BYTES,
                        steps,
                    );
                    t.store([o, o.add(256), o.add(512), o.add(768)], 64);
                }
                // out[2·i + j] is activation tile mt+i times group gl+j.
                for (t, tile) in out.0.iter().enumerate() {
                    let (m0, g) = ((mt + t / 2) * GROUP, g0 + gl + t % 2);
                    let c0 = g * GROUP;
                    if m0 >= n || c0 >= r1 {
                        continue;
                    }
                    let width = GROUP.min(r1 - c0);
                    let mask: __mmask16 = if width == GROUP {
                        !0
                    } else {
                        (1u16 << width) - 1
                    };
                    for (r, row) in tile.iter().enumerate().take(n - m0) {
                        // SAFETY: row m0+r < n, columns c0..c0+width inside r0..r1 <= rows.
                        unsafe {
                            _mm512_mask_storeu_ps(
                                y.add((m0 + r) * rows + c0),
                                mask,
                                _mm512_loadu_ps(row.as_ptr()),
                            )
                        };
                    }
                }
            }
        }
    });
}
