//! Merkle tree hashing over SHA-256 as defined by RFC 6962 and RFC 9162.
//!
//! The audit log commits to its events with a Merkle tree so that a single
//! 32-byte root, signed in a checkpoint, pins the whole history: any later
//! change to an event, or any removal or reordering, changes the root. The
//! same construction lets the log prove that one event is in the tree
//! (inclusion proof) and that a newer tree extends an older one without
//! rewriting it (consistency proof), without handing out the whole log.
//!
//! Leaves and interior nodes are hashed with distinct one-byte prefixes so a
//! leaf can never be passed off as an interior node (second-preimage
//! protection), exactly as RFC 6962 §2.1 prescribes; that keeps the roots
//! interoperable with other transparency-log tooling.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Prefix that marks a leaf, so leaf and node preimages never collide.
const LEAF_PREFIX: u8 = 0x00;
/// Prefix that marks an interior node.
const NODE_PREFIX: u8 = 0x01;

/// Hash of one leaf: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(data);
    hasher.finalize().into()
}

/// Hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    // One contiguous buffer lets SHA-256 run over two whole blocks without
    // the streaming hasher's buffering.
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// The Merkle tree hash (RFC 6962 MTH) of a list of leaf hashes.
///
/// Every input hash is touched once (O(n) hashing, no allocation) and the
/// recursion is only log2(n) deep. For a tree that grows one leaf at a time
/// prefer [`Tree`].
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [only] => *only,
        _ => {
            let (left, right) = leaves.split_at(split_point(leaves.len()));
            node_hash(&root(left), &root(right))
        }
    }
}

/// The largest power of two strictly smaller than `n` (`n >= 2`): where
/// RFC 6962 splits a tree of `n` leaves into its left and right subtrees.
fn split_point(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The frontier handed to [`Tree::from_frontier`] does not fit the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a tree of {size} leaves has {expected} frontier hashes, got {actual}")]
pub struct FrontierError {
    /// The tree size that was given.
    pub size: u64,
    /// How many frontier hashes that size needs (its number of one bits).
    pub expected: usize,
    /// How many were given.
    pub actual: usize,
}

/// An append-only Merkle tree that remembers only its frontier.
///
/// The frontier is the list of roots of the perfect subtrees that make up the
/// tree, largest (left-most) first: one per set bit of the size. That is all
/// that is needed to append a leaf (amortised O(1) hashing) and to compute the
/// root (O(log n)), so the log can keep its tree in memory in under 2 KiB and,
/// after a restart, resume from the persisted frontier without rehashing
/// every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    size: u64,
    frontier: Vec<Hash>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes a tree from a size and frontier previously read from
    /// [`Tree::size`] and [`Tree::frontier`].
    ///
    /// # Errors
    /// [`FrontierError`] if the frontier does not hold exactly one hash per
    /// set bit of `size`.
    pub fn from_frontier(size: u64, frontier: Vec<Hash>) -> Result<Self, FrontierError> {
        let expected = size.count_ones() as usize;
        if frontier.len() != expected {
            return Err(FrontierError {
                size,
                expected,
                actual: frontier.len(),
            });
        }
        Ok(Self { size, frontier })
    }

    /// Appends one leaf, given as its [`leaf_hash`].
    pub fn push(&mut self, leaf: Hash) {
        // Appending is a binary increment: every trailing one bit of the old
        // size is a perfect subtree that now merges with the new leaf.
        let merges = self.size.trailing_ones() as usize;
        let keep = self.frontier.len().saturating_sub(merges);
        let mut acc = leaf;
        for left in self.frontier.drain(keep..).rev() {
            acc = node_hash(&left, &acc);
        }
        self.frontier.push(acc);
        self.size += 1;
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 6962 root of the tree as it stands.
    pub fn root(&self) -> Hash {
        // MTH splits at the largest power of two, which is exactly the
        // frontier's left-most subtree, so the root folds in from the right.
        let mut rest = self.frontier.iter().rev();
        match rest.next() {
            None => EMPTY_ROOT,
            Some(last) => rest.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    /// The frontier hashes, largest subtree first, for persisting the tree.
    pub fn frontier(&self) -> &[Hash] {
        &self.frontier
    }
}

/// Why a proof did not check out, or could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof was asked between an older tree that is larger
    /// than the newer one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizeOrder {
        /// The older tree's size.
        old_size: u64,
        /// The newer tree's size.
        new_size: u64,
    },
    /// The proof has too many or too few hashes for the tree sizes.
    #[error("the proof has the wrong number of hashes for these tree sizes")]
    WrongLength,
    /// The proof does not lead to the expected root(s).
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    /// The tree was built without the nodes this proof needs (see [`Proofs::from_blocks`]).
    #[error("the tree's nodes this proof needs were not loaded")]
    NotLoaded,
}

/// Height of the blocks whose roots the log stores: 2^10 = 1024 leaves each. A proof about one
/// leaf then reads one root per block and the leaves of at most two blocks (the leaf's and the
/// last, partial one) instead of every leaf.
pub const BLOCK_HEIGHT: u32 = 10;

/// The first block (of [`BLOCK_HEIGHT`]) whose every leaf is at or after sequence number
/// `first_seq` (leaf `first_seq - 1`): where a log whose earlier leaves were archived is whole
/// again.
pub fn first_whole_block(first_seq: u64) -> u64 {
    first_seq.saturating_sub(1).div_ceil(1 << BLOCK_HEIGHT)
}

/// The nodes of one tree that proofs need, kept so that any number of proofs against it are
/// cheap.
///
/// Proving one leaf from the bare list of leaves rehashes every subtree beside its path, about
/// n hashes per proof; an export of k events with a proof each would cost k·n. Built once from
/// all the leaves ([`Proofs::new`]: about n hashes, 2n kept), this answers each proof with
/// O(log² n) hashing. Built from the roots of the tree's blocks of 2^h leaves and the leaves of
/// the few blocks a proof passes through ([`Proofs::from_blocks`]), it needs n/2^h + 2·2^h
/// hashes to start with.
#[derive(Debug, Clone)]
pub struct Proofs {
    size: usize,
    /// Height of `levels[0]`'s subtrees: 0 when built from the leaves.
    base: u32,
    /// `levels[k][i]` is the root of the perfect subtree over the `2^(base+k)` leaves from
    /// `i·2^(base+k)`.
    levels: Vec<Vec<Hash>>,
    /// Blocks whose leaves were given (first leaf, their tree), for subtrees below `base`.
    blocks: Vec<(usize, Proofs)>,
}

impl Proofs {
    /// Hashes every perfect subtree of the tree made of `leaves` (leaf hashes, in order).
    pub fn new(leaves: Vec<Hash>) -> Self {
        Self {
            size: leaves.len(),
            base: 0,
            levels: pairwise(leaves),
            blocks: Vec::new(),
        }
    }

    /// The tree of `size` leaves given by `roots`, the roots of its complete blocks of
    /// 2^`height` leaves in order, and `blocks`: the leaves of some blocks, each as its first
    /// leaf's index and its leaf hashes (the last block may be partial). Proofs about the
    /// leaves [`Proofs::blocks_needed`] names need no other.
    ///
    /// # Errors
    /// [`ProofError::NotLoaded`] if there is not one root per complete block, or a block is
    /// not aligned to the block size or has the wrong number of leaves.
    pub fn from_blocks(
        size: u64,
        height: u32,
        roots: Vec<Hash>,
        blocks: Vec<(u64, Vec<Hash>)>,
    ) -> Result<Self, ProofError> {
        let size = usize::try_from(size).map_err(|_| ProofError::NotLoaded)?;
        let block = 1usize << height;
        if roots.len() != size >> height {
            return Err(ProofError::NotLoaded);
        }
        let blocks = blocks
            .into_iter()
            .map(|(first, leaves)| {
                let first = usize::try_from(first).map_err(|_| ProofError::NotLoaded)?;
                let whole = first % block == 0 && first < size;
                if !whole || leaves.len() != block.min(size - first) {
                    return Err(ProofError::NotLoaded);
                }
                Ok((first, Proofs::new(leaves)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            size,
            base: height,
            levels: pairwise(roots),
            blocks,
        })
    }

    /// The first leaves of the blocks of 2^`height` leaves that an inclusion proof of `leaf`
    /// in a tree of `size` leaves passes through: the leaf's own block and the last block, if
    /// that is partial.
    pub fn blocks_needed(leaf: u64, size: u64, height: u32) -> Vec<u64> {
        Self::with_last_partial(vec![leaf >> height << height], size, height)
    }

    /// The first leaves of the blocks of 2^`height` leaves that a consistency proof from
    /// `old_size` to a tree of `size` leaves passes through: the block the old tree ends
    /// inside, and the last block, if partial. An old tree that ends at a block's edge is made
    /// of whole blocks, whose roots stand for their leaves, so its own leaves are not needed.
    pub fn blocks_for_consistency(old_size: u64, size: u64, height: u32) -> Vec<u64> {
        let inside =
            (!old_size.is_multiple_of(1 << height)).then_some(old_size >> height << height);
        Self::with_last_partial(inside.into_iter().collect(), size, height)
    }

    /// `firsts` and the first leaf of the last block of a tree of `size` leaves, if that
    /// block is partial and not among them.
    fn with_last_partial(mut firsts: Vec<u64>, size: u64, height: u32) -> Vec<u64> {
        let last = size >> height << height;
        if last < size && !firsts.contains(&last) {
            firsts.push(last);
        }
        firsts
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// The root of the tree (RFC 6962 MTH).
    ///
    /// # Errors
    /// [`ProofError::NotLoaded`] if it was built without the last, partial block's leaves.
    pub fn root(&self) -> Result<Hash, ProofError> {
        match self.size {
            0 => Ok(EMPTY_ROOT),
            n => self.span(0, n),
        }
    }

    /// MTH of the leaves `start..end` (non-empty). Every subtree RFC 6962 splits a tree into
    /// starts at a multiple of the largest power of two not above its length, so a perfect
    /// one is a kept node and any other is a kept left half and a shorter right rest.
    fn span(&self, start: usize, end: usize) -> Result<Hash, ProofError> {
        let len = end - start;
        if len.is_power_of_two() {
            let level = len.trailing_zeros();
            if level >= self.base {
                let kept = self.levels.get((level - self.base) as usize);
                return kept
                    .and_then(|l| l.get(start >> level))
                    .copied()
                    .ok_or(ProofError::NotLoaded);
            }
            let (first, block) = self
                .blocks
                .iter()
                .find(|(first, b)| (*first..*first + b.size).contains(&start))
                .ok_or(ProofError::NotLoaded)?;
            return block.span(start - first, end - first);
        }
        let mid = start + split_point(len);
        Ok(node_hash(&self.span(start, mid)?, &self.span(mid, end)?))
    }

    /// The inclusion proof (RFC 9162 §2.1.3.1 PATH) of leaf `index`, ordered from the leaf's
    /// sibling up to the root's child.
    ///
    /// # Errors
    /// [`ProofError::IndexOutOfRange`] if `index` is not below the size.
    pub fn inclusion(&self, index: u64) -> Result<Vec<Hash>, ProofError> {
        let n = self.size;
        let m =
            usize::try_from(index)
                .ok()
                .filter(|&m| m < n)
                .ok_or(ProofError::IndexOutOfRange {
                    index,
                    size: n as u64,
                })?;
        // Walk down from the root, noting the sibling subtree at each level.
        let mut proof = Vec::with_capacity(64);
        let (mut lo, mut hi) = (0, n);
        while hi - lo > 1 {
            let mid = lo + split_point(hi - lo);
            if m < mid {
                proof.push(self.span(mid, hi)?);
                hi = mid;
            } else {
                proof.push(self.span(lo, mid)?);
                lo = mid;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// The consistency proof (RFC 9162 §2.1.4.1 PROOF) that the tree of the first
    /// `old_size` leaves is a prefix of this one.
    ///
    /// The proof is empty when `old_size` is 0 or the size: every tree extends the empty
    /// tree, and a tree is consistent with itself.
    ///
    /// # Errors
    /// [`ProofError::SizeOrder`] if `old_size` is above the size.
    pub fn consistency(&self, old_size: u64) -> Result<Vec<Hash>, ProofError> {
        let n = self.size;
        let old =
            usize::try_from(old_size)
                .ok()
                .filter(|&m| m <= n)
                .ok_or(ProofError::SizeOrder {
                    old_size,
                    new_size: n as u64,
                })?;
        let mut proof = Vec::with_capacity(64);
        if old == 0 || old == n {
            return Ok(proof);
        }
        // SUBPROOF(m, D, b) unrolled from the top: `whole` is b, true while the old tree is
        // still a left-aligned subtree whose root the verifier knows.
        let (mut lo, mut hi) = (0, n);
        let mut whole = true;
        loop {
            if old == hi {
                if !whole {
                    proof.push(self.span(lo, hi)?);
                }
                break;
            }
            let mid = lo + split_point(hi - lo);
            if old <= mid {
                proof.push(self.span(mid, hi)?);
                hi = mid;
            } else {
                proof.push(self.span(lo, mid)?);
                lo = mid;
                whole = false;
            }
        }
        proof.reverse();
        Ok(proof)
    }
}

/// `nodes` and every level above them: each level's neighbours hashed in pairs, an odd last
/// one left out (it belongs to no perfect subtree of the next height).
fn pairwise(nodes: Vec<Hash>) -> Vec<Vec<Hash>> {
    let mut levels = vec![nodes];
    while let Some(below) = levels.last().filter(|l| l.len() > 1) {
        let above = below
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
        levels.push(above);
    }
    levels
}

/// Checks that `leaf` (a [`leaf_hash`]) sits at `index` in the tree of
/// `size` leaves whose root is `root` (RFC 9162 §2.1.3.2).
///
/// # Errors
/// [`ProofError::IndexOutOfRange`] if `index >= size`,
/// [`ProofError::WrongLength`] if the proof is too long or too short, and
/// [`ProofError::RootMismatch`] if it leads to another root.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix
/// of the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2),
/// i.e. that the log only appended in between.
///
/// # Errors
/// [`ProofError::SizeOrder`] if `old_size > new_size`,
/// [`ProofError::WrongLength`] if the proof is too long or too short, and
/// [`ProofError::RootMismatch`] if it does not lead to both roots.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOrder { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        // Nothing to prove beyond the roots themselves, so a non-empty proof
        // is malformed rather than merely redundant.
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        let consistent = if old_size == 0 {
            *old_root == EMPTY_ROOT
        } else {
            old_root == new_root
        };
        return if consistent {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    // When the old tree is a perfect left subtree its root is the first step
    // of the path and is not sent; otherwise the path starts with the proof.
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        proof.split_first().ok_or(ProofError::WrongLength)?
    };
    let mut fr = *first;
    let mut sr = *first;
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inclusion_proof(index: u64, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
        Proofs::new(leaves.to_vec()).inclusion(index)
    }

    fn consistency_proof(old_size: u64, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
        Proofs::new(leaves.to_vec()).consistency(old_size)
    }

    fn hex(s: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    /// The eight inputs of the widely used RFC 6962 reference test tree.
    fn reference_data() -> Vec<Vec<u8>> {
        vec![
            vec![],
            vec![0x00],
            vec![0x10],
            vec![0x20, 0x21],
            vec![0x30, 0x31],
            vec![0x40, 0x41, 0x42, 0x43],
            (0x50..0x58).collect(),
            (0x60..0x70).collect(),
        ]
    }

    fn reference_leaves() -> Vec<Hash> {
        reference_data().iter().map(|d| leaf_hash(d)).collect()
    }

    /// Roots of the first 1..=8 reference leaves, computed independently.
    const REFERENCE_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// Deterministic leaves for the exhaustive loops.
    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("event {i}").as_bytes()))
            .collect()
    }

    /// Every way of corrupting a proof by one bit, one at a time.
    fn flipped_copies(proof: &[Hash]) -> impl Iterator<Item = Vec<Hash>> + '_ {
        (0..proof.len()).flat_map(move |i| {
            [0usize, 31].into_iter().map(move |byte| {
                let mut bad = proof.to_vec();
                bad[i][byte] ^= 0x01;
                bad
            })
        })
    }

    fn flip(h: &Hash) -> Hash {
        let mut out = *h;
        out[17] ^= 0x80;
        out
    }

    #[test]
    fn hash_prefixes() {
        assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(root(&[]), EMPTY_ROOT);
        assert_eq!(
            leaf_hash(b"abc"),
            <[u8; 32]>::from(Sha256::digest(b"\x00abc"))
        );
        let (l, r) = ([1u8; 32], [2u8; 32]);
        let mut pre = vec![0x01];
        pre.extend_from_slice(&l);
        pre.extend_from_slice(&r);
        assert_eq!(node_hash(&l, &r), <[u8; 32]>::from(Sha256::digest(&pre)));
    }

    #[test]
    fn split_points() {
        let expected = [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (70, 64)];
        for (n, k) in expected {
            assert_eq!(split_point(n), k, "n = {n}");
        }
    }

    #[test]
    fn reference_roots() {
        let l = reference_leaves();
        for (i, want) in REFERENCE_ROOTS.iter().enumerate() {
            assert_eq!(root(&l[..=i]), hex(want), "size {}", i + 1);
        }
    }

    #[test]
    fn hand_built_small_trees() {
        let l = reference_leaves();
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l[..2]), node_hash(&l[0], &l[1]));
        // Three leaves split 2 + 1.
        assert_eq!(root(&l[..3]), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        // Five leaves split 4 + 1.
        let four = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
        assert_eq!(root(&l[..5]), node_hash(&four, &l[4]));
        // Seven leaves split 4 + (2 + 1).
        let tail = node_hash(&node_hash(&l[4], &l[5]), &l[6]);
        assert_eq!(root(&l[..7]), node_hash(&four, &tail));
    }

    #[test]
    fn incremental_tree_matches_batch_root() {
        let l = leaves(300);
        let mut tree = Tree::new();
        assert_eq!(tree.root(), EMPTY_ROOT);
        for (i, leaf) in l.iter().enumerate() {
            tree.push(*leaf);
            assert_eq!(tree.size(), i as u64 + 1);
            assert_eq!(tree.frontier().len(), tree.size().count_ones() as usize);
            assert_eq!(tree.root(), root(&l[..=i]), "size {}", i + 1);
        }
    }

    /// The tree of `l` from its blocks of 2^`height` leaves, loading the blocks `firsts`.
    fn from_blocks_for(l: &[Hash], height: u32, firsts: Vec<u64>) -> Proofs {
        let block = 1usize << height;
        let roots = l.chunks_exact(block).map(root).collect();
        let blocks = firsts
            .into_iter()
            .map(|first| {
                let first_leaf = first as usize;
                let leaves = l[first_leaf..(first_leaf + block).min(l.len())].to_vec();
                (first, leaves)
            })
            .collect();
        Proofs::from_blocks(l.len() as u64, height, roots, blocks).unwrap()
    }

    #[test]
    fn proofs_from_blocks_equal_proofs_from_every_leaf() {
        let l = leaves(70);
        for height in [0, 1, 2, 3, 10] {
            for n in 1..=l.len() {
                let full = Proofs::new(l[..n].to_vec());
                let size = n as u64;
                for i in 0..size {
                    let part =
                        from_blocks_for(&l[..n], height, Proofs::blocks_needed(i, size, height));
                    assert_eq!(part.inclusion(i), full.inclusion(i), "h{height} n{n} i{i}");
                    let old = i + 1;
                    let part = from_blocks_for(
                        &l[..n],
                        height,
                        Proofs::blocks_for_consistency(old, size, height),
                    );
                    assert_eq!(
                        part.consistency(old),
                        full.consistency(old),
                        "h{height} n{n} old{old}"
                    );
                }
                let last = from_blocks_for(
                    &l[..n],
                    height,
                    Proofs::blocks_needed(size - 1, size, height),
                );
                assert_eq!(last.root(), full.root(), "h{height} n{n}");
            }
        }
    }

    #[test]
    fn proofs_from_blocks_refuse_what_was_not_loaded() {
        let l = leaves(20);
        let roots: Vec<Hash> = l.chunks_exact(4).map(root).collect();
        // Only the first block's leaves: leaf 9's path needs its own block and the last one.
        let tree =
            Proofs::from_blocks(18, 2, roots[..4].to_vec(), vec![(0, l[..4].to_vec())]).unwrap();
        assert_eq!(tree.inclusion(9), Err(ProofError::NotLoaded));
        assert!(
            tree.inclusion(1).is_err(),
            "the partial last block is missing too"
        );
        assert_eq!(Proofs::blocks_needed(9, 18, 2), vec![8, 16]);
        // From a block's edge, the old tree's blocks are their roots: only the last is read.
        assert_eq!(Proofs::blocks_for_consistency(8, 18, 2), vec![16]);
        assert_eq!(Proofs::blocks_for_consistency(9, 18, 2), vec![8, 16]);
        assert_eq!(Proofs::blocks_for_consistency(8, 16, 2), Vec::<u64>::new());
        // Roots that do not match the size, misaligned or short blocks.
        let bad = [
            Proofs::from_blocks(18, 2, roots[..3].to_vec(), vec![]),
            Proofs::from_blocks(18, 2, roots[..4].to_vec(), vec![(2, l[2..6].to_vec())]),
            Proofs::from_blocks(18, 2, roots[..4].to_vec(), vec![(16, l[16..17].to_vec())]),
        ];
        for b in bad {
            assert_eq!(b.unwrap_err(), ProofError::NotLoaded);
        }
    }

    #[test]
    fn kept_nodes_give_the_batch_root() {
        let l = leaves(300);
        for n in 0..=l.len() {
            let proofs = Proofs::new(l[..n].to_vec());
            assert_eq!(proofs.size(), n as u64);
            assert_eq!(proofs.root().unwrap(), root(&l[..n]), "size {n}");
        }
    }

    #[test]
    fn tree_resumes_from_frontier() {
        let l = leaves(100);
        let mut tree = Tree::new();
        for leaf in &l[..37] {
            tree.push(*leaf);
        }
        let mut resumed = Tree::from_frontier(tree.size(), tree.frontier().to_vec()).unwrap();
        assert_eq!(resumed, tree);
        for leaf in &l[37..] {
            resumed.push(*leaf);
        }
        assert_eq!(resumed.root(), root(&l));
        assert_eq!(
            Tree::from_frontier(37, vec![[0; 32]; 2]),
            Err(FrontierError {
                size: 37,
                expected: 3,
                actual: 2
            })
        );
        assert_eq!(Tree::from_frontier(0, Vec::new()).unwrap(), Tree::new());
    }

    #[test]
    fn hand_built_inclusion_proofs() {
        let l = reference_leaves();
        let n01 = node_hash(&l[0], &l[1]);
        let n23 = node_hash(&l[2], &l[3]);
        let n45 = node_hash(&l[4], &l[5]);
        let n67 = node_hash(&l[6], &l[7]);
        let n4567 = node_hash(&n45, &n67);
        assert_eq!(inclusion_proof(2, &l).unwrap(), vec![l[3], n01, n4567]);
        assert_eq!(inclusion_proof(0, &l).unwrap(), vec![l[1], n23, n4567]);
        // In a 7-leaf tree, leaf 6 has no sibling at the bottom level.
        let n0123 = node_hash(&n01, &n23);
        assert_eq!(inclusion_proof(6, &l[..7]).unwrap(), vec![n45, n0123]);
        assert_eq!(inclusion_proof(0, &l[..1]).unwrap(), Vec::<Hash>::new());
        verify_inclusion(0, 1, &l[0], &[], &l[0]).unwrap();
        assert_eq!(
            inclusion_proof(8, &l),
            Err(ProofError::IndexOutOfRange { index: 8, size: 8 })
        );
        assert_eq!(
            inclusion_proof(0, &[]),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
    }

    #[test]
    fn hand_built_consistency_proofs() {
        // The seven-leaf example of RFC 9162 §2.1.5: a..g are leaves 0..6.
        let l = reference_leaves();
        let l7 = &l[..7];
        let g = node_hash(&l[0], &l[1]);
        let h = node_hash(&l[2], &l[3]);
        let i = node_hash(&l[4], &l[5]);
        let k = node_hash(&g, &h);
        let l_node = node_hash(&i, &l[6]);
        // PROOF(3, D[7]) = [c, d, g, l]
        assert_eq!(
            consistency_proof(3, l7).unwrap(),
            vec![l[2], l[3], g, l_node]
        );
        // PROOF(4, D[7]) = [l]
        assert_eq!(consistency_proof(4, l7).unwrap(), vec![l_node]);
        // PROOF(6, D[7]) = [i, j, k]
        assert_eq!(consistency_proof(6, l7).unwrap(), vec![i, l[6], k]);
        assert_eq!(consistency_proof(0, l7).unwrap(), Vec::<Hash>::new());
        assert_eq!(consistency_proof(7, l7).unwrap(), Vec::<Hash>::new());
        assert_eq!(
            consistency_proof(8, l7),
            Err(ProofError::SizeOrder {
                old_size: 8,
                new_size: 7
            })
        );
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        let all = leaves(70);
        for size in 1..=all.len() {
            let l = &all[..size];
            let r = root(l);
            let n = size as u64;
            for index in 0..size {
                let idx = index as u64;
                let proof = inclusion_proof(idx, l).unwrap();
                assert!(proof.len() <= 7);
                verify_inclusion(idx, n, &l[index], &proof, &r)
                    .unwrap_or_else(|e| panic!("size {size} index {index}: {e}"));
                assert!(verify_inclusion(idx, n, &flip(&l[index]), &proof, &r).is_err());
                assert!(verify_inclusion(idx, n, &l[index], &proof, &flip(&r)).is_err());
                for bad in flipped_copies(&proof) {
                    assert!(verify_inclusion(idx, n, &l[index], &bad, &r).is_err());
                }
                for other in 0..size as u64 + 2 {
                    if other != idx {
                        assert!(
                            verify_inclusion(other, n, &l[index], &proof, &r).is_err(),
                            "size {size} index {index} accepted at {other}"
                        );
                    }
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert_eq!(
                    verify_inclusion(idx, n, &l[index], &longer, &r),
                    Err(ProofError::WrongLength)
                );
                if !proof.is_empty() {
                    assert!(verify_inclusion(idx, n, &l[index], &proof[1..], &r).is_err());
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails() {
        let all = leaves(70);
        let roots: Vec<Hash> = (0..=all.len()).map(|n| root(&all[..n])).collect();
        for new_size in 1..=all.len() {
            let l = &all[..new_size];
            let new_root = roots[new_size];
            let n = new_size as u64;
            for (old_size, &old_root) in roots.iter().enumerate().take(new_size + 1) {
                let m = old_size as u64;
                let proof = consistency_proof(m, l).unwrap();
                verify_consistency(m, n, &old_root, &new_root, &proof)
                    .unwrap_or_else(|e| panic!("{old_size} -> {new_size}: {e}"));
                // Every tree extends the empty one, so with old size 0 only
                // the old root (fixed to EMPTY_ROOT) is checked.
                assert!(verify_consistency(m, n, &flip(&old_root), &new_root, &proof).is_err());
                if old_size > 0 {
                    assert!(verify_consistency(m, n, &old_root, &flip(&new_root), &proof).is_err());
                }
                for bad in flipped_copies(&proof) {
                    assert!(verify_consistency(m, n, &old_root, &new_root, &bad).is_err());
                }
                // The proof only fits its own pair of sizes.
                for other_old in 1..new_size as u64 {
                    if other_old != m {
                        assert!(
                            verify_consistency(other_old, n, &old_root, &new_root, &proof).is_err(),
                            "{old_size} -> {new_size} accepted as {other_old}"
                        );
                    }
                }
                let mut longer = proof.clone();
                longer.push(new_root);
                assert!(verify_consistency(m, n, &old_root, &new_root, &longer).is_err());
                if !proof.is_empty() {
                    assert!(verify_consistency(m, n, &old_root, &new_root, &proof[1..]).is_err());
                }
            }
        }
    }

    #[test]
    fn consistency_edge_cases() {
        let l = leaves(5);
        let r5 = root(&l);
        assert_eq!(
            verify_consistency(6, 5, &r5, &r5, &[]),
            Err(ProofError::SizeOrder {
                old_size: 6,
                new_size: 5
            })
        );
        assert_eq!(
            verify_consistency(0, 5, &[0; 32], &r5, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(5, 5, &r5, &r5, &[r5]),
            Err(ProofError::WrongLength)
        );
        assert_eq!(
            verify_consistency(3, 5, &root(&l[..3]), &r5, &[]),
            Err(ProofError::WrongLength)
        );
    }

    #[test]
    fn the_first_whole_block_starts_at_or_after_the_first_sequence_number() {
        for (first_seq, block) in [(0, 0), (1, 0), (2, 1), (1024, 1), (1025, 1), (1026, 2)] {
            assert_eq!(first_whole_block(first_seq), block, "seq {first_seq}");
        }
    }
}
