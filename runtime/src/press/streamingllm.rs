//! StreamingLLM: keep the attention sinks (first tokens) and the most recent tokens.
//! Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks",
//! arXiv:2309.17453.

use super::{LayerView, Press, PressError, Scores};

pub struct StreamingLlm;

/// Sinks score highest, then recency: top-k keeps the first `sinks` and the newest entries.
pub fn sink_recency_scores(positions: &[i64], sinks: usize) -> Vec<f32> {
    let t = positions.len();
    (0..t)
        .map(|i| if i < sinks { f32::MAX } else { i as f32 })
        .collect()
}

impl Press for StreamingLlm {
    fn name(&self) -> &'static str {
        "streamingllm"
    }
    fn score(&self, view: &LayerView<'_>) -> Result<Option<Scores>, PressError> {
        Ok(Some(Scores::Shared(sink_recency_scores(
            view.positions(),
            view.params.sinks,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::press::select_top;

    #[test]
    fn keeps_sinks_and_recent() {
        let s = sink_recency_scores(&(0..20).collect::<Vec<i64>>(), 4);
        assert_eq!(select_top(&s, 8, 2), vec![0, 1, 2, 3, 16, 17, 18, 19]);
    }
}
