use super::*;

struct Rng(u64);
impl Rng {
    fn next_u(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        ((self.next_u() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * amp).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u() % n as u64) as usize
    }
}

/// Materialised logits, f64 softmax, weighted sum.
fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    p: &AttnParams,
    ranges: &[(usize, usize)],
) -> Vec<f64> {
    let mut out = vec![0.0f64; q.len()];
    for (r, &(lo, hi)) in ranges.iter().enumerate() {
        if lo >= hi {
            continue;
        }
        let qr = &q[r * d..(r + 1) * d];
        let logits: Vec<f64> = (lo..hi)
            .map(|t| {
                let dot: f64 = qr
                    .iter()
                    .zip(&k[t * d..(t + 1) * d])
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                let x = dot * p.scale as f64;
                match p.softcap {
                    Some(c) => c as f64 * (x / c as f64).tanh(),
                    None => x,
                }
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
        let sum: f64 = w.iter().sum();
        for (i, t) in (lo..hi).enumerate() {
            for c in 0..d {
                out[r * d + c] += w[i] / sum * v[t * d + c] as f64;
            }
        }
    }
    out
}

fn masks(kind: usize, rows: usize, t: usize, rng: &mut Rng) -> Vec<(usize, usize)> {
    // Causal layouts: [G, S] with G = 4 when possible; queries are the last S cache rows.
    let s_len = if rows.is_multiple_of(4) {
        rows / 4
    } else {
        rows
    };
    (0..rows)
        .map(|r| {
            let hi = (t + r % s_len + 1).saturating_sub(s_len);
            match kind {
                0 => (0, t),
                1 => (0, hi),
                2 => (hi.saturating_sub(1 + t / 3), hi),
                _ => {
                    if r % 5 == 2 {
                        (t.min(3), t.min(3)) // explicit empty range
                    } else {
                        let a = rng.below(t + 1);
                        let b = rng.below(t + 1);
                        (a.min(b), a.max(b))
                    }
                }
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run(
    level: SimdLevel,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    p: &AttnParams,
    ranges: &[(usize, usize)],
    plan: Option<Plan>,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; q.len()];
    attend_plan(level, q, k, v, d, p, &|r| ranges[r], &mut out, plan, false);
    out
}

fn check(got: &[f32], want: &[f64], what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= 1e-5 * (1.0 + w.abs()),
            "{what}: out[{i}] = {g}, ref {w}, err {err:e}"
        );
    }
}

#[test]
fn matches_reference() {
    let mut rng = Rng(0xC0FFEE);
    let caps = [None, Some(5.0), Some(50.0)];
    let mut case = 0;
    let mut worst = 0.0f64;
    for d in [64usize, 128, 256] {
        for t in [1usize, 5, 63, 64, 65, 300, 5000] {
            for rows in [1usize, 4, 37] {
                for kind in 0..4 {
                    // Unoptimised builds run one mask per heavy shape (the
                    // f64 reference dominates); `--release` runs the full grid.
                    if cfg!(debug_assertions)
                        && t * rows * d > 300_000
                        && kind
                            != match d {
                                64 => 1,
                                128 => 3,
                                _ => 2,
                            }
                    {
                        continue;
                    }
                    case += 1;
                    let p = AttnParams {
                        scale: 1.0 / (d as f32).sqrt(),
                        softcap: caps[case % 3],
                    };
                    let q = rng.vec(rows * d, 6.0);
                    let k = rng.vec(t * d, 1.0);
                    let v = rng.vec(t * d, 1.0);
                    let ranges = masks(kind, rows, t, &mut rng);
                    let want = reference(&q, &k, &v, d, &p, &ranges);
                    let mut outs = Vec::new();
                    for level in simd::available_levels() {
                        let got = run(level, &q, &k, &v, d, &p, &ranges, None);
                        let what = format!("{level:?} d={d} T={t} R={rows} mask={kind} {p:?}");
                        check(&got, &want, &what);
                        for (r, &(lo, hi)) in ranges.iter().enumerate() {
                            if lo >= hi {
                                assert!(
                                    got[r * d..(r + 1) * d].iter().all(|&x| x == 0.0),
                                    "{what}: empty row {r}"
                                );
                            }
                        }
                        for (g, w) in got.iter().zip(&want) {
                            worst = worst.max((*g as f64 - w).abs() / (1.0 + w.abs()));
                        }
                        outs.push(got);
                    }
                    for o in &outs[1..] {
                        for (a, b) in outs[0].iter().zip(o) {
                            assert!(
                                (a - b).abs() <= 2e-6 * (1.0 + a.abs()),
                                "scalar vs simd: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }
    eprintln!("{case} cases, max err/(1+|ref|) = {worst:.3e}");
}

#[test]
fn all_plans_agree() {
    let mut rng = Rng(42);
    for (d, t, rows) in [
        (64usize, 3000usize, 1usize),
        (128, 2100, 4),
        (256, 1500, 9),
        (72, 777, 6),
        (20, 900, 3),
        // K + V over GROUP_MIN_KV_BYTES and 40 row blocks: groups of blocks share key tiles,
        // with causal, windowed and random ranges that differ from block to block.
        (64, 2500, 160),
    ] {
        let p = AttnParams {
            scale: 0.1,
            softcap: Some(30.0),
        };
        let q = rng.vec(rows * d, 3.0);
        let k = rng.vec(t * d, 1.0);
        let v = rng.vec(t * d, 1.0);
        for kind in 0..4 {
            let ranges = masks(kind, rows, t, &mut rng);
            let want = reference(&q, &k, &v, d, &p, &ranges);
            for level in simd::available_levels() {
                for plan in [
                    Plan::Serial,
                    Plan::Rows,
                    Plan::Split(2),
                    Plan::Split(3),
                    Plan::Split(7),
                    Plan::Split(100),
                ] {
                    let got = run(level, &q, &k, &v, d, &p, &ranges, Some(plan));
                    check(
                        &got,
                        &want,
                        &format!("{level:?} {plan:?} d={d} T={t} R={rows} mask={kind}"),
                    );
                }
            }
        }
    }
}

#[test]
fn blocks_and_plans() {
    // GQA decode: one block of 4 with the shared range.
    let b = build_blocks(&[(0, 100); 4]);
    assert_eq!((b.len(), b[0].n, b[0].lo, b[0].hi), (1, 4, 0, 100));
    // Disjoint sliding windows across a head boundary are not merged.
    let b = build_blocks(&[(900, 1000), (0, 1), (0, 2)]);
    assert_eq!(b.iter().map(|b| b.n).collect::<Vec<_>>(), [1, 2]);
    // Empty rows join any block.
    let b = build_blocks(&[(0, 0), (5, 9), (0, 0), (0, 0), (1, 2)]);
    assert_eq!((b[0].n, b[0].lo, b[0].hi, b[1].n), (4, 5, 9, 1));
    // Short decode never leaves the calling thread.
    assert_eq!(
        choose_plan(&build_blocks(&[(0, 300); 4]), 256),
        Plan::Serial
    );
    if rayon::current_num_threads() > 1 {
        assert!(matches!(
            choose_plan(&build_blocks(&[(0, 16384); 4]), 256),
            Plan::Split(_)
        ));
        let prefill: Vec<_> = (0..2048).map(|r| (0, 512 + r % 512 + 1)).collect();
        assert_eq!(choose_plan(&build_blocks(&prefill), 256), Plan::Rows);
    }
}

#[test]
fn nan_propagates_only_where_visible() {
    let (d, t) = (64, 200);
    let mut rng = Rng(5);
    let q = rng.vec(4 * d, 1.0);
    let k = rng.vec(t * d, 1.0);
    let mut v = rng.vec(t * d, 1.0);
    v[150 * d + 3] = f32::NAN;
    let ranges = [(0, 100), (0, 151), (140, 160), (0, 0)];
    let p = AttnParams {
        scale: 0.125,
        softcap: None,
    };
    for level in simd::available_levels() {
        for plan in [Plan::Serial, Plan::Split(3)] {
            let got = run(level, &q, &k, &v, d, &p, &ranges, Some(plan));
            let row = |r: usize| &got[r * d..(r + 1) * d];
            assert!(
                row(1)[3].is_nan() && row(2)[3].is_nan(),
                "{level:?} {plan:?}"
            );
            assert!(row(0).iter().all(|x| x.is_finite()), "{level:?} {plan:?}");
            assert!(row(3).iter().all(|&x| x == 0.0));
        }
        let mut qn = q.clone();
        qn[d + 5] = f32::NAN;
        let got = run(level, &qn, &k, &v[..], d, &p, &[(0, 100); 4], None);
        assert!(got[d..2 * d].iter().all(|x| x.is_nan()));
        assert!(got[..d].iter().all(|x| x.is_finite()));
    }
}

#[test]
fn f16_entries_attend_like_their_f32_values() {
    // The f16 cache converts on load: bit-identical to f32 inputs holding the same values,
    // at every level and plan, odd head dims (tails) included.
    use half::f16;
    let mut rng = Rng(9);
    for (d, t) in [(256, 700), (72, 130), (13, 40)] {
        let q = rng.vec(4 * d, 1.0);
        let k16: Vec<f16> = rng.vec(t * d, 2.0).into_iter().map(f16::from_f32).collect();
        let v16: Vec<f16> = rng.vec(t * d, 2.0).into_iter().map(f16::from_f32).collect();
        let k32: Vec<f32> = k16.iter().map(|x| x.to_f32()).collect();
        let v32: Vec<f32> = v16.iter().map(|x| x.to_f32()).collect();
        let ranges = [(0, t), (3, t - 1), (0, t / 2), (t / 3, t)];
        let p = AttnParams {
            scale: 0.1,
            softcap: Some(30.0),
        };
        for level in simd::available_levels() {
            for plan in [Plan::Serial, Plan::Rows, Plan::Split(3)] {
                let mut a = vec![0.0; 4 * d];
                let mut b = vec![0.0; 4 * d];
                let vis = |r: usize| ranges[r];
                attend_plan(
                    level,
                    &q,
                    &k16,
                    &v16,
                    d,
                    &p,
                    &vis,
                    &mut a,
                    Some(plan),
                    false,
                );
                attend_plan(
                    level,
                    &q,
                    &k32,
                    &v32,
                    d,
                    &p,
                    &vis,
                    &mut b,
                    Some(plan),
                    false,
                );
                assert_eq!(a, b, "d={d} {level:?} {plan:?}");
            }
        }
    }
}

#[test]
fn degenerate_shapes() {
    let p = AttnParams {
        scale: 1.0,
        softcap: None,
    };
    for level in simd::available_levels() {
        // No KV rows: every range must be empty, output zeros.
        let mut out = vec![1.0; 8];
        attend_at::<f32>(level, &[1.0; 8], &[], &[], 8, &p, &|_| (0, 0), &mut out);
        assert_eq!(out, [0.0; 8]);
        // No query rows.
        attend_at(
            level,
            &[],
            &[1.0; 8],
            &[1.0; 8],
            8,
            &p,
            &|_| (0, 1),
            &mut [],
        );
        // Single key: output = v.
        let mut out = vec![0.0; 3];
        attend_at(
            level,
            &[1.0, 2.0, 3.0],
            &[4.0, 5.0, 6.0],
            &[7.0, 8.0, 9.0],
            3,
            &p,
            &|_| (0, 1),
            &mut out,
        );
        assert_eq!(out, [7.0, 8.0, 9.0]);
    }
}

/// [`attend_plan`] with the AMX tiles allowed, into a NaN-filled output.
#[cfg(target_arch = "x86_64")]
fn on_tiles<E: KvElem>(
    q: &[f32],
    k: &[E],
    v: &[E],
    d: usize,
    p: &AttnParams,
    ranges: &[(usize, usize)],
) -> Vec<f32> {
    let mut out = vec![f32::NAN; q.len()];
    attend_plan(
        SimdLevel::Avx2,
        q,
        k,
        v,
        d,
        p,
        &|r| ranges[r],
        &mut out,
        None,
        true,
    );
    out
}

/// The AMX tile path (prefill shapes, ≥ `amx::MIN_ROWS` rows) against the f64 reference on v
/// rounded to bf16 as the tiles take it (q·scale enters in two bf16 parts, 16 significant
/// bits, and an f16 k exactly, so the logits are f32-grade): what is left is the rounding of
/// the probabilities to bf16 (relative 2⁻⁹ per weight, their sum taken over the rounded
/// values) and f32 sums, so every output is within `2⁻⁸·max|v|` of it. Masks of every kind (causal
/// with GQA rows, windows, random and empty ranges, a head boundary mid-tile), soft-capping,
/// f32 and f16 entries, key counts off the 32-key chunking, keys in several segments.
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_tiles_match_reference() {
    use half::{bf16, f16};
    if !simd::amx() {
        eprintln!("AMX unusable here (CPU or kernel): nothing to check");
        return;
    }
    let round = |x: &[f32], s: f32| -> Vec<f32> {
        x.iter().map(|&x| bf16::from_f32(x * s).to_f32()).collect()
    };
    let mut rng = Rng(0xA3A);
    let mut worst = 0.0f64;
    for (d, t, rows) in [
        (256usize, 700usize, 256usize),
        (64, 97, 66),
        (128, 1500, 128),
        // Three segments of the bf16 copies, the last one partial.
        (64, 8500, 96),
    ] {
        for kind in 0..4 {
            for cap in [None, Some(30.0f32)] {
                let q = rng.vec(rows * d, 1.0);
                let k: Vec<f16> = rng
                    .vec(t * d, 1.0)
                    .iter()
                    .map(|&x| f16::from_f32(x))
                    .collect();
                let v: Vec<f16> = rng
                    .vec(t * d, 1.0)
                    .iter()
                    .map(|&x| f16::from_f32(x))
                    .collect();
                let (k32, v32): (Vec<f32>, Vec<f32>) = (
                    k.iter().map(|x| x.to_f32()).collect(),
                    v.iter().map(|x| x.to_f32()).collect(),
                );
                // A peaked softmax (logits over a range of ~±20), so outputs are far from 0.
                let p = AttnParams {
                    scale: 8.0 / (d as f32).sqrt(),
                    softcap: cap,
                };
                let ranges = masks(kind, rows, t, &mut rng);
                let want = reference(&q, &k32, &round(&v32, 1.0), d, &p, &ranges);
                let a = on_tiles(&q, &k32, &v32, d, &p, &ranges);
                let b = on_tiles(&q, &k, &v, d, &p, &ranges);
                assert_eq!(a, b, "f16 entries give what their f32 values give");
                for (r, &(lo, hi)) in ranges.iter().enumerate() {
                    let row = &a[r * d..(r + 1) * d];
                    if lo >= hi {
                        assert!(row.iter().all(|&x| x == 0.0), "empty row {r}");
                        continue;
                    }
                    let vmax = v32[lo * d..hi * d]
                        .iter()
                        .fold(0.0f32, |m, x| m.max(x.abs()));
                    let tol = 2f64.powi(-8) * vmax as f64 + 1e-5;
                    for (c, (&g, &w)) in row.iter().zip(&want[r * d..]).enumerate() {
                        let err = (g as f64 - w).abs();
                        worst = worst.max(err / tol);
                        assert!(
                            err <= tol,
                            "d={d} t={t} kind={kind} cap={cap:?}: out[{r}][{c}] = {g}, ref \
                             {w}, err {err:e} > {tol:e}"
                        );
                    }
                }
            }
        }
    }
    eprintln!("worst AMX error / tolerance: {worst:.3}");
    // A non-finite value in K or V: the tiles decline, and the f32 kernels keep the NaN to the
    // rows that see it.
    let (d, t, rows) = (64, 200, 64);
    let q = rng.vec(rows * d, 1.0);
    let k = rng.vec(t * d, 1.0);
    let mut v = rng.vec(t * d, 1.0);
    v[150 * d + 3] = f32::NAN;
    let ranges: Vec<(usize, usize)> = (0..rows).map(|r| (0, 100 + r)).collect();
    let p = AttnParams {
        scale: 0.125,
        softcap: None,
    };
    let got = on_tiles(&q, &k, &v, d, &p, &ranges);
    for (r, row) in got.chunks_exact(d).enumerate() {
        assert_eq!(row[3].is_nan(), 100 + r > 150, "row {r}");
        assert!(row.iter().enumerate().all(|(c, x)| c == 3 || x.is_finite()));
    }
}
