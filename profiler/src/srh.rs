//! Semantic Retrieval Head (SRH) scores, as the CompressKV paper defines them, and the classic
//! retrieval-head score (Wu et al. 2024, arXiv:2404.15574) for comparison.
//!
//! A calibration sample is a needle-in-a-haystack prompt with a known answer span. We prefill
//! all but the last prompt token, then feed the last one and decode greedily with the full
//! cache. At every step that produces a token occurring in the answer span, each (layer, query
//! head) gets the attention mass its last query puts on the *whole* span (SRH: the head looks at
//! the evidence, not only the token being copied), once per occurrence of that token in the
//! span. The classic score instead credits `1/|span|` when the head's argmax lands on a span
//! position holding the generated token. A sample counts if the answer's word recall against
//! the needle's answer exceeds 0.5; a head's score is the mean over counted samples.

use std::ops::Range;

use compresskv_runtime::eval::metrics::rouge1_recall;
use compresskv_runtime::generate::argmax;
use compresskv_runtime::loader::TextTokenizer;
use compresskv_runtime::model::{AttentionEvent, AttentionObserver};
use compresskv_runtime::{CausalLM, ForwardCtx, KvCache, WindowCapture};
use serde::{Deserialize, Serialize};

use crate::layer_error::{ErrorProbe, Tee};

/// One calibration prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibSample {
    pub ids: Vec<u32>,
    /// Token range of the answer span inside `ids`.
    pub span: Range<usize>,
    /// The text the answer should recall (the needle's answer).
    pub answer: String,
}

/// What one sample contributed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SampleResult {
    pub generated: Vec<u32>,
    pub answer_text: String,
    pub recall: f64,
    pub counted: bool,
    /// `[layer][query head]` sums over decoding steps.
    pub srh_sum: Vec<Vec<f64>>,
    pub classic_sum: Vec<Vec<f64>>,
    /// `[layer][candidate head subset]` eviction-error sums of the same decode (empty when not
    /// measured), see [`crate::layer_error`].
    #[serde(default)]
    pub layer_err: Vec<Vec<f64>>,
    /// Decode steps those errors were summed over.
    #[serde(default)]
    pub layer_err_steps: usize,
}

/// Per layer and query head: attention mass of the last query on the span, and the argmax key.
struct SpanObserver {
    span_pos: Range<i64>,
    mass: Vec<Vec<f64>>,
    argmax_pos: Vec<Vec<i64>>,
}

impl AttentionObserver for SpanObserver {
    fn wants(&self, _layer: usize) -> bool {
        true
    }

    fn observe(&mut self, ev: AttentionEvent<'_>) {
        let last = ev.query_positions.len() - 1;
        let q = ev.queries.clone().narrow(2, last, 1);
        let qpos = &ev.query_positions[last..];
        let mut head = 0;
        for g in ev.cache.groups() {
            let p = ev.attention.probs_group(&q, qpos, g);
            let [_, nh, _, t] = p.dims();
            let flat: Vec<f32> = p
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("converted to f32");
            for h in 0..nh {
                let row = &flat[h * t..(h + 1) * t];
                let mut m = 0.0f64;
                let mut best = 0usize;
                for (j, (&pr, &pos)) in row.iter().zip(&g.positions).enumerate() {
                    if self.span_pos.contains(&pos) {
                        m += pr as f64;
                    }
                    if pr > row[best] {
                        best = j;
                    }
                }
                self.mass[ev.layer][head + h] = m;
                self.argmax_pos[ev.layer][head + h] = g.positions[best];
            }
            head += nh;
        }
    }
}

/// Word recall of `reference` in `answer` as a fraction: the NIAH metric shared with `eval
/// niah` (ROUGE-1 recall of lowercase `[a-z0-9]+` words, counts clipped).
pub fn word_recall(answer: &str, reference: &str) -> f64 {
    rouge1_recall(answer, reference) / 100.0
}

/// Runs one calibration sample. `max_new` caps the answer; decoding stops after a token whose
/// text contains a newline (except as the first token) or an end-of-generation id.
pub fn score_sample(
    model: &dyn CausalLM,
    tok: &TextTokenizer,
    s: &CalibSample,
    max_new: usize,
    eos: &[u32],
) -> SampleResult {
    score_sample_with(model, tok, s, max_new, eos, None)
}

/// [`score_sample`], also measuring layer eviction errors with `probe` in the same decode: its
/// selection is made after the pass that feeds the last prompt token, and every later pass adds
/// one error step.
pub fn score_sample_with(
    model: &dyn CausalLM,
    tok: &TextTokenizer,
    s: &CalibSample,
    max_new: usize,
    eos: &[u32],
    mut probe: Option<&mut ErrorProbe>,
) -> SampleResult {
    let spec = model.spec();
    let (nl, nh) = (spec.n_layers, spec.n_heads);
    let mut cache = KvCache::new(spec);
    let n = s.ids.len();
    let window = probe.as_ref().map_or(1, |p| p.settings.window);
    let mut capture = WindowCapture::new(window, nl);
    if n > 1 {
        let mut ctx = ForwardCtx::new(&mut cache);
        if probe.is_some() {
            ctx = ctx.capture(&mut capture);
        }
        model.forward(&s.ids[..n - 1], &mut ctx);
    }
    let mut obs = SpanObserver {
        span_pos: s.span.start as i64..s.span.end as i64,
        mass: vec![vec![0.0; nh]; nl],
        argmax_pos: vec![vec![-1; nh]; nl],
    };
    let span_ids = &s.ids[s.span.clone()];
    let mut srh = vec![vec![0.0; nh]; nl];
    let mut classic = vec![vec![0.0; nh]; nl];
    let mut generated = Vec::new();
    let mut input = s.ids[n - 1];
    while generated.len() < max_new {
        let first = generated.is_empty();
        let logits = match probe.as_deref_mut() {
            None => model.forward(
                &[input],
                &mut ForwardCtx::new(&mut cache).observer(&mut obs),
            ),
            Some(p) if first => {
                let l = model.forward(
                    &[input],
                    &mut ForwardCtx::new(&mut cache)
                        .capture(&mut capture)
                        .observer(&mut obs),
                );
                p.select(model, &cache, &capture);
                l
            }
            Some(p) => model.forward(
                &[input],
                &mut ForwardCtx::new(&mut cache).observer(&mut Tee(&mut obs, p)),
            ),
        };
        let l: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32");
        let next = argmax(&l);
        let occurrences = span_ids.iter().filter(|&&t| t == next).count();
        if occurrences > 0 {
            for li in 0..nl {
                for h in 0..nh {
                    srh[li][h] += occurrences as f64 * obs.mass[li][h];
                    let a = obs.argmax_pos[li][h];
                    if obs.span_pos.contains(&a) && s.ids[a as usize] == next {
                        classic[li][h] += 1.0 / span_ids.len() as f64;
                    }
                }
            }
        }
        generated.push(next);
        if eos.contains(&next) {
            break;
        }
        let piece = tok.decode(&[next]).unwrap_or_default();
        if generated.len() > 1 && piece.contains('\n') {
            break;
        }
        input = next;
    }
    let answer_text = tok.decode(&generated).unwrap_or_default();
    let recall = word_recall(&answer_text, &s.answer);
    SampleResult {
        generated,
        answer_text,
        recall,
        counted: recall > 0.5,
        srh_sum: srh,
        classic_sum: classic,
        layer_err: probe.as_ref().map(|p| p.err.clone()).unwrap_or_default(),
        layer_err_steps: probe.as_ref().map_or(0, |p| p.steps),
    }
}

/// Mean of the per-sample sums over counted samples: `(srh, classic)`, each `[layer][head]`.
pub fn aggregate(
    results: &[SampleResult],
    n_layers: usize,
    n_heads: usize,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let counted: Vec<&SampleResult> = results.iter().filter(|r| r.counted).collect();
    let mut srh = vec![vec![0.0; n_heads]; n_layers];
    let mut classic = vec![vec![0.0; n_heads]; n_layers];
    if counted.is_empty() {
        return (srh, classic);
    }
    for r in &counted {
        for l in 0..n_layers {
            for h in 0..n_heads {
                srh[l][h] += r.srh_sum[l][h];
                classic[l][h] += r.classic_sum[l][h];
            }
        }
    }
    let k = counted.len() as f64;
    for row in srh.iter_mut().chain(classic.iter_mut()) {
        row.iter_mut().for_each(|x| *x /= k);
    }
    (srh, classic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_is_clipped_word_recall() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(
            word_recall("eat a sandwich", "Eat a sandwich, and sit."),
            3.0 / 5.0
        ));
        // Repeats in the answer count once per reference occurrence.
        assert!(close(word_recall("park park park", "park bench"), 0.5));
        assert_eq!(word_recall("", "x"), 0.0);
    }

    #[test]
    fn aggregate_averages_counted_samples_only() {
        let mk = |v: f64, counted| SampleResult {
            generated: vec![],
            answer_text: String::new(),
            recall: 0.0,
            counted,
            srh_sum: vec![vec![v, 0.0]],
            classic_sum: vec![vec![0.0, v]],
            layer_err: vec![],
            layer_err_steps: 0,
        };
        let (s, c) = aggregate(&[mk(2.0, true), mk(4.0, true), mk(100.0, false)], 1, 2);
        assert_eq!(s, vec![vec![3.0, 0.0]]);
        assert_eq!(c, vec![vec![0.0, 3.0]]);
    }
}
