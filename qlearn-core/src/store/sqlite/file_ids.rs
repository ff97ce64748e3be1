//! What a model's decision log may find in the SQLite file: its ids, read
//! once into the log's [`IdFilter`] (`hot_log.rs`), and [`Sifted`], the
//! file's rows without the reads of ids the filter says the file lacks.

use super::decision_rows::FileRows;
use super::id_filter::{may_hold, IdFilter, IdKind, READ_MAX};
use super::{sq, SqliteStore, BACKEND};
use crate::decisions::{DecisionRecord, EpisodeRecord};
use crate::error::{Error, Result};
use crate::store::decision_rows::Rows;

/// [`FileRows`] that leaves out the ids the file cannot hold (the log's
/// [`IdFilter`], `hot_log.rs`): such a decision or episode is absent
/// without a read.
pub(super) struct Sifted<'a> {
    pub(super) rows: FileRows<'a>,
    pub(super) ids: Option<&'a IdFilter>,
}

impl Rows for Sifted<'_> {
    fn decision(&mut self, id: &str) -> Result<Option<DecisionRecord>> {
        if !may_hold(self.ids, IdKind::Decision, id) {
            return Ok(None);
        }
        self.rows.decision(id)
    }

    fn episode(&mut self, id: &str) -> Result<Option<EpisodeRecord>> {
        if !may_hold(self.ids, IdKind::Episode, id) {
            return Ok(None);
        }
        self.rows.episode(id)
    }

    fn step(&mut self, episode: &str, k: u64) -> Result<Option<DecisionRecord>> {
        self.rows.step(episode, k)
    }

    fn due(&mut self, closes_ms: i64, id: Option<&str>) -> Result<Vec<DecisionRecord>> {
        self.rows.due(closes_ms, id)
    }
}

/// Every decision id of a model (`decisions_time` covers it: a secondary
/// index of a `WITHOUT ROWID` table holds the primary key).
const SQL_DECISION_IDS: &str = "SELECT id FROM decisions WHERE mid = ?1";
/// Every episode id of a model.
const SQL_EPISODE_IDS: &str = "SELECT id FROM episodes WHERE mid = ?1";

impl SqliteStore {
    /// The ids of model `mid`'s log in the file (`HotLog::set_file_ids`);
    /// `None` past [`READ_MAX`] of them (the log then reads every id it
    /// lacks). One pass over two indexes.
    pub(super) fn file_ids(&self, mid: i64) -> Result<Option<IdFilter>> {
        self.file_ids_upto(mid, READ_MAX)
    }

    /// [`SqliteStore::file_ids`] with at most `limit` ids.
    fn file_ids_upto(&self, mid: i64, limit: usize) -> Result<Option<IdFilter>> {
        self.read(|c| {
            let mut f = IdFilter::new();
            for (sql, kind) in [
                (SQL_DECISION_IDS, IdKind::Decision),
                (SQL_EPISODE_IDS, IdKind::Episode),
            ] {
                let mut st = c.prepare_cached(sql).map_err(sq)?;
                let mut rows = st.query([mid]).map_err(sq)?;
                while let Some(r) = rows.next().map_err(sq)? {
                    let id = (r.get_ref(0).map_err(sq)?.as_str())
                        .map_err(|e| Error::storage(BACKEND, e.to_string()))?;
                    if f.len() >= limit || !f.insert(kind, id) {
                        return Ok(None);
                    }
                }
            }
            Ok(Some(f))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::decision_rows::tests::plans;
    use super::*;

    #[test]
    fn a_logs_file_ids_are_read_from_the_models_index_entries_up_to_a_limit() {
        use crate::decisions::{Decide, DecisionsConfig};
        use crate::store::{Meter, ModelPatch, NewUser, Store};
        use crate::tenancy::{Role, Tier, TierLimits};
        use crate::{Model, ModelConfig, StateRef};
        let p = plans(&[SQL_DECISION_IDS, SQL_EPISODE_IDS]);
        assert!(
            p[0].iter()
                .any(|s| s.contains("COVERING INDEX decisions_time (mid=?)")),
            "{p:?}"
        );
        assert!(
            p[1].iter()
                .all(|s| s.starts_with("SEARCH") && s.contains("(mid=?)")),
            "{p:?}"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let s = SqliteStore::open(dir.path().join("ids.db")).expect("a new store");
        let now = 1_790_038_400;
        let new_user = |email: &str| NewUser {
            email: email.into(),
            password_hash: "$argon2id$fake".into(),
            tier: Tier::Free,
            role: Role::User,
        };
        let u = s
            .create_user(new_user("u@example.com"), now)
            .expect("a user")
            .id;
        let model = Model::new(ModelConfig::new(2)).expect("a model");
        let limits = TierLimits::UNLIMITED;
        let meter = Meter {
            user_id: &u,
            limits: &limits,
            now,
        };
        let patch = ModelPatch {
            decisions: Some(Some(DecisionsConfig::default())),
            ..ModelPatch::default()
        };
        let mut mids = Vec::new();
        for name in ["a", "b"] {
            let id = s
                .create_model(&u, name, &model, None, now)
                .expect("a model")
                .id;
            s.update_model(&u, &id, patch.clone(), now)
                .expect("logging");
            mids.push((
                id.clone(),
                s.with_model(&u, &id, |c| Ok(c.mid)).expect("its mid"),
            ));
        }
        let (a, mid_a) = &mids[0];
        for (d, e) in [("d1", "e1"), ("d2", "e1"), ("d3", "e2")] {
            let call = Decide {
                state: StateRef::Int(0),
                allowed_actions: None,
                explore: false,
                decision_id: Some(d),
                episode_id: Some(e),
                baseline_action: None,
            };
            s.decide(&meter, a, &call).expect("a decision");
        }
        let f = s
            .file_ids_upto(*mid_a, 5)
            .expect("read")
            .expect("5 ids at most");
        assert_eq!(f.len(), 5, "3 decisions and 2 episodes");
        for d in ["d1", "d2", "d3"] {
            assert!(f.may_contain(IdKind::Decision, d), "{d}");
        }
        for e in ["e1", "e2"] {
            assert!(f.may_contain(IdKind::Episode, e), "{e}");
        }
        assert!(
            s.file_ids_upto(*mid_a, 4).expect("read").is_none(),
            "past the limit"
        );
        let other = s.file_ids_upto(mids[1].1, 5).expect("read").expect("none");
        assert_eq!(other.len(), 0, "another model's log is not read");
    }
}
