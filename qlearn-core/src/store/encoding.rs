//! What the SQL stores (SQLite and PostgreSQL) share: how a state key, a
//! Q-row and a learner's state are kept in a database column, and the
//! [`QRows`] wrapper that records which rows an update wrote.
//!
//! All numbers are little-endian; every decoder checks lengths and tags and
//! reports corruption as [`Error::Storage`] naming the backend, never panics.
//!
//! | column | layout |
//! | --- | --- |
//! | key | tag `0` + i64 (integer state), tag `1` + UTF-8 (string), tag `2` + f64s (array) |
//! | vals | `width` f64s |
//! | learner | version `1`, epsilon f64, rng 4×u64, predictions, updates, episodes, states u64, reward_sum, episode_return f64 |
//! | returns | the recent episode returns, f64s, oldest first |
//! | config | the [`ModelConfig`] as JSON |

use std::collections::VecDeque;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::{Counters, Learner, RECENT_RETURNS};
use crate::state::{StateKey, StateRef};
use crate::table::{QRows, QTable};

const KEY_INT: u8 = 0;
const KEY_STR: u8 = 1;
const KEY_ARRAY: u8 = 2;
const LEARNER_V1: u8 = 1;
const LEARNER_LEN: usize = 1 + 8 + 32 + 32 + 16;

fn corrupt(backend: &'static str, what: impl std::fmt::Display) -> Error {
    Error::storage(backend, format!("corrupt data in the database: {what}"))
}

/// Appends the encoding of a canonical key.
pub(crate) fn encode_key(k: StateRef<'_>, out: &mut Vec<u8>) {
    match k {
        StateRef::Int(i) => {
            out.push(KEY_INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        StateRef::Str(s) => {
            out.push(KEY_STR);
            out.extend_from_slice(s.as_bytes());
        }
        StateRef::Array(a) => {
            out.push(KEY_ARRAY);
            for x in a {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
}

/// The encoding of a canonical key, as a new vector.
pub(crate) fn key_bytes(k: StateRef<'_>) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    encode_key(k, &mut v);
    v
}

/// Decodes a key written by [`encode_key`].
pub(crate) fn decode_key(backend: &'static str, b: &[u8]) -> Result<StateKey> {
    let Some((&tag, rest)) = b.split_first() else {
        return Err(corrupt(backend, "empty state key"));
    };
    match tag {
        KEY_INT => {
            let a: [u8; 8] = rest
                .try_into()
                .map_err(|_| corrupt(backend, "integer state key of wrong length"))?;
            Ok(StateKey::Int(i64::from_le_bytes(a)))
        }
        KEY_STR => std::str::from_utf8(rest)
            .map(|s| StateKey::Str(s.into()))
            .map_err(|_| corrupt(backend, "string state key is not UTF-8")),
        KEY_ARRAY => {
            if rest.is_empty() || rest.len() % 8 != 0 {
                return Err(corrupt(backend, "array state key of wrong length"));
            }
            Ok(StateKey::Array(f64s(rest).collect()))
        }
        t => Err(corrupt(backend, format!("unknown state key tag {t}"))),
    }
}

fn f64s(b: &[u8]) -> impl Iterator<Item = f64> + '_ {
    b.chunks_exact(8).map(|c| {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        f64::from_le_bytes(a)
    })
}

/// Appends the Q-values of one row.
pub(crate) fn encode_values(v: &[f64], out: &mut Vec<u8>) {
    out.reserve(v.len() * 8);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// The Q-values of one row, as a new vector of bytes.
pub(crate) fn values_bytes(v: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 8);
    encode_values(v, &mut out);
    out
}

/// Appends a row's values decoded from `b` to `out`, checking the width.
pub(crate) fn decode_values(
    backend: &'static str,
    b: &[u8],
    width: usize,
    out: &mut Vec<f64>,
) -> Result<()> {
    if b.len() != width * 8 {
        return Err(corrupt(
            backend,
            format!("a Q-row has {} bytes, expected {}", b.len(), width * 8),
        ));
    }
    out.extend(f64s(b));
    Ok(())
}

/// The learner's small, frequently changing part (epsilon, rng, counters
/// without the learning curve).
pub(crate) fn learner_bytes(l: &Learner) -> Vec<u8> {
    let c = l.counters();
    let mut out = Vec::with_capacity(LEARNER_LEN);
    out.push(LEARNER_V1);
    out.extend_from_slice(&l.epsilon().to_le_bytes());
    for w in l.rng_state() {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for n in [c.predictions, c.updates, c.episodes, c.states] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&c.reward_sum.to_le_bytes());
    out.extend_from_slice(&c.episode_return.to_le_bytes());
    out
}

/// The learning curve (recent episode returns); changes only when an
/// episode ends.
pub(crate) fn returns_bytes(l: &Learner) -> Vec<u8> {
    let r = &l.counters().recent_returns;
    let mut out = Vec::with_capacity(r.len() * 8);
    for x in r {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The configuration as stored (JSON text).
pub(crate) fn config_text(backend: &'static str, c: &ModelConfig) -> Result<String> {
    serde_json::to_string(c).map_err(|e| Error::storage(backend, format!("encoding config: {e}")))
}

/// Rebuilds a learner from its stored columns.
pub(crate) fn decode_learner(
    backend: &'static str,
    config: &str,
    learner: &[u8],
    returns: &[u8],
) -> Result<Learner> {
    let config: ModelConfig = serde_json::from_str(config)
        .map_err(|e| corrupt(backend, format!("model configuration: {e}")))?;
    if learner.len() != LEARNER_LEN || learner[0] != LEARNER_V1 {
        return Err(corrupt(backend, "learner state of unknown layout"));
    }
    let mut words = learner[1..].chunks_exact(8).map(|c| {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        u64::from_le_bytes(a)
    });
    let mut next = || words.next().unwrap_or(0);
    let epsilon = f64::from_bits(next());
    let rng = [next(), next(), next(), next()];
    let (predictions, updates, episodes, states) = (next(), next(), next(), next());
    let reward_sum = f64::from_bits(next());
    let episode_return = f64::from_bits(next());
    if !returns.len().is_multiple_of(8) || returns.len() / 8 > RECENT_RETURNS {
        return Err(corrupt(backend, "learning curve of wrong length"));
    }
    let counters = Counters {
        predictions,
        updates,
        episodes,
        states,
        reward_sum,
        episode_return,
        recent_returns: f64s(returns).collect::<VecDeque<f64>>(),
    };
    Learner::from_parts(config, epsilon, rng, counters)
        .map_err(|e| corrupt(backend, format!("learner state: {e}")))
}

/// Rebuilds a table from decoded rows (checks canonical, unique keys).
pub(crate) fn table_from_rows(
    backend: &'static str,
    width: usize,
    keys: Vec<StateKey>,
    values: Vec<f64>,
) -> Result<QTable> {
    QTable::from_rows(width, keys, values).map_err(|e| corrupt(backend, e))
}

/// [`QRows`] over an in-memory table that records which rows the engine
/// wrote (their positions), so a store persists exactly those.
pub(crate) struct Tracked<'a> {
    pub(crate) table: &'a mut QTable,
    pub(crate) touched: &'a mut Vec<usize>,
}

impl QRows for Tracked<'_> {
    fn row(&self, key: StateRef<'_>) -> Option<&[f64]> {
        self.table.row(key)
    }

    fn row_or_insert(&mut self, key: StateRef<'_>, init: f64) -> (&mut [f64], bool) {
        let pos = self.table.position(key).unwrap_or(self.table.len());
        self.touched.push(pos);
        self.table.row_or_insert(key, init)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Experience, Model};

    #[test]
    fn keys_round_trip_and_corruption_is_an_error() {
        for k in [
            StateKey::Int(-7),
            StateKey::Str("s1".into()),
            StateKey::Str("".into()),
            StateKey::Array(vec![1.0, 2.5].into()),
        ] {
            assert_eq!(decode_key("t", &key_bytes(k.as_ref())).unwrap(), k);
        }
        for bad in [&[][..], &[0, 1], &[2, 1, 2, 3], &[9], &[1, 0xff]] {
            assert!(matches!(decode_key("t", bad), Err(Error::Storage { .. })));
        }
    }

    #[test]
    fn learner_round_trips() {
        let mut cfg = ModelConfig::new(3);
        cfg.seed = Some(4);
        let mut m = Model::new(cfg).unwrap();
        for i in 0..5 {
            m.update(&Experience::new(i, 1, 2.0, i + 1).done(i % 2 == 0))
                .unwrap();
        }
        m.predict(1, true, None).unwrap();
        let l = m.learner();
        let text = config_text("t", l.config()).unwrap();
        let back = decode_learner("t", &text, &learner_bytes(l), &returns_bytes(l)).unwrap();
        assert_eq!(back.counters(), l.counters());
        assert_eq!(back.rng_state(), l.rng_state());
        assert_eq!(back.epsilon(), l.epsilon());
        assert!(decode_learner("t", &text, &[1, 2], &[]).is_err());
        assert!(decode_learner("t", "{", &learner_bytes(l), &[]).is_err());
    }
}
