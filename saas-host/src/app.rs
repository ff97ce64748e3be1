//! The shared state of a running server ([`App`]) and authentication:
//! JWTs (HS256, algorithm pinned, `exp` required) and API keys, with a short
//! cache of authenticated users so the hot path needs no storage round trip.
//!
//! An API key authenticates while it is [`ApiKey::usable`] (not expired, not
//! older than its owner's last password change) and only for what its
//! [`KeyScope`] allows; a JWT allows everything its user may do. A key whose
//! form or checksum is wrong ([`api_key_form`]: keys carry an HMAC under a
//! secret kept in the store) is refused without a storage read; keys of the
//! form issued before checksums existed are still looked up. Unknown keys
//! are remembered for `Config::unknown_key_ttl` (at most [`UNKNOWN_KEYS_MAX`]), so
//! repeating a made-up `qlk_...` key costs no storage read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use qlearn_core::store::{ApiKey, Change, ChangeFeed, KeyScope, SharedStreams, Store, User};
use qlearn_core::tenancy::{
    api_key_form, generate_api_key, generate_secret, hash_api_key, looks_like_api_key, KeyForm,
    Limiter, SecretKey, TierLimits,
};
use qlearn_core::{Error, FastMap, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::ApiError;
use crate::events::{EventHub, Tickets};
use crate::last_jwt;
use crate::metrics::Metrics;
use crate::now_unix;

/// The setting under which a generated JWT secret is kept.
const SECRET_SETTING: &str = "jwt_secret";
/// The setting holding the secret of API keys' checksums: generated once
/// per database (so every instance sharing it agrees, and changing
/// `SECRET_KEY` does not break the keys issued).
const KEY_CHECK_SETTING: &str = "api_key_check_secret";
/// Cached entries above which a cache is cleared (bounds memory).
const CACHE_MAX: usize = 100_000;
/// Unknown API-key hashes remembered at most (the oldest half is dropped
/// when full, after the expired ones).
pub const UNKNOWN_KEYS_MAX: usize = 10_000;

/// What authenticated a request.
#[derive(Clone)]
pub struct Auth {
    /// The caller.
    pub user: Arc<User>,
    /// What the credential allows: an API key's scope; for a JWT,
    /// [`KeyScope::Admin`] (everything the user's role allows).
    pub scope: KeyScope,
    /// The bearer credential itself, so a long-lived response (an event
    /// stream) can check it again. Never logged.
    pub credential: Arc<str>,
}

/// Everything a request handler may use.
pub struct App {
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Config,
    jwt_enc: EncodingKey,
    jwt_dec: DecodingKey,
    validation: Validation,
    /// The secret of API keys' checksums ([`api_key_form`]).
    key_check: SecretKey,
    /// Per-user API rate limit (token buckets; leased from the database
    /// when instances share it) and whole-model operations.
    pub rate: Limiter,
    /// Failed logins per account.
    pub login_account: Limiter,
    /// Failed logins per client address.
    pub login_address: Limiter,
    /// Registrations per client address.
    pub register_address: Limiter,
    users: RwLock<FastMap<String, Cached>>,
    keys: RwLock<FastMap<String, Cached>>,
    /// Hashes of API keys the store did not know, with when it said so.
    unknown_keys: Mutex<HashMap<String, Instant>>,
    /// Bumped by every forget and key creation: a store read that started
    /// before one is not cached (it may predate the change it forgets).
    epoch: AtomicU64,
    /// This server's number in the process (`last_jwt` keeps each
    /// server's authentications apart).
    id: u64,
    /// Event-stream tickets (`POST /models/{id}/events/ticket`).
    pub tickets: Tickets,
    /// The open streams of every instance, when the store is shared (the
    /// stream caps count them all).
    pub streams: Option<Arc<dyn SharedStreams>>,
    /// JWTs whose signature was already checked, with their claims (saves
    /// the HMAC and two JSON parses per request on the hot path).
    verified: RwLock<FastMap<String, Arc<Claims>>>,
    /// Whether store calls may run on the async workers (the in-memory
    /// store never waits for IO).
    inline_store: bool,
    /// Live model events.
    pub events: Arc<EventHub>,
    /// Each user's models read-only on their plan ([`crate::read_only`]).
    pub read_only: crate::read_only::ReadOnly,
    /// Prometheus counters.
    pub metrics: Metrics,
    started: Instant,
    /// Wakes this instance's evaluation workers when a job is queued here.
    pub evaluation_wake: Arc<crate::evaluations::Wake>,
    /// Action names per model id (with the time they were read).
    names: RwLock<FastMap<String, (ActionNames, Instant)>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The store's change feed, when instances share it (PostgreSQL).
    feed: OnceLock<Arc<dyn ChangeFeed>>,
}

/// The next [`App`]'s number (`App::id`).
static NEXT_APP: AtomicU64 = AtomicU64::new(0);

#[derive(Clone)]
struct Cached {
    user: Arc<User>,
    /// The key's record when the entry is an API key's.
    key: Option<Arc<ApiKey>>,
    fingerprint: Arc<str>,
    at: Instant,
}

impl Drop for App {
    /// Releases the store, its change feed and the limiters using it off
    /// the async runtime: a backend's connections (PostgreSQL) may block
    /// while closing.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            let store = self.take_store();
            let feed = self.feed.take();
            let shared = (std::mem::take(&mut self.tickets), self.streams.take());
            let limiters = [
                &mut self.rate,
                &mut self.login_account,
                &mut self.login_address,
                &mut self.register_address,
            ]
            .map(|l| std::mem::replace(l, Limiter::local()));
            std::thread::spawn(move || drop((feed, shared, limiters, store)));
        }
    }
}

/// A model's action names, if it names its actions.
pub type ActionNames = Option<Arc<Vec<String>>>;

/// JWT claims.
#[derive(Serialize, Deserialize)]
struct Claims {
    /// The user id.
    sub: String,
    /// Issued at (Unix seconds).
    iat: i64,
    /// Expires at (Unix seconds).
    exp: i64,
    /// Fingerprint of the password hash the token was issued under: a
    /// password change revokes every earlier token, even one issued in the
    /// same second.
    pwv: String,
}

/// A short, non-reversible fingerprint of a password hash (which is itself
/// salted): 64 bits of SHA-256.
fn fingerprint(password_hash: &str) -> String {
    let mut h = hash_api_key(password_hash);
    h.truncate(16);
    h
}

/// Runs blocking work (storage, password hashing) on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Core(Error::Internal(format!(
            "blocking task failed: {e}"
        )))),
    }
}

impl App {
    /// Builds the state: resolves the JWT secret (from the configuration, or
    /// generated once and kept in the store). Blocks on the store.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Result<Self> {
        let secret = match &config.secret_key {
            Some(s) => SecretKey::new(s.as_bytes().to_vec())?,
            None => {
                let kept = match store.setting(SECRET_SETTING)? {
                    Some(s) => s,
                    None => {
                        tracing::warn!(
                            "SECRET_KEY is not set: using a generated secret kept in the database \
                             (set SECRET_KEY to at least 32 random bytes in production)"
                        );
                        store.set_setting_if_absent(SECRET_SETTING, &generate_secret())?
                    }
                };
                SecretKey::new(kept.into_bytes())?
            }
        };
        let key_check = match store.setting(KEY_CHECK_SETTING)? {
            Some(s) => s,
            None => store.set_setting_if_absent(KEY_CHECK_SETTING, &generate_secret())?,
        };
        let key_check = SecretKey::new(key_check.into_bytes())?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        validation.leeway = 5;
        validation.validate_exp = true;
        qlearn_core::tenancy::prepare_password_hashing();
        let inline_store = store.backend() == "memory";
        let buckets = store.shared_buckets();
        let (tickets, streams) = (Tickets::new(store.shared_tickets()), store.shared_streams());
        Ok(App {
            jwt_enc: EncodingKey::from_secret(secret.as_bytes()),
            jwt_dec: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            key_check,
            store,
            config,
            rate: Limiter::new("api", buckets.clone()),
            login_account: Limiter::new("login_account", buckets.clone()),
            login_address: Limiter::new("login_address", buckets.clone()),
            register_address: Limiter::new("register_address", buckets),
            users: RwLock::new(FastMap::default()),
            keys: RwLock::new(FastMap::default()),
            unknown_keys: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            id: NEXT_APP.fetch_add(1, Ordering::Relaxed),
            tickets,
            streams,
            verified: RwLock::new(FastMap::default()),
            inline_store,
            events: Arc::new(EventHub::default()),
            read_only: Default::default(),
            metrics: Metrics::default(),
            started: Instant::now(),
            evaluation_wake: Arc::new(crate::evaluations::Wake::default()),
            names: RwLock::new(FastMap::default()),
            shutdown: tokio::sync::watch::Sender::new(false),
            feed: OnceLock::new(),
        })
    }

    /// Starts hearing the changes other instances sharing the store make
    /// (nothing to do for a store that is never shared). Blocks on the store.
    pub fn start_feed(self: &Arc<Self>) -> Result<()> {
        let app: Weak<App> = Arc::downgrade(self);
        let sink = Arc::new(move |change: Change| {
            if let Some(app) = app.upgrade() {
                app.apply_change(change);
            }
        });
        if let Some(feed) = self.store.change_feed(sink)? {
            let _ = self.feed.set(feed);
        }
        Ok(())
    }

    /// The change feed, when instances share the store.
    pub fn feed(&self) -> Option<&Arc<dyn ChangeFeed>> {
        self.feed.get()
    }

    /// Acts on a change heard from the feed: forgets what it made stale,
    /// or forwards another instance's events to this one's subscribers.
    fn apply_change(&self, change: Change) {
        match change {
            Change::User(id) => self.forget_user(&id),
            Change::Model(id) => self.forget_model(&id),
            Change::All => {
                tracing::info!("change feed (re)connected: forgetting every cached entry");
                self.forget_all();
            }
            Change::Event { model_id, frames } => {
                if let Some(tx) = self.events.sender(&model_id) {
                    let _ = tx.send(Bytes::from(frames));
                }
            }
        }
    }

    /// Forgets every cached user, key and model fact, and tells every open
    /// event stream to check its credential now.
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let clear = |m: &RwLock<FastMap<String, Cached>>| {
            m.write().unwrap_or_else(|p| p.into_inner()).clear();
        };
        clear(&self.users);
        clear(&self.keys);
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.read_only.forget_all();
        self.events.recheck_all();
    }

    /// Takes the store out (replacing it with an empty in-memory one), so
    /// the caller can close it where blocking is allowed.
    pub fn take_store(&mut self) -> Arc<dyn Store> {
        std::mem::replace(
            &mut self.store,
            Arc::new(qlearn_core::store::memory::MemoryStore::new()),
        )
    }

    /// Runs a store call: on the blocking pool, or inline for the in-memory
    /// store (which never waits for IO), saving two thread hand-offs.
    pub async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        if self.inline_store {
            f().map_err(ApiError::from)
        } else {
            blocking(f).await
        }
    }

    /// Runs a call of the rate limiters: inline when they are in memory, on
    /// the blocking pool when they are in the shared database.
    pub async fn throttle<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&App) -> Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        if self.rate.is_shared() {
            let app = self.clone();
            blocking(move || f(&app)).await
        } else {
            f(self).map_err(ApiError::from)
        }
    }

    /// Seconds since start, the clock of the in-memory token buckets.
    pub fn clock(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The limits of `user`'s tier.
    pub fn limits(&self, user: &User) -> &TierLimits {
        self.config.limits.for_tier(user.tier)
    }

    /// A JWT for `user`, valid for the configured lifetime.
    pub fn issue_token(&self, user: &User) -> Result<String, ApiError> {
        let now = now_unix();
        let claims = Claims {
            sub: user.id.clone(),
            iat: now,
            exp: now + self.config.token_ttl.as_secs() as i64,
            pwv: fingerprint(&user.password_hash),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.jwt_enc)
            .map_err(|e| ApiError::Core(Error::Internal(format!("jwt encode: {e}"))))
    }

    /// The token's lifetime in seconds (`expires_in`).
    pub fn token_ttl_secs(&self) -> u64 {
        self.config.token_ttl.as_secs()
    }

    fn cached(&self, map: &RwLock<FastMap<String, Cached>>, key: &str) -> Option<Cached> {
        let m = map.read().unwrap_or_else(|p| p.into_inner());
        m.get(key)
            .filter(|c| c.at.elapsed() < self.config.auth_cache_ttl)
            .cloned()
    }

    /// Caches `user` (and its key) under `key`, unless something was
    /// forgotten since the store read began at `epoch`.
    fn remember(
        &self,
        map: &RwLock<FastMap<String, Cached>>,
        key: String,
        user: Arc<User>,
        api_key: Option<Arc<ApiKey>>,
        epoch: u64,
    ) -> Cached {
        let c = Cached {
            fingerprint: fingerprint(&user.password_hash).into(),
            user,
            key: api_key,
            at: Instant::now(),
        };
        let mut m = map.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return c;
        }
        if m.len() >= CACHE_MAX {
            m.clear();
        }
        m.insert(key, c.clone());
        c
    }

    /// Whether the store recently said it does not know the key `hash`.
    fn known_unknown(&self, hash: &str) -> bool {
        let m = self.unknown_keys.lock().unwrap_or_else(|p| p.into_inner());
        m.get(hash)
            .is_some_and(|at| at.elapsed() < self.config.unknown_key_ttl)
    }

    /// Remembers that the store does not know the key `hash`. When full,
    /// drops the expired entries, then (under a flood) the older half.
    fn remember_unknown(&self, hash: String, epoch: u64) {
        let mut m = self.unknown_keys.lock().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if m.len() >= UNKNOWN_KEYS_MAX {
            let ttl = self.config.unknown_key_ttl;
            m.retain(|_, at| at.elapsed() < ttl);
        }
        if m.len() >= UNKNOWN_KEYS_MAX {
            let mut ages: Vec<Instant> = m.values().copied().collect();
            let (_, median, _) = ages.select_nth_unstable(UNKNOWN_KEYS_MAX / 2);
            let cut = *median;
            m.retain(|_, at| *at > cut);
        }
        m.insert(hash, Instant::now());
    }

    /// Called when a key with `hash` is created: it must never be hidden by
    /// an earlier "unknown".
    pub fn key_created(&self, hash: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.unknown_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }

    /// Forgets every cached authentication of `user_id` (after a password,
    /// tier or role change or a key revocation on this instance), and tells
    /// the user's open event streams to check their credential now.
    pub fn forget_user(&self, user_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user_id);
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| c.user.id != user_id);
        self.events.recheck_user(user_id);
        self.read_only.forget(user_id);
    }

    /// A receiver that changes when the server starts shutting down.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells long-lived responses (event streams) to end.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// The action names of model `model_id` if they are cached (never
    /// blocks; the caller has checked the model is the caller's).
    pub fn cached_action_names(&self, model_id: &str) -> Option<ActionNames> {
        let m = self.names.read().unwrap_or_else(|p| p.into_inner());
        m.get(model_id)
            .filter(|(_, at)| at.elapsed() < self.config.auth_cache_ttl)
            .map(|(n, _)| n.clone())
    }

    /// The action names of `owner`'s model `model_id` (cached briefly; this
    /// instance's own changes invalidate at once). Blocks on a cache miss.
    pub fn action_names(&self, owner: &str, model_id: &str) -> Result<ActionNames> {
        {
            let m = self.names.read().unwrap_or_else(|p| p.into_inner());
            if let Some((n, at)) = m.get(model_id) {
                if at.elapsed() < self.config.auth_cache_ttl {
                    return Ok(n.clone());
                }
            }
        }
        let info = self.store.model(owner, model_id)?;
        let names = info.config.action_names.map(Arc::new);
        let mut m = self.names.write().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CACHE_MAX {
            m.clear();
        }
        m.insert(model_id.to_owned(), (names.clone(), Instant::now()));
        Ok(names)
    }

    /// Forgets cached facts about a model (after a change or deletion).
    pub fn forget_model(&self, model_id: &str) {
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(model_id);
    }

    /// The claims of a validly signed, unexpired JWT (verified once, then
    /// remembered until it expires).
    fn verify_jwt(&self, token: &str) -> Result<Arc<Claims>, ApiError> {
        let now = now_unix();
        if let Some(c) = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            return if c.exp > now {
                Ok(c.clone())
            } else {
                Err(ApiError::Unauthorized)
            };
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.jwt_dec, &self.validation)
            .map_err(|_| ApiError::Unauthorized)?;
        let claims = Arc::new(data.claims);
        let mut v = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if v.len() >= CACHE_MAX {
            v.retain(|_, c| c.exp > now);
            if v.len() >= CACHE_MAX {
                v.clear();
            }
        }
        v.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    /// Who a bearer token (JWT or API key), as sent, authenticates, and
    /// what it allows. A token this thread authenticated lately is
    /// recognized by its bytes; any other must be UTF-8 (surrounding
    /// whitespace ignored).
    pub async fn authenticate(self: &Arc<Self>, sent: &[u8]) -> Result<Auth, ApiError> {
        // Before anything is read: a forget after this point is seen.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let ttl = self.config.auth_cache_ttl;
        // Only JWTs are kept there: an API key never matches.
        if let Some((user, credential)) = last_jwt::lookup(self.id, epoch, sent, now_unix(), ttl) {
            return Ok(Auth {
                user,
                scope: KeyScope::Admin,
                credential,
            });
        }
        let token = std::str::from_utf8(sent)
            .map_err(|_| ApiError::Unauthorized)?
            .trim();
        if looks_like_api_key(token) {
            let (user, key) = self.authenticate_key(token).await?;
            return Ok(Auth {
                user,
                scope: key.scope,
                credential: token.into(),
            });
        }
        let claims = self.verify_jwt(token)?;
        let cached = match self.cached(&self.users, &claims.sub) {
            Some(c) => c,
            None => {
                let epoch = self.epoch.load(Ordering::SeqCst);
                let app = self.clone();
                let id = claims.sub.clone();
                let user = blocking(move || app.store.user(&id)).await?;
                let user = user.ok_or(ApiError::Unauthorized)?;
                self.remember(&self.users, claims.sub.clone(), Arc::new(user), None, epoch)
            }
        };
        if cached.user.disabled
            || claims.iat < cached.user.password_changed_at
            || *claims.pwv != *cached.fingerprint
        {
            return Err(ApiError::Unauthorized);
        }
        let credential: Arc<str> = token.into();
        let user = cached.user;
        last_jwt::keep(
            self.id,
            epoch,
            credential.clone(),
            user.clone(),
            claims.exp,
            cached.at,
        );
        Ok(Auth {
            user,
            scope: KeyScope::Admin,
            credential,
        })
    }

    /// A new API key (with its checksum) and its display prefix.
    pub fn new_api_key(&self) -> (String, String) {
        generate_api_key(self.key_check.as_bytes())
    }

    /// The owner and record of a usable API key: refused without a lookup
    /// when its form or checksum is wrong, from the cache, else from the
    /// store unless the key is known to be unknown.
    async fn authenticate_key(
        self: &Arc<Self>,
        token: &str,
    ) -> Result<(Arc<User>, Arc<ApiKey>), ApiError> {
        if api_key_form(token, self.key_check.as_bytes()) == KeyForm::Invalid {
            return Err(ApiError::Unauthorized);
        }
        let hash = hash_api_key(token);
        let cached = match self.cached(&self.keys, &hash) {
            Some(c) => c,
            None => {
                if self.known_unknown(&hash) {
                    return Err(ApiError::Unauthorized);
                }
                self.metrics.key_lookup();
                let epoch = self.epoch.load(Ordering::SeqCst);
                let app = self.clone();
                let h = hash.clone();
                let found = blocking(move || app.store.user_by_api_key(&h, now_unix())).await?;
                let Some((user, key)) = found else {
                    self.remember_unknown(hash, epoch);
                    return Err(ApiError::Unauthorized);
                };
                self.remember(&self.keys, hash, Arc::new(user), Some(Arc::new(key)), epoch)
            }
        };
        match cached.key {
            Some(key) if key.usable(&cached.user, now_unix()) => Ok((cached.user, key)),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        let config = Config {
            secret_key: Some("a test secret that is at least thirty-two bytes long".into()),
            ..Config::default()
        };
        App::new(
            Arc::new(qlearn_core::store::memory::MemoryStore::new()),
            config,
        )
        .unwrap()
    }

    #[test]
    fn a_created_key_is_never_hidden_by_the_unknown_cache() {
        let a = app();
        a.remember_unknown("h1".into(), 0);
        assert!(a.known_unknown("h1"));
        a.key_created("h1");
        assert!(!a.known_unknown("h1"));
        // A read that began before the creation does not bring it back.
        a.remember_unknown("h1".into(), 0);
        assert!(!a.known_unknown("h1"));
    }

    #[tokio::test]
    async fn a_credential_that_is_not_utf8_or_not_ours_is_refused() {
        let a = Arc::new(app());
        for sent in [&b"\xff\xfe"[..], b"", b"not-a-jwt", b" \x0bnot-a-jwt\x0b "] {
            assert!(
                matches!(a.authenticate(sent).await, Err(ApiError::Unauthorized)),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn the_unknown_cache_is_bounded() {
        let a = app();
        for i in 0..UNKNOWN_KEYS_MAX + 10 {
            a.remember_unknown(format!("h{i}"), 0);
        }
        let n = a.unknown_keys.lock().unwrap().len();
        assert!(n <= UNKNOWN_KEYS_MAX, "{n}");
        assert!(n >= 10, "{n}");
        assert!(a.known_unknown(&format!("h{}", UNKNOWN_KEYS_MAX + 9)));
    }
}
