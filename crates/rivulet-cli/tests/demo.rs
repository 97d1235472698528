//! `rivulet demo` end to end: runs the built binary and checks what it reports.

use std::process::{Command, Output};

use serde_json::Value;

fn rivulet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the rivulet binary runs")
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}

/// Runs `demo --orders 300 --json` (plus `extra`) and checks every number it reports.
fn check_json_run(extra: &[&str]) -> Value {
    let mut args = vec!["demo", "--orders", "300", "--json", "--seed", "7"];
    args.extend_from_slice(extra);
    let out = rivulet(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // stdout holds exactly one JSON object and nothing else.
    let v: Value = serde_json::from_str(&stdout).expect("stdout is one JSON object");

    assert_eq!(v["check"]["ok"], true, "{v}");
    assert_eq!(v["completed"], true);
    assert_eq!(u(&v, "/seed"), 7);
    assert_eq!(u(&v, "/orders"), 300);
    let published = u(&v, "/published");
    let duplicates_published = u(&v, "/injected/duplicate_orders");
    assert_eq!(published, 300 + duplicates_published);

    let groups = v["groups"].as_array().expect("groups");
    assert!(groups.len() >= 2, "at least two groups: {groups:?}");
    for g in groups {
        assert_eq!(g["ok"], true, "{g}");
        assert_eq!(u(g, "/handled") + u(g, "/dead_lettered"), published, "{g}");
    }

    // Poison ends in the dead-letter queue, once each.
    let poison = u(&v, "/injected/poison");
    assert_eq!(poison, 5);
    assert_eq!(u(&v, "/totals/dead_lettered"), poison);
    assert_eq!(u(&v, "/dead_letter_queue/len"), poison);
    assert_eq!(u(&v, "/dead_letter_queue/reasons/permanent"), poison);

    // Transient failures were retried, each once; duplicates were suppressed.
    let retries = u(&v, "/totals/retries");
    assert!(retries > 0);
    assert_eq!(retries, u(&v, "/injected/transient_messages"));
    let duplicates = u(&v, "/totals/duplicates_suppressed");
    assert!(duplicates > 0);
    assert_eq!(duplicates, duplicates_published);

    // The numbers are measured, not made up.
    assert!(v["messages_per_second"].as_f64().is_some_and(|x| x > 0.0));
    assert!(u(&v, "/latency_ms/samples") > 0);
    assert!(u(&v, "/live/published") > 0);
    v
}

/// Checks the jobs section of a run of [`check_json_run`]: every invoice job added
/// ended completed, failed (poison) or cancelled (held), by the queue's own counts.
fn check_jobs(v: &Value) {
    let j = &v["jobs"];
    assert_eq!(j["queue"], "invoices", "{j}");
    assert_eq!(j["check"]["ok"], true, "{j}");
    assert_eq!(j["completed"], true, "{j}");
    let added = u(j, "/added");
    assert_eq!(added, 300, "one invoice per order");
    let (completed, failed, cancelled) = (
        u(j, "/counts/completed"),
        u(j, "/counts/failed"),
        u(j, "/counts/cancelled"),
    );
    assert_eq!(completed + failed + cancelled, added, "{j}");
    for state in ["waiting", "delayed", "active"] {
        assert_eq!(u(j, &format!("/counts/{state}")), 0, "{state}: {j}");
    }
    assert_eq!(failed, u(j, "/injected/poison"));
    assert_eq!(failed, u(v, "/injected/poison"), "the same poison orders");
    assert_eq!(u(j, "/failed_listed_poison"), failed);
    assert_eq!(cancelled, u(j, "/injected/cancelled"));
    assert_eq!(cancelled, 2);
    // The orders the bus saw twice were added twice; the dedup key turned the second away.
    assert_eq!(u(j, "/duplicates"), u(v, "/injected/duplicate_orders"));
    assert!(u(j, "/duplicates") > 0);
    assert!(u(j, "/injected/delayed") > 0 && u(j, "/injected/high_priority") > 0);
    // The worker agrees with the queue; each transient invoice was retried once.
    assert_eq!(u(j, "/worker_stats/completed"), completed);
    assert_eq!(u(j, "/worker_stats/failed"), failed);
    assert_eq!(u(j, "/worker_stats/retried"), u(j, "/injected/transient"));
    assert_eq!(
        u(j, "/injected/transient"),
        u(v, "/injected/transient_orders")
    );
    assert!(j["jobs_per_second"].as_f64().is_some_and(|x| x > 0.0));
}

/// The orchestration part of a 300-order run: rate limit, tenant groups, flow, scheduler.
fn check_orchestration(v: &Value) {
    let o = &v["orchestration"];
    assert_eq!(o["check"]["ok"], true, "{o}");
    let r = &o["receipts"];
    assert_eq!((u(r, "/jobs"), u(r, "/completed")), (300, 300), "{r}");
    assert!(u(r, "/max_starts_in_a_second") <= u(r, "/rate_limit_per_second"));
    let tenants = r["tenants"].as_array().expect("tenants");
    // Half the receipts are the big tenant's, the others spread over six small ones.
    assert_eq!(tenants.len(), 7, "{r}");
    let big = tenants
        .iter()
        .find(|t| t["tenant"] == "tenant-big")
        .expect("the big tenant");
    assert_eq!(u(big, "/jobs"), 150);
    assert_eq!(r["fairness_checked"], true, "{r}");
    for t in tenants {
        assert!(u(t, "/max_running") <= u(r, "/tenant_cap"), "{t}");
        assert!(
            t["finished_ms"].as_f64() <= big["finished_ms"].as_f64(),
            "a small tenant finished after the big one: {r}"
        );
    }
    let f = &o["flow"];
    assert_eq!((u(f, "/parent_runs"), u(f, "/results_seen")), (1, 3), "{f}");
    assert_eq!(u(f, "/total_cents"), u(f, "/expected_cents"));
    let s = &o["scheduler"];
    assert!(u(s, "/jobs") >= 1, "{s}");
    assert_eq!(u(s, "/jobs"), u(s, "/distinct_ticks"));
    assert_eq!(u(s, "/misaligned"), 0);
}

#[test]
fn json_summary_accounts_for_every_message() {
    let v = check_json_run(&[]);
    assert_eq!(v["backend"], "memory");
    check_jobs(&v);
    check_orchestration(&v);
}

#[test]
fn json_summary_on_a_throw_away_redis() {
    let binary = std::env::var("RIVULET_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    if Command::new(&binary).arg("--version").output().is_err() {
        eprintln!("skipped: {binary} is not installed");
        return;
    }
    let v = check_json_run(&["--redis", "auto"]);
    assert!(
        v["backend"]
            .as_str()
            .is_some_and(|b| b.starts_with("redis")),
        "{v}"
    );
    check_jobs(&v);
    check_orchestration(&v);
}

#[test]
fn text_summary_ends_with_the_check() {
    let out = rivulet(&["demo", "--orders", "200", "--poison", "3", "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}");
    assert!(
        stdout.contains("check: handled + dead-lettered = published for every group: OK"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dead-letter queue     3 (permanent: 3)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("queue counts        completed 195, failed 3, cancelled 2;"),
        "{stdout}"
    );
    assert!(
        stdout.contains("check: jobs added = completed + failed + cancelled (queue counts): OK"),
        "{stdout}"
    );
    let last = stdout.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("receipts: at most") && last.contains("one job per tick"),
        "{stdout}"
    );
    // --quiet: no banner, no progress bar.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_arguments_exit_with_a_usage_error() {
    let out = rivulet(&["demo", "--orders", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = rivulet(&["demo", "--orders", "3", "--poison", "4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_tiny_run_still_balances() {
    // Fewer orders than the default poison count: every order is poison.
    let out = rivulet(&["demo", "--orders", "3", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["check"]["ok"], true, "{v}");
    assert_eq!(u(&v, "/dead_letter_queue/len"), 3);
    // Every invoice is poison: all three fail, none is held.
    assert_eq!(v["jobs"]["check"]["ok"], true, "{v}");
    assert_eq!(u(&v, "/jobs/counts/failed"), 3);
    assert_eq!(u(&v, "/jobs/counts/cancelled"), 0);
}
