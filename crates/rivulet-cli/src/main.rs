//! The `rivulet` command: a demo of the bus and of jobs, the benchmark, and the doctor
//! (O-DOCTOR-1) today; inspect, dead letters and serve later (O-CLI-1).

mod bench;
mod demo;
mod doctor;
mod error;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::error::CliError;

/// Reliable messaging and background jobs on Redis.
#[derive(Debug, Parser)]
#[command(name = "rivulet", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an order pipeline end to end (retries, dead letters, duplicates, broadcast,
    /// live channel), then an invoice job per order (priorities, delays, dedup, retries,
    /// poison jobs, cancellations), and print what happened.
    Demo(demo::DemoArgs),
    /// Measure rivulet against the raw Redis ceiling in the same run and report the
    /// ratios.
    Bench(bench::BenchArgs),
    /// Find the states that break a guarantee (stuck entries and jobs, orphans, overdue
    /// retries, unsafe Redis settings), explain them, and with --fix repair what is safe.
    /// Exit code 3 while an error-level finding remains.
    Doctor(doctor::DoctorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(&CliError::runtime(format!("cannot start the runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Doctor(args) => doctor::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

fn report(e: &CliError) -> ExitCode {
    eprintln!("error: {e}");
    e.exit_code()
}

/// Logs go to stderr, filtered by `RUST_LOG`. Without it, each command picks a default:
/// the demo dead-letters on purpose, so it shows errors only.
fn init_tracing(command: &Command) {
    let default = match command {
        Command::Demo(_) | Command::Bench(_) | Command::Doctor(_) => "error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
