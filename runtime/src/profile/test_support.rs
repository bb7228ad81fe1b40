//! Hand-built model specs and temp directories shared by the profile module's unit tests.

use crate::spec::{
    Activation, Architecture, AttentionKind, LayerSpec, ModelSpec, RopeScaling, RopeSpec,
};

/// A hand-built spec with the given shape.
pub fn spec(
    architecture: Architecture,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    vocab_size: usize,
) -> ModelSpec {
    let layer = LayerSpec {
        attention: AttentionKind::Full,
        rope: RopeSpec {
            theta: 10_000.0,
            scaling: RopeScaling::None,
        },
    };
    ModelSpec {
        architecture,
        hidden_size: n_heads * head_dim,
        intermediate_size: 4 * n_heads * head_dim,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps: 1e-5,
        activation: Activation::Silu,
        qkv_bias: false,
        qk_norm: false,
        sandwich_norms: false,
        embed_scale: None,
        attn_scale: 1.0 / (head_dim as f64).sqrt(),
        attn_logit_softcap: None,
        final_logit_softcap: None,
        tie_embeddings: false,
        max_position_embeddings: 131_072,
        layers: vec![layer; n_layers],
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

pub fn llama_8b() -> ModelSpec {
    spec(Architecture::Llama, 32, 32, 8, 128, 128_256)
}

pub fn mistral_7b() -> ModelSpec {
    spec(Architecture::Mistral, 32, 32, 8, 128, 32_768)
}

pub fn gemma_270m() -> ModelSpec {
    spec(Architecture::Gemma3, 18, 4, 1, 256, 262_144)
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "compresskv-profile-test-{tag}-{}-{}",
        std::process::id(),
        super::io::unique_suffix()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
