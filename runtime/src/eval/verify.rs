//! The check behind `compresskv profile verify`: that a profile fits the model, then CompressKV
//! at each budget against the full cache on held-out needle prompts, and the smallest budget
//! that keeps a target share of the full cache's score (what `--budget auto` reads once it is
//! stored in the profile with [`VerifyReport::apply_to`]).
//!
//! The prompts are held out: the default needle is one the tune never used, the passkeys are
//! seeded apart from the tune's and `eval niah`'s, and the default haystack is noise.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::eval::niah::run::{NiahGrid, NiahRow, NiahRunError, run_niah, summarize, task_name};
use crate::eval::niah::{Haystack, Needle, NiahError, Protocol, Task, load_needles};
use crate::eval::run::{Contender, contender_grid};
use crate::loader::LoadedModel;
use crate::press::Compressor;
use crate::profile::{
    BudgetRecommendation, NoRecommendation, Profile, ProfileError, ProfileSource, recommend_budget,
    sha256_hex, skipped_below, utc_now,
};

/// Base seed of the passkeys: `eval niah` uses 0 and the tune 1000, so these keys are new to
/// both.
pub const PASSKEY_SEED: u64 = 2_000;

/// The method whose budgets are verified (the one `--budget auto` is meant for).
pub const METHOD: &str = "compresskv";

/// The held-out task: needles (recall of the answer's words) or passkeys (exact match of a
/// 5-digit key). RULER's tasks are `eval niah`'s, not a budget check's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyTask {
    Needle,
    Passkey,
}

impl VerifyTask {
    /// The NIAH task it runs.
    pub fn task(self) -> Task {
        match self {
            VerifyTask::Needle => Task::Needle,
            VerifyTask::Passkey => Task::Passkey,
        }
    }
}

/// Why a verification stopped.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("profile {profile} does not fit {model}")]
    Misfit {
        profile: String,
        model: String,
        #[source]
        source: Box<ProfileError>,
    },
    #[error(
        "profile {profile} does not fit {model}: {detail}. Fix: make a profile for these weights \
         with `compresskv profile --model {model}`, or pass `--profile PATH`"
    )]
    OtherWeights {
        profile: String,
        model: String,
        detail: String,
    },
    #[error("reading --needles {}", path.display())]
    Needles {
        path: PathBuf,
        #[source]
        source: NiahError,
    },
    #[error("reading --needles {}", path.display())]
    NeedlesBytes {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating --out {}", dir.display())]
    RowsDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Prompts(#[from] NiahError),
    #[error(transparent)]
    Run(#[from] NiahRunError),
    #[error(transparent)]
    Profile(Box<ProfileError>),
    #[error("no full-cache answers were made (a bug: the full cache always runs)")]
    NoFullCache,
}

impl From<ProfileError> for VerifyError {
    fn from(e: ProfileError) -> Self {
        VerifyError::Profile(Box::new(e))
    }
}

/// A profile checked to fit a model, and what was checked (for the report). Only
/// [`check_fits`] makes one, so a verification never measures a profile made for other weights.
#[derive(Debug, Clone)]
pub struct Fitted<'a> {
    profile: &'a Profile,
    fits: String,
}

impl Fitted<'_> {
    /// What was checked, e.g. `gemma3, 18 layers × …; config sha256 matches; weight sha256
    /// matches`.
    pub fn fits(&self) -> &str {
        &self.fits
    }
}

/// Checks that `profile` (from `source`) was made for `loaded`: its shape, its config hash and,
/// where the profile records one, its weight hash. Verify is the strict check: other weights
/// are an error here, not the warning `generate` gives. `model` is the model as the user named
/// it (for the messages).
pub fn check_fits<'a>(
    profile: &'a Profile,
    source: &ProfileSource,
    loaded: &LoadedModel,
    model: &str,
) -> Result<Fitted<'a>, VerifyError> {
    let config_hash = sha256_hex(loaded.config_text.as_bytes());
    profile
        .check_matches(&loaded.spec, &loaded.id, Some(&config_hash))
        .map_err(|e| VerifyError::Misfit {
            profile: source.to_string(),
            model: model.to_string(),
            source: Box::new(e),
        })?;
    if let Some(detail) = profile.weight_mismatch(loaded.model.weight_hash()) {
        return Err(VerifyError::OtherWeights {
            profile: source.to_string(),
            model: model.to_string(),
            detail,
        });
    }
    let weights = match (
        profile.fingerprint.weight_hash.is_empty(),
        loaded.model.weight_hash(),
    ) {
        (false, Some(_)) => "weight sha256 matches",
        (true, _) => "no weight hash recorded",
        (false, None) => "weight hash not computed for this model",
    };
    let fits = format!(
        "{}; config sha256 matches; {weights}",
        profile.fingerprint.describe()
    );
    Ok(Fitted { profile, fits })
}

/// The needles of the prompts, with the name the report gives them and the bytes the rows
/// file's key hashes.
#[derive(Debug, Clone)]
pub struct HeldOutNeedles {
    pub needles: Vec<Needle>,
    /// `built-in San Francisco` or the file's name (profiles never record machine-local paths).
    pub name: String,
    bytes: Vec<u8>,
}

impl HeldOutNeedles {
    /// The peer baseline's San Francisco needle, which the tune never used.
    pub fn built_in() -> Self {
        let n = Needle::san_francisco();
        let bytes = format!("{}\n{}\n{}", n.needle, n.question, n.answer).into_bytes();
        HeldOutNeedles {
            needles: vec![n],
            name: "built-in San Francisco".into(),
            bytes,
        }
    }

    /// A needles jsonl (`needle`, `question`, `answer`): one prompt per needle × length × depth.
    pub fn from_file(path: &Path) -> Result<Self, VerifyError> {
        let needles = load_needles(path).map_err(|source| VerifyError::Needles {
            path: path.into(),
            source,
        })?;
        let bytes = std::fs::read(path).map_err(|source| VerifyError::NeedlesBytes {
            path: path.into(),
            source,
        })?;
        Ok(HeldOutNeedles {
            needles,
            name: file_name(path),
            bytes,
        })
    }
}

/// Where the answers are kept.
#[derive(Debug, Clone)]
pub enum RowsAt {
    /// `<dir>/verify-<key>.jsonl`, kept: a rerun with the same directory skips the answers it
    /// has (the key covers model, profile and prompts).
    Dir(PathBuf),
    /// A file in the temporary directory, removed after the run.
    Temporary,
}

impl RowsAt {
    /// The rows file for `key`, its directory created.
    fn path(&self, key: &str) -> Result<PathBuf, VerifyError> {
        match self {
            RowsAt::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| VerifyError::RowsDir {
                    dir: dir.clone(),
                    source,
                })?;
                Ok(dir.join(format!("verify-{key}.jsonl")))
            }
            RowsAt::Temporary => Ok(std::env::temp_dir().join(format!(
                "compresskv-verify-{key}-{}.jsonl",
                std::process::id()
            ))),
        }
    }
}

/// The contenders a verification runs: the full cache, and [`METHOD`] at each budget with the
/// compressor `make(method, budget)` builds (the caller owns the press settings).
pub fn contenders<E>(
    budgets: &[usize],
    make: impl FnMut(&str, usize) -> Result<Compressor, E>,
) -> Result<Vec<Contender>, E> {
    contender_grid(&["full".into(), METHOD.into()], budgets, None, make)
}

/// What to verify.
pub struct VerifyPlan<'a> {
    pub profile: Fitted<'a>,
    pub task: VerifyTask,
    /// Prompt lengths in tokens and needle depths in percent.
    pub lengths: &'a [usize],
    pub depths: &'a [f64],
    pub haystack: &'a Haystack,
    /// How the haystack was given: `noise` or the directory it was read from (reported by its
    /// last component only).
    pub haystack_arg: &'a str,
    /// Used by the needle task only (passkey prompts hide a seeded key instead).
    pub needles: &'a HeldOutNeedles,
    /// The budgets measured, ascending and deduplicated (the report's lines follow this order).
    pub budgets: &'a [usize],
    /// From [`contenders`] with the same budgets.
    pub contenders: &'a [Contender],
    /// The share of the full cache's score the recommended budget must keep, in (0, 1].
    pub target: f64,
    pub rows: RowsAt,
}

/// What a verification reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum VerifyProgress<'a> {
    /// The prompts are built: this many will run.
    Prompts(usize),
    /// One prompt starts (its length and depth).
    Prompt(&'a str),
}

/// One budget's line of the report.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct BudgetLine {
    pub budget: usize,
    /// Mean score of CompressKV at this budget (the metric's scale: recall or exact match in
    /// percent).
    pub score: f64,
    /// Its share of the full cache's mean score (`None` when the full cache scored 0).
    pub share: Option<f64>,
    pub meets_target: bool,
    pub kv_cache_bytes: f64,
}

/// The full cache's mean score and KV bytes, what every budget is measured against.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct FullCache {
    pub score: f64,
    pub kv_cache_bytes: f64,
}

/// What a verification found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// What [`check_fits`] checked.
    pub fits: String,
    /// What the prompts were (task, protocol, haystack and needles by name).
    pub prompts: String,
    pub n_prompts: usize,
    pub full: FullCache,
    /// One line per budget, in the plan's order.
    pub budgets: Vec<BudgetLine>,
    /// The smallest budget keeping the target from there up, or why there is none.
    pub recommendation: Result<BudgetRecommendation, NoRecommendation>,
    /// A smaller budget that reached the target on its own but was not recommended because a
    /// larger one fell short (the shares are noisy at few prompts).
    pub skipped: Option<usize>,
    /// The rows file, when kept ([`RowsAt::Dir`]).
    pub rows_file: Option<PathBuf>,
}

/// What storing a report's outcome in a profile changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// This run's recommendation is stored (replacing any earlier one).
    Stored,
    /// There is no recommendation this time, so the earlier one (returned), which this
    /// measurement contradicts, was removed.
    Dropped(BudgetRecommendation),
    /// No recommendation, and there was none before: nothing to save.
    Unchanged,
}

impl VerifyReport {
    /// Stores the recommendation in `profile`, or removes a stale one when there is none; the
    /// caller saves the profile unless nothing changed.
    pub fn apply_to(&self, profile: &mut Profile) -> Applied {
        match (&self.recommendation, profile.recommendation.take()) {
            (Ok(r), _) => {
                profile.recommendation = Some(r.clone());
                Applied::Stored
            }
            (Err(_), Some(previous)) => Applied::Dropped(previous),
            (Err(_), None) => Applied::Unchanged,
        }
    }
}

/// Builds the held-out prompts, answers each with the full cache and CompressKV at every
/// budget (skipping answers the rows file already has), and recommends a budget.
pub fn run(
    loaded: &LoadedModel,
    plan: &VerifyPlan,
    progress: &mut dyn FnMut(VerifyProgress),
) -> Result<VerifyReport, VerifyError> {
    let grid = NiahGrid {
        task: plan.task.task(),
        protocol: Protocol::Peer,
        lengths: plan.lengths,
        depths: plan.depths,
        needles: &plan.needles.needles,
        passkeys: 1,
        seed: PASSKEY_SEED,
        ruler_words: None,
    };
    let samples = grid.samples(loaded, plan.haystack)?;
    let key = rows_key(&KeyInputs {
        model_id: &loaded.id,
        weight_hash: loaded.model.weight_hash().unwrap_or(""),
        config_text: &loaded.config_text,
        profile: plan.profile.profile,
        haystack_text: plan.haystack.text(),
        needles: &plan.needles.bytes,
        task: plan.task.task(),
    })?;
    let rows_path = plan.rows.path(&key)?;
    progress(VerifyProgress::Prompts(samples.len()));
    let rows = run_niah(
        loaded,
        plan.task.task(),
        &samples,
        plan.contenders,
        &rows_path,
        None,
        &mut |msg| progress(VerifyProgress::Prompt(msg)),
    );
    let kept = matches!(plan.rows, RowsAt::Dir(_));
    if !kept {
        let _ = std::fs::remove_file(&rows_path);
    }
    plan.report(&rows?, samples.len(), kept.then_some(rows_path))
}

impl VerifyPlan<'_> {
    /// What the prompts are, as the report and the stored recommendation name them.
    fn describe_prompts(&self) -> String {
        let haystack = if self.haystack_arg == "noise" {
            "noise".to_string()
        } else {
            format!(
                "{} ({} files)",
                file_name(Path::new(self.haystack_arg)),
                self.haystack.files().len()
            )
        };
        match self.task {
            VerifyTask::Needle => format!(
                "needle task, peer protocol; haystack {haystack}; needles {} ({})",
                self.needles.name,
                self.needles.needles.len()
            ),
            VerifyTask::Passkey => {
                format!("passkey task, peer protocol; haystack {haystack}; seed {PASSKEY_SEED}")
            }
        }
    }

    /// Summarises the answers per budget and recommends a budget.
    fn report(
        &self,
        rows: &[NiahRow],
        n_prompts: usize,
        rows_file: Option<PathBuf>,
    ) -> Result<VerifyReport, VerifyError> {
        let summary = summarize(rows, self.lengths);
        let full = summary
            .iter()
            .find(|s| s.method == "full")
            .ok_or(VerifyError::NoFullCache)?;
        let full = FullCache {
            score: full.mean_score,
            kv_cache_bytes: full.mean_kv_cache_bytes,
        };
        let budgets: Vec<BudgetLine> = self
            .budgets
            .iter()
            .filter_map(|&b| {
                let s = summary
                    .iter()
                    .find(|s| s.method == METHOD && s.budget == Some(b))?;
                Some(budget_line(
                    b,
                    s.mean_score,
                    s.mean_kv_cache_bytes,
                    full.score,
                    self.target,
                ))
            })
            .collect();
        let shares: Vec<(usize, f64)> = budgets
            .iter()
            .map(|l| (l.budget, l.share.unwrap_or(0.0)))
            .collect();
        let choice = recommend_budget(&shares, full.score, self.target);
        let skipped = choice
            .as_ref()
            .ok()
            .and_then(|&b| skipped_below(&shares, b, self.target));
        let prompts = self.describe_prompts();
        let recommendation = choice.map(|budget| BudgetRecommendation {
            target: self.target,
            budget,
            method: METHOD.into(),
            lengths: self.lengths.to_vec(),
            depths: self.depths.to_vec(),
            prompts: prompts.clone(),
            full_score: full.score,
            shares,
            created: utc_now(),
        });
        Ok(VerifyReport {
            fits: self.profile.fits.clone(),
            prompts,
            n_prompts,
            full,
            budgets,
            recommendation,
            skipped,
            rows_file,
        })
    }
}

/// One budget's line: its score's share of the full cache's and whether that meets `target`.
fn budget_line(
    budget: usize,
    score: f64,
    kv_cache_bytes: f64,
    full_score: f64,
    target: f64,
) -> BudgetLine {
    let share = (full_score > 0.0).then(|| score / full_score);
    BudgetLine {
        budget,
        score,
        share,
        meets_target: share.is_some_and(|x| x >= target - 1e-9),
        kv_cache_bytes,
    }
}

/// Everything the answers depend on.
struct KeyInputs<'a> {
    model_id: &'a str,
    weight_hash: &'a str,
    config_text: &'a str,
    profile: &'a Profile,
    haystack_text: &'a str,
    needles: &'a [u8],
    task: Task,
}

/// The rows file's key: a hash of everything the answers depend on, so a rerun in the same
/// directory resumes only answers made with this model, profile and these prompts. The
/// profile's recommendation is left out: storing one (`--write`) does not change the answers.
fn rows_key(k: &KeyInputs) -> Result<String, ProfileError> {
    let mut keyed = k.profile.clone();
    keyed.recommendation = None;
    let mut text = format!(
        "{}\n{}\n{}\n{}\n",
        k.model_id,
        k.weight_hash,
        sha256_hex(k.config_text.as_bytes()),
        keyed.to_ron_string()?
    );
    text.push_str(&sha256_hex(k.haystack_text.as_bytes()));
    text.push_str(&sha256_hex(k.needles));
    text.push_str(task_name(k.task));
    Ok(sha256_hex(text.as_bytes())[..12].to_string())
}

/// The last component of a path (profiles never record machine-local paths).
fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || "(unnamed)".to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::sample;

    fn key_of(profile: &Profile, haystack: &str, needles: &[u8], task: Task) -> String {
        rows_key(&KeyInputs {
            model_id: "google/gemma-3-270m",
            weight_hash: "abc",
            config_text: "{}",
            profile,
            haystack_text: haystack,
            needles,
            task,
        })
        .unwrap()
    }

    fn recommendation(budget: usize) -> BudgetRecommendation {
        BudgetRecommendation {
            target: 0.9,
            budget,
            method: METHOD.into(),
            lengths: vec![1024],
            depths: vec![50.0],
            prompts: "test".into(),
            full_score: 80.0,
            shares: vec![(budget, 1.0)],
            created: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn rows_key_follows_profile_and_prompts_but_not_the_stored_recommendation() {
        let p = sample();
        let base = key_of(&p, "hay", b"needle", Task::Needle);
        assert_eq!(base.len(), 12);
        assert_eq!(base, key_of(&p, "hay", b"needle", Task::Needle));
        let mut with = p.clone();
        with.recommendation = Some(recommendation(64));
        assert_eq!(base, key_of(&with, "hay", b"needle", Task::Needle));
        let mut other = p.clone();
        other.provenance.seed += 1;
        assert_ne!(base, key_of(&other, "hay", b"needle", Task::Needle));
        assert_ne!(base, key_of(&p, "hay2", b"needle", Task::Needle));
        assert_ne!(base, key_of(&p, "hay", b"needle2", Task::Needle));
        assert_ne!(base, key_of(&p, "hay", b"needle", Task::Passkey));
    }

    fn report_with(recommendation: Result<BudgetRecommendation, NoRecommendation>) -> VerifyReport {
        VerifyReport {
            fits: String::new(),
            prompts: String::new(),
            n_prompts: 1,
            full: FullCache {
                score: 80.0,
                kv_cache_bytes: 1.0,
            },
            budgets: Vec::new(),
            recommendation,
            skipped: None,
            rows_file: None,
        }
    }

    #[test]
    fn applying_stores_replaces_drops_or_leaves_the_recommendation() {
        let mut p = sample();
        assert_eq!(
            report_with(Ok(recommendation(128))).apply_to(&mut p),
            Applied::Stored
        );
        assert_eq!(p.recommendation.as_ref().map(|r| r.budget), Some(128));
        assert_eq!(
            report_with(Ok(recommendation(64))).apply_to(&mut p),
            Applied::Stored
        );
        assert_eq!(p.recommendation.as_ref().map(|r| r.budget), Some(64));
        let none = report_with(Err(NoRecommendation::FullScoresZero));
        assert_eq!(none.apply_to(&mut p), Applied::Dropped(recommendation(64)));
        assert!(p.recommendation.is_none());
        assert_eq!(none.apply_to(&mut p), Applied::Unchanged);
        assert!(p.recommendation.is_none());
    }

    fn row(method: &str, budget: Option<usize>, depth: f64, score: f64) -> NiahRow {
        NiahRow {
            task: "needle".into(),
            protocol: "peer".into(),
            method: method.into(),
            budget,
            length: 1024,
            depth,
            sample: 0,
            seed: None,
            reference: String::new(),
            answer: String::new(),
            score,
            prompt_tokens: 1024,
            needle_token_start: 0,
            prefill_ms: 0.0,
            compress_ms: 0.0,
            decode_ms: 0.0,
            kv_cache_bytes_full: 100,
            kv_cache_bytes: budget.unwrap_or(100),
        }
    }

    /// Reports on `rows` with a plan over budgets 64 and 128 at target 0.9.
    fn report_on(rows: &[NiahRow], task: VerifyTask) -> VerifyReport {
        let profile = sample();
        let haystack = Haystack::noise();
        let needles = HeldOutNeedles::built_in();
        let plan = VerifyPlan {
            profile: Fitted {
                profile: &profile,
                fits: "checked".into(),
            },
            task,
            lengths: &[1024],
            depths: &[10.0, 90.0],
            haystack: &haystack,
            haystack_arg: "noise",
            needles: &needles,
            budgets: &[64, 128],
            contenders: &[],
            target: 0.9,
            rows: RowsAt::Temporary,
        };
        plan.report(rows, 2, None).unwrap()
    }

    #[test]
    fn the_report_recommends_the_smallest_budget_keeping_the_target() {
        let rows = [
            row("full", None, 10.0, 100.0),
            row("full", None, 90.0, 60.0),
            row(METHOD, Some(64), 10.0, 50.0),
            row(METHOD, Some(64), 90.0, 30.0),
            row(METHOD, Some(128), 10.0, 100.0),
            row(METHOD, Some(128), 90.0, 50.0),
        ];
        let r = report_on(&rows, VerifyTask::Needle);
        assert_eq!(r.fits, "checked");
        assert_eq!(
            r.prompts,
            "needle task, peer protocol; haystack noise; needles built-in San Francisco (1)"
        );
        assert_eq!(r.full.score, 80.0);
        let got: Vec<(usize, Option<f64>, bool)> = r
            .budgets
            .iter()
            .map(|l| (l.budget, l.share, l.meets_target))
            .collect();
        assert_eq!(
            got,
            vec![(64, Some(0.5), false), (128, Some(75.0 / 80.0), true)]
        );
        let rec = r.recommendation.unwrap();
        assert_eq!(rec.budget, 128);
        assert_eq!(rec.shares, vec![(64, 0.5), (128, 75.0 / 80.0)]);
        assert_eq!(rec.prompts, r.prompts);
        assert_eq!(r.skipped, None);
    }

    #[test]
    fn a_full_cache_scoring_zero_gives_no_shares_and_no_recommendation() {
        let rows = [
            row("full", None, 10.0, 0.0),
            row(METHOD, Some(64), 10.0, 0.0),
            row(METHOD, Some(128), 10.0, 0.0),
        ];
        let r = report_on(&rows, VerifyTask::Passkey);
        assert!(r.prompts.starts_with("passkey task"), "{}", r.prompts);
        assert!(
            r.budgets
                .iter()
                .all(|l| l.share.is_none() && !l.meets_target)
        );
        assert_eq!(r.recommendation, Err(NoRecommendation::FullScoresZero));
    }

    #[test]
    fn needles_from_a_missing_file_name_the_flag() {
        let e = HeldOutNeedles::from_file(Path::new("/nonexistent/needles.jsonl")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "reading --needles /nonexistent/needles.jsonl"
        );
    }
}
