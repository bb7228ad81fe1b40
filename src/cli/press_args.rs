//! Compression flags shared by `generate`, `demo`, `eval` and `bench`.

use anyhow::Context;
use clap::{Args, ValueEnum};
use compresskv_runtime::loader::LoadedModel;
use compresskv_runtime::press::budget::ErrorAwareParams;
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::press::{Compressor, PressParams, SlidingPolicy, press_by_name};
use compresskv_runtime::profile::{Effective, Overrides, ProfileSource};

use super::profile_load::{load_head_profile, recommended_budget};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sliding {
    #[default]
    Keep,
    Compress,
}

/// A budget flag's value: mean KV entries kept per compressed layer, or `auto`, the budget the
/// model's profile recommends (`compresskv profile verify --write`). Parsed here for every
/// command; [`PressTuning::resolve_budgets`] turns `auto` into a number once the model is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BudgetArg {
    Entries(usize),
    Auto,
}

impl std::str::FromStr for BudgetArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(BudgetArg::Auto);
        }
        s.parse::<usize>().map(BudgetArg::Entries).map_err(|_| {
            format!(
                "`{s}` is not a budget: give KV entries per layer (e.g. 128) or `auto` (the \
                 profile's recommended budget, from `compresskv profile verify --write`)"
            )
        })
    }
}

impl std::fmt::Display for BudgetArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetArg::Entries(n) => write!(f, "{n}"),
            BudgetArg::Auto => write!(f, "auto"),
        }
    }
}

/// The methods and budgets an evaluation compares (`eval niah`, `eval longbench`).
#[derive(Args, Debug, Clone)]
pub struct Contenders {
    /// Methods, comma-separated; `full` runs once per prompt (no budget).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "full,streamingllm,snapkv,pyramidkv,adakv,compresskv"
    )]
    pub methods: Vec<String>,
    /// Mean KV entries kept per compressed layer, comma-separated; `auto` is the profile's
    /// recommendation.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    pub budgets: Vec<BudgetArg>,
}

/// The method and its budget (`generate`, `demo`); eval and bench take lists instead.
#[derive(Args, Debug, Clone)]
pub struct PressArgs {
    /// Compression method: full, streamingllm, snapkv, pyramidkv, adakv, compresskv.
    #[arg(long, default_value = "full")]
    pub method: String,
    /// Mean KV entries kept per compressed layer, or `auto` (the profile's recommendation).
    #[arg(long, conflicts_with = "ratio")]
    pub budget: Option<BudgetArg>,
    /// Fraction of the prompt kept per compressed layer.
    #[arg(long)]
    pub ratio: Option<f64>,
    #[command(flatten)]
    pub tuning: PressTuning,
}

/// Settings every method shares; unset values come from the profile (compresskv) or the
/// method's defaults.
#[derive(Args, Debug, Clone, Default)]
pub struct PressTuning {
    /// `auto` (next to the weights, $COMPRESSKV_PROFILES, <cache>/profiles/, then the built-in
    /// profiles) or a path.
    #[arg(long, default_value = "auto")]
    pub profile: String,
    /// Refuse a profile whose recorded weight hash differs from the loaded weights' (by
    /// default that is a warning: same architecture and config, other weights — a fine-tune
    /// or another quantization).
    #[arg(long)]
    pub strict_profile: bool,
    /// Observation window (last prompt queries that score the entries; always kept).
    #[arg(long)]
    pub window: Option<usize>,
    /// Average-pooling kernel over the scores.
    #[arg(long)]
    pub kernel: Option<usize>,
    /// CompressKV: Semantic Retrieval Heads per layer.
    #[arg(long)]
    pub srh_heads: Option<usize>,
    /// CompressKV: blend with the all-heads score (0 = pure SRH, the paper).
    #[arg(long)]
    pub mix: Option<f64>,
    /// CompressKV: share of the kept entries ranked by all heads, merged with the SRH ranking
    /// (0 = pure SRH, the paper).
    #[arg(long)]
    pub union: Option<f64>,
    /// CompressKV: how far layer budgets follow the profile's layer errors (1 = the paper,
    /// 0 = uniform).
    #[arg(long)]
    pub error_weight: Option<f64>,
    /// Sliding-window layers: keep them (default) or compress them too.
    #[arg(long, value_enum, default_value = "keep")]
    pub sliding: Sliding,
}

impl PressArgs {
    /// The compressor and where its profile came from (`None`: the method reads no profile);
    /// `None` for `full` without a budget (plain generation).
    /// `model` is the `--model` given (for the message when `--budget auto` finds no
    /// recommendation); `quiet` silences the note saying what `auto` resolved to.
    pub fn compressor_with_source(
        &self,
        loaded: &LoadedModel,
        model: &str,
        quiet: bool,
    ) -> anyhow::Result<Option<(Compressor, Option<ProfileSource>)>> {
        let budget = match (self.budget, self.ratio) {
            (Some(b), _) => {
                BudgetSpec::Entries(self.tuning.resolve_budgets(loaded, model, &[b], quiet)?[0])
            }
            (None, Some(r)) => BudgetSpec::Ratio(r),
            (None, None) if self.method == "full" => return Ok(None),
            (None, None) => anyhow::bail!(
                "--method {} needs --budget N (KV entries per layer) or --ratio R",
                self.method
            ),
        };
        self.tuning
            .compressor_with_source(loaded, &self.method, budget)
            .map(Some)
    }
}

impl PressTuning {
    /// `budgets` with `auto` replaced by the recommendation of the profile `--profile` names
    /// (read only when `auto` is asked for), repeats dropped, order kept. Unless `quiet`, says
    /// on stderr what `auto` stands for.
    pub fn resolve_budgets(
        &self,
        loaded: &LoadedModel,
        model: &str,
        budgets: &[BudgetArg],
        quiet: bool,
    ) -> anyhow::Result<Vec<usize>> {
        let auto = if budgets.contains(&BudgetArg::Auto) {
            let (r, source) = recommended_budget(loaded, &self.profile, model)?;
            if !quiet {
                eprintln!(
                    "--budget auto = {}, the recommendation of {source} (keeps {:.0}% of the \
                     full cache's score, target {:.0}%; `profile verify`, {})",
                    r.budget,
                    100.0
                        * r.shares
                            .iter()
                            .find(|(b, _)| *b == r.budget)
                            .map_or(f64::NAN, |s| s.1),
                    100.0 * r.target,
                    r.created
                );
            }
            Some(r.budget)
        } else {
            None
        };
        let mut out: Vec<usize> = Vec::new();
        for b in budgets {
            let n = match b {
                BudgetArg::Entries(n) => *n,
                BudgetArg::Auto => auto.expect("resolved above"),
            };
            if !out.contains(&n) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// The settings these flags override.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            srh_heads: self.srh_heads,
            window: self.window,
            kernel: self.kernel,
            mix: self.mix,
            union: self.union,
            error_weight: self.error_weight,
        }
    }

    /// The compressor of `method` at `budget` with these settings.
    pub fn compressor(
        &self,
        loaded: &LoadedModel,
        method: &str,
        budget: BudgetSpec,
    ) -> anyhow::Result<Compressor> {
        Ok(self.compressor_with_source(loaded, method, budget)?.0)
    }

    /// [`Self::compressor`], with where its profile came from (`None`: the method reads none).
    pub fn compressor_with_source(
        &self,
        loaded: &LoadedModel,
        method: &str,
        budget: BudgetSpec,
    ) -> anyhow::Result<(Compressor, Option<ProfileSource>)> {
        let press = press_by_name(method)?;
        let overrides = self.overrides();
        let (effective, profile, source) = if method == "compresskv" {
            let b = match budget {
                BudgetSpec::Entries(b) => Some(b),
                BudgetSpec::Ratio(_) => None,
            };
            let (hp, eff, src) =
                load_head_profile(loaded, &self.profile, b, self.strict_profile, &overrides)
                    .context("loading the model's profile")?;
            (eff, Some(hp), Some(src))
        } else {
            let eff = Effective::without_profile(loaded.spec.n_heads, &loaded.id, &overrides)?;
            (eff, None, None)
        };
        let sliding = match self.sliding {
            Sliding::Keep => SlidingPolicy::Keep,
            Sliding::Compress => SlidingPolicy::Compress,
        };
        let compressor = Compressor::new(
            press,
            PressParams::from(&effective.settings),
            budget,
            sliding,
            ErrorAwareParams::from(&effective),
            profile,
            &loaded.spec,
        )?;
        Ok((compressor, source))
    }
}
