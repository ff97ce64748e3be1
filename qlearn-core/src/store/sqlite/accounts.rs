//! The account calls of [`SqliteStore`] that write a user, together with
//! its first model when registering (one writer job, so one savepoint of one
//! transaction: both rows commit together or neither does, also across a
//! crash), list users or disable one.

use rusqlite::{params, Connection};

use super::cache::Cached;
use super::decisions::LogSlot;
use super::schema::{finish_user, user_exists, user_from_row, USER_COLS};
use super::{is_unique_violation, sq, SqliteStore, BACKEND};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::store::encoding::{config_text, learner_bytes, returns_bytes};
use crate::store::{ModelInfo, NewUser, User};
use crate::tenancy::new_id;

/// Inserts `u`; a taken email is [`Error::Conflict`].
fn insert_user(c: &Connection, u: &User) -> Result<()> {
    c.execute(
        &format!("INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            u.id,
            u.email,
            u.password_hash,
            u.tier.as_str(),
            u.role.as_str(),
            u.created_at,
            u.password_changed_at,
            u.disabled
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict("email already registered".into())
        } else {
            sq(e)
        }
    })?;
    Ok(())
}

/// A new model's record, encoded off the writer thread (its rows are
/// written before it as a loose table numbered like it: `tables.rs`).
pub(super) struct NewModel {
    mid: i64,
    id: String,
    owner: String,
    name: String,
    config: String,
    learner: Vec<u8>,
    returns: Vec<u8>,
    n_rows: i64,
}

impl NewModel {
    /// Encodes `model` for `owner` under a fresh id, as row `mid` (a number
    /// from [`SqliteStore::new_tab`], under which its rows are written).
    pub(super) fn of(mid: i64, owner: &str, name: &str, model: &Model) -> Result<Self> {
        let l = model.learner();
        Ok(NewModel {
            mid,
            id: new_id(),
            owner: owner.to_owned(),
            name: name.to_owned(),
            config: config_text(BACKEND, l.config())?,
            learner: learner_bytes(l),
            returns: returns_bytes(l),
            n_rows: model.len() as i64,
        })
    }

    /// The model's id.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The model's row id, also the number of its table.
    pub(super) fn mid(&self) -> i64 {
        self.mid
    }

    /// Inserts the model (in the writer), its rows already written as the
    /// loose table of its number, which it now owns; refuses past
    /// `max_models` models of the owner or for an unknown owner. Returns the
    /// model's row id.
    pub(super) fn insert(&self, c: &Connection, max_models: Option<u32>, now: i64) -> Result<i64> {
        if !user_exists(c, &self.owner)? {
            return Err(Error::NotFound("user"));
        }
        if let Some(limit) = max_models {
            let owned: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM models WHERE owner = ?1",
                    [&self.owner],
                    |r| r.get(0),
                )
                .map_err(sq)?;
            if owned >= i64::from(limit) {
                return Err(Error::ModelLimitReached { limit });
            }
        }
        c.execute(
            "INSERT INTO models (mid, id, owner, name, config, learner, returns, n_rows, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            params![
                self.mid,
                self.id,
                self.owner,
                self.name,
                self.config,
                self.learner,
                self.returns,
                self.n_rows,
                now
            ],
        )
        .map_err(sq)?;
        c.execute("DELETE FROM loose_tables WHERE tab = ?1", [self.mid])
            .map_err(sq)?;
        Ok(self.mid)
    }
}

impl SqliteStore {
    /// [`crate::store::Store::create_user`].
    pub(super) fn insert_new_user(&self, user: NewUser, now: i64) -> Result<User> {
        let u = User::register(user, now);
        let rec = u.clone();
        self.write(move |c| insert_user(c, &rec))?;
        Ok(u)
    }

    /// Caches a model just committed as row `mid` (its info is the reply).
    pub(super) fn cache_committed(
        &self,
        id: &str,
        mid: i64,
        owner: &str,
        name: &str,
        model: Model,
        now: i64,
    ) -> Result<ModelInfo> {
        let (learner, table) = model.into_parts();
        let cached = Cached {
            id: id.to_owned(),
            mid,
            tab: mid,
            owner: owner.to_owned(),
            name: name.to_owned(),
            created_at: now,
            updated_at: now,
            learner,
            table,
            deleted: false,
            last_seq: 0,
            log: LogSlot::Unknown,
        };
        let info = cached.info();
        self.cache_new(cached)?;
        Ok(info)
    }

    /// [`crate::store::Store::register`]: the user and its model in one
    /// writer job.
    pub(super) fn register_with_model(
        &self,
        user: NewUser,
        model_name: &str,
        model: &Model,
        max_models: Option<u32>,
        now: i64,
    ) -> Result<(User, ModelInfo)> {
        let u = User::register(user, now);
        let new = NewModel::of(self.new_tab()?, &u.id, model_name, model)?;
        let (id, mid) = (new.id().to_owned(), new.mid());
        // Its rows, if any, first (`tables.rs`); then the user and the
        // model in one job.
        self.write_loose(mid, model.table())?;
        let rec = u.clone();
        let written = self.write(move |c| {
            insert_user(c, &rec)?;
            new.insert(c, max_models, now)
        });
        if let Err(e) = written {
            let _ = self.drop_loose(mid);
            return Err(e);
        }
        let copy = model.clone();
        let info = self.cache_committed(&id, mid, &u.id, model_name, copy, now)?;
        Ok((u, info))
    }

    /// [`crate::store::Store::users`].
    pub(super) fn all_users(&self) -> Result<Vec<User>> {
        let rows = self.read(|c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {USER_COLS} FROM users ORDER BY created_at, id"
                ))
                .map_err(sq)?;
            let rows = st.query_map([], |r| user_from_row(r, 0)).map_err(sq)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sq)
        })?;
        rows.into_iter().map(finish_user).collect()
    }

    /// [`crate::store::Store::set_disabled`].
    pub(super) fn write_disabled(&self, user_id: &str, disabled: bool) -> Result<()> {
        let id = user_id.to_owned();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE users SET disabled = ?2 WHERE id = ?1",
                    params![id, disabled],
                )
                .map_err(sq)?;
            if n == 0 {
                return Err(Error::NotFound("user"));
            }
            Ok(())
        })
    }
}
