//! Unit tests of the SPM tokenizer on small hand-made vocabularies.

use super::*;
const N: i32 = token_type::NORMAL;
const C: i32 = token_type::CONTROL;
const U: i32 = token_type::USER_DEFINED;
const B: i32 = token_type::BYTE;

/// Tiny vocabulary: (piece, score, type). `ab_score` / `bc_score` steer merge order.
fn vocab(ab_score: f32, bc_score: f32) -> Vec<(&'static str, f32, i32)> {
    vec![
        ("<pad>", 0.0, C),      // 0
        ("<eos>", 0.0, C),      // 1
        ("<bos>", 0.0, C),      // 2
        ("<unk>", 0.0, C),      // 3
        ("\n", 0.0, U),         // 4
        ("  ", 0.0, U),         // 5 (two real spaces)
        ("<0xC3>", 0.0, B),     // 6
        ("<0xA9>", 0.0, B),     // 7
        ("<0x21>", 0.0, B),     // 8 '!'
        ("a", -10.0, N),        // 9
        ("b", -10.0, N),        // 10
        ("c", -10.0, N),        // 11
        ("ab", ab_score, N),    // 12
        ("bc", bc_score, N),    // 13
        ("\u{2581}", -5.0, N),  // 14 "▁"
        ("\u{2581}a", -2.0, N), // 15 "▁a"
        ("</s>", 0.0, U),       // 16 user-defined but llama.cpp promotes it to control
        ("<", -10.0, N),        // 17
        ("s", -10.0, N),        // 18
        (">", -10.0, N),        // 19
        ("/", -10.0, N),        // 20
        ("<unused0>", 0.0, C),  // 21
    ]
}

fn build(v: Vec<(&'static str, f32, i32)>, add_bos: bool, add_space_prefix: bool) -> SpmTokenizer {
    let tokens = v.iter().map(|t| t.0.to_string()).collect();
    let scores = v.iter().map(|t| t.1).collect();
    let types = v.iter().map(|t| t.2).collect();
    let cfg = SpmConfig {
        bos_id: 2,
        eos_id: 1,
        unk_id: 3,
        add_bos,
        add_space_prefix,
    };
    SpmTokenizer::new(tokens, scores, types, cfg).expect("valid vocab")
}

fn tok(ab: f32, bc: f32) -> SpmTokenizer {
    build(vocab(ab, bc), true, false)
}

#[test]
fn merge_order_follows_score() {
    // "bc" scores higher: merged first, so "ab" can no longer form.
    assert_eq!(tok(-3.0, -1.0).encode("abc", false), vec![9, 13]);
    // "ab" scores higher.
    assert_eq!(tok(-1.0, -3.0).encode("abc", false), vec![12, 11]);
    // Equal scores: the leftmost pair wins.
    assert_eq!(tok(-2.0, -2.0).encode("abc", false), vec![12, 11]);
    // -0.0 and 0.0 compare equal (as in C++), so the leftmost pair wins too.
    assert_eq!(tok(-0.0, 0.0).encode("abc", false), vec![12, 11]);
    assert_eq!(tok(0.0, -0.0).encode("abc", false), vec![12, 11]);
}

#[test]
fn merged_symbol_can_merge_again() {
    let mut v = vocab(-3.0, -1.0);
    v.push(("abc", -4.0, N)); // 22: reachable via "a" + "bc"
    let t = build(v, true, false);
    assert_eq!(t.encode("abc", false), vec![22]);
    assert_eq!(t.encode("abcabc", false), vec![22, 22]);
}

#[test]
fn byte_fallback_for_unknown_chars() {
    let t = tok(-1.0, -3.0);
    // 'é' = C3 A9 has no piece but both byte tokens exist.
    assert_eq!(t.encode("é", false), vec![6, 7]);
    assert_eq!(t.encode("aé!", false), vec![9, 6, 7, 8]);
    // 'ü' = C3 BC: <0xBC> is missing, so that byte becomes UNK.
    assert_eq!(t.encode("ü", false), vec![6, 3]);
}

#[test]
fn whitespace_is_escaped_and_user_defined_matched_raw() {
    let t = tok(-1.0, -3.0);
    // ' ' -> '▁', and "▁a" is a piece.
    assert_eq!(t.encode("a a", false), vec![9, 15]);
    assert_eq!(t.encode(" b", false), vec![14, 10]);
    // Two real spaces are a user-defined piece, matched before escaping.
    assert_eq!(t.encode("a  b", false), vec![9, 5, 10]);
    // Three spaces: the two-space piece first, then an escaped single space.
    assert_eq!(t.encode("a   b", false), vec![9, 5, 14, 10]);
    assert_eq!(t.encode("a\nb\n", false), vec![9, 4, 10, 4]);
}

#[test]
fn space_prefix_only_when_configured() {
    let t = build(vocab(-1.0, -3.0), true, true);
    assert_eq!(t.encode("a", false), vec![15]);
    // After a special (user-defined) piece the next fragment gets the prefix again.
    assert_eq!(t.encode("a\na", false), vec![15, 4, 15]);
    // Decoding removes that leading space from the first piece again.
    assert_eq!(t.decode(&[15, 4, 15], true), "a\n a");
    let t = tok(-1.0, -3.0);
    assert_eq!(t.encode("a", false), vec![9]);
}

#[test]
fn control_text_is_plain_unless_parse_special() {
    let t = tok(-1.0, -3.0);
    // "<eos>" is not a piece sequence we have, so it falls back char by char;
    // 'e' and 'o' have no pieces or byte tokens -> UNK.
    assert_eq!(t.encode("<eos>", false), vec![17, 3, 3, 18, 19]);
    assert_eq!(t.encode_with_special("<eos>", false, true), vec![1]);
    // "</s>" is user-defined in the vocab but control for llama.cpp: not matched...
    assert_eq!(t.encode("</s>", false), vec![17, 20, 18, 19]);
    assert!(t.is_control(16));
    // ...unless special parsing is on.
    assert_eq!(t.encode_with_special("a</s>", false, true), vec![9, 16]);
    assert_eq!(t.eog_ids(), &[1, 16]);
}

#[test]
fn bos_and_empty() {
    let t = tok(-1.0, -3.0);
    assert_eq!(t.encode("", false), Vec::<u32>::new());
    assert_eq!(t.encode("", true), vec![2]);
    assert_eq!(t.encode("ab", true), vec![2, 12]);
    assert_eq!(t.decode(&[], true), "");
    let no_bos = build(vocab(-1.0, -3.0), false, false);
    assert_eq!(no_bos.encode("ab", true), vec![12]);
    assert_eq!(no_bos.encode("", true), Vec::<u32>::new());
}

#[test]
fn decode_bytes_and_specials() {
    let t = tok(-1.0, -3.0);
    assert_eq!(t.decode(&[6, 7], true), "é");
    assert_eq!(t.decode(&[9, 15, 5, 10, 4], true), "a a  b\n");
    // A lone continuation byte is invalid UTF-8 -> U+FFFD.
    assert_eq!(t.decode(&[9, 7, 10], true), "a\u{FFFD}b");
    // Control tokens only rendered when not skipping.
    assert_eq!(t.decode(&[2, 9, 1], true), "a");
    assert_eq!(t.decode(&[2, 9, 1], false), "<bos>a<eos>");
    assert_eq!(t.decode(&[21, 9], true), "a");
    // "</s>" is control for llama.cpp.
    assert_eq!(t.decode(&[9, 16], true), "a");
    // Out-of-range ids are ignored.
    assert_eq!(t.decode(&[9, 999], true), "a");
}

#[test]
fn roundtrip_lookup() {
    let t = tok(-1.0, -3.0);
    assert_eq!(t.vocab_size(), 22);
    assert_eq!(t.piece_to_id("\u{2581}a"), Some(15));
    assert_eq!(t.id_to_piece(15), Some("\u{2581}a"));
    assert_eq!(t.id_to_piece(22), None);
    assert_eq!((t.bos_id(), t.eos_id()), (2, 1));
}

#[test]
fn rejects_bad_vocab() {
    let cfg = SpmConfig {
        bos_id: 0,
        eos_id: 0,
        unk_id: 0,
        add_bos: true,
        add_space_prefix: false,
    };
    let dup = SpmTokenizer::new(vec!["a".into(), "a".into()], vec![], vec![], cfg.clone());
    assert!(matches!(
        dup,
        Err(SpmError::DuplicatePiece {
            first: 0,
            second: 1,
            ..
        })
    ));
    let len = SpmTokenizer::new(vec!["a".into()], vec![0.0, 1.0], vec![], cfg.clone());
    assert!(matches!(len, Err(SpmError::ScoresLen { .. })));
    let bad = SpmConfig {
        bos_id: 5,
        ..cfg.clone()
    };
    assert!(matches!(
        SpmTokenizer::new(vec!["a".into()], vec![], vec![], bad),
        Err(SpmError::SpecialIdOutOfRange { what: "BOS", .. })
    ));
    assert!(matches!(
        SpmTokenizer::new(vec![], vec![], vec![], cfg.clone()),
        Err(SpmError::EmptyVocab)
    ));
    let byte = SpmTokenizer::new(vec!["<0xZZ>".into()], vec![], vec![B], cfg);
    assert!(matches!(byte, Err(SpmError::BadByteToken { .. })));
}
