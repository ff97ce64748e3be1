//! `saas-host`: parses the command line and runs the server or an admin command.

use std::sync::Arc;

use clap::Parser;
use saas_host::cli::{self, Cli, Command};
use saas_host::{busy_poll, pinning};

/// jemalloc instead of the system allocator: the request path's small,
/// short-lived allocations (headers, JSON buffers, futures) cost less, also
/// when another thread frees them (the SQLite writer frees what workers
/// queued); see docs/benchmarks-http.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    let serve = match &args.command {
        Some(Command::Serve(s)) => Some(s),
        None => Some(&args.serve),
        Some(Command::Admin(_)) => None,
        Some(Command::Healthcheck(_)) => None,
    };
    let mut pinner = None;
    if let Some(s) = serve {
        if let Some(n) = s.worker_threads {
            rt.worker_threads(n.max(1));
        }
        rt.max_blocking_threads(s.blocking_threads().max(1));
        if s.pin_workers {
            let p = pinning::install(&mut rt, s.worker_threads);
            pinner = Some(p);
        }
    }
    match rt.build() {
        Ok(rt) => rt.block_on(run(args, pinner)),
        Err(e) => fail(&format!("cannot start the async runtime: {e}")),
    }
}

async fn run(args: Cli, pinner: Option<Arc<pinning::WorkerPinner>>) -> std::process::ExitCode {
    let serve = match args.command {
        Some(Command::Admin(a)) => {
            return match tokio::task::spawn_blocking(move || cli::admin(&a)).await {
                Ok(Ok(msg)) => {
                    println!("{msg}");
                    std::process::ExitCode::SUCCESS
                }
                Ok(Err(e)) => fail(&e.to_string()),
                Err(e) => fail(&e.to_string()),
            };
        }
        Some(Command::Serve(s)) => s,
        Some(Command::Healthcheck(h)) => {
            return match cli::healthcheck(h.port) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => fail(&e),
            };
        }
        None => args.serve,
    };
    let _log = cli::init_logging(&serve.log_format);
    if serve.busy_poll_us > 0 {
        let us = serve.busy_poll_us;
        busy_poll::spawn(std::time::Duration::from_micros(us));
        tracing::info!(
            tail_us = us,
            "busy polling while commits are in flight (--busy-poll-us)"
        );
    }
    if let Some(p) = pinner {
        if p.failed() > 0 {
            tracing::warn!(failed = p.failed(), "could not pin every worker thread");
        }
        tracing::info!(
            pinned = p.pinned(),
            "worker threads pinned, one CPU each (each pins itself when it first parks)"
        );
    }
    let config = match serve.config() {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind((serve.host, serve.port)).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot bind {}:{}: {e}", serve.host, serve.port)),
    };
    match saas_host::run(listener, config, cli::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> std::process::ExitCode {
    eprintln!("saas-host: {msg}");
    std::process::ExitCode::FAILURE
}
