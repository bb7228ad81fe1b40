//! Gemma 3 text decoder: embeddings scaled by sqrt(hidden), sandwich norms (pre/post attention,
//! pre/post FFN), q/k RMSNorm, GeGLU (tanh), attention scale `query_pre_attn_scalar^-0.5`,
//! sliding-window layers (5 of every 6) with their own RoPE base, tied LM head.

use super::{Family, Slot, standard_hf_name};
use crate::spec::ModelSpec;
use crate::weights::SourceKind;

pub struct Gemma3Family;

impl Family for Gemma3Family {
    fn hf_name(&self, slot: Slot, layer: Option<usize>) -> String {
        let l = |s: &str| format!("model.layers.{}.{s}", layer.unwrap_or(0));
        match slot {
            Slot::FfnNorm => l("pre_feedforward_layernorm.weight"),
            Slot::PostFfnNorm => l("post_feedforward_layernorm.weight"),
            Slot::PostAttnNorm => l("post_attention_layernorm.weight"),
            _ => standard_hf_name(slot, layer),
        }
    }

    /// Gemma's RMSNorm multiplies by `1 + w`. HF checkpoints store `w`; llama.cpp's converter
    /// already added the 1 to every `*norm.weight` in GGUF.
    fn transform(
        &self,
        _spec: &ModelSpec,
        source: SourceKind,
        slot: Slot,
        mut data: Vec<f32>,
        _shape: &[usize],
    ) -> Vec<f32> {
        let is_norm = matches!(
            slot,
            Slot::AttnNorm
                | Slot::PostAttnNorm
                | Slot::FfnNorm
                | Slot::PostFfnNorm
                | Slot::QNorm
                | Slot::KNorm
                | Slot::FinalNorm
        );
        if is_norm && source == SourceKind::Safetensors {
            data.iter_mut().for_each(|w| *w += 1.0);
        }
        data
    }
}
