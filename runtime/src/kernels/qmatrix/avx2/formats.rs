//! The weight formats of the integer mat-vec: how each block is unpacked once and dotted with
//! each activation row.

use super::*;

/// A weight format with an integer AVX2 dot product.
pub trait Int8Block {
    /// Bytes per weight block.
    const BB: usize;
    /// Activation blocks (of 32) per weight block.
    const SUB: usize;
    /// Activation element: `i16` for the 32-element formats, `i8` for the K-quants.
    type A: Copy;
    /// The weight block after the unpacking shared by all activation rows.
    type Unpacked: Copy;
    /// # Safety
    /// AVX2+FMA+F16C present; `BB` readable bytes at `p`.
    unsafe fn unpack(p: *const u8) -> Self::Unpacked;
    /// Add `W·a[j..j+SUB]` to the accumulators (`accm` gets scalar min terms).
    /// # Safety
    /// AVX2+FMA+F16C present; `j + SUB <= a.qs.len()`; `w` from `unpack` of a live block.
    unsafe fn dot(
        w: &Self::Unpacked,
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
            type Unpacked = (f32, f32, __m256i, __m256i);
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            unsafe fn unpack(p: *const u8) -> Self::Unpacked {
                // SAFETY: the caller guarantees `BB` readable bytes at `p`.
                let (d, m, w) = unsafe { $bytes(p) };
                let (lo, hi) = $widen(w);
                (d, m, lo, hi)
            }
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            unsafe fn dot(
                w: &Self::Unpacked,
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
pub(super) unsafe fn q8_0_bytes(p: *const u8) -> (f32, f32, __m256i) {
    // SAFETY: the caller guarantees 34 bytes at `p`.
    unsafe { (f16_at(p), 0.0, load256(p.add(2))) }
}

/// Q4_0: f16 d, then 16 bytes of nibbles; values `q - 8`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q4_0_bytes(p: *const u8) -> (f32, f32, __m256i) {
    // SAFETY: the caller guarantees 18 bytes at `p`.
    let (d, q) = unsafe { (f16_at(p), nibbles(p.add(2))) };
    (d, 0.0, _mm256_sub_epi8(q, _mm256_set1_epi8(8)))
}

/// Q5_0: f16 d, 4 bytes qh, 16 bytes of nibbles; values `q - 16`, as a signed byte: a
/// clear fifth bit means "minus 16" = set the top nibble.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q5_0_bytes(p: *const u8) -> (f32, f32, __m256i) {
    // SAFETY: the caller guarantees 22 bytes at `p`.
    let (d, q, hb) = unsafe { (f16_at(p), nibbles(p.add(6)), bits_to_bytes(p.add(2))) };
    let w = _mm256_or_si256(q, _mm256_andnot_si256(hb, _mm256_set1_epi8(0xF0u8 as i8)));
    (d, 0.0, w)
}

/// Q4_1: f16 d, f16 m, 16 bytes of nibbles; values `d·q + m`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q4_1_bytes(p: *const u8) -> (f32, f32, __m256i) {
    // SAFETY: the caller guarantees 20 bytes at `p`.
    unsafe { (f16_at(p), f16_at(p.add(2)), nibbles(p.add(4))) }
}

/// Q5_1: f16 d, f16 m, 4 bytes qh, 16 bytes of nibbles.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q5_1_bytes(p: *const u8) -> (f32, f32, __m256i) {
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

/// Half `n` (0 or 1) of a Q6_K block's 6-bit quants, unsigned (0..64), as the four groups of
/// 32 in element order (the layout ggml's Q6_K stores them in).
///
/// # Safety
/// AVX2 present; a whole Q6_K block (210 bytes) readable at `p`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q6_k_half(p: *const u8, n: usize) -> [__m256i; 4] {
    let low = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(0x30);
    // SAFETY: ql is bytes 0..128, qh 128..192 of the block.
    let (ql0, ql1, qh) = unsafe {
        (
            load256(p.add(64 * n)),
            load256(p.add(64 * n + 32)),
            load256(p.add(128 + 32 * n)),
        )
    };
    [
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
    ]
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
    type Unpacked = K4;
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
    type Unpacked = K4;
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
    type Unpacked = K6;
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
        let m32 = _mm256_set1_epi8(32);
        let mut v = [_mm256_setzero_si256(); 8];
        for n in 0..2 {
            // SAFETY: `w.p` is a whole Q6_K block.
            let q = unsafe { q6_k_half(w.p, n) };
            for (k, &q) in q.iter().enumerate() {
                // SAFETY: activation blocks j..j+8 exist per the caller.
                let x = unsafe { act(a, j + 4 * n + k) };
                let p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, x), _mm256_maddubs_epi16(m32, x));
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
