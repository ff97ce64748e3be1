//! The Q-table: rows of Q-values keyed by canonical states.
//!
//! [`QRows`] is what the learning rules read and write; [`QTable`] is the
//! in-memory implementation every model owns. A storage backend that keeps
//! rows elsewhere (PostgreSQL, one transaction per update) implements
//! [`QRows`] over the few rows it fetched, and the engine's rules run on it
//! unchanged.
//!
//! Layout: keys in insertion order (`Vec<StateKey>`), all Q-values in one flat
//! `Vec<f64>` (`width` per state), and a `hashbrown::HashTable<u32>` of row
//! numbers. A stored 4-action state costs its key (24 bytes, plus the heap
//! bytes of a string or array key), its values (32 bytes) and 5 to 11 bytes
//! of index; keys and values grow by half when full (at most 50% slack), so
//! an integer state with 4 actions stays under 96 bytes at any table size.
//! Rows keep a stable order for paging.

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::error::{Error, Result};
use crate::state::{key_eq, key_hash, StateKey, StateRef};

/// Read and write access to Q-table rows, for the learning rules.
///
/// Keys passed in are canonical (see [`crate::state`]). A row is `width`
/// values: `n_actions`, or `2 * n_actions` for double Q-learning (table A
/// then table B).
pub trait QRows {
    /// The stored row of `key`, if any.
    fn row(&self, key: StateRef<'_>) -> Option<&[f64]>;
    /// The row of `key`, inserting one filled with `init` if absent. The
    /// flag says whether it was inserted.
    fn row_or_insert(&mut self, key: StateRef<'_>, init: f64) -> (&mut [f64], bool);
}

/// An in-memory Q-table.
#[derive(Clone, Debug)]
pub struct QTable {
    /// The hash function's seed (random per table: crafted states cannot be
    /// made to collide in advance).
    hasher: RandomState,
    width: usize,
    keys: Vec<StateKey>,
    values: Vec<f64>,
    index: HashTable<u32>,
}

impl QTable {
    /// An empty table whose rows hold `width` values.
    pub fn new(width: usize) -> Self {
        QTable {
            hasher: RandomState::default(),
            width,
            keys: Vec::new(),
            values: Vec::new(),
            index: HashTable::new(),
        }
    }

    /// Rebuilds a table from saved rows. Errors on a duplicate key, a
    /// non-canonical key or a length mismatch (corrupt input).
    pub fn from_rows(width: usize, keys: Vec<StateKey>, values: Vec<f64>) -> Result<Self> {
        if width == 0 || keys.len().checked_mul(width) != Some(values.len()) {
            return Err(Error::Decode(format!(
                "{} states do not match {} Q-values of width {width}",
                keys.len(),
                values.len()
            )));
        }
        if keys.len() > u32::MAX as usize {
            return Err(Error::Decode("too many states".into()));
        }
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Decode(format!("Q-value {bad} is not finite")));
        }
        let hasher = RandomState::default();
        let mut index = HashTable::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            if !k.is_canonical() {
                return Err(Error::Decode(format!("state {i} is not canonical")));
            }
            let h = key_hash(k.as_ref(), &hasher);
            if index
                .find(h, |&j: &u32| key_eq(&keys[j as usize], k.as_ref()))
                .is_some()
            {
                return Err(Error::Decode(format!("state {i} appears twice")));
            }
            index.insert_unique(h, i as u32, |&j: &u32| {
                key_hash(keys[j as usize].as_ref(), &hasher)
            });
        }
        Ok(QTable {
            hasher,
            width,
            keys,
            values,
            index,
        })
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of stored states.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no state is stored.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> &[StateKey] {
        &self.keys
    }

    /// All values, row after row.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The row number (insertion order) of `key`, if stored. Storage
    /// backends use it to write back exactly the rows an update touched.
    pub fn position(&self, key: StateRef<'_>) -> Option<usize> {
        self.find(key, key_hash(key, &self.hasher))
    }

    /// Row `i` (insertion order), with its key.
    pub fn row_at(&self, i: usize) -> Option<(&StateKey, &[f64])> {
        let k = self.keys.get(i)?;
        Some((k, &self.values[i * self.width..(i + 1) * self.width]))
    }

    /// Bytes of memory the table holds (capacity, not just length), for the
    /// memory benchmark.
    pub fn memory_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<StateKey>()
            + self.keys.iter().map(StateKey::heap_bytes).sum::<usize>()
            + self.values.capacity() * std::mem::size_of::<f64>()
            + self.index.allocation_size()
    }

    /// Reserves room for `additional` more states.
    pub fn reserve(&mut self, additional: usize) {
        self.keys.reserve(additional);
        self.values.reserve(additional * self.width);
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.index
            .reserve(additional, |&j| key_hash(keys[j as usize].as_ref(), hasher));
    }

    /// Changes the row width between one and two tables (`n_actions` per
    /// table): going to two copies each row; going to one averages A and B.
    pub(crate) fn reshape(&mut self, n_actions: usize, tables: usize) {
        let old_tables = self.width / n_actions;
        if old_tables == tables {
            return;
        }
        let mut out = Vec::with_capacity(self.keys.len() * n_actions * tables);
        for row in self.values.chunks_exact(self.width) {
            if tables == 2 {
                out.extend_from_slice(row);
                out.extend_from_slice(row);
            } else {
                out.extend((0..n_actions).map(|a| (row[a] + row[n_actions + a]) / 2.0));
            }
        }
        self.values = out;
        self.width = n_actions * tables;
    }

    /// Grows keys and values together by half (not the doubling of `Vec`):
    /// a table that just outgrew its capacity then holds at most 1.5x the
    /// room it needs, which keeps a stored 4-action state under 96 bytes at
    /// every size.
    #[cold]
    fn grow(&mut self) {
        let rows = self.keys.len();
        let target = (rows + rows / 2).max(16);
        self.keys.reserve_exact(target - self.keys.len());
        self.values
            .reserve_exact(target * self.width - self.values.len());
    }

    /// The row number of `key`. One probe per key kind, so that each
    /// probe's equality test is a few instructions that inline into
    /// hashbrown's loop (one generic test covering every kind did not).
    #[inline(always)]
    fn find(&self, key: StateRef<'_>, hash: u64) -> Option<usize> {
        let keys = &self.keys;
        let found = match key {
            StateRef::Int(i) => self.index.find(
                hash,
                |&j| matches!(keys.get(j as usize), Some(StateKey::Int(k)) if *k == i),
            ),
            StateRef::Str(s) => self.index.find(
                hash,
                |&j| matches!(keys.get(j as usize), Some(StateKey::Str(k)) if **k == *s),
            ),
            StateRef::Array(_) => self.index.find(hash, |&j| match keys.get(j as usize) {
                Some(stored) => key_eq(stored, key),
                None => false,
            }),
        };
        found.map(|&j| j as usize)
    }
}

impl QRows for QTable {
    #[inline(always)]
    fn row(&self, key: StateRef<'_>) -> Option<&[f64]> {
        let i = self.find(key, key_hash(key, &self.hasher))?;
        Some(&self.values[i * self.width..(i + 1) * self.width])
    }

    #[inline(always)]
    fn row_or_insert(&mut self, key: StateRef<'_>, init: f64) -> (&mut [f64], bool) {
        let hash = key_hash(key, &self.hasher);
        let (i, inserted) = match self.find(key, hash) {
            Some(i) => (i, false),
            None => (self.insert(key, hash, init), true),
        };
        let w = self.width;
        (&mut self.values[i * w..(i + 1) * w], inserted)
    }
}

/// Row access by row number, for [`crate::Model`]'s fast path: it remembers
/// the row it used last and checks that row's key before it probes (rows
/// never move, so a remembered number stays valid; the key check makes a
/// stale one harmless).
impl QTable {
    /// The row number of `key` if row `hint` holds it: one key comparison,
    /// no hashing.
    #[inline(always)]
    pub(crate) fn check_hint(&self, hint: usize, key: StateRef<'_>) -> Option<usize> {
        let stored = self.keys.get(hint)?;
        let same = match (stored, key) {
            (StateKey::Int(x), StateRef::Int(y)) => *x == y,
            (StateKey::Str(x), StateRef::Str(y)) => **x == *y,
            (StateKey::Array(_), StateRef::Array(_)) => key_eq(stored, key),
            _ => false,
        };
        same.then_some(hint)
    }

    /// The row number of `key`, inserting a row filled with `init` if
    /// absent; the flag says whether it was inserted.
    #[inline(always)]
    pub(crate) fn index_or_insert(&mut self, key: StateRef<'_>, init: f64) -> (usize, bool) {
        let hash = key_hash(key, &self.hasher);
        match self.find(key, hash) {
            Some(i) => (i, false),
            None => (self.insert(key, hash, init), true),
        }
    }

    /// The row number of `key`, if stored ([`QTable::position`], inlined).
    #[inline(always)]
    pub(crate) fn index_of(&self, key: StateRef<'_>) -> Option<usize> {
        self.find(key, key_hash(key, &self.hasher))
    }

    /// Row `i`'s values (`i` < `len()`).
    #[inline(always)]
    pub(crate) fn values_at(&self, i: usize) -> &[f64] {
        let w = self.width;
        &self.values[i * w..(i + 1) * w]
    }

    /// Row `i`'s values, writable (`i` < `len()`).
    #[inline(always)]
    pub(crate) fn values_at_mut(&mut self, i: usize) -> &mut [f64] {
        let w = self.width;
        &mut self.values[i * w..(i + 1) * w]
    }
}

impl QTable {
    /// Appends a row for `key` (known absent), filled with `init`; returns
    /// its number. Out of line: the hot path is the lookup.
    #[inline(never)]
    fn insert(&mut self, key: StateRef<'_>, hash: u64, init: f64) -> usize {
        let i = self.keys.len();
        if i == self.keys.capacity() || self.values.len() + self.width > self.values.capacity() {
            self.grow();
        }
        self.keys.push(StateKey::from_canonical(key));
        self.values.resize(self.values.len() + self.width, init);
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.index.insert_unique(hash, i as u32, |&j| {
            key_hash(keys[j as usize].as_ref(), hasher)
        });
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_and_order() {
        let mut t = QTable::new(2);
        assert!(t.row(StateRef::Int(1)).is_none());
        let (r, ins) = t.row_or_insert(StateRef::Int(1), 0.5);
        assert!(ins);
        r[1] = 3.0;
        let (_, ins) = t.row_or_insert(StateRef::Str("a"), 0.0);
        assert!(ins);
        let (r, ins) = t.row_or_insert(StateRef::Int(1), 0.0);
        assert!(!ins);
        assert_eq!(r, &[0.5, 3.0]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.row_at(1).unwrap().0, &StateKey::Str("a".into()));
        for i in 0..1000 {
            t.row_or_insert(StateRef::Int(i + 10), 0.0);
        }
        assert_eq!(t.row(StateRef::Int(1)).unwrap(), &[0.5, 3.0]);
        assert_eq!(t.len(), 1002);
    }

    #[test]
    fn from_rows_rejects_corruption() {
        let k = vec![StateKey::Int(1), StateKey::Int(1)];
        assert!(QTable::from_rows(1, k, vec![0.0, 0.0]).is_err());
        assert!(QTable::from_rows(2, vec![StateKey::Int(1)], vec![0.0]).is_err());
        assert!(QTable::from_rows(1, vec![StateKey::Int(1)], vec![f64::NAN]).is_err());
        let neg = vec![StateKey::Array(vec![-0.0].into())];
        assert!(QTable::from_rows(1, neg, vec![0.0]).is_err());
        let ok =
            QTable::from_rows(1, vec![StateKey::Int(1), StateKey::Int(2)], vec![1.0, 2.0]).unwrap();
        assert_eq!(ok.row(StateRef::Int(2)).unwrap(), &[2.0]);
    }

    #[test]
    fn reshape_copies_and_averages() {
        let mut t = QTable::new(2);
        t.row_or_insert(StateRef::Int(0), 0.0)
            .0
            .copy_from_slice(&[1.0, 2.0]);
        t.reshape(2, 2);
        assert_eq!(t.row(StateRef::Int(0)).unwrap(), &[1.0, 2.0, 1.0, 2.0]);
        t.row_or_insert(StateRef::Int(0), 0.0).0[2] = 3.0;
        t.reshape(2, 1);
        assert_eq!(t.row(StateRef::Int(0)).unwrap(), &[2.0, 2.0]);
    }
}
