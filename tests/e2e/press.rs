//! The compression engine end to end on the tiny models: every method decodes from a compressed
//! cache on every architecture, a budget ≥ the prompt changes nothing, the cache physically
//! holds what was kept, positions continue from the prompt, bad settings are refused.

use compresskv_runtime::generate::{GenerateOptions, GenerateOutput, generate};
use compresskv_runtime::loader::{LoadedModel, load_hf_dir};
use compresskv_runtime::press::budget::ErrorAwareParams;
use compresskv_runtime::press::engine::BudgetSpec;
use compresskv_runtime::press::{
    Compressor, HeadProfile, PressParams, SlidingPolicy, method_names, press_by_name,
};

use crate::common::{cpu, shared_dir};

const ARCHS: [&str; 5] = ["llama", "mistral", "qwen2", "qwen3", "gemma3"];

/// A hand-made profile: head order reversed per layer, increasing layer errors.
pub(crate) fn test_profile(loaded: &LoadedModel) -> HeadProfile {
    let s = &loaded.spec;
    let errs: Vec<f64> = (1..=s.n_layers).map(|i| i as f64).collect();
    let total: f64 = errs.iter().sum();
    HeadProfile {
        srh_ranking: (0..s.n_layers)
            .map(|_| (0..s.n_heads).rev().collect())
            .collect(),
        layer_errors: Some(errs.iter().map(|e| e / total).collect()),
    }
}

pub(crate) fn run(
    loaded: &LoadedModel,
    ids: &[u32],
    method: &str,
    budget: usize,
    sliding: SlidingPolicy,
) -> GenerateOutput {
    let params = PressParams {
        window: 4,
        kernel: 3,
        ..Default::default()
    };
    let c = Compressor::new(
        press_by_name(method).unwrap(),
        params,
        BudgetSpec::Entries(budget),
        sliding,
        ErrorAwareParams {
            min: 6,
            max_factor: 3.0,
            error_weight: 1.0,
        },
        Some(test_profile(loaded)),
        &loaded.spec,
    )
    .unwrap_or_else(|e| panic!("{method}: {e}"));
    let opts = GenerateOptions {
        max_new_tokens: 6,
        ..Default::default()
    };
    generate(&loaded.model, &loaded.tokenizer, ids, &opts, Some(&c)).unwrap()
}

pub(crate) fn prompt(loaded: &LoadedModel) -> Vec<u32> {
    let text = "In a distant land, numbers like 12345 and 67890 were written on stones. ".repeat(4);
    loaded.tokenizer.encode(&text, true).unwrap()
}

#[test]
fn every_method_decodes_from_a_compressed_cache_on_every_architecture() {
    let Some(shared) = shared_dir() else { return };
    for arch in ARCHS {
        let loaded =
            load_hf_dir(&shared.join(format!("reference/tiny/tiny-{arch}")), &cpu()).unwrap();
        let ids = prompt(&loaded);
        let n = ids.len();
        let full = run(&loaded, &ids, "full", 16, SlidingPolicy::Keep);
        for method in method_names() {
            for sliding in [SlidingPolicy::Keep, SlidingPolicy::Compress] {
                // A budget ≥ the prompt keeps everything: identical to full.
                let same = run(&loaded, &ids, method, n + 5, sliding);
                assert_eq!(
                    same.token_ids, full.token_ids,
                    "{arch}/{method}: budget ≥ prompt"
                );
                assert_eq!(same.kv_cache_bytes, full.kv_cache_bytes);

                let out = run(&loaded, &ids, method, 12, sliding);
                assert_eq!(out.token_ids.len(), 6, "{arch}/{method}");
                let kept = &out.compression.as_ref().unwrap().kept_per_layer;
                let per_entry = loaded.spec.kv_bytes_per_entry() / loaded.spec.n_kv_heads;
                // Bytes reported equal the arithmetic of what is kept.
                let kv_heads = loaded.spec.n_kv_heads;
                let bytes: usize = kept.iter().map(|&k| k * kv_heads * per_entry).sum();
                if method != "adakv" {
                    assert_eq!(out.kv_cache_bytes, bytes, "{arch}/{method}");
                }
                if method == "full" {
                    assert_eq!(out.kv_cache_bytes, full.kv_cache_bytes);
                    continue;
                }
                assert!(
                    out.kv_cache_bytes < out.kv_cache_bytes_full,
                    "{arch}/{method}"
                );
                let layers_total: usize = kept.iter().sum();
                let compressed = kept
                    .iter()
                    .zip(&loaded.spec.layers)
                    .filter(|(_, l)| {
                        sliding == SlidingPolicy::Compress || l.attention.window().is_none()
                    })
                    .count();
                assert!(layers_total <= full.kv_entries_per_layer.iter().sum::<usize>());
                assert!(compressed > 0 || arch == "gemma3");
            }
        }
    }
}

#[test]
fn bad_settings_are_refused_with_clear_errors() {
    let Some(shared) = shared_dir() else { return };
    let loaded = load_hf_dir(&shared.join("reference/tiny/tiny-llama"), &cpu()).unwrap();
    let mk = |method: &str, budget: usize, profile: Option<HeadProfile>, params: PressParams| {
        Compressor::new(
            press_by_name(method).unwrap(),
            params,
            BudgetSpec::Entries(budget),
            SlidingPolicy::Keep,
            ErrorAwareParams::default(),
            profile,
            &loaded.spec,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    let p = PressParams::default();
    assert!(mk("snapkv", 0, None, p.clone()).contains("--budget 0"));
    assert!(mk("snapkv", 8, None, p.clone()).contains("observation window"));
    assert!(mk("compresskv", 64, None, p.clone()).contains("compresskv profile"));
    let wrong = HeadProfile {
        srh_ranking: vec![vec![0; 32]; 32],
        layer_errors: None,
    };
    let e = mk("compresskv", 64, Some(wrong), p.clone());
    assert!(
        e.contains("32 layers × 32 heads") && e.contains("3 layers × 4"),
        "{e}"
    );
    let e = mk("snapkv", 64, None, PressParams { kernel: 4, ..p });
    assert!(e.contains("odd"), "{e}");
}
