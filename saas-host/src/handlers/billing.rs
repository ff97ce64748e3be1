//! Plans and billing (issue 17): `GET /plans` (public; with credentials it
//! also marks the caller's plan and gives their checkout links) and the
//! billing provider's signed webhook, `POST /billing/webhook`. Signatures
//! and events are read by `qlearn_core::tenancy::webhook`, what they do to
//! a tier is the store's `apply_billing`: this module only moves bytes.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;
use qlearn_core::store::{BillingOutcome, User};
use qlearn_core::tenancy::{plans::checkout_url, rfc3339, webhook, Tier};

use crate::app::{blocking, App};
use crate::error::ApiError;
use crate::http::{read_body, RequestDeadline};
use crate::now_unix;
use crate::response::{ok_json, Resp};
use crate::routes::Route;
use crate::wire::{LimitsOut, PendingOut, PlanOut, PlansOut, PriceOut, WebhookOut};

/// The header carrying the provider's signature.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// Every plan: name, price, quota, limits, features.
#[utoipa::path(get, path = Route::Plans.label(), tag = "billing",
    responses(
        (status = 200, description = "Every plan, cheapest first. Public; with a bearer credential the caller's plan is marked `current`, a scheduled downgrade is shown, and plans above the caller's carry the caller's checkout_url when a checkout URL is configured", body = PlansOut),
        (status = 401, description = "unauthorized (a credential was sent and does not authenticate)", body = crate::wire::ErrorBody),
    ))]
pub async fn plans(app: &Arc<App>, caller: Option<Arc<User>>) -> Result<Resp, ApiError> {
    let pending = match &caller {
        Some(u) => {
            let (a, uid) = (app.clone(), u.id.clone());
            blocking(move || a.store.billing_account(&uid))
                .await?
                .and_then(|acc| acc.pending)
        }
        None => None,
    };
    let c = &app.config;
    let current = caller.as_ref().map(|u| u.tier);
    let plans = Tier::ALL
        .into_iter()
        .map(|tier| {
            let info = c.plans.info(tier);
            let limits = c.limits.for_tier(tier);
            let checkout = match (&caller, &c.billing.checkout_url) {
                (Some(u), Some(t)) if tier > u.tier => Some(checkout_url(t, &u.id, &u.email, tier)),
                _ => None,
            };
            PlanOut {
                tier,
                name: info.display_name.clone(),
                price: PriceOut {
                    monthly_cents: info.price.monthly_cents,
                    currency: info.price.currency.clone(),
                },
                quota: limits.monthly_calls,
                limits: LimitsOut::new(tier, limits),
                features: limits.features.names(),
                current: current == Some(tier),
                checkout_url: checkout,
            }
        })
        .collect();
    Ok(ok_json(&PlansOut {
        plans,
        current,
        pending_downgrade: pending.map(|(tier, at)| PendingOut {
            tier,
            at: rfc3339(at),
        }),
        checkout: c.billing.checkout_url.is_some(),
    }))
}

/// The billing provider's webhook (Stripe's scheme).
#[utoipa::path(post, path = Route::BillingWebhook.label(), tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" under the webhook secret>` (several v1 allowed)")),
    request_body(content = String, description = "A Stripe event (JSON), byte for byte as signed: checkout.session.completed, customer.subscription.created/updated/deleted, invoice.payment_failed act; other types are acknowledged and ignored", content_type = "application/json"),
    responses(
        (status = 200, description = "Verified and handled (applied, duplicate, stale or ignored)", body = WebhookOut),
        (status = 400, description = "invalid_signature (missing, wrong, or a timestamp outside the tolerance: nothing changed)", body = crate::wire::ErrorBody),
        (status = 404, description = "not_found: no webhook secret configured, or the event names no known user or customer (nothing recorded; the provider retries)", body = crate::wire::ErrorBody),
        (status = 409, description = "conflict: the customer is linked to another user", body = crate::wire::ErrorBody),
        (status = 413, description = "Body too large", body = crate::wire::ErrorBody),
        (status = 422, description = "invalid_field: verified, but not an event this service reads", body = crate::wire::ErrorBody),
    ))]
pub async fn webhook(
    app: &Arc<App>,
    req: Request<Incoming>,
    deadline: RequestDeadline,
) -> Result<Resp, ApiError> {
    let Some(secret) = app.config.billing.webhook_secret.clone() else {
        return Err(ApiError::RouteNotFound);
    };
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = read_body(req, app.config.batch_limit, deadline).await?;
    let now = now_unix();
    let tolerance = app.config.billing.webhook_tolerance_secs;
    webhook::verify(&secret, &header, &body, now, tolerance)?;
    let Some(event) = webhook::parse_event(&body, &app.config.plans)? else {
        return Ok(ok_json(&WebhookOut {
            received: true,
            outcome: "ignored",
            tier: None,
        }));
    };
    let event_id = event.id.clone();
    let a = app.clone();
    let outcome = blocking(move || a.store.apply_billing(&event, now)).await?;
    let (name, tier) = match outcome {
        BillingOutcome::Applied {
            user_id,
            tier,
            tier_changed,
            ..
        } => {
            if tier_changed {
                app.forget_user(&user_id);
            }
            ("applied", Some(tier))
        }
        BillingOutcome::Duplicate => ("duplicate", None),
        BillingOutcome::Stale { .. } => ("stale", None),
    };
    tracing::info!(event_id, outcome = name, "billing event");
    Ok(ok_json(&WebhookOut {
        received: true,
        outcome: name,
        tier,
    }))
}
