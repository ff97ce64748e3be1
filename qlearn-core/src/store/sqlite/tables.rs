//! Whole Q-tables written and deleted in chunks (issue 11), so that an
//! import, a reshape or a deletion of a big model never holds the one
//! writer for long: other tenants' commits go between its chunks.
//!
//! A model's rows are stored under its *table number* (the high bits of
//! their key, `q_rows.id`; `schema::row_id`): the model's `mid` at first,
//! a fresh number after a reshape (`models.tab`).
//! A new table is written as a *loose* table (listed in `loose_tables`,
//! used by no model) one chunk per writer job ([`CHUNK_ROWS`] rows or
//! [`CHUNK_BYTES`] bytes at most, about a millisecond), each job waited for
//! before the next chunk is encoded, so each batch of the writer holds at
//! most one chunk beside other callers' jobs. Then one small transaction
//! makes it the model's (inserts the model row of an import, or points
//! `models.tab` at the reshaped rows and lists the old table as loose).
//! A loose table left over is deleted chunk by chunk by its caller, and
//! whatever is still listed when the store opens (a crash mid-way) is
//! deleted before the writer starts, so rows that no model uses are never
//! served, counted or kept.
//!
//! Such an operation writes tens of megabytes to the WAL quickly; the
//! checkpointer (`checkpointer.rs`) folds them into the database file
//! beside the writer, so no commit waits for that either.
//!
//! Calls on the same model meanwhile wait: a reshape holds the model's
//! lock until its table is switched (a model being imported has no id
//! anyone knows yet).

use std::sync::atomic::Ordering;

use rusqlite::{params, Connection};

use super::schema::{tab_ids, EncodedRows, CHUNK_ROWS, MAX_TAB, ROWS_PER_TAB};
use super::{sq, SqliteStore, BACKEND};
use crate::error::{Error, Result};
use crate::table::QTable;

#[cfg(doc)]
use super::schema::CHUNK_BYTES;

impl SqliteStore {
    /// A table number no model and no loose table uses (also the `mid` of
    /// a new model, so the two never meet); an error once they are used up
    /// (past [`MAX_TAB`], where a row's key would not fit in an `i64`).
    pub(super) fn new_tab(&self) -> Result<i64> {
        let tab = self.inner.next_tab.fetch_add(1, Ordering::Relaxed);
        if tab > MAX_TAB {
            return Err(Error::storage(
                BACKEND,
                format!("table numbers are used up (the last is {MAX_TAB})"),
            ));
        }
        Ok(tab)
    }

    /// Writes `table` as the loose table `tab`, one chunk per writer job
    /// (nothing for an empty table). On failure what was written is deleted
    /// again (or, if the store failed, when it is next opened).
    pub(super) fn write_loose(&self, tab: i64, table: &QTable) -> Result<()> {
        if table.is_empty() {
            return Ok(());
        }
        let written = self.write_chunks(tab, table);
        if written.is_err() {
            let _ = self.drop_loose(tab);
        }
        written
    }

    fn write_chunks(&self, tab: i64, table: &QTable) -> Result<()> {
        self.write(move |c| {
            c.execute("INSERT INTO loose_tables (tab) VALUES (?1)", [tab])
                .map_err(sq)?;
            Ok(())
        })?;
        let mut first = 0;
        while first < table.len() {
            // Encoded here, outside the writer; written in its own job.
            let rows = EncodedRows::chunk(table, first);
            if rows.len() == 0 {
                break;
            }
            first += rows.len();
            self.write(move |c| rows.insert(c, tab).map_err(sq))?;
        }
        Ok(())
    }

    /// Deletes the loose table `tab`: its rows [`CHUNK_ROWS`] at a time, one
    /// writer job each, then its listing.
    pub(super) fn drop_loose(&self, tab: i64) -> Result<()> {
        while self.write(move |c| drop_chunk(c, tab))? {}
        Ok(())
    }
}

/// Deletes the next chunk of the loose table `tab`; when no row is left,
/// its listing too. Whether rows were deleted.
fn drop_chunk(c: &Connection, tab: i64) -> Result<bool> {
    let (first, last) = tab_ids(tab);
    let n = c
        .execute(
            "DELETE FROM q_rows WHERE id BETWEEN ?1 AND ?2 \
             AND id < (SELECT MIN(id) FROM q_rows WHERE id BETWEEN ?1 AND ?2) + ?3",
            params![first, last, CHUNK_ROWS as i64],
        )
        .map_err(sq)?;
    if n == 0 {
        c.execute("DELETE FROM loose_tables WHERE tab = ?1", [tab])
            .map_err(sq)?;
    }
    Ok(n > 0)
}

/// At open, before the writer starts: deletes every loose table a crash
/// left behind, and returns the first free table number.
pub(super) fn tidy_tables(c: &Connection) -> Result<i64> {
    let tidy = || {
        c.execute_batch("BEGIN IMMEDIATE")?;
        // Each loose table's key range, so that no row of another is read.
        c.execute(
            "DELETE FROM q_rows WHERE id IN (SELECT q.id FROM loose_tables l JOIN q_rows q \
             ON q.id BETWEEN l.tab * ?1 AND l.tab * ?1 + ?1 - 1)",
            [ROWS_PER_TAB],
        )?;
        c.execute_batch("DELETE FROM loose_tables; COMMIT;")
    };
    tidy().map_err(|e| {
        let _ = c.execute_batch("ROLLBACK");
        sq(e)
    })?;
    let last: i64 = c
        .query_row(
            "SELECT MAX(COALESCE((SELECT MAX(mid) FROM models), 0), \
             COALESCE((SELECT MAX(tab) FROM models), 0), \
             COALESCE((SELECT MAX(id) FROM q_rows), 0) / ?1)",
            [ROWS_PER_TAB],
            |r| r.get(0),
        )
        .map_err(sq)?;
    Ok(last + 1)
}

#[cfg(test)]
mod tests {
    use super::super::schema::{row_id, tab_ids, MAX_TAB, ROWS_PER_TAB};
    use super::*;
    use crate::store::Store;
    use crate::{Experience, Model, ModelConfig};

    #[test]
    fn a_row_key_is_its_table_number_then_its_row_number() {
        assert_eq!(row_id(2, 3).unwrap(), (2 << 32) | 3);
        assert_eq!(row_id(0, 0).unwrap(), 0);
        assert_eq!(row_id(MAX_TAB, ROWS_PER_TAB - 1).unwrap(), i64::MAX);
        assert_eq!(tab_ids(2), (2 << 32, (3 << 32) - 1));
        assert_eq!(tab_ids(MAX_TAB).1, i64::MAX);
        for (tab, row_no) in [(MAX_TAB + 1, 0), (1, ROWS_PER_TAB), (-1, 0), (1, -1)] {
            assert!(row_id(tab, row_no).is_err(), "{tab}, {row_no}");
        }
    }

    #[test]
    fn table_numbers_used_up_refuse_a_new_model() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path().join("t.db")).unwrap();
        let uid = super::super::test_user(&s, 0);
        let mut m = Model::new(ModelConfig::new(2)).unwrap();
        m.update(&Experience::new(0, 1, 2.0, 1)).unwrap();
        s.inner.next_tab.store(MAX_TAB, Ordering::Relaxed);
        // The last number still keys its rows (up to i64::MAX).
        let last = s.create_model(&uid, "last", &m, None, 0).unwrap().id;
        let err = s.create_model(&uid, "past", &m, None, 0).unwrap_err();
        assert!(err.to_string().contains("used up"), "{err}");
        assert_eq!(s.models(&uid).unwrap().len(), 1);
        drop(s);
        let s = SqliteStore::open(dir.path().join("t.db")).unwrap();
        let back = s.export_model(&uid, &last).unwrap();
        assert_eq!(back.to_bytes().unwrap(), m.to_bytes().unwrap());
    }
}
