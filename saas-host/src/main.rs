//! `saas-host`: parses the command line and runs the server or an admin command.

use clap::Parser;
use saas_host::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Cli::parse();
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
        None => args.serve,
    };
    cli::init_logging(&serve.log_format);
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
