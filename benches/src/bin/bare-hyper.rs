//! The ceiling of issue 16: a bare hyper 1.x HTTP/1.1 server on the same
//! tokio runtime shape as `saas-host` (multi-threaded, one worker per core)
//! that reads each request's whole body and answers a constant
//! predict-shaped JSON. No routing, authentication, JSON parsing, metering or
//! storage: what is left of a request's cost once all of ours is gone.
//!
//! `bare-hyper [PORT]` binds 127.0.0.1 (port 0 = a free one) and prints
//! `listening on 127.0.0.1:PORT`; `scripts/http-ceiling.sh` runs the product's
//! wrk scripts against it and against `saas-host` in one run. With
//! `PIN_WORKERS=1` (or `true`) its workers are pinned as `saas-host
//! --pin-workers` pins its own (`saas_host::pinning`), and with
//! `WORKER_THREADS=N` it runs N workers (as `saas-host` reads the same
//! variable), so the two are compared on the same terms.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What `POST /predict` answers on a model with four actions, byte for byte
/// the shape of the product's answer.
const BODY: &[u8] =
    br#"{"action":2,"action_name":null,"q_values":[0.0,0.0,0.0,0.0],"explored":false,"epsilon":0.1}"#;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the whole body, as the product must before it can parse it.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("port: {e}"))
        })?,
        None => 0,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let workers = std::env::var("WORKER_THREADS")
        .ok()
        .and_then(|w| w.parse::<usize>().ok())
        .filter(|&w| w > 0);
    if let Some(w) = workers {
        builder.worker_threads(w);
    }
    if matches!(std::env::var("PIN_WORKERS").as_deref(), Ok("1" | "true")) {
        saas_host::pinning::install(&mut builder, workers);
    }
    let runtime = builder.build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
