//! Offline evaluations as jobs (issue 18): create, list, read and cancel a
//! model's evaluation jobs. A creation only records the job (the plan's
//! limits checked by the store in the same step) and wakes this
//! instance's workers ([`crate::evaluations`]), which run it off the async
//! threads; clients poll the job.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Request, StatusCode};
use qlearn_core::evaluation::EvalRequest;
use qlearn_core::store::EvalLimits;
use qlearn_core::tenancy::{features, Features};
use qlearn_core::Error;

use crate::app::blocking;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::http::{query_param, read_json};
use crate::now_unix;
use crate::response::{json_response, no_content, ok_json, Resp};
use crate::routes::Route;
use crate::wire::{EvaluationOut, EvaluationsOut};

/// Most jobs in a page of the listing.
pub const MAX_PAGE: u32 = 100;
/// Jobs in a page by default.
pub const DEFAULT_PAGE: u32 = 20;

/// The model id and the job id of `/models/{id}/evaluations/{eid}` (the
/// router joins a route's placeholders with `/`).
fn ids(param: &str) -> Result<(String, String), ApiError> {
    param
        .split_once('/')
        .map(|(m, e)| (m.to_owned(), e.to_owned()))
        .ok_or(ApiError::RouteNotFound)
}

/// Queues an evaluation of the model's decision log.
#[utoipa::path(post, path = Route::ModelEvaluations.label(), tag = "evaluations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Model id")),
    request_body(content = crate::wire::EvaluationIn, description = "What to evaluate (see docs/http-api.md)"),
    responses(
        (status = 202, description = "Queued; Location names the job", body = EvaluationOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "plan_required: the plan has no decisions feature; insufficient_scope", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field: a member of the body, or a model that logs no decisions (field decisions)", body = crate::wire::ErrorBody),
        (status = 429, description = "evaluations_per_day_reached (Retry-After: the next UTC day), evaluations_at_once_reached, or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn create(cx: &Ctx, id: String, req: Request<Incoming>) -> Result<Resp, ApiError> {
    features::require(
        &cx.app.config.limits,
        cx.user.tier,
        &Features {
            decisions: true,
            ..Features::NONE
        },
    )?;
    let body: EvalRequest = read_json(req, cx.app.config.body_limit, cx.deadline).await?;
    let l = cx.limits();
    let limits = EvalLimits {
        per_day: l.evaluations_per_day,
        at_once: l.evaluations_at_once,
    };
    let (a, uid) = (cx.app.clone(), cx.user.id.clone());
    let job = blocking(move || {
        let info = a.store.model(&uid, &id)?;
        if info.decisions.is_none() {
            return Err(Error::field(
                "decisions",
                "this model logs no decisions: set its decisions setting (PATCH /models/{id}) and log some first",
            ));
        }
        body.validate(&info.config)?;
        a.store
            .create_evaluation(&uid, &id, &body, limits, now_unix())
    })
    .await?;
    cx.app.evaluation_wake.notify();
    let location = format!("/models/{}/evaluations/{}", job.model_id, job.id);
    let mut resp = json_response(StatusCode::ACCEPTED, &EvaluationOut::new(job));
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    Ok(resp)
}

/// The model's evaluation jobs, newest first.
#[utoipa::path(get, path = Route::ModelEvaluations.label(), tag = "evaluations", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("limit" = Option<u32>, Query, description = format!("Jobs (1..={MAX_PAGE}, default {DEFAULT_PAGE})")),
        ("before" = Option<String>, Query, description = "Only jobs created before this job (the last id of the previous page)"),
    ),
    responses(
        (status = 200, description = "The page", body = EvaluationsOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found: the model, or the job named by before", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field (limit)", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn list(cx: &Ctx, id: String, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let query = req.uri().query();
    let limit = match query_param(query, "limit") {
        None => DEFAULT_PAGE,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                Error::field("limit", format!("must be in 1..={MAX_PAGE}, got {v:?}"))
            })?,
    };
    let before = query_param(query, "before").map(|b| b.into_owned());
    let (a, uid) = (cx.app.clone(), cx.user.id.clone());
    let jobs = blocking(move || {
        a.store.model(&uid, &id)?;
        a.store.evaluations(&uid, &id, before.as_deref(), limit)
    })
    .await?;
    Ok(ok_json(&EvaluationsOut {
        evaluations: jobs.into_iter().map(EvaluationOut::new).collect(),
    }))
}

/// One evaluation job: its status, progress and, once done, its result.
#[utoipa::path(get, path = Route::ModelEvaluation.label(), tag = "evaluations", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("eid" = String, Path, description = "Evaluation id"),
    ),
    responses(
        (status = 200, description = "The job", body = EvaluationOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn get(cx: &Ctx, param: String) -> Result<Resp, ApiError> {
    let (id, eid) = ids(&param)?;
    let (a, uid) = (cx.app.clone(), cx.user.id.clone());
    let job = blocking(move || a.store.evaluation(&uid, &id, &eid)).await?;
    Ok(ok_json(&EvaluationOut::new(job)))
}

/// Cancels a queued or running job, or deletes a finished one's record.
#[utoipa::path(delete, path = Route::ModelEvaluation.label(), tag = "evaluations", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("eid" = String, Path, description = "Evaluation id"),
    ),
    responses(
        (status = 204, description = "Cancelled (queued or running) or deleted (finished)"),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "insufficient_scope", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn delete(cx: &Ctx, param: String) -> Result<Resp, ApiError> {
    let (id, eid) = ids(&param)?;
    let (a, uid) = (cx.app.clone(), cx.user.id.clone());
    blocking(move || a.store.cancel_evaluation(&uid, &id, &eid, now_unix())).await?;
    Ok(no_content())
}
