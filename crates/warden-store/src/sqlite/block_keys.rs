//! Which users, targets and requests a block of audit events names, as a Bloom filter.
//!
//! Indexing the audit log by user or request would cost every grant's commit another B-tree
//! page; instead, once a block of 1024 events is complete (the checkpoint that completes it
//! stores its Merkle root), the block's names go into a 4 KiB filter stored beside the root.
//! A search by user, target or request then reads only the events of the blocks whose filter
//! may hold the name, and of the newest events no block holds yet. A filter never misses a
//! name it was given; about one block in a hundred answers "maybe" for a name it lacks, and is
//! read for nothing.
//!
//! The filter's layout is stored: its size, hash count and hashing (SHA-256 of a kind tag and
//! the name) must not change without a migration that drops the stored filters.

use sha2::{Digest, Sha256};

/// Bits in a filter: 4 KiB. A block names at most 3072 distinct keys (three per event); at
/// that worst case one name in 160 is a false "maybe", at a more usual few hundred, one in
/// millions.
const BITS: u64 = 32 * 1024;
/// Bit positions set per key.
const HASHES: u64 = 7;
const WORDS: usize = (BITS / 64) as usize;

/// A name an audit event can be searched by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key<'a> {
    User(&'a str),
    Target(&'a str),
    Request(&'a str),
}

impl Key<'_> {
    /// The key's bit positions: double hashing over two 64-bit halves of its SHA-256.
    fn positions(self) -> impl Iterator<Item = u64> {
        let (tag, name) = match self {
            Key::User(n) => (b'u', n),
            Key::Target(n) => (b't', n),
            Key::Request(n) => (b'r', n),
        };
        let mut hasher = Sha256::new();
        hasher.update([tag]);
        hasher.update(name.as_bytes());
        let digest = hasher.finalize();
        let half = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&digest[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let (h1, h2) = (half(0), half(8) | 1);
        (0..HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % BITS)
    }
}

/// The Bloom filter of one block's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockKeys {
    words: Vec<u64>,
}

impl BlockKeys {
    pub(crate) fn new() -> Self {
        Self {
            words: vec![0; WORDS],
        }
    }

    pub(crate) fn insert(&mut self, key: Key<'_>) {
        for bit in key.positions() {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// False when the block surely does not name `key`; true when it does, or rarely by chance.
    pub(crate) fn may_contain(&self, key: Key<'_>) -> bool {
        key.positions()
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// The filter stored as `bytes`, if they are one.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != WORDS * 8 {
            return None;
        }
        let words = bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        Some(Self { words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_misses_and_rarely_answers_maybe_for_a_stranger() {
        let mut keys = BlockKeys::new();
        for i in 0..1000 {
            keys.insert(Key::Request(&format!("request-{i}")));
        }
        keys.insert(Key::User("alice"));
        keys.insert(Key::Target("web"));
        let keys = BlockKeys::from_bytes(&keys.to_bytes()).unwrap();
        assert!((0..1000).all(|i| keys.may_contain(Key::Request(&format!("request-{i}")))));
        assert!(keys.may_contain(Key::User("alice")));
        assert!(keys.may_contain(Key::Target("web")));
        // The kind is part of the key: a user named like a target is another key.
        assert!(!keys.may_contain(Key::User("web")));
        let strangers = (0..10_000)
            .filter(|i| keys.may_contain(Key::Request(&format!("stranger-{i}"))))
            .count();
        assert!(strangers < 10, "{strangers} false maybes in 10,000");
        assert_eq!(BlockKeys::from_bytes(&[0; 12]), None);
    }
}
