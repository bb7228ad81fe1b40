//! Every function here is compiled for AVX2+FMA+F16C and must only be called after
//! [`super::simd::detected`] reported [`SimdLevel::Avx2`](super::SimdLevel::Avx2).
use std::arch::x86_64::*;

use super::super::blocks::{BlockFormat, k4_scales_mins};
use super::ActRow;

mod formats;
pub use formats::*;

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
    let v: [__m256; 4] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) });
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
    let v: [__m256; 4] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) });
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
        // SAFETY: as above.
        Q4_K | Q5_K => unsafe { dequantize_k4(format == Q5_K, p, out, nb, bb) },
        // SAFETY: as above.
        Q6_K => unsafe { dequantize_q6_k(p, out, nb, bb) },
        Q2_K | Q3_K | Q8_K => return false,
    }
    true
}

/// Q4_K / Q5_K (`q5`) blocks of [`dequantize`]: per 32-element sub-block `d·sc·q − dmin·m`.
///
/// # Safety
/// AVX2+FMA+F16C present; `nb` blocks of `bb` bytes readable at `p`, `256·nb` floats writable
/// at `out`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_k4(q5: bool, p: *const u8, out: *mut f32, nb: usize, bb: usize) {
    // SAFETY (every access below): block b < nb is src[b*bb..(b+1)*bb] and out[256b..256(b+1)],
    // in bounds per the caller.
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
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bit4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(qh), bit4));
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

/// Q6_K blocks of [`dequantize`]: `d·sc·(q − 32)` per 16-element group.
///
/// # Safety
/// As [`dequantize_k4`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_q6_k(p: *const u8, out: *mut f32, nb: usize, bb: usize) {
    // SAFETY (every access below): block b < nb is src[b*bb..(b+1)*bb] and out[256b..256(b+1)],
    // in bounds per the caller.
    let m32 = _mm256_set1_epi8(32);
    for b in 0..nb {
        let bp = unsafe { p.add(b * bb) };
        let o = unsafe { out.add(b * 256) };
        let d = unsafe { f16_at(bp.add(208)) };
        let sc = unsafe { std::slice::from_raw_parts(bp.add(192), 16) };
        for n in 0..2 {
            let q = unsafe { q6_k_half(bp, n) };
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
                    let v = _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part)));
                    unsafe { _mm256_storeu_ps(o.add(128 * n + 32 * k + 8 * h), v) };
                }
            }
        }
    }
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
