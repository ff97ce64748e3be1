//! Models: create, list, read, change, delete, status (Q-table pages),
//! export and import, and the caller's dashboard.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION};
use hyper::{Request, StatusCode};
use qlearn_core::store::ModelPatch;
use qlearn_core::tenancy::{
    date_string, features, rfc3339, seconds_until_next_month, BillingMonth, Features, TierLimits,
};
use qlearn_core::{Algorithm, Error, Model};

use super::check_name;
use crate::app::{blocking, App};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::http::{media_type, query_param, read_body, read_json};
use crate::now_unix;
use crate::response::{bytes_response, json_response, no_content, ok_json, Resp};
use crate::routes::Route;
use crate::wire::{
    CreateModel, DashboardOut, DayOut, LimitsOut, ModelOut, PatchModel, QTableOut, RowOut,
    StatusOut, UsageOut, UserOut,
};

/// Largest `limit` of a Q-table page.
pub const MAX_PAGE: u64 = 1000;
/// Default `limit` of a Q-table page.
pub const DEFAULT_PAGE: u64 = 100;

/// Lists the caller's models.
#[utoipa::path(get, path = Route::Models.label(), tag = "models", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's models, oldest first", body = Vec<ModelOut>),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn list(cx: &Ctx) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let models = blocking(move || a.store.models(&uid)).await?;
    Ok(ok_json(&ModelOut::list(models, cx.limits())))
}

/// Creates a model.
#[utoipa::path(post, path = Route::Models.label(), tag = "models", security(("bearer" = [])),
    request_body = CreateModel,
    responses(
        (status = 201, description = "Created", body = ModelOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "model_limit_reached, or plan_required (an algorithm other than q_learning needs a plan with advanced_algorithms; the message names the cheapest)", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field (names the field)", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn create(cx: &Ctx, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: CreateModel = read_json(req, cx.app.config.body_limit, cx.deadline).await?;
    let name = check_name("name", &body.name)?;
    let model = Model::new(body.config())?;
    require(cx, &features::needed_by_model(model.config(), false))?;
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let max = cx.limits().max_models;
    let info = blocking(move || a.store.create_model(&uid, &name, &model, max, now_unix())).await?;
    cx.app.read_only.forget(&cx.user.id);
    Ok(json_response(StatusCode::CREATED, &ModelOut::from(info)))
}

/// Reads a model.
#[utoipa::path(get, path = Route::Model.label(), tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The model", body = ModelOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found (unknown or another user's model)", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn get(cx: &Ctx, id: String) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let info = blocking(move || a.store.model(&uid, &id)).await?;
    Ok(ok_json(&ModelOut::from(info)))
}

/// Renames a model, changes its hyperparameters, or sets its `decisions`
/// setting (decision logging and delayed rewards; `null` turns it off).
#[utoipa::path(patch, path = Route::Model.label(), tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "Model id")),
    request_body = PatchModel,
    responses(
        (status = 200, description = "The changed model", body = ModelOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "plan_required: an algorithm other than q_learning (advanced_algorithms) or a decisions setting (decisions) on a plan without it; the message names the cheapest plan that has it", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field (n_actions and state_bins cannot change)", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited (also the tier's bulk_per_minute bucket of whole-model operations: export, import, a PATCH switching to or from double Q-learning)", body = crate::wire::ErrorBody),
    ))]
pub async fn patch(cx: &Ctx, id: String, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: PatchModel = read_json(req, cx.app.config.body_limit, cx.deadline).await?;
    let name = body
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let mid = id.clone();
    let limits = *cx.limits();
    // The feature gate, after the ownership check: another user's model
    // stays 404 whatever the patch asks.
    let config = body.config_patch();
    let needed = Features {
        advanced_algorithms: config
            .as_ref()
            .and_then(|c| c.algorithm)
            .is_some_and(|al| al != Algorithm::QLearning),
        decisions: matches!(body.decisions, Some(Some(_))),
    };
    if let Err(gate) = require(cx, &needed) {
        let (a, uid, mid) = (cx.app.clone(), cx.user.id.clone(), id.clone());
        blocking(move || a.store.model(&uid, &mid)).await?;
        return Err(gate);
    }
    // The log's retention is capped at the tier's.
    let decisions = body
        .decisions
        .as_ref()
        .map(|d| d.as_ref().map(|d| d.config(limits.decision_retention_days)));
    // The store applies the changed fields to the configuration current
    // under its lock, so concurrent PATCHes of different fields all land;
    // a switch to or from double Q-learning (it rewrites every row) is
    // charged to the bulk bucket there, before anything changes.
    let bulk = a.clone();
    let bulk_user = uid.clone();
    let patch = ModelPatch {
        name,
        config,
        decisions,
        on_reshape: Some(Arc::new(move || take_bulk(&bulk, &bulk_user, &limits))),
    };
    let info = blocking(move || a.store.update_model(&uid, &mid, patch, now_unix())).await?;
    cx.app.forget_model(&id);
    cx.app.read_only.forget(&cx.user.id);
    Ok(ok_json(&ModelOut::from(info)))
}

/// Takes one whole-model operation (export, import, a reshaping PATCH) from
/// the caller's bucket of its own: the tier's `bulk_per_minute`, a minute's
/// worth at once; over it, 429 `rate_limited` with `Retry-After`. Each such
/// call copies or rewrites a whole table (bounded by the tier's
/// `max_states`), which the per-request limit does not pay for.
/// The feature gate ([`features::require`]) for the caller's plan:
/// 403 `plan_required` naming the cheapest plan with the feature.
fn require(cx: &Ctx, needed: &Features) -> Result<(), ApiError> {
    features::require(&cx.app.config.limits, cx.user.tier, needed).map_err(ApiError::from)
}

fn take_bulk(app: &App, user_id: &str, limits: &TierLimits) -> Result<(), Error> {
    let per_minute = f64::from(limits.bulk_per_minute);
    app.rate
        .check(
            &format!("bulk:{user_id}"),
            per_minute / 60.0,
            per_minute,
            app.clock(),
        )
        .map(|_| ())
}

/// Deletes a model and its Q-table.
#[utoipa::path(delete, path = Route::Model.label(), tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn delete(cx: &Ctx, id: String) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let mid = id.clone();
    blocking(move || a.store.delete_model(&uid, &mid)).await?;
    cx.app.forget_model(&id);
    cx.app.read_only.forget(&cx.user.id);
    Ok(no_content())
}

fn page_param(query: Option<&str>, name: &str, default: u64) -> Result<u64, ApiError> {
    match query_param(query, name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().map_err(|_| {
            Error::field(name, format!("must be a non-negative integer, got {v:?}")).into()
        }),
    }
}

/// A model, its statistics and a page of its Q-table.
#[utoipa::path(get, path = Route::Status.label(), tag = "models", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("offset" = Option<u64>, Query, description = "First row (default 0)"),
        ("limit" = Option<u64>, Query, description = format!("Rows (1..={MAX_PAGE}, default {DEFAULT_PAGE})")),
    ),
    responses(
        (status = 200, description = "Model, statistics and a page of the Q-table", body = StatusOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid offset or limit", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn status(cx: &Ctx, id: String, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q = req.uri().query();
    let offset = page_param(q, "offset", 0)?;
    let limit = page_param(q, "limit", DEFAULT_PAGE)?;
    if limit == 0 || limit > MAX_PAGE {
        return Err(
            Error::field("limit", format!("must be in 1..={MAX_PAGE}, got {limit}")).into(),
        );
    }
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let (info, page) = blocking(move || {
        let info = a.store.model(&uid, &id)?;
        let page = a.store.q_table(&uid, &id, offset, limit)?;
        Ok((info, page))
    })
    .await?;
    let rows = page
        .rows
        .into_iter()
        .map(|(k, q)| RowOut {
            state: k.to_state(),
            q_values: q,
        })
        .collect();
    let model = ModelOut::from(info);
    let stats = crate::wire::StatsOut {
        predictions: model.stats.predictions,
        updates: model.stats.updates,
        episodes: model.stats.episodes,
        states: model.stats.states,
        epsilon: model.stats.epsilon,
        mean_reward: model.stats.mean_reward,
        recent_returns: model.stats.recent_returns.clone(),
    };
    Ok(ok_json(&StatusOut {
        model,
        stats,
        q_table: QTableOut {
            total: page.total,
            offset,
            limit,
            rows,
        },
    }))
}

/// Exports a model (shared binary format, or JSON).
#[utoipa::path(get, path = Route::ModelExport.label(), tag = "models", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("format" = Option<String>, Query, description = "`binary` (default) or `json`"),
    ),
    responses(
        (status = 200, description = "The model in the shared binary format (application/octet-stream) or the JSON export", content_type = "application/octet-stream"),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 422, description = "unknown format", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited (also the tier's bulk_per_minute bucket of whole-model operations: export, import, a PATCH switching to or from double Q-learning)", body = crate::wire::ErrorBody),
    ))]
pub async fn export(cx: &Ctx, id: String, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let json = match query_param(req.uri().query(), "format").as_deref() {
        None | Some("binary") => false,
        Some("json") => true,
        Some(other) => {
            return Err(
                Error::field("format", format!("must be binary or json, got {other:?}")).into(),
            )
        }
    };
    let (uid, limits) = (cx.user.id.clone(), *cx.limits());
    cx.app
        .throttle(move |a| take_bulk(a, &uid, &limits))
        .await?;
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let mid = id.clone();
    let bytes = blocking(move || {
        let model = a.store.export_model(&uid, &mid)?;
        if json {
            model.to_json().map(String::into_bytes)
        } else {
            model.to_bytes()
        }
    })
    .await?;
    let (ct, ext) = if json {
        (crate::response::JSON, "json")
    } else {
        (HeaderValue::from_static("application/octet-stream"), "qlrn")
    };
    let mut resp = bytes_response(StatusCode::OK, ct, bytes);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"model-{id}.{ext}\"")) {
        resp.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// Imports a model as a new model of the caller.
#[utoipa::path(post, path = Route::ModelsImport.label(), tag = "models", security(("bearer" = [])),
    params(("name" = Option<String>, Query, description = "Name of the new model (default `imported`)")),
    request_body(content = Vec<u8>, description = "The binary format (application/octet-stream) or the JSON export (application/json)", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Imported as a new model", body = ModelOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "model_limit_reached (checked before the body is read), state_limit_reached (the model holds more states than the tier allows per model), or plan_required (its algorithm needs a plan with advanced_algorithms)", body = crate::wire::ErrorBody),
        (status = 413, description = "Body over the tier's import size (max_import_bytes; refused from Content-Length before the body is read)", body = crate::wire::ErrorBody),
        (status = 415, description = "Neither application/octet-stream nor application/json", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_model (cannot decode) or invalid name", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited (also the tier's bulk_per_minute bucket of whole-model operations: export, import, a PATCH switching to or from double Q-learning)", body = crate::wire::ErrorBody),
    ))]
pub async fn import(cx: &Ctx, req: Request<Incoming>) -> Result<Resp, ApiError> {
    // What the tier allows is checked before a byte of the body is read:
    // the model limit, and the size (Content-Length, or while streaming).
    let limits = *cx.limits();
    if let Some(max) = limits.max_models {
        let a = cx.app.clone();
        let uid = cx.user.id.clone();
        let owned = blocking(move || a.store.models(&uid)).await?.len() as u64;
        if !limits.may_create_model(owned) {
            return Err(Error::ModelLimitReached { limit: max }.into());
        }
    }
    let uid = cx.user.id.clone();
    cx.app
        .throttle(move |a| take_bulk(a, &uid, &limits))
        .await?;
    let size_limit = usize::try_from(limits.max_import_bytes)
        .unwrap_or(usize::MAX)
        .min(cx.app.config.import_limit);
    let json = match media_type(&req) {
        Some(m) if m.eq_ignore_ascii_case("application/octet-stream") => false,
        Some(m) if m.eq_ignore_ascii_case("application/json") => true,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/octet-stream (binary model) or application/json (JSON export)",
            ))
        }
    };
    let name = match query_param(req.uri().query(), "name") {
        Some(n) => check_name("name", &n)?,
        None => "imported".to_owned(),
    };
    let bytes = read_body(req, size_limit, cx.deadline).await?;
    let tier = cx.user.tier;
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let info = blocking(move || {
        let model = if json {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| Error::Decode("the JSON export is not UTF-8".into()))?;
            Model::from_json(text)?
        } else {
            Model::from_bytes(&bytes)?
        };
        features::require(
            &a.config.limits,
            tier,
            &features::needed_by_model(model.config(), false),
        )?;
        let states = model.table().len() as u64;
        if let Some(limit) = limits
            .max_states
            .filter(|_| !limits.may_add_states(0, states))
        {
            return Err(Error::StateLimitReached {
                limit,
                states: 0,
                new: states,
            });
        }
        a.store
            .create_model(&uid, &name, &model, limits.max_models, now_unix())
    })
    .await?;
    cx.app.read_only.forget(&cx.user.id);
    Ok(json_response(StatusCode::CREATED, &ModelOut::from(info)))
}

/// The caller's account, tier limits, usage this month and models.
#[utoipa::path(get, path = Route::Dashboard.label(), tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, description = "User, tier limits, usage this month and per day, models", body = DashboardOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn dashboard(cx: &Ctx) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let now = now_unix();
    let month = BillingMonth::from_unix(now);
    let (user, usage, models) = blocking(move || {
        let user = a.store.user(&uid)?.ok_or(Error::NotFound("user"))?;
        let usage = a.store.usage(&uid, month)?;
        let models = a.store.models(&uid)?;
        Ok((user, usage, models))
    })
    .await?;
    let limits = *cx.app.limits(&user);
    let start = month.start_unix();
    let per_day = usage
        .per_day
        .iter()
        .enumerate()
        .map(|(i, &calls)| DayOut {
            date: date_string(start + i as i64 * 86_400),
            calls,
        })
        .collect();
    let out = DashboardOut {
        user: UserOut::from(&user),
        limits: LimitsOut::new(user.tier, &limits),
        usage: UsageOut {
            month: month.to_string(),
            calls: usage.calls,
            limit: limits.monthly_calls,
            remaining: limits.remaining_calls(usage.calls),
            overage_allowed: limits.overage_quota().is_some(),
            overage: usage.overage,
            resets_at: rfc3339(now + seconds_until_next_month(now) as i64),
            per_day,
        },
        models: ModelOut::list(models, &limits),
    };
    Ok(ok_json(&out))
}
