//! Request dispatch: the path is matched against [`crate::routes`], then one
//! `match` over (route, method) calls the handler; authentication and the
//! per-user rate limit for authenticated routes, CORS, the rate-limit
//! headers, metrics and the access log. Handlers live in [`crate::handlers`].

use std::convert::Infallible;
use std::future::{ready, Future};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::{Either, FutureExt as _};
use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    AUTHORIZATION, ORIGIN, VARY,
};
use hyper::{Method, Request};
use qlearn_core::tenancy::{push_rate_item, RateState, TierLimits};

use crate::app::{App, Auth};
use crate::cidr::Cidr;
use crate::ctx::{month_secs, Ctx, MonthlyState};
use crate::error::ApiError;
use crate::handlers::{accounts, billing, decisions, engine, evaluations, models, service};
use crate::http::{query_param, RequestDeadline};
use crate::openapi;
use crate::response::{no_content, secure, Resp};
use crate::routes::Route;

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the last address in `X-Forwarded-For` that is not a trusted proxy.
pub fn client_ip(app: &App, req: &Request<Incoming>, peer: IpAddr) -> IpAddr {
    if !Cidr::any_contains(&app.config.trusted_proxies, peer) {
        return peer;
    }
    let mut chain = Vec::new();
    for v in req.headers().get_all("x-forwarded-for") {
        let Ok(s) = v.to_str() else { return peer };
        for part in s.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(ip),
                Err(_) => return peer,
            }
        }
    }
    // The proxies append: the client is the last hop that is not a trusted proxy.
    let mut client = peer;
    for ip in chain.into_iter().rev() {
        client = ip;
        if !Cidr::any_contains(&app.config.trusted_proxies, ip) {
            break;
        }
    }
    client
}

/// The `Authorization: Bearer` credential, as sent (bytes: tokens and keys
/// are ASCII, and [`App::authenticate`] checks the rest). A credential in
/// the URL (`?access_token=`) is refused on every route: URLs end up in
/// logs.
fn bearer(req: &Request<Incoming>) -> Result<&[u8], ApiError> {
    if query_param(req.uri().query(), "access_token").is_some() {
        return Err(ApiError::CredentialInUrl);
    }
    let v = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized)?;
    bearer_credential(v.as_bytes()).ok_or(ApiError::Unauthorized)
}

/// The credential of an `Authorization` value: what follows `Bearer `
/// (the scheme in any case), without ASCII whitespace around it. Bytes,
/// not `str`: this runs on every authenticated request, and a token this
/// thread saw before is recognized without checking its UTF-8 again.
fn bearer_credential(value: &[u8]) -> Option<&[u8]> {
    let (scheme, credential) = value.split_at_checked(7)?;
    if !(scheme[..6].eq_ignore_ascii_case(b"bearer") && scheme[6] == b' ') {
        return None;
    }
    Some(credential.trim_ascii())
}

/// Who the request is from: its bearer credential, or, on the event
/// stream only, a ticket for this model (used up by this call).
async fn caller(
    app: &Arc<App>,
    route: Route,
    param: &str,
    req: &Request<Incoming>,
) -> Result<Auth, ApiError> {
    if route == Route::ModelEvents {
        if let Some(ticket) = query_param(req.uri().query(), "ticket") {
            let a = app.clone();
            let param = param.to_owned();
            let ticket = ticket.to_string();
            let granted = app
                .store_call(move || a.tickets.redeem(&ticket))
                .await?
                .filter(|g| g.model_id == param)
                .ok_or(ApiError::Unauthorized)?;
            return app.authenticate(granted.credential.as_bytes()).await;
        }
    }
    app.authenticate(bearer(req)?).await
}

/// Serves one request (hyper's service function).
///
/// The layers of dispatch are plain functions that do their synchronous
/// part at once and return the next future (combinators, not `async`
/// blocks around an `.await` of a captured future, which would hold it
/// twice): the future hyper stores per request is that much smaller, and
/// it is moved into place once per request.
pub fn serve(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    deadline: RequestDeadline,
) -> impl Future<Output = Result<Resp, Infallible>> + Send {
    // The request began when its deadline started (its first byte, for
    // HTTP/1): no second clock read.
    let start = deadline
        .at
        .checked_sub(deadline.limit)
        .map_or_else(Instant::now, tokio::time::Instant::into_std);
    let method = req.method().clone();
    let origin = req.headers().get(ORIGIN).cloned();
    let path_for_log = if tracing::enabled!(tracing::Level::INFO) {
        Some(req.uri().path().to_owned())
    } else {
        None
    };
    dispatch(&app, req, peer, deadline).map(move |(route, mut resp)| {
        let label = route.map_or("unmatched", Route::label);
        secure(resp.headers_mut());
        if let Some(origin) = origin {
            cors(&app, &origin, &mut resp);
        }
        let status = resp.status().as_u16();
        let latency = start.elapsed();
        app.metrics.record(route, status, latency);
        if let Some(path) = path_for_log {
            tracing::info!(
                method = %method,
                path = %path,
                route = label,
                status,
                latency_us = latency.as_micros() as u64,
                client = %peer.ip(),
                "request"
            );
        }
        Ok(resp)
    })
}

fn cors(app: &App, origin: &HeaderValue, resp: &mut Resp) {
    let allowed = origin
        .to_str()
        .is_ok_and(|o| app.config.cors_origins.iter().any(|a| a == o));
    let h = resp.headers_mut();
    h.append(VARY, HeaderValue::from_static("Origin"));
    if allowed {
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("RateLimit, RateLimit-Policy, Retry-After"),
        );
    }
}

fn preflight(app: &App, req: &Request<Incoming>, route: Route) -> Resp {
    let allow = route.allow_header();
    let mut resp = no_content();
    let h = resp.headers_mut();
    h.insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    let allowed = req
        .headers()
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| app.config.cors_origins.iter().any(|a| a == o));
    if allowed {
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(allow),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    resp
}

/// The route's answer, and the route (`None` when no route matched).
fn dispatch(
    app: &Arc<App>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    deadline: RequestDeadline,
) -> impl Future<Output = (Option<Route>, Resp)> + Send {
    let Some((route, param)) = Route::parse(req.uri().path()) else {
        return Either::Left(ready((None, ApiError::RouteNotFound.into_response())));
    };
    if req.method() == Method::OPTIONS {
        return Either::Left(ready((Some(route), preflight(app, &req, route))));
    }
    // HEAD is GET without the body, on every route that has GET: the one
    // rule (the route table's `allows`), not code per route.
    let head = req.method() == Method::HEAD && route.allows("GET");
    if head {
        *req.method_mut() = Method::GET;
    }
    let client = client_ip(app, &req, peer.ip());
    let app = app.clone();
    let result = if route.spec().public {
        // Boxed: the public routes' futures (login, registration) are large.
        Either::Left(Box::pin(async move {
            public(&app, route, param, req, client, deadline).await
        }))
    } else {
        Either::Right(authenticated(app, route, param, req, client, deadline))
    };
    Either::Right(result.map(move |result| {
        let resp = result.unwrap_or_else(ApiError::into_response);
        (Some(route), if head { without_body(resp) } else { resp })
    }))
}

/// `resp` with its headers and no body: the answer to a HEAD. A complete
/// body's length stays in `Content-Length`; a stream is dropped unread
/// (which ends it).
fn without_body(resp: Resp) -> Resp {
    use http_body::Body as _;
    let (mut parts, body) = resp.into_parts();
    if let Some(len) = body.size_hint().exact() {
        parts
            .headers
            .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Resp::from_parts(parts, crate::response::Body::empty())
}

async fn public(
    app: &Arc<App>,
    route: Route,
    param: String,
    req: Request<Incoming>,
    client: IpAddr,
    deadline: RequestDeadline,
) -> Result<Resp, ApiError> {
    let m = req.method().clone();
    match (route, m) {
        (Route::Index, Method::GET) => service::index(&app.config.brand, req.headers()),
        (Route::Static, Method::GET) => {
            service::static_file(&app.config.brand, &param, req.headers())
        }
        (Route::Health, Method::GET) => Ok(service::health(app)),
        (Route::Metrics, Method::GET) => Ok(service::metrics(app)),
        (Route::OpenApi, Method::GET) => Ok(openapi::response(&app.config)),
        (Route::Docs, Method::GET) => service::docs(&app.config.brand, req.headers()),
        (Route::DocsAsset, Method::GET) => service::docs_asset(&param, req.headers()),
        (Route::Register, Method::POST) => accounts::register(app, req, client, deadline).await,
        (Route::Login, Method::POST) => accounts::login(app, req, client, deadline).await,
        (Route::Plans, Method::GET) => {
            let caller = match req.headers().contains_key(AUTHORIZATION) {
                true => Some(app.authenticate(bearer(&req)?).await?.user),
                false => None,
            };
            billing::plans(app, caller).await
        }
        (Route::BillingWebhook, Method::POST) => billing::webhook(app, req, deadline).await,
        (r, _) => Err(ApiError::MethodNotAllowed(r.allow_header())),
    }
}

/// An authenticated route's answer (with the rate-limit headers), or the
/// refusal before it (405, 401, 403, 429 without them). A plain fn
/// returning an async block, not an `async fn`, which would hold its
/// arguments (the request among them) twice.
#[allow(clippy::manual_async_fn)]
fn authenticated(
    app: Arc<App>,
    route: Route,
    param: String,
    req: Request<Incoming>,
    client: IpAddr,
    deadline: RequestDeadline,
) -> impl Future<Output = Result<Resp, ApiError>> + Send {
    async move {
        // 405 before 401: the route's methods are no secret.
        if !route.allows(req.method().as_str()) {
            return Err(ApiError::MethodNotAllowed(route.allow_header()));
        }
        let auth = caller(&app, route, &param, &req).await?;
        let needed = route.scope(req.method().as_str());
        if !auth.scope.covers(needed) {
            return Err(ApiError::InsufficientScope(needed));
        }
        let Auth {
            user,
            scope,
            credential,
        } = auth;
        let limits = *app.limits(&user);
        let (rate, burst) = (f64::from(limits.rate_per_second), f64::from(limits.burst));
        // From this instance's lease when it can; else one database call.
        let state = match app.rate.try_take_leased(&user.id, rate, burst, app.clock()) {
            Some(s) => s,
            None => {
                let id = user.id.clone();
                app.throttle(move |a| Ok(a.rate.take_leased(&id, rate, burst, a.clock())))
                    .await?
            }
        };
        let cx = Ctx {
            app,
            user,
            scope,
            credential,
            client,
            deadline,
        };
        let burst = match &state {
            Ok(s) => *s,
            Err(_) => RateState {
                limit: limits.burst,
                remaining: 0,
                reset_secs: limits.burst.div_ceil(limits.rate_per_second.max(1)),
            },
        };
        let result = match state {
            Err(e) => Err(ApiError::from(e)),
            Ok(_) => route_authenticated(&cx, route, param, req).await,
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                let quota = match &e {
                    ApiError::Core(qlearn_core::Error::QuotaExceeded {
                        limit,
                        retry_after_secs,
                    }) => {
                        cx.app.metrics.quota_refused(cx.user.tier);
                        Some(MonthlyState {
                            limit: *limit,
                            remaining: 0,
                            reset_secs: *retry_after_secs,
                            window_secs: month_secs(),
                        })
                    }
                    _ => None,
                };
                let mut r = e.into_response();
                if let Some(q) = quota {
                    r.extensions_mut().insert(q);
                }
                r
            }
        };
        rate_headers(&mut resp, &limits, burst);
        Ok(resp)
    }
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Adds `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers):
/// the `burst` token bucket always, the `monthly` quota on metered responses.
fn rate_headers(resp: &mut Resp, limits: &TierLimits, burst: RateState) {
    let monthly = resp.extensions().get::<MonthlyState>().copied();
    let h = resp.headers_mut();
    // Each value is written into this thread's buffer, then copied once
    // into its header (one allocation per header).
    // The policy only changes with the tier's limits (and the month's
    // length): this thread's last one is reused while they are the same.
    let key = (
        limits.burst,
        limits.rate_per_second,
        monthly.map(|m| (m.limit, m.window_secs)),
    );
    let policy = LAST_POLICY.with_borrow_mut(|last| match last {
        Some((k, v)) if *k == key => Some(v.clone()),
        _ => {
            let mut buf = String::with_capacity(64);
            limits.push_rate_limit_policy(&mut buf, "burst");
            if let Some(m) = monthly {
                buf.push_str(", ");
                push_rate_item(&mut buf, "monthly", [("q", m.limit), ("w", m.window_secs)]);
            }
            let v = HeaderValue::from_str(&buf).ok()?;
            *last = Some((key, v.clone()));
            Some(v)
        }
    });
    if let Some(v) = policy {
        h.insert(RATELIMIT_POLICY, v);
    }
    HEADER_BUF.with_borrow_mut(|buf| {
        buf.clear();
        burst.push_header_value(buf, "burst");
        if let Some(m) = monthly {
            buf.push_str(", ");
            push_rate_item(buf, "monthly", [("r", m.remaining), ("t", m.reset_secs)]);
        }
        if let Ok(v) = HeaderValue::from_str(buf) {
            h.insert(RATELIMIT, v);
        }
    });
}

/// What a `RateLimit-Policy` value depends on: the burst, the rate, and
/// the monthly limit and window when there is one.
type PolicyKey = (u32, u32, Option<(u64, u64)>);

thread_local! {
    /// This thread's last `RateLimit-Policy` value and what it was made of.
    static LAST_POLICY: std::cell::RefCell<Option<(PolicyKey, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
    /// Where `rate_headers` writes a header value before copying it.
    static HEADER_BUF: std::cell::RefCell<String> =
        std::cell::RefCell::new(String::with_capacity(128));
}

/// The handler's future: the hot routes' in place, every other route's
/// boxed, so that this future (and every one around it) is as small as
/// the hot routes need.
fn route_authenticated<'a>(
    cx: &'a Ctx,
    route: Route,
    id: String,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Resp, ApiError>> + Send + 'a {
    let m = req.method().clone();
    let cold: Cold<'a> = match (route, m) {
        (Route::Predict, Method::POST) => {
            return Handler::Predict {
                f: engine::predict(cx, req),
            }
        }
        (Route::PredictProbabilities, Method::POST) => {
            return Handler::Probabilities {
                f: engine::action_probabilities(cx, req),
            }
        }
        (Route::Update, Method::POST) => {
            return Handler::Update {
                f: engine::update(cx, req),
            }
        }
        (Route::UpdateBatch, Method::POST) => {
            return Handler::UpdateBatch {
                f: engine::update_batch(cx, req),
            }
        }
        (Route::Rewards, Method::POST) => {
            return Handler::Reward {
                f: decisions::reward(cx, req),
            }
        }
        (Route::RewardsBatch, Method::POST) => {
            return Handler::RewardsBatch {
                f: decisions::rewards_batch(cx, req),
            }
        }
        (Route::EpisodesEnd, Method::POST) => Box::pin(decisions::end_episode(cx, req)),
        (Route::ModelDecisions, Method::GET) => Box::pin(decisions::list(cx, id, req)),
        (Route::ModelDecisionsExport, Method::GET) => Box::pin(decisions::export(cx, id, req)),
        (Route::ModelEvaluations, Method::POST) => Box::pin(evaluations::create(cx, id, req)),
        (Route::ModelEvaluations, Method::GET) => Box::pin(evaluations::list(cx, id, req)),
        (Route::ModelEvaluation, Method::GET) => Box::pin(evaluations::get(cx, id)),
        (Route::ModelEvaluation, Method::DELETE) => Box::pin(evaluations::delete(cx, id)),
        (Route::ModelEpisodes, Method::GET) => Box::pin(decisions::episodes(cx, id, req)),
        (Route::Me, Method::GET) => Box::pin(accounts::me(cx)),
        (Route::MePassword, Method::POST) => Box::pin(accounts::change_password(cx, req)),
        (Route::ApiKeys, Method::GET) => Box::pin(accounts::list_keys(cx)),
        (Route::ApiKeys, Method::POST) => Box::pin(accounts::create_key(cx, req)),
        (Route::ApiKey, Method::DELETE) => Box::pin(accounts::delete_key(cx, id)),
        (Route::AdminUser, Method::PATCH) => Box::pin(accounts::admin_patch_user(cx, id, req)),
        (Route::AdminUsage, Method::GET) => Box::pin(accounts::admin_usage(cx, req)),
        (Route::Models, Method::GET) => Box::pin(models::list(cx)),
        (Route::Models, Method::POST) => Box::pin(models::create(cx, req)),
        (Route::ModelsImport, Method::POST) => Box::pin(models::import(cx, req)),
        (Route::Model, Method::GET) => Box::pin(models::get(cx, id)),
        (Route::Model, Method::PATCH) => Box::pin(models::patch(cx, id, req)),
        (Route::Model, Method::DELETE) => Box::pin(models::delete(cx, id)),
        (Route::ModelExport, Method::GET) => Box::pin(models::export(cx, id, req)),
        (Route::ModelEvents, Method::GET) => Box::pin(engine::events(cx, id)),
        (Route::ModelEventsTicket, Method::POST) => Box::pin(engine::events_ticket(cx, id)),
        (Route::Status, Method::GET) => Box::pin(models::status(cx, id, req)),
        (Route::Dashboard, Method::GET) => Box::pin(models::dashboard(cx)),
        (r, _) => Box::pin(ready(Err(ApiError::MethodNotAllowed(r.allow_header())))),
    };
    Handler::Cold { f: cold }
}

/// A boxed handler future (every route but the hot ones).
type Cold<'a> = Pin<Box<dyn Future<Output = Result<Resp, ApiError>> + Send + 'a>>;

pin_project_lite::pin_project! {
    /// The handler future of an authenticated route: one of the hot
    /// routes' in place, or any other route's boxed. One enum, not nested
    /// `Either`s: it is built with one move, and a poll's answer is
    /// returned through one level.
    #[project = HandlerProj]
    enum Handler<P, Q, U, B, R, RB, C> {
        Predict { #[pin] f: P },
        Probabilities { #[pin] f: Q },
        Update { #[pin] f: U },
        UpdateBatch { #[pin] f: B },
        Reward { #[pin] f: R },
        RewardsBatch { #[pin] f: RB },
        Cold { #[pin] f: C },
    }
}

type Answer = Result<Resp, ApiError>;

impl<P, Q, U, B, R, RB, C> Future for Handler<P, Q, U, B, R, RB, C>
where
    P: Future<Output = Answer>,
    Q: Future<Output = Answer>,
    U: Future<Output = Answer>,
    B: Future<Output = Answer>,
    R: Future<Output = Answer>,
    RB: Future<Output = Answer>,
    C: Future<Output = Answer>,
{
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match self.project() {
            HandlerProj::Predict { f } => f.poll(cx),
            HandlerProj::Probabilities { f } => f.poll(cx),
            HandlerProj::Update { f } => f.poll(cx),
            HandlerProj::UpdateBatch { f } => f.poll(cx),
            HandlerProj::Reward { f } => f.poll(cx),
            HandlerProj::RewardsBatch { f } => f.poll(cx),
            HandlerProj::Cold { f } => f.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_credential_follows_the_scheme_in_any_case() {
        assert_eq!(bearer_credential(b"Bearer abc.def"), Some(&b"abc.def"[..]));
        assert_eq!(bearer_credential(b"bEaReR  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_credential(b"Bearer "), Some(&b""[..]));
        // Not UTF-8: handed on as it is (`authenticate` refuses it).
        assert_eq!(
            bearer_credential(b"Bearer \xff\xfe"),
            Some(&b"\xff\xfe"[..])
        );
        for refused in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearerabc",
            b"Bearer\tabc",
            b"Bearers abc",
            b"",
        ] {
            assert_eq!(bearer_credential(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn the_policy_header_follows_the_limits_of_each_answer() {
        let policy = |limits: &TierLimits, monthly: Option<MonthlyState>| {
            let mut resp = no_content();
            if let Some(m) = monthly {
                resp.extensions_mut().insert(m);
            }
            let burst = RateState {
                limit: limits.burst,
                remaining: 1,
                reset_secs: 1,
            };
            rate_headers(&mut resp, limits, burst);
            resp.headers()[RATELIMIT_POLICY]
                .to_str()
                .unwrap()
                .to_owned()
        };
        let mut a = TierLimits::UNLIMITED;
        (a.burst, a.rate_per_second) = (10, 5);
        let mut b = a;
        (b.burst, b.rate_per_second) = (100, 10);
        let month = MonthlyState {
            limit: 1000,
            remaining: 5,
            reset_secs: 7,
            window_secs: 2_592_000,
        };
        let mut other_month = month;
        other_month.window_secs = 2_678_400;
        // Each answer's policy, whatever the thread answered before.
        for _ in 0..2 {
            assert_eq!(policy(&a, None), "\"burst\";q=10;w=2");
            assert_eq!(policy(&b, None), "\"burst\";q=100;w=10");
            assert_eq!(
                policy(&a, Some(month)),
                "\"burst\";q=10;w=2, \"monthly\";q=1000;w=2592000"
            );
            assert_eq!(
                policy(&a, Some(other_month)),
                "\"burst\";q=10;w=2, \"monthly\";q=1000;w=2678400"
            );
        }
    }
}
