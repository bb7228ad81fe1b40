//! `compresskv eval niah`: Needle-in-a-Haystack, passkey and RULER NIAH retrieval, every method
//! on the same prompts, one jsonl row per answer, a summary table and one heatmap per
//! method×budget (per RULER task).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use compresskv_runtime::eval::niah::run::{
    NiahGrid, NiahRow, RemoteAnswer, RemoteOutput, SummaryRow, rows_file_name, run_niah, summarize,
    task_name,
};
use compresskv_runtime::eval::niah::{
    Haystack, Needle, NiahSample, Protocol, RulerTask, RulerWords, Task, load_needles,
};
use compresskv_runtime::eval::run::contender_grid;
use compresskv_runtime::eval::verify::VerifyTask;
use compresskv_runtime::loader::{LoadedModel, load_model};
use compresskv_runtime::press::engine::BudgetSpec;
use indicatif::{ProgressBar, ProgressStyle};

use super::press_args::{Contenders, PressTuning};
use super::table::Table;

/// The needle and passkey tasks (`profile verify --task`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NiahTask {
    Needle,
    Passkey,
}

/// `eval niah --task`: the needle and passkey tasks, or RULER's.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalTask {
    /// A sentence hidden in the haystack, retrieved by a question.
    Needle,
    /// A 5-digit pass key.
    Passkey,
    /// RULER's NIAH tasks (`--ruler-tasks`): keys with values, scored by string match.
    Ruler,
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
    #[command(flatten)]
    pub contenders: Contenders,
    /// Prompt lengths in tokens (BOS and question included).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024, 2048, 4096])]
    pub lengths: Vec<usize>,
    /// Needle depths in percent of the haystack.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.0, 25.0, 50.0, 75.0, 100.0])]
    pub depths: Vec<f64>,
    /// Directory of .txt files read in name order and repeated as needed (default: the
    /// fetched Paul Graham essays); `noise` for the repeated-noise haystack;
    /// `longbench:PATH` for the documents of LongBench jsonl (a file, or a directory whose QA
    /// datasets narrativeqa, qasper, multifieldqa_en, hotpotqa, 2wikimqa and musique are read);
    /// `leval:PATH` for the documents of L-Eval jsonl (a file or a directory). RULER tasks
    /// use it where their config says `essay`; `noise` and `needle` haystacks are their own.
    #[arg(long)]
    pub haystack: Option<String>,
    /// Needles jsonl (`needle`, `question`, `answer`), one sample per needle
    /// (default: the peer baseline's San Francisco needle).
    #[arg(long)]
    pub needles: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "needle")]
    pub task: EvalTask,
    /// The RULER tasks of `--task ruler` (default: all eight).
    #[arg(long, value_delimiter = ',', value_parser = parse_ruler_task,
          value_name = "niah_single_1,…,niah_multiquery")]
    pub ruler_tasks: Option<Vec<RulerTask>>,
    /// RULER's data folder, with wonderwords/adjectivelist.txt and nounlist.txt (e.g.
    /// ../shared/datasets/ruler): the word lists of every RULER task but niah_multikey_3.
    #[arg(long, value_name = "DIR")]
    pub ruler_dir: Option<PathBuf>,
    /// Prompt protocol of the needle and passkey tasks (default: peer).
    #[arg(long, value_enum)]
    pub protocol: Option<NiahProtocol>,
    /// Passkey and RULER samples per (length, depth).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Base seed of the passkeys and RULER keys: same seed ⇒ same prompts for every method.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory: niah-<task>.jsonl (ruler-<task>.jsonl), summary-<task>.json, heatmaps.
    #[arg(long, default_value = "results/niah")]
    pub out: PathBuf,
    #[command(flatten)]
    pub tuning: PressTuning,
    /// Label the rows of compressing methods `METHOD+VARIANT` (e.g. `--srh-heads 1 --variant
    /// top1`), so runs with other settings can share an output directory and summary.
    #[arg(long)]
    pub variant: Option<String>,
    /// Answer through a running `compresskv serve` (e.g. http://127.0.0.1:8080) instead of in
    /// this process: each prompt goes to `/v1/completions` as token ids with greedy decoding
    /// and `kv_compression` set to the method and budget, scored as offline. The server's own
    /// flags (profile, press settings) rule; the model given here only builds the prompts and
    /// must be the server's.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Bearer key for `--server` (its `--api-key`).
    #[arg(long, requires = "server")]
    pub api_key: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `--server`: one completion request per (prompt, contender).
struct ServerAnswers {
    agent: ureq::Agent,
    /// `http://host:port`, no trailing slash.
    base: String,
    key: Option<String>,
}

impl ServerAnswers {
    fn new(base: &str, key: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        ServerAnswers {
            agent,
            base: base.trim_end_matches('/').to_string(),
            key,
        }
    }

    /// `req` with the `--api-key` bearer header, if one was given.
    fn authed<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.key {
            Some(k) => req.header("Authorization", format!("Bearer {k}")),
            None => req,
        }
    }

    /// The served model's id (`/v1/models`), or why the server cannot be used.
    fn model_id(&self) -> Result<String, String> {
        let url = format!("{}/v1/models", self.base);
        let mut r = self
            .authed(self.agent.get(&url))
            .call()
            .map_err(|e| format!("cannot reach {url}: {e} (is `compresskv serve` running?)"))?;
        let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        if r.status().as_u16() != 200 {
            return Err(format!("{url} answered {}: {body}", r.status()));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|_| format!("{url} did not answer JSON: {body}"))?;
        v["data"][0]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{url} lists no model: {body}"))
    }
}

impl RemoteAnswer for ServerAnswers {
    fn answer(
        &self,
        prompt_ids: &[u32],
        method: &str,
        budget: Option<usize>,
        max_new_tokens: usize,
    ) -> Result<RemoteOutput, String> {
        let body = serde_json::json!({
            "prompt": prompt_ids,
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "kv_compression": {"method": method, "budget": budget},
        });
        let url = format!("{}/v1/completions", self.base);
        let req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        let t = std::time::Instant::now();
        let mut r = self
            .authed(req)
            .send(body.to_string())
            .map_err(|e| format!("{url}: {e}"))?;
        let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        let total_ms = t.elapsed().as_secs_f64() * 1e3;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| format!("{url} did not answer JSON: {text}"))?;
        if r.status().as_u16() != 200 {
            let msg = v["error"]["message"].as_str().unwrap_or(&text);
            return Err(format!("the server answered {}: {msg}", r.status()));
        }
        let field = |k: &str| v["kv_compression"][k].as_u64().unwrap_or(0) as usize;
        Ok(RemoteOutput {
            text: v["choices"][0]["text"]
                .as_str()
                .ok_or_else(|| format!("no choices[0].text in {text}"))?
                .to_string(),
            prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize,
            total_ms,
            kv_cache_bytes: field("kv_cache_bytes"),
            kv_cache_bytes_full: field("kv_cache_bytes_full"),
        })
    }
}

pub(super) fn parse_ruler_task(s: &str) -> Result<RulerTask, String> {
    s.parse()
        .map_err(|e: compresskv_runtime::eval::niah::NiahError| e.to_string())
}

impl NiahArgs {
    /// The tasks this run does: one, or each RULER task.
    fn tasks(&self) -> Vec<Task> {
        match self.task {
            EvalTask::Needle => vec![Task::Needle],
            EvalTask::Passkey => vec![Task::Passkey],
            EvalTask::Ruler => self
                .ruler_tasks
                .clone()
                .unwrap_or_else(|| RulerTask::ALL.to_vec())
                .into_iter()
                .map(Task::Ruler)
                .collect(),
        }
    }

    fn protocol(&self) -> Protocol {
        match (self.task, self.protocol) {
            (EvalTask::Ruler, _) => Protocol::Ruler,
            (_, None | Some(NiahProtocol::Peer)) => Protocol::Peer,
            (_, Some(NiahProtocol::Paper)) => Protocol::Paper,
            (_, Some(NiahProtocol::Landmark)) => Protocol::Landmark,
        }
    }

    /// The name of the whole run in files and JSON: `needle`, `passkey` or `ruler`.
    fn run_name(&self) -> &'static str {
        match self.task {
            EvalTask::Needle => "needle",
            EvalTask::Passkey => "passkey",
            EvalTask::Ruler => "ruler",
        }
    }
}

impl NiahTask {
    pub fn task(self) -> VerifyTask {
        match self {
            NiahTask::Needle => VerifyTask::Needle,
            NiahTask::Passkey => VerifyTask::Passkey,
        }
    }
}

/// One task's results.
struct TaskResult {
    task: Task,
    rows_path: PathBuf,
    summary: Vec<SummaryRow>,
    heatmaps: Vec<PathBuf>,
}

pub fn run(device: &super::DeviceArgs, args: NiahArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let tasks = args.tasks();
    // The word lists before the model: a missing folder is a quick error.
    let ruler_words = match &args.ruler_dir {
        Some(dir) if tasks.iter().any(needs_words) => {
            Some(RulerWords::load(dir).with_context(|| format!("--ruler-dir {}", dir.display()))?)
        }
        _ => None,
    };
    let device = device.runtime()?;
    let loaded = load_model(&args.model, &device)?;
    // The server before any prompt or profile work: a wrong URL or model fails first.
    let server = match &args.server {
        Some(url) => {
            if !url.starts_with("http://") {
                anyhow::bail!(
                    "--server {url}: give the server's base URL, e.g. http://127.0.0.1:8080 \
                     (plain HTTP, as `compresskv serve` listens)"
                );
            }
            let s = ServerAnswers::new(url, args.api_key.clone());
            let served = s
                .model_id()
                .map_err(|e| anyhow::anyhow!("--server {url}: {e}"))?;
            if served != loaded.id {
                anyhow::bail!(
                    "--server {url} serves {served} but --model is {}: give the server's model, \
                     which builds the same prompts",
                    loaded.id
                );
            }
            Some(s)
        }
        None => None,
    };
    let haystack = super::load_haystack(args.haystack.as_deref())?;
    let work = build_prompts(&args, &loaded, &tasks, ruler_words.as_ref(), &haystack)?;
    let budgets =
        args.tuning
            .resolve_budgets(&loaded, &args.model, &args.contenders.budgets, args.json)?;
    let contenders = contender_grid(
        &args.contenders.methods,
        &budgets,
        args.variant.as_deref(),
        |m, b| {
            args.tuning
                .compressor(&loaded, m, BudgetSpec::Entries(b))
                .with_context(|| format!("--methods {m} at budget {b}"))
        },
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;

    let total: usize = work.iter().map(|(_, s)| s.len()).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} prompts {msg}",
    )?);
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut started = false;
    let mut results = Vec::new();
    let mut all_rows = Vec::new();
    for (task, samples) in &work {
        let rows_path = args.out.join(rows_file_name(*task));
        let name = task_name(*task);
        let rows = run_niah(
            &loaded,
            *task,
            samples,
            &contenders,
            &rows_path,
            server.as_ref().map(|s| s as &dyn RemoteAnswer),
            &mut |msg| {
                if std::mem::replace(&mut started, true) {
                    bar.inc(1);
                }
                bar.set_message(format!("{name} {msg}"));
            },
        )?;
        // The summary covers every method in the file (e.g. earlier `--variant` runs) on this
        // run's prompts.
        results.push(TaskResult {
            task: *task,
            summary: summarize(&rows, &args.lengths),
            heatmaps: write_heatmaps(&args, *task, &rows)?,
            rows_path,
        });
        all_rows.extend(rows);
    }
    bar.finish_and_clear();

    let summary_json = summary_document(&args, &loaded.id, &results, &all_rows);
    std::fs::write(
        args.out.join(format!("summary-{}.json", args.run_name())),
        serde_json::to_string_pretty(&summary_json)?,
    )?;
    if args.json {
        super::print_json(&summary_json)?;
    } else {
        print_summary(&args, &results, &all_rows);
    }
    Ok(())
}

/// A task's prompts, each with its sample index.
type TaskPrompts = (Task, Vec<(usize, NiahSample)>);

/// Every prompt of every task, built before any decoding so that a length that does not fit
/// fails first.
fn build_prompts(
    args: &NiahArgs,
    loaded: &LoadedModel,
    tasks: &[Task],
    ruler_words: Option<&RulerWords>,
    haystack: &Haystack,
) -> anyhow::Result<Vec<TaskPrompts>> {
    let needles = match &args.needles {
        Some(p) => load_needles(p).with_context(|| format!("reading --needles {}", p.display()))?,
        None => vec![Needle::san_francisco()],
    };
    let mut work = Vec::new();
    for &task in tasks {
        let grid = NiahGrid {
            task,
            protocol: args.protocol(),
            lengths: &args.lengths,
            depths: &args.depths,
            needles: &needles,
            passkeys: args.samples,
            seed: args.seed,
            ruler_words,
        };
        let samples = grid
            .samples(loaded, haystack)
            .with_context(|| format!("building the {} prompts", task_name(task)))?;
        work.push((task, samples));
    }
    Ok(work)
}

/// `summary-<run>.json` (and `--json`'s output): per task for RULER, with the mean over tasks.
fn summary_document(
    args: &NiahArgs,
    model_id: &str,
    results: &[TaskResult],
    all_rows: &[NiahRow],
) -> serde_json::Value {
    let run_name = args.run_name();
    let protocol = format!("{:?}", args.protocol()).to_lowercase();
    if args.task == EvalTask::Ruler {
        let per_task: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "task": task_name(r.task), "rows_file": r.rows_path,
                    "heatmaps": r.heatmaps, "summary": r.summary,
                })
            })
            .collect();
        serde_json::json!({
            "model": model_id, "task": run_name, "protocol": protocol,
            "ruler_tasks": results.iter().map(|r| task_name(r.task)).collect::<Vec<_>>(),
            "lengths": args.lengths, "depths": args.depths, "tasks": per_task,
            "summary": summarize(all_rows, &args.lengths),
        })
    } else {
        let r = &results[0];
        serde_json::json!({
            "model": model_id, "task": run_name, "protocol": protocol,
            "lengths": args.lengths, "depths": args.depths, "rows_file": r.rows_path,
            "heatmaps": r.heatmaps, "summary": r.summary,
        })
    }
}

/// The human summary: one table (a task column and the mean over tasks for RULER), then where
/// the rows and heatmaps are.
fn print_summary(args: &NiahArgs, results: &[TaskResult], all_rows: &[NiahRow]) {
    let mut lines: Vec<(&str, SummaryRow)> = Vec::new();
    for r in results {
        lines.extend(r.summary.iter().map(|s| (task_name(r.task), s.clone())));
    }
    if results.len() > 1 {
        lines.extend(
            summarize(all_rows, &args.lengths)
                .into_iter()
                .map(|s| ("mean", s)),
        );
    }
    println!(
        "{}",
        render_summary(&lines, &args.lengths, args.task, results.len() > 1)
    );
    for r in results {
        println!("rows: {}", r.rows_path.display());
    }
    if results.iter().any(|r| !r.heatmaps.is_empty()) {
        println!("heatmaps: {}", args.out.display());
    }
}

fn needs_words(t: &Task) -> bool {
    matches!(t, Task::Ruler(r) if r.needs_words())
}

fn validate(args: &NiahArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.contenders.methods.is_empty(), "--methods is empty");
    anyhow::ensure!(!args.lengths.is_empty(), "--lengths is empty");
    anyhow::ensure!(!args.depths.is_empty(), "--depths is empty");
    anyhow::ensure!(args.samples > 0, "--samples must be at least 1");
    for d in &args.depths {
        anyhow::ensure!(
            (0.0..=100.0).contains(d),
            "--depths must be percentages in 0..=100, got {d}"
        );
    }
    if args.contenders.methods.iter().any(|m| m != "full") {
        anyhow::ensure!(
            !args.contenders.budgets.is_empty(),
            "--budgets is empty but compressing methods were asked for"
        );
    }
    if args.task != EvalTask::Ruler {
        anyhow::ensure!(
            args.ruler_tasks.is_none() && args.ruler_dir.is_none(),
            "--ruler-tasks and --ruler-dir are for --task ruler"
        );
    } else {
        anyhow::ensure!(
            args.protocol.is_none(),
            "--protocol is for --task needle|passkey: RULER tasks have their own prompt"
        );
        anyhow::ensure!(
            args.needles.is_none(),
            "--needles is for --task needle: RULER tasks draw their own keys and values"
        );
        anyhow::ensure!(
            args.ruler_tasks.as_ref().is_none_or(|t| !t.is_empty()),
            "--ruler-tasks is empty"
        );
        let wordy: Vec<&str> = args
            .tasks()
            .iter()
            .filter(|t| needs_words(t))
            .map(|&t| task_name(t))
            .collect();
        if args.ruler_dir.is_none() && !wordy.is_empty() {
            anyhow::bail!(
                "RULER tasks {} draw adjective-noun words from RULER's word lists: pass \
                 --ruler-dir DIR, the folder with wonderwords/adjectivelist.txt and nounlist.txt \
                 (e.g. ../shared/datasets/ruler); only niah_multikey_3 runs without them",
                wordy.join(", ")
            );
        }
    }
    match (args.task, args.protocol) {
        (EvalTask::Needle, Some(NiahProtocol::Landmark)) => {
            anyhow::bail!("--protocol landmark is a passkey prompt: use it with --task passkey")
        }
        (EvalTask::Passkey, Some(NiahProtocol::Paper)) => {
            anyhow::bail!("--protocol paper is a needle prompt: use --protocol peer or landmark")
        }
        _ => Ok(()),
    }
}

/// The summary table; with `by_task`, a first column names the task (or `mean` over tasks).
fn render_summary(
    lines: &[(&str, SummaryRow)],
    lengths: &[usize],
    task: EvalTask,
    by_task: bool,
) -> String {
    let mut t = Table::new();
    if by_task {
        t = t.col("task", |(name, _): &(&str, SummaryRow)| name.to_string());
    }
    t = t
        .col("method", |(_, s): &(&str, SummaryRow)| s.method.clone())
        .col("budget", |(_, s)| {
            s.budget.map_or("-".into(), |b| b.to_string())
        });
    for &l in lengths {
        t = t.col(l.to_string(), move |(_, s)| {
            s.per_length
                .iter()
                .find(|(len, _)| *len == l)
                .map_or("-".into(), |(_, m)| format!("{m:.1}"))
        });
    }
    let mean = match task {
        EvalTask::Needle => "mean recall %",
        EvalTask::Passkey => "mean exact %",
        EvalTask::Ruler => "mean match %",
    };
    t = t.col(mean, |(_, s)| format!("{:.1}", s.mean_score));
    if task == EvalTask::Ruler {
        t = t.col("whole-value %", |(_, s)| {
            s.mean_whole_score.map_or("-".into(), |w| format!("{w:.1}"))
        });
    }
    t.col("% of full", |(_, s)| {
        s.pct_of_full.map_or("-".into(), |p| format!("{p:.0}"))
    })
    .col("≈ full answer", |(_, s)| {
        s.agree_with_full.map_or("-".into(), |a| format!("{a:.2}"))
    })
    .col("KV cache", |(_, s)| {
        super::table::bytes(s.mean_kv_cache_bytes as usize)
    })
    .col("n", |(_, s)| s.n.to_string())
    .render(lines)
}

/// One PNG per method×budget: mean score per (depth, length), like the paper's figures.
fn write_heatmaps(args: &NiahArgs, task: Task, rows: &[NiahRow]) -> anyhow::Result<Vec<PathBuf>> {
    let name = task_name(task);
    let mut groups: BTreeMap<(String, Option<usize>), Vec<&NiahRow>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.method.clone(), r.budget))
            .or_default()
            .push(r);
    }
    let mut paths = Vec::new();
    for ((method, budget), v) in groups {
        let values: Vec<Vec<f64>> = args
            .depths
            .iter()
            .map(|&d| {
                args.lengths
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
        let file = match budget {
            Some(b) => format!("{name}-{method}-{b}.png"),
            None => format!("{name}-{method}.png"),
        };
        let path = args.out.join(file);
        let title = match budget {
            Some(b) => format!("{method}, budget {b} ({name})"),
            None => format!("{method} ({name})"),
        };
        super::heatmap::heatmap_png(
            &path,
            &title,
            "context length (tokens)",
            "needle depth (%)",
            &args
                .lengths
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>(),
            &args
                .depths
                .iter()
                .map(|d| format!("{d}"))
                .collect::<Vec<_>>(),
            &values,
            Some((0.0, 100.0)),
        )?;
        paths.push(path);
    }
    Ok(paths)
}
