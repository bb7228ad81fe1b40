use std::path::PathBuf;

use compresskv_runtime::RuntimeDevice;
use compresskv_runtime::device::Precision;

/// `../shared` next to the repository, or `$COMPRESSKV_SHARED`.
pub fn shared_dir() -> Option<PathBuf> {
    let p = std::env::var_os("COMPRESSKV_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    if p.is_dir() {
        Some(p)
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing: CI must run the reference tests",
            p.display()
        );
    } else {
        eprintln!("SKIPPED: {} not found (set COMPRESSKV_SHARED)", p.display());
        None
    }
}

/// The exact f32 path: what the golden tests check against the reference implementation.
pub fn cpu() -> RuntimeDevice {
    RuntimeDevice::cpu().with_precision(Precision::Exact)
}

/// The default fast path: quantized weights and the CPU kernels.
pub fn cpu_fast() -> RuntimeDevice {
    RuntimeDevice::cpu().with_precision(Precision::Fast)
}

pub fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The real model (google/gemma-3-270m) from the model cache, on the exact path. Under
/// `CI=true` a missing model fails the test (CI fetches it first); elsewhere it skips with a
/// loud message.
pub fn real_model() -> Option<compresskv_runtime::loader::LoadedModel> {
    real_model_on(&cpu())
}

pub fn real_model_on(device: &RuntimeDevice) -> Option<compresskv_runtime::loader::LoadedModel> {
    match compresskv_runtime::loader::load_model("google/gemma-3-270m", device) {
        Ok(m) => Some(m),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the real model is required in CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED (real model not available): {e}");
            None
        }
    }
}
