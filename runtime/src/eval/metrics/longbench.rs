//! The LongBench v1 metrics (`metrics.py`: answer normalization, QA F1, ROUGE-L,
//! classification, retrieval, count and code similarity) and `eval.py`'s scoring around them
//! (which metric scores which dataset, prediction preprocessing, the reported dataset score).

use serde::{Deserialize, Serialize};

use super::MetricError;
use super::pycompat::{
    ASCII_PUNCTUATION, clipped_overlap, find_numbers, py_is_decimal, py_is_space, py_is_word,
    py_round, py_round_2, py_split,
};

/// `cn_punctuation` of LongBench's `normalize_zh_answer`, verbatim (note: it has `》` but not `《`).
const ZH_PUNCTUATION: &str = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.";

/// LongBench's (SQuAD's) `normalize_answer`: lowercase, drop ASCII punctuation, drop the whole
/// words "a", "an", "the", collapse whitespace to single spaces (trimmed).
///
/// Non-ASCII punctuation (`“`, `—`, `。`, full-width forms…) is kept, as upstream; accents are
/// kept (no Unicode normalization, as upstream). Words are delimited as by `re`'s `\b`, so an
/// article next to non-ASCII punctuation (`—the—`) or to a *decomposed* accent (`the` + U+0301) is
/// removed too.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|&c| !ASCII_PUNCTUATION.contains(c))
        .collect();
    let no_articles = remove_articles(&no_punc);
    py_split(&no_articles).collect::<Vec<_>>().join(" ")
}

/// `re.sub(r"\b(a|an|the)\b", " ", text)`: replace every maximal run of word characters that is
/// exactly an article by a space.
fn remove_articles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start: Option<usize> = None;
    let flush = |out: &mut String, word: &str| {
        if matches!(word, "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
    };
    for (i, c) in text.char_indices() {
        if py_is_word(c) {
            if word_start.is_none() {
                word_start = Some(i);
            }
        } else {
            if let Some(st) = word_start.take() {
                flush(&mut out, &text[st..i]);
            }
            out.push(c);
        }
    }
    if let Some(st) = word_start {
        flush(&mut out, &text[st..]);
    }
    out
}

/// LongBench's `normalize_zh_answer`: lowercase, drop ASCII and the listed CJK/typographic
/// punctuation, then delete all whitespace (`"".join(text.split())`).
pub fn normalize_zh_answer(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|&c| {
            !ASCII_PUNCTUATION.contains(c) && !ZH_PUNCTUATION.contains(c) && !py_is_space(c)
        })
        .collect()
}

/// Token multiset F1 (`f1_score` in metrics.py), same float operations as the Python.
fn f1_tokens<T: AsRef<str>>(prediction: &[T], ground_truth: &[T]) -> f64 {
    let num_same = clipped_overlap(prediction, ground_truth);
    if num_same == 0 {
        return 0.0;
    }
    let precision = num_same as f64 / prediction.len() as f64;
    let recall = num_same as f64 / ground_truth.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// `qa_f1_score`: F1 over the whitespace tokens of [`normalize_answer`]. In `[0, 1]`.
pub fn qa_f1_score(prediction: &str, ground_truth: &str) -> f64 {
    let p = normalize_answer(prediction);
    let g = normalize_answer(ground_truth);
    let pt: Vec<&str> = p.split(' ').filter(|t| !t.is_empty()).collect();
    let gt: Vec<&str> = g.split(' ').filter(|t| !t.is_empty()).collect();
    f1_tokens(&pt, &gt)
}

/// `qa_f1_zh_score`, **per character** instead of jieba words: F1 over the characters of
/// [`normalize_zh_answer`]. (Upstream: jieba tokens, each normalized, empty ones dropped.) In `[0, 1]`.
pub fn qa_f1_zh_score(prediction: &str, ground_truth: &str) -> f64 {
    let chars =
        |s: &str| -> Vec<String> { normalize_zh_answer(s).chars().map(String::from).collect() };
    f1_tokens(&chars(prediction), &chars(ground_truth))
}

/// `rouge_score` of metrics.py: `Rouge().get_scores([pred], [gold], avg=True)["rouge-l"]["f"]`
/// from the `rouge` package (1.0.1), 0.0 where it raises. In `[0, 1]`.
///
/// What the package computes (not textbook ROUGE-L): both texts are split into "sentences" at
/// every ASCII `.`, empty pieces dropped, whitespace collapsed, words = `sentence.split(" ")`.
/// `m`/`n` = number of **distinct** words of the reference/hypothesis; the hit count is the size
/// of the **set** of words in the union, over all (reference sentence, hypothesis sentence)
/// pairs, of one LCS each (reconstructed with the package's tie-break); `f = 2pr / (p + r + 1e-8)`.
/// An empty hypothesis or reference (nothing but dots) raises upstream → 0.0.
pub fn rouge_l_score(prediction: &str, ground_truth: &str) -> f64 {
    let sentences = |s: &str| -> Vec<String> {
        s.split('.')
            .filter(|piece| !piece.is_empty())
            .map(|piece| py_split(piece).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let hyp = sentences(prediction);
    let refs = sentences(ground_truth);
    if hyp.is_empty() || refs.is_empty() {
        return 0.0;
    }
    let words = |sents: &[String]| -> Vec<Vec<String>> {
        sents
            .iter()
            .map(|s| s.split(' ').map(String::from).collect())
            .collect()
    };
    let hyp_words = words(&hyp);
    let ref_words = words(&refs);
    let distinct = |ws: &[Vec<String>]| -> usize {
        ws.iter()
            .flatten()
            .map(String::as_str)
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let m = distinct(&ref_words);
    let n = distinct(&hyp_words);
    let mut union: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for r in &ref_words {
        for h in &hyp_words {
            for w in recon_lcs(r, h) {
                union.insert(w);
            }
        }
    }
    let llcs = union.len() as f64;
    let r_lcs = llcs / m as f64;
    let p_lcs = llcs / n as f64;
    2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))
}

/// The words of one LCS of `x` (reference) and `y` (hypothesis), reconstructed exactly like
/// `rouge.rouge_score._recon_lcs` (on a mismatch, go up when `table[i-1][j] > table[i][j-1]`,
/// else left).
fn recon_lcs<'a>(x: &'a [String], y: &[String]) -> Vec<&'a str> {
    let (n, m) = (x.len(), y.len());
    let w = m + 1;
    let mut table = vec![0u32; (n + 1) * (m + 1)];
    for i in 1..=n {
        for j in 1..=m {
            table[i * w + j] = if x[i - 1] == y[j - 1] {
                table[(i - 1) * w + j - 1] + 1
            } else {
                table[(i - 1) * w + j].max(table[i * w + j - 1])
            };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            out.push(x[i - 1].as_str());
            i -= 1;
            j -= 1;
        } else if table[(i - 1) * w + j] > table[i * w + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    out.reverse();
    out
}

/// `rouge_zh_score`, **per character** instead of jieba words: [`rouge_l_score`] of the texts with
/// a space between every two characters. In `[0, 1]`.
pub fn rouge_zh_score(prediction: &str, ground_truth: &str) -> f64 {
    let spaced = |s: &str| -> String {
        let mut out = String::with_capacity(s.len() * 2);
        for (i, c) in s.chars().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push(c);
        }
        out
    };
    rouge_l_score(&spaced(prediction), &spaced(ground_truth))
}

/// `classification_score` (trec, lsht). In `[0, 1]`.
///
/// The classes that occur as substrings of the prediction are collected; then, walking that list
/// the way the Python does (removing from a list while iterating over it, so the element after a
/// removed one is skipped), a class that is a proper substring of the ground truth is removed.
/// Score = `1 / len(list)` if the ground truth is in the list, else 0.
pub fn classification_score(prediction: &str, ground_truth: &str, all_classes: &[String]) -> f64 {
    let mut em: Vec<&str> = all_classes
        .iter()
        .map(String::as_str)
        .filter(|c| prediction.contains(c))
        .collect();
    let mut i = 0;
    while i < em.len() {
        let term = em[i];
        if ground_truth.contains(term) && term != ground_truth {
            // list.remove(x) removes the first element equal to x.
            if let Some(pos) = em.iter().position(|&t| t == term) {
                em.remove(pos);
            }
        }
        i += 1;
    }
    if em.contains(&ground_truth) {
        1.0 / em.len() as f64
    } else {
        0.0
    }
}

/// Fraction of the numbers in `prediction` that equal `target` (string equality, as upstream).
fn number_vote(prediction: &str, target: &str) -> f64 {
    let numbers = find_numbers(prediction);
    if numbers.is_empty() {
        return 0.0;
    }
    let right = numbers.iter().filter(|&&n| n == target).count();
    right as f64 / numbers.len() as f64
}

/// `retrieval_score` (passage_retrieval_en): the ground truth is "Paragraph N"; the score is the
/// fraction of the numbers in the prediction that equal N. In `[0, 1]`. A ground truth without
/// "Paragraph N" raises upstream; here it scores 0.
pub fn retrieval_score(prediction: &str, ground_truth: &str) -> f64 {
    match number_after(ground_truth, "Paragraph ") {
        Some(id) => number_vote(prediction, id),
        None => 0.0,
    }
}

/// `retrieval_zh_score` (passage_retrieval_zh): as [`retrieval_score`] with "段落N".
pub fn retrieval_zh_score(prediction: &str, ground_truth: &str) -> f64 {
    match number_after(ground_truth, "段落") {
        Some(id) => number_vote(prediction, id),
        None => 0.0,
    }
}

/// The digits of the first match of `re.findall(prefix + r"(\d+)", s)`.
fn number_after<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(pos) = s[from..].find(prefix) {
        let start = from + pos + prefix.len();
        let digits = s[start..]
            .chars()
            .take_while(|&c| py_is_decimal(c))
            .map(char::len_utf8)
            .sum::<usize>();
        if digits > 0 {
            return Some(&s[start..start + digits]);
        }
        from = from + pos + prefix.len().max(1);
    }
    None
}

/// `count_score` (passage_count): fraction of the numbers in the prediction equal to the ground
/// truth (string equality: "05" ≠ "5"). In `[0, 1]`.
pub fn count_score(prediction: &str, ground_truth: &str) -> f64 {
    number_vote(prediction, ground_truth)
}

/// `code_sim_score` (lcc, repobench-p): `fuzz.ratio(line, ground_truth) / 100`, where `line` is the
/// first line of the prediction (leading newlines stripped) that contains none of `` ` ``, `#`,
/// `//` (empty if there is none). In `[0, 1]`.
pub fn code_sim_score(prediction: &str, ground_truth: &str) -> f64 {
    let line = prediction
        .trim_start_matches('\n')
        .split('\n')
        .find(|l| !l.contains('`') && !l.contains('#') && !l.contains("//"))
        .unwrap_or("");
    fuzz_ratio(line, ground_truth) as f64 / 100.0
}

/// fuzzywuzzy 0.18 `fuzz.ratio` with python-Levenshtein: 100 if the strings are equal, 0 if one
/// is empty, else `round_half_even(100 * Levenshtein.ratio(a, b))`.
pub fn fuzz_ratio(a: &str, b: &str) -> u32 {
    if a == b {
        return 100;
    }
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    py_round(100.0 * levenshtein_ratio(a, b)) as u32
}

/// python-Levenshtein's `ratio` (the normalized Indel similarity, over code points):
/// `1 - indel_distance / (len_a + len_b)`, where the Indel distance is the Levenshtein distance
/// with substitutions costing 2, i.e. `len_a + len_b - 2 * LCS`. 1.0 for two empty strings.
pub fn levenshtein_ratio(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let lensum = a.len() + b.len();
    if lensum == 0 {
        return 1.0;
    }
    let dist = lensum - 2 * lcs_len(&a, &b);
    1.0 - dist as f64 / lensum as f64
}

/// Length of the longest common subsequence (two-row DP).
pub(crate) fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The LongBench metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// [`qa_f1_score`]
    QaF1,
    /// [`qa_f1_zh_score`] (per character)
    QaF1Zh,
    /// [`rouge_l_score`]
    RougeL,
    /// [`rouge_zh_score`] (per character)
    RougeZh,
    /// [`classification_score`]
    Classification,
    /// [`retrieval_score`]
    Retrieval,
    /// [`retrieval_zh_score`]
    RetrievalZh,
    /// [`count_score`]
    Count,
    /// [`code_sim_score`]
    CodeSim,
}

impl Metric {
    /// The upstream function name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::QaF1 => "qa_f1_score",
            Metric::QaF1Zh => "qa_f1_zh_score",
            Metric::RougeL => "rouge_score",
            Metric::RougeZh => "rouge_zh_score",
            Metric::Classification => "classification_score",
            Metric::Retrieval => "retrieval_score",
            Metric::RetrievalZh => "retrieval_zh_score",
            Metric::Count => "count_score",
            Metric::CodeSim => "code_sim_score",
        }
    }

    /// Score one prediction against one ground truth. `all_classes` is used by
    /// [`Metric::Classification`] only (an empty list scores 0).
    pub fn score(self, prediction: &str, ground_truth: &str, all_classes: &[String]) -> f64 {
        match self {
            Metric::QaF1 => qa_f1_score(prediction, ground_truth),
            Metric::QaF1Zh => qa_f1_zh_score(prediction, ground_truth),
            Metric::RougeL => rouge_l_score(prediction, ground_truth),
            Metric::RougeZh => rouge_zh_score(prediction, ground_truth),
            Metric::Classification => classification_score(prediction, ground_truth, all_classes),
            Metric::Retrieval => retrieval_score(prediction, ground_truth),
            Metric::RetrievalZh => retrieval_zh_score(prediction, ground_truth),
            Metric::Count => count_score(prediction, ground_truth),
            Metric::CodeSim => code_sim_score(prediction, ground_truth),
        }
    }
}

/// The 21 LongBench v1 datasets, in `pred.py`'s order.
pub const LONGBENCH_DATASETS: [&str; 21] = [
    "narrativeqa",
    "qasper",
    "multifieldqa_en",
    "multifieldqa_zh",
    "hotpotqa",
    "2wikimqa",
    "musique",
    "dureader",
    "gov_report",
    "qmsum",
    "multi_news",
    "vcsum",
    "trec",
    "triviaqa",
    "samsum",
    "lsht",
    "passage_count",
    "passage_retrieval_en",
    "passage_retrieval_zh",
    "lcc",
    "repobench-p",
];

/// The 16 English datasets whose mean is CompressKV's LongBench "avg" (`eval.py --eval_avg`).
pub const COMPRESSKV_AVG_DATASETS: [&str; 16] = [
    "narrativeqa",
    "qasper",
    "multifieldqa_en",
    "hotpotqa",
    "2wikimqa",
    "musique",
    "gov_report",
    "qmsum",
    "multi_news",
    "trec",
    "triviaqa",
    "samsum",
    "passage_count",
    "passage_retrieval_en",
    "lcc",
    "repobench-p",
];

/// The datasets whose prediction is cut to its first line before scoring
/// (`prediction.lstrip('\n').split('\n')[0]`).
pub const FIRST_LINE_DATASETS: [&str; 4] = ["trec", "triviaqa", "samsum", "lsht"];

/// Strip a LongBench-E `_e` suffix (`hotpotqa_e` → `hotpotqa`).
fn base_dataset(name: &str) -> &str {
    name.strip_suffix("_e").unwrap_or(name)
}

/// `dataset2metric` of eval.py. Accepts LongBench-E names (`_e` suffix).
pub fn metric_for_dataset(name: &str) -> Result<Metric, MetricError> {
    Ok(match base_dataset(name) {
        "narrativeqa" | "qasper" | "multifieldqa_en" | "hotpotqa" | "2wikimqa" | "musique"
        | "triviaqa" => Metric::QaF1,
        "multifieldqa_zh" => Metric::QaF1Zh,
        "dureader" | "vcsum" => Metric::RougeZh,
        "gov_report" | "qmsum" | "multi_news" | "samsum" => Metric::RougeL,
        "trec" | "lsht" => Metric::Classification,
        "passage_retrieval_en" => Metric::Retrieval,
        "passage_retrieval_zh" => Metric::RetrievalZh,
        "passage_count" => Metric::Count,
        "lcc" | "repobench-p" => Metric::CodeSim,
        _ => return Err(MetricError::UnknownDataset(name.to_string())),
    })
}

/// The prediction as eval.py scores it: for trec/triviaqa/samsum/lsht, leading newlines stripped
/// and cut at the first newline; unchanged otherwise.
pub fn preprocess_prediction<'a>(dataset: &str, prediction: &'a str) -> &'a str {
    if FIRST_LINE_DATASETS.contains(&base_dataset(dataset)) {
        prediction
            .trim_start_matches('\n')
            .split('\n')
            .next()
            .unwrap_or("")
    } else {
        prediction
    }
}

/// One sample's score as eval.py's `scorer` computes it: the dataset's preprocessing, then the max
/// over the ground-truth answers of the dataset's metric (0 when there are no answers). In `[0, 1]`.
///
/// Errors: an unknown dataset; a classification dataset (trec, lsht) without `all_classes`.
pub fn score_prediction(
    dataset: &str,
    prediction: &str,
    answers: &[String],
    all_classes: Option<&[String]>,
) -> Result<f64, MetricError> {
    let metric = metric_for_dataset(dataset)?;
    let classes = match (metric, all_classes) {
        (Metric::Classification, None) => {
            return Err(MetricError::MissingClasses(dataset.to_string()));
        }
        (_, c) => c.unwrap_or(&[]),
    };
    let prediction = preprocess_prediction(dataset, prediction);
    Ok(answers
        .iter()
        .map(|gt| metric.score(prediction, gt, classes))
        .fold(0.0, f64::max))
}

/// A dataset's reported score: `round(100 * mean(scores), 2)` (0 for no samples; upstream divides
/// by zero).
pub fn dataset_score(scores: &[f64]) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    py_round_2(100.0 * scores.iter().sum::<f64>() / scores.len() as f64)
}

/// LongBench-E's length bucket of a sample (`length` field, words/characters): `"0-4k"`, `"4-8k"`
/// or `"8k+"`.
pub fn length_bucket(length: u64) -> &'static str {
    if length < 4000 {
        "0-4k"
    } else if length < 8000 {
        "4-8k"
    } else {
        "8k+"
    }
}
