//! Layer eviction errors (CompressKV step C): how much each layer's attention output changes when
//! its KV cache is cut to a small budget by the SRH selection.
//!
//! Decoding always runs on the full cache, so errors never compound. After the prompt, each
//! measured layer's entries are selected once — exactly as the `compresskv` press selects:
//! window attention of the last `window` prompt queries, summed, average-pooled, averaged over
//! the chosen query heads, top `budget − window` plus the window. At every later step (each
//! feeding a generated token) the layer's output after the output projection is computed once
//! with the full KV (`O_f`, the pass's own output) and once with the kept entries plus every
//! token decoded since (`O_c`), and `‖O_c − O_f‖_F / (‖O_f‖_F + 1e-5)` is accumulated.
//!
//! The head subset that scores the entries is only known once the SRH calibration is finished,
//! so a probe takes *candidate* subsets per layer: every non-empty subset when the model has few
//! heads (then errors come out of the same decode pass as the SRH scores, as in the reference
//! run), or the already-chosen top SRHs (a separate pass over QA prompts or many-head models).

use compresskv_runtime::cache::{KeepSet, LayerCache};
use compresskv_runtime::generate::argmax;
use compresskv_runtime::loader::TextTokenizer;
use compresskv_runtime::model::{AttentionEvent, AttentionObserver};
use compresskv_runtime::press::engine::{SlidingPolicy, compressed_layers};
use compresskv_runtime::press::{LayerView, PressParams, compresskv, select_top, snapkv};
use compresskv_runtime::{CausalLM, ForwardCtx, KvCache, ModelSpec, WindowCapture};
use serde::{Deserialize, Serialize};

/// Budget, observation window and pooling kernel of the probe selection (the paper's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorSettings {
    pub budget: usize,
    pub window: usize,
    pub kernel: usize,
}

impl Default for ErrorSettings {
    fn default() -> Self {
        ErrorSettings {
            budget: 32,
            window: 8,
            kernel: 5,
        }
    }
}

/// Up to this many query heads, every non-empty head subset is a candidate (2^8 − 1 = 255).
pub const MAX_ALL_SUBSET_HEADS: usize = 8;

/// Layers whose errors are measured: those the runtime compresses under its default sliding
/// policy (`keep`): Gemma 3's global layers, every layer of a model without sliding windows.
pub fn measured_layers(spec: &ModelSpec) -> Vec<usize> {
    compressed_layers(spec, SlidingPolicy::Keep)
}

/// Every non-empty subset of `0..n`, by size, then lexicographically (Python's
/// `itertools.combinations(range(n), r)` for r = 1..=n — the reference run's order).
pub fn all_subsets(n: usize) -> Vec<Vec<usize>> {
    fn rec(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            rec(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    for k in 1..=n {
        rec(0, n, k, &mut Vec::new(), &mut out);
    }
    out
}

/// Normalises to sum 1 (all zeros stay zeros).
pub fn normalise(v: &[f64]) -> Vec<f64> {
    let s: f64 = v.iter().sum();
    if s > 0.0 {
        v.iter().map(|x| x / s).collect()
    } else {
        v.to_vec()
    }
}

/// The profile's per-layer shares from raw per-dataset sums: each data set normalised to sum 1
/// over layers, averaged over data sets, normalised again. Data sets with no error at all
/// (nothing decoded) are left out of the average.
pub fn combine_datasets(per_dataset: &[Vec<f64>]) -> Option<Vec<f64>> {
    let normed: Vec<Vec<f64>> = per_dataset
        .iter()
        .filter(|v| v.iter().sum::<f64>() > 0.0)
        .map(|v| normalise(v))
        .collect();
    let n = normed.first()?.len();
    let mean: Vec<f64> = (0..n)
        .map(|l| normed.iter().map(|v| v[l]).sum::<f64>() / normed.len() as f64)
        .collect();
    Some(normalise(&mean))
}

/// One selection of a layer: the cut cache (kept prompt entries + decoded tokens) and the
/// candidate subsets that chose it (subsets that pick the same entries are computed once).
struct Selection {
    cache: LayerCache,
    candidates: Vec<usize>,
}

/// Observer that accumulates eviction errors. Call [`ErrorProbe::select`] once after the pass
/// that fed the last prompt token; every later pass it observes adds one step.
pub struct ErrorProbe {
    pub settings: ErrorSettings,
    /// `[layer][candidate]` head subsets; an empty list = layer not measured.
    candidates: Vec<Vec<Vec<usize>>>,
    selections: Vec<Vec<Selection>>,
    /// `[layer][candidate]` accumulated relative errors.
    pub err: Vec<Vec<f64>>,
    /// Decode steps measured.
    pub steps: usize,
    last_layer: Option<usize>,
}

impl ErrorProbe {
    pub fn new(settings: ErrorSettings, candidates: Vec<Vec<Vec<usize>>>) -> Self {
        let err = candidates.iter().map(|c| vec![0.0; c.len()]).collect();
        ErrorProbe {
            settings,
            selections: candidates.iter().map(|_| Vec::new()).collect(),
            candidates,
            err,
            steps: 0,
            last_layer: None,
        }
    }

    /// Every non-empty head subset on the measured layers.
    pub fn all_subsets(settings: ErrorSettings, spec: &ModelSpec) -> Self {
        let subsets = all_subsets(spec.n_heads);
        Self::on_measured(settings, spec, |_| subsets.clone())
    }

    /// One known subset per measured layer (`heads[layer]`).
    pub fn known(settings: ErrorSettings, spec: &ModelSpec, heads: &[Vec<usize>]) -> Self {
        Self::on_measured(settings, spec, |l| vec![heads[l].clone()])
    }

    /// `candidates(layer)` on the measured layers, none elsewhere.
    fn on_measured(
        settings: ErrorSettings,
        spec: &ModelSpec,
        candidates: impl Fn(usize) -> Vec<Vec<usize>>,
    ) -> Self {
        let measured = measured_layers(spec);
        Self::new(
            settings,
            (0..spec.n_layers)
                .map(|l| {
                    if measured.contains(&l) {
                        candidates(l)
                    } else {
                        vec![]
                    }
                })
                .collect(),
        )
    }

    /// Selects each measured layer's entries from the full prompt cache with the last `window`
    /// captured prompt queries, the way the `compresskv` press does.
    pub fn select(&mut self, model: &dyn CausalLM, cache: &KvCache, capture: &WindowCapture) {
        let params = PressParams {
            window: self.settings.window,
            kernel: self.settings.kernel,
            ..PressParams::default()
        };
        for (l, cands) in self.candidates.iter().enumerate() {
            self.selections[l].clear();
            if cands.is_empty() {
                continue;
            }
            let (q, qpos) = capture
                .tail(l, self.settings.window)
                .expect("window queries captured for every layer");
            let lc = &cache.layers[l];
            let view = LayerView::new(model, l, lc, (&q, qpos), &params);
            let per_q = snapkv::head_scores(&view);
            let mut keeps: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
            for (ci, heads) in cands.iter().enumerate() {
                let scores = compresskv::srh_scores(&per_q, heads, 0.0);
                let keep = select_top(&scores, self.settings.budget, self.settings.window);
                match keeps.iter_mut().find(|(k, _)| *k == keep) {
                    Some((_, c)) => c.push(ci),
                    None => keeps.push((keep, vec![ci])),
                }
            }
            for (keep, candidates) in keeps {
                let mut cut = lc.clone();
                cut.retain(&KeepSet::Shared(keep));
                self.selections[l].push(Selection {
                    cache: cut,
                    candidates,
                });
            }
        }
    }

    /// Whether [`select`](Self::select) has run.
    pub fn selected(&self) -> bool {
        self.selections.iter().any(|s| !s.is_empty())
    }
}

impl AttentionObserver for ErrorProbe {
    fn wants(&self, layer: usize) -> bool {
        !self.selections[layer].is_empty()
    }

    fn observe(&mut self, ev: AttentionEvent<'_>) {
        let l = ev.layer;
        if self.last_layer.is_none_or(|p| l <= p) {
            self.steps += 1;
        }
        self.last_layer = Some(l);
        let groups = ev.cache.groups();
        assert_eq!(
            groups.len(),
            1,
            "eviction errors need a full (non-ragged) cache"
        );
        let g = &groups[0];
        let s = ev.query_positions.len();
        let t = g.len();
        let (k, v) = (g.k(), g.v());
        let d = k.dims()[2];
        let new_k = k.narrow(2, d - s, s);
        let new_v = v.narrow(2, d - s, s);
        let new_pos = &g.positions[t - s..];
        let full: Vec<f32> = ev
            .attention
            .project_out(ev.output.clone())
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32");
        let full_norm = full.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        for sel in &mut self.selections[l] {
            sel.cache.append(new_k.clone(), new_v.clone(), new_pos);
            let o = ev
                .attention
                .attend(ev.queries, ev.query_positions, &sel.cache);
            let cut: Vec<f32> = ev
                .attention
                .project_out(o)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("converted to f32");
            let diff = cut
                .iter()
                .zip(&full)
                .map(|(&a, &b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let e = diff / (full_norm + 1e-5);
            for &ci in &sel.candidates {
                self.err[l][ci] += e;
            }
        }
    }
}

/// Forwards every event to two observers (like `tee`).
pub struct Tee<'a>(
    pub &'a mut dyn AttentionObserver,
    pub &'a mut dyn AttentionObserver,
);

impl AttentionObserver for Tee<'_> {
    fn wants(&self, layer: usize) -> bool {
        self.0.wants(layer) || self.1.wants(layer)
    }

    fn observe(&mut self, ev: AttentionEvent<'_>) {
        let again = AttentionEvent {
            layer: ev.layer,
            queries: ev.queries,
            query_positions: ev.query_positions,
            cache: ev.cache,
            attention: ev.attention,
            output: ev.output,
        };
        if self.0.wants(ev.layer) {
            self.0.observe(ev);
        }
        if self.1.wants(again.layer) {
            self.1.observe(again);
        }
    }
}

/// Per-layer errors of one prompt: `[layer][candidate]` sums and the number of steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptErrors {
    pub err: Vec<Vec<f64>>,
    pub steps: usize,
    pub generated: Vec<u32>,
}

/// Decodes `ids` greedily on the full cache (prefill `ids[..n-1]`, feed the last token, up to
/// `max_new` tokens, stop at `eos` or, with `stop_at_newline`, at a token containing a newline
/// after the first), measuring the probe's candidates.
pub fn prompt_errors(
    model: &dyn CausalLM,
    tok: &TextTokenizer,
    ids: &[u32],
    max_new: usize,
    eos: &[u32],
    stop_at_newline: bool,
    mut probe: ErrorProbe,
) -> PromptErrors {
    let spec = model.spec();
    let n = ids.len();
    let mut cache = KvCache::new(spec);
    let mut capture = WindowCapture::new(probe.settings.window, spec.n_layers);
    if n > 1 {
        model.forward(
            &ids[..n - 1],
            &mut ForwardCtx::new(&mut cache).capture(&mut capture),
        );
    }
    let mut generated = Vec::new();
    let mut input = ids[n - 1];
    while generated.len() < max_new {
        let logits = if probe.selected() {
            model.forward(
                &[input],
                &mut ForwardCtx::new(&mut cache).observer(&mut probe),
            )
        } else {
            let l = model.forward(
                &[input],
                &mut ForwardCtx::new(&mut cache).capture(&mut capture),
            );
            probe.select(model, &cache, &capture);
            l
        };
        let l: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32");
        let next = argmax(&l);
        generated.push(next);
        if eos.contains(&next) {
            break;
        }
        if stop_at_newline
            && generated.len() > 1
            && tok.decode(&[next]).unwrap_or_default().contains('\n')
        {
            break;
        }
        input = next;
    }
    PromptErrors {
        err: probe.err,
        steps: probe.steps,
        generated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_in_reference_order() {
        let s = all_subsets(3);
        assert_eq!(
            s,
            vec![
                vec![0],
                vec![1],
                vec![2],
                vec![0, 1],
                vec![0, 2],
                vec![1, 2],
                vec![0, 1, 2]
            ]
        );
        assert_eq!(all_subsets(4).len(), 15);
        assert_eq!(all_subsets(4)[9], vec![2, 3]);
    }

    #[test]
    fn datasets_are_normalised_then_averaged_then_normalised() {
        // Dataset a: raw [1, 3] → [0.25, 0.75]; b: [10, 10] → [0.5, 0.5]; mean [0.375, 0.625].
        // The raw scale of b (10×) must not dominate.
        let out = combine_datasets(&[vec![1.0, 3.0], vec![10.0, 10.0]]).unwrap();
        assert!((out[0] - 0.375).abs() < 1e-12 && (out[1] - 0.625).abs() < 1e-12);
        assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Unmeasured layers stay 0; an empty data set is left out.
        let out = combine_datasets(&[vec![0.0, 2.0, 6.0], vec![0.0; 3]]).unwrap();
        assert_eq!(out, vec![0.0, 0.25, 0.75]);
        assert_eq!(combine_datasets(&[vec![0.0, 0.0]]), None);
        assert_eq!(combine_datasets(&[]), None);
    }
}
