//! CompressKV runtime: GQA decoder LLMs in Burn with a KV cache built for eviction.
//!
//! - [`spec`]: the internal model description every part reads.
//! - [`loader`]: HF safetensors directories and GGUF files → [`model::Transformer`] + tokenizer.
//! - [`model`]: the decoder, one file per architecture family.
//! - [`cache`]: per-layer K/V with the original position of every kept entry.
//! - [`generate`]: prefill + decode loop, sampling, stop conditions.

pub mod cache;
pub mod device;
pub mod eval;
pub mod generate;
pub mod loader;
pub mod model;
pub mod press;
pub mod profile;
pub mod spec;
pub mod store;

pub use cache::KvCache;
pub use device::RuntimeDevice;
pub use model::{CausalLM, ForwardCtx, WindowCapture};
pub use spec::ModelSpec;
