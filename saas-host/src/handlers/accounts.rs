//! Accounts: registration, login, the caller's profile and password, API
//! keys, and the admin's user changes.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION};
use hyper::{Request, StatusCode};
use qlearn_core::store::{KeyScope, NewApiKey, NewUser};
use qlearn_core::tenancy::{
    address_key, hash_api_key, hash_password, normalize_email, validate_password, verify_password,
    BillingMonth, Limiter, Role, Tier,
};
use qlearn_core::{Error, Model, ModelConfig};

use super::check_name;
use crate::app::{blocking, App};
use crate::config::Throttle;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::hashing::hashing;
use crate::http::{query_param, read_json, RequestDeadline};
use crate::invoicing::{Format, UsageReport};
use crate::now_unix;
use crate::response::{bytes_response, json_response, no_content, ok_json, Resp};
use crate::routes::Route;
use crate::wire::{
    AdminUserPatch, CreatedKey, Credentials, KeyOut, NewKey, PasswordChange, Registered, TokenOut,
    UserOut, MAX_KEY_DAYS,
};

/// Actions of the model every new account gets.
pub const DEFAULT_MODEL_ACTIONS: usize = 4;

fn throttled(e: Error) -> ApiError {
    match e {
        Error::RateLimited { retry_after_secs } => {
            ApiError::TooManyAttempts(retry_after_secs.max(1))
        }
        other => ApiError::Core(other),
    }
}

/// Takes one attempt from the bucket `key` of the limiter `pick` chooses:
/// `429 too_many_attempts` when it is empty.
async fn attempt(
    app: &Arc<App>,
    pick: fn(&App) -> &Limiter,
    key: String,
    t: Throttle,
) -> Result<(), ApiError> {
    app.throttle(move |a| Ok(pick(a).check(&key, t.rate, t.burst, a.clock()).map(|_| ())))
        .await?
        .map_err(throttled)
}

/// Creates an account (free tier) and its default model; returns a token.
#[utoipa::path(post, path = Route::Register.label(), tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 409, description = "email_taken", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "Invalid email or password", body = crate::wire::ErrorBody),
        (status = 429, description = "too_many_attempts (registrations per address)", body = crate::wire::ErrorBody),
    ))]
pub async fn register(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: IpAddr,
    deadline: RequestDeadline,
) -> Result<Resp, ApiError> {
    let t = app.config.register_per_address;
    attempt(app, |a| &a.register_address, address_key(client), t).await?;
    let body: Credentials = read_json(req, app.config.body_limit, deadline).await?;
    let email = normalize_email(&body.email)?;
    validate_password(&body.password)?;
    let a = app.clone();
    let e = email.clone();
    let taken = blocking(move || Ok(a.store.user_by_email(&e)?.is_some())).await?;
    if taken {
        return Err(ApiError::EmailTaken);
    }
    let password = body.password;
    let hash = hashing(move || hash_password(&password)).await??;
    let a = app.clone();
    let (user, model_id) = blocking(move || {
        // The user and its default model in one atomic write.
        let model = Model::new(ModelConfig::new(DEFAULT_MODEL_ACTIONS))?;
        let new = NewUser {
            email,
            password_hash: hash,
            tier: Tier::Free,
            role: Role::User,
        };
        let max = a.config.limits.for_tier(Tier::Free).max_models;
        let (user, info) = a.store.register(new, "default", &model, max, now_unix())?;
        Ok((user, info.id))
    })
    .await
    .map_err(|e| match e {
        ApiError::Core(Error::Conflict(_)) => ApiError::EmailTaken,
        other => other,
    })?;
    tracing::info!(user = %user.id, "registered");
    let token = app.issue_token(&user)?;
    Ok(json_response(
        StatusCode::CREATED,
        &Registered {
            access_token: token,
            token_type: "bearer",
            expires_in: app.token_ttl_secs(),
            user: UserOut::from(&user),
            default_model_id: model_id,
        },
    ))
}

/// Exchanges email and password for a token.
#[utoipa::path(post, path = Route::Login.label(), tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in", body = TokenOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "invalid_credentials (same for unknown email and wrong password)", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "Invalid field", body = crate::wire::ErrorBody),
        (status = 429, description = "too_many_attempts (failed logins per account or address)", body = crate::wire::ErrorBody),
    ))]
pub async fn login(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: IpAddr,
    deadline: RequestDeadline,
) -> Result<Resp, ApiError> {
    let body: Credentials = read_json(req, app.config.body_limit, deadline).await?;
    // A malformed email cannot be an account: same answer as a wrong password.
    let email = normalize_email(&body.email).unwrap_or_else(|_| body.email.clone());
    let (ta, tc) = (app.config.login_per_account, app.config.login_per_address);
    // Each guess reserves its slot in both buckets before the password is
    // checked, so concurrent guesses cannot all pass a check that is only
    // charged afterwards; a correct password gives the slots back. The
    // account's bucket is per client address too: a stranger's wrong guesses
    // cannot lock the owner out from the owner's own address.
    let addr = address_key(client);
    let account = format!("{email} {addr}");
    let (ad, ac) = (addr.clone(), account.clone());
    app.throttle(move |a| {
        let now = a.clock();
        if let Err(e) = a.login_address.check(&ad, tc.rate, tc.burst, now) {
            return Ok(Err(e));
        }
        if let Err(e) = a.login_account.check(&ac, ta.rate, ta.burst, now) {
            a.login_address.refund(&ad, 1.0)?;
            return Ok(Err(e));
        }
        Ok(Ok(()))
    })
    .await?
    .map_err(throttled)?;
    let a = app.clone();
    let e = email.clone();
    let user = blocking(move || a.store.user_by_email(&e)).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let password = body.password;
    // Unknown users cost a verification against a dummy hash too.
    let ok = hashing(move || verify_password(&password, stored.as_deref())).await?;
    // A disabled account cannot log in (same answer as a wrong password).
    let user = user.filter(|u| ok && !u.disabled);
    let Some(user) = user else {
        return Err(Error::InvalidCredentials.into());
    };
    app.throttle(move |a| {
        a.login_account.reset(&account)?;
        a.login_address.refund(&addr, 1.0)
    })
    .await?;
    let token = app.issue_token(&user)?;
    Ok(ok_json(&TokenOut {
        access_token: token,
        token_type: "bearer",
        expires_in: app.token_ttl_secs(),
    }))
}

/// The caller's account.
#[utoipa::path(get, path = Route::Me.label(), tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn me(cx: &Ctx) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let id = cx.user.id.clone();
    let user = blocking(move || a.store.user(&id)).await?;
    let user = user.ok_or(ApiError::Unauthorized)?;
    Ok(ok_json(&UserOut::from(&user)))
}

/// Changes the password; revokes every earlier token and returns a new one.
#[utoipa::path(post, path = Route::MePassword.label(), tag = "accounts", security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed; every earlier token is revoked, here is a new one", body = TokenOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized, or invalid_credentials (wrong current password)", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "new_password invalid", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited or too_many_attempts", body = crate::wire::ErrorBody),
    ))]
pub async fn change_password(cx: &Ctx, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let app = &cx.app;
    let body: PasswordChange = read_json(req, app.config.body_limit, cx.deadline).await?;
    validate_password(&body.new_password).map_err(|e| match e {
        Error::InvalidField { message, .. } => Error::field("new_password", message),
        other => other,
    })?;
    // Like a login, the attempt reserves its slot before the check.
    let ta = app.config.login_per_account;
    let key = format!("pw:{}", cx.user.id);
    attempt(app, |a| &a.login_account, key.clone(), ta).await?;
    let a = app.clone();
    let id = cx.user.id.clone();
    let user = blocking(move || a.store.user(&id)?.ok_or(Error::InvalidCredentials)).await?;
    let stored = user.password_hash.clone();
    let (current, new) = (body.current_password, body.new_password);
    let hash = hashing(move || {
        if verify_password(&current, Some(&stored)) {
            hash_password(&new).map(Some)
        } else {
            Ok(None)
        }
    })
    .await??;
    let changed = match hash {
        None => None,
        Some(hash) => {
            let a = app.clone();
            let id = user.id.clone();
            blocking(move || {
                a.store.set_password(&id, &hash, now_unix())?;
                a.store.user(&id)
            })
            .await?
        }
    };
    let Some(user) = changed else {
        return Err(Error::InvalidCredentials.into());
    };
    app.throttle(move |a| a.login_account.reset(&key)).await?;
    app.forget_user(&user.id);
    tracing::info!(user = %user.id, "password changed; earlier tokens revoked");
    let token = app.issue_token(&user)?;
    Ok(ok_json(&TokenOut {
        access_token: token,
        token_type: "bearer",
        expires_in: app.token_ttl_secs(),
    }))
}

/// Creates an API key (shown once), with a scope (default `full`) and an
/// optional expiry. A key is never wider than the credential creating it,
/// and only an admin gets an `admin` key.
#[utoipa::path(post, path = Route::ApiKeys.label(), tag = "accounts", security(("bearer" = [])),
    request_body = NewKey,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedKey),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "forbidden (an `admin` key for a non-admin), or insufficient_scope (wider than the calling key)", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "Invalid name, scope or expiry", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn create_key(cx: &Ctx, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: NewKey = read_json(req, cx.app.config.body_limit, cx.deadline).await?;
    let name = check_name("name", &body.name)?;
    let now = now_unix();
    let scope = body.scope.unwrap_or(KeyScope::Full);
    if scope == KeyScope::Admin && cx.user.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    if !cx.scope.covers(scope) {
        return Err(ApiError::InsufficientScope(scope));
    }
    let expires_at = key_expiry(body.expires_in_days, body.expires_at.as_deref(), now)?;
    let (key, prefix) = cx.app.new_api_key();
    let hash = hash_api_key(&key);
    cx.app.key_created(&hash);
    let a = cx.app.clone();
    let id = cx.user.id.clone();
    let rec = blocking(move || {
        let new = NewApiKey {
            name: &name,
            prefix: &prefix,
            hash: &hash,
            scope,
            expires_at,
        };
        a.store.create_api_key(&id, new, now)
    })
    .await?;
    let out = CreatedKey {
        id: rec.id,
        name: rec.name,
        key,
        prefix: rec.prefix,
        created_at: qlearn_core::tenancy::rfc3339(rec.created_at),
        scope: rec.scope,
        expires_at: rec.expires_at.map(qlearn_core::tenancy::rfc3339),
    };
    Ok(json_response(StatusCode::CREATED, &out))
}

/// A new key's expiry (Unix seconds) from `expires_in_days` or `expires_at`
/// (RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ`): at most one of them, in the
/// future, at most [`MAX_KEY_DAYS`] days away.
fn key_expiry(days: Option<u32>, at: Option<&str>, now: i64) -> Result<Option<i64>, ApiError> {
    let max = now + i64::from(MAX_KEY_DAYS) * 86_400;
    match (days, at) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => {
            Err(Error::field("expires_at", "give expires_in_days or expires_at, not both").into())
        }
        (Some(d), None) => {
            if !(1..=MAX_KEY_DAYS).contains(&d) {
                return Err(Error::field(
                    "expires_in_days",
                    format!("must be 1 to {MAX_KEY_DAYS}, got {d}"),
                )
                .into());
            }
            Ok(Some(now + i64::from(d) * 86_400))
        }
        (None, Some(s)) => {
            let t = parse_utc(s).ok_or_else(|| {
                Error::field(
                    "expires_at",
                    format!("must be an RFC 3339 UTC time like 2027-01-31T00:00:00Z, got {s:?}"),
                )
            })?;
            if t <= now || t > max {
                return Err(Error::field(
                    "expires_at",
                    format!("must be in the future and at most {MAX_KEY_DAYS} days away"),
                )
                .into());
            }
            Ok(Some(t))
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` as Unix seconds (days from the civil date, as in
/// H. Hinnant's algorithm), checked by formatting it back: any other
/// spelling, or an impossible date, is `None`.
fn parse_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let t = (era * 146_097 + doe - 719_468) * 86_400 + hh * 3_600 + mm * 60 + ss;
    (qlearn_core::tenancy::rfc3339(t) == s).then_some(t)
}

/// Lists the caller's API keys (never the keys themselves), with each
/// key's scope, expiry and whether it still authenticates.
#[utoipa::path(get, path = Route::ApiKeys.label(), tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's keys (never the keys themselves)", body = Vec<KeyOut>),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn list_keys(cx: &Ctx) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let id = cx.user.id.clone();
    let keys = blocking(move || a.store.api_keys(&id)).await?;
    let now = now_unix();
    let out: Vec<KeyOut> = keys.iter().map(|k| KeyOut::of(k, &cx.user, now)).collect();
    Ok(ok_json(&out))
}

/// Revokes an API key.
#[utoipa::path(delete, path = Route::ApiKey.label(), tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found (unknown or another user's key)", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn delete_key(cx: &Ctx, key_id: String) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let id = cx.user.id.clone();
    blocking(move || a.store.delete_api_key(&id, &key_id)).await?;
    cx.app.forget_user(&cx.user.id);
    Ok(no_content())
}

/// Changes a user's tier or role (admin only).
#[utoipa::path(patch, path = Route::AdminUser.label(), tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    request_body = AdminUserPatch,
    responses(
        (status = 200, description = "The changed user", body = UserOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "forbidden (admin role needed)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "Invalid tier or role", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn admin_patch_user(
    cx: &Ctx,
    user_id: String,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    if cx.user.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    let body: AdminUserPatch = read_json(req, cx.app.config.body_limit, cx.deadline).await?;
    let a = cx.app.clone();
    let id = user_id.clone();
    let user = blocking(move || {
        if a.store.user(&id)?.is_none() {
            return Err(Error::NotFound("user"));
        }
        if let Some(t) = body.tier {
            a.store.set_tier(&id, t)?;
        }
        if let Some(r) = body.role {
            a.store.set_role(&id, r)?;
        }
        a.store.user(&id)?.ok_or(Error::NotFound("user"))
    })
    .await?;
    cx.app.forget_user(&user_id);
    tracing::info!(admin = %cx.user.id, user = %user_id, tier = %user.tier, role = %user.role, "user changed by admin");
    Ok(ok_json(&UserOut::from(&user)))
}

/// Every user's metered calls in a month, for invoicing: calls by kind,
/// overage and plan, as JSON or CSV (admin only).
#[utoipa::path(get, path = Route::AdminUsage.label(), tag = "admin", security(("bearer" = [])),
    params(
        ("month" = Option<String>, Query, description = "`YYYY-MM` (UTC; default this month)"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`"),
    ),
    responses(
        (status = 200, description = "The usage report: JSON, or with format=csv text/csv (a header line, then one line per user)", content(
            (UsageReport = "application/json"),
            (String = "text/csv"),
        )),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "forbidden (admin role needed)", body = crate::wire::ErrorBody),
        (status = 422, description = "Invalid month or format", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn admin_usage(cx: &Ctx, req: Request<Incoming>) -> Result<Resp, ApiError> {
    if cx.user.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    let q = req.uri().query();
    let month = match query_param(q, "month") {
        Some(m) => m.parse::<BillingMonth>()?,
        None => BillingMonth::from_unix(now_unix()),
    };
    let format = match query_param(q, "format") {
        Some(f) => f.parse::<Format>()?,
        None => Format::Json,
    };
    let a = cx.app.clone();
    let report = blocking(move || UsageReport::build(a.store.as_ref(), month)).await?;
    let (bytes, content_type) = report.render(format)?;
    let mut resp = bytes_response(
        StatusCode::OK,
        HeaderValue::from_static(content_type),
        bytes,
    );
    if format == Format::Csv {
        let name = format!("attachment; filename=\"usage-{month}.csv\"");
        if let Ok(v) = HeaderValue::from_str(&name) {
            resp.headers_mut().insert(CONTENT_DISPOSITION, v);
        }
    }
    Ok(resp)
}
