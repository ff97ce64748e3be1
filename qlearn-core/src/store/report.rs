//! What a metered update returns to its caller: each experience's outcome
//! and, when asked ([`Report::Touched`]), the Q-rows the call wrote and the
//! model's statistics after it, so a caller that publishes the change (the
//! server's event stream) need not read the model back.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::model::{Experience, Learner, Stats, UpdateOutcome};
use crate::state::{canonical_key, StateKey};
use crate::table::QTable;

/// What [`Store::update`](super::Store::update) reports besides the
/// outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Report {
    /// The outcomes only: nothing more is copied.
    #[default]
    Outcomes,
    /// Also the rows the call wrote ([`Updated::touched`]).
    Touched,
}

/// The result of [`Store::update`](super::Store::update).
#[derive(Clone, Debug, PartialEq)]
pub struct Updated {
    /// One outcome per experience, in order.
    pub outcomes: Vec<UpdateOutcome>,
    /// With [`Report::Touched`], what the call changed; `None` otherwise.
    pub touched: Option<Touched>,
}

/// The Q-rows an update call wrote, as
/// [`Store::export_model`](super::Store::export_model) shows them right
/// after the call (an update writes exactly its state's row).
#[derive(Clone, Debug, PartialEq)]
pub struct Touched {
    /// Each row written, once, in order of first write: the state's
    /// canonical key and its Q-values as users see them.
    pub rows: Vec<(StateKey, Vec<f64>)>,
    /// For experience `i` of the call, the index in `rows` of its state.
    pub state_rows: Vec<usize>,
    /// The model's statistics after the call.
    pub stats: Stats,
}

impl Touched {
    /// The Q-values of experience `i`'s state after the call.
    pub fn state_q_values(&self, i: usize) -> Option<&[f64]> {
        let row = *self.state_rows.get(i)?;
        self.rows.get(row).map(|(_, q)| q.as_slice())
    }
}

/// What `exps` (just applied by `learner` to `table`) wrote, read from the
/// table: one lookup per experience, one copy per distinct row.
pub(crate) fn touched<'e>(
    learner: &Learner,
    table: &QTable,
    exps: impl ExactSizeIterator<Item = Experience<'e>>,
) -> Result<Touched> {
    let bins = learner.config().state_bins.as_deref();
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut rows = Vec::new();
    let mut state_rows = Vec::with_capacity(exps.len());
    for x in exps {
        let key = canonical_key(x.state, bins)?;
        let pos = table
            .position(key.as_ref())
            .ok_or_else(|| Error::Internal("an updated state has no Q-row".into()))?;
        let at = *index.entry(pos).or_insert_with(|| {
            let q = learner.visible_q(table.row_at(pos).map(|(_, v)| v));
            rows.push((key, q));
            rows.len() - 1
        });
        state_rows.push(at);
    }
    Ok(Touched {
        rows,
        state_rows,
        stats: learner.stats(),
    })
}

/// The result of an update call whose outcomes are `outcomes`, with what
/// `report` asks for.
pub(crate) fn updated<'e>(
    report: Report,
    outcomes: Vec<UpdateOutcome>,
    learner: &Learner,
    table: &QTable,
    exps: impl ExactSizeIterator<Item = Experience<'e>>,
) -> Result<Updated> {
    let touched = match report {
        Report::Outcomes => None,
        Report::Touched => Some(touched(learner, table, exps)?),
    };
    Ok(Updated { outcomes, touched })
}
