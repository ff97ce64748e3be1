//! [`MemoryStore`]: the in-memory [`Store`], for tests, examples and
//! embedding. Nothing survives the process; everything else in the contract
//! holds (isolation, atomic metering, serialisable updates).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::decisions::{
    answered, apply, decided_or_plain, episode_page, millis, page, plan, without_log, Call, Reply,
    Room,
};
use super::report::updated;
use super::rules::{check_state_room, touch_key};
use super::usage::MonthTally;
use super::{
    ApiKey, CallKind, Meter, ModelInfo, ModelPatch, NewApiKey, NewUser, QPage, Report, Store,
    Updated, Usage, User,
};
use super::{BillingAccount, BillingEvent, BillingOutcome, Evaluations, KEEP_FINISHED_JOBS};
use super::{Decided, DecisionPage, DecisionQuery, EpisodePage, EpisodeQuery, RewardIn};
use crate::decisions::{Decide, DecisionLog, EpisodeEnd, RewardReceipt};
use crate::error::{Error, Result};
use crate::model::{at_index, Experience, Model, Prediction};
use crate::state::StateRef;
use crate::tenancy::billing;
use crate::tenancy::{new_id, BillingMonth, Role, Tier, TierLimits};

mod evaluations;

const BACKEND: &str = "memory";

struct Entry {
    owner: String,
    name: String,
    created_at: i64,
    updated_at: i64,
    model: Model,
    /// The decision log, when the model logs decisions (its config is the
    /// model's decisions setting).
    decisions: Option<DecisionLog>,
}

impl Entry {
    fn info(&self, id: &str) -> ModelInfo {
        let mut info = ModelInfo::of(
            id.to_owned(),
            self.owner.clone(),
            self.name.clone(),
            self.model.learner(),
            self.created_at,
            self.updated_at,
        );
        info.decisions = self.decisions.as_ref().map(|l| l.config().clone());
        info.decision_stats = self.decisions.as_ref().map(DecisionLog::stats);
        info
    }
}

#[derive(Default)]
struct Accounts {
    users: HashMap<String, User>,
    by_email: HashMap<String, String>,
    keys: HashMap<String, (String, ApiKey)>, // hash -> (hash, record)
    settings: HashMap<String, String>,
    /// (user, month) -> that month's usage.
    usage: HashMap<(String, BillingMonth), MonthTally>,
    /// Billing records by user id.
    billing: HashMap<String, BillingAccount>,
    /// Ids of the billing events applied.
    billing_events: std::collections::HashSet<String>,
}

/// The in-memory store. Models sit behind one mutex each, so updates of
/// different models run in parallel.
#[derive(Default)]
pub struct MemoryStore {
    accounts: Mutex<Accounts>,
    models: RwLock<HashMap<String, Arc<Mutex<Entry>>>>,
    /// Serialises model creation so the per-owner limit check is atomic.
    create_lock: Mutex<()>,
    /// Evaluation jobs (`memory/evaluations.rs`).
    evaluations: Mutex<evaluations::Jobs>,
}

fn poisoned() -> Error {
    Error::storage(BACKEND, "a lock was poisoned by a panicking thread")
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn accounts(&self) -> Result<MutexGuard<'_, Accounts>> {
        self.accounts.lock().map_err(|_| poisoned())
    }

    fn entry(&self, owner: &str, id: &str) -> Result<Arc<Mutex<Entry>>> {
        let models = self.models.read().map_err(|_| poisoned())?;
        let e = models.get(id).cloned().ok_or(Error::NotFound("model"))?;
        drop(models);
        let owned = e.lock().map_err(|_| poisoned())?.owner == owner;
        if owned {
            Ok(e)
        } else {
            Err(Error::NotFound("model"))
        }
    }

    /// Debits `n` calls of `kind` for the meter's user, or refuses without
    /// counting.
    fn debit(&self, meter: &Meter<'_>, kind: CallKind, n: u64) -> Result<()> {
        let month = BillingMonth::from_unix(meter.now);
        let mut acc = self.accounts()?;
        acc.usage
            .entry((meter.user_id.to_owned(), month))
            .or_insert_with(|| MonthTally::new(Usage::empty(month)))
            .debit(meter, kind, n)
            .map(drop)
    }

    /// Counts an evaluation job `owner` created at `now` in their usage.
    fn count_evaluation(&self, owner: &str, now: i64) -> Result<()> {
        let month = BillingMonth::from_unix(now);
        self.accounts()?
            .usage
            .entry((owner.to_owned(), month))
            .or_insert_with(|| MonthTally::new(Usage::empty(month)))
            .count_evaluation(now);
        Ok(())
    }
}

impl MemoryStore {
    /// Adds a model with a fresh id (the caller holds `create_lock`).
    fn insert_model(&self, owner: &str, name: &str, model: &Model, now: i64) -> Result<ModelInfo> {
        let id = new_id();
        let entry = Entry {
            owner: owner.to_owned(),
            name: name.to_owned(),
            created_at: now,
            updated_at: now,
            model: model.clone(),
            decisions: None,
        };
        let info = entry.info(&id);
        self.models
            .write()
            .map_err(|_| poisoned())?
            .insert(id, Arc::new(Mutex::new(entry)));
        Ok(info)
    }

    /// Runs a metered decision call on `meter`'s user's model; `None`: a
    /// logging predict on a model that logs no decisions.
    fn metered_call(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        call: Call<'_>,
    ) -> Result<Option<Reply>> {
        let e = self.entry(meter.user_id, model_id)?;
        let mut e = e.lock().map_err(|_| poisoned())?;
        if e.decisions.is_none() && matches!(call, Call::Decide(_)) {
            return Ok(None);
        }
        Self::decision_call(&mut e, call, meter.now, meter.limits, |kind, n| {
            self.debit(meter, kind, n)
        })
        .map(Some)
    }

    /// Runs a decision call on a locked model ([`plan`] leaves the log as
    /// it was when the call fails; the quota is debited inside it, before
    /// any change).
    fn decision_call(
        e: &mut Entry,
        call: Call<'_>,
        now: i64,
        limits: &TierLimits,
        debit: impl FnOnce(CallKind, u64) -> Result<()>,
    ) -> Result<Reply> {
        let Some(mut log) = e.decisions.take() else {
            return without_log(call);
        };
        let now_ms = millis(now);
        // The learner and the table borrowed apart: nothing moves.
        let (planned, applied) = e.model.with_parts(|learner, table| {
            let room = Room {
                limits,
                held: table.len(),
            };
            let planned = plan(&mut log, learner, table, room, call, now_ms, debit);
            let applied = match &planned {
                Ok(p) => apply(learner, table, &p.transitions),
                Err(_) => Ok(()),
            };
            (planned, applied)
        });
        e.decisions = Some(log);
        let planned = planned?;
        if !planned.transitions.is_empty() {
            e.updated_at = now;
        }
        applied?;
        Ok(planned.reply)
    }
}

impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self.accounts()?.settings.get(key).cloned())
    }

    fn set_setting_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let mut acc = self.accounts()?;
        Ok(acc
            .settings
            .entry(key.to_owned())
            .or_insert_with(|| value.to_owned())
            .clone())
    }

    fn create_user(&self, user: NewUser, now: i64) -> Result<User> {
        let mut acc = self.accounts()?;
        if acc.by_email.contains_key(&user.email) {
            return Err(Error::Conflict("email already registered".into()));
        }
        let u = User::register(user, now);
        acc.by_email.insert(u.email.clone(), u.id.clone());
        acc.users.insert(u.id.clone(), u.clone());
        Ok(u)
    }

    fn register(
        &self,
        user: NewUser,
        model_name: &str,
        model: &Model,
        max_models: Option<u32>,
        now: i64,
    ) -> Result<(User, ModelInfo)> {
        // Both halves under the accounts lock: nobody sees the user before
        // its model exists, and a refused model leaves no user.
        let _guard = self.create_lock.lock().map_err(|_| poisoned())?;
        let mut acc = self.accounts()?;
        if acc.by_email.contains_key(&user.email) {
            return Err(Error::Conflict("email already registered".into()));
        }
        if let Some(limit) = max_models.filter(|&l| l == 0) {
            return Err(Error::ModelLimitReached { limit });
        }
        let u = User::register(user, now);
        let info = self.insert_model(&u.id, model_name, model, now)?;
        acc.by_email.insert(u.email.clone(), u.id.clone());
        acc.users.insert(u.id.clone(), u.clone());
        Ok((u, info))
    }

    fn users(&self) -> Result<Vec<User>> {
        let mut v: Vec<User> = self.accounts()?.users.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    fn user(&self, id: &str) -> Result<Option<User>> {
        Ok(self.accounts()?.users.get(id).cloned())
    }

    fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let acc = self.accounts()?;
        Ok(acc
            .by_email
            .get(email)
            .and_then(|id| acc.users.get(id))
            .cloned())
    }

    fn set_tier(&self, user_id: &str, tier: Tier) -> Result<()> {
        let mut acc = self.accounts()?;
        let u = acc.users.get_mut(user_id).ok_or(Error::NotFound("user"))?;
        u.tier = tier;
        Ok(())
    }

    fn set_role(&self, user_id: &str, role: Role) -> Result<()> {
        let mut acc = self.accounts()?;
        let u = acc.users.get_mut(user_id).ok_or(Error::NotFound("user"))?;
        u.role = role;
        Ok(())
    }

    fn set_disabled(&self, user_id: &str, disabled: bool) -> Result<()> {
        let mut acc = self.accounts()?;
        let u = acc.users.get_mut(user_id).ok_or(Error::NotFound("user"))?;
        u.disabled = disabled;
        Ok(())
    }

    fn set_password(&self, user_id: &str, password_hash: &str, now: i64) -> Result<()> {
        let mut acc = self.accounts()?;
        let u = acc.users.get_mut(user_id).ok_or(Error::NotFound("user"))?;
        u.password_hash = password_hash.to_owned();
        u.password_changed_at = now;
        acc.keys.retain(|_, (_, k)| k.user_id != user_id);
        Ok(())
    }

    fn create_api_key(&self, user_id: &str, key: NewApiKey<'_>, now: i64) -> Result<ApiKey> {
        let mut acc = self.accounts()?;
        if !acc.users.contains_key(user_id) {
            return Err(Error::NotFound("user"));
        }
        if acc.keys.contains_key(key.hash) {
            return Err(Error::Conflict("API key already exists".into()));
        }
        let k = ApiKey::created(user_id, &key, now);
        acc.keys
            .insert(key.hash.to_owned(), (key.hash.to_owned(), k.clone()));
        Ok(k)
    }

    fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        let acc = self.accounts()?;
        let mut v: Vec<ApiKey> = acc
            .keys
            .values()
            .filter(|(_, k)| k.user_id == user_id)
            .map(|(_, k)| k.clone())
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    fn delete_api_key(&self, user_id: &str, key_id: &str) -> Result<()> {
        let mut acc = self.accounts()?;
        let hash = acc
            .keys
            .iter()
            .find(|(_, (_, k))| k.id == key_id && k.user_id == user_id)
            .map(|(h, _)| h.clone())
            .ok_or(Error::NotFound("API key"))?;
        acc.keys.remove(&hash);
        Ok(())
    }

    fn user_by_api_key(&self, hash: &str, now: i64) -> Result<Option<(User, ApiKey)>> {
        let mut acc = self.accounts()?;
        let Some((_, key)) = acc.keys.get_mut(hash) else {
            return Ok(None);
        };
        if touch_key(key.last_used_at, now) {
            key.last_used_at = Some(now);
        }
        let key = key.clone();
        Ok(acc.users.get(&key.user_id).cloned().map(|u| (u, key)))
    }

    fn create_model(
        &self,
        owner: &str,
        name: &str,
        model: &Model,
        max_models: Option<u32>,
        now: i64,
    ) -> Result<ModelInfo> {
        let _guard = self.create_lock.lock().map_err(|_| poisoned())?;
        if let Some(limit) = max_models {
            let owned = self.models(owner)?.len();
            if owned >= limit as usize {
                return Err(Error::ModelLimitReached { limit });
            }
        }
        self.insert_model(owner, name, model, now)
    }

    fn models(&self, owner: &str) -> Result<Vec<ModelInfo>> {
        let models = self.models.read().map_err(|_| poisoned())?;
        let mut out = Vec::new();
        for (id, e) in models.iter() {
            let e = e.lock().map_err(|_| poisoned())?;
            if e.owner == owner {
                out.push(e.info(id));
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn model(&self, owner: &str, id: &str) -> Result<ModelInfo> {
        let e = self.entry(owner, id)?;
        let e = e.lock().map_err(|_| poisoned())?;
        Ok(e.info(id))
    }

    fn update_model(
        &self,
        owner: &str,
        id: &str,
        patch: ModelPatch,
        now: i64,
    ) -> Result<ModelInfo> {
        let e = self.entry(owner, id)?;
        let mut e = e.lock().map_err(|_| poisoned())?;
        if let Some(config) = &patch.config {
            // Reconfigure a copy: on error the model is untouched.
            let new = config.apply(e.model.config());
            if new.algorithm.tables() != e.model.config().algorithm.tables() {
                patch.reshaping()?;
            }
            let mut m = e.model.clone();
            m.reconfigure(new)?;
            e.model = m;
        }
        if let Some(decisions) = patch.decisions {
            e.decisions = match (decisions, &e.decisions) {
                (None, _) => None,
                (Some(c), None) => Some(DecisionLog::new(c)?),
                (Some(c), Some(log)) => {
                    let mut log = log.clone();
                    log.set_config(c)?;
                    Some(log)
                }
            };
        }
        if let Some(name) = patch.name {
            e.name = name;
        }
        e.updated_at = now;
        Ok(e.info(id))
    }

    fn delete_model(&self, owner: &str, id: &str) -> Result<()> {
        // Its jobs become tombstones under the jobs' mutex, held across the
        // removal (a creation checks the model under it too).
        let mut jobs = self.evaluations.lock().map_err(|_| poisoned())?;
        self.entry(owner, id)?;
        self.models.write().map_err(|_| poisoned())?.remove(id);
        jobs.bury_model(owner, id);
        Ok(())
    }

    fn export_model(&self, owner: &str, id: &str) -> Result<Model> {
        let e = self.entry(owner, id)?;
        let e = e.lock().map_err(|_| poisoned())?;
        Ok(e.model.clone())
    }

    fn q_table(&self, owner: &str, id: &str, offset: u64, limit: u64) -> Result<QPage> {
        let e = self.entry(owner, id)?;
        let e = e.lock().map_err(|_| poisoned())?;
        let off = usize::try_from(offset).unwrap_or(usize::MAX);
        let lim = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(QPage {
            total: e.model.len() as u64,
            rows: e.model.rows(off, lim),
        })
    }

    fn predict(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        state: StateRef<'_>,
        explore: bool,
        allowed: Option<&[usize]>,
    ) -> Result<Prediction> {
        let e = self.entry(meter.user_id, model_id)?;
        let mut e = e.lock().map_err(|_| poisoned())?;
        // Validate first: errors cost nothing and change nothing.
        e.model.validate_predict(state, allowed)?;
        self.debit(meter, CallKind::Predict, 1)?;
        e.model.predict_full(state, explore, allowed)
    }

    fn action_probabilities(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        state: StateRef<'_>,
        allowed: Option<&[usize]>,
        explore: bool,
    ) -> Result<Vec<f64>> {
        let e = self.entry(meter.user_id, model_id)?;
        let e = e.lock().map_err(|_| poisoned())?;
        e.model.validate_predict(state, allowed)?;
        self.debit(meter, CallKind::Predict, 1)?;
        e.model.action_probabilities(state, allowed, explore)
    }

    fn update(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        exps: &[Experience<'_>],
        report: Report,
    ) -> Result<Updated> {
        let e = self.entry(meter.user_id, model_id)?;
        let mut e = e.lock().map_err(|_| poisoned())?;
        e.model.learner().validate_batch(exps.iter().copied())?;
        let held = e.model.table().len();
        check_state_room(
            meter.limits,
            e.model.learner(),
            held,
            e.model.table(),
            exps.iter().copied(),
        )?;
        let n = exps.len() as u64;
        self.debit(meter, CallKind::Update, n)?;
        // Validated input always applies (see `crate::model::MAX_REWARD`).
        let mut out = Vec::with_capacity(exps.len());
        for (i, x) in exps.iter().enumerate() {
            out.push(e.model.update(x).map_err(|err| at_index(i, err))?);
        }
        e.updated_at = meter.now;
        updated(
            report,
            out,
            e.model.learner(),
            e.model.table(),
            exps.iter().copied(),
        )
    }

    fn decide(&self, meter: &Meter<'_>, model_id: &str, request: &Decide<'_>) -> Result<Decided> {
        let reply = self.metered_call(meter, model_id, Call::Decide(request))?;
        decided_or_plain(self, reply, meter, model_id, request)
    }

    fn rewards(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        rewards: &[RewardIn],
    ) -> Result<Vec<Result<RewardReceipt>>> {
        answered(self.metered_call(meter, model_id, Call::Rewards(rewards))?)?.rewarded()
    }

    fn end_episode(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        episode_id: &str,
        end: &EpisodeEnd,
    ) -> Result<usize> {
        answered(self.metered_call(meter, model_id, Call::End { episode_id, end })?)?.learned()
    }

    fn settle(&self, now: i64) -> Result<usize> {
        let entries: Vec<Arc<Mutex<Entry>>> = self
            .models
            .read()
            .map_err(|_| poisoned())?
            .values()
            .cloned()
            .collect();
        let now_ms = millis(now);
        let mut learned = 0;
        for e in entries {
            let mut e = e.lock().map_err(|_| poisoned())?;
            // Retention: finished decisions past it go.
            if let Some(log) = &mut e.decisions {
                log.prune(now_ms);
            }
            let due = e
                .decisions
                .as_ref()
                .and_then(DecisionLog::next_deadline)
                .is_some_and(|at| at <= now_ms);
            if !due {
                continue;
            }
            learned += Self::decision_call(
                &mut e,
                Call::Settle {
                    through_ms: now_ms,
                    through_id: None,
                },
                now,
                &TierLimits::UNLIMITED,
                |_, _| Ok(()),
            )?
            .learned()?;
        }
        self.prune_evaluations(KEEP_FINISHED_JOBS, now)?;
        Ok(learned)
    }

    fn decisions(
        &self,
        owner: &str,
        model_id: &str,
        query: &DecisionQuery,
    ) -> Result<DecisionPage> {
        let e = self.entry(owner, model_id)?;
        let e = e.lock().map_err(|_| poisoned())?;
        Ok(e.decisions
            .as_ref()
            .map_or_else(|| DecisionPage::empty(query), |log| page(log, query)))
    }

    fn episodes(&self, owner: &str, model_id: &str, query: &EpisodeQuery) -> Result<EpisodePage> {
        let e = self.entry(owner, model_id)?;
        let e = e.lock().map_err(|_| poisoned())?;
        Ok(e.decisions
            .as_ref()
            .map_or_else(EpisodePage::default, |log| episode_page(log, query)))
    }

    fn apply_billing(&self, event: &BillingEvent, now: i64) -> Result<BillingOutcome> {
        let mut guard = self.accounts()?;
        let acc = &mut *guard;
        if acc.billing_events.contains(&event.id) {
            return Ok(BillingOutcome::Duplicate);
        }
        let party = &event.party;
        let user_id = party
            .user_id
            .as_ref()
            .filter(|id| acc.users.contains_key(*id))
            .cloned()
            .or_else(|| {
                let c = party.customer_id.as_ref()?;
                acc.billing
                    .iter()
                    .find(|(_, a)| a.customer_id.as_ref() == Some(c))
                    .map(|(id, _)| id.clone())
            })
            .ok_or(Error::NotFound("customer"))?;
        if let Some(c) = &party.customer_id {
            let taken = acc
                .billing
                .iter()
                .any(|(id, a)| *id != user_id && a.customer_id.as_ref() == Some(c));
            if taken {
                return Err(Error::Conflict("customer linked to another user".into()));
            }
        }
        let user = acc.users.get_mut(&user_id).ok_or(Error::NotFound("user"))?;
        let mut account = acc.billing.get(&user_id).cloned().unwrap_or_default();
        let before = user.tier;
        let applied = billing::step(&mut user.tier, &mut account, event, now);
        let out = billing::outcome(user_id.clone(), before, user.tier, &account, applied);
        acc.billing.insert(user_id, account);
        acc.billing_events.insert(event.id.clone());
        Ok(out)
    }

    fn settle_billing(&self, now: i64) -> Result<Vec<String>> {
        let mut guard = self.accounts()?;
        let acc = &mut *guard;
        let mut changed = Vec::new();
        for (id, account) in acc.billing.iter_mut() {
            if let Some(user) = acc.users.get_mut(id) {
                if billing::settle(&mut user.tier, account, now) {
                    changed.push(id.clone());
                }
            }
        }
        Ok(changed)
    }

    fn billing_account(&self, user_id: &str) -> Result<Option<BillingAccount>> {
        Ok(self.accounts()?.billing.get(user_id).cloned())
    }

    fn usage(&self, user_id: &str, month: BillingMonth) -> Result<Usage> {
        let acc = self.accounts()?;
        Ok(acc
            .usage
            .get(&(user_id.to_owned(), month))
            .map_or_else(|| Usage::empty(month), |t| t.usage().clone()))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
