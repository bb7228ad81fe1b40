//! End-to-end tests (one test binary: linking Burn is slow, so keep binaries few).
//!
//! They read `../shared` (tiny reference models, the Gemma 3 golden values). When it is
//! missing they fail under `CI=true` and skip with a loud message elsewhere.

mod calib_prompts;
mod cli;
mod common;
mod eval;
mod fuzz;
mod gemma;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu;
mod layer_error;
mod longbench;
mod press;
mod profile;
mod serve;
mod srh;
mod tiny;
mod verify;
