//! Criterion micro-benchmark of the selection step that runs once per compressed layer after
//! prefill: window attention probabilities → sum → average pooling → (SRH heads) → top-k.
//! Real Gemma 3 270M attention block (4 query heads, 1 KV head, head_dim 256) on a synthetic
//! cache of 4K / 16K / 32K entries. Needs the model: `compresskv fetch`.
//!
//! `cargo bench --manifest-path bench/Cargo.toml --bench selection`

use burn::tensor::{Distribution, Tensor};
use compresskv_runtime::cache::KvCache;
use compresskv_runtime::loader::load_model;
use compresskv_runtime::press::{HeadProfile, LayerView, PressParams, press_by_name, select};
use compresskv_runtime::spec::AttentionKind;
use compresskv_runtime::{CausalLM, RuntimeDevice};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn selection(c: &mut Criterion) {
    let loaded = load_model("google/gemma-3-270m", &RuntimeDevice::cpu())
        .expect("the selection benchmark needs Gemma 3 270M: run `compresskv fetch`");
    let spec = loaded.spec.clone();
    let dev = loaded.model.device().device.clone();
    let layer = spec
        .layers
        .iter()
        .position(|l| l.attention == AttentionKind::Full)
        .expect("a global layer");
    let params = PressParams::default();
    let profile = HeadProfile {
        srh_ranking: vec![(0..spec.n_heads).collect(); spec.n_layers],
        layer_errors: None,
    };
    let (d, w) = (spec.head_dim, params.window);
    let mut group = c.benchmark_group("selection");
    group.sample_size(10);
    for t in [4096usize, 16384, 32768] {
        let mut cache = KvCache::new(&spec).layers[layer].clone();
        let kv = |n: usize| {
            Tensor::<4>::random(
                [1, spec.n_kv_heads, n, d],
                Distribution::Normal(0.0, 1.0),
                &dev,
            )
        };
        let positions: Vec<i64> = (0..t as i64).collect();
        cache.append(kv(t), kv(t), &positions);
        let q = Tensor::<4>::random(
            [1, spec.n_heads, w, d],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let q_pos = &positions[t - w..];
        for method in ["snapkv", "compresskv"] {
            let press = press_by_name(method).unwrap();
            group.bench_with_input(BenchmarkId::new(method, t), &t, |b, _| {
                b.iter(|| {
                    let view = LayerView {
                        layer,
                        spec: &spec,
                        queries: &q,
                        query_positions: q_pos,
                        cache: &cache,
                        attention: loaded.model.attention(layer),
                        params: &params,
                        profile: Some(&profile),
                    };
                    let scores = press.score(&view).unwrap().unwrap();
                    select(&scores, 128, w, spec.n_kv_heads, press.split())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
