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

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

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

/// Piece texts that llama.cpp force-marks as control (end-of-turn, end-of-generation and
/// fill-in-the-middle markers recognised by name in `llama_vocab::impl::load`).
const CONTROL_BY_NAME: &[&str] = &[
    // EOT / EOG names
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<｜end▁of▁sentence｜>",
    // FIM names
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<|file_sep|>",
];

/// Piece texts that llama.cpp counts as end-of-generation (besides the EOS / EOT ids).
const EOG_BY_NAME: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<｜end▁of▁sentence｜>",
];

/// Piece texts llama.cpp recognises as the end-of-turn token when the GGUF has no
/// `tokenizer.ggml.eot_token_id`.
const EOT_BY_NAME: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

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

/// Small, fast non-cryptographic hasher (FxHash) for the piece -> id map, which is hit
/// once per candidate bigram during encoding.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Byte trie over the special pieces, used to find which of them occur in a text at all.
#[derive(Default)]
struct TrieNode {
    /// (byte, child index), small and unsorted.
    children: Vec<(u8, u32)>,
    /// Rank (index into `SpmTokenizer::special_order`) of the piece ending here.
    rank: Option<u32>,
}

struct Trie {
    nodes: Vec<TrieNode>,
}

impl Trie {
    fn new() -> Self {
        Self {
            nodes: vec![TrieNode::default()],
        }
    }

    fn insert(&mut self, key: &[u8], rank: u32) {
        let mut node = 0usize;
        for &b in key {
            node = match self.child(node, b) {
                Some(c) => c,
                None => {
                    let c = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[node].children.push((b, c as u32));
                    c
                }
            };
        }
        // keep the first rank if two specials shared a text (cannot happen: pieces are unique)
        self.nodes[node].rank.get_or_insert(rank);
    }

    #[inline]
    fn child(&self, node: usize, b: u8) -> Option<usize> {
        self.nodes[node]
            .children
            .iter()
            .find(|(k, _)| *k == b)
            .map(|&(_, c)| c as usize)
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

/// A piece of the input after the special-token partition.
#[derive(Clone, Copy, Debug)]
enum Fragment {
    /// Byte range into the input text, not yet tokenized.
    Raw(usize, usize),
    /// A special (user-defined, or with `parse_special` control/unknown) token.
    Token(u32),
}

#[derive(Clone, Copy)]
struct Symbol {
    prev: i32,
    next: i32,
    start: usize,
    len: usize,
}

struct Bigram {
    score: f32,
    left: i32,
    right: i32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first; on equal score the leftmost pair first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
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

        let mut piece_to_id: FxMap<String, u32> = FxMap::default();
        piece_to_id.reserve(n);
        for (i, p) in pieces.iter().enumerate() {
            if let Some(first) = piece_to_id.insert(p.clone(), i as u32) {
                return Err(SpmError::DuplicatePiece {
                    piece: p.clone(),
                    first,
                    second: i as u32,
                });
            }
        }

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

        // llama.cpp name-based fix-ups.
        for name in CONTROL_BY_NAME {
            if let Some(&id) = piece_to_id.get(*name) {
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        for (i, p) in pieces.iter().enumerate() {
            if attrs[i] & attr::CONTROL != 0 && p.contains("unused") {
                attrs[i] |= attr::UNUSED;
            }
        }
        let eot_id = EOT_BY_NAME
            .iter()
            .filter_map(|name| piece_to_id.get(*name).copied())
            .min();
        let mut eog_ids: Vec<u32> = EOG_BY_NAME
            .iter()
            .filter_map(|name| piece_to_id.get(*name).copied())
            .collect();
        eog_ids.push(cfg.eos_id);
        eog_ids.extend(eot_id);
        eog_ids.sort_unstable();
        eog_ids.dedup();

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

        let mut special_order: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
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

    /// Tokenizes `text` the way `llama_tokenize(text, add_special, parse_special=false)`
    /// does: special-looking text such as `<start_of_turn>` is tokenized as plain text,
    /// but user-defined pieces (Gemma's whitespace runs, HTML tags) are still matched.
    /// `add_special` prepends BOS when the vocabulary's `add_bos` is set.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        self.encode_with_special(text, add_special, false)
    }

    /// Like [`encode`](Self::encode), with llama.cpp's `parse_special`: when true, the
    /// text of control and unknown tokens (e.g. `<start_of_turn>`) is turned into those
    /// token ids instead of being tokenized as plain text.
    pub fn encode_with_special(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.cfg.add_bos {
            out.push(self.cfg.bos_id);
        }
        if text.is_empty() {
            return out;
        }
        let fragments = self.partition(text, parse_special);

        let mut scratch = EncodeScratch::default();
        let mut is_prev_special = true;
        for frag in fragments {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    is_prev_special = true;
                }
                Fragment::Raw(s, e) => {
                    scratch.text.clear();
                    if self.cfg.add_space_prefix && is_prev_special {
                        scratch.text.push_str(SPACE_MARK);
                    }
                    for (i, part) in text[s..e].split(' ').enumerate() {
                        if i > 0 {
                            scratch.text.push_str(SPACE_MARK);
                        }
                        scratch.text.push_str(part);
                    }
                    self.tokenize_escaped(&mut scratch, &mut out);
                    is_prev_special = false;
                }
            }
        }
        out
    }

    /// `tokenizer_st_partition`: splits `text` around special pieces, longest first.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let eligible = |id: u32| {
            parse_special || self.attrs[id as usize] & (attr::CONTROL | attr::UNKNOWN) == 0
        };

        // Which special pieces occur anywhere in the text? Only those can split anything,
        // since every fragment is a substring of the text.
        let bytes = text.as_bytes();
        let mut found: Vec<u32> = Vec::new();
        let root = &self.special_trie.nodes[0];
        for i in 0..bytes.len() {
            if !root.children.iter().any(|(b, _)| *b == bytes[i]) {
                continue;
            }
            let mut node = 0usize;
            for &b in &bytes[i..] {
                match self.special_trie.child(node, b) {
                    Some(c) => node = c,
                    None => break,
                }
                if let Some(rank) = self.special_trie.nodes[node].rank {
                    found.push(rank);
                }
            }
        }
        found.sort_unstable();
        found.dedup();

        let mut frags = vec![Fragment::Raw(0, text.len())];
        let mut next: Vec<Fragment> = Vec::new();
        for rank in found {
            let id = self.special_order[rank as usize];
            if !eligible(id) {
                continue;
            }
            let needle = self.pieces[id as usize].as_str();
            next.clear();
            for &frag in &frags {
                match frag {
                    Fragment::Token(_) => next.push(frag),
                    Fragment::Raw(s, e) => {
                        let mut pos = s;
                        for (m, _) in text[s..e].match_indices(needle) {
                            let m = s + m;
                            if m > pos {
                                next.push(Fragment::Raw(pos, m));
                            }
                            next.push(Fragment::Token(id));
                            pos = m + needle.len();
                        }
                        if pos < e {
                            next.push(Fragment::Raw(pos, e));
                        }
                    }
                }
            }
            std::mem::swap(&mut frags, &mut next);
        }
        frags
    }

    /// `llm_tokenizer_spm_session::tokenize` on an already whitespace-escaped fragment.
    fn tokenize_escaped(&self, scratch: &mut EncodeScratch, out: &mut Vec<u32>) {
        let EncodeScratch {
            text,
            symbols,
            heap,
        } = scratch;
        let text = text.as_str();
        symbols.clear();
        heap.clear();
        if text.is_empty() {
            return;
        }

        let mut iter = text.char_indices().peekable();
        while let Some((start, c)) = iter.next() {
            let idx = symbols.len() as i32;
            let last = iter.peek().is_none();
            symbols.push(Symbol {
                prev: idx - 1,
                next: if last { -1 } else { idx + 1 },
                start,
                len: c.len_utf8(),
            });
        }

        for i in 1..symbols.len() as i32 {
            self.try_add_bigram(text, symbols, heap, i - 1, i);
        }

        while let Some(bigram) = heap.pop() {
            let (l, r) = (bigram.left as usize, bigram.right as usize);
            let (ln, rn) = (symbols[l].len, symbols[r].len);
            // One side already merged elsewhere: stale entry.
            if ln == 0 || rn == 0 || ln + rn != bigram.size {
                continue;
            }
            symbols[l].len = ln + rn;
            symbols[r].len = 0;
            let rnext = symbols[r].next;
            symbols[l].next = rnext;
            if rnext >= 0 {
                symbols[rnext as usize].prev = bigram.left;
            }
            let lprev = symbols[l].prev;
            self.try_add_bigram(text, symbols, heap, lprev, bigram.left);
            self.try_add_bigram(text, symbols, heap, bigram.left, rnext);
        }

        let mut i = 0i32;
        while i != -1 {
            let sym = symbols[i as usize];
            let piece = &text[sym.start..sym.start + sym.len];
            match self.piece_to_id.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    // Every merged symbol is a vocabulary piece, so this is a single
                    // character with no piece of its own: fall back to byte tokens.
                    for &b in piece.as_bytes() {
                        out.push(self.byte_ids[b as usize].unwrap_or(self.cfg.unk_id));
                    }
                }
            }
            i = sym.next;
        }
    }

    #[inline]
    fn try_add_bigram(
        &self,
        text: &str,
        symbols: &[Symbol],
        heap: &mut BinaryHeap<Bigram>,
        left: i32,
        right: i32,
    ) {
        if left < 0 || right < 0 {
            return;
        }
        let l = &symbols[left as usize];
        let r = &symbols[right as usize];
        let size = l.len + r.len;
        let piece = &text[l.start..l.start + size];
        if let Some(&id) = self.piece_to_id.get(piece) {
            heap.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                size,
            });
        }
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

#[derive(Default)]
struct EncodeScratch {
    text: String,
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Bigram>,
}

#[cfg(test)]
mod tests {
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

    fn build(
        v: Vec<(&'static str, f32, i32)>,
        add_bos: bool,
        add_space_prefix: bool,
    ) -> SpmTokenizer {
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
}
