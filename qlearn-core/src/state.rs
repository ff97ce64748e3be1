//! States and their canonical keys.
//!
//! A client's state is a string, an integer or an array of up to 64 finite
//! numbers ([`State`], or the borrowed [`StateRef`] on the hot path). Each
//! maps to one canonical [`StateKey`]: `-0.0` becomes `0.0`, NaN and infinities
//! are refused, and with `state_bins` an array becomes its bin indices. Keys
//! compare by value (the Q-table packs and hashes them, see
//! [`crate::table`]), so a lookup costs a few nanoseconds and never
//! allocates. A key converts back to the [`State`] the client sent
//! (`[1, 2]` stays an array, `"s1"` a string).

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Bin;
use crate::error::{Error, Result};
use crate::limits::MAX_STATE_DIMS;

/// A state as a client sends it (owned). JSON: a string, an integer or an
/// array of numbers.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// An integer state, e.g. a cell index.
    Int(i64),
    /// A string state, e.g. `"s1"`.
    Str(String),
    /// A vector state, e.g. `[row, col]` or continuous observations.
    Array(Vec<f64>),
}

/// A borrowed state: what the engine's hot path takes, so that callers (the
/// HTTP host, numpy arrays in Python) need not allocate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StateRef<'a> {
    /// An integer state.
    Int(i64),
    /// A string state.
    Str(&'a str),
    /// A vector state.
    Array(&'a [f64]),
}

impl State {
    /// The borrowed view of this state.
    pub fn as_ref(&self) -> StateRef<'_> {
        match self {
            State::Int(i) => StateRef::Int(*i),
            State::Str(s) => StateRef::Str(s),
            State::Array(a) => StateRef::Array(a),
        }
    }
}

impl StateRef<'_> {
    /// The owned state (a key converts back to the form the client sent).
    pub fn to_state(&self) -> State {
        match *self {
            StateRef::Int(i) => State::Int(i),
            StateRef::Str(s) => State::Str(s.to_owned()),
            StateRef::Array(a) => State::Array(a.to_vec()),
        }
    }
}

/// Serializes exactly as [`StateKey`] does (same enum name, variants and
/// content), so a table's keys are written without building owned keys.
impl Serialize for StateRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            StateRef::Int(i) => s.serialize_newtype_variant("StateKey", 0, "Int", i),
            StateRef::Str(x) => s.serialize_newtype_variant("StateKey", 1, "Str", x),
            StateRef::Array(a) => s.serialize_newtype_variant("StateKey", 2, "Array", a),
        }
    }
}

impl<'a> From<&'a State> for StateRef<'a> {
    fn from(s: &'a State) -> Self {
        s.as_ref()
    }
}
impl From<i64> for StateRef<'_> {
    fn from(i: i64) -> Self {
        StateRef::Int(i)
    }
}
impl<'a> From<&'a str> for StateRef<'a> {
    fn from(s: &'a str) -> Self {
        StateRef::Str(s)
    }
}
impl<'a> From<&'a [f64]> for StateRef<'a> {
    fn from(a: &'a [f64]) -> Self {
        StateRef::Array(a)
    }
}
impl From<i64> for State {
    fn from(i: i64) -> Self {
        State::Int(i)
    }
}
impl From<&str> for State {
    fn from(s: &str) -> Self {
        State::Str(s.to_owned())
    }
}
impl From<String> for State {
    fn from(s: String) -> Self {
        State::Str(s)
    }
}
impl From<Vec<f64>> for State {
    fn from(a: Vec<f64>) -> Self {
        State::Array(a)
    }
}

/// The limit on string states, re-exported where it was first defined.
pub use crate::limits::MAX_STATE_STR_BYTES;

/// The stored, canonical form of a state: the key of a Q-table row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StateKey {
    /// An integer state.
    Int(i64),
    /// A string state.
    Str(#[serde(deserialize_with = "crate::de::de_box_str")] Box<str>),
    /// A canonical array state (finite, no `-0.0`; bin indices with `state_bins`).
    Array(Box<[f64]>),
}

impl StateKey {
    /// The owned key of an already canonical state reference.
    pub fn from_canonical(key: StateRef<'_>) -> Self {
        match key {
            StateRef::Int(i) => StateKey::Int(i),
            StateRef::Str(s) => StateKey::Str(s.into()),
            StateRef::Array(a) => StateKey::Array(a.into()),
        }
    }

    /// The key as a borrowed state.
    pub fn as_ref(&self) -> StateRef<'_> {
        match self {
            StateKey::Int(i) => StateRef::Int(*i),
            StateKey::Str(s) => StateRef::Str(s),
            StateKey::Array(a) => StateRef::Array(a),
        }
    }

    /// The state in the form the client sent it.
    pub fn to_state(&self) -> State {
        match self {
            StateKey::Int(i) => State::Int(*i),
            StateKey::Str(s) => State::Str(s.to_string()),
            StateKey::Array(a) => State::Array(a.to_vec()),
        }
    }

    /// Whether the key is in canonical form (what a decoder checks).
    pub fn is_canonical(&self) -> bool {
        match self {
            StateKey::Int(_) => true,
            StateKey::Str(s) => s.len() <= MAX_STATE_STR_BYTES,
            StateKey::Array(a) => {
                !a.is_empty()
                    && a.len() <= MAX_STATE_DIMS
                    && a.iter()
                        .all(|x| x.is_finite() && x.to_bits() != (-0.0f64).to_bits())
            }
        }
    }

    /// Heap bytes owned by this key beyond its inline size.
    pub fn heap_bytes(&self) -> usize {
        match self {
            StateKey::Int(_) => 0,
            StateKey::Str(s) => s.len(),
            StateKey::Array(a) => a.len() * 8,
        }
    }
}

impl PartialEq for StateKey {
    fn eq(&self, other: &Self) -> bool {
        key_eq(self, other.as_ref())
    }
}
impl Eq for StateKey {}

/// Equality of a stored key and a canonical key (arrays bitwise, which is
/// value equality once `-0.0` and NaN are gone).
#[inline(always)]
pub(crate) fn key_eq(stored: &StateKey, k: StateRef<'_>) -> bool {
    match (stored, k) {
        (StateKey::Int(x), StateRef::Int(y)) => *x == y,
        (StateKey::Str(x), StateRef::Str(y)) => **x == *y,
        (StateKey::Array(x), StateRef::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        _ => false,
    }
}

/// Room for a normalised array key: `None` until an array needs one (only
/// its tag is written on the hot path, not its 512 bytes).
pub(crate) type KeyBuf = Option<[f64; MAX_STATE_DIMS]>;

/// The canonical key of `state`, without allocating. Integer and string
/// states are their own keys, and so is an array that is already canonical
/// (no `-0.0`, no `state_bins`); otherwise the normalised array is written
/// to `buf`. Errors if the state is not valid for a model with these
/// `bins`; `what` names the state in the message (`state`, `next_state`).
#[inline(always)]
pub(crate) fn canonical<'a>(
    state: StateRef<'a>,
    bins: Option<&[Bin]>,
    what: &str,
    buf: &'a mut KeyBuf,
) -> Result<StateRef<'a>> {
    if bins.is_none() && is_own_key(state) {
        return Ok(state);
    }
    // The slow path reports only a length: the key itself never travels
    // through its return slot (which cost a store-forwarding stall on the
    // fast path when it did).
    let len = canonical_slow(state, bins, what, buf)?;
    match buf {
        Some(b) => Ok(StateRef::Array(&b[..len])),
        None => Err(Error::Internal("canonical key buffer not filled".into())),
    }
}

/// Runs `f` with the canonical key of `state` (see [`canonical`]).
#[inline]
pub(crate) fn with_key<R>(
    state: StateRef<'_>,
    bins: Option<&[Bin]>,
    what: &str,
    f: impl FnOnce(StateRef<'_>) -> R,
) -> Result<R> {
    let mut buf = None;
    Ok(f(canonical(state, bins, what, &mut buf)?))
}

/// Whether `state` is valid and its own canonical key for a model without
/// `state_bins` (no normalisation needed). The engine's fast paths rely on
/// this test alone.
#[inline(always)]
pub(crate) fn is_own_key(state: StateRef<'_>) -> bool {
    match state {
        StateRef::Int(_) => true,
        StateRef::Str(s) => s.len() <= MAX_STATE_STR_BYTES,
        // The common short arrays without the loop's set-up.
        StateRef::Array(&[x]) => canonical_number(x),
        StateRef::Array(&[x, y]) => canonical_number(x) & canonical_number(y),
        StateRef::Array(a) => is_canonical_array(a),
    }
}

/// Whether `a` is a valid array state that needs no normalisation.
#[inline]
pub(crate) fn is_canonical_array(a: &[f64]) -> bool {
    !a.is_empty()
        && a.len() <= MAX_STATE_DIMS
        // One fold over the numbers, no branch per number.
        && a.iter().fold(true, |ok, &x| ok & canonical_number(x))
}

/// Whether `x` is finite and not `-0.0` (its own canonical form), without
/// branching: the exponent is not all ones, and the bits are not exactly the
/// sign bit.
#[inline(always)]
pub(crate) fn canonical_number(x: f64) -> bool {
    const NEG_ZERO: u64 = 0x8000_0000_0000_0000;
    // Without the sign bit, a finite number's bits are below the exponent
    // all ones (shifted up by one).
    const INF_SHIFTED: u64 = 0xFFE0_0000_0000_0000;
    let b = x.to_bits();
    ((b << 1) < INF_SHIFTED) & (b != NEG_ZERO)
}

/// Everything [`canonical`] does not do inline: errors, binning, `-0.0`.
/// On success the key is the first `len` numbers of `buf`.
#[inline(never)]
fn canonical_slow(
    state: StateRef<'_>,
    bins: Option<&[Bin]>,
    what: &str,
    buf: &mut KeyBuf,
) -> Result<usize> {
    match state {
        StateRef::Int(_) | StateRef::Str(_) => {
            if let StateRef::Str(s) = state {
                if s.len() > MAX_STATE_STR_BYTES {
                    return Err(Error::state(
                        what,
                        format!("{what}: strings may have at most {MAX_STATE_STR_BYTES} bytes"),
                    ));
                }
            }
            Err(Error::state(
                what,
                format!(
                "{what}: this model discretizes states (state_bins); send an array of {} numbers",
                bins.map_or(0, <[Bin]>::len)
            ),
            ))
        }
        StateRef::Array(a) => canonical_array(a, bins, buf.insert([0.0f64; MAX_STATE_DIMS]), what),
    }
}

fn canonical_array(
    a: &[f64],
    bins: Option<&[Bin]>,
    buf: &mut [f64; MAX_STATE_DIMS],
    what: &str,
) -> Result<usize> {
    if a.is_empty() || a.len() > MAX_STATE_DIMS {
        return Err(Error::state(
            what,
            format!(
                "{what}: an array state must have 1 to {MAX_STATE_DIMS} numbers, got {}",
                a.len()
            ),
        ));
    }
    if let Some(b) = bins {
        if b.len() != a.len() {
            return Err(Error::state(
                what,
                format!(
                    "{what}: state_bins has {} dimensions but the state has {}",
                    b.len(),
                    a.len()
                ),
            ));
        }
    }
    for (i, &x) in a.iter().enumerate() {
        if !x.is_finite() {
            return Err(Error::state(
                what,
                format!("{what}: element {i} is not a finite number"),
            ));
        }
        buf[i] = match bins {
            Some(b) => b[i].index(x) as f64,
            None => x + 0.0, // -0.0 + 0.0 == +0.0
        };
    }
    Ok(a.len())
}

/// Canonicalises a state into an owned key (allocates; not for the hot path).
pub fn canonical_key(state: StateRef<'_>, bins: Option<&[Bin]>) -> Result<StateKey> {
    let mut buf = None;
    let key = canonical(state, bins, "state", &mut buf)?;
    Ok(StateKey::from_canonical(key))
}

// ---- JSON form -----------------------------------------------------------

/// Largest integer magnitude an f64 holds exactly.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

struct Num(f64);
impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // Integral values print as integers, so `[1, 2]` reads back as sent.
        if self.0.fract() == 0.0 && self.0.abs() < EXACT_INT {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self {
            State::Int(i) => s.serialize_i64(*i),
            State::Str(x) => s.serialize_str(x),
            State::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(&Num(*x))?;
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = State;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an integer, or an array of up to 64 finite numbers")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<State, E> {
                Ok(State::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<State, E> {
                i64::try_from(v)
                    .map(State::Int)
                    .map_err(|_| E::custom("integer state out of the 64-bit signed range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<State, E> {
                Err(E::custom(format!(
                    "a number state must be an integer, got {v}; wrap it in an array for continuous states"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<State, E> {
                Ok(State::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<State, E> {
                Ok(State::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<State, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(MAX_STATE_DIMS));
                while let Some(x) = seq.next_element::<f64>()? {
                    if out.len() == MAX_STATE_DIMS {
                        return Err(de::Error::custom(format!(
                            "an array state may have at most {MAX_STATE_DIMS} numbers"
                        )));
                    }
                    out.push(x);
                }
                Ok(State::Array(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{self:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &State) -> StateKey {
        canonical_key(s.as_ref(), None).unwrap()
    }

    /// A Q-table holding only `k` (equal keys must hash and compare equal
    /// in it).
    fn one_row_table(k: &StateKey) -> crate::table::QTable {
        use crate::table::QRows;
        let mut t = crate::table::QTable::new(1);
        t.row_or_insert(k.as_ref(), 0.0);
        t
    }

    #[test]
    fn ints_and_floats_in_arrays_are_one_state_and_negative_zero_is_zero() {
        let a = key(&State::Array(vec![1.0, 2.0]));
        let b = key(&serde_json::from_str::<State>("[1, 2]").unwrap());
        assert_eq!(a, b);
        assert_eq!(one_row_table(&a).position(b.as_ref()), Some(0));
        let z = key(&State::Array(vec![-0.0]));
        assert_eq!(z, key(&State::Array(vec![0.0])));
        assert_eq!(z.as_ref(), StateRef::Array(&[0.0]));
    }

    #[test]
    fn canonical_array_test_matches_its_definition() {
        let edge = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::from_bits(1),
            f64::from_bits(0x8000_0000_0000_0001),
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
        ];
        for &x in &edge {
            for &y in &edge {
                let want = [x, y]
                    .iter()
                    .all(|v| v.is_finite() && v.to_bits() != (-0.0f64).to_bits());
                assert_eq!(is_canonical_array(&[x, y]), want, "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn kinds_never_collide() {
        assert_ne!(key(&State::Int(1)), key(&State::Str("1".into())));
        assert_ne!(key(&State::Int(1)), key(&State::Array(vec![1.0])));
    }

    #[test]
    fn bad_states_are_rejected() {
        for bad in [
            State::Array(vec![]),
            State::Array(vec![f64::NAN]),
            State::Array(vec![1.0, f64::INFINITY]),
            State::Array(vec![0.0; 65]),
            State::Str("x".repeat(MAX_STATE_STR_BYTES + 1)),
        ] {
            assert!(matches!(
                canonical_key(bad.as_ref(), None),
                Err(Error::InvalidState { .. })
            ));
        }
        assert!(serde_json::from_str::<State>("1.5").is_err());
        assert!(serde_json::from_str::<State>("null").is_err());
        assert!(serde_json::from_str::<State>("{\"a\":1}").is_err());
        assert!(serde_json::from_str::<State>("[1, \"a\"]").is_err());
        assert!(serde_json::from_str::<State>("18446744073709551615").is_err());
    }

    #[test]
    fn bins_discretize_arrays_and_refuse_scalars() {
        let bins = [
            Bin {
                low: 0.0,
                high: 1.0,
                bins: 10,
            },
            Bin {
                low: -1.0,
                high: 1.0,
                bins: 2,
            },
        ];
        let k = canonical_key(StateRef::Array(&[0.55, 0.5]), Some(&bins)).unwrap();
        assert_eq!(k.as_ref(), StateRef::Array(&[5.0, 1.0]));
        let k2 = canonical_key(StateRef::Array(&[0.51, 0.9]), Some(&bins)).unwrap();
        assert_eq!(k, k2);
        assert!(canonical_key(StateRef::Int(3), Some(&bins)).is_err());
        assert!(canonical_key(StateRef::Array(&[0.5]), Some(&bins)).is_err());
    }

    #[test]
    fn json_form_is_what_the_client_sent() {
        for text in ["7", "-3", "\"s1\"", "[1,2]", "[0.5,-2]", "[]"] {
            let s: State = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&s).unwrap(), text);
        }
        let k = key(&serde_json::from_str::<State>("[1.0, 2.5]").unwrap());
        assert_eq!(serde_json::to_string(&k.to_state()).unwrap(), "[1,2.5]");
    }

    fn any_state() -> impl Strategy<Value = State> {
        prop_oneof![
            any::<i64>().prop_map(State::Int),
            "[a-z0-9 ]{0,20}".prop_map(State::Str),
            prop::collection::vec(
                prop_oneof![
                    (-1000i32..1000).prop_map(f64::from),
                    -1e6f64..1e6,
                    Just(-0.0),
                ],
                1..8
            )
            .prop_map(State::Array),
        ]
    }

    proptest! {
        #[test]
        fn key_round_trips_through_state_and_json(s in any_state()) {
            let k = key(&s);
            let back = k.to_state();
            prop_assert_eq!(key(&back), k.clone());
            let json = serde_json::to_string(&back).unwrap();
            let parsed: State = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(key(&parsed), k);
        }

        #[test]
        fn equal_keys_hash_equal_and_int_float_arrays_agree(xs in prop::collection::vec(-1000i64..1000, 1..8)) {
            let ints = State::Array(xs.iter().map(|&x| x as f64).collect());
            let json = serde_json::to_string(&xs).unwrap();
            let parsed: State = serde_json::from_str(&json).unwrap();
            let (a, b) = (key(&ints), key(&parsed));
            prop_assert_eq!(one_row_table(&a).position(b.as_ref()), Some(0));
            prop_assert_eq!(a, b);
        }

        #[test]
        fn different_states_are_different_keys(a in any_state(), b in any_state()) {
            let (ka, kb) = (key(&a), key(&b));
            let same = match (&a, &b) {
                (State::Array(x), State::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p == q),
                _ => a == b,
            };
            prop_assert_eq!(ka == kb, same);
        }
    }
}
