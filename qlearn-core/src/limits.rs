//! Every limit of the engine, in one place.
//!
//! Validation (`config`, `model`, `state`), error messages, the Python
//! bindings and the HTTP service's OpenAPI constraints all read these
//! constants, so a limit changes in one line. The values are the SPEC's.

/// Most actions a model may have (`n_actions` is in `1..=MAX_ACTIONS`).
pub const MAX_ACTIONS: usize = 4096;

/// Most numbers in an array state, and most `state_bins` dimensions.
pub const MAX_STATE_DIMS: usize = 64;

/// Longest string state, in bytes (UTF-8).
pub const MAX_STATE_STR_BYTES: usize = 1024;

/// Most bins in one `state_bins` dimension.
pub const MAX_BINS: u32 = 1_000_000;

/// Longest action name, in characters.
pub const MAX_ACTION_NAME_CHARS: usize = 64;

/// Largest reward magnitude accepted, and the bound on `|initial_q|`. With
/// both bounded no sequence of updates can overflow a Q-value, so an update
/// that passed validation always applies.
pub const MAX_REWARD: f64 = 1e12;

/// How many recent episode returns a model keeps (its learning curve).
pub const RECENT_RETURNS: usize = 1000;

/// Most experiences in one batch update (`POST /update/batch`). The engine's
/// `Model::update_batch` takes any number; the service enforces this one.
pub const MAX_BATCH: usize = 1000;
