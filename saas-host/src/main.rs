//! `saas-host`: parses the command line and runs the server or an admin command.

use clap::Parser;
use saas_host::cli::{self, Cli, Command};

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
    if let Some(s) = serve {
        if let Some(n) = s.worker_threads {
            rt.worker_threads(n.max(1));
        }
        rt.max_blocking_threads(s.blocking_threads().max(1));
    }
    match rt.build() {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => fail(&format!("cannot start the async runtime: {e}")),
    }
}

async fn run(args: Cli) -> std::process::ExitCode {
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
