//! The profiler's calibration prompts, token for token, with the real Gemma 3 tokenizer: the
//! SRH reference's prompts and spans (`srh_reference.json`, rebuilt from its books), and a
//! recorded grid over the built-in needles (`calib_prompts.golden`) so that a change of the
//! prompt builder cannot move a needle or a span unnoticed.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use compresskv_profiler::calibrate::{Needle, build_sample, load_haystack, parse_needles};
use compresskv_runtime::eval::niah::{Haystack, NiahBuilder};
use compresskv_runtime::profile::builtin;
use compresskv_runtime::profile::sha256_hex;

use crate::common::{json, real_model, shared_dir};

/// The calibration prompt ids and answer span.
fn build(
    b: &NiahBuilder<'_>,
    needle: &Needle,
    length: usize,
    depth: f64,
) -> (Vec<u32>, Range<usize>) {
    let s = build_sample(b, needle, length, depth).unwrap();
    (s.ids, s.span)
}

/// The book of the reference's needle `i`: the complete `"text"` fields of the truncated
/// datasets-server JSON `part{i+1}/p1.txt`, joined by a blank line.
fn reference_book(shared: &Path, i: usize) -> String {
    let p = shared.join(format!(
        "datasets/compresskv-paper/Retrieval_Head_Identification/haystack_for_detect/part{}/p1.txt",
        i + 1
    ));
    let raw = std::fs::read_to_string(&p).unwrap();
    let mut texts = Vec::new();
    for (at, _) in raw.match_indices("\"text\":\"") {
        let literal = &raw[at + "\"text\":".len()..];
        match serde_json::Deserializer::from_str(literal)
            .into_iter::<String>()
            .next()
        {
            Some(Ok(t)) => texts.push(t),
            _ => break, // cut by the truncation
        }
    }
    assert!(!texts.is_empty(), "{}: no text fields", p.display());
    texts.join("\n\n")
}

#[test]
fn calibration_prompts_reproduce_the_srh_reference() {
    let Some(shared) = shared_dir() else { return };
    let Some(loaded) = real_model() else { return };
    let r = json(&shared.join("reference/gemma-3-270m/srh_reference.json"));
    let needles: Vec<Needle> = r["needles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| serde_json::from_value(n.clone()).unwrap())
        .collect();
    let books: Vec<Haystack> = (0..needles.len())
        .map(|i| Haystack::from_text(reference_book(&shared, i)).unwrap())
        .collect();
    let builders: Vec<_> = books
        .iter()
        .map(|h| NiahBuilder::for_model(h, &loaded))
        .collect();
    let samples = r["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 54);
    let mut compared = 0;
    for s in samples {
        let ni = s["needle_idx"].as_u64().unwrap() as usize;
        let length = s["length"].as_u64().unwrap() as usize;
        let depth = s["depth"].as_f64().unwrap();
        let want: Vec<u32> = serde_json::from_value(s["prompt_ids"].clone()).unwrap();
        let span: Vec<usize> = serde_json::from_value(s["span"].clone()).unwrap();
        if depth == 100.0 {
            // The reference puts the needle right after the last book token at depth 100; the
            // profiler moves it back to a sentence end there as at every other depth.
            continue;
        }
        let (ids, got_span) = build(&builders[ni], &needles[ni], length, depth);
        let tag = format!("needle {ni} length {length} depth {depth}");
        assert_eq!(ids, want, "{tag}: prompt ids");
        assert_eq!(got_span, span[0]..span[1], "{tag}: answer span");
        compared += 1;
    }
    assert_eq!(compared, 45);
}

/// `tests/e2e/calib_prompts.golden`.
fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/calib_prompts.golden")
}

/// One line per prompt: needle, length, depth, answer span, SHA-256 of the ids (u32 LE).
/// Depths include 0 and 100 and exact ties of `n · depth / 100` (12.5, 37.5, 50 with odd `n`).
/// `COMPRESSKV_BLESS=1` rewrites the file: only for an intended change of the prompts.
#[test]
fn calibration_prompts_match_the_recorded_grid() {
    let Some(shared) = shared_dir() else { return };
    let Some(loaded) = real_model() else { return };
    let needles = parse_needles(builtin::NEEDLES, Path::new("built-in:needles.jsonl")).unwrap();
    let hay =
        load_haystack(&shared.join("datasets/compresskv-paper/needle/PaulGrahamEssays")).unwrap();
    let b = NiahBuilder::for_model(&hay, &loaded);
    let mut cases = Vec::new();
    for ni in 0..needles.len() {
        for length in [1000, 2001, 4003] {
            for depth in [0.0, 12.5, 20.0, 37.5, 50.0, 80.0, 100.0] {
                cases.push((ni, length, depth));
            }
        }
    }
    // Ties of `n · depth / 100` that the sentence back-off does not hide: rounding half away
    // from zero and to even give different prompts.
    cases.extend([(0, 1050, 50.0), (0, 1069, 37.5), (0, 1162, 50.0)]);
    let mut got = String::new();
    for (ni, length, depth) in cases {
        let needle = &needles[ni];
        let (ids, span) = build(&b, needle, length, depth);
        assert_eq!(ids.len(), length);
        let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
        writeln!(
            got,
            "{ni} {length} {depth} {}..{} {}",
            span.start,
            span.end,
            sha256_hex(&bytes)
        )
        .unwrap();
    }
    if std::env::var_os("COMPRESSKV_BLESS").is_some() {
        std::fs::write(golden_path(), &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(golden_path()).unwrap();
    for (g, w) in got.lines().zip(want.lines()) {
        assert_eq!(g, w, "calibration prompt changed");
    }
    assert_eq!(got.lines().count(), want.lines().count());
}
