//! The LongBench runner behind `compresskv eval longbench`: every sample of every dataset is
//! prefilled once and answered by each contender from a compressed copy of that cache, scored
//! with the dataset's official metric and with the teacher-forced fidelity of the reference
//! answer; one JSON line per (sample, contender), resumable; then the per-dataset summary.
//! Long answers also get drift numbers: the KL per answer-position bin and how far each
//! free-running decode follows the full cache's greedy output.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{
    LongBenchConfig, LongBenchError, LongBenchSample, official_max_new_tokens, stops_at_newline,
    truncate_middle,
};
use crate::eval::fidelity::{POSITION_BINS, agreement, fidelity};
use crate::eval::metrics::{MetricError, dataset_score, metric_for_dataset, score_prediction};
use crate::eval::rows::{RowWriter, RowsError, read_rows};
use crate::eval::run::Contender;
use crate::generate::{
    CacheCompressor, GenerateError, GenerateOptions, compress_copy, decode, prefill,
    teacher_forced_logprobs,
};
use crate::loader::{LoadError, LoadedModel, TextTokenizer};

/// Why a LongBench run stopped; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    LongBench(#[from] LongBenchError),
    #[error(transparent)]
    Rows(#[from] RowsError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] LoadError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("{0}")]
    Input(String),
    #[error("{dataset} sample {index}: {source}")]
    Sample {
        dataset: String,
        index: usize,
        #[source]
        source: Box<RunError>,
    },
}

/// One jsonl row: one sample answered by one method at one budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub dataset: String,
    /// 0-based index of the sample in its jsonl file.
    pub sample: usize,
    /// Upstream `_id`, when the file has one.
    pub id: Option<String>,
    pub method: String,
    /// `None` for `full` (nothing is evicted, so no budget applies).
    pub budget: Option<usize>,
    /// Model and settings the row was made with; a resumed run must match them.
    pub settings: String,
    pub prediction: String,
    /// The official metric of the dataset, in [0, 1] (summaries report 100 × the mean).
    pub score: f64,
    pub metric: String,
    /// Mean log-prob of the reference answer tokens, compressed − full (nats).
    pub delta_logprob: Option<f64>,
    /// Mean KL(full ‖ compressed) of the next-token distributions over the answer (nats).
    pub kl: Option<f64>,
    /// The same KL per answer-position bin ([`POSITION_BINS`]); absent in rows made before.
    #[serde(default)]
    pub kl_bins: Option<[Option<f64>; POSITION_BINS.len()]>,
    /// Leading generated tokens identical to the full cache's greedy output on this prompt.
    #[serde(default)]
    pub agree_prefix: Option<usize>,
    /// LCS F1 of the generated token ids against the full cache's (1 = the same output).
    #[serde(default)]
    pub agree_lcs: Option<f64>,
    pub answer_tokens: usize,
    pub prompt_tokens: usize,
    /// Whether the prompt was cut in the middle to the run's `max_length`.
    pub truncated: bool,
    pub new_tokens: usize,
    pub stop_reason: String,
    pub kv_bytes_full: usize,
    pub kv_bytes_kept: usize,
    pub prefill_ms: f64,
    pub compress_ms: f64,
    pub decode_ms: f64,
    pub teacher_forcing_ms: f64,
}

type Key = (String, usize, String, Option<usize>);

impl Row {
    fn key(&self) -> Key {
        (
            self.dataset.clone(),
            self.sample,
            self.method.clone(),
            self.budget,
        )
    }
}

/// One line of the summary.
#[derive(Debug, Serialize)]
pub struct SummaryRow {
    /// A dataset, or `mean` (the mean of the datasets' scores, when there are several).
    pub dataset: String,
    pub method: String,
    pub budget: Option<usize>,
    pub n: usize,
    /// 100 × mean score, rounded to 2 decimals as LongBench reports it.
    pub score: f64,
    pub delta_logprob: Option<f64>,
    pub kl: Option<f64>,
    /// Mean KL per answer-position bin ([`POSITION_BINS`]), over the rows whose answer reaches
    /// the bin.
    pub kl_bins: [Option<f64>; POSITION_BINS.len()],
    /// Mean reference-answer and generated lengths (tokens).
    pub answer_tokens: f64,
    pub new_tokens: f64,
    /// Mean leading tokens identical to the full cache's output, and mean LCS F1 against it.
    pub agree_prefix: Option<f64>,
    pub agree_lcs: Option<f64>,
    pub kv_bytes_kept: f64,
}

/// What a run evaluates.
pub struct LongBenchRun<'a> {
    pub config: &'a LongBenchConfig,
    /// Samples per dataset (the dataset name decides template and metric).
    pub samples: &'a [(String, Vec<LongBenchSample>)],
    pub contenders: &'a [Contender],
    /// Prompt limit in tokens (pred.py's middle truncation).
    pub max_length: usize,
    /// Model and settings of this run, stored in every row; resuming needs the same.
    pub settings: String,
}

impl LongBenchRun<'_> {
    /// Rows to make in all (samples × contenders), for progress bars.
    pub fn total(&self) -> usize {
        self.samples.iter().map(|(_, s)| s.len()).sum::<usize>() * self.contenders.len()
    }

    /// Runs every (sample, contender) not yet in `rows_path` and appends its row; then
    /// summarizes the file's rows of this run. `progress(rows, message)` reports rows made or
    /// skipped and what runs now.
    pub fn run(
        &self,
        loaded: &LoadedModel,
        rows_path: &Path,
        progress: &mut dyn FnMut(u64, &str),
    ) -> Result<Vec<SummaryRow>, RunError> {
        let ctx = loaded.spec.max_position_embeddings;
        for (ds, _) in self.samples {
            let max_new = max_new_tokens(self.config, ds)?;
            if self.max_length + max_new > ctx {
                return Err(RunError::Input(format!(
                    "--max-length {} plus the {max_new} new tokens of {ds} exceed the model's \
                     context of {ctx} tokens: lower --max-length",
                    self.max_length
                )));
            }
        }
        let rows: Vec<Row> = read_rows(rows_path)?;
        if let Some(r) = rows.iter().find(|r| r.settings != self.settings) {
            return Err(RunError::Input(format!(
                "{} holds rows made with other settings ({}) than this run ({}): use another \
                 --out, or the same settings to resume",
                rows_path.display(),
                r.settings,
                self.settings
            )));
        }
        let done: HashSet<Key> = rows.iter().map(Row::key).collect();
        let mut out = RowWriter::append(rows_path)?;
        let capture = self
            .contenders
            .iter()
            .filter_map(|c| c.compressor.as_ref().map(CacheCompressor::window))
            .max()
            .unwrap_or(0);
        let special_prefix = special_prefix(&loaded.tokenizer)?;
        for (ds, list) in self.samples {
            let max_new = max_new_tokens(self.config, ds)?;
            for (i, sample) in list.iter().enumerate() {
                let todo: Vec<&Contender> = self
                    .contenders
                    .iter()
                    .filter(|c| !done.contains(&(ds.clone(), i, c.method.clone(), c.budget)))
                    .collect();
                progress((self.contenders.len() - todo.len()) as u64, "");
                if todo.is_empty() {
                    continue;
                }
                let settings = SampleSettings {
                    max_length: self.max_length,
                    max_new,
                    capture,
                    special_prefix,
                    settings: &self.settings,
                };
                let one = SampleRun {
                    loaded,
                    config: self.config,
                    dataset: ds,
                    index: i,
                    sample,
                    settings: &settings,
                };
                one.run(&todo, progress, &mut |r| Ok(out.push(&r)?))
                    .map_err(|e| RunError::Sample {
                        dataset: ds.clone(),
                        index: i,
                        source: Box::new(e),
                    })?;
            }
        }
        drop(out);
        // From the file as written, so a resumed run sums exactly the same parsed numbers.
        Ok(summarize(
            &read_rows(rows_path)?,
            self.samples,
            self.contenders,
        ))
    }
}

/// Per-run settings a sample needs.
struct SampleSettings<'a> {
    max_length: usize,
    max_new: usize,
    /// Observation queries to capture at prefill (the largest window of the methods).
    capture: usize,
    special_prefix: usize,
    settings: &'a str,
}

/// One sample of one dataset.
struct SampleRun<'a> {
    loaded: &'a LoadedModel,
    config: &'a LongBenchConfig,
    dataset: &'a str,
    index: usize,
    sample: &'a LongBenchSample,
    settings: &'a SampleSettings<'a>,
}

impl SampleRun<'_> {
    /// One prefill, then every contender in `todo` from a compressed copy of it; each row goes
    /// to `emit` as soon as it is made (a killed run loses at most one row) and counts as one
    /// step of `progress`.
    fn run(
        &self,
        todo: &[&Contender],
        progress: &mut dyn FnMut(u64, &str),
        emit: &mut dyn FnMut(Row) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        let (loaded, ds, s) = (self.loaded, self.dataset, self.settings);
        let tok = &loaded.tokenizer;
        let mut sample = self.sample.clone();
        // The file name decides the template and metric (LongBench-E files keep the base name).
        sample.dataset = ds.to_string();
        let (ids, truncated, answer) = self.prompt(&sample)?;

        let model = &loaded.model;
        let pre = prefill(model, &ids, s.capture, s.max_new.max(answer.len()))?;
        let t = Instant::now();
        let full_lp =
            teacher_forced_logprobs(model, pre.cache.clone(), &pre.first_logits, &answer)?;
        let full_tf_ms = t.elapsed().as_secs_f64() * 1e3;
        let (first_logits, opts) = self.decode_options(&pre.first_logits)?;
        let metric = metric_for_dataset(ds)?;
        // The full cache's own greedy output, which every compressed decode is held against
        // (the `full` contender reuses it; a resumed run without it decodes it again).
        let full_out = decode(model, tok, pre.cache.clone(), &first_logits, &opts)?;

        for c in todo {
            let at = c.budget.map(|b| format!(" @{b}")).unwrap_or_default();
            progress(0, &format!("{ds} #{} {}{at}", self.index, c.method));
            // The full contender reuses the full cache's measurements: no copy of the cache.
            let (fid, tf_ms, kv_bytes_kept, compress_ms, out) = match &c.compressor {
                None => (
                    fidelity(&full_lp, &full_lp, &answer),
                    full_tf_ms,
                    pre.cache.bytes(),
                    0.0,
                    full_out.clone(),
                ),
                Some(comp) => {
                    let (cache, _, compress_ms) = compress_copy(model, &pre, Some(comp))?;
                    let t = Instant::now();
                    let lp =
                        teacher_forced_logprobs(model, cache.clone(), &pre.first_logits, &answer)?;
                    let tf_ms = t.elapsed().as_secs_f64() * 1e3;
                    let kept = cache.bytes();
                    let out = decode(model, tok, cache, &first_logits, &opts)?;
                    (
                        fidelity(&full_lp, &lp, &answer),
                        tf_ms,
                        kept,
                        compress_ms,
                        out,
                    )
                }
            };
            let agree = agreement(&full_out.token_ids, &out.token_ids);
            let score = score_prediction(
                ds,
                &out.text,
                &sample.answers,
                sample.all_classes.as_deref(),
            )?;
            emit(Row {
                dataset: ds.to_string(),
                sample: self.index,
                id: sample.id.clone(),
                method: c.method.clone(),
                budget: c.budget,
                settings: s.settings.to_string(),
                prediction: out.text,
                score,
                metric: metric.name().to_string(),
                delta_logprob: fid.map(|f| f.delta_logprob),
                kl: fid.map(|f| f.kl),
                kl_bins: fid.map(|f| f.kl_bins),
                agree_prefix: Some(agree.prefix),
                agree_lcs: Some(agree.lcs_f1),
                answer_tokens: answer.len(),
                prompt_tokens: pre.prompt_tokens,
                truncated,
                new_tokens: out.token_ids.len(),
                stop_reason: out.stop_reason.as_str().to_string(),
                kv_bytes_full: pre.kv_cache_bytes_full,
                kv_bytes_kept,
                prefill_ms: pre.prefill_ms,
                compress_ms,
                decode_ms: out.decode_ms,
                teacher_forcing_ms: tf_ms,
            })?;
            progress(1, "");
        }
        Ok(())
    }
}

impl SampleRun<'_> {
    /// The prompt's ids (truncated in the middle to the length limit, as LongBench's `pred.py`
    /// does), whether it was truncated, and the reference answer's ids for teacher forcing.
    fn prompt(&self, sample: &LongBenchSample) -> Result<(Vec<u32>, bool, Vec<u32>), RunError> {
        let s = self.settings;
        let tok = &self.loaded.tokenizer;
        let full_prompt = self.config.build_prompt(sample)?;
        let enc = |t: &str| -> Vec<u32> {
            tok.encode(t, false)
                .expect("the tokenizer encoded this text before")
        };
        let dec =
            |ids: &[u32]| -> String { tok.decode(ids).expect("ids from the tokenizer decode") };
        let full_len = tok.encode(&full_prompt, false)?.len() + s.special_prefix;
        let prompt = truncate_middle(&full_prompt, s.max_length, s.special_prefix, &enc, &dec);
        let truncated = full_len > s.max_length;
        let ids = tok.encode(&prompt, true)?;
        let answer = match sample.answers.first() {
            Some(ans) => answer_ids(tok, &ids, &prompt, ans, s.max_new)?,
            None => Vec::new(),
        };
        Ok((ids, truncated, answer))
    }

    /// The first step's logits and the decoding options: the model's end tokens, plus (as
    /// `pred.py` does for samsum) the newline token, with `min_length` forbidding every end
    /// token at the first step.
    fn decode_options(
        &self,
        first_logits: &[f32],
    ) -> Result<(Vec<f32>, GenerateOptions), RunError> {
        let mut eos = self.loaded.eos_ids();
        let mut first_logits = first_logits.to_vec();
        if stops_at_newline(self.dataset) {
            if let Some(&nl) = self.loaded.tokenizer.encode("\n", false)?.last() {
                eos.push(nl);
            }
            for &e in &eos {
                if let Some(l) = first_logits.get_mut(e as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let opts = GenerateOptions {
            max_new_tokens: self.settings.max_new,
            eos_ids: eos,
            ..Default::default()
        };
        Ok((first_logits, opts))
    }
}

/// The reference answer as the model would continue the prompt: tokenized together with the
/// prompt (so word-boundary tokens come out as in generation) with one space after an ASCII
/// prompt end such as "Answer:", cut to the dataset's generation length.
fn answer_ids(
    tok: &TextTokenizer,
    prompt_ids: &[u32],
    prompt: &str,
    answer: &str,
    max_new: usize,
) -> Result<Vec<u32>, LoadError> {
    let needs_space = prompt
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii() && !c.is_ascii_whitespace())
        && answer
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    let cont = if needs_space {
        format!(" {answer}")
    } else {
        answer.to_string()
    };
    let joint = tok.encode(&format!("{prompt}{cont}"), true)?;
    let mut ids = match joint.strip_prefix(prompt_ids) {
        Some(rest) => rest.to_vec(),
        // The prompt's last token merged with the answer: tokenize the answer on its own.
        None => tok.encode(&cont, false)?,
    };
    ids.truncate(max_new);
    Ok(ids)
}

/// Special tokens the tokenizer adds in front (a BOS): pred.py's truncation counts them.
fn special_prefix(tok: &TextTokenizer) -> Result<usize, LoadError> {
    let with = tok.encode("a", true)?.len();
    let without = tok.encode("a", false)?.len();
    Ok(with.saturating_sub(without))
}

/// The generation length of `ds`: the config's, else the official one.
pub fn max_new_tokens(config: &LongBenchConfig, ds: &str) -> Result<usize, RunError> {
    config
        .max_new_tokens(ds)
        .or_else(|| official_max_new_tokens(ds))
        .ok_or_else(|| {
            RunError::Input(format!(
                "no generation length for dataset {ds} in dataset2maxlen.json"
            ))
        })
}

/// `dir` itself or `dir/data`, whichever holds jsonl files (both LongBench layouts).
pub fn find_data_dir(dir: &Path) -> Result<PathBuf, RunError> {
    if !dir.is_dir() {
        return Err(RunError::Input(format!(
            "--data {} is not a directory: give the directory of the LongBench jsonl files \
             (<dataset>.jsonl), e.g. shared/datasets/longbench-v1-minilongbench",
            dir.display()
        )));
    }
    for d in [dir.to_path_buf(), dir.join("data")] {
        if !jsonl_names(&d).is_empty() {
            return Ok(d);
        }
    }
    Err(RunError::Input(format!(
        "no .jsonl files in {} or {}/data: --data must hold LongBench files named <dataset>.jsonl",
        dir.display(),
        dir.display()
    )))
}

/// Stems of the `.jsonl` files in `dir`, sorted.
pub fn jsonl_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "jsonl" && p.is_file())
                .then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    v.sort();
    v
}

/// `explicit`, or the first THUDM `config` directory next to `data` or its parents.
pub fn find_config(
    explicit: Option<&Path>,
    data: &Path,
) -> Result<(LongBenchConfig, PathBuf), RunError> {
    if let Some(dir) = explicit {
        let c = LongBenchConfig::load(dir).map_err(|e| {
            RunError::Input(format!(
                "--config {}: expected THUDM/LongBench's config directory with \
                 dataset2prompt.json and dataset2maxlen.json ({e})",
                dir.display()
            ))
        })?;
        return Ok((c, dir.to_path_buf()));
    }
    let data = data.canonicalize().unwrap_or_else(|_| data.to_path_buf());
    for anc in data.ancestors().take(3) {
        for rel in [
            "config",
            "LongBench/config",
            "longbench-thudm/LongBench/config",
        ] {
            let dir = anc.join(rel);
            if dir.join("dataset2prompt.json").is_file() {
                return Ok((LongBenchConfig::load(&dir)?, dir));
            }
        }
    }
    Err(RunError::Input(format!(
        "no LongBench config (dataset2prompt.json, dataset2maxlen.json) found next to --data {}: \
         pass --config DIR, the LongBench/config directory of THUDM/LongBench (e.g. \
         shared/datasets/longbench-thudm/LongBench/config)",
        data.display()
    )))
}

/// Mean per dataset × method × budget over the rows of this run's samples and contenders, then
/// the mean over datasets (when several) for each method × budget that has every dataset.
fn summarize(
    rows: &[Row],
    samples: &[(String, Vec<LongBenchSample>)],
    contenders: &[Contender],
) -> Vec<SummaryRow> {
    let by_key: HashMap<Key, &Row> = rows.iter().map(|r| (r.key(), r)).collect();
    let mean_opt = |v: &[Option<f64>]| -> Option<f64> {
        let xs: Vec<f64> = v.iter().flatten().copied().collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    let mut out = Vec::new();
    for (ds, list) in samples {
        for c in contenders {
            let rs: Vec<&Row> = (0..list.len())
                .filter_map(|i| by_key.get(&(ds.clone(), i, c.method.clone(), c.budget)))
                .copied()
                .collect();
            if rs.is_empty() {
                continue;
            }
            let scores: Vec<f64> = rs.iter().map(|r| r.score).collect();
            let mean =
                |f: &dyn Fn(&Row) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / rs.len() as f64;
            out.push(SummaryRow {
                dataset: ds.clone(),
                method: c.method.clone(),
                budget: c.budget,
                n: rs.len(),
                score: dataset_score(&scores),
                delta_logprob: mean_opt(&rs.iter().map(|r| r.delta_logprob).collect::<Vec<_>>()),
                kl: mean_opt(&rs.iter().map(|r| r.kl).collect::<Vec<_>>()),
                kl_bins: std::array::from_fn(|b| {
                    mean_opt(
                        &rs.iter()
                            .map(|r| r.kl_bins.and_then(|k| k[b]))
                            .collect::<Vec<_>>(),
                    )
                }),
                answer_tokens: mean(&|r| r.answer_tokens as f64),
                new_tokens: mean(&|r| r.new_tokens as f64),
                agree_prefix: mean_opt(
                    &rs.iter()
                        .map(|r| r.agree_prefix.map(|p| p as f64))
                        .collect::<Vec<_>>(),
                ),
                agree_lcs: mean_opt(&rs.iter().map(|r| r.agree_lcs).collect::<Vec<_>>()),
                kv_bytes_kept: mean(&|r| r.kv_bytes_kept as f64),
            });
        }
    }
    if samples.len() > 1 {
        for c in contenders {
            let per: Vec<&SummaryRow> = out
                .iter()
                .filter(|s| s.method == c.method && s.budget == c.budget)
                .collect();
            if per.len() != samples.len() {
                continue;
            }
            let k = per.len() as f64;
            let opt = |f: &dyn Fn(&SummaryRow) -> Option<f64>| {
                mean_opt(&per.iter().map(|s| f(s)).collect::<Vec<_>>())
            };
            let row = SummaryRow {
                dataset: "mean".into(),
                method: c.method.clone(),
                budget: c.budget,
                n: per.iter().map(|s| s.n).sum(),
                score: (per.iter().map(|s| s.score).sum::<f64>() / k * 100.0).round() / 100.0,
                delta_logprob: opt(&|s| s.delta_logprob),
                kl: opt(&|s| s.kl),
                kl_bins: std::array::from_fn(|b| opt(&|s| s.kl_bins[b])),
                answer_tokens: per.iter().map(|s| s.answer_tokens).sum::<f64>() / k,
                new_tokens: per.iter().map(|s| s.new_tokens).sum::<f64>() / k,
                agree_prefix: opt(&|s| s.agree_prefix),
                agree_lcs: opt(&|s| s.agree_lcs),
                kv_bytes_kept: per.iter().map(|s| s.kv_bytes_kept).sum::<f64>() / k,
            };
            out.push(row);
        }
    }
    out
}
