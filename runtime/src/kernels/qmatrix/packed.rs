//! Integer weights repacked for the AVX-512 products (decode, batched decode, prefill): 16 rows
//! interleaved per pair of columns, so one 512-bit `vpdpwssd` multiplies a pair of columns of
//! 16 weight rows by one broadcast pair of activations.
//!
//! Why: the stored block formats put a row's 32 columns in one block, so a product with `N`
//! activation rows costs a horizontal dot product (and its scaling) per block, per row, per
//! activation row — instruction-bound on 2 cores, and a batch of 8 sessions ran at only 1.8x
//! one session. Here the lanes are 16 weight rows: a 32-column sub-block of 16 rows is 16
//! `vpdpwssd` per activation row plus 3 instructions of scaling, each weight pair widened once
//! for all activation rows.
//!
//! Every supported format has integer values in one signed byte and affine scales per
//! sub-block, `w = a·q − b` (`b` only where the format has a min), so the repacking is exact:
//! [`Packed::dequantize_rows`] equals [`BlockFormat::dequantize`] bit for bit. The products use
//! 16-bit activation blocks (`d = amax/32767`) and, per sub-block, `acc += (a·d_x)·Σq·x_q`
//! (fused) then `acc −= b·s_x` (fused); the scalar kernel here and the AVX-512 one
//! ([`super::avx512`]) do the same operations in the same order, so they agree bit for bit,
//! and a row's result does not depend on how many activation rows share the pass.

use rayon::prelude::*;

use super::super::blocks::{BlockFormat, f16, k4_scales_mins};
use super::ActRow;
use super::scalar::{qh, unpack32};

/// Weight rows interleaved per group (the lanes of a 512-bit register of i32).
pub(super) const GROUP: usize = 16;

/// The formats that repack without loss into signed bytes with affine sub-block scales.
pub(super) fn packable(format: BlockFormat) -> bool {
    use BlockFormat::*;
    matches!(
        format,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K
    )
}

/// A `[rows, cols]` matrix in the interleaved layout.
pub(super) struct Packed {
    /// `[group][sub-block][pair][row of 16][2]`: the pair `(2k, 2k+1)` of a sub-block's 16 rows
    /// is 32 consecutive bytes.
    pub(super) q: Vec<i8>,
    /// `[group][sub-block][row of 16]`: the scale `a` of each row's sub-block.
    pub(super) a: Scales,
    /// `[group][32-column block][row of 16]`: the min `b` (empty when the format has none).
    pub(super) b: Vec<f32>,
    /// Columns per sub-block: 32, or 16 for Q6_K (a scale per 16 columns).
    pub(super) sub: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

/// The per-sub-block scales: f16 where that is exact (Q4_0, Q5_0 and Q8_0 store `d` in f16),
/// which keeps the LM head as small as its Q8_0 file; f32 otherwise (the K-quants' `d·sc`).
pub(super) enum Scales {
    F16(Vec<u16>),
    F32(Vec<f32>),
}

impl Scales {
    fn get(&self, i: usize) -> f32 {
        match self {
            Scales::F16(v) => f16_bits(v[i]),
            Scales::F32(v) => v[i],
        }
    }

    fn len(&self) -> usize {
        match self {
            Scales::F16(v) => v.len(),
            Scales::F32(v) => v.len(),
        }
    }

    fn elem_bytes(&self) -> usize {
        match self {
            Scales::F16(_) => 2,
            Scales::F32(_) => 4,
        }
    }
}

fn f16_bits(h: u16) -> f32 {
    let [lo, hi] = h.to_le_bytes();
    f16(lo, hi)
}

impl Packed {
    /// Repack `rows` rows of `format` (a [`packable`] one, `cols` a whole number of its
    /// blocks), `chunk` groups at a time; `done(rows)` runs after each chunk (the caller
    /// releases those rows' source pages, so the load peak holds one chunk twice, not the
    /// matrix). Rows past the last whole group are zeros.
    pub(super) fn new(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: &[u8],
        mut done: impl FnMut(std::ops::Range<usize>),
    ) -> Packed {
        assert!(packable(format), "{} does not repack", format.name());
        let row_bytes = format.row_bytes(cols).expect("whole blocks");
        assert_eq!(data.len(), rows * row_bytes);
        let sub = if format == BlockFormat::Q6_K { 16 } else { 32 };
        let has_min = matches!(
            format,
            BlockFormat::Q4_1 | BlockFormat::Q5_1 | BlockFormat::Q4_K | BlockFormat::Q5_K
        );
        let half = matches!(
            format,
            BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0
        );
        let (nsub, nblk) = (cols / sub, cols / 32);
        let groups = rows.div_ceil(GROUP);
        let mut q = vec![0i8; groups * GROUP * cols];
        let mut b = vec![0.0f32; if has_min { groups * GROUP * nblk } else { 0 }];
        let mut a16: Vec<u16> = Vec::with_capacity(if half { groups * GROUP * nsub } else { 0 });
        let mut a32: Vec<f32> = Vec::with_capacity(if half { 0 } else { groups * GROUP * nsub });
        let fill = |g: usize, qg: &mut [i8], ag: &mut [f32], bg: &mut [f32]| {
            let mut rq = vec![0i8; cols];
            let mut ra = vec![0.0f32; nsub];
            let mut rb = vec![0.0f32; nblk];
            for r in 0..GROUP.min(rows - g * GROUP) {
                let row = g * GROUP + r;
                row_ints(
                    format,
                    &data[row * row_bytes..(row + 1) * row_bytes],
                    &mut rq,
                    &mut ra,
                    &mut rb,
                );
                for s in 0..nsub {
                    for k in 0..sub / 2 {
                        let at = ((s * sub / 2 + k) * GROUP + r) * 2;
                        qg[at] = rq[s * sub + 2 * k];
                        qg[at + 1] = rq[s * sub + 2 * k + 1];
                    }
                    ag[s * GROUP + r] = ra[s];
                }
                if has_min {
                    for j in 0..nblk {
                        bg[j * GROUP + r] = rb[j];
                    }
                }
            }
        };
        // About 4 MiB of source per chunk.
        let chunk = (4 << 20) / (GROUP * row_bytes).max(1) + 1;
        let (qn, an, bn) = (GROUP * cols, GROUP * nsub, GROUP * nblk);
        let mut ac = Vec::new();
        for c0 in (0..groups).step_by(chunk) {
            let c1 = (c0 + chunk).min(groups);
            ac.clear();
            ac.resize((c1 - c0) * an, 0.0f32);
            let qc = q[c0 * qn..c1 * qn].par_chunks_mut(qn);
            let acs = ac.par_chunks_mut(an);
            if has_min {
                qc.zip(acs)
                    .zip(b[c0 * bn..c1 * bn].par_chunks_mut(bn))
                    .enumerate()
                    .for_each(|(g, ((qg, ag), bg))| fill(c0 + g, qg, ag, bg));
            } else {
                qc.zip(acs)
                    .enumerate()
                    .for_each(|(g, (qg, ag))| fill(c0 + g, qg, ag, &mut []));
            }
            if half {
                a16.extend(ac.iter().map(|&v| half::f16::from_f32(v).to_bits()));
            } else {
                a32.extend_from_slice(&ac);
            }
            done(c0 * GROUP..(c1 * GROUP).min(rows));
        }
        let a = if half {
            Scales::F16(a16)
        } else {
            Scales::F32(a32)
        };
        Packed {
            q,
            a,
            b,
            sub,
            rows,
            cols,
        }
    }

    /// Sub-blocks per row.
    pub(super) fn nsub(&self) -> usize {
        self.cols / self.sub
    }

    /// Bytes held.
    pub(super) fn byte_len(&self) -> usize {
        self.q.len() + self.a.elem_bytes() * self.a.len() + 4 * self.b.len()
    }

    /// Decode rows `rows` into `out` (`rows.len() * cols`, row-major): bit-identical to the
    /// stored format's decoder.
    pub(super) fn dequantize_rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let (cols, sub, nsub) = (self.cols, self.sub, self.nsub());
        let nblk = cols / 32;
        assert!(rows.end <= self.rows && out.len() == rows.len() * cols);
        for (row, out) in rows.zip(out.chunks_exact_mut(cols.max(1))) {
            let (g, r) = (row / GROUP, row % GROUP);
            let qg = &self.q[g * GROUP * cols..];
            for s in 0..nsub {
                let a = self.a.get((g * nsub + s) * GROUP + r);
                let b = if self.b.is_empty() {
                    None
                } else {
                    Some(self.b[(g * nblk + s * sub / 32) * GROUP + r])
                };
                for k in 0..sub / 2 {
                    let at = ((s * sub / 2 + k) * GROUP + r) * 2;
                    for e in 0..2 {
                        let v = a * f32::from(qg[at + e]);
                        out[s * sub + 2 * k + e] = match b {
                            Some(b) => v - b,
                            None => v,
                        };
                    }
                }
            }
        }
    }

    /// `outs[i][r - first] = W[r]·act[i]` for rows `first..first + outs[i].len()` (`first` a
    /// multiple of [`GROUP`]), with the AVX-512 kernel when `fast`, else the portable one
    /// (same results, bit for bit).
    pub(super) fn rows<const N: usize>(
        &self,
        fast: bool,
        first: usize,
        acts: &[ActRow<'_, i16>; N],
        outs: [&mut [f32]; N],
    ) {
        assert!(first.is_multiple_of(GROUP));
        let len = outs[0].len();
        assert!(first + len <= self.rows && outs.iter().all(|o| o.len() == len));
        for a in acts {
            assert!(a.qs.len() * 32 >= self.cols && a.d.len() * 32 >= self.cols);
            assert!(a.s.len() * 32 >= self.cols);
        }
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: `fast` is only passed when `simd::avx512()` detected AVX-512 F/BW/VNNI;
            // the lengths were checked above.
            unsafe { super::avx512::packed_rows(self, first, acts, outs) };
            return;
        }
        let _ = fast;
        self.rows_scalar(first, acts, outs);
    }

    /// The portable kernel: the AVX-512 one's operations in its order.
    fn rows_scalar<const N: usize>(
        &self,
        first: usize,
        acts: &[ActRow<'_, i16>; N],
        mut outs: [&mut [f32]; N],
    ) {
        let (cols, sub, nsub) = (self.cols, self.sub, self.nsub());
        let nblk = cols / 32;
        let len = outs[0].len();
        for g in first / GROUP..(first + len).div_ceil(GROUP) {
            let qg = &self.q[g * GROUP * cols..(g + 1) * GROUP * cols];
            let mut acc = [[0.0f32; GROUP]; N];
            for s in 0..nsub {
                let (j, off) = (s * sub / 32, s * sub % 32);
                for (i, act) in acts.iter().enumerate() {
                    let x = &act.qs[j][off..off + sub];
                    let dx = act.d[j];
                    for r in 0..GROUP {
                        let mut isum = 0i32;
                        for k in 0..sub / 2 {
                            let at = ((s * sub / 2 + k) * GROUP + r) * 2;
                            isum += i32::from(qg[at]) * i32::from(x[2 * k])
                                + i32::from(qg[at + 1]) * i32::from(x[2 * k + 1]);
                        }
                        let scale = self.a.get((g * nsub + s) * GROUP + r) * dx;
                        acc[i][r] = scale.mul_add(isum as f32, acc[i][r]);
                    }
                    if !self.b.is_empty() {
                        let sx = act.s[j];
                        for r in 0..GROUP {
                            let b = self.b[(g * nblk + j) * GROUP + r];
                            acc[i][r] = (-b).mul_add(sx, acc[i][r]);
                        }
                    }
                }
            }
            let r0 = g * GROUP - first;
            let n = GROUP.min(len - r0);
            for (out, acc) in outs.iter_mut().zip(&acc) {
                out[r0..r0 + n].copy_from_slice(&acc[..n]);
            }
        }
    }
}

/// One row of `format` as signed bytes `q` (`cols`), scales `a` (one per sub-block) and mins
/// `b` (one per 32 columns; untouched for formats without a min): `w = a·q − b`.
fn row_ints(format: BlockFormat, row: &[u8], q: &mut [i8], a: &mut [f32], b: &mut [f32]) {
    use BlockFormat::*;
    let bb = format.block_bytes();
    for (blk, x) in row.chunks_exact(bb).enumerate() {
        match format {
            Q8_0 | Q4_0 | Q5_0 | Q4_1 | Q5_1 => {
                let v: [i8; 32] = match format {
                    Q8_0 => std::array::from_fn(|k| x[2 + k] as i8),
                    Q4_0 => unpack32(&x[2..], 0, 8),
                    Q5_0 => unpack32(&x[6..], qh(&x[2..]), 16),
                    Q4_1 => unpack32(&x[4..], 0, 0),
                    _ => unpack32(&x[8..], qh(&x[4..]), 0),
                };
                q[32 * blk..32 * blk + 32].copy_from_slice(&v);
                a[blk] = f16(x[0], x[1]);
                if matches!(format, Q4_1 | Q5_1) {
                    b[blk] = -f16(x[2], x[3]);
                }
            }
            Q4_K | Q5_K => {
                let q5 = format == Q5_K;
                let (d, dmin) = (f16(x[0], x[1]), f16(x[2], x[3]));
                let (sc, mn) = k4_scales_mins(x[4..16].try_into().expect("12 scale bytes"));
                let qs = if q5 { &x[48..] } else { &x[16..] };
                for k in 0..8 {
                    let (g, shift) = (k / 2, 4 * (k % 2));
                    for l in 0..32 {
                        let high = if q5 { ((x[16 + l] >> k) & 1) << 4 } else { 0 };
                        q[256 * blk + 32 * k + l] = (((qs[32 * g + l] >> shift) & 15) | high) as i8;
                    }
                    a[8 * blk + k] = d * f32::from(sc[k]);
                    b[8 * blk + k] = dmin * f32::from(mn[k]);
                }
            }
            Q6_K => {
                let d = f16(x[208], x[209]);
                for n in 0..2 {
                    let ql = &x[64 * n..64 * n + 64];
                    let qhb = &x[128 + 32 * n..128 + 32 * n + 32];
                    let sc = &x[192 + 8 * n..192 + 8 * n + 8];
                    for k in 0..4 {
                        let base = 256 * blk + 32 * (4 * n + k);
                        for l in 0..32 {
                            let low = (ql[l + 32 * (k & 1)] >> (4 * (k >> 1))) & 15;
                            let high = (qhb[l] >> (2 * k)) & 3;
                            q[base + l] = (low | (high << 4)) as i8 - 32;
                        }
                        let s16 = 16 * blk + 2 * (4 * n + k);
                        a[s16] = d * f32::from(sc[2 * k] as i8);
                        a[s16 + 1] = d * f32::from(sc[2 * k + 1] as i8);
                    }
                }
            }
            _ => unreachable!("not packable"),
        }
    }
}
