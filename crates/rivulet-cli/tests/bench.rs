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
        "jobs_redis_cpu_per_job",
        "jobs_memory_per_job",
        "jobs_idle",
        "jobs_delay_lateness_p99",
    ] {
        assert!(names.contains(&expected), "missing scenario {expected}");
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
