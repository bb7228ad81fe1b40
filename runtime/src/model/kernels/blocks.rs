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
fn blocks<const B: usize, const N: usize>(
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
mod tests {
    use super::*;

    // ----- helpers ---------------------------------------------------------

    fn h(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_bits().to_le_bytes()
    }

    use crate::model::kernels::test_rng::Rng;

    fn deq(ty: BlockFormat, bytes: &[u8]) -> Vec<f32> {
        let n = bytes.len() / ty.block_bytes() * ty.block_len();
        let mut out = vec![123.0; n];
        ty.dequantize(bytes, &mut out);
        out
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    // ----- per-type block decoding -------------------------------------------

    #[test]
    fn dequant_plain_types() {
        assert_eq!(
            deq(BlockFormat::F32, &f32_bytes(&[1.25, -3.0])),
            [1.25, -3.0]
        );
        let f16s: Vec<u8> = [0x3C00u16, 0xC000, 0x3555, 0x7C00]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let v = deq(BlockFormat::F16, &f16s);
        // 0x3C00 = 1.0, 0xC000 = -2.0, 0x7C00 = +inf;
        // 0x3555: exponent 0b01101 = 13 -> 2^(13-15) = 0.25, mantissa 0x155 = 341
        //         -> (1 + 341/1024) * 0.25 = 0.333251953125
        assert_eq!(v, [1.0, -2.0, (1.0 + 341.0 / 1024.0) * 0.25, f32::INFINITY]);
        // bf16 0x4049 -> f32 bits 0x40490000 = 3.140625
        assert_eq!(deq(BlockFormat::BF16, &[0x49, 0x40]), [3.140625]);
    }
    #[test]
    fn dequant_q8_0() {
        let mut b = h(0.25).to_vec(); // d = 0.25
        b.extend((0..32).map(|j| (j as i8 * 4 - 64) as u8));
        let v = deq(BlockFormat::Q8_0, &b);
        // j=0: q=-64 -> -16.0 ; j=31: q=60 -> 15.0
        assert_eq!((v[0], v[31]), (-16.0, 15.0));
        for j in 0..32 {
            assert_eq!(v[j], (j as f32 * 4.0 - 64.0) * 0.25, "j={j}");
        }
    }

    #[test]
    fn dequant_q4_0() {
        let mut rng = Rng(1);
        let qs = rng.bytes(16);
        let mut b = h(0.5).to_vec();
        b.extend_from_slice(&qs);
        b[2] = 0x1F; // element 0 = (0xF - 8) * 0.5 = 3.5, element 16 = (0x1 - 8) * 0.5 = -3.5
        let v = deq(BlockFormat::Q4_0, &b);
        assert_eq!((v[0], v[16]), (3.5, -3.5));
        for i in 0..32 {
            let byte = b[2 + i % 16];
            let q = if i < 16 { byte & 15 } else { byte >> 4 };
            assert_eq!(v[i], (q as f32 - 8.0) * 0.5, "i={i}");
        }
    }

    #[test]
    fn dequant_q4_1() {
        let mut rng = Rng(2);
        let mut b = [h(1.5), h(-2.0)].concat(); // d = 1.5, m = -2
        b.extend(rng.bytes(16));
        b[4] = 0xA3; // element 0: 3*1.5 - 2 = 2.5 ; element 16: 10*1.5 - 2 = 13.0
        let v = deq(BlockFormat::Q4_1, &b);
        assert_eq!((v[0], v[16]), (2.5, 13.0));
        for i in 0..32 {
            let byte = b[4 + i % 16];
            let q = if i < 16 { byte & 15 } else { byte >> 4 };
            assert_eq!(v[i], q as f32 * 1.5 - 2.0, "i={i}");
        }
    }

    #[test]
    fn dequant_q5_0() {
        let mut rng = Rng(3);
        // qh bit i is the 5th bit of element i.
        let qh: u32 = 0x8001_0002;
        let mut b = h(0.25).to_vec();
        b.extend_from_slice(&qh.to_le_bytes());
        b.extend(rng.bytes(16));
        b[6] = 0x0F; // element 0: q=0xF, bit0=0 -> (15-16)*0.25 = -0.25 ; element 16: q=0, bit16=1 -> (16-16)*0.25 = 0
        b[7] = 0xF0; // element 1: q=0, bit1=1 -> 0 ; element 17: q=0xF, bit17=0 -> -0.25
        let v = deq(BlockFormat::Q5_0, &b);
        assert_eq!((v[0], v[16], v[1], v[17]), (-0.25, 0.0, 0.0, -0.25));
        // element 31: bit31 = 1 so q = (hi nibble of b[6+15]) + 16
        for i in 0..32 {
            let byte = b[6 + i % 16];
            let low = if i < 16 { byte & 15 } else { byte >> 4 };
            let q = low as u32 + 16 * ((qh >> i) & 1);
            assert_eq!(v[i], (q as f32 - 16.0) * 0.25, "i={i}");
        }
    }

    #[test]
    fn dequant_q5_1() {
        let mut rng = Rng(4);
        let qh: u32 = rng.next() as u32;
        let mut b = [h(0.5), h(1.0)].concat(); // d = 0.5, m = 1
        b.extend_from_slice(&qh.to_le_bytes());
        b.extend(rng.bytes(16));
        let v = deq(BlockFormat::Q5_1, &b);
        for i in 0..32 {
            let byte = b[8 + i % 16];
            let low = if i < 16 { byte & 15 } else { byte >> 4 };
            let q = low as u32 + 16 * ((qh >> i) & 1);
            assert_eq!(v[i], q as f32 * 0.5 + 1.0, "i={i}");
        }
        // max possible value: q = 31 -> 31*0.5+1 = 16.5
        assert!(v.iter().all(|&x| (1.0..=16.5).contains(&x)));
    }

    // K-quant tests: pick logical values (quants, sub-block scales, mins)
    // at random, *encode* them following the documented bit layout
    // element-by-element, decode with the module and compare against the
    // straightforward formula. d/dmin are powers of two so every product
    // is exact and equality is exact.

    /// Encode 8 (scale, min) 6-bit pairs into Q4_K/Q5_K's 12 bytes:
    /// bytes 0..4 = scale[0..4] | (scale[4..8] >> 4) << 6,
    /// bytes 4..8 = min[0..4]   | (min[4..8] >> 4) << 6,
    /// bytes 8..12 = (scale[4..8] & 15) | (min[4..8] & 15) << 4.
    fn pack_k4_scales(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
        let mut out = [0u8; 12];
        for i in 0..4 {
            out[i] = sc[i] | ((sc[i + 4] >> 4) << 6);
            out[i + 4] = mn[i] | ((mn[i + 4] >> 4) << 6);
            out[i + 8] = (sc[i + 4] & 15) | ((mn[i + 4] & 15) << 4);
        }
        out
    }

    #[test]
    fn dequant_q2_k() {
        let mut rng = Rng(5);
        let (d, dmin) = (0.5f32, 0.25f32);
        let q: Vec<u8> = (0..256).map(|_| rng.below(4) as u8).collect();
        let sc: Vec<u8> = (0..16).map(|_| rng.below(16) as u8).collect();
        let mn: Vec<u8> = (0..16).map(|_| rng.below(16) as u8).collect();
        let mut b = vec![0u8; 84];
        for s in 0..16 {
            b[s] = sc[s] | (mn[s] << 4);
        }
        // Element i: half n = i/128, shift pair j = (i%128)/32, l = i%32
        // -> qs[32n + l] bits 2j..2j+2; sub-block = i/16.
        for i in 0..256 {
            let (n, j, l) = (i / 128, (i % 128) / 32, i % 32);
            b[16 + 32 * n + l] |= q[i] << (2 * j);
        }
        b[80..82].copy_from_slice(&h(d));
        b[82..84].copy_from_slice(&h(dmin));
        let v = deq(BlockFormat::Q2_K, &b);
        for i in 0..256 {
            let s = i / 16;
            let want = d * sc[s] as f32 * q[i] as f32 - dmin * mn[s] as f32;
            assert_eq!(v[i], want, "i={i}");
        }
        // Hand check: element 0 uses scale byte 0 = sc0 | mn0<<4.
        b[0] = 0x3A; // scale 10, min 3
        b[16] = (b[16] & !3) | 2; // q = 2
        // y0 = 0.5*10*2 - 0.25*3 = 9.25
        assert_eq!(deq(BlockFormat::Q2_K, &b)[0], 9.25);
    }

    #[test]
    fn dequant_q3_k() {
        let mut rng = Rng(6);
        let d = 0.125f32;
        // 3-bit signed quants in -4..=3 and 6-bit scales stored with +32 bias.
        let q: Vec<i32> = (0..256).map(|_| rng.below(8) as i32 - 4).collect();
        let sc: Vec<u8> = (0..16).map(|_| rng.below(64) as u8).collect();
        let mut b = vec![0u8; 110];
        for i in 0..256 {
            let (n, j, l) = (i / 128, (i % 128) / 32, i % 32);
            // q = low2 - (hbit ? 0 : 4)  <=>  low2 = q & 3, hbit = q >= 0
            let low2 = (q[i] & 3) as u8;
            b[32 + 32 * n + l] |= low2 << (2 * j);
            if q[i] >= 0 {
                b[l] |= 1 << (4 * n + j); // hmask[l], bit per (half, shift)
            }
        }
        // Scale s: low 4 bits -> byte s%8 nibble s/8; high 2 bits -> byte 8+s%4 bits 2*(s/4).
        for s in 0..16 {
            b[96 + s % 8] |= (sc[s] & 15) << (4 * (s / 8));
            b[96 + 8 + s % 4] |= (sc[s] >> 4) << (2 * (s / 4));
        }
        b[108..110].copy_from_slice(&h(d));
        let v = deq(BlockFormat::Q3_K, &b);
        for i in 0..256 {
            let want = d * (sc[i / 16] as f32 - 32.0) * q[i] as f32;
            assert_eq!(v[i], want, "i={i}");
        }
        // Hand check of element 0: force scale 0 = 40 (8 after bias), q0 = -3.
        for s in [96usize, 104] {
            b[s] &= if s == 96 { 0xF0 } else { 0xFC };
        }
        b[96] |= 40 & 15; // low nibble 8
        b[104] |= 40 >> 4; // high bits 2 -> 0b10_1000 = 40
        b[32] = (b[32] & !3) | 1; // low2 = 1
        b[0] &= !1; // hbit clear -> subtract 4: q = 1 - 4 = -3
        // y0 = 0.125 * (40 - 32) * -3 = -3.0
        assert_eq!(deq(BlockFormat::Q3_K, &b)[0], -3.0);
    }

    fn k4_logical(rng: &mut Rng, qmax: u64) -> (Vec<u8>, [u8; 8], [u8; 8]) {
        let q: Vec<u8> = (0..256).map(|_| rng.below(qmax) as u8).collect();
        let mut sc = [0u8; 8];
        let mut mn = [0u8; 8];
        for i in 0..8 {
            sc[i] = rng.below(64) as u8;
            mn[i] = rng.below(64) as u8;
        }
        (q, sc, mn)
    }

    #[test]
    fn dequant_q4_k() {
        let mut rng = Rng(7);
        let (d, dmin) = (0.25f32, 0.5f32);
        let (q, sc, mn) = k4_logical(&mut rng, 16);
        let mut b = vec![0u8; 144];
        b[0..2].copy_from_slice(&h(d));
        b[2..4].copy_from_slice(&h(dmin));
        b[4..16].copy_from_slice(&pack_k4_scales(&sc, &mn));
        // Element i: group g = i/64; first 32 of a group in low nibbles of
        // qs[32g..32g+32], next 32 in the high nibbles.
        for i in 0..256 {
            let (g, hi, l) = (i / 64, (i % 64) / 32, i % 32);
            b[16 + 32 * g + l] |= q[i] << (4 * hi);
        }
        let v = deq(BlockFormat::Q4_K, &b);
        for i in 0..256 {
            let s = i / 32;
            let want = d * sc[s] as f32 * q[i] as f32 - dmin * mn[s] as f32;
            assert_eq!(v[i], want, "i={i}");
        }
        // Hand check: sub-block 5 (scale/min from the packed high part).
        // Element 160 = group 2, high nibble of qs[64]. Set sc5=33, mn5=17, q=7:
        // y = 0.25*33*7 - 0.5*17 = 57.75 - 8.5 = 49.25
        let (mut sc2, mut mn2) = (sc, mn);
        sc2[5] = 33;
        mn2[5] = 17;
        b[4..16].copy_from_slice(&pack_k4_scales(&sc2, &mn2));
        b[16 + 64] = (b[16 + 64] & 0x0F) | (7 << 4);
        assert_eq!(deq(BlockFormat::Q4_K, &b)[160], 49.25);
    }

    #[test]
    fn dequant_q5_k() {
        let mut rng = Rng(8);
        let (d, dmin) = (0.5f32, 0.125f32);
        let (q, sc, mn) = k4_logical(&mut rng, 32);
        let mut b = vec![0u8; 176];
        b[0..2].copy_from_slice(&h(d));
        b[2..4].copy_from_slice(&h(dmin));
        b[4..16].copy_from_slice(&pack_k4_scales(&sc, &mn));
        // Like Q4_K, plus bit 4 of element i in qh[l] at bit (i/32) (= sub-block index).
        for i in 0..256 {
            let (g, hi, l) = (i / 64, (i % 64) / 32, i % 32);
            b[48 + 32 * g + l] |= (q[i] & 15) << (4 * hi);
            b[16 + l] |= (q[i] >> 4) << (i / 32);
        }
        let v = deq(BlockFormat::Q5_K, &b);
        for i in 0..256 {
            let s = i / 32;
            let want = d * sc[s] as f32 * q[i] as f32 - dmin * mn[s] as f32;
            assert_eq!(v[i], want, "i={i}");
        }
        // Hand check element 255: sub-block 7, qh[31] bit 7, high nibble of qs[127].
        // With sc7=2, mn7=8, q=31: y = 0.5*2*31 - 0.125*8 = 30
        let (mut sc2, mut mn2) = (sc, mn);
        sc2[7] = 2;
        mn2[7] = 8;
        b[4..16].copy_from_slice(&pack_k4_scales(&sc2, &mn2));
        b[48 + 127] |= 0xF0;
        b[16 + 31] |= 0x80;
        assert_eq!(deq(BlockFormat::Q5_K, &b)[255], 30.0);
    }

    #[test]
    fn dequant_q6_k() {
        let mut rng = Rng(9);
        let d = 0.25f32;
        let q: Vec<i32> = (0..256).map(|_| rng.below(64) as i32).collect(); // stored 0..63, value q-32
        let sc: Vec<i8> = (0..16).map(|_| rng.next() as i8).collect();
        let mut b = vec![0u8; 210];
        // Element i: half n = i/128, quarter k = (i%128)/32, l = i%32.
        // Low 4 bits -> ql[64n + l + 32*(k&1)], nibble k>>1.
        // High 2 bits -> qh[32n + l] bits 2k..2k+2. Scale = sc[i/16].
        for i in 0..256 {
            let (n, k, l) = (i / 128, (i % 128) / 32, i % 32);
            let qi = q[i] as u8;
            b[64 * n + l + 32 * (k & 1)] |= (qi & 15) << (4 * (k >> 1));
            b[128 + 32 * n + l] |= (qi >> 4) << (2 * k);
        }
        for s in 0..16 {
            b[192 + s] = sc[s] as u8;
        }
        b[208..210].copy_from_slice(&h(d));
        let v = deq(BlockFormat::Q6_K, &b);
        for i in 0..256 {
            let want = d * sc[i / 16] as f32 * (q[i] - 32) as f32;
            assert_eq!(v[i], want, "i={i}");
        }
        // Hand check element 64 (half 0, quarter 2 -> high nibble of ql[0],
        // qh[0] bits 4..6, scale index 4): ql[0]=0x50, qh[0]=0b0010_0000, sc[4]=-3
        // q = 5 | (2<<4) = 37 -> 37-32 = 5; y = 0.25 * -3 * 5 = -3.75
        b[0] = 0x50;
        b[128] = 0b0010_0000;
        b[192 + 4] = (-3i8) as u8;
        assert_eq!(deq(BlockFormat::Q6_K, &b)[64], -3.75);
    }

    #[test]
    fn dequant_q8_k() {
        let mut b = 0.5f32.to_le_bytes().to_vec();
        b.extend((0..256).map(|j| (j as u8).wrapping_sub(128)));
        b.extend([0u8; 32]);
        let v = deq(BlockFormat::Q8_K, &b);
        // j=0: byte 0x80 = -128 -> -64.0 ; j=255: byte 127 -> 63.5
        assert_eq!((v[0], v[255]), (-64.0, 63.5));
        for j in 0..256 {
            assert_eq!(v[j], (j as f32 - 128.0) * 0.5);
        }
    }

    #[test]
    fn dequant_multiple_blocks_are_independent() {
        // Two Q4_K blocks: the second must not reuse the first block's d.
        let mut rng = Rng(10);
        let mut b = rng.bytes(288);
        b[0..2].copy_from_slice(&h(1.0));
        b[144..146].copy_from_slice(&h(2.0));
        b[2..4].copy_from_slice(&h(0.0));
        b[146..148].copy_from_slice(&h(0.0));
        b.copy_within(4..144, 148); // same scales and quants, only d differs
        let v = deq(BlockFormat::Q4_K, &b);
        for i in 0..256 {
            assert_eq!(v[256 + i], 2.0 * v[i], "i={i}");
        }
    }

    #[test]
    #[should_panic(expected = "cannot decode")]
    fn dequant_rejects_short_input() {
        BlockFormat::Q4_K.dequantize(&[0; 143], &mut [0.0; 256]);
    }

    #[test]
    #[should_panic(expected = "cannot decode")]
    fn dequant_rejects_partial_block() {
        BlockFormat::Q8_0.dequantize(&[0; 34], &mut [0.0; 33]);
    }

    #[test]
    fn dequant_empty_is_fine() {
        BlockFormat::Q6_K.dequantize(&[], &mut []);
    }

    #[test]
    fn format_table() {
        for f in BlockFormat::ALL {
            assert!(f.block_len() > 0 && f.block_bytes() > 0);
            assert_eq!(f.row_bytes(0), Some(0));
            assert_eq!(f.row_bytes(3 * f.block_len()), Some(3 * f.block_bytes()));
            if f.block_len() > 1 {
                assert_eq!(f.row_bytes(f.block_len() + 1), None, "{f}");
            }
            assert_eq!(f.name(), f.name().to_lowercase());
        }
        assert_eq!(BlockFormat::Q6_K.row_bytes(512), Some(420));
        assert_eq!(BlockFormat::Q6_K.row_bytes(100), None);
        assert_eq!(BlockFormat::F16.row_bytes(7), Some(14));
        assert_eq!(BlockFormat::Q4_K.name(), "q4_k");
        assert_eq!(BlockFormat::F32.row_bytes(usize::MAX), None);
    }

    #[test]
    fn k4_scales_mins_matches_scale_min_k4() {
        let mut rng = Rng(11);
        for _ in 0..200 {
            let q: [u8; 12] = rng.bytes(12).try_into().unwrap();
            let (sc, mn) = k4_scales_mins(&q);
            for j in 0..8 {
                assert_eq!((sc[j], mn[j]), scale_min_k4(j, &q), "j={j} q={q:?}");
            }
        }
    }

    // ----- encoders ------------------------------------------------------------

    #[test]
    fn quantize_q8_0_follows_ggml() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        x[40..].iter_mut().for_each(|v| *v = 0.0); // an all-zero block stays zero
        x[32] = 0.0;
        let b = quantize(BlockFormat::Q8_0, &x[..32]).unwrap();
        assert_eq!(b.len(), 34);
        let amax = 20.0 * 0.37f32; // |x[0]|
        let d = amax / 127.0;
        assert_eq!(b[0..2], h(d));
        for j in 0..32 {
            assert_eq!(b[2 + j] as i8, (x[j] / d).round() as i8, "j={j}");
        }
        assert_eq!(b[2] as i8, -127);
        // round trip within half a step (plus the f16 rounding of d)
        let y = deq(BlockFormat::Q8_0, &b);
        let dd = f16(b[0], b[1]);
        for j in 0..32 {
            assert!(
                (y[j] - x[j]).abs() <= 0.5 * dd + 127.0 * (dd - d).abs() + 1e-6,
                "j={j}"
            );
        }
        let zero = quantize(BlockFormat::Q8_0, &[0.0; 32]).unwrap();
        assert!(zero.iter().all(|&v| v == 0));
    }

    #[test]
    fn quantize_floats_round_trip() {
        let x = [1.0f32, -2.5, 3.140625, 1e-3, 65504.0, -0.0];
        assert_eq!(
            deq(BlockFormat::F32, &quantize(BlockFormat::F32, &x).unwrap()),
            x
        );
        let y = deq(BlockFormat::F16, &quantize(BlockFormat::F16, &x).unwrap());
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= a.abs() * 1e-3, "{a} {b}");
        }
        let y = deq(BlockFormat::BF16, &quantize(BlockFormat::BF16, &x).unwrap());
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= a.abs() * 4e-3, "{a} {b}");
        }
        // bf16 rounds to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> 1.
        let tie = 1.0 + 2f32.powi(-8);
        assert_eq!(
            deq(
                BlockFormat::BF16,
                &quantize(BlockFormat::BF16, &[tie]).unwrap()
            ),
            [1.0]
        );
        let above = 1.0 + 2f32.powi(-8) + 2f32.powi(-20);
        assert_eq!(
            deq(
                BlockFormat::BF16,
                &quantize(BlockFormat::BF16, &[above]).unwrap()
            ),
            [1.0 + 2f32.powi(-7)]
        );
    }

    #[test]
    fn quantize_rejects_other_targets_and_partial_blocks() {
        assert!(quantize(BlockFormat::Q4_K, &[0.0; 256]).is_none());
        assert!(quantize(BlockFormat::Q5_0, &[0.0; 32]).is_none());
        assert!(quantize(BlockFormat::Q8_0, &[0.0; 31]).is_none());
    }
}
