//! Run-time CPU feature selection.
//!
//! Release builds target baseline x86-64, so the vector kernels are compiled with
//! `#[target_feature]` and chosen here at run time: one binary runs everywhere and uses AVX2
//! where the CPU has it.

use std::sync::OnceLock;

/// A kernel family, ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable Rust; the reference the vector kernels must agree with.
    Scalar,
    /// x86-64 with AVX2 + FMA + F16C (all three: every AVX2 CPU has them, and the kernels use
    /// FMA accumulation and F16C scale conversion).
    Avx2,
}

impl SimdLevel {
    /// Lower-case name for reports and the `COMPRESSKV_SIMD` variable.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
        }
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The best level this CPU supports (detected once).
pub fn detected() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        SimdLevel::Avx2
    } else {
        SimdLevel::Scalar
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> SimdLevel {
    SimdLevel::Scalar
}

/// The level the kernels use: [`detected`], lowered to scalar when the environment variable
/// `COMPRESSKV_SIMD=scalar` is set (read once), to rule the vector kernels out when debugging
/// or comparing. Asking for a level above the detected one has no effect: that would crash.
pub fn active() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("COMPRESSKV_SIMD").as_deref() {
            Ok("scalar") => SimdLevel::Scalar,
            _ => SimdLevel::Avx2,
        };
        detected().min(cap)
    })
}

/// Whether the AVX-512 kernels run: the CPU has AVX-512 F, BW and VNNI, and
/// `COMPRESSKV_SIMD` is neither `scalar` nor `avx2` (`avx2` keeps everything on the AVX2
/// kernels, for side-by-side measurements). Only the packed integer products use it (the
/// loader packs where it is on), so it is a switch beside the levels rather than a level.
pub fn avx512() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let allowed = !matches!(
            std::env::var("COMPRESSKV_SIMD").as_deref(),
            Ok("scalar") | Ok("avx2")
        );
        allowed && active() == SimdLevel::Avx2 && avx512_detected()
    })
}

/// AVX-512 F, BW and VNNI, whatever `COMPRESSKV_SIMD` says.
pub fn avx512_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the prefill products run on AMX tiles ([`super::qmatrix`]'s `amx`): [`avx512`] is
/// on, the CPU has AMX-TILE and AMX-BF16, `COMPRESSKV_SIMD` is not `avx512` (which keeps
/// prefill on the exact VNNI kernels, for side-by-side measurements), and Linux granted this
/// process the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`; without it the first
/// tile instruction faults). Asked once.
pub fn amx() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let allowed = !matches!(std::env::var("COMPRESSKV_SIMD").as_deref(), Ok("avx512"));
        allowed && avx512() && amx_detected() && amx_permitted()
    })
}

/// AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22), whatever the OS allows.
pub fn amx_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaf 7 (a CPU without it answers zeros).
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        let want = (1 << 24) | (1 << 22);
        edx & want == want
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Ask Linux for the AMX tile data state for this process (all its threads).
fn amx_permitted() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain system call with integer arguments; it changes no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// Every level this machine can run, lowest first (tests run each of them).
pub fn available_levels() -> Vec<SimdLevel> {
    [SimdLevel::Scalar, SimdLevel::Avx2]
        .into_iter()
        .filter(|&l| l <= detected())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_consistent() {
        let levels = available_levels();
        assert_eq!(levels[0], SimdLevel::Scalar);
        assert_eq!(*levels.last().unwrap(), detected());
        assert!(active() <= detected());
        assert_eq!(SimdLevel::Avx2.name(), "avx2");
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            assert_eq!(detected(), SimdLevel::Avx2);
        }
    }
}
