//! One tokenizer type for the runtime: an HF `tokenizer.json` (tokenizers crate) or a GGUF
//! SentencePiece vocabulary (our llama.cpp-exact SPM encoder).

use std::panic::AssertUnwindSafe;
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
        // tokenizers 0.22 panics on some malformed files our fuzzing found: an `expect` in its
        // decoder deserializer at load, and a template naming a special token it does not
        // define at the first encode. A bad file must be an error, so the parse and one probe
        // encode/decode run behind `catch_unwind` with the panic message silenced.
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let parsed = std::panic::catch_unwind(|| {
            tokenizers::Tokenizer::from_file(path).inspect(|t| {
                if let Ok(e) = t.encode("a b", true) {
                    let _ = t.decode(e.get_ids(), true);
                }
            })
        });
        std::panic::set_hook(prev);
        let t = match parsed {
            Ok(r) => r.map_err(|e| LoadError::Tokenizer(format!("{}: {e}", path.display())))?,
            Err(_) => {
                return Err(LoadError::Tokenizer(format!(
                    "{}: not a valid tokenizer.json (the tokenizers library could not parse \
                     or apply it); replace it with the model's original file",
                    path.display()
                )));
            }
        };
        Ok(TextTokenizer::Hf(Box::new(t)))
    }

    /// Token ids of `text`; `add_special` adds BOS (or whatever the tokenizer's template adds).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, LoadError> {
        match self {
            // Last line of defence against a panic inside the library (see `from_hf_file`).
            TextTokenizer::Hf(t) => {
                std::panic::catch_unwind(AssertUnwindSafe(|| t.encode(text, add_special)))
                    .map_err(|_| LoadError::Tokenizer("the tokenizer failed on this text".into()))?
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| LoadError::Tokenizer(e.to_string()))
            }
            TextTokenizer::Spm(t) => Ok(t.encode(text, add_special)),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, LoadError> {
        match self {
            TextTokenizer::Hf(t) => {
                std::panic::catch_unwind(AssertUnwindSafe(|| t.decode(ids, true)))
                    .map_err(|_| LoadError::Tokenizer("the tokenizer failed on these ids".into()))?
                    .map_err(|e| LoadError::Tokenizer(e.to_string()))
            }
            TextTokenizer::Spm(t) => Ok(t.decode(ids, true)),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Hf(t) => t.get_vocab_size(true),
            TextTokenizer::Spm(t) => t.vocab_size(),
        }
    }

    /// Token ids of a rendered chat prompt: the text of special tokens (`<start_of_turn>`,
    /// `<bos>`, `<|im_start|>`) becomes those tokens, and no BOS is added (the chat template
    /// writes it), as HF `apply_chat_template(tokenize=True)` and llama-server do.
    pub fn encode_chat(&self, text: &str) -> Result<Vec<u32>, LoadError> {
        match self {
            // tokenizers always splits on its added (special) tokens first.
            TextTokenizer::Hf(_) => self.encode(text, false),
            TextTokenizer::Spm(t) => Ok(t.encode_with_special(text, false, true)),
        }
    }

    /// The vocabulary's text of token `id` (e.g. `"<bos>"`), for chat templates.
    pub fn token_text(&self, id: u32) -> Option<String> {
        match self {
            TextTokenizer::Hf(t) => t.id_to_token(id),
            TextTokenizer::Spm(t) => t.id_to_piece(id).map(String::from),
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

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// Found by `tests/e2e/fuzz.rs`: a malformed `decoder` object makes tokenizers 0.22 panic
    /// inside its deserializer; loading must return an error instead.
    #[test]
    fn malformed_decoder_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("compresskv-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tokenizer.json");
        std::fs::write(
            &p,
            r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
               "normalizer":null,"pre_tokenizer":null,"post_processor":null,
               "decoder":{" "type":"ByteLevel"},
               "model":{"type":"WordLevel","vocab":{"a":0},"unk_token":"a"}}"#,
        )
        .unwrap();
        let r = TextTokenizer::from_hf_file(&p);
        let _ = std::fs::remove_dir_all(&dir);
        expect_invalid(r);
    }

    /// Also found by the fuzzer: a template naming a special token the file does not define
    /// panics at the first encode; the loader's probe encode turns that into an error.
    #[test]
    fn template_with_an_undefined_special_token_is_an_error() {
        let dir = std::env::temp_dir().join(format!("compresskv-tok2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tokenizer.json");
        std::fs::write(
            &p,
            r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
               "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},
               "post_processor":{"type":"TemplateProcessing",
                 "single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
                 "pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],
                 "special_tokens":{}},
               "decoder":null,
               "model":{"type":"WordLevel","vocab":{"a":0,"b":1},"unk_token":"a"}}"#,
        )
        .unwrap();
        let r = TextTokenizer::from_hf_file(&p);
        let _ = std::fs::remove_dir_all(&dir);
        expect_invalid(r);
    }

    fn expect_invalid(r: Result<TextTokenizer, LoadError>) {
        match r {
            Err(LoadError::Tokenizer(m)) => {
                assert!(m.contains("not a valid tokenizer.json"), "{m}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a malformed tokenizer.json loaded"),
        }
    }
}
