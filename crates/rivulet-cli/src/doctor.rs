//! `rivulet doctor`: finds the states that break a guarantee, explains them, and with
//! `--fix` repairs what is safe (O-DOCTOR-1). The checks live in `rivulet::doctor`.
//!
//! Exit codes: 0 when no error-level finding remains (warnings and infos may), 7 when
//! one does; otherwise those of every command (`error.rs`): 1 when the doctor could not
//! run (a Redis error), 2 for bad arguments, 6 when Redis cannot be reached.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use rivulet::ErrorKind;
use rivulet::doctor::{Doctor, DoctorOptions, Finding, Report, SettingsChecked};

use crate::error::CliError;
use crate::ops::{self, Globals};

/// Exit code while an error-level finding remains (3, which the other commands
/// use for "needs --yes", is not reused).
pub(crate) const EXIT_FINDINGS: u8 = 7;

/// The environment variable `--redis` falls back to.
const REDIS_URL_ENV: &str = "RIVULET_REDIS_URL";

#[derive(Debug, clap::Args)]
pub(crate) struct DoctorArgs {
    /// Repair what is safe to repair, then examine again and report what remains.
    #[arg(long)]
    fix: bool,
    /// A consumer holding entries is gone after this many seconds without reading,
    /// reclaiming or keeping them alive. Keep it well above the bus's `min_idle` (default
    /// 600, ten times the default `min_idle`).
    #[arg(long, value_name = "SECONDS")]
    gone_after: Option<u64>,
}

/// Runs the doctor on the Redis of the global flags (`--redis`, `--cluster`,
/// `--prefix`; `--json` for one JSON document).
pub(crate) async fn run(g: &Globals, args: DoctorArgs) -> Result<ExitCode, CliError> {
    if g.redis.is_none() {
        return Err(CliError::usage(format!(
            "rivulet doctor needs a Redis: pass --redis URL or set {REDIS_URL_ENV}"
        )));
    }
    let backend = ops::backend(g).await?;
    let mut options = DoctorOptions::default();
    if let Some(secs) = args.gone_after {
        options = options.gone_after(Duration::from_secs(secs));
    }
    let doctor = Doctor::new(backend).options(options);
    let report = if args.fix {
        doctor.repair().await
    } else {
        doctor.examine().await
    }
    .map_err(usage_or_runtime)?;
    if g.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::runtime(format!("cannot write the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", human(&report, args.fix));
    }
    Ok(if report.has_errors() {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    })
}

/// A bad URL, prefix or limit is the caller's to fix (exit 2), not a failed run.
fn usage_or_runtime(e: rivulet::Error) -> CliError {
    match e.kind() {
        ErrorKind::Config => CliError::usage(e.to_string()),
        _ => CliError::from(e),
    }
}

/// `n` with the noun that goes with it.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn objects(f: &Finding) -> String {
    f.objects
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text report.
fn human(r: &Report, fixed: bool) -> String {
    let mut out = String::new();
    let settings = match r.settings {
        SettingsChecked::Checked => "server settings checked",
        SettingsChecked::Partly => "server settings partly checked",
        SettingsChecked::NotApplicable => "server settings not applicable",
        _ => "server settings",
    };
    let _ = writeln!(
        out,
        "rivulet doctor: {} backend, {} topics, {} queues, {settings}",
        r.backend, r.topics, r.queues
    );
    if fixed {
        if r.repairs.is_empty() {
            let _ = writeln!(out, "\nnothing to repair");
        } else {
            let _ = writeln!(out, "\nrepaired:");
            for rep in &r.repairs {
                let what = rep
                    .objects
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                match &rep.error {
                    None => {
                        let _ = writeln!(out, "  {} ({what}): {}", rep.check, rep.done);
                    }
                    Some(e) => {
                        let _ = writeln!(out, "  {} ({what}): FAILED: {e}", rep.check);
                    }
                }
            }
        }
    }
    if r.findings.is_empty() {
        let _ = writeln!(out, "\nno findings");
    } else {
        let _ = writeln!(out, "\n{}:", if fixed { "remaining" } else { "findings" });
        for f in &r.findings {
            let _ = writeln!(
                out,
                "\n{:<7} {}  [{}]\n  {}\n  why: {}\n  fix: {}{}",
                f.severity.to_string().to_uppercase(),
                f.check,
                objects(f),
                f.summary,
                f.explanation,
                f.fix,
                if f.fixable && !fixed {
                    "\n  (rivulet doctor --fix does this)"
                } else {
                    ""
                }
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{}, {}, {}",
        count(r.errors, "error", "errors"),
        count(r.warnings, "warning", "warnings"),
        count(r.infos, "info", "infos")
    );
    out
}
