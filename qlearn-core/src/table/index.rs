//! The hash index of a Q-table: from a key's hash to its row number, with
//! the SSE2 group match next to its scalar twin and the test that they agree.

/// The hash index: open addressing with linear probing over words, each
/// `tag << 32 | (row + 1)` (0 = empty), where `tag` is the top 32 bits of
/// the key's hash and also picks the home slot (its top `log2(capacity)`
/// bits). A lookup reads the slots from home on in groups of four and
/// tests their tags without branching on each, so that a key one or two
/// slots past its home costs no mispredicted branch (the per-slot loop cost
/// 0.4 mispredictions per lookup); a candidate's key and values can then be
/// loaded at once (hashbrown's separate control bytes and row number cost
/// one more dependent load). Probes never wrap: [`SPILL`] slots past the
/// last home slot take the runs that reach the end, and the index grows if
/// a run would leave them. Growing re-slots words by their tags without
/// hashing a key again. At most three quarters of the home slots are used:
/// 8 bytes per slot is 10.7 to 21.3 bytes per row.
#[derive(Clone, Debug)]
pub(super) struct Index {
    /// `2^k` home slots, then [`SPILL`] more.
    slots: Vec<u64>,
    /// `32 - k`: a tag's home slot is `tag >> shift`.
    shift: u32,
    len: usize,
}

/// Home slots of a new index.
pub(super) const MIN_SLOTS: usize = 8;
/// Slots after the last home slot (a multiple of the group size).
const SPILL: usize = 32;
/// Slots tested together.
const GROUP: usize = 4;

impl Index {
    /// An empty index of at least `n` home slots (a power of two).
    pub(super) fn with_slots(n: usize) -> Self {
        let n = n.next_power_of_two().max(MIN_SLOTS);
        Index {
            slots: vec![0; n + SPILL],
            shift: 32 - n.trailing_zeros(),
            len: 0,
        }
    }

    /// Home slots.
    fn home_slots(&self) -> usize {
        self.slots.len() - SPILL
    }

    /// Home slots needed to hold `rows` at most three quarters full.
    fn slots_for(rows: usize) -> usize {
        rows.saturating_add(rows / 3)
            .saturating_add(1)
            .next_power_of_two()
    }

    /// The row whose tag is `tag` and for which `eq` holds.
    #[inline(always)]
    pub(super) fn find(&self, tag: u32, mut eq: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut at = (tag as u64 >> self.shift) as usize;
        while let Some(group) = self.slots.get(at..at + GROUP) {
            let (mut hits, empty) = match_group(group, tag);
            while hits != 0 {
                let k = hits.trailing_zeros() as usize;
                let w = group.get(k).copied().unwrap_or(0);
                // A zero word only matches tag 0: its row reads as u32::MAX
                // and `eq` refuses it.
                let row = (w as u32).wrapping_sub(1) as usize;
                if eq(row) {
                    return Some(row);
                }
                hits &= hits - 1;
            }
            if empty {
                return None;
            }
            at += GROUP;
        }
        None
    }

    /// Adds `row` (known absent) under `tag`.
    pub(super) fn insert(&mut self, tag: u32, row: usize) {
        if (self.len + 1) * 4 > self.home_slots() * 3 {
            self.resize(self.home_slots() * 2);
        }
        let w = (tag as u64) << 32 | (row as u64 + 1);
        while !place(&mut self.slots, self.shift, w) {
            self.resize(self.home_slots() * 2);
        }
        self.len += 1;
    }

    /// Makes room for `additional` more rows.
    pub(super) fn reserve(&mut self, additional: usize) {
        let need = Index::slots_for(self.len.saturating_add(additional));
        if need > self.home_slots() {
            self.resize(need);
        }
    }

    /// Moves every word to an index of `n` home slots (a power of two),
    /// doubling again in the (rare) case that a run would pass the spill
    /// slots.
    #[cold]
    fn resize(&mut self, n: usize) {
        let mut n = n;
        'grow: loop {
            let mut next = Index::with_slots(n);
            for &w in self.slots.iter().filter(|&&w| w != 0) {
                if !place(&mut next.slots, next.shift, w) {
                    n *= 2;
                    continue 'grow;
                }
            }
            next.len = self.len;
            *self = next;
            return;
        }
    }

    /// Bytes of memory the slots hold (capacity).
    pub(super) fn allocation_size(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u64>()
    }
}

/// The slots of `group` (four words) whose tag is `tag`, as bits, and
/// whether one of them is empty. With SSE2 (every x86-64): the four tags
/// compared at once.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn match_group(group: &[u64], tag: u32) -> (u32, bool) {
    use std::arch::x86_64::{
        _mm_castps_si128, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_movemask_ps, _mm_set1_epi32,
        _mm_set_epi64x, _mm_setzero_si128, _mm_shuffle_ps,
    };
    let w = |k: usize| group.get(k).copied().unwrap_or(0) as i64;
    // SAFETY: these intrinsics only need SSE2, which this code is compiled
    // with (the cfg above); they touch no memory.
    let (hits, empty) = unsafe {
        let lo = _mm_castsi128_ps(_mm_set_epi64x(w(1), w(0)));
        let hi = _mm_castsi128_ps(_mm_set_epi64x(w(3), w(2)));
        // Lanes 1 and 3 of each half are the tags, 0 and 2 the rows (+1).
        let tags = _mm_castps_si128(_mm_shuffle_ps::<0b11_01_11_01>(lo, hi));
        let rows = _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(lo, hi));
        let want = _mm_set1_epi32(tag as i32);
        (
            _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(tags, want))),
            _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(rows, _mm_setzero_si128()))),
        )
    };
    (hits as u32, empty != 0)
}

/// [`match_group`] without SIMD (other targets; on x86-64 a test checks that
/// both agree).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn match_group(group: &[u64], tag: u32) -> (u32, bool) {
    match_group_scalar(group, tag)
}

#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline(always)]
fn match_group_scalar(group: &[u64], tag: u32) -> (u32, bool) {
    let mut hits = 0u32;
    let mut empty = false;
    for (k, &w) in group.iter().enumerate() {
        hits |= (((w >> 32) as u32 == tag) as u32) << k;
        empty |= w == 0;
    }
    (hits, empty)
}

/// Writes `w` into the first empty slot from its tag's home slot on;
/// `false` if the run reaches the end of the spill slots.
fn place(slots: &mut [u64], shift: u32, w: u64) -> bool {
    let home = ((w >> 32) >> shift) as usize;
    match slots
        .get_mut(home..)
        .and_then(|run| run.iter_mut().find(|s| **s == 0))
    {
        Some(s) => {
            *s = w;
            true
        }
        None => false,
    }
}

/// The index tag of a key's hash.
#[inline(always)]
pub(super) fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_matching_agrees_with_the_scalar_definition() {
        let mut rng = crate::rng::Rng::from_seed(5);
        for _ in 0..20_000 {
            let tag = rng.below(4) as u32;
            let group: Vec<u64> = (0..GROUP)
                .map(|_| match rng.below(3) {
                    0 => 0,
                    _ => (rng.below(4) as u64) << 32 | (rng.below(3) as u64 + 1),
                })
                .collect();
            assert_eq!(
                match_group(&group, tag),
                match_group_scalar(&group, tag),
                "{group:x?}"
            );
        }
    }

    /// Runs that reach the end of the spill slots make the index grow; every
    /// key stays findable.
    #[test]
    fn colliding_home_slots_spill_and_grow() {
        let mut index = Index::with_slots(MIN_SLOTS);
        // Every tag's home is slot 0 of 8: the run outgrows the spill slots.
        for row in 0..200 {
            index.insert(row as u32, row);
        }
        for row in 0..200 {
            assert_eq!(index.find(row as u32, |r| r == row), Some(row));
        }
        assert_eq!(index.find(7_777, |_| true), None);
    }
}
