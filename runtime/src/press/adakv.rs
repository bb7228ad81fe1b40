//! Ada-KV: SnapKV scores, with the layer's budget (`B × H_kv` entries) shared adaptively across
//! KV heads — heads whose attention is concentrated give entries to heads whose attention is
//! spread. Entries are physically evicted per head (ragged lengths), not masked. Feng et al.
//! 2024, "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for Efficient LLM
//! Inference", arXiv:2407.11550.

use super::{LayerView, Press, PressError, Scores, Split, snapkv};

pub struct AdaKv;

/// Ada-KV's safeguard: every head keeps at least this share of the equal split (α = 0.2).
pub const FLOOR_PERCENT: u32 = 20;

impl Press for AdaKv {
    fn name(&self) -> &'static str {
        "adakv"
    }
    fn score(&self, view: &LayerView<'_>) -> Result<Option<Scores>, PressError> {
        let per_kv = snapkv::group_mean(&snapkv::head_scores(view), view.spec.group_size());
        Ok(Some(Scores::PerHead(per_kv)))
    }
    fn split(&self) -> Split {
        Split::Adaptive {
            floor_percent: FLOOR_PERCENT,
        }
    }
}

/// Per head: the window plus a share of the layer's `(budget − window) × H_kv` free slots.
/// Each head first gets `floor_percent`% of the equal share; the rest goes to the best
/// scores across all heads. Returns sorted indices per head.
pub fn adaptive_split(
    per_head: &[Vec<f32>],
    budget: usize,
    window: usize,
    n_kv_heads: usize,
    floor_percent: u32,
) -> Vec<Vec<usize>> {
    let t = per_head[0].len();
    if budget >= t {
        return vec![(0..t).collect(); n_kv_heads];
    }
    let window = window.min(budget);
    let prefix = t - window;
    let free = budget - window;
    let floor = free * floor_percent as usize / 100;
    let mut ranked: Vec<Vec<usize>> = per_head
        .iter()
        .map(|s| {
            let mut idx: Vec<usize> = (0..prefix).collect();
            idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            idx
        })
        .collect();
    let mut take = vec![floor; n_kv_heads];
    // Remaining slots: best (score, head) pairs beyond each head's floor.
    let mut rest: Vec<(f32, usize, usize)> = Vec::new();
    for (h, idx) in ranked.iter().enumerate() {
        for (rank, &i) in idx.iter().enumerate().skip(floor) {
            rest.push((per_head[h][i], h, rank));
        }
    }
    rest.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    for &(_, h, _) in rest.iter().take(free * n_kv_heads - floor * n_kv_heads) {
        take[h] += 1;
    }
    ranked
        .iter_mut()
        .zip(take)
        .map(|(idx, k)| {
            let mut keep: Vec<usize> = idx[..k].to_vec();
            keep.extend(prefix..t);
            keep.sort_unstable();
            keep
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_flows_to_the_head_with_spread_attention() {
        // 2 heads, 6 entries, window 1, budget 3 → 2 free slots per head, 4 in all; floor 0.
        // Head 0 is concentrated (one big score); head 1 is spread (three high scores).
        let s = vec![
            vec![0.9, 0.01, 0.01, 0.01, 0.01, 0.0],
            vec![0.3, 0.3, 0.3, 0.02, 0.01, 0.0],
        ];
        let keep = adaptive_split(&s, 3, 1, 2, 0);
        assert_eq!(keep[0], vec![0, 5]);
        assert_eq!(keep[1], vec![0, 1, 2, 5]);
        // Total kept equals budget × heads.
        assert_eq!(keep.iter().map(Vec::len).sum::<usize>(), 6);
        // With a 50% floor each head keeps at least one free slot.
        let keep = adaptive_split(&s, 3, 1, 2, 50);
        assert!(keep.iter().all(|k| k.len() >= 2));
        assert_eq!(keep.iter().map(Vec::len).sum::<usize>(), 6);
    }
}
