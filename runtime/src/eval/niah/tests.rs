use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

/// A whole-word tokenizer in the SentencePiece style: a token is a run of whitespace followed
/// by a run of non-whitespace (so decode = concatenation, lossless); ids from a growing vocab.
#[derive(Default)]
pub(super) struct WordTok {
    vocab: RefCell<HashMap<String, u32>>,
    words: RefCell<Vec<String>>,
}

impl WordTok {
    fn id(&self, piece: &str) -> u32 {
        if let Some(&id) = self.vocab.borrow().get(piece) {
            return id;
        }
        let id = self.words.borrow().len() as u32;
        self.words.borrow_mut().push(piece.to_string());
        self.vocab.borrow_mut().insert(piece.to_string(), id);
        id
    }

    pub(super) fn encode(&self, text: &str) -> Vec<u32> {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut in_word = false;
        for (i, c) in text.char_indices() {
            if c.is_whitespace() && in_word {
                pieces.push(&text[start..i]);
                start = i;
                in_word = false;
            } else if !c.is_whitespace() {
                in_word = true;
            }
        }
        if start < text.len() {
            pieces.push(&text[start..]);
        }
        pieces.into_iter().map(|p| self.id(p)).collect()
    }

    pub(super) fn decode(&self, ids: &[u32]) -> String {
        let words = self.words.borrow();
        ids.iter().map(|&i| words[i as usize].as_str()).collect()
    }
}

/// Sentences of 10 tokens: "sK wK1 ... wK8 eK." — numbered so positions are recognisable.
pub(super) fn numbered_haystack(sentences: usize) -> Haystack {
    let mut t = String::new();
    for k in 0..sentences {
        t.push_str(&format!("S{k}"));
        for j in 1..9 {
            t.push_str(&format!(" w{k}_{j}"));
        }
        t.push_str(&format!(" e{k}. "));
    }
    Haystack::from_text(t).unwrap()
}

pub(super) fn with_builder<R>(
    h: &Haystack,
    bos: Option<u32>,
    f: impl FnOnce(&NiahBuilder<'_>, &WordTok) -> R,
) -> R {
    let tok = WordTok::default();
    let enc = |s: &str| tok.encode(s);
    let dec = |ids: &[u32]| tok.decode(ids);
    let b = NiahBuilder::new(h, enc, dec).with_bos(bos);
    f(&b, &tok)
}

#[test]
fn word_tokenizer_roundtrips() {
    let tok = WordTok::default();
    let text = "  Hello world.\n\nNew line  ";
    assert_eq!(tok.decode(&tok.encode(text)), text);
    assert_eq!(tok.encode("a b").len(), 2);
}

#[test]
fn peer_needle_exact_length_and_layout() {
    let h = numbered_haystack(400);
    with_builder(&h, Some(999_999), |b, tok| {
        let nd = Needle::san_francisco();
        for length in [300usize, 1000, 2048] {
            for depth in PEER_DEPTHS {
                let s = b.peer_needle(&nd, length, depth).unwrap();
                assert_eq!(s.prompt_ids.len(), length, "ids are exactly `length`");
                assert_eq!(s.prompt_ids[0], 999_999);
                assert!(
                    s.prompt
                        .starts_with("This is a very long story book: <book>")
                );
                assert!(s.prompt.ends_with(
                        "</book>.\nBased on the content of the book, Question: What is the best thing to do in San Francisco?\nAnswer:"
                    ));
                assert_eq!(
                    &s.prompt[s.needle_char_offset..][..s.needle_text.len()],
                    s.needle_text
                );
                assert_eq!(s.needle_text, format!(" {}", nd.needle));
                assert_eq!(s.needle_ids(), tok.encode(&s.needle_text).as_slice());
                // The text re-encodes to `length` within the documented tolerance.
                let retok = tok.encode(&s.prompt).len() + 1;
                assert!(
                    retok.abs_diff(length) <= TEXT_TOKEN_TOLERANCE,
                    "{retok} vs {length}"
                );
                assert_eq!(s.max_new_tokens, 20);
            }
        }
    });
}

#[test]
fn needle_position_follows_depth() {
    let h = numbered_haystack(400);
    with_builder(&h, None, |b, tok| {
        let nd = Needle::san_francisco();
        let length = 1000;
        let prefix_len = tok.encode(PEER_NEEDLE_PREFIX).len();
        let fixed = prefix_len
            + tok.encode(&format!(" {}", nd.needle)).len()
            + tok
                .encode(&format!(
                    "{PEER_NEEDLE_QUESTION_PREFIX}{}{PEER_NEEDLE_ANSWER_PREFIX}",
                    nd.question
                ))
                .len();
        let n = length - fixed;
        for depth in [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 100.0] {
            let s = b.peer_needle(&nd, length, depth).unwrap();
            assert_eq!(s.haystack_tokens, n);
            let p = s.needle_token_start - prefix_len; // haystack tokens before the needle
            let target = (n as f64 * depth / 100.0).round() as usize;
            // Moved back by less than one sentence (10 tokens), never forward.
            assert!(
                p <= target && target - p < 10,
                "depth {depth}: p {p}, target {target}"
            );
            if depth == 0.0 {
                assert_eq!(
                    s.needle_token_start, prefix_len,
                    "depth 0: right after the prefix"
                );
            } else if depth == 100.0 {
                // Right before the question: needle, then immediately the suffix tokens.
                assert_eq!(p, n);
                assert_eq!(
                    s.needle_token_start + s.needle_token_len,
                    length - (fixed - prefix_len - s.needle_token_len)
                );
                let after = &s.prompt[s.needle_char_offset + s.needle_text.len()..];
                assert!(after.starts_with("</book>."));
            } else {
                // At a sentence boundary: the haystack text before the needle ends with '.'.
                assert!(
                    s.prompt[..s.needle_char_offset].ends_with('.'),
                    "depth {depth}"
                );
            }
        }
        // 50% is in the middle, within one sentence.
        let s = b.peer_needle(&nd, length, 50.0).unwrap();
        let mid = prefix_len + n / 2;
        assert!(s.needle_token_start <= mid && mid - s.needle_token_start < 10);
    });
}

#[test]
fn passkey_seeds() {
    let h = Haystack::noise();
    with_builder(&h, None, |b, tok| {
        let a = b.peer_passkey(500, 50.0, 7).unwrap();
        let a2 = b.peer_passkey(500, 50.0, 7).unwrap();
        assert_eq!(a, a2, "same seed, same prompt");
        let c = b.peer_passkey(500, 50.0, 8).unwrap();
        assert_ne!(a.answer, c.answer, "different seed, different key");
        assert_eq!(a.answer.len(), 5);
        assert_eq!(a.answer, passkey_for_seed(7).to_string());
        assert!(
            a.prompt
                .contains(&format!(" The pass key is {}. Remember it.", a.answer))
        );
        assert!(a.prompt.starts_with(PEER_PASSKEY_PREFIX));
        assert!(
            a.prompt
                .ends_with("\nWhat is the pass key?\nThe pass key is")
        );
        assert_eq!(a.prompt_ids.len(), 500);
        assert!(
            a.prompt[..a.needle_char_offset].ends_with("again.")
                || a.prompt[..a.needle_char_offset].ends_with('.')
        );
        assert_eq!(a.score(&format!(" {}.", a.answer)), 100.0);
        assert_eq!(a.score(" 00000"), 0.0);
        // Keys of many seeds are all 5-digit and not all equal.
        let keys: std::collections::HashSet<u32> = (0..50).map(passkey_for_seed).collect();
        assert!(keys.len() > 40 && keys.iter().all(|k| (10000..=99999).contains(k)));
        let retok = tok.encode(&a.prompt).len();
        assert!(retok.abs_diff(500) <= TEXT_TOKEN_TOLERANCE);
    });
}

#[test]
fn landmark_passkey_layout() {
    let h = Haystack::noise();
    with_builder(&h, None, |b, _| {
        let s = b.landmark_passkey(400, 25.0, 3).unwrap();
        let k = &s.answer;
        assert!(s.prompt.contains(&format!(
            "\nThe pass key is {k}. Remember it. {k} is the pass key.\n"
        )));
        assert!(s.prompt.starts_with(LANDMARK_PREFIX));
        assert!(
            s.prompt
                .ends_with("\nWhat is the pass key? The pass key is")
        );
        assert!(s.prompt[LANDMARK_PREFIX.len()..].starts_with("The grass is green."));
        assert_eq!(s.prompt_ids.len(), 400);
        assert_eq!(s.protocol, Protocol::Landmark);
    });
}

#[test]
fn paper_protocol() {
    let h = numbered_haystack(400);
    with_builder(&h, Some(1), |b, tok| {
        let nd = Needle::san_francisco();
        let opts = PaperOptions::default();
        let s = b.paper_needle(&nd, 1000, 50.0, &opts).unwrap();
        assert!(
            s.prompt
                .starts_with("<|im_start|> This is a very long story book: <book> ")
        );
        assert!(s.prompt.ends_with(
                " </book>.\n Based on the content of the book, Question: What is the best thing to do in San Francisco?\nAnswer:"
            ));
        assert_eq!(s.needle_text, format!("\n{}\n", nd.needle));
        assert_eq!(
            &s.prompt[s.needle_char_offset..][..s.needle_text.len()],
            s.needle_text
        );
        // Haystack + needle = length - 200 tokens.
        assert_eq!(s.haystack_tokens + s.needle_token_len, 800);
        let template_tokens = tok
            .encode(&PAPER_TEMPLATE.replace("{question}", &nd.question))
            .len();
        assert!(s.prompt_ids.len().abs_diff(800 + template_tokens + 1) <= TEXT_TOKEN_TOLERANCE);
        assert_eq!(s.prompt_ids, [vec![1], tok.encode(&s.prompt)].concat());
        assert!(s.prompt[..s.needle_char_offset].ends_with('.'));
        // Scored like the paper: stemmed ROUGE-1 recall of the whole needle sentence.
        assert_eq!(s.score(&nd.needle), 100.0);
        assert!(s.score("eat a sandwich and sit in Dolores Park on a sunny day") < 60.0);
        // Depth 100: at the very end of the context.
        let s = b.paper_needle(&nd, 1000, 100.0, &opts).unwrap();
        assert!(s.prompt[s.needle_char_offset + s.needle_text.len()..].starts_with(" </book>."));
        assert!(matches!(
            b.paper_needle(&nd, 210, 0.0, &opts),
            Err(NiahError::TooShort { length: 210, .. })
        ));
    });
}

#[test]
fn custom_srh_layout() {
    let h = numbered_haystack(100);
    with_builder(&h, Some(2), |b, tok| {
        let n = Needle::san_francisco();
        let suffix = format!(
            "\nBased on the content of the book, Question: {}\nAnswer:",
            n.question
        );
        let s = b
            .custom_needle("", &format!(" {}", n.needle), &suffix, &n.answer, 300, 0.0)
            .unwrap();
        assert_eq!(s.prompt_ids.len(), 300);
        assert_eq!(
            s.needle_token_start, 1,
            "depth 0: right after BOS, as in the SRH reference"
        );
        assert!(s.prompt.starts_with(" The best thing"));
        assert_eq!(s.protocol, Protocol::Custom);
        assert_eq!(
            s.score("Eat a sandwich and sit in Dolores Park on a sunny day."),
            100.0
        );
        let s = b
            .custom_needle("", " N.", &suffix, "n", 300, 100.0)
            .unwrap();
        assert_eq!(
            s.needle_token_start + s.needle_token_len + tok.encode(&suffix).len(),
            300
        );
    });
}

/// A whole-word tokenizer whose tokens carry the whitespace *after* a word (`"three. "`), as
/// BPE tokenizers with `".\n"` tokens do: the calibration's sentence rule trims it.
fn trailing_space_encode(tok: &WordTok, text: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut start = 0;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        if !c.is_whitespace() && prev_ws {
            ids.push(tok.id(&text[start..i]));
            start = i;
        }
        prev_ws = c.is_whitespace();
    }
    if start < text.len() {
        ids.push(tok.id(&text[start..]));
    }
    ids
}

#[test]
fn calibration_layout_and_answer_span() {
    let h = numbered_haystack(100);
    with_builder(&h, Some(2), |b, tok| {
        let nd = Needle::san_francisco();
        let whole = tok.encode(h.text());
        let needle_ids = tok.encode(&format!(" {}", nd.needle));
        let suffix = CALIBRATION_QUESTION_TEMPLATE.replace("{question}", &nd.question);
        let suffix_ids = tok.encode(&suffix);
        for depth in [0.0, 30.0, 100.0] {
            let s = b.calibration_needle(&nd, 303, depth).unwrap();
            let n = s.haystack_tokens;
            assert_eq!(n, 303 - 1 - needle_ids.len() - suffix_ids.len());
            // Sentences are 10 tokens: `p` is `n · depth / 100` moved back to a multiple of 10,
            // at depth 100 too (the protocols put the needle at `n` there).
            let p = s.needle_token_start - 1;
            let target = (n as f64 * depth / 100.0).round() as usize;
            assert_eq!(p, target - target % 10, "depth {depth}");
            let want = [
                &[2][..],
                &whole[..p],
                &needle_ids,
                &whole[p..n],
                &suffix_ids,
            ]
            .concat();
            assert_eq!(s.prompt_ids, want, "depth {depth}");
            assert!(s.prompt.ends_with(
                "\nBased on the content of the book, Question: What is the best thing to do in San Francisco?\nAnswer:"
            ));
            assert_eq!(s.protocol, Protocol::Calibration);
            let span = b.answer_span(&s).unwrap();
            assert_eq!(
                s.prompt_ids[span.clone()],
                tok.encode(" eat a sandwich and sit in Dolores Park on a sunny day.")[..],
                "the needle tokens that overlap the answer"
            );
            assert_eq!(span.start, s.needle_token_start + 9);
        }
        let end = b.custom_needle(
            "",
            &format!(" {}", nd.needle),
            &suffix,
            &nd.answer,
            303,
            100.0,
        );
        assert_eq!(
            end.unwrap().needle_token_start - 1,
            303 - 1 - needle_ids.len() - suffix_ids.len()
        );
        // Scored on the whole answer (the profiler's word recall), not its first line.
        let s = b.calibration_needle(&nd, 303, 50.0).unwrap();
        let answer = "\nIt is\neat a sandwich and sit in Dolores Park on a sunny day";
        assert_eq!(s.score(answer), 100.0);
        assert!(s.score("It is\neat a sandwich") < 30.0);
        let other = Needle {
            answer: "not in it".into(),
            ..nd
        };
        let s = b.calibration_needle(&other, 303, 50.0).unwrap();
        assert!(matches!(
            b.answer_span(&s),
            Err(NiahError::AnswerNotInNeedle)
        ));
    });
}

#[test]
fn calibration_rounds_ties_away_from_zero() {
    // Every token ends a sentence, so the rounding alone places the needle.
    let h = Haystack::from_text("a. ".repeat(500)).unwrap();
    with_builder(&h, None, |b, _| {
        let nd = Needle::san_francisco();
        let suffix = CALIBRATION_QUESTION_TEMPLATE.replace("{question}", &nd.question);
        let (s, length) = (100..104)
            .map(|l| (b.calibration_needle(&nd, l, 50.0).unwrap(), l))
            .find(|(s, _)| s.haystack_tokens % 4 == 1)
            .unwrap();
        let n = s.haystack_tokens;
        assert_eq!(s.needle_token_start, n / 2 + 1, "n/2 = k + 0.5 goes up");
        let peer = b
            .custom_needle(
                "",
                &format!(" {}", nd.needle),
                &suffix,
                &nd.answer,
                length,
                50.0,
            )
            .unwrap();
        assert_eq!(
            peer.needle_token_start,
            n / 2,
            "the protocols round to even"
        );
    });
}

#[test]
fn calibration_sentence_end_may_carry_whitespace() {
    let h = Haystack::from_text("one two three. four five six. ".repeat(100)).unwrap();
    let tok = WordTok::default();
    let enc = |s: &str| trailing_space_encode(&tok, s);
    let dec = |ids: &[u32]| tok.decode(ids);
    let b = NiahBuilder::new(&h, enc, dec);
    let nd = Needle::san_francisco();
    let s = b.calibration_needle(&nd, 200, 50.0).unwrap();
    let target = (s.haystack_tokens as f64 / 2.0).round() as usize;
    assert!(s.needle_token_start > 0 && target - s.needle_token_start < 3);
    assert!(s.prompt[..s.needle_char_offset].ends_with(". "));
    // The protocols' rule sees no sentence end ("six. " does not end with '.').
    let suffix = CALIBRATION_QUESTION_TEMPLATE.replace("{question}", &nd.question);
    let peer = b
        .custom_needle(
            "",
            &format!(" {}", nd.needle),
            &suffix,
            &nd.answer,
            200,
            50.0,
        )
        .unwrap();
    assert_eq!(peer.needle_token_start, 0);
}

#[test]
fn calibration_haystack_is_used_once_and_not_too_short() {
    let h = Haystack::from_text("One. Two. Three. ").unwrap();
    with_builder(&h, None, |b, _| {
        let nd = Needle::san_francisco();
        assert!(matches!(
            b.calibration_needle(&nd, 200, 50.0),
            Err(NiahError::HaystackTooShort { have: 4, .. })
        ));
        // The protocols repeat it.
        assert!(b.peer_needle(&nd, 200, 50.0).is_ok());
    });
    let h = numbered_haystack(100);
    with_builder(&h, None, |b, tok| {
        let nd = Needle::san_francisco();
        let suffix = CALIBRATION_QUESTION_TEMPLATE.replace("{question}", &nd.question);
        let fixed = tok.encode(&format!(" {}", nd.needle)).len() + tok.encode(&suffix).len();
        let min = CALIBRATION_MIN_HAYSTACK_TOKENS;
        let err = b
            .calibration_needle(&nd, fixed + min - 1, 50.0)
            .unwrap_err();
        assert!(
            matches!(err, NiahError::TooShort { fixed: f, .. } if f == fixed + min - 1),
            "{err}"
        );
        let s = b.calibration_needle(&nd, fixed + min, 50.0).unwrap();
        assert_eq!(s.haystack_tokens, min);
        assert!(matches!(
            b.calibration_needle(&nd, 300, 100.5),
            Err(NiahError::BadDepth(_))
        ));
    });
}

#[test]
fn haystack_repeats_when_short() {
    let h = Haystack::from_text("One. Two. Three. ").unwrap();
    with_builder(&h, None, |b, _| {
        let s = b.peer_needle(&Needle::san_francisco(), 200, 50.0).unwrap();
        assert_eq!(s.prompt_ids.len(), 200);
        assert!(s.prompt.matches("Three.").count() > 10);
    });
}

#[test]
fn errors() {
    let h = numbered_haystack(10);
    with_builder(&h, None, |b, _| {
        let nd = Needle::san_francisco();
        assert!(matches!(
            b.peer_needle(&nd, 10, 0.0),
            Err(NiahError::TooShort { length: 10, .. })
        ));
        assert!(matches!(
            b.peer_needle(&nd, 500, 101.0),
            Err(NiahError::BadDepth(_))
        ));
        assert!(matches!(
            b.peer_needle(&nd, 500, f64::NAN),
            Err(NiahError::BadDepth(_))
        ));
    });
    assert!(Haystack::from_text("").is_err());
    let none = |_: &str| -> Vec<u32> { Vec::new() };
    assert!(matches!(
        Haystack::noise().tokens(10, &none),
        Err(NiahError::NoTokens)
    ));
}

pub(super) fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("niah-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn needles_jsonl() {
    let p = temp_file(
        "ok.jsonl",
        "{\"needle\": \"N1.\", \"question\": \"Q1?\", \"answer\": \"A1\"}\n\n{\"question\": \"Q2?\", \"needle\": \"N2.\", \"real_needle\": \"A2\", \"extra\": 1}\n",
    );
    let n = load_needles(&p).unwrap();
    assert_eq!(n.len(), 2);
    assert_eq!(
        n[1],
        Needle {
            needle: "N2.".into(),
            question: "Q2?".into(),
            answer: "A2".into()
        }
    );

    let p = temp_file(
        "missing.jsonl",
        "{\"needle\": \"a\", \"question\": \"b\", \"answer\": \"c\"}\n{\"needle\": \"a\", \"answer\": \"c\"}\n",
    );
    let e = load_needles(&p).unwrap_err();
    assert!(
        matches!(
            e,
            NiahError::MissingField {
                line: 2,
                field: "question",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains(":2: missing field `question`"),
        "{e}"
    );

    let p = temp_file("bad.jsonl", "\n\n{\"needle\": \"a\",\n");
    let e = load_needles(&p).unwrap_err();
    assert!(matches!(e, NiahError::Json { line: 3, .. }), "{e}");

    let p = temp_file(
        "type.jsonl",
        "{\"needle\": 1, \"question\": \"b\", \"answer\": \"c\"}\n",
    );
    assert!(matches!(
        load_needles(&p),
        Err(NiahError::NotAString {
            line: 1,
            field: "needle",
            ..
        })
    ));

    let p = temp_file("empty.jsonl", "\n");
    assert!(matches!(load_needles(&p), Err(NiahError::NoNeedles { .. })));
    assert!(matches!(
        load_needles("/nonexistent/needles.jsonl"),
        Err(NiahError::Io { .. })
    ));
}

#[test]
fn haystack_from_dir_sorted() {
    let dir = std::env::temp_dir().join(format!("niah-hay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b.txt"), "Second.").unwrap();
    std::fs::write(dir.join("a.txt"), "First. ").unwrap();
    std::fs::write(dir.join("c.md"), "Ignored.").unwrap();
    let h = Haystack::from_dir(&dir).unwrap();
    assert_eq!(h.text(), "First. Second.");
    assert_eq!(h.files().len(), 2);
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(
        Haystack::from_dir(&empty),
        Err(NiahError::EmptyHaystack(_))
    ));
}

#[test]
fn haystack_from_dir_joined() {
    let dir = std::env::temp_dir().join(format!("niah-hay-joined-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b.txt"), "Second.").unwrap();
    std::fs::write(dir.join("a.txt"), "First.").unwrap();
    let h = Haystack::from_dir_joined(&dir, "\n\n").unwrap();
    assert_eq!(h.text(), "First.\n\nSecond.");
    assert_eq!(Haystack::from_dir(&dir).unwrap().text(), "First.Second.");
}

/// `shared/datasets/<name>` (the repository's `../shared`), if present.
pub(super) fn shared_dataset(name: &str) -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|p| p.join("shared/datasets").join(name))
        .chain(std::iter::once(
            Path::new("/work/shared/datasets").join(name),
        ))
        .find(|p| p.exists())
}

/// The real haystack and needles, when the shared data is present.
#[test]
fn shared_paul_graham_and_needles() {
    let Some(root) = shared_dataset("compresskv-paper") else {
        eprintln!("shared datasets not found; skipped");
        return;
    };
    let h = Haystack::from_dir(root.join("needle/PaulGrahamEssays")).unwrap();
    assert_eq!(h.files().len(), 49);
    assert!(
        h.files()
            .windows(2)
            .all(|w| w[0].file_name() < w[1].file_name())
    );
    let needles =
        load_needles(root.join("Retrieval_Head_Identification/haystack_for_detect/needles.jsonl"))
            .unwrap();
    assert_eq!(needles.len(), 3);
    assert_eq!(
        needles[1].answer,
        "take a walk in Chaoyang Park and have a cup of Espresso in the evening"
    );
    with_builder(&h, Some(2), |b, tok| {
        for depth in PEER_DEPTHS {
            let s = b.peer_needle(&needles[1], 1024, depth).unwrap();
            assert_eq!(s.prompt_ids.len(), 1024);
            assert!(tok.encode(&s.prompt).len().abs_diff(1023) <= TEXT_TOKEN_TOLERANCE);
            if depth > 0.0 && depth < 100.0 {
                assert!(s.prompt[..s.needle_char_offset].ends_with('.'));
            }
        }
    });
}
