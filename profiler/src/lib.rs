//! CompressKV profiler: drives a model with an attention observer over calibration prompts to
//! score its Semantic Retrieval Heads (and, for comparison, its classic retrieval heads), and
//! writes the per-model profile the runtime loads by model id.

pub mod calibrate;
pub mod layer_error;
pub mod srh;
pub mod tune;
