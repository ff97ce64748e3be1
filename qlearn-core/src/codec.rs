//! Model serialization: one versioned binary format and a JSON export.
//!
//! Binary layout (all integers little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `QLRN` |
//! | 2 | format version (currently 1) |
//! | 2 | reserved, must be 0 |
//! | 8 | payload length |
//! | 4 | CRC-32 of the payload |
//! | n | payload: bincode (standard config, fixed-width integers) |
//!
//! The same bytes move a model between Rust, Python and the server. Decoding
//! checks everything (length, checksum, version, every range of the
//! configuration, canonical keys) and returns [`Error::Decode`] for truncated,
//! corrupted or future-version input; it never panics.

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::{Counters, Learner, Model};
use crate::state::{canonical_key, State, StateKey};
use crate::table::QTable;

/// The four bytes every binary model starts with.
pub const MAGIC: &[u8; 4] = b"QLRN";
/// The binary format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 1;
const HEADER_LEN: usize = 4 + 2 + 2 + 8 + 4;
/// Largest payload a decoder accepts (4 GiB).
const MAX_PAYLOAD: usize = 1 << 32;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
        .with_limit::<MAX_PAYLOAD>()
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    config: &'a ModelConfig,
    epsilon: f64,
    rng: [u64; 4],
    counters: &'a Counters,
    keys: KeysRef<'a>,
    values: &'a [f64],
}

/// A table's keys, serialized as the `Vec<StateKey>` they decode into.
struct KeysRef<'a>(&'a QTable);

impl Serialize for KeysRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.keys())
    }
}

#[derive(Deserialize)]
struct Snapshot {
    config: ModelConfig,
    epsilon: f64,
    rng: [u64; 4],
    counters: Counters,
    keys: Vec<StateKey>,
    values: Vec<f64>,
}

impl Snapshot {
    fn into_model(self) -> Result<Model> {
        let learner = Learner::from_parts(self.config, self.epsilon, self.rng, self.counters)
            .map_err(|e| match e {
                Error::InvalidField { field, message } => {
                    Error::Decode(format!("invalid {field}: {message}"))
                }
                other => other,
            })?;
        let table = QTable::from_rows(learner.width(), self.keys, self.values)?;
        Model::from_parts(learner, table)
    }
}

impl Model {
    /// Encodes the model in the binary format (magic, version, checksum,
    /// bincode payload).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let l = self.learner();
        let snap = SnapshotRef {
            config: l.config(),
            epsilon: l.epsilon(),
            rng: l.rng_state(),
            counters: l.counters(),
            keys: KeysRef(self.table()),
            values: self.table().values(),
        };
        let payload = bincode::serde::encode_to_vec(&snap, bincode_config())
            .map_err(|e| Error::Internal(format!("encoding failed: {e}")))?;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Decodes a model written by [`Model::to_bytes`] (this or an older
    /// format version).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::Decode(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if &bytes[0..4] != MAGIC {
            return Err(Error::Decode(
                "not a qlearn model (the magic bytes QLRN are missing)".into(),
            ));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version == 0 || version > FORMAT_VERSION {
            return Err(Error::Decode(format!(
                "format version {version} is not supported (this build reads 1..={FORMAT_VERSION}); upgrade qlearn"
            )));
        }
        if bytes[6..8] != [0, 0] {
            return Err(Error::Decode(
                "reserved header bytes are not zero (corrupted data)".into(),
            ));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[8..16]);
        let len = u64::from_le_bytes(len8);
        let payload = &bytes[HEADER_LEN..];
        if len != payload.len() as u64 {
            return Err(Error::Decode(format!(
                "payload is {} bytes but the header says {len} (truncated or padded)",
                payload.len()
            )));
        }
        let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        if crc32fast::hash(payload) != crc {
            return Err(Error::Decode("checksum mismatch (corrupted data)".into()));
        }
        let (snap, used): (Snapshot, usize) =
            bincode::serde::decode_from_slice(payload, bincode_config())
                .map_err(|e| Error::Decode(e.to_string()))?;
        if used != payload.len() {
            return Err(Error::Decode("trailing bytes after the model".into()));
        }
        snap.into_model()
    }

    /// The JSON export: configuration, state and every Q-table row with its
    /// state in the form the client sent it. Each row's `q` holds the raw
    /// values: `n_actions` of them, or `2 * n_actions` (table A, then B) for
    /// double Q-learning. Floats are written so that [`Model::from_json`]
    /// reads every bit back: the reloaded model continues exactly.
    pub fn to_json(&self) -> Result<String> {
        let l = self.learner();
        let rows: Vec<JsonRow> = (0..self.table().len())
            .filter_map(|i| self.table().row_at(i))
            .map(|(k, r)| JsonRow {
                state: k.to_state(),
                q: r.to_vec(),
            })
            .collect();
        let doc = JsonModel {
            format: JSON_FORMAT.into(),
            version: FORMAT_VERSION,
            config: l.config().clone(),
            epsilon: l.epsilon(),
            rng: l.rng_state(),
            counters: l.counters().clone(),
            q_table: rows,
        };
        serde_json::to_string(&doc).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Reads the JSON export.
    pub fn from_json(text: &str) -> Result<Model> {
        let doc: JsonModel =
            serde_json::from_str(text).map_err(|e| Error::Decode(e.to_string()))?;
        if doc.format != JSON_FORMAT {
            return Err(Error::Decode(format!(
                "format must be {JSON_FORMAT:?}, got {:?}",
                doc.format
            )));
        }
        if doc.version == 0 || doc.version > FORMAT_VERSION {
            return Err(Error::Decode(format!(
                "format version {} is not supported (this build reads 1..={FORMAT_VERSION})",
                doc.version
            )));
        }
        let width = doc
            .config
            .n_actions
            .saturating_mul(doc.config.algorithm.tables());
        let mut keys = Vec::with_capacity(doc.q_table.len());
        let mut values = Vec::with_capacity(doc.q_table.len().saturating_mul(width).min(1 << 24));
        for (i, row) in doc.q_table.into_iter().enumerate() {
            if row.q.len() != width {
                return Err(Error::Decode(format!(
                    "q_table[{i}] has {} Q-values, the configuration needs {width}",
                    row.q.len()
                )));
            }
            // Stored keys are already canonical (and binned): re-binning would
            // be wrong, so only normalise.
            let key = canonical_key(row.state.as_ref(), None)
                .map_err(|e| Error::Decode(format!("q_table[{i}]: {e}")))?;
            keys.push(key);
            values.extend_from_slice(&row.q);
        }
        Snapshot {
            config: doc.config,
            epsilon: doc.epsilon,
            rng: doc.rng,
            counters: doc.counters,
            keys,
            values,
        }
        .into_model()
    }
}

const JSON_FORMAT: &str = "qlearn-model";

#[derive(Serialize, Deserialize)]
struct JsonRow {
    state: State,
    q: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
struct JsonModel {
    format: String,
    version: u16,
    config: ModelConfig,
    epsilon: f64,
    rng: [u64; 4],
    counters: Counters,
    q_table: Vec<JsonRow>,
}
