//! Packed Q-table keys: a state in two words (integers, short strings and
//! arrays of one or two numbers whole; longer ones in per-kind arenas), the
//! lookup [`Probe`] of a key, and the seeded hash of one table.

use std::hash::{BuildHasher, Hasher as _};

use foldhash::fast::RandomState;

use crate::state::{is_own_key, StateRef};

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
pub(super) struct Keys {
    pub(super) packed: Vec<Packed>,
    /// Content of strings longer than [`SHORT_STR`] bytes.
    pub(super) strs: String,
    /// Content of arrays of more than two numbers.
    pub(super) arrays: Vec<f64>,
}

impl Keys {
    /// The state of a packed key.
    pub(super) fn get<'s>(&'s self, k: &'s Packed) -> StateRef<'s> {
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
    pub(super) fn eq(&self, j: usize, probe: Probe<'_>) -> bool {
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
    pub(super) fn push(&mut self, probe: Probe<'_>) {
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

    /// Bytes of heap memory the keys hold (capacity).
    pub(super) fn heap_bytes(&self) -> usize {
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
pub(super) struct KeyHasher {
    seeds: [u64; 3],
    /// For the content of long keys.
    long: RandomState,
}

impl KeyHasher {
    /// A hasher with fresh random seeds.
    pub(super) fn new() -> Self {
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
    pub(super) fn hash(&self, probe: Probe<'_>) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
