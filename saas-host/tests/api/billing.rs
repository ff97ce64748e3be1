//! Plans, paid features and billing over HTTP (issue 17): `GET /plans`,
//! every gated feature refused on free (`plan_required`, naming the plan)
//! and allowed on pro, 404 staying 404, the provider's signed webhook
//! (valid, wrong secret, stale, tampered, replayed: only the valid change
//! the tier), a downgrade at the period's end applied by the server, and an
//! upgrade then downgrade keeping every model and Q-value, over-plan
//! models read-only.

use std::time::{Duration, Instant};

use qlearn_core::tenancy::{webhook, Plans};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{assert_error, start_with, Backend, Server};
use crate::{GET, POST};

backend_tests!(
    plans_are_public_and_mark_the_caller,
    paid_features_are_gated_on_free_and_allowed_on_pro,
    webhook_changes_the_tier_only_when_signed,
    a_downgrade_keeps_every_model_read_only_over_the_plan,
);

const SECRET: &str = "whsec_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";
const CHECKOUT: &str = "https://buy.example/checkout?client_reference_id={user_id}&plan={plan}";

/// Plans naming the provider's prices (the file format of `LIMITS_FILE`).
const PLANS: &str = r#"{
    "pro": {"monthly_calls": 1000, "max_models": 10, "rate_per_second": 50, "burst": 100,
            "display_name": "Pro", "price": {"monthly_cents": 2900, "currency": "USD"},
            "stripe_price_ids": ["price_pro_monthly"]},
    "enterprise": {"monthly_calls": null, "max_models": null, "rate_per_second": 500,
            "burst": 1000, "display_name": "Enterprise",
            "price": {"monthly_cents": 49900, "currency": "USD"},
            "stripe_price_ids": ["price_ent_monthly"]}
}"#;

async fn server(b: Backend, test: &str) -> Option<Server> {
    start_with(b, test, |c| {
        c.plans = Plans::load(PLANS).unwrap().1;
        c.billing.webhook_secret = Some(SECRET.as_bytes().into());
        c.billing.checkout_url = Some(CHECKOUT.into());
        c.settle_every = Duration::from_millis(50);
        for l in [&mut c.limits.free, &mut c.limits.pro] {
            l.bulk_per_minute = 10_000;
            l.rate_per_second = 10_000;
            l.burst = 10_000;
        }
    })
    .await
}

fn now() -> i64 {
    qlearn_core::store::now_unix()
}

/// A Stripe event from `tests/fixtures/stripe/`, its placeholders filled.
fn fixture(name: &str, vars: &[(&str, String)]) -> String {
    let path = format!(
        "{}/tests/fixtures/stripe/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in vars {
        text = text.replace(&format!("__{k}__"), v);
    }
    for p in [
        "EVENT_ID",
        "CREATED",
        "PERIOD_END",
        "CUSTOMER",
        "PRICE",
        "USER_ID",
        "STATUS",
        "TYPE",
    ] {
        assert!(!text.contains(&format!("__{p}__")), "{name}: {p} left");
    }
    text
}

/// A subscription event (`kind`, `status`) for `user` on `price`.
fn subscription(
    kind: &str,
    id: &str,
    user: &str,
    price: &str,
    status: &str,
    period_end: i64,
) -> String {
    fixture(
        "customer.subscription.created",
        &[
            ("EVENT_ID", id.into()),
            ("CREATED", now().to_string()),
            ("PERIOD_END", period_end.to_string()),
            ("CUSTOMER", format!("cus_{user}")),
            ("PRICE", price.into()),
            ("USER_ID", user.into()),
            ("STATUS", status.into()),
            ("TYPE", kind.into()),
        ],
    )
}

/// Posts `body` to the webhook with `signature`; status and body.
async fn deliver(s: &Server, body: &str, signature: &str) -> (StatusCode, Value) {
    let r = s
        .http
        .post(s.url("/billing/webhook"))
        .header("content-type", "application/json; charset=utf-8")
        .header("Stripe-Signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn signed(body: &str) -> String {
    webhook::sign(SECRET.as_bytes(), now(), body.as_bytes())
}

async fn tier(s: &Server, token: &str) -> String {
    let (st, me) = s.json(GET, "/me", Some(token), None).await;
    assert_eq!(st, 200, "{me}");
    me["tier"].as_str().unwrap().to_owned()
}

async fn plans_are_public_and_mark_the_caller(b: Backend) {
    let Some(s) = server(b, "plans_public").await else {
        return;
    };
    let (st, v) = s.json(GET, "/plans", None, None).await;
    assert_eq!(st, 200, "{v}");
    let plans = v["plans"].as_array().unwrap();
    let tiers: Vec<&str> = plans.iter().map(|p| p["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["free", "pro", "enterprise"]);
    assert_eq!(plans[0]["name"], "Free");
    assert_eq!(
        plans[0]["price"],
        json!({"monthly_cents": 0, "currency": "USD"})
    );
    assert_eq!(plans[0]["quota"], 100);
    assert_eq!(plans[0]["features"], json!([]));
    assert_eq!(plans[1]["price"]["monthly_cents"], 2900);
    assert_eq!(plans[1]["quota"], 1000);
    assert_eq!(plans[1]["limits"]["max_models"], 10);
    assert_eq!(
        plans[1]["features"],
        json!(["advanced_algorithms", "decisions"])
    );
    assert_eq!(plans[2]["quota"], Value::Null);
    assert_eq!(v["current"], Value::Null);
    assert_eq!(v["checkout"], true);
    assert!(plans
        .iter()
        .all(|p| p["current"] == false && p.get("checkout_url").is_none()));

    let (token, uid, _) = s.register("p@example.com").await;
    let (st, v) = s.json(GET, "/plans", Some(&token), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["current"], "free");
    let plans = v["plans"].as_array().unwrap();
    assert_eq!(plans[0]["current"], true);
    assert!(
        plans[0].get("checkout_url").is_none(),
        "no checkout for the plan one has"
    );
    assert_eq!(
        plans[1]["checkout_url"],
        format!("https://buy.example/checkout?client_reference_id={uid}&plan=pro")
    );
    // A credential that does not authenticate is refused, not ignored.
    let (st, v) = s.json(GET, "/plans", Some("not-a-token"), None).await;
    assert_error(st, &v, 401, "unauthorized");
}

/// Asserts a 403 `plan_required` naming `feature` and the pro plan.
fn plan_required(st: StatusCode, v: &Value, feature: &str) {
    assert_error(st, v, 403, "plan_required");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains(feature) && m.contains("pro"), "{m}");
}

async fn paid_features_are_gated_on_free_and_allowed_on_pro(b: Backend) {
    let Some(s) = server(b, "plans_gates").await else {
        return;
    };
    let (token, uid, mid) = s.register("g@example.com").await;
    let (other, _, theirs) = s.register("o@example.com").await;
    let patch = |id: &str, body: Value| {
        let (s, t, id) = (&s, token.clone(), id.to_owned());
        async move {
            s.json(
                reqwest::Method::PATCH,
                &format!("/models/{id}"),
                Some(&t),
                Some(body),
            )
            .await
        }
    };
    let decisions = json!({"decisions": {"reward_wait_seconds": 60}});
    for algorithm in ["sarsa", "expected_sarsa", "double_q_learning"] {
        let (st, v) = s
            .json(
                POST,
                "/models",
                Some(&token),
                Some(json!({"name": "a", "n_actions": 2, "algorithm": algorithm})),
            )
            .await;
        plan_required(st, &v, "advanced_algorithms");
        let (st, v) = patch(&mid, json!({"algorithm": algorithm})).await;
        plan_required(st, &v, "advanced_algorithms");
    }
    let (st, v) = patch(&mid, decisions.clone()).await;
    plan_required(st, &v, "decisions");
    // Another tenant's model stays 404 whatever the patch asks.
    for body in [json!({"algorithm": "sarsa"}), decisions.clone()] {
        let (st, v) = patch(&theirs, body).await;
        assert_error(st, &v, 404, "not_found");
    }
    // A gated model cannot come in by import either; export is never gated.
    let sarsa_bytes = {
        let (st, _) = s
            .json(reqwest::Method::PATCH, "/plans", Some(&other), None)
            .await;
        assert_eq!(st, 405);
        let (t, pro_uid, _) = s.register("pro@example.com").await;
        let body = subscription(
            "customer.subscription.created",
            "evt_pro_1",
            &pro_uid,
            "price_pro_monthly",
            "active",
            now() + 3600,
        );
        let (st, v) = deliver(&s, &body, &signed(&body)).await;
        assert_eq!(
            (st, v["outcome"].as_str()),
            (StatusCode::OK, Some("applied")),
            "{v}"
        );
        let id = s
            .create_model(
                &t,
                json!({"name": "s", "n_actions": 2, "algorithm": "sarsa"}),
            )
            .await;
        let r = s
            .call(GET, &format!("/models/{id}/export"), Some(&t), None)
            .await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap()
    };
    let r = s
        .http
        .post(s.url("/models/import?name=i"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(sarsa_bytes.clone())
        .send()
        .await
        .unwrap();
    let st = r.status();
    plan_required(st, &r.json().await.unwrap(), "advanced_algorithms");
    let r = s
        .call(GET, &format!("/models/{mid}/export"), Some(&token), None)
        .await;
    assert_eq!(r.status(), 200, "export is never gated");

    // On pro, all of it is allowed.
    let body = subscription(
        "customer.subscription.created",
        "evt_g_1",
        &uid,
        "price_pro_monthly",
        "active",
        now() + 3600,
    );
    let (st, v) = deliver(&s, &body, &signed(&body)).await;
    assert_eq!(
        (st, v["tier"].as_str()),
        (StatusCode::OK, Some("pro")),
        "{v}"
    );
    assert_eq!(
        tier(&s, &token).await,
        "pro",
        "seen at once by this instance"
    );
    for algorithm in ["sarsa", "expected_sarsa", "double_q_learning"] {
        s.create_model(
            &token,
            json!({"name": "a", "n_actions": 2, "algorithm": algorithm}),
        )
        .await;
    }
    let (st, v) = patch(&mid, json!({"algorithm": "expected_sarsa"})).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = patch(&mid, decisions).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s
        .json(
            POST,
            "/predict",
            Some(&token),
            Some(json!({"model_id": mid, "state": 1, "decision_id": "d1"})),
        )
        .await;
    assert_eq!(
        (st, v["decision_id"].as_str()),
        (StatusCode::OK, Some("d1")),
        "{v}"
    );
    let r = s
        .http
        .post(s.url("/models/import?name=i"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(sarsa_bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn webhook_changes_the_tier_only_when_signed(b: Backend) {
    let Some(s) = server(b, "plans_webhook").await else {
        return;
    };
    let (token, uid, _) = s.register("w@example.com").await;
    let created = subscription(
        "customer.subscription.created",
        "evt_w_1",
        &uid,
        "price_pro_monthly",
        "active",
        now() + 3600,
    );
    let t = now();
    let valid = webhook::sign(SECRET.as_bytes(), t, created.as_bytes());
    // Wrong secret, stale timestamp, tampered body, no header: refused.
    let wrong = webhook::sign(b"whsec_not_the_secret", t, created.as_bytes());
    let stale = webhook::sign(SECRET.as_bytes(), t - 301, created.as_bytes());
    let tampered = created.replace("price_pro_monthly", "price_ent_monthly");
    for (body, sig) in [
        (created.as_str(), wrong.as_str()),
        (created.as_str(), stale.as_str()),
        (tampered.as_str(), valid.as_str()),
        (created.as_str(), ""),
    ] {
        let (st, v) = deliver(&s, body, sig).await;
        assert_error(st, &v, 400, "invalid_signature");
        assert_eq!(tier(&s, &token).await, "free", "refused: {v}");
    }
    // The valid delivery applies.
    let (st, v) = deliver(&s, &created, &valid).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"received": true, "outcome": "applied", "tier": "pro"})
    );
    assert_eq!(tier(&s, &token).await, "pro");
    // A newer event moves the user on; replaying the first delivery byte
    // for byte (a valid signature within the tolerance) changes nothing.
    let ent = subscription(
        "customer.subscription.updated",
        "evt_w_2",
        &uid,
        "price_ent_monthly",
        "active",
        now() + 3600,
    );
    let (st, v) = deliver(&s, &ent, &signed(&ent)).await;
    assert_eq!(
        (st, v["tier"].as_str()),
        (StatusCode::OK, Some("enterprise")),
        "{v}"
    );
    let (st, v) = deliver(&s, &created, &valid).await;
    assert_eq!(
        (st, v["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate")),
        "{v}"
    );
    assert_eq!(tier(&s, &token).await, "enterprise");
    // Unknown event types and prices are acknowledged and ignored.
    let other = subscription(
        "customer.subscription.updated",
        "evt_w_3",
        &uid,
        "price_unknown",
        "active",
        now() + 3600,
    );
    let (st, v) = deliver(&s, &other, &signed(&other)).await;
    assert_eq!(
        (st, v["outcome"].as_str()),
        (StatusCode::OK, Some("ignored")),
        "{v}"
    );
    // Cancelled: enterprise until the period's end, then the server
    // downgrades on its own.
    let end = now() + 2;
    let deleted = subscription(
        "customer.subscription.deleted",
        "evt_w_4",
        &uid,
        "price_ent_monthly",
        "canceled",
        end,
    );
    let (st, v) = deliver(&s, &deleted, &signed(&deleted)).await;
    assert_eq!(
        (st, v["tier"].as_str()),
        (StatusCode::OK, Some("enterprise")),
        "{v}"
    );
    let (_, p) = s.json(GET, "/plans", Some(&token), None).await;
    assert_eq!(p["pending_downgrade"]["tier"], "free", "{p}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tier(&s, &token).await != "free" {
        assert!(
            Instant::now() < deadline,
            "not downgraded at the period's end"
        );
        assert!(now() <= end + 15);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(now() >= end, "downgraded before the period's end");
    // A failed payment whose period ended downgrades at once; a checkout
    // links a customer id the later events can name alone.
    let (t2, u2, _) = s.register("w2@example.com").await;
    let checkout = fixture(
        "checkout.session.completed",
        &[
            ("EVENT_ID", "evt_w_5".into()),
            ("CREATED", now().to_string()),
            ("CUSTOMER", "cus_linked".into()),
            ("USER_ID", u2.clone()),
        ],
    );
    let (st, v) = deliver(&s, &checkout, &signed(&checkout)).await;
    assert_eq!(
        (st, v["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{v}"
    );
    let up = subscription(
        "customer.subscription.created",
        "evt_w_6",
        "someone-else",
        "price_pro_monthly",
        "active",
        now() + 3600,
    )
    .replace("cus_someone-else", "cus_linked");
    let (st, v) = deliver(&s, &up, &signed(&up)).await;
    assert_eq!(
        (st, v["tier"].as_str()),
        (StatusCode::OK, Some("pro")),
        "{v}"
    );
    assert_eq!(tier(&s, &t2).await, "pro");
    let failed = fixture(
        "invoice.payment_failed",
        &[
            ("EVENT_ID", "evt_w_7".into()),
            ("CREATED", now().to_string()),
            ("PERIOD_END", (now() - 1).to_string()),
            ("CUSTOMER", "cus_linked".into()),
            ("PRICE", "price_pro_monthly".into()),
            ("USER_ID", u2),
        ],
    );
    let (st, v) = deliver(&s, &failed, &signed(&failed)).await;
    assert_eq!(
        (st, v["tier"].as_str()),
        (StatusCode::OK, Some("free")),
        "{v}"
    );
    assert_eq!(tier(&s, &t2).await, "free");
}

async fn a_downgrade_keeps_every_model_read_only_over_the_plan(b: Backend) {
    let Some(s) = server(b, "plans_downgrade").await else {
        return;
    };
    let (token, uid, first) = s.register("d@example.com").await;
    let up = subscription(
        "customer.subscription.created",
        "evt_d_1",
        &uid,
        "price_pro_monthly",
        "active",
        now() + 3600,
    );
    assert_eq!(deliver(&s, &up, &signed(&up)).await.0, 200);
    // Five models on pro (free allows 3): Q-learning, SARSA, decisions, two more.
    let sarsa = s
        .create_model(
            &token,
            json!({"name": "sarsa", "n_actions": 2, "algorithm": "expected_sarsa"}),
        )
        .await;
    let logging = s
        .create_model(&token, json!({"name": "log", "n_actions": 2}))
        .await;
    let (st, v) = s
        .json(
            reqwest::Method::PATCH,
            &format!("/models/{logging}"),
            Some(&token),
            Some(json!({"decisions": {"reward_wait_seconds": 60}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let fourth = s
        .create_model(&token, json!({"name": "4", "n_actions": 2}))
        .await;
    let fifth = s
        .create_model(&token, json!({"name": "5", "n_actions": 2}))
        .await;
    let ids = [&first, &sarsa, &logging, &fourth, &fifth];
    for id in ids {
        let (st, v) = s
            .json(POST, "/update", Some(&token), Some(json!({"model_id": id, "state": 1, "action": 0, "reward": 1.0, "next_state": 2})))
            .await;
        assert_eq!(st, 200, "{v}");
    }
    let export = |id: String| {
        let (s, t) = (&s, token.clone());
        async move {
            let r = s
                .call(GET, &format!("/models/{id}/export"), Some(&t), None)
                .await;
            assert_eq!(r.status(), 200, "export is never gated");
            r.bytes().await.unwrap()
        }
    };
    let mut before = Vec::new();
    for id in ids {
        before.push(export(id.clone()).await);
    }
    // The subscription ends: downgraded to free now.
    let down = subscription(
        "customer.subscription.deleted",
        "evt_d_2",
        &uid,
        "price_pro_monthly",
        "canceled",
        now() - 1,
    );
    let (st, v) = deliver(&s, &down, &signed(&down)).await;
    assert_eq!(
        (st, v["tier"].as_str()),
        (StatusCode::OK, Some("free")),
        "{v}"
    );
    let (_, models) = s.json(GET, "/models", Some(&token), None).await;
    let models = models.as_array().unwrap();
    assert_eq!(models.len(), 5, "nothing deleted");
    // Past the plan's 3 models, the newest listed (oldest first); within
    // it, those using a feature free lacks.
    let mut writable = Vec::new();
    for (i, m) in models.iter().enumerate() {
        let id = m["id"].as_str().unwrap().to_owned();
        let reason = m["read_only"].as_str().unwrap_or("");
        let want = match () {
            _ if i >= 3 => "your plan allows 3 models",
            _ if id == sarsa => "advanced_algorithms",
            _ if id == logging => "decisions",
            _ => "",
        };
        assert!(
            reason.contains(want) && reason.is_empty() == want.is_empty(),
            "{i}: {m}"
        );
        if want.is_empty() {
            writable.push(id);
        }
    }
    let (_, d) = s.json(GET, "/dashboard", Some(&token), None).await;
    assert!(
        d["models"][4]["read_only"].is_string(),
        "the dashboard says it: {d}"
    );
    // Every model and Q-value kept, byte for byte.
    for (id, want) in ids.iter().zip(&before) {
        assert_eq!(&export((*id).clone()).await, want, "{id}");
    }
    // Read-only models refuse to learn, and the refusal changes nothing;
    // the others learn; every one still predicts.
    let update = |id: String| {
        let (s, t) = (&s, token.clone());
        async move {
            s.json(POST, "/update", Some(&t), Some(json!({"model_id": id, "state": 1, "action": 0, "reward": 1.0, "next_state": 2})))
                .await
        }
    };
    for id in ids.iter().filter(|id| !writable.contains(id)) {
        let (st, v) = update((*id).clone()).await;
        assert_error(st, &v, 403, "model_read_only");
    }
    let (st, v) = s
        .json(
            POST,
            "/rewards",
            Some(&token),
            Some(json!({"model_id": logging, "decision_id": "x", "value": 1.0})),
        )
        .await;
    assert_error(st, &v, 403, "model_read_only");
    for (id, want) in ids.iter().zip(&before) {
        assert_eq!(
            &export((*id).clone()).await,
            want,
            "{id} unchanged by refusals"
        );
    }
    for id in &writable {
        let (st, v) = update(id.clone()).await;
        assert_eq!(st, 200, "{v}");
    }
    for id in ids.iter().filter(|id| **id != &logging) {
        let (st, v) = s
            .json(
                POST,
                "/predict",
                Some(&token),
                Some(json!({"model_id": id, "state": 1})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    // Deleting enough makes the rest writable again.
    for id in [&sarsa, &logging] {
        let r = s
            .call(
                reqwest::Method::DELETE,
                &format!("/models/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(r.status(), 204);
    }
    for id in [&first, &fourth, &fifth] {
        let (st, v) = update(id.clone()).await;
        assert_eq!(st, 200, "{v}");
    }
    // Upgraded again: everything learns.
    let again = subscription(
        "customer.subscription.created",
        "evt_d_3",
        &uid,
        "price_pro_monthly",
        "active",
        now() + 3600,
    );
    let (st, v) = deliver(&s, &again, &signed(&again)).await;
    assert_eq!(
        (st, v["tier"].as_str()),
        (StatusCode::OK, Some("pro")),
        "{v}"
    );
}
