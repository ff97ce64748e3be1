//! Decisions and delayed rewards (issue 14): rewards (`/rewards`,
//! `/rewards/batch`), episode ends (`/episodes/end`) and a model's decision
//! log (`/models/{id}/decisions`, its NDJSON export) and episodes
//! (`/models/{id}/episodes`). The logging predict
//! itself is `/predict` ([`super::engine::predict`]). Each call runs the
//! store's decision method on a blocking thread; the store applies what
//! became ready in the same atomic step.

use std::future::Future;

use futures_util::TryFutureExt as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION};
use hyper::{Request, StatusCode};
use qlearn_core::decisions::DecisionStatus;
use qlearn_core::limits::MAX_BATCH;
use qlearn_core::store::{DecisionQuery, EpisodeQuery, RewardIn};
use qlearn_core::Error;

use super::engine::{metered, metered_nonblocking, with_monthly};
use crate::app::blocking;
use crate::ctx::Ctx;
use crate::error::{error_detail, ApiError};
use crate::http::{query_param, read_json};
use crate::response::{bytes_response, ok_json, Resp};
use crate::routes::Route;
use crate::wire::{
    listing_cursor, parse_listing_cursor, DecisionOut, DecisionsOut, EpisodeEndIn, EpisodeEndOut,
    EpisodeOut, EpisodesOut, RewardBody, RewardOut, RewardResult, RewardsBatchIn, RewardsBatchOut,
};

/// Most decisions in a page of `GET /models/{id}/decisions`.
pub const MAX_PAGE: u64 = 1000;
/// Decisions in a page by default.
pub const DEFAULT_PAGE: u64 = 100;

/// Records rewards (metered: one call per accepted reward), counting them
/// in the metrics once the store said how many it accepted.
async fn record(
    cx: &Ctx,
    model_id: String,
    rewards: Vec<RewardIn>,
) -> Result<
    (
        Vec<(
            String,
            qlearn_core::Result<qlearn_core::decisions::RewardReceipt>,
        )>,
        Option<crate::ctx::MonthlyState>,
    ),
    ApiError,
> {
    super::check_writable(&cx.app, &cx.user, &model_id).await?;
    // Rewards for decisions the store holds in memory are recorded on this
    // task (SQLite: no blocking-pool hop, the commit awaited as a future).
    let quick = metered_nonblocking(cx, 0, |store, meter| {
        store.rewards_nonblocking(meter, &model_id, &rewards)
    })
    .await;
    let (results, monthly) = match quick {
        Some(done) => done?,
        None => {
            // A decision the store must read first (a late reward): read on
            // the blocking pool, the commit awaited here, so that no pool
            // thread is parked through the group commit.
            let rewards = rewards.clone();
            let ((results, durable), monthly) = metered(cx, 0, move |app, meter| {
                app.store.rewards_deferred(meter, &model_id, &rewards)
            })
            .await?;
            durable.await?;
            (results, monthly)
        }
    };
    let out: Vec<_> = rewards
        .into_iter()
        .map(|r| r.decision_id)
        .zip(results)
        .collect();
    let accepted = out
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|r| r.metered()))
        .count();
    cx.app.metrics.metered(cx.user.tier, accepted as u64);
    Ok((out, monthly))
}

/// Rewards a logged decision (metered unless late or a duplicate).
#[utoipa::path(post, path = Route::Rewards.label(), tag = "decisions", security(("bearer" = [])),
    request_body = RewardBody,
    responses(
        (status = 200, description = "What the reward did: open, closed, applied, late or duplicate (metered when counted; RateLimit headers)", body = RewardOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "model_read_only: the model is read-only on the caller's plan after a downgrade (the reason says why)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found: an unknown model or decision, or another user's", body = crate::wire::ErrorBody),
        (status = 409, description = "conflict: the reward_id was recorded with another value", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field", body = crate::wire::ErrorBody),
        (status = 429, description = "quota_exceeded or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub fn reward(
    cx: &Ctx,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Resp, ApiError>> + Send + '_ {
    read_json(req, cx.app.config.body_limit, cx.deadline).and_then(
        move |body: RewardBody| async move {
            let (model_id, r) = body.split();
            let (mut out, monthly) = record(cx, model_id, vec![r]).await?;
            let (decision_id, result) = out
                .pop()
                .ok_or_else(|| ApiError::Core(Error::Internal("a reward got no result".into())))?;
            let receipt = result?;
            Ok(with_monthly(
                ok_json(&RewardOut::new(decision_id, &receipt)),
                monthly,
            ))
        },
    )
}

/// Rewards up to 1,000 decisions of one model, in order; each has its own
/// result (metered: one call per counted reward).
#[utoipa::path(post, path = Route::RewardsBatch.label(), tag = "decisions", security(("bearer" = [])),
    request_body = RewardsBatchIn,
    responses(
        (status = 200, description = "One result per reward, in order: its answer or its error (not_found, conflict, invalid_field)", body = RewardsBatchOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "model_read_only: the model is read-only on the caller's plan after a downgrade (the reason says why)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found (the model)", body = crate::wire::ErrorBody),
        (status = 413, description = "Body over the batch limit", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field (1 to 1,000 rewards)", body = crate::wire::ErrorBody),
        (status = 429, description = "quota_exceeded (every counted reward must fit; nothing recorded) or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub fn rewards_batch(
    cx: &Ctx,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Resp, ApiError>> + Send + '_ {
    read_json(req, cx.app.config.batch_limit, cx.deadline).and_then(
        move |b: RewardsBatchIn| async move {
            if b.rewards.is_empty() || b.rewards.len() > MAX_BATCH {
                return Err(Error::field(
                    "rewards",
                    format!(
                        "must hold 1 to {MAX_BATCH} rewards, got {}",
                        b.rewards.len()
                    ),
                )
                .into());
            }
            let rewards = b.rewards.into_iter().map(RewardIn::from).collect();
            let (out, monthly) = record(cx, b.model_id, rewards).await?;
            let results = out
                .into_iter()
                .map(|(id, r)| match r {
                    Ok(receipt) => RewardResult::ok(RewardOut::new(id, &receipt)),
                    Err(e) => RewardResult::failed(id, error_detail(e)),
                })
                .collect();
            Ok(with_monthly(ok_json(&RewardsBatchOut { results }), monthly))
        },
    )
}

/// Ends an episode: its last step is learned (terminal, or bootstrapping
/// from `next_state` when truncated) once its reward has closed. Free.
#[utoipa::path(post, path = Route::EpisodesEnd.label(), tag = "decisions", security(("bearer" = [])),
    request_body = EpisodeEndIn,
    responses(
        (status = 200, description = "Ended (again the same way: no effect)", body = EpisodeEndOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "model_read_only: the model is read-only on the caller's plan after a downgrade (the reason says why)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found: an unknown model or episode", body = crate::wire::ErrorBody),
        (status = 409, description = "conflict: the episode already ended another way", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field (truncated needs next_state; sarsa cannot bootstrap a truncated end) or invalid_state", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn end_episode(cx: &Ctx, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: EpisodeEndIn = read_json(req, cx.app.config.body_limit, cx.deadline).await?;
    let (model_id, episode_id, end) = body.split();
    let ep = episode_id.clone();
    super::check_writable(&cx.app, &cx.user, &model_id).await?;
    let (learned, monthly) = metered(cx, 0, move |app, meter| {
        app.store.end_episode(meter, &model_id, &ep, &end)
    })
    .await?;
    Ok(with_monthly(
        ok_json(&EpisodeEndOut {
            episode_id,
            learned,
        }),
        monthly,
    ))
}

/// An integer query parameter (`default` when absent).
fn int_param(query: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
    query_param(query, name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| Error::field(name, format!("must be an integer, got {v:?}")).into())
        })
        .transpose()
}

/// The filter of a listing or an export: `status`, `since`, `until`
/// (Unix seconds; `since` included, `until` excluded), `offset`, `limit`.
fn decision_query(query: Option<&str>, max: u64, default: u64) -> Result<DecisionQuery, ApiError> {
    let status = match query_param(query, "status").as_deref() {
        None => None,
        Some("open") => Some(DecisionStatus::Open),
        Some("closed") => Some(DecisionStatus::Closed),
        Some("applied") => Some(DecisionStatus::Applied),
        Some("expired") => Some(DecisionStatus::Expired),
        Some(other) => {
            return Err(Error::field(
                "status",
                format!("must be open, closed, applied or expired, got {other:?}"),
            )
            .into())
        }
    };
    let count = |name, default: u64| -> Result<u64, ApiError> {
        match int_param(query, name)? {
            None => Ok(default),
            Some(v) => u64::try_from(v).map_err(|_| {
                Error::field(name, format!("must be a non-negative integer, got {v}")).into()
            }),
        }
    };
    let limit = count("limit", default)?;
    if limit == 0 || limit > max {
        return Err(Error::field("limit", format!("must be in 1..={max}, got {limit}")).into());
    }
    Ok(DecisionQuery {
        status,
        since_ms: int_param(query, "since")?.map(|s| s.saturating_mul(1000)),
        until_ms: int_param(query, "until")?.map(|s| s.saturating_mul(1000)),
        offset: count("offset", 0)?,
        limit,
        ..DecisionQuery::default()
    })
}

/// The listing's own options: `order` (`oldest`, the default, or
/// `newest`: the latest decisions first, read from the log's end),
/// `count` (`true`, the default, or `false`: `total` is `null`, and the
/// scan of every matching decision it takes is saved) and `cursor` (a
/// page's `next`: the decisions after that page, found in the index).
fn listing_options(query: Option<&str>, q: &mut DecisionQuery) -> Result<(), ApiError> {
    q.newest_first = two_way(query, "order", "oldest", "newest")?;
    q.without_total = two_way(query, "count", "true", "false")?;
    q.after = match query_param(query, "cursor") {
        None => None,
        Some(c) => Some(parse_listing_cursor(&c).ok_or_else(|| {
            Error::field(
                "cursor",
                "must be a page's next cursor, as a listing gave it",
            )
        })?),
    };
    Ok(())
}

/// Query parameter `name` of two values: `false` when absent or `default`,
/// `true` when `other`; anything else is 422 `invalid_field`.
fn two_way(query: Option<&str>, name: &str, default: &str, other: &str) -> Result<bool, ApiError> {
    match query_param(query, name) {
        None => Ok(false),
        Some(v) if v == default => Ok(false),
        Some(v) if v == other => Ok(true),
        Some(v) => {
            Err(Error::field(name, format!("must be {default} or {other}, got {v:?}")).into())
        }
    }
}

/// A page of the model's decision log (oldest first, or newest first),
/// with its counts.
#[utoipa::path(get, path = Route::ModelDecisions.label(), tag = "decisions", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("status" = Option<String>, Query, description = "Only decisions in this status: open, closed, applied or expired"),
        ("since" = Option<i64>, Query, description = "Only decisions logged at or after this time (Unix seconds)"),
        ("until" = Option<i64>, Query, description = "Only decisions logged before this time (Unix seconds)"),
        ("offset" = Option<u64>, Query, description = "Decisions to skip, in the listing's order (default 0); each skipped decision is read, so page deep logs with since/until or order=newest"),
        ("limit" = Option<u64>, Query, description = format!("Decisions (1..={MAX_PAGE}, default {DEFAULT_PAGE})")),
        ("order" = Option<String>, Query, description = "oldest (default): by time, then id; newest: the reverse, the latest decisions first"),
        ("count" = Option<bool>, Query, description = "true (default): total counts every matching decision; false: total is null, and that scan is saved"),
        ("cursor" = Option<String>, Query, description = "A page's next: the decisions after that page's last, in the same order and filters (found in the index, where an offset reads what it skips)"),
    ),
    responses(
        (status = 200, description = "The page (empty for a model that logs no decisions)", body = DecisionsOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field (a query parameter)", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn list(cx: &Ctx, id: String, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let mut q = decision_query(req.uri().query(), MAX_PAGE, DEFAULT_PAGE)?;
    listing_options(req.uri().query(), &mut q)?;
    let limit = q.limit;
    let (a, uid) = (cx.app.clone(), cx.user.id.clone());
    let (info, page) = blocking(move || {
        let info = a.store.model(&uid, &id)?;
        let page = a.store.decisions(&uid, &id, &q)?;
        Ok((info, page))
    })
    .await?;
    let aggregation = info.decisions.map(|d| d.aggregation).unwrap_or_default();
    let next = match page.decisions.last() {
        Some(last) if page.decisions.len() as u64 >= limit => {
            Some(listing_cursor(last.time_ms, &last.decision_id))
        }
        _ => None,
    };
    Ok(ok_json(&DecisionsOut {
        total: page.total,
        next,
        decisions: page
            .decisions
            .into_iter()
            .map(|d| DecisionOut::new(d, aggregation))
            .collect(),
        stats: page.stats.into(),
    }))
}

/// The model's decision log as NDJSON (one decision per line, oldest
/// first): what offline evaluation needs.
#[utoipa::path(get, path = Route::ModelDecisionsExport.label(), tag = "decisions", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("status" = Option<String>, Query, description = "Only decisions in this status: open, closed, applied or expired"),
        ("since" = Option<i64>, Query, description = "Only decisions logged at or after this time (Unix seconds)"),
        ("until" = Option<i64>, Query, description = "Only decisions logged before this time (Unix seconds)"),
    ),
    responses(
        (status = 200, description = "application/x-ndjson: one DecisionOut per line", content_type = "application/x-ndjson", body = DecisionOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field (a query parameter)", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn export(cx: &Ctx, id: String, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let mut q = decision_query(req.uri().query(), u64::MAX, u64::MAX)?;
    q.offset = 0;
    let (a, uid, mid) = (cx.app.clone(), cx.user.id.clone(), id.clone());
    let body = blocking(move || {
        let info = a.store.model(&uid, &mid)?;
        let page = a.store.decisions(&uid, &mid, &q)?;
        let aggregation = info.decisions.map(|d| d.aggregation).unwrap_or_default();
        let mut out = Vec::with_capacity(page.decisions.len() * 200);
        for d in page.decisions {
            serde_json::to_writer(&mut out, &DecisionOut::new(d, aggregation))
                .map_err(|e| Error::Internal(format!("decision export: {e}")))?;
            out.push(b'\n');
        }
        Ok(out)
    })
    .await?;
    let mut resp = bytes_response(
        StatusCode::OK,
        HeaderValue::from_static("application/x-ndjson"),
        body,
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"decisions-{id}.ndjson\""))
    {
        resp.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// The filter of an episode listing: `status` (open or ended), `after`
/// (the last episode id of the previous page), `limit`.
fn episode_query(query: Option<&str>) -> Result<EpisodeQuery, ApiError> {
    let ended = match query_param(query, "status").as_deref() {
        None => None,
        Some("open") => Some(false),
        Some("ended") => Some(true),
        Some(other) => {
            return Err(
                Error::field("status", format!("must be open or ended, got {other:?}")).into(),
            )
        }
    };
    let limit = match int_param(query, "limit")? {
        None => DEFAULT_PAGE,
        Some(v) => u64::try_from(v)
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| Error::field("limit", format!("must be in 1..={MAX_PAGE}, got {v}")))?,
    };
    Ok(EpisodeQuery {
        ended,
        after: query_param(query, "after").map(|a| a.into_owned()),
        limit,
    })
}

/// A page of the model's episodes in id order (bytewise), with their steps
/// and the return learned so far; keyset paging by `after`.
#[utoipa::path(get, path = Route::ModelEpisodes.label(), tag = "decisions", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("status" = Option<String>, Query, description = "Only open (going on) or ended episodes"),
        ("after" = Option<String>, Query, description = "Only episodes whose id comes after this one: the previous page's next_after"),
        ("limit" = Option<u64>, Query, description = format!("Episodes (1..={MAX_PAGE}, default {DEFAULT_PAGE})")),
    ),
    responses(
        (status = 200, description = "The page (empty for a model that logs no decisions)", body = EpisodesOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field (a query parameter)", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn episodes(cx: &Ctx, id: String, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q = episode_query(req.uri().query())?;
    let (a, uid) = (cx.app.clone(), cx.user.id.clone());
    let page = blocking(move || a.store.episodes(&uid, &id, &q)).await?;
    let next_after = page
        .more
        .then(|| page.episodes.last().map(|e| e.episode_id.clone()))
        .flatten();
    Ok(ok_json(&EpisodesOut {
        episodes: page.episodes.into_iter().map(EpisodeOut::from).collect(),
        next_after,
    }))
}
