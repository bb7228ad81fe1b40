//! SnapKV: the last `window` prompt queries vote for the entries they attend to (softmax over
//! all keys, summed over the window, average-pooled), averaged over the query heads of each KV
//! group; top-k per KV head. Li et al. 2024, "SnapKV: LLM Knows What You are Looking for
//! Before Generation", arXiv:2404.14469.

use super::{LayerView, Press, PressError, Scores, pooled_prefix_sum};

pub struct SnapKv;

/// Pooled window scores of every query head, `[H_q][T]` (pooled over the entries before the
/// window only, see [`pooled_prefix_sum`]).
pub fn head_scores(view: &LayerView<'_>) -> Vec<Vec<f32>> {
    view.window_probs()
        .iter()
        .map(|rows| pooled_prefix_sum(rows, view.params.kernel, view.params.window))
        .collect()
}

/// Mean over the `group` query heads of each KV head: `[H_q][T]` → `[H_kv][T]`.
pub fn group_mean(per_q: &[Vec<f32>], group: usize) -> Vec<Vec<f32>> {
    per_q
        .chunks(group)
        .map(|heads| {
            let t = heads[0].len();
            (0..t)
                .map(|j| heads.iter().map(|h| h[j]).sum::<f32>() / heads.len() as f32)
                .collect()
        })
        .collect()
}

impl Press for SnapKv {
    fn name(&self) -> &'static str {
        "snapkv"
    }
    fn score(&self, view: &LayerView<'_>) -> Result<Option<Scores>, PressError> {
        let per_kv = group_mean(&head_scores(view), view.spec.group_size());
        Ok(Some(if per_kv.len() == 1 {
            Scores::Shared(per_kv.into_iter().next().unwrap())
        } else {
            Scores::PerHead(per_kv)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeepSet;
    use crate::press::{Split, pooled_window_sum, select};

    #[test]
    fn window_sum_pool_and_group_average_by_hand() {
        // One query head, window 2, 6 keys.
        let rows = vec![
            vec![0.5, 0.0, 0.0, 0.5, 0.0, 0.0],
            vec![0.0, 0.0, 0.0, 0.5, 0.25, 0.25],
        ];
        // Sum: [0.5, 0, 0, 1, .25, .25]; pool k=3 (pad 1, /3):
        // [0.5/3, 0.5/3, 1/3, 1.25/3, 1.5/3, 0.5/3].
        let p = pooled_window_sum(&rows, 3);
        let want = [
            0.5 / 3.0,
            0.5 / 3.0,
            1.0 / 3.0,
            1.25 / 3.0,
            1.5 / 3.0,
            0.5 / 3.0,
        ];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
        // GQA: 4 query heads, 2 KV heads → mean of heads (0,1) and (2,3).
        let per_q = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![4.0, 2.0],
            vec![2.0, 0.0],
        ];
        assert_eq!(group_mean(&per_q, 2), vec![vec![0.5, 0.5], vec![3.0, 1.0]]);
        // Per-head top-k differs between heads → a per-head keep set.
        let s = Scores::PerHead(vec![vec![0.9, 0.1, 0.5, 0.0], vec![0.1, 0.9, 0.5, 0.0]]);
        assert_eq!(
            select(&s, 2, 1, 2, Split::PerHeadEqual),
            KeepSet::PerHead(vec![vec![0, 3], vec![1, 3]])
        );
    }
}
