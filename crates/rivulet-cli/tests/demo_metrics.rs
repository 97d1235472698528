//! `rivulet demo --metrics-listen ADDR` (O-OBS-1): after the run the binary keeps
//! serving Prometheus metrics; a scrape over HTTP holds the documented metrics, and
//! their values agree with each other and with the demo's own summary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process stopped when the test ends, whatever happens: Ctrl-C first (so a
/// `--redis auto` server is stopped by the demo itself), then a kill.
struct Running(Child);

impl Running {
    /// Sends SIGINT and waits up to 10 s for the exit.
    fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) && self.interrupt().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `GET /metrics` over plain HTTP/1.1; the body.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// One sample: its name and labels, as `name{a="x",b="y"}` → value.
type Samples = BTreeMap<String, f64>;

fn parse(body: &str) -> Samples {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn labels_of(key: &str) -> BTreeMap<String, String> {
    let Some((_, rest)) = key.split_once('{') else {
        return BTreeMap::new();
    };
    rest.trim_end_matches('}')
        .split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include every pair of `want`.
fn sum(s: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .filter(|(k, _)| {
            let l = labels_of(k);
            want.iter()
                .all(|(wk, wv)| l.get(*wk).map(String::as_str) == Some(*wv))
        })
        .map(|(_, v)| v)
        .sum()
}

fn has(s: &Samples, name: &str) -> bool {
    s.keys().any(|k| k.split('{').next() == Some(name))
}

fn run_and_scrape(extra: &[&str]) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec![
        "demo",
        "--orders",
        "300",
        "--seed",
        "11",
        "--json",
        "--metrics-listen",
        &addr,
    ];
    args.extend_from_slice(extra);
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args(&args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the rivulet binary runs"),
    );
    // The summary is printed once the run is over; the endpoint then stays up.
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the summary line");
    let summary: Value = serde_json::from_str(&line).expect("the summary is JSON");
    assert_eq!(summary["check"]["ok"], true, "{summary}");
    assert!(
        child.0.try_wait().expect("status").is_none(),
        "still serving after the summary"
    );
    let started = Instant::now();
    let s = parse(&scrape(port));
    assert!(started.elapsed() < Duration::from_secs(5));

    for name in [
        "rivulet_published_total",
        "rivulet_handled_total",
        "rivulet_handler_duration_seconds_bucket",
        "rivulet_retries_total",
        "rivulet_dead_lettered_total",
        "rivulet_duplicates_total",
        "rivulet_in_flight",
        "rivulet_stream_length",
        "rivulet_group_lag",
        "rivulet_group_pending",
        "rivulet_retries_scheduled",
        "rivulet_dead_letters",
        "rivulet_jobs_added_total",
        "rivulet_jobs_settled_total",
        "rivulet_job_duration_seconds_bucket",
        "rivulet_job_wait_seconds_bucket",
        "rivulet_jobs_in_flight",
        "rivulet_jobs",
        "rivulet_collector_ticks_total",
    ] {
        assert!(has(&s, name), "{name} is missing from the scrape");
    }

    let topic = "orders:order:created";
    let published = sum(&s, "rivulet_published_total", &[("topic", topic)]);
    assert_eq!(
        published as u64,
        summary["published"].as_u64().expect("published")
    );
    // Every group: each message published ended handled ok, skipped as a duplicate,
    // dead-lettered or dropped, exactly once.
    let groups: std::collections::BTreeSet<String> = s
        .keys()
        .filter(|k| k.starts_with("rivulet_handled_total{"))
        .filter_map(|k| labels_of(k).get("group").cloned())
        .collect();
    assert!(groups.len() >= 3, "billing, shipping and audit: {groups:?}");
    let mut dead_total = 0.0;
    for g in &groups {
        let tg = [("topic", topic), ("group", g.as_str())];
        let ok = sum(
            &s,
            "rivulet_handled_total",
            &[tg[0], tg[1], ("outcome", "ok")],
        );
        let dup = sum(&s, "rivulet_duplicates_total", &tg);
        let dead = sum(&s, "rivulet_dead_lettered_total", &tg);
        let dropped = sum(&s, "rivulet_dropped_total", &tg);
        assert_eq!(ok + dup + dead + dropped, published, "group {g}");
        // Every failed attempt was retried or given up on.
        let failed: f64 = ["retryable", "permanent", "panic", "decode"]
            .iter()
            .map(|o| sum(&s, "rivulet_handled_total", &[tg[0], tg[1], ("outcome", o)]))
            .sum();
        let retries = sum(&s, "rivulet_retries_total", &tg);
        assert_eq!(failed, retries + dead + dropped, "group {g}");
        assert_eq!(sum(&s, "rivulet_in_flight", &tg), 0.0, "group {g}");
        assert_eq!(sum(&s, "rivulet_group_lag", &tg), 0.0, "group {g}");
        assert_eq!(sum(&s, "rivulet_group_pending", &tg), 0.0, "group {g}");
        // Handler durations: one observation per run.
        let runs = sum(&s, "rivulet_handler_duration_seconds_count", &tg);
        assert_eq!(runs, ok + failed, "group {g}");
        dead_total += dead;
    }
    let poison = summary["injected"]["poison"].as_u64().expect("poison") as f64;
    assert_eq!(dead_total, poison);
    assert_eq!(sum(&s, "rivulet_dead_letters", &[("topic", topic)]), poison);
    assert_eq!(
        sum(&s, "rivulet_stream_length", &[("topic", topic)]),
        published,
        "nothing trimmed in a run this small"
    );
    assert_eq!(
        sum(&s, "rivulet_retries_scheduled", &[("topic", topic)]),
        0.0
    );

    // Jobs: every job added ended completed, failed or cancelled, as the gauges of the
    // store and the settlement counters both say.
    let queue = [("queue", "invoices")];
    let added = sum(&s, "rivulet_jobs_added_total", &queue);
    assert!(added > 0.0);
    let state = |st: &str| sum(&s, "rivulet_jobs", &[queue[0], ("state", st)]);
    assert_eq!(state("waiting") + state("delayed") + state("active"), 0.0);
    assert_eq!(
        state("completed") + state("failed") + state("cancelled"),
        added
    );
    let settled = |st: &str| sum(&s, "rivulet_jobs_settled_total", &[queue[0], ("state", st)]);
    assert_eq!(settled("completed"), state("completed"));
    assert_eq!(settled("failed"), state("failed"));
    assert_eq!(sum(&s, "rivulet_jobs_in_flight", &queue), 0.0);
    let first_runs = sum(&s, "rivulet_job_wait_seconds_count", &queue);
    assert!(first_runs > 0.0 && first_runs <= added);

    // Ctrl-C ends the serving; the exit code is the demo's.
    let status = child.interrupt().expect("exits after Ctrl-C");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_scrape_after_the_demo_on_memory_adds_up() {
    run_and_scrape(&[]);
}

#[test]
fn a_scrape_after_the_demo_on_redis_adds_up() {
    run_and_scrape(&["--redis", "auto"]);
}
