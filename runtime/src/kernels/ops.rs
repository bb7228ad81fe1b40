//! Elementwise kernels: GeGLU / SwiGLU activations, RMSNorm, softmax, exp, tanh.
//!
//! Why: libm `tanhf`/`expm1f`/`powf`/`expf` were ~22% of prefill time. Every
//! transcendental here is a Cephes-style polynomial evaluated identically by the
//! scalar and the AVX2 path: the AVX2 code uses the same operations in the same
//! order (mul + add, deliberately *no* FMA, exact IEEE div/sqrt), so both levels
//! give bit-identical results and tests can compare them exactly. (An FMA
//! variant measured no faster: these loops are latency-bound, not port-bound.)
//!
//! Each public function dispatches on [`simd::active`]; the `*_at` variants take
//! the level explicitly (tests, benches). A level above [`simd::detected`] is
//! lowered, so the `*_at` functions are safe to call with any level.
//! Slices longer than 64K elements are split across rayon; shorter ones
//! (decode: 640–2048 elements) stay on the calling thread.

use super::simd::{self, SimdLevel};
use rayon::prelude::*;

/// Element count above which the slice is split across rayon threads.
const PAR_MIN: usize = 1 << 16;
/// Elements per rayon task (64 KiB of f32: large enough to amortise hand-off).
const PAR_CHUNK: usize = 1 << 14;

// exp: x = n·ln2 + r, |r| ≤ ln2/2, e^r by the Cephes expf polynomial
// (evaluated in Estrin order: half the dependency depth of Horner).
/// ln(2^-126): below this e^x is subnormal; such inputs return 0.
const EXP_LO: f32 = -87.336_55;
/// Clamp above ln(f32::MAX) = 88.7228 so that overflow happens in the final
/// (exact) power-of-two scaling and yields +inf.
const EXP_HI: f32 = 88.8;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5·2^23: adding it rounds to the nearest integer (ties to even) and leaves
/// that integer in the low mantissa bits (no SSE4.1 `round` needed for scalar).
const MAGIC: f32 = 12_582_912.0;
const MAGIC_BITS: i32 = 0x4B40_0000;
/// ln2 split in two so that n·LN2_HI is exact.
const LN2_HI: f32 = 0.693_359_4; // = 0.693359375 exactly
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

// tanh: Cephes tanhf odd polynomial for |x| < 0.625 (no cancellation near 0),
// 1 - 2/(e^{2|x|}+1) above, exactly ±1 beyond 9 (where f32 tanh rounds to 1).
const TANH_SMALL: f32 = 0.625;
const TANH_SAT: f32 = 9.0;
const TANH_P: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    0.133_314_42,
    -0.333_332_8,
];

// GELU-tanh rewritten as x·σ(2z) = x / (1 + e^{-2z}), z = √(2/π)(x + 0.044715x³):
// one exp and one division, and no 1 + tanh(z) cancellation for negative x.
/// -2·√(2/π)
const GELU_K: f32 = -1.595_769;
const GELU_C: f32 = 0.044_715;

const SIGN: u32 = 0x8000_0000;

/// AVX2 may only run where it was detected: clamp the requested level.
#[inline]
fn effective(level: SimdLevel) -> SimdLevel {
    level.min(simd::detected())
}

// ---------------------------------------------------------------------------
// Scalar cores. The AVX2 versions below mirror these operation for operation.

/// e^x; x < -87.34 → 0, x > 88.72 → +inf, NaN → NaN.
#[inline(always)]
pub(crate) fn exp_s(x: f32) -> f32 {
    // Comparisons (not f32::min/max) so that NaN passes through.
    let xc = if x < EXP_LO { EXP_LO } else { x };
    let xc = if xc > EXP_HI { EXP_HI } else { xc };
    let j = xc * LOG2E + MAGIC;
    let n = j - MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let z = r * r;
    let z2 = z * z;
    let a = EXP_P[4] * r + EXP_P[5];
    let b = EXP_P[2] * r + EXP_P[3];
    let c = EXP_P[0] * r + EXP_P[1];
    let y = (a + z * b) + z2 * c;
    let y = (y * z + r) + 1.0;
    // 2^n as two factors: n ∈ [-126, 128] does not fit one exponent field.
    let ni = (j.to_bits() as i32).wrapping_sub(MAGIC_BITS);
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let p1 = f32::from_bits((n1.wrapping_add(127) << 23) as u32);
    let p2 = f32::from_bits((n2.wrapping_add(127) << 23) as u32);
    let res = (y * p1) * p2;
    if x < EXP_LO { 0.0 } else { res }
}

/// tanh(x), odd-symmetric, exactly ±1 for |x| > 9.
#[inline(always)]
pub(crate) fn tanh_s(x: f32) -> f32 {
    let a = f32::from_bits(x.to_bits() & !SIGN);
    let e = exp_s(a + a);
    let big = 1.0 - 2.0 / (e + 1.0);
    let big = if a > TANH_SAT { 1.0 } else { big };
    let s = a * a;
    let mut p = TANH_P[0];
    p = p * s + TANH_P[1];
    p = p * s + TANH_P[2];
    p = p * s + TANH_P[3];
    p = p * s + TANH_P[4];
    let small = (p * s) * a + a;
    let t = if a < TANH_SMALL { small } else { big };
    f32::from_bits(t.to_bits() | (x.to_bits() & SIGN))
}

/// gelu_tanh(x) = x / (1 + e^{-2√(2/π)(x + 0.044715x³)}).
/// gelu(+inf) = +inf; gelu(-inf) = NaN (as torch: -inf·0).
#[inline(always)]
fn gelu_s(x: f32) -> f32 {
    let inner = x * (1.0 + GELU_C * (x * x));
    x / (1.0 + exp_s(GELU_K * inner))
}

/// silu(x) = x / (1 + e^{-x}).
#[inline(always)]
fn silu_s(x: f32) -> f32 {
    x / (1.0 + exp_s(-x))
}

/// Horizontal sum of 32 lanes in the order the AVX2 path reduces 4×8 lanes.
#[inline(always)]
fn hsum32(acc: &[f32; 32]) -> f32 {
    let mut v = [0.0f32; 8];
    for i in 0..8 {
        v[i] = (acc[i] + acc[8 + i]) + (acc[16 + i] + acc[24 + i]);
    }
    let w = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (w[0] + w[2]) + (w[1] + w[3])
}

mod scalar {
    use super::*;

    pub(super) fn gelu_mul(g: &mut [f32], u: &[f32]) {
        for (g, &u) in g.iter_mut().zip(u) {
            *g = gelu_s(*g) * u;
        }
    }

    pub(super) fn silu_mul(g: &mut [f32], u: &[f32]) {
        for (g, &u) in g.iter_mut().zip(u) {
            *g = silu_s(*g) * u;
        }
    }

    pub(crate) fn exp_inplace(x: &mut [f32]) {
        for v in x {
            *v = exp_s(*v);
        }
    }

    pub(crate) fn tanh_inplace(x: &mut [f32]) {
        for v in x {
            *v = tanh_s(*v);
        }
    }

    /// Σx² with 32 lanes (4 accumulators × 8), tail added in order.
    fn sumsq(x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 32];
        let chunks = x.chunks_exact(32);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..32 {
                acc[i] += c[i] * c[i];
            }
        }
        let mut s = hsum32(&acc);
        for &v in tail {
            s += v * v;
        }
        s
    }

    pub(super) fn rms_rows(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
        let dim = gamma.len();
        for (row, orow) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            let inv = 1.0 / (sumsq(row) / dim as f32 + eps).sqrt();
            for ((o, &xi), &g) in orow.iter_mut().zip(row).zip(gamma) {
                *o = (xi * inv) * g;
            }
        }
    }

    /// Max ignoring NaN (`v > m ? v : m`, as `_mm256_max_ps(v, m)`).
    pub(super) fn max(x: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 8];
        let chunks = x.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for v in acc.into_iter().chain(tail.iter().copied()) {
            m = if v > m { v } else { m };
        }
        m
    }

    /// x ← e^{x-m}, returns Σ (32 lanes, same order as AVX2).
    pub(super) fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
        let mut acc = [0.0f32; 32];
        let mut chunks = x.chunks_exact_mut(32);
        for c in &mut chunks {
            for i in 0..32 {
                c[i] = exp_s(c[i] - m);
                acc[i] += c[i];
            }
        }
        let mut s = hsum32(&acc);
        for v in chunks.into_remainder() {
            *v = exp_s(*v - m);
            s += *v;
        }
        s
    }

    pub(super) fn scale(x: &mut [f32], k: f32) {
        for v in x {
            *v *= k;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    //! AVX2 mirrors of the scalar cores. Tails (< 8 or < 32 elements) use the
    //! scalar cores, which give identical results.
    use super::*;
    use std::arch::x86_64::*;

    #[inline(always)]
    fn splat(x: f32) -> __m256 {
        // SAFETY: `_mm256_set1_ps` only needs AVX, and every caller of this
        // inline(always) helper is a `target_feature(enable = "avx2,fma")` fn.
        unsafe { _mm256_set1_ps(x) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) fn exp_v(x: __m256) -> __m256 {
        // max_ps(a, b)/min_ps(a, b) return b when either is NaN: NaN survives.
        let xc = _mm256_max_ps(splat(EXP_LO), x);
        let xc = _mm256_min_ps(splat(EXP_HI), xc);
        let j = _mm256_add_ps(_mm256_mul_ps(xc, splat(LOG2E)), splat(MAGIC));
        let n = _mm256_sub_ps(j, splat(MAGIC));
        let r = _mm256_sub_ps(
            _mm256_sub_ps(xc, _mm256_mul_ps(n, splat(LN2_HI))),
            _mm256_mul_ps(n, splat(LN2_LO)),
        );
        let z = _mm256_mul_ps(r, r);
        let z2 = _mm256_mul_ps(z, z);
        let a = _mm256_add_ps(_mm256_mul_ps(splat(EXP_P[4]), r), splat(EXP_P[5]));
        let b = _mm256_add_ps(_mm256_mul_ps(splat(EXP_P[2]), r), splat(EXP_P[3]));
        let c = _mm256_add_ps(_mm256_mul_ps(splat(EXP_P[0]), r), splat(EXP_P[1]));
        let y = _mm256_add_ps(_mm256_add_ps(a, _mm256_mul_ps(z, b)), _mm256_mul_ps(z2, c));
        let y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, z), r), splat(1.0));
        let ni = _mm256_sub_epi32(_mm256_castps_si256(j), _mm256_set1_epi32(MAGIC_BITS));
        let n1 = _mm256_srai_epi32::<1>(ni);
        let n2 = _mm256_sub_epi32(ni, n1);
        let bias = _mm256_set1_epi32(127);
        let p1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
        let p2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
        let res = _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
        let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, splat(EXP_LO));
        _mm256_andnot_ps(under, res)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) fn tanh_v(x: __m256) -> __m256 {
        let sign = _mm256_castsi256_ps(_mm256_set1_epi32(SIGN as i32));
        let a = _mm256_andnot_ps(sign, x);
        let e = exp_v(_mm256_add_ps(a, a));
        let one = splat(1.0);
        let big = _mm256_sub_ps(one, _mm256_div_ps(splat(2.0), _mm256_add_ps(e, one)));
        let sat = _mm256_cmp_ps::<_CMP_GT_OQ>(a, splat(TANH_SAT));
        let big = _mm256_blendv_ps(big, one, sat);
        let s = _mm256_mul_ps(a, a);
        let mut p = splat(TANH_P[0]);
        p = _mm256_add_ps(_mm256_mul_ps(p, s), splat(TANH_P[1]));
        p = _mm256_add_ps(_mm256_mul_ps(p, s), splat(TANH_P[2]));
        p = _mm256_add_ps(_mm256_mul_ps(p, s), splat(TANH_P[3]));
        p = _mm256_add_ps(_mm256_mul_ps(p, s), splat(TANH_P[4]));
        let small = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, s), a), a);
        let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, splat(TANH_SMALL));
        let t = _mm256_blendv_ps(big, small, is_small);
        _mm256_or_ps(t, _mm256_and_ps(x, sign))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn gelu_v(x: __m256) -> __m256 {
        let one = splat(1.0);
        let inner = _mm256_mul_ps(
            x,
            _mm256_add_ps(one, _mm256_mul_ps(splat(GELU_C), _mm256_mul_ps(x, x))),
        );
        let e = exp_v(_mm256_mul_ps(splat(GELU_K), inner));
        _mm256_div_ps(x, _mm256_add_ps(one, e))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn silu_v(x: __m256) -> __m256 {
        let neg = _mm256_xor_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(SIGN as i32)));
        _mm256_div_ps(x, _mm256_add_ps(splat(1.0), exp_v(neg)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum32(a: [__m256; 4]) -> f32 {
        let v = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        let w = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let w2 = _mm_add_ps(w, _mm_movehl_ps(w, w));
        _mm_cvtss_f32(_mm_add_ss(w2, _mm_shuffle_ps::<1>(w2, w2)))
    }

    macro_rules! map1 {
        ($name:ident, $vf:ident, $sf:path) => {
            #[target_feature(enable = "avx2,fma")]
            pub(crate) fn $name(x: &mut [f32]) {
                let mut chunks = x.chunks_exact_mut(8);
                for c in &mut chunks {
                    // SAFETY: `c` has exactly 8 f32; unaligned load/store.
                    unsafe { _mm256_storeu_ps(c.as_mut_ptr(), $vf(_mm256_loadu_ps(c.as_ptr()))) };
                }
                for v in chunks.into_remainder() {
                    *v = $sf(*v);
                }
            }
        };
    }
    macro_rules! map2 {
        ($name:ident, $vf:ident, $sf:path) => {
            #[target_feature(enable = "avx2,fma")]
            pub(super) fn $name(g: &mut [f32], u: &[f32]) {
                let mut gc = g.chunks_exact_mut(8);
                let mut uc = u.chunks_exact(8);
                for (g, u) in (&mut gc).zip(&mut uc) {
                    // SAFETY: `g` and `u` have exactly 8 f32 each.
                    unsafe {
                        let r = _mm256_mul_ps(
                            $vf(_mm256_loadu_ps(g.as_ptr())),
                            _mm256_loadu_ps(u.as_ptr()),
                        );
                        _mm256_storeu_ps(g.as_mut_ptr(), r);
                    }
                }
                for (g, &u) in gc.into_remainder().iter_mut().zip(uc.remainder()) {
                    *g = $sf(*g) * u;
                }
            }
        };
    }
    map1!(exp_inplace, exp_v, exp_s);
    map1!(tanh_inplace, tanh_v, tanh_s);
    map2!(gelu_mul, gelu_v, gelu_s);
    map2!(silu_mul, silu_v, silu_s);

    #[target_feature(enable = "avx2,fma")]
    fn sumsq(x: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let chunks = x.chunks_exact(32);
        let tail = chunks.remainder();
        for c in chunks {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: `c` has 32 f32, so 8k..8k+8 is in bounds.
                let v = unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * k)) };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(v, v));
            }
        }
        let mut s = hsum32(acc);
        for &v in tail {
            s += v * v;
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn rms_rows(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
        let dim = gamma.len();
        for (row, orow) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            let inv = 1.0 / (sumsq(row) / dim as f32 + eps).sqrt();
            let vinv = splat(inv);
            let mut oc = orow.chunks_exact_mut(8);
            let mut xc = row.chunks_exact(8);
            let mut gc = gamma.chunks_exact(8);
            for ((o, xv), gv) in (&mut oc).zip(&mut xc).zip(&mut gc) {
                // SAFETY: each chunk has exactly 8 f32.
                unsafe {
                    let r = _mm256_mul_ps(
                        _mm256_mul_ps(_mm256_loadu_ps(xv.as_ptr()), vinv),
                        _mm256_loadu_ps(gv.as_ptr()),
                    );
                    _mm256_storeu_ps(o.as_mut_ptr(), r);
                }
            }
            let tails = oc
                .into_remainder()
                .iter_mut()
                .zip(xc.remainder())
                .zip(gc.remainder());
            for ((o, &xi), &g) in tails {
                *o = (xi * inv) * g;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn max(x: &[f32]) -> f32 {
        let mut acc = splat(f32::NEG_INFINITY);
        let chunks = x.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            // SAFETY: `c` has exactly 8 f32. max_ps(v, acc) ignores NaN in v.
            acc = _mm256_max_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, acc);
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        let mut m = f32::NEG_INFINITY;
        for v in lanes.into_iter().chain(tail.iter().copied()) {
            m = if v > m { v } else { m };
        }
        m
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
        let vm = splat(m);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut chunks = x.chunks_exact_mut(32);
        for c in &mut chunks {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: `c` has 32 f32, so 8k..8k+8 is in bounds.
                unsafe {
                    let p = c.as_mut_ptr().add(8 * k);
                    let e = exp_v(_mm256_sub_ps(_mm256_loadu_ps(p), vm));
                    _mm256_storeu_ps(p, e);
                    *a = _mm256_add_ps(*a, e);
                }
            }
        }
        let mut s = hsum32(acc);
        for v in chunks.into_remainder() {
            *v = exp_s(*v - m);
            s += *v;
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn scale(x: &mut [f32], k: f32) {
        let vk = splat(k);
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` has exactly 8 f32.
            unsafe {
                _mm256_storeu_ps(
                    c.as_mut_ptr(),
                    _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), vk),
                )
            };
        }
        for v in chunks.into_remainder() {
            *v *= k;
        }
    }
}

/// Runs `$scalar::$f(args)` or, when `$level` is AVX2 (already clamped to the
/// detected level), `avx2::$f(args)`.
macro_rules! dispatch {
    ($level:expr, $f:ident ( $($arg:expr),* )) => {
        match $level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the level was clamped by `effective`, so AVX2+FMA are present.
            SimdLevel::Avx2 => unsafe { avx2::$f($($arg),*) },
            _ => scalar::$f($($arg),*),
        }
    };
}

/// In-place e^x on a chunk at an already-clamped level (used by attention).
#[inline]
pub(crate) fn exp_inplace_at(level: SimdLevel, x: &mut [f32]) {
    dispatch!(level, exp_inplace(x))
}

/// In-place tanh on a chunk at an already-clamped level (used by attention).
#[inline]
pub(crate) fn tanh_inplace_at(level: SimdLevel, x: &mut [f32]) {
    dispatch!(level, tanh_inplace(x))
}

/// Applies `f` to `x` in parallel chunks when it is long, else inline.
fn for_chunks(x: &mut [f32], f: impl Fn(&mut [f32]) + Sync) {
    if x.len() > PAR_MIN {
        x.par_chunks_mut(PAR_CHUNK).for_each(&f);
    } else {
        f(x);
    }
}

/// Same as [`for_chunks`] for two equally long slices.
fn for_chunks2(g: &mut [f32], u: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    assert_eq!(g.len(), u.len(), "gate and up must have the same length");
    if g.len() > PAR_MIN {
        g.par_chunks_mut(PAR_CHUNK)
            .zip(u.par_chunks(PAR_CHUNK))
            .for_each(|(g, u)| f(g, u));
    } else {
        f(g, u);
    }
}

/// GeGLU: `g ← gelu_tanh(g) · u`, gelu_tanh(x) = 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))),
/// evaluated as x·σ(2z) (same function, no cancellation). Panics if lengths differ.
pub fn gelu_tanh_mul(g: &mut [f32], u: &[f32]) {
    gelu_tanh_mul_at(simd::active(), g, u)
}

/// [`gelu_tanh_mul`] at an explicit level.
pub fn gelu_tanh_mul_at(level: SimdLevel, g: &mut [f32], u: &[f32]) {
    let level = effective(level);
    for_chunks2(g, u, |g, u| dispatch!(level, gelu_mul(g, u)))
}

/// SwiGLU: `g ← silu(g) · u`, silu(x) = x / (1 + e^{-x}). Panics if lengths differ.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    silu_mul_at(simd::active(), g, u)
}

/// [`silu_mul`] at an explicit level.
pub fn silu_mul_at(level: SimdLevel, g: &mut [f32], u: &[f32]) {
    let level = effective(level);
    for_chunks2(g, u, |g, u| dispatch!(level, silu_mul(g, u)))
}

/// RMSNorm over rows of `dim = gamma.len()`: `out = x / sqrt(mean(x²) + eps) · gamma`.
/// The mean is accumulated in f32 over 32 lanes (as torch does in f32), not in
/// f64, so results track the reference implementation. Panics unless
/// `x.len() == out.len()` is a multiple of `dim`.
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_at(simd::active(), x, gamma, eps, out)
}

/// [`rms_norm`] at an explicit level.
pub fn rms_norm_at(level: SimdLevel, x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    let level = effective(level);
    let dim = gamma.len();
    assert!(dim > 0, "rms_norm: empty gamma");
    assert_eq!(x.len(), out.len(), "rms_norm: x and out lengths differ");
    assert_eq!(x.len() % dim, 0, "rms_norm: length not a multiple of dim");
    if x.len() > PAR_MIN {
        let per = PAR_CHUNK.div_ceil(dim) * dim;
        x.par_chunks(per)
            .zip(out.par_chunks_mut(per))
            .for_each(|(x, out)| dispatch!(level, rms_rows(x, gamma, eps, out)));
    } else {
        dispatch!(level, rms_rows(x, gamma, eps, out))
    }
}

/// In-place softmax of one row: `x ← e^{x - max} / Σ e^{x - max}`.
///
/// * A row whose entries are all -inf (fully masked) becomes all zeros rather
///   than NaN, so masked rows contribute nothing downstream.
/// * Any NaN in the row makes the whole row NaN (never hidden); +inf also
///   yields NaN (inf - inf), as in torch.
/// * Empty rows are left alone. Rows longer than 64K (vocab logits) are split
///   across rayon.
pub fn softmax(x: &mut [f32]) {
    softmax_at(simd::active(), x)
}

/// [`softmax`] at an explicit level.
pub fn softmax_at(level: SimdLevel, x: &mut [f32]) {
    let level = effective(level);
    if x.is_empty() {
        return;
    }
    let par = x.len() > PAR_MIN;
    let m = if par {
        x.par_chunks(PAR_CHUNK)
            .map(|c| dispatch!(level, max(c)))
            .reduce(|| f32::NEG_INFINITY, |a, b| if b > a { b } else { a })
    } else {
        dispatch!(level, max(x))
    };
    if m == f32::NEG_INFINITY {
        // All -inf, or only NaN and -inf (the max ignores NaN).
        let fill = if x.iter().any(|v| v.is_nan()) {
            f32::NAN
        } else {
            0.0
        };
        x.fill(fill);
        return;
    }
    let sum = if par {
        // Per-chunk sums added in chunk order: deterministic for a given length.
        let sums: Vec<f32> = x
            .par_chunks_mut(PAR_CHUNK)
            .map(|c| dispatch!(level, exp_sub_sum(c, m)))
            .collect();
        sums.into_iter().sum()
    } else {
        dispatch!(level, exp_sub_sum(x, m))
    };
    let inv = 1.0 / sum;
    for_chunks(x, |c| dispatch!(level, scale(c, inv)));
}

/// In-place e^x (Cephes range reduction + degree-7 polynomial), ≤ 2 ulp on
/// [-87, 88]. x < -87.34 (result would be subnormal) → 0; x > 88.72 → +inf;
/// NaN → NaN.
pub fn exp_slice(x: &mut [f32]) {
    exp_slice_at(simd::active(), x)
}

/// [`exp_slice`] at an explicit level.
pub fn exp_slice_at(level: SimdLevel, x: &mut [f32]) {
    let level = effective(level);
    for_chunks(x, |c| exp_inplace_at(level, c));
}

/// In-place tanh: odd polynomial for |x| < 0.625, 1 - 2/(e^{2|x|}+1) above,
/// exactly ±1 for |x| > 9; odd-symmetric (sign copied from x); NaN → NaN.
/// Absolute error ≤ 2e-7.
pub fn tanh_slice(x: &mut [f32]) {
    tanh_slice_at(simd::active(), x)
}

/// [`tanh_slice`] at an explicit level.
pub fn tanh_slice_at(level: SimdLevel, x: &mut [f32]) {
    let level = effective(level);
    for_chunks(x, |c| tanh_inplace_at(level, c));
}

#[cfg(test)]
mod tests;
