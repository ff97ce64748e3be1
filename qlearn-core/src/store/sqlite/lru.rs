//! [`Lru`]: the bookkeeping of the model cache's byte budget (what is cached,
//! how big, in which order it was last used). It holds no model and takes no
//! lock: `cache.rs` decides what may leave (see its module docs) and does
//! the evicting.

use std::collections::BTreeMap;

use crate::FastMap;

/// The cached models in least-recently-used order with their sizes, and the
/// byte budget. `SqliteStore::trim` (in `cache.rs`) decides which entry may
/// go and evicts it; [`Lru::trim`] walks them oldest first.
pub(super) struct Lru<V> {
    budget: usize,
    total: usize,
    tick: u64,
    /// By model id (ids the service made: the fast hash).
    entries: FastMap<String, LruEntry<V>>,
    /// tick of last use -> id, oldest first.
    order: BTreeMap<u64, String>,
}

struct LruEntry<V> {
    bytes: usize,
    tick: u64,
    value: V,
}

impl<V> Lru<V> {
    pub(super) fn new(budget: usize) -> Self {
        Lru {
            budget,
            total: 0,
            tick: 0,
            entries: FastMap::default(),
            order: BTreeMap::new(),
        }
    }

    /// Records a use of `id` now, holding `bytes` (adds it with `value()`
    /// if absent).
    pub(super) fn touch(&mut self, id: &str, bytes: usize, value: impl FnOnce() -> V) {
        if let Some(e) = self.entries.get_mut(id) {
            self.total = self.total - e.bytes + bytes;
            e.bytes = bytes;
            // Already the most recently used (a model called again and
            // again): its place in the order stands.
            if e.tick != self.tick {
                self.tick += 1;
                let key = self.order.remove(&e.tick).unwrap_or_else(|| id.to_owned());
                self.order.insert(self.tick, key);
                e.tick = self.tick;
            }
            return;
        }
        self.tick += 1;
        self.order.insert(self.tick, id.to_owned());
        self.entries.insert(
            id.to_owned(),
            LruEntry {
                bytes,
                tick: self.tick,
                value: value(),
            },
        );
        self.total += bytes;
    }

    /// Forgets `id` (evicted or deleted).
    pub(super) fn remove(&mut self, id: &str) -> Option<V> {
        let e = self.entries.remove(id)?;
        self.order.remove(&e.tick);
        self.total -= e.bytes;
        Some(e.value)
    }

    /// Whether something should go: over the budget with more than one
    /// model cached (a single model bigger than the budget stays).
    pub(super) fn over_budget(&self) -> bool {
        self.total > self.budget && self.len() > 1
    }

    /// Removes least recently used entries until the budget holds (or one
    /// entry is left), each only if `evict(id, value)` agrees (and did what
    /// evicting takes); stops when none of the rest may go. Returns how
    /// many went.
    pub(super) fn trim(&mut self, mut evict: impl FnMut(&str, &V) -> bool) -> usize {
        let mut gone = 0;
        while self.over_budget() {
            let victim = self
                .order
                .values()
                .find(|id| {
                    self.entries
                        .get(id.as_str())
                        .is_some_and(|e| evict(id, &e.value))
                })
                .cloned();
            let Some(id) = victim else {
                break;
            };
            self.remove(&id);
            gone += 1;
        }
        gone
    }

    /// How many models are cached.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the cached models.
    pub(super) fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    /// Trims `lru`, every entry allowed to go but those in `pinned`; returns
    /// the ids evicted, in order.
    fn trim(lru: &mut Lru<()>, pinned: &[&str]) -> Vec<String> {
        let mut gone = Vec::new();
        lru.trim(|id, _| {
            let go = !pinned.contains(&id);
            if go {
                gone.push(id.to_owned());
            }
            go
        });
        gone
    }

    #[test]
    fn least_recently_used_leaves_first() {
        let mut lru = Lru::new(100);
        for id in ["a", "b", "c"] {
            lru.touch(id, 30, || ());
        }
        assert_eq!(lru.total(), 90);
        assert!(trim(&mut lru, &[]).is_empty(), "within the budget");
        // a is used again: b is now the oldest.
        lru.touch("a", 30, || ());
        lru.touch("d", 30, || ());
        assert_eq!(trim(&mut lru, &[]), ["b"]);
        assert_eq!(lru.total(), 90);
        // A model that grew is counted at its new size.
        lru.touch("c", 60, || ());
        assert_eq!(lru.total(), 120);
        assert_eq!(trim(&mut lru, &[]), ["a"]);
        assert_eq!(lru.total(), 90);
        // An entry in use is skipped, the next oldest goes instead.
        lru.touch("e", 30, || ());
        assert_eq!(trim(&mut lru, &["d"]), ["c"]);
        assert_eq!(lru.total(), 60);
        assert_eq!(lru.remove("d"), Some(()));
        assert_eq!(lru.remove("d"), None);
        assert_eq!(lru.total(), 30);
    }

    #[test]
    fn a_model_used_again_and_again_stays_the_newest() {
        let mut lru = Lru::new(100);
        lru.touch("a", 30, || ());
        lru.touch("b", 30, || ());
        for bytes in [30, 40, 50] {
            lru.touch("b", bytes, || ());
        }
        assert_eq!(lru.total(), 80, "the newest's size still counts");
        lru.touch("c", 30, || ());
        lru.touch("c", 30, || ());
        // a is the oldest, then b: the repeated uses of b and c kept them newer.
        assert_eq!(trim(&mut lru, &[]), ["a"]);
        lru.touch("b", 50, || ());
        lru.touch("d", 40, || ());
        assert_eq!(trim(&mut lru, &[]), ["c"]);
        assert_eq!(lru.total(), 90);
    }

    #[test]
    fn only_a_single_oversized_model_exceeds_the_budget() {
        let mut lru = Lru::new(100);
        lru.touch("small", 10, || ());
        lru.touch("big", 500, || ());
        // The small one is older: it goes, the big one stays, alone.
        assert_eq!(trim(&mut lru, &[]), ["small"]);
        assert_eq!(lru.total(), 500);
        assert!(!lru.over_budget(), "one model bigger than the budget stays");
        // Using another model evicts the oversized one first.
        lru.touch("other", 10, || ());
        assert_eq!(trim(&mut lru, &[]), ["big"]);
        assert_eq!(lru.total(), 10);
    }

    #[test]
    fn never_over_the_budget_but_for_one_model() {
        // Deterministic pseudo-random uses of 50 ids with changing sizes.
        let mut lru = Lru::new(1_000);
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut last_use = std::collections::HashMap::new();
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = format!("m{}", x % 50);
            // Mostly small, now and then bigger than the whole budget.
            let bytes = (x >> 8) % 300 + if x.is_multiple_of(97) { 2_000 } else { 0 };
            lru.touch(&id, bytes as usize, || ());
            last_use.insert(id, step);
            let gone: Vec<u64> = trim(&mut lru, &[])
                .iter()
                .filter_map(|g| last_use.remove(g))
                .collect();
            // `last_use` now holds what is cached: whatever went was used
            // before all of it.
            if let (Some(newest_gone), Some(oldest_kept)) =
                (gone.iter().max(), last_use.values().min())
            {
                assert!(newest_gone < oldest_kept, "step {step}: LRU order");
            }
            assert_eq!(lru.len(), last_use.len());
            assert!(
                lru.total() <= 1_000 || lru.len() == 1,
                "step {step}: {} bytes in {} models",
                lru.total(),
                lru.len()
            );
        }
    }
}
