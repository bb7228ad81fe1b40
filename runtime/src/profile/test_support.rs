//! Hand-built model specs and temp directories shared by the profile module's unit tests.

#[allow(unused_imports)]
use super::*;
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
        unique_suffix()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A valid Gemma-3-270M-shaped profile with tuning (scores are arbitrary but fixed).
pub fn sample() -> Profile {
    let spec = gemma_270m();
    let (l, h) = (spec.n_layers, spec.n_heads);
    let srh: Vec<Vec<f64>> = (0..l)
        .map(|i| (0..h).map(|j| ((i * 7 + j * 3) % 5) as f64 / 4.0).collect())
        .collect();
    let ret: Vec<Vec<f64>> = (0..l)
        .map(|i| (0..h).map(|j| 0.1 * (i + j) as f64 + 1e-300).collect())
        .collect();
    let raw: Vec<f64> = (0..l).map(|i| 1.0 + (i as f64).sin().abs()).collect();
    let total: f64 = raw.iter().sum();
    let per_layer: Vec<f64> = raw.iter().map(|x| x / total).collect();
    Profile {
        schema_version: SCHEMA_VERSION,
        model_id: "google/gemma-3-270m".into(),
        fingerprint: Fingerprint::of(&spec, GEMMA_CONFIG, Some(b"weights")),
        srh_scores: srh,
        retrieval_scores: ret,
        layer_errors: Some(LayerErrors {
            per_layer,
            per_dataset: vec![
                ("qa \"quoted\" set".into(), raw.clone()),
                ("needles".into(), vec![0.1 + 0.2; l]),
            ],
            source: "qa".into(),
        }),
        defaults: Defaults::for_heads(h),
        tuning: Some(Tuning {
            chosen: Settings {
                srh_heads: 2,
                window: 16,
                kernel: 9,
                mix: 0.25,
                union: 0.5,
                error_weight: 1.0,
            },
            table: vec![
                (
                    Settings {
                        srh_heads: 1,
                        window: 8,
                        kernel: 5,
                        mix: 0.0,
                        union: 0.0,
                        error_weight: 1.0,
                    },
                    0.5,
                ),
                (
                    Settings {
                        srh_heads: 2,
                        window: 16,
                        kernel: 5,
                        mix: 0.25,
                        union: 0.0,
                        error_weight: 1.0,
                    },
                    0.875,
                ),
            ],
            budgets: vec![64; l],
            per_budget: vec![BudgetChoice {
                budget: 256,
                chosen: Settings {
                    srh_heads: 4,
                    window: 8,
                    kernel: 5,
                    mix: 0.5,
                    union: 0.0,
                    error_weight: 1.0,
                },
                table: vec![(
                    Settings {
                        srh_heads: 4,
                        window: 8,
                        kernel: 5,
                        mix: 0.5,
                        union: 0.0,
                        error_weight: 1.0,
                    },
                    0.9,
                )],
            }],
            validation: Some(Validation {
                prompts: 12,
                search_prompts: 13,
                table: vec![(
                    Settings {
                        srh_heads: 2,
                        window: 16,
                        kernel: 9,
                        mix: 0.25,
                        union: 0.5,
                        error_weight: 1.0,
                    },
                    0.75,
                )],
                per_budget: vec![BudgetValidation {
                    budget: 256,
                    overall: 0.75,
                    candidate: Settings {
                        srh_heads: 4,
                        window: 8,
                        kernel: 5,
                        mix: 0.5,
                        union: 0.0,
                        error_weight: 1.0,
                    },
                    candidate_score: 0.8,
                    kept: true,
                }],
            }),
        }),
        recommendation: Some(BudgetRecommendation {
            target: 0.9,
            budget: 128,
            method: "compresskv".into(),
            lengths: vec![2048, 4096],
            depths: vec![10.0, 50.0, 90.0],
            prompts: "needle, peer protocol, haystack noise, needles: built-in San Francisco"
                .into(),
            full_score: 93.75,
            shares: vec![(64, 0.8125), (128, 0.9375), (256, 1.0)],
            created: utc_timestamp(1_700_000_100),
        }),
        provenance: Provenance {
            tool_version: TOOL_VERSION.into(),
            calibration_hash: sha256_hex(b"calibration"),
            grid: "srh_heads=1/2/4 window=8,16 mix=0,0.25".into(),
            seed: 42,
            wall_time_s: 12.5,
            imported_from: None,
            created: utc_timestamp(1_700_000_000),
        },
    }
}

pub const GEMMA_CONFIG: &str = r#"{"architectures":["Gemma3ForCausalLM"],"num_hidden_layers":18}"#;

/// A suffix unique within the test run (for temp paths).
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}
