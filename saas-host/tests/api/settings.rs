//! Throttles set from configuration take effect: the serve flags are parsed
//! as the binary parses them, and the server started with the resulting
//! settings enforces them.

use clap::Parser;
use serde_json::json;

use crate::common::{assert_error, assert_error_response, start_with, Backend};
use crate::POST;

backend_tests!(throttles_from_the_command_line_take_effect);

async fn throttles_from_the_command_line_take_effect(b: Backend) {
    let cli = saas_host::cli::Cli::try_parse_from([
        "saas-host",
        "--login-attempts-per-account=2",
        "--login-window-secs=600",
        "--registrations-per-address=2",
    ])
    .unwrap();
    let parsed = cli.serve.config().unwrap();
    let Some(s) = start_with(b, "throttlecfg", |c| {
        c.login_per_account = parsed.login_per_account;
        c.login_per_address = parsed.login_per_address;
        c.register_per_address = parsed.register_per_address;
    })
    .await
    else {
        return;
    };
    s.register("t1@example.com").await;
    s.register("t2@example.com").await;
    let r = s
        .call(
            POST,
            "/register",
            None,
            Some(json!({"email": "t3@example.com", "password": "long enough pw"})),
        )
        .await;
    assert_error_response(r, 429, "too_many_attempts").await;

    let bad = json!({"email": "t1@example.com", "password": "not the password"});
    for _ in 0..2 {
        let (st, v) = s.json(POST, "/login", None, Some(bad.clone())).await;
        assert_error(st, &v, 401, "invalid_credentials");
    }
    let r = s.call(POST, "/login", None, Some(bad)).await;
    assert_error_response(r, 429, "too_many_attempts").await;
}
