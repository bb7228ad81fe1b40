//! `ModelSpec`: the one internal description of a decoder model.
//!
//! Built once from a Hugging Face `config.json` (see [`crate::loader::hf_config`]) or from GGUF
//! metadata (see [`crate::loader::gguf_spec`]); nothing past the loaders ever sees a Hugging Face
//! or GGUF field name. Model code, the KV cache, the presses and the profiler all read this.

use serde::{Deserialize, Serialize};

/// Architecture family. Each family has one file under `model/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma3 => "gemma3",
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Gated-MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// SwiGLU (Llama, Mistral, Qwen).
    Silu,
    /// GeGLU with the tanh approximation (`gelu_pytorch_tanh`, Gemma).
    GeluTanh,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (Gemma 3 4B+ global layers).
    Linear {
        factor: f64,
    },
    /// Llama 3.x wavelength-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// RoPE parameters of one layer (Gemma 3 uses different bases on sliding and global layers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RopeSpec {
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl RopeSpec {
    /// Inverse frequencies `theta^(-2i/d)` for `i < d/2`, with the layer's scaling applied.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f64> {
        let half = head_dim / 2;
        (0..half)
            .map(|i| {
                let f = 1.0 / self.theta.powf(2.0 * i as f64 / head_dim as f64);
                match self.scaling {
                    RopeScaling::None => f,
                    RopeScaling::Linear { factor } => f / factor,
                    RopeScaling::Llama3 {
                        factor,
                        low_freq_factor,
                        high_freq_factor,
                        original_max_position_embeddings: old_ctx,
                    } => {
                        // transformers `_compute_llama3_parameters`.
                        let low_freq_wavelen = old_ctx / low_freq_factor;
                        let high_freq_wavelen = old_ctx / high_freq_factor;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            let smooth = (old_ctx / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    }
                }
            })
            .collect()
    }
}

/// Which keys a layer's queries may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttentionKind {
    /// Causal attention over the whole context.
    Full,
    /// Causal sliding window: the query at position `i` sees keys `j` with `i - w < j <= i`
    /// (a window of `w` keys including itself, as in HF transformers and llama.cpp).
    Sliding(usize),
}

impl AttentionKind {
    pub fn window(self) -> Option<usize> {
        match self {
            AttentionKind::Full => None,
            AttentionKind::Sliding(w) => Some(w),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerSpec {
    pub attention: AttentionKind,
    pub rope: RopeSpec,
}

/// More layers than any published model has (the largest have ~130): a config or GGUF that
/// claims more is corrupt, and is refused before per-layer tables are sized from it.
pub const MAX_LAYERS: usize = 4096;

/// `n_layers` read from `key` of a model file, refused above [`MAX_LAYERS`] before anything is
/// sized from it.
pub fn check_layer_count(n_layers: usize, key: &str) -> Result<(), String> {
    if n_layers > MAX_LAYERS {
        return Err(format!(
            "{key} = {n_layers} is more than any model has (at most {MAX_LAYERS}); the file is \
             corrupt"
        ));
    }
    Ok(())
}

/// Everything the runtime needs to know about a model's shape and numerics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub activation: Activation,
    /// Bias on the q/k/v projections (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm over head_dim on q and k before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Post-attention and post-FFN norms in addition to the pre-norms (Gemma 3).
    pub sandwich_norms: bool,
    /// Multiplier applied to token embeddings (sqrt(hidden) for Gemma).
    pub embed_scale: Option<f64>,
    /// Softmax scale of attention logits (1/sqrt(head_dim) unless the model says otherwise).
    pub attn_scale: f64,
    pub attn_logit_softcap: Option<f64>,
    pub final_logit_softcap: Option<f64>,
    pub tie_embeddings: bool,
    pub max_position_embeddings: usize,
    pub layers: Vec<LayerSpec>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelSpec {
    /// Query heads per KV head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Bytes of one cached token in one layer (K and V, f32).
    pub fn kv_bytes_per_entry(&self) -> usize {
        2 * self.kv_dim() * std::mem::size_of::<f32>()
    }

    /// Multiply-adds of prefilling an `n`-token prompt: the layers' projections and MLP for every
    /// token, attention (QKᵀ and PV over the keys each query sees: all earlier ones, or the
    /// window on sliding layers) and the LM head for the last token only (as `prefill` and
    /// llama-bench compute it). The numerator of the prefill compute roofline.
    pub fn prefill_macs(&self, n: usize) -> f64 {
        let (h, q, kv, ff) = (
            self.hidden_size as f64,
            self.q_dim() as f64,
            self.kv_dim() as f64,
            self.intermediate_size as f64,
        );
        let per_token_layer = h * q + 2.0 * h * kv + q * h + 3.0 * h * ff;
        let n_f = n as f64;
        let attention: f64 = self
            .layers
            .iter()
            .map(|l| {
                // Σ_i keys(i) for query positions i = 0..n.
                let keys = match l.attention.window() {
                    Some(w) if n > w => {
                        let w = w as f64;
                        w * (w + 1.0) / 2.0 + (n_f - w) * w
                    }
                    _ => n_f * (n_f + 1.0) / 2.0,
                };
                2.0 * self.q_dim() as f64 * keys
            })
            .sum();
        let lm_head = if n > 0 {
            h * self.vocab_size as f64
        } else {
            0.0
        };
        self.n_layers as f64 * per_token_layer * n_f + attention + lm_head
    }

    /// Checks invariants that model code relies on; loaders call it before returning a spec.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |m: String| Err(m);
        if self.n_layers == 0 || self.layers.len() != self.n_layers {
            return fail(format!(
                "layer count: n_layers = {} but {} layer specs",
                self.n_layers,
                self.layers.len()
            ));
        }
        if self.n_heads == 0
            || self.n_kv_heads == 0
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            return fail(format!(
                "num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({})",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return fail(format!(
                "head_dim must be even and positive, got {}",
                self.head_dim
            ));
        }
        if self.hidden_size == 0 || self.intermediate_size == 0 || self.vocab_size == 0 {
            return fail("hidden_size, intermediate_size and vocab_size must be positive".into());
        }
        for (i, l) in self.layers.iter().enumerate() {
            if let AttentionKind::Sliding(0) = l.attention {
                return fail(format!("layer {i}: sliding window of 0"));
            }
        }
        Ok(())
    }

    /// Layers with full (global) attention: the ones whose cache grows with the prompt.
    pub fn full_attention_layers(&self) -> Vec<usize> {
        (0..self.n_layers)
            .filter(|&i| self.layers[i].attention == AttentionKind::Full)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let r = RopeSpec {
            theta: 500000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
        };
        let plain = RopeSpec {
            theta: 500000.0,
            scaling: RopeScaling::None,
        };
        let (a, b) = (r.inv_freq(128), plain.inv_freq(128));
        // Highest frequency (wavelength 2π < 8192/4) is unchanged.
        assert_eq!(a[0], b[0]);
        // Lowest frequency (wavelength ≫ 8192) is divided by the factor.
        assert!((a[63] - b[63] / 8.0).abs() < 1e-15);
        // In between it is interpolated, strictly between the two.
        let mid = (0..64)
            .find(|&i| a[i] != b[i] && (a[i] - b[i] / 8.0).abs() > 1e-15)
            .expect("some frequency is smoothed");
        assert!(a[mid] < b[mid] && a[mid] > b[mid] / 8.0);
    }

    /// Gemma 3 270M's shape, counted by hand: 100.3M projection/MLP MACs per token, and
    /// attention whose cost stops growing on sliding layers past their window.
    #[test]
    fn prefill_macs_counts_projections_attention_and_one_lm_head_row() {
        let layer = |attention| LayerSpec {
            attention,
            rope: RopeSpec {
                theta: 10000.0,
                scaling: RopeScaling::None,
            },
        };
        let spec = ModelSpec {
            architecture: Architecture::Gemma3,
            hidden_size: 640,
            intermediate_size: 2048,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 256,
            vocab_size: 262144,
            rms_norm_eps: 1e-6,
            activation: Activation::GeluTanh,
            qkv_bias: false,
            qk_norm: true,
            sandwich_norms: true,
            embed_scale: None,
            attn_scale: 1.0,
            attn_logit_softcap: None,
            final_logit_softcap: None,
            tie_embeddings: true,
            max_position_embeddings: 32768,
            layers: vec![
                layer(AttentionKind::Sliding(512)),
                layer(AttentionKind::Full),
            ],
            bos_token_id: None,
            eos_token_ids: vec![],
        };
        // 640·1024 + 2·640·256 + 1024·640 + 3·640·2048 per token and layer.
        let per_token_layer = 5_570_560.0;
        let attn = |keys: f64| 2.0 * 1024.0 * keys;
        let n = 1000.0;
        let expect = 2.0 * per_token_layer * n
            + attn(512.0 * 513.0 / 2.0 + 488.0 * 512.0)
            + attn(n * (n + 1.0) / 2.0)
            + 640.0 * 262144.0;
        assert_eq!(spec.prefill_macs(1000), expect);
        assert_eq!(spec.prefill_macs(0), 0.0);
        // Below the window both layers see every earlier key.
        assert_eq!(
            spec.prefill_macs(10),
            2.0 * per_token_layer * 10.0 + 2.0 * attn(55.0) + 640.0 * 262144.0
        );
    }
}
