//! The metered engine calls (`/predict`, `/update`, `/update/batch`) and the
//! live event stream of a model (`/models/{id}/events`).
//!
//! The hot path: one JSON parse, one blocking-pool hop that runs the store's
//! metered call (quota debit and engine step, atomically, inside the store),
//! one JSON write. Action names come from a short per-instance cache.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::{Request, StatusCode};
use qlearn_core::limits::MAX_BATCH;
use qlearn_core::store::{Meter, Report, Updated};
use qlearn_core::tenancy::{seconds_until_next_month, BillingMonth, TierLimits};
use qlearn_core::{Error, Experience, UpdateOutcome};
use tokio::sync::{broadcast, mpsc};

use crate::app::{blocking, App};
use crate::ctx::{month_secs, Ctx, MonthlyState};
use crate::error::ApiError;
use crate::events::frame;
use crate::http::read_json;
use crate::now_unix;
use crate::response::{bytes_response, ok_json, Body, Resp};
use crate::routes::Route;
use crate::wire::{
    BatchIn, BatchOut, ExperienceIn, PredictIn, PredictOut, UpdateEvent, UpdateIn, UpdateOut,
};

/// The monthly quota's state after a successful metered call (limited tiers
/// only; asks the store for the month's count, which for those tiers is at
/// most a few thousand queries a month per user).
fn monthly_after(
    app: &App,
    user_id: &str,
    limits: &TierLimits,
    now: i64,
) -> qlearn_core::Result<Option<MonthlyState>> {
    let Some(limit) = limits.monthly_calls else {
        return Ok(None);
    };
    let usage = app.store.usage(user_id, BillingMonth::from_unix(now))?;
    Ok(Some(MonthlyState {
        limit,
        remaining: limit.saturating_sub(usage.calls),
        reset_secs: seconds_until_next_month(now),
        window_secs: month_secs(),
    }))
}

fn with_monthly(mut resp: Resp, m: Option<MonthlyState>) -> Resp {
    if let Some(m) = m {
        resp.extensions_mut().insert(m);
    }
    resp
}

/// Chooses an action for a state (metered).
#[utoipa::path(post, path = Route::Predict.label(), tag = "engine", security(("bearer" = [])),
    request_body = PredictIn,
    responses(
        (status = 200, description = "The chosen action (metered; RateLimit headers)", body = PredictOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found (unknown or another user's model)", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field, invalid_state or invalid_action", body = crate::wire::ErrorBody),
        (status = 429, description = "quota_exceeded (Retry-After: seconds to the 1st, 00:00 UTC) or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn predict(cx: &Ctx, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: PredictIn = read_json(req, cx.app.config.body_limit).await?;
    let ((p, names), monthly) = metered(cx, 1, move |app, meter| {
        let p = app.store.predict(
            meter,
            &body.model_id,
            body.state.as_ref(),
            body.explore,
            body.allowed_actions.as_deref(),
        )?;
        let names = app.action_names(meter.user_id, &body.model_id)?;
        Ok((p, names))
    })
    .await?;
    let out = PredictOut {
        action: p.action,
        action_name: names
            .as_ref()
            .and_then(|n| n.get(p.action))
            .map(String::as_str),
        q_values: p.q_values,
        explored: p.explored,
        epsilon: p.epsilon,
    };
    Ok(with_monthly(ok_json(&out), monthly))
}

/// Applies `exps` (metered) and publishes their events; shared by both
/// update routes.
async fn apply(
    cx: &Ctx,
    model_id: String,
    exps: Vec<ExperienceIn>,
) -> Result<(Vec<UpdateOutcome>, Option<MonthlyState>), ApiError> {
    let n = exps.len() as u64;
    metered(cx, n, move |app, meter| {
        let xs: Vec<Experience<'_>> = exps.iter().map(ExperienceIn::experience).collect();
        // The written rows only when someone listens (nothing copied otherwise).
        let report = match app.events.sender(&model_id) {
            Some(_) => Report::Touched,
            None => Report::Outcomes,
        };
        let done = app.store.update(meter, &model_id, &xs, report)?;
        publish(app, &model_id, &exps, &done);
        Ok(done.outcomes)
    })
    .await
}

/// Runs a store call metered as `calls` calls on the blocking pool, with the
/// caller's meter (tier limits, now), then reads the month's usage for the
/// response's quota headers and counts the calls in the metrics. Shared by
/// every metered route.
async fn metered<T: Send + 'static>(
    cx: &Ctx,
    calls: u64,
    f: impl FnOnce(&App, &Meter<'_>) -> Result<T, Error> + Send + 'static,
) -> Result<(T, Option<MonthlyState>), ApiError> {
    let app = cx.app.clone();
    let user = cx.user.clone();
    let r = cx
        .app
        .store_call(move || {
            let now = now_unix();
            let limits = app.limits(&user);
            let meter = Meter {
                user_id: &user.id,
                limits,
                now,
            };
            let out = f(&app, &meter)?;
            let monthly = monthly_after(&app, &user.id, limits, now)?;
            Ok((out, monthly))
        })
        .await?;
    cx.app.metrics.metered(cx.user.tier, calls);
    Ok(r)
}

/// Sends one `update` event per applied experience to the model's
/// subscribers, if any, from the rows and statistics the update returned
/// (asked for when someone listened as it started).
fn publish(app: &App, model_id: &str, exps: &[ExperienceIn], done: &Updated) {
    let Some(tx) = app.events.sender(model_id) else {
        return;
    };
    let Some(touched) = &done.touched else {
        return;
    };
    let (stats, out) = (&touched.stats, &done.outcomes);
    let n = exps.len();
    // Counters after experience i = final counters minus what came later.
    let mut episodes_after = stats.episodes;
    let mut events = Vec::with_capacity(n);
    for i in (0..n).rev() {
        let (x, o) = (&exps[i], &out[i]);
        let q_values = touched
            .state_q_values(i)
            .map(<[f64]>::to_vec)
            .unwrap_or_default();
        let ev = UpdateEvent {
            state: x.state.clone(),
            action: x.action,
            q_values,
            q_value: o.q_value,
            td_error: o.td_error,
            epsilon: o.epsilon,
            updates: stats.updates - (n - 1 - i) as u64,
            episodes: episodes_after,
            episode_return: o.episode_return,
        };
        if o.episode_return.is_some() {
            episodes_after = episodes_after.saturating_sub(1);
        }
        events.push(ev);
    }
    for ev in events.iter().rev() {
        if let Ok(json) = serde_json::to_string(ev) {
            let _ = tx.send(frame("update", &json));
        }
    }
}

fn update_out(o: &UpdateOutcome) -> UpdateOut {
    UpdateOut {
        q_value: o.q_value,
        td_error: o.td_error,
        epsilon: o.epsilon,
    }
}

/// Learns from one experience (metered).
#[utoipa::path(post, path = Route::Update.label(), tag = "engine", security(("bearer" = [])),
    request_body = UpdateIn,
    responses(
        (status = 200, description = "Learned (metered; RateLimit headers)", body = UpdateOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "state_limit_reached: the update would add states past the tier's states per model (refused whole, not metered)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field, invalid_state or invalid_action", body = crate::wire::ErrorBody),
        (status = 429, description = "quota_exceeded or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn update(cx: &Ctx, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let b: UpdateIn = read_json(req, cx.app.config.body_limit).await?;
    let (model_id, exp) = b.split();
    let (out, monthly) = apply(cx, model_id, vec![exp]).await?;
    let o = out
        .first()
        .ok_or_else(|| ApiError::Core(Error::Internal("update returned no outcome".into())))?;
    Ok(with_monthly(ok_json(&update_out(o)), monthly))
}

/// Learns from up to 1,000 experiences in order, all or nothing (N metered calls).
#[utoipa::path(post, path = Route::UpdateBatch.label(), tag = "engine", security(("bearer" = [])),
    request_body = BatchIn,
    responses(
        (status = 200, description = "All applied, in order (N metered calls)", body = BatchOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "state_limit_reached: the batch would add states past the tier's states per model (refused whole, not metered)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 413, description = "Body over the batch limit (1 MiB)", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid experience (names experiences[i]); nothing applied", body = crate::wire::ErrorBody),
        (status = 429, description = "quota_exceeded (the whole batch must fit) or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn update_batch(cx: &Ctx, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let b: BatchIn = read_json(req, cx.app.config.batch_limit).await?;
    if b.experiences.is_empty() || b.experiences.len() > MAX_BATCH {
        return Err(Error::field(
            "experiences",
            format!(
                "must hold 1 to {MAX_BATCH} experiences, got {}",
                b.experiences.len()
            ),
        )
        .into());
    }
    let (out, monthly) = apply(cx, b.model_id, b.experiences).await?;
    let results = out.iter().map(update_out).collect();
    Ok(with_monthly(ok_json(&BatchOut { results }), monthly))
}

/// Server-sent events: every update of the model, live.
#[utoipa::path(get, path = Route::ModelEvents.label(), tag = "engine", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("access_token" = Option<String>, Query, description = "The bearer token, for EventSource clients that cannot send headers"),
    ),
    responses(
        (status = 200, description = "text/event-stream: an `update` event (data: UpdateEvent) per update; `: keep-alive` every 15 s", content_type = "text/event-stream", body = UpdateEvent),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn events(cx: &Ctx, id: String) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let mid = id.clone();
    blocking(move || a.store.model(&uid, &mid)).await?;
    let rx = cx.app.events.subscribe(&id);
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(forward(cx.app.clone(), id, rx, tx));
    let mut resp = bytes_response(
        StatusCode::OK,
        HeaderValue::from_static("text/event-stream"),
        Body::Stream(body_rx),
    );
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// Forwards a model's events to one subscriber, with keep-alive comments,
/// until the client goes away or the server shuts down.
async fn forward(
    app: Arc<App>,
    model_id: String,
    mut rx: broadcast::Receiver<Bytes>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut shutdown = app.shutdown_signal();
    let every = app.config.sse_keep_alive;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + every,
        every.max(Duration::from_millis(10)),
    );
    if tx
        .send(Bytes::from_static(b": connected\n\n"))
        .await
        .is_ok()
    {
        loop {
            let chunk = tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(b) => b,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        frame("lagged", &format!("{{\"missed\":{n}}}"))
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => Bytes::from_static(b": keep-alive\n\n"),
                _ = tx.closed() => break,
                _ = shutdown.changed() => break,
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    }
    drop(rx);
    app.events.release(&model_id);
}
