//! KV-cache compression methods ("presses") and the engine that applies them after prefill.
//!
//! A press looks at one layer after prefill — the observation-window queries, the layer's
//! cached keys/values and their positions — and scores the entries. One shared step
//! ([`select_top`]) keeps the `budget − window` best-scoring entries plus the window. Layer
//! budgets come from a separate allocator ([`budget`]). A new method is one file here plus one
//! line in [`REGISTRY`]; nothing else in the runtime names a method.

pub mod adakv;
pub mod budget;
pub mod compresskv;
pub mod engine;
pub mod full;
pub mod plan;
pub mod pyramidkv;
pub mod snapkv;
pub mod streamingllm;

use burn::tensor::Tensor;

use crate::cache::{KeepSet, LayerCache};
use crate::model::{Attention, CausalLM};
use crate::spec::ModelSpec;
pub use budget::Allocator;
pub use engine::{Compressor, SlidingPolicy};

#[derive(Debug, thiserror::Error)]
pub enum PressError {
    #[error(
        "unknown method `{0}`; available: full, streamingllm, snapkv, pyramidkv, adakv, compresskv"
    )]
    UnknownMethod(String),
    #[error("{0}")]
    BadBudget(String),
    #[error("{0}")]
    NeedsProfile(String),
    #[error("{0}")]
    BadProfile(String),
}

/// Settings shared by the presses.
#[derive(Debug, Clone)]
pub struct PressParams {
    /// Observation window: the last `window` prompt queries score the entries, and the last
    /// `window` entries are always kept.
    pub window: usize,
    /// 1-D average-pooling kernel over the scores (odd; 1 = none).
    pub kernel: usize,
    /// CompressKV: how many Semantic Retrieval Heads per layer score the tokens.
    pub srh_heads: usize,
    /// CompressKV: blend with the all-heads score (0 = pure SRH, the paper).
    pub mix: f64,
    /// CompressKV: share of the kept entries taken in the all-heads ranking, merged with the
    /// SRH ranking (0 = pure SRH, the paper).
    pub union: f64,
    /// StreamingLLM: attention-sink tokens kept at the start.
    pub sinks: usize,
}

impl Default for PressParams {
    fn default() -> Self {
        PressParams {
            window: 8,
            kernel: 5,
            srh_heads: 1,
            mix: 0.0,
            union: 0.0,
            sinks: 4,
        }
    }
}

impl From<&crate::profile::Settings> for PressParams {
    /// The scoring knobs of a setting (the layer-budget knob goes to [`budget::ErrorAwareParams`]).
    fn from(s: &crate::profile::Settings) -> Self {
        PressParams {
            window: s.window,
            kernel: s.kernel,
            srh_heads: s.srh_heads,
            mix: s.mix,
            union: s.union,
            ..PressParams::default()
        }
    }
}

/// What a model's profile tells the presses (kept free of the file format).
#[derive(Debug, Clone, Default)]
pub struct HeadProfile {
    /// Per layer, query heads in descending SRH score.
    pub srh_ranking: Vec<Vec<usize>>,
    /// Per layer eviction error shares (sum 1), if the profile has them.
    pub layer_errors: Option<Vec<f64>>,
}

impl HeadProfile {
    /// What presses read from a model's profile: every layer's query heads by descending SRH
    /// score, and the layer eviction errors if it has them.
    pub fn from_profile(p: &crate::profile::Profile) -> Self {
        let n_heads = p.srh_scores.first().map_or(0, Vec::len);
        HeadProfile {
            srh_ranking: (0..p.srh_scores.len())
                .map(|l| p.top_srh_heads(l, n_heads))
                .collect(),
            layer_errors: p.layer_errors.as_ref().map(|e| e.per_layer.clone()),
        }
    }
}

/// One layer as a press sees it after prefill.
pub struct LayerView<'a> {
    pub layer: usize,
    pub spec: &'a ModelSpec,
    /// `[1, H_q, W, D]` after RoPE.
    pub queries: &'a Tensor<4>,
    pub query_positions: &'a [i64],
    pub cache: &'a LayerCache,
    pub attention: &'a Attention,
    pub params: &'a PressParams,
    pub profile: Option<&'a HeadProfile>,
}

impl<'a> LayerView<'a> {
    /// Layer `layer` of `model` with its prompt `cache` and the window's captured `queries` at
    /// `query_positions`, scored with `params` and no profile.
    pub fn new(
        model: &'a dyn CausalLM,
        layer: usize,
        cache: &'a LayerCache,
        (queries, query_positions): (&'a Tensor<4>, &'a [i64]),
        params: &'a PressParams,
    ) -> Self {
        LayerView {
            layer,
            spec: model.spec(),
            queries,
            query_positions,
            cache,
            attention: model.attention(layer),
            params,
            profile: None,
        }
    }

    /// Entries in the layer (per KV head; the layer is not ragged before compression).
    pub fn len(&self) -> usize {
        self.cache.positions().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn positions(&self) -> &[i64] {
        self.cache.positions()
    }

    /// Window attention probabilities per query head, `[H_q][W][T]` on the host: softmax over
    /// all keys with the causal (and sliding-window) mask. Only the window rows are computed.
    pub fn window_probs(&self) -> Vec<Vec<Vec<f32>>> {
        let t = self.len();
        let mut out = Vec::with_capacity(self.spec.n_heads);
        for g in self.cache.groups() {
            let p = self
                .attention
                .probs_group(self.queries, self.query_positions, g);
            let [_, nh, w, tt] = p.dims();
            debug_assert_eq!(tt, t);
            let flat = crate::model::act::to_host(p);
            for h in 0..nh {
                out.push(
                    (0..w)
                        .map(|r| flat[(h * w + r) * t..(h * w + r + 1) * t].to_vec())
                        .collect(),
                );
            }
        }
        out
    }
}

/// Scores of a layer's entries (higher = more worth keeping).
#[derive(Debug, Clone, PartialEq)]
pub enum Scores {
    /// One score per entry, the same token set for every KV head.
    Shared(Vec<f32>),
    /// One score list per KV head.
    PerHead(Vec<Vec<f32>>),
}

/// How a layer's budget is turned into a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Every KV head keeps `budget` entries.
    PerHeadEqual,
    /// The layer's `budget × H_kv` entries are shared across heads by score (Ada-KV).
    Adaptive { floor_percent: u32 },
}

pub trait Press: Send + Sync {
    fn name(&self) -> &'static str;
    /// Scores the layer's entries; `None` keeps the layer as it is.
    fn score(&self, view: &LayerView<'_>) -> Result<Option<Scores>, PressError>;
    /// How layer budgets are allocated.
    fn allocator(&self) -> Allocator {
        Allocator::Uniform
    }
    fn split(&self) -> Split {
        Split::PerHeadEqual
    }
    /// Checks it can run on this model with these settings (e.g. a profile is present).
    fn check(
        &self,
        _spec: &ModelSpec,
        _profile: Option<&HeadProfile>,
        _params: &PressParams,
    ) -> Result<(), PressError> {
        Ok(())
    }
}

type Factory = fn() -> Box<dyn Press>;

/// Method name → constructor. Adding a method adds one line here.
pub const REGISTRY: &[(&str, Factory)] = &[
    ("full", || Box::new(full::Full)),
    ("streamingllm", || Box::new(streamingllm::StreamingLlm)),
    ("snapkv", || Box::new(snapkv::SnapKv)),
    ("pyramidkv", || Box::new(pyramidkv::PyramidKv)),
    ("adakv", || Box::new(adakv::AdaKv)),
    ("compresskv", || Box::new(compresskv::CompressKv)),
];

pub fn press_by_name(name: &str) -> Result<Box<dyn Press>, PressError> {
    REGISTRY
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f())
        .ok_or_else(|| PressError::UnknownMethod(name.to_string()))
}

pub fn method_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

/// Sum over the window rows, then 1-D average pooling (stride 1, same padding, zero padding
/// counted — PyTorch's `avg_pool1d(k, 1, k/2)`), for one head: `[W][T]` → `[T]`.
pub fn pooled_window_sum(rows: &[Vec<f32>], kernel: usize) -> Vec<f32> {
    let t = rows.first().map_or(0, Vec::len);
    let mut sum = vec![0.0f32; t];
    for r in rows {
        for (s, &p) in sum.iter_mut().zip(r) {
            *s += p;
        }
    }
    avg_pool_same(&sum, kernel)
}

/// Like [`pooled_window_sum`], but only the first `t − window` entries (the ones a selection
/// chooses among) are pooled, so the always-kept window does not leak into its neighbours'
/// scores — as SnapKV, CompressKV and kvpress compute it (`attn[..., :-window].sum(-2)`, then
/// `avg_pool1d`). The window entries keep their unpooled sums.
pub fn pooled_prefix_sum(rows: &[Vec<f32>], kernel: usize, window: usize) -> Vec<f32> {
    let t = rows.first().map_or(0, Vec::len);
    let mut sum = vec![0.0f32; t];
    for r in rows {
        for (s, &p) in sum.iter_mut().zip(r) {
            *s += p;
        }
    }
    let prefix = t - window.min(t);
    let mut out = avg_pool_same(&sum[..prefix], kernel);
    out.extend_from_slice(&sum[prefix..]);
    out
}

pub fn avg_pool_same(x: &[f32], kernel: usize) -> Vec<f32> {
    if kernel <= 1 {
        return x.to_vec();
    }
    let pad = (kernel / 2) as isize;
    let n = x.len() as isize;
    (0..n)
        .map(|i| {
            let s: f32 = (i - pad..=i + pad)
                .filter(|&j| j >= 0 && j < n)
                .map(|j| x[j as usize])
                .sum();
            s / kernel as f32
        })
        .collect()
}

/// Indices `0..t` of the top `budget − window` scores among the first `t − window` entries,
/// plus the last `window` entries, sorted ascending (position order). Ties → lower index.
pub fn select_top(scores: &[f32], budget: usize, window: usize) -> Vec<usize> {
    let t = scores.len();
    if budget >= t {
        return (0..t).collect();
    }
    let window = window.min(budget);
    let prefix = t - window;
    let k = budget - window;
    let mut idx: Vec<usize> = (0..prefix).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.extend(prefix..t);
    idx.sort_unstable();
    idx
}

/// Turns scores into what to keep, for a layer `budget` (entries per KV head).
pub fn select(
    scores: &Scores,
    budget: usize,
    window: usize,
    n_kv_heads: usize,
    split: Split,
) -> KeepSet {
    match (scores, split) {
        (Scores::Shared(s), _) => KeepSet::Shared(select_top(s, budget, window)),
        (Scores::PerHead(per), Split::PerHeadEqual) => {
            let sets: Vec<Vec<usize>> = per.iter().map(|s| select_top(s, budget, window)).collect();
            if sets.iter().all(|s| *s == sets[0]) {
                KeepSet::Shared(sets.into_iter().next().unwrap())
            } else {
                KeepSet::PerHead(sets)
            }
        }
        (Scores::PerHead(per), Split::Adaptive { floor_percent }) => KeepSet::PerHead(
            adakv::adaptive_split(per, budget, window, n_kv_heads, floor_percent),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_matches_pytorch_avg_pool1d() {
        // torch.nn.functional.avg_pool1d(arange(10), 5, 1, 2) (count_include_pad=True).
        let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let p = avg_pool_same(&x, 5);
        let want = [0.6, 1.2, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 6.0, 4.8];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
    }

    #[test]
    fn prefix_pooling_ignores_the_window() {
        // 6 keys, window 2: the heavy window key 4 must not raise key 3's pooled score.
        let rows = vec![vec![0.0, 0.0, 0.0, 0.3, 9.0, 0.0]];
        let p = pooled_prefix_sum(&rows, 3, 2);
        assert_eq!(p.len(), 6);
        assert!(
            (p[3] - 0.1).abs() < 1e-6 && (p[2] - 0.1).abs() < 1e-6,
            "{p:?}"
        );
        assert_eq!(&p[4..], &[9.0, 0.0]);
        // Pooling over everything would have leaked it.
        assert!(pooled_window_sum(&rows, 3)[3] > 3.0);
        assert_eq!(pooled_prefix_sum(&rows, 3, 0), pooled_window_sum(&rows, 3));
    }

    #[test]
    fn select_keeps_window_and_best_prefix_in_position_order() {
        let s = [0.1, 0.9, 0.3, 0.8, 0.0, 0.0, 5.0, 0.2];
        // window 2 → entries 6, 7 always; 2 more from 0..6: indices 1 (0.9) and 3 (0.8).
        assert_eq!(select_top(&s, 4, 2), vec![1, 3, 6, 7]);
        // budget ≥ length keeps all.
        assert_eq!(select_top(&s, 8, 2), (0..8).collect::<Vec<_>>());
        // Ties go to the lower index.
        assert_eq!(select_top(&[1.0, 1.0, 1.0, 0.0], 2, 1), vec![0, 3]);
    }

    #[test]
    fn registry_names_every_method_once() {
        let names = method_names();
        for n in &names {
            assert_eq!(press_by_name(n).unwrap().name(), *n);
        }
        let e = press_by_name("h2o").err().expect("unknown method");
        assert!(e.to_string().contains("available"));
    }
}
