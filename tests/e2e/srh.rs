//! The profiler's SRH calibration against the Python reference run on the real model
//! (`../shared/reference/gemma-3-270m/srh_reference.json`): same prompt ids ⇒ same generated
//! ids, same counted set, per-head sums within 1e-2 relative, same top head per global layer.

use compresskv_profiler::srh::{CalibSample, aggregate, score_sample};

use crate::common::{json, real_model, shared_dir};

fn mat(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn srh_calibration_reproduces_the_reference() {
    let Some(shared) = shared_dir() else { return };
    let Some(loaded) = real_model() else { return };
    let r = json(&shared.join("reference/gemma-3-270m/srh_reference.json"));
    let needles = r["needles"].as_array().unwrap();
    let samples = r["samples"].as_array().unwrap();
    let max_new = r["max_new"].as_u64().unwrap() as usize;
    let eos = loaded.eos_ids();
    // Every counted sample (they define the scores) and a few that did not count.
    let mut uncounted = 0;
    let mut results = Vec::new();
    for s in samples {
        let counted = s["counted"].as_bool().unwrap();
        if !counted {
            if uncounted >= 3 {
                continue;
            }
            uncounted += 1;
        }
        let ids: Vec<u32> = s["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let span = s["span"].as_array().unwrap();
        let needle = &needles[s["needle_idx"].as_u64().unwrap() as usize];
        let sample = CalibSample {
            ids,
            span: span[0].as_u64().unwrap() as usize..span[1].as_u64().unwrap() as usize,
            answer: needle["real_needle"].as_str().unwrap().to_string(),
        };
        let got = score_sample(&loaded.model, &loaded.tokenizer, &sample, max_new, &eos);
        let want_gen: Vec<u32> = s["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let tag = format!(
            "needle {} length {} depth {}",
            s["needle_idx"], s["length"], s["depth"]
        );
        assert_eq!(got.generated, want_gen, "{tag}: generated ids");
        assert_eq!(got.counted, counted, "{tag}: counted");
        if counted {
            for (name, ours, theirs) in [
                ("srh", &got.srh_sum, mat(&s["srh_sum"])),
                ("classic", &got.classic_sum, mat(&s["classic_sum"])),
            ] {
                for (l, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    for (h, (x, y)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (x - y).abs() <= 1e-2 * y.abs() + 1e-4,
                            "{tag}: {name} sum layer {l} head {h}: ours {x}, reference {y}"
                        );
                    }
                }
            }
        }
        results.push(got);
    }
    let (srh, _) = aggregate(&results, loaded.spec.n_layers, loaded.spec.n_heads);
    let want = mat(&r["srh_score"]);
    for (layer, head) in [(5, 1), (11, 2), (17, 2)] {
        let top = (0..loaded.spec.n_heads)
            .max_by(|&a, &b| srh[layer][a].total_cmp(&srh[layer][b]))
            .unwrap();
        assert_eq!(top, head, "top SRH of global layer {layer}");
        for h in 0..loaded.spec.n_heads {
            assert!((srh[layer][h] - want[layer][h]).abs() <= 1e-2 * want[layer][h].abs() + 1e-4);
        }
    }
}
