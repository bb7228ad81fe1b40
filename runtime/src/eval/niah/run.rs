//! The NIAH runner behind `compresskv eval niah`: the prompt grid (lengths × depths × needles
//! or passkey samples), every contender decoded from one prefill per prompt, one JSON line per
//! answer (resumable), and the summary per method × budget.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::sample_seed;
use super::{
    Haystack, LONGBENCH_QA_DATASETS, Needle, NiahBuilder, NiahError, NiahSample, PaperOptions,
    Protocol, RulerWords, Task,
};
use crate::eval::fidelity::agreement;
use crate::eval::rows::{RowWriter, RowsError, read_rows};
use crate::eval::run::{Contender, run_contenders};
use crate::generate::{GenerateError, GenerateOptions};
use crate::loader::LoadedModel;
use crate::press::Compressor;
use crate::store;

/// Why a NIAH run stopped.
#[derive(Debug, thiserror::Error)]
pub enum NiahRunError {
    #[error(transparent)]
    Niah(#[from] NiahError),
    #[error(transparent)]
    Rows(#[from] RowsError),
    #[error("length {length} depth {depth}: {source}")]
    Generate {
        length: usize,
        depth: f64,
        #[source]
        source: GenerateError,
    },
    #[error("length {length} depth {depth}, {method}: {message}")]
    Remote {
        length: usize,
        depth: f64,
        method: String,
        message: String,
    },
    #[error("fetching the haystack: {0} (or pass --haystack DIR)")]
    Fetch(Box<store::FetchError>),
    #[error(
        "length {length} depth {depth}: the prompt ({prompt} tokens) and its {new} new tokens \
         exceed the model's context of {context} tokens; use shorter --lengths"
    )]
    ContextTooShort {
        length: usize,
        depth: f64,
        prompt: usize,
        new: usize,
        context: usize,
    },
}

impl From<store::FetchError> for NiahRunError {
    fn from(e: store::FetchError) -> Self {
        NiahRunError::Fetch(Box::new(e))
    }
}

/// One answer: what `eval niah` writes per (method, budget, length, depth, sample).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NiahRow {
    pub task: String,
    pub protocol: String,
    pub method: String,
    /// `None` for the full cache.
    pub budget: Option<usize>,
    pub length: usize,
    pub depth: f64,
    pub sample: usize,
    pub seed: Option<u64>,
    pub reference: String,
    pub answer: String,
    pub score: f64,
    pub prompt_tokens: usize,
    pub needle_token_start: usize,
    pub prefill_ms: f64,
    pub compress_ms: f64,
    pub decode_ms: f64,
    pub kv_cache_bytes_full: usize,
    pub kv_cache_bytes: usize,
}

type RowKey = (String, Option<usize>, usize, u64, usize);

impl NiahRow {
    /// RULER rows: [`metrics::ruler_whole_match_all`] of the answer against the expected values
    /// (the reference, joined with `", "`), computed from the row so that older rows have it
    /// too; `None` for the other protocols.
    ///
    /// [`metrics::ruler_whole_match_all`]: crate::eval::metrics::ruler_whole_match_all
    pub fn whole_score(&self) -> Option<f64> {
        (self.protocol == "ruler").then(|| {
            let values: Vec<String> = self.reference.split(", ").map(String::from).collect();
            crate::eval::metrics::ruler_whole_match_all(&self.answer, &values)
        })
    }

    fn key(&self) -> RowKey {
        row_key(
            &self.method,
            self.budget,
            self.length,
            self.depth,
            self.sample,
        )
    }
}

fn row_key(
    method: &str,
    budget: Option<usize>,
    length: usize,
    depth: f64,
    sample: usize,
) -> RowKey {
    (method.to_string(), budget, length, depth.to_bits(), sample)
}

/// A summary line: mean score of one method×budget (over every length, depth and sample).
#[derive(Serialize, Debug, Clone)]
pub struct SummaryRow {
    pub method: String,
    pub budget: Option<usize>,
    pub n: usize,
    pub mean_score: f64,
    /// Mean score per length, in the order of the run's lengths.
    pub per_length: Vec<(usize, f64)>,
    /// Mean score relative to the full cache on the same prompts (percent).
    pub pct_of_full: Option<f64>,
    pub mean_kv_cache_bytes: f64,
    /// RULER rows: the mean [`NiahRow::whole_score`], overall and per length (absent for the
    /// other tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_whole_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_per_length: Option<Vec<(usize, f64)>>,
    /// Mean word-level LCS F1 of the answers against the full cache's answers on the same
    /// prompts (1 = the same text): shows a long answer (several values) that drifts away from
    /// the full cache's even where the score does not move. `None` without full-cache rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agree_with_full: Option<f64>,
}

/// The row name of a task (`needle`, `passkey`, or the RULER task's name).
pub fn task_name(task: Task) -> &'static str {
    match task {
        Task::Needle => "needle",
        Task::Passkey => "passkey",
        Task::Ruler(t) => t.name(),
    }
}

/// The rows file of a task in an output directory: `niah-needle.jsonl`, `niah-passkey.jsonl`,
/// `ruler-<task>.jsonl`.
pub fn rows_file_name(task: Task) -> String {
    match task {
        Task::Ruler(t) => format!("ruler-{}.jsonl", t.name()),
        _ => format!("niah-{}.jsonl", task_name(task)),
    }
}

/// `noise`, `longbench:PATH` (the `context` documents of LongBench jsonl: a file, or a directory
/// whose [`LONGBENCH_QA_DATASETS`] are read), `leval:PATH` (the `input` documents of L-Eval
/// jsonl: a file or a directory), a directory of `.txt` files, or (`None`) the fetched essays,
/// fetched now if missing.
pub fn resolve_haystack(
    arg: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<Haystack, NiahRunError> {
    match arg {
        Some("noise") => Ok(Haystack::noise()),
        Some(a) if a.starts_with("longbench:") => {
            let path = &a["longbench:".len()..];
            let only = Path::new(path).is_dir().then_some(LONGBENCH_QA_DATASETS);
            Ok(Haystack::from_jsonl_documents(path, "context", only)?)
        }
        Some(a) if a.starts_with("leval:") => Ok(Haystack::from_jsonl_documents(
            &a["leval:".len()..],
            "input",
            None,
        )?),
        Some(dir) => Ok(Haystack::from_dir(dir)?),
        None => {
            let dir = store::haystack_dir();
            if !dir.is_dir() {
                store::fetch_haystack(progress)?;
            }
            Ok(Haystack::from_dir(&dir)?)
        }
    }
}

/// The prompt grid of a run.
pub struct NiahGrid<'a> {
    pub task: Task,
    /// `Peer`, `Paper` (needles) or `Landmark` (passkeys).
    pub protocol: Protocol,
    pub lengths: &'a [usize],
    pub depths: &'a [f64],
    /// One sample per needle (needle task).
    pub needles: &'a [Needle],
    /// Passkey and RULER samples per (length, depth), and their base seed.
    pub passkeys: usize,
    pub seed: u64,
    /// RULER's word lists (RULER tasks that draw words).
    pub ruler_words: Option<&'a RulerWords>,
}

impl NiahGrid<'_> {
    /// Every prompt with its sample index; the same seed gives the same prompts.
    pub fn samples(
        &self,
        loaded: &LoadedModel,
        haystack: &Haystack,
    ) -> Result<Vec<(usize, NiahSample)>, NiahError> {
        let builder = NiahBuilder::for_model(haystack, loaded);
        let mut out = Vec::new();
        for &length in self.lengths {
            for &depth in self.depths {
                match self.task {
                    Task::Needle => {
                        for (i, n) in self.needles.iter().enumerate() {
                            let s = match self.protocol {
                                Protocol::Paper => {
                                    builder.paper_needle(n, length, depth, &PaperOptions::default())
                                }
                                _ => builder.peer_needle(n, length, depth),
                            };
                            out.push((i, s?));
                        }
                    }
                    Task::Passkey => {
                        for i in 0..self.passkeys {
                            let seed = sample_seed(self.seed.wrapping_add(i as u64), length, depth);
                            let s = match self.protocol {
                                Protocol::Landmark => builder.landmark_passkey(length, depth, seed),
                                _ => builder.peer_passkey(length, depth, seed),
                            };
                            out.push((i, s?));
                        }
                    }
                    Task::Ruler(t) => {
                        for i in 0..self.passkeys {
                            let seed = t.seed(sample_seed(
                                self.seed.wrapping_add(i as u64),
                                length,
                                depth,
                            ));
                            out.push((i, builder.ruler(t, self.ruler_words, length, depth, seed)?));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What a row keeps of one contender's answer, local or remote.
struct Answered {
    text: String,
    prompt_tokens: usize,
    prefill_ms: f64,
    compress_ms: f64,
    decode_ms: f64,
    kv_cache_bytes_full: usize,
    kv_cache_bytes: usize,
}

/// One answer decoded elsewhere (see [`RemoteAnswer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteOutput {
    pub text: String,
    pub prompt_tokens: usize,
    /// Wall time of the whole request (prefill, compression and decode), milliseconds.
    pub total_ms: f64,
    pub kv_cache_bytes: usize,
    pub kv_cache_bytes_full: usize,
}

/// Answers from outside this process: `eval niah --server` sends each (prompt, contender) to a
/// server speaking the completions API as token ids with greedy decoding, so the same prompts
/// and scoring check the served path against the offline one.
pub trait RemoteAnswer {
    /// Greedy continuation of `prompt_ids` (at most `max_new_tokens`, stopping at EOS) with
    /// the KV cache compressed by `method` at `budget` (`None`: the full cache).
    fn answer(
        &self,
        prompt_ids: &[u32],
        method: &str,
        budget: Option<usize>,
        max_new_tokens: usize,
    ) -> Result<RemoteOutput, String>;
}

/// Runs every (prompt, contender) not yet in `rows_path`, appending one row each, and returns
/// the file's rows for these prompts (earlier runs' other methods included).
/// `progress(message)` is called once per prompt before it runs. With `remote`, the answers
/// come from it (one request per contender; a row's `prefill_ms` is then the whole request's
/// time and `compress_ms`/`decode_ms` are 0) and the local model only builds the prompts.
#[allow(clippy::too_many_arguments)]
pub fn run_niah(
    loaded: &LoadedModel,
    task: Task,
    samples: &[(usize, NiahSample)],
    contenders: &[Contender],
    rows_path: &Path,
    remote: Option<&dyn RemoteAnswer>,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<NiahRow>, NiahRunError> {
    // Before any work: a prompt that cannot be answered inside the context fails now, not hours in.
    let context = loaded.spec.max_position_embeddings;
    for (_, s) in samples {
        if s.prompt_ids.len() + s.max_new_tokens > context {
            return Err(NiahRunError::ContextTooShort {
                length: s.length,
                depth: s.depth,
                prompt: s.prompt_ids.len(),
                new: s.max_new_tokens,
                context,
            });
        }
    }
    let mut rows: Vec<NiahRow> = read_rows(rows_path)?;
    let done: HashSet<RowKey> = rows.iter().map(NiahRow::key).collect();
    let mut out = RowWriter::append(rows_path)?;
    let eos = loaded.eos_ids();
    for (idx, s) in samples {
        progress(&format!("length {} depth {}", s.length, s.depth));
        let todo: Vec<Contender<&Compressor>> = contenders
            .iter()
            .filter(|c| !done.contains(&row_key(&c.method, c.budget, s.length, s.depth, *idx)))
            .map(Contender::borrowed)
            .collect();
        if todo.is_empty() {
            continue;
        }
        let outs = match remote {
            Some(r) => todo
                .iter()
                .map(|c| {
                    let o = r
                        .answer(&s.prompt_ids, &c.method, c.budget, s.max_new_tokens)
                        .map_err(|message| NiahRunError::Remote {
                            length: s.length,
                            depth: s.depth,
                            method: c.method.clone(),
                            message,
                        })?;
                    Ok(Answered {
                        text: o.text,
                        prompt_tokens: o.prompt_tokens,
                        prefill_ms: o.total_ms,
                        compress_ms: 0.0,
                        decode_ms: 0.0,
                        kv_cache_bytes_full: o.kv_cache_bytes_full,
                        kv_cache_bytes: o.kv_cache_bytes,
                    })
                })
                .collect::<Result<Vec<_>, NiahRunError>>()?,
            None => {
                let opts = GenerateOptions {
                    max_new_tokens: s.max_new_tokens,
                    eos_ids: eos.clone(),
                    ..Default::default()
                };
                run_contenders(
                    &loaded.model,
                    &loaded.tokenizer,
                    &s.prompt_ids,
                    &todo,
                    &opts,
                )
                .map_err(|source| NiahRunError::Generate {
                    length: s.length,
                    depth: s.depth,
                    source,
                })?
                .into_iter()
                .map(|o| Answered {
                    text: o.text,
                    prompt_tokens: o.prompt_tokens,
                    prefill_ms: o.prefill_ms,
                    compress_ms: o.compress_ms,
                    decode_ms: o.decode_ms,
                    kv_cache_bytes_full: o.kv_cache_bytes_full,
                    kv_cache_bytes: o.kv_cache_bytes,
                })
                .collect()
            }
        };
        for (c, o) in todo.iter().zip(outs) {
            let row = NiahRow {
                task: task_name(task).into(),
                protocol: format!("{:?}", s.protocol).to_lowercase(),
                method: c.method.clone(),
                budget: c.budget,
                length: s.length,
                depth: s.depth,
                sample: *idx,
                seed: s.seed,
                reference: s.score_reference.clone(),
                score: s.score(&o.text),
                answer: o.text,
                prompt_tokens: o.prompt_tokens,
                needle_token_start: s.needle_token_start,
                prefill_ms: o.prefill_ms,
                compress_ms: o.compress_ms,
                decode_ms: o.decode_ms,
                kv_cache_bytes_full: o.kv_cache_bytes_full,
                kv_cache_bytes: o.kv_cache_bytes,
            };
            out.push(&row)?;
            rows.push(row);
        }
    }
    // Rows of other lengths, depths or samples (earlier runs) are left out.
    let wanted: HashSet<(usize, u64, usize)> = samples
        .iter()
        .map(|(idx, s)| (s.length, s.depth.to_bits(), *idx))
        .collect();
    Ok(rows
        .into_iter()
        .filter(|r| wanted.contains(&(r.length, r.depth.to_bits(), r.sample)))
        .collect())
}

/// Mean score per method × budget (registry order, a `method+variant` right after its method),
/// per length, and relative to the full cache on the same prompts.
pub fn summarize(rows: &[NiahRow], lengths: &[usize]) -> Vec<SummaryRow> {
    let mut groups: BTreeMap<(usize, String, Option<usize>), Vec<&NiahRow>> = BTreeMap::new();
    let order = |m: &str| {
        let base = m.split('+').next().unwrap_or(m);
        crate::press::REGISTRY
            .iter()
            .position(|(n, _)| *n == base)
            .map_or(usize::MAX, |i| 2 * i + usize::from(base != m))
    };
    for r in rows {
        groups
            .entry((order(&r.method), r.method.clone(), r.budget))
            .or_default()
            .push(r);
    }
    let mean = |v: &[&NiahRow]| v.iter().map(|r| r.score).sum::<f64>() / v.len().max(1) as f64;
    let full: Vec<&NiahRow> = rows.iter().filter(|r| r.method == "full").collect();
    groups
        .into_iter()
        .map(|((_, method, budget), v)| {
            let per_length = lengths
                .iter()
                .map(|&len| {
                    let g: Vec<&NiahRow> = v.iter().copied().filter(|r| r.length == len).collect();
                    (len, mean(&g))
                })
                .collect();
            // % of full on the same prompts only.
            let keys: HashSet<(usize, u64, usize)> = v
                .iter()
                .map(|r| (r.length, r.depth.to_bits(), r.sample))
                .collect();
            let f: Vec<&NiahRow> = full
                .iter()
                .copied()
                .filter(|r| keys.contains(&(r.length, r.depth.to_bits(), r.sample)))
                .collect();
            let fm = mean(&f);
            let full_answer: HashMap<(usize, u64, usize), &str> = f
                .iter()
                .map(|r| ((r.length, r.depth.to_bits(), r.sample), r.answer.as_str()))
                .collect();
            let words = |t: &str| t.split_whitespace().map(String::from).collect::<Vec<_>>();
            let agree: Vec<f64> = v
                .iter()
                .filter_map(|r| {
                    let fa = full_answer.get(&(r.length, r.depth.to_bits(), r.sample))?;
                    Some(agreement(&words(fa), &words(&r.answer)).lcs_f1)
                })
                .collect();
            let whole = |rows: &[&NiahRow]| -> Option<f64> {
                let w: Vec<f64> = rows.iter().filter_map(|r| r.whole_score()).collect();
                (!w.is_empty() && w.len() == rows.len())
                    .then(|| w.iter().sum::<f64>() / w.len() as f64)
            };
            let mean_whole_score = whole(&v);
            let whole_per_length = mean_whole_score.map(|_| {
                lengths
                    .iter()
                    .map(|&len| {
                        let g: Vec<&NiahRow> =
                            v.iter().copied().filter(|r| r.length == len).collect();
                        (len, whole(&g).unwrap_or(0.0))
                    })
                    .collect()
            });
            SummaryRow {
                mean_whole_score,
                whole_per_length,
                n: v.len(),
                mean_score: mean(&v),
                per_length,
                pct_of_full: (!f.is_empty() && fm > 0.0).then(|| 100.0 * mean(&v) / fm),
                mean_kv_cache_bytes: v.iter().map(|r| r.kv_cache_bytes as f64).sum::<f64>()
                    / v.len() as f64,
                agree_with_full: (!agree.is_empty())
                    .then(|| agree.iter().sum::<f64>() / agree.len() as f64),
                method,
                budget,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, budget: Option<usize>, length: usize, depth: f64, score: f64) -> NiahRow {
        NiahRow {
            task: "needle".into(),
            protocol: "peer".into(),
            method: method.into(),
            budget,
            length,
            depth,
            sample: 0,
            seed: None,
            reference: String::new(),
            answer: String::new(),
            score,
            prompt_tokens: length,
            needle_token_start: 0,
            prefill_ms: 0.0,
            compress_ms: 0.0,
            decode_ms: 0.0,
            kv_cache_bytes_full: 100,
            kv_cache_bytes: 10,
        }
    }

    #[test]
    fn summary_means_per_length_and_relative_to_full_on_the_same_prompts() {
        let rows = vec![
            row("full", None, 1024, 0.0, 100.0),
            row("full", None, 1024, 50.0, 50.0),
            row("full", None, 2048, 0.0, 100.0),
            row("snapkv", Some(64), 1024, 0.0, 50.0),
            row("snapkv", Some(64), 1024, 50.0, 25.0),
        ];
        let s = summarize(&rows, &[1024, 2048]);
        assert_eq!(s[0].method, "full");
        assert_eq!(s[0].n, 3);
        assert!((s[0].mean_score - 250.0 / 3.0).abs() < 1e-9);
        let snap = s.iter().find(|r| r.method == "snapkv").unwrap();
        assert_eq!(snap.per_length[0], (1024, 37.5));
        assert!(snap.per_length[1].1.is_nan() || snap.per_length[1].1 == 0.0);
        // Full on the same two prompts averages 75: 37.5 / 75 = 50%.
        assert!((snap.pct_of_full.unwrap() - 50.0).abs() < 1e-9);
    }

    /// Each answer is held against the full cache's answer on the same prompt (word LCS F1):
    /// "a b c d" vs "a x c d" is 3/4, an identical answer 1; a prompt the full cache did not
    /// answer is left out.
    #[test]
    fn answers_agree_with_the_full_cache_on_the_same_prompt() {
        let mut rows = vec![
            row("full", None, 1024, 0.0, 100.0),
            row("full", None, 1024, 50.0, 100.0),
            row("snapkv", Some(64), 1024, 0.0, 100.0),
            row("snapkv", Some(64), 1024, 50.0, 100.0),
            row("snapkv", Some(64), 2048, 50.0, 100.0),
        ];
        for (r, a) in rows
            .iter_mut()
            .zip(["a b c d", "e f", "a x c d", "e f", "zzz"])
        {
            r.answer = a.into();
        }
        let s = summarize(&rows, &[1024, 2048]);
        assert_eq!(s[0].agree_with_full, Some(1.0));
        let snap = s.iter().find(|r| r.method == "snapkv").unwrap();
        assert!((snap.agree_with_full.unwrap() - (0.75 + 1.0) / 2.0).abs() < 1e-12);
        assert_eq!(
            summarize(&rows[2..], &[1024])
                .last()
                .unwrap()
                .agree_with_full,
            None
        );
    }

    #[test]
    fn ruler_rows_have_a_whole_value_score() {
        let mut rows = vec![
            row("full", None, 1024, 0.0, 100.0),
            row("full", None, 2048, 0.0, 100.0),
        ];
        for (r, answer) in rows.iter_mut().zip([": 1234567.", ": 12345678"]) {
            r.protocol = "ruler".into();
            r.reference = "1234567, 7654321".into();
            r.answer = answer.into();
            r.score = 50.0;
        }
        let s = summarize(&rows, &[1024, 2048]);
        assert_eq!(s[0].mean_whole_score, Some(25.0));
        assert_eq!(s[0].whole_per_length, Some(vec![(1024, 50.0), (2048, 0.0)]));
        // Needle rows have none, and their JSON does not mention it.
        let n = summarize(&[row("full", None, 1024, 0.0, 100.0)], &[1024]);
        assert_eq!(n[0].mean_whole_score, None);
        assert!(!serde_json::to_string(&n[0]).unwrap().contains("whole"));
    }

    #[test]
    fn rows_round_trip_through_the_rows_file() {
        let dir = std::env::temp_dir().join(format!("ckv-niah-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("rows.jsonl");
        let _ = std::fs::remove_file(&p);
        let mut w = RowWriter::append(&p).unwrap();
        w.push(&row("full", None, 1024, 0.0, 100.0)).unwrap();
        let back: Vec<NiahRow> = read_rows(&p).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].key(), row("full", None, 1024, 0.0, 1.0).key());
    }
}
