use super::*;

use crate::kernels::test_rng::Rng;

fn put_f16(b: &mut [u8], at: usize, x: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(x).to_bits().to_le_bytes());
}

/// Random bytes for `n` blocks, with every scale a sensible finite value (~1e-2) and float
/// elements in [-1, 1], so no NaN/inf patterns and products of realistic size.
fn random_blocks(format: BlockFormat, n: usize, rng: &mut Rng) -> Vec<u8> {
    use BlockFormat::*;
    let bb = format.block_bytes();
    let mut out = Vec::with_capacity(n * bb);
    for _ in 0..n {
        let mut b: Vec<u8> = (0..bb).map(|_| rng.next() as u8).collect();
        let scale = |rng: &mut Rng| 0.01 * rng.unit();
        match format {
            F32 => b.copy_from_slice(&rng.unit().to_le_bytes()),
            F16 => put_f16(&mut b, 0, rng.unit()),
            BF16 => b.copy_from_slice(&half::bf16::from_f32(rng.unit()).to_bits().to_le_bytes()),
            Q4_0 | Q5_0 | Q8_0 => put_f16(&mut b, 0, scale(rng)),
            Q4_1 | Q5_1 | Q4_K | Q5_K => {
                put_f16(&mut b, 0, scale(rng));
                put_f16(&mut b, 2, scale(rng));
            }
            Q2_K => {
                put_f16(&mut b, 80, scale(rng));
                put_f16(&mut b, 82, scale(rng));
            }
            Q3_K => put_f16(&mut b, 108, scale(rng)),
            Q6_K => put_f16(&mut b, 208, scale(rng)),
            Q8_K => b[0..4].copy_from_slice(&scale(rng).to_le_bytes()),
        }
        out.extend_from_slice(&b);
    }
    out
}

fn random_matrix(format: BlockFormat, rows: usize, cols: usize, seed: u64) -> QMatrix {
    let mut rng = Rng(seed);
    let n = rows * cols / format.block_len();
    let bytes = random_blocks(format, n, &mut rng);
    QMatrix::new(format, rows, cols, WeightBytes::Owned(bytes)).unwrap()
}

/// Activations with a spread of magnitudes and a few outliers, like real hidden states.
fn random_x(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|i| {
            let v = rng.unit();
            if i % 97 == 13 { 20.0 * v } else { v }
        })
        .collect()
}

/// The matrix through the reference decoders of `blocks`.
fn dense(m: &QMatrix) -> Vec<f32> {
    let mut w = vec![0.0; m.rows() * m.cols()];
    m.format().dequantize(&m.data, &mut w);
    w
}

/// Per output: the exact product (f64), `Σ|w·x|` (scale of f32 rounding error), and the
/// bound on the activation-quantization error `Σ |w_c|·d_x(c)/2`.
fn reference(m: &QMatrix, w: &[f32], x: &[f32], n: usize) -> Vec<(f64, f64, f64)> {
    let c = m.cols();
    let mut out = Vec::new();
    for i in 0..n {
        let x = &x[i * c..(i + 1) * c];
        let dx: Vec<f64> = if c.is_multiple_of(32) {
            x.chunks(32)
                .map(|b| b.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64 / 127.0)
                .collect()
        } else {
            vec![0.0; c.div_ceil(32)]
        };
        for r in 0..m.rows() {
            let wr = &w[r * c..(r + 1) * c];
            let (mut y, mut abs, mut q) = (0.0f64, 0.0f64, 0.0f64);
            for k in 0..c {
                let p = wr[k] as f64 * x[k] as f64;
                y += p;
                abs += p.abs();
                q += (wr[k] as f64).abs() * dx[k / 32] / 2.0;
            }
            out.push((y, abs, q));
        }
    }
    out
}

/// Check `y` (`[n, rows]`) against the reference. `int8`: the activations were quantized.
fn check(what: &str, y: &[f32], reference: &[(f64, f64, f64)], int8: bool) {
    assert_eq!(y.len(), reference.len());
    for (k, (&y, &(want, abs, q))) in y.iter().zip(reference).enumerate() {
        // f32 accumulation over at most a few thousand terms: 1e-5 of Σ|w·x| is ample
        // (and what "1e-4 relative" means for sums that cancel).
        let tol = if int8 {
            q * 1.001 + 1e-5 * (abs + q)
        } else {
            1e-5 * abs
        } + 1e-30;
        let err = (y as f64 - want).abs();
        assert!(
            err <= tol,
            "{what}: output {k}: got {y}, want {want}, err {err:e} > {tol:e}"
        );
    }
}

fn col_choices(format: BlockFormat) -> Vec<usize> {
    match format.block_len() {
        1 => vec![1, 3, 17, 640, 2048],
        32 => vec![32, 96, 640, 2048],
        _ => vec![256, 768],
    }
}

fn uses_int8(format: BlockFormat, n: usize) -> bool {
    int8_format(format) && n <= small_n_limit(format)
}

#[test]
fn matvec_every_format_level_and_shape() {
    let levels = simd::available_levels();
    for (fi, format) in BlockFormat::ALL.into_iter().enumerate() {
        for cols in col_choices(format) {
            for rows in [1, 3, 17, 257] {
                let m = random_matrix(format, rows, cols, 1 + fi as u64 * 1000 + rows as u64);
                let w = dense(&m);
                let x = random_x(cols, rows as u64 + cols as u64);
                let want = reference(&m, &w, &x, 1);
                let mut ys = Vec::new();
                for &level in &levels {
                    let mut y = vec![f32::NAN; rows];
                    m.matvec_at(level, &x, &mut y);
                    let what = format!("{format} [{rows}x{cols}] matvec {level}");
                    check(&what, &y, &want, int8_format(format));
                    ys.push(y);
                }
                // Same integer math: levels agree far tighter than the bound above.
                for y in &ys[1..] {
                    for (k, (a, b)) in ys[0].iter().zip(y).enumerate() {
                        let tol = 1e-5 * (want[k].1 + want[k].2) + 1e-30;
                        assert!(
                            ((a - b).abs() as f64) <= tol,
                            "{format} [{rows}x{cols}] row {k}: scalar {a} vs simd {b}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_every_format_level_and_shape() {
    let levels = simd::available_levels();
    for (fi, format) in BlockFormat::ALL.into_iter().enumerate() {
        let cols_list = match format.block_len() {
            1 => vec![3, 640],
            32 => vec![32, 640],
            _ => vec![256, 768],
        };
        for cols in cols_list {
            for rows in [1, 17, 33, 257] {
                let m = random_matrix(format, rows, cols, 7 + fi as u64 * 977 + cols as u64);
                let w = dense(&m);
                // Both sides of each format's small-n limit, and gemm tails (tiles of 16
                // rows for 33 rows; the long matrix only with the cheaper n, to keep
                // debug-build test time down).
                let ns: &[usize] = if rows > 100 {
                    &[1, 3, 5, 17]
                } else {
                    &[1, 2, 3, 4, 5, 8, 9, 16, 17, 64, 130]
                };
                for &n in ns {
                    let x = random_x(n * cols, n as u64 * 31 + rows as u64);
                    let want = reference(&m, &w, &x, n);
                    for &level in &levels {
                        let mut y = vec![f32::NAN; n * rows];
                        m.matmul_at(level, &x, n, &mut y);
                        let what = format!("{format} [{rows}x{cols}] matmul n={n} {level}");
                        check(&what, &y, &want, uses_int8(format, n));
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_rows_equal_matvec_for_small_n() {
    // Small n shares the matvec kernels: bit-for-bit the same per row.
    for format in [
        BlockFormat::Q4_K,
        BlockFormat::Q5_0,
        BlockFormat::Q6_K,
        BlockFormat::F16,
    ] {
        let cols = if format.block_len() == 256 { 512 } else { 640 };
        let rows = 100;
        let m = random_matrix(format, rows, cols, 5);
        for level in simd::available_levels() {
            for n in [1, 2, 3, 4, 5, 7, small_n_limit(format)] {
                let x = random_x(n * cols, 9);
                let mut y = vec![0.0; n * rows];
                m.matmul_at(level, &x, n, &mut y);
                for i in 0..n {
                    let mut yi = vec![0.0; rows];
                    m.matvec_at(level, &x[i * cols..(i + 1) * cols], &mut yi);
                    assert_eq!(
                        yi,
                        y[i * rows..(i + 1) * rows],
                        "{format} {level} n={n} i={i}"
                    );
                }
            }
        }
    }
}

#[test]
fn activation_quantization_is_identical_across_levels() {
    let mut x = random_x(32 * 64, 3);
    // Exact ties at the rounding boundary, zeros, and an all-zero block.
    for (k, v) in x[..32].iter_mut().enumerate() {
        *v = k as f32 - 15.5;
    }
    x[32..64].iter_mut().for_each(|v| *v = 0.0);
    x[64] = -3.0;
    let mut acts = Vec::new();
    for level in simd::available_levels() {
        let mut a = Q8Act::default();
        a.quantize(level, &x, 32 * 64);
        a.quantize16(level, &x, 32 * 64);
        acts.push(a);
    }
    for a in &acts[1..] {
        assert_eq!(a.b8.qs, acts[0].b8.qs);
        assert_eq!(a.b8.d, acts[0].b8.d);
        assert_eq!(a.b8.s, acts[0].b8.s);
        assert_eq!(a.b16.qs, acts[0].b16.qs);
        assert_eq!(a.b16.d, acts[0].b16.d);
        assert_eq!(a.b16.s, acts[0].b16.s);
    }
    let a = &acts[0];
    assert!(a.b8.qs[1].iter().all(|&q| q == 0) && a.b8.d[1] == 0.0);
    assert!(a.b16.qs[1].iter().all(|&q| q == 0) && a.b16.d[1] == 0.0);
    // x = d·q within d/2 everywhere, and the extreme value maps to ±127 / ±32767.
    for (j, xb) in x.chunks(32).enumerate() {
        for (k, &v) in xb.iter().enumerate() {
            let err = (v - a.b8.d[j] * f32::from(a.b8.qs[j][k])).abs();
            assert!(err <= a.b8.d[j] * 0.5001 + 1e-7, "block {j} elem {k}");
            let err = (v - a.b16.d[j] * f32::from(a.b16.qs[j][k])).abs();
            // d/2 is ~amax/65534: the f32 rounding of `d·q` (~amax·6e-8) counts too.
            let tol = a.b16.d[j] * 0.5 + v.abs() * 2.4e-7 + 1e-12;
            assert!(err <= tol, "16-bit block {j} elem {k}");
        }
        if a.b16.d[j] != 0.0 {
            assert_eq!(a.b8.qs[j].iter().map(|q| q.unsigned_abs()).max(), Some(127));
            assert_eq!(
                a.b16.qs[j].iter().map(|q| q.unsigned_abs()).max(),
                Some(32767)
            );
        }
        let sum: i32 = a.b16.qs[j].iter().map(|&q| i32::from(q)).sum();
        assert_eq!(a.b16.s[j], a.b16.d[j] * sum as f32, "16-bit block sum {j}");
    }
}

#[test]
fn nested_parallel_calls_share_scratch_safely() {
    use rayon::prelude::*;
    let m = random_matrix(BlockFormat::Q5_0, 1024, 640, 11);
    let x = random_x(640, 1);
    let mut want = vec![0.0; 1024];
    m.matvec(&x, &mut want);
    let ys: Vec<Vec<f32>> = (0..16)
        .into_par_iter()
        .map(|_| {
            let mut y = vec![0.0; 1024];
            m.matvec(&x, &mut y);
            y
        })
        .collect();
    assert!(ys.iter().all(|y| *y == want));
    let x8 = random_x(8 * 640, 2);
    let mut want = vec![0.0; 8 * 1024];
    m.matmul(&x8, 8, &mut want);
    (0..8).into_par_iter().for_each(|_| {
        let mut y = vec![0.0; 8 * 1024];
        m.matmul(&x8, 8, &mut y);
        assert_eq!(y, want);
    });
}

#[test]
fn from_f32_round_trips() {
    let (rows, cols) = (5, 64);
    let x = random_x(rows * cols, 4);
    for format in [
        BlockFormat::F32,
        BlockFormat::F16,
        BlockFormat::BF16,
        BlockFormat::Q8_0,
    ] {
        let m = QMatrix::from_f32(format, rows, cols, &x).unwrap();
        assert_eq!(m.byte_len(), rows * format.row_bytes(cols).unwrap());
        let w = dense(&m);
        for (k, (&a, &b)) in x.iter().zip(&w).enumerate() {
            let tol = match format {
                BlockFormat::F32 => 0.0,
                BlockFormat::F16 => a.abs() / 1024.0,
                BlockFormat::BF16 => a.abs() / 128.0,
                _ => {
                    let blk = &x[k / 32 * 32..k / 32 * 32 + 32];
                    let amax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    // half a step, plus the f16 rounding of d times |q| <= 127
                    amax / 127.0 * 0.5 + amax / 2048.0
                }
            };
            assert!((a - b).abs() <= tol, "{format} elem {k}: {a} vs {b}");
        }
    }
    assert!(QMatrix::from_f32(BlockFormat::Q4_K, 1, 256, &[0.0; 256]).is_err());
    assert!(QMatrix::from_f32(BlockFormat::Q8_0, 1, 48, &[0.0; 48]).is_err());
    assert!(QMatrix::from_f32(BlockFormat::F32, 2, 3, &[0.0; 5]).is_err());
}

#[test]
fn new_validates_shape_and_bytes() {
    let ok = |f: BlockFormat, r, c, len| QMatrix::new(f, r, c, WeightBytes::Owned(vec![0; len]));
    assert!(ok(BlockFormat::Q4_K, 2, 512, 2 * 2 * 144).is_ok());
    let e = ok(BlockFormat::Q4_K, 2, 512, 2 * 2 * 144 - 1).unwrap_err();
    assert!(e.0.contains("576 bytes"), "{e}");
    let e = ok(BlockFormat::Q4_K, 1, 300, 144).unwrap_err();
    assert!(e.0.contains("300 columns"), "{e}");
    assert!(ok(BlockFormat::F16, 3, 7, 42).is_ok());
    assert!(ok(BlockFormat::F16, 3, 7, 43).is_err());
    assert!(ok(BlockFormat::Q8_0, usize::MAX, 32, 34).is_err());

    // Shared bytes are borrowed, and a range outside the buffer is rejected.
    let buf: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![0u8; 100]);
    let shared = |start, len| WeightBytes::Shared {
        buf: buf.clone(),
        start,
        len,
    };
    let m = QMatrix::new(BlockFormat::Q8_0, 2, 32, shared(10, 68)).unwrap();
    assert_eq!(m.byte_len(), 68);
    assert!(QMatrix::new(BlockFormat::Q8_0, 2, 32, shared(40, 68)).is_err());
    assert!(QMatrix::new(BlockFormat::Q8_0, 2, 32, shared(usize::MAX, 68)).is_err());
}

#[test]
fn shared_bytes_compute_like_owned() {
    let owned = random_matrix(BlockFormat::Q6_K, 9, 512, 21);
    let mut backing = vec![7u8; 13];
    backing.extend_from_slice(&owned.data);
    let buf: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(backing);
    let len = owned.byte_len();
    let shared = QMatrix::new(
        BlockFormat::Q6_K,
        9,
        512,
        WeightBytes::Shared {
            buf,
            start: 13,
            len,
        },
    )
    .unwrap();
    let x = random_x(512, 8);
    let (mut a, mut b) = (vec![0.0; 9], vec![0.0; 9]);
    owned.matvec(&x, &mut a);
    shared.matvec(&x, &mut b);
    assert_eq!(a, b);
}

#[test]
fn vector_dequantize_is_bit_identical() {
    for (fi, format) in BlockFormat::ALL.into_iter().enumerate() {
        let cols = format.block_len().max(8) * 3 + usize::from(format.block_len() == 1);
        let m = random_matrix(format, 7, cols, 40 + fi as u64);
        let want = dense(&m);
        for level in simd::available_levels() {
            let mut got = vec![f32::NAN; want.len()];
            dequantize_at(level, format, &m.data, &mut got);
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{format} {level}");
        }
    }
}

#[test]
fn dequantize_rows_is_a_slice_of_the_whole() {
    let m = random_matrix(BlockFormat::Q4_K, 6, 512, 3);
    let all = dense(&m);
    let mut part = vec![0.0; 2 * 512];
    m.dequantize_rows(3..5, &mut part);
    assert_eq!(part, all[3 * 512..5 * 512]);
    m.dequantize_rows(6..6, &mut []);
}

#[test]
#[should_panic(expected = "x length")]
fn matvec_rejects_wrong_lengths() {
    let m = random_matrix(BlockFormat::Q8_0, 2, 32, 1);
    m.matvec(&[0.0; 31], &mut [0.0; 2]);
}

#[test]
fn fast_f16_conversion_is_exact() {
    for h in 0..=u16::MAX {
        let want = half::f16::from_bits(h).to_f32();
        let got = scalar::f16_fast(h);
        if want.is_nan() {
            assert!(got.is_nan(), "{h:#06x}");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
        }
    }
}

#[test]
fn matrices_are_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<QMatrix>();
    shareable::<WeightBytes>();
}

#[test]
fn empty_products() {
    let m = random_matrix(BlockFormat::Q8_0, 3, 64, 1);
    m.matmul(&[], 0, &mut []);
    let z = QMatrix::new(BlockFormat::Q8_0, 0, 64, WeightBytes::Owned(vec![])).unwrap();
    z.matvec(&[0.0; 64], &mut []);
    z.matmul(&[0.0; 64 * 8], 8, &mut []);
}

/// The matrix repacked (see `packed`), from a copy of its bytes.
fn packed_copy(m: &QMatrix) -> QMatrix {
    let mut p = QMatrix::new(
        m.format(),
        m.rows(),
        m.cols(),
        WeightBytes::Owned(m.data.to_vec()),
    )
    .unwrap();
    assert!(p.pack(), "{} packs", m.format());
    p
}

#[test]
fn packed_dequantizes_bit_identically() {
    for (fi, format) in BlockFormat::ALL.into_iter().enumerate() {
        if !packable(format) {
            continue;
        }
        for rows in [1, 16, 17, 40] {
            let cols = if format.block_len() == 256 { 512 } else { 96 };
            let m = random_matrix(format, rows, cols, 11 + fi as u64 + rows as u64);
            let p = packed_copy(&m);
            let mut got = vec![f32::NAN; rows * cols];
            p.dequantize_rows(0..rows, &mut got);
            let want = dense(&m);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{format} [{rows}x{cols}]"
            );
            let mut one = vec![0.0; cols];
            p.dequantize_rows(rows - 1..rows, &mut one);
            assert_eq!(one, want[(rows - 1) * cols..]);
        }
    }
}

#[test]
fn packed_products_every_format_level_and_shape() {
    // Within the activation-rounding bound of the exact product (16-bit blocks: 258x tighter
    // than the 8-bit bound `reference` computes), and every level bit-identical: the scalar
    // kernel does the AVX-512 one's operations in its order.
    for (fi, format) in BlockFormat::ALL.into_iter().enumerate() {
        if !packable(format) {
            continue;
        }
        let cols_list = if format.block_len() == 256 {
            vec![256, 768]
        } else {
            vec![32, 640]
        };
        for cols in cols_list {
            for rows in [1, 17, 48, 257] {
                let m = random_matrix(format, rows, cols, 3 + fi as u64 * 31 + rows as u64);
                let p = packed_copy(&m);
                let w = dense(&m);
                for n in [1, 2, 5, 6, 8, 9, 21] {
                    let x = random_x(n * cols, n as u64 + rows as u64);
                    let want = reference(&m, &w, &x, n);
                    let mut first: Option<Vec<f32>> = None;
                    for level in simd::available_levels() {
                        let mut y = vec![f32::NAN; n * rows];
                        p.matmul_at(level, &x, n, &mut y);
                        let what = format!("packed {format} [{rows}x{cols}] n={n} {level}");
                        check(&what, &y, &want, true);
                        match &first {
                            None => first = Some(y),
                            Some(f) => assert!(
                                f.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{what}: differs from the scalar kernel"
                            ),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packed_rows_are_the_same_whatever_the_batch() {
    // A session decoded among others equals it decoded alone: every row of a product with n
    // activation rows (one pass, or prefill tiles) is bit-identical to its matvec, and
    // matvec_many gives the same as matvec.
    for format in [
        BlockFormat::Q5_0,
        BlockFormat::Q4_K,
        BlockFormat::Q6_K,
        BlockFormat::Q8_0,
    ] {
        let cols = if format.block_len() == 256 { 512 } else { 640 };
        let rows = 100;
        let p = packed_copy(&random_matrix(format, rows, cols, 5));
        for level in simd::available_levels() {
            for n in [1, 2, 3, 4, 7, 8, 9, 16, 33] {
                let x = random_x(n * cols, 9);
                let mut y = vec![0.0; n * rows];
                p.matmul_at(level, &x, n, &mut y);
                for i in 0..n {
                    let mut yi = vec![0.0; rows];
                    p.matvec_at(level, &x[i * cols..(i + 1) * cols], &mut yi);
                    assert_eq!(
                        yi,
                        y[i * rows..(i + 1) * rows],
                        "{format} {level} n={n} i={i}"
                    );
                }
            }
        }
        let x = random_x(cols, 4);
        let mut a = vec![0.0; rows];
        let mut b = vec![0.0; rows];
        p.matvec(&x, &mut a);
        matvec_many(&[&p], &x, &mut [&mut b[..]]);
        assert_eq!(a, b, "{format} matvec_many");
    }
}

#[test]
fn packing_keeps_what_cannot_pack_and_reports_its_size() {
    let mut f = random_matrix(BlockFormat::F16, 8, 64, 1);
    assert!(!f.pack() && !f.is_packed());
    let m = random_matrix(BlockFormat::Q8_0, 20, 64, 2);
    let p = packed_copy(&m);
    // 32 rows (two groups, the second padded) of i8 quants plus an f16 scale per 32.
    assert!(p.is_packed());
    assert_eq!(p.byte_len(), 32 * 64 + 2 * 32 * 2);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn amx_prefill_is_the_bf16_rounded_product() {
    // The AMX product against the product of the bf16-rounded weights and activations in
    // f64: equal up to f32 accumulation (a layout slip moves results by O(Σ|w·x|)), and
    // within the documented bf16 bound of the exact product. Every packable format; odd
    // group counts, partial 16-row tiles and weight tiles, one row and many.
    if !simd::amx() {
        // A CPU that lists AMX on a kernel that refuses the tile state (Linux < 5.16) lands
        // here too: prefill then stays on the VNNI kernel, which the tests above cover.
        eprintln!(
            "no usable AMX (listed by the CPU: {}): nothing to check",
            simd::amx_detected()
        );
        return;
    }
    let bf = |v: f32| f64::from(half::bf16::from_f32(v).to_f32());
    for (fi, format) in BlockFormat::ALL.into_iter().enumerate() {
        if !packable(format) {
            continue;
        }
        let cols = if format.block_len() == 256 { 768 } else { 640 };
        for rows in [16, 17, 48, 100, 257] {
            let m = random_matrix(format, rows, cols, 11 + fi as u64 + rows as u64);
            let pm = packed_copy(&m);
            let p = pm.packed.as_ref().unwrap();
            let w = dense(&m);
            for n in [1, 3, 16, 17, 70] {
                let x = random_x(n * cols, 7 * n as u64 + rows as u64);
                let mut y = vec![f32::NAN; n * rows];
                for parallel in [false, true] {
                    // SAFETY: AMX usable (checked above); lengths as the function requires.
                    unsafe { amx::matmul(p, &x, n, &mut y, parallel) };
                    for i in 0..n {
                        for r in 0..rows {
                            let (wr, xi) = (&w[r * cols..][..cols], &x[i * cols..][..cols]);
                            let mut rounded = 0.0f64;
                            let mut exact = 0.0f64;
                            let mut mag = 0.0f64;
                            for (&a, &b) in wr.iter().zip(xi) {
                                rounded += bf(a) * bf(b);
                                exact += f64::from(a) * f64::from(b);
                                mag += (f64::from(a) * f64::from(b)).abs();
                            }
                            let got = f64::from(y[i * rows + r]);
                            let what = format!("{format} [{rows}x{cols}] n={n} row {i} col {r}");
                            assert!(
                                (got - rounded).abs() <= mag * cols as f64 * 2f64.powi(-23),
                                "{what}: {got} vs bf16-rounded {rounded} (Σ|wx| {mag})"
                            );
                            assert!(
                                (got - exact).abs() <= mag * 2f64.powi(-7),
                                "{what}: {got} vs exact {exact} (Σ|wx| {mag})"
                            );
                        }
                    }
                }
            }
        }
    }
}
