//! The compression engine: after prefill, allocate layer budgets, let the press score each
//! compressed layer, keep the selection (physically), and report. It implements the generation
//! loop's [`CacheCompressor`], so generation never names a method.

use super::budget::{ErrorAwareParams, allocate};
use super::{HeadProfile, LayerView, Press, PressError, PressParams, select};
use crate::cache::KvCache;
use crate::generate::{CacheCompressor, CompressError, CompressionReport};
use crate::model::{CausalLM, WindowCapture};
use crate::spec::{AttentionKind, ModelSpec};

/// What happens to sliding-window layers (which already hold at most their window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingPolicy {
    /// Leave them as they are; compress the full-attention layers.
    Keep,
    /// Also compress them to the budget when it is below what they hold.
    Compress,
}

/// How much to keep: a mean budget per compressed layer, or a fraction of the prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetSpec {
    Entries(usize),
    Ratio(f64),
}

/// Layers a press shrinks under `sliding` (shared with the profiler, which measures eviction
/// errors on exactly these layers, and with `profile show --budget`).
pub fn compressed_layers(spec: &ModelSpec, sliding: SlidingPolicy) -> Vec<usize> {
    (0..spec.n_layers)
        .filter(|&l| {
            sliding == SlidingPolicy::Compress || spec.layers[l].attention == AttentionKind::Full
        })
        .collect()
}

/// Budgets of the compressed `layers` for a mean budget `b`, from the whole model's per-layer
/// error shares (`errors[layer]`); used by the engine and by `compresskv profile show --budget`.
pub fn layer_budgets(
    allocator: super::Allocator,
    layers: &[usize],
    b: usize,
    window: usize,
    error_aware: ErrorAwareParams,
    errors: Option<&[f64]>,
) -> (Vec<usize>, Option<String>) {
    let errs: Option<Vec<f64>> = errors.map(|e| layers.iter().map(|&l| e[l]).collect());
    allocate(
        allocator,
        layers.len(),
        b,
        window,
        error_aware,
        errs.as_deref(),
    )
}

pub struct Compressor {
    pub press: Box<dyn Press>,
    pub params: PressParams,
    pub budget: BudgetSpec,
    pub sliding: SlidingPolicy,
    pub error_aware: ErrorAwareParams,
    pub profile: Option<HeadProfile>,
}

impl Compressor {
    /// Validates the settings against the model before any work is done.
    pub fn new(
        press: Box<dyn Press>,
        params: PressParams,
        budget: BudgetSpec,
        sliding: SlidingPolicy,
        error_aware: ErrorAwareParams,
        profile: Option<HeadProfile>,
        spec: &ModelSpec,
    ) -> Result<Self, PressError> {
        match budget {
            BudgetSpec::Entries(0) => {
                return Err(PressError::BadBudget(
                    "--budget 0 keeps nothing: give a positive number of KV entries per layer"
                        .into(),
                ));
            }
            BudgetSpec::Entries(b) if b <= params.window && press.name() != "full" => {
                return Err(PressError::BadBudget(format!(
                    "--budget {b} is not larger than the observation window ({}), which is always \
                     kept: raise --budget or lower --window",
                    params.window
                )));
            }
            BudgetSpec::Ratio(r) if !(r > 0.0 && r <= 1.0) => {
                return Err(PressError::BadBudget(format!(
                    "--ratio {r} must be in (0, 1]"
                )));
            }
            _ => {}
        }
        if params.window == 0 {
            return Err(PressError::BadBudget("--window must be at least 1".into()));
        }
        if params.kernel == 0 || params.kernel.is_multiple_of(2) {
            return Err(PressError::BadBudget(format!(
                "--kernel {} must be odd (same padding)",
                params.kernel
            )));
        }
        if !(error_aware.error_weight.is_finite()
            && (0.0..=1.0).contains(&error_aware.error_weight))
        {
            return Err(PressError::BadBudget(format!(
                "--error-weight {} must be between 0 (uniform layer budgets) and 1 (from the \
                 layer errors)",
                error_aware.error_weight
            )));
        }
        press.check(spec, profile.as_ref(), &params)?;
        Ok(Compressor {
            press,
            params,
            budget,
            sliding,
            error_aware,
            profile,
        })
    }

    /// Layers this compressor may shrink.
    pub fn compressed_layers(&self, spec: &ModelSpec) -> Vec<usize> {
        compressed_layers(spec, self.sliding)
    }

    fn mean_budget(&self, prompt_len: usize) -> usize {
        match self.budget {
            BudgetSpec::Entries(b) => b,
            BudgetSpec::Ratio(r) => ((prompt_len as f64 * r).round() as usize).max(1),
        }
    }
}

impl CacheCompressor for Compressor {
    fn window(&self) -> usize {
        self.params.window
    }

    fn compress(
        &self,
        model: &dyn CausalLM,
        cache: &mut KvCache,
        capture: &WindowCapture,
        prompt_len: usize,
    ) -> Result<CompressionReport, CompressError> {
        let spec = model.spec();
        let mut report = CompressionReport {
            method: self.press.name().to_string(),
            ..Default::default()
        };
        let b = self.mean_budget(prompt_len);
        if b <= self.params.window && self.press.name() != "full" {
            return Err(CompressError::BudgetNotAboveWindow {
                budget: b,
                window: self.params.window,
            });
        }
        let layers = self.compressed_layers(spec);
        let errors = self
            .profile
            .as_ref()
            .and_then(|p| p.layer_errors.as_deref());
        let (budgets, note) = layer_budgets(
            self.press.allocator(),
            &layers,
            b,
            self.params.window,
            self.error_aware,
            errors,
        );
        report.notes.extend(note);
        if prompt_len <= b {
            report.notes.push(format!(
                "prompt ({prompt_len} tokens) fits the budget ({b}): not compressed"
            ));
        } else {
            for (&l, &budget) in layers.iter().zip(&budgets) {
                let lc = &cache.layers[l];
                if lc.positions().len() <= budget {
                    continue;
                }
                let (q, qpos) = capture
                    .tail(l, self.params.window)
                    .ok_or(CompressError::NoQueries)?;
                let view = LayerView {
                    profile: self.profile.as_ref(),
                    ..LayerView::new(model, l, lc, (&q, qpos), &self.params)
                };
                let Some(scores) = self
                    .press
                    .score(&view)
                    .map_err(|e| CompressError::Method(Box::new(e)))?
                else {
                    continue;
                };
                let keep = select(
                    &scores,
                    budget,
                    self.params.window,
                    spec.n_kv_heads,
                    self.press.split(),
                );
                cache.layers[l].retain(&keep);
            }
        }
        report.kept_per_layer = cache.entries_per_layer();
        report.kept_positions = cache.positions_per_head();
        Ok(report)
    }
}
