//! Offline evaluations as jobs over HTTP (issue 18): a model taught
//! through decisions on a known Bernoulli bandit (action 1 pays 0.8,
//! action 0 pays 0.2, logged at epsilon 0.3), evaluated by a job: the
//! greedy IPS interval covers 0.8, the logged mean is the posted rewards'
//! mean, uniform is near 0.5; a candidate configuration; a log without
//! exploration; isolation, the plan gate, the daily limit, cancel, the
//! listing's keyset, bad bodies, a queued job surviving a restart, and a
//! model's deletion deleting its jobs (a running one too).

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{assert_error, assert_error_response, start, start_with, Backend, Server};
use crate::{GET, POST};

backend_tests!(
    an_evaluation_job_evaluates_the_bandit,
    evaluations_are_limited_and_isolated,
    evaluations_need_the_plan,
    a_queued_evaluation_survives_a_restart,
    deleting_a_model_deletes_its_evaluations,
);

/// Every feature on the free tier, no quota, and 4 evaluations a day.
pub(crate) fn plan(c: &mut saas_host::Config) {
    c.limits.free.features = qlearn_core::tenancy::Features::ALL;
    c.limits.free.monthly_calls = None;
    c.limits.free.evaluations_per_day = 4;
    c.limits.free.evaluations_at_once = 4;
    c.limits.free.evaluation_max_decisions = 1_000_000;
}

/// A deterministic coin (xorshift64*).
struct Coin(u64);

impl Coin {
    fn flip(&mut self, p: f64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        (x as f64 / (1u64 << 53) as f64) < p
    }
}

/// A logging bandit model (2 actions at `epsilon`) taught `n` decisions,
/// their rewards posted in batches of `batch`; returns its id and the mean
/// of the rewards posted.
async fn bandit(s: &Server, token: &str, n: usize, epsilon: f64, batch: usize) -> (String, f64) {
    bandit_with(s, token, n, epsilon, batch, None).await
}

/// [`bandit`], each decision logged with `baseline` as its baseline action.
pub(crate) async fn bandit_with(
    s: &Server,
    token: &str,
    n: usize,
    epsilon: f64,
    batch: usize,
    baseline: Option<usize>,
) -> (String, f64) {
    let mid = s
        .create_model(
            token,
            json!({"name": "bandit", "n_actions": 2, "epsilon": epsilon, "epsilon_decay": 1.0,
                   "min_epsilon": epsilon, "learning_rate": 0.1, "seed": 11}),
        )
        .await;
    let (st, v) = s
        .json(
            reqwest::Method::PATCH,
            &format!("/models/{mid}"),
            Some(token),
            Some(json!({"decisions": {"reward_wait_seconds": 3600}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut coin = Coin(0x9e37_79b9_7f4a_7c15);
    let (mut sum, mut rewards) = (0.0, Vec::new());
    for _ in 0..n {
        let (st, d) = s
            .json(
                POST,
                "/predict",
                Some(token),
                Some(json!({"model_id": mid, "state": "home", "baseline_action": baseline})),
            )
            .await;
        assert_eq!(st, 200, "{d}");
        let pays = if d["action"] == 1 { 0.8 } else { 0.2 };
        let r = f64::from(u8::from(coin.flip(pays)));
        sum += r;
        rewards.push(json!({"decision_id": d["decision_id"], "value": r, "final": true}));
        if rewards.len() == batch {
            post_rewards(s, token, &mid, std::mem::take(&mut rewards)).await;
        }
    }
    if !rewards.is_empty() {
        post_rewards(s, token, &mid, rewards).await;
    }
    (mid, sum / n as f64)
}

async fn post_rewards(s: &Server, token: &str, mid: &str, rewards: Vec<Value>) {
    let (st, out) = s
        .json(
            POST,
            "/rewards/batch",
            Some(token),
            Some(json!({"model_id": mid, "rewards": rewards})),
        )
        .await;
    assert_eq!(st, 200, "{out}");
}

/// Creates a job; returns it (202 and its Location checked).
pub(crate) async fn create(s: &Server, token: &str, mid: &str, body: Value) -> Value {
    let r = s
        .call(
            POST,
            &format!("/models/{mid}/evaluations"),
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/models/{mid}/evaluations/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["model_id"], mid);
    assert!(job["created_at"].as_str().unwrap().ends_with('Z'), "{job}");
    job
}

/// Polls the job until it finished.
pub(crate) async fn wait(s: &Server, token: &str, mid: &str, id: &str) -> Value {
    for _ in 0..600 {
        let (st, job) = s
            .json(
                GET,
                &format!("/models/{mid}/evaluations/{id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(st, 200, "{job}");
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("evaluation {id} did not finish");
}

pub(crate) fn ips(policy: &Value) -> &Value {
    assert_eq!(policy["results"][0]["estimator"], "ips", "{policy}");
    &policy["results"][0]["outcome"]
}

async fn an_evaluation_job_evaluates_the_bandit(b: Backend) {
    let Some(s) = start_with(b, "evaluation_bandit", plan).await else {
        return;
    };
    let (token, _, _) = s.register("e@example.com").await;
    let (mid, mean) = bandit(&s, &token, 2000, 0.3, 1000).await;
    let job = create(
        &s,
        &token,
        &mid,
        json!({"policies": [{"kind": "greedy"}, {"kind": "uniform"}, {"kind": "logged"},
            {"kind": "candidate", "name": "lr 0.05", "config": {"learning_rate": 0.05}}]}),
    )
    .await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["request"]["confidence"], 0.95, "defaults filled: {job}");
    assert_eq!(job["request"]["mode"], "auto");
    let done = wait(&s, &token, &mid, job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["progress"]["decisions_read"], 2000, "{done}");
    assert_eq!(done["progress"]["decisions_total"], 2000, "{done}");
    assert!(
        done["started_at"].is_string() && done["finished_at"].is_string(),
        "{done}"
    );
    let r = &done["result"];
    assert_eq!(
        (r["mode"].as_str(), r["decisions"].as_u64()),
        (Some("one_step"), Some(2000)),
        "{r}"
    );
    assert_eq!(r["truncated"], false);
    let logged = r["logged_reward"]["mean"].as_f64().unwrap();
    assert!(
        (logged - mean).abs() < 1e-9,
        "logged {logged} vs posted {mean}"
    );
    let greedy = ips(&r["policies"][0]);
    assert_eq!(greedy["kind"], "estimate", "{greedy}");
    let (lo, hi) = (
        greedy["ci"]["low"].as_f64().unwrap(),
        greedy["ci"]["high"].as_f64().unwrap(),
    );
    assert!(
        lo <= 0.8 && 0.8 <= hi,
        "greedy IPS interval [{lo}, {hi}] covers 0.8"
    );
    let uniform = ips(&r["policies"][1])["value"].as_f64().unwrap();
    assert!((uniform - 0.5).abs() < 0.07, "uniform {uniform}");
    assert_eq!(r["policies"][3]["policy"]["name"], "lr 0.05");
    assert_eq!(
        r["policies"][3]["replay"]["learned"], 2000,
        "{}",
        r["policies"][3]
    );
    assert!(r["policies"][0]["diagnostics"]["ess"].as_f64().unwrap() > 10.0);

    // A log written with exploration off (learning as it goes, so the
    // greedy action is certain after the first reward) supports no
    // uniform policy.
    let (off, _) = bandit(&s, &token, 200, 0.0, 1).await;
    let job = create(
        &s,
        &token,
        &off,
        json!({"policies": [{"kind": "uniform"}, {"kind": "logged"}]}),
    )
    .await;
    let done = wait(&s, &token, &off, job["id"].as_str().unwrap()).await;
    let p = &done["result"]["policies"];
    assert_eq!(ips(&p[0])["kind"], "insufficient_support", "{done}");
    assert_eq!(ips(&p[0])["reason"], "low_coverage", "{done}");
    assert_eq!(ips(&p[1])["kind"], "estimate", "{done}");
}

async fn evaluations_are_limited_and_isolated(b: Backend) {
    let Some(s) = start_with(b, "evaluation_limits", |c| {
        plan(c);
        c.evaluation_workers = 0;
    })
    .await
    else {
        return;
    };
    let (token, _, plain) = s.register("l@example.com").await;
    let (other, _, _) = s.register("o@example.com").await;
    let (mid, _) = bandit(&s, &token, 20, 0.3, 1000).await;
    let path = format!("/models/{mid}/evaluations");
    let greedy = json!({"policies": [{"kind": "greedy"}]});
    // Bad bodies.
    let r = s
        .http
        .post(s.url(&path))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_error_response(r, 400, "malformed_json").await;
    for (body, field) in [
        (json!({"policies": []}), "policies"),
        (
            json!({"policies": [{"kind": "greedy"}], "confidence": 2}),
            "confidence",
        ),
        (json!({"policies": [{"kind": "greedy"}], "bogus": 1}), ""),
        (
            json!({"policies": [{"kind": "candidate", "name": "x", "config": {"learning_rate": 5}}]}),
            "policies[0].config.learning_rate",
        ),
    ] {
        let (st, v) = s.json(POST, &path, Some(&token), Some(body.clone())).await;
        assert_error(st, &v, 422, "invalid_field");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], field, "{body}: {v}");
        }
    }
    let (st, v) = s
        .json(
            POST,
            &format!("/models/{plain}/evaluations"),
            Some(&token),
            Some(greedy.clone()),
        )
        .await;
    assert_error(st, &v, 422, "invalid_field");
    assert_eq!(v["error"]["field"], "decisions", "{v}");
    // Another user's model or job.
    let (st, v) = s
        .json(POST, &path, Some(&other), Some(greedy.clone()))
        .await;
    assert_error(st, &v, 404, "not_found");
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(
                create(&s, &token, &mid, greedy.clone()).await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        ids
    };
    let one = format!("{path}/{}", ids[0]);
    let (st, v) = s.json(GET, &one, Some(&other), None).await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s
        .json(reqwest::Method::DELETE, &one, Some(&other), None)
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s
        .json(GET, &format!("{path}/ev_nope"), Some(&token), None)
        .await;
    assert_error(st, &v, 404, "not_found");
    // The daily limit.
    let r = s
        .call(POST, &path, Some(&token), Some(greedy.clone()))
        .await;
    let v = assert_error_response(r, 429, "evaluations_per_day_reached").await;
    assert!(v["error"]["message"].as_str().unwrap().contains("4"), "{v}");
    // The listing: newest first, keyset on before.
    let (st, page) = s
        .json(GET, &format!("{path}?limit=3"), Some(&token), None)
        .await;
    assert_eq!(st, 200, "{page}");
    let got: Vec<&str> = page["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![&ids[3], &ids[2], &ids[1]]);
    let (_, rest) = s
        .json(
            GET,
            &format!("{path}?limit=3&before={}", ids[1]),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(rest["evaluations"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["evaluations"][0]["id"], ids[0].as_str());
    let (st, v) = s
        .json(GET, &format!("{path}?limit=0"), Some(&token), None)
        .await;
    assert_error(st, &v, 422, "invalid_field");
    let (st, v) = s.json(GET, &path, Some(&other), None).await;
    assert_error(st, &v, 404, "not_found");
    // Cancel a queued job, then delete its record.
    let (st, _) = s
        .json(reqwest::Method::DELETE, &one, Some(&token), None)
        .await;
    assert_eq!(st, 204);
    let (_, c) = s.json(GET, &one, Some(&token), None).await;
    assert_eq!(c["status"], "cancelled", "{c}");
    assert!(c["finished_at"].is_string(), "{c}");
    let (st, _) = s
        .json(reqwest::Method::DELETE, &one, Some(&token), None)
        .await;
    assert_eq!(st, 204);
    let (st, v) = s.json(GET, &one, Some(&token), None).await;
    assert_error(st, &v, 404, "not_found");
    // A deleted job still counts today.
    let r = s.call(POST, &path, Some(&token), Some(greedy)).await;
    assert_error_response(r, 429, "evaluations_per_day_reached").await;
}

async fn evaluations_need_the_plan(b: Backend) {
    let Some(s) = start(b, "evaluation_plan").await else {
        return;
    };
    let (token, _, mid) = s.register("f@example.com").await;
    let (st, v) = s
        .json(
            POST,
            &format!("/models/{mid}/evaluations"),
            Some(&token),
            Some(json!({"policies": [{"kind": "greedy"}]})),
        )
        .await;
    assert_error(st, &v, 403, "plan_required");
}

async fn a_queued_evaluation_survives_a_restart(b: Backend) {
    let Some(mut s) = start_with(b, "evaluation_restart", |c| {
        plan(c);
        c.evaluation_workers = 0;
    })
    .await
    else {
        return;
    };
    let (token, _, _) = s.register("r@example.com").await;
    let (mid, _) = bandit(&s, &token, 50, 0.3, 1000).await;
    let job = create(&s, &token, &mid, json!({"policies": [{"kind": "logged"}]})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, still) = s
        .json(
            GET,
            &format!("/models/{mid}/evaluations/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(still["status"], "queued", "no worker here: {still}");
    s.config.evaluation_workers = 1;
    let s = s.restart().await;
    let done = wait(&s, &token, &mid, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["result"]["decisions"], 50, "{done}");
}

/// Deleting a model deletes its jobs: a running one stops (the worker
/// then runs the next job), its GET, listing and DELETE are 404, never a
/// 5xx; the jobs created today still count in the daily limit.
async fn deleting_a_model_deletes_its_evaluations(b: Backend) {
    let Some(s) = start_with(b, "evaluation_model_deleted", plan).await else {
        return;
    };
    let (token, _, _) = s.register("d@example.com").await;
    let (mid, _) = bandit(&s, &token, 2000, 0.3, 1000).await;
    let (other, _) = bandit(&s, &token, 20, 0.3, 1000).await;
    // A long job: 16 candidates, each replayed, with 1,000 replicates.
    let candidates: Vec<Value> = (0..16)
        .map(|k| {
            json!({"kind": "candidate", "name": format!("c{k}"),
                   "config": {"learning_rate": 0.01 * f64::from(k + 1)}})
        })
        .collect();
    let job = create(
        &s,
        &token,
        &mid,
        json!({"policies": candidates, "replicates": 1000}),
    )
    .await;
    let one = format!("/models/{mid}/evaluations/{}", job["id"].as_str().unwrap());
    let mut status = String::new();
    for _ in 0..2000 {
        let (st, j) = s.json(GET, &one, Some(&token), None).await;
        assert_eq!(st, 200, "{j}");
        status = j["status"].as_str().unwrap().to_owned();
        if status != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(status, "running", "deleted while it runs");
    let (st, v) = s
        .json(
            reqwest::Method::DELETE,
            &format!("/models/{mid}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(st, 204, "{v}");
    let gone = |method: reqwest::Method, path: String, body: Option<Value>| {
        let (s, token) = (&s, &token);
        async move {
            let (st, v) = s.json(method.clone(), &path, Some(token), body).await;
            assert_error(st, &v, 404, "not_found");
        }
    };
    let list = format!("/models/{mid}/evaluations");
    gone(GET, one.clone(), None).await;
    gone(reqwest::Method::DELETE, one.clone(), None).await;
    gone(GET, list.clone(), None).await;
    gone(POST, list, Some(json!({"policies": [{"kind": "greedy"}]}))).await;
    // The one worker leaves the buried job and runs the next one.
    let next = create(
        &s,
        &token,
        &other,
        json!({"policies": [{"kind": "logged"}]}),
    )
    .await;
    let done = wait(&s, &token, &other, next["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    gone(GET, one, None).await;
    // Two jobs today so far, of the 4 a day: the deleted model's counts.
    for _ in 0..2 {
        create(
            &s,
            &token,
            &other,
            json!({"policies": [{"kind": "logged"}]}),
        )
        .await;
    }
    let r = s
        .call(
            POST,
            &format!("/models/{other}/evaluations"),
            Some(&token),
            Some(json!({"policies": [{"kind": "logged"}]})),
        )
        .await;
    assert_error_response(r, 429, "evaluations_per_day_reached").await;
}
