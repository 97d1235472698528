//! `rivulet-chaos`: rivulet's fault-injection suite.
//!
//! ```text
//! rivulet-chaos list [--profile smoke|soak]
//! rivulet-chaos run <scenario|all|bus|jobs> [--seed N] [--profile smoke|soak] [--json] [--keep] [-v]
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
//! | [`jobs`] | the job scenarios: adder and worker probes, their harness and checker |
//!
//! The job scenarios (`jobs_*`) run after the bus scenarios; their JSON objects carry
//! `"kind": "jobs"`, and `--markdown` prints them as a second table.

mod checker;
mod harness;
mod jobs;
mod probe;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::harness::RunOpts;
use crate::jobs::JobScenario;
use crate::jobs::probe::{AdderConfig, WorkerConfig};
use crate::jobs::report::JobReport;
use crate::probe::consumer::ConsumerConfig;
use crate::probe::publisher::PublisherConfig;
use crate::report::Report;
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
        /// A scenario name (see `list`), `all`, or `bus` / `jobs` (all of one kind).
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
    /// (probe) Adds jobs as configured; spawned by `run`.
    #[command(hide = true)]
    JobAdder {
        #[arg(long)]
        config: PathBuf,
    },
    /// (probe) Runs a job worker as configured; spawned by `run`.
    #[command(hide = true)]
    JobWorker {
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

fn in_profile(soak_only: bool, profile: Profile) -> bool {
    profile == Profile::Soak || !soak_only
}

/// A scenario of either kind.
#[derive(Clone, Copy)]
enum Picked {
    Bus(&'static Scenario),
    Jobs(&'static JobScenario),
}

/// Every scenario, bus first, then jobs.
fn everything() -> Vec<(&'static str, &'static str, bool, Picked)> {
    let bus = scenarios::catalog()
        .iter()
        .map(|s| (s.name, s.about, s.soak_only, Picked::Bus(s)));
    let jobs = jobs::catalog()
        .iter()
        .map(|s| (s.name, s.about, s.soak_only, Picked::Jobs(s)));
    bus.chain(jobs).collect()
}

/// The result of a scenario of either kind.
enum AnyReport {
    Bus(Report),
    Jobs(JobReport),
}

impl AnyReport {
    fn pass(&self) -> bool {
        match self {
            AnyReport::Bus(r) => r.pass,
            AnyReport::Jobs(r) => r.pass,
        }
    }

    fn scenario(&self) -> &str {
        match self {
            AnyReport::Bus(r) => &r.scenario,
            AnyReport::Jobs(r) => &r.scenario,
        }
    }

    fn json(&self) -> String {
        match self {
            AnyReport::Bus(r) => serde_json::to_string(r),
            AnyReport::Jobs(r) => serde_json::to_string(r),
        }
        .unwrap_or_default()
    }

    /// The result line and, under it, the problems, examples and the run directory.
    fn text(&self) -> Vec<String> {
        let (line, problems, examples, dir) = match self {
            AnyReport::Bus(r) => (r.line(), &r.problems, &r.examples, &r.run_dir),
            AnyReport::Jobs(r) => (r.line(), &r.problems, &r.outcome.examples, &r.run_dir),
        };
        let mut out = vec![line];
        out.extend(problems.iter().map(|p| format!("#   {p}")));
        out.extend(
            examples
                .iter()
                .map(|(what, ids)| format!("#   {what}: {}", ids.join(" "))),
        );
        if let Some(dir) = dir {
            out.push(format!("#   run directory: {dir}"));
        }
        out
    }
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
        Command::JobAdder { config } => read_config::<AdderConfig>(&config).and_then(|cfg| {
            probe::init_tracing();
            runtime(false)?.block_on(jobs::probe::run_adder(cfg))
        }),
        Command::JobWorker { config } => read_config::<WorkerConfig>(&config).and_then(|cfg| {
            probe::init_tracing();
            runtime(false)?.block_on(jobs::probe::run_worker(cfg))
        }),
        Command::List { profile } => {
            for (name, about, soak_only, _) in everything() {
                if profile.is_none_or(|p| in_profile(soak_only, p)) {
                    let tag = if soak_only { " [soak]" } else { "" };
                    println!("{name:<28} {about}{tag}");
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
    let all = everything();
    let of_kind = |s: &Picked| match name {
        "bus" => matches!(s, Picked::Bus(_)),
        "jobs" => matches!(s, Picked::Jobs(_)),
        _ => true,
    };
    let selected: Vec<Picked> = if matches!(name, "all" | "bus" | "jobs") {
        all.iter()
            .filter(|s| in_profile(s.2, profile) && of_kind(&s.3))
            .map(|s| s.3)
            .collect()
    } else {
        match all.iter().find(|s| s.0 == name) {
            Some(s) => vec![s.3],
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
        let report = match s {
            Picked::Bus(s) => AnyReport::Bus(rt.block_on(harness::run(s, profile, seed, opts))),
            Picked::Jobs(s) => {
                AnyReport::Jobs(rt.block_on(jobs::harness::run(s, profile, seed, opts)))
            }
        };
        if json {
            println!("{}", report.json());
        } else {
            for line in report.text() {
                println!("{line}");
            }
        }
        reports.push(report);
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.pass())
        .map(AnyReport::scenario)
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
        let bus: Vec<&Report> = reports
            .iter()
            .filter_map(|r| match r {
                AnyReport::Bus(r) => Some(r),
                AnyReport::Jobs(_) => None,
            })
            .collect();
        let job: Vec<&JobReport> = reports
            .iter()
            .filter_map(|r| match r {
                AnyReport::Jobs(r) => Some(r),
                AnyReport::Bus(_) => None,
            })
            .collect();
        if !bus.is_empty() {
            println!("{}", report::MARKDOWN_HEADER);
            for r in bus {
                println!("{}", r.markdown_row());
            }
        }
        if !job.is_empty() {
            println!();
            println!("{}", jobs::report::MARKDOWN_HEADER);
            for r in job {
                println!("{}", r.markdown_row());
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
