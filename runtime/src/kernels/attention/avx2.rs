//! Register-blocked micro-kernels. `N` = query rows sharing each load;
//! `KB` keys per QK step and `CW` ymm columns per PV step are chosen so
//! that N·KB and N·CW ≈ 8 independent FMA chains hide the FMA latency.

use super::{KvElem, MAX_ROWS, TILE};
use std::arch::x86_64::*;

/// `[Σa, Σb, Σc, Σd]` of four 8-lane vectors.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t))
}

/// Dots of `N` query rows with keys `j..j+KB`, returned as `[kb·N + r]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
/// Also prefetches rows `j..j+KB` of `v_pf` (unless empty) into L1, one
/// hint per 64-byte line.
fn dots<const N: usize, const KB: usize, E: KvElem>(
    q: &[f32],
    k: &[E],
    v_pf: &[E],
    d: usize,
    j: usize,
) -> [f32; 8] {
    debug_assert!(N * KB <= 8);
    assert!(q.len() >= N * d && (j + KB) * d <= k.len());
    let pf = !v_pf.is_empty();
    assert!(!pf || (j + KB) * d <= v_pf.len());
    let (qp, kp, vp) = (q.as_ptr(), k.as_ptr(), v_pf.as_ptr());
    let d8 = d & !7;
    let mut acc = [[_mm256_setzero_ps(); N]; KB];
    let mut c = 0;
    while c < d8 {
        if pf && c & 15 == 0 {
            for b in 0..KB {
                // SAFETY: in bounds as for K below (v_pf.len() ≥ (j + KB)·d);
                // prefetching has no architectural effect anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(vp.add((j + b) * d + c) as *const i8) };
            }
        }
        let mut kv = [_mm256_setzero_ps(); KB];
        for (b, kvb) in kv.iter_mut().enumerate() {
            // SAFETY: (j + b)·d + c + 8 ≤ (j + KB)·d ≤ k.len() (asserted).
            *kvb = unsafe { E::load8(kp.add((j + b) * d + c)) };
        }
        for r in 0..N {
            // SAFETY: r·d + c + 8 ≤ N·d ≤ q.len() (asserted).
            let qv = unsafe { _mm256_loadu_ps(qp.add(r * d + c)) };
            for b in 0..KB {
                acc[b][r] = _mm256_fmadd_ps(qv, kv[b], acc[b][r]);
            }
        }
        c += 8;
    }
    let mut flat = [_mm256_setzero_ps(); 8];
    for b in 0..KB {
        for r in 0..N {
            flat[b * N + r] = acc[b][r];
        }
    }
    let mut out = [0.0f32; 8];
    for g in 0..(N * KB).div_ceil(4) {
        let h = hsum4(
            flat[4 * g],
            flat[4 * g + 1],
            flat[4 * g + 2],
            flat[4 * g + 3],
        );
        // SAFETY: g < 2, so 4g..4g+4 lies within `out` (8 floats).
        unsafe { _mm_storeu_ps(out.as_mut_ptr().add(4 * g), h) };
    }
    if d8 < d {
        for b in 0..KB {
            for r in 0..N {
                let qr = &q[r * d + d8..(r + 1) * d];
                let kr = &k[(j + b) * d + d8..(j + b + 1) * d];
                out[b * N + r] += qr.iter().zip(kr).map(|(x, y)| x * y.to_f32()).sum::<f32>();
            }
        }
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) fn qk<const N: usize, const KB: usize, E: KvElem>(
    q: &[f32],
    k: &[E],
    v_pf: &[E],
    d: usize,
    jlo: usize,
    jhi: usize,
    s: &mut [[f32; TILE]; MAX_ROWS],
) {
    let mut j = jlo;
    while j + KB <= jhi {
        let o = dots::<N, KB, E>(q, k, v_pf, d, j);
        for b in 0..KB {
            for r in 0..N {
                s[r][j + b - jlo] = o[b * N + r];
            }
        }
        j += KB;
    }
    while j < jhi {
        let o = dots::<N, 1, E>(q, k, v_pf, d, j);
        for r in 0..N {
            s[r][j - jlo] = o[r];
        }
        j += 1;
    }
}

/// Columns `c..c + 8·CW` of `acc_r ← alpha_r·acc_r + Σ_j p_rj·v_j`,
/// accumulators held in registers across the key loop.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::too_many_arguments)]
fn pv_cols<const N: usize, const CW: usize, E: KvElem>(
    s: &[[f32; TILE]],
    alpha: &[f32],
    k_pf: &[E],
    v: &[E],
    d: usize,
    base: usize,
    jlo: usize,
    jhi: usize,
    acc: &mut [f32],
    c: usize,
) {
    assert!(s.len() >= N && alpha.len() >= N && base <= jlo && jhi - base <= TILE);
    assert!(jhi * d <= v.len() && acc.len() >= N * d && c + 8 * CW <= d);
    let (vp, ap) = (v.as_ptr(), acc.as_mut_ptr());
    let mut a = [[_mm256_setzero_ps(); CW]; N];
    for r in 0..N {
        let al = _mm256_set1_ps(alpha[r]);
        for w in 0..CW {
            // SAFETY: r·d + c + 8w + 8 ≤ r·d + d ≤ acc.len() (asserted).
            a[r][w] = _mm256_mul_ps(unsafe { _mm256_loadu_ps(ap.add(r * d + c + 8 * w)) }, al);
        }
    }
    for j in jlo..jhi {
        // Prefetch the K row one tile ahead, columns c..c+8·CW (one hint
        // per 64-byte line): the next QK step then finds K in cache.
        let pf = (j + TILE) * d + c;
        if pf + 8 * CW <= k_pf.len() {
            for w in (0..CW).step_by(2) {
                // SAFETY: in bounds (checked); prefetches never fault anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(k_pf.as_ptr().add(pf + 8 * w) as *const i8) };
            }
        }
        let mut vv = [_mm256_setzero_ps(); CW];
        for (w, vw) in vv.iter_mut().enumerate() {
            // SAFETY: j·d + c + 8w + 8 ≤ (j + 1)·d ≤ jhi·d ≤ v.len() (asserted).
            *vw = unsafe { E::load8(vp.add(j * d + c + 8 * w)) };
        }
        for r in 0..N {
            let p = _mm256_set1_ps(s[r][j - base]);
            for w in 0..CW {
                a[r][w] = _mm256_fmadd_ps(p, vv[w], a[r][w]);
            }
        }
    }
    for r in 0..N {
        for w in 0..CW {
            // SAFETY: as for the loads above.
            unsafe { _mm256_storeu_ps(ap.add(r * d + c + 8 * w), a[r][w]) };
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) fn pv<const N: usize, const CW: usize, E: KvElem>(
    s: &[[f32; TILE]],
    alpha: &[f32],
    k_pf: &[E],
    v: &[E],
    d: usize,
    base: usize,
    jlo: usize,
    jhi: usize,
    acc: &mut [f32],
) {
    let mut c = 0;
    while c + 8 * CW <= d {
        pv_cols::<N, CW, E>(s, alpha, k_pf, v, d, base, jlo, jhi, acc, c);
        c += 8 * CW;
    }
    while c + 8 <= d {
        pv_cols::<N, 1, E>(s, alpha, k_pf, v, d, base, jlo, jhi, acc, c);
        c += 8;
    }
    for r in 0..N {
        for cc in c..d {
            let mut x = acc[r * d + cc] * alpha[r];
            for j in jlo..jhi {
                x += s[r][j - base] * v[j * d + cc].to_f32();
            }
            acc[r * d + cc] = x;
        }
    }
}
