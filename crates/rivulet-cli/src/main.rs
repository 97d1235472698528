//! The `rivulet` command: operations over the admin API (O-CLI-1), the doctor
//! (O-DOCTOR-1), and, in builds with the `dev-tools` feature, the demo and the benchmark.
//!
//! `rivulet [--redis URL] [--cluster] [--prefix P] [--json] <command>`: every operations
//! command is a subcommand of one binary, the way `redis-cli`, `kubectl` and `asynq`
//! work, with the global flags before it. Output is a table for people, or one JSON
//! document with `--json`; errors are one line on stderr; exit codes are listed in
//! `error.rs` and `docs/operations.md`.

#[cfg(feature = "dev-tools")]
mod bench;
#[cfg(feature = "dev-tools")]
mod demo;
mod doctor;
mod error;
mod ops;
mod redact;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::error::CliError;

/// Reliable messaging and background jobs on Redis: inspect and operate topics, dead
/// letters and job queues.
#[derive(Debug, Parser)]
#[command(name = "rivulet", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    globals: ops::Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Ops(ops::OpsCommand),
    /// Find the states that break a guarantee (stuck entries and jobs, orphans, overdue
    /// retries, unsafe Redis settings), explain them, and with --fix repair what is safe.
    /// Exit code 7 while an error-level finding remains.
    Doctor(doctor::DoctorArgs),
    /// Serve the web dashboard (topics, dead letters, queues, jobs, schedulers, flows)
    /// and the Prometheus /metrics endpoint; on 127.0.0.1 with a token by default.
    Serve(serve::ServeArgs),
    /// Run an order pipeline end to end (retries, dead letters, duplicates, broadcast,
    /// live channel), then an invoice job per order (priorities, delays, dedup, retries,
    /// poison jobs, cancellations), and print what happened.
    #[cfg(feature = "dev-tools")]
    Demo(demo::DemoArgs),
    /// Measure rivulet against the raw Redis ceiling in the same run and report the
    /// ratios.
    #[cfg(feature = "dev-tools")]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(&CliError::runtime(format!("cannot start the runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ops(command) => ops::run(cli.globals, command)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Doctor(args) => doctor::run(&cli.globals, args).await,
            Command::Serve(args) => serve::run(&cli.globals, args).await,
            #[cfg(feature = "dev-tools")]
            Command::Demo(args) => demo::run(args).await,
            #[cfg(feature = "dev-tools")]
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

fn report(e: &CliError) -> ExitCode {
    if !e.is_silent() {
        eprintln!("error: {e}");
    }
    e.exit_code()
}

/// Logs go to stderr, filtered by `RUST_LOG`; errors only by default (the demo
/// dead-letters on purpose, and an operations command's output is its answer).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
