//! LongBench v1 prompts as THUDM/LongBench `pred.py` builds them: the per-dataset template
//! (`config/dataset2prompt.json`), middle truncation to the model's limit, which datasets skip
//! the chat template, and the generation lengths (`config/dataset2maxlen.json`). Scoring is in
//! [`super::metrics`].
//!
//! Tokenization comes in as closures (`encode` without special tokens, `decode` its inverse).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod run;

/// Tokenizer without special tokens.
pub type Encode<'a> = &'a dyn Fn(&str) -> Vec<u32>;
/// Inverse of [`Encode`].
pub type Decode<'a> = &'a dyn Fn(&[u32]) -> String;

/// Errors of LongBench loading and prompt building.
#[derive(Debug, thiserror::Error)]
pub enum LongBenchError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file or jsonl line does not parse as expected.
    #[error("{}:{line}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number (1 for a whole-file JSON).
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// No template for the dataset.
    #[error("no prompt template for dataset `{0}`")]
    UnknownDataset(String),
    /// The template is not a valid `str.format` string for `{context}` / `{input}`.
    #[error("bad template: {0}")]
    BadTemplate(String),
}

/// One LongBench v1 record (`{"input", "context", "answers", "length", "dataset", "language",
/// "all_classes", "_id"}`); other fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongBenchSample {
    /// The question / query (may be empty).
    pub input: String,
    /// The long document.
    pub context: String,
    /// Reference answers; a prediction scores the max over them.
    pub answers: Vec<String>,
    /// Word count (en) / character count (zh), for LongBench-E buckets.
    #[serde(default)]
    pub length: u64,
    /// Dataset name.
    pub dataset: String,
    /// `"en"` or `"zh"`.
    #[serde(default)]
    pub language: String,
    /// Label set of the classification datasets (trec, lsht).
    #[serde(default)]
    pub all_classes: Option<Vec<String>>,
    /// Upstream id.
    #[serde(default, rename = "_id")]
    pub id: Option<String>,
}

/// Read a LongBench jsonl file; errors name the 1-based line.
pub fn load_samples(path: impl AsRef<Path>) -> Result<Vec<LongBenchSample>, LongBenchError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| LongBenchError::Io {
        path: path.into(),
        source,
    })?;
    parse_samples(&text, path)
}

/// Parse LongBench jsonl text (`origin` names it in errors); blank lines are skipped.
pub fn parse_samples(text: &str, origin: &Path) -> Result<Vec<LongBenchSample>, LongBenchError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line).map_err(|e| LongBenchError::Json {
                path: origin.into(),
                line: i + 1,
                message: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

/// `dataset2maxlen.json` of THUDM/LongBench (max new tokens per dataset).
pub fn official_max_new_tokens(dataset: &str) -> Option<usize> {
    Some(match dataset.strip_suffix("_e").unwrap_or(dataset) {
        "narrativeqa" | "qasper" | "dureader" | "samsum" => 128,
        "multifieldqa_en" | "multifieldqa_zh" | "trec" | "lsht" | "lcc" | "repobench-p" => 64,
        "hotpotqa"
        | "2wikimqa"
        | "musique"
        | "triviaqa"
        | "passage_count"
        | "passage_retrieval_en"
        | "passage_retrieval_zh" => 32,
        "gov_report" | "qmsum" | "multi_news" | "vcsum" => 512,
        _ => return None,
    })
}

/// Whether `pred.py` wraps the prompt in the model's chat template: not for trec, triviaqa,
/// samsum, lsht, lcc, repobench-p ("chat models are better off without build prompts on these
/// tasks").
pub fn uses_chat_template(dataset: &str) -> bool {
    !matches!(
        dataset.strip_suffix("_e").unwrap_or(dataset),
        "trec" | "triviaqa" | "samsum" | "lsht" | "lcc" | "repobench-p"
    )
}

/// Whether generation also stops at a newline (`pred.py` adds the newline token to the EOS ids
/// for samsum, with `min_length = context + 1`, i.e. at least one new token).
pub fn stops_at_newline(dataset: &str) -> bool {
    dataset.strip_suffix("_e").unwrap_or(dataset) == "samsum"
}

/// The templates and generation lengths of a LongBench `config` directory.
#[derive(Debug, Clone)]
pub struct LongBenchConfig {
    prompts: HashMap<String, String>,
    max_new_tokens: HashMap<String, usize>,
}

impl LongBenchConfig {
    /// Read `dataset2prompt.json` and `dataset2maxlen.json` from `config_dir` (e.g.
    /// `shared/datasets/longbench-thudm/LongBench/config`).
    pub fn load(config_dir: impl AsRef<Path>) -> Result<Self, LongBenchError> {
        let dir = config_dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|text| (text, path.clone()))
                .map_err(|source| LongBenchError::Io { path, source })
        };
        let (prompts, prompts_path) = read("dataset2prompt.json")?;
        let (maxlen, maxlen_path) = read("dataset2maxlen.json")?;
        Ok(LongBenchConfig {
            prompts: parse_json(&prompts, &prompts_path)?,
            max_new_tokens: parse_json(&maxlen, &maxlen_path)?,
        })
    }

    /// The config from the texts of `dataset2prompt.json` and `dataset2maxlen.json` (`origin`
    /// names them in errors).
    pub fn from_json(prompts: &str, maxlen: &str, origin: &Path) -> Result<Self, LongBenchError> {
        Ok(LongBenchConfig {
            prompts: parse_json(prompts, origin)?,
            max_new_tokens: parse_json(maxlen, origin)?,
        })
    }

    /// The template of a dataset (`_e` suffix accepted).
    pub fn template(&self, dataset: &str) -> Result<&str, LongBenchError> {
        let base = dataset.strip_suffix("_e").unwrap_or(dataset);
        self.prompts
            .get(dataset)
            .or_else(|| self.prompts.get(base))
            .map(String::as_str)
            .ok_or_else(|| LongBenchError::UnknownDataset(dataset.to_string()))
    }

    /// Max new tokens of a dataset (`_e` suffix accepted).
    pub fn max_new_tokens(&self, dataset: &str) -> Option<usize> {
        let base = dataset.strip_suffix("_e").unwrap_or(dataset);
        self.max_new_tokens
            .get(dataset)
            .or_else(|| self.max_new_tokens.get(base))
            .copied()
    }

    /// `dataset2prompt[sample.dataset].format(**sample)` (before truncation and chat template).
    pub fn build_prompt(&self, sample: &LongBenchSample) -> Result<String, LongBenchError> {
        format_template(
            self.template(&sample.dataset)?,
            &sample.context,
            &sample.input,
        )
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, LongBenchError> {
    serde_json::from_str(text).map_err(|e| LongBenchError::Json {
        path: path.into(),
        line: e.line(),
        message: e.to_string(),
    })
}

/// Python `template.format(context=..., input=...)`: one pass over the template, so a `{input}`
/// inside the context stays as it is; `{{` / `}}` are literal braces; any other field, or an
/// unmatched brace, is an error (KeyError / ValueError upstream).
pub fn format_template(
    template: &str,
    context: &str,
    input: &str,
) -> Result<String, LongBenchError> {
    let mut out = String::with_capacity(template.len() + context.len() + input.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(LongBenchError::BadTemplate(
                "single '}' encountered in format string".into(),
            ));
        } else {
            let end = tail.find('}').ok_or_else(|| {
                LongBenchError::BadTemplate("expected '}' before end of string".into())
            })?;
            match &tail[1..end] {
                "context" => out.push_str(context),
                "input" => out.push_str(input),
                other => {
                    return Err(LongBenchError::BadTemplate(format!(
                        "unknown field {{{other}}}"
                    )));
                }
            }
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `pred.py`'s truncation: if the prompt has more than `max_length` tokens, keep the first and the
/// last `max_length / 2` tokens, decoded separately and concatenated ("truncate in the middle,
/// since the left and right side may contain crucial instructions").
///
/// Upstream counts the special tokens the HF tokenizer adds (a Llama BOS) and drops them when
/// decoding; pass their number as `special_prefix` (1 for a BOS-adding tokenizer, 0 otherwise) to
/// reproduce it exactly: the first half then holds `max_length / 2 - special_prefix` text tokens.
pub fn truncate_middle(
    prompt: &str,
    max_length: usize,
    special_prefix: usize,
    encode: Encode<'_>,
    decode: Decode<'_>,
) -> String {
    let ids = encode(prompt);
    if ids.len() + special_prefix <= max_length {
        return prompt.to_string();
    }
    let half = max_length / 2;
    let head = half.saturating_sub(special_prefix).min(ids.len());
    let tail_start = ids.len().saturating_sub(half).max(head);
    let mut out = decode(&ids[..head]);
    out.push_str(&decode(&ids[tail_start..]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_single_pass() {
        let t = "Doc: {context}\nQ: {input}\nA:";
        assert_eq!(
            format_template(t, "has {input} inside", "why?").unwrap(),
            "Doc: has {input} inside\nQ: why?\nA:"
        );
        assert_eq!(
            format_template("{{x}} {context}", "c", "").unwrap(),
            "{x} c"
        );
        assert!(format_template("{other}", "c", "i").is_err());
        assert!(format_template("a } b", "c", "i").is_err());
        assert!(format_template("a { b", "c", "i").is_err());
        assert_eq!(format_template("{context}{input}", "a", "b").unwrap(), "ab");
    }

    #[test]
    fn truncation_keeps_both_ends() {
        let enc = |s: &str| -> Vec<u32> { s.split(' ').map(|w| w.parse().unwrap()).collect() };
        let dec = |ids: &[u32]| -> String { ids.iter().map(|i| format!("{i} ")).collect() };
        let prompt = (0..10).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        assert_eq!(truncate_middle(&prompt, 10, 0, &enc, &dec), prompt);
        assert_eq!(truncate_middle(&prompt, 6, 0, &enc, &dec), "0 1 2 7 8 9 ");
        // With a BOS counted upstream: 10 + 1 > 10 -> truncated; first half loses one token.
        assert_eq!(
            truncate_middle(&prompt, 10, 1, &enc, &dec),
            "0 1 2 3 5 6 7 8 9 "
        );
    }

    #[test]
    fn dataset_tables() {
        assert!(!uses_chat_template("lcc"));
        assert!(uses_chat_template("hotpotqa"));
        assert!(stops_at_newline("samsum"));
        assert_eq!(official_max_new_tokens("gov_report"), Some(512));
        assert_eq!(official_max_new_tokens("hotpotqa_e"), Some(32));
        assert_eq!(official_max_new_tokens("x"), None);
    }

    /// Against the official config and the LongBench samples in shared/, when present.
    #[test]
    fn shared_config_and_samples() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|p| p.join("shared/datasets"))
            .chain(std::iter::once(PathBuf::from("/work/shared/datasets")))
            .find(|p| p.join("longbench-thudm").exists());
        let Some(base) = base else {
            eprintln!("shared datasets not found; skipped");
            return;
        };
        let cfg_dir = base.join("longbench-thudm/LongBench/config");
        let cfg = LongBenchConfig::load(&cfg_dir).unwrap();
        for d in super::super::metrics::LONGBENCH_DATASETS {
            assert_eq!(cfg.max_new_tokens(d), official_max_new_tokens(d), "{d}");
            let t = cfg.template(d).unwrap();
            assert!(t.contains("{context}"), "{d}");
        }
        assert!(cfg.template("narrativeqa").unwrap().contains("asconcisely"));
        let samples =
            load_samples(base.join("longbench-v1-minilongbench/data/passage_count.jsonl")).unwrap();
        assert!(!samples.is_empty());
        let p = cfg.build_prompt(&samples[0]).unwrap();
        assert!(p.contains(&samples[0].context));
        let trec = load_samples(base.join("longbench-v1-minilongbench/data/trec.jsonl")).unwrap();
        assert!(trec[0].all_classes.as_ref().is_some_and(|c| !c.is_empty()));
    }
}
