//! NLTK's Porter stemmer (`PorterStemmer()`, mode `NLTK_EXTENSIONS`), as rouge_score uses it
//! for the stemmed NIAH score. A port, step for step, of nltk 3.x `nltk/stem/porter.py`.

/// NLTK's Porter stemmer in its default `NLTK_EXTENSIONS` mode (nltk 3.x `nltk/stem/porter.py`):
/// lowercases, maps the irregular forms (`skies` → `sky`, `dying` → `die`…), leaves words of
/// one or two characters alone, then applies steps 1a–5b with NLTK's extensions.
pub fn porter_stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(s) = irregular(&lower) {
        return s.to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Vec<char> = lower.chars().collect();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    w.into_iter().collect()
}
type Word = Vec<char>;
type Cond<'a> = Option<&'a dyn Fn(&[char]) -> bool>;

fn irregular(w: &str) -> Option<&'static str> {
    Some(match w {
        "sky" | "skies" => "sky",
        "dying" => "die",
        "lying" => "lie",
        "tying" => "tie",
        "news" => "news",
        "innings" | "inning" => "inning",
        "outings" | "outing" => "outing",
        "cannings" | "canning" => "canning",
        "howe" => "howe",
        "proceed" => "proceed",
        "exceed" => "exceed",
        "succeed" => "succeed",
        _ => return None,
    })
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// `true` = consonant, for every position (`_consonant_flags`): a `y` is a consonant at the
/// start or after a vowel.
fn flags(w: &[char]) -> Vec<bool> {
    let mut f: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let cons = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !f[i - 1]
        } else {
            true
        };
        f.push(cons);
    }
    f
}

fn is_cons(w: &[char], i: usize) -> bool {
    flags(&w[..=i])[i]
}

/// The measure m: the number of vowel→consonant transitions.
fn measure(stem: &[char]) -> usize {
    let f = flags(stem);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn positive_measure(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn measure_gt_1(stem: &[char]) -> bool {
    measure(stem) > 1
}

fn contains_vowel(stem: &[char]) -> bool {
    flags(stem).iter().any(|&c| !c)
}

fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_cons(w, n - 1)
}

fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_cons(w, n - 3)
        && !is_cons(w, n - 2)
        && is_cons(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_cons(w, 0) && is_cons(w, 1))
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let s: Vec<char> = suffix.chars().collect();
    w.len() >= s.len() && w[w.len() - s.len()..] == s[..]
}

fn replace_suffix(w: &[char], suffix: &str, replacement: &str) -> Word {
    let mut out: Word = w[..w.len() - suffix.chars().count()].to_vec();
    out.extend(replacement.chars());
    out
}

/// `_apply_rule_list`: the first rule whose suffix matches decides (a failed condition stops
/// the search). The suffix `"*d"` means "ends in a double consonant".
fn apply_rules(w: Word, rules: &[(&str, &str, Cond<'_>)]) -> Word {
    for &(suffix, replacement, cond) in rules {
        if suffix == "*d" && ends_double_consonant(&w) {
            let stem = &w[..w.len() - 2];
            return if cond.is_none_or(|c| c(stem)) {
                let mut out = stem.to_vec();
                out.extend(replacement.chars());
                out
            } else {
                w
            };
        }
        if ends_with(&w, suffix) {
            let stem = replace_suffix(&w, suffix, "");
            return if cond.is_none_or(|c| c(&stem)) {
                replace_suffix(&w, suffix, replacement)
            } else {
                w
            };
        }
    }
    w
}

fn step1a(w: Word) -> Word {
    if ends_with(&w, "ies") && w.len() == 4 {
        return replace_suffix(&w, "ies", "ie");
    }
    apply_rules(
        w,
        &[
            ("sses", "ss", None),
            ("ies", "i", None),
            ("ss", "ss", None),
            ("s", "", None),
        ],
    )
}

fn step1b(w: Word) -> Word {
    if ends_with(&w, "ied") {
        return if w.len() == 4 {
            replace_suffix(&w, "ied", "ie")
        } else {
            replace_suffix(&w, "ied", "i")
        };
    }
    if ends_with(&w, "eed") {
        let stem = replace_suffix(&w, "eed", "");
        return if measure(&stem) > 0 {
            replace_suffix(&w, "eed", "ee")
        } else {
            w
        };
    }
    let mut intermediate: Option<Word> = None;
    for suffix in ["ed", "ing"] {
        if ends_with(&w, suffix) {
            let stem = replace_suffix(&w, suffix, "");
            if contains_vowel(&stem) {
                intermediate = Some(stem);
                break;
            }
        }
    }
    let Some(stem) = intermediate else { return w };
    let last = *stem.last().expect("a stem with a vowel is not empty");
    let last_s = last.to_string();
    let not_lsz: &dyn Fn(&[char]) -> bool = &move |_: &[char]| !matches!(last, 'l' | 's' | 'z');
    let m1_cvc: &dyn Fn(&[char]) -> bool = &|s: &[char]| measure(s) == 1 && ends_cvc(s);
    apply_rules(
        stem,
        &[
            ("at", "ate", None),
            ("bl", "ble", None),
            ("iz", "ize", None),
            ("*d", &last_s, Some(not_lsz)),
            ("", "e", Some(m1_cvc)),
        ],
    )
}

fn step1c(w: Word) -> Word {
    let cond: &dyn Fn(&[char]) -> bool = &|s: &[char]| s.len() > 1 && is_cons(s, s.len() - 1);
    apply_rules(w, &[("y", "i", Some(cond))])
}

fn step2(w: Word) -> Word {
    if ends_with(&w, "alli") && positive_measure(&replace_suffix(&w, "alli", "")) {
        return step2(replace_suffix(&w, "alli", "al"));
    }
    let pm: &dyn Fn(&[char]) -> bool = &positive_measure;
    let word_minus_3 = w[..w.len().saturating_sub(3)].to_vec();
    let logi: &dyn Fn(&[char]) -> bool = &move |_: &[char]| positive_measure(&word_minus_3);
    apply_rules(
        w,
        &[
            ("ational", "ate", Some(pm)),
            ("tional", "tion", Some(pm)),
            ("enci", "ence", Some(pm)),
            ("anci", "ance", Some(pm)),
            ("izer", "ize", Some(pm)),
            ("bli", "ble", Some(pm)),
            ("alli", "al", Some(pm)),
            ("entli", "ent", Some(pm)),
            ("eli", "e", Some(pm)),
            ("ousli", "ous", Some(pm)),
            ("ization", "ize", Some(pm)),
            ("ation", "ate", Some(pm)),
            ("ator", "ate", Some(pm)),
            ("alism", "al", Some(pm)),
            ("iveness", "ive", Some(pm)),
            ("fulness", "ful", Some(pm)),
            ("ousness", "ous", Some(pm)),
            ("aliti", "al", Some(pm)),
            ("iviti", "ive", Some(pm)),
            ("biliti", "ble", Some(pm)),
            ("fulli", "ful", Some(pm)),
            ("logi", "log", Some(logi)),
        ],
    )
}

fn step3(w: Word) -> Word {
    let pm: &dyn Fn(&[char]) -> bool = &positive_measure;
    apply_rules(
        w,
        &[
            ("icate", "ic", Some(pm)),
            ("ative", "", Some(pm)),
            ("alize", "al", Some(pm)),
            ("iciti", "ic", Some(pm)),
            ("ical", "ic", Some(pm)),
            ("ful", "", Some(pm)),
            ("ness", "", Some(pm)),
        ],
    )
}

fn step4(w: Word) -> Word {
    let m1: &dyn Fn(&[char]) -> bool = &measure_gt_1;
    let ion: &dyn Fn(&[char]) -> bool =
        &|s: &[char]| measure(s) > 1 && matches!(s.last(), Some('s' | 't'));
    apply_rules(
        w,
        &[
            ("al", "", Some(m1)),
            ("ance", "", Some(m1)),
            ("ence", "", Some(m1)),
            ("er", "", Some(m1)),
            ("ic", "", Some(m1)),
            ("able", "", Some(m1)),
            ("ible", "", Some(m1)),
            ("ant", "", Some(m1)),
            ("ement", "", Some(m1)),
            ("ment", "", Some(m1)),
            ("ent", "", Some(m1)),
            ("ion", "", Some(ion)),
            ("ou", "", Some(m1)),
            ("ism", "", Some(m1)),
            ("ate", "", Some(m1)),
            ("iti", "", Some(m1)),
            ("ous", "", Some(m1)),
            ("ive", "", Some(m1)),
            ("ize", "", Some(m1)),
        ],
    )
}

fn step5a(w: Word) -> Word {
    if ends_with(&w, "e") {
        let stem = replace_suffix(&w, "e", "");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    w
}

fn step5b(w: Word) -> Word {
    let word_minus_1 = w[..w.len().saturating_sub(1)].to_vec();
    let cond: &dyn Fn(&[char]) -> bool = &move |_: &[char]| measure(&word_minus_1) > 1;
    apply_rules(w, &[("ll", "l", Some(cond))])
}
