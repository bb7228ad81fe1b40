//! CPU kernels for the fast path (placeholder scalar versions while the SIMD ones land).
pub mod attention;
pub mod blocks;
pub mod ops;
pub mod qmatrix;
pub mod simd;
