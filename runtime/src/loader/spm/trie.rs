//! The lookup structures behind encoding: an FxHash map for piece -> id (hit once per candidate
//! bigram) and a byte trie for the special-token partition's longest matches.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Small, fast non-cryptographic hasher (FxHash) for the piece -> id map, which is hit
/// once per candidate bigram during encoding.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher {
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

pub(super) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Byte trie over the special pieces, used to find which of them occur in a text at all.
#[derive(Default)]
pub(super) struct TrieNode {
    /// (byte, child index), small and unsorted.
    pub(super) children: Vec<(u8, u32)>,
    /// Rank (index into `SpmTokenizer::special_order`) of the piece ending here.
    pub(super) rank: Option<u32>,
}

pub(super) struct Trie {
    pub(super) nodes: Vec<TrieNode>,
}

impl Trie {
    pub(super) fn new() -> Self {
        Self {
            nodes: vec![TrieNode::default()],
        }
    }

    pub(super) fn insert(&mut self, key: &[u8], rank: u32) {
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
    pub(super) fn child(&self, node: usize, b: u8) -> Option<usize> {
        self.nodes[node]
            .children
            .iter()
            .find(|(k, _)| *k == b)
            .map(|&(_, c)| c as usize)
    }
}
