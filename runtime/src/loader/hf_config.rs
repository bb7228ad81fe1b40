//! Hugging Face `config.json` (+ `generation_config.json`) → [`ModelSpec`].
//!
//! The only place HF config names appear. Reads both dialects: transformers 4.x (`rope_theta`,
//! `rope_scaling`, `rope_local_base_freq`, `sliding_window_pattern`) and 5.x (`rope_parameters`,
//! possibly keyed by layer type, and `layer_types`).

use serde_json::Value;

use super::LoadError;
use crate::spec::{
    Activation, Architecture, AttentionKind, LayerSpec, ModelSpec, RopeScaling, RopeSpec,
};

/// Parses `config.json`; `generation_config` (if present) can add EOS ids.
pub fn spec_from_hf_config(
    config: &Value,
    generation_config: Option<&Value>,
) -> Result<ModelSpec, LoadError> {
    // Multimodal Gemma 3 checkpoints nest the decoder under `text_config`.
    let cfg = match config.get("text_config") {
        Some(tc) if tc.is_object() => tc,
        _ => config,
    };
    let model_type = cfg
        .get("model_type")
        .and_then(Value::as_str)
        .or_else(|| config.get("model_type").and_then(Value::as_str))
        .ok_or_else(|| missing("model_type", "e.g. \"llama\""))?;
    let architecture = match model_type {
        "llama" => Architecture::Llama,
        "mistral" => Architecture::Mistral,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        "gemma3" | "gemma3_text" => Architecture::Gemma3,
        other => {
            return Err(LoadError::Unsupported(format!(
                "architecture `model_type: \"{other}\"` is not supported; supported: llama, \
                 mistral, qwen2, qwen3, gemma3_text"
            )));
        }
    };
    let hidden_size = get_usize(cfg, "hidden_size")?;
    let n_heads = get_usize(cfg, "num_attention_heads")?;
    let n_kv_heads = opt_usize(cfg, "num_key_value_heads")?.unwrap_or(n_heads);
    let n_layers = get_usize(cfg, "num_hidden_layers")?;
    crate::spec::check_layer_count(n_layers, "num_hidden_layers")
        .map_err(|e| LoadError::Config(format!("config.json: {e}")))?;
    let head_dim = match opt_usize(cfg, "head_dim")? {
        Some(d) => d,
        None => {
            if n_heads == 0 || hidden_size % n_heads != 0 {
                return Err(LoadError::Config(format!(
                    "config.json: no `head_dim` and hidden_size {hidden_size} is not divisible \
                     by num_attention_heads {n_heads}"
                )));
            }
            hidden_size / n_heads
        }
    };
    let is_gemma = architecture == Architecture::Gemma3;
    let default_eps = if is_gemma { 1e-6 } else { 1e-5 };
    let rms_norm_eps = opt_f64(cfg, "rms_norm_eps")?.unwrap_or(default_eps);

    let activation = activation(cfg, is_gemma)?;

    let layers = layer_specs(cfg, architecture, n_layers)?;
    let attn_scale = match (is_gemma, opt_f64(cfg, "query_pre_attn_scalar")?) {
        (true, Some(s)) => s.powf(-0.5),
        _ => 1.0 / (head_dim as f64).sqrt(),
    };
    let tie_embeddings = cfg
        .get("tie_word_embeddings")
        .or_else(|| config.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        .unwrap_or(is_gemma);

    let (bos_token_id, eos_token_ids) = special_tokens(cfg, generation_config);

    let spec = ModelSpec {
        architecture,
        hidden_size,
        intermediate_size: get_usize(cfg, "intermediate_size")?,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size: get_usize(cfg, "vocab_size")?,
        rms_norm_eps,
        activation,
        qkv_bias: match architecture {
            Architecture::Qwen2 => true,
            _ => cfg
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        qk_norm: matches!(architecture, Architecture::Qwen3 | Architecture::Gemma3),
        sandwich_norms: is_gemma,
        embed_scale: is_gemma.then(|| (hidden_size as f64).sqrt()),
        attn_scale,
        attn_logit_softcap: opt_f64(cfg, "attn_logit_softcapping")?,
        final_logit_softcap: opt_f64(cfg, "final_logit_softcapping")?,
        tie_embeddings,
        max_position_embeddings: opt_usize(cfg, "max_position_embeddings")?.unwrap_or(4096),
        layers,
        bos_token_id,
        eos_token_ids,
    };
    spec.validate()
        .map_err(|e| LoadError::Config(format!("config.json: {e}")))?;
    Ok(spec)
}

/// `hidden_activation` (Gemma) or `hidden_act`, defaulting per family.
fn activation(cfg: &Value, is_gemma: bool) -> Result<Activation, LoadError> {
    let act_name = cfg
        .get("hidden_activation")
        .or_else(|| cfg.get("hidden_act"))
        .and_then(Value::as_str)
        .unwrap_or(if is_gemma {
            "gelu_pytorch_tanh"
        } else {
            "silu"
        });
    Ok(match act_name {
        "silu" | "swish" => Activation::Silu,
        "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new" => Activation::GeluTanh,
        other => {
            return Err(LoadError::Unsupported(format!(
                "config.json: activation \"{other}\" is not supported (silu, gelu_pytorch_tanh)"
            )));
        }
    })
}

/// BOS, and the EOS ids of `config.json` joined with those of `generation_config.json`.
fn special_tokens(cfg: &Value, generation_config: Option<&Value>) -> (Option<u32>, Vec<u32>) {
    let mut eos_token_ids = token_ids(cfg.get("eos_token_id"));
    if let Some(g) = generation_config {
        for id in token_ids(g.get("eos_token_id")) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    let bos_token_id = token_ids(cfg.get("bos_token_id")).first().copied();
    (bos_token_id, eos_token_ids)
}

fn layer_specs(
    cfg: &Value,
    arch: Architecture,
    n_layers: usize,
) -> Result<Vec<LayerSpec>, LoadError> {
    let sliding_window = opt_usize(cfg, "sliding_window")?;
    // Which layers slide.
    let sliding: Vec<bool> = if let Some(types) = cfg.get("layer_types").and_then(Value::as_array) {
        if types.len() != n_layers {
            return Err(LoadError::Config(format!(
                "config.json: `layer_types` has {} entries but num_hidden_layers is {n_layers}",
                types.len()
            )));
        }
        types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                other => Err(LoadError::Config(format!(
                    "config.json: layer_types[{i}] = {other:?}; expected \"sliding_attention\" or \
                     \"full_attention\""
                ))),
            })
            .collect::<Result<_, _>>()?
    } else if arch == Architecture::Gemma3 {
        let pattern = opt_usize(cfg, "sliding_window_pattern")?
            .or(opt_usize(cfg, "_sliding_window_pattern")?)
            .unwrap_or(6);
        (0..n_layers).map(|i| (i + 1) % pattern != 0).collect()
    } else if arch == Architecture::Mistral {
        vec![sliding_window.is_some(); n_layers]
    } else if matches!(arch, Architecture::Qwen2 | Architecture::Qwen3) {
        let on = cfg
            .get("use_sliding_window")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let max_window_layers = opt_usize(cfg, "max_window_layers")?.unwrap_or(n_layers);
        (0..n_layers)
            .map(|i| on && sliding_window.is_some() && i >= max_window_layers)
            .collect()
    } else {
        vec![false; n_layers]
    };
    if sliding.iter().any(|&s| s) && sliding_window.is_none() {
        return Err(LoadError::Config(
            "config.json: some layers use sliding attention but `sliding_window` is not set".into(),
        ));
    }

    let (full_rope, sliding_rope) = rope_specs(cfg, arch)?;
    Ok(sliding
        .into_iter()
        .map(|s| {
            if s {
                LayerSpec {
                    attention: AttentionKind::Sliding(sliding_window.unwrap()),
                    rope: sliding_rope,
                }
            } else {
                LayerSpec {
                    attention: AttentionKind::Full,
                    rope: full_rope,
                }
            }
        })
        .collect())
}

/// (full-attention rope, sliding-attention rope).
fn rope_specs(cfg: &Value, arch: Architecture) -> Result<(RopeSpec, RopeSpec), LoadError> {
    let default_theta = 10000.0;
    if let Some(params) = cfg.get("rope_parameters").filter(|v| v.is_object()) {
        // 5.x: either one dict, or one per layer type.
        if params.get("full_attention").is_some() || params.get("sliding_attention").is_some() {
            let full = params
                .get("full_attention")
                .map(|p| rope_from_dict(p, "rope_parameters.full_attention"))
                .transpose()?;
            let sliding = params
                .get("sliding_attention")
                .map(|p| rope_from_dict(p, "rope_parameters.sliding_attention"))
                .transpose()?;
            let full = full.or(sliding).unwrap();
            return Ok((full, sliding.unwrap_or(full)));
        }
        let r = rope_from_dict(params, "rope_parameters")?;
        return Ok((r, r));
    }
    // 4.x.
    let theta = opt_f64(cfg, "rope_theta")?.unwrap_or(if arch == Architecture::Gemma3 {
        1_000_000.0
    } else {
        default_theta
    });
    let scaling = match cfg.get("rope_scaling").filter(|v| v.is_object()) {
        Some(s) => scaling_from_dict(s, "rope_scaling")?,
        None => RopeScaling::None,
    };
    let full = RopeSpec { theta, scaling };
    if arch == Architecture::Gemma3 {
        // Gemma 3: local layers have their own base and never use the (global) scaling.
        let local = opt_f64(cfg, "rope_local_base_freq")?.unwrap_or(10000.0);
        Ok((
            full,
            RopeSpec {
                theta: local,
                scaling: RopeScaling::None,
            },
        ))
    } else {
        Ok((full, full))
    }
}

fn rope_from_dict(d: &Value, ctx: &str) -> Result<RopeSpec, LoadError> {
    let theta = opt_f64(d, "rope_theta")?
        .ok_or_else(|| missing(&format!("{ctx}.rope_theta"), "a number"))?;
    Ok(RopeSpec {
        theta,
        scaling: scaling_from_dict(d, ctx)?,
    })
}

fn scaling_from_dict(d: &Value, ctx: &str) -> Result<RopeScaling, LoadError> {
    let ty = d
        .get("rope_type")
        .or_else(|| d.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64, LoadError> {
        opt_f64(d, k)?.ok_or_else(|| missing(&format!("{ctx}.{k}"), "a number"))
    };
    Ok(match ty {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(LoadError::Unsupported(format!(
                "config.json: {ctx}.rope_type \"{other}\" is not supported (default, linear, llama3)"
            )));
        }
    })
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

fn missing(field: &str, expected: &str) -> LoadError {
    LoadError::Config(format!(
        "config.json: missing field `{field}` (expected {expected})"
    ))
}

fn get_usize(cfg: &Value, key: &str) -> Result<usize, LoadError> {
    opt_usize(cfg, key)?.ok_or_else(|| missing(key, "a positive integer"))
}

fn opt_usize(cfg: &Value, key: &str) -> Result<Option<usize>, LoadError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
            LoadError::Config(format!(
                "config.json: `{key}` = {v}; expected a non-negative integer"
            ))
        }),
    }
}

fn opt_f64(cfg: &Value, key: &str) -> Result<Option<f64>, LoadError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            LoadError::Config(format!("config.json: `{key}` = {v}; expected a number"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama_base() -> Value {
        json!({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
               "num_key_value_heads": 2, "num_hidden_layers": 3, "intermediate_size": 128,
               "vocab_size": 384, "eos_token_id": 1})
    }

    /// Found by the fuzzer: a layer count of 5 million sized 300 MiB of per-layer tables.
    #[test]
    fn absurd_layer_count_is_refused_before_allocating() {
        let mut v = llama_base();
        v["num_hidden_layers"] = json!(5_000_003);
        let e = spec_from_hf_config(&v, None).unwrap_err().to_string();
        assert!(
            e.contains("num_hidden_layers = 5000003") && e.contains("corrupt"),
            "{e}"
        );
    }

    #[test]
    fn both_rope_dialects_give_the_same_spec() {
        let mut v4 = llama_base();
        v4["rope_theta"] = json!(500000.0);
        v4["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        let mut v5 = llama_base();
        v5["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        let (a, b) = (
            spec_from_hf_config(&v4, None).unwrap(),
            spec_from_hf_config(&v5, None).unwrap(),
        );
        assert_eq!(a, b);
        assert!(matches!(
            a.layers[0].rope.scaling,
            RopeScaling::Llama3 { .. }
        ));
        assert_eq!(a.head_dim, 16);
    }

    #[test]
    fn gemma3_layer_pattern_and_per_type_rope() {
        let cfg = json!({"model_type": "gemma3_text", "hidden_size": 640, "num_attention_heads": 4,
            "num_key_value_heads": 1, "num_hidden_layers": 18, "intermediate_size": 2048,
            "head_dim": 256, "vocab_size": 262144, "sliding_window": 512,
            "query_pre_attn_scalar": 256, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0});
        let s = spec_from_hf_config(&cfg, None).unwrap();
        assert_eq!(s.full_attention_layers(), vec![5, 11, 17]);
        assert_eq!(s.layers[0].attention, AttentionKind::Sliding(512));
        assert_eq!(s.layers[0].rope.theta, 10000.0);
        assert_eq!(s.layers[5].rope.theta, 1e6);
        assert_eq!(s.attn_scale, 1.0 / 16.0);
        assert!(s.tie_embeddings && s.qk_norm && s.sandwich_norms);
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = llama_base();
        c.as_object_mut().unwrap().remove("hidden_size");
        let e = spec_from_hf_config(&c, None).unwrap_err().to_string();
        assert!(e.contains("hidden_size"), "{e}");
        let mut c = llama_base();
        c["model_type"] = json!("gpt2");
        let e = spec_from_hf_config(&c, None).unwrap_err().to_string();
        assert!(e.contains("gpt2") && e.contains("not supported"), "{e}");
        let mut c = llama_base();
        c["num_key_value_heads"] = json!(3);
        let e = spec_from_hf_config(&c, None).unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
    }

    #[test]
    fn generation_config_adds_eos_ids() {
        let g = json!({"eos_token_id": [1, 7]});
        let s = spec_from_hf_config(&llama_base(), Some(&g)).unwrap();
        assert_eq!(s.eos_token_ids, vec![1, 7]);
    }
}
