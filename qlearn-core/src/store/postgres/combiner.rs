//! Combining concurrent calls of one user: the first caller leads and runs
//! everything queued in one transaction ([`PgStore::run_batch`]), the
//! others wait for their results (see the module docs of
//! [`PgStore`](super::PgStore), "Batched per user").

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use postgres::{Statement, Transaction};

use super::batch::{apply_batch, Retry, Step};
use super::pool::PgConn;
use super::{lock_plain, PgStore, BACKEND};
use crate::decisions::Decide;
use crate::error::{Error, Result};
use crate::model::Prediction;
use crate::state::State;
use crate::store::decisions::{decided_or_plain, Call as DCall};
use crate::store::{CallKind, Decided, Meter, OwnedExperience, Report, Updated};
use crate::tenancy::TierLimits;

/// A metered call's input, owned (a leader thread runs it).
pub(super) enum Call {
    Predict {
        state: State,
        explore: bool,
        allowed: Option<Vec<usize>>,
        /// A logging predict ([`Store::decide`](crate::store::Store::decide)):
        /// a model that logs decisions answers [`Outcome::LogsDecisions`].
        logging: bool,
    },
    Update {
        exps: Vec<OwnedExperience>,
        report: Report,
    },
    /// The behaviour policy's probabilities (metered, changes nothing).
    Probabilities {
        state: State,
        allowed: Option<Vec<usize>>,
        explore: bool,
    },
}

pub(super) enum Outcome {
    Predicted(Prediction),
    Updated(Updated),
    Probabilities(Vec<f64>),
    /// A logging predict found its model logging decisions: nothing was
    /// debited or changed; the caller takes the decision path.
    LogsDecisions,
}

pub(super) struct Request {
    pub(super) model: String,
    pub(super) user: String,
    pub(super) limits: TierLimits,
    pub(super) now: i64,
    pub(super) call: Call,
    pub(super) result: Mutex<Option<Result<Outcome>>>,
}

impl Request {
    /// `call` on `model_id` by `meter`'s user.
    pub(super) fn new(meter: &Meter<'_>, model_id: &str, call: Call) -> Request {
        Request {
            model: model_id.to_owned(),
            user: meter.user_id.to_owned(),
            limits: *meter.limits,
            now: meter.now,
            call,
            result: Mutex::new(None),
        }
    }

    /// What the call is metered as.
    pub(super) fn kind(&self) -> CallKind {
        match &self.call {
            Call::Predict { .. } | Call::Probabilities { .. } => CallKind::Predict,
            Call::Update { .. } => CallKind::Update,
        }
    }

    pub(super) fn n(&self) -> u64 {
        match &self.call {
            Call::Predict { .. } | Call::Probabilities { .. } => 1,
            Call::Update { exps, .. } => exps.len() as u64,
        }
    }

    pub(super) fn set(&self, r: Result<Outcome>) {
        *lock_plain(&self.result) = Some(r);
    }
}

/// A queued call whose result a leader sets.
pub(super) trait Queued: Send + Sync {
    /// What the call answers.
    type Out;
    /// The result, once a leader has set it.
    fn take(&self) -> Option<Result<Self::Out>>;
}

impl Queued for Request {
    type Out = Outcome;

    fn take(&self) -> Option<Result<Outcome>> {
        lock_plain(&self.result).take()
    }
}

/// Calls waiting for one user (or one model's decision calls), and
/// whether a leader is running a batch.
pub(super) struct Combiner<R> {
    state: Mutex<CombinerState<R>>,
    /// Signalled when a leader finishes a batch.
    done: Condvar,
    /// Signalled when a call is queued (a gathering leader waits on it).
    arrived: Condvar,
}

impl<R> Default for Combiner<R> {
    fn default() -> Self {
        Combiner {
            state: Mutex::new(CombinerState {
                queue: Vec::new(),
                leading: false,
                last_batch: 0,
                last_tx: Duration::ZERO,
            }),
            done: Condvar::new(),
            arrived: Condvar::new(),
        }
    }
}

/// Ends a leader's turn (also if the batch panicked, so followers are
/// never stuck).
struct Lead<'a, R>(&'a Combiner<R>);

impl<R> Drop for Lead<'_, R> {
    fn drop(&mut self) {
        lock_plain(&self.0.state).leading = false;
        self.0.done.notify_all();
    }
}

struct CombinerState<R> {
    queue: Vec<Arc<R>>,
    leading: bool,
    /// Calls in the last batch: how many a new leader expects to gather.
    last_batch: usize,
    /// How long the last batch's transaction took.
    last_tx: Duration,
}

/// The live combiners by key (a user, or a user's model).
pub(super) type Combiners<K, R> = Mutex<HashMap<K, Weak<Combiner<R>>>>;

/// The combiner of `key` in `map` (made when there is none).
pub(super) fn combiner_in<K: Eq + Hash, R>(map: &Combiners<K, R>, key: K) -> Arc<Combiner<R>> {
    let mut map = lock_plain(map);
    if let Some(c) = map.get(&key).and_then(Weak::upgrade) {
        return c;
    }
    if map.len() >= 1024 {
        map.retain(|_, w| w.strong_count() > 0);
    }
    let c = Arc::new(Combiner::default());
    map.insert(key, Arc::downgrade(&c));
    c
}

impl<R: Queued> Combiner<R> {
    /// Queues `req` with the other calls of this combiner and returns its
    /// result. When no batch is running, this thread leads: it runs
    /// everything queued (its call and everyone else's) with `run`, which
    /// sets every result; otherwise it waits for the running batch to
    /// finish and looks again.
    pub(super) fn call(&self, req: R, mut run: impl FnMut(&[Arc<R>])) -> Result<R::Out> {
        let req = Arc::new(req);
        let mut g = lock_plain(&self.state);
        g.queue.push(req.clone());
        if g.leading {
            self.arrived.notify_one();
        }
        loop {
            if let Some(r) = req.take() {
                return r;
            }
            if g.leading {
                g = self.done.wait(g).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            g.leading = true;
            let lead = Lead(self);
            // The callers of the last batch were all woken at once and are
            // queueing again: a leader that started at once would commit a
            // batch of one or two and make them wait a whole transaction
            // more. Give them a moment (a fraction of a transaction).
            let expect = g.last_batch;
            if g.queue.len() < expect {
                let deadline = std::time::Instant::now() + (g.last_tx / 2).min(MAX_GATHER);
                while g.queue.len() < expect {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    g = self
                        .arrived
                        .wait_timeout(g, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            let batch = std::mem::take(&mut g.queue);
            g.last_batch = batch.len();
            drop(g);
            let started = std::time::Instant::now();
            run(&batch);
            let took = started.elapsed();
            g = lock_plain(&self.state);
            g.last_tx = took;
            drop(g);
            drop(lead);
            g = lock_plain(&self.state);
        }
    }
}

/// Most model ids remembered as logging decisions (a hint: past it the set
/// starts over).
const LOGGING_HINTS: usize = 4096;

/// The longest a new leader waits for the callers of the previous batch to
/// queue again before it starts its transaction.
pub(super) const MAX_GATHER: Duration = Duration::from_millis(2);

impl PgStore {
    /// A logging predict ([`Store::decide`](crate::store::Store::decide)).
    /// A model that logs no decisions answers it in its user's combined
    /// batch, which reads the model's decisions setting under the row lock
    /// it takes anyway (no statement of its own); a model that logs takes
    /// the decision path, which checks the setting again under its own lock
    /// (a predict that finds it off there is answered plainly). Models
    /// found logging are remembered as a hint to go to the decision path
    /// first: a hint is never trusted, only saves the batch's visit. A
    /// request with a baseline action always takes the decision path.
    pub(super) fn decide_combined(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        request: &Decide<'_>,
    ) -> Result<Decided> {
        if request.baseline_action.is_some() {
            // Only a logging model takes it: the decision path, which
            // refuses it on a plain model before predicting.
            let reply = self.metered_call(meter, model_id, DCall::Decide(request))?;
            return decided_or_plain(self, reply, meter, model_id, request);
        }
        if lock_plain(&self.logging_models).contains(model_id) {
            if let Some(reply) = self.metered_call(meter, model_id, DCall::Decide(request))? {
                return reply.decided();
            }
            lock_plain(&self.logging_models).remove(model_id);
        }
        let call = Call::Predict {
            state: request.state.to_state(),
            explore: request.explore,
            allowed: request.allowed_actions.map(<[usize]>::to_vec),
            logging: true,
        };
        match self.call(Request::new(meter, model_id, call))? {
            Outcome::Predicted(prediction) => Ok(Decided {
                prediction,
                decision: None,
            }),
            Outcome::LogsDecisions => {
                {
                    let mut hints = lock_plain(&self.logging_models);
                    if hints.len() >= LOGGING_HINTS {
                        hints.clear();
                    }
                    hints.insert(model_id.to_owned());
                }
                let reply = self.metered_call(meter, model_id, DCall::Decide(request))?;
                decided_or_plain(self, reply, meter, model_id, request)
            }
            _ => Err(Error::Internal(
                "a logging predict got another call's result".into(),
            )),
        }
    }

    /// Queues `req` with the other calls of its user and returns its
    /// outcome: the leader runs everything queued (its call and everyone
    /// else's, on any of the user's models) in one transaction.
    pub(super) fn call(&self, req: Request) -> Result<Outcome> {
        let comb = combiner_in(&self.combiners, req.user.clone());
        comb.call(req, |batch| self.run_batch(batch))
    }

    /// Runs a batch of one user's calls in one transaction; sets every
    /// request's result.
    pub(super) fn run_batch(&self, batch: &[Arc<Request>]) {
        let results = with_retries(batch.len(), |out| {
            self.in_tx(|tx, st| apply_batch(tx, st, batch, out))
        });
        for (req, r) in batch.iter().zip(results) {
            req.set(r);
        }
    }

    /// Runs `body` in a transaction: commits when it returns `Ok(true)`,
    /// rolls back when `Ok(false)` (nothing to keep).
    pub(super) fn in_tx(
        &self,
        body: impl FnOnce(&mut Transaction<'_>, &mut HashMap<&'static str, Statement>) -> Step<bool>,
    ) -> Step<()> {
        let mut c = self.conn()?;
        let PgConn {
            client, statements, ..
        } = &mut *c;
        let mut tx = client.transaction()?;
        if body(&mut tx, statements)? {
            tx.commit()?;
        } else {
            tx.rollback()?;
        }
        Ok(())
    }
}

/// How many times a deadlocking batch is run before its calls fail.
const TRIES: u32 = 5;

/// Runs `attempt` (one transaction setting up to `n` results) until it
/// does not deadlock, at most [`TRIES`] times: the results, each an error
/// when the transaction failed (nothing that succeeded inside it
/// happened).
pub(super) fn with_retries<O>(
    n: usize,
    mut attempt: impl FnMut(&mut [Option<Result<O>>]) -> Step<()>,
) -> Vec<Result<O>> {
    let mut results: Vec<Option<Result<O>>> = (0..n).map(|_| None).collect();
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        results.iter_mut().for_each(|r| *r = None);
        match attempt(&mut results) {
            // Two transactions locked rows in different orders (two
            // instances' batches spanning two months, or a model's
            // lock met a user's usage row): PostgreSQL aborts one; run
            // it again.
            Err(Retry::Again) if tries < TRIES => continue,
            Err(Retry::Again) => break Err("a batch deadlocked repeatedly; try again".to_owned()),
            Err(Retry::Fail(e)) => {
                break Err(match e {
                    Error::Storage { message, .. } => message,
                    other => other.to_string(),
                })
            }
            Ok(()) => break Ok(()),
        }
    };
    results
        .into_iter()
        .map(|r| match (&outcome, r) {
            (Err(msg), Some(Ok(_)) | None) => Err(Error::storage(BACKEND, msg)),
            (_, Some(r)) => r,
            (Ok(()), None) => Err(Error::Internal("a combined call got no result".into())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: &Result<u32>) -> String {
        match r {
            Err(Error::Storage { message, .. }) => message.clone(),
            other => format!("not a storage error: {other:?}"),
        }
    }

    #[test]
    fn the_combiner_map_keeps_live_entries_and_drops_dead_ones_past_1024() {
        let map: Combiners<u32, Request> = Mutex::default();
        let live: Vec<_> = (0..10).map(|k| combiner_in(&map, k)).collect();
        assert!(Arc::ptr_eq(&live[3], &combiner_in(&map, 3)));
        // Many keys whose calls have all finished (a client cycling users
        // or models): their entries are dead once the combiner is dropped.
        for k in 10..5_000 {
            drop(combiner_in(&map, k));
        }
        let len = lock_plain(&map).len();
        assert!(len <= 1_025, "the map grew to {len} entries");
        for (k, c) in (0u32..).zip(&live) {
            assert!(
                Arc::ptr_eq(c, &combiner_in(&map, k)),
                "live combiner {k} lost"
            );
        }
    }

    #[test]
    fn a_batch_that_keeps_deadlocking_is_run_tries_times_then_fails() {
        let mut runs = 0;
        let results = with_retries::<u32>(2, |out| {
            runs += 1;
            out[0] = Some(Ok(7));
            Err(Retry::Again)
        });
        assert_eq!(runs, TRIES);
        assert_eq!(results.len(), 2);
        for r in &results {
            assert_eq!(message(r), "a batch deadlocked repeatedly; try again");
        }
    }

    #[test]
    fn a_retried_batch_answers_with_its_last_run_only() {
        let mut runs = 0;
        let results = with_retries::<u32>(2, |out| {
            runs += 1;
            if runs == 1 {
                // Set by a run that then deadlocked: must not survive.
                out[0] = Some(Ok(1));
                return Err(Retry::Again);
            }
            out[1] = Some(Ok(2));
            Ok(())
        });
        assert_eq!(runs, 2);
        assert!(matches!(results[0], Err(Error::Internal(_))), "{results:?}");
        assert_eq!(results[1].as_ref().ok(), Some(&2));
    }

    #[test]
    fn a_failed_batch_fails_what_succeeded_and_keeps_each_calls_own_error() {
        let results = with_retries::<u32>(3, |out| {
            out[0] = Some(Ok(1));
            out[1] = Some(Err(Error::Conflict("a call of its own failed".into())));
            Err(Retry::Fail(Error::storage(BACKEND, "disk full")))
        });
        assert_eq!(message(&results[0]), "disk full");
        assert!(matches!(results[1], Err(Error::Conflict(_))), "{results:?}");
        assert_eq!(message(&results[2]), "disk full");
    }
}
