//! `rivulet-chaos`: rivulet's fault-injection suite.
//!
//! ```text
//! rivulet-chaos list [--profile smoke|soak]
//! rivulet-chaos run <scenario|all> [--seed N] [--profile smoke|soak] [--json] [--keep] [-v]
//! ```
//!
//! Each scenario starts its own `redis-server` (AOF on) or Redis Cluster, spawns probe
//! processes from this same executable (`publisher` and `consumer`, hidden
//! subcommands) that use only rivulet's public API, injects faults on the pids it
//! started (SIGKILL, SIGTERM, SIGSTOP/SIGCONT, Redis kills and restarts, a fault proxy,
//! cluster failovers), heals, drains, and checks the histories with Jepsen's queue
//! model. Every fault schedule derives from the printed seed, so a failure replays.
//!
//! | module | concept |
//! |---|---|
//! | [`probe`] | the publisher and consumer processes and their logs |
//! | [`harness`] | Redis set-up, processes, fault injection, drain |
//! | [`scenarios`] | the named scenarios and their fault schedules |
//! | [`checker`] | lost / unexpected / duplicates / dead-letter checks |
//! | [`report`] | result lines, JSON and the markdown table |

mod checker;
mod harness;
mod probe;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::harness::RunOpts;
use crate::probe::consumer::ConsumerConfig;
use crate::probe::publisher::PublisherConfig;
use crate::scenarios::{Profile, Scenario};

#[derive(Debug, Parser)]
#[command(
    name = "rivulet-chaos",
    version,
    about = "Fault-injection suite for rivulet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario, or `all` of the profile's, printing one result line each.
    Run {
        /// A scenario name (see `list`) or `all`.
        scenario: String,
        /// The seed every fault schedule derives from (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// How big the run is.
        #[arg(long, value_enum, default_value = "smoke")]
        profile: Profile,
        /// Print each result as a JSON object (one per line) instead of a text line.
        #[arg(long)]
        json: bool,
        /// Also print the results as a markdown table (for docs/guarantees.md).
        #[arg(long)]
        markdown: bool,
        /// Keep run directories (logs, plan, faults) even for passing runs.
        #[arg(long)]
        keep: bool,
        /// Where run directories go (default: the system temp directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Progress on stderr.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Lists the scenarios.
    List {
        /// Only the scenarios of this profile.
        #[arg(long, value_enum)]
        profile: Option<Profile>,
    },
    /// (probe) Publishes as configured; spawned by `run`.
    #[command(hide = true)]
    Publisher {
        #[arg(long)]
        config: PathBuf,
    },
    /// (probe) Consumes as configured; spawned by `run`.
    #[command(hide = true)]
    Consumer {
        #[arg(long)]
        config: PathBuf,
    },
}

fn read_config<T: for<'de> serde::Deserialize<'de>>(path: &PathBuf) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn runtime(current_thread: bool) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn in_profile(s: &Scenario, profile: Profile) -> bool {
    profile == Profile::Soak || !s.soak_only
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Publisher { config } => read_config::<PublisherConfig>(&config).and_then(|cfg| {
            probe::init_tracing();
            runtime(false)?.block_on(probe::publisher::run(cfg))
        }),
        Command::Consumer { config } => read_config::<ConsumerConfig>(&config).and_then(|cfg| {
            probe::init_tracing();
            runtime(cfg.current_thread)?.block_on(probe::consumer::run(cfg))
        }),
        Command::List { profile } => {
            for s in scenarios::catalog() {
                if profile.is_none_or(|p| in_profile(s, p)) {
                    let tag = if s.soak_only { " [soak]" } else { "" };
                    println!("{:<28} {}{tag}", s.name, s.about);
                }
            }
            Ok(())
        }
        Command::Run {
            scenario,
            seed,
            profile,
            json,
            markdown,
            keep,
            out,
            verbose,
        } => {
            let seed = seed.unwrap_or_else(|| probe::now_ms() % 1_000_000_007);
            let opts = RunOpts { keep, verbose, out };
            return run(&scenario, seed, profile, json, markdown, &opts);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rivulet-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(
    name: &str,
    seed: u64,
    profile: Profile,
    json: bool,
    markdown: bool,
    opts: &RunOpts,
) -> ExitCode {
    let selected: Vec<&Scenario> = if name == "all" {
        scenarios::catalog()
            .iter()
            .filter(|s| in_profile(s, profile))
            .collect()
    } else {
        match scenarios::find(name) {
            Some(s) => vec![s],
            None => {
                eprintln!("rivulet-chaos: no scenario {name:?}; see `rivulet-chaos list`");
                return ExitCode::from(2);
            }
        }
    };
    // The seed goes to stderr too, so it is on record even when stdout is parsed.
    eprintln!("rivulet-chaos: seed={seed} profile={}", profile.name());
    if !json {
        println!("# rivulet-chaos seed={seed} profile={}", profile.name());
    }
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rivulet-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let mut reports = Vec::new();
    for s in selected {
        let report = rt.block_on(harness::run(s, profile, seed, opts));
        if json {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
        } else {
            println!("{}", report.line());
            for p in &report.problems {
                println!("#   {p}");
            }
            for (what, ids) in &report.examples {
                println!("#   {what}: {}", ids.join(" "));
            }
            if let Some(dir) = &report.run_dir {
                println!("#   run directory: {dir}");
            }
        }
        reports.push(report);
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.scenario.as_str())
        .collect();
    let summary = format!(
        "rivulet-chaos: {} scenario(s), {} failed{} in {:.1} s (seed={seed} profile={}; replay with `rivulet-chaos run <scenario> --seed {seed} --profile {}`)",
        reports.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        },
        started.elapsed().as_secs_f64(),
        profile.name(),
        profile.name()
    );
    eprintln!("{summary}");
    if !json {
        println!("# {summary}");
    }
    if markdown {
        println!("{}", report::MARKDOWN_HEADER);
        for r in &reports {
            println!("{}", r.markdown_row());
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
