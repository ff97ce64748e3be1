//! [`Store`] for [`SqliteStore`]: each method reads through the pool or
//! the model cache and writes through the writer thread.

use rusqlite::{params, OptionalExtension};

use super::accounts::NewModel;
use super::cache::{learn_job, Cached};
use super::evaluations::bury_chunk;
use super::schema::{
    finish_user, key_from_row, model_row, user_exists, user_from_row, ModelRow, KEY_COLS,
    KEY_COL_COUNT, MODEL_COLS, USER_COLS,
};
use super::writer::{row_writes, Job, Ticket, Waiting};
use super::{is_unique_violation, lock_plain, sq, SqliteStore, BACKEND};
use crate::decisions::{Decide, EpisodeEnd, RewardReceipt};
use crate::error::{Error, Result};
use crate::model::{at_index, Experience, Model, Prediction};
use crate::state::{StateKey, StateRef};
use crate::store::decisions::{answered, check_plain, decided_or_plain, Call};
use crate::store::encoding::{config_text, learner_bytes, returns_bytes, Tracked};
use crate::store::report::updated;
use crate::store::rules::{check_state_room, touch_key};
use crate::store::{
    ApiKey, CallKind, Meter, ModelInfo, ModelPatch, NewApiKey, NewUser, QPage, Report, Store,
    Updated, Usage, User,
};
use crate::store::{BillingAccount, BillingEvent, BillingOutcome};
use crate::store::{
    Decided, DecisionPage, DecisionQuery, Durable, EpisodePage, EpisodeQuery, RewardIn,
};
use crate::tenancy::{BillingMonth, Role, Tier};

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sq)
        })
    }

    fn set_setting_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                [&key, &value],
            )
            .map_err(sq)?;
            c.query_row("SELECT value FROM settings WHERE key = ?1", [&key], |r| {
                r.get(0)
            })
            .map_err(sq)
        })
    }

    fn create_user(&self, user: NewUser, now: i64) -> Result<User> {
        self.insert_new_user(user, now)
    }

    fn register(
        &self,
        user: NewUser,
        model_name: &str,
        model: &Model,
        max_models: Option<u32>,
        now: i64,
    ) -> Result<(User, ModelInfo)> {
        self.register_with_model(user, model_name, model, max_models, now)
    }

    fn users(&self) -> Result<Vec<User>> {
        self.all_users()
    }

    fn user(&self, id: &str) -> Result<Option<User>> {
        let row = self.read(|c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                |r| user_from_row(r, 0),
            )
            .optional()
            .map_err(sq)
        })?;
        row.map(finish_user).transpose()
    }

    fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row = self.read(|c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE email = ?1"),
                [email],
                |r| user_from_row(r, 0),
            )
            .optional()
            .map_err(sq)
        })?;
        row.map(finish_user).transpose()
    }

    fn set_tier(&self, user_id: &str, tier: Tier) -> Result<()> {
        self.write_user_text(
            user_id,
            "UPDATE users SET tier = ?2 WHERE id = ?1",
            tier.as_str(),
        )
    }

    fn set_role(&self, user_id: &str, role: Role) -> Result<()> {
        self.write_user_text(
            user_id,
            "UPDATE users SET role = ?2 WHERE id = ?1",
            role.as_str(),
        )
    }

    fn set_disabled(&self, user_id: &str, disabled: bool) -> Result<()> {
        self.write_disabled(user_id, disabled)
    }

    fn set_password(&self, user_id: &str, password_hash: &str, now: i64) -> Result<()> {
        let (id, hash) = (user_id.to_owned(), password_hash.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE id = ?1",
                    params![id, hash, now],
                )
                .map_err(sq)?;
            if n == 0 {
                return Err(Error::NotFound("user"));
            }
            // Revokes every key made before the change, in the same commit.
            c.execute("DELETE FROM api_keys WHERE user_id = ?1", [&id])
                .map_err(sq)?;
            Ok(())
        })
    }

    fn create_api_key(&self, user_id: &str, key: NewApiKey<'_>, now: i64) -> Result<ApiKey> {
        let k = ApiKey::created(user_id, &key, now);
        let (rec, hash) = (k.clone(), key.hash.to_owned());
        self.write(move |c| {
            if !user_exists(c, &rec.user_id)? {
                return Err(Error::NotFound("user"));
            }
            c.execute(
                "INSERT INTO api_keys \
                 (id, user_id, name, prefix, hash, created_at, scope, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    rec.id,
                    rec.user_id,
                    rec.name,
                    rec.prefix,
                    hash,
                    rec.created_at,
                    rec.scope.as_str(),
                    rec.expires_at
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Conflict("API key already exists".into())
                } else {
                    sq(e)
                }
            })?;
            Ok(())
        })?;
        Ok(k)
    }

    fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLS} FROM api_keys k WHERE k.user_id = ?1 \
                     ORDER BY k.created_at, k.id"
                ))
                .map_err(sq)?;
            let rows = st.query_map([user_id], key_from_row).map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })
    }

    fn delete_api_key(&self, user_id: &str, key_id: &str) -> Result<()> {
        let (user, key) = (user_id.to_owned(), key_id.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "DELETE FROM api_keys WHERE id = ?1 AND user_id = ?2",
                    [&key, &user],
                )
                .map_err(sq)?;
            if n == 0 {
                return Err(Error::NotFound("API key"));
            }
            Ok(())
        })
    }

    fn user_by_api_key(&self, hash: &str, now: i64) -> Result<Option<(User, ApiKey)>> {
        let found = self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {KEY_COLS}, u.id, u.email, u.password_hash, u.tier, u.role, \
                     u.created_at, u.password_changed_at, u.disabled \
                     FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.hash = ?1"
                ),
                [hash],
                |r| Ok((key_from_row(r)?, user_from_row(r, KEY_COL_COUNT)?)),
            )
            .optional()
            .map_err(sq)
        })?;
        let Some((mut key, user)) = found else {
            return Ok(None);
        };
        let user = finish_user(user)?;
        if touch_key(key.last_used_at, now) {
            let id = key.id.clone();
            self.write(move |c| {
                c.execute(
                    "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .map_err(sq)?;
                Ok(())
            })?;
            key.last_used_at = Some(now);
        }
        Ok(Some((user, key)))
    }

    fn create_model(
        &self,
        owner: &str,
        name: &str,
        model: &Model,
        max_models: Option<u32>,
        now: i64,
    ) -> Result<ModelInfo> {
        // The rows first, in chunks between other commits (`tables.rs`);
        // then the model row, numbered like its table, in one small job.
        let new = NewModel::of(self.new_tab()?, owner, name, model)?;
        let (id, mid) = (new.id().to_owned(), new.mid());
        self.write_loose(mid, model.table())?;
        if let Err(e) = self.write(move |c| new.insert(c, max_models, now)) {
            let _ = self.drop_loose(mid);
            return Err(e);
        }
        self.cache_committed(&id, mid, owner, name, model.clone(), now)
    }

    fn models(&self, owner: &str) -> Result<Vec<ModelInfo>> {
        let rows = self.read(|c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {MODEL_COLS} FROM models WHERE owner = ?1 ORDER BY created_at, id"
                ))
                .map_err(sq)?;
            let rows = st.query_map([owner], model_row).map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })?;
        let mut infos = rows
            .into_iter()
            .map(|r| r.map(ModelRow::info))
            .collect::<Result<Vec<_>>>()?;
        self.fill_decisions(owner, &mut infos)?;
        Ok(infos)
    }

    fn model(&self, owner: &str, id: &str) -> Result<ModelInfo> {
        let mut info = self.with_model(owner, id, |c| Ok(c.info()))?;
        self.fill_decisions(owner, std::slice::from_mut(&mut info))?;
        Ok(info)
    }

    fn update_model(
        &self,
        owner: &str,
        id: &str,
        patch: ModelPatch,
        now: i64,
    ) -> Result<ModelInfo> {
        let decisions = patch.decisions.clone();
        let (info, old_tab, mid) = self.with_model(owner, id, |c| {
            if let Some(Some(d)) = &decisions {
                d.validate()?;
            }
            // Change copies; the cache takes them only once committed.
            let mut learner = c.learner.clone();
            let mut reshaped = None;
            if let Some(config) = &patch.config {
                let config = config.apply(learner.config());
                if config.algorithm.tables() != learner.config().algorithm.tables() {
                    patch.reshaping()?;
                }
                if let Some((n, tables)) = learner.reconfigure(config)? {
                    let mut t = c.table.clone();
                    t.reshape(n, tables);
                    reshaped = Some(t);
                }
            }
            let name = patch.name.clone().unwrap_or_else(|| c.name.clone());
            let config = config_text(BACKEND, learner.config())?;
            let (lb, rb) = (learner_bytes(&learner), returns_bytes(&learner));
            // A reshaped table is written anew under a fresh number, in
            // chunks between other commits, while this model's calls wait
            // for its lock; the switch below is one small job.
            let new_tab = match &reshaped {
                Some(t) => {
                    let tab = self.new_tab()?;
                    self.write_loose(tab, t)?;
                    Some(tab)
                }
                None => None,
            };
            let (mid, old_tab, w_name) = (c.mid, c.tab, name.clone());
            let switched = self.write(move |conn| {
                conn.execute(
                    "UPDATE models SET name = ?2, config = ?3, learner = ?4, returns = ?5, \
                     updated_at = ?6, tab = COALESCE(?7, tab) WHERE mid = ?1",
                    params![mid, w_name, config, lb, rb, now, new_tab],
                )
                .map_err(sq)?;
                if let Some(tab) = new_tab {
                    conn.execute("DELETE FROM loose_tables WHERE tab = ?1", [tab])
                        .map_err(sq)?;
                    conn.execute("INSERT INTO loose_tables (tab) VALUES (?1)", [old_tab])
                        .map_err(sq)?;
                }
                Ok(())
            });
            if let Err(e) = switched {
                if let Some(tab) = new_tab {
                    let _ = self.drop_loose(tab);
                }
                return Err(e);
            }
            // Committed: the cache follows before anything else may fail.
            c.learner = learner;
            if let (Some(t), Some(tab)) = (reshaped, new_tab) {
                c.table = t;
                c.tab = tab;
            }
            c.name = name;
            c.updated_at = now;
            let old_tab = new_tab.map(|_| old_tab);
            if let Some(d) = &decisions {
                if let Err(e) = self.patch_decisions(c, d.as_ref()) {
                    return Ok((Err(e), old_tab, c.mid));
                }
            }
            Ok((Ok(c.info()), old_tab, c.mid))
        })?;
        // The replaced rows go after the model's lock is released (if the
        // store has failed meanwhile, at its next open).
        if let Some(tab) = old_tab {
            let _ = self.drop_loose(tab);
        }
        // A log turned off goes after the lock too, in chunks.
        if matches!(decisions, Some(None)) && info.is_ok() {
            self.drop_log_rows(owner, id, mid)?;
        }
        let mut info = info?;
        self.fill_decisions(owner, std::slice::from_mut(&mut info))?;
        Ok(info)
    }

    fn delete_model(&self, owner: &str, id: &str) -> Result<()> {
        let tab = self.with_model(owner, id, |c| {
            let (mid, tab) = (c.mid, c.tab);
            let (o, m) = (owner.to_owned(), id.to_owned());
            // The model goes in one small job with its evaluation jobs (now
            // tombstones); its rows, loose, after the lock, in chunks.
            self.write(move |conn| {
                conn.execute("DELETE FROM models WHERE mid = ?1", [mid])
                    .map_err(sq)?;
                conn.execute("INSERT INTO loose_tables (tab) VALUES (?1)", [tab])
                    .map_err(sq)?;
                bury_chunk(conn, &o, &m).map(drop).map_err(sq)
            })?;
            c.deleted = true;
            Ok((mid, tab))
        })?;
        let (mid, tab) = tab;
        // Jobs past the first chunk, if any, a chunk per writer job.
        self.bury_model_jobs(owner, id)?;
        // Deleted: a failure here leaves the rows to the next open.
        let _ = self.drop_loose(tab);
        let _ = self.drop_deleted_log(mid);
        Ok(())
    }

    fn export_model(&self, owner: &str, id: &str) -> Result<Model> {
        self.with_model(owner, id, |c| {
            Model::from_parts(c.learner.clone(), c.table.clone())
        })
    }

    fn q_table(&self, owner: &str, id: &str, offset: u64, limit: u64) -> Result<QPage> {
        self.with_model(owner, id, |c| {
            let len = c.table.len();
            let off = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
            let lim = usize::try_from(limit).unwrap_or(usize::MAX);
            let end = off.saturating_add(lim).min(len);
            let rows = (off..end)
                .filter_map(|i| c.table.row_at(i))
                .map(|(k, r)| (StateKey::from_canonical(k), c.learner.visible_q(Some(r))))
                .collect();
            Ok(QPage {
                total: len as u64,
                rows,
            })
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
        let (prediction, seq) = self.with_model(meter.user_id, model_id, |c| {
            self.predict_locked(c, meter, state, explore, allowed, Waiting::Thread)
        })?;
        self.wait(seq)?;
        self.trim_if_over();
        Ok(prediction)
    }

    fn action_probabilities(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        state: StateRef<'_>,
        allowed: Option<&[usize]>,
        explore: bool,
    ) -> Result<Vec<f64>> {
        self.probabilities(meter, model_id, state, allowed, explore)
    }

    fn update(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        exps: &[Experience<'_>],
        report: Report,
    ) -> Result<Updated> {
        let (out, seq) = self.with_model(meter.user_id, model_id, |c| {
            self.update_locked(c, meter, exps, report, Waiting::Thread)
        })?;
        if let Some(seq) = seq {
            self.wait(seq)?;
            self.trim_if_over();
        }
        out
    }

    fn decide(&self, meter: &Meter<'_>, model_id: &str, request: &Decide<'_>) -> Result<Decided> {
        // A model that logs no decisions (the common case) is predicted in
        // this one visit: no second lookup, lock and log-map trip.
        let plain = self.with_model(meter.user_id, model_id, |c| {
            if self.logs_decisions(c)? {
                return Ok(None);
            }
            check_plain(request)?;
            let (state, explore, allowed) =
                (request.state, request.explore, request.allowed_actions);
            self.predict_locked(c, meter, state, explore, allowed, Waiting::Thread)
                .map(Some)
        })?;
        if let Some((prediction, seq)) = plain {
            self.wait(seq)?;
            self.trim_if_over();
            return Ok(Decided {
                prediction,
                decision: None,
            });
        }
        let reply = self.metered_call(meter, model_id, Call::Decide(request))?;
        decided_or_plain(self, reply, meter, model_id, request)
    }

    fn decide_nonblocking(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        request: &Decide<'_>,
    ) -> Option<Result<(Decided, Durable)>> {
        self.decide_quick(meter, model_id, request)
    }

    fn update_nonblocking(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        exps: &[Experience<'_>],
        report: Report,
    ) -> Option<Result<(Updated, Durable)>> {
        let r = self.try_with_model(meter.user_id, model_id, |c| {
            if !self.usage_in_memory(meter) {
                return None;
            }
            Some(self.update_locked(c, meter, exps, report, Waiting::Task))
        })?;
        Some(r.and_then(|(out, ticket)| {
            let durable = match ticket {
                Some(t) => self.durable(t),
                None => Durable::ready(),
            };
            out.map(|o| (o, durable))
        }))
    }

    fn rewards_nonblocking(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        rewards: &[RewardIn],
    ) -> Option<Result<(Vec<Result<RewardReceipt>>, Durable)>> {
        self.rewards_quick(meter, model_id, rewards)
    }

    fn rewards(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        rewards: &[RewardIn],
    ) -> Result<Vec<Result<RewardReceipt>>> {
        answered(self.metered_call(meter, model_id, Call::Rewards(rewards))?)?.rewarded()
    }

    fn rewards_deferred(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        rewards: &[RewardIn],
    ) -> Result<(Vec<Result<RewardReceipt>>, Durable)> {
        self.rewards_reading(meter, model_id, rewards)
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
        self.settle_all(now)
    }

    fn decisions(
        &self,
        owner: &str,
        model_id: &str,
        query: &DecisionQuery,
    ) -> Result<DecisionPage> {
        self.decision_page(owner, model_id, query)
    }

    fn episodes(&self, owner: &str, model_id: &str, query: &EpisodeQuery) -> Result<EpisodePage> {
        self.episode_page(owner, model_id, query)
    }

    fn apply_billing(&self, event: &BillingEvent, now: i64) -> Result<BillingOutcome> {
        self.write_billing(event, now)
    }

    fn settle_billing(&self, now: i64) -> Result<Vec<String>> {
        self.settle_billing_due(now)
    }

    fn billing_account(&self, user_id: &str) -> Result<Option<BillingAccount>> {
        self.read_billing(user_id)
    }

    fn usage(&self, user_id: &str, month: BillingMonth) -> Result<Usage> {
        let cached = lock_plain(&self.inner.usage)
            .get(user_id)
            .and_then(|m| m.get(&month))
            .map(|t| t.usage().clone());
        match cached {
            Some(u) => Ok(u),
            None => self.usage_from_db(user_id, month),
        }
    }

    fn flush(&self) -> Result<()> {
        self.shutdown()
    }
}

impl SqliteStore {
    /// A metered plain prediction on a model whose lock the caller holds:
    /// validated first (errors cost nothing), debited, and its statistics
    /// enqueued under the lock (the queue order is the model's serial
    /// order). The caller waits for the returned sequence number.
    pub(super) fn predict_locked(
        &self,
        c: &mut Cached,
        meter: &Meter<'_>,
        state: StateRef<'_>,
        explore: bool,
        allowed: Option<&[usize]>,
        waiting: Waiting,
    ) -> Result<(Prediction, Ticket)> {
        c.learner.validate_predict(state, allowed)?;
        let debit = self.debit(meter, CallKind::Predict, 1)?;
        let p = match c.learner.predict_full(&c.table, state, explore, allowed) {
            Ok(p) => p,
            Err(e) => {
                self.refund(&debit);
                return Err(e);
            }
        };
        let seq = self.enqueue_for(Job::Learn(learn_job(c, debit, false, Vec::new())), waiting)?;
        c.last_seq = seq.seq;
        Ok((p, seq))
    }

    /// A metered update on a model whose lock the caller holds (see
    /// [`Store::update`]): the outcome and, when anything was enqueued, the
    /// ticket to wait for.
    #[allow(clippy::type_complexity)]
    fn update_locked(
        &self,
        c: &mut Cached,
        meter: &Meter<'_>,
        exps: &[Experience<'_>],
        report: Report,
        waiting: Waiting,
    ) -> Result<(Result<Updated>, Option<Ticket>)> {
        c.learner.validate_batch(exps.iter().copied())?;
        check_state_room(
            meter.limits,
            &c.learner,
            c.table.len(),
            &c.table,
            exps.iter().copied(),
        )?;
        let debit = self.debit(meter, CallKind::Update, exps.len() as u64)?;
        if exps.is_empty() {
            let none = updated(
                report,
                Vec::new(),
                &c.learner,
                &c.table,
                exps.iter().copied(),
            );
            return Ok((none, None));
        }
        let len_before = c.table.len();
        let episodes_before = c.learner.counters().episodes;
        let mut touched = Vec::with_capacity(exps.len());
        let mut out = Vec::with_capacity(exps.len());
        let mut failure = None;
        for (i, x) in exps.iter().enumerate() {
            let mut rows = Tracked {
                table: &mut c.table,
                touched: &mut touched,
            };
            match c.learner.update(&mut rows, x) {
                Ok(o) => out.push(o),
                Err(e) => {
                    // Validated input always applies; should this ever
                    // fail, what did apply is still persisted below, so
                    // memory and file agree.
                    failure = Some(at_index(i, e));
                    break;
                }
            }
        }
        c.updated_at = meter.now;
        let rows = row_writes(&c.table, touched, len_before);
        let ended = c.learner.counters().episodes != episodes_before;
        let seq = self.enqueue_for(Job::Learn(learn_job(c, debit, ended, rows)), waiting)?;
        c.last_seq = seq.seq;
        let result = match failure {
            Some(e) => Err(e),
            None => updated(report, out, &c.learner, &c.table, exps.iter().copied()),
        };
        Ok((result, Some(seq)))
    }
}
