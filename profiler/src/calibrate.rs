//! Calibration prompts and the profiling run: needles × lengths × depths → SRH scores →
//! [`Profile`]. Checkpoints after every sample, so a killed run resumes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use compresskv_runtime::eval::longbench::{
    self, LongBenchConfig, format_template, official_max_new_tokens, stops_at_newline,
    truncate_middle,
};
use compresskv_runtime::eval::niah::{Haystack, NiahBuilder, NiahError};
use compresskv_runtime::eval::rows::{RowWriter, RowsError, read_rows};
use compresskv_runtime::loader::LoadedModel;
use compresskv_runtime::profile::{
    Defaults, Fingerprint, LayerErrors, Profile, Provenance, sha256_hex,
};
use serde::{Deserialize, Serialize};

use crate::layer_error::{
    ErrorProbe, ErrorSettings, MAX_ALL_SUBSET_HEADS, PromptErrors, all_subsets, combine_datasets,
    prompt_errors,
};
use crate::srh::{CalibSample, SampleResult, aggregate, score_sample_with};

#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Profile(#[from] compresskv_runtime::profile::ProfileError),
    #[error(transparent)]
    Load(#[from] compresskv_runtime::loader::LoadError),
    #[error(transparent)]
    LongBench(#[from] longbench::LongBenchError),
    #[error(transparent)]
    Niah(#[from] NiahError),
    /// `stop_after` was reached (tests of resuming use it); the checkpoint holds the samples.
    #[error("stopped after {0} new samples as asked; rerun with --resume to continue")]
    Stopped(usize),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CalibError + '_ {
    move |source| CalibError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The needles are the runtime's (`eval niah` reads the same jsonl); calibration adds one rule:
/// the answer must be a span of the needle, since its tokens are the evidence the SRH score is
/// measured on.
pub use compresskv_runtime::eval::niah::Needle;

pub fn load_needles(path: &Path) -> Result<Vec<Needle>, CalibError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    parse_needles(&text, path)
}

/// [`load_needles`] on text already read; `origin` (the file, or e.g.
/// `built-in:needles.jsonl` for [`compresskv_runtime::profile::builtin::NEEDLES`]) is only used
/// in messages.
pub fn parse_needles(text: &str, origin: &Path) -> Result<Vec<Needle>, CalibError> {
    let needles = compresskv_runtime::eval::niah::parse_needles(text, origin)
        .map_err(|e| CalibError::Input(e.to_string()))?;
    if let Some(i) = needles
        .iter()
        .position(|n| !n.needle.to_lowercase().contains(&n.answer.to_lowercase()))
    {
        return Err(CalibError::Input(format!(
            "{}: needle {}: the answer must be a span of the needle",
            origin.display(),
            i + 1
        )));
    }
    Ok(needles)
}

/// All `.txt` files of `dir`, in name order, joined by blank lines (the SRH reference joins
/// its book's parts so).
pub fn load_haystack(dir: &Path) -> Result<Haystack, CalibError> {
    Haystack::from_dir_joined(dir, "\n\n").map_err(|e| match e {
        NiahError::EmptyHaystack(_) => CalibError::Input(format!(
            "{} has no .txt files with text: pass --haystack DIR with prose, or run `compresskv \
             fetch haystack`",
            dir.display()
        )),
        e => e.into(),
    })
}

/// The calibration prompt of `needle` ([`NiahBuilder::calibration_needle`]) with its answer
/// span ([`NiahBuilder::answer_span`]).
pub fn build_sample(
    b: &NiahBuilder<'_>,
    needle: &Needle,
    length: usize,
    depth: f64,
) -> Result<CalibSample, CalibError> {
    let s = b.calibration_needle(needle, length, depth)?;
    Ok(CalibSample {
        span: b.answer_span(&s)?,
        ids: s.prompt_ids,
        answer: s.answer,
    })
}

#[derive(Debug, Clone)]
pub struct Grid {
    pub lengths: Vec<usize>,
    pub depths: Vec<f64>,
    pub max_new: usize,
}

/// One QA calibration prompt (LongBench format), ready to decode.
#[derive(Debug, Clone)]
pub struct QaPrompt {
    pub dataset: String,
    pub ids: Vec<u32>,
    pub max_new: usize,
    pub stop_at_newline: bool,
}

/// Where layer eviction errors are measured.
#[derive(Debug, Clone)]
pub struct ErrorPlan {
    pub settings: ErrorSettings,
    /// QA prompts (`--qa`); `None` = the needle calibration prompts.
    pub qa: Option<Vec<QaPrompt>>,
}

/// Settings of a profiling run besides the data.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub grid: Grid,
    pub errors: ErrorPlan,
    /// Continue from the checkpoint instead of starting over.
    pub resume: bool,
    /// Stop with [`CalibError::Stopped`] after this many newly computed samples (resume tests).
    pub stop_after: Option<usize>,
    /// Write a profile even if no sample was answered (all SRH scores 0): only for random-weight
    /// test models, whose answers are noise.
    pub allow_uncounted: bool,
}

/// One checkpoint line: an SRH sample, or the eviction errors of one prompt of a separate
/// error pass.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    key: String,
    result: SampleResult,
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrCheckpoint {
    key: String,
    errors: PromptErrors,
}

/// Built-in QA prompt templates (calibration-data/qa_templates.json), by dataset name with a
/// `default`; `--qa-config` replaces them with a LongBench `config` directory.
pub const QA_TEMPLATES: &str = compresskv_runtime::profile::builtin::QA_TEMPLATES;

/// Default cap on QA answer lengths (the dataset's own length is used when smaller).
pub const QA_MAX_NEW: usize = 32;

/// Reads LongBench-format jsonl files into QA prompts: the dataset's template (from
/// `config_dir`, a LongBench `config` directory, or the built-in templates), middle-truncated
/// to `max_len` tokens, at most `max_samples` per file, answers capped at `max_new` tokens.
pub fn load_qa(
    loaded: &LoadedModel,
    files: &[PathBuf],
    config_dir: Option<&Path>,
    max_samples: usize,
    max_len: usize,
    max_new: usize,
) -> Result<Vec<QaPrompt>, CalibError> {
    let config = config_dir.map(LongBenchConfig::load).transpose()?;
    let builtin: std::collections::HashMap<String, String> =
        serde_json::from_str(QA_TEMPLATES).expect("calibration-data/qa_templates.json parses");
    let tok = &loaded.tokenizer;
    let enc = |s: &str| tok.encode(s, false).unwrap_or_default();
    let dec = |ids: &[u32]| tok.decode(ids).unwrap_or_default();
    let bos: Vec<u32> = loaded.spec.bos_token_id.into_iter().collect();
    let mut out = Vec::new();
    for f in files {
        let samples = longbench::load_samples(f)?;
        if samples.is_empty() {
            return Err(CalibError::Input(format!(
                "{}: no samples (expected LongBench jsonl lines with `context`, `input`, \
                 `answers`, `dataset`)",
                f.display()
            )));
        }
        for s in samples.iter().take(max_samples) {
            let dataset = if s.dataset.trim().is_empty() {
                f.file_stem()
                    .map_or("qa".into(), |x| x.to_string_lossy().into())
            } else {
                s.dataset.clone()
            };
            let (prompt, ds_max) = match &config {
                Some(c) => (
                    c.build_prompt(s).map_err(|e| {
                        CalibError::Input(format!(
                            "{}: {e}: the --qa-config directory has no template for it",
                            f.display()
                        ))
                    })?,
                    c.max_new_tokens(&dataset),
                ),
                None => {
                    let base = dataset.strip_suffix("_e").unwrap_or(&dataset);
                    let t = builtin
                        .get(base)
                        .or_else(|| builtin.get("default"))
                        .expect("built-in templates have a default");
                    (
                        format_template(t, &s.context, &s.input)?,
                        official_max_new_tokens(&dataset),
                    )
                }
            };
            let text = truncate_middle(&prompt, max_len, bos.len(), &enc, &dec);
            let mut ids = bos.clone();
            ids.extend(enc(&text));
            out.push(QaPrompt {
                stop_at_newline: stops_at_newline(&dataset),
                max_new: ds_max.unwrap_or(max_new).min(max_new),
                dataset,
                ids,
            });
        }
    }
    Ok(out)
}

/// One line of a profiling run's checkpoint: a finished needle sample, or the layer errors of
/// one error-pass prompt.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum CheckpointLine {
    Sample(Checkpoint),
    Errors(ErrCheckpoint),
}

/// An error-pass prompt: (checkpoint key, dataset, ids, max new tokens, stop at newline).
type ErrPrompt = (String, String, Vec<u32>, usize, bool);
/// Needle samples by checkpoint key.
type KeyedSamples = Vec<(String, CalibSample)>;
/// Summed per-layer errors per dataset.
type DatasetErrors = Vec<(String, Vec<f64>)>;

/// A profiling run in progress: what the checkpoint already holds, where new lines go, and
/// the progress count shared by both passes.
struct Run<'a> {
    loaded: &'a LoadedModel,
    opts: &'a RunOptions,
    done: HashMap<String, SampleResult>,
    done_err: HashMap<String, PromptErrors>,
    ck: RowWriter,
    eos: Vec<u32>,
    /// Samples computed (not read from the checkpoint) so far, for `stop_after`.
    fresh: usize,
    step: usize,
    total: usize,
}

impl<'a> Run<'a> {
    /// Reads the checkpoint (with `opts.resume`; otherwise starts it over) and opens it for
    /// appending.
    fn open(
        loaded: &'a LoadedModel,
        opts: &'a RunOptions,
        checkpoint: &Path,
        total: usize,
    ) -> Result<Self, CalibError> {
        let rows_err = |e: RowsError| CalibError::Input(format!("profile checkpoint: {e}"));
        let mut done = HashMap::new();
        let mut done_err = HashMap::new();
        if opts.resume {
            for line in read_rows::<CheckpointLine>(checkpoint).map_err(rows_err)? {
                match line {
                    CheckpointLine::Sample(c) => done.insert(c.key, c.result).map(|_| ()),
                    CheckpointLine::Errors(c) => done_err.insert(c.key, c.errors).map(|_| ()),
                };
            }
        } else if checkpoint.exists() {
            std::fs::remove_file(checkpoint).map_err(io(checkpoint))?;
        }
        Ok(Run {
            loaded,
            opts,
            done,
            done_err,
            ck: RowWriter::append(checkpoint).map_err(rows_err)?,
            eos: loaded.eos_ids(),
            fresh: 0,
            step: 0,
            total,
        })
    }

    /// Counts a newly computed sample; past `opts.stop_after` the run stops (resume tests).
    fn count_fresh(&mut self) -> Result<(), CalibError> {
        self.fresh += 1;
        match self.opts.stop_after {
            Some(k) if self.fresh > k => Err(CalibError::Stopped(k)),
            _ => Ok(()),
        }
    }

    fn save(&mut self, line: &CheckpointLine) -> Result<(), CalibError> {
        self.ck
            .push(line)
            .map_err(|e| CalibError::Input(format!("profile checkpoint: {e}")))
    }

    /// The SRH pass: every (needle, length, depth) prompt decoded with the heads' attention
    /// recorded (and, with `with_errors`, every head subset's eviction error measured).
    fn srh_pass(
        &mut self,
        needles: &[Needle],
        builder: &NiahBuilder<'_>,
        with_errors: bool,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<(Vec<SampleResult>, KeyedSamples), CalibError> {
        let (spec, grid) = (&self.loaded.spec, &self.opts.grid);
        let mut results = Vec::new();
        let mut samples = Vec::new();
        for (ni, needle) in needles.iter().enumerate() {
            for &len in &grid.lengths {
                for &depth in &grid.depths {
                    self.step += 1;
                    let key = format!("{ni}/{len}/{depth}");
                    let s = build_sample(builder, needle, len, depth)?;
                    let cached = self
                        .done
                        .remove(&key)
                        .filter(|r| !with_errors || r.layer_err.len() == spec.n_layers);
                    let r = match cached {
                        Some(r) => r,
                        None => {
                            self.count_fresh()?;
                            let mut probe = with_errors
                                .then(|| ErrorProbe::all_subsets(self.opts.errors.settings, spec));
                            let r = score_sample_with(
                                &self.loaded.model,
                                &self.loaded.tokenizer,
                                &s,
                                grid.max_new,
                                &self.eos,
                                probe.as_mut(),
                            );
                            self.save(&CheckpointLine::Sample(Checkpoint {
                                key: key.clone(),
                                result: r.clone(),
                            }))?;
                            r
                        }
                    };
                    progress(
                        self.step,
                        self.total,
                        &format!("{key} recall {:.2}", r.recall),
                    );
                    results.push(r);
                    samples.push((key, s));
                }
            }
        }
        Ok((results, samples))
    }

    /// The separate error pass: each prompt decoded with the chosen heads `top`; the summed
    /// per-layer errors per dataset, and the decode steps measured.
    fn error_pass(
        &mut self,
        prompts: &[ErrPrompt],
        top: &[Vec<usize>],
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<(DatasetErrors, usize), CalibError> {
        let spec = &self.loaded.spec;
        let mut per_dataset: DatasetErrors = Vec::new();
        let mut steps = 0;
        for (key, dataset, ids, max_new, stop_nl) in prompts {
            self.step += 1;
            let e = match self.done_err.remove(key) {
                Some(e) => e,
                None => {
                    self.count_fresh()?;
                    let probe = ErrorProbe::known(self.opts.errors.settings, spec, top);
                    let e = prompt_errors(
                        &self.loaded.model,
                        &self.loaded.tokenizer,
                        ids,
                        *max_new,
                        &self.eos,
                        *stop_nl,
                        probe,
                    );
                    self.save(&CheckpointLine::Errors(ErrCheckpoint {
                        key: key.clone(),
                        errors: e.clone(),
                    }))?;
                    e
                }
            };
            progress(
                self.step,
                self.total,
                &format!("layer errors {key}: {} steps", e.steps),
            );
            steps += e.steps;
            let row: Vec<f64> = e
                .err
                .iter()
                .map(|c| c.first().copied().unwrap_or(0.0))
                .collect();
            match per_dataset.iter_mut().find(|(n, _)| n == dataset) {
                Some((_, acc)) => acc.iter_mut().zip(&row).for_each(|(a, x)| *a += x),
                None => per_dataset.push((dataset.clone(), row)),
            }
        }
        Ok((per_dataset, steps))
    }
}

/// The `k` best-scoring heads of each layer (ties: lower index), in head order: the heads the
/// runtime will score with.
fn top_heads(srh: &[Vec<f64>], k: usize) -> Vec<Vec<usize>> {
    srh.iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let mut t = order[..k].to_vec();
            t.sort_unstable();
            t
        })
        .collect()
}

/// Per-layer errors of the `top` subsets, summed over the SRH pass's samples (which measured
/// every subset).
fn srh_pass_errors(results: &[SampleResult], top: &[Vec<usize>], n_heads: usize) -> Vec<f64> {
    let subsets = all_subsets(n_heads);
    let mut sums = vec![0.0; top.len()];
    for r in results {
        for (l, row) in r.layer_err.iter().enumerate() {
            if !row.is_empty() {
                let idx = subsets.iter().position(|s| *s == top[l]).expect("subset");
                sums[l] += row[idx];
            }
        }
    }
    sums
}

/// The error-pass prompts: the QA prompts, or the needle samples again.
fn error_prompts(opts: &RunOptions, samples: &[(String, CalibSample)]) -> Vec<ErrPrompt> {
    match &opts.errors.qa {
        Some(qa) => qa
            .iter()
            .enumerate()
            .map(|(j, p)| {
                (
                    format!("err/qa/{}/{j}", p.dataset),
                    p.dataset.clone(),
                    p.ids.clone(),
                    p.max_new,
                    p.stop_at_newline,
                )
            })
            .collect(),
        None => samples
            .iter()
            .map(|(k, s)| {
                (
                    format!("err/needles/{k}"),
                    "needles".into(),
                    s.ids.clone(),
                    opts.grid.max_new,
                    true,
                )
            })
            .collect(),
    }
}

/// Runs the calibration and returns the profile. `checkpoint` collects finished samples; with
/// `opts.resume`, samples already there are not run again.
pub fn profile_model(
    loaded: &LoadedModel,
    needles: &[Needle],
    haystack: &Haystack,
    opts: &RunOptions,
    checkpoint: &Path,
    calibration_bytes: &[u8],
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<(Profile, Vec<SampleResult>), CalibError> {
    let started = Instant::now();
    let (grid, spec) = (&opts.grid, &loaded.spec);
    // Needle prompts measure every head subset in the SRH pass when that is affordable.
    let errors_in_srh_pass = opts.errors.qa.is_none() && spec.n_heads <= MAX_ALL_SUBSET_HEADS;
    let n_grid = needles.len() * grid.lengths.len() * grid.depths.len();
    let n_err_pass = match &opts.errors.qa {
        Some(qa) => qa.len(),
        None if errors_in_srh_pass => 0,
        None => n_grid,
    };
    let mut run = Run::open(loaded, opts, checkpoint, n_grid + n_err_pass)?;
    let builder = NiahBuilder::for_model(haystack, loaded);
    let (results, samples) = run.srh_pass(needles, &builder, errors_in_srh_pass, progress)?;
    let (srh, classic) = aggregate(&results, spec.n_layers, spec.n_heads);
    let n_counted = results.iter().filter(|r| r.counted).count();
    if n_counted == 0 && !opts.allow_uncounted {
        return Err(CalibError::Input(
            "no calibration sample was answered (word recall > 0.5): the model cannot retrieve \
             at these lengths; try shorter --lengths"
                .into(),
        ));
    }
    let defaults = Defaults::for_heads(spec.n_heads);
    let top = top_heads(&srh, defaults.settings.srh_heads);
    let (source, per_dataset, n_prompts, steps) = if errors_in_srh_pass {
        let sums = srh_pass_errors(&results, &top, spec.n_heads);
        let steps = results.iter().map(|r| r.layer_err_steps).sum::<usize>();
        let per_dataset = vec![("needles".to_string(), sums)];
        ("needles", per_dataset, results.len(), steps)
    } else {
        let prompts = error_prompts(opts, &samples);
        let (per_dataset, steps) = run.error_pass(&prompts, &top, progress)?;
        let source = if opts.errors.qa.is_some() {
            "qa"
        } else {
            "needles"
        };
        (source, per_dataset, prompts.len(), steps)
    };
    let per_layer = combine_datasets(
        &per_dataset
            .iter()
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>(),
    );
    let layer_errors = per_layer.map(|per_layer| LayerErrors {
        per_layer,
        per_dataset: per_dataset.clone(),
        source: source.to_string(),
    });
    let es = opts.errors.settings;
    let profile = Profile {
        schema_version: compresskv_runtime::profile::SCHEMA_VERSION,
        model_id: loaded.id.clone(),
        fingerprint: Fingerprint {
            weight_hash: loaded.model.weight_hash().unwrap_or_default().to_string(),
            ..Fingerprint::of(spec, &loaded.config_text, None)
        },
        srh_scores: srh,
        retrieval_scores: classic,
        layer_errors,
        defaults,
        tuning: None,
        recommendation: None,
        provenance: Provenance {
            tool_version: compresskv_runtime::profile::TOOL_VERSION.to_string(),
            calibration_hash: sha256_hex(calibration_bytes),
            grid: format!(
                "{} needles x lengths {:?} x depths {:?}, max_new {}; {n_counted}/{n_grid} \
                 samples counted; layer errors: top {} SRH selection at budget {} (window {}, \
                 kernel {}) on {n_prompts} {source} prompts, {steps} decode steps",
                needles.len(),
                grid.lengths,
                grid.depths,
                grid.max_new,
                defaults.settings.srh_heads,
                es.budget,
                es.window,
                es.kernel,
            ),
            seed: 0,
            wall_time_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            imported_from: None,
            created: compresskv_runtime::profile::utc_now(),
        },
    };
    Ok((profile, results))
}
