use super::*;

/// Deterministic xorshift in [-1, 1).
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub(crate) fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * amp).collect()
    }
}

const SPECIAL: [f32; 12] = [
    0.0, -0.0, 1e-30, -1e-30, 1e-45, -1e-45, 1e-7, -1e-7, 1e30, -1e30, 3.0e38, -3.0e38,
];

fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n)
        .map(|i| lo + (hi - lo) * (i as f64 / (n - 1) as f64) as f32)
        .collect();
    v.extend_from_slice(&SPECIAL);
    v
}

fn gelu64(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
}

fn silu64(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn levels() -> Vec<SimdLevel> {
    simd::available_levels()
}

/// Scalar and AVX2 must agree bit for bit (NaN: both NaN).
fn assert_same(a: &[f32], b: &[f32], what: &str) {
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "{what}[{i}]: {x:e} vs {y:e}"
        );
    }
}

fn check_glu(f: fn(SimdLevel, &mut [f32], &[f32]), reference: fn(f64) -> f64, what: &str) {
    let g0 = sweep(-20.0, 20.0, 200_001);
    let mut rng = Rng(0x1234_5678);
    let ones = vec![1.0f32; g0.len()];
    let u_rand = rng.vec(g0.len(), 3.0);
    for u in [&ones, &u_rand] {
        let mut outs = Vec::new();
        for level in levels() {
            let mut g = g0.clone();
            f(level, &mut g, u);
            let mut worst = 0.0f64;
            for i in 0..g.len() {
                let r = reference(g0[i] as f64) * u[i] as f64;
                if r.abs() > f32::MAX as f64 {
                    assert_eq!(g[i], r.signum() as f32 * f32::INFINITY, "{what} overflow");
                    continue;
                }
                let err = (g[i] as f64 - r).abs() / r.abs().max(1.0);
                assert!(
                    err <= 1e-6,
                    "{what} {level:?} x={:e} got {:e} ref {r:e}",
                    g0[i],
                    g[i]
                );
                worst = worst.max(err);
            }
            eprintln!("{what} {level:?}: max err {worst:.3e}");
            outs.push(g);
        }
        for o in &outs[1..] {
            assert_same(&outs[0], o, what);
        }
    }
    // NaN in gate or up → NaN out; ±inf gate.
    for level in levels() {
        let mut g = vec![f32::NAN, 1.0, 0.0, f32::INFINITY];
        f(level, &mut g, &[1.0, f32::NAN, f32::NAN, 2.0]);
        assert!(
            g[0].is_nan() && g[1].is_nan() && g[2].is_nan(),
            "{what} {level:?}: {g:?}"
        );
        assert_eq!(g[3], f32::INFINITY, "{what} {level:?}");
    }
}

#[test]
fn gelu_tanh_mul_accuracy() {
    check_glu(gelu_tanh_mul_at, gelu64, "gelu_tanh_mul");
}

#[test]
fn silu_mul_accuracy() {
    check_glu(silu_mul_at, silu64, "silu_mul");
}

#[test]
fn exp_accuracy() {
    let x0 = sweep(-87.0, 88.0, 200_001);
    let mut outs = Vec::new();
    for level in levels() {
        let mut y = x0.clone();
        exp_slice_at(level, &mut y);
        let mut worst = 0.0f64;
        for (&x, &y) in x0.iter().zip(&y) {
            let r = (x as f64).exp();
            if r > f32::MAX as f64 {
                assert_eq!(y, f32::INFINITY, "exp({x:e})");
                continue;
            }
            if x < -87.34 {
                assert_eq!(y, 0.0, "exp({x:e})");
                continue;
            }
            let err = (y as f64 - r).abs() / r;
            assert!(err <= 4e-7, "{level:?} exp({x:e}) = {y:e}, ref {r:e}");
            worst = worst.max(err);
        }
        eprintln!("exp {level:?}: max rel err {worst:.3e}");
        let mut s = [
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -88.0,
            -1e4,
            88.7,
            88.73,
            89.0,
        ];
        exp_slice_at(level, &mut s);
        assert_eq!(&s[..2], &[0.0, f32::INFINITY]);
        assert!(s[2].is_nan());
        assert_eq!(&s[3..5], &[0.0, 0.0]);
        assert!(s[5].is_finite() && ((s[5] as f64) / 88.7f32.exp() as f64 - 1.0).abs() < 4e-7);
        assert_eq!(&s[6..], &[f32::INFINITY, f32::INFINITY]);
        outs.push(y);
    }
    for o in &outs[1..] {
        assert_same(&outs[0], o, "exp");
    }
}

#[test]
fn tanh_accuracy() {
    let x0 = sweep(-20.0, 20.0, 200_001);
    let mut outs = Vec::new();
    for level in levels() {
        let mut y = x0.clone();
        tanh_slice_at(level, &mut y);
        let mut worst = 0.0f64;
        for (&x, &y) in x0.iter().zip(&y) {
            let err = (y as f64 - (x as f64).tanh()).abs();
            assert!(err <= 2e-7, "{level:?} tanh({x:e}) = {y:e}");
            worst = worst.max(err);
            if x.abs() < 0.5 {
                // Small arguments keep relative accuracy (no 1 - 2/(e+1) cancellation).
                let rel = err / (x as f64).tanh().abs().max(1e-300);
                assert!(x == 0.0 || rel <= 3e-7, "{level:?} tanh({x:e}) rel {rel:e}");
            }
            if x.abs() > 9.0 {
                assert_eq!(y, x.signum(), "saturation at {x}");
            }
        }
        eprintln!("tanh {level:?}: max abs err {worst:.3e}");
        // Odd symmetry, bit for bit.
        let mut neg: Vec<f32> = x0.iter().map(|v| -v).collect();
        tanh_slice_at(level, &mut neg);
        for (a, b) in y.iter().zip(&neg) {
            assert_eq!(a.to_bits() ^ SIGN, b.to_bits());
        }
        let mut s = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0];
        tanh_slice_at(level, &mut s);
        assert_eq!(&s[..2], &[1.0, -1.0]);
        assert!(s[2].is_nan());
        assert_eq!(s[3].to_bits(), (-0.0f32).to_bits());
        outs.push(y);
    }
    for o in &outs[1..] {
        assert_same(&outs[0], o, "tanh");
    }
}

#[test]
fn odd_lengths_match_elementwise() {
    let mut rng = Rng(99);
    for n in [1usize, 7, 8, 9, 31, 33, 1000] {
        let x = rng.vec(n + 3, 10.0);
        let u = rng.vec(n + 3, 2.0);
        for level in levels() {
            // Offset by 3 to misalign the vector body.
            let mut e = x.clone();
            exp_slice_at(level, &mut e[3..]);
            let mut t = x.clone();
            tanh_slice_at(level, &mut t[3..]);
            let mut g = x.clone();
            gelu_tanh_mul_at(level, &mut g[3..], &u[3..]);
            let mut s = x.clone();
            silu_mul_at(level, &mut s[3..], &u[3..]);
            for i in 0..n + 3 {
                let (ee, tt, gg, ss) = if i < 3 {
                    (x[i], x[i], x[i], x[i])
                } else {
                    (
                        exp_s(x[i]),
                        tanh_s(x[i]),
                        gelu_s(x[i]) * u[i],
                        silu_s(x[i]) * u[i],
                    )
                };
                assert_eq!(e[i].to_bits(), ee.to_bits(), "exp n={n} i={i} {level:?}");
                assert_eq!(t[i].to_bits(), tt.to_bits(), "tanh n={n} i={i} {level:?}");
                assert_eq!(g[i].to_bits(), gg.to_bits(), "gelu n={n} i={i} {level:?}");
                assert_eq!(s[i].to_bits(), ss.to_bits(), "silu n={n} i={i} {level:?}");
            }
        }
    }
}

#[test]
fn rms_norm_accuracy() {
    let mut rng = Rng(7);
    for (dim, rows) in [
        (1usize, 3usize),
        (7, 3),
        (9, 2),
        (31, 3),
        (33, 3),
        (640, 4),
        (1000, 2),
        (640, 200),
    ] {
        let x = rng.vec(dim * rows, 4.0);
        let gamma: Vec<f32> = (0..dim).map(|_| 1.0 + rng.next()).collect();
        let eps = 1e-6;
        let mut outs = Vec::new();
        for level in levels() {
            let mut out = vec![0.0; x.len()];
            rms_norm_at(level, &x, &gamma, eps, &mut out);
            for (row, orow) in x.chunks(dim).zip(out.chunks(dim)) {
                let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
                let inv = 1.0 / (ms + eps as f64).sqrt();
                for i in 0..dim {
                    let r = row[i] as f64 * inv * gamma[i] as f64;
                    let err = (orow[i] as f64 - r).abs() / r.abs().max(1e-30);
                    assert!(err <= 1e-5, "rms dim={dim} {level:?}: {} vs {r}", orow[i]);
                }
            }
            outs.push(out);
        }
        for o in &outs[1..] {
            assert_same(&outs[0], o, "rms_norm");
        }
    }
    for level in levels() {
        let mut out = [0.0; 4];
        rms_norm_at(level, &[1.0, f32::NAN, 2.0, 3.0], &[1.0; 2], 1e-6, &mut out);
        assert!(out[0].is_nan() && out[1].is_nan() && !out[2].is_nan());
    }
}

#[test]
fn softmax_accuracy() {
    let mut rng = Rng(11);
    for n in [1usize, 7, 9, 31, 33, 1000, 100_003] {
        let mut x0 = rng.vec(n, 30.0);
        if n > 2 {
            x0[1] = f32::NEG_INFINITY;
        }
        let m = x0.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let e: Vec<f64> = x0.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let mut outs = Vec::new();
        for level in levels() {
            let mut x = x0.clone();
            softmax_at(level, &mut x);
            for ((y, r), &xi) in x.iter().zip(&e).zip(&x0) {
                let r = r / s;
                // f32 rounding of x - max alone costs |x - max|·2^-24 relative.
                let tol = if r == 0.0 {
                    0.0
                } else {
                    (1e-6 + (xi as f64 - m).abs() * 6e-8) * r
                };
                assert!((*y as f64 - r).abs() <= tol, "softmax n={n}: {y} vs {r}");
            }
            if n > 2 {
                assert_eq!(x[1], 0.0);
            }
            outs.push(x);
        }
        for o in &outs[1..] {
            assert_same(&outs[0], o, "softmax");
        }
    }
    for level in levels() {
        let mut x = [f32::NEG_INFINITY; 9];
        softmax_at(level, &mut x);
        assert_eq!(x, [0.0; 9], "all -inf row → zeros");
        let mut x = [f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY];
        softmax_at(level, &mut x);
        assert!(x.iter().all(|v| v.is_nan()));
        let mut x = [1.0, 2.0, f32::NAN, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0];
        softmax_at(level, &mut x);
        assert!(x.iter().all(|v| v.is_nan()));
        let mut x: [f32; 0] = [];
        softmax_at(level, &mut x);
    }
}
