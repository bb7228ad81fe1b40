//! One tokenizer type for the runtime: an HF `tokenizer.json` (tokenizers crate) or a GGUF
//! SentencePiece vocabulary (our llama.cpp-exact SPM encoder).

use std::path::Path;

use super::LoadError;
use super::spm::SpmTokenizer;

pub enum TextTokenizer {
    Hf(Box<tokenizers::Tokenizer>),
    Spm(Box<SpmTokenizer>),
}

impl TextTokenizer {
    pub fn from_hf_file(path: &Path) -> Result<Self, LoadError> {
        if !path.exists() {
            return Err(LoadError::NotFound(format!(
                "{} not found: the model directory needs a tokenizer.json",
                path.display()
            )));
        }
        let t = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| LoadError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(TextTokenizer::Hf(Box::new(t)))
    }

    /// Token ids of `text`; `add_special` adds BOS (or whatever the tokenizer's template adds).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, LoadError> {
        match self {
            TextTokenizer::Hf(t) => t
                .encode(text, add_special)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| LoadError::Tokenizer(e.to_string())),
            TextTokenizer::Spm(t) => Ok(t.encode(text, add_special)),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, LoadError> {
        match self {
            TextTokenizer::Hf(t) => t
                .decode(ids, true)
                .map_err(|e| LoadError::Tokenizer(e.to_string())),
            TextTokenizer::Spm(t) => Ok(t.decode(ids, true)),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Hf(t) => t.get_vocab_size(true),
            TextTokenizer::Spm(t) => t.vocab_size(),
        }
    }

    /// Extra end-of-generation ids the vocabulary defines (e.g. Gemma's `<end_of_turn>`).
    pub fn extra_eos_ids(&self) -> Vec<u32> {
        match self {
            TextTokenizer::Hf(_) => vec![],
            TextTokenizer::Spm(t) => t.eog_ids().to_vec(),
        }
    }
}
