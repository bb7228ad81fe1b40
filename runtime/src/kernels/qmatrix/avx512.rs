//! The interleaved-weight product of [`super::packed`] with AVX-512 VNNI: lanes are 16 weight
//! rows, each `vpdpwssd` adds one column pair of all 16 rows times one broadcast activation
//! pair. The `vpdpwssd` is written in `asm!`: LLVM splits the intrinsic into `vpmaddwd` +
//! `vpaddd` on CPUs it does not know to have a fast one (any `target-cpu` short of the VNNI
//! server parts), doubling the inner loop's instructions. Every function here must only run
//! after [`super::simd::avx512`] reported the CPU has AVX-512 F, BW and VNNI.

use std::arch::x86_64::*;

use super::ActRow;
use super::packed::{GROUP, Packed, Scales};

/// Bytes ahead of the quants being read that the kernel prefetches (the AVX2 kernels' 4 KiB):
/// single-row decode streams the LM head from memory, and this prefetch together with f16
/// scales took its mat-vec from 6.7 to 4.1 ms (criterion, both cores).
const PREFETCH: usize = 4096;

/// `outs[i][r - first] = W[r]·acts[i]` (see [`Packed::rows`], which checked the lengths).
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `first` a multiple of [`GROUP`], `first + outs[i].len() <=
/// p.rows`, and every activation row has `p.cols / 32` blocks.
pub(super) unsafe fn packed_rows<const N: usize>(
    p: &Packed,
    first: usize,
    acts: &[ActRow<'_, i16>; N],
    outs: [&mut [f32]; N],
) {
    // Independent vpdpwssd chains per activation row: a chain waits ~5 cycles per step while
    // two can issue per cycle, so the pairs of a sub-block are spread over 4 accumulators for
    // one or two rows, 2 for more (integer sums: the result is the same whatever the split).
    macro_rules! go {
        ($c:expr) => {
            // SAFETY: forwarded caller guarantees.
            unsafe {
                match (p.sub, p.b.is_empty(), &p.a) {
                    (16, _, _) => rows_k::<N, $c, 16, false, false>(p, first, acts, outs),
                    (_, true, Scales::F16(_)) => {
                        rows_k::<N, $c, 32, false, true>(p, first, acts, outs)
                    }
                    (_, true, Scales::F32(_)) => {
                        rows_k::<N, $c, 32, false, false>(p, first, acts, outs)
                    }
                    (_, false, _) => rows_k::<N, $c, 32, true, false>(p, first, acts, outs),
                }
            }
        };
    }
    match N {
        1 | 2 => go!(4),
        _ => go!(2),
    }
}

/// The kernel for `N` activation rows, `C` chains each, sub-blocks of `SUB` columns, with or
/// without the min term, f16 (`H`) or f32 scales.
///
/// # Safety
/// As [`packed_rows`]; `SUB == p.sub`, `MIN == !p.b.is_empty()`, `H` iff `p.a` is f16.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows_k<
    const N: usize,
    const C: usize,
    const SUB: usize,
    const MIN: bool,
    const H: bool,
>(
    p: &Packed,
    first: usize,
    acts: &[ActRow<'_, i16>; N],
    outs: [&mut [f32]; N],
) {
    let cols = p.cols;
    let nsub = cols / SUB;
    let nblk = cols / 32;
    let len = outs[0].len();
    let (q, b) = (p.q.as_ptr(), p.b.as_ptr());
    let (a16, a32) = match &p.a {
        Scales::F16(v) => (v.as_ptr(), std::ptr::null()),
        Scales::F32(v) => (std::ptr::null(), v.as_ptr()),
    };
    debug_assert_eq!(H, !a16.is_null());
    for g in first / GROUP..(first + len).div_ceil(GROUP) {
        // SAFETY (pointer arithmetic and loads below): group g < groups, so its quants
        // `[g·16·cols, (g+1)·16·cols)`, scales and mins lie inside `p.q`, `p.a`, `p.b`;
        // activation block j < cols/32 exists in every row (caller).
        let qg = unsafe { q.add(g * GROUP * cols) };
        let sa_at = g * GROUP * nsub;
        let mut acc = [_mm512_setzero_ps(); N];
        for s in 0..nsub {
            let (j, off) = (s * SUB / 32, s * SUB % 32);
            let xp: [*const i32; N] = std::array::from_fn(|i| unsafe {
                acts[i].qs.as_ptr().add(j).cast::<i16>().add(off).cast()
            });
            let qs = unsafe { qg.add(s * SUB * GROUP) };
            // The pair k of 16 weight rows widened to i16 (each activation pair is the
            // broadcast memory operand of its vpdpwssd).
            let w = |k: usize| {
                if k.is_multiple_of(2) {
                    // A hint: never faults, harmless past the end.
                    _mm_prefetch::<_MM_HINT_T0>(qs.wrapping_add(32 * k + PREFETCH).cast());
                }
                _mm512_cvtepi8_epi16(unsafe { _mm256_loadu_si256(qs.add(32 * k).cast()) })
            };
            // Every pair step written out with constant offsets (the loops over i unroll), so
            // the accumulators stay in registers and each vpdpwssd addresses its activation
            // pair as base register + immediate, with no address arithmetic in between. They
            // start from zero (a zeroing idiom costs no execution port).
            let mut isum = [[_mm512_setzero_si512(); C]; N];
            macro_rules! pair {
                ($k:literal) => {
                    if $k < SUB / 2 {
                        let wk = w($k);
                        let c = $k % C;
                        for i in 0..N {
                            // SAFETY: pair $k of activation block j exists (caller); the
                            // instruction only reads those 4 bytes.
                            unsafe {
                                std::arch::asm!(
                                    "vpdpwssd {a}, {w}, dword ptr [{x} + {off}]{{1to16}}",
                                    a = inout(zmm_reg) isum[i][c],
                                    w = in(zmm_reg) wk,
                                    x = in(reg) xp[i],
                                    off = const 4 * $k,
                                    options(pure, readonly, nostack, preserves_flags),
                                );
                            }
                        }
                    }
                };
            }
            pair!(0);
            pair!(1);
            pair!(2);
            pair!(3);
            pair!(4);
            pair!(5);
            pair!(6);
            pair!(7);
            pair!(8);
            pair!(9);
            pair!(10);
            pair!(11);
            pair!(12);
            pair!(13);
            pair!(14);
            pair!(15);
            // The scales are a second stream: prefetch them a few groups ahead too.
            _mm_prefetch::<_MM_HINT_T0>(
                (if H {
                    a16.cast::<u8>()
                } else {
                    a32.cast::<u8>()
                })
                .wrapping_add((sa_at + s * GROUP) * if H { 2 } else { 4 } + 1024)
                .cast(),
            );
            let sa = unsafe {
                if H {
                    _mm512_cvtph_ps(_mm256_loadu_si256(a16.add(sa_at + s * GROUP).cast()))
                } else {
                    _mm512_loadu_ps(a32.add(sa_at + s * GROUP))
                }
            };
            for i in 0..N {
                let t = isum[i][1..]
                    .iter()
                    .fold(isum[i][0], |t, &v| _mm512_add_epi32(t, v));
                let dx = unsafe { *acts[i].d.get_unchecked(j) };
                let scale = _mm512_mul_ps(sa, _mm512_set1_ps(dx));
                acc[i] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(t), acc[i]);
            }
            if MIN {
                let sb = unsafe { _mm512_loadu_ps(b.add((g * nblk + j) * GROUP)) };
                for i in 0..N {
                    let sx = unsafe { *acts[i].s.get_unchecked(j) };
                    acc[i] = _mm512_fnmadd_ps(sb, _mm512_set1_ps(sx), acc[i]);
                }
            }
        }
        let r0 = g * GROUP - first;
        let n = GROUP.min(len - r0);
        let mask: __mmask16 = if n == GROUP { !0 } else { (1u16 << n) - 1 };
        for i in 0..N {
            // SAFETY: rows r0..r0+n of `outs[i]` exist (n = what remains, at most 16).
            unsafe { _mm512_mask_storeu_ps(outs[i].as_mut_ptr().add(r0), mask, acc[i]) };
        }
    }
}
