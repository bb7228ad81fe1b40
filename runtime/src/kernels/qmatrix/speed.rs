//! Throughput numbers and tuning sweeps, not tests. Run one at a time so they do not share the
//! cores: `cargo test --release -- --ignored --nocapture --test-threads=1 qmatrix::speed::speed`
//! (likewise `::crossover`, `::tiling`, `::grain`).

use super::*;
use std::time::{Duration, Instant};

fn matrix(format: BlockFormat, rows: usize, cols: usize) -> QMatrix {
    // Any bytes decode (scales land anywhere), which is all a timing needs; keep f16
    // scales finite by clearing their exponent's top bit.
    let bytes: Vec<u8> = (0..rows * format.row_bytes(cols).unwrap())
        .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 & 0xBF)
        .collect();
    QMatrix::new(format, rows, cols, WeightBytes::Owned(bytes)).unwrap()
}

/// Best seconds per call over ~0.5 s (after a warm-up call): the machine this was tuned on
/// was shared, and the minimum is the least disturbed by other load.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut v = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) || v.len() < 5 {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64());
    }
    v.into_iter().fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore]
fn speed() {
    println!("threads: {}", rayon::current_num_threads());
    {
        // Ceiling: touch every cache line of a Q8_0 LM-head-sized buffer, in parallel.
        use rayon::prelude::*;
        let m = matrix(BlockFormat::Q8_0, 262144, 640);
        let w: &[u8] = &m.data;
        let s = time(|| {
            let t: u64 = w
                .par_chunks(1 << 20)
                .map(|c| c.iter().step_by(64).map(|&b| u64::from(b)).sum::<u64>())
                .sum();
            std::hint::black_box(t);
        });
        println!(
            "read-only baseline {} MB: {:.2} GB/s",
            w.len() >> 20,
            w.len() as f64 / s / 1e9
        );
    }
    let mv = [
        (BlockFormat::Q8_0, 262144, 640),
        (BlockFormat::Q5_0, 2048, 640),
        (BlockFormat::Q4_K, 640, 2048),
        (BlockFormat::Q4_0, 2048, 640),
        (BlockFormat::Q8_0, 2048, 640),
        (BlockFormat::Q6_K, 2048, 768),
        (BlockFormat::F16, 2048, 640),
        (BlockFormat::Q5_0, 16384, 2048),
    ];
    for (format, rows, cols) in mv {
        let m = matrix(format, rows, cols);
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0.0; rows];
        for level in simd::available_levels() {
            let s = time(|| m.matvec_at(level, &x, &mut y));
            println!(
                "matvec {format} {rows}x{cols} {level}: {:.1} us, {:.2} GB/s",
                s * 1e6,
                m.byte_len() as f64 / s / 1e9
            );
        }
    }
    let mm = [
        (BlockFormat::Q5_0, 2048, 640, 512),
        (BlockFormat::Q5_0, 640, 2048, 512),
        (BlockFormat::Q5_0, 1024, 640, 512),
        (BlockFormat::Q5_0, 256, 640, 512),
        (BlockFormat::Q4_K, 2048, 1024, 512),
        (BlockFormat::Q8_0, 2048, 640, 1024),
        (BlockFormat::Q5_0, 2048, 640, 4),
        (BlockFormat::Q5_0, 2048, 640, 16),
    ];
    for (format, rows, cols, n) in mm {
        let m = matrix(format, rows, cols);
        let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0.0; n * rows];
        for level in simd::available_levels() {
            let s = time(|| m.matmul_at(level, &x, n, &mut y));
            println!(
                "matmul {format} n={n} {cols}->{rows} {level}: {:.2} ms, {:.1} GFLOP/s",
                s * 1e3,
                2.0 * (n * rows * cols) as f64 / s / 1e9
            );
        }
    }
}

/// Where the gemm path overtakes the matvec kernels:
/// `cargo test --release -- --ignored --nocapture --test-threads=1 qmatrix::speed::crossover`.
#[test]
#[ignore]
fn crossover() {
    let level = simd::detected();
    for (format, rows, cols) in [
        (BlockFormat::Q5_0, 2048, 640),
        (BlockFormat::Q8_0, 2048, 640),
        (BlockFormat::Q4_K, 640, 2048),
        (BlockFormat::Q6_K, 1024, 768),
        (BlockFormat::F16, 2048, 640),
    ] {
        let m = matrix(format, rows, cols);
        for n in [4, 8, 12, 16, 24, 32, 48] {
            let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y = vec![0.0; n * rows];
            let (mut a, mut b) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..20 {
                let t = Instant::now();
                m.matmul_small(level, &x, n, &mut y);
                a = a.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                m.matmul_gemm(level, &x, n, &mut y);
                b = b.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{format} {cols}->{rows} n={n}: small {:.3} ms, gemm {:.3} ms",
                a * 1e3,
                b * 1e3
            );
        }
    }
}

/// Tile size and parallel strategy of the gemm path:
/// `cargo test --release -- --ignored --nocapture --test-threads=1 qmatrix::speed::tiling`.
#[test]
#[ignore]
fn tiling() {
    let level = simd::detected();
    for (format, rows, cols, n) in [
        (BlockFormat::Q5_0, 2048, 640, 512),
        (BlockFormat::Q5_0, 640, 2048, 512),
        (BlockFormat::Q5_0, 1024, 640, 512),
        (BlockFormat::Q5_0, 256, 640, 512),
    ] {
        let m = matrix(format, rows, cols);
        let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0.0; n * rows];
        let flop = 2.0 * (n * rows * cols) as f64;
        // Interleave the configurations over rounds and keep each one's best, so load
        // from other processes drifting over time does not favour one of them.
        let configs: Vec<(usize, bool)> = [true, false]
            .into_iter()
            .flat_map(|par| {
                [
                    16 * 1024,
                    32 * 1024,
                    64 * 1024,
                    128 * 1024,
                    256 * 1024,
                    1 << 20,
                ]
                .map(|e| ((e / cols).clamp(16, 4096).next_multiple_of(16), par))
            })
            .collect();
        let mut best = vec![f64::INFINITY; configs.len()];
        for _ in 0..8 {
            for (k, &(tile, par)) in configs.iter().enumerate() {
                for _ in 0..3 {
                    let t = Instant::now();
                    m.matmul_gemm_with(level, &x, n, &mut y, tile, par);
                    best[k] = best[k].min(t.elapsed().as_secs_f64());
                }
            }
        }
        for (&(tile, par), s) in configs.iter().zip(best) {
            println!(
                "{format} n={n} {cols}->{rows} tile {tile} rows, parallel tiles {par}: {:.1} GFLOP/s",
                flop / s / 1e9
            );
        }
    }
}

/// Rows per task of the parallel matvec:
/// `cargo test --release -- --ignored --nocapture --test-threads=1 qmatrix::speed::grain`.
#[test]
#[ignore]
fn grain() {
    let level = simd::detected();
    for (format, rows, cols) in [
        (BlockFormat::Q5_0, 2048, 640),
        (BlockFormat::Q5_0, 1024, 640),
        (BlockFormat::Q5_0, 256, 640),
        (BlockFormat::Q8_0, 262144, 640),
    ] {
        let m = matrix(format, rows, cols);
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0.0; rows];
        let grains: Vec<usize> = [16, 64, 256, 1024, 4096, 16384, rows]
            .into_iter()
            .filter(|&g| g <= rows)
            .collect();
        let mut best = vec![f64::INFINITY; grains.len()];
        let reps = if rows > 100_000 { 3 } else { 200 };
        for _ in 0..5 {
            for (k, &g) in grains.iter().enumerate() {
                for _ in 0..reps {
                    let t = Instant::now();
                    m.small_n::<1>(level, &x, [&mut y], g);
                    best[k] = best[k].min(t.elapsed().as_secs_f64());
                }
            }
        }
        let chosen = m.grain();
        for (g, s) in grains.iter().zip(best) {
            println!(
                "matvec {format} {rows}x{cols} grain {g}: {:.1} us, {:.2} GB/s{}",
                s * 1e6,
                m.byte_len() as f64 / s / 1e9,
                if *g == chosen { " (default)" } else { "" }
            );
        }
    }
}

/// The prefill products of Gemma 3 270M's shapes on the packed weights, 512 prompt rows:
/// `cargo test --release -p compresskv-runtime --lib -- --ignored --nocapture qmatrix::speed::prefill`.
#[test]
#[ignore]
fn prefill() {
    let level = simd::detected();
    let n = 512;
    let shapes = [
        (BlockFormat::Q5_0, 1024, 640),
        (BlockFormat::Q5_0, 256, 640),
        (BlockFormat::Q5_0, 640, 1024),
        (BlockFormat::Q5_0, 2048, 640),
        (BlockFormat::Q4_K, 640, 2048),
        (BlockFormat::Q6_K, 640, 2048),
    ];
    let mut cases: Vec<(QMatrix, Vec<f32>, Vec<f32>)> = shapes
        .iter()
        .map(|&(f, r, c)| {
            let mut m = matrix(f, r, c);
            m.pack();
            let x = (0..n * c).map(|i| (i as f32 * 0.37).sin()).collect();
            (m, x, vec![0.0; n * r])
        })
        .collect();
    // Interleaved rounds, each case's best (as `tiling`): drifting load favours none of them.
    let mut best = vec![f64::INFINITY; cases.len()];
    for _ in 0..10 {
        for ((m, x, y), best) in cases.iter_mut().zip(&mut best) {
            for _ in 0..3 {
                let t = Instant::now();
                m.matmul_at(level, x, n, y);
                *best = best.min(t.elapsed().as_secs_f64());
            }
        }
    }
    let mut total = 0.0;
    for (&(f, r, c), s) in shapes.iter().zip(&best) {
        total += s;
        println!(
            "prefill {f} n={n} {c}->{r}: {:.3} ms, {:.1} G MAC/s",
            s * 1e3,
            (n * r * c) as f64 / s / 1e9
        );
    }
    println!("prefill total {:.3} ms", total * 1e3);
}
