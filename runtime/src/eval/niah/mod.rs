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
//! - [`Protocol::Calibration`] — the profiler's SRH calibration prompts
//!   ([`NiahBuilder::calibration_needle`]): the peer layout without the book wrapper, with the
//!   question of [`CALIBRATION_QUESTION_TEMPLATE`], and the rules the profiler has always used
//!   (rounding half away from zero, a sentence end may be followed by whitespace in its token,
//!   depth 100 moves back too, the haystack is not repeated); [`NiahBuilder::answer_span`] gives
//!   the answer's tokens inside the needle.
//! - [`Protocol::Ruler`] — RULER's NIAH tasks ([`NiahBuilder::ruler`], module [`ruler`]): keys
//!   with values in RULER's template, built as text and tokenized whole (at most
//!   `length − 128` tokens, room for the answer), scored by the share of values found.
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
//!
//! # Layout
//! `inputs` (needles from jsonl, the haystack text), `builder` ([`NiahBuilder`]: the protocols'
//! prompts at the token level), `ruler` (RULER's tasks, keys and values), `sample`
//! ([`NiahSample`]: one prompt and how its answer is scored). The protocols' fixed texts and the errors are here; everything public is re-exported.
//!
//! [`metrics::rouge1_recall_stemmed`]: crate::eval::metrics::rouge1_recall_stemmed

mod builder;
mod inputs;
pub mod ruler;
#[cfg(test)]
mod ruler_tests;
pub mod run;
mod sample;
#[cfg(test)]
mod tests;

pub use builder::{NiahBuilder, PaperOptions};
pub use inputs::{Haystack, LONGBENCH_QA_DATASETS, Needle, load_needles, parse_needles};
pub use ruler::{RulerKind, RulerTask, RulerWords};
pub use sample::{NiahSample, Protocol, Scoring, Task, passkey_for_seed, sample_seed};

use std::path::PathBuf;

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

/// Calibration prompts: the question after the haystack, `{question}` replaced (the SRH
/// reference's `question_template`).
pub const CALIBRATION_QUESTION_TEMPLATE: &str =
    "\nBased on the content of the book, Question: {question}\nAnswer:";
/// Calibration prompts: the fewest haystack tokens a prompt may have.
pub const CALIBRATION_MIN_HAYSTACK_TOKENS: usize = 17;
/// Calibration prompts: new tokens generated (the SRH reference's `max_new`).
pub const CALIBRATION_MAX_NEW_TOKENS: usize = 50;

/// The paper's prompt; `{context}` and `{question}` are replaced once each.
pub const PAPER_TEMPLATE: &str = "<|im_start|> This is a very long story book: <book> {context} </book>.\n Based on the content of the book, Question: {question}\nAnswer:";
/// The paper's `final_context_length_buffer`.
pub const PAPER_CONTEXT_BUFFER: usize = 200;
/// The paper's `max_new_tokens`.
pub const PAPER_MAX_NEW_TOKENS: usize = 50;

/// Errors of needle loading and prompt building.
#[derive(Debug, thiserror::Error)]
pub enum NiahError {
    /// A file or directory could not be read. The cause is the error's `source` only, so that a
    /// chain printed with `{:#}` names it once.
    #[error("cannot read {}", path.display())]
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
        /// Tokens taken by BOS, wrapper, needle and question (and the paper's buffer; for
        /// calibration prompts also all but one of their minimum haystack tokens; for RULER
        /// prompts also the room left for the answer).
        fixed: usize,
    },
    /// A prompt that does not repeat its haystack needs more of it than there is.
    #[error(
        "length {length} does not fit: it needs {need} haystack tokens and the haystack has {have}"
    )]
    HaystackTooShort {
        /// Requested length.
        length: usize,
        /// Haystack tokens the prompt needs.
        need: usize,
        /// Haystack tokens there are.
        have: usize,
    },
    /// The answer is not a (case-insensitive) span of the needle text.
    #[error("the answer is not in the needle")]
    AnswerNotInNeedle,
    /// A RULER task name that is not one of [`RulerTask::ALL`].
    #[error("unknown RULER task `{0}`: the tasks are {names}", names = ruler::TASK_NAMES)]
    UnknownRulerTask(String),
    /// RULER's word lists are not where they were looked for.
    #[error(
        "RULER's word lists are not in {}: expected wonderwords/adjectivelist.txt and \
         wonderwords/nounlist.txt in it (RULER's data folder, e.g. shared/datasets/ruler)",
        .0.display()
    )]
    NoRulerWords(PathBuf),
    /// A RULER task that draws words was asked for without the word lists.
    #[error("RULER task {0} draws adjective-noun words and needs RULER's word lists")]
    RulerNeedsWords(&'static str),
    /// The word lists ran out of distinct `adjective-noun` words for one prompt.
    #[error(
        "RULER's word lists give too few distinct adjective-noun words: {0} drawn, no new one \
         in 10000 draws"
    )]
    RulerWordsExhausted(usize),
    /// [`NiahBuilder::peer_grid`] was asked for a task the peer protocol does not have.
    #[error("task {0} has no peer prompt (RULER tasks are built by NiahBuilder::ruler)")]
    NoPeerPrompt(&'static str),
}
