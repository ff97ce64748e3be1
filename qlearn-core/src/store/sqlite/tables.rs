//! Whole Q-tables written and deleted in chunks (issue 11), so that an
//! import, a reshape or a deletion of a big model never holds the one
//! writer for long: other tenants' commits go between its chunks.
//!
//! A model's rows are stored under its *table number* (`q_rows.mid`): the
//! model's `mid` at first, a fresh number after a reshape (`models.tab`).
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

use super::schema::{EncodedRows, CHUNK_ROWS};
use super::{sq, SqliteStore};
use crate::error::Result;
use crate::table::QTable;

#[cfg(doc)]
use super::schema::CHUNK_BYTES;

impl SqliteStore {
    /// A table number no model and no loose table uses (also the `mid` of
    /// a new model, so the two never meet).
    pub(super) fn new_tab(&self) -> i64 {
        self.inner.next_tab.fetch_add(1, Ordering::Relaxed)
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
    let n = c
        .execute(
            "DELETE FROM q_rows WHERE mid = ?1 \
             AND row_no < (SELECT MIN(row_no) FROM q_rows WHERE mid = ?1) + ?2",
            params![tab, CHUNK_ROWS as i64],
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
    c.execute_batch(
        "BEGIN IMMEDIATE; \
         DELETE FROM q_rows WHERE mid IN (SELECT tab FROM loose_tables); \
         DELETE FROM loose_tables; \
         COMMIT;",
    )
    .map_err(|e| {
        let _ = c.execute_batch("ROLLBACK");
        sq(e)
    })?;
    let last: i64 = c
        .query_row(
            "SELECT MAX(COALESCE((SELECT MAX(mid) FROM models), 0), \
             COALESCE((SELECT MAX(tab) FROM models), 0), \
             COALESCE((SELECT MAX(mid) FROM q_rows), 0))",
            [],
            |r| r.get(0),
        )
        .map_err(sq)?;
    Ok(last + 1)
}
