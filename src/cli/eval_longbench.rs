//! `compresskv eval longbench`: LongBench v1 samples with the official templates, truncation,
//! generation lengths and metrics, every method × budget decoded from one prefill per sample,
//! plus the teacher-forced fidelity of each compressed cache against the full cache.
//!
//! One jsonl row per (dataset, sample, method, budget) is appended (and flushed) as soon as it
//! is known, so a killed run resumes where it stopped; the summary is computed from the file.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use compresskv_runtime::eval::fidelity::fidelity;
use compresskv_runtime::eval::longbench::{
    LongBenchConfig, LongBenchSample, load_samples, official_max_new_tokens, stops_at_newline,
    truncate_middle,
};
use compresskv_runtime::eval::metrics::{dataset_score, metric_for_dataset, score_prediction};
use compresskv_runtime::generate::{
    CacheCompressor, GenerateOptions, compress_copy, decode, prefill, teacher_forced_logprobs,
};
use compresskv_runtime::loader::{LoadedModel, TextTokenizer, load_model};
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::press::{Compressor, method_names};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::press_args::PressTuning;
use super::table::{Table, bytes};

#[derive(Args, Debug)]
pub struct LongbenchArgs {
    /// Directory of LongBench jsonl files, `<dataset>.jsonl` directly in it or under `data/`
    /// (e.g. shared/datasets/longbench-v1-minilongbench).
    #[arg(long)]
    pub data: PathBuf,
    /// Datasets, comma-separated (e.g. hotpotqa,trec); default: every `<dataset>.jsonl` found.
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// THUDM/LongBench `config` directory (dataset2prompt.json, dataset2maxlen.json); default:
    /// looked up next to --data (`config/`, `LongBench/config/`, `longbench-thudm/LongBench/config/`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model id (e.g. google/gemma-3-270m), HF model directory, or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Methods, comma-separated; `full` runs once per sample (no budget).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "full,streamingllm,snapkv,pyramidkv,adakv,compresskv"
    )]
    pub methods: Vec<String>,
    /// Mean KV entries kept per compressed layer, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    pub budgets: Vec<usize>,
    /// First N samples of each dataset (default: all).
    #[arg(long)]
    pub max_samples: Option<usize>,
    /// Prompt limit in tokens: longer prompts keep their first and last halves (pred.py's
    /// middle truncation).
    #[arg(long, default_value_t = 4096)]
    pub max_length: usize,
    /// Output directory; rows go to `<out>/longbench.jsonl` (existing rows are kept and skipped).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub tuning: PressTuning,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One jsonl row: one sample answered by one method at one budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    dataset: String,
    /// 0-based index of the sample in its jsonl file.
    sample: usize,
    /// Upstream `_id`, when the file has one.
    id: Option<String>,
    method: String,
    /// `None` for `full` (nothing is evicted, so no budget applies).
    budget: Option<usize>,
    /// Model and settings the row was made with; a resumed run must match them.
    settings: String,
    prediction: String,
    /// The official metric of the dataset, in [0, 1] (summaries report 100 × the mean).
    score: f64,
    metric: String,
    /// Mean log-prob of the reference answer tokens, compressed − full (nats).
    delta_logprob: Option<f64>,
    /// Mean KL(full ‖ compressed) of the next-token distributions over the answer (nats).
    kl: Option<f64>,
    answer_tokens: usize,
    prompt_tokens: usize,
    /// Whether the prompt was cut in the middle to --max-length.
    truncated: bool,
    new_tokens: usize,
    stop_reason: String,
    kv_bytes_full: usize,
    kv_bytes_kept: usize,
    prefill_ms: f64,
    compress_ms: f64,
    decode_ms: f64,
    teacher_forcing_ms: f64,
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

/// One method at one budget (`full`: no budget, no compressor).
struct Combo {
    method: String,
    budget: Option<usize>,
    compressor: Option<Compressor>,
}

/// One line of the summary.
#[derive(Debug, Serialize)]
struct SummaryRow {
    /// A dataset, or `mean` (the mean of the datasets' scores, when there are several).
    dataset: String,
    method: String,
    budget: Option<usize>,
    n: usize,
    /// 100 × mean score, rounded to 2 decimals as LongBench reports it.
    score: f64,
    delta_logprob: Option<f64>,
    kl: Option<f64>,
    kv_bytes_kept: f64,
}

pub fn run(device: &super::DeviceArgs, a: LongbenchArgs) -> anyhow::Result<()> {
    let t_start = Instant::now();
    let device = device.runtime()?;
    let data_dir = find_data_dir(&a.data)?;
    let available = jsonl_names(&data_dir);
    let datasets: Vec<String> = if a.datasets.is_empty() {
        available.clone()
    } else {
        dedup(a.datasets.iter().map(|d| d.trim().to_string()))
    };
    for ds in &datasets {
        let p = data_dir.join(format!("{ds}.jsonl"));
        if !p.is_file() {
            bail!(
                "{} does not exist; the datasets in {} are: {}",
                p.display(),
                data_dir.display(),
                available.join(", ")
            );
        }
        metric_for_dataset(ds).with_context(|| format!("--datasets {ds}"))?;
    }
    let (config, config_dir) = find_config(a.config.as_deref(), &a.data)?;
    let methods = dedup(a.methods.iter().map(|m| m.trim().to_string()));
    let known = method_names();
    for m in &methods {
        if !known.contains(&m.as_str()) {
            bail!(
                "unknown method `{m}` in --methods; available: {}",
                known.join(", ")
            );
        }
    }
    let budgets = dedup(a.budgets.iter().copied());
    if methods.iter().any(|m| m != "full") && budgets.is_empty() {
        bail!("--budgets is empty: give at least one KV budget (e.g. --budgets 64,128,256)");
    }

    let mut samples: Vec<(String, Vec<LongBenchSample>)> = Vec::new();
    for ds in &datasets {
        let mut s = load_samples(data_dir.join(format!("{ds}.jsonl")))?;
        if let Some(n) = a.max_samples {
            s.truncate(n);
        }
        samples.push((ds.clone(), s));
    }

    let lm = load_model(&a.model, &device)?;
    let mut combos = Vec::new();
    for m in &methods {
        if m == "full" {
            combos.push(Combo {
                method: m.clone(),
                budget: None,
                compressor: None,
            });
            continue;
        }
        for &b in &budgets {
            let c = a
                .tuning
                .compressor(&lm, m, BudgetSpec::Entries(b))
                .with_context(|| format!("method {m} at budget {b}"))?;
            combos.push(Combo {
                method: m.clone(),
                budget: Some(b),
                compressor: Some(c),
            });
        }
    }
    let capture = combos
        .iter()
        .filter_map(|c| c.compressor.as_ref().map(CacheCompressor::window))
        .max()
        .unwrap_or(0);
    let ctx = lm.spec.max_position_embeddings;
    for (ds, _) in &samples {
        let max_new = max_new_tokens(&config, ds)?;
        if a.max_length + max_new > ctx {
            bail!(
                "--max-length {} plus the {max_new} new tokens of {ds} exceed the model's context \
                 of {ctx} tokens: lower --max-length",
                a.max_length
            );
        }
    }

    let settings = format!(
        "model={} max_length={} profile={} window={:?} kernel={:?} srh_heads={:?} mix={:?} \
         union={:?} error_weight={:?} sliding={:?}",
        lm.id,
        a.max_length,
        a.tuning.profile,
        a.tuning.window,
        a.tuning.kernel,
        a.tuning.srh_heads,
        a.tuning.mix,
        a.tuning.union,
        a.tuning.error_weight,
        a.tuning.sliding
    );
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("creating --out {}", a.out.display()))?;
    let path = a.out.join("longbench.jsonl");
    let rows = load_rows(&path)?;
    if let Some(r) = rows.iter().find(|r| r.settings != settings) {
        bail!(
            "{} holds rows made with other settings ({}) than this run ({}): use another --out, \
             or the same settings to resume",
            path.display(),
            r.settings,
            settings
        );
    }
    let done: HashSet<Key> = rows.iter().map(Row::key).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;

    let total: usize = samples.iter().map(|(_, s)| s.len()).sum::<usize>() * combos.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}",
    )?);
    let special_prefix = special_prefix(&lm.tokenizer)?;
    for (ds, list) in &samples {
        let max_new = max_new_tokens(&config, ds)?;
        for (i, sample) in list.iter().enumerate() {
            let todo: Vec<&Combo> = combos
                .iter()
                .filter(|c| !done.contains(&(ds.clone(), i, c.method.clone(), c.budget)))
                .collect();
            bar.inc((combos.len() - todo.len()) as u64);
            if todo.is_empty() {
                continue;
            }
            bar.set_message(format!("{ds} #{i}"));
            run_sample(
                &lm,
                &config,
                ds,
                i,
                sample,
                &todo,
                &SampleSettings {
                    max_length: a.max_length,
                    max_new,
                    capture,
                    special_prefix,
                    settings: &settings,
                },
                &mut |method, budget| {
                    bar.set_message(format!(
                        "{ds} #{i} {method}{}",
                        budget.map(|b| format!(" @{b}")).unwrap_or_default()
                    ))
                },
                &mut |r| {
                    let mut line = serde_json::to_string(&r)?;
                    line.push('\n');
                    file.write_all(line.as_bytes())
                        .and_then(|_| file.flush())
                        .with_context(|| format!("writing {}", path.display()))?;
                    bar.inc(1);
                    Ok(())
                },
            )
            .with_context(|| format!("{ds} sample {i}"))?;
        }
    }
    bar.finish_and_clear();
    drop(file);

    // From the file as written, so a resumed run sums exactly the same parsed numbers.
    let summary = summarize(&load_rows(&path)?, &samples, &combos);
    if a.json {
        super::print_json(&serde_json::json!({
            "out": path,
            "model": lm.id,
            "config": config_dir,
            "max_length": a.max_length,
            "wall_s": t_start.elapsed().as_secs_f64(),
            "rows": summary,
        }))?;
    } else {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        let t = Table::new()
            .col("dataset", |s: &SummaryRow| s.dataset.clone())
            .col("method", |s| s.method.clone())
            .col("budget", |s| {
                s.budget.map_or("-".to_string(), |b| b.to_string())
            })
            .col("n", |s| s.n.to_string())
            .col("score", |s| format!("{:.2}", s.score))
            .col("Δlogprob", |s| opt(s.delta_logprob))
            .col("KL", |s| opt(s.kl))
            .col("KV kept", |s| bytes(s.kv_bytes_kept.round() as usize));
        println!("{}", t.render(&summary));
        eprintln!(
            "rows: {} ({:.0} s)",
            path.display(),
            t_start.elapsed().as_secs_f64()
        );
    }
    Ok(())
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

/// One prefill, then every combo in `todo` from a compressed copy of it; each row goes to `emit`
/// as soon as it is made (a killed run loses at most one row).
#[allow(clippy::too_many_arguments)]
fn run_sample(
    lm: &LoadedModel,
    config: &LongBenchConfig,
    ds: &str,
    index: usize,
    sample: &LongBenchSample,
    todo: &[&Combo],
    s: &SampleSettings<'_>,
    progress: &mut dyn FnMut(&str, Option<usize>),
    emit: &mut dyn FnMut(Row) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tok = &lm.tokenizer;
    let mut sample = sample.clone();
    // The file name decides the template and metric (LongBench-E files keep the base name).
    sample.dataset = ds.to_string();
    let full_prompt = config.build_prompt(&sample)?;
    let enc = |t: &str| -> Vec<u32> {
        tok.encode(t, false)
            .expect("the tokenizer encoded this text before")
    };
    let dec = |ids: &[u32]| -> String { tok.decode(ids).expect("ids from the tokenizer decode") };
    let full_len = tok.encode(&full_prompt, false)?.len() + s.special_prefix;
    let prompt = truncate_middle(&full_prompt, s.max_length, s.special_prefix, &enc, &dec);
    let truncated = full_len > s.max_length;
    let ids = tok.encode(&prompt, true)?;
    let answer = match sample.answers.first() {
        Some(ans) => answer_ids(tok, &ids, &prompt, ans, s.max_new)?,
        None => Vec::new(),
    };

    let model = &lm.model;
    let pre = prefill(model, &ids, s.capture, s.max_new.max(answer.len()))?;
    let t = Instant::now();
    let full_lp = teacher_forced_logprobs(model, pre.cache.clone(), &pre.first_logits, &answer);
    let full_tf_ms = t.elapsed().as_secs_f64() * 1e3;

    let mut eos = lm.spec.eos_token_ids.clone();
    eos.extend(tok.extra_eos_ids());
    // pred.py for samsum: the newline token ends generation too, but `min_length` forbids every
    // end token at the first step.
    let mut first_logits = pre.first_logits.clone();
    if stops_at_newline(ds) {
        if let Some(&nl) = tok.encode("\n", false)?.last() {
            eos.push(nl);
        }
        for &e in &eos {
            if let Some(l) = first_logits.get_mut(e as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    let opts = GenerateOptions {
        max_new_tokens: s.max_new,
        eos_ids: eos,
        ..Default::default()
    };
    let metric = metric_for_dataset(ds)?;

    for combo in todo {
        progress(&combo.method, combo.budget);
        let (cache, _, compress_ms) = compress_copy(
            model,
            &pre,
            combo.compressor.as_ref().map(|c| c as &dyn CacheCompressor),
        )?;
        let (fid, tf_ms) = if combo.compressor.is_none() {
            (fidelity(&full_lp, &full_lp, &answer), full_tf_ms)
        } else {
            let t = Instant::now();
            let lp = teacher_forced_logprobs(model, cache.clone(), &pre.first_logits, &answer);
            (
                fidelity(&full_lp, &lp, &answer),
                t.elapsed().as_secs_f64() * 1e3,
            )
        };
        let kv_bytes_kept = cache.bytes();
        let out = decode(model, tok, cache, &first_logits, &opts)?;
        let score = score_prediction(
            ds,
            &out.text,
            &sample.answers,
            sample.all_classes.as_deref(),
        )?;
        emit(Row {
            dataset: ds.to_string(),
            sample: index,
            id: sample.id.clone(),
            method: combo.method.clone(),
            budget: combo.budget,
            settings: s.settings.to_string(),
            prediction: out.text,
            score,
            metric: metric.name().to_string(),
            delta_logprob: fid.map(|f| f.delta_logprob),
            kl: fid.map(|f| f.kl),
            answer_tokens: answer.len(),
            prompt_tokens: pre.prompt_tokens,
            truncated,
            new_tokens: out.token_ids.len(),
            stop_reason: serde_json::to_value(&out.stop_reason)?
                .as_str()
                .unwrap_or_default()
                .to_string(),
            kv_bytes_full: pre.kv_cache_bytes_full,
            kv_bytes_kept,
            prefill_ms: pre.prefill_ms,
            compress_ms,
            decode_ms: out.decode_ms,
            teacher_forcing_ms: tf_ms,
        })?;
    }
    Ok(())
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
) -> anyhow::Result<Vec<u32>> {
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
fn special_prefix(tok: &TextTokenizer) -> anyhow::Result<usize> {
    let with = tok.encode("a", true)?.len();
    let without = tok.encode("a", false)?.len();
    Ok(with.saturating_sub(without))
}

fn max_new_tokens(config: &LongBenchConfig, ds: &str) -> anyhow::Result<usize> {
    config
        .max_new_tokens(ds)
        .or_else(|| official_max_new_tokens(ds))
        .with_context(|| format!("no generation length for dataset {ds} in dataset2maxlen.json"))
}

/// `dir` itself or `dir/data`, whichever holds jsonl files (both LongBench layouts).
fn find_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.is_dir() {
        bail!(
            "--data {} is not a directory: give the directory of the LongBench jsonl files \
             (<dataset>.jsonl), e.g. shared/datasets/longbench-v1-minilongbench",
            dir.display()
        );
    }
    for d in [dir.to_path_buf(), dir.join("data")] {
        if !jsonl_names(&d).is_empty() {
            return Ok(d);
        }
    }
    bail!(
        "no .jsonl files in {} or {}/data: --data must hold LongBench files named <dataset>.jsonl",
        dir.display(),
        dir.display()
    )
}

/// Stems of the `.jsonl` files in `dir`, sorted.
fn jsonl_names(dir: &Path) -> Vec<String> {
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

/// `--config`, or the first THUDM `config` directory next to `--data` or its parents.
fn find_config(explicit: Option<&Path>, data: &Path) -> anyhow::Result<(LongBenchConfig, PathBuf)> {
    if let Some(dir) = explicit {
        let c = LongBenchConfig::load(dir).with_context(|| {
            format!(
                "--config {}: expected THUDM/LongBench's config directory with \
                 dataset2prompt.json and dataset2maxlen.json",
                dir.display()
            )
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
    bail!(
        "no LongBench config (dataset2prompt.json, dataset2maxlen.json) found next to --data {}: \
         pass --config DIR, the LongBench/config directory of THUDM/LongBench (e.g. \
         shared/datasets/longbench-thudm/LongBench/config)",
        data.display()
    )
}

/// Rows already in `path`. A last line cut short by a killed run is dropped (and cut from the
/// file, so appending starts on a fresh line); a bad line anywhere else is an error.
fn load_rows(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut rows = Vec::new();
    let mut offset = 0usize;
    let n_lines = text.split_inclusive('\n').count();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len();
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Row>(line) {
            Ok(r) if line.ends_with('\n') => rows.push(r),
            Ok(r) => {
                rows.push(r);
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(b"\n"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Err(_) if i + 1 == n_lines && !line.ends_with('\n') => {
                eprintln!(
                    "note: dropping the half-written last line of {} (line {})",
                    path.display(),
                    i + 1
                );
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(start as u64))
                    .with_context(|| format!("truncating {}", path.display()))?;
            }
            Err(e) => bail!(
                "{}:{}: not a row of this command ({e}); move the file away or use another --out",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(rows)
}

/// Mean per dataset × method × budget over the rows of this run's samples and combos, then the
/// mean over datasets (when several) for each method × budget that has every dataset.
fn summarize(
    rows: &[Row],
    samples: &[(String, Vec<LongBenchSample>)],
    combos: &[Combo],
) -> Vec<SummaryRow> {
    let mut by_key: HashMap<Key, &Row> = HashMap::new();
    for r in rows {
        by_key.insert(r.key(), r);
    }
    let mean_opt = |v: &[Option<f64>]| -> Option<f64> {
        let xs: Vec<f64> = v.iter().flatten().copied().collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    let mut out = Vec::new();
    for (ds, list) in samples {
        for c in combos {
            let rs: Vec<&Row> = (0..list.len())
                .filter_map(|i| by_key.get(&(ds.clone(), i, c.method.clone(), c.budget)))
                .copied()
                .collect();
            if rs.is_empty() {
                continue;
            }
            let scores: Vec<f64> = rs.iter().map(|r| r.score).collect();
            out.push(SummaryRow {
                dataset: ds.clone(),
                method: c.method.clone(),
                budget: c.budget,
                n: rs.len(),
                score: dataset_score(&scores),
                delta_logprob: mean_opt(&rs.iter().map(|r| r.delta_logprob).collect::<Vec<_>>()),
                kl: mean_opt(&rs.iter().map(|r| r.kl).collect::<Vec<_>>()),
                kv_bytes_kept: rs.iter().map(|r| r.kv_bytes_kept as f64).sum::<f64>()
                    / rs.len() as f64,
            });
        }
    }
    if samples.len() > 1 {
        for c in combos {
            let per: Vec<&SummaryRow> = out
                .iter()
                .filter(|s| s.method == c.method && s.budget == c.budget)
                .collect();
            if per.len() != samples.len() {
                continue;
            }
            let k = per.len() as f64;
            let row = SummaryRow {
                dataset: "mean".into(),
                method: c.method.clone(),
                budget: c.budget,
                n: per.iter().map(|s| s.n).sum(),
                score: (per.iter().map(|s| s.score).sum::<f64>() / k * 100.0).round() / 100.0,
                delta_logprob: mean_opt(&per.iter().map(|s| s.delta_logprob).collect::<Vec<_>>()),
                kl: mean_opt(&per.iter().map(|s| s.kl).collect::<Vec<_>>()),
                kv_bytes_kept: per.iter().map(|s| s.kv_bytes_kept).sum::<f64>() / k,
            };
            out.push(row);
        }
    }
    out
}

/// `items` without repeats, first occurrence kept.
fn dedup<T: Eq + std::hash::Hash + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|x| seen.insert(x.clone()))
        .collect()
}
