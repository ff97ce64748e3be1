//! Event-stream tickets and stream places shared by every instance of one
//! database (tables `event_tickets`, `event_streams`): a ticket issued by
//! one instance opens a stream on any, once; the per-user and per-model
//! stream caps count the streams of all instances.
//!
//! A ticket's row holds its SHA-256 and the asking credential sealed
//! (ChaCha20-Poly1305) with a key derived from the ticket (SHA-256 of a
//! label and the ticket: a fresh key per ticket, so the fixed nonce is
//! used once), the hash as associated data: the rows alone open nothing.
//! Redeeming deletes the row and returns it in one statement, so two
//! instances cannot both use a ticket.

use std::time::Duration;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use sha2::{Digest, Sha256};

use super::pool::Manager;
use super::{pg, pool_conn};
use crate::error::{Error, Result};
use crate::store::changes::{SharedStreams, SharedTickets, StreamPlace, TicketGrant};
use crate::tenancy::{generate_secret, hash_api_key, new_id};

/// How long a stream place lasts without renewal.
pub const PLACE_TTL: Duration = Duration::from_secs(30);

/// The database clock, Unix seconds.
const NOW: &str = "extract(epoch FROM clock_timestamp())::float8";

/// The sealing key of `ticket`.
fn ticket_key(ticket: &str) -> Result<LessSafeKey> {
    let mut h = Sha256::new();
    h.update(b"qlearn event ticket\0");
    h.update(ticket.as_bytes());
    let digest = h.finalize();
    UnboundKey::new(&CHACHA20_POLY1305, digest.as_slice())
        .map(LessSafeKey::new)
        .map_err(|_| Error::Internal("cannot make a ticket key".into()))
}

fn seal(ticket: &str, hash: &str, credential: &str) -> Result<Vec<u8>> {
    let mut data = credential.as_bytes().to_vec();
    ticket_key(ticket)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(hash.as_bytes()),
            &mut data,
        )
        .map_err(|_| Error::Internal("cannot seal a ticket".into()))?;
    Ok(data)
}

fn open(ticket: &str, hash: &str, mut sealed: Vec<u8>) -> Option<String> {
    let plain = ticket_key(ticket)
        .ok()?
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(hash.as_bytes()),
            &mut sealed,
        )
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

/// The pool-backed tickets and stream places of a
/// [`PgStore`](super::PgStore); `instance` names this instance's places.
pub(super) struct PgStreams {
    pool: r2d2::Pool<Manager>,
    instance: String,
}

impl PgStreams {
    pub(super) fn new(pool: r2d2::Pool<Manager>) -> Self {
        PgStreams {
            pool,
            instance: new_id(),
        }
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>> {
        pool_conn(&self.pool)
    }
}

impl SharedTickets for PgStreams {
    fn issue(
        &self,
        user_id: &str,
        model_id: &str,
        credential: &str,
        ttl: Duration,
        per_user: usize,
    ) -> Result<String> {
        let ticket = generate_secret();
        let hash = hash_api_key(&ticket);
        let sealed = seal(&ticket, &hash, credential)?;
        let keep = i64::try_from(per_user).unwrap_or(i64::MAX);
        let mut c = self.conn()?;
        let mut tx = c.client.transaction().map_err(pg)?;
        tx.execute(
            &format!("DELETE FROM event_tickets WHERE expires_at <= {NOW}"),
            &[],
        )
        .map_err(pg)?;
        tx.execute(
            &format!(
                "INSERT INTO event_tickets (hash, user_id, model_id, sealed, expires_at) \
                 VALUES ($1, $2, $3, $4, {NOW} + $5)"
            ),
            &[&hash, &user_id, &model_id, &sealed, &ttl.as_secs_f64()],
        )
        .map_err(pg)?;
        tx.execute(
            "DELETE FROM event_tickets WHERE user_id = $1 AND hash NOT IN \
             (SELECT hash FROM event_tickets WHERE user_id = $1 \
              ORDER BY expires_at DESC, hash LIMIT $2)",
            &[&user_id, &keep],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(ticket)
    }

    fn redeem(&self, ticket: &str) -> Result<Option<TicketGrant>> {
        let hash = hash_api_key(ticket);
        let rows = self
            .conn()?
            .client
            .query(
                &format!(
                    "DELETE FROM event_tickets WHERE hash = $1 \
                     RETURNING user_id, model_id, sealed, expires_at > {NOW}"
                ),
                &[&hash],
            )
            .map_err(pg)?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        if !r.get::<_, bool>(3) {
            return Ok(None);
        }
        Ok(open(ticket, &hash, r.get(2)).map(|credential| TicketGrant {
            user_id: r.get(0),
            model_id: r.get(1),
            credential,
        }))
    }
}

impl SharedStreams for PgStreams {
    fn open(
        &self,
        user_id: &str,
        model_id: &str,
        per_user: u32,
        per_model: u32,
    ) -> Result<StreamPlace> {
        let mut c = self.conn()?;
        let mut tx = c.client.transaction().map_err(pg)?;
        // The owner's row orders the opens of the user's streams (a
        // model's streams are its owner's) on every instance.
        let user = tx
            .query_opt(
                "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
                &[&user_id],
            )
            .map_err(pg)?;
        if user.is_none() {
            return Err(Error::NotFound("user"));
        }
        tx.execute(
            &format!("DELETE FROM event_streams WHERE user_id = $1 AND expires_at <= {NOW}"),
            &[&user_id],
        )
        .map_err(pg)?;
        let counts = tx
            .query_one(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE model_id = $2) \
                 FROM event_streams WHERE user_id = $1",
                &[&user_id, &model_id],
            )
            .map_err(pg)?;
        let (held, on_model): (i64, i64) = (counts.get(0), counts.get(1));
        if held >= i64::from(per_user) {
            return Ok(StreamPlace::UserFull(per_user));
        }
        if on_model >= i64::from(per_model) {
            return Ok(StreamPlace::ModelFull(per_model));
        }
        let id = new_id();
        tx.execute(
            &format!(
                "INSERT INTO event_streams (id, user_id, model_id, instance, expires_at) \
                 VALUES ($1, $2, $3, $4, {NOW} + $5)"
            ),
            &[
                &id,
                &user_id,
                &model_id,
                &self.instance,
                &PLACE_TTL.as_secs_f64(),
            ],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(StreamPlace::Opened(id))
    }

    fn close(&self, place: &str) -> Result<()> {
        self.conn()?
            .client
            .execute("DELETE FROM event_streams WHERE id = $1", &[&place])
            .map_err(pg)?;
        Ok(())
    }

    fn renew(&self) -> Result<()> {
        self.conn()?
            .client
            .execute(
                &format!("UPDATE event_streams SET expires_at = {NOW} + $2 WHERE instance = $1"),
                &[&self.instance, &PLACE_TTL.as_secs_f64()],
            )
            .map_err(pg)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_credential_opens_only_with_its_ticket() {
        let (t, h) = ("ticket-one", hash_api_key("ticket-one"));
        let sealed = seal(t, &h, "qlk_secret").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"qlk_secret"));
        assert_eq!(open(t, &h, sealed.clone()).as_deref(), Some("qlk_secret"));
        assert_eq!(open("ticket-two", &h, sealed.clone()), None);
        assert_eq!(open(t, "another hash", sealed), None);
    }
}
