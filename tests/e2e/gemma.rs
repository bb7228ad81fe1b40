//! Golden checks on the real model (Gemma 3 270M, Q4_K_M GGUF) against the reference
//! implementation's fp32 run of the same file: tokenizer ids, top-10 logits at the end of three
//! prompts (20, ~600, ~1500 tokens: the sliding window matters), 20-token greedy continuations.

use compresskv_runtime::generate::{GenerateOptions, generate};
use compresskv_runtime::loader::LoadedModel;
use compresskv_runtime::{CausalLM, ForwardCtx, KvCache};

use crate::common::{json, real_model, shared_dir};

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_tokenizer(lm: &LoadedModel, shared: &std::path::Path) {
    let t = json(&shared.join("reference/gemma-3-270m/tokenizer.json"));
    for case in t["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            lm.tokenizer.encode(text, true).unwrap(),
            ids_of(&case["ids_bos"]),
            "ids (with BOS) of {text:?}"
        );
        assert_eq!(
            lm.tokenizer.encode(text, false).unwrap(),
            ids_of(&case["ids_no_bos"]),
            "ids of {text:?}"
        );
        assert_eq!(
            lm.tokenizer.decode(&ids_of(&case["ids_no_bos"])).unwrap(),
            case["decoded"].as_str().unwrap()
        );
    }
}

fn check_prompt(lm: &LoadedModel, p: &serde_json::Value) {
    let name = p["name"].as_str().unwrap();
    let ids = ids_of(&p["ids"]);
    let text = p["text"].as_str().unwrap();
    assert_eq!(
        lm.tokenizer.encode(text, true).unwrap(),
        ids,
        "{name}: prompt ids"
    );

    let mut cache = KvCache::new(lm.model.spec());
    let logits = lm.model.forward(&ids, &mut ForwardCtx::new(&mut cache));
    let ours: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap();
    let ref_ids = ids_of(&p["top10_ids"]);
    let ref_logits: Vec<f32> = p["top10_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    for (id, want) in ref_ids.iter().zip(&ref_logits) {
        let got = ours[*id as usize];
        assert!(
            (got - want).abs() < 2e-2,
            "{name}: logit of token {id}: ours {got}, reference {want}"
        );
    }
    let first8: Vec<f32> = p["logits_first8"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    for (i, want) in first8.iter().enumerate() {
        assert!(
            (ours[i] - want).abs() < 2e-2,
            "{name}: logit {i}: {} vs {want}",
            ours[i]
        );
    }
    // Our top 10, in order, must equal the reference's wherever neighbours differ by > 1e-2.
    let mut order: Vec<usize> = (0..ours.len()).collect();
    order.sort_by(|&a, &b| ours[b].total_cmp(&ours[a]));
    for r in 0..10 {
        let separated = (r == 0 || ref_logits[r - 1] - ref_logits[r] > 1e-2)
            && (r == 9 || ref_logits[r] - ref_logits[r + 1] > 1e-2);
        if separated {
            assert_eq!(
                order[r] as u32, ref_ids[r],
                "{name}: rank {r} of the top 10"
            );
        }
    }

    let want = ids_of(&p["greedy20_ids"]);
    let opts = GenerateOptions {
        max_new_tokens: want.len(),
        ..Default::default()
    };
    let out = generate(&lm.model, &lm.tokenizer, &ids, &opts, None).unwrap();
    assert_eq!(out.token_ids, want, "{name}: greedy continuation");
}

#[test]
fn gemma3_270m_matches_reference() {
    let Some(shared) = shared_dir() else { return };
    let Some(lm) = real_model() else { return };
    check_tokenizer(&lm, &shared);
    let refs = json(&shared.join("reference/gemma-3-270m/model_logits.json"));
    for p in refs["prompts"].as_array().unwrap() {
        check_prompt(&lm, p);
    }
}
