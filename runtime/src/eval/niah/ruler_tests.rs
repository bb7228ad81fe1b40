//! RULER prompts on the whitespace test tokenizer of `tests.rs`: needles, keys, values, the
//! template, length, depth, seeds, scoring and errors; and the shared RULER data when present.

use std::collections::HashSet;

use super::ruler::{RULER_MAX_NEW_TOKENS, ruler_depths, uuid4};
use super::tests::{numbered_haystack, shared_dataset, temp_file, with_builder};
use super::*;

/// 40 × 40 words: enough distinct `adjective-noun` keys for the needle haystack at these lengths.
fn words() -> RulerWords {
    let adjs: Vec<String> = (0..40).map(|i| format!("adj{i}")).collect();
    let nouns: Vec<String> = (0..40).map(|i| format!("noun{i}")).collect();
    RulerWords::from_lists(&adjs.join("\n"), &nouns.join("\n")).unwrap()
}

/// `(key, value)` of every needle sentence in the prompt (real and distractor).
fn needles_in(prompt: &str, label: &str) -> Vec<(String, String)> {
    let head = format!("One of the special magic {label} for ");
    prompt
        .split(&head)
        .skip(1)
        .map(|rest| {
            let (key, rest) = rest.split_once(" is: ").unwrap();
            let value = rest.split_once('.').unwrap().0;
            (key.to_string(), value.to_string())
        })
        .collect()
}

fn is_uuid4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
        && parts[2].starts_with('4')
        && parts[3].starts_with(['8', '9', 'a', 'b'])
}

fn check_kind(kind: RulerKind, s: &str) {
    match kind {
        RulerKind::Numbers => assert!(
            s.len() == 7 && s.chars().all(|c| c.is_ascii_digit()) && !s.starts_with('0'),
            "{s}"
        ),
        RulerKind::Words => {
            let (a, n) = s.split_once('-').unwrap();
            assert!(a.starts_with("adj") && n.starts_with("noun"), "{s}");
        }
        RulerKind::Uuids => assert!(is_uuid4(s), "{s}"),
    }
}

#[test]
fn every_task_hides_its_needles_with_values_of_the_right_kind() {
    let h = numbered_haystack(600);
    let w = words();
    with_builder(&h, Some(7), |b, _| {
        for task in RulerTask::ALL {
            let cfg = task.config();
            let label = cfg.value.name();
            let s = b.ruler(task, Some(&w), 1500, 50.0, 11).unwrap();
            assert_eq!(s.protocol, Protocol::Ruler);
            assert_eq!(s.task, Task::Ruler(task));
            assert_eq!(s.max_new_tokens, RULER_MAX_NEW_TOKENS);
            let found = needles_in(&s.prompt, label);
            let n_keys = cfg.num_keys.max(cfg.num_queries);
            let real = n_keys * cfg.num_values;
            if cfg.haystack == ruler::RulerHaystack::Needle {
                assert!(found.len() > 20 * real, "{task}: a haystack of needles");
            } else {
                assert_eq!(found.len(), real, "{task}: the needle count");
            }
            // Keys are distinct except for a key's several values; no value twice.
            let keys: HashSet<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
            let values: HashSet<&str> = found.iter().map(|(_, v)| v.as_str()).collect();
            assert_eq!(keys.len() * cfg.num_values, found.len(), "{task}");
            assert_eq!(values.len(), found.len(), "{task}");
            for (k, v) in &found {
                check_kind(cfg.key, k);
                check_kind(cfg.value, v);
            }
            // The expected values: one per value of each queried key, all hidden in the prompt.
            assert_eq!(s.values.len(), cfg.num_queries * cfg.num_values, "{task}");
            for v in &s.values {
                assert!(found.iter().any(|(_, fv)| fv == v), "{task}: {v}");
            }
            assert_eq!(s.score_reference, s.values.join(", "));
            // The question names the queried keys, in RULER's template.
            let singular = cfg.num_queries * cfg.num_values == 1;
            let (a, are, type_v) = if singular {
                ("A", "is", &label[..label.len() - 1])
            } else {
                ("Some", "are", label)
            };
            assert!(s.prompt.starts_with(&format!(
                "{a} special magic {type_v} {are} hidden within the following text. Make sure to memorize it. I will quiz you about the {type_v} afterwards.\n"
            )), "{task}: {}", &s.prompt[..200]);
            assert!(
                s.prompt
                    .ends_with(&format!(" mentioned in the provided text {are}")),
                "{task}"
            );
            let question = s.prompt.rsplit_once("\nWhat ").unwrap().1;
            for v in &s.values {
                let key = &found.iter().find(|(_, fv)| fv == v).unwrap().0;
                assert!(question.contains(key.as_str()), "{task}: {key} not asked");
            }
            if cfg.num_queries > 1 {
                assert!(question.contains(", and "), "{task}: {question}");
            }
            // The target needle is where the sample says.
            assert_eq!(
                &s.prompt[s.needle_char_offset..][..s.needle_text.len()],
                s.needle_text
            );
            assert!(s.needle_text.contains(&s.values[0]));
        }
    });
}

#[test]
fn prompt_plus_answer_fill_the_length() {
    let h = numbered_haystack(600);
    let w = words();
    with_builder(&h, Some(7), |b, tok| {
        for task in RulerTask::ALL {
            for length in [400usize, 1000, 3000] {
                let s = b.ruler(task, Some(&w), length, 25.0, 3).unwrap();
                let max = length - RULER_MAX_NEW_TOKENS;
                assert!(s.prompt_ids.len() <= max, "{task} {length}");
                // Short by less than one filler unit (a noise line or a needle: ≤ 20 words).
                assert!(
                    max - s.prompt_ids.len() < 20,
                    "{task} {length}: {} tokens",
                    s.prompt_ids.len()
                );
                assert_eq!(s.prompt_ids[0], 7, "BOS first");
                assert_eq!(&s.prompt_ids[1..], tok.encode(&s.prompt).as_slice());
            }
        }
    });
}

#[test]
fn the_target_needle_follows_the_depth() {
    let h = numbered_haystack(600);
    let w = words();
    with_builder(&h, None, |b, _| {
        for task in [RulerTask::NiahSingle2, RulerTask::NiahSingle1] {
            let s0 = b.ruler(task, Some(&w), 2000, 0.0, 5).unwrap();
            let prefix_end = s0.prompt.find('\n').unwrap() + 1;
            assert_eq!(
                s0.needle_char_offset, prefix_end,
                "{task}: depth 0 is first"
            );
            let s100 = b.ruler(task, Some(&w), 2000, 100.0, 5).unwrap();
            let after = &s100.prompt[s100.needle_char_offset + s100.needle_text.len()..];
            assert!(after.starts_with("\nWhat is"), "{task}: depth 100 is last");
            let mut last = 0;
            for depth in [10.0, 30.0, 50.0, 70.0, 90.0] {
                let s = b.ruler(task, Some(&w), 2000, depth, 5).unwrap();
                // In words of the context (prefix and question left out).
                let end = s.prompt.rfind("\nWhat ").unwrap();
                let words = |r: std::ops::Range<usize>| s.prompt[r].split_whitespace().count();
                let at = words(prefix_end..s.needle_char_offset) as f64
                    / words(prefix_end..end) as f64
                    * 100.0;
                assert!(
                    (at - depth).abs() < 3.0,
                    "{task}: depth {depth} at {at:.1}%"
                );
                assert!(s.needle_char_offset > last);
                last = s.needle_char_offset;
                if task == RulerTask::NiahSingle2 {
                    // The essay: after a sentence end.
                    assert!(s.prompt[..s.needle_char_offset].ends_with(". "), "{depth}");
                } else {
                    assert!(s.prompt[..s.needle_char_offset].ends_with("again.\n"));
                }
            }
        }
    });
    assert_eq!(ruler_depths().len(), 40);
    assert_eq!(ruler_depths()[1], 3.0);
    assert_eq!(ruler_depths()[39], 100.0);
}

#[test]
fn same_seed_same_prompt_other_seed_other_values() {
    let h = numbered_haystack(600);
    let w = words();
    with_builder(&h, None, |b, _| {
        for task in RulerTask::ALL {
            let a = b.ruler(task, Some(&w), 900, 40.0, 1).unwrap();
            assert_eq!(a, b.ruler(task, Some(&w), 900, 40.0, 1).unwrap(), "{task}");
            let c = b.ruler(task, Some(&w), 900, 40.0, 2).unwrap();
            assert_ne!(a.values, c.values, "{task}");
        }
    });
    // Tasks of one run draw different keys from one base seed.
    let seeds: HashSet<u64> = RulerTask::ALL.iter().map(|t| t.seed(9)).collect();
    assert_eq!(seeds.len(), RulerTask::ALL.len());
}

#[test]
fn scores_all_partial_and_no_values() {
    let h = numbered_haystack(300);
    let w = words();
    with_builder(&h, None, |b, _| {
        let s = b
            .ruler(RulerTask::NiahMultivalue, Some(&w), 800, 50.0, 4)
            .unwrap();
        assert_eq!(s.values.len(), 4);
        let all = format!(" {}.", s.values.join(", "));
        assert_eq!(s.score(&all), 100.0);
        assert_eq!(
            s.score(&format!("{} and {}", s.values[2], s.values[0])),
            50.0
        );
        assert_eq!(s.score(" none of them"), 0.0);
        let one = b
            .ruler(RulerTask::NiahSingle3, Some(&w), 800, 50.0, 4)
            .unwrap();
        assert_eq!(one.score(&one.values[0].to_uppercase()), 100.0);
        assert_eq!(one.score(&one.values[0][..30]), 0.0);
    });
}

#[test]
fn errors_and_names() {
    assert_eq!(
        "niah_multikey_2".parse::<RulerTask>().unwrap(),
        RulerTask::NiahMultikey2
    );
    for t in RulerTask::ALL {
        assert_eq!(t.name().parse::<RulerTask>().unwrap(), t);
        assert!(ruler::TASK_NAMES.contains(t.name()));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            format!("\"{}\"", t.name())
        );
    }
    let e = "niah_single_9"
        .parse::<RulerTask>()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("niah_single_9") && e.contains("niah_multiquery"),
        "{e}"
    );
    assert!(!RulerTask::NiahMultikey3.needs_words());
    assert!(RulerTask::NiahSingle1.needs_words());

    let h = numbered_haystack(300);
    with_builder(&h, None, |b, _| {
        // Uuids only: no word lists needed.
        b.ruler(RulerTask::NiahMultikey3, None, 600, 50.0, 1)
            .unwrap();
        assert!(matches!(
            b.ruler(RulerTask::NiahSingle2, None, 600, 50.0, 1),
            Err(NiahError::RulerNeedsWords("niah_single_2"))
        ));
        assert!(matches!(
            b.ruler(RulerTask::NiahMultikey3, None, 150, 50.0, 1),
            Err(NiahError::TooShort { length: 150, .. })
        ));
        assert!(matches!(
            b.ruler(RulerTask::NiahMultikey3, None, 600, 101.0, 1),
            Err(NiahError::BadDepth(_))
        ));
        // Two adjectives × one noun cannot give a needle haystack its distinct keys.
        let tiny = RulerWords::from_lists("a\nb", "n").unwrap();
        assert!(matches!(
            b.ruler(RulerTask::NiahMultikey2, Some(&tiny), 600, 50.0, 1),
            Err(NiahError::RulerWordsExhausted(_))
        ));
    });
    let missing = std::env::temp_dir().join("no-such-ruler-dir");
    let e = RulerWords::load(&missing).unwrap_err();
    assert!(matches!(e, NiahError::NoRulerWords(_)));
    assert!(e.to_string().contains("wonderwords/nounlist.txt"), "{e}");
    assert!(RulerWords::from_lists("", "n").is_err());

    assert_eq!(uuid4(0), "00000000-0000-4000-8000-000000000000");
    assert_eq!(uuid4(u128::MAX), "ffffffff-ffff-4fff-bfff-ffffffffffff");
}

#[test]
fn jsonl_documents_haystack() {
    let f = temp_file(
        "docs.jsonl",
        "{\"context\": \"First doc.\", \"input\": \"q\"}\n\n{\"context\": \"Second doc.\"}\n",
    );
    let h = Haystack::from_jsonl_documents(&f, "context", None).unwrap();
    assert_eq!(h.text(), "First doc.\n\nSecond doc.");
    assert_eq!(h.files(), std::slice::from_ref(&f));
    assert!(matches!(
        Haystack::from_jsonl_documents(&f, "input", None),
        Err(NiahError::MissingField {
            line: 3,
            field: "input",
            ..
        })
    ));
    let bad = temp_file("bad.jsonl", "{\"context\": 3}\n");
    assert!(matches!(
        Haystack::from_jsonl_documents(&bad, "context", None),
        Err(NiahError::NotAString { line: 1, .. })
    ));
    let dir = f.parent().unwrap();
    let e = Haystack::from_jsonl_documents(dir, "context", Some(&["narrativeqa"])).unwrap_err();
    assert!(e.to_string().contains("narrativeqa.jsonl"), "{e}");
}

/// RULER's own word lists and the LongBench / L-Eval documents, when the shared data is present.
#[test]
fn shared_ruler_words_and_document_haystacks() {
    let Some(ruler) = shared_dataset("ruler") else {
        eprintln!("shared datasets not found; skipped");
        return;
    };
    let w = RulerWords::load(&ruler).unwrap();
    // The folder itself works too.
    RulerWords::load(ruler.join("wonderwords")).unwrap();
    let lb = shared_dataset("longbench-v1-minilongbench").unwrap();
    let h = Haystack::from_jsonl_documents(&lb, "context", Some(LONGBENCH_QA_DATASETS)).unwrap();
    assert_eq!(h.files().len(), LONGBENCH_QA_DATASETS.len());
    assert!(h.text().len() > 100_000);
    let le = shared_dataset("leval-sample").unwrap();
    let h2 = Haystack::from_jsonl_documents(&le, "input", None).unwrap();
    assert_eq!(h2.files().len(), 5);
    with_builder(&h, Some(2), |b, _| {
        let s = b
            .ruler(RulerTask::NiahMultikey1, Some(&w), 2000, 50.0, 0)
            .unwrap();
        let found = needles_in(&s.prompt, "numbers");
        assert_eq!(found.len(), 4);
        for (k, _) in &found {
            let (a, n) = k.split_once('-').unwrap();
            assert!(!a.is_empty() && !n.is_empty(), "{k}");
        }
    });
}
