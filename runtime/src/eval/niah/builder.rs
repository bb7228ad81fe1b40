//! [`NiahBuilder`]: builds the peer, paper, landmark, custom and calibration prompts from a
//! haystack and a tokenizer — the token-level layout, the depth-to-position rule and the
//! exact-length fit described in the module docs.

use std::cell::OnceCell;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{
    CALIBRATION_MAX_NEW_TOKENS, CALIBRATION_MIN_HAYSTACK_TOKENS, CALIBRATION_QUESTION_TEMPLATE,
    Haystack, LANDMARK_MAX_NEW_TOKENS, LANDMARK_NEEDLE, LANDMARK_PREFIX, LANDMARK_SUFFIX, Needle,
    NiahError, NiahSample, PAPER_CONTEXT_BUFFER, PAPER_MAX_NEW_TOKENS, PAPER_TEMPLATE,
    PEER_NEEDLE_ANSWER_PREFIX, PEER_NEEDLE_MAX_NEW_TOKENS, PEER_NEEDLE_PREFIX,
    PEER_NEEDLE_QUESTION_PREFIX, PEER_PASSKEY_MAX_NEW_TOKENS, PEER_PASSKEY_NEEDLE,
    PEER_PASSKEY_PREFIX, PEER_PASSKEY_SUFFIX, Protocol, Scoring, Task, passkey_for_seed,
    sample_seed,
};

/// Options of the paper protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperOptions {
    /// Tokens kept free for the template, question and answer: the haystack+needle context is
    /// `length - buffer` tokens. The paper: 200.
    pub final_context_length_buffer: usize,
}

impl Default for PaperOptions {
    fn default() -> Self {
        PaperOptions {
            final_context_length_buffer: PAPER_CONTEXT_BUFFER,
        }
    }
}

/// How `n · depth / 100` becomes a token index.
#[derive(Clone, Copy)]
enum Rounding {
    /// Python `round` (ties to even): the SRH reference / peer.
    Nearest,
    /// Rust `f64::round` (ties away from zero): the profiler's calibration prompts, whose
    /// recorded ids depend on it.
    NearestAway,
    /// Python `int()`: needlehaystack / the paper.
    Floor,
}

/// How a token-level prompt takes its haystack and places its needle. The protocols share one
/// set of rules; the profiler's calibration prompts predate this builder and keep theirs, so
/// that their ids (and the profiles computed from them) do not change.
#[derive(Clone, Copy)]
struct Rules {
    rounding: Rounding,
    /// A token ends a sentence when its text ends with `.` after trailing whitespace is
    /// trimmed (`".\n"` counts), not only when it ends with `.`.
    trim_sentence_end: bool,
    /// Depth 100 moves back to a sentence end like any depth, instead of putting the needle
    /// right after the last haystack token.
    back_off_at_end: bool,
    /// The haystack is used once, tokenized whole: a prompt that needs more is an error
    /// ([`NiahError::HaystackTooShort`]) instead of repeating it.
    once: bool,
    /// Haystack tokens a prompt needs at least.
    min_haystack: usize,
}

impl Rules {
    /// Peer, landmark and custom prompts.
    const PROTOCOL: Rules = Rules {
        rounding: Rounding::Nearest,
        trim_sentence_end: false,
        back_off_at_end: false,
        once: false,
        min_haystack: 1,
    };
    /// [`NiahBuilder::calibration_needle`].
    const CALIBRATION: Rules = Rules {
        rounding: Rounding::NearestAway,
        trim_sentence_end: true,
        back_off_at_end: true,
        once: true,
        min_haystack: CALIBRATION_MIN_HAYSTACK_TOKENS,
    };
}

/// The text pieces of a token-level prompt.
struct Pieces<'s> {
    prefix: &'s str,
    needle: &'s str,
    suffix: &'s str,
}

type BoxedEncode<'a> = Box<dyn Fn(&str) -> Vec<u32> + 'a>;
type BoxedDecode<'a> = Box<dyn Fn(&[u32]) -> String + 'a>;

/// Builds samples from a haystack and a tokenizer.
pub struct NiahBuilder<'a> {
    haystack: &'a Haystack,
    encode: BoxedEncode<'a>,
    decode: BoxedDecode<'a>,
    bos: Option<u32>,
    /// The whole haystack (one repetition) tokenized, for [`Rules::once`].
    whole: OnceCell<Vec<u32>>,
}

impl<'a> NiahBuilder<'a> {
    /// A builder without BOS.
    pub fn new(
        haystack: &'a Haystack,
        encode: impl Fn(&str) -> Vec<u32> + 'a,
        decode: impl Fn(&[u32]) -> String + 'a,
    ) -> Self {
        NiahBuilder {
            haystack,
            encode: Box::new(encode),
            decode: Box::new(decode),
            bos: None,
            whole: OnceCell::new(),
        }
    }

    /// A builder with `model`'s tokenizer (no special tokens added) and its BOS first.
    pub fn for_model(haystack: &'a Haystack, model: &'a crate::loader::LoadedModel) -> Self {
        let tok = &model.tokenizer;
        NiahBuilder::new(
            haystack,
            move |s: &str| tok.encode(s, false).expect("tokenizer encode"),
            move |ids: &[u32]| tok.decode(ids).expect("tokenizer decode"),
        )
        .with_bos(model.spec.bos_token_id)
    }

    /// Put `bos` first in `prompt_ids`; it counts in `length`.
    pub fn with_bos(mut self, bos: Option<u32>) -> Self {
        self.bos = bos;
        self
    }

    /// The haystack's text (one repetition).
    pub(super) fn haystack_text(&self) -> &'a str {
        self.haystack.text()
    }

    /// The BOS id put first, if any.
    pub(super) fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// `encode` (no special tokens).
    pub(super) fn encode_text(&self, text: &str) -> Vec<u32> {
        (self.encode)(text)
    }

    /// The peer baseline's needle prompt:
    /// `PEER_NEEDLE_PREFIX + haystack(with " " + needle) + PEER_NEEDLE_QUESTION_PREFIX + question + PEER_NEEDLE_ANSWER_PREFIX`,
    /// exactly `length` tokens; scored by [`metrics::peer_needle_recall`] of `needle.answer`.
    ///
    /// [`metrics::peer_needle_recall`]: crate::eval::metrics::peer_needle_recall
    pub fn peer_needle(
        &self,
        needle: &Needle,
        length: usize,
        depth: f64,
    ) -> Result<NiahSample, NiahError> {
        let needle_text = format!(" {}", needle.needle);
        let suffix = format!(
            "{PEER_NEEDLE_QUESTION_PREFIX}{}{PEER_NEEDLE_ANSWER_PREFIX}",
            needle.question
        );
        let mut s = self.token_level(
            Pieces {
                prefix: PEER_NEEDLE_PREFIX,
                needle: &needle_text,
                suffix: &suffix,
            },
            length,
            depth,
            Rules::PROTOCOL,
        )?;
        s.protocol = Protocol::Peer;
        s.task = Task::Needle;
        s.answer = needle.answer.clone();
        s.score_reference = needle.answer.clone();
        s.scoring = Scoring::PeerRecall;
        s.max_new_tokens = PEER_NEEDLE_MAX_NEW_TOKENS;
        Ok(s)
    }

    /// The peer baseline's passkey prompt: `PEER_PASSKEY_PREFIX + haystack(with " The pass key is
    /// NNNNN. Remember it.") + PEER_PASSKEY_SUFFIX`, exactly `length` tokens; the key is
    /// [`passkey_for_seed`]`(seed)`; scored by [`metrics::passkey_exact`].
    ///
    /// [`metrics::passkey_exact`]: crate::eval::metrics::passkey_exact
    pub fn peer_passkey(
        &self,
        length: usize,
        depth: f64,
        seed: u64,
    ) -> Result<NiahSample, NiahError> {
        self.passkey(
            Protocol::Peer,
            [
                PEER_PASSKEY_PREFIX,
                PEER_PASSKEY_NEEDLE,
                PEER_PASSKEY_SUFFIX,
            ],
            PEER_PASSKEY_MAX_NEW_TOKENS,
            (length, depth, seed),
        )
    }

    /// The classic passkey prompt (`"The pass key is N. Remember it. N is the pass key."` on its
    /// own line between the task line and the question), exactly `length` tokens.
    pub fn landmark_passkey(
        &self,
        length: usize,
        depth: f64,
        seed: u64,
    ) -> Result<NiahSample, NiahError> {
        self.passkey(
            Protocol::Landmark,
            [LANDMARK_PREFIX, LANDMARK_NEEDLE, LANDMARK_SUFFIX],
            LANDMARK_MAX_NEW_TOKENS,
            (length, depth, seed),
        )
    }

    /// A passkey prompt of `protocol`: `[prefix, needle with {key}, suffix]` at token level, the
    /// key [`passkey_for_seed`]`(seed)`, exactly `length` tokens.
    fn passkey(
        &self,
        protocol: Protocol,
        [prefix, needle, suffix]: [&str; 3],
        max_new_tokens: usize,
        (length, depth, seed): (usize, f64, u64),
    ) -> Result<NiahSample, NiahError> {
        let key = passkey_for_seed(seed).to_string();
        let needle_text = needle.replace("{key}", &key);
        let mut s = self.token_level(
            Pieces {
                prefix,
                needle: &needle_text,
                suffix,
            },
            length,
            depth,
            Rules::PROTOCOL,
        )?;
        s.protocol = protocol;
        s.max_new_tokens = max_new_tokens;
        Ok(passkey_fields(s, key, seed))
    }

    /// The CompressKV paper's needle prompt (see the module docs). `prompt_ids` = BOS +
    /// `encode(prompt)`, about `length - buffer + template` tokens.
    pub fn paper_needle(
        &self,
        needle: &Needle,
        length: usize,
        depth: f64,
        options: &PaperOptions,
    ) -> Result<NiahSample, NiahError> {
        check_depth(depth)?;
        let needle_text = format!("\n{}\n", needle.needle);
        let needle_ids = (self.encode)(&needle_text);
        let budget = length.saturating_sub(options.final_context_length_buffer);
        let fixed = options.final_context_length_buffer + needle_ids.len();
        if budget <= needle_ids.len() {
            return Err(NiahError::TooShort { length, fixed });
        }
        let n = budget - needle_ids.len();
        let hay = self.haystack.tokens(n, &*self.encode)?;
        let p = self.insertion_point(
            &hay,
            depth,
            Rules {
                rounding: Rounding::Floor,
                ..Rules::PROTOCOL
            },
        );
        let (head, tail) = self.decode_split(&hay, p);

        let (before_context, after_context) = PAPER_TEMPLATE
            .split_once("{context}")
            .expect("the template has {context}");
        let after_context = after_context.replacen("{question}", &needle.question, 1);
        let prompt = format!("{before_context}{head}{needle_text}{tail}{after_context}");
        let needle_char_offset = before_context.len() + head.len();
        let bos_len = usize::from(self.bos.is_some());
        let mut prompt_ids: Vec<u32> = self.bos.into_iter().collect();
        prompt_ids.extend((self.encode)(&prompt));
        let needle_token_start = bos_len + (self.encode)(&prompt[..needle_char_offset]).len();

        Ok(NiahSample {
            protocol: Protocol::Paper,
            task: Task::Needle,
            prompt,
            prompt_ids,
            needle_text,
            needle_char_offset,
            needle_token_start,
            needle_token_len: needle_ids.len(),
            haystack_tokens: n,
            answer: needle.answer.clone(),
            score_reference: needle.needle.clone(),
            values: Vec::new(),
            scoring: Scoring::Rouge1RecallStemmed,
            length,
            depth,
            seed: None,
            max_new_tokens: PAPER_MAX_NEW_TOKENS,
        })
    }

    /// A token-level prompt with any wrapper, built like the peer protocol:
    /// `[BOS] + enc(prefix) + hay[..p] + enc(needle_text) + hay[p..n] + enc(suffix)`, exactly
    /// `length` tokens, scored with [`metrics::peer_needle_recall`] of `answer`. For example the SRH
    /// calibration prompts of `shared/reference/gemma-3-270m/srh_reference.json` are
    /// `custom_needle("", &format!(" {}", n.needle), &format!("\nBased on the content of the book, Question: {}\nAnswer:", n.question), &n.answer, length, depth)`
    /// (the profiler's, [`NiahBuilder::calibration_needle`], differ from them at depth 100).
    ///
    /// [`metrics::peer_needle_recall`]: crate::eval::metrics::peer_needle_recall
    pub fn custom_needle(
        &self,
        prefix: &str,
        needle_text: &str,
        suffix: &str,
        answer: &str,
        length: usize,
        depth: f64,
    ) -> Result<NiahSample, NiahError> {
        let mut s = self.token_level(
            Pieces {
                prefix,
                needle: needle_text,
                suffix,
            },
            length,
            depth,
            Rules::PROTOCOL,
        )?;
        s.protocol = Protocol::Custom;
        s.answer = answer.to_string();
        s.score_reference = answer.to_string();
        s.max_new_tokens = PAPER_MAX_NEW_TOKENS;
        Ok(s)
    }

    /// The profiler's SRH calibration prompt: `[BOS] + hay[..p] + enc(" " + needle) + hay[p..n] +
    /// enc(question)` with the question of [`CALIBRATION_QUESTION_TEMPLATE`], exactly `length`
    /// tokens, scored with [`metrics::rouge1_recall`] of `needle.answer`. The profiler's rules,
    /// kept so that its prompts do not change: `p = n · depth / 100` rounded half away from
    /// zero, moved back until the token before it ends with `.` once trailing whitespace is
    /// trimmed, at depth 100 too; the haystack is not repeated ([`NiahError::HaystackTooShort`])
    /// and gives at least [`CALIBRATION_MIN_HAYSTACK_TOKENS`] tokens. These are the prompts of
    /// `srh_reference.json` except at depth 100, where the reference does not move the needle.
    /// The answer's tokens: [`NiahBuilder::answer_span`].
    ///
    /// [`metrics::rouge1_recall`]: crate::eval::metrics::rouge1_recall
    pub fn calibration_needle(
        &self,
        needle: &Needle,
        length: usize,
        depth: f64,
    ) -> Result<NiahSample, NiahError> {
        let needle_text = format!(" {}", needle.needle);
        let suffix = CALIBRATION_QUESTION_TEMPLATE.replace("{question}", &needle.question);
        let mut s = self.token_level(
            Pieces {
                prefix: "",
                needle: &needle_text,
                suffix: &suffix,
            },
            length,
            depth,
            Rules::CALIBRATION,
        )?;
        s.protocol = Protocol::Calibration;
        s.answer = needle.answer.clone();
        s.score_reference = needle.answer.clone();
        s.scoring = Scoring::Rouge1Recall;
        s.max_new_tokens = CALIBRATION_MAX_NEW_TOKENS;
        Ok(s)
    }

    /// The positions in `s.prompt_ids` of the needle tokens whose decoded text overlaps the
    /// answer (found case-insensitively in the needle text): the evidence the SRH scores measure
    /// attention on. Empty (at the needle) when no token overlaps; exact for the token-level
    /// protocols, whose needle tokens are in the prompt as encoded alone.
    pub fn answer_span(&self, s: &NiahSample) -> Result<Range<usize>, NiahError> {
        let a0 = s
            .needle_text
            .to_lowercase()
            .find(&s.answer.to_lowercase())
            .ok_or(NiahError::AnswerNotInNeedle)?;
        let a1 = a0 + s.answer.len();
        let needle_ids = s.needle_ids();
        let (mut first, mut last) = (None, 0);
        let mut prev_len = 0;
        for i in 0..needle_ids.len() {
            // Character range of token i: the growth of the decoded prefix.
            let len = (self.decode)(&needle_ids[..=i]).len();
            if len > a0 && prev_len < a1 {
                first.get_or_insert(i);
                last = i + 1;
            }
            prev_len = len;
        }
        let offset = s.needle_token_start;
        Ok(offset + first.unwrap_or(0)..offset + last)
    }

    /// Peer samples for every (length, depth); passkeys use [`sample_seed`]`(base_seed, length, depth)`.
    pub fn peer_grid(
        &self,
        task: Task,
        needle: &Needle,
        lengths: &[usize],
        depths: &[f64],
        base_seed: u64,
    ) -> Result<Vec<NiahSample>, NiahError> {
        let mut out = Vec::with_capacity(lengths.len() * depths.len());
        for &length in lengths {
            for &depth in depths {
                out.push(match task {
                    Task::Needle => self.peer_needle(needle, length, depth)?,
                    Task::Passkey => {
                        self.peer_passkey(length, depth, sample_seed(base_seed, length, depth))?
                    }
                    Task::Ruler(t) => return Err(NiahError::NoPeerPrompt(t.name())),
                });
            }
        }
        Ok(out)
    }

    /// `[BOS] + enc(prefix) + hay[..p] + enc(needle) + hay[p..n] + enc(suffix)`, exactly `length`.
    fn token_level(
        &self,
        pieces: Pieces<'_>,
        length: usize,
        depth: f64,
        rules: Rules,
    ) -> Result<NiahSample, NiahError> {
        check_depth(depth)?;
        let prefix_ids = (self.encode)(pieces.prefix);
        let needle_ids = (self.encode)(pieces.needle);
        let suffix_ids = (self.encode)(pieces.suffix);
        let bos_len = usize::from(self.bos.is_some());
        let fixed = bos_len + prefix_ids.len() + needle_ids.len() + suffix_ids.len();
        if length < fixed + rules.min_haystack {
            return Err(NiahError::TooShort {
                length,
                fixed: fixed + rules.min_haystack - 1,
            });
        }
        let n = length - fixed;
        let hay = if rules.once {
            let whole = self
                .whole
                .get_or_init(|| (self.encode)(self.haystack.text()));
            if whole.len() < n {
                return Err(NiahError::HaystackTooShort {
                    length,
                    need: n,
                    have: whole.len(),
                });
            }
            whole[..n].to_vec()
        } else {
            self.haystack.tokens(n, &*self.encode)?
        };
        let p = self.insertion_point(&hay, depth, rules);

        let mut prompt_ids = Vec::with_capacity(length);
        prompt_ids.extend(self.bos);
        prompt_ids.extend_from_slice(&prefix_ids);
        prompt_ids.extend_from_slice(&hay[..p]);
        let needle_token_start = prompt_ids.len();
        prompt_ids.extend_from_slice(&needle_ids);
        prompt_ids.extend_from_slice(&hay[p..]);
        prompt_ids.extend_from_slice(&suffix_ids);
        debug_assert_eq!(prompt_ids.len(), length);

        let (head, tail) = self.decode_split(&hay, p);
        let prompt = format!(
            "{}{head}{}{tail}{}",
            pieces.prefix, pieces.needle, pieces.suffix
        );
        Ok(NiahSample {
            protocol: Protocol::Peer,
            task: Task::Needle,
            needle_char_offset: pieces.prefix.len() + head.len(),
            prompt,
            prompt_ids,
            needle_text: pieces.needle.to_string(),
            needle_token_start,
            needle_token_len: needle_ids.len(),
            haystack_tokens: n,
            answer: String::new(),
            score_reference: String::new(),
            values: Vec::new(),
            scoring: Scoring::PeerRecall,
            length,
            depth,
            seed: None,
            max_new_tokens: 0,
        })
    }

    /// `round`/`int` of `n · depth / 100`, moved back to just after a token whose text ends with
    /// `.` (or to 0). Depth 100 is `n`, unmoved (unless [`Rules::back_off_at_end`]).
    fn insertion_point(&self, hay: &[u32], depth: f64, rules: Rules) -> usize {
        let n = hay.len();
        if depth >= 100.0 && !rules.back_off_at_end {
            return n;
        }
        let raw = n as f64 * depth / 100.0;
        let mut p = match rules.rounding {
            Rounding::Nearest => raw.round_ties_even(),
            Rounding::NearestAway => raw.round(),
            Rounding::Floor => raw.floor(),
        } as usize;
        p = p.min(n);
        let ends_sentence = |t: &[u32]| {
            let text = (self.decode)(t);
            if rules.trim_sentence_end {
                text.trim_end().ends_with('.')
            } else {
                text.ends_with('.')
            }
        };
        while p > 0 && !ends_sentence(&hay[p - 1..p]) {
            p -= 1;
        }
        p
    }

    /// `(decode(hay[..p]), decode(hay[p..]))`, the second taken from `decode(hay)` when the first is
    /// its prefix, so that a decoder that treats a sequence's first token specially (leading-space
    /// stripping) does not change the text at the seam.
    fn decode_split(&self, hay: &[u32], p: usize) -> (String, String) {
        let head = (self.decode)(&hay[..p]);
        let full = (self.decode)(hay);
        match full.strip_prefix(head.as_str()) {
            Some(tail) => {
                let tail = tail.to_string();
                (head, tail)
            }
            None => {
                let tail = (self.decode)(&hay[p..]);
                (head, tail)
            }
        }
    }
}

fn passkey_fields(mut s: NiahSample, key: String, seed: u64) -> NiahSample {
    s.task = Task::Passkey;
    s.answer = key.clone();
    s.score_reference = key;
    s.scoring = Scoring::PasskeyExact;
    s.seed = Some(seed);
    s
}

pub(super) fn check_depth(depth: f64) -> Result<(), NiahError> {
    if (0.0..=100.0).contains(&depth) {
        Ok(())
    } else {
        Err(NiahError::BadDepth(depth))
    }
}
