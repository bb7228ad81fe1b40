//! CompressKV: per layer, the top Semantic Retrieval Heads (from the model's profile) score the
//! entries — window attention → sum → average-pool → mean over those heads — and the same
//! token set is kept for every KV head; layer budgets follow the profile's layer eviction
//! errors. "CompressKV: Semantic Retrieval Heads Know What Tokens are Not Important Before
//! Generation", arXiv:2508.02401.
//!
//! `mix` (beyond the paper) blends in the all-heads score: `(1 − λ)·srh + λ·all`.

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
        Ok(Some(Scores::Shared(srh_scores(
            &per_q,
            heads,
            view.params.mix,
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
}
