//! Evaluation: prompt construction (NIAH, passkey, LongBench) and the metrics that score it.
//! Model-free, so every metric is unit-tested on hand-worked cases.

pub mod bench;
pub mod fidelity;
pub mod longbench;
pub mod metrics;
pub mod niah;
pub mod rows;
pub mod run;
pub mod verify;
