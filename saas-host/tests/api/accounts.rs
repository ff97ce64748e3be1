//! Accounts: login throttling, API keys, password changes, the admin's tier change, the JWT secret.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, assert_error_response, start, start_with, Backend};
use crate::{GET, POST};

backend_tests!(
    login_throttle,
    login_throttle_is_exact_and_keyed_by_address,
    api_keys,
    password_change_revokes_old_tokens,
    admin_changes_tier,
    generated_secret_survives_restart,
);

async fn login_throttle(b: Backend) {
    let Some(s) = start(b, "throttle").await else {
        return;
    };
    s.register("victim@example.com").await;
    let bad = json!({"email": "victim@example.com", "password": "not the password"});
    for _ in 0..5 {
        let (st, v) = s.json(POST, "/login", None, Some(bad.clone())).await;
        assert_error(st, &v, 401, "invalid_credentials");
    }
    let r = s
        .call(
            POST,
            "/login",
            None,
            Some(json!({"email": "victim@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_error_response(r, 429, "too_many_attempts").await;

    // Registrations per address.
    let Some(s2) = start_with(b, "regthrottle", |c| {
        c.register_per_address = saas_host::config::Throttle::per(2, 3600);
    })
    .await
    else {
        return;
    };
    s2.register("r1@example.com").await;
    s2.register("r2@example.com").await;
    let r = s2
        .call(
            POST,
            "/register",
            None,
            Some(json!({"email": "r3@example.com", "password": "long enough"})),
        )
        .await;
    assert_error_response(r, 429, "too_many_attempts").await;
}

/// A login from `addr` (through the trusted proxy 127.0.0.1); the status.
async fn login_from(s: &crate::common::Server, addr: &str, email: &str, password: &str) -> u16 {
    s.http
        .post(s.url("/login"))
        .header("x-forwarded-for", addr)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn login_throttle_is_exact_and_keyed_by_address(b: Backend) {
    let Some(s) = start_with(b, "throttle2", |c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.login_per_account = saas_host::config::Throttle::per(5, 900);
        c.login_per_address = saas_host::config::Throttle::per(12, 900);
    })
    .await
    else {
        return;
    };
    s.register("owner@example.com").await;
    let good = "correct horse battery";
    // 200 concurrent wrong guesses from one address: each reserves its slot
    // before its password is verified, so exactly the 5 of the account's
    // bucket are verified (401) and every other one is refused unverified.
    let guesses =
        (0..200).map(|_| login_from(&s, "198.51.100.7", "owner@example.com", "wrong guess"));
    let statuses = futures_util::future::join_all(guesses).await;
    let verified = statuses.iter().filter(|&&st| st == 401).count();
    let refused = statuses.iter().filter(|&&st| st == 429).count();
    assert_eq!((verified, refused), (5, 195), "{statuses:?}");
    // The attacker's guesses do not lock the owner out from another address.
    assert_eq!(
        login_from(&s, "203.0.113.9", "owner@example.com", good).await,
        200
    );
    // A correct password gives the slot back and clears the account's failures
    // at that address: four failures, a success, then four more failures.
    for _ in 0..4 {
        assert_eq!(
            login_from(&s, "203.0.113.9", "owner@example.com", "wrong").await,
            401
        );
    }
    assert_eq!(
        login_from(&s, "203.0.113.9", "owner@example.com", good).await,
        200
    );
    for _ in 0..4 {
        assert_eq!(
            login_from(&s, "203.0.113.9", "owner@example.com", "wrong").await,
            401
        );
    }
    // The address's bucket counts guesses across accounts (12), and IPv6
    // clients are one client per /64: the second address below is the same
    // client as the first.
    let mut statuses = Vec::new();
    for i in 0..13 {
        let addr = if i % 2 == 0 {
            "2001:db8:7:7::1"
        } else {
            "2001:db8:7:7:ffff::2"
        };
        statuses.push(login_from(&s, addr, &format!("nobody{i}@example.com"), "wrong").await);
    }
    assert_eq!(
        statuses.iter().filter(|&&st| st == 401).count(),
        12,
        "{statuses:?}"
    );
    assert_eq!(statuses[12], 429, "{statuses:?}");
    assert_eq!(
        login_from(&s, "2001:db8:7:8::1", "owner@example.com", good).await,
        200
    );
}

async fn api_keys(b: Backend) {
    let Some(s) = start(b, "apikeys").await else {
        return;
    };
    let (token, uid, mid) = s.register("keys@example.com").await;
    let (st, k) = s
        .json(POST, "/api-keys", Some(&token), Some(json!({"name": "ci"})))
        .await;
    assert_eq!(st, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("qlk_") && key.starts_with(k["prefix"].as_str().unwrap()));
    let (st, list) = s.json(GET, "/api-keys", Some(&token), None).await;
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("key").is_none(), "the key is shown only once");
    assert!(!list.to_string().contains(&key));
    assert_eq!(list[0]["name"], "ci");
    // Use it.
    let (st, me) = s.json(GET, "/me", Some(&key), None).await;
    assert_eq!(st, 200);
    assert_eq!(me["id"], uid.as_str());
    let (st, _) = s
        .json(
            POST,
            "/predict",
            Some(&key),
            Some(json!({"model_id": mid, "state": "a"})),
        )
        .await;
    assert_eq!(st, 200);
    let (_, list) = s.json(GET, "/api-keys", Some(&token), None).await;
    assert!(list[0]["last_used_at"].is_string(), "{list}");
    // Revoke it.
    let r = s
        .call(
            Method::DELETE,
            &format!("/api-keys/{}", k["id"].as_str().unwrap()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let (st, v) = s.json(GET, "/me", Some(&key), None).await;
    assert_error(st, &v, 401, "unauthorized");
    let (_, list) = s.json(GET, "/api-keys", Some(&token), None).await;
    assert_eq!(list, json!([]));
}

async fn password_change_revokes_old_tokens(b: Backend) {
    let Some(s) = start(b, "password").await else {
        return;
    };
    let (old, _, _) = s.register("pw@example.com").await;
    let (st, v) = s
        .json(
            POST,
            "/me/password",
            Some(&old),
            Some(json!({"current_password": "wrong one!", "new_password": "a new password"})),
        )
        .await;
    assert_error(st, &v, 401, "invalid_credentials");
    assert_eq!(
        s.call(GET, "/me", Some(&old), None).await.status(),
        200,
        "a failed change revokes nothing"
    );
    let (st, v) = s
        .json(POST, "/me/password", Some(&old), Some(json!({"current_password": "correct horse battery", "new_password": "a new password"})))
        .await;
    assert_eq!(st, 200, "{v}");
    let new = v["access_token"].as_str().unwrap().to_owned();
    let (st, v) = s.json(GET, "/me", Some(&old), None).await;
    assert_error(st, &v, 401, "unauthorized");
    assert_eq!(s.call(GET, "/me", Some(&new), None).await.status(), 200);
    let (st, _) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "pw@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "pw@example.com", "password": "a new password"})),
        )
        .await;
    assert_eq!(st, 200);
}

async fn admin_changes_tier(b: Backend) {
    let Some(s) = start(b, "admin").await else {
        return;
    };
    let (_, _, _) = s.register("root@example.com").await;
    let (user_token, uid, _) = s.register("customer@example.com").await;
    // The CLI works on the database directly: stop the server (SQLite serves one process).
    let url = s.config.database_url.clone();
    let s = {
        let mut s = s;
        s.stop().await.unwrap();
        let args = saas_host::cli::AdminArgs {
            database_url: url.clone(),
            action: saas_host::cli::AdminAction::SetRole {
                email: "ROOT@example.com".into(),
                role: "admin".into(),
            },
        };
        let msg = tokio::task::spawn_blocking(move || saas_host::cli::admin(&args))
            .await
            .unwrap()
            .unwrap();
        assert!(msg.contains("role user -> admin"), "{msg}");
        let bad = saas_host::cli::AdminArgs {
            database_url: url.clone(),
            action: saas_host::cli::AdminAction::SetTier {
                email: "nobody@example.com".into(),
                tier: "pro".into(),
            },
        };
        assert!(
            tokio::task::spawn_blocking(move || saas_host::cli::admin(&bad))
                .await
                .unwrap()
                .is_err()
        );
        s.restart().await
    };
    let (st, v) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "root@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(st, 200);
    let admin = v["access_token"].as_str().unwrap().to_owned();
    let (st, v) = s
        .json(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(&admin),
            Some(json!({"tier": "enterprise"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["tier"], "enterprise");
    let (st, d) = s.json(GET, "/dashboard", Some(&user_token), None).await;
    assert_eq!(st, 200);
    assert_eq!(d["limits"]["tier"], "enterprise");
    assert_eq!(d["limits"]["monthly_calls"], Value::Null);
    assert_eq!(d["usage"]["remaining"], Value::Null);
    let (st, v) = s
        .json(
            Method::PATCH,
            &format!("/admin/users/{uid}"),
            Some(&admin),
            Some(json!({"tier": "gold"})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    let (st, v) = s
        .json(
            Method::PATCH,
            "/admin/users/nobody",
            Some(&admin),
            Some(json!({"tier": "pro"})),
        )
        .await;
    assert_error(st, &v, 404, "not_found");
}

async fn generated_secret_survives_restart(b: Backend) {
    // No SECRET_KEY: one is generated, kept in the database, and reused.
    let Some(s) = start_with(b, "secret", |c| c.secret_key = None).await else {
        return;
    };
    let (token, _, _) = s.register("secret@example.com").await;
    assert_eq!(s.call(GET, "/me", Some(&token), None).await.status(), 200);
    let s = s.restart().await;
    assert_eq!(
        s.call(GET, "/me", Some(&token), None).await.status(),
        200,
        "tokens survive a restart"
    );
}
