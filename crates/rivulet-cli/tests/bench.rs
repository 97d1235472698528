//! `rivulet bench --quick` works end to end: it starts its own redis-server, runs every
//! scenario on both sides and reports a ratio for each. The numbers are not judged here
//! (performance targets live in the benchmark, not in timed tests).

use std::process::Command;

#[test]
fn bench_quick_reports_every_scenario_with_a_ratio() {
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["bench", "--quick", "--json"])
        .output()
        .expect("run rivulet bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(report["redis"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(report["cores"].as_u64().is_some_and(|c| c >= 1));
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for expected in [
        "e2e",
        "e2e_1k",
        "drain",
        "drain_1k",
        "publish_latency_p50",
        "publish_latency_p50_50subs",
        "handle_latency_p50",
        "handle_latency_p99",
        "retry",
        "redis_cpu_per_msg",
        "memory_per_msg",
        "jobs_add",
        "jobs_process",
        "jobs_e2e",
        "jobs_latency_p50",
        "jobs_latency_p99",
        "jobs_delayed",
        "jobs_backlog_1m",
        "jobs_groups",
        "jobs_redis_cpu",
        "jobs_memory",
        "jobs_retention",
        "jobs_idle",
    ] {
        assert!(names.contains(&expected), "missing scenario {expected}");
    }
    // Every jobs scenario but the idle one has a target and a verdict on it.
    for s in scenarios.iter().filter(|s| {
        s["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("jobs_") && n != "jobs_idle")
    }) {
        let name = s["name"].as_str().unwrap_or("?");
        assert!(s["target"].as_f64().is_some(), "{name}: no target");
        assert!(s["met"].as_bool().is_some(), "{name}: no verdict");
    }
    for s in scenarios {
        let name = s["name"].as_str().unwrap_or("?");
        let fields = ["rivulet", "raw", "ratio"];
        for field in fields {
            let v = s[field].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{name}: {field} = {v}");
        }
        assert!(s["unit"].as_str().is_some());
    }
}
