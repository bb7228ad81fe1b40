//! CPU kernels of the fast path, selected at run time by CPU features (AVX2+FMA+F16C, or a
//! portable scalar fallback; `COMPRESSKV_SIMD=scalar` forces the fallback).
//!
//! - [`blocks`]: the block formats (GGUF quants, f16/bf16/f32), defined once and shared with
//!   the GGUF reader: sizes, dequantization, load-time quantization.
//! - [`qmatrix`]: a weight matrix in its block format; the decode mat-vec (int8 dot products on
//!   activations quantized per 32-block, as ggml does) and the prefill mat-mat (dequantized
//!   tiles through f32 `gemm`).
//! - [`ops`]: vectorised GELU-tanh/SiLU (fused with the gate product), RMSNorm, softmax, exp.
//! - [`attention`]: flash-style attention over one KV head's entries (online softmax, split-K
//!   for long decodes; prefill on AMX tiles where the CPU has them), never an N×N matrix.
//! - [`simd`]: which instruction set the kernels dispatch to.
//! - `tiles`: the AMX tile primitives the prefill products and attention share.
//! - [`peak`]: the measured f32 FMA peak (the compute roofline `bench` reports for prefill).
pub mod attention;
pub mod blocks;
pub mod ops;
pub mod peak;
pub mod qmatrix;
pub mod simd;
#[cfg(test)]
pub(crate) mod test_rng;
#[cfg(target_arch = "x86_64")]
pub(crate) mod tiles;

/// Makes the calling thread (the one that will run the model) a worker of rayon's global pool.
/// Without it every kernel call from the main thread is handed to a pool thread and the main
/// thread sleeps on a latch until it finishes: a futex round trip per matmul, a few hundred per
/// decoded token. Call once, first thing in `main`; returns `false` (harmlessly) when the global
/// pool was already started.
pub fn join_thread_pool() -> bool {
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .is_ok()
}
