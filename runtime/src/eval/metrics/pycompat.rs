//! Python behaviour the ported metrics depend on, reproduced exactly: `re`'s Unicode `\d`, `\s`
//! and `\w`, `str.split()`, `string.punctuation`, `Counter` intersections and `round`'s ties to
//! even. Shared by the LongBench and NIAH metrics so both agree with the Python they port.

use std::collections::HashMap;

/// `string.punctuation`.
pub(super) const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// First code point ("zero") of every run of ten Unicode `Nd` digits, as Python 3.11's `re` sees
/// them (`\d` = `str.isdecimal()`, Unicode 14.0). Every `Nd` character is `zero + 0..=9` of one
/// of these (checked exhaustively in Python when the table was made).
const ND_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66,
    0xde6, 0xe50, 0xed0, 0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90,
    0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620, 0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10,
    0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450, 0x114d0, 0x11650,
    0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x16a60, 0x16ac0, 0x16b50,
    0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0,
];

/// Python's `\d` on `str`: a Unicode decimal digit (`Nd`), e.g. `٣` or the full-width `３`.
pub(super) fn py_is_decimal(c: char) -> bool {
    let c = c as u32;
    if c < 0x80 {
        return c.wrapping_sub(0x30) < 10;
    }
    // ND_ZEROS is sorted: find the last zero <= c.
    match ND_ZEROS.binary_search(&c) {
        Ok(_) => true,
        Err(0) => false,
        Err(i) => c - ND_ZEROS[i - 1] < 10,
    }
}

/// Python's `str.isspace()` / `re`'s `\s`: Unicode White_Space plus the separators U+001C..U+001F.
pub(super) fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python `re`'s `\w` on `str` (approximation, see the module docs).
pub(super) fn py_is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `s.split()` (no argument): runs of non-whitespace.
pub(super) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_is_space).filter(|t| !t.is_empty())
}

/// `re.findall(r"\d+", s)`.
pub(super) fn find_numbers(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        match (py_is_decimal(c), start) {
            (true, None) => start = Some(i),
            (false, Some(st)) => {
                out.push(&s[st..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// The first run of decimal digits in `s` (`re.search(r"\d+", s)`), if any.
pub fn first_number(s: &str) -> Option<&str> {
    let start = s.char_indices().find(|&(_, c)| py_is_decimal(c))?.0;
    let end = s[start..]
        .char_indices()
        .find(|&(_, c)| !py_is_decimal(c))
        .map_or(s.len(), |(i, _)| start + i);
    Some(&s[start..end])
}

/// Python's `round(x)` to an integer: round half to even.
pub(super) fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `sum((Counter(a) & Counter(b)).values())`.
pub(super) fn clipped_overlap<T: AsRef<str>>(a: &[T], b: &[T]) -> usize {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in b {
        *counts.entry(t.as_ref()).or_default() += 1;
    }
    let mut same = 0;
    for t in a {
        if let Some(n) = counts.get_mut(t.as_ref())
            && *n > 0
        {
            *n -= 1;
            same += 1;
        }
    }
    same
}

/// Python's `round(x, 2)`: correctly rounded from the exact binary value, ties to even. Rust's
/// `{:.2}` formatting rounds the exact value the same way.
pub(super) fn py_round_2(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}
