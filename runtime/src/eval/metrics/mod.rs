//! Scores for the evaluation harnesses: the official LongBench v1 metrics and the
//! Needle-in-a-Haystack / passkey scores.
//!
//! # LongBench
//! Ported from THUDM/LongBench `LongBench/metrics.py` and `LongBench/eval.py` (identical in
//! CompressKV's `longbench/eval.py`). Every per-sample score is in `[0, 1]`, as upstream; a dataset's
//! score is `round(100 * mean, 2)` ([`dataset_score`]).
//!
//! The Python functions are reproduced character for character where it matters:
//! `str.lower()` (full Unicode, via [`str::to_lowercase`]), `string.punctuation` (ASCII only),
//! `re`'s Unicode `\b`, `\d` and `\s`, `str.split()`, `Counter` intersections, the `rouge`
//! package's sentence splitting and union-LCS, fuzzywuzzy's `fuzz.ratio` with python-Levenshtein
//! and Python's round-half-to-even. Known differences, all documented where they occur:
//! - **Chinese segmentation**: jieba is not available, so `qa_f1_zh_score` and `rouge_zh_score`
//!   tokenize per character (after normalization for F1). Per-character scores are usually higher
//!   than jieba word scores; compare zh numbers only with zh numbers computed the same way.
//! - **`\w` for article removal** uses [`char::is_alphanumeric`] + `_`, which also accepts
//!   combining marks with the Unicode `Other_Alphabetic` property (Python's `re` does not). This
//!   only matters when "a"/"an"/"the" touch such a mark.
//! - **`rouge`'s recursion limit**: the `rouge` package reconstructs the LCS recursively; a
//!   hypothesis sentence and a reference sentence of together ≳ 950 words make Python raise
//!   `RecursionError`, which LongBench's bare `except` turns into a score of 0. We compute the
//!   true score instead.
//! - Malformed inputs on which the Python raises (a retrieval answer without "Paragraph N", a
//!   classification dataset without `all_classes`) give a [`MetricError`] or a 0 score instead of a
//!   crash; each function says which.
//!
//! # NIAH / passkey
//! Scores are in `[0, 100]` (percent), as the needle literature reports them.
//! - [`rouge1_recall_stemmed`]: the CompressKV paper's needle score,
//!   `rouge_score.RougeScorer(['rouge1'], use_stemmer=True).score(needle, response)['rouge1'].recall * 100`,
//!   with the Porter stemmer ported from NLTK (`NLTK_EXTENSIONS` mode, as rouge_score uses it).
//! - [`rouge1_recall`]: the same without stemming (the SRH reference's "word recall").
//! - [`peer_needle_recall`]: the peer baseline's protocol (`shared/notes/peer-baseline.md`): the
//!   same clipped-count word recall, on the first line of the answer only.
//! - [`passkey_exact`]: 100 if the first number of the answer is the key.
//! - [`ruler_string_match_all`]: RULER's NIAH score, the share of the expected values that occur
//!   in the answer.
//! - [`ruler_whole_match_all`]: the same with whole values only (not inside a longer run of
//!   letters or digits), reported next to RULER's.
//!
//! # Layout
//! `longbench` (the LongBench metrics and dataset scoring), `niah` (the needle and passkey
//! scores), `stem` (the Porter stemmer the stemmed needle score needs) and `pycompat` (the Python
//! string behaviour both families reproduce). Everything public is re-exported here.

mod longbench;
mod niah;
mod pycompat;
mod stem;
#[cfg(test)]
mod tests;

pub(crate) use longbench::lcs_len;
pub use longbench::{
    COMPRESSKV_AVG_DATASETS, FIRST_LINE_DATASETS, LONGBENCH_DATASETS, Metric, classification_score,
    code_sim_score, count_score, dataset_score, fuzz_ratio, length_bucket, levenshtein_ratio,
    metric_for_dataset, normalize_answer, normalize_zh_answer, preprocess_prediction, qa_f1_score,
    qa_f1_zh_score, retrieval_score, retrieval_zh_score, rouge_l_score, rouge_zh_score,
    score_prediction,
};
pub use niah::{
    first_line, passkey_exact, peer_needle_recall, rouge_tokenize, rouge1_recall,
    rouge1_recall_stemmed, ruler_string_match_all, ruler_whole_match_all,
};
pub use pycompat::first_number;
pub use stem::porter_stem;

/// A score could not be computed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MetricError {
    /// The dataset name is not one of the 21 LongBench v1 datasets (with or without `_e`).
    #[error("unknown LongBench dataset `{0}` (expected one of the 21 LongBench v1 datasets)")]
    UnknownDataset(String),
    /// A classification dataset (trec, lsht) was scored without its `all_classes` list.
    #[error("dataset `{0}` is scored by classification and needs `all_classes`")]
    MissingClasses(String),
}
