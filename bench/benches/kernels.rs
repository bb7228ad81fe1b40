//! Criterion micro-benchmarks of the CPU kernels on Gemma 3 270M's own weights (as stored in
//! the fetched GGUF): the decode mat-vecs (the tied Q8_0 LM head, a Q5_0 MLP matrix, a Q4_K
//! matrix where present), the prefill mat-mat, and decode attention over a 16K-entry KV head —
//! at every SIMD level this machine runs; and the issue rates of the multiply-add instructions
//! a matmul could be built on (f32 FMA, `vpmaddwd`, `vpmaddubsw`: multiply-adds per second on
//! one core). Needs the model: `compresskv fetch`.
//!
//! `cargo bench --manifest-path bench/Cargo.toml --bench kernels`

use compresskv_runtime::RuntimeDevice;
use compresskv_runtime::loader::load_model;
use compresskv_runtime::kernels::attention::{AttnParams, attend_at};
use compresskv_runtime::kernels::peak::{Op, op_chains};
use compresskv_runtime::kernels::simd::available_levels;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn kernels(c: &mut Criterion) {
    let mut g = c.benchmark_group("peak");
    g.sample_size(20);
    const ITERS: u64 = 1 << 20;
    for op in Op::ALL {
        if let Some(macs) = op_chains(op, ITERS) {
            g.throughput(Throughput::Elements(macs));
            g.bench_function(op.name(), |b| b.iter(|| op_chains(op, ITERS)));
        }
    }
    g.finish();

    let loaded = load_model("google/gemma-3-270m", &RuntimeDevice::cpu())
        .expect("the kernel benchmark needs Gemma 3 270M: run `compresskv fetch`");
    let mats = loaded.model.matrices();
    let pick = |pred: &dyn Fn(&str, &str) -> bool| {
        mats.iter()
            .filter_map(|(n, l)| l.kernel().map(|q| (n.clone(), q)))
            .find(|(n, q)| pred(n, q.format().name()))
    };
    let chosen = [
        pick(&|n, _| n == "output"),
        pick(&|n, f| n.ends_with("ffn_up") && f == "q5_0"),
        pick(&|_, f| f == "q4_k"),
    ];
    let mut g = c.benchmark_group("matvec");
    g.sample_size(20);
    for (name, q) in chosen.iter().flatten() {
        let x: Vec<f32> = (0..q.cols()).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let mut y = vec![0.0f32; q.rows()];
        g.throughput(Throughput::Bytes(q.byte_len() as u64));
        for level in available_levels() {
            let id = BenchmarkId::new(format!("{name} {}", q.format().name()), level.name());
            g.bench_function(id, |b| b.iter(|| q.matvec_at(level, &x, &mut y)));
        }
    }
    g.finish();

    // Batched decode (`serve`): a few activation rows share each pass over the weights.
    let mut g = c.benchmark_group("batched");
    g.sample_size(10);
    for (name, q) in chosen.iter().flatten() {
        let n = 8;
        let x: Vec<f32> = (0..n * q.cols()).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let mut y = vec![0.0f32; n * q.rows()];
        g.throughput(Throughput::Elements((n * q.rows() * q.cols()) as u64));
        for level in available_levels() {
            let id = BenchmarkId::new(format!("{name} {} n={n}", q.format().name()), level.name());
            g.bench_function(id, |b| b.iter(|| q.matmul_at(level, &x, n, &mut y)));
        }
    }
    g.finish();

    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    let n = 512;
    for (name, q) in chosen.iter().skip(1).flatten() {
        let x: Vec<f32> = (0..n * q.cols()).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let mut y = vec![0.0f32; n * q.rows()];
        g.throughput(Throughput::Elements((2 * n * q.rows() * q.cols()) as u64));
        for level in available_levels() {
            let id = BenchmarkId::new(format!("{name} {} n={n}", q.format().name()), level.name());
            g.bench_function(id, |b| b.iter(|| q.matmul_at(level, &x, n, &mut y)));
        }
    }
    g.finish();

    // Decode attention: 4 query heads over one KV head of 16K entries, head_dim 256.
    let (t, d, r) = (16384, 256, 4);
    let k: Vec<f32> = (0..t * d).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.05).collect();
    let v: Vec<f32> = (0..t * d).map(|i| ((i * 11 % 19) as f32 - 9.0) * 0.05).collect();
    let q: Vec<f32> = (0..r * d).map(|i| ((i * 5 % 23) as f32 - 11.0) * 0.05).collect();
    let mut out = vec![0.0f32; r * d];
    let params = AttnParams {
        scale: 1.0 / 16.0,
        softcap: None,
    };
    let mut g = c.benchmark_group("attention");
    g.sample_size(20);
    g.throughput(Throughput::Bytes((2 * t * d * 4) as u64));
    for level in available_levels() {
        g.bench_function(BenchmarkId::new("decode 16K d256 4 heads", level.name()), |b| {
            b.iter(|| attend_at(level, &q, &k, &v, d, &params, &|_| (0, t), &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
