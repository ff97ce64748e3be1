//! Clients that try to hold the server's connections: trickled request
//! bodies and heads, a trickled HTTP/2 preface, silent connections, an
//! HTTP/2 connection kept busy with pings but no request, and one address
//! opening too many connections. Each is cut at its deadline while a normal
//! client keeps getting answers. The real server, with deadlines of a few
//! seconds; only 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{start_with, Backend};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

const HEADER: Duration = Duration::from_millis(2500);
const REQUEST: Duration = Duration::from_secs(3);
const IDLE: Duration = Duration::from_secs(4);
/// One trickled byte (or frame) every TICK.
const TICK: Duration = Duration::from_millis(200);
/// How late after its deadline a cut may come on a busy machine.
const SLACK: Duration = Duration::from_secs(1);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Preface, empty SETTINGS and `GET /healthz` on stream 1 (HPACK: indexed
/// `:method GET`, `:scheme http`, literal `:path` and `:authority`).
fn h2_get_healthz() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x41, 1, b'x']);
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out.extend(h2_frame(0x1, 0x5, 1, &block)); // END_STREAM | END_HEADERS
    out
}

/// Whether `bytes` (server to client) hold a HEADERS frame on stream 1.
fn h2_answered(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        if rest[3] == 0x1 && stream == 1 {
            return true;
        }
        rest = &rest[(9 + len).min(rest.len())..];
    }
    false
}

/// What a trickling client is, and how the server must treat it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Complete head of `POST /login` (Content-Length 60000), then one body
    /// byte per tick: 408 `request_timeout` at REQUEST, then closed.
    SlowBody,
    /// The same head trickled over 1.6 s (within HEADER), then the body:
    /// 408 at REQUEST from the first byte, not from the end of the head.
    SlowHeadThenBody,
    /// A request line, then one header byte per tick: closed at HEADER.
    SlowHead,
    /// The HTTP/2 preface, one byte per tick: closed at HEADER.
    SlowPreface,
    /// Connects and sends nothing: closed at HEADER.
    Silent,
    /// HTTP/2, one request, then a PING per tick: answered, then closed at
    /// IDLE (bytes keep moving, but no request is in flight).
    H2PingsAfterRequest,
}

const KINDS: [Kind; 6] = [
    Kind::SlowBody,
    Kind::SlowHeadThenBody,
    Kind::SlowHead,
    Kind::SlowPreface,
    Kind::Silent,
    Kind::H2PingsAfterRequest,
];

const LOGIN_HEAD: &[u8] = b"POST /login HTTP/1.1\r\nHost: x\r\n\
    Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n";

impl Kind {
    /// What to write: (wait before, bytes).
    fn steps(self) -> Vec<(Duration, Vec<u8>)> {
        let drip =
            |unit: &[u8], n: usize| (0..n).map(|_| (TICK, unit.to_vec())).collect::<Vec<_>>();
        let mut steps = Vec::new();
        match self {
            Kind::SlowBody => {
                steps.push((Duration::ZERO, LOGIN_HEAD.to_vec()));
                steps.extend(drip(b" ", 60));
            }
            Kind::SlowHeadThenBody => {
                let pieces: Vec<&[u8]> = LOGIN_HEAD.chunks(LOGIN_HEAD.len().div_ceil(9)).collect();
                steps.push((Duration::ZERO, pieces[0].to_vec()));
                steps.extend(pieces[1..].iter().map(|p| (TICK, p.to_vec())));
                steps.extend(drip(b" ", 60));
            }
            Kind::SlowHead => {
                steps.push((
                    Duration::ZERO,
                    b"GET /healthz HTTP/1.1\r\nX-Slow: ".to_vec(),
                ));
                steps.extend(drip(b"a", 60));
            }
            Kind::SlowPreface => {
                steps.push((Duration::ZERO, H2_PREFACE[..1].to_vec()));
                steps.extend(H2_PREFACE[1..].iter().map(|b| (TICK, vec![*b])));
            }
            Kind::Silent => {}
            Kind::H2PingsAfterRequest => {
                steps.push((Duration::ZERO, h2_get_healthz()));
                steps.extend(drip(&h2_frame(0x6, 0, 0, b"pingpong"), 60));
            }
        }
        steps
    }

    /// When the server must cut it, from its connect.
    fn deadline(self) -> Duration {
        match self {
            Kind::SlowBody | Kind::SlowHeadThenBody => REQUEST,
            Kind::SlowHead | Kind::SlowPreface | Kind::Silent => HEADER,
            Kind::H2PingsAfterRequest => IDLE,
        }
    }

    /// Why what the server sent before closing is wrong, if it is.
    fn check_answer(self, got: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(got);
        let ok = match self {
            Kind::SlowBody | Kind::SlowHeadThenBody => {
                text.starts_with("HTTP/1.1 408")
                    && text.contains("\"code\":\"request_timeout\"")
                    && text.to_ascii_lowercase().contains("connection: close")
            }
            Kind::SlowHead | Kind::SlowPreface | Kind::Silent => got.is_empty(),
            Kind::H2PingsAfterRequest => h2_answered(got),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("unexpected answer: {text:?}"))
        }
    }
}

/// Runs one trickling client; returns when the server closed it (from the
/// connect; `None` if it was still open after 15 s) and what it sent.
async fn trickle(addr: SocketAddr, kind: Kind) -> (Option<Duration>, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        for (wait, bytes) in kind.steps() {
            sleep(wait).await;
            if w.write_all(&bytes).await.is_err() {
                return;
            }
        }
        // Keep the write side open: dropping it would end the request.
        std::future::pending::<()>().await;
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = timeout(Duration::from_secs(15), async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    (closed.ok().map(|_| t0.elapsed()), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tricklers_are_cut_at_their_deadlines_while_others_are_served() {
    let s = start_with(Backend::Sqlite, "abuse", |c| {
        c.header_read_timeout = HEADER;
        c.request_timeout = REQUEST;
        c.idle_timeout = IDLE;
        // 100 tricklers and the normal client, all from 127.0.0.1.
        c.max_connections_per_address = 1000;
    })
    .await
    .unwrap();
    let (token, _, mid) = s.register("normal@example.com").await;

    let tricklers: Vec<_> = (0..100)
        .map(|i| {
            let kind = KINDS[i % KINDS.len()];
            let addr = s.addr;
            tokio::spawn(async move { (kind, trickle(addr, kind).await) })
        })
        .collect();

    // A normal client, meanwhile: every answer within 1 s.
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    let until = Instant::now() + IDLE + SLACK;
    let mut i = 0;
    while Instant::now() < until {
        let t = Instant::now();
        let (status, body) = if i % 2 == 0 {
            s.json(Method::GET, "/healthz", None, None).await
        } else {
            let body = json!({"model_id": mid, "state": i});
            s.json(Method::POST, "/predict", Some(&token), Some(body))
                .await
        };
        assert_eq!(status, 200, "normal call {i}: {body}");
        slowest = slowest.max(t.elapsed());
        answered += 1;
        i += 1;
        sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a normal call took {slowest:?}"
    );
    assert!(answered >= 20, "only {answered} normal calls");

    let mut wrong = Vec::new();
    for t in tricklers {
        let (kind, (cut, got)) = t.await.unwrap();
        let due = kind.deadline();
        match cut {
            None => wrong.push(format!("{kind:?}: never cut")),
            Some(c) if c + Duration::from_millis(50) < due || c > due + SLACK => {
                wrong.push(format!("{kind:?}: cut after {c:?}, due at {due:?}"))
            }
            Some(_) => {}
        }
        if let Err(e) = kind.check_answer(&got) {
            wrong.push(format!("{kind:?}: {e}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 100 wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A `GET /healthz` on `c`; what came back (empty if closed or reset).
async fn healthz(c: &mut TcpStream) -> String {
    if c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return String::new();
    }
    let mut buf = [0u8; 1024];
    match timeout(Duration::from_secs(5), c.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_cannot_take_more_than_its_share_of_connections() {
    const CAP: usize = 4;
    let s = start_with(Backend::Sqlite, "abuse_cap", |c| {
        c.max_connections_per_address = CAP;
        c.header_read_timeout = Duration::from_secs(1);
    })
    .await
    .unwrap();
    // The harness's kept-alive connection is closed by the header timeout.
    sleep(Duration::from_millis(1500)).await;
    // CAP connections, each with a request in flight (a body still to come).
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(LOGIN_HEAD).await.unwrap();
        held.push(c);
    }
    let mut extra = TcpStream::connect(s.addr).await.unwrap();
    let t = Instant::now();
    let answer = healthz(&mut extra).await;
    assert_eq!(
        answer,
        "",
        "connection {} from one address was served",
        CAP + 1
    );
    assert!(t.elapsed() < Duration::from_secs(1), "refused at once");

    // One closes; a new connection gets its slot.
    drop(held.pop());
    let mut served = String::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        served = healthz(&mut c).await;
        if !served.is_empty() {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served.starts_with("HTTP/1.1 200"),
        "after a close: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_stream_is_a_request_in_flight_not_idle() {
    let idle = Duration::from_secs(1);
    let s = start_with(Backend::Sqlite, "abuse_sse", |c| {
        c.idle_timeout = idle;
        c.header_read_timeout = idle;
        // No keep-alive comments: nothing moves on the stream.
        c.sse_keep_alive = Duration::from_secs(600);
    })
    .await
    .unwrap();
    let (token, _, mid) = s.register("listener@example.com").await;
    let r = s
        .call(
            Method::GET,
            &format!("/models/{mid}/events"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut events = r.bytes_stream();
    let first = events.next().await.unwrap().unwrap();
    assert!(first.starts_with(b": connected"), "{first:?}");
    match timeout(idle * 3, events.next()).await {
        Err(_) => {} // still open, nothing sent: as it should be
        Ok(next) => panic!("the stream ended or sent data: {next:?}"),
    }
    // And it still delivers.
    let (status, v): (_, Value) = s
        .json(
            Method::POST,
            "/update",
            Some(&token),
            Some(json!({"model_id": mid, "state": 1, "action": 0, "reward": 1, "next_state": 2})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let ev = timeout(Duration::from_secs(5), events.next()).await;
    assert!(
        matches!(&ev, Ok(Some(Ok(b))) if b.starts_with(b"event: update")),
        "{ev:?}"
    );
}
