//! Weight block formats (ggml's layouts), defined once: sizes, names, per-block decoders,
//! and the few encoders needed for load-time conversion.
//!
//! The per-block decoders are the reference semantics: the GGUF reader dequantizes through
//! them and the matrix kernels in [`super::qmatrix`] are tested against them.

/// A weight storage format: plain floats (block length 1) or one of ggml's block quantizations
/// (32 or 256 elements per block, stored little-endian exactly as in GGUF files).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
}

impl BlockFormat {
    /// Every format, for tests and tables.
    pub const ALL: [BlockFormat; 14] = [
        BlockFormat::F32,
        BlockFormat::F16,
        BlockFormat::BF16,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q8_0,
        BlockFormat::Q2_K,
        BlockFormat::Q3_K,
        BlockFormat::Q4_K,
        BlockFormat::Q5_K,
        BlockFormat::Q6_K,
        BlockFormat::Q8_K,
    ];

    /// Lower-case name as llama.cpp prints it (`"q4_k"`, `"f16"`).
    pub fn name(self) -> &'static str {
        use BlockFormat::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            BF16 => "bf16",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q2_K => "q2_k",
            Q3_K => "q3_k",
            Q4_K => "q4_k",
            Q5_K => "q5_k",
            Q6_K => "q6_k",
            Q8_K => "q8_k",
        }
    }

    /// Elements per block (ggml `blck_size`).
    pub fn block_len(self) -> usize {
        use BlockFormat::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => 256,
        }
    }

    /// Bytes per block (ggml `type_size`, i.e. `sizeof(block_xx)`).
    pub fn block_bytes(self) -> usize {
        use BlockFormat::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 18,  // f16 d, u8 qs[16]
            Q4_1 => 20,  // f16 d, f16 m, u8 qs[16]
            Q5_0 => 22,  // f16 d, u8 qh[4], u8 qs[16]
            Q5_1 => 24,  // f16 d, f16 m, u8 qh[4], u8 qs[16]
            Q8_0 => 34,  // f16 d, i8 qs[32]
            Q2_K => 84,  // u8 scales[16], u8 qs[64], f16 d, f16 dmin
            Q3_K => 110, // u8 hmask[32], u8 qs[64], u8 scales[12], f16 d
            Q4_K => 144, // f16 d, f16 dmin, u8 scales[12], u8 qs[128]
            Q5_K => 176, // f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]
            Q6_K => 210, // u8 ql[128], u8 qh[64], i8 scales[16], f16 d
            Q8_K => 292, // f32 d, i8 qs[256], i16 bsums[16]
        }
    }

    /// Bytes of one row of `cols` elements; `None` if `cols` is not a whole number of blocks
    /// (rows never share a block) or the size overflows.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(self.block_len()) {
            return None;
        }
        (cols / self.block_len()).checked_mul(self.block_bytes())
    }

    /// Decode `dst.len() / block_len` whole blocks from `src` into `dst`.
    ///
    /// # Panics
    /// If `dst.len()` is not a whole number of blocks or `src` is not exactly that many blocks'
    /// bytes. Callers validate lengths up front; a mismatch here is a bug, not bad input.
    pub fn dequantize(self, src: &[u8], dst: &mut [f32]) {
        let n_blocks = dst.len() / self.block_len();
        assert!(
            dst.len().is_multiple_of(self.block_len())
                && src.len() == n_blocks * self.block_bytes(),
            "{}: {} bytes cannot decode into {} elements",
            self.name(),
            src.len(),
            dst.len()
        );
        use BlockFormat::*;
        match self {
            F32 => blocks::<4, 1>(src, dst, |b, y| y[0] = f32::from_le_bytes(*b)),
            F16 => blocks::<2, 1>(src, dst, |b, y| y[0] = f16(b[0], b[1])),
            BF16 => blocks::<2, 1>(src, dst, |b, y| y[0] = bf16(b[0], b[1])),
            Q4_0 => blocks(src, dst, block_q4_0),
            Q4_1 => blocks(src, dst, block_q4_1),
            Q5_0 => blocks(src, dst, block_q5_0),
            Q5_1 => blocks(src, dst, block_q5_1),
            Q8_0 => blocks(src, dst, block_q8_0),
            Q2_K => blocks(src, dst, block_q2_k),
            Q3_K => blocks(src, dst, block_q3_k),
            Q4_K => blocks(src, dst, block_q4_k),
            Q5_K => blocks(src, dst, block_q5_k),
            Q6_K => blocks(src, dst, block_q6_k),
            Q8_K => blocks(src, dst, block_q8_k),
        }
    }
}

impl std::fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Encode `src` in `format`, for load-time `--weights q8_0|f16|bf16|f32` conversion.
///
/// Q8_0 follows ggml's reference rule (`d = amax/127`, `q = round(x/d)` half away from zero,
/// `d` stored as f16), F16/BF16 round to nearest even, F32 is a plain copy. Returns `None` for
/// the other formats (their encoders search for scales; nothing here needs them) or when
/// `src.len()` is not a whole number of blocks.
pub fn quantize(format: BlockFormat, src: &[f32]) -> Option<Vec<u8>> {
    let bytes = format.row_bytes(src.len())?;
    let mut out = Vec::with_capacity(bytes);
    match format {
        BlockFormat::F32 => src
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        BlockFormat::F16 => src
            .iter()
            .for_each(|&x| out.extend_from_slice(&half::f16::from_f32(x).to_bits().to_le_bytes())),
        BlockFormat::BF16 => src
            .iter()
            .for_each(|&x| out.extend_from_slice(&half::bf16::from_f32(x).to_bits().to_le_bytes())),
        BlockFormat::Q8_0 => {
            for x in src.chunks_exact(32) {
                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
                out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
            }
        }
        _ => return None,
    }
    debug_assert_eq!(out.len(), bytes);
    Some(out)
}

/// Drive a per-block decoder over fixed-size array views, so each block
/// function sees `&[u8; B]` / `&mut [f32; N]` and the compiler can drop all
/// bounds checks inside it. Lengths were validated by the caller.
#[inline(always)]
pub(crate) fn blocks<const B: usize, const N: usize>(
    src: &[u8],
    dst: &mut [f32],
    f: impl Fn(&[u8; B], &mut [f32; N]),
) {
    let (src, _) = src.as_chunks::<B>();
    let (dst, _) = dst.as_chunks_mut::<N>();
    for (b, y) in src.iter().zip(dst.iter_mut()) {
        f(b, y);
    }
}

/// bf16 is the top half of an f32; ggml converts by a plain shift.
#[inline(always)]
pub(super) fn bf16(lo: u8, hi: u8) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([lo, hi])) << 16)
}

/// Q4_K/Q5_K's 8 six-bit scales and 8 six-bit mins unpacked at once (ggml's `utmp` shuffle);
/// equal to [`scale_min_k4`] for `j` in `0..8`, but branch-free for the dot-product kernels.
#[inline(always)]
pub(super) fn k4_scales_mins(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const M1: u32 = 0x3f3f_3f3f;
    const M2: u32 = 0x0f0f_0f0f;
    const M3: u32 = 0x0303_0303;
    let u = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let sc_lo = u0 & M1;
    let sc_hi = (u2 & M2) | (((u0 >> 6) & M3) << 4);
    let mn_lo = u1 & M1;
    let mn_hi = ((u2 >> 4) & M2) | (((u1 >> 6) & M3) << 4);
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    sc[..4].copy_from_slice(&sc_lo.to_le_bytes());
    sc[4..].copy_from_slice(&sc_hi.to_le_bytes());
    mn[..4].copy_from_slice(&mn_lo.to_le_bytes());
    mn[4..].copy_from_slice(&mn_hi.to_le_bytes());
    (sc, mn)
}

#[inline(always)]
pub(super) fn f16(lo: u8, hi: u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

/// Q8_0: `y = d * q`, q signed 8-bit.
#[inline(always)]
pub(super) fn block_q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    let qs = &b[2..34];
    for j in 0..32 {
        y[j] = f32::from(qs[j] as i8) * d;
    }
}

/// Q4_0: `y = (q - 8) * d`; byte j holds element j (low nibble) and j+16 (high).
#[inline(always)]
pub(super) fn block_q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: `y = q * d + m`, same nibble layout as Q4_0.
#[inline(always)]
pub(super) fn block_q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    let m = f16(b[2], b[3]);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = f32::from(qs[j] & 0x0F) * d + m;
        y[j + 16] = f32::from(qs[j] >> 4) * d + m;
    }
}

/// Q5_0: 5-bit `q` = nibble | (bit j of `qh` << 4); `y = (q - 16) * d`.
#[inline(always)]
pub(super) fn block_q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        let x0 = ((u32::from(qs[j] & 0x0F) | h0) as i32) - 16;
        let x1 = ((u32::from(qs[j] >> 4) | h1) as i32) - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

/// Q5_1: like Q5_0 but unsigned with a min: `y = q * d + m`.
#[inline(always)]
pub(super) fn block_q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    let m = f16(b[2], b[3]);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        let x0 = u32::from(qs[j] & 0x0F) | h0;
        let x1 = u32::from(qs[j] >> 4) | h1;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

/// Q2_K: 16 sub-blocks of 16; each scale byte = 4-bit scale | 4-bit min << 4;
/// `y = d*sc*q - dmin*m` with 2-bit q. Each 32-byte run of `qs` feeds 128
/// outputs, 2 bits per pass (shift 0,2,4,6).
#[inline(always)]
pub(super) fn block_q2_k(b: &[u8; 84], y: &mut [f32; 256]) {
    let scales = &b[0..16];
    let qs_all = &b[16..80];
    let d = f16(b[80], b[81]);
    let dmin = f16(b[82], b[83]);
    for half in 0..2 {
        let qs = &qs_all[32 * half..32 * half + 32];
        for j in 0..4 {
            let shift = 2 * j;
            for sub in 0..2 {
                let sc = scales[8 * half + 2 * j + sub];
                let dl = d * f32::from(sc & 0x0F);
                let ml = dmin * f32::from(sc >> 4);
                let q = &qs[16 * sub..16 * sub + 16];
                let base = 128 * half + 32 * j + 16 * sub;
                let out = &mut y[base..base + 16];
                for l in 0..16 {
                    out[l] = dl * f32::from((q[l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/// Unpack Q3_K's 16 six-bit scales from 12 bytes: low nibbles live in bytes
/// 0..8 (scales 0..8 in the low nibble, 8..16 in the high nibble), the top
/// two bits in bytes 8..12 (scale j uses byte 8 + j%4, bit pair j/4).
#[inline(always)]
pub(super) fn q3_k_scales(sc: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { sc[j] & 0x0F } else { sc[j - 8] >> 4 };
        let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = i32::from(low | (high << 4)) - 32;
    }
    out
}

/// Q3_K: 3-bit q = 2 low bits from `qs` + 1 high bit from `hmask` (bit clear
/// means subtract 4); `y = d * (scale - 32) * q`.
#[inline(always)]
pub(super) fn block_q3_k(b: &[u8; 110], y: &mut [f32; 256]) {
    let hmask = &b[0..32];
    let qs_all = &b[32..96];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16(b[108], b[109]);
    for half in 0..2 {
        let qs = &qs_all[32 * half..32 * half + 32];
        for j in 0..4 {
            let shift = 2 * j;
            let m = 1u8 << (4 * half + j); // hmask bit advances across both halves
            for sub in 0..2 {
                let dl = d * scales[8 * half + 2 * j + sub] as f32;
                let q = &qs[16 * sub..16 * sub + 16];
                let hm = &hmask[16 * sub..16 * sub + 16];
                let base = 128 * half + 32 * j + 16 * sub;
                let out = &mut y[base..base + 16];
                for l in 0..16 {
                    let low = i32::from((q[l] >> shift) & 3);
                    let sub4 = if hm[l] & m != 0 { 0 } else { 4 };
                    out[l] = dl * (low - sub4) as f32;
                }
            }
        }
    }
}

/// Q4_K/Q5_K 6-bit (scale, min) pair `j` of 8 from the 12-byte `scales`
/// (ggml `get_scale_min_k4`): pairs 0..4 are the low 6 bits of bytes 0..4 /
/// 4..8; pairs 4..8 take a nibble from bytes 8..12 plus the spare top 2 bits.
#[inline(always)]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: 8 sub-blocks of 32; `y = d*sc*q - dmin*m`, 4-bit q. Each 32-byte run
/// of `qs` holds 64 outputs: low nibbles first, then high nibbles.
#[inline(always)]
pub(super) fn block_q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = f16(b[0], b[1]);
    let dmin = f16(b[2], b[3]);
    let scales = &b[4..16];
    let qs_all = &b[16..144];
    for g in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * g, scales);
        let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let q = &qs_all[32 * g..32 * g + 32];
        let out = &mut y[64 * g..64 * g + 64];
        for l in 0..32 {
            out[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            out[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// Q5_K: Q4_K plus a fifth bit per element from `qh` (bit 2g for the low
/// nibbles of group g, bit 2g+1 for the high nibbles).
#[inline(always)]
pub(super) fn block_q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = f16(b[0], b[1]);
    let dmin = f16(b[2], b[3]);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs_all = &b[48..176];
    for g in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * g, scales);
        let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let u1 = 1u8 << (2 * g);
        let u2 = 2u8 << (2 * g);
        let q = &qs_all[32 * g..32 * g + 32];
        let out = &mut y[64 * g..64 * g + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            out[l] = d1 * f32::from((q[l] & 0x0F) + h1) - m1;
            out[l + 32] = d2 * f32::from((q[l] >> 4) + h2) - m2;
        }
    }
}

/// Q6_K: 6-bit q = 4 bits from `ql` + 2 bits from `qh`, signed 8-bit scale
/// per 16 elements; `y = d * sc * (q - 32)`. Each half (128 outputs) uses
/// 64 bytes of `ql`, 32 of `qh` and 8 scales.
#[inline(always)]
pub(super) fn block_q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = f16(b[208], b[209]);
    for half in 0..2 {
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        let sc = &sc_all[8 * half..8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            out[l] = d * f32::from(sc[is] as i8) * q1 as f32;
            out[l + 32] = d * f32::from(sc[is + 2] as i8) * q2 as f32;
            out[l + 64] = d * f32::from(sc[is + 4] as i8) * q3 as f32;
            out[l + 96] = d * f32::from(sc[is + 6] as i8) * q4 as f32;
        }
    }
}

/// Q8_K: f32 scale, 256 signed bytes; the trailing `bsums` are only for dot
/// products and ignored here.
#[inline(always)]
pub(super) fn block_q8_k(b: &[u8; 292], y: &mut [f32; 256]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let qs = &b[4..260];
    for j in 0..256 {
        y[j] = d * f32::from(qs[j] as i8);
    }
}

#[cfg(test)]
// Index loops mirror the documented per-element layout arithmetic.
#[allow(clippy::needless_range_loop)]
mod tests;
