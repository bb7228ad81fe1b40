//! RULER's needle-in-a-haystack tasks (NVIDIA/RULER `scripts/synthetic.yaml`: `niah_single_1..3`,
//! `niah_multikey_1..3`, `niah_multivalue`, `niah_multiquery`), written from the task
//! description; RULER's Python generator is not used.
//!
//! A task hides `max(num_needle_k, num_needle_q)` keys with `num_needle_v` values each, one needle
//! sentence per (key, value) — [`RULER_NEEDLE`] — and asks for the values of `num_needle_q` of the
//! keys. Keys and values are 7-digit numbers, `adjective-noun` words (the wonderwords lists RULER
//! uses, [`RulerWords`]) or uuid4 strings. The haystack is the essays (or any [`Haystack`]) cut at
//! whitespace, the noise sentence one per line, or (`needle`) other needles with keys and values
//! of the same kinds, one per line. The score is RULER's `string_match_all`: the share of the
//! expected values found in the answer ([`crate::eval::metrics::ruler_string_match_all`]).
//!
//! Where this differs from RULER, and why:
//! - **Depth.** RULER puts every needle at a random depth. Here the needle of the first queried
//!   key's first value (the *target*) goes at the requested depth, so that the depth axis of the
//!   heatmaps means something; the other needles go at distinct depths drawn from RULER's 40
//!   depths (`round(linspace(0, 100, 40))`). In the essay haystack a needle moves back to the
//!   nearest sentence end (a word ending in `.`), as in the peer protocol; depth 100 is the end.
//! - **Length.** Like RULER, the prompt leaves room for the answer: it is the longest haystack
//!   whose prompt (BOS included) takes at most `length − 128` tokens, so prompt + answer fit in
//!   `length` (Gemma 3's 32K context takes `--lengths 32768`).
//! - **Randomness.** One `StdRng` per sample, seeded from the run's seed, the grid position and
//!   the task; the same seed gives the same prompts for every method.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{NOISE_UNIT, NiahBuilder, NiahError, NiahSample, Protocol, Scoring, Task};

/// RULER's task prompt; `{type_needle_v}`, `{context}` and `{query}` are replaced.
pub const RULER_TEMPLATE: &str = "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} mentioned in the provided text?";
/// RULER's answer prefix, appended to the prompt (base models get no chat template).
pub const RULER_ANSWER_PREFIX: &str =
    " The special magic {type_needle_v} for {query} mentioned in the provided text are";
/// One needle sentence.
pub const RULER_NEEDLE: &str = "One of the special magic {type_needle_v} for {key} is: {value}.";
/// RULER's `tokens_to_generate` for the NIAH tasks; the prompt leaves room for them.
pub const RULER_MAX_NEW_TOKENS: usize = 128;

/// Every task name, for messages.
pub const TASK_NAMES: &str = "niah_single_1, niah_single_2, niah_single_3, niah_multikey_1, \
     niah_multikey_2, niah_multikey_3, niah_multivalue, niah_multiquery";

/// What a key or a value is made of (`type_needle_k` / `type_needle_v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RulerKind {
    /// 7-digit numbers (1000000..=9999999).
    Numbers,
    /// `adjective-noun` from the wonderwords lists.
    Words,
    /// uuid4 strings (`xxxxxxxx-xxxx-4xxx-Yxxx-xxxxxxxxxxxx`, Y in 8..b).
    Uuids,
}

impl RulerKind {
    /// The name RULER's needle and template use (`numbers`, `words`, `uuids`).
    pub fn name(self) -> &'static str {
        match self {
            RulerKind::Numbers => "numbers",
            RulerKind::Words => "words",
            RulerKind::Uuids => "uuids",
        }
    }
}

/// What fills the context around the needles (`type_haystack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RulerHaystack {
    /// The run's haystack text (`--haystack`; by default the essays), cut at whitespace.
    Essay,
    /// [`NOISE_UNIT`], one per line.
    Noise,
    /// Needles with other keys and values of the task's kinds, one per line.
    Needle,
}

/// One RULER NIAH task's arguments, as in `synthetic.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RulerConfig {
    /// `type_haystack`.
    pub haystack: RulerHaystack,
    /// `type_needle_k`.
    pub key: RulerKind,
    /// `type_needle_v`.
    pub value: RulerKind,
    /// `num_needle_k`: keys hidden (at least `num_queries`).
    pub num_keys: usize,
    /// `num_needle_v`: values per key.
    pub num_values: usize,
    /// `num_needle_q`: keys asked for.
    pub num_queries: usize,
}

/// RULER's eight NIAH tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RulerTask {
    #[serde(rename = "niah_single_1")]
    NiahSingle1,
    #[serde(rename = "niah_single_2")]
    NiahSingle2,
    #[serde(rename = "niah_single_3")]
    NiahSingle3,
    #[serde(rename = "niah_multikey_1")]
    NiahMultikey1,
    #[serde(rename = "niah_multikey_2")]
    NiahMultikey2,
    #[serde(rename = "niah_multikey_3")]
    NiahMultikey3,
    #[serde(rename = "niah_multivalue")]
    NiahMultivalue,
    #[serde(rename = "niah_multiquery")]
    NiahMultiquery,
}

impl RulerTask {
    /// Every task, in `synthetic.yaml` order.
    pub const ALL: [RulerTask; 8] = [
        RulerTask::NiahSingle1,
        RulerTask::NiahSingle2,
        RulerTask::NiahSingle3,
        RulerTask::NiahMultikey1,
        RulerTask::NiahMultikey2,
        RulerTask::NiahMultikey3,
        RulerTask::NiahMultivalue,
        RulerTask::NiahMultiquery,
    ];

    /// RULER's name (`niah_single_1`, …).
    pub fn name(self) -> &'static str {
        match self {
            RulerTask::NiahSingle1 => "niah_single_1",
            RulerTask::NiahSingle2 => "niah_single_2",
            RulerTask::NiahSingle3 => "niah_single_3",
            RulerTask::NiahMultikey1 => "niah_multikey_1",
            RulerTask::NiahMultikey2 => "niah_multikey_2",
            RulerTask::NiahMultikey3 => "niah_multikey_3",
            RulerTask::NiahMultivalue => "niah_multivalue",
            RulerTask::NiahMultiquery => "niah_multiquery",
        }
    }

    /// The task's arguments in RULER's `synthetic.yaml`.
    pub fn config(self) -> RulerConfig {
        use RulerHaystack::*;
        use RulerKind::*;
        let c = |haystack, key, value, num_keys, num_values, num_queries| RulerConfig {
            haystack,
            key,
            value,
            num_keys,
            num_values,
            num_queries,
        };
        match self {
            RulerTask::NiahSingle1 => c(Noise, Words, Numbers, 1, 1, 1),
            RulerTask::NiahSingle2 => c(Essay, Words, Numbers, 1, 1, 1),
            RulerTask::NiahSingle3 => c(Essay, Words, Uuids, 1, 1, 1),
            RulerTask::NiahMultikey1 => c(Essay, Words, Numbers, 4, 1, 1),
            RulerTask::NiahMultikey2 => c(Needle, Words, Numbers, 1, 1, 1),
            RulerTask::NiahMultikey3 => c(Needle, Uuids, Uuids, 1, 1, 1),
            RulerTask::NiahMultivalue => c(Essay, Words, Numbers, 1, 4, 1),
            RulerTask::NiahMultiquery => c(Essay, Words, Numbers, 1, 1, 4),
        }
    }

    /// Whether the task draws `adjective-noun` words (and so needs [`RulerWords`]).
    pub fn needs_words(self) -> bool {
        let c = self.config();
        c.key == RulerKind::Words || c.value == RulerKind::Words
    }

    /// The sample seed for this task: `base` mixed with the task, so that two tasks of one run
    /// do not share their keys.
    pub fn seed(self, base: u64) -> u64 {
        let i = RulerTask::ALL.iter().position(|&t| t == self).unwrap_or(0) as u64;
        base ^ (i + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93)
    }
}

impl std::fmt::Display for RulerTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RulerTask {
    type Err = NiahError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RulerTask::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| NiahError::UnknownRulerTask(s.to_string()))
    }
}

/// The wonderwords adjective and noun lists RULER draws its `adjective-noun` words from
/// (RULER keeps them outside its code; so do we: they are read at run time).
#[derive(Debug, Clone)]
pub struct RulerWords {
    adjectives: Vec<String>,
    nouns: Vec<String>,
}

impl RulerWords {
    /// `adjectivelist.txt` and `nounlist.txt` from `dir/wonderwords/` (RULER's data folder, e.g.
    /// `shared/datasets/ruler`) or from `dir` itself.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, NiahError> {
        let dir = dir.as_ref();
        let sub = dir.join("wonderwords");
        let lists = if sub.join("nounlist.txt").is_file() {
            sub
        } else {
            dir.to_path_buf()
        };
        let read = |name: &str| -> Result<String, NiahError> {
            let path = lists.join(name);
            if !path.is_file() {
                return Err(NiahError::NoRulerWords(dir.to_path_buf()));
            }
            std::fs::read_to_string(&path).map_err(|source| NiahError::Io { path, source })
        };
        Self::from_lists(&read("adjectivelist.txt")?, &read("nounlist.txt")?)
            .map_err(|_| NiahError::NoRulerWords(dir.to_path_buf()))
    }

    /// From the lists' text (one word per line; blank lines skipped; sorted and deduplicated, as
    /// RULER's word set).
    pub fn from_lists(adjectives: &str, nouns: &str) -> Result<Self, NiahError> {
        let list = |text: &str| -> Vec<String> {
            let mut v: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let (adjectives, nouns) = (list(adjectives), list(nouns));
        if adjectives.is_empty() || nouns.is_empty() {
            return Err(NiahError::NoRulerWords(PathBuf::from("<text>")));
        }
        Ok(RulerWords { adjectives, nouns })
    }

    /// A uniform draw from `adjective × noun`.
    fn draw(&self, rng: &mut StdRng) -> String {
        let a = &self.adjectives[rng.random_range(0..self.adjectives.len())];
        let n = &self.nouns[rng.random_range(0..self.nouns.len())];
        format!("{a}-{n}")
    }
}

/// Draws keys and values, none twice in a sample (a repeated key would make the answer
/// ambiguous).
struct Draw<'w> {
    rng: StdRng,
    words: Option<&'w RulerWords>,
    used: HashSet<String>,
}

impl Draw<'_> {
    /// A key or value not drawn before in this sample; an error when the word lists are too
    /// small to give one (10 000 draws in a row were all taken).
    fn one(&mut self, kind: RulerKind) -> Result<String, NiahError> {
        for _ in 0..10_000 {
            let s = match kind {
                RulerKind::Numbers => self.rng.random_range(1_000_000..=9_999_999u32).to_string(),
                RulerKind::Words => self
                    .words
                    .expect("checked: the task has word lists")
                    .draw(&mut self.rng),
                RulerKind::Uuids => uuid4(self.rng.random::<u128>()),
            };
            if self.used.insert(s.clone()) {
                return Ok(s);
            }
        }
        Err(NiahError::RulerWordsExhausted(self.used.len()))
    }
}

/// A uuid4 string from 128 random bits (version nibble 4, variant bits 10).
pub fn uuid4(bits: u128) -> String {
    let b = (bits & !(0xFu128 << 76) | (0x4u128 << 76)) & !(0x3u128 << 62) | (0x2u128 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// RULER's 40 depths, `np.round(np.linspace(0, 100, 40))`.
pub fn ruler_depths() -> Vec<f64> {
    (0..40).map(|i| (i as f64 * 100.0 / 39.0).round()).collect()
}

/// The context's filler: what sits between the needles.
enum Units<'a> {
    /// Whitespace-separated words of the haystack text, repeated as needed; joined with `" "`.
    Words(Vec<&'a str>),
    /// [`NOISE_UNIT`]; joined with `"\n"`.
    Noise,
    /// Distractor needles, drawn as needed; joined with `"\n"`.
    Needles {
        list: Vec<String>,
        draw: Box<Draw<'a>>,
        label: &'static str,
        key: RulerKind,
        value: RulerKind,
    },
}

impl Units<'_> {
    fn ensure(&mut self, n: usize) -> Result<(), NiahError> {
        if let Units::Needles {
            list,
            draw,
            label,
            key,
            value,
        } = self
        {
            while list.len() < n {
                let k = draw.one(*key)?;
                let v = draw.one(*value)?;
                list.push(needle_sentence(label, &k, &v));
            }
        }
        Ok(())
    }

    fn get(&self, i: usize) -> &str {
        match self {
            Units::Words(w) => w[i % w.len()],
            Units::Noise => NOISE_UNIT,
            Units::Needles { list, .. } => &list[i],
        }
    }

    fn separator(&self) -> &'static str {
        match self {
            Units::Words(_) => " ",
            _ => "\n",
        }
    }

    /// Whether a needle may go right after unit `i` (the essays: only after a sentence end).
    fn boundary_after(&self, i: usize) -> bool {
        match self {
            Units::Words(_) => self.get(i).ends_with('.'),
            _ => true,
        }
    }
}

fn needle_sentence(label: &str, key: &str, value: &str) -> String {
    RULER_NEEDLE
        .replace("{type_needle_v}", label)
        .replace("{key}", key)
        .replace("{value}", value)
}

/// A needle with its depth; the target is the one the requested depth places.
struct Placed {
    text: String,
    depth: f64,
    target: bool,
}

impl NiahBuilder<'_> {
    /// A RULER NIAH prompt (see the module docs): `task`'s keys, values and haystack, the target
    /// needle at `depth`, at most `length − RULER_MAX_NEW_TOKENS` tokens with BOS; `words` is
    /// needed by every task but `niah_multikey_3`. Scored by RULER's `string_match_all`.
    pub fn ruler(
        &self,
        task: RulerTask,
        words: Option<&RulerWords>,
        length: usize,
        depth: f64,
        seed: u64,
    ) -> Result<NiahSample, NiahError> {
        super::builder::check_depth(depth)?;
        let cfg = task.config();
        if task.needs_words() && words.is_none() {
            return Err(NiahError::RulerNeedsWords(task.name()));
        }
        let mut draw = Draw {
            rng: StdRng::seed_from_u64(seed),
            words,
            used: HashSet::new(),
        };
        let label = cfg.value.name();
        let Needles {
            query,
            answers,
            placed,
        } = draw_needles(&cfg, &mut draw, depth)?;
        let (prefix, suffix) = framing(&cfg, &query);

        let hay_text;
        let mut units = match cfg.haystack {
            RulerHaystack::Essay => {
                hay_text = self.haystack_text();
                let w: Vec<&str> = hay_text.split_whitespace().collect();
                if w.is_empty() {
                    return Err(NiahError::NoTokens);
                }
                Units::Words(w)
            }
            RulerHaystack::Noise => Units::Noise,
            RulerHaystack::Needle => Units::Needles {
                list: Vec::new(),
                draw: Box::new(draw),
                label,
                key: cfg.key,
                value: cfg.value,
            },
        };

        let bos_len = usize::from(self.bos_id().is_some());
        let max_prompt = length.saturating_sub(RULER_MAX_NEW_TOKENS);
        let count = |n: usize, units: &mut Units<'_>| -> Result<usize, NiahError> {
            units.ensure(n)?;
            let (context, _) = assemble(units, n, &placed, depth);
            Ok(bos_len
                + self
                    .encode_text(&format!("{prefix}{context}{suffix}"))
                    .len())
        };
        let fixed = count(0, &mut units)?;
        if fixed > max_prompt {
            return Err(NiahError::TooShort {
                length,
                fixed: fixed + RULER_MAX_NEW_TOKENS,
            });
        }
        let n = fit_units(fixed, max_prompt, |n| count(n, &mut units))?;
        units.ensure(n)?;
        let (context, target_offset) = assemble(&units, n, &placed, depth);
        let prompt = format!("{prefix}{context}{suffix}");
        let mut prompt_ids: Vec<u32> = self.bos_id().into_iter().collect();
        prompt_ids.extend(self.encode_text(&prompt));
        let target = placed.iter().find(|p| p.target).expect("one target");
        let needle_char_offset = prefix.len() + target_offset;
        let needle_token_start = bos_len + self.encode_text(&prompt[..needle_char_offset]).len();
        Ok(NiahSample {
            protocol: Protocol::Ruler,
            task: Task::Ruler(task),
            haystack_tokens: prompt_ids.len().saturating_sub(fixed),
            prompt,
            needle_text: target.text.clone(),
            needle_char_offset,
            needle_token_start,
            needle_token_len: self.encode_text(&target.text).len(),
            prompt_ids,
            answer: answers.join(", "),
            score_reference: answers.join(", "),
            values: answers,
            scoring: Scoring::RulerStringMatchAll,
            length,
            depth,
            seed: Some(seed),
            max_new_tokens: RULER_MAX_NEW_TOKENS,
        })
    }
}

/// A RULER prompt's needles: the asked keys as the question names them, the asked keys' values
/// (the answers, in order) and every needle sentence at its depth.
struct Needles {
    query: String,
    answers: Vec<String>,
    placed: Vec<Placed>,
}

/// Draws the task's keys, each with its values, and the keys asked for; the first asked value's
/// needle goes at `depth`, the others at distinct random RULER depths (needles key-major).
fn draw_needles(cfg: &RulerConfig, draw: &mut Draw<'_>, depth: f64) -> Result<Needles, NiahError> {
    let label = cfg.value.name();
    let n_keys = cfg.num_keys.max(cfg.num_queries);
    let keys: Vec<String> = (0..n_keys)
        .map(|_| draw.one(cfg.key))
        .collect::<Result<_, _>>()?;
    let values: Vec<Vec<String>> = (0..n_keys)
        .map(|_| {
            (0..cfg.num_values)
                .map(|_| draw.one(cfg.value))
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()?;
    let mut order: Vec<usize> = (0..n_keys).collect();
    order.shuffle(&mut draw.rng);
    let queries = &order[..cfg.num_queries];
    let answers: Vec<String> = queries
        .iter()
        .flat_map(|&k| values[k].iter().cloned())
        .collect();
    let mut others = ruler_depths();
    others.shuffle(&mut draw.rng);
    let mut others = others.into_iter();
    let mut placed: Vec<Placed> = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        for (j, v) in values[k].iter().enumerate() {
            let target = k == queries[0] && j == 0;
            placed.push(Placed {
                text: needle_sentence(label, key, v),
                depth: if target {
                    depth
                } else {
                    others.next().expect("at most 40 needles")
                },
                target,
            });
        }
    }
    // Stable: at one depth the needles keep key-major order.
    placed.sort_by(|a, b| a.depth.total_cmp(&b.depth));
    let query = match queries {
        [one] => keys[*one].clone(),
        [init @ .., last] => format!(
            "{}, and {}",
            init.iter()
                .map(|&k| keys[k].as_str())
                .collect::<Vec<_>>()
                .join(", "),
            keys[*last]
        ),
        [] => unreachable!("every task asks for a key"),
    };
    Ok(Needles {
        query,
        answers,
        placed,
    })
}

/// The text before and after the context: RULER's template with the asked keys (`query`) and
/// the value type, then its answer prefix; in RULER's singular form when one value is asked for.
fn framing(cfg: &RulerConfig, query: &str) -> (String, String) {
    let label = cfg.value.name();
    let (mut template, mut answer_prefix) =
        (RULER_TEMPLATE.to_string(), RULER_ANSWER_PREFIX.to_string());
    let mut type_v = label;
    if cfg.num_queries * cfg.num_values == 1 {
        for t in [&mut template, &mut answer_prefix] {
            *t = t
                .replace("Some", "A")
                .replace("are all", "is")
                .replace("are", "is");
        }
        type_v = &label[..label.len() - 1];
    }
    let template = template
        .replace("{type_needle_v}", type_v)
        .replace("{query}", query);
    let answer_prefix = answer_prefix
        .replace("{type_needle_v}", type_v)
        .replace("{query}", query);
    let (prefix, suffix) = template
        .split_once("{context}")
        .expect("the template has {context}");
    (prefix.to_string(), format!("{suffix}{answer_prefix}"))
}

/// The context of `n` filler units with the needles at their depths, and the byte offset of the
/// target needle in it. A needle at depth `d` goes after unit `⌊n·d/100⌋` (RULER's `int()`), moved
/// back to a unit it may follow ([`Units::boundary_after`]); depth 100 is the end.
fn assemble(units: &Units<'_>, n: usize, placed: &[Placed], target_depth: f64) -> (String, usize) {
    let sep = units.separator();
    let position = |depth: f64| -> usize {
        if depth >= 100.0 {
            return n;
        }
        let mut p = ((n as f64 * depth / 100.0).floor() as usize).min(n);
        while p > 0 && !units.boundary_after(p - 1) {
            p -= 1;
        }
        p
    };
    let mut out = String::new();
    let mut target_offset = 0;
    let mut next = 0;
    let push = |out: &mut String, s: &str| {
        if !out.is_empty() {
            out.push_str(sep);
        }
        out.push_str(s);
    };
    for p in placed {
        // A later needle never goes before an earlier one (moving back can cross).
        let at = position(p.depth).max(next);
        for i in next..at {
            push(&mut out, units.get(i));
        }
        next = at;
        push(&mut out, &p.text);
        if p.target {
            debug_assert_eq!(p.depth, target_depth);
            target_offset = out.len() - p.text.len();
        }
    }
    for i in next..n {
        push(&mut out, units.get(i));
    }
    (out, target_offset)
}

/// The most units `n` with `count(n) <= max`, given `count(0) = fixed <= max`: a guess from the
/// tokens per unit, a bracket around it, then bisection. `count` is close to linear but not
/// strictly monotone (tokens merge at seams), so the answer is a local maximum, which is what
/// "as long as fits" needs.
fn fit_units<E>(
    fixed: usize,
    max: usize,
    mut count: impl FnMut(usize) -> Result<usize, E>,
) -> Result<usize, E> {
    if fixed >= max {
        return Ok(0);
    }
    const PROBE: usize = 64;
    let per_unit = (count(PROBE)?.saturating_sub(fixed) as f64 / PROBE as f64).max(1e-3);
    let guess = (((max - fixed) as f64 / per_unit) as usize).max(1);
    let (mut lo, mut hi);
    let mut step = (guess / 32).max(4);
    if count(guess)? <= max {
        lo = guess;
        loop {
            hi = lo + step;
            if count(hi)? > max {
                break;
            }
            lo = hi;
            step *= 2;
        }
    } else {
        hi = guess;
        loop {
            lo = hi.saturating_sub(step);
            if lo == 0 || count(lo)? <= max {
                break;
            }
            hi = lo;
            step *= 2;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if count(mid)? <= max {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
