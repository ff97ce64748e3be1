//! [`Store`] for [`PgStore`]: account and model calls run one statement or
//! one transaction each; metered calls go through the per-user combiner.

use std::sync::Arc;

use postgres::Transaction;

use super::buckets::PgBuckets;
use super::combiner::{Call, Outcome, Request};
use super::decisions::patch_decisions;
use super::notify::{model_changed, user_changed, PgFeed};
use super::sql::{
    info_from_row, insert_rows, key_from_row, load_rows, model_row, user_from_row, MODEL_COLS,
    USER_COLS,
};
use super::streams::PgStreams;
use super::{corrupt, is_unique_violation, pg, PgStore, BACKEND};
use crate::decisions::{Decide, EpisodeEnd, RewardReceipt};
use crate::error::{Error, Result};
use crate::model::{Experience, Model, Prediction};
use crate::state::StateRef;
use crate::store::decisions::{answered, Call as DCall};
use crate::store::encoding::{
    config_text, learner_bytes, returns_bytes, table_from_rows, values_bytes,
};
use crate::store::eval_retention::{chunks, PRUNE_JOBS_CHUNK, SQL_TOMBSTONE_MODEL};
use crate::store::rules::touch_key;
use crate::store::{
    ApiKey, ChangeFeed, ChangeSink, Meter, ModelInfo, ModelPatch, NewApiKey, NewUser,
    OwnedExperience, QPage, Report, SharedStreams, SharedTickets, Store, Updated, Usage, User,
    UserUsage,
};
use crate::store::{BillingAccount, BillingEvent, BillingOutcome};
use crate::store::{Decided, DecisionPage, DecisionQuery, EpisodePage, EpisodeQuery, RewardIn};
use crate::tenancy::{BillingMonth, Role, SharedBuckets, Tier};

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        let rows = self.query("SELECT value FROM settings WHERE key = $1", &[&key])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn set_setting_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let mut c = self.conn()?;
        c.client
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
            .map_err(pg)?;
        // A new statement sees a concurrent first writer's committed value.
        let row = c
            .client
            .query_one("SELECT value FROM settings WHERE key = $1", &[&key])
            .map_err(pg)?;
        Ok(row.get(0))
    }

    fn create_user(&self, user: NewUser, now: i64) -> Result<User> {
        let u = User::register(user, now);
        self.tx(|tx, _| insert_user(tx, &u))?;
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
        let u = User::register(user, now);
        let id = crate::tenancy::new_id();
        // One transaction: the user row and the model commit together.
        self.tx(|tx, _| {
            insert_user(tx, &u)?;
            insert_model(tx, &id, &u.id, model_name, model, max_models, now)?;
            model_changed(tx, &self.channel, &id)
        })?;
        let info = ModelInfo::of(
            id,
            u.id.clone(),
            model_name.to_owned(),
            model.learner(),
            now,
            now,
        );
        Ok((u, info))
    }

    fn users(&self) -> Result<Vec<User>> {
        let rows = self.query(
            &format!("SELECT {USER_COLS} FROM users ORDER BY created_at, id"),
            &[],
        )?;
        rows.iter().map(user_from_row).collect()
    }

    fn user(&self, id: &str) -> Result<Option<User>> {
        let rows = self.query(
            &format!("SELECT {USER_COLS} FROM users WHERE id = $1"),
            &[&id],
        )?;
        rows.first().map(user_from_row).transpose()
    }

    fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let rows = self.query(
            &format!("SELECT {USER_COLS} FROM users WHERE email = $1"),
            &[&email],
        )?;
        rows.first().map(user_from_row).transpose()
    }

    fn set_tier(&self, user_id: &str, tier: Tier) -> Result<()> {
        self.change_user(
            user_id,
            "UPDATE users SET tier = $2 WHERE id = $1",
            &[&user_id, &tier.as_str()],
            Error::NotFound("user"),
        )
    }

    fn set_role(&self, user_id: &str, role: Role) -> Result<()> {
        self.change_user(
            user_id,
            "UPDATE users SET role = $2 WHERE id = $1",
            &[&user_id, &role.as_str()],
            Error::NotFound("user"),
        )
    }

    fn set_disabled(&self, user_id: &str, disabled: bool) -> Result<()> {
        self.change_user(
            user_id,
            "UPDATE users SET disabled = $2 WHERE id = $1",
            &[&user_id, &disabled],
            Error::NotFound("user"),
        )
    }

    fn set_password(&self, user_id: &str, password_hash: &str, now: i64) -> Result<()> {
        // One statement: the user's keys go with the old password, atomically.
        self.change_user(
            user_id,
            "WITH revoked AS (DELETE FROM api_keys WHERE user_id = $1) \
             UPDATE users SET password_hash = $2, password_changed_at = $3 WHERE id = $1",
            &[&user_id, &password_hash, &now],
            Error::NotFound("user"),
        )
    }

    fn create_api_key(&self, user_id: &str, key: NewApiKey<'_>, now: i64) -> Result<ApiKey> {
        let k = ApiKey::created(user_id, &key, now);
        let mut c = self.conn()?;
        let mut tx = c.client.transaction().map_err(pg)?;
        let n = tx
            .execute(
                "INSERT INTO api_keys \
                 (id, user_id, name, prefix, hash, created_at, scope, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
                 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)",
                &[
                    &k.id,
                    &k.user_id,
                    &k.name,
                    &k.prefix,
                    &key.hash,
                    &k.created_at,
                    &k.scope.as_str(),
                    &k.expires_at,
                ],
            )
            .map_err(|e| {
                // Ids are random: the one unique value a caller can repeat is the hash.
                if is_unique_violation(&e) {
                    Error::Conflict("API key already exists".into())
                } else {
                    pg(e)
                }
            })?;
        if n == 0 {
            return Err(Error::NotFound("user"));
        }
        user_changed(&mut tx, &self.channel, user_id)?;
        tx.commit().map_err(pg)?;
        Ok(k)
    }

    fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        let rows = self.query(
            "SELECT id, user_id, name, prefix, created_at, last_used_at, scope, expires_at \
             FROM api_keys WHERE user_id = $1 ORDER BY created_at, id",
            &[&user_id],
        )?;
        rows.iter().map(|r| key_from_row(r, 0)).collect()
    }

    fn delete_api_key(&self, user_id: &str, key_id: &str) -> Result<()> {
        self.change_user(
            user_id,
            "DELETE FROM api_keys WHERE id = $1 AND user_id = $2",
            &[&key_id, &user_id],
            Error::NotFound("API key"),
        )
    }

    fn user_by_api_key(&self, hash: &str, now: i64) -> Result<Option<(User, ApiKey)>> {
        let rows = self.query(
            "SELECT u.id, u.email, u.password_hash, u.tier, u.role, u.created_at, \
                 u.password_changed_at, u.disabled, k.id, k.user_id, k.name, k.prefix, k.created_at, \
                 k.last_used_at, k.scope, k.expires_at \
                 FROM api_keys k JOIN users u ON u.id = k.user_id \
                 WHERE k.hash = $1",
            &[&hash],
        )?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let user = user_from_row(r)?;
        let mut key = key_from_row(r, 8)?;
        if touch_key(key.last_used_at, now) {
            self.execute(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1",
                &[&key.id, &now],
            )?;
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
        let id = crate::tenancy::new_id();
        self.tx(|tx, _| {
            insert_model(tx, &id, owner, name, model, max_models, now)?;
            model_changed(tx, &self.channel, &id)
        })?;
        Ok(ModelInfo::of(
            id,
            owner.to_owned(),
            name.to_owned(),
            model.learner(),
            now,
            now,
        ))
    }

    fn models(&self, owner: &str) -> Result<Vec<ModelInfo>> {
        let rows = self.query(
            &format!("SELECT {MODEL_COLS} FROM models WHERE owner = $1 ORDER BY created_at, id"),
            &[&owner],
        )?;
        let mut infos = rows
            .iter()
            .map(|r| info_from_row(r).map(|(_, i, _)| i))
            .collect::<Result<Vec<_>>>()?;
        self.fill_decisions(owner, &mut infos)?;
        Ok(infos)
    }

    fn model(&self, owner: &str, id: &str) -> Result<ModelInfo> {
        let rows = self.query(
            &format!("SELECT {MODEL_COLS} FROM models WHERE id = $1 AND owner = $2"),
            &[&id, &owner],
        )?;
        let r = rows.first().ok_or(Error::NotFound("model"))?;
        let mut info = info_from_row(r).map(|(_, i, _)| i)?;
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
        let mut info = self.tx(|tx, _| {
            let (mid, mut info, mut learner, n_rows) = model_row(tx, owner, id, "FOR UPDATE")?;
            if let Some(d) = &patch.decisions {
                patch_decisions(tx, mid, d.as_ref())?;
            }
            if let Some(config) = &patch.config {
                let old_width = learner.width();
                let config = config.apply(learner.config());
                if config.algorithm.tables() != learner.config().algorithm.tables() {
                    patch.reshaping()?;
                }
                if let Some((n, tables)) = learner.reconfigure(config)? {
                    let (keys, values) = load_rows(tx, mid, old_width, 0, n_rows)?;
                    let mut table = table_from_rows(BACKEND, old_width, keys, values)?;
                    table.reshape(n, tables);
                    let nos: Vec<i64> = (0..n_rows).collect();
                    let vals: Vec<Vec<u8>> = table
                        .values()
                        .chunks_exact(table.width())
                        .map(values_bytes)
                        .collect();
                    tx.execute(
                        "UPDATE q_rows q SET vals = v.vals FROM unnest($2::int8[], $3::bytea[]) \
                         AS v(row_no, vals) WHERE q.mid = $1 AND q.row_no = v.row_no",
                        &[&mid, &nos, &vals],
                    )
                    .map_err(pg)?;
                }
            }
            if let Some(name) = &patch.name {
                info.name = name.clone();
            }
            tx.execute(
                "UPDATE models SET name = $2, config = $3, learner = $4, returns = $5, \
                 updated_at = $6 WHERE mid = $1",
                &[
                    &mid,
                    &info.name,
                    &config_text(BACKEND, learner.config())?,
                    &learner_bytes(&learner),
                    &returns_bytes(&learner),
                    &now,
                ],
            )
            .map_err(pg)?;
            info.config = learner.config().clone();
            info.stats = learner.stats();
            info.updated_at = now;
            model_changed(tx, &self.channel, id)?;
            Ok(info)
        })?;
        self.fill_decisions(owner, std::slice::from_mut(&mut info))?;
        Ok(info)
    }

    fn delete_model(&self, owner: &str, id: &str) -> Result<()> {
        self.tx(|tx, _| {
            let n = tx
                .execute(
                    "DELETE FROM models WHERE id = $1 AND owner = $2",
                    &[&id, &owner],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(Error::NotFound("model"));
            }
            // Its evaluation jobs become tombstones in the same
            // transaction, a chunk per statement.
            chunks(|| {
                tx.execute(SQL_TOMBSTONE_MODEL, &[&owner, &id, &PRUNE_JOBS_CHUNK])
                    .map_err(pg)
            })?;
            model_changed(tx, &self.channel, id)
        })
    }

    fn export_model(&self, owner: &str, id: &str) -> Result<Model> {
        self.tx(|tx, _| {
            // FOR SHARE: no update commits while the table is read.
            let (mid, _, learner, n_rows) = model_row(tx, owner, id, "FOR SHARE")?;
            let (keys, values) = load_rows(tx, mid, learner.width(), 0, n_rows)?;
            if keys.len() as i64 != n_rows {
                return Err(corrupt(format!(
                    "model {id} has {} Q-rows, its record says {n_rows}",
                    keys.len()
                )));
            }
            let table = table_from_rows(BACKEND, learner.width(), keys, values)?;
            Model::from_parts(learner, table)
        })
    }

    fn q_table(&self, owner: &str, id: &str, offset: u64, limit: u64) -> Result<QPage> {
        self.tx(|tx, _| {
            let (mid, _, learner, n_rows) = model_row(tx, owner, id, "FOR SHARE")?;
            let from = i64::try_from(offset).unwrap_or(i64::MAX).min(n_rows);
            let to = from
                .saturating_add(i64::try_from(limit).unwrap_or(i64::MAX))
                .min(n_rows);
            let (keys, values) = load_rows(tx, mid, learner.width(), from, to)?;
            let rows = keys
                .into_iter()
                .zip(values.chunks_exact(learner.width().max(1)))
                .map(|(k, v)| (k, learner.visible_q(Some(v))))
                .collect();
            Ok(QPage {
                total: n_rows.max(0) as u64,
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
        let call = Call::Predict {
            state: state.to_state(),
            explore,
            allowed: allowed.map(<[usize]>::to_vec),
            logging: false,
        };
        match self.call(Request::new(meter, model_id, call))? {
            Outcome::Predicted(p) => Ok(p),
            _ => Err(Error::Internal(
                "a prediction got another call's result".into(),
            )),
        }
    }

    fn action_probabilities(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        state: StateRef<'_>,
        allowed: Option<&[usize]>,
        explore: bool,
    ) -> Result<Vec<f64>> {
        let call = Call::Probabilities {
            state: state.to_state(),
            allowed: allowed.map(<[usize]>::to_vec),
            explore,
        };
        match self.call(Request::new(meter, model_id, call))? {
            Outcome::Probabilities(p) => Ok(p),
            _ => Err(Error::Internal(
                "action probabilities got another call's result".into(),
            )),
        }
    }

    fn update(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        exps: &[Experience<'_>],
        report: Report,
    ) -> Result<Updated> {
        let call = Call::Update {
            exps: exps.iter().map(OwnedExperience::from).collect(),
            report,
        };
        match self.call(Request::new(meter, model_id, call))? {
            Outcome::Updated(o) => Ok(o),
            _ => Err(Error::Internal(
                "an update got another call's result".into(),
            )),
        }
    }

    fn decide(&self, meter: &Meter<'_>, model_id: &str, request: &Decide<'_>) -> Result<Decided> {
        self.decide_combined(meter, model_id, request)
    }

    fn rewards(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        rewards: &[RewardIn],
    ) -> Result<Vec<Result<RewardReceipt>>> {
        answered(self.metered_call(meter, model_id, DCall::Rewards(rewards))?)?.rewarded()
    }

    fn end_episode(
        &self,
        meter: &Meter<'_>,
        model_id: &str,
        episode_id: &str,
        end: &EpisodeEnd,
    ) -> Result<usize> {
        answered(self.metered_call(meter, model_id, DCall::End { episode_id, end })?)?.learned()
    }

    fn settle(&self, now: i64) -> Result<usize> {
        self.settle_all(now)
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

    fn usage(&self, user_id: &str, month: BillingMonth) -> Result<Usage> {
        self.usage_of(user_id, month)
    }

    fn usage_by_user(&self, month: BillingMonth) -> Result<Vec<UserUsage>> {
        self.usage_of_all(month)
    }

    fn flush(&self) -> Result<()> {
        // Every acknowledged call has committed; nothing is buffered.
        Ok(())
    }

    fn change_feed(&self, sink: ChangeSink) -> Result<Option<Arc<dyn ChangeFeed>>> {
        let feed = PgFeed::start(
            self.manager.clone(),
            self.pool.clone(),
            self.channel.clone(),
            sink,
        )?;
        Ok(Some(Arc::new(feed)))
    }

    fn shared_buckets(&self) -> Option<Arc<dyn SharedBuckets>> {
        Some(Arc::new(PgBuckets::new(self.pool.clone())))
    }

    fn shared_tickets(&self) -> Option<Arc<dyn SharedTickets>> {
        Some(Arc::new(PgStreams::new(self.pool.clone())))
    }

    fn shared_streams(&self) -> Option<Arc<dyn SharedStreams>> {
        Some(Arc::new(PgStreams::new(self.pool.clone())))
    }
}

impl PgStore {
    /// Runs `sql` (changing something of `user_id`) and, in the same
    /// transaction, tells every instance that the user changed; `missing`
    /// when it changed no row.
    fn change_user(
        &self,
        user_id: &str,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        missing: Error,
    ) -> Result<()> {
        self.tx(|tx, _| {
            if tx.execute(sql, params).map_err(pg)? == 0 {
                return Err(missing);
            }
            user_changed(tx, &self.channel, user_id)
        })
    }
}

/// Inserts `u`; a taken email is [`Error::Conflict`].
fn insert_user(tx: &mut Transaction<'_>, u: &User) -> Result<()> {
    tx.execute(
        &format!("INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
        &[
            &u.id,
            &u.email,
            &u.password_hash,
            &u.tier.as_str(),
            &u.role.as_str(),
            &u.created_at,
            &u.password_changed_at,
            &u.disabled,
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict("email already registered".into())
        } else {
            pg(e)
        }
    })?;
    Ok(())
}

/// Inserts model `id` of `owner` and its rows, refusing past `max_models`
/// models of the owner (counted under the owner's row lock, so the check
/// holds across every instance) or for an unknown owner.
fn insert_model(
    tx: &mut Transaction<'_>,
    id: &str,
    owner: &str,
    name: &str,
    model: &Model,
    max_models: Option<u32>,
    now: i64,
) -> Result<()> {
    let l = model.learner();
    let config = config_text(BACKEND, l.config())?;
    let user = tx
        .query_opt(
            "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
            &[&owner],
        )
        .map_err(pg)?;
    if user.is_none() {
        return Err(Error::NotFound("user"));
    }
    if let Some(limit) = max_models {
        let owned: i64 = tx
            .query_one("SELECT COUNT(*) FROM models WHERE owner = $1", &[&owner])
            .map_err(pg)?
            .get(0);
        if owned >= i64::from(limit) {
            return Err(Error::ModelLimitReached { limit });
        }
    }
    let mid: i64 = tx
        .query_one(
            "INSERT INTO models (id, owner, name, config, learner, returns, n_rows, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             RETURNING mid",
            &[
                &id,
                &owner,
                &name,
                &config,
                &learner_bytes(l),
                &returns_bytes(l),
                &(model.len() as i64),
                &now,
            ],
        )
        .map_err(pg)?
        .get(0);
    insert_rows(tx, mid, model.table())
}
