//! The Q-table: rows of Q-values keyed by canonical states.
//!
//! [`QRows`] is what the learning rules read and write; [`QTable`] is the
//! in-memory implementation every model owns. A storage backend that keeps
//! rows elsewhere (PostgreSQL, one transaction per update) implements
//! [`QRows`] over the few rows it fetched, and the engine's rules run on it
//! unchanged.
//!
//! Layout: each row's key packed in 16 bytes (`keys`) in insertion order, all
//! Q-values in one flat `Vec<f64>` (`width` per state), and an open-addressing
//! index from hash to row number (`index`). Integers, strings of up to 14 bytes
//! and arrays of one or two numbers are packed whole, so finding them compares
//! two words and follows no pointer; longer strings and arrays keep their bytes
//! in one shared arena per kind. A stored 4-action state then costs 16 bytes of
//! key, 32 of values and 10.7 to 21.3 of index; keys and values grow by half
//! when full (at most 50% slack), so it stays under 96 bytes at any table size.
//! Rows keep a stable order for paging. A table holds at most `u32::MAX - 1`
//! rows.

mod index;
mod keys;

use crate::error::{Error, Result};
use crate::state::{StateKey, StateRef};

use index::{tag_of, Index, MIN_SLOTS};
pub(crate) use keys::Probe;
use keys::{KeyHasher, Keys};

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
    hasher: KeyHasher,
    width: usize,
    keys: Keys,
    values: Vec<f64>,
    index: Index,
}

impl QTable {
    /// An empty table whose rows hold `width` values.
    pub fn new(width: usize) -> Self {
        QTable {
            hasher: KeyHasher::new(),
            width,
            keys: Keys::default(),
            values: Vec::new(),
            index: Index::with_slots(MIN_SLOTS),
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
        if keys.len() >= u32::MAX as usize {
            return Err(Error::Decode("too many states".into()));
        }
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Decode(format!("Q-value {bad} is not finite")));
        }
        let mut table = QTable::new(width);
        table.keys.packed.reserve_exact(keys.len());
        table.index.reserve(keys.len());
        for (i, k) in keys.iter().enumerate() {
            if !k.is_canonical() {
                return Err(Error::Decode(format!("state {i} is not canonical")));
            }
            let probe = Probe::of(k.as_ref());
            let hash = table.hasher.hash(probe);
            if table.find(probe, hash).is_some() {
                return Err(Error::Decode(format!("state {i} appears twice")));
            }
            table.keys.push(probe);
            table.index.insert(tag_of(hash), i);
        }
        table.values = values;
        Ok(table)
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of stored states.
    pub fn len(&self) -> usize {
        self.keys.packed.len()
    }

    /// Whether no state is stored.
    pub fn is_empty(&self) -> bool {
        self.keys.packed.is_empty()
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = StateRef<'_>> + '_ {
        self.keys.packed.iter().map(|k| self.keys.get(k))
    }

    /// The key of row `i` (insertion order).
    pub fn key_at(&self, i: usize) -> Option<StateRef<'_>> {
        self.keys.packed.get(i).map(|k| self.keys.get(k))
    }

    /// All values, row after row.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The row number (insertion order) of `key`, if stored. Storage
    /// backends use it to write back exactly the rows an update touched.
    pub fn position(&self, key: StateRef<'_>) -> Option<usize> {
        self.index_of(key)
    }

    /// Row `i` (insertion order), with its key.
    pub fn row_at(&self, i: usize) -> Option<(StateRef<'_>, &[f64])> {
        let k = self.key_at(i)?;
        Some((k, self.values.get(i * self.width..(i + 1) * self.width)?))
    }

    /// Bytes of memory the table holds (capacity, not just length), for the
    /// memory benchmark.
    pub fn memory_bytes(&self) -> usize {
        self.keys.heap_bytes()
            + self.values.capacity() * std::mem::size_of::<f64>()
            + self.index.allocation_size()
    }

    /// Reserves room for `additional` more states.
    pub fn reserve(&mut self, additional: usize) {
        self.keys.packed.reserve(additional);
        self.values.reserve(additional * self.width);
        self.index.reserve(additional);
    }

    /// Changes the row width between one and two tables (`n_actions` per
    /// table): going to two copies each row; going to one averages A and B.
    pub(crate) fn reshape(&mut self, n_actions: usize, tables: usize) {
        let old_tables = self.width / n_actions;
        if old_tables == tables {
            return;
        }
        let mut out = Vec::with_capacity(self.len() * n_actions * tables);
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
        let rows = self.len();
        let target = (rows + rows / 2).max(16);
        self.keys.packed.reserve_exact(target - rows);
        self.values
            .reserve_exact(target * self.width - self.values.len());
    }

    /// The row number of the key of `probe`.
    #[inline(always)]
    fn find(&self, probe: Probe<'_>, hash: u64) -> Option<usize> {
        let keys = &self.keys;
        match probe {
            // The common case gets its own copy of the probe loop, with the
            // two-word comparison inlined.
            Probe::Packed(p) => self
                .index
                .find(tag_of(hash), |j| keys.packed.get(j) == Some(&p)),
            _ => self.index.find(tag_of(hash), |j| keys.eq(j, probe)),
        }
    }
}

impl QRows for QTable {
    #[inline(always)]
    fn row(&self, key: StateRef<'_>) -> Option<&[f64]> {
        let i = self.index_of(key)?;
        Some(self.values_at(i))
    }

    #[inline(always)]
    fn row_or_insert(&mut self, key: StateRef<'_>, init: f64) -> (&mut [f64], bool) {
        let (i, inserted) = self.index_or_insert(key, init);
        (self.values_at_mut(i), inserted)
    }
}

/// Row access by row number, for [`crate::Model`]'s fast path: it remembers
/// the row it used last and checks that row's key before it probes (rows
/// never move, so a remembered number stays valid; the key check makes a
/// stale one harmless).
impl QTable {
    /// The row number of the key of `probe` if row `hint` holds it: one key
    /// comparison (two words for a packed key), no hashing.
    #[inline(always)]
    pub(crate) fn hinted(&self, hint: usize, probe: Probe<'_>) -> Option<usize> {
        self.keys.eq(hint, probe).then_some(hint)
    }

    /// The row number of a prepared key, if stored.
    #[inline(always)]
    pub(crate) fn lookup(&self, probe: Probe<'_>) -> Option<usize> {
        self.find(probe, self.hasher.hash(probe))
    }

    /// The row number of `key`, inserting a row filled with `init` if
    /// absent; the flag says whether it was inserted.
    #[inline(always)]
    pub(crate) fn index_or_insert(&mut self, key: StateRef<'_>, init: f64) -> (usize, bool) {
        self.lookup_or_insert(Probe::of(key), init)
    }

    /// [`QTable::index_or_insert`] for a prepared key.
    #[inline(always)]
    pub(crate) fn lookup_or_insert(&mut self, probe: Probe<'_>, init: f64) -> (usize, bool) {
        let hash = self.hasher.hash(probe);
        match self.find(probe, hash) {
            Some(i) => (i, false),
            None => (self.insert(probe, hash, init), true),
        }
    }

    /// The row number of `key`, if stored.
    #[inline(always)]
    pub(crate) fn index_of(&self, key: StateRef<'_>) -> Option<usize> {
        self.lookup(Probe::of(key))
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

    /// All values, writable (row after row).
    #[inline(always)]
    pub(crate) fn values_mut(&mut self) -> &mut [f64] {
        &mut self.values
    }

    /// Row `i` of a table whose rows are `N` values wide, as an array (one
    /// bounds check, and the row's length is known to the compiler).
    #[inline(always)]
    pub(crate) fn row_n<const N: usize>(&self, i: usize) -> Option<&[f64; N]> {
        self.values.as_chunks::<N>().0.get(i)
    }
}

impl QTable {
    /// Appends a row for the key of `probe` (known absent), filled with
    /// `init`; returns its number. Out of line: the hot path is the lookup.
    #[inline(never)]
    fn insert(&mut self, probe: Probe<'_>, hash: u64, init: f64) -> usize {
        let i = self.len();
        if i == self.keys.packed.capacity()
            || self.values.len() + self.width > self.values.capacity()
        {
            self.grow();
        }
        self.keys.push(probe);
        self.values.resize(self.values.len() + self.width, init);
        self.index.insert(tag_of(hash), i);
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
        assert_eq!(t.row_at(1).unwrap().0, StateRef::Str("a"));
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

    /// Every kind of key, including the ones whose packed forms are closest
    /// (integer 0, the empty string, `[0]`, `[0, 0]`), is stored apart, found
    /// again and reads back as inserted, before and after the index grows.
    #[test]
    fn every_kind_of_key_round_trips() {
        let long_str = "a string that is longer than fourteen bytes";
        let arrays: Vec<Vec<f64>> = vec![
            vec![0.0],
            vec![0.0, 0.0],
            vec![1.5, -2.0],
            vec![f64::MIN_POSITIVE, f64::MAX],
            vec![-1e-300, 5e-324],
            vec![1.0, 2.0, 3.0],
            vec![1.0, 2.0, 3.0, 4.0],
            vec![0.5; 64],
        ];
        let mut keys: Vec<StateRef<'_>> = vec![
            StateRef::Int(0),
            StateRef::Int(-1),
            StateRef::Int(i64::MIN),
            StateRef::Int(i64::MAX),
            StateRef::Int(0x7FF0_0000_0000_0000),
            StateRef::Str(""),
            StateRef::Str("\0"),
            StateRef::Str("a"),
            StateRef::Str("cell-0001234"),
            StateRef::Str("fourteen-bytes"),
            StateRef::Str("fifteen-bytes!!"),
            StateRef::Str("ünïcödé"),
            StateRef::Str(long_str),
            StateRef::Str(&long_str[..20]),
        ];
        keys.extend(arrays.iter().map(|a| StateRef::Array(a)));
        let mut t = QTable::new(1);
        for (i, k) in keys.iter().enumerate() {
            let (row, inserted) = t.row_or_insert(*k, i as f64);
            assert!(inserted, "{k:?} collided with an earlier key");
            assert_eq!(row, &[i as f64]);
        }
        for n in 0..2000 {
            t.row_or_insert(StateRef::Int(1_000_000 + n), 0.0);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.position(*k), Some(i), "{k:?}");
            assert_eq!(t.key_at(i), Some(*k));
            assert_eq!(t.hinted(i, Probe::of(*k)), Some(i));
            assert_eq!(t.hinted(i + 1, Probe::of(*k)), None);
        }
        assert_eq!(t.keys().len(), t.len());
        assert!(t.keys().zip(&keys).all(|(a, b)| a == *b));
        let owned: Vec<StateKey> = t.keys().map(StateKey::from_canonical).collect();
        let copy = QTable::from_rows(1, owned, t.values().to_vec()).unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(copy.position(*k), Some(i));
        }
        assert_eq!(copy.position(StateRef::Str("fourteen-byte")), None);
        assert_eq!(copy.position(StateRef::Array(&[1.0, 2.0])), None);
    }
}
