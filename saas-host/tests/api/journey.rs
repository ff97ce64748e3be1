//! A whole user's journey through the API, from registration to the metrics it leaves.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, start, Backend};
use crate::{GET, POST};

backend_tests!(user_journey,);

async fn user_journey(b: Backend) {
    let Some(s) = start(b, "journey").await else {
        return;
    };
    let (token, uid, default_model) = s.register("Alice@Example.com").await;

    // login, /me
    let (st, v) = s
        .json(
            POST,
            "/login",
            None,
            Some(json!({"email": "alice@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 86400);
    let token2 = v["access_token"].as_str().unwrap().to_owned();
    let (st, me) = s.json(GET, "/me", Some(&token2), None).await;
    assert_eq!(st, 200);
    assert_eq!(me["id"], uid.as_str());
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["tier"], "free");
    assert_eq!(me["role"], "user");

    // models
    let (st, models) = s.json(GET, "/models", Some(&token), None).await;
    assert_eq!(st, 200);
    assert_eq!(models.as_array().unwrap().len(), 1);
    assert_eq!(models[0]["id"], default_model.as_str());
    let (st, m) = s
        .json(
            POST,
            "/models",
            Some(&token),
            Some(json!({
                "name": "grid", "n_actions": 4, "action_names": ["up", "down", "left", "right"],
                "learning_rate": 0.5, "discount_factor": 0.9, "epsilon": 0.0, "seed": 7
            })),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    let mid = m["id"].as_str().unwrap().to_owned();
    assert!(mid.len() >= 11, "ids carry at least 64 random bits");
    assert_eq!(m["learning_rate"], 0.5);
    assert_eq!(m["algorithm"], "q_learning");
    assert_eq!(m["stats"]["updates"], 0);

    // predict (unseen state: initial_q everywhere), update, predict again greedily
    let (st, p) = s
        .json(
            POST,
            "/predict",
            Some(&token),
            Some(json!({"model_id": mid, "state": [1, 2]})),
        )
        .await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["q_values"], json!([0.0, 0.0, 0.0, 0.0]));
    assert!(p["action_name"].is_string());
    let (st, u) = s
        .json(POST, "/update", Some(&token), Some(json!({
            "model_id": mid, "state": [1, 2], "action": 3, "reward": 1.0, "next_state": [1, 3], "done": true
        })))
        .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["q_value"], 0.5);
    assert_eq!(u["td_error"], 1.0);
    let (st, p) = s
        .json(
            POST,
            "/predict",
            Some(&token),
            Some(json!({"model_id": mid, "state": [1.0, 2.0], "explore": false})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(p["action"], 3);
    assert_eq!(p["action_name"], "right");
    assert_eq!(p["explored"], false);

    // status
    let (st, status) = s
        .json(GET, &format!("/status/{mid}"), Some(&token), None)
        .await;
    assert_eq!(st, 200, "{status}");
    assert_eq!(status["stats"]["updates"], 1);
    assert_eq!(status["stats"]["predictions"], 2);
    assert_eq!(status["stats"]["episodes"], 1);
    assert_eq!(status["q_table"]["total"], 1);
    assert_eq!(status["q_table"]["rows"][0]["state"], json!([1, 2]));
    assert_eq!(
        status["q_table"]["rows"][0]["q_values"],
        json!([0.0, 0.0, 0.0, 0.5])
    );
    assert_eq!(status["model"]["id"], mid.as_str());

    // PATCH, GET
    let (st, m) = s
        .json(
            Method::PATCH,
            &format!("/models/{mid}"),
            Some(&token),
            Some(json!({"name": "grid2", "learning_rate": 0.25})),
        )
        .await;
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["name"], "grid2");
    assert_eq!(m["learning_rate"], 0.25);
    let (st, m) = s
        .json(GET, &format!("/models/{mid}"), Some(&token), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(m["name"], "grid2");

    // dashboard
    let (st, d) = s.json(GET, "/dashboard", Some(&token), None).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["user"]["id"], uid.as_str());
    assert_eq!(d["limits"]["monthly_calls"], 100);
    assert_eq!(d["limits"]["max_models"], 3);
    assert_eq!(d["usage"]["calls"], 3);
    assert_eq!(d["usage"]["remaining"], 97);
    let per_day = d["usage"]["per_day"].as_array().unwrap();
    assert!((28..=31).contains(&per_day.len()));
    assert_eq!(
        per_day
            .iter()
            .map(|x| x["calls"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    assert_eq!(d["models"].as_array().unwrap().len(), 2);

    // DELETE
    let r = s
        .call(
            Method::DELETE,
            &format!("/models/{mid}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let (st, v) = s
        .json(GET, &format!("/models/{mid}"), Some(&token), None)
        .await;
    assert_error(st, &v, 404, "not_found");

    // service routes
    let (st, h) = s.json(GET, "/healthz", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(h["status"], "ok");
    let r = s.call(GET, "/", None, None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let r = s.call(GET, "/static/app.js", None, None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let r = s.call(GET, "/static/app.css", None, None).await;
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let r = s.call(GET, "/static/nope.js", None, None).await;
    assert_eq!(r.status(), 404);
    let r = s.call(GET, "/docs", None, None).await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains("/docs/swagger-ui-bundle.js") && !html.contains("http"),
        "no CDN"
    );
    let r = s.call(GET, "/docs/swagger-ui-bundle.js", None, None).await;
    assert_eq!(r.status(), 200);
    let (st, api) = s.json(GET, "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    assert!(api["openapi"].as_str().unwrap().starts_with("3.1"));
    // That it describes every route: service::openapi_matches_the_route_table.
    assert!(api["paths"]["/predict"]["post"]["responses"]["429"].is_object());
    assert!(api["components"]["schemas"]["PredictIn"].is_object());
    let metrics = s
        .call(GET, "/metrics", None, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("qlearn_http_requests_total{route=\"/predict\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("qlearn_metered_calls_total{tier=\"free\"} 3"),
        "{metrics}"
    );
    assert!(metrics
        .contains("qlearn_http_request_duration_seconds_bucket{route=\"/update\",le=\"+Inf\"} 1"));
}
