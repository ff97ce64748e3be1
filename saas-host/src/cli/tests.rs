//! Unit tests of the command line (`cli.rs`).

use super::*;

fn serve(args: &[&str]) -> std::result::Result<ServeArgs, clap::Error> {
    let mut argv = vec!["saas-host", "serve"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv)?.command {
        Some(Command::Serve(a)) => Ok(a),
        other => panic!("not serve: {other:?}"),
    }
}

/// The throttles and timeouts a configuration can hold, for comparing.
fn knobs(c: &Config) -> Vec<String> {
    vec![
        format!("{:?}", c.login_per_account),
        format!("{:?}", c.login_per_address),
        format!("{:?}", c.register_per_address),
        format!("{:?}", c.header_read_timeout),
        format!("{:?}", c.request_timeout),
        format!("{:?}", c.idle_timeout),
        format!("{:?}", c.shutdown_timeout),
        format!("{:?}", c.token_ttl),
        format!("{:?}", c.auth_cache_ttl),
        format!("{:?}", c.sse_keep_alive),
        format!("{:?}", c.event_recheck),
        format!("{:?}", c.event_ticket_ttl),
        format!("{:?}", c.max_event_streams_per_model),
        format!("{:?}", c.unknown_key_ttl),
        format!("{:?}", c.settle_every),
        format!("{:?}", c.evaluation_workers),
        format!("{:?}", c.max_connections),
        format!("{:?}", c.max_connections_per_address),
        format!("{:?}", c.import_limit),
    ]
}

#[test]
fn every_throttle_and_timeout_is_a_flag_defaulting_to_todays_value() {
    let parsed = serve(&[]).unwrap().config().unwrap();
    assert_eq!(knobs(&parsed), knobs(&Config::default()));
    let d = Config::default();
    assert_eq!(d.login_per_account, Throttle::per(5, 900));
    assert_eq!(d.login_per_address, Throttle::per(20, 900));
    assert_eq!(d.register_per_address, Throttle::per(10, 3600));
    let set = serve(&[
        "--login-attempts-per-account=2",
        "--login-attempts-per-address=7",
        "--login-window-secs=60",
        "--registrations-per-address=3",
        "--registration-window-secs=120",
        "--header-read-timeout-secs=4",
        "--request-timeout-secs=5",
        "--idle-timeout-secs=6",
        "--shutdown-timeout-secs=7",
        "--token-ttl-secs=8",
        "--auth-cache-ttl-secs=9",
        "--sse-keep-alive-secs=10",
        "--event-recheck-secs=11",
        "--event-ticket-ttl-secs=12",
        "--max-event-streams-per-model=13",
        "--unknown-key-ttl-secs=14",
        "--settle-interval-ms=250",
        "--max-connections=15",
        "--max-connections-per-address=16",
        "--import-limit-bytes=17000",
    ])
    .unwrap()
    .config()
    .unwrap();
    let s = Duration::from_secs;
    let want = Config {
        login_per_account: Throttle::per(2, 60),
        login_per_address: Throttle::per(7, 60),
        register_per_address: Throttle::per(3, 120),
        header_read_timeout: s(4),
        request_timeout: s(5),
        idle_timeout: s(6),
        shutdown_timeout: s(7),
        token_ttl: s(8),
        auth_cache_ttl: s(9),
        sse_keep_alive: s(10),
        event_recheck: s(11),
        event_ticket_ttl: s(12),
        max_event_streams_per_model: 13,
        unknown_key_ttl: s(14),
        settle_every: Duration::from_millis(250),
        max_connections: 15,
        max_connections_per_address: 16,
        import_limit: 17000,
        ..Config::default()
    };
    assert_eq!(knobs(&set), knobs(&want));
    for bad in [
        "--login-attempts-per-account=0",
        "--login-window-secs=0",
        "--registrations-per-address=0",
        "--settle-interval-ms=0",
    ] {
        assert!(serve(&[bad]).is_err(), "{bad}");
    }
}

#[test]
fn trusted_proxies_take_addresses_and_ranges() {
    let a = serve(&[
        "--trusted-proxies",
        "10.0.0.1,172.28.0.0/16,fd00::/8,0.0.0.0/0",
    ])
    .unwrap();
    let want: Vec<Cidr> = ["10.0.0.1/32", "172.28.0.0/16", "fd00::/8", "0.0.0.0/0"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(a.trusted_proxies, want);
    assert_eq!(a.config().unwrap().trusted_proxies, want);
    let e = serve(&["--trusted-proxies", "10.0.0.1/8"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
    let e = serve(&["--trusted-proxies", "10.0.0.0/40"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("prefix length"), "{e}");
}

#[test]
fn workers_are_pinned_and_poll_only_when_asked() {
    assert!(!serve(&[]).unwrap().pin_workers);
    assert!(serve(&["--pin-workers"]).unwrap().pin_workers);
    assert_eq!(serve(&[]).unwrap().busy_poll_us, 0);
    assert_eq!(serve(&["--busy-poll-us", "100"]).unwrap().busy_poll_us, 100);
    assert!(serve(&["--busy-poll-us", "-1"]).is_err());
}
