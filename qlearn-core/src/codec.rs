//! Model serialization: one versioned binary format and a JSON export.
//!
//! Binary layout (all integers little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `QLRN` |
//! | 2 | format version (1 or 2, see below) |
//! | 2 | reserved, must be 0 |
//! | 8 | payload length |
//! | 4 | CRC-32 of the payload |
//! | n | payload: bincode (standard config, fixed-width integers) |
//!
//! Version 1's payload is the model. Version 2's is the same model followed
//! by its [`DecisionLog`] (decisions, rewards, episodes, setting and counts)
//! as JSON text in one bincode string: what an in-process agent needs to
//! stop and resume with pending decisions ([`encode_with_decisions`]).
//! A model without a log is written as version 1, byte for byte what
//! earlier builds wrote and read (the service's export and import format);
//! every build reads version 1, and [`Model::from_bytes`] reads version 2
//! too, without the log.
//!
//! The same bytes move a model between Rust, Python and the server. Decoding
//! checks everything (length, checksum, version, every range of the
//! configuration, canonical keys, the log's records against the model) and
//! returns [`Error::Decode`] for truncated, corrupted or future-version
//! input; it never panics.

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::decisions::DecisionLog;
use crate::error::{Error, Result};
use crate::model::{Counters, Learner, Model};
use crate::state::{canonical_key, State, StateKey};
use crate::table::QTable;

/// The four bytes every binary model starts with.
pub const MAGIC: &[u8; 4] = b"QLRN";
/// The newest binary format version this build reads and writes (2: a
/// model with its decision log; a model alone is written as version 1).
pub const FORMAT_VERSION: u16 = 2;
/// The version of a model alone (and of the JSON export).
const MODEL_ONLY_VERSION: u16 = 1;
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

/// Encodes `model` in the binary format with its decision log, if any:
/// version 2 with a log, version 1 (exactly [`Model::to_bytes`]) without.
pub fn encode_with_decisions(model: &Model, log: Option<&DecisionLog>) -> Result<Vec<u8>> {
    let mut payload = model.payload()?;
    let version = match log {
        None => MODEL_ONLY_VERSION,
        Some(log) => {
            // Keys sorted: the same model and log give the same bytes (the
            // log keeps its records in hash maps, iterated in any order).
            let value = serde_json::to_value(log)
                .map_err(|e| Error::Internal(format!("decision log to JSON: {e}")))?;
            let text = sorted(value).to_string();
            bincode::serde::encode_into_std_write(&text, &mut payload, bincode_config())
                .map_err(|e| Error::Internal(format!("encoding failed: {e}")))?;
            FORMAT_VERSION
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// `v` with the keys of every object in sorted order (whether or not
/// serde_json's `preserve_order` feature is on in the build).
fn sorted(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Decodes bytes of either version: the model, and its decision log for
/// version 2 (re-validated: its setting, its episodes' steps, and every
/// decision's state, allowed actions and action against the model).
pub fn decode_with_decisions(bytes: &[u8]) -> Result<(Model, Option<DecisionLog>)> {
    let (version, payload) = unframe(bytes)?;
    let (snap, used): (Snapshot, usize) =
        bincode::serde::decode_from_slice(payload, bincode_config())
            .map_err(|e| Error::Decode(e.to_string()))?;
    let rest = &payload[used..];
    let model = snap.into_model()?;
    if version == MODEL_ONLY_VERSION {
        if !rest.is_empty() {
            return Err(Error::Decode("trailing bytes after the model".into()));
        }
        return Ok((model, None));
    }
    let (text, used): (String, usize) =
        bincode::serde::decode_from_slice(rest, bincode_config())
            .map_err(|e| Error::Decode(format!("the decision log: {e}")))?;
    if used != rest.len() {
        return Err(Error::Decode(
            "trailing bytes after the decision log".into(),
        ));
    }
    let log = decision_log_from_json(&model, &text)?;
    Ok((model, Some(log)))
}

/// A decision log from its JSON (serde's form of [`DecisionLog`], what
/// version 2 carries), checked as version 2's is: its setting, its
/// episodes' steps, and every decision's state, allowed actions, action
/// and baseline action against `model`. Errors are [`Error::Decode`].
pub fn decision_log_from_json(model: &Model, text: &str) -> Result<DecisionLog> {
    let log: DecisionLog =
        serde_json::from_str(text).map_err(|e| Error::Decode(format!("the decision log: {e}")))?;
    let log = DecisionLog::from_parts(log.into_parts()).map_err(|e| match e {
        Error::InvalidField { field, message } => {
            Error::Decode(format!("the decision log: invalid {field}: {message}"))
        }
        other => other,
    })?;
    let n = model.config().n_actions;
    for rec in log.decisions() {
        let fits = rec.action < n
            && rec.baseline_action.is_none_or(|b| b < n)
            && model
                .learner()
                .validate_predict(rec.state.as_ref(), rec.allowed_actions.as_deref())
                .is_ok();
        if !fits {
            return Err(Error::Decode(format!(
                "the decision log: decision {:?} does not fit the model",
                rec.decision_id
            )));
        }
    }
    Ok(log)
}

/// Checks the header and checksum; the version and the payload.
fn unframe(bytes: &[u8]) -> Result<(u16, &[u8])> {
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
    Ok((version, payload))
}

impl Model {
    /// Encodes the model in the binary format (magic, version 1, checksum,
    /// bincode payload); see [`encode_with_decisions`] for its decision log.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        encode_with_decisions(self, None)
    }

    /// The bincode payload of the model alone.
    fn payload(&self) -> Result<Vec<u8>> {
        let l = self.learner();
        let snap = SnapshotRef {
            config: l.config(),
            epsilon: l.epsilon(),
            rng: l.rng_state(),
            counters: l.counters(),
            keys: KeysRef(self.table()),
            values: self.table().values(),
        };
        bincode::serde::encode_to_vec(&snap, bincode_config())
            .map_err(|e| Error::Internal(format!("encoding failed: {e}")))
    }

    /// Decodes a model written by [`Model::to_bytes`] (or by an older
    /// build); a version-2 file's decision log is checked and left out
    /// ([`decode_with_decisions`] returns it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        decode_with_decisions(bytes).map(|(model, _)| model)
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
            version: MODEL_ONLY_VERSION,
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
        if doc.version != MODEL_ONLY_VERSION {
            return Err(Error::Decode(format!(
                "format version {} is not supported (the JSON export is version {MODEL_ONLY_VERSION})",
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
