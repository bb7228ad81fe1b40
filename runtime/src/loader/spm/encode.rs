//! Encoding: the special-token partition, whitespace escaping and the score-ordered bigram
//! merge with byte fallback (steps 1-4 of the module docs of [`super`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{SPACE_MARK, SpmTokenizer, attr};

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

impl SpmTokenizer {
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
}

#[derive(Default)]
struct EncodeScratch {
    text: String,
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Bigram>,
}
