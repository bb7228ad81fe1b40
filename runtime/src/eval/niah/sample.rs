//! [`NiahSample`]: one built prompt with everything needed to run it and score the answer, plus
//! the per-sample seeds (passkeys, grid positions) that make a run reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::RulerTask;
use crate::eval::metrics;

/// Which prompt protocol built a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `shared/notes/peer-baseline.md`.
    Peer,
    /// CompressKV's `needle/run_needle_in_haystack.py`.
    Paper,
    /// The classic passkey prompt.
    Landmark,
    /// [`NiahBuilder::custom_needle`](super::NiahBuilder::custom_needle).
    Custom,
    /// [`NiahBuilder::calibration_needle`](super::NiahBuilder::calibration_needle).
    Calibration,
    /// RULER's NIAH prompts ([`NiahBuilder::ruler`](super::NiahBuilder::ruler)).
    Ruler,
}

/// What is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A sentence, retrieved by a question.
    Needle,
    /// A 5-digit number.
    Passkey,
    /// One of RULER's NIAH tasks: keys and their values.
    Ruler(RulerTask),
}

/// How an answer is scored (all in percent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// [`metrics::peer_needle_recall`] against `score_reference`.
    PeerRecall,
    /// [`metrics::rouge1_recall`] of `score_reference` in the whole answer (the profiler counts
    /// a calibration sample above 50).
    Rouge1Recall,
    /// [`metrics::rouge1_recall_stemmed`] of `score_reference` in the stripped answer.
    Rouge1RecallStemmed,
    /// [`metrics::passkey_exact`] against `answer`.
    PasskeyExact,
    /// [`metrics::ruler_string_match_all`] against `values`.
    RulerStringMatchAll,
}

/// One prompt with everything needed to run and score it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NiahSample {
    /// The protocol that built it.
    pub protocol: Protocol,
    /// Needle or passkey.
    pub task: Task,
    /// The prompt text (without BOS).
    pub prompt: String,
    /// The prompt tokens, BOS first when set. Peer/Landmark: exactly `length` tokens.
    pub prompt_ids: Vec<u32>,
    /// The needle exactly as inserted (with its leading space / newlines).
    pub needle_text: String,
    /// Byte offset of `needle_text` in `prompt`.
    pub needle_char_offset: usize,
    /// Index in `prompt_ids` of the needle's first token.
    pub needle_token_start: usize,
    /// Number of needle tokens in `prompt_ids` (Peer/Landmark exact; Paper as re-encoded alone).
    pub needle_token_len: usize,
    /// Haystack tokens in the prompt (Paper: haystack tokens around the needle before decoding).
    pub haystack_tokens: usize,
    /// The expected answer: the needle's answer, or the passkey digits.
    pub answer: String,
    /// What the scorer compares with: the needle's answer (Peer), the needle sentence (Paper), the
    /// key (passkey), the expected values joined with `", "` (RULER).
    pub score_reference: String,
    /// RULER: every value the answer must contain (empty for the other protocols).
    #[serde(default)]
    pub values: Vec<String>,
    /// How [`NiahSample::score`] scores.
    pub scoring: Scoring,
    /// The requested length in tokens.
    pub length: usize,
    /// The requested depth in percent.
    pub depth: f64,
    /// The passkey seed, if any.
    pub seed: Option<u64>,
    /// How many tokens to generate.
    pub max_new_tokens: usize,
}

impl NiahSample {
    /// Score a generated answer (the decoded new tokens), in percent.
    pub fn score(&self, generated: &str) -> f64 {
        match self.scoring {
            Scoring::PeerRecall => metrics::peer_needle_recall(generated, &self.score_reference),
            Scoring::Rouge1Recall => metrics::rouge1_recall(generated, &self.score_reference),
            Scoring::Rouge1RecallStemmed => {
                metrics::rouge1_recall_stemmed(generated.trim(), &self.score_reference)
            }
            Scoring::PasskeyExact => metrics::passkey_exact(generated, &self.answer),
            Scoring::RulerStringMatchAll => {
                metrics::ruler_string_match_all(generated, &self.values)
            }
        }
    }

    /// The tokens of the needle in `prompt_ids`.
    pub fn needle_ids(&self) -> &[u32] {
        let end = (self.needle_token_start + self.needle_token_len).min(self.prompt_ids.len());
        &self.prompt_ids[self.needle_token_start.min(end)..end]
    }
}

/// The 5-digit passkey of a seed: `StdRng::seed_from_u64(seed).random_range(10000..=99999)`.
/// (StdRng is stable within a `rand` version, not across versions.)
pub fn passkey_for_seed(seed: u64) -> u32 {
    StdRng::seed_from_u64(seed).random_range(10000..=99999u32)
}

/// A per-sample seed derived from a base seed and the sample's grid position (SplitMix64).
pub fn sample_seed(base: u64, length: usize, depth: f64) -> u64 {
    let mut z = base
        ^ (length as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ depth.to_bits().rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
