//! The metered engine calls (`/predict`, `/predict/probabilities`,
//! `/update`, `/update/batch`) and the
//! live event stream of a model (`/models/{id}/events`).
//!
//! The hot path: one JSON parse, one blocking-pool hop that runs the store's
//! metered call (quota debit and engine step, atomically, inside the store),
//! one JSON write. Action names come from a short per-instance cache.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryFutureExt as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::{Request, StatusCode};
use qlearn_core::limits::MAX_BATCH;
use qlearn_core::store::{Decided, Durable, Meter, Report, Store, StreamPlace, Updated};
use qlearn_core::tenancy::{seconds_until_next_month, BillingMonth, TierLimits};
use qlearn_core::{Error, Experience, UpdateOutcome};
use tokio::sync::{broadcast, mpsc};

use crate::app::{blocking, ActionNames, App};
use crate::ctx::{month_secs, Ctx, MonthlyState};
use crate::error::ApiError;
use crate::events::{frame, RemoteWatch, SharedPlace, StreamCap, StreamSlot};
use crate::http::read_json;
use crate::now_unix;
use crate::response::{bytes_response, ok_json, Body, Resp};
use crate::routes::Route;
use crate::wire::{
    BatchIn, BatchOut, ExperienceIn, PredictIn, PredictOut, ProbabilitiesIn, ProbabilitiesOut,
    TicketOut, UpdateEvent, UpdateIn, UpdateOut,
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

/// `resp` with the monthly quota's state for the `RateLimit` headers.
pub(super) fn with_monthly(mut resp: Resp, m: Option<MonthlyState>) -> Resp {
    if let Some(m) = m {
        resp.extensions_mut().insert(m);
    }
    resp
}

/// Chooses an action for a state (metered).
#[utoipa::path(post, path = Route::Predict.label(), tag = "engine", security(("bearer" = [])),
    request_body = PredictIn,
    responses(
        (status = 200, description = "The chosen action (metered; RateLimit headers); on a model that logs decisions also decision_id, probability and step (a retried decision_id is free)", body = PredictOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "state_limit_reached: on a model that logs decisions, a state it does not store past the tier's states per model (not metered); model_read_only: a logging predict on a model read-only on the caller's plan (after a downgrade; the reason says why)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found (unknown or another user's model)", body = crate::wire::ErrorBody),
        (status = 409, description = "conflict: a decision_id logged for another state, episode or baseline_action, or a decision in an ended episode", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field, invalid_state or invalid_action", body = crate::wire::ErrorBody),
        (status = 429, description = "quota_exceeded (Retry-After: seconds to the 1st, 00:00 UTC) or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub fn predict(
    cx: &Ctx,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Resp, ApiError>> + Send + '_ {
    read_json(req, cx.app.config.body_limit, cx.deadline).and_then(
        move |body: PredictIn| async move {
            // The ids are checked on every model, as the schema states them.
            for (field, id) in [
                ("decision_id", &body.decision_id),
                ("episode_id", &body.episode_id),
            ] {
                if let Some(id) = id {
                    qlearn_core::decisions::check_id(field, id)?;
                }
            }
            // A model with a decisions setting logs the decision (issue 14); any
            // other answers a plain prediction.
            let request = body.decide();
            let quick = metered_nonblocking(cx, 1, |store, meter| {
                store.decide_nonblocking(meter, &body.model_id, &request)
            });
            if let Some(done) = quick.await {
                let (d, monthly) = done?;
                let names = match cx.app.cached_action_names(&body.model_id) {
                    Some(n) => n,
                    None => {
                        let (app, uid, mid) =
                            (cx.app.clone(), cx.user.id.clone(), body.model_id.clone());
                        cx.app
                            .store_call(move || app.action_names(&uid, &mid))
                            .await?
                    }
                };
                return Ok(with_monthly(ok_json(&predict_out(d, &names)), monthly));
            }
            let ((d, names), monthly) = metered(cx, 1, move |app, meter| {
                let d = app.store.decide(meter, &body.model_id, &body.decide())?;
                let names = app.action_names(meter.user_id, &body.model_id)?;
                Ok((d, names))
            })
            .await?;
            Ok(with_monthly(ok_json(&predict_out(d, &names)), monthly))
        },
    )
}

/// The behaviour policy's probability of each action (metered like a
/// prediction; changes nothing).
#[utoipa::path(post, path = Route::PredictProbabilities.label(), tag = "engine", security(("bearer" = [])),
    request_body = ProbabilitiesIn,
    responses(
        (status = 200, description = "The probability of each action under the policy predict follows with the same state, allowed actions and explore: epsilon-greedy (1 - epsilon) / |greedy ties| + epsilon / |allowed| on the tied best allowed actions, epsilon / |allowed| on the other allowed ones; softmax over the allowed actions; 1 / |allowed| for an unseen state. Metered as one call (RateLimit headers)", body = ProbabilitiesOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found (unknown or another user's model)", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_state or invalid_action (not metered)", body = crate::wire::ErrorBody),
        (status = 429, description = "quota_exceeded (Retry-After: seconds to the 1st, 00:00 UTC) or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub fn action_probabilities(
    cx: &Ctx,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Resp, ApiError>> + Send + '_ {
    read_json(req, cx.app.config.body_limit, cx.deadline).and_then(
        move |body: ProbabilitiesIn| async move {
            let (probabilities, monthly) = metered(cx, 1, move |app, meter| {
                app.store.action_probabilities(
                    meter,
                    &body.model_id,
                    body.state.as_ref(),
                    body.allowed_actions.as_deref(),
                    body.explore,
                )
            })
            .await?;
            Ok(with_monthly(
                ok_json(&ProbabilitiesOut { probabilities }),
                monthly,
            ))
        },
    )
}

/// The answer of `POST /predict`.
fn predict_out(d: Decided, names: &ActionNames) -> PredictOut<'_> {
    let p = d.prediction;
    let logged = d.decision;
    PredictOut {
        action: p.action,
        action_name: names
            .as_ref()
            .and_then(|n| n.get(p.action))
            .map(String::as_str),
        q_values: p.q_values,
        explored: p.explored,
        epsilon: p.epsilon,
        probability: logged.as_ref().map(|l| l.probability),
        step: logged
            .as_ref()
            .and_then(|l| l.episode_id.as_ref().map(|_| l.step)),
        decision_id: logged.map(|l| l.decision_id),
    }
}

/// Applies `exps` (metered) and publishes their events; shared by both
/// update routes.
async fn apply(
    cx: &Ctx,
    model_id: String,
    exps: Vec<ExperienceIn>,
) -> Result<(Vec<UpdateOutcome>, Option<MonthlyState>), ApiError> {
    let n = exps.len() as u64;
    super::check_writable(&cx.app, &cx.user, &model_id).await?;
    // The written rows only when someone listens (nothing copied otherwise).
    let report = match cx.app.events.sender(&model_id) {
        Some(_) => Report::Touched,
        None => Report::Outcomes,
    };
    let quick = metered_nonblocking(cx, n, |store, meter| match exps.as_slice() {
        // One experience (`POST /update`): borrowed in place, no list built.
        [one] => store.update_nonblocking(meter, &model_id, &[one.experience()], report),
        many => {
            let xs: Vec<Experience<'_>> = many.iter().map(ExperienceIn::experience).collect();
            store.update_nonblocking(meter, &model_id, &xs, report)
        }
    });
    if let Some(done) = quick.await {
        let (done, monthly) = done?;
        publish(&cx.app, &model_id, &exps, &done);
        return Ok((done.outcomes, monthly));
    }
    metered(cx, n, move |app, meter| {
        let xs: Vec<Experience<'_>> = exps.iter().map(ExperienceIn::experience).collect();
        // The written rows only when someone listens, here or on another
        // instance (nothing copied otherwise).
        let elsewhere = app.feed().is_some_and(|f| f.watched_elsewhere(&model_id));
        let report = match app.events.sender(&model_id) {
            Some(_) => Report::Touched,
            None if elsewhere => Report::Touched,
            None => Report::Outcomes,
        };
        let done = app.store.update(meter, &model_id, &xs, report)?;
        publish(app, &model_id, &exps, &done);
        Ok(done.outcomes)
    })
    .await
}

/// How many times [`metered_nonblocking`] asks the store before the caller
/// takes the blocking path.
const NONBLOCKING_TRIES: usize = 3;

/// The store call of [`metered`] on this task, when the store can answer
/// it without blocking ([`qlearn_core::store::Store::decide_nonblocking`]):
/// no blocking-pool hop and no parked thread per call, the commit awaited
/// as a future. `None` when the store would block (the caller then uses
/// [`metered`]). A store that declines has done nothing, so a declined call
/// is tried again after yielding to the runtime's other tasks, up to
/// [`NONBLOCKING_TRIES`] times: the usual reason is another call holding
/// the model for microseconds (on the other core, or preempted), and the
/// blocking path costs several thread wake-ups.
pub(super) async fn metered_nonblocking<T>(
    cx: &Ctx,
    calls: u64,
    f: impl Fn(&dyn Store, &Meter<'_>) -> Option<Result<(T, Durable), Error>>,
) -> Option<Result<(T, Option<MonthlyState>), ApiError>> {
    let now = now_unix();
    let limits = cx.app.limits(&cx.user);
    let meter = Meter {
        user_id: &cx.user.id,
        limits,
        now,
    };
    let mut started = f(cx.app.store.as_ref(), &meter);
    for _ in 1..NONBLOCKING_TRIES {
        if started.is_some() {
            break;
        }
        tokio::task::yield_now().await;
        started = f(cx.app.store.as_ref(), &meter);
    }
    let started = started?;
    Some(
        async move {
            let (out, durable) = started?;
            durable.await?;
            // Without IO once the call is durable (the store's promise).
            let monthly = monthly_after(&cx.app, &cx.user.id, limits, now)?;
            cx.app.metrics.metered(cx.user.tier, calls);
            Ok((out, monthly))
        }
        .await,
    )
}

/// Runs a store call metered as `calls` calls on the blocking pool, with the
/// caller's meter (tier limits, now), then reads the month's usage for the
/// response's quota headers and counts the calls in the metrics. Shared by
/// every metered route.
pub(super) async fn metered<T: Send + 'static>(
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
/// subscribers, here and (through the change feed) on the other instances
/// that stream it, from the rows and statistics the update returned (asked
/// for when someone listened as it started).
fn publish(app: &App, model_id: &str, exps: &[ExperienceIn], done: &Updated) {
    let local = app.events.sender(model_id);
    let remote = app.feed().filter(|f| f.watched_elsewhere(model_id));
    if local.is_none() && remote.is_none() {
        return;
    }
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
    let frames: Vec<Bytes> = events
        .iter()
        .rev()
        .filter_map(|ev| serde_json::to_string(ev).ok())
        .map(|json| frame("update", &json))
        .collect();
    if let Some(feed) = remote {
        let text: String = frames.iter().map(|f| String::from_utf8_lossy(f)).collect();
        if let Err(e) = feed.publish(model_id, &text) {
            tracing::warn!(model = model_id, error = %e, "publishing events to the other instances failed");
        }
    }
    if let Some(tx) = local {
        for f in frames {
            let _ = tx.send(f);
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
        (status = 403, description = "state_limit_reached: the update would add states past the tier's states per model (refused whole, not metered); model_read_only: the model is read-only on the caller's plan after a downgrade (the reason says why; predict and export still answer)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field, invalid_state or invalid_action", body = crate::wire::ErrorBody),
        (status = 429, description = "quota_exceeded or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub fn update(
    cx: &Ctx,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Resp, ApiError>> + Send + '_ {
    read_json(req, cx.app.config.body_limit, cx.deadline).and_then(move |b: UpdateIn| async move {
        let (model_id, exp) = b.split();
        let (out, monthly) = apply(cx, model_id, vec![exp]).await?;
        let o = out
            .first()
            .ok_or_else(|| ApiError::Core(Error::Internal("update returned no outcome".into())))?;
        Ok(with_monthly(ok_json(&update_out(o)), monthly))
    })
}

/// Learns from up to 1,000 experiences in order, all or nothing (N metered calls).
#[utoipa::path(post, path = Route::UpdateBatch.label(), tag = "engine", security(("bearer" = [])),
    request_body = BatchIn,
    responses(
        (status = 200, description = "All applied, in order (N metered calls)", body = BatchOut),
        (status = 400, description = "Malformed JSON", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 403, description = "state_limit_reached: the batch would add states past the tier's states per model (refused whole, not metered); model_read_only: the model is read-only on the caller's plan after a downgrade (the reason says why; predict and export still answer)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 413, description = "Body over the batch limit (1 MiB)", body = crate::wire::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid experience (names experiences[i]); nothing applied", body = crate::wire::ErrorBody),
        (status = 429, description = "quota_exceeded (the whole batch must fit) or rate_limited", body = crate::wire::ErrorBody),
    ))]
pub fn update_batch(
    cx: &Ctx,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Resp, ApiError>> + Send + '_ {
    read_json(req, cx.app.config.batch_limit, cx.deadline).and_then(move |b: BatchIn| async move {
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
    })
}

/// A ticket to open the model's event stream (`?ticket=`), for clients
/// such as the browser's EventSource that cannot send headers: short-lived,
/// single-use, bound to the caller and this model, so no long-lived
/// credential travels in a URL.
#[utoipa::path(post, path = Route::ModelEventsTicket.label(), tag = "engine", security(("bearer" = [])),
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The ticket; use it once within `expires_in` seconds", body = crate::wire::TicketOut),
        (status = 401, description = "unauthorized", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::wire::ErrorBody),
    ))]
pub async fn events_ticket(cx: &Ctx, id: String) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let mid = id.clone();
    let ttl = cx.app.config.event_ticket_ttl;
    let credential = cx.credential.clone();
    let ticket = cx
        .app
        .store_call(move || {
            a.store.model(&uid, &mid)?;
            a.tickets.issue(&uid, &mid, credential, ttl)
        })
        .await?;
    Ok(ok_json(&TicketOut {
        ticket,
        expires_in: ttl.as_secs(),
    }))
}

/// Server-sent events: every update of the model, live. The stream ends
/// (with an `end` event) when the credential that opened it stops
/// authenticating: token expiry, password change, key deletion or expiry.
#[utoipa::path(get, path = Route::ModelEvents.label(), tag = "engine", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Model id"),
        ("ticket" = Option<String>, Query, description = "A ticket from `POST /models/{id}/events/ticket`, for EventSource clients that cannot send headers (instead of `Authorization`); `access_token` in the URL is refused (400 credential_in_url)"),
    ),
    responses(
        (status = 200, description = "text/event-stream: an `update` event (data: UpdateEvent) per update; `: keep-alive` every 15 s; an `end` event before the server closes it", content_type = "text/event-stream", body = UpdateEvent),
        (status = 400, description = "credential_in_url", body = crate::wire::ErrorBody),
        (status = 401, description = "unauthorized (also a used, expired or other model's ticket)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found", body = crate::wire::ErrorBody),
        (status = 429, description = "rate_limited, or too_many_streams (the tier's streams per user, or the server's per model)", body = crate::wire::ErrorBody),
    ))]
pub async fn events(cx: &Ctx, id: String) -> Result<Resp, ApiError> {
    let a = cx.app.clone();
    let uid = cx.user.id.clone();
    let mid = id.clone();
    let per_user = cx.limits().max_event_streams;
    let per_model = cx.app.config.max_event_streams_per_model;
    // With a shared store the caps count every instance's streams; other
    // instances publish the model's updates to this one from now on.
    let (place, remote) = blocking(move || {
        a.store.model(&uid, &mid)?;
        let place = match &a.streams {
            None => None,
            Some(s) => match s.open(&uid, &mid, per_user, per_model)? {
                StreamPlace::Opened(id) => Some(SharedPlace::new(s.clone(), id)),
                StreamPlace::UserFull(n) => return Ok(Err(StreamCap::User(n))),
                StreamPlace::ModelFull(n) => return Ok(Err(StreamCap::Model(n))),
            },
        };
        let remote = a
            .feed()
            .map(|f| RemoteWatch::start(f.clone(), &mid))
            .transpose()?;
        Ok(Ok((place, remote)))
    })
    .await?
    .map_err(too_many_streams)?;
    // Counted here too (for the credential rechecks); the shared place
    // already applied the caps.
    let (per_user, per_model) = match place {
        Some(_) => (u32::MAX, u32::MAX),
        None => (per_user, per_model),
    };
    let mut slot = cx
        .app
        .events
        .open(&cx.user.id, &id, per_user, per_model)
        .map_err(too_many_streams)?;
    slot.shared = place;
    let rx = cx.app.events.subscribe(&id);
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    let watch = Watch {
        app: cx.app.clone(),
        model_id: id,
        credential: cx.credential.clone(),
        slot,
        _remote: remote,
    };
    tokio::spawn(forward(watch, rx, tx));
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

/// The answer to a stream refused by a cap.
fn too_many_streams(cap: StreamCap) -> ApiError {
    ApiError::TooManyStreams(match cap {
        StreamCap::User(n) => {
            format!("your tier allows {n} open event streams; close one before opening another")
        }
        StreamCap::Model(n) => {
            format!("this model already has {n} open event streams, the most the server allows")
        }
    })
}

/// One open stream: the model, the credential that opened it, its place in
/// the stream counts (freed when the stream ends).
struct Watch {
    app: Arc<App>,
    model_id: String,
    credential: Arc<str>,
    slot: StreamSlot,
    /// The watch announced to the other instances (withdrawn on drop).
    _remote: Option<RemoteWatch>,
}

/// Whether the stream's credential still authenticates (a fault of the
/// store is not a revocation: the stream goes on).
async fn still_valid(w: &Watch) -> bool {
    !matches!(
        w.app.authenticate(w.credential.as_bytes()).await,
        Err(ApiError::Unauthorized)
    )
}

/// Forwards a model's events to one subscriber, with keep-alive comments,
/// until the client goes away, the server shuts down or the credential
/// stops authenticating (checked every `event_recheck`, and at once when
/// this instance revokes the user's credentials).
async fn forward(mut w: Watch, mut rx: broadcast::Receiver<Bytes>, tx: mpsc::Sender<Bytes>) {
    let mut shutdown = w.app.shutdown_signal();
    let every = w.app.config.sse_keep_alive;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + every,
        every.max(Duration::from_millis(10)),
    );
    let recheck_every = w.app.config.event_recheck.max(Duration::from_millis(10));
    let mut recheck =
        tokio::time::interval_at(tokio::time::Instant::now() + recheck_every, recheck_every);
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
                _ = recheck.tick() => {
                    if still_valid(&w).await { continue; }
                    let _ = tx.send(revoked_frame()).await;
                    break;
                }
                changed = w.slot.recheck.changed() => {
                    if changed.is_ok() && still_valid(&w).await { continue; }
                    let _ = tx.send(revoked_frame()).await;
                    break;
                }
                _ = tx.closed() => break,
                _ = shutdown.changed() => break,
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    }
    drop(rx);
    w.app.events.release(&w.model_id);
}

/// The last frame of a stream whose credential stopped authenticating.
fn revoked_frame() -> Bytes {
    frame(
        "end",
        r#"{"reason":"credential_revoked","message":"the credential that opened this stream expired or was revoked; authenticate again"}"#,
    )
}
