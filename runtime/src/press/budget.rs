//! Layer budget allocators: how a mean budget `B` (entries per compressed layer) is spread over
//! the `L` compressed layers. Every allocator returns budgets summing to exactly `L·B`.

/// Which allocator a press uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// `B` for every layer.
    Uniform,
    /// Linearly decreasing with depth (PyramidKV, Cai et al. 2024: `arXiv:2406.02069`).
    Pyramid,
    /// From the profile's per-layer eviction errors (CompressKV).
    ErrorAware,
}

/// Parameters of the error-aware allocator: the per-layer floor, the cap (a multiple of the mean)
/// and how far the shares follow the layer errors.
#[derive(Debug, Clone, Copy)]
pub struct ErrorAwareParams {
    pub min: usize,
    pub max_factor: f64,
    /// How far the shares follow the layer errors: `w·share + (1 − w)/L` (1 = the paper,
    /// 0 = uniform). Tuned per budget, because a share measured at one budget need not be the
    /// right one at every budget.
    pub error_weight: f64,
}

impl Default for ErrorAwareParams {
    fn default() -> Self {
        ErrorAwareParams {
            min: 32,
            max_factor: 3.0,
            error_weight: 1.0,
        }
    }
}

impl From<&crate::profile::Effective> for ErrorAwareParams {
    /// The layer-budget bounds in force: the profile's min and max factor, the setting's
    /// error weight.
    fn from(e: &crate::profile::Effective) -> Self {
        ErrorAwareParams {
            min: e.min_budget,
            max_factor: e.max_budget_factor,
            error_weight: e.settings.error_weight,
        }
    }
}

/// Budgets for `n` layers with mean `b`. `errors` are the layers' error shares (any positive
/// scale) for [`Allocator::ErrorAware`]; without them it falls back to uniform and says so in
/// the returned note.
pub fn allocate(
    kind: Allocator,
    n: usize,
    b: usize,
    window: usize,
    params: ErrorAwareParams,
    errors: Option<&[f64]>,
) -> (Vec<usize>, Option<String>) {
    if n == 0 {
        return (vec![], None);
    }
    match kind {
        Allocator::Uniform => (vec![b; n], None),
        Allocator::Pyramid => (pyramid(n, b, window), None),
        Allocator::ErrorAware => match errors {
            Some(e) if e.len() == n && e.iter().sum::<f64>() > 0.0 => {
                (error_aware(e, b, params), None)
            }
            _ => (
                vec![b; n],
                Some("no layer eviction errors in the profile: uniform layer budgets".into()),
            ),
        },
    }
}

/// PyramidKV: budgets fall linearly from `2B − min` at the first layer to `min` at the last,
/// with `min = max(window + 1, B/β)`, β = 20 (the paper's default). Unlike kvpress, `min` is
/// not raised to the window size, so small budgets still form a pyramid.
pub fn pyramid(n: usize, b: usize, window: usize) -> Vec<usize> {
    if n == 1 {
        return vec![b];
    }
    let min = ((b as f64 / 20.0).round() as usize).max(window + 1).min(b);
    let max = 2 * b - min;
    let step = (max - min) as f64 / (n - 1) as f64;
    let raw: Vec<f64> = (0..n).map(|l| max as f64 - l as f64 * step).collect();
    let mut out: Vec<usize> = raw.iter().map(|x| x.round() as usize).collect();
    // Shares proportional to the raw budgets, for the exact-total correction.
    fix_total(&mut out, &raw, n * b, min, max);
    out
}

/// CompressKV: `budget_l = min + round(share_l × (L·B − L·min))`, clipped to
/// `[min, max_factor·B]`, then corrected one entry at a time (by share order) until the total
/// is exactly `L·B`. The shares are the normalised errors pulled toward `1/L` by
/// `params.error_weight`.
pub fn error_aware(errors: &[f64], b: usize, params: ErrorAwareParams) -> Vec<usize> {
    let n = errors.len();
    let total_err: f64 = errors.iter().sum();
    let w = params.error_weight.clamp(0.0, 1.0);
    let shares: Vec<f64> = errors
        .iter()
        .map(|e| w * e / total_err + (1.0 - w) / n as f64)
        .collect();
    let min = params.min.min(b);
    let max = ((params.max_factor * b as f64).floor() as usize).max(b);
    let spare = (n * b - n * min) as f64;
    let mut out: Vec<usize> = shares
        .iter()
        .map(|s| (min + (s * spare).round() as usize).clamp(min, max))
        .collect();
    fix_total(&mut out, &shares, n * b, min, max);
    out
}

/// Adds or removes one entry at a time — to the largest-share layer that can take it, or from
/// the smallest-share layer that can give — until the budgets sum to `total`.
fn fix_total(out: &mut [usize], shares: &[f64], total: usize, min: usize, max: usize) {
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by(|&a, &b| shares[b].total_cmp(&shares[a]).then(a.cmp(&b)));
    let mut sum: usize = out.iter().sum();
    while sum < total {
        let before = sum;
        for &i in &order {
            if sum < total && out[i] < max {
                out[i] += 1;
                sum += 1;
            }
        }
        if sum == before {
            break; // every layer at max: cannot reach the total
        }
    }
    while sum > total {
        let before = sum;
        for &i in order.iter().rev() {
            if sum > total && out[i] > min {
                out[i] -= 1;
                sum -= 1;
            }
        }
        if sum == before {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator for property tests (no extra dependency).
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64) / ((1u64 << 53) as f64)
    }

    #[test]
    fn error_aware_sums_exactly_and_respects_bounds() {
        let mut seed = 42;
        for case in 0..500 {
            let n = 1 + (lcg(&mut seed) * 40.0) as usize;
            let b = 32 + (lcg(&mut seed) * 500.0) as usize;
            let errs: Vec<f64> = (0..n).map(|_| lcg(&mut seed).powi(3) + 1e-9).collect();
            let out = error_aware(&errs, b, ErrorAwareParams::default());
            assert_eq!(out.iter().sum::<usize>(), n * b, "case {case}: {out:?}");
            assert!(
                out.iter().all(|&x| x >= 32.min(b) && x <= 3 * b),
                "case {case}: {out:?}"
            );
        }
    }

    #[test]
    fn error_aware_is_monotone_in_the_share() {
        let mut seed = 7;
        for _ in 0..200 {
            let n = 2 + (lcg(&mut seed) * 30.0) as usize;
            let errs: Vec<f64> = (0..n).map(|_| lcg(&mut seed) + 1e-6).collect();
            let out = error_aware(&errs, 128, ErrorAwareParams::default());
            for i in 0..n {
                for j in 0..n {
                    if errs[i] > errs[j] {
                        assert!(out[i] >= out[j], "{errs:?} → {out:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn error_aware_hand_case() {
        // 3 layers, B = 100, min 32: spare = 300 − 96 = 204.
        // shares 0.5/0.3/0.2 → 32+102=134, 32+61=93 (61.2), 32+41=73 (40.8) = 300.
        assert_eq!(
            error_aware(&[5.0, 3.0, 2.0], 100, ErrorAwareParams::default()),
            vec![134, 93, 73]
        );
        // A dominant layer is clipped at 3B and the rest is redistributed.
        // 8 layers, B = 64: 32 + 1.0 × 256 = 288 > 3B = 192.
        let mut errs = vec![0.001; 8];
        errs[0] = 1000.0;
        let out = error_aware(&errs, 64, ErrorAwareParams::default());
        assert_eq!(out[0], 192);
        assert_eq!(out.iter().sum::<usize>(), 512);
        assert!(out[1..].iter().all(|&x| (45..=46).contains(&x)), "{out:?}");
    }

    #[test]
    fn error_weight_pulls_the_shares_toward_uniform() {
        let errs = [5.0, 3.0, 2.0];
        let at = |w: f64| {
            error_aware(
                &errs,
                100,
                ErrorAwareParams {
                    error_weight: w,
                    ..ErrorAwareParams::default()
                },
            )
        };
        assert_eq!(at(1.0), vec![134, 93, 73]);
        assert_eq!(at(0.0), vec![100, 100, 100]);
        // w = 0.5: shares 0.4167/0.3167/0.2667 → 32 + 85 (85.0), 32 + 65 (64.6), 32 + 54
        // (54.4) = 300.
        assert_eq!(at(0.5), vec![117, 97, 86]);
    }

    #[test]
    fn pyramid_decreases_and_sums() {
        let out = pyramid(18, 128, 8);
        assert_eq!(out.iter().sum::<usize>(), 18 * 128);
        assert!(out.windows(2).all(|w| w[0] >= w[1]), "{out:?}");
        assert!(out[0] > 128 && out[17] < 128);
        // Small budgets still form a pyramid (kvpress collapses to uniform here).
        let small = pyramid(3, 64, 8);
        assert!(small[0] > small[2], "{small:?}");
    }

    #[test]
    fn missing_errors_fall_back_to_uniform_with_a_note() {
        let (b, note) = allocate(
            Allocator::ErrorAware,
            3,
            64,
            8,
            ErrorAwareParams::default(),
            None,
        );
        assert_eq!(b, vec![64, 64, 64]);
        assert!(note.unwrap().contains("uniform"));
    }
}
