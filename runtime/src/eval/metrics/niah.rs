//! The Needle-in-a-Haystack and passkey scores, in percent: rouge_score's ROUGE-1 recall (with
//! and without stemming), the peer baseline's first-line recall and passkey exact match.

use super::pycompat::{clipped_overlap, first_number};
use super::stem::porter_stem;

/// rouge_score's tokenizer (`rouge_score.tokenize.tokenize`): lowercase (full Unicode), every run
/// of characters outside `[a-z0-9]` becomes a separator, words longer than 3 characters are
/// Porter-stemmed when `stem` is set. Accented letters are separators (`café` → `caf`), as
/// upstream.
pub fn rouge_tokenize(text: &str, stem: bool) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| {
            if stem && t.len() > 3 {
                porter_stem(t)
            } else {
                t.to_string()
            }
        })
        .collect()
}

/// Clipped unigram recall in percent: `Σ_w min(count_ref(w), count_pred(w)) / |ref|`; 0 for an
/// empty reference (rouge_score divides by `max(|ref|, 1)`).
fn clipped_recall(pred: &[String], reference: &[String]) -> f64 {
    if reference.is_empty() {
        return 0.0;
    }
    // Same float operations as rouge_score: recall first, then `* 100`.
    (clipped_overlap(reference, pred) as f64 / reference.len() as f64) * 100.0
}

/// ROUGE-1 recall of `reference` in `pred`, in percent, without stemming: the fraction of the
/// reference's lowercase `[a-z0-9]+` words (with multiplicity) found in the prediction, counts
/// clipped (a word twice in the reference needs to be twice in the prediction).
pub fn rouge1_recall(pred: &str, reference: &str) -> f64 {
    clipped_recall(
        &rouge_tokenize(pred, false),
        &rouge_tokenize(reference, false),
    )
}

/// The CompressKV paper's needle score, in percent:
/// `RougeScorer(['rouge1'], use_stemmer=True).score(reference, pred)['rouge1'].recall * 100`
/// (in `needle/run_needle_in_haystack.py` the reference is the full needle sentence and `pred`
/// the stripped response).
pub fn rouge1_recall_stemmed(pred: &str, reference: &str) -> f64 {
    clipped_recall(
        &rouge_tokenize(pred, true),
        &rouge_tokenize(reference, true),
    )
}

/// The first line of an answer: leading whitespace stripped, then everything up to the first
/// newline.
pub fn first_line(answer: &str) -> &str {
    answer.trim_start().split('\n').next().unwrap_or("")
}

/// The peer baseline's needle score (`shared/notes/peer-baseline.md`), in percent: the recall of
/// the lowercase alphanumeric (`[a-z0-9]+`) words of `reference` in the **first line** of
/// `answer` ([`first_line`]), counts clipped — [`rouge1_recall`] on the first line.
///
/// Clipped counts, not a set: the SRH reference written for the same comparison
/// (`shared/reference/gemma-3-270m/srh_reference.json`) defines its recall as a "clipped multiset"
/// and all 54 of its stored recalls agree with it (a set, or "reference words present", does not),
/// and the peer's needle table only has values reachable with the 12-word denominator of
/// "eat a sandwich and sit in Dolores Park on a sunny day" ("a" twice).
pub fn peer_needle_recall(answer: &str, reference: &str) -> f64 {
    rouge1_recall(first_line(answer), reference)
}

/// Passkey score: 100 if the first number in `answer` ([`first_number`]) is exactly `key`
/// (string equality, so "012345" ≠ "12345"), else 0.
pub fn passkey_exact(answer: &str, key: &str) -> f64 {
    if first_number(answer) == Some(key) {
        100.0
    } else {
        0.0
    }
}

/// RULER's `string_match_all`, in percent: the share of `references` that occur in `answer`,
/// case-insensitively, as substrings (RULER's score for its NIAH tasks: with several expected
/// values, each found one counts). 0 for no references.
pub fn ruler_string_match_all(answer: &str, references: &[String]) -> f64 {
    if references.is_empty() {
        return 0.0;
    }
    let answer = answer.to_lowercase();
    let found = references
        .iter()
        .filter(|r| answer.contains(&r.to_lowercase()))
        .count();
    100.0 * found as f64 / references.len() as f64
}

/// [`ruler_string_match_all`] counting whole values only: an occurrence counts when no ASCII
/// letter or digit touches it on either side, so `9644344` is not found in `96443444444`. RULER
/// has no such score; next to RULER's it shows how much of the substring match credits values
/// the answer does not state.
pub fn ruler_whole_match_all(answer: &str, references: &[String]) -> f64 {
    if references.is_empty() {
        return 0.0;
    }
    let answer = answer.to_lowercase();
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let found = references
        .iter()
        .filter(|r| {
            let r = r.to_lowercase();
            !r.is_empty()
                && answer.match_indices(&r).any(|(i, m)| {
                    !alnum(answer[..i].chars().next_back())
                        && !alnum(answer[i + m.len()..].chars().next())
                })
        })
        .count();
    100.0 * found as f64 / references.len() as f64
}
