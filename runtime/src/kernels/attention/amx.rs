//! Prefill attention on AMX tiles: `Q·Kᵀ` and `P·V` in bf16 with f32 accumulation, the
//! online softmax in f32 between them (flash-style, never an R×T matrix).
//!
//! Why: prefill attention is compute-bound. The f32 AVX2 kernel runs near this machine's FMA
//! peak, and was ~30% of a 1K-token prefill and ~40% of a 4K one once the weight products
//! moved to the tiles. `tdpbf16ps` does 16×16×32 multiply-adds per instruction.
//!
//! Layout. Per call (one KV head), K and V are converted once, [`SEGMENT`] keys at a time, into
//! the tiles' B layout ([`keys_tiles`], [`values_tiles`]) and shared by every query tile; the
//! rows' running max, sum and output carry over from one segment to the next. A query tile is
//! up to 32 consecutive rows with nearly the same visible range (two 16-row A tiles; the scale
//! is folded into Q). Per step of up to 128 keys: the logits go to an f32 buffer (2×2 tile
//! products of 32 keys), each row's visible keys get the online-softmax update, the
//! probabilities are rounded to bf16 as A tiles (the row sum `l` adds the *rounded* values, so
//! the weights applied to V sum to one), the output rows are rescaled where the running max
//! moved, and `O += P·V` runs on tiles loaded from and stored back to the f32 output rows.
//!
//! Rounding: the logits are f32-grade — q·scale enters as two bf16 parts (16 significant bits)
//! and a key as its bf16 rounding plus the rounded remainder (an f16 key exactly), summed as
//! `q_hi·k_hi + q_hi·k_lo + q_lo·k_hi`. With one bf16 product (4–6% faster prefill) a logit
//! erred by `2⁻⁸·Σ|q·k|`: the profiler's layer errors moved 6% and tiny random models' sharp
//! attention missed their references. p and v round to bf16 (an output within `2⁻⁸·max|v|`);
//! sums are f32. Keys a row cannot see get `p = 0` exactly. A non-finite K or V element makes
//! [`attend`] decline (the f32 kernel then runs): on tiles, `0 · NaN` would reach rows that
//! cannot see that key.
//!
//! Everything here must only run after [`crate::kernels::simd::amx`] said yes.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::{AttnParams, KvElem};
use crate::kernels::ops;
use crate::kernels::simd::SimdLevel;
use crate::kernels::tiles::{BYTES, K, ROWS, Tiles, bf16x16};

/// Query rows per tile: two 16-row A tiles.
const QT: usize = 2 * ROWS;
/// Keys converted to bf16 at a time: the copies (three of 2 bytes per element) stay at 6 MiB
/// for d = 256 however long the context (a 16K-token global layer's would be 24 MiB), and
/// prompts up to 4K tokens take one segment.
const SEGMENT: usize = 4096;
/// Keys per online-softmax step.
const KS: usize = 128;
/// Fewer query rows than this stay on the f32 kernel (decode and short batches: exact math,
/// and too little work to pay for the K/V conversion).
pub(super) const MIN_ROWS: usize = 64;
/// Head dimensions the tiles take: whole 32-column steps, an output tile row block in L1.
pub(super) fn head_dim_ok(d: usize) -> bool {
    d > 0 && d.is_multiple_of(K) && d <= 512
}

/// `out` as [`super::attend`] computes it, for rows with the visible `ranges` (`(0, 0)` when
/// empty), on tiles. Returns `false` when K or V holds a non-finite value (`out` is then
/// unspecified: the caller recomputes it).
///
/// # Safety
/// AMX usable (module contract); `head_dim_ok(d)`; `q`, `out` of `ranges.len()·d`, `k`, `v`
/// of `T·d` with every range inside `0..T`.
pub(super) unsafe fn attend<E: KvElem>(
    q: &[f32],
    k: &[E],
    v: &[E],
    d: usize,
    params: &AttnParams,
    ranges: &[(usize, usize)],
    out: &mut [f32],
) -> bool {
    let t = k.len() / d;
    let tiles = query_tiles(ranges);
    out.fill(0.0);
    // The running max and sum of every row, across segments.
    let mut m = vec![f32::NEG_INFINITY; ranges.len()];
    let mut l = vec![0.0f32; ranges.len()];
    // One segment of keys at a time in bf16 (padded to whole 32-key chunks with zero keys and
    // values: finite, and masked anyway), so the copies stay small next to the cache.
    let seg = t.min(SEGMENT).next_multiple_of(K);
    let (mut kt, mut kl, mut vt) = (
        vec![0u8; seg * d * 2],
        vec![0u8; seg * d * 2],
        vec![0u8; seg * d * 2],
    );
    let mut clipped = vec![(0usize, 0usize); ranges.len()];
    for s0 in (0..t).step_by(SEGMENT) {
        let s1 = (s0 + SEGMENT).min(t);
        let (ks, vs) = (&k[s0 * d..s1 * d], &v[s0 * d..s1 * d]);
        let bytes = (s1 - s0).next_multiple_of(K) * d * 2;
        let (kt, kl, vt) = (&mut kt[..bytes], &mut kl[..bytes], &mut vt[..bytes]);
        let (a, b) = rayon::join(
            || {
                kt.par_chunks_mut(K * d * 2)
                    .zip(kl.par_chunks_mut(K * d * 2))
                    .enumerate()
                    // SAFETY: AVX-512 (module contract); chunk c's keys and its regions.
                    .all(|(c, (hi, lo))| unsafe { keys_tiles(ks, d, c, hi, lo) })
            },
            || {
                vt.par_chunks_mut(K * d * 2)
                    .enumerate()
                    // SAFETY: as above.
                    .all(|(c, o)| unsafe { values_tiles(vs, d, c, o) })
            },
        );
        if !(a && b) {
            return false;
        }
        for (c, &(lo, hi)) in clipped.iter_mut().zip(ranges) {
            let (a, b) = (lo.max(s0), hi.min(s1));
            *c = if a < b { (a - s0, b - s0) } else { (0, 0) };
        }
        let lay = Layout {
            kt,
            kl,
            vt,
            d,
            params: *params,
        };
        let mut jobs = Vec::with_capacity(tiles.len());
        let (mut o_rest, mut m_rest, mut l_rest) = (&mut *out, &mut m[..], &mut l[..]);
        for &(r0, n) in &tiles {
            let (o, o_tail) = std::mem::take(&mut o_rest).split_at_mut(n * d);
            let (mt, m_tail) = std::mem::take(&mut m_rest).split_at_mut(n);
            let (lt, l_tail) = std::mem::take(&mut l_rest).split_at_mut(n);
            (o_rest, m_rest, l_rest) = (o_tail, m_tail, l_tail);
            if clipped[r0..r0 + n].iter().any(|r| r.0 < r.1) {
                jobs.push((r0, n, o, mt, lt));
            }
        }
        let clipped = &clipped;
        jobs.into_par_iter().for_each(|(r0, n, o, m, l)| {
            // SAFETY: module contract; rows r0..r0+n and their clipped ranges inside the
            // segment's layout.
            unsafe {
                query_tile(
                    &lay,
                    &q[r0 * d..(r0 + n) * d],
                    &clipped[r0..r0 + n],
                    m,
                    l,
                    o,
                )
            }
        });
    }
    for (row, &l) in out.chunks_exact_mut(d).zip(&l) {
        if l == 0.0 {
            row.fill(0.0);
        } else {
            let inv = 1.0 / l;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
    true
}

/// Consecutive rows `(r0, n)`, at most [`QT`], grouped while the union of their ranges stays
/// within one step of the longest (so a head boundary, where ranges jump, starts a new tile).
fn query_tiles(ranges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut tiles = Vec::with_capacity(ranges.len().div_ceil(QT));
    let mut r0 = 0;
    while r0 < ranges.len() {
        let (mut lo, mut hi) = ranges[r0];
        let mut longest = hi - lo;
        let mut n = 1;
        while n < QT && r0 + n < ranges.len() {
            let (a, b) = ranges[r0 + n];
            if a < b && lo < hi {
                let (ulo, uhi) = (lo.min(a), hi.max(b));
                let l2 = longest.max(b - a);
                if uhi - ulo > l2 + KS {
                    break;
                }
                (lo, hi, longest) = (ulo, uhi, l2);
            } else if a < b {
                (lo, hi, longest) = (a, b, b - a);
            }
            n += 1;
        }
        tiles.push((r0, n));
        r0 += n;
    }
    tiles
}

/// What every query tile shares.
struct Layout<'a> {
    /// K's bf16 rounding as B tiles: `[16-key block][32-column step][column pair][key of
    /// 16][2]`.
    kt: &'a [u8],
    /// What that rounding left out (`k − kt`, itself rounded: an f16 key is exactly
    /// `kt + kl`), the same layout.
    kl: &'a [u8],
    /// V as B tiles: `[32-key chunk][16-column block][key pair][column of 16][2]`.
    vt: &'a [u8],
    d: usize,
    params: AttnParams,
}

/// 16 elements of `E` at `p` as f32.
///
/// # Safety
/// 16 readable elements at `p`; AVX-512 F, AVX2, F16C.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn load16<E: KvElem>(p: *const E) -> __m512 {
    // SAFETY: forwarded.
    unsafe {
        let lo = _mm512_castps256_ps512(E::load8(p));
        let hi = _mm256_castps_si256(E::load8(p.add(8)));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castps_pd(lo),
            _mm256_castsi256_pd(hi),
        ))
    }
}

/// Lanes of `v` that are NaN or infinite (`v·0` is NaN exactly there).
#[inline]
#[target_feature(enable = "avx512f")]
fn non_finite(v: __m512) -> __mmask16 {
    let z = _mm512_mul_ps(v, _mm512_setzero_ps());
    _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(z, z)
}

/// `v` rounded to bf16 (`hi`, 16 lanes) and the rounded remainder `v − hi` (`lo`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn split(v: __m512) -> (__m256i, __m256i) {
    let hi = bf16x16(v);
    let back = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi)));
    (hi, bf16x16(_mm512_sub_ps(v, back)))
}

/// Keys `32c..32c+32` of `k` (`[T, d]`) into their two 16-key blocks of B tiles, rounded
/// (`hi`) and remainders (`lo`); `false` if one of them is not finite.
///
/// # Safety
/// AVX-512 F/BW, AVX2, F16C; `hi` and `lo` are chunk `c`'s `32·d·2` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn keys_tiles<E: KvElem>(k: &[E], d: usize, c: usize, hi: &mut [u8], lo: &mut [u8]) -> bool {
    let t = k.len() / d;
    if 32 * c + 32 > t {
        // A partial chunk: its missing keys are zeros.
        hi.fill(0);
        lo.fill(0);
    }
    let mut bad: __mmask16 = 0;
    // Lane kk (a column pair) of a key goes to row kk of its tile: 64 bytes apart.
    let rows = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(ROWS as i32),
    );
    for j in 32 * c..(32 * c + 32).min(t) {
        let (blk, key) = ((j - 32 * c) / ROWS, j % ROWS);
        let row = &k[j * d..(j + 1) * d];
        for s in 0..d / K {
            // SAFETY: 32 elements of the row at s·32; the scatter writes 16 u32 inside this
            // block's tile for step s (rows 0..16 at column `key`).
            unsafe {
                let a = load16(row.as_ptr().add(s * K));
                let b = load16(row.as_ptr().add(s * K + 16));
                bad |= non_finite(a) | non_finite(b);
                let ((ah, al), (bh, bl)) = (split(a), split(b));
                let at = (blk * (d / K) + s) * BYTES + key * 4;
                for (out, x, y) in [(&mut *hi, ah, bh), (&mut *lo, al, bl)] {
                    let pairs = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x), y);
                    let base = out.as_mut_ptr().add(at);
                    _mm512_i32scatter_epi32::<4>(base.cast(), rows, pairs);
                }
            }
        }
    }
    bad == 0
}

/// Values `32c..32c+32` of `v` (`[T, d]`) into chunk `c`'s B tiles; `false` if one of them is
/// not finite.
///
/// # Safety
/// As [`keys_tiles`].
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn values_tiles<E: KvElem>(v: &[E], d: usize, c: usize, out: &mut [u8]) -> bool {
    let t = v.len() / d;
    let mut bad: __mmask16 = 0;
    for kk in 0..ROWS {
        let (j0, j1) = (32 * c + 2 * kk, 32 * c + 2 * kk + 1);
        for nb in 0..d / ROWS {
            // SAFETY: 16 elements of rows j0/j1 (when they exist) at column nb·16; 64 bytes
            // stored at row kk of tile nb, inside `out`.
            unsafe {
                let mut row = |j: usize| -> __m512i {
                    if j < t {
                        let x = load16(v.as_ptr().add(j * d + nb * ROWS));
                        bad |= non_finite(x);
                        _mm512_cvtepu16_epi32(bf16x16(x))
                    } else {
                        _mm512_setzero_si512()
                    }
                };
                let (a, b) = (row(j0), row(j1));
                let pair = _mm512_or_si512(a, _mm512_slli_epi32::<16>(b));
                _mm512_storeu_si512(out.as_mut_ptr().add(nb * BYTES + kk * 64).cast(), pair);
            }
        }
    }
    bad == 0
}

/// Rows `q` (`n ≤ 32` of them, visible `ranges`) into `out`.
///
/// # Safety
/// Module contract; `q`, `out` of `n·d`, ranges inside the layout's keys.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn query_tile(
    lay: &Layout,
    q: &[f32],
    ranges: &[(usize, usize)],
    m: &mut [f32],
    l: &mut [f32],
    out: &mut [f32],
) {
    let (d, n) = (lay.d, ranges.len());
    let steps = d / K;
    let live = ranges.iter().filter(|r| r.0 < r.1);
    let (ulo, uhi) = live.fold((usize::MAX, 0), |(a, b), r| (a.min(r.0), b.max(r.1)));
    if ulo >= uhi {
        return;
    }
    // Q (scaled) as two A tiles per 32-column step, `[row tile][step][row][32]`: its bf16
    // rounding in `qb`, the rounded remainder in `ql`.
    let mut qb = vec![0u8; 2 * steps * BYTES];
    let mut ql = vec![0u8; 2 * steps * BYTES];
    let scale = _mm512_set1_ps(lay.params.scale);
    for (i, row) in q.chunks_exact(d).enumerate() {
        for s in 0..steps {
            // SAFETY: 32 floats of row i at s·32; 64 bytes inside qb and ql.
            unsafe {
                let p = row.as_ptr().add(s * K);
                let (ah, al) = split(_mm512_mul_ps(_mm512_loadu_ps(p), scale));
                let (bh, bl) = split(_mm512_mul_ps(_mm512_loadu_ps(p.add(16)), scale));
                let at = ((i / ROWS) * steps + s) * BYTES + (i % ROWS) * 64;
                for (buf, x, y) in [(&mut qb, ah, bh), (&mut ql, al, bl)] {
                    let o = buf.as_mut_ptr().add(at);
                    _mm256_storeu_si256(o.cast(), x);
                    _mm256_storeu_si256(o.add(32).cast(), y);
                }
            }
        }
    }
    #[repr(C, align(64))]
    struct Step {
        /// Logits, then probabilities: `[row][key]`.
        s: [[f32; KS]; QT],
        /// Probabilities as A tiles: `[row tile][32-key chunk][row][32]`.
        p: [u8; QT * KS * 2],
    }
    let mut st = Step {
        s: [[0.0; KS]; QT],
        p: [0; QT * KS * 2],
    };
    // The rows' running sums so far (padding rows stay zero).
    let mut acc = vec![0.0f32; QT * d];
    acc[..n * d].copy_from_slice(out);
    // SAFETY: module contract.
    let mut t = unsafe { Tiles::new() };
    let (kblk, vchunk) = (steps * BYTES, (d / ROWS) * BYTES);
    let mut t0 = ulo / K * K;
    while t0 < uhi {
        let t1 = (t0 + KS).min(uhi);
        let nc = (t1 - t0).div_ceil(K);
        // Logits: 32 keys (two 16-key blocks) at a time, every row tile, as
        // `qb·kt + qb·kl + ql·kt` (the 16-bit q times the exact f16 k, but for `ql·kl`).
        for c in 0..nc {
            let at = (t0 / ROWS + 2 * c) * kblk;
            let (kh, kr) = (lay.kt[at..].as_ptr(), lay.kl[at..].as_ptr());
            let s = st.s.as_mut_ptr().cast::<f32>();
            t.zero();
            // SAFETY: keys t0+32c..+32 lie in the padded layout; `s` has 32 rows of KS.
            unsafe {
                for (a, b) in [(&qb, kh), (&qb, kr), (&ql, kh)] {
                    t.dot(
                        [a.as_ptr(), a.as_ptr().add(steps * BYTES)],
                        BYTES,
                        [b, b.add(kblk)],
                        BYTES,
                        steps,
                    );
                }
                let at = |i: usize, j: usize| s.add(i * ROWS * KS + K * c + j * ROWS);
                t.store([at(0, 0), at(0, 1), at(1, 0), at(1, 1)], KS * 4);
            }
        }
        let mut alpha = [1.0f32; QT];
        for (i, &(lo, hi)) in ranges.iter().enumerate() {
            let (a, e) = (lo.max(t0), hi.min(t1));
            let row = &mut st.s[i][..nc * K];
            if a >= e {
                row.fill(0.0);
            } else {
                let (a, e) = (a - t0, e - t0);
                row[..a].fill(0.0);
                row[e..].fill(0.0);
                (m[i], l[i], alpha[i]) = softmax_step(lay, &mut row[a..e], m[i], l[i]);
            }
            // The row's probabilities into its A tiles; l gains their rounded sum.
            let mut sum = _mm512_setzero_ps();
            for (c, x) in row.chunks_exact(K).enumerate() {
                // SAFETY: 32 floats in; 64 bytes at row i of chunk c's tile, inside `p`.
                unsafe {
                    let (lo, hi) = (
                        bf16x16(_mm512_loadu_ps(x.as_ptr())),
                        bf16x16(_mm512_loadu_ps(x.as_ptr().add(16))),
                    );
                    let widen = |h: __m256i| {
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
                    };
                    sum = _mm512_add_ps(sum, _mm512_add_ps(widen(lo), widen(hi)));
                    let o =
                        st.p.as_mut_ptr()
                            .add(((i / ROWS) * (KS / K) + c) * BYTES + (i % ROWS) * 64);
                    _mm256_storeu_si256(o.cast(), lo);
                    _mm256_storeu_si256(o.add(32).cast(), hi);
                }
            }
            if a < e {
                l[i] += _mm512_reduce_add_ps(sum);
            }
        }
        for (i, o) in acc.chunks_exact_mut(d).enumerate().take(n) {
            if alpha[i] != 1.0 {
                let w = alpha[i];
                o.iter_mut().for_each(|x| *x *= w);
            }
        }
        // O += P·V: two 16-column blocks of both row tiles at a time.
        let o = acc.as_mut_ptr();
        let v0 = (t0 / K) * vchunk;
        for nb in (0..d / ROWS).step_by(2) {
            let at = |i: usize, j: usize| o.wrapping_add(i * ROWS * d + (nb + j) * ROWS);
            let c = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
            let b0 = lay.vt[v0 + nb * BYTES..].as_ptr();
            // SAFETY: `acc` holds 32 rows of d; chunks t0/32.. of V lie in the padded layout;
            // `p` holds the nc chunks of both row tiles.
            unsafe {
                t.load(c.map(|p| p.cast_const()), d * 4);
                t.dot(
                    [st.p.as_ptr(), st.p.as_ptr().add((KS / K) * BYTES)],
                    BYTES,
                    [b0, b0.add(BYTES)],
                    vchunk,
                    nc,
                );
                t.store(c, d * 4);
            }
        }
        t0 += KS;
    }
    drop(t);
    out.copy_from_slice(&acc[..n * d]);
}

/// One row's online-softmax update over its visible logits `x` (in place: logits in,
/// unrounded probabilities out): returns the new `(m, l, alpha)`, `l` without this step's sum
/// (added by the caller from the rounded probabilities).
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn softmax_step(lay: &Layout, x: &mut [f32], m: f32, l: f32) -> (f32, f32, f32) {
    let level = SimdLevel::Avx2;
    if let Some(cap) = lay.params.softcap {
        let inv = 1.0 / cap;
        x.iter_mut().for_each(|v| *v *= inv);
        ops::tanh_inplace_at(level, x);
        x.iter_mut().for_each(|v| *v *= cap);
    }
    // Max ignoring NaN (`vmaxps` returns its second operand when one is NaN); a NaN logit
    // still poisons p, l and the output.
    let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in x.chunks(16) {
        let mask: __mmask16 = if c.len() == 16 {
            !0
        } else {
            (1 << c.len()) - 1
        };
        // SAFETY: the mask covers the chunk's elements only.
        let v = unsafe { _mm512_mask_loadu_ps(acc, mask, c.as_ptr()) };
        acc = _mm512_max_ps(v, acc);
    }
    let tmax = _mm512_reduce_max_ps(acc);
    let m_new = if tmax > m { tmax } else { m };
    let alpha = ops::exp_s(m - m_new);
    let sub = _mm512_set1_ps(m_new);
    for c in x.chunks_mut(16) {
        let mask: __mmask16 = if c.len() == 16 {
            !0
        } else {
            (1 << c.len()) - 1
        };
        // SAFETY: as above.
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, c.as_ptr());
            _mm512_mask_storeu_ps(c.as_mut_ptr(), mask, _mm512_sub_ps(v, sub));
        }
    }
    ops::exp_inplace_at(level, x);
    (m_new, l * alpha, alpha)
}
