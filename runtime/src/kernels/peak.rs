//! The machine's f32 multiply-add peak, measured the way `bench` measures memory bandwidth:
//! the compute roofline that prefill (dequantized tiles through f32 `gemm`) is held to.
//!
//! Every thread of rayon's pool runs independent chains of FMAs in registers (enough chains to
//! cover the FMA latency) at the widest width `gemm` uses on this CPU (16 lanes with AVX-512 F,
//! else 8), so the figure is the CPU's instruction throughput under the same load and frequency
//! as a two-core prefill, steal time included.

use std::time::{Duration, Instant};

use super::simd::{self, SimdLevel};

/// Multiply-adds per second (one FMA lane = 1 MAC = 2 FLOP) with every pool thread busy, best
/// of 3 runs of ~30 ms; `None` where the CPU has no AVX2+FMA (no vector kernel to measure).
pub fn fma_peak_macs_per_s() -> Option<f64> {
    if simd::detected() < SimdLevel::Avx2 {
        return None;
    }
    let op = if Op::Fma512.available() {
        Op::Fma512
    } else {
        Op::Fma
    };
    // Calibrate the iteration count on one thread to ~30 ms.
    let mut iters = 1u64 << 16;
    loop {
        let t = Instant::now();
        op_chains(op, iters);
        if t.elapsed() >= Duration::from_millis(10) || iters >= 1 << 32 {
            iters = (iters as f64 * 0.03 / t.elapsed().as_secs_f64().max(1e-6)) as u64;
            break;
        }
        iters *= 4;
    }
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let macs: u64 = rayon::broadcast(|_| op_chains(op, iters).unwrap_or(0))
            .into_iter()
            .sum();
        best = best.max(macs as f64 / t.elapsed().as_secs_f64());
    }
    (best > 0.0).then_some(best)
}

/// Independent FMA chains per iteration: Zen 2 and Intel cores since Haswell issue two FMAs a
/// cycle at a latency of 4–5, so 10 chains keep both pipes full.
const CHAINS: usize = 10;
/// The multiply-add instructions whose issue rates bound a matmul's inner loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `vfmadd231ps` on 256 bits: 8 f32 multiply-adds (the f32 `gemm` prefill on AVX2).
    Fma,
    /// `vfmadd231ps` on 512 bits: 16 f32 multiply-adds (`gemm`'s micro-kernels with AVX-512 F).
    Fma512,
    /// `vpmaddwd`: 16 i16×i16 multiply-adds into 8 i32 (16-bit activations).
    MaddWd,
    /// `vpmaddubsw`: 32 u8×i8 multiply-adds into 16 i16 (8-bit activations, ggml's scheme).
    MaddUbsw,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Fma, Op::Fma512, Op::MaddWd, Op::MaddUbsw];

    /// Whether this CPU runs the instruction.
    pub fn available(self) -> bool {
        if simd::detected() < SimdLevel::Avx2 {
            return false;
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            Op::Fma512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Op::Fma512 => false,
            _ => true,
        }
    }

    /// Multiply-adds per instruction.
    pub fn macs(self) -> u64 {
        match self {
            Op::Fma => 8,
            Op::Fma512 => 16,
            Op::MaddWd => 16,
            Op::MaddUbsw => 32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Fma => "vfmadd231ps",
            Op::Fma512 => "vfmadd231ps zmm",
            Op::MaddWd => "vpmaddwd",
            Op::MaddUbsw => "vpmaddubsw",
        }
    }
}

/// Run `iters` × 10 independent `op` instructions on the calling thread and return the
/// multiply-adds done (for the `kernels` criterion benchmark, which compares the three issue
/// rates: what an integer prefill GEMM could gain over f32 FMA on this CPU). `None` where
/// the CPU lacks the instruction.
pub fn op_chains(op: Op, iters: u64) -> Option<u64> {
    if !op.available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2+FMA checked by `available` (and AVX-512 F for the 512-bit op).
    unsafe {
        if op == Op::Fma512 {
            chains512(iters)
        } else {
            chains(op, iters)
        }
    };
    Some(iters * CHAINS as u64 * op.macs())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn chains(op: Op, iters: u64) {
    use std::arch::x86_64::*;
    match op {
        Op::Fma => {
            let x = _mm256_set1_ps(std::hint::black_box(0.999_9));
            let y = _mm256_set1_ps(std::hint::black_box(1e-6));
            let mut acc = [_mm256_setzero_ps(); CHAINS];
            for _ in 0..iters {
                for a in &mut acc {
                    *a = _mm256_fmadd_ps(*a, x, y);
                }
            }
            std::hint::black_box(acc);
        }
        Op::Fma512 => unreachable!("run by chains512"),
        Op::MaddWd | Op::MaddUbsw => {
            let w = _mm256_set1_epi16(std::hint::black_box(1));
            let mut acc = [_mm256_set1_epi16(std::hint::black_box(3)); CHAINS];
            for _ in 0..iters {
                for a in &mut acc {
                    *a = if op == Op::MaddWd {
                        _mm256_madd_epi16(*a, w)
                    } else {
                        _mm256_maddubs_epi16(*a, w)
                    };
                }
            }
            std::hint::black_box(acc);
        }
    }
}

/// [`chains`] for [`Op::Fma512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn chains512(iters: u64) {
    use std::arch::x86_64::*;
    let x = _mm512_set1_ps(std::hint::black_box(0.999_9));
    let y = _mm512_set1_ps(std::hint::black_box(1e-6));
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    std::hint::black_box(acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figure is a rate this CPU can plausibly reach: above one scalar multiply-add per
    /// cycle at 0.5 GHz per thread, below 64 MACs per cycle at 6 GHz per thread (what a loop
    /// that the compiler removed would report).
    #[test]
    fn peak_is_plausible() {
        let Some(p) = fma_peak_macs_per_s() else {
            assert!(simd::detected() < SimdLevel::Avx2);
            return;
        };
        let t = rayon::current_num_threads() as f64;
        // 16-lane FMAs where AVX-512 F exists: two per cycle make 32 MACs per cycle.
        assert!(p > 0.5e9, "{p:e} MAC/s is too slow to be an FMA loop");
        assert!(
            p < t * 64.0 * 6e9,
            "{p:e} MAC/s: the loop was optimised away"
        );
    }

    #[test]
    fn op_chains_count_their_multiply_adds() {
        for op in Op::ALL {
            match op_chains(op, 1000) {
                Some(m) => assert_eq!(m, 1000 * CHAINS as u64 * op.macs()),
                None => assert!(!op.available()),
            }
        }
    }
}
