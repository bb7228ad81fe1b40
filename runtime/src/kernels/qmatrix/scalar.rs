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
pub(super) fn unpack32(qs: &[u8], qh: u32, off: i8) -> [i8; 32] {
    let mut w = [0i8; 32];
    for k in 0..16 {
        let h0 = ((qh >> k) & 1) as u8;
        let h1 = ((qh >> (k + 16)) & 1) as u8;
        w[k] = ((qs[k] & 15) | (h0 << 4)) as i8 - off;
        w[k + 16] = ((qs[k] >> 4) | (h1 << 4)) as i8 - off;
    }
    w
}

pub(super) fn qh(b: &[u8]) -> u32 {
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
