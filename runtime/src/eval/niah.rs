//! Needle-in-a-Haystack and passkey prompts, independent of any model or tokenizer type.
//!
//! Tokenization comes in as closures: `encode: &dyn Fn(&str) -> Vec<u32>` must **not** add
//! special tokens (BOS is added here, see [`NiahBuilder::with_bos`]), and
//! `decode: &dyn Fn(&[u32]) -> String` should be the inverse of `encode` (no special tokens, no
//! stripping of a leading space).
//!
//! # Protocols
//! - [`Protocol::Peer`] — exactly the peer baseline's protocol (`shared/notes/peer-baseline.md`),
//!   for the needle task ([`NiahBuilder::peer_needle`]) and the passkey task
//!   ([`NiahBuilder::peer_passkey`]). Built at the **token** level like the SRH reference written
//!   for the same comparison (`shared/reference/gemma-3-270m/srh_reference.json`):
//!   `[BOS] + enc(prefix) + hay[..p] + enc(needle) + hay[p..n] + enc(suffix)`, where `hay` is the
//!   start of the tokenized haystack and `n` is chosen so that the whole prompt is **exactly
//!   `length` tokens** (BOS included when set). `p = round(n · depth / 100)` (Python's round, ties
//!   to even), moved back until the token before it ends a sentence (its decoded text ends with
//!   `.`), or to 0; at depth 100 the needle goes right after the last haystack token (no move), so
//!   it is immediately followed by the question.
//! - [`Protocol::Paper`] — the CompressKV paper's `needle/run_needle_in_haystack.py`
//!   ([`NiahBuilder::paper_needle`]): the needle is `"\n" + needle + "\n"`, the haystack+needle
//!   context is `length - final_context_length_buffer` tokens (buffer 200, as the paper), the
//!   insertion point is `int(n · depth / 100)` moved back to a sentence end (depth 100: at the end),
//!   the context is decoded to text and wrapped in the paper's template [`PAPER_TEMPLATE`] with the
//!   needle's question; the model is fed the re-tokenized text. Scored with stemmed ROUGE-1
//!   recall of the full needle sentence ([`metrics::rouge1_recall_stemmed`]), as the paper.
//! - [`Protocol::Landmark`] — the classic passkey prompt (Landmark Attention / LongLoRA):
//!   `"The pass key is N. Remember it. N is the pass key."` with its task line and question,
//!   built at the token level like the peer protocol ([`NiahBuilder::landmark_passkey`]); usually
//!   over the repeated-noise haystack ([`Haystack::noise`]).
//!
//! # Text versus tokens
//! Each [`NiahSample`] carries the prompt twice: `prompt_ids` (what to feed the model; exactly
//! `length` tokens for Peer/Landmark) and `prompt` (the same pieces decoded and concatenated).
//! Re-encoding `prompt` can differ from `prompt_ids` only where two pieces meet (BPE merges across
//! a seam: prefix|haystack, haystack|needle, needle|haystack, haystack|suffix), so
//! `encode(prompt).len() + bos` is within [`TEXT_TOKEN_TOLERANCE`] of `length`. Feed `prompt_ids`
//! when the comparison must be exact.
//!
//! The sentence rule works on decoded text (a token "ends a sentence" when its decoded text ends
//! with `.`), not on the ids of `encode(".")` as needlehaystack does, so it does not depend on how
//! a tokenizer numbers or marks `.` (a token that merges `.` with what follows, such as `.\n` or
//! `."`, is not a sentence end under either rule). On the SRH reference's 54 Gemma 3 prompts this
//! rule gives exactly the reference's needle positions.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::metrics;

/// Tokenizer without special tokens.
pub type Encode<'a> = &'a dyn Fn(&str) -> Vec<u32>;
/// Inverse of [`Encode`].
pub type Decode<'a> = &'a dyn Fn(&[u32]) -> String;

/// How far (in tokens) `encode(prompt)` (+ BOS) may be from `prompt_ids.len()`: one token per
/// seam between pieces (see the module docs).
pub const TEXT_TOKEN_TOLERANCE: usize = 4;

/// Depths of the peer baseline (percent).
pub const PEER_DEPTHS: [f64; 5] = [0.0, 25.0, 50.0, 75.0, 100.0];

/// Peer protocol, needle task: text before the haystack.
pub const PEER_NEEDLE_PREFIX: &str = "This is a very long story book: <book>";
/// Peer protocol, needle task: text after the haystack, before the question.
pub const PEER_NEEDLE_QUESTION_PREFIX: &str =
    "</book>.\nBased on the content of the book, Question: ";
/// Peer protocol, needle task: the answer prefix after the question.
pub const PEER_NEEDLE_ANSWER_PREFIX: &str = "\nAnswer:";
/// Peer protocol, needle task: new tokens generated.
pub const PEER_NEEDLE_MAX_NEW_TOKENS: usize = 20;

/// Peer protocol, passkey task: text before the haystack.
pub const PEER_PASSKEY_PREFIX: &str = "There is an important piece of information hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about it.\n";
/// Peer protocol, passkey task: the needle, `{key}` replaced by the 5 digits.
pub const PEER_PASSKEY_NEEDLE: &str = " The pass key is {key}. Remember it.";
/// Peer protocol, passkey task: question and answer prefix.
pub const PEER_PASSKEY_SUFFIX: &str = "\nWhat is the pass key?\nThe pass key is";
/// Peer protocol, passkey task: new tokens generated.
pub const PEER_PASSKEY_MAX_NEW_TOKENS: usize = 7;

/// Landmark passkey: task line (joined to the haystack with `\n`).
pub const LANDMARK_PREFIX: &str = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there.\n";
/// Landmark passkey: the information line, on its own line.
pub const LANDMARK_NEEDLE: &str = "\nThe pass key is {key}. Remember it. {key} is the pass key.\n";
/// Landmark passkey: the question, on its own line.
pub const LANDMARK_SUFFIX: &str = "\nWhat is the pass key? The pass key is";
/// Landmark passkey: new tokens generated.
pub const LANDMARK_MAX_NEW_TOKENS: usize = 10;

/// The repeated-noise haystack unit of the passkey literature (repeated with a space between).
pub const NOISE_UNIT: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

/// The paper's prompt; `{context}` and `{question}` are replaced once each.
pub const PAPER_TEMPLATE: &str = "<|im_start|> This is a very long story book: <book> {context} </book>.\n Based on the content of the book, Question: {question}\nAnswer:";
/// The paper's `final_context_length_buffer`.
pub const PAPER_CONTEXT_BUFFER: usize = 200;
/// The paper's `max_new_tokens`.
pub const PAPER_MAX_NEW_TOKENS: usize = 50;

/// Errors of needle loading and prompt building.
#[derive(Debug, thiserror::Error)]
pub enum NiahError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A needles line is not a JSON object.
    #[error("{}:{line}: not a JSON object: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A needles line lacks a field.
    #[error("{}:{line}: missing field `{field}`", path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// A needles field is not a string.
    #[error("{}:{line}: field `{field}` is not a string", path.display())]
    NotAString {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// A needles file without any needle.
    #[error("{}: no needles", path.display())]
    NoNeedles {
        /// The file.
        path: PathBuf,
    },
    /// A haystack directory without `.txt` files, or an empty haystack text.
    #[error("empty haystack: {0}")]
    EmptyHaystack(String),
    /// The tokenizer returns no tokens for the haystack.
    #[error("the tokenizer returns no tokens for the haystack")]
    NoTokens,
    /// A depth outside `0..=100` (or NaN).
    #[error("depth {0} is not a percentage in 0..=100")]
    BadDepth(f64),
    /// `length` leaves no room for the haystack.
    #[error("length {length} is too short: the fixed parts of the prompt take {fixed} tokens")]
    TooShort {
        /// Requested length.
        length: usize,
        /// Tokens taken by BOS, wrapper, needle and question (and the paper's buffer).
        fixed: usize,
    },
}

/// One needle: the sentence hidden in the haystack, the question asked, and the expected answer.
///
/// In jsonl the answer may also be named `real_needle` (the CompressKV/Retrieval_Head files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needle {
    /// The sentence inserted into the haystack.
    pub needle: String,
    /// The question appended after the haystack.
    pub question: String,
    /// The expected answer (the words that are scored).
    #[serde(alias = "real_needle")]
    pub answer: String,
}

impl Needle {
    /// The classic needle (needlehaystack, the CompressKV paper, the peer baseline).
    pub fn san_francisco() -> Self {
        Needle {
            needle: "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
                .into(),
            question: "What is the best thing to do in San Francisco?".into(),
            answer: "eat a sandwich and sit in Dolores Park on a sunny day".into(),
        }
    }
}

/// Read needles from jsonl: one object per line with string fields `needle`, `question` and
/// `answer` (or `real_needle`); other fields are ignored, blank lines skipped. Errors name the
/// 1-based line and the field.
pub fn load_needles(path: impl AsRef<Path>) -> Result<Vec<Needle>, NiahError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| NiahError::Io {
        path: path.into(),
        source,
    })?;
    parse_needles(&text, path)
}

/// [`load_needles`] on text already read; `origin` (the file, or e.g.
/// `built-in:tune-needles.jsonl` for [`crate::profile::builtin::TUNE_NEEDLES`]) is only used in
/// messages.
pub fn parse_needles(text: &str, origin: impl AsRef<Path>) -> Result<Vec<Needle>, NiahError> {
    let path = origin.as_ref();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| NiahError::Json {
            path: path.into(),
            line: line_no,
            message: e.to_string(),
        })?;
        let Some(obj) = value.as_object() else {
            return Err(NiahError::Json {
                path: path.into(),
                line: line_no,
                message: "expected an object".into(),
            });
        };
        let field = |name: &'static str, alias: Option<&str>| -> Result<String, NiahError> {
            let v = obj.get(name).or_else(|| alias.and_then(|a| obj.get(a)));
            match v {
                None => Err(NiahError::MissingField {
                    path: path.into(),
                    line: line_no,
                    field: name,
                }),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(NiahError::NotAString {
                    path: path.into(),
                    line: line_no,
                    field: name,
                }),
            }
        };
        out.push(Needle {
            needle: field("needle", None)?,
            question: field("question", None)?,
            answer: field("answer", Some("real_needle"))?,
        });
    }
    if out.is_empty() {
        return Err(NiahError::NoNeedles { path: path.into() });
    }
    Ok(out)
}

/// The background text. It repeats as often as a prompt needs (needlehaystack re-reads the
/// whole corpus until it is long enough).
#[derive(Debug, Clone)]
pub struct Haystack {
    text: String,
    files: Vec<PathBuf>,
}

impl Haystack {
    /// All `*.txt` files of `dir`, sorted by file name (byte order), concatenated as they are (no
    /// separator: needlehaystack's `context += f.read()`).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, NiahError> {
        let dir = dir.as_ref();
        let io = |source| NiahError::Io {
            path: dir.into(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "txt") && p.is_file())
            .collect();
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let mut text = String::new();
        for f in &files {
            text.push_str(&std::fs::read_to_string(f).map_err(|source| NiahError::Io {
                path: f.clone(),
                source,
            })?);
        }
        if text.is_empty() {
            return Err(NiahError::EmptyHaystack(format!(
                "no text in {}/*.txt",
                dir.display()
            )));
        }
        Ok(Haystack { text, files })
    }

    /// A haystack from text.
    pub fn from_text(text: impl Into<String>) -> Result<Self, NiahError> {
        let text = text.into();
        if text.is_empty() {
            return Err(NiahError::EmptyHaystack("empty text".into()));
        }
        Ok(Haystack {
            text,
            files: Vec::new(),
        })
    }

    /// The repeated-noise haystack: [`NOISE_UNIT`] repeated, a space between repetitions.
    pub fn noise() -> Self {
        Haystack {
            text: format!("{NOISE_UNIT} "),
            files: Vec::new(),
        }
    }

    /// The text (one repetition).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The files read, in order (empty for [`Haystack::from_text`] / [`Haystack::noise`]).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The first `n` tokens of the (repeated) haystack. Only a prefix of the text is encoded,
    /// long enough to give `n` tokens plus a margin, so that the cut does not change them.
    pub fn tokens(&self, n: usize, encode: Encode<'_>) -> Result<Vec<u32>, NiahError> {
        const MARGIN: usize = 32;
        let want = n + MARGIN;
        let mut bytes = want * 8 + 256;
        for _ in 0..16 {
            let ids = encode(&self.cyclic_prefix(bytes));
            if ids.len() >= want {
                return Ok(ids[..n].to_vec());
            }
            if ids.is_empty() {
                break;
            }
            // Grow by the observed bytes-per-token ratio, with slack; at least double.
            let estimate = (bytes as f64 * want as f64 / ids.len() as f64 * 1.25) as usize + 1024;
            bytes = estimate.max(bytes * 2);
        }
        Err(NiahError::NoTokens)
    }

    /// The text repeated, cut to at most `bytes` bytes at a char boundary.
    fn cyclic_prefix(&self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 4);
        while out.len() + self.text.len() <= bytes {
            out.push_str(&self.text);
        }
        let mut cut = bytes - out.len();
        while !self.text.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&self.text[..cut]);
        out
    }
}

/// Which prompt protocol built a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `shared/notes/peer-baseline.md`.
    Peer,
    /// CompressKV's `needle/run_needle_in_haystack.py`.
    Paper,
    /// The classic passkey prompt.
    Landmark,
    /// [`NiahBuilder::custom_needle`].
    Custom,
}

/// What is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A sentence, retrieved by a question.
    Needle,
    /// A 5-digit number.
    Passkey,
}

/// How an answer is scored (all in percent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// [`metrics::peer_needle_recall`] against `score_reference`.
    PeerRecall,
    /// [`metrics::rouge1_recall_stemmed`] of `score_reference` in the stripped answer.
    Rouge1RecallStemmed,
    /// [`metrics::passkey_exact`] against `answer`.
    PasskeyExact,
}

/// One prompt with everything needed to run and score it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NiahSample {
    /// The protocol that built it.
    pub protocol: Protocol,
    /// Needle or passkey.
    pub task: Task,
    /// The prompt text (without BOS).
    pub prompt: String,
    /// The prompt tokens, BOS first when set. Peer/Landmark: exactly `length` tokens.
    pub prompt_ids: Vec<u32>,
    /// The needle exactly as inserted (with its leading space / newlines).
    pub needle_text: String,
    /// Byte offset of `needle_text` in `prompt`.
    pub needle_char_offset: usize,
    /// Index in `prompt_ids` of the needle's first token.
    pub needle_token_start: usize,
    /// Number of needle tokens in `prompt_ids` (Peer/Landmark exact; Paper as re-encoded alone).
    pub needle_token_len: usize,
    /// Haystack tokens in the prompt (Paper: haystack tokens around the needle before decoding).
    pub haystack_tokens: usize,
    /// The expected answer: the needle's answer, or the passkey digits.
    pub answer: String,
    /// What the scorer compares with: the needle's answer (Peer), the needle sentence (Paper), the
    /// key (passkey).
    pub score_reference: String,
    /// How [`NiahSample::score`] scores.
    pub scoring: Scoring,
    /// The requested length in tokens.
    pub length: usize,
    /// The requested depth in percent.
    pub depth: f64,
    /// The passkey seed, if any.
    pub seed: Option<u64>,
    /// How many tokens to generate.
    pub max_new_tokens: usize,
}

impl NiahSample {
    /// Score a generated answer (the decoded new tokens), in percent.
    pub fn score(&self, generated: &str) -> f64 {
        match self.scoring {
            Scoring::PeerRecall => metrics::peer_needle_recall(generated, &self.score_reference),
            Scoring::Rouge1RecallStemmed => {
                metrics::rouge1_recall_stemmed(generated.trim(), &self.score_reference)
            }
            Scoring::PasskeyExact => metrics::passkey_exact(generated, &self.answer),
        }
    }

    /// The tokens of the needle in `prompt_ids`.
    pub fn needle_ids(&self) -> &[u32] {
        let end = (self.needle_token_start + self.needle_token_len).min(self.prompt_ids.len());
        &self.prompt_ids[self.needle_token_start.min(end)..end]
    }
}

/// The 5-digit passkey of a seed: `StdRng::seed_from_u64(seed).random_range(10000..=99999)`.
/// (StdRng is stable within a `rand` version, not across versions.)
pub fn passkey_for_seed(seed: u64) -> u32 {
    StdRng::seed_from_u64(seed).random_range(10000..=99999u32)
}

/// A per-sample seed derived from a base seed and the sample's grid position (SplitMix64).
pub fn sample_seed(base: u64, length: usize, depth: f64) -> u64 {
    let mut z = base
        ^ (length as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ depth.to_bits().rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Options of the paper protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperOptions {
    /// Tokens kept free for the template, question and answer: the haystack+needle context is
    /// `length - buffer` tokens. The paper: 200.
    pub final_context_length_buffer: usize,
}

impl Default for PaperOptions {
    fn default() -> Self {
        PaperOptions {
            final_context_length_buffer: PAPER_CONTEXT_BUFFER,
        }
    }
}

/// How `n · depth / 100` becomes a token index.
#[derive(Clone, Copy)]
enum Rounding {
    /// Python `round` (ties to even): the SRH reference / peer.
    Nearest,
    /// Python `int()`: needlehaystack / the paper.
    Floor,
}

/// The text pieces of a token-level prompt.
struct Pieces<'s> {
    prefix: &'s str,
    needle: &'s str,
    suffix: &'s str,
}

type BoxedEncode<'a> = Box<dyn Fn(&str) -> Vec<u32> + 'a>;
type BoxedDecode<'a> = Box<dyn Fn(&[u32]) -> String + 'a>;

/// Builds samples from a haystack and a tokenizer.
pub struct NiahBuilder<'a> {
    haystack: &'a Haystack,
    encode: BoxedEncode<'a>,
    decode: BoxedDecode<'a>,
    bos: Option<u32>,
}

impl<'a> NiahBuilder<'a> {
    /// A builder without BOS.
    pub fn new(
        haystack: &'a Haystack,
        encode: impl Fn(&str) -> Vec<u32> + 'a,
        decode: impl Fn(&[u32]) -> String + 'a,
    ) -> Self {
        NiahBuilder {
            haystack,
            encode: Box::new(encode),
            decode: Box::new(decode),
            bos: None,
        }
    }

    /// A builder with `model`'s tokenizer (no special tokens added) and its BOS first.
    pub fn for_model(haystack: &'a Haystack, model: &'a crate::loader::LoadedModel) -> Self {
        let tok = &model.tokenizer;
        NiahBuilder::new(
            haystack,
            move |s: &str| tok.encode(s, false).expect("tokenizer encode"),
            move |ids: &[u32]| tok.decode(ids).expect("tokenizer decode"),
        )
        .with_bos(model.spec.bos_token_id)
    }

    /// Put `bos` first in `prompt_ids`; it counts in `length`.
    pub fn with_bos(mut self, bos: Option<u32>) -> Self {
        self.bos = bos;
        self
    }

    /// The peer baseline's needle prompt:
    /// `PEER_NEEDLE_PREFIX + haystack(with " " + needle) + PEER_NEEDLE_QUESTION_PREFIX + question + PEER_NEEDLE_ANSWER_PREFIX`,
    /// exactly `length` tokens; scored by [`metrics::peer_needle_recall`] of `needle.answer`.
    pub fn peer_needle(
        &self,
        needle: &Needle,
        length: usize,
        depth: f64,
    ) -> Result<NiahSample, NiahError> {
        let needle_text = format!(" {}", needle.needle);
        let suffix = format!(
            "{PEER_NEEDLE_QUESTION_PREFIX}{}{PEER_NEEDLE_ANSWER_PREFIX}",
            needle.question
        );
        let mut s = self.token_level(
            Pieces {
                prefix: PEER_NEEDLE_PREFIX,
                needle: &needle_text,
                suffix: &suffix,
            },
            length,
            depth,
            Rounding::Nearest,
        )?;
        s.protocol = Protocol::Peer;
        s.task = Task::Needle;
        s.answer = needle.answer.clone();
        s.score_reference = needle.answer.clone();
        s.scoring = Scoring::PeerRecall;
        s.max_new_tokens = PEER_NEEDLE_MAX_NEW_TOKENS;
        Ok(s)
    }

    /// The peer baseline's passkey prompt: `PEER_PASSKEY_PREFIX + haystack(with " The pass key is
    /// NNNNN. Remember it.") + PEER_PASSKEY_SUFFIX`, exactly `length` tokens; the key is
    /// [`passkey_for_seed`]`(seed)`; scored by [`metrics::passkey_exact`].
    pub fn peer_passkey(
        &self,
        length: usize,
        depth: f64,
        seed: u64,
    ) -> Result<NiahSample, NiahError> {
        let key = passkey_for_seed(seed).to_string();
        let needle_text = PEER_PASSKEY_NEEDLE.replace("{key}", &key);
        let mut s = self.token_level(
            Pieces {
                prefix: PEER_PASSKEY_PREFIX,
                needle: &needle_text,
                suffix: PEER_PASSKEY_SUFFIX,
            },
            length,
            depth,
            Rounding::Nearest,
        )?;
        s.protocol = Protocol::Peer;
        s.max_new_tokens = PEER_PASSKEY_MAX_NEW_TOKENS;
        Ok(passkey_fields(s, key, seed))
    }

    /// The classic passkey prompt (`"The pass key is N. Remember it. N is the pass key."` on its
    /// own line between the task line and the question), exactly `length` tokens.
    pub fn landmark_passkey(
        &self,
        length: usize,
        depth: f64,
        seed: u64,
    ) -> Result<NiahSample, NiahError> {
        let key = passkey_for_seed(seed).to_string();
        let needle_text = LANDMARK_NEEDLE.replace("{key}", &key);
        let mut s = self.token_level(
            Pieces {
                prefix: LANDMARK_PREFIX,
                needle: &needle_text,
                suffix: LANDMARK_SUFFIX,
            },
            length,
            depth,
            Rounding::Nearest,
        )?;
        s.protocol = Protocol::Landmark;
        s.max_new_tokens = LANDMARK_MAX_NEW_TOKENS;
        Ok(passkey_fields(s, key, seed))
    }

    /// The CompressKV paper's needle prompt (see the module docs). `prompt_ids` = BOS +
    /// `encode(prompt)`, about `length - buffer + template` tokens.
    pub fn paper_needle(
        &self,
        needle: &Needle,
        length: usize,
        depth: f64,
        options: &PaperOptions,
    ) -> Result<NiahSample, NiahError> {
        check_depth(depth)?;
        let needle_text = format!("\n{}\n", needle.needle);
        let needle_ids = (self.encode)(&needle_text);
        let budget = length.saturating_sub(options.final_context_length_buffer);
        let fixed = options.final_context_length_buffer + needle_ids.len();
        if budget <= needle_ids.len() {
            return Err(NiahError::TooShort { length, fixed });
        }
        let n = budget - needle_ids.len();
        let hay = self.haystack.tokens(n, &*self.encode)?;
        let p = self.insertion_point(&hay, depth, Rounding::Floor);
        let (head, tail) = self.decode_split(&hay, p);

        let (before_context, after_context) = PAPER_TEMPLATE
            .split_once("{context}")
            .expect("the template has {context}");
        let after_context = after_context.replacen("{question}", &needle.question, 1);
        let prompt = format!("{before_context}{head}{needle_text}{tail}{after_context}");
        let needle_char_offset = before_context.len() + head.len();
        let bos_len = usize::from(self.bos.is_some());
        let mut prompt_ids: Vec<u32> = self.bos.into_iter().collect();
        prompt_ids.extend((self.encode)(&prompt));
        let needle_token_start = bos_len + (self.encode)(&prompt[..needle_char_offset]).len();

        Ok(NiahSample {
            protocol: Protocol::Paper,
            task: Task::Needle,
            prompt,
            prompt_ids,
            needle_text,
            needle_char_offset,
            needle_token_start,
            needle_token_len: needle_ids.len(),
            haystack_tokens: n,
            answer: needle.answer.clone(),
            score_reference: needle.needle.clone(),
            scoring: Scoring::Rouge1RecallStemmed,
            length,
            depth,
            seed: None,
            max_new_tokens: PAPER_MAX_NEW_TOKENS,
        })
    }

    /// A token-level prompt with any wrapper, built like the peer protocol:
    /// `[BOS] + enc(prefix) + hay[..p] + enc(needle_text) + hay[p..n] + enc(suffix)`, exactly
    /// `length` tokens, scored with [`metrics::peer_needle_recall`] of `answer`. For example the SRH
    /// calibration prompts of `shared/reference/gemma-3-270m/srh_reference.json` are
    /// `custom_needle("", &format!(" {}", n.needle), &format!("\nBased on the content of the book, Question: {}\nAnswer:", n.question), &n.answer, length, depth)`.
    pub fn custom_needle(
        &self,
        prefix: &str,
        needle_text: &str,
        suffix: &str,
        answer: &str,
        length: usize,
        depth: f64,
    ) -> Result<NiahSample, NiahError> {
        let mut s = self.token_level(
            Pieces {
                prefix,
                needle: needle_text,
                suffix,
            },
            length,
            depth,
            Rounding::Nearest,
        )?;
        s.protocol = Protocol::Custom;
        s.answer = answer.to_string();
        s.score_reference = answer.to_string();
        s.max_new_tokens = PAPER_MAX_NEW_TOKENS;
        Ok(s)
    }

    /// Peer samples for every (length, depth); passkeys use [`sample_seed`]`(base_seed, length, depth)`.
    pub fn peer_grid(
        &self,
        task: Task,
        needle: &Needle,
        lengths: &[usize],
        depths: &[f64],
        base_seed: u64,
    ) -> Result<Vec<NiahSample>, NiahError> {
        let mut out = Vec::with_capacity(lengths.len() * depths.len());
        for &length in lengths {
            for &depth in depths {
                out.push(match task {
                    Task::Needle => self.peer_needle(needle, length, depth)?,
                    Task::Passkey => {
                        self.peer_passkey(length, depth, sample_seed(base_seed, length, depth))?
                    }
                });
            }
        }
        Ok(out)
    }

    /// `[BOS] + enc(prefix) + hay[..p] + enc(needle) + hay[p..n] + enc(suffix)`, exactly `length`.
    fn token_level(
        &self,
        pieces: Pieces<'_>,
        length: usize,
        depth: f64,
        rounding: Rounding,
    ) -> Result<NiahSample, NiahError> {
        check_depth(depth)?;
        let prefix_ids = (self.encode)(pieces.prefix);
        let needle_ids = (self.encode)(pieces.needle);
        let suffix_ids = (self.encode)(pieces.suffix);
        let bos_len = usize::from(self.bos.is_some());
        let fixed = bos_len + prefix_ids.len() + needle_ids.len() + suffix_ids.len();
        if length <= fixed {
            return Err(NiahError::TooShort { length, fixed });
        }
        let n = length - fixed;
        let hay = self.haystack.tokens(n, &*self.encode)?;
        let p = self.insertion_point(&hay, depth, rounding);

        let mut prompt_ids = Vec::with_capacity(length);
        prompt_ids.extend(self.bos);
        prompt_ids.extend_from_slice(&prefix_ids);
        prompt_ids.extend_from_slice(&hay[..p]);
        let needle_token_start = prompt_ids.len();
        prompt_ids.extend_from_slice(&needle_ids);
        prompt_ids.extend_from_slice(&hay[p..]);
        prompt_ids.extend_from_slice(&suffix_ids);
        debug_assert_eq!(prompt_ids.len(), length);

        let (head, tail) = self.decode_split(&hay, p);
        let prompt = format!(
            "{}{head}{}{tail}{}",
            pieces.prefix, pieces.needle, pieces.suffix
        );
        Ok(NiahSample {
            protocol: Protocol::Peer,
            task: Task::Needle,
            needle_char_offset: pieces.prefix.len() + head.len(),
            prompt,
            prompt_ids,
            needle_text: pieces.needle.to_string(),
            needle_token_start,
            needle_token_len: needle_ids.len(),
            haystack_tokens: n,
            answer: String::new(),
            score_reference: String::new(),
            scoring: Scoring::PeerRecall,
            length,
            depth,
            seed: None,
            max_new_tokens: 0,
        })
    }

    /// `round`/`int` of `n · depth / 100`, moved back to just after a token whose text ends with
    /// `.` (or to 0). Depth 100 is `n`, unmoved.
    fn insertion_point(&self, hay: &[u32], depth: f64, rounding: Rounding) -> usize {
        let n = hay.len();
        if depth >= 100.0 {
            return n;
        }
        let raw = n as f64 * depth / 100.0;
        let mut p = match rounding {
            Rounding::Nearest => raw.round_ties_even(),
            Rounding::Floor => raw.floor(),
        } as usize;
        p = p.min(n);
        while p > 0 && !(self.decode)(&hay[p - 1..p]).ends_with('.') {
            p -= 1;
        }
        p
    }

    /// `(decode(hay[..p]), decode(hay[p..]))`, the second taken from `decode(hay)` when the first is
    /// its prefix, so that a decoder that treats a sequence's first token specially (leading-space
    /// stripping) does not change the text at the seam.
    fn decode_split(&self, hay: &[u32], p: usize) -> (String, String) {
        let head = (self.decode)(&hay[..p]);
        let full = (self.decode)(hay);
        match full.strip_prefix(head.as_str()) {
            Some(tail) => {
                let tail = tail.to_string();
                (head, tail)
            }
            None => {
                let tail = (self.decode)(&hay[p..]);
                (head, tail)
            }
        }
    }
}

fn passkey_fields(mut s: NiahSample, key: String, seed: u64) -> NiahSample {
    s.task = Task::Passkey;
    s.answer = key.clone();
    s.score_reference = key;
    s.scoring = Scoring::PasskeyExact;
    s.seed = Some(seed);
    s
}

fn check_depth(depth: f64) -> Result<(), NiahError> {
    if (0.0..=100.0).contains(&depth) {
        Ok(())
    } else {
        Err(NiahError::BadDepth(depth))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    /// A whole-word tokenizer in the SentencePiece style: a token is a run of whitespace followed
    /// by a run of non-whitespace (so decode = concatenation, lossless); ids from a growing vocab.
    #[derive(Default)]
    struct WordTok {
        vocab: RefCell<HashMap<String, u32>>,
        words: RefCell<Vec<String>>,
    }

    impl WordTok {
        fn id(&self, piece: &str) -> u32 {
            if let Some(&id) = self.vocab.borrow().get(piece) {
                return id;
            }
            let id = self.words.borrow().len() as u32;
            self.words.borrow_mut().push(piece.to_string());
            self.vocab.borrow_mut().insert(piece.to_string(), id);
            id
        }

        fn encode(&self, text: &str) -> Vec<u32> {
            let mut pieces = Vec::new();
            let mut start = 0;
            let mut in_word = false;
            for (i, c) in text.char_indices() {
                if c.is_whitespace() && in_word {
                    pieces.push(&text[start..i]);
                    start = i;
                    in_word = false;
                } else if !c.is_whitespace() {
                    in_word = true;
                }
            }
            if start < text.len() {
                pieces.push(&text[start..]);
            }
            pieces.into_iter().map(|p| self.id(p)).collect()
        }

        fn decode(&self, ids: &[u32]) -> String {
            let words = self.words.borrow();
            ids.iter().map(|&i| words[i as usize].as_str()).collect()
        }
    }

    /// Sentences of 10 tokens: "sK wK1 ... wK8 eK." — numbered so positions are recognisable.
    fn numbered_haystack(sentences: usize) -> Haystack {
        let mut t = String::new();
        for k in 0..sentences {
            t.push_str(&format!("S{k}"));
            for j in 1..9 {
                t.push_str(&format!(" w{k}_{j}"));
            }
            t.push_str(&format!(" e{k}. "));
        }
        Haystack::from_text(t).unwrap()
    }

    fn with_builder<R>(
        h: &Haystack,
        bos: Option<u32>,
        f: impl FnOnce(&NiahBuilder<'_>, &WordTok) -> R,
    ) -> R {
        let tok = WordTok::default();
        let enc = |s: &str| tok.encode(s);
        let dec = |ids: &[u32]| tok.decode(ids);
        let b = NiahBuilder::new(h, enc, dec).with_bos(bos);
        f(&b, &tok)
    }

    #[test]
    fn word_tokenizer_roundtrips() {
        let tok = WordTok::default();
        let text = "  Hello world.\n\nNew line  ";
        assert_eq!(tok.decode(&tok.encode(text)), text);
        assert_eq!(tok.encode("a b").len(), 2);
    }

    #[test]
    fn peer_needle_exact_length_and_layout() {
        let h = numbered_haystack(400);
        with_builder(&h, Some(999_999), |b, tok| {
            let nd = Needle::san_francisco();
            for length in [300usize, 1000, 2048] {
                for depth in PEER_DEPTHS {
                    let s = b.peer_needle(&nd, length, depth).unwrap();
                    assert_eq!(s.prompt_ids.len(), length, "ids are exactly `length`");
                    assert_eq!(s.prompt_ids[0], 999_999);
                    assert!(
                        s.prompt
                            .starts_with("This is a very long story book: <book>")
                    );
                    assert!(s.prompt.ends_with(
                        "</book>.\nBased on the content of the book, Question: What is the best thing to do in San Francisco?\nAnswer:"
                    ));
                    assert_eq!(
                        &s.prompt[s.needle_char_offset..][..s.needle_text.len()],
                        s.needle_text
                    );
                    assert_eq!(s.needle_text, format!(" {}", nd.needle));
                    assert_eq!(s.needle_ids(), tok.encode(&s.needle_text).as_slice());
                    // The text re-encodes to `length` within the documented tolerance.
                    let retok = tok.encode(&s.prompt).len() + 1;
                    assert!(
                        retok.abs_diff(length) <= TEXT_TOKEN_TOLERANCE,
                        "{retok} vs {length}"
                    );
                    assert_eq!(s.max_new_tokens, 20);
                }
            }
        });
    }

    #[test]
    fn needle_position_follows_depth() {
        let h = numbered_haystack(400);
        with_builder(&h, None, |b, tok| {
            let nd = Needle::san_francisco();
            let length = 1000;
            let prefix_len = tok.encode(PEER_NEEDLE_PREFIX).len();
            let fixed = prefix_len
                + tok.encode(&format!(" {}", nd.needle)).len()
                + tok
                    .encode(&format!(
                        "{PEER_NEEDLE_QUESTION_PREFIX}{}{PEER_NEEDLE_ANSWER_PREFIX}",
                        nd.question
                    ))
                    .len();
            let n = length - fixed;
            for depth in [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 100.0] {
                let s = b.peer_needle(&nd, length, depth).unwrap();
                assert_eq!(s.haystack_tokens, n);
                let p = s.needle_token_start - prefix_len; // haystack tokens before the needle
                let target = (n as f64 * depth / 100.0).round() as usize;
                // Moved back by less than one sentence (10 tokens), never forward.
                assert!(
                    p <= target && target - p < 10,
                    "depth {depth}: p {p}, target {target}"
                );
                if depth == 0.0 {
                    assert_eq!(
                        s.needle_token_start, prefix_len,
                        "depth 0: right after the prefix"
                    );
                } else if depth == 100.0 {
                    // Right before the question: needle, then immediately the suffix tokens.
                    assert_eq!(p, n);
                    assert_eq!(
                        s.needle_token_start + s.needle_token_len,
                        length - (fixed - prefix_len - s.needle_token_len)
                    );
                    let after = &s.prompt[s.needle_char_offset + s.needle_text.len()..];
                    assert!(after.starts_with("</book>."));
                } else {
                    // At a sentence boundary: the haystack text before the needle ends with '.'.
                    assert!(
                        s.prompt[..s.needle_char_offset].ends_with('.'),
                        "depth {depth}"
                    );
                }
            }
            // 50% is in the middle, within one sentence.
            let s = b.peer_needle(&nd, length, 50.0).unwrap();
            let mid = prefix_len + n / 2;
            assert!(s.needle_token_start <= mid && mid - s.needle_token_start < 10);
        });
    }

    #[test]
    fn passkey_seeds() {
        let h = Haystack::noise();
        with_builder(&h, None, |b, tok| {
            let a = b.peer_passkey(500, 50.0, 7).unwrap();
            let a2 = b.peer_passkey(500, 50.0, 7).unwrap();
            assert_eq!(a, a2, "same seed, same prompt");
            let c = b.peer_passkey(500, 50.0, 8).unwrap();
            assert_ne!(a.answer, c.answer, "different seed, different key");
            assert_eq!(a.answer.len(), 5);
            assert_eq!(a.answer, passkey_for_seed(7).to_string());
            assert!(
                a.prompt
                    .contains(&format!(" The pass key is {}. Remember it.", a.answer))
            );
            assert!(a.prompt.starts_with(PEER_PASSKEY_PREFIX));
            assert!(
                a.prompt
                    .ends_with("\nWhat is the pass key?\nThe pass key is")
            );
            assert_eq!(a.prompt_ids.len(), 500);
            assert!(
                a.prompt[..a.needle_char_offset].ends_with("again.")
                    || a.prompt[..a.needle_char_offset].ends_with('.')
            );
            assert_eq!(a.score(&format!(" {}.", a.answer)), 100.0);
            assert_eq!(a.score(" 00000"), 0.0);
            // Keys of many seeds are all 5-digit and not all equal.
            let keys: std::collections::HashSet<u32> = (0..50).map(passkey_for_seed).collect();
            assert!(keys.len() > 40 && keys.iter().all(|k| (10000..=99999).contains(k)));
            let retok = tok.encode(&a.prompt).len();
            assert!(retok.abs_diff(500) <= TEXT_TOKEN_TOLERANCE);
        });
    }

    #[test]
    fn landmark_passkey_layout() {
        let h = Haystack::noise();
        with_builder(&h, None, |b, _| {
            let s = b.landmark_passkey(400, 25.0, 3).unwrap();
            let k = &s.answer;
            assert!(s.prompt.contains(&format!(
                "\nThe pass key is {k}. Remember it. {k} is the pass key.\n"
            )));
            assert!(s.prompt.starts_with(LANDMARK_PREFIX));
            assert!(
                s.prompt
                    .ends_with("\nWhat is the pass key? The pass key is")
            );
            assert!(s.prompt[LANDMARK_PREFIX.len()..].starts_with("The grass is green."));
            assert_eq!(s.prompt_ids.len(), 400);
            assert_eq!(s.protocol, Protocol::Landmark);
        });
    }

    #[test]
    fn paper_protocol() {
        let h = numbered_haystack(400);
        with_builder(&h, Some(1), |b, tok| {
            let nd = Needle::san_francisco();
            let opts = PaperOptions::default();
            let s = b.paper_needle(&nd, 1000, 50.0, &opts).unwrap();
            assert!(
                s.prompt
                    .starts_with("<|im_start|> This is a very long story book: <book> ")
            );
            assert!(s.prompt.ends_with(
                " </book>.\n Based on the content of the book, Question: What is the best thing to do in San Francisco?\nAnswer:"
            ));
            assert_eq!(s.needle_text, format!("\n{}\n", nd.needle));
            assert_eq!(
                &s.prompt[s.needle_char_offset..][..s.needle_text.len()],
                s.needle_text
            );
            // Haystack + needle = length - 200 tokens.
            assert_eq!(s.haystack_tokens + s.needle_token_len, 800);
            let template_tokens = tok
                .encode(&PAPER_TEMPLATE.replace("{question}", &nd.question))
                .len();
            assert!(s.prompt_ids.len().abs_diff(800 + template_tokens + 1) <= TEXT_TOKEN_TOLERANCE);
            assert_eq!(s.prompt_ids, [vec![1], tok.encode(&s.prompt)].concat());
            assert!(s.prompt[..s.needle_char_offset].ends_with('.'));
            // Scored like the paper: stemmed ROUGE-1 recall of the whole needle sentence.
            assert_eq!(s.score(&nd.needle), 100.0);
            assert!(s.score("eat a sandwich and sit in Dolores Park on a sunny day") < 60.0);
            // Depth 100: at the very end of the context.
            let s = b.paper_needle(&nd, 1000, 100.0, &opts).unwrap();
            assert!(
                s.prompt[s.needle_char_offset + s.needle_text.len()..].starts_with(" </book>.")
            );
            assert!(matches!(
                b.paper_needle(&nd, 210, 0.0, &opts),
                Err(NiahError::TooShort { length: 210, .. })
            ));
        });
    }

    #[test]
    fn custom_srh_layout() {
        let h = numbered_haystack(100);
        with_builder(&h, Some(2), |b, tok| {
            let n = Needle::san_francisco();
            let suffix = format!(
                "\nBased on the content of the book, Question: {}\nAnswer:",
                n.question
            );
            let s = b
                .custom_needle("", &format!(" {}", n.needle), &suffix, &n.answer, 300, 0.0)
                .unwrap();
            assert_eq!(s.prompt_ids.len(), 300);
            assert_eq!(
                s.needle_token_start, 1,
                "depth 0: right after BOS, as in the SRH reference"
            );
            assert!(s.prompt.starts_with(" The best thing"));
            assert_eq!(s.protocol, Protocol::Custom);
            assert_eq!(
                s.score("Eat a sandwich and sit in Dolores Park on a sunny day."),
                100.0
            );
            let s = b
                .custom_needle("", " N.", &suffix, "n", 300, 100.0)
                .unwrap();
            assert_eq!(
                s.needle_token_start + s.needle_token_len + tok.encode(&suffix).len(),
                300
            );
        });
    }

    #[test]
    fn haystack_repeats_when_short() {
        let h = Haystack::from_text("One. Two. Three. ").unwrap();
        with_builder(&h, None, |b, _| {
            let s = b.peer_needle(&Needle::san_francisco(), 200, 50.0).unwrap();
            assert_eq!(s.prompt_ids.len(), 200);
            assert!(s.prompt.matches("Three.").count() > 10);
        });
    }

    #[test]
    fn errors() {
        let h = numbered_haystack(10);
        with_builder(&h, None, |b, _| {
            let nd = Needle::san_francisco();
            assert!(matches!(
                b.peer_needle(&nd, 10, 0.0),
                Err(NiahError::TooShort { length: 10, .. })
            ));
            assert!(matches!(
                b.peer_needle(&nd, 500, 101.0),
                Err(NiahError::BadDepth(_))
            ));
            assert!(matches!(
                b.peer_needle(&nd, 500, f64::NAN),
                Err(NiahError::BadDepth(_))
            ));
        });
        assert!(Haystack::from_text("").is_err());
        let none = |_: &str| -> Vec<u32> { Vec::new() };
        assert!(matches!(
            Haystack::noise().tokens(10, &none),
            Err(NiahError::NoTokens)
        ));
    }

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("niah-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn needles_jsonl() {
        let p = temp_file(
            "ok.jsonl",
            "{\"needle\": \"N1.\", \"question\": \"Q1?\", \"answer\": \"A1\"}\n\n{\"question\": \"Q2?\", \"needle\": \"N2.\", \"real_needle\": \"A2\", \"extra\": 1}\n",
        );
        let n = load_needles(&p).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[1],
            Needle {
                needle: "N2.".into(),
                question: "Q2?".into(),
                answer: "A2".into()
            }
        );

        let p = temp_file(
            "missing.jsonl",
            "{\"needle\": \"a\", \"question\": \"b\", \"answer\": \"c\"}\n{\"needle\": \"a\", \"answer\": \"c\"}\n",
        );
        let e = load_needles(&p).unwrap_err();
        assert!(
            matches!(
                e,
                NiahError::MissingField {
                    line: 2,
                    field: "question",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains(":2: missing field `question`"),
            "{e}"
        );

        let p = temp_file("bad.jsonl", "\n\n{\"needle\": \"a\",\n");
        let e = load_needles(&p).unwrap_err();
        assert!(matches!(e, NiahError::Json { line: 3, .. }), "{e}");

        let p = temp_file(
            "type.jsonl",
            "{\"needle\": 1, \"question\": \"b\", \"answer\": \"c\"}\n",
        );
        assert!(matches!(
            load_needles(&p),
            Err(NiahError::NotAString {
                line: 1,
                field: "needle",
                ..
            })
        ));

        let p = temp_file("empty.jsonl", "\n");
        assert!(matches!(load_needles(&p), Err(NiahError::NoNeedles { .. })));
        assert!(matches!(
            load_needles("/nonexistent/needles.jsonl"),
            Err(NiahError::Io { .. })
        ));
    }

    #[test]
    fn haystack_from_dir_sorted() {
        let dir = std::env::temp_dir().join(format!("niah-hay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.txt"), "Second.").unwrap();
        std::fs::write(dir.join("a.txt"), "First. ").unwrap();
        std::fs::write(dir.join("c.md"), "Ignored.").unwrap();
        let h = Haystack::from_dir(&dir).unwrap();
        assert_eq!(h.text(), "First. Second.");
        assert_eq!(h.files().len(), 2);
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(matches!(
            Haystack::from_dir(&empty),
            Err(NiahError::EmptyHaystack(_))
        ));
    }

    /// `shared/datasets/<name>` (the repository's `../shared`), if present.
    fn shared_dataset(name: &str) -> Option<PathBuf> {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|p| p.join("shared/datasets").join(name))
            .chain(std::iter::once(
                Path::new("/work/shared/datasets").join(name),
            ))
            .find(|p| p.exists())
    }

    /// The real haystack and needles, when the shared data is present.
    #[test]
    fn shared_paul_graham_and_needles() {
        let Some(root) = shared_dataset("compresskv-paper") else {
            eprintln!("shared datasets not found; skipped");
            return;
        };
        let h = Haystack::from_dir(root.join("needle/PaulGrahamEssays")).unwrap();
        assert_eq!(h.files().len(), 49);
        assert!(
            h.files()
                .windows(2)
                .all(|w| w[0].file_name() < w[1].file_name())
        );
        let needles = load_needles(
            root.join("Retrieval_Head_Identification/haystack_for_detect/needles.jsonl"),
        )
        .unwrap();
        assert_eq!(needles.len(), 3);
        assert_eq!(
            needles[1].answer,
            "take a walk in Chaoyang Park and have a cup of Espresso in the evening"
        );
        with_builder(&h, Some(2), |b, tok| {
            for depth in PEER_DEPTHS {
                let s = b.peer_needle(&needles[1], 1024, depth).unwrap();
                assert_eq!(s.prompt_ids.len(), 1024);
                assert!(tok.encode(&s.prompt).len().abs_diff(1023) <= TEXT_TOKEN_TOLERANCE);
                if depth > 0.0 && depth < 100.0 {
                    assert!(s.prompt[..s.needle_char_offset].ends_with('.'));
                }
            }
        });
    }
}
