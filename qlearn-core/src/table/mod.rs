//! The Q-table: rows of Q-values keyed by canonical states.
//!
//! [`QRows`] is what the learning rules read and write; [`QTable`] is the
//! in-memory implementation every model owns. A storage backend that keeps
//! rows elsewhere (PostgreSQL, one transaction per update) implements
//! [`QRows`] over the few rows it fetched, and the engine's rules run on it
//! unchanged.
//!
//! Layout: each row's key packed in 16 bytes (`Packed` below) in insertion
//! order, all Q-values in one flat `Vec<f64>` (`width` per state), and an
//! open-addressing `Index` from hash to row number. Integers, strings of up
//! to 14 bytes and arrays of one or two numbers are packed whole, so finding
//! them compares two words and follows no pointer; longer strings and arrays
//! keep their bytes in one shared arena per kind. A stored 4-action state
//! then costs 16 bytes of key, 32 of values and 10.7 to 21.3 of index; keys
//! and values grow by half when full (at most 50% slack), so it stays under
//! 96 bytes at any table size. Rows keep a stable order for paging. A table
//! holds at most `u32::MAX - 1` rows.

use std::hash::{BuildHasher, Hasher as _};

use foldhash::fast::RandomState;

use crate::error::{Error, Result};
use crate::state::{is_own_key, StateKey, StateRef};

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

// ---- packed keys -----------------------------------------------------------

/// A row's key in two words. Word 0 holds the integer, the first 8 bytes of a
/// short string, or the first number's bits; word 1's top 16 bits say what
/// the key is (the tags below), except for a two-number array, whose second
/// number fills word 1. Every tag has the f64 exponent bits all ones, which no
/// finite number has, so no two states share a packed form. Strings of more
/// than 14 bytes and arrays of more than two numbers keep their content in
/// the table's arenas: word 0 is the offset, word 1's low bits the length.
///
/// The byte view of a packed short string (`bytemuck::bytes_of`) is the
/// string itself, which assumes a little-endian target.
pub(crate) type Packed = [u64; 2];

#[cfg(not(target_endian = "little"))]
compile_error!("qlearn-core packs Q-table keys for little-endian targets only");

const TAG_INT: u64 = 0x7FF0;
const TAG_ARRAY_LONG: u64 = 0x7FF4;
const TAG_ARRAY1: u64 = 0x7FF8;
/// Or'ed with the length (0 to 14).
const TAG_STR_SHORT: u64 = 0xFFF0;
const TAG_STR_LONG: u64 = 0xFFFF;
/// Longest string packed whole.
const SHORT_STR: usize = 14;
const LEN_MASK: u64 = 0xFFFF_FFFF;

/// A key prepared for lookup: its packed form, and for a key too long to
/// pack, the content the stored row's arena bytes are compared with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Probe<'a> {
    Packed(Packed),
    Str(&'a str),
    Array(&'a [f64]),
}

impl<'a> Probe<'a> {
    /// The probe of a canonical key.
    #[inline(always)]
    pub(crate) fn of(key: StateRef<'a>) -> Self {
        match key {
            StateRef::Int(i) => Probe::Packed([i as u64, TAG_INT << 48]),
            StateRef::Str(s) if s.len() <= SHORT_STR => Probe::Packed(pack_str(s.as_bytes())),
            StateRef::Str(s) => Probe::Str(s),
            StateRef::Array(&[x]) => Probe::Packed([x.to_bits(), TAG_ARRAY1 << 48]),
            StateRef::Array(&[x, y]) => Probe::Packed([x.to_bits(), y.to_bits()]),
            StateRef::Array(a) => Probe::Array(a),
        }
    }

    /// The probe of a state that is its own canonical key (a model without
    /// `state_bins`), or `None` if it is invalid or needs normalising (the
    /// general path then reports or normalises it): the validity test is
    /// `canonical`'s own ([`crate::state`]).
    #[inline(always)]
    pub(crate) fn checked(state: StateRef<'a>) -> Option<Self> {
        is_own_key(state).then(|| Probe::of(state))
    }
}

/// Packs a string of at most [`SHORT_STR`] bytes: the bytes in order,
/// zero-padded, the tag and length in the top 16 bits. Loads the bytes in
/// at most two overlapping reads (a byte-wise copy of a variable length is a
/// `memcpy` call).
#[inline(always)]
fn pack_str(b: &[u8]) -> Packed {
    let n = b.len();
    let (lo, hi) = if n >= 8 {
        let head = le_u64(&b[..8]);
        let tail = le_u64(&b[n - 8..]);
        // The tail's last n - 8 bytes are bytes 8.. of the string.
        let hi = if n > 8 { tail >> (8 * (16 - n)) } else { 0 };
        (head, hi)
    } else if n >= 4 {
        let head = le_u32(&b[..4]) as u64;
        let tail = le_u32(&b[n - 4..]) as u64;
        (head | tail << (8 * (n - 4)), 0)
    } else if n > 0 {
        let lo =
            b[0] as u64 | (b[n / 2] as u64) << (8 * (n / 2)) | (b[n - 1] as u64) << (8 * (n - 1));
        (lo, 0)
    } else {
        (0, 0)
    };
    [lo, hi | (TAG_STR_SHORT | n as u64) << 48]
}

#[inline(always)]
fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn le_u32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

/// The packed keys, in row order, with the arenas of the long ones.
#[derive(Clone, Debug, Default)]
struct Keys {
    packed: Vec<Packed>,
    /// Content of strings longer than [`SHORT_STR`] bytes.
    strs: String,
    /// Content of arrays of more than two numbers.
    arrays: Vec<f64>,
}

impl Keys {
    /// The state of a packed key.
    fn get<'s>(&'s self, k: &'s Packed) -> StateRef<'s> {
        let tag = k[1] >> 48;
        let (off, len) = (k[0] as usize, (k[1] & LEN_MASK) as usize);
        match tag {
            TAG_INT => StateRef::Int(k[0] as i64),
            TAG_ARRAY1 => StateRef::Array(bytemuck::cast_slice(&k[..1])),
            TAG_ARRAY_LONG => StateRef::Array(self.arrays.get(off..off + len).unwrap_or(&[])),
            TAG_STR_LONG => StateRef::Str(self.strs.get(off..off + len).unwrap_or("")),
            t if t & 0xFFF0 == TAG_STR_SHORT => {
                let bytes = &bytemuck::bytes_of(k)[..(t & 0xF) as usize];
                // Packed from a `&str` by `pack_str`: always valid UTF-8.
                StateRef::Str(std::str::from_utf8(bytes).unwrap_or_default())
            }
            _ => StateRef::Array(bytemuck::cast_slice(&k[..])),
        }
    }

    /// Whether row `j` holds the key of `probe`.
    #[inline(always)]
    fn eq(&self, j: usize, probe: Probe<'_>) -> bool {
        match probe {
            Probe::Packed(p) => self.packed.get(j) == Some(&p),
            Probe::Str(s) => self.packed.get(j).is_some_and(|k| {
                k[1] == (TAG_STR_LONG << 48 | s.len() as u64)
                    && self.strs.get(k[0] as usize..k[0] as usize + s.len()) == Some(s)
            }),
            Probe::Array(a) => self.packed.get(j).is_some_and(|k| {
                k[1] == (TAG_ARRAY_LONG << 48 | a.len() as u64)
                    && self
                        .arrays
                        .get(k[0] as usize..k[0] as usize + a.len())
                        .is_some_and(|b| bits_eq(a, b))
            }),
        }
    }

    /// Appends the key of `probe`.
    fn push(&mut self, probe: Probe<'_>) {
        let packed = match probe {
            Probe::Packed(p) => p,
            Probe::Str(s) => {
                let off = self.strs.len() as u64;
                self.strs.push_str(s);
                [off, TAG_STR_LONG << 48 | s.len() as u64]
            }
            Probe::Array(a) => {
                let off = self.arrays.len() as u64;
                self.arrays.extend_from_slice(a);
                [off, TAG_ARRAY_LONG << 48 | a.len() as u64]
            }
        };
        self.packed.push(packed);
    }

    fn heap_bytes(&self) -> usize {
        self.packed.capacity() * std::mem::size_of::<Packed>()
            + self.strs.capacity()
            + self.arrays.capacity() * std::mem::size_of::<f64>()
    }
}

/// Bitwise equality of two arrays (value equality once `-0.0` and NaN are
/// gone).
#[inline]
fn bits_eq(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The hash function of one table: random seeds, so crafted states cannot
/// be made to collide in advance.
#[derive(Clone, Debug)]
struct KeyHasher {
    seeds: [u64; 3],
    /// For the content of long keys.
    long: RandomState,
}

impl KeyHasher {
    fn new() -> Self {
        let long = RandomState::default();
        KeyHasher {
            seeds: [
                long.hash_one(1u64),
                long.hash_one(2u64),
                long.hash_one(3u64),
            ],
            long,
        }
    }

    /// A key's hash: one folded multiply of the two words of a packed key
    /// (foldhash over the content for a long key), then a second one, so
    /// that the top bits the index uses are well mixed for any seed (with
    /// one, sequential integers clustered into probe runs three times the
    /// expected length for some seeds).
    #[inline(always)]
    fn hash(&self, probe: Probe<'_>) -> u64 {
        let h = match probe {
            Probe::Packed(p) => folded_multiply(p[0] ^ self.seeds[0], p[1] ^ self.seeds[1]),
            Probe::Str(s) => self.long.hash_one(s.as_bytes()),
            Probe::Array(a) => {
                let mut h = self.long.build_hasher();
                for x in a {
                    h.write_u64(x.to_bits());
                }
                h.finish()
            }
        };
        folded_multiply(h ^ self.seeds[2], 0x9E37_79B9_7F4A_7C15)
    }
}

/// The high and low halves of a 128-bit product, xor-ed: every input bit
/// reaches the high bits.
#[inline(always)]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let p = x as u128 * y as u128;
    (p as u64) ^ ((p >> 64) as u64)
}

// ---- the index ---------------------------------------------------------------

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
struct Index {
    /// `2^k` home slots, then [`SPILL`] more.
    slots: Vec<u64>,
    /// `32 - k`: a tag's home slot is `tag >> shift`.
    shift: u32,
    len: usize,
}

/// Home slots of a new index.
const MIN_SLOTS: usize = 8;
/// Slots after the last home slot (a multiple of the group size).
const SPILL: usize = 32;
/// Slots tested together.
const GROUP: usize = 4;

impl Index {
    fn with_slots(n: usize) -> Self {
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
    fn find(&self, tag: u32, mut eq: impl FnMut(usize) -> bool) -> Option<usize> {
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
    fn insert(&mut self, tag: u32, row: usize) {
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
    fn reserve(&mut self, additional: usize) {
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

    fn allocation_size(&self) -> usize {
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
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

// ---- the table ---------------------------------------------------------------

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

    /// The straightforward packing `pack_str`'s overlapping reads must match.
    fn pack_str_by_copy(b: &[u8]) -> Packed {
        let mut buf = [0u8; 16];
        buf[..b.len()].copy_from_slice(b);
        let mut w = [0u64; 2];
        for (i, c) in buf.chunks_exact(8).enumerate() {
            w[i] = u64::from_le_bytes(c.try_into().unwrap());
        }
        w[1] |= (TAG_STR_SHORT | b.len() as u64) << 48;
        w
    }

    #[test]
    fn short_strings_pack_byte_for_byte_at_every_length() {
        let text = "héllo, wörld! ✓ and more";
        for n in 0..=SHORT_STR {
            for start in 0..4 {
                let b = &text.as_bytes()[start..start + n];
                assert_eq!(pack_str(b), pack_str_by_copy(b), "length {n}");
            }
            let all_ones = vec![0xFFu8; n];
            assert_eq!(pack_str(&all_ones), pack_str_by_copy(&all_ones));
        }
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
