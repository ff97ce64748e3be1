//! [`IdFilter`]: which decision and episode ids a model's log may have in
//! the file but not in memory, as a growing Bloom filter, so that a call
//! naming a new id (a logging predict with the client's own decision id, a
//! new episode, a reward for an id never logged) learns that the file lacks
//! it without reading the file.
//!
//! Why: the SQLite store keeps a model's log partly in memory
//! (`hot_log.rs`), so an id memory lacks had to be looked up in the file,
//! on the blocking path, under the model's lock. With client-chosen ids
//! that was every logging predict: 104.7 µs of CPU per predict against
//! 41.1 with generated ids (docs/benchmarks-http.md, session 21).
//!
//! A Bloom filter answers "no" only for ids never added, so a "no" is
//! certain and a "maybe" costs the read it cost before. It grows in stages
//! (each twice the previous one's capacity, at 16 bits per id and 7 bit
//! positions per id, about 0.07% false "maybe"s per stage), and is
//! abandoned past [`MAX_IDS`] (the store then reads as before). It is
//! built from the file once per opening of a log, when a logging predict
//! first names an id memory lacks, and only for a log of at most
//! [`READ_MAX`] records.

use std::hash::BuildHasher;

/// The ids a filter takes before its owner drops it: 16 Mi ids, about
/// 32-64 MiB of bits (the model cache counts them).
pub(super) const MAX_IDS: usize = 1 << 24;

/// The most ids of the file a filter is built from (one pass over two
/// indexes, about 0.13 s for a million decision ids in the page cache, 0.5
/// s from the disk): a log with more is read id by id as before.
pub(super) const READ_MAX: usize = 1 << 20;

/// The capacity of a filter's first stage.
const FIRST_STAGE: usize = 1 << 12;

/// Bits per id a stage is given (rounded up to a power of two in all).
const BITS_PER_ID: usize = 16;

/// Bit positions set and tested per id.
const PROBES: u64 = 7;

/// Which record an id names (a decision and an episode may share an id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IdKind {
    Decision,
    Episode,
}

/// A set of ids with false positives and no false negatives: see the
/// module docs.
pub(super) struct IdFilter {
    stages: Vec<Stage>,
    /// Seeded per filter: the ids are the client's, so their bit
    /// positions must not be predictable.
    hasher: foldhash::fast::RandomState,
    len: usize,
}

struct Stage {
    bits: Vec<u64>,
    /// The number of bits less one (a power of two less one).
    mask: u64,
    capacity: usize,
    len: usize,
}

impl Stage {
    fn new(capacity: usize) -> Stage {
        let n_bits = (capacity * BITS_PER_ID).next_power_of_two().max(64);
        Stage {
            bits: vec![0; n_bits / 64],
            mask: n_bits as u64 - 1,
            capacity,
            len: 0,
        }
    }

    fn insert(&mut self, h: u64) {
        for p in positions(h, self.mask) {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.len += 1;
    }

    fn contains(&self, h: u64) -> bool {
        positions(h, self.mask).all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

/// The bit positions of hash `h` in a stage of `mask + 1` bits (double
/// hashing: the two halves of the hash give the start and the stride).
fn positions(h: u64, mask: u64) -> impl Iterator<Item = usize> {
    let step = h.rotate_left(32) | 1;
    (0..PROBES).map(move |i| (h.wrapping_add(i.wrapping_mul(step)) & mask) as usize)
}

impl IdFilter {
    /// An empty filter.
    pub(super) fn new() -> IdFilter {
        IdFilter {
            stages: vec![Stage::new(FIRST_STAGE)],
            hasher: foldhash::fast::RandomState::default(),
            len: 0,
        }
    }

    fn hash(&self, kind: IdKind, id: &str) -> u64 {
        self.hasher.hash_one((kind == IdKind::Episode, id))
    }

    /// Adds `id`. `false` when the filter is full ([`MAX_IDS`]): its owner
    /// must then drop it, since it would no longer hold every id it must.
    pub(super) fn insert(&mut self, kind: IdKind, id: &str) -> bool {
        if self.len >= MAX_IDS {
            return false;
        }
        let h = self.hash(kind, id);
        let last = match self.stages.last_mut() {
            Some(s) if s.len < s.capacity => s,
            _ => {
                let capacity = self.stages.last().map_or(FIRST_STAGE, |s| 2 * s.capacity);
                self.stages.push(Stage::new(capacity));
                match self.stages.last_mut() {
                    Some(s) => s,
                    None => return false,
                }
            }
        };
        last.insert(h);
        self.len += 1;
        true
    }

    /// Whether `id` may have been added: `false` only for an id never added.
    pub(super) fn may_contain(&self, kind: IdKind, id: &str) -> bool {
        let h = self.hash(kind, id);
        self.stages.iter().any(|s| s.contains(h))
    }

    /// The ids added (each time counted).
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The memory the filter's bits take.
    pub(super) fn bytes(&self) -> usize {
        self.stages.iter().map(|s| s.bits.len() * 8).sum::<usize>()
            + self.stages.capacity() * std::mem::size_of::<Stage>()
    }
}

/// Whether `ids` may hold `id` of `kind`: always, when there is no filter.
pub(super) fn may_hold(ids: Option<&IdFilter>, kind: IdKind, id: &str) -> bool {
    ids.is_none_or(|f| f.may_contain(kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_added_is_found_across_stages() {
        let mut f = IdFilter::new();
        let n = 5 * FIRST_STAGE;
        for i in 0..n {
            assert!(f.insert(IdKind::Decision, &format!("d{i}")));
        }
        assert_eq!(f.len(), n);
        // 4,096 + 8,192 + 16,384 hold 20,480: three stages.
        assert_eq!(f.stages.len(), 3);
        for i in 0..n {
            assert!(f.may_contain(IdKind::Decision, &format!("d{i}")), "d{i}");
        }
    }

    #[test]
    fn every_hash_sets_distinct_bits() {
        // The stride is odd, so it never repeats a bit within a stage; a
        // stride of 0 would set one bit seven times (a hash whose high half
        // is 1 gives a stride of 1 or, made even, 0).
        for h in [
            0,
            1,
            1 << 32,
            (1 << 32) | 5,
            u64::MAX,
            0x9e37_79b9_7f4a_7c15,
        ] {
            let mut at: Vec<usize> = positions(h, 63).collect();
            at.sort_unstable();
            at.dedup();
            assert_eq!(at.len(), PROBES as usize, "hash {h:#x}: {at:?}");
        }
    }

    #[test]
    fn ids_never_added_are_almost_all_refused() {
        let mut f = IdFilter::new();
        for i in 0..20_000 {
            f.insert(IdKind::Decision, &format!("client-{i}"));
        }
        let false_maybes = (0..100_000)
            .filter(|i| f.may_contain(IdKind::Decision, &format!("other-{i}")))
            .count();
        // Three stages at about 0.07% each: well under 1%.
        assert!(false_maybes < 1_000, "{false_maybes} of 100,000");
    }

    #[test]
    fn a_decision_and_an_episode_of_one_id_are_apart() {
        let mut f = IdFilter::new();
        for i in 0..200 {
            f.insert(IdKind::Episode, &format!("e{i}"));
        }
        let both = (0..200)
            .filter(|i| f.may_contain(IdKind::Decision, &format!("e{i}")))
            .count();
        assert!((0..200).all(|i| f.may_contain(IdKind::Episode, &format!("e{i}"))));
        assert!(both < 10, "{both} of 200 episode ids taken for decisions");
    }

    #[test]
    fn the_bits_grow_with_the_ids() {
        let mut f = IdFilter::new();
        let first = f.bytes();
        assert!(first >= FIRST_STAGE * BITS_PER_ID / 8);
        for i in 0..=FIRST_STAGE {
            f.insert(IdKind::Decision, &i.to_string());
        }
        assert!(f.bytes() >= 3 * first, "{} after {first}", f.bytes());
    }
}
