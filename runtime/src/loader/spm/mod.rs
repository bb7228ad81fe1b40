//! SentencePiece-BPE ("SPM") tokenizer over a GGUF `tokenizer.ggml.model = "llama"`
//! vocabulary (pieces + scores + token types, no merge list).
//!
//! The behaviour follows llama.cpp's `llm_tokenizer_spm` (as used through
//! `llama_tokenize(..., parse_special = false)`), which is the reference the
//! project's tokenizer cases were checked against:
//!
//! 1. **Special-token partition** (`tokenizer_st_partition`). Before any BPE, the raw
//!    text is split around occurrences of "special" pieces. Candidates are the tokens
//!    whose type is control (3), user-defined (4) or unknown (2), tried longest text
//!    first; each one splits every still-raw fragment at its leftmost non-overlapping
//!    occurrences. With `parse_special = false` (the default [`SpmTokenizer::encode`])
//!    control and unknown tokens are skipped, but **user-defined tokens are still
//!    matched literally in the raw text**. Gemma 3 stores its whitespace runs
//!    (`"\n"` … 31 newlines, 2‥31 spaces, 1‥31 tabs) and some HTML tags as
//!    user-defined tokens spelled with the real characters, which is how
//!    `"a  b"` becomes `a`, `"  "`, `b`.
//! 2. Each remaining raw fragment gets an optional leading space (`add_space_prefix`,
//!    only for the first fragment or one that follows a special token), then every
//!    `' '` is replaced by U+2581 `▁` (`llama_escape_whitespace`).
//! 3. **Bigram merging** (`llm_tokenizer_spm_session::tokenize`): the fragment is split
//!    into UTF-8 characters; every adjacent pair whose concatenation is a vocabulary
//!    piece goes into a max-heap keyed by that piece's score (ties: leftmost first);
//!    the best pair is merged and its new neighbours are pushed, until the heap is
//!    empty. Stale heap entries are detected by the size check, as in llama.cpp.
//! 4. **Resegment / byte fallback**: each final symbol that is a vocabulary piece is
//!    emitted as that id; otherwise (only possible for a single character that is not
//!    a piece) each of its UTF-8 bytes is emitted as the `<0xNN>` byte token (falling
//!    back to the piece spelled as that single byte, then to `unk_id`).
//!
//! Token attributes are derived the way llama.cpp derives them from the GGUF types,
//! including its name-based fix-ups: pieces spelled like end-of-turn / end-of-generation
//! / FIM markers (e.g. `<end_of_turn>`, `</s>`, `<|im_end|>`) gain the control attribute
//! even if the GGUF typed them otherwise. For Gemma 3 this matters for `</s>` (id 212,
//! typed user-defined): llama.cpp treats it as control, so with `parse_special = false`
//! a literal `</s>` in the text is tokenized as plain text, not as id 212.
//!
//! Decoding mirrors `llama_token_to_piece`: normal pieces have `▁` turned back into a
//! space, byte tokens contribute their raw byte (bytes are reassembled into UTF-8,
//! lossily), user-defined pieces are emitted verbatim, and control / unknown / unused
//! pieces are emitted verbatim only when `skip_special` is false.
//!
//! This module only takes plain vectors; reading them out of a GGUF file is the
//! caller's job.
//!
//! Files: this one builds the tokenizer and decodes; `encode` encodes, `trie` holds the lookup
//! structures, `special_names` the name tables, `tests` the unit tests.

mod encode;
mod special_names;
#[cfg(test)]
mod tests;
mod trie;

use special_names::{EOG_BY_NAME, EOT_BY_NAME, FIM_BY_NAME};
use trie::{FxMap, Trie};

/// GGUF `tokenizer.ggml.token_type` values.
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Per-token attribute bits (same meaning as llama.cpp's `llama_token_attr`).
mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
}

/// The SentencePiece whitespace marker U+2581.
const SPACE_MARK: &str = "\u{2581}";

#[derive(Debug, thiserror::Error)]
pub enum SpmError {
    #[error("SPM vocabulary is empty")]
    EmptyVocab,
    #[error("SPM vocabulary too large: {0} tokens (ids must fit in u32)")]
    VocabTooLarge(usize),
    #[error(
        "SPM vocabulary has {tokens} tokens but {scores} scores (expected equal, or 0 for no scores)"
    )]
    ScoresLen { tokens: usize, scores: usize },
    #[error(
        "SPM vocabulary has {tokens} tokens but {types} token types (expected equal, or 0 for no types)"
    )]
    TypesLen { tokens: usize, types: usize },
    #[error("duplicate piece {piece:?} in SPM vocabulary: ids {first} and {second}")]
    DuplicatePiece {
        piece: String,
        first: u32,
        second: u32,
    },
    #[error("{what} token id {id} is out of range for a vocabulary of {vocab_size} tokens")]
    SpecialIdOutOfRange {
        what: &'static str,
        id: u32,
        vocab_size: usize,
    },
    #[error("byte token {id} has malformed piece {piece:?} (expected \"<0xNN>\")")]
    BadByteToken { id: u32, piece: String },
}

/// Settings read from the GGUF metadata (`tokenizer.ggml.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpmConfig {
    /// `tokenizer.ggml.bos_token_id`
    pub bos_id: u32,
    /// `tokenizer.ggml.eos_token_id`
    pub eos_id: u32,
    /// `tokenizer.ggml.unknown_token_id`
    pub unk_id: u32,
    /// `tokenizer.ggml.add_bos_token`
    pub add_bos: bool,
    /// `tokenizer.ggml.add_space_prefix`
    pub add_space_prefix: bool,
}

impl Default for SpmConfig {
    /// llama.cpp's defaults for an SPM vocabulary whose GGUF lacks these keys.
    fn default() -> Self {
        Self {
            bos_id: 1,
            eos_id: 2,
            unk_id: 0,
            add_bos: true,
            add_space_prefix: true,
        }
    }
}

/// A SentencePiece-BPE tokenizer reproducing llama.cpp's SPM tokenization.
pub struct SpmTokenizer {
    pieces: Vec<String>,
    /// Bigram scores; -0.0 normalised to 0.0 and NaN to -inf so `total_cmp` matches C++ `<`.
    scores: Vec<f32>,
    /// GGUF token types as given (missing -> normal).
    types: Vec<i32>,
    /// llama.cpp-style attribute bits (types plus name-based fix-ups).
    attrs: Vec<u32>,
    piece_to_id: FxMap<String, u32>,
    /// `<0xNN>` byte token per byte value (or the single-byte piece as fallback).
    byte_ids: [Option<u32>; 256],
    /// Ids of control / user-defined / unknown pieces, longest text first (ties: lower id).
    special_order: Vec<u32>,
    special_trie: Trie,
    cfg: SpmConfig,
    eot_id: Option<u32>,
    eog_ids: Vec<u32>,
}

impl std::fmt::Debug for SpmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpmTokenizer")
            .field("vocab_size", &self.pieces.len())
            .field("special_pieces", &self.special_order.len())
            .field("cfg", &self.cfg)
            .field("eot_id", &self.eot_id)
            .field("eog_ids", &self.eog_ids)
            .finish()
    }
}

fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Rejects an empty or oversized vocabulary, score/type lists of the wrong length and special
/// ids outside the vocabulary.
fn check_inputs(
    tokens: &[String],
    scores: &[f32],
    token_types: &[i32],
    cfg: &SpmConfig,
) -> Result<(), SpmError> {
    let n = tokens.len();
    if n == 0 {
        return Err(SpmError::EmptyVocab);
    }
    if n > i32::MAX as usize {
        return Err(SpmError::VocabTooLarge(n));
    }
    if !scores.is_empty() && scores.len() != n {
        return Err(SpmError::ScoresLen {
            tokens: n,
            scores: scores.len(),
        });
    }
    if !token_types.is_empty() && token_types.len() != n {
        return Err(SpmError::TypesLen {
            tokens: n,
            types: token_types.len(),
        });
    }
    for (what, id) in [
        ("BOS", cfg.bos_id),
        ("EOS", cfg.eos_id),
        ("UNK", cfg.unk_id),
    ] {
        if id as usize >= n {
            return Err(SpmError::SpecialIdOutOfRange {
                what,
                id,
                vocab_size: n,
            });
        }
    }
    Ok(())
}

/// Piece → id; a piece spelled twice is an error (encoding would be ambiguous).
fn index_pieces(pieces: &[String]) -> Result<FxMap<String, u32>, SpmError> {
    let mut piece_to_id: FxMap<String, u32> = FxMap::default();
    piece_to_id.reserve(pieces.len());
    for (i, p) in pieces.iter().enumerate() {
        if let Some(first) = piece_to_id.insert(p.clone(), i as u32) {
            return Err(SpmError::DuplicatePiece {
                piece: p.clone(),
                first,
                second: i as u32,
            });
        }
    }
    Ok(piece_to_id)
}

/// Token attributes from the GGUF token types, with llama.cpp's name-based fix-ups.
fn attributes(types: &[i32], pieces: &[String], piece_to_id: &FxMap<String, u32>) -> Vec<u32> {
    let mut attrs: Vec<u32> = types
        .iter()
        .map(|&t| match t {
            token_type::NORMAL => attr::NORMAL,
            token_type::UNKNOWN => attr::UNKNOWN,
            token_type::CONTROL => attr::CONTROL,
            token_type::USER_DEFINED => attr::USER_DEFINED,
            token_type::UNUSED => attr::UNUSED,
            token_type::BYTE => attr::BYTE,
            _ => attr::UNDEFINED,
        })
        .collect();
    for name in EOG_BY_NAME.iter().chain(FIM_BY_NAME) {
        if let Some(&id) = piece_to_id.get(*name) {
            attrs[id as usize] |= attr::CONTROL;
        }
    }
    for (i, p) in pieces.iter().enumerate() {
        if attrs[i] & attr::CONTROL != 0 && p.contains("unused") {
            attrs[i] |= attr::UNUSED;
        }
    }
    attrs
}

/// The end-of-turn id (the lowest one named like one) and every end-of-generation id (EOS,
/// EOT and the pieces named like them), sorted.
fn end_of_generation(piece_to_id: &FxMap<String, u32>, eos_id: u32) -> (Option<u32>, Vec<u32>) {
    let eot_id = EOT_BY_NAME
        .iter()
        .filter_map(|name| piece_to_id.get(*name).copied())
        .min();
    let mut eog_ids: Vec<u32> = EOG_BY_NAME
        .iter()
        .filter_map(|name| piece_to_id.get(*name).copied())
        .collect();
    eog_ids.push(eos_id);
    eog_ids.extend(eot_id);
    eog_ids.sort_unstable();
    eog_ids.dedup();
    (eot_id, eog_ids)
}

/// The token of each byte value, for byte fallback.
fn byte_tokens(
    pieces: &[String],
    types: &[i32],
    piece_to_id: &FxMap<String, u32>,
) -> Result<[Option<u32>; 256], SpmError> {
    let mut byte_ids = [None; 256];
    for (i, p) in pieces.iter().enumerate() {
        if types[i] == token_type::BYTE {
            let b = parse_byte_piece(p).ok_or_else(|| SpmError::BadByteToken {
                id: i as u32,
                piece: p.clone(),
            })?;
            byte_ids[b as usize].get_or_insert(i as u32);
        }
    }
    // llama.cpp's byte_to_token looks the byte up by its "<0xNN>" spelling, whatever
    // its type, then falls back to the piece made of that single byte.
    for (b, slot) in byte_ids.iter_mut().enumerate() {
        let spelled = format!("<0x{b:02X}>");
        if let Some(&id) = piece_to_id.get(spelled.as_str()) {
            *slot = Some(id);
        } else if slot.is_none() && b < 0x80 {
            let single = (b as u8 as char).to_string();
            *slot = piece_to_id.get(single.as_str()).copied();
        }
    }
    Ok(byte_ids)
}

/// Special pieces (control, user-defined, unknown), longest first, and a trie of them
/// keyed by that rank: the text is split on them before encoding.
fn special_tokens(pieces: &[String], attrs: &[u32]) -> (Vec<u32>, Trie) {
    let mut special_order: Vec<u32> = (0..pieces.len() as u32)
        .filter(|&i| attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
        .collect();
    special_order.sort_by(|&a, &b| {
        pieces[b as usize]
            .len()
            .cmp(&pieces[a as usize].len())
            .then(a.cmp(&b))
    });
    let mut special_trie = Trie::new();
    for (rank, &id) in special_order.iter().enumerate() {
        special_trie.insert(pieces[id as usize].as_bytes(), rank as u32);
    }
    (special_order, special_trie)
}

impl SpmTokenizer {
    /// Builds the tokenizer. `scores` / `token_types` may be empty (all 0.0 / all normal),
    /// otherwise they must have one entry per token.
    pub fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        token_types: Vec<i32>,
        cfg: SpmConfig,
    ) -> Result<Self, SpmError> {
        check_inputs(&tokens, &scores, &token_types, &cfg)?;
        let n = tokens.len();
        let types: Vec<i32> = if token_types.is_empty() {
            vec![token_type::NORMAL; n]
        } else {
            token_types
        };
        let scores: Vec<f32> = if scores.is_empty() {
            vec![0.0; n]
        } else {
            scores
                .into_iter()
                .map(|s| {
                    if s.is_nan() {
                        f32::NEG_INFINITY
                    } else {
                        s + 0.0
                    }
                })
                .collect()
        };

        let mut pieces = tokens;
        for (i, p) in pieces.iter_mut().enumerate() {
            if p.is_empty() {
                // llama.cpp renames empty pieces so that they can never match text.
                *p = format!("[EMPTY_{i}]");
            }
        }
        let piece_to_id = index_pieces(&pieces)?;
        let attrs = attributes(&types, &pieces, &piece_to_id);
        let (eot_id, eog_ids) = end_of_generation(&piece_to_id, cfg.eos_id);
        let byte_ids = byte_tokens(&pieces, &types, &piece_to_id)?;
        let (special_order, special_trie) = special_tokens(&pieces, &attrs);
        Ok(Self {
            pieces,
            scores,
            types,
            attrs,
            piece_to_id,
            byte_ids,
            special_order,
            special_trie,
            cfg,
            eot_id,
            eog_ids,
        })
    }

    /// Detokenizes like llama.cpp's `llama_detokenize(..., remove_special=false,
    /// unparse_special = !skip_special)`: `▁` becomes a space, `<0xNN>` byte tokens are
    /// reassembled into UTF-8 (invalid sequences become U+FFFD), user-defined pieces are
    /// emitted verbatim, and control / unknown / unused pieces are dropped when
    /// `skip_special` (emitted verbatim otherwise). Out-of-range ids are ignored.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        match String::from_utf8(self.decode_bytes(ids, skip_special)) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Like [`decode`](Self::decode) but returns the raw bytes (useful for streaming,
    /// where a multi-byte character may be split across byte tokens).
    pub fn decode_bytes(&self, ids: &[u32], skip_special: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            let start = out.len();
            self.append_piece_bytes(id, skip_special, &mut out);
            // llama.cpp strips one leading space from the first piece when the
            // vocabulary adds a space prefix on encode.
            if i == 0 && self.cfg.add_space_prefix && out.get(start) == Some(&b' ') {
                out.remove(start);
            }
        }
        out
    }

    /// Appends the bytes one token contributes to decoded text.
    pub fn append_piece_bytes(&self, id: u32, skip_special: bool, out: &mut Vec<u8>) {
        let Some(piece) = self.pieces.get(id as usize) else {
            return;
        };
        let a = self.attrs[id as usize];
        if a & (attr::CONTROL | attr::UNKNOWN) != 0
            || a & (attr::NORMAL | attr::USER_DEFINED | attr::BYTE) == 0
        {
            // control / unknown, and unused / undefined (which llama.cpp never renders)
            if !skip_special {
                out.extend_from_slice(piece.as_bytes());
            }
        } else if a & attr::USER_DEFINED != 0 {
            out.extend_from_slice(piece.as_bytes());
        } else if a & attr::NORMAL != 0 {
            for (i, part) in piece.split(SPACE_MARK).enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(part.as_bytes());
            }
        } else if let Some(b) = parse_byte_piece(piece) {
            out.push(b);
        }
    }

    /// The piece as stored in the vocabulary (e.g. `"▁world"`, `"<0x0A>"`, `"\n"`).
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// Exact lookup of a stored piece.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.piece_to_id.get(piece).copied()
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn bos_id(&self) -> u32 {
        self.cfg.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.cfg.eos_id
    }

    pub fn unk_id(&self) -> u32 {
        self.cfg.unk_id
    }

    pub fn config(&self) -> &SpmConfig {
        &self.cfg
    }

    /// End-of-turn token found by name the way llama.cpp does (Gemma: `<end_of_turn>`).
    pub fn eot_id(&self) -> Option<u32> {
        self.eot_id
    }

    /// Tokens that end generation per llama.cpp: EOS, EOT and pieces named like
    /// end-of-generation markers (Gemma 3: 1 `<eos>`, 106 `<end_of_turn>`, 212 `</s>`).
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog_ids
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog_ids.binary_search(&id).is_ok()
    }

    /// GGUF token type as given (1 normal, 2 unknown, 3 control, 4 user-defined,
    /// 5 unused, 6 byte).
    pub fn token_type(&self, id: u32) -> Option<i32> {
        self.types.get(id as usize).copied()
    }

    /// Score of a piece (its merge priority).
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// Whether llama.cpp treats the token as control (GGUF type 3, or a piece named like
    /// an end-of-turn / end-of-generation / FIM marker).
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & attr::CONTROL != 0)
    }

    /// Whether the token is rendered only when special tokens are not skipped
    /// (control, unknown, unused or untyped).
    pub fn is_special(&self, id: u32) -> bool {
        self.attrs.get(id as usize).is_some_and(|&a| {
            a & (attr::CONTROL | attr::UNKNOWN) != 0
                || a & (attr::NORMAL | attr::USER_DEFINED | attr::BYTE) == 0
        })
    }
}
