//! GGUF metadata → [`ModelSpec`], GGUF tensors as a [`WeightSource`], and the GGUF
//! SentencePiece vocabulary → [`SpmTokenizer`]. The only place GGUF key names appear.

use std::path::Path;

use super::gguf::{GgufFile, MetaValue};
use super::spm::{SpmConfig, SpmTokenizer};
use super::{LoadError, RawTensor, SourceKind, WeightSource};
use crate::spec::{
    Activation, Architecture, AttentionKind, LayerSpec, ModelSpec, RopeScaling, RopeSpec,
};

/// GGUF weights: dequantized to f32 by `load` (the exact path, GPU backends), or kept in their
/// block format and borrowed from the memory map by `load_raw` (the CPU kernels).
pub struct GgufSource {
    pub file: GgufFile,
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        // GGUF errors name the file already.
        let file = GgufFile::open(path).map_err(|e| LoadError::Format(e.to_string()))?;
        Ok(GgufSource { file })
    }
}

impl WeightSource for GgufSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Gguf
    }
    fn contains(&self, name: &str) -> bool {
        self.file.tensor_info(name).is_some()
    }
    fn names(&self) -> Vec<String> {
        self.file.tensors().iter().map(|t| t.name.clone()).collect()
    }
    fn load(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), LoadError> {
        self.file
            .tensor_f32(name)
            .map_err(|e| LoadError::Format(e.to_string()))
    }
    fn load_raw(&self, name: &str) -> Result<Option<RawTensor>, LoadError> {
        let Some(info) = self.file.tensor_info(name) else {
            return Ok(None);
        };
        let Some(format) = info.ggml_type.block_format() else {
            return Ok(None);
        };
        let bytes = self
            .file
            .tensor_weight_bytes(name)
            .map_err(|e| LoadError::Format(e.to_string()))?;
        Ok(Some(RawTensor {
            format,
            shape: info.shape(),
            bytes,
        }))
    }
}

fn meta<'a>(f: &'a GgufFile, key: &str) -> Option<&'a MetaValue> {
    f.meta(key)
}

fn req_u64(f: &GgufFile, key: &str) -> Result<u64, LoadError> {
    meta(f, key).and_then(MetaValue::as_u64).ok_or_else(|| {
        LoadError::Config(format!(
            "GGUF metadata: missing or non-integer `{key}` (needed to build the model)"
        ))
    })
}

fn opt_f64(f: &GgufFile, key: &str) -> Option<f64> {
    meta(f, key).and_then(MetaValue::as_f64)
}

/// Reads the model description from GGUF metadata.
pub fn spec_from_gguf(f: &GgufFile) -> Result<ModelSpec, LoadError> {
    let arch_name = meta(f, "general.architecture")
        .and_then(MetaValue::as_str)
        .ok_or_else(|| LoadError::Config("GGUF metadata: no `general.architecture`".into()))?
        .to_string();
    let architecture = match arch_name.as_str() {
        "llama" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        "gemma3" => Architecture::Gemma3,
        other => {
            return Err(LoadError::Unsupported(format!(
                "GGUF architecture `{other}` is not supported (llama, qwen2, qwen3, gemma3)"
            )));
        }
    };
    if f.tensor_info("rope_freqs.weight").is_some() {
        return Err(LoadError::Unsupported(
            "this GGUF stores RoPE frequency factors (`rope_freqs.weight`, Llama 3.1+ scaling); \
             load the Hugging Face safetensors directory of this model instead"
                .into(),
        ));
    }
    let a = arch_name.as_str();
    let k = |s: &str| format!("{a}.{s}");
    let hidden_size = req_u64(f, &k("embedding_length"))? as usize;
    let n_layers = req_u64(f, &k("block_count"))? as usize;
    crate::spec::check_layer_count(n_layers, &k("block_count"))
        .map_err(|e| LoadError::Config(format!("GGUF metadata: {e}")))?;
    let n_heads = req_u64(f, &k("attention.head_count"))? as usize;
    let n_kv_heads = meta(f, &k("attention.head_count_kv"))
        .and_then(MetaValue::as_u64)
        .map(|x| x as usize)
        .unwrap_or(n_heads);
    let head_dim = meta(f, &k("attention.key_length"))
        .and_then(MetaValue::as_u64)
        .map(|x| x as usize)
        .unwrap_or(hidden_size / n_heads.max(1));
    let embd = f
        .tensor_info("token_embd.weight")
        .ok_or_else(|| LoadError::MissingTensor {
            name: "token_embd.weight".into(),
            expected: "[vocab, hidden]".into(),
        })?;
    let vocab_size = embd.shape()[0];
    let is_gemma = architecture == Architecture::Gemma3;
    let rms_norm_eps = opt_f64(f, &k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-6);
    // The metadata holds the f32 value; round to the nearest decimal the config had.
    let rms_norm_eps = (rms_norm_eps * 1e12).round() / 1e12;
    let layers = layer_specs(f, a, n_layers, is_gemma)?;
    // llama.cpp: Gemma 3 27B scales by hidden/heads, the other sizes by head_dim
    // (`query_pre_attn_scalar` has no GGUF key).
    let attn_scale = if is_gemma && n_layers == 62 {
        1.0 / ((hidden_size / n_heads) as f64).sqrt()
    } else {
        1.0 / (head_dim as f64).sqrt()
    };
    let (bos_token_id, eos_token_ids) = special_tokens(f);
    let softcap = |key: &str| opt_f64(f, &k(key)).filter(|&c| c > 0.0);
    let spec = ModelSpec {
        architecture,
        hidden_size,
        intermediate_size: req_u64(f, &k("feed_forward_length"))? as usize,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps,
        activation: if is_gemma {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        qkv_bias: f.tensor_info("blk.0.attn_q.bias").is_some(),
        qk_norm: f.tensor_info("blk.0.attn_q_norm.weight").is_some(),
        sandwich_norms: is_gemma,
        embed_scale: is_gemma.then(|| (hidden_size as f64).sqrt()),
        attn_scale,
        attn_logit_softcap: softcap("attn_logit_softcapping"),
        final_logit_softcap: softcap("final_logit_softcapping"),
        tie_embeddings: f.tensor_info("output.weight").is_none(),
        max_position_embeddings: meta(f, &k("context_length"))
            .and_then(MetaValue::as_u64)
            .map(|x| x as usize)
            .unwrap_or(4096),
        layers,
        bos_token_id,
        eos_token_ids,
    };
    spec.validate()
        .map_err(|e| LoadError::Config(format!("GGUF metadata: {e}")))?;
    Ok(spec)
}

/// Per-layer attention and RoPE: Gemma 3's sliding layers (every 6th layer global, as
/// llama.cpp hard-codes it) take the local RoPE base; the others the global RoPE and scaling.
fn layer_specs(
    f: &GgufFile,
    a: &str,
    n_layers: usize,
    is_gemma: bool,
) -> Result<Vec<LayerSpec>, LoadError> {
    let k = |s: &str| format!("{a}.{s}");
    let theta = opt_f64(f, &k("rope.freq_base")).unwrap_or(10000.0);
    let scaling = match meta(f, &k("rope.scaling.type")).and_then(MetaValue::as_str) {
        Some("linear") => RopeScaling::Linear {
            factor: opt_f64(f, &k("rope.scaling.factor")).unwrap_or(1.0),
        },
        Some("none") | None => RopeScaling::None,
        Some(other) => {
            return Err(LoadError::Unsupported(format!(
                "GGUF `{a}.rope.scaling.type` = {other} is not supported (none, linear)"
            )));
        }
    };
    let full_rope = RopeSpec { theta, scaling };
    let sliding_window = meta(f, &k("attention.sliding_window"))
        .and_then(MetaValue::as_u64)
        .map(|x| x as usize);
    Ok((0..n_layers)
        .map(|i| {
            // llama.cpp hard-codes Gemma 3's pattern: every 6th layer is global.
            let sliding = is_gemma && (i + 1) % 6 != 0;
            match (sliding, sliding_window) {
                (true, Some(w)) => LayerSpec {
                    attention: AttentionKind::Sliding(w),
                    rope: RopeSpec {
                        theta: opt_f64(f, &k("rope.local_freq_base")).unwrap_or(10000.0),
                        scaling: RopeScaling::None,
                    },
                },
                _ => LayerSpec {
                    attention: AttentionKind::Full,
                    rope: full_rope,
                },
            }
        })
        .collect())
}

/// BOS and EOS ids from the tokenizer metadata.
fn special_tokens(f: &GgufFile) -> (Option<u32>, Vec<u32>) {
    let bos_token_id = meta(f, "tokenizer.ggml.bos_token_id")
        .and_then(MetaValue::as_u64)
        .map(|x| x as u32);
    let eos_token_ids: Vec<u32> = meta(f, "tokenizer.ggml.eos_token_id")
        .and_then(MetaValue::as_u64)
        .map(|x| vec![x as u32])
        .unwrap_or_default();
    (bos_token_id, eos_token_ids)
}

/// Builds the SentencePiece tokenizer of a `tokenizer.ggml.model = "llama"` vocabulary.
pub fn tokenizer_from_gguf(f: &GgufFile) -> Result<SpmTokenizer, LoadError> {
    let model = meta(f, "tokenizer.ggml.model")
        .and_then(MetaValue::as_str)
        .unwrap_or("");
    if model != "llama" {
        return Err(LoadError::Unsupported(format!(
            "GGUF tokenizer model `{model}` is not supported (only SentencePiece `llama`); use \
             the model's Hugging Face directory with its tokenizer.json instead"
        )));
    }
    let arr = |key: &str| -> Result<&[MetaValue], LoadError> {
        meta(f, key)
            .and_then(MetaValue::as_array)
            .ok_or_else(|| LoadError::Tokenizer(format!("GGUF metadata: no array `{key}`")))
    };
    let tokens: Vec<String> = arr("tokenizer.ggml.tokens")?
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect();
    let scores: Vec<f32> = match meta(f, "tokenizer.ggml.scores").and_then(MetaValue::as_array) {
        Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
        None => vec![],
    };
    let types: Vec<i32> = match meta(f, "tokenizer.ggml.token_type").and_then(MetaValue::as_array) {
        Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i32).collect(),
        None => vec![],
    };
    let id = |key: &str, default: u32| {
        meta(f, key)
            .and_then(MetaValue::as_u64)
            .map(|x| x as u32)
            .unwrap_or(default)
    };
    let flag =
        |key: &str, default: bool| meta(f, key).and_then(MetaValue::as_bool).unwrap_or(default);
    let cfg = SpmConfig {
        bos_id: id("tokenizer.ggml.bos_token_id", 1),
        eos_id: id("tokenizer.ggml.eos_token_id", 2),
        unk_id: id("tokenizer.ggml.unknown_token_id", 0),
        add_bos: flag("tokenizer.ggml.add_bos_token", true),
        add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true),
    };
    SpmTokenizer::new(tokens, scores, types, cfg).map_err(|e| LoadError::Tokenizer(e.to_string()))
}

/// A short, stable text of the metadata that defines the model (for profile fingerprints).
pub fn config_summary(f: &GgufFile) -> String {
    let mut out = String::new();
    for (k, v) in f.metadata() {
        if k.starts_with("tokenizer.") || k.starts_with("general.") {
            continue;
        }
        if v.as_array().is_none() {
            out.push_str(&format!("{k}={v:?}\n"));
        }
    }
    out
}
