//! `compresskv eval niah`: Needle-in-a-Haystack and passkey retrieval, every method on the
//! same prompts, one jsonl row per answer, a summary table and one heatmap per method×budget.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use compresskv_runtime::eval::niah::{
    Haystack, Needle, NiahBuilder, NiahSample, PaperOptions, load_needles, sample_seed,
};
use compresskv_runtime::eval::run::{Contender, run_contenders};
use compresskv_runtime::generate::{CacheCompressor, GenerateOptions};
use compresskv_runtime::loader::{LoadedModel, load_model};
use compresskv_runtime::press::Compressor;
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::store;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::press_args::PressTuning;
use super::table::Table;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NiahTask {
    Needle,
    Passkey,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NiahProtocol {
    /// The prompts and scoring of shared/notes/peer-baseline.md (HF transformers + kvpress).
    Peer,
    /// The CompressKV paper's needle script (template, 200-token buffer, stemmed ROUGE-1).
    Paper,
    /// The classic passkey prompt ("The pass key is N. Remember it. N is the pass key.").
    Landmark,
}

#[derive(Args, Debug, Clone)]
pub struct NiahArgs {
    /// Model id, HF directory or .gguf file.
    #[arg(long, default_value = "google/gemma-3-270m")]
    pub model: String,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "full,streamingllm,snapkv,pyramidkv,adakv,compresskv"
    )]
    pub methods: Vec<String>,
    /// KV entries kept per compressed layer (the full cache runs once, without a budget).
    #[arg(long, value_delimiter = ',', default_values_t = vec![64, 128, 256])]
    pub budgets: Vec<usize>,
    /// Prompt lengths in tokens (BOS and question included).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024, 2048, 4096])]
    pub lengths: Vec<usize>,
    /// Needle depths in percent of the haystack.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.0, 25.0, 50.0, 75.0, 100.0])]
    pub depths: Vec<f64>,
    /// Directory of .txt files read in name order and repeated as needed (default: the
    /// fetched Paul Graham essays), or `noise` for the repeated-noise haystack.
    #[arg(long)]
    pub haystack: Option<String>,
    /// Needles jsonl (`needle`, `question`, `answer`), one sample per needle
    /// (default: the peer baseline's San Francisco needle).
    #[arg(long)]
    pub needles: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "needle")]
    pub task: NiahTask,
    #[arg(long, value_enum, default_value = "peer")]
    pub protocol: NiahProtocol,
    /// Passkey samples per (length, depth).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Base seed of the passkeys: same seed ⇒ same prompts for every method.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory: niah-<task>.jsonl, summary.json, heatmaps.
    #[arg(long, default_value = "results/niah")]
    pub out: PathBuf,
    #[command(flatten)]
    pub tuning: PressTuning,
    /// Label the rows of compressing methods `METHOD+VARIANT` (e.g. `--srh-heads 1 --variant
    /// top1`), so runs with other settings can share an output directory and summary.
    #[arg(long)]
    pub variant: Option<String>,
    #[arg(long)]
    pub json: bool,
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

impl NiahRow {
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

type RowKey = (String, Option<usize>, usize, u64, usize);

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
    /// Mean score per length, in `--lengths` order.
    pub per_length: Vec<(usize, f64)>,
    /// Mean score relative to the full cache on the same prompts (percent).
    pub pct_of_full: Option<f64>,
    pub mean_kv_cache_bytes: f64,
}

pub fn run(device: &super::DeviceArgs, a: NiahArgs) -> anyhow::Result<()> {
    validate(&a)?;
    let device = device.runtime()?;
    let lm = load_model(&a.model, &device)?;
    let haystack = load_haystack(a.haystack.as_deref())?;
    let needles = match &a.needles {
        Some(p) => load_needles(p).with_context(|| format!("reading --needles {}", p.display()))?,
        None => vec![Needle::san_francisco()],
    };
    let samples = build_samples(&a, &lm, &haystack, &needles)?;

    let compressors = build_compressors(&a, &lm)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("creating --out {}", a.out.display()))?;
    let rows_path = a.out.join(format!("niah-{}.jsonl", task_name(a.task)));
    let mut rows = read_rows(&rows_path)?;
    let done: HashSet<RowKey> = rows.iter().map(NiahRow::key).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&rows_path)
        .with_context(|| format!("opening {}", rows_path.display()))?;

    let mut eos = lm.spec.eos_token_ids.clone();
    eos.extend(lm.tokenizer.extra_eos_ids());
    let bar = ProgressBar::new(samples.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} prompts {msg}",
    )?);
    if a.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    for (idx, s) in &samples {
        let todo: Vec<&MethodAtBudget> = compressors
            .iter()
            .filter(|(m, b, _)| !done.contains(&row_key(m, *b, s.length, s.depth, *idx)))
            .collect();
        bar.set_message(format!("length {} depth {}", s.length, s.depth));
        if !todo.is_empty() {
            let contenders: Vec<Contender<'_>> = todo
                .iter()
                .map(|(m, b, c)| Contender {
                    method: m.clone(),
                    budget: *b,
                    compressor: c.as_ref().map(|c| c as &dyn CacheCompressor),
                })
                .collect();
            let opts = GenerateOptions {
                max_new_tokens: s.max_new_tokens,
                eos_ids: eos.clone(),
                ..Default::default()
            };
            let outs = run_contenders(&lm.model, &lm.tokenizer, &s.prompt_ids, &contenders, &opts)
                .with_context(|| format!("length {} depth {}", s.length, s.depth))?;
            for (c, o) in contenders.iter().zip(outs) {
                let row = NiahRow {
                    task: task_name(a.task).into(),
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
                // One line per row, flushed: a killed run loses at most the prompt in flight.
                writeln!(file, "{}", serde_json::to_string(&row)?)?;
                file.flush()?;
                rows.push(row);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // The summary covers every method in the file (e.g. earlier `--variant` runs) on this
    // run's prompts; rows of other lengths, depths or samples are left out.
    let wanted: HashSet<(usize, u64, usize)> = samples
        .iter()
        .map(|(idx, s)| (s.length, s.depth.to_bits(), *idx))
        .collect();
    let rows: Vec<NiahRow> = rows
        .into_iter()
        .filter(|r| wanted.contains(&(r.length, r.depth.to_bits(), r.sample)))
        .collect();
    let summary = summarize(&rows, &a.lengths);
    let pngs = write_heatmaps(&a, &rows)?;
    let summary_json = serde_json::json!({
        "model": lm.id, "task": task_name(a.task), "protocol": format!("{:?}", a.protocol).to_lowercase(),
        "lengths": a.lengths, "depths": a.depths, "rows_file": rows_path,
        "heatmaps": pngs, "summary": summary,
    });
    std::fs::write(
        a.out.join(format!("summary-{}.json", task_name(a.task))),
        serde_json::to_string_pretty(&summary_json)?,
    )?;
    if a.json {
        super::print_json(&summary_json)?;
    } else {
        println!("{}", render_summary(&summary, &a.lengths, a.task));
        println!("rows: {}", rows_path.display());
        if !pngs.is_empty() {
            println!("heatmaps: {}", a.out.display());
        }
    }
    Ok(())
}

fn validate(a: &NiahArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!a.methods.is_empty(), "--methods is empty");
    anyhow::ensure!(!a.lengths.is_empty(), "--lengths is empty");
    anyhow::ensure!(!a.depths.is_empty(), "--depths is empty");
    for d in &a.depths {
        anyhow::ensure!(
            (0.0..=100.0).contains(d),
            "--depths must be percentages in 0..=100, got {d}"
        );
    }
    if a.methods.iter().any(|m| m != "full") {
        anyhow::ensure!(
            !a.budgets.is_empty(),
            "--budgets is empty but compressing methods were asked for"
        );
    }
    match (a.task, a.protocol) {
        (NiahTask::Needle, NiahProtocol::Landmark) => {
            anyhow::bail!("--protocol landmark is a passkey prompt: use it with --task passkey")
        }
        (NiahTask::Passkey, NiahProtocol::Paper) => {
            anyhow::bail!("--protocol paper is a needle prompt: use --protocol peer or landmark")
        }
        _ => Ok(()),
    }
}

fn task_name(t: NiahTask) -> &'static str {
    match t {
        NiahTask::Needle => "needle",
        NiahTask::Passkey => "passkey",
    }
}

/// `noise`, a directory, or the fetched essays (fetched now if missing).
pub fn load_haystack(arg: Option<&str>) -> anyhow::Result<Haystack> {
    match arg {
        Some("noise") => Ok(Haystack::noise()),
        Some(dir) => Haystack::from_dir(dir).with_context(|| format!("reading --haystack {dir}")),
        None => {
            let dir = store::haystack_dir();
            if !dir.is_dir() {
                store::fetch_haystack(&mut |l| eprintln!("  {l}"))?;
            }
            Haystack::from_dir(&dir).with_context(|| {
                format!(
                    "reading the fetched haystack {} (run `compresskv fetch haystack`)",
                    dir.display()
                )
            })
        }
    }
}

/// Every prompt of the grid with its sample index; the same seed gives the same prompts.
fn build_samples(
    a: &NiahArgs,
    lm: &LoadedModel,
    haystack: &Haystack,
    needles: &[Needle],
) -> anyhow::Result<Vec<(usize, NiahSample)>> {
    let builder = NiahBuilder::for_model(haystack, lm);
    let mut out = Vec::new();
    for &length in &a.lengths {
        for &depth in &a.depths {
            match a.task {
                NiahTask::Needle => {
                    for (i, n) in needles.iter().enumerate() {
                        let s = match a.protocol {
                            NiahProtocol::Paper => {
                                builder.paper_needle(n, length, depth, &PaperOptions::default())
                            }
                            _ => builder.peer_needle(n, length, depth),
                        };
                        out.push((i, s?));
                    }
                }
                NiahTask::Passkey => {
                    for i in 0..a.samples {
                        let seed = sample_seed(a.seed.wrapping_add(i as u64), length, depth);
                        let s = match a.protocol {
                            NiahProtocol::Landmark => builder.landmark_passkey(length, depth, seed),
                            _ => builder.peer_passkey(length, depth, seed),
                        };
                        out.push((i, s?));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One method at one budget: (row label, budget, compressor); `full` has neither.
type MethodAtBudget = (String, Option<usize>, Option<Compressor>);

/// `full` once without a budget, every other method per budget.
fn build_compressors(a: &NiahArgs, lm: &LoadedModel) -> anyhow::Result<Vec<MethodAtBudget>> {
    let mut out = Vec::new();
    for m in &a.methods {
        if m == "full" {
            out.push((m.clone(), None, None));
            continue;
        }
        let label = match &a.variant {
            Some(v) => format!("{m}+{v}"),
            None => m.clone(),
        };
        for &b in &a.budgets {
            let c = a
                .tuning
                .compressor(lm, m, BudgetSpec::Entries(b))
                .with_context(|| format!("--methods {m} at budget {b}"))?;
            out.push((label.clone(), Some(b), Some(c)));
        }
    }
    Ok(out)
}

/// Rows already written (resume). A torn last line (killed mid-write) is ignored.
pub fn read_rows(path: &Path) -> anyhow::Result<Vec<NiahRow>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut rows = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str(l) {
            Ok(r) => rows.push(r),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => anyhow::bail!(
                "{} line {}: not a NIAH row ({e}); delete the file or choose another --out",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(rows)
}

pub fn summarize(rows: &[NiahRow], lengths: &[usize]) -> Vec<SummaryRow> {
    let mut groups: BTreeMap<(usize, String, Option<usize>), Vec<&NiahRow>> = BTreeMap::new();
    // Registry order; a variant (`method+variant`) right after its method.
    let order = |m: &str| {
        let base = m.split('+').next().unwrap_or(m);
        compresskv_runtime::press::REGISTRY
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
            SummaryRow {
                n: v.len(),
                mean_score: mean(&v),
                per_length,
                pct_of_full: (!f.is_empty() && fm > 0.0).then(|| 100.0 * mean(&v) / fm),
                mean_kv_cache_bytes: v.iter().map(|r| r.kv_cache_bytes as f64).sum::<f64>()
                    / v.len() as f64,
                method,
                budget,
            }
        })
        .collect()
}

fn render_summary(summary: &[SummaryRow], lengths: &[usize], task: NiahTask) -> String {
    let mut t = Table::new()
        .col("method", |s: &SummaryRow| s.method.clone())
        .col("budget", |s| s.budget.map_or("-".into(), |b| b.to_string()));
    for &l in lengths {
        t = t.col(l.to_string(), move |s| {
            s.per_length
                .iter()
                .find(|(len, _)| *len == l)
                .map_or("-".into(), |(_, m)| format!("{m:.1}"))
        });
    }
    let mean = if task == NiahTask::Needle {
        "mean recall %"
    } else {
        "mean exact %"
    };
    t.col(mean, |s| format!("{:.1}", s.mean_score))
        .col("% of full", |s| {
            s.pct_of_full.map_or("-".into(), |p| format!("{p:.0}"))
        })
        .col("KV cache", |s| {
            super::table::bytes(s.mean_kv_cache_bytes as usize)
        })
        .col("n", |s| s.n.to_string())
        .render(summary)
}

/// One PNG per method×budget: mean score per (depth, length), like the paper's figures.
fn write_heatmaps(a: &NiahArgs, rows: &[NiahRow]) -> anyhow::Result<Vec<PathBuf>> {
    let mut groups: BTreeMap<(String, Option<usize>), Vec<&NiahRow>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.method.clone(), r.budget))
            .or_default()
            .push(r);
    }
    let mut paths = Vec::new();
    for ((method, budget), v) in groups {
        let values: Vec<Vec<f64>> = a
            .depths
            .iter()
            .map(|&d| {
                a.lengths
                    .iter()
                    .map(|&l| {
                        let g: Vec<f64> = v
                            .iter()
                            .filter(|r| r.length == l && r.depth == d)
                            .map(|r| r.score)
                            .collect();
                        if g.is_empty() {
                            f64::NAN
                        } else {
                            g.iter().sum::<f64>() / g.len() as f64
                        }
                    })
                    .collect()
            })
            .collect();
        let name = match budget {
            Some(b) => format!("{}-{method}-{b}.png", task_name(a.task)),
            None => format!("{}-{method}.png", task_name(a.task)),
        };
        let path = a.out.join(name);
        let title = match budget {
            Some(b) => format!("{method}, budget {b} ({})", task_name(a.task)),
            None => format!("{method} ({})", task_name(a.task)),
        };
        super::heatmap::heatmap_png(
            &path,
            &title,
            "context length (tokens)",
            "needle depth (%)",
            &a.lengths.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
            &a.depths.iter().map(|d| format!("{d}")).collect::<Vec<_>>(),
            &values,
            Some((0.0, 100.0)),
        )?;
        paths.push(path);
    }
    Ok(paths)
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

    #[test]
    fn a_torn_last_line_is_skipped_but_a_bad_middle_line_is_an_error() {
        let dir = std::env::temp_dir().join(format!("ckv-niah-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("rows.jsonl");
        let good = serde_json::to_string(&row("full", None, 1024, 0.0, 100.0)).unwrap();
        std::fs::write(&p, format!("{good}\n{{\"task\": \"nee")).unwrap();
        assert_eq!(read_rows(&p).unwrap().len(), 1);
        std::fs::write(&p, format!("garbage\n{good}\n")).unwrap();
        assert!(read_rows(&p).is_err());
    }
}
