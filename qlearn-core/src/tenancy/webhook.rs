//! The billing provider's webhook (Stripe's scheme): verifying a delivery's
//! signature ([`verify`]) and reading the events that change a tier
//! ([`parse_event`]) into a [`BillingEvent`].
//!
//! The signature scheme, as Stripe documents it: the `Stripe-Signature`
//! header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]` (other schemes, e.g.
//! `v0`, are ignored), where each `v1` is the hex HMAC-SHA256, keyed with
//! the endpoint's signing secret (`whsec_...`, its bytes as written), of
//! `"<t>.<raw body>"`. A delivery verifies when any `v1` matches (compared
//! in constant time; several appear while a secret is rolled) and `t` is
//! within the tolerance of now (300 s by default), which bounds how long a
//! captured delivery can be replayed; within that window the store's record
//! of event ids refuses the replay.

use std::collections::HashMap;

use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::billing::{BillingAction, BillingEvent, BillingParty};
use super::{Plans, Tier};
use crate::{Error, Result};

/// Default tolerance between a delivery's timestamp and now, seconds.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// The metadata key (on the subscription, the checkout session or the
/// invoice's subscription details) naming the qlearn user id.
pub const USER_ID_METADATA: &str = "user_id";

type HmacSha256 = hmac::Hmac<Sha256>;

fn mac(secret: &[u8], t: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length: this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(t.as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `Stripe-Signature` header the provider would send for `body` at
/// time `t` under `secret` (one `v1`): for tests and tools that sign
/// events themselves.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = mac(secret, &t.to_string(), body).finalize().into_bytes();
    format!("t={t},v1={}", super::secrets::to_hex(&tag))
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Verifies a delivery: `header` is its `Stripe-Signature`, `body` the raw
/// bytes as received, `now` Unix seconds, `tolerance` seconds. Returns the
/// signed timestamp, or [`Error::InvalidSignature`] (missing or malformed
/// header, no matching `v1`, timestamp outside the tolerance).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance: i64) -> Result<i64> {
    let mut t: Option<&str> = None;
    let mut sigs = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = Some(v),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(Error::InvalidSignature("no timestamp in Stripe-Signature"))?;
    let ts: i64 = t
        .parse()
        .map_err(|_| Error::InvalidSignature("malformed timestamp in Stripe-Signature"))?;
    if sigs.is_empty() {
        return Err(Error::InvalidSignature(
            "no v1 signature in Stripe-Signature",
        ));
    }
    let expected = mac(secret, t, body);
    let matched = sigs
        .iter()
        .any(|s| from_hex(s).is_some_and(|tag| expected.clone().verify_slice(&tag).is_ok()));
    if !matched {
        return Err(Error::InvalidSignature(
            "no signature matches the payload under the webhook secret",
        ));
    }
    if now.abs_diff(ts) > tolerance.unsigned_abs() {
        return Err(Error::InvalidSignature(
            "timestamp outside the tolerance (a replay, or a clock far off)",
        ));
    }
    Ok(ts)
}

// ---- Stripe's event objects (the fields read) --------------------------------

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// A customer reference: an id, or the expanded object.
#[derive(Deserialize)]
#[serde(untagged)]
enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    fn id(self) -> String {
        match self {
            Expandable::Id(id) | Expandable::Object { id } => id,
        }
    }
}

type Metadata = HashMap<String, String>;

#[derive(Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

#[derive(Deserialize)]
struct Subscription {
    customer: Option<Expandable>,
    status: String,
    current_period_end: Option<i64>,
    #[serde(default)]
    cancel_at_period_end: bool,
    cancel_at: Option<i64>,
    ended_at: Option<i64>,
    #[serde(default)]
    metadata: Metadata,
    items: Option<List<SubscriptionItem>>,
}

#[derive(Deserialize)]
struct SubscriptionItem {
    price: Option<PriceRef>,
    current_period_end: Option<i64>,
}

#[derive(Deserialize)]
struct PriceRef {
    id: String,
}

#[derive(Deserialize)]
struct Invoice {
    customer: Option<Expandable>,
    period_end: Option<i64>,
    lines: Option<List<InvoiceLine>>,
    subscription_details: Option<WithMetadata>,
    parent: Option<InvoiceParent>,
}

#[derive(Deserialize)]
struct InvoiceParent {
    subscription_details: Option<WithMetadata>,
}

#[derive(Deserialize)]
struct WithMetadata {
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize)]
struct InvoiceLine {
    period: Option<Period>,
}

#[derive(Deserialize)]
struct Period {
    end: i64,
}

#[derive(Deserialize)]
struct CheckoutSession {
    client_reference_id: Option<String>,
    customer: Option<Expandable>,
    #[serde(default)]
    metadata: Metadata,
}

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value, kind: &str) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::field("data.object", format!("{kind}: {e}")))
}

fn party(user: Option<String>, metadata: &Metadata, customer: Option<Expandable>) -> BillingParty {
    BillingParty {
        user_id: user.or_else(|| metadata.get(USER_ID_METADATA).cloned()),
        customer_id: customer.map(Expandable::id),
    }
}

/// Reads a verified delivery's body. `Ok(None)`: an event that changes no
/// tier (another type, a subscription not yet paid, a price no plan
/// names), to be acknowledged and ignored. Malformed JSON, or an event of
/// a handled type missing what it needs, is [`Error::InvalidField`].
///
/// - `checkout.session.completed`: links the customer to the user named by
///   `client_reference_id` (or `metadata.user_id`);
/// - `customer.subscription.created` / `.updated`: status `active`,
///   `trialing` or `past_due` moves the user to the tier of the first
///   item's price ([`Plans::tier_for_price`]) — until the period's end
///   when `cancel_at_period_end`; `canceled`, `unpaid`,
///   `incomplete_expired` or `paused` downgrades to free at the period's
///   end (`current_period_end`, the subscription's or, in newer API
///   versions, its first item's);
/// - `customer.subscription.deleted`: downgrade to free at the period's end;
/// - `invoice.payment_failed`: downgrade to free at the end of the period
///   the invoice was for (its first line's `period.end`, else `period_end`).
pub fn parse_event(body: &[u8], plans: &Plans) -> Result<Option<BillingEvent>> {
    let ev: Event = serde_json::from_slice(body)
        .map_err(|e| Error::field("body", format!("not a Stripe event: {e}")))?;
    let (party, action) = match ev.kind.as_str() {
        "checkout.session.completed" => {
            let s: CheckoutSession = object(ev.data.object, &ev.kind)?;
            (
                party(s.client_reference_id, &s.metadata, s.customer),
                BillingAction::Link,
            )
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => {
            let s: Subscription = object(ev.data.object, &ev.kind)?;
            let first = s.items.and_then(|l| l.data.into_iter().next());
            let period_end = s
                .current_period_end
                .or(first.as_ref().and_then(|i| i.current_period_end))
                .or(s.ended_at)
                .unwrap_or(ev.created);
            let down = BillingAction::DowngradeAt {
                to: Tier::Free,
                at: period_end,
            };
            let action = match (ev.kind.as_str(), s.status.as_str()) {
                ("customer.subscription.deleted", _) => down,
                (_, "active" | "trialing" | "past_due") => {
                    let price = first.and_then(|i| i.price).map(|p| p.id);
                    let Some(tier) = price.and_then(|p| plans.tier_for_price(&p)) else {
                        return Ok(None);
                    };
                    let until = if s.cancel_at_period_end {
                        Some(period_end)
                    } else {
                        s.cancel_at
                    };
                    BillingAction::Set { tier, until }
                }
                (_, "canceled" | "unpaid" | "incomplete_expired" | "paused") => down,
                _ => return Ok(None),
            };
            (party(None, &s.metadata, s.customer), action)
        }
        "invoice.payment_failed" => {
            let i: Invoice = object(ev.data.object, &ev.kind)?;
            let at = i
                .lines
                .and_then(|l| l.data.into_iter().next())
                .and_then(|l| l.period)
                .map(|p| p.end)
                .or(i.period_end)
                .unwrap_or(ev.created);
            let details = i
                .subscription_details
                .or(i.parent.and_then(|p| p.subscription_details));
            let metadata = details.map(|d| d.metadata).unwrap_or_default();
            (
                party(None, &metadata, i.customer),
                BillingAction::DowngradeAt { to: Tier::Free, at },
            )
        }
        _ => return Ok(None),
    };
    if party.user_id.is_none() && party.customer_id.is_none() {
        return Err(Error::field(
            "data.object",
            "names neither a customer nor a user",
        ));
    }
    Ok(Some(BillingEvent {
        id: ev.id,
        created: ev.created,
        party,
        action,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";

    #[test]
    fn signatures_verify_only_as_stripe_signs() {
        let body = br#"{"id":"evt_1","object":"event"}"#;
        let now = 1_700_000_000;
        let h = sign(SECRET, now, body);
        assert_eq!(verify(SECRET, &h, body, now, 300).unwrap(), now);
        // Stripe's documented form, computed independently of `sign`: the
        // HMAC of "<t>.<body>", hex, after `v1=`; other schemes ignored,
        // several v1 accepted (any may match), spaces tolerated.
        let tag = {
            let mut m = <HmacSha256 as KeyInit>::new_from_slice(SECRET).unwrap();
            m.update(format!("{now}.").as_bytes());
            m.update(body);
            super::super::secrets::to_hex(&m.finalize().into_bytes())
        };
        assert_eq!(h, format!("t={now},v1={tag}"));
        let rolled = format!("t={now}, v0=abc, v1={}, v1={tag}", "00".repeat(32));
        verify(SECRET, &rolled, body, now, 300).unwrap();
        // Within the tolerance either way, not past it.
        verify(SECRET, &h, body, now + 300, 300).unwrap();
        verify(SECRET, &h, body, now - 300, 300).unwrap();
        for (header, secret, body, at) in [
            (h.clone(), &b"whsec_other"[..], &body[..], now),
            (
                h.clone(),
                SECRET,
                &br#"{"id":"evt_2","object":"event"}"#[..],
                now,
            ),
            (h.clone(), SECRET, &body[..], now + 301),
            (h.clone(), SECRET, &body[..], now - 301),
            (format!("v1={tag}"), SECRET, &body[..], now),
            (format!("t={now}"), SECRET, &body[..], now),
            (format!("t={now},v1={}", &tag[..63]), SECRET, &body[..], now),
            (format!("t=x{now},v1={tag}"), SECRET, &body[..], now),
            (format!("t={},v1={tag}", now + 1), SECRET, &body[..], now),
            (String::new(), SECRET, &body[..], now),
        ] {
            let r = verify(secret, &header, body, at, 300);
            assert!(
                matches!(r, Err(Error::InvalidSignature(_))),
                "{header} at {at}: {r:?}"
            );
        }
    }

    fn sub(kind: &str, status: &str, price: &str, extra: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"evt_9","object":"event","api_version":"2024-06-20","created":100,
            "data":{{"object":{{"id":"sub_1","object":"subscription","customer":"cus_1",
            "status":"{status}","current_period_end":2000,{extra}
            "metadata":{{"user_id":"u1"}},
            "items":{{"object":"list","data":[{{"id":"si_1","object":"subscription_item",
            "price":{{"id":"{price}","object":"price"}}}}]}}}}}},
            "livemode":false,"pending_webhooks":1,"type":"{kind}"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn events_map_to_tier_changes() {
        let plans: Plans = serde_json::from_str(
            r#"{"pro": {"monthly_calls": 1000, "max_models": 10, "rate_per_second": 50,
                "burst": 100, "stripe_price_ids": ["price_pro"]}}"#,
        )
        .unwrap();
        let e = parse_event(
            &sub("customer.subscription.created", "active", "price_pro", ""),
            &plans,
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.id, "evt_9");
        assert_eq!(e.created, 100);
        assert_eq!(e.party.user_id.as_deref(), Some("u1"));
        assert_eq!(e.party.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(
            e.action,
            BillingAction::Set {
                tier: Tier::Pro,
                until: None
            }
        );
        let e = parse_event(
            &sub(
                "customer.subscription.updated",
                "active",
                "price_pro",
                r#""cancel_at_period_end":true,"#,
            ),
            &plans,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            e.action,
            BillingAction::Set {
                tier: Tier::Pro,
                until: Some(2000)
            }
        );
        for kind in [
            "customer.subscription.deleted",
            "customer.subscription.updated",
        ] {
            let e = parse_event(&sub(kind, "canceled", "price_pro", ""), &plans)
                .unwrap()
                .unwrap();
            assert_eq!(
                e.action,
                BillingAction::DowngradeAt {
                    to: Tier::Free,
                    at: 2000
                }
            );
        }
        // An unknown price, an unpaid start or another event type change nothing.
        for body in [
            sub("customer.subscription.created", "active", "price_x", ""),
            sub(
                "customer.subscription.created",
                "incomplete",
                "price_pro",
                "",
            ),
            sub("customer.created", "active", "price_pro", ""),
        ] {
            assert_eq!(parse_event(&body, &plans).unwrap(), None);
        }
        let failed = br#"{"id":"evt_f","object":"event","created":300,"type":"invoice.payment_failed",
            "data":{"object":{"id":"in_1","object":"invoice","customer":"cus_1","period_end":900,
            "lines":{"object":"list","data":[{"id":"il_1","period":{"start":1000,"end":3600}}]}}}}"#;
        let e = parse_event(failed, &plans).unwrap().unwrap();
        assert_eq!(
            (e.party.user_id, e.action),
            (
                None,
                BillingAction::DowngradeAt {
                    to: Tier::Free,
                    at: 3600
                }
            )
        );
        let checkout =
            br#"{"id":"evt_c","object":"event","created":50,"type":"checkout.session.completed",
            "data":{"object":{"id":"cs_1","object":"checkout.session","client_reference_id":"u7",
            "customer":{"id":"cus_7","object":"customer"}}}}"#;
        let e = parse_event(checkout, &plans).unwrap().unwrap();
        assert_eq!(e.party.user_id.as_deref(), Some("u7"));
        assert_eq!(e.party.customer_id.as_deref(), Some("cus_7"));
        assert_eq!(e.action, BillingAction::Link);
        assert!(parse_event(b"not json", &plans).is_err());
        assert!(parse_event(
            br#"{"id":"e","created":1,"type":"invoice.payment_failed","data":{"object":{}}}"#,
            &plans
        )
        .is_err());
    }
}
