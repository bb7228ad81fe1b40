//! `compresskv profile --tune` (beyond the paper): pick the CompressKV settings that retrieve
//! best on held-out prompts, per budget.
//!
//! The SRH ranking says which heads look at evidence, not how many of them to trust, whether
//! to let the other heads in, or how closely layer budgets should follow the layer errors. A
//! reference run on Gemma 3 270M (shared/notes/peer-baseline.md) shows the trade-off: the top-1
//! SRH alone keeps ~85% needle recall at every budget but drops passkey digits; all heads
//! (SnapKV's score) win at large budgets and collapse at small ones. So we search a small grid
//! — SRH heads 1..=n_heads × observation window × pooling kernel × score mix λ × rank union u
//! ([`compresskv_runtime::press::compresskv::rank_union`]) × layer-budget error weight — on
//! prompts that did not score the heads (other needles, depths and lengths, plus a passkey
//! task and optionally RULER tasks, over one or several haystacks), and keep the best setting
//! (every task weighs the same). A share of the prompts is held back as a validation split: the
//! choice is reported on it, and a budget gets its own choice only where that beats the overall
//! choice there too — a win on the search prompts alone can be luck. Every prompt is prefilled
//! once and every setting × budget decodes from its own compressed copy of that cache.

use std::path::{Path, PathBuf};

use compresskv_runtime::eval::metrics::ruler_whole_match_all;
use compresskv_runtime::eval::niah::{
    CALIBRATION_QUESTION_TEMPLATE, Haystack, Needle, NiahBuilder, NiahSample, RulerTask,
    RulerWords, Task, sample_seed,
};
use compresskv_runtime::eval::rows::{RowWriter, RowsError, read_rows};
use compresskv_runtime::eval::run::{Contender, run_contenders};
use compresskv_runtime::generate::GenerateOptions;
use compresskv_runtime::loader::LoadedModel;
use compresskv_runtime::press::budget::ErrorAwareParams;
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::press::{
    Compressor, HeadProfile, PressParams, SlidingPolicy, press_by_name,
};
use compresskv_runtime::profile::{
    Axes, BudgetChoice, BudgetValidation, Profile, Settings, Tuning, Validation,
};
use serde::{Deserialize, Serialize};

use crate::calibrate::CalibError;

/// What `--tune` searches.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneGrid {
    /// The values tried per knob.
    pub axes: Axes,
    /// Mean budgets the settings are scored at.
    pub budgets: Vec<usize>,
}

impl TuneGrid {
    /// Settings in search order: the paper's setting (fewest heads, smallest window, no mix)
    /// first, so ties go to the simplest setting.
    pub fn settings(&self) -> Vec<Settings> {
        self.axes.settings()
    }

    /// Checks that the grid can be searched: no empty axis, odd pooling kernels, mixes, unions
    /// and error weights in [0, 1].
    pub fn check(&self) -> Result<(), CalibError> {
        let bad = |m: String| Err(CalibError::Input(m));
        if self.axes.srh_heads.is_empty()
            || self.axes.window.is_empty()
            || self.axes.kernel.is_empty()
            || self.axes.mix.is_empty()
            || self.axes.union.is_empty()
            || self.axes.error_weight.is_empty()
            || self.budgets.is_empty()
        {
            return bad(
                "--tune-windows, --tune-kernels, --tune-mixes, --tune-unions, \
                 --tune-error-weights and --tune-budgets must not be empty"
                    .into(),
            );
        }
        if !self.axes.kernel.iter().all(|k| k % 2 == 1) {
            return bad(format!(
                "--tune-kernels {:?}: pooling kernels must be odd (1 = no pooling)",
                self.axes.kernel
            ));
        }
        if !self
            .axes
            .mix
            .iter()
            .chain(&self.axes.union)
            .chain(&self.axes.error_weight)
            .all(|x| x.is_finite() && (0.0..=1.0).contains(x))
        {
            return bad(
                "--tune-mixes, --tune-unions and --tune-error-weights take values between 0 and 1"
                    .into(),
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "srh_heads {:?} x window {:?} x kernel {:?} x mix {:?} x union {:?} x error_weight {:?} \
             x budgets {:?}",
            self.axes.srh_heads,
            self.axes.window,
            self.axes.kernel,
            self.axes.mix,
            self.axes.union,
            self.axes.error_weight,
            self.budgets
        )
    }
}

/// The prompt format of the held-out set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TuneProtocol {
    /// `eval niah`'s peer format (book wrapper, "The pass key is NNNNN. Remember it.") with the
    /// held-out needles and keys: settings are validated on the task format they will be judged
    /// on, never on the evaluation's needle, keys, lengths or depths.
    Peer,
    /// The SRH calibration's question form and landmark passkeys: no evaluation format at all.
    Calibration,
}

/// The held-out prompt set.
#[derive(Debug, Clone)]
pub struct HeldOut {
    pub protocol: TuneProtocol,
    pub needles: Vec<Needle>,
    pub lengths: Vec<usize>,
    pub depths: Vec<f64>,
    /// Passkey prompts per (length, depth).
    pub passkeys: usize,
    pub seed: u64,
    /// RULER tasks asked too, one prompt per (length, depth) each, in RULER's own format
    /// (whatever the protocol) and scored on whole values.
    pub ruler: Vec<RulerTask>,
    /// RULER's word lists, for the tasks that draw words.
    pub ruler_words: Option<RulerWords>,
    /// Every `validate_every`-th prompt of each task × length (in build order) is held back
    /// as the validation split; 0 = no validation split.
    pub validate_every: usize,
}

/// One held-out prompt: what it asks, how the decode stops, and its split.
#[derive(Debug, Clone)]
pub struct HeldOutPrompt {
    pub sample: NiahSample,
    /// `needle`, `passkey` or the RULER task's name: every task weighs the same.
    pub task: String,
    /// Only the first sentence or line is scored, so decoding stops there: most of the tune
    /// time is decode.
    pub stops: Vec<String>,
    /// In the validation split (never used to choose).
    pub validation: bool,
}

impl HeldOutPrompt {
    /// The prompt's score of `text` in [0, 100]: RULER values count only whole (a value
    /// followed by extra digits is not the value).
    pub fn score(&self, text: &str) -> f64 {
        match self.sample.task {
            Task::Ruler(_) => ruler_whole_match_all(text, &self.sample.values),
            _ => self.sample.score(text),
        }
    }
}

/// Builds the held-out prompts, each `length` tokens: needle prompts (needles rotate over the
/// grid), passkey prompts in `h.protocol`'s format and RULER prompts; the haystacks rotate over
/// the (length, depth) cells. Every `h.validate_every`-th prompt of a task × length goes to the
/// validation split.
pub fn held_out_prompts(
    loaded: &LoadedModel,
    haystacks: &[&Haystack],
    h: &HeldOut,
) -> Result<Vec<HeldOutPrompt>, CalibError> {
    if h.needles.is_empty() {
        return Err(CalibError::Input(
            "no held-out needles for --tune: give a non-empty --tune-needles file".into(),
        ));
    }
    if haystacks.is_empty() {
        return Err(CalibError::Input(
            "no haystack for --tune: give at least one --tune-haystacks entry".into(),
        ));
    }
    if let Some(t) = h
        .ruler
        .iter()
        .find(|t| t.needs_words() && h.ruler_words.is_none())
    {
        return Err(CalibError::Input(format!(
            "RULER task {} draws words: give --ruler-dir (RULER's word lists)",
            t.name()
        )));
    }
    let builders: Vec<NiahBuilder> = haystacks
        .iter()
        .map(|&hay| NiahBuilder::for_model(hay, loaded))
        .collect();
    let bad = |e: compresskv_runtime::eval::niah::NiahError| CalibError::Input(e.to_string());
    let mut out = Vec::new();
    let mut k = 0;
    let mut seen: std::collections::HashMap<(String, usize), usize> = Default::default();
    let mut push = |sample: NiahSample, task: String, stops: &[&str], length: usize| {
        let i = seen.entry((task.clone(), length)).or_default();
        let validation = h.validate_every > 0 && *i % h.validate_every == h.validate_every - 1;
        *i += 1;
        out.push(HeldOutPrompt {
            sample,
            task,
            stops: stops.iter().map(|s| s.to_string()).collect(),
            validation,
        });
    };
    for (li, &length) in h.lengths.iter().enumerate() {
        for (di, &depth) in h.depths.iter().enumerate() {
            let b = &builders[(li + di) % builders.len()];
            let n = &h.needles[k % h.needles.len()];
            k += 1;
            let mut s = match h.protocol {
                TuneProtocol::Peer => b.peer_needle(n, length, depth),
                // The calibration's question form (no book wrapper), so the evaluation
                // protocols stay unseen.
                TuneProtocol::Calibration => b.custom_needle(
                    "",
                    &format!(" {}", n.needle),
                    &CALIBRATION_QUESTION_TEMPLATE.replace("{question}", &n.question),
                    &n.answer,
                    length,
                    depth,
                ),
            }
            .map_err(bad)?;
            // Enough for the longest held-out answer; decoding stops at the sentence end.
            s.max_new_tokens = 20;
            push(s, "needle".into(), &["\n", "."], length);
            for i in 0..h.passkeys {
                let seed = sample_seed(h.seed.wrapping_add(i as u64), length, depth);
                let mut p = match h.protocol {
                    TuneProtocol::Peer => b.peer_passkey(length, depth, seed),
                    TuneProtocol::Calibration => b.landmark_passkey(length, depth, seed),
                }
                .map_err(bad)?;
                p.max_new_tokens = 8;
                push(p, "passkey".into(), &["\n", "."], length);
            }
            for &t in &h.ruler {
                let seed = t.seed(sample_seed(h.seed, length, depth));
                let mut r = b
                    .ruler(t, h.ruler_words.as_ref(), length, depth, seed)
                    .map_err(bad)?;
                // "… mentioned in the provided text is: 1234567." plus a few tokens per value;
                // several values run over lines, one value stops at the line end.
                let one = r.values.len() <= 1;
                r.max_new_tokens = r.max_new_tokens.min(24 + 12 * r.values.len());
                let stops: &[&str] = if one { &["\n"] } else { &["\n\n"] };
                push(r, t.name().into(), stops, length);
            }
        }
    }
    Ok(out)
}

/// What a tune run found.
#[derive(Debug, Clone)]
pub struct TuneOutcome {
    pub tuning: Tuning,
    /// Held-out prompts left out because the full cache did not answer them.
    pub dropped: usize,
}

/// One checkpoint line: a prompt's scores, one per (setting, budget) in grid order.
#[derive(Debug, Serialize, Deserialize)]
struct TuneCheckpoint {
    grid: String,
    prompt: usize,
    /// sha256 of the prompt's token ids, so a resumed run with another held-out set (protocol,
    /// lengths, needles) reruns the prompt instead of reusing its scores.
    #[serde(default)]
    prompt_hash: Option<String>,
    task: String,
    scores: Vec<f64>,
    /// The full cache's score on the prompt (absent in checkpoints made before it).
    #[serde(default)]
    full: Option<f64>,
}

fn prompt_hash(s: &NiahSample) -> String {
    let bytes: Vec<u8> = s.prompt_ids.iter().flat_map(|t| t.to_le_bytes()).collect();
    compresskv_runtime::profile::sha256_hex(&bytes)
}

fn rows_err(e: RowsError) -> CalibError {
    CalibError::Input(format!("tune checkpoint: {e}"))
}

/// The checkpoint file of a tune run whose profile goes to `out`.
pub fn tune_checkpoint_path(out: &Path) -> PathBuf {
    out.with_extension("ron.tune.partial.jsonl")
}

/// Runs the grid on `prompts` and returns the tuning to store in the profile. Results are
/// checkpointed per prompt in `checkpoint`; with `resume`, finished prompts are not rerun.
#[allow(clippy::too_many_arguments)]
pub fn tune(
    loaded: &LoadedModel,
    profile: &Profile,
    prompts: &[HeldOutPrompt],
    grid: &TuneGrid,
    checkpoint: &Path,
    resume: bool,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<TuneOutcome, CalibError> {
    let io = |source| CalibError::Io {
        path: checkpoint.to_path_buf(),
        source,
    };
    let settings = grid.settings();
    let (compressors, slot) = shared_compressors(loaded, profile, &settings, &grid.budgets)?;
    let grid_key = grid.describe();
    let mut done: std::collections::HashMap<usize, TuneCheckpoint> = Default::default();
    if resume {
        // Lines of another grid or held-out set are rerun, not reused.
        for c in read_rows::<TuneCheckpoint>(checkpoint).map_err(rows_err)? {
            if c.grid == grid_key
                && c.scores.len() == slot.len()
                && c.prompt < prompts.len()
                && c.prompt_hash
                    .as_ref()
                    .is_none_or(|h| *h == prompt_hash(&prompts[c.prompt].sample))
            {
                done.insert(c.prompt, c);
            }
        }
    } else if checkpoint.exists() {
        std::fs::remove_file(checkpoint).map_err(io)?;
    }
    let mut ck = RowWriter::append(checkpoint).map_err(rows_err)?;
    let eos = loaded.eos_ids();

    let mut per_prompt: Vec<PromptScores> = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let s = &p.sample;
        let task = p.task.clone();
        let (scores, full) = match done.remove(&i) {
            Some(c) => (c.scores, c.full),
            None => {
                let contenders: Vec<Contender<&Compressor>> = std::iter::once(Contender::full())
                    .chain(compressors.iter().map(|c| Contender {
                        method: "compresskv".into(),
                        budget: None,
                        compressor: Some(c),
                    }))
                    .collect();
                let opts = GenerateOptions {
                    max_new_tokens: s.max_new_tokens,
                    eos_ids: eos.clone(),
                    stop_strings: p.stops.clone(),
                    ..Default::default()
                };
                let outs = run_contenders(
                    &loaded.model,
                    &loaded.tokenizer,
                    &s.prompt_ids,
                    &contenders,
                    &opts,
                )
                .map_err(|e| CalibError::Input(format!("tune prompt {i}: {e}")))?;
                let full = p.score(&outs[0].text);
                let unique_scores: Vec<f64> = outs[1..].iter().map(|o| p.score(&o.text)).collect();
                let scores: Vec<f64> = slot.iter().map(|&u| unique_scores[u]).collect();
                ck.push(&TuneCheckpoint {
                    grid: grid_key.clone(),
                    prompt: i,
                    prompt_hash: Some(prompt_hash(s)),
                    task: task.clone(),
                    scores: scores.clone(),
                    full: Some(full),
                })
                .map_err(rows_err)?;
                (scores, Some(full))
            }
        };
        let best = scores.iter().cloned().fold(0.0, f64::max);
        progress(
            i + 1,
            prompts.len(),
            &format!(
                "{task} {} tokens, depth {}{}: best {best:.0}",
                s.length,
                s.depth,
                if p.validation { " (validation)" } else { "" }
            ),
        );
        per_prompt.push(PromptScores {
            task,
            scores,
            full,
            validation: p.validation,
        });
    }
    tuning_from(per_prompt, &settings, &grid.budgets)
}

/// One compressor per distinct (setting, budget) of the grid and, per grid cell (settings ×
/// budgets, in order), the index of its compressor: with every head trusted, the SRH score is
/// the all-heads score and λ, u change nothing, so such settings share one compressor (and one
/// decode) per window and budget.
fn shared_compressors(
    loaded: &LoadedModel,
    profile: &Profile,
    settings: &[Settings],
    budgets: &[usize],
) -> Result<(Vec<Compressor>, Vec<usize>), CalibError> {
    let head_profile = HeadProfile::from_profile(profile);
    let canonical = |s: &Settings| {
        let all = s.srh_heads >= loaded.spec.n_heads;
        Settings {
            mix: if all { 0.0 } else { s.mix },
            union: if all { 0.0 } else { s.union },
            ..*s
        }
    };
    let mut unique: Vec<(Settings, usize)> = Vec::new();
    let mut slot = Vec::new();
    for s in settings {
        for &b in budgets {
            let key = (canonical(s), b);
            let i = match unique.iter().position(|u| *u == key) {
                Some(i) => i,
                None => {
                    unique.push(key);
                    unique.len() - 1
                }
            };
            slot.push(i);
        }
    }
    let mut compressors = Vec::new();
    for &(s, b) in &unique {
        let effective = profile.defaults.with(s);
        compressors.push(
            Compressor::new(
                press_by_name("compresskv").expect("registered"),
                PressParams::from(&s),
                BudgetSpec::Entries(b),
                SlidingPolicy::Keep,
                ErrorAwareParams::from(&effective),
                Some(head_profile.clone()),
                &loaded.spec,
            )
            .map_err(|e| CalibError::Input(e.to_string()))?,
        );
    }
    Ok((compressors, slot))
}

/// One prompt's scores: its task, one score per grid cell (settings × budgets), the full
/// cache's, and its split.
#[derive(Debug, Clone, PartialEq)]
struct PromptScores {
    task: String,
    scores: Vec<f64>,
    full: Option<f64>,
    validation: bool,
}

/// The tuning from every prompt's scores: the best setting overall on the search split, and per
/// budget the search split's best where it also beats the overall choice on the validation
/// split (with no validation split, the search split's best), each with its table.
fn tuning_from(
    per_prompt: Vec<PromptScores>,
    settings: &[Settings],
    budgets: &[usize],
) -> Result<TuneOutcome, CalibError> {
    let n_prompts = per_prompt.len();
    let (val, search): (Vec<PromptScores>, Vec<PromptScores>) =
        per_prompt.into_iter().partition(|p| p.validation);
    let triple = |v: Vec<PromptScores>| {
        relative_to_full(v.into_iter().map(|p| (p.task, p.scores, p.full)).collect())
    };
    let (search, val) = (triple(search), triple(val));
    let dropped = n_prompts - search.len() - val.len();
    let nb = budgets.len();
    let table = score_table(settings, nb, 0..nb, &search);
    let chosen = best_setting(&table)
        .filter(|_| !search.is_empty())
        .ok_or_else(|| {
            CalibError::Input(
                "--tune had no search prompts to score: give held-out lengths and depths (and a \
             --tune-validate-every above 1)"
                    .into(),
            )
        })?;
    let score_of = |t: &[(Settings, f64)], s: Settings| {
        t.iter().find(|(x, _)| *x == s).map_or(0.0, |(_, v)| *v)
    };
    let mut per_budget = Vec::new();
    let mut checks = Vec::new();
    for (bi, &budget) in budgets.iter().enumerate() {
        let table = score_table(settings, nb, bi..bi + 1, &search);
        let candidate = best_setting_or(&table, chosen);
        let choice = if val.is_empty() {
            candidate
        } else {
            let vt = score_table(settings, nb, bi..bi + 1, &val);
            let (overall, candidate_score) = (score_of(&vt, chosen), score_of(&vt, candidate));
            let kept = candidate != chosen && candidate_score > overall + 1e-12;
            checks.push(BudgetValidation {
                budget,
                overall,
                candidate,
                candidate_score,
                kept,
            });
            if kept { candidate } else { chosen }
        };
        per_budget.push(BudgetChoice {
            budget,
            chosen: choice,
            table,
        });
    }
    let validation = (!val.is_empty()).then(|| Validation {
        prompts: val.len(),
        search_prompts: search.len(),
        table: score_table(settings, nb, 0..nb, &val),
        per_budget: checks,
    });
    Ok(TuneOutcome {
        tuning: Tuning {
            chosen,
            table,
            budgets: Vec::new(),
            per_budget,
            validation,
        },
        dropped,
    })
}

/// Scores as a share of the full cache's: a prompt the full cache does not answer says nothing
/// about what compression kept (a compressed cache that scores there scored by luck), so it is
/// dropped, and a score above the full cache's counts as the full cache's. Prompts without a
/// full-cache score (old checkpoints) keep their raw scores. If the full cache answers none of
/// the prompts (e.g. a random-weight test model), the raw scores are all there is.
fn relative_to_full(per_prompt: Vec<(String, Vec<f64>, Option<f64>)>) -> Vec<(String, Vec<f64>)> {
    let answered = per_prompt.iter().any(|(_, _, f)| f.is_none_or(|f| f > 0.0));
    per_prompt
        .into_iter()
        .filter_map(|(task, scores, full)| match full {
            Some(f) if answered && f <= 0.0 => None,
            Some(f) if answered => {
                Some((task, scores.iter().map(|&x| 100.0 * x.min(f) / f).collect()))
            }
            _ => Some((task, scores)),
        })
        .collect()
}

/// Mean score in `[0, 1]` of every setting: per task the mean over its prompts and the budgets
/// in `budgets` (indices into the grid's budgets), then the mean over tasks (so the needle and
/// passkey tasks weigh the same).
pub fn score_table(
    settings: &[Settings],
    n_budgets: usize,
    budgets: std::ops::Range<usize>,
    per_prompt: &[(String, Vec<f64>)],
) -> Vec<(Settings, f64)> {
    let mut tasks: Vec<&str> = per_prompt.iter().map(|(t, _)| t.as_str()).collect();
    tasks.sort_unstable();
    tasks.dedup();
    settings
        .iter()
        .enumerate()
        .map(|(si, s)| {
            let per_task: Vec<f64> = tasks
                .iter()
                .map(|t| {
                    let v: Vec<f64> = per_prompt
                        .iter()
                        .filter(|(pt, _)| pt == t)
                        .flat_map(|(_, sc)| {
                            sc[si * n_budgets + budgets.start..si * n_budgets + budgets.end]
                                .to_vec()
                        })
                        .collect();
                    v.iter().sum::<f64>() / v.len().max(1) as f64
                })
                .collect();
            let mean = per_task.iter().sum::<f64>() / per_task.len().max(1) as f64;
            (*s, mean / 100.0)
        })
        .collect()
}

/// The best setting at one budget; a tie with `overall` (the best over all budgets) goes to
/// `overall`, which more prompts back, and other ties to the earliest in grid order. When
/// several settings saturate a budget's held-out score, the earliest may be one that only just
/// does (a narrow kernel at a large budget) where the overall choice holds at every budget.
pub fn best_setting_or(table: &[(Settings, f64)], overall: Settings) -> Settings {
    let best = table
        .iter()
        .map(|(_, v)| *v)
        .fold(f64::NEG_INFINITY, f64::max);
    match table.iter().find(|(s, _)| *s == overall) {
        Some((_, v)) if *v >= best - 1e-12 => overall,
        _ => best_setting(table).unwrap_or(overall),
    }
}

/// The best setting; ties go to the earliest in grid order (the simplest).
pub fn best_setting(table: &[(Settings, f64)]) -> Option<Settings> {
    let mut best: Option<(Settings, f64)> = None;
    for &(s, v) in table {
        if best.is_none_or(|(_, b)| v > b + 1e-12) {
            best = Some((s, v));
        }
    }
    best.map(|(s, _)| s)
}

/// The tune step of a profile: held-out prompts from `held` over `haystack`, the grid searched
/// on them (checkpointed in `checkpoint`, resumable), and the outcome stored in `profile` with
/// its provenance.
#[allow(clippy::too_many_arguments)]
pub fn tune_profile(
    loaded: &LoadedModel,
    profile: &mut Profile,
    haystacks: &[(String, Haystack)],
    held: &HeldOut,
    grid: &TuneGrid,
    checkpoint: &Path,
    resume: bool,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<(), CalibError> {
    grid.check()?;
    let hays: Vec<&Haystack> = haystacks.iter().map(|(_, h)| h).collect();
    let prompts = held_out_prompts(loaded, &hays, held)?;
    let started = std::time::Instant::now();
    let outcome = tune(
        loaded, profile, &prompts, grid, checkpoint, resume, progress,
    )?;
    let validation = prompts.iter().filter(|p| p.validation).count();
    profile.tuning = Some(outcome.tuning);
    let names: Vec<&str> = haystacks.iter().map(|(n, _)| n.as_str()).collect();
    let ruler: Vec<&str> = held.ruler.iter().map(|t| t.name()).collect();
    profile.provenance.grid = format!(
        "{}; tune: {} held-out {:?}-format prompts ({} needles x lengths {:?} x depths {:?}, {} \
         passkey(s) each, RULER tasks {:?}, haystacks {:?}; {} of them the validation split), \
         srh_heads 1..={} x windows {:?} x kernels {:?} x mixes {:?} x unions {:?} x error \
         weights {:?} at budgets {:?}, scored relative to the full cache ({} prompt(s) it missed \
         left out), {:.0} s",
        profile
            .provenance
            .grid
            .split("; tune:")
            .next()
            .unwrap_or_default(),
        prompts.len(),
        held.protocol,
        held.needles.len(),
        held.lengths,
        held.depths,
        held.passkeys,
        ruler,
        names,
        validation,
        loaded.spec.n_heads,
        grid.axes.window,
        grid.axes.kernel,
        grid.axes.mix,
        grid.axes.union,
        grid.axes.error_weight,
        grid.budgets,
        outcome.dropped,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SRH heads 1 or 2 (nothing else varies) at budgets 64 and 128.
    fn two_settings_two_budgets() -> TuneGrid {
        TuneGrid {
            axes: Axes {
                srh_heads: vec![1, 2],
                window: vec![8],
                kernel: vec![5],
                mix: vec![0.0],
                union: vec![0.0],
                error_weight: vec![1.0],
            },
            budgets: vec![64, 128],
        }
    }

    #[test]
    fn tasks_weigh_the_same_and_ties_go_to_the_simplest_setting() {
        let grid = two_settings_two_budgets();
        let settings = grid.settings();
        assert_eq!(settings.len(), 2);
        // Scores per prompt: [s1@64, s1@128, s2@64, s2@128].
        let per_prompt = vec![
            ("needle".to_string(), vec![100.0, 100.0, 50.0, 100.0]),
            ("needle".to_string(), vec![100.0, 100.0, 50.0, 100.0]),
            ("passkey".to_string(), vec![0.0, 0.0, 100.0, 100.0]),
        ];
        let t = score_table(&settings, 2, 0..2, &per_prompt);
        // s1: needle 100, passkey 0 → 0.5; s2: needle 75, passkey 100 → 0.875.
        assert!((t[0].1 - 0.5).abs() < 1e-12);
        assert!((t[1].1 - 0.875).abs() < 1e-12);
        assert_eq!(best_setting(&t).unwrap().srh_heads, 2);
        // At budget 64 alone: s1 0.5, s2 (50 + 100) / 2 = 0.75; at 128: s1 0.5, s2 1.0.
        let t64 = score_table(&settings, 2, 0..1, &per_prompt);
        assert!((t64[1].1 - 0.75).abs() < 1e-12);
        let t128 = score_table(&settings, 2, 1..2, &per_prompt);
        assert!((t128[1].1 - 1.0).abs() < 1e-12);
        let tie = vec![(settings[0], 0.5), (settings[1], 0.5)];
        assert_eq!(best_setting(&tie).unwrap().srh_heads, 1);
        // A budget's tie goes to the overall choice; a strictly better setting still wins.
        assert_eq!(best_setting_or(&tie, settings[1]).srh_heads, 2);
        let better = vec![(settings[0], 0.75), (settings[1], 0.5)];
        assert_eq!(best_setting_or(&better, settings[1]).srh_heads, 1);
    }

    #[test]
    fn scores_are_relative_to_the_full_cache() {
        let p = |t: &str, s: Vec<f64>, f: Option<f64>| (t.to_string(), s, f);
        let rel = relative_to_full(vec![
            p("needle", vec![50.0, 100.0], Some(50.0)), // capped at the full cache's score
            p("needle", vec![100.0, 0.0], Some(0.0)),   // full cache fails: dropped
            p("passkey", vec![0.0, 100.0], Some(100.0)),
            p("passkey", vec![25.0, 75.0], None), // old checkpoint: raw
        ]);
        assert_eq!(
            rel,
            vec![
                ("needle".to_string(), vec![100.0, 100.0]),
                ("passkey".to_string(), vec![0.0, 100.0]),
                ("passkey".to_string(), vec![25.0, 75.0]),
            ]
        );
        // Nothing answered by the full cache: raw scores.
        let raw = relative_to_full(vec![p("needle", vec![10.0], Some(0.0))]);
        assert_eq!(raw, vec![("needle".to_string(), vec![10.0])]);
    }

    /// The search split picks s2 overall (it wins at 128) and s1 at 64; on the validation split
    /// s1 is no better than s2 at 64, so the budget keeps the overall choice; a split where s1
    /// also wins at 64 keeps it. Validation prompts never move the overall choice.
    #[test]
    fn a_budget_keeps_its_own_choice_only_where_validation_agrees() {
        let grid = two_settings_two_budgets();
        let settings = grid.settings();
        let p = |scores: [f64; 4], validation: bool| PromptScores {
            task: "needle".into(),
            scores: scores.to_vec(),
            full: Some(100.0),
            validation,
        };
        // Scores: [s1@64, s1@128, s2@64, s2@128]. Search: s1 (100+0)/2 = 50, s2 (50+100)/2 = 75.
        let search = p([100.0, 0.0, 50.0, 100.0], false);
        let out = tuning_from(
            vec![search.clone(), p([50.0, 0.0, 50.0, 100.0], true)],
            &settings,
            &[64, 128],
        )
        .unwrap();
        let t = out.tuning;
        assert_eq!(t.chosen, settings[1]);
        let v = t.validation.as_ref().unwrap();
        assert_eq!((v.prompts, v.search_prompts), (1, 1));
        assert_eq!(v.per_budget[0].candidate, settings[0]);
        assert_eq!(
            (v.per_budget[0].overall, v.per_budget[0].candidate_score),
            (0.5, 0.5)
        );
        assert!(
            !v.per_budget[0].kept,
            "a tie on validation keeps the overall choice"
        );
        assert_eq!(t.per_budget[0].chosen, settings[1]);
        assert!(!v.per_budget[1].kept && v.per_budget[1].candidate == settings[1]);
        // The validation table scores every setting over all budgets: s1 25%, s2 75%.
        assert_eq!(v.table, vec![(settings[0], 0.25), (settings[1], 0.75)]);

        let agrees = tuning_from(
            vec![search.clone(), p([100.0, 0.0, 0.0, 100.0], true)],
            &settings,
            &[64, 128],
        )
        .unwrap()
        .tuning;
        assert!(agrees.validation.as_ref().unwrap().per_budget[0].kept);
        assert_eq!(agrees.per_budget[0].chosen, settings[0]);

        // No validation split: the search split's per-budget best, as before.
        let none = tuning_from(vec![search], &settings, &[64, 128])
            .unwrap()
            .tuning;
        assert!(none.validation.is_none());
        assert_eq!(none.per_budget[0].chosen, settings[0]);
        // Only validation prompts: nothing to choose from.
        assert!(tuning_from(vec![p([1.0; 4], true)], &settings, &[64, 128]).is_err());
    }
}
