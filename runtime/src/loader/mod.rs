//! Loading models: where weights come from (HF safetensors dir or GGUF file), how their config
//! becomes a [`ModelSpec`], and the tokenizer.

pub mod gguf;
pub mod gguf_spec;
pub mod hf_config;
pub mod safetensors;
pub mod spm;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use crate::device::RuntimeDevice;
use crate::model::{Transformer, build};
use crate::spec::ModelSpec;
use crate::store;
pub use crate::weights::{LoadError, RawTensor, SourceKind, WeightSource};
pub use tokenizer::TextTokenizer;

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| LoadError::Format(format!("{}: invalid JSON: {e}", path.display())))
}

/// A model ready to run.
pub struct LoadedModel {
    /// `org/name` where known (used to find the model's profile).
    pub id: String,
    pub spec: ModelSpec,
    pub model: Transformer,
    pub tokenizer: TextTokenizer,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Text of `config.json` (or the GGUF metadata summary) for fingerprinting.
    pub config_text: String,
    /// The model's Jinja chat template (GGUF `tokenizer.chat_template`, or the HF directory's
    /// `chat_template.jinja` / `tokenizer_config.json`), where it ships one.
    pub chat_template: Option<String>,
}

impl LoadedModel {
    /// Every token that ends generation: the config's EOS ids and the tokenizer's end-of-turn
    /// tokens (e.g. Gemma's `<end_of_turn>`).
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut eos = self.spec.eos_token_ids.clone();
        eos.extend(self.tokenizer.extra_eos_ids());
        eos
    }
}

/// Loads an HF model directory: `config.json`, weights, `tokenizer.json`,
/// `generation_config.json` if present.
pub fn load_hf_dir(dir: &Path, device: &RuntimeDevice) -> Result<LoadedModel, LoadError> {
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        return Err(LoadError::NotFound(format!(
            "{} has no config.json: pass a Hugging Face model directory, a .gguf file or a \
             model id",
            dir.display()
        )));
    }
    let config_text =
        std::fs::read_to_string(&config_path).map_err(|e| LoadError::io(&config_path, e))?;
    let config: serde_json::Value = serde_json::from_str(&config_text)
        .map_err(|e| LoadError::Format(format!("{}: invalid JSON: {e}", config_path.display())))?;
    let gen_path = dir.join("generation_config.json");
    let gen_cfg = if gen_path.exists() {
        Some(read_json(&gen_path)?)
    } else {
        None
    };
    let spec = hf_config::spec_from_hf_config(&config, gen_cfg.as_ref())?;
    let tokenizer = TextTokenizer::from_hf_file(&dir.join("tokenizer.json"))?;
    let source = safetensors::SafetensorsSource::open_dir(dir)?;
    let model = build(spec.clone(), &source, device)?;
    let id = config
        .get("_name_or_path")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from)
        .unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    Ok(LoadedModel {
        id,
        spec,
        model,
        tokenizer,
        path: dir.to_path_buf(),
        config_text,
        chat_template: hf_chat_template(dir)?,
    })
}

/// An HF directory's chat template: `chat_template.jinja` (newer exports), else
/// `tokenizer_config.json`'s `chat_template` (a string, or named templates of which `default`).
fn hf_chat_template(dir: &Path) -> Result<Option<String>, LoadError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| LoadError::io(&jinja, e));
    }
    let cfg = dir.join("tokenizer_config.json");
    if !cfg.exists() {
        return Ok(None);
    }
    let v = read_json(&cfg)?;
    Ok(match v.get("chat_template") {
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str())
            .map(String::from),
        _ => None,
    })
}

/// Loads what a `--model` argument names: a model id (resolved in the model cache), an HF model
/// directory, or a `.gguf` file.
pub fn load_model(arg: &str, device: &RuntimeDevice) -> Result<LoadedModel, LoadError> {
    let resolved = store::resolve_model(arg)?;
    let mut loaded = match &resolved.location {
        store::ModelLocation::HfDir(dir) => load_hf_dir(dir, device)?,
        store::ModelLocation::GgufFile(path) => load_gguf(path, device)?,
    };
    loaded.id = resolved.id;
    Ok(loaded)
}

/// Loads a GGUF file: metadata → spec, dequantized weights, SentencePiece tokenizer.
pub fn load_gguf(path: &Path, device: &RuntimeDevice) -> Result<LoadedModel, LoadError> {
    let source = gguf_spec::GgufSource::open(path)?;
    let spec = gguf_spec::spec_from_gguf(&source.file)?;
    let spm = gguf_spec::tokenizer_from_gguf(&source.file)?;
    let model = build(spec.clone(), &source, device)?;
    Ok(LoadedModel {
        id: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        spec,
        model,
        tokenizer: TextTokenizer::Spm(Box::new(spm)),
        path: path.to_path_buf(),
        config_text: gguf_spec::config_summary(&source.file),
        chat_template: source
            .file
            .meta("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(String::from),
    })
}
