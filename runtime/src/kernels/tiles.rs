//! AMX tile primitives shared by the prefill products ([`super::qmatrix`]'s `amx`) and the
//! prefill attention ([`super::attention`]'s `amx`): the tile configuration, bf16 rounding, and
//! one 2×2 step of `tdpbf16ps`.
//!
//! Every tile is 16 rows × 64 bytes (palette 1): tmm0/tmm1 hold two A tiles (16 rows × 32
//! bf16), tmm2/tmm3 two B tiles (16 pairs of rows × 16 columns × 2 bf16, the "VNNI" layout),
//! tmm4..tmm7 the four f32 products `C[2·i + j] += A_i · B_j`. The accumulators live in the
//! tile registers between calls, so a caller runs [`Tiles::zero`] or [`Tiles::load`], one or
//! more [`Tiles::dot`], then [`Tiles::store`], with no other tile user in between on its
//! thread (nothing else in this program touches tiles).
//!
//! Everything here must only run after [`super::simd::amx`] said yes (AMX-TILE/BF16 present and
//! the tile state granted by the OS, AVX-512 F/BW present).

use std::arch::asm;
use std::arch::x86_64::*;

/// Rows of a tile (and columns of an f32 product tile).
pub(crate) const ROWS: usize = 16;
/// bf16 elements in a tile row (64 bytes).
pub(crate) const K: usize = 32;
/// Bytes of one tile.
pub(crate) const BYTES: usize = ROWS * K * 2;

/// Round 16 f32 to bf16 (nearest, ties to even; inputs are finite).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn bf16x16(v: __m512) -> __m256i {
    let bits = _mm512_castps_si512(v);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let r = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(r))
}

/// The tile state of this thread, configured for the 2×2 step; released on drop.
pub(crate) struct Tiles(());

impl Tiles {
    /// Configure the tiles (`ldtilecfg`).
    ///
    /// # Safety
    /// Module contract (AMX usable).
    pub(crate) unsafe fn new() -> Tiles {
        #[repr(C, align(64))]
        struct Config([u8; 64]);
        let mut c = Config([0u8; 64]);
        c.0[0] = 1;
        for t in 0..8 {
            c.0[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c.0[48 + t] = ROWS as u8;
        }
        // SAFETY: AMX usable (caller); the configuration is well formed.
        unsafe { asm!("ldtilecfg [{}]", in(reg) c.0.as_ptr(), options(nostack)) };
        Tiles(())
    }

    /// `C[0..4] = 0`.
    pub(crate) fn zero(&mut self) {
        // SAFETY: the tiles are configured (self exists).
        unsafe {
            asm!(
                "tilezero tmm4",
                "tilezero tmm5",
                "tilezero tmm6",
                "tilezero tmm7",
                options(nostack)
            )
        };
    }

    /// `C[t]` = the 16 × 16 f32 at `c[t]`, rows `stride` bytes apart.
    ///
    /// # Safety
    /// Each `c[t]` points to 16 readable rows of 64 bytes, `stride` bytes apart.
    pub(crate) unsafe fn load(&mut self, c: [*const f32; 4], stride: usize) {
        // SAFETY: forwarded caller guarantee; tiles configured.
        unsafe {
            asm!(
                "tileloadd tmm4, [{c0} + {s}*1]",
                "tileloadd tmm5, [{c1} + {s}*1]",
                "tileloadd tmm6, [{c2} + {s}*1]",
                "tileloadd tmm7, [{c3} + {s}*1]",
                c0 = in(reg) c[0],
                c1 = in(reg) c[1],
                c2 = in(reg) c[2],
                c3 = in(reg) c[3],
                s = in(reg) stride,
                options(nostack, readonly)
            )
        };
    }

    /// `C[t]` into the 16 × 16 f32 at `c[t]`, rows `stride` bytes apart.
    ///
    /// # Safety
    /// Each `c[t]` points to 16 writable rows of 64 bytes, `stride` bytes apart.
    pub(crate) unsafe fn store(&mut self, c: [*mut f32; 4], stride: usize) {
        // SAFETY: forwarded caller guarantee; tiles configured.
        unsafe {
            asm!(
                "tilestored [{c0} + {s}*1], tmm4",
                "tilestored [{c1} + {s}*1], tmm5",
                "tilestored [{c2} + {s}*1], tmm6",
                "tilestored [{c3} + {s}*1], tmm7",
                c0 = in(reg) c[0],
                c1 = in(reg) c[1],
                c2 = in(reg) c[2],
                c3 = in(reg) c[3],
                s = in(reg) stride,
                options(nostack)
            )
        };
    }

    /// `steps` times: `C[2·i + j] += A_i · B_j`, with the A tiles at `a[i]` and the B tiles at
    /// `b[j]` (each 1 KiB contiguous, 64-byte rows), then every pointer advanced by `a_step` /
    /// `b_step` bytes.
    ///
    /// # Safety
    /// Every tile read (`steps` of each pointer) lies in readable memory; `steps > 0`.
    pub(crate) unsafe fn dot(
        &mut self,
        a: [*const u8; 2],
        a_step: usize,
        b: [*const u8; 2],
        b_step: usize,
        steps: usize,
    ) {
        debug_assert!(steps > 0);
        // SAFETY: forwarded caller guarantee; tiles configured.
        unsafe {
            asm!(
                "2:",
                "tileloadd tmm0, [{a0} + {ld}*1]",
                "tileloadd tmm1, [{a1} + {ld}*1]",
                "tileloadd tmm2, [{b0} + {ld}*1]",
                "tileloadd tmm3, [{b1} + {ld}*1]",
                "tdpbf16ps tmm4, tmm0, tmm2",
                "tdpbf16ps tmm5, tmm0, tmm3",
                "tdpbf16ps tmm6, tmm1, tmm2",
                "tdpbf16ps tmm7, tmm1, tmm3",
                "add {a0}, {sa}",
                "add {a1}, {sa}",
                "add {b0}, {sb}",
                "add {b1}, {sb}",
                "dec {k}",
                "jnz 2b",
                a0 = inout(reg) a[0] => _,
                a1 = inout(reg) a[1] => _,
                b0 = inout(reg) b[0] => _,
                b1 = inout(reg) b[1] => _,
                k = inout(reg) steps => _,
                sa = in(reg) a_step,
                sb = in(reg) b_step,
                ld = in(reg) 64usize,
                options(nostack, readonly)
            )
        };
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: AMX usable (self exists); drops the tile state until the next configuration.
        unsafe { asm!("tilerelease", options(nostack)) };
    }
}
