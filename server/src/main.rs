//! `tablesafe`: the console server and the command-line tool, one binary.

mod anchor;
mod assets;
mod capturer;
mod cli;
#[cfg(test)]
mod cli_doc;
mod config;
mod engine_cmd;
mod hardening;
mod metrics;
mod notifier;
mod rest;
mod runner;
mod scheduler;
mod serve;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TABLESAFE_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn,opendal=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // The command line over the environment over the configuration file.
    let (cli, layers) = match config::parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli, layers)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
