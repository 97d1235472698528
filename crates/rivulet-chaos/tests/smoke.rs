//! The smoke profile of the fault-injection suite, run as part of the test suite.
//!
//! Runs the real binary (`rivulet-chaos run all --profile smoke --seed <fixed> --json`),
//! which starts its own `redis-server` processes and probe processes, and asserts that
//! every bus scenario kept the promise (lost = unexpected = stuck = dlq_mismatch = 0,
//! duplicates within their bound), that every job scenario did (lost = unexpected =
//! double_outcome = stale_write_accepted = runs_over_bound = early = stuck =
//! counts_mismatch = 0), and that each checker's self-test caught its broken probe.
//!
//! Replay a failure with the printed command; set `RIVULET_CHAOS_SEED` to try another
//! seed.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;

/// The fixed seed of the CI run (override with `RIVULET_CHAOS_SEED`).
const SEED: u64 = 20_250_611;

#[test]
fn smoke_profile_keeps_the_promise() {
    let seed = std::env::var("RIVULET_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    eprintln!("rivulet-chaos smoke: seed={seed}");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_rivulet-chaos"))
        .args(["run", "all", "--profile", "smoke", "--json", "--seed"])
        .arg(seed.to_string())
        .output()
        .expect("run rivulet-chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let reports: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON report per line"))
        .collect();
    let mut failures = Vec::new();
    let mut selftests = 0;
    let (mut job_reports, mut job_selftests) = (0, 0);
    for r in reports.iter().filter(|r| r["kind"] == "jobs") {
        job_reports += 1;
        let get = |k: &str| r[k].as_u64().unwrap_or(u64::MAX);
        let name = r["scenario"].as_str().unwrap_or("?");
        let keys = [
            "lost",
            "unexpected",
            "double_outcome",
            "stale_write_accepted",
            "runs_over_bound",
            "early",
            "dedup_violations",
            "parent_early",
            "wrong_outcome",
            "stuck",
            "counts_mismatch",
            "limit_exceeded",
            "cap_exceeded",
            "tick_dup",
            "tick_missed",
        ];
        eprintln!(
            "scenario={name} {} pass={}",
            keys.map(|k| format!("{k}={}", get(k))).join(" "),
            r["pass"]
        );
        if r["selftest"].as_bool() == Some(true) {
            job_selftests += 1;
            if get("double_outcome") + get("stale_write_accepted") == 0 {
                failures.push(format!(
                    "{name}: the self-test's unfenced worker was not caught"
                ));
            }
            continue;
        }
        for key in keys {
            if get(key) != 0 {
                failures.push(format!("{name}: {key}={}", get(key)));
            }
        }
        if r["pass"].as_bool() != Some(true) {
            failures.push(format!("{name}: {}", r["problems"]));
        }
    }
    for r in reports.iter().filter(|r| r["kind"] != "jobs") {
        let get = |k: &str| r[k].as_u64().unwrap_or(u64::MAX);
        let name = r["scenario"].as_str().unwrap_or("?");
        eprintln!(
            "scenario={name} lost={} unexpected={} dup={} bound={} stuck={} dlq_mismatch={} recovered={} lost_in_fsync_window={} pass={}",
            get("lost"),
            get("unexpected"),
            get("dup"),
            get("bound"),
            get("stuck"),
            get("dlq_mismatch"),
            get("recovered"),
            get("lost_in_fsync_window"),
            r["pass"]
        );
        if r["selftest"].as_bool() == Some(true) {
            selftests += 1;
            if get("lost") == 0 {
                failures.push(format!(
                    "{name}: the self-test's broken consumer was not caught (lost=0)"
                ));
            }
            continue;
        }
        for key in [
            "lost",
            "unexpected",
            "stuck",
            "dlq_mismatch",
            "failed_but_seen",
        ] {
            if get(key) != 0 {
                failures.push(format!("{name}: {key}={}", get(key)));
            }
        }
        if get("dup") > get("bound") {
            failures.push(format!(
                "{name}: dup={} over bound={}",
                get("dup"),
                get("bound")
            ));
        }
        if r["pass"].as_bool() != Some(true) {
            failures.push(format!("{name}: {}", r["problems"]));
        }
    }
    eprintln!(
        "rivulet-chaos smoke: {} scenarios in {:.1} s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        reports.len() - job_reports >= 23,
        "expected every bus smoke scenario, got {}:\n{stdout}",
        reports.len() - job_reports
    );
    assert!(
        job_reports >= 11,
        "expected every job smoke scenario, got {job_reports}:\n{stdout}"
    );
    assert_eq!(selftests, 1, "the bus checker's self-test did not run");
    assert_eq!(job_selftests, 1, "the jobs checker's self-test did not run");
    assert!(
        failures.is_empty(),
        "seed {seed}; replay with `cargo run -p rivulet-chaos -- run <scenario> --seed {seed} --profile smoke -v`:\n{}",
        failures.join("\n")
    );
    assert!(
        output.status.success(),
        "rivulet-chaos exited with {}",
        output.status
    );
}
