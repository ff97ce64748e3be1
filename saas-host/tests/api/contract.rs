//! The API contract (issue 12): error bodies name the offending field by
//! its JSON path, and `/openapi.json` states the constraints the server
//! enforces (the Schemathesis run, `scripts/schemathesis.sh`, checks the
//! whole document against the server; these pin what it relies on).

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, start, start_with, Backend};
use crate::{GET, POST};

/// `field` of an error body.
fn field(body: &Value) -> &str {
    body["error"]["field"].as_str().unwrap_or("<none>")
}

async fn error_fields_name_the_member(backend: Backend) {
    let Some(s) = start_with(backend, "contract_fields", |c| {
        // Members are checked whatever the plan (plans: `billing.rs`).
        c.limits.free.features = qlearn_core::tenancy::Features::ALL;
    })
    .await
    else {
        return;
    };
    let (token, _, model) = s.register("fields@example.com").await;
    let t = Some(token.as_str());

    // A member of the wrong type (serde), a missing one, an index of a batch.
    let (st, v) = s
        .json(
            POST,
            "/predict",
            t,
            Some(json!({"model_id": model, "state": 1.5})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(field(&v), "state", "{v}");
    let (st, v) = s
        .json(POST, "/predict", t, Some(json!({"model_id": model})))
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(field(&v), "state", "{v}");
    let exp = json!({"state": 1, "action": 0, "reward": 1.0, "next_state": 2});
    let mut bad = exp.clone();
    bad["reward"] = json!("much");
    let (st, v) = s
        .json(
            POST,
            "/update/batch",
            t,
            Some(json!({"model_id": model, "experiences": [exp, exp, exp, bad]})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(field(&v), "experiences[3].reward", "{v}");
    // A value the engine refuses (core validation), at its batch index.
    let mut big = exp.clone();
    big["reward"] = json!(1e13);
    let (st, v) = s
        .json(
            POST,
            "/update/batch",
            t,
            Some(json!({"model_id": model, "experiences": [exp, big]})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(field(&v), "experiences[1].reward", "{v}");
    // State and action errors name their member too (typed in the core).
    let (st, v) = s
        .json(
            POST,
            "/predict",
            t,
            Some(json!({"model_id": model, "state": 1, "allowed_actions": [9]})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_action");
    assert_eq!(field(&v), "allowed_actions", "{v}");
    let mut far = exp.clone();
    far["action"] = json!(9);
    let (st, v) = s
        .json(
            POST,
            "/update/batch",
            t,
            Some(json!({"model_id": model, "experiences": [exp, exp, far]})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_action");
    assert_eq!(field(&v), "experiences[2].action", "{v}");
    let binned = s
        .create_model(
            &token,
            json!({"name": "binned", "n_actions": 2, "state_bins": [{"low": 0, "high": 1, "bins": 4}]}),
        )
        .await;
    let (st, v) = s
        .json(
            POST,
            "/update",
            t,
            Some(json!({"model_id": binned, "state": [0.5], "action": 0, "reward": 0, "next_state": [0.5, 0.5]})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_state");
    assert_eq!(field(&v), "next_state", "{v}");
    // A nested member of a configuration, and a query parameter.
    let (st, v) = s
        .json(
            Method::PATCH,
            &format!("/models/{model}"),
            t,
            Some(json!({"decisions": {"retention_days": 0}})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(field(&v), "decisions.retention_days", "{v}");
    let (st, v) = s
        .json(GET, &format!("/status/{model}?limit=0"), t, None)
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(field(&v), "limit", "{v}");
    let (st, v) = s
        .json(
            POST,
            "/models",
            t,
            Some(json!({"name": " ", "n_actions": 2})),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(field(&v), "name", "{v}");
    // Errors without a member to name have no `field`.
    let (st, v) = s.json(GET, "/models/nope", t, None).await;
    assert_error(st, &v, 404, "not_found");
    assert!(v["error"].get("field").is_none(), "{v}");
}

async fn integers_may_have_a_zero_fraction(backend: Backend) {
    let Some(s) = start(backend, "contract_integral").await else {
        return;
    };
    let (t, _, model) = s.register("integral@example.com").await;
    let (st, v) = s
        .json(
            POST,
            "/predict",
            Some(&t),
            Some(json!({"model_id": model, "state": -915.0, "allowed_actions": [1.0, 2]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!([1, 2].contains(&v["action"].as_u64().unwrap_or(9)), "{v}");
}

backend_tests!(
    error_fields_name_the_member,
    integers_may_have_a_zero_fraction
);

/// The document states what validation reads: the event stream's every
/// event type, query parameters' ranges and enums, non-empty lists, and
/// the error statuses (415 and 413 on every body, 401 and 429 on every
/// authenticated route) with the body limits of the server's configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_states_the_constraints() {
    let Some(s) = start(Backend::Sqlite, "contract_openapi").await else {
        return;
    };
    let (st, api) = s.json(GET, "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    let events = &api["paths"]["/models/{id}/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"]["oneOf"];
    let types: Vec<&str> = events
        .as_array()
        .expect("event types")
        .iter()
        .map(|e| e["properties"]["event"]["const"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["update", "lagged", "end"]);
    let status = &api["paths"]["/status/{id}"]["get"]["parameters"];
    let limit = status
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "limit"))
        .expect("limit");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 1000);
    let export = &api["paths"]["/models/{id}/export"]["get"]["parameters"];
    let format = export
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "format"))
        .expect("format");
    assert_eq!(format["schema"]["enum"], json!(["binary", "json"]));
    // The decision listing's order and cursor, as the handler reads them.
    let listing = &api["paths"]["/models/{id}/decisions"]["get"]["parameters"];
    let param = |name: &str| {
        listing
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("{name} in {listing}"))
            .clone()
    };
    assert_eq!(
        param("order")["schema"]["enum"],
        json!(["oldest", "newest"])
    );
    assert_eq!(
        param("cursor")["schema"]["pattern"],
        json!(saas_host::wire::CURSOR_PATTERN)
    );
    assert_eq!(param("count")["schema"]["type"], "boolean");
    let predict = &api["components"]["schemas"]["PredictIn"]["properties"]["allowed_actions"];
    assert_eq!(predict["oneOf"][0]["minItems"], 1, "{predict}");
    let patch = &api["components"]["schemas"]["PatchModel"];
    assert_eq!(patch["additionalProperties"], false);
    for (path, item) in api["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let responses = &op["responses"];
            if op.get("requestBody").is_some() {
                for code in ["400", "413", "415", "422"] {
                    assert!(responses[code].is_object(), "{method} {path} lacks {code}");
                }
            }
            if op.get("security").is_some() {
                for code in ["401", "429"] {
                    assert!(responses[code].is_object(), "{method} {path} lacks {code}");
                }
            }
        }
    }
    let too_large = &api["paths"]["/update/batch"]["post"]["responses"]["413"]["description"];
    assert!(
        too_large
            .as_str()
            .is_some_and(|d| d.contains("1048576 bytes")),
        "{too_large}"
    );
}
