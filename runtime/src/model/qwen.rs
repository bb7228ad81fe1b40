//! Qwen2/2.5 (q/k/v bias) and Qwen3 (q/k RMSNorm over head_dim, no bias): the Llama layout with
//! those two switches, both carried by the spec. GGUF Qwen weights use rotate-half RoPE already.

use super::Family;

pub struct QwenFamily;

impl Family for QwenFamily {}
