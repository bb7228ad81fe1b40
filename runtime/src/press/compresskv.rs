//! CompressKV: per layer, the top Semantic Retrieval Heads (from the model's profile) score the
//! entries — window attention → sum → average-pool → mean over those heads — and the same
//! token set is kept for every KV head; layer budgets follow the profile's layer eviction
//! errors. "CompressKV: Semantic Retrieval Heads Know What Tokens are Not Important Before
//! Generation", arXiv:2508.02401.
//!
//! Beyond the paper, two ways to let the other heads in, chosen per budget by `profile tune`:
//! `mix` blends the scores, `(1 − λ)·srh + λ·all`; `union` merges the rankings, so a share `u`
//! of the kept entries follows the all-heads ranking and `1 − u` the SRH ranking
//! ([`rank_union`]). A sharp retrieval head finds the evidence span at small budgets, but on
//! Gemma 3 270M it misses digits of a passkey that the all-heads score keeps; the union keeps
//! both heads' best entries instead of averaging them away.
//!
//! The average-pooling kernel (`PressParams::kernel`, shared with SnapKV; the profile's tune
//! picks it per budget) decides how much of the evidence survives: a retrieval head peaks on a
//! few tokens of the needle, a narrow kernel keeps those peaks with holes between them (the
//! answer loses words or digits), a wide one keeps the sentence around each peak.

use super::{Allocator, HeadProfile, LayerView, Press, PressError, PressParams, Scores, snapkv};
use crate::spec::ModelSpec;

pub struct CompressKv;

/// Mean of the given heads' pooled scores, optionally blended with the mean of all heads.
pub fn srh_scores(per_q: &[Vec<f32>], heads: &[usize], mix: f64) -> Vec<f32> {
    let t = per_q[0].len();
    let mean = |hs: &mut dyn Iterator<Item = usize>, n: usize| -> Vec<f32> {
        let mut acc = vec![0.0f32; t];
        for h in hs {
            for (a, &x) in acc.iter_mut().zip(&per_q[h]) {
                *a += x;
            }
        }
        acc.iter().map(|a| a / n as f32).collect()
    };
    let srh = mean(&mut heads.iter().copied(), heads.len());
    if mix <= 0.0 {
        return srh;
    }
    let all = mean(&mut (0..per_q.len()), per_q.len());
    srh.iter()
        .zip(&all)
        .map(|(s, a)| ((1.0 - mix) as f32) * s + (mix as f32) * a)
        .collect()
}

/// Rank-level union of two score lists over the entries before the `window`: entry `i` gets
/// `−min(rank_srh(i) / (1 − u), rank_all(i) / u)`, so the top `k` of the result is (up to
/// overlaps) the top `(1 − u)·k` of `srh` plus the top `u·k` of `all`, whatever `k` is. The
/// window entries (always kept) get the highest score. `u = 0` ranks by `srh` alone.
pub fn rank_union(srh: &[f32], all: &[f32], u: f64, window: usize) -> Vec<f32> {
    let t = srh.len();
    let prefix = t - window.min(t);
    let ranks = |s: &[f32]| {
        let mut idx: Vec<usize> = (0..prefix).collect();
        idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        let mut r = vec![0usize; prefix];
        for (k, &i) in idx.iter().enumerate() {
            r[i] = k;
        }
        r
    };
    let (rs, ra) = (ranks(srh), ranks(all));
    let mut out: Vec<f32> = (0..prefix)
        .map(|i| {
            let a = if u >= 1.0 {
                f64::INFINITY
            } else {
                rs[i] as f64 / (1.0 - u)
            };
            let b = if u <= 0.0 {
                f64::INFINITY
            } else {
                ra[i] as f64 / u
            };
            -(a.min(b)) as f32
        })
        .collect();
    out.extend(std::iter::repeat_n(f32::MAX, t - prefix));
    out
}

impl Press for CompressKv {
    fn name(&self) -> &'static str {
        "compresskv"
    }

    fn score(&self, view: &LayerView<'_>) -> Result<Option<Scores>, PressError> {
        let profile = view
            .profile
            .ok_or_else(|| PressError::NeedsProfile(needs_profile_msg()))?;
        let k = view.params.srh_heads.clamp(1, view.spec.n_heads);
        let heads = &profile.srh_ranking[view.layer][..k];
        let per_q = snapkv::head_scores(view);
        let scores = srh_scores(&per_q, heads, view.params.mix);
        if view.params.union <= 0.0 || k == view.spec.n_heads {
            return Ok(Some(Scores::Shared(scores)));
        }
        let all: Vec<usize> = (0..view.spec.n_heads).collect();
        Ok(Some(Scores::Shared(rank_union(
            &scores,
            &srh_scores(&per_q, &all, 0.0),
            view.params.union,
            view.params.window,
        ))))
    }

    fn allocator(&self) -> Allocator {
        Allocator::ErrorAware
    }

    fn check(
        &self,
        spec: &ModelSpec,
        profile: Option<&HeadProfile>,
        params: &PressParams,
    ) -> Result<(), PressError> {
        let p = profile.ok_or_else(|| PressError::NeedsProfile(needs_profile_msg()))?;
        if p.srh_ranking.len() != spec.n_layers
            || p.srh_ranking.iter().any(|r| r.len() != spec.n_heads)
        {
            return Err(PressError::BadProfile(format!(
                "the profile ranks heads for {} layers × {} heads but the model has {} layers × \
                 {} query heads: pass the profile of this model with --profile PATH",
                p.srh_ranking.len(),
                p.srh_ranking.first().map_or(0, Vec::len),
                spec.n_layers,
                spec.n_heads
            )));
        }
        if !(params.union.is_finite() && (0.0..=1.0).contains(&params.union)) {
            return Err(PressError::BadBudget(format!(
                "--union {} must be between 0 (SRH ranking only) and 1 (all-heads ranking only)",
                params.union
            )));
        }
        if params.srh_heads == 0 || params.srh_heads > spec.n_heads {
            return Err(PressError::BadBudget(format!(
                "--srh-heads {} must be between 1 and the model's {} query heads",
                params.srh_heads, spec.n_heads
            )));
        }
        Ok(())
    }
}

fn needs_profile_msg() -> String {
    "compresskv needs the model's profile (its Semantic Retrieval Heads): run `compresskv \
     profile --model <id>` once, or pass --profile PATH"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeepSet;
    use crate::press::{Split, select};

    #[test]
    fn only_the_retrieval_heads_vote_and_all_kv_heads_share_the_set() {
        // 4 query heads over 5 entries; head 2 is the SRH and looks at entry 1 (the evidence);
        // the others look at entry 3 (the question phrase).
        let per_q = vec![
            vec![0.0, 0.0, 0.0, 1.0, 0.0],
            vec![0.0, 0.0, 0.0, 1.0, 0.0],
            vec![0.0, 1.0, 0.0, 0.1, 0.0],
            vec![0.0, 0.0, 0.0, 1.0, 0.0],
        ];
        let s = srh_scores(&per_q, &[2], 0.0);
        assert_eq!(s, per_q[2]);
        let keep = select(&Scores::Shared(s), 2, 1, 2, Split::PerHeadEqual);
        assert_eq!(keep, KeepSet::Shared(vec![1, 4]));
        // The all-heads mean would keep entry 3 instead.
        let all = srh_scores(&per_q, &[0, 1, 2, 3], 0.0);
        assert_eq!(
            select(&Scores::Shared(all), 2, 1, 2, Split::PerHeadEqual),
            KeepSet::Shared(vec![3, 4])
        );
        // mix = 0.5: 0.5·srh + 0.5·mean(all).
        let m = srh_scores(&per_q, &[2], 0.5);
        assert!((m[1] - (0.5 + 0.5 * 0.25)).abs() < 1e-6);
        assert!((m[3] - (0.05 + 0.5 * 0.775)).abs() < 1e-6);
    }

    #[test]
    fn rank_union_takes_each_rankings_best_entries() {
        // 7 entries + window 1. SRH order: 0, 1, 2, …; all-heads order: 5, 4, 3, ….
        let srh = [0.9, 0.8, 0.7, 0.1, 0.05, 0.0, 0.3, 0.0];
        let all = [0.0, 0.05, 0.1, 0.3, 0.7, 0.9, 0.2, 0.0];
        let w = 1;
        let keep = |u: f64, budget: usize| {
            select(
                &Scores::Shared(rank_union(&srh, &all, u, w)),
                budget,
                w,
                1,
                Split::PerHeadEqual,
            )
        };
        // u = 0.5, 4 picks: two from each ranking (ties alternate by index).
        assert_eq!(keep(0.5, 5), KeepSet::Shared(vec![0, 1, 4, 5, 7]));
        // u = 0 is the SRH ranking, u = 1 the all-heads ranking.
        assert_eq!(keep(0.0, 3), KeepSet::Shared(vec![0, 1, 7]));
        assert_eq!(keep(1.0, 3), KeepSet::Shared(vec![4, 5, 7]));
        // u = 0.25, 4 picks: three from SRH (ranks 0, 1, 2 → 0, 1.33, 2.67), one from all
        // (rank 0 → 0).
        assert_eq!(keep(0.25, 5), KeepSet::Shared(vec![0, 1, 2, 5, 7]));
        // An entry both rankings like counts once and frees a slot.
        let both = [0.9, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0];
        let s = rank_union(&both, &both, 0.5, w);
        assert_eq!(
            select(&Scores::Shared(s), 3, w, 1, Split::PerHeadEqual),
            KeepSet::Shared(vec![0, 2, 7])
        );
    }
}
