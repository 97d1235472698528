//! `rivulet bench`: rivulet against the raw Redis ceiling, in the same run.
//!
//! Each scenario runs for rivulet and for a raw baseline written directly on the `redis`
//! crate, interleaved (the order alternates each round), for several rounds; the report
//! gives medians with min–max and the ratio rivulet / raw. Absolute numbers depend on the
//! machine; the ratios are what to compare.

/// Runs both sides of a scenario, the raw baseline first when `raw_first` (the order
/// alternates with the round); returns `(rivulet, baseline)`.
macro_rules! sides {
    ($raw_first:expr, $raw:expr, $riv:expr) => {{
        if $raw_first {
            let r = $raw;
            let v = $riv;
            (v, r)
        } else {
            let v = $riv;
            let r = $raw;
            (v, r)
        }
    }};
}

mod jobs;
mod raw;
mod report;
mod side;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::CliError;
use raw::Raw;
use report::{Measure, Scenario};
use side::Side;

/// Messages per pipeline / batch / read.
pub(crate) const BATCH: usize = 100;
/// Concurrent producer tasks in throughput scenarios.
pub(crate) const PRODUCERS: usize = 2;

/// Arguments of `rivulet bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// `auto` starts a throw-away redis-server for the run; or a redis:// URL.
    #[arg(long, default_value = "auto")]
    redis: String,
    /// With `--redis auto`: turn AOF on (appendfsync everysec).
    #[arg(long)]
    aof: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// A short run (under a minute): fewer messages, one round.
    #[arg(long)]
    quick: bool,
    /// Rounds per scenario (default 3, or 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Messages per throughput run (default 100,000, or 10,000 with --quick).
    #[arg(long)]
    messages: Option<usize>,
    /// Jobs per `jobs_add` / `jobs_process` / `jobs_e2e` run (default 100,000, or 5,000
    /// with --quick).
    #[arg(long)]
    jobs: Option<usize>,
    /// The backlog of `jobs_backlog_1m` (default 1,000,000, or 50,000 with --quick).
    #[arg(long)]
    backlog: Option<usize>,
    /// Run only scenarios whose name contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// A payload source: fixed bytes, or bytes whose first 8 carry a send stamp.
#[derive(Debug, Clone)]
pub(crate) struct Payloads {
    size: usize,
    stamped: bool,
    fixed: Bytes,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Payloads {
    fn new(size: usize, stamped: bool) -> Self {
        Payloads {
            size,
            stamped,
            fixed: Bytes::from(vec![b'x'; size]),
        }
    }

    pub(crate) fn next(&self) -> Bytes {
        if !self.stamped {
            return self.fixed.clone();
        }
        let mut v = vec![b'x'; self.size.max(8)];
        let nanos = epoch().elapsed().as_nanos() as u64;
        v[..8].copy_from_slice(&nanos.to_le_bytes());
        Bytes::from(v)
    }
}

/// How long ago a stamped payload was made.
pub(crate) fn stamp_age(payload: &[u8]) -> Option<Duration> {
    let stamp: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    let sent = Duration::from_nanos(u64::from_le_bytes(stamp));
    epoch().elapsed().checked_sub(sent)
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub(crate) fn histogram() -> Result<Histogram<u64>, CliError> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| CliError::runtime(format!("histogram: {e}")))
}

pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_micros().max(1) as u64);
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    messages: usize,
    latency_samples: usize,
    rounds: usize,
    memory_messages: usize,
    /// Jobs per `jobs_add` / `jobs_process` run.
    jobs: usize,
    /// How long `jobs_idle` counts commands, per side.
    idle_window: Duration,
    /// Delayed jobs per `jobs_delayed` run, and the time they are due over.
    delayed_jobs: usize,
    delayed_span: Duration,
    /// The backlog `jobs_backlog_1m` takes `jobs` off.
    backlog: usize,
    /// The job groups of `jobs_groups` (against 10).
    many_groups: usize,
    /// `jobs_retention`: (all jobs, the first ones).
    retention: (usize, usize),
}

struct Run {
    raw: Raw,
    side: Side,
    url: String,
    sizes: Sizes,
    seq: AtomicUsize,
    jobs: jobs::Cache,
}

impl Run {
    fn key(&self, what: &str) -> String {
        format!(
            "bench:raw:{what}:{}",
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn topic(&self, what: &str) -> String {
        format!("bench.{what}.{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Deletes every key the bench wrote (its own prefixes only).
    async fn cleanup(&self) -> Result<(), CliError> {
        // SCAN + DEL a page at a time on a connection without a response timeout: after
        // `jobs_backlog_1m` there are millions of keys, too many for one `KEYS`. DEL, not
        // UNLINK, so the memory is free before the next scenario reads `used_memory`.
        let mut con = self.raw.blocking().await?;
        let fail = |e: redis::RedisError| CliError::runtime(format!("cleanup: {e}"));
        // Registries are `<prefix>/…`, per-topic (and per-queue) keys `{<prefix>/…}…`.
        for pattern in [
            "bench:raw:*".to_owned(),
            format!("{}/*", side::PREFIX),
            format!("{{{}/*", side::PREFIX),
        ] {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(5000)
                    .query_async(&mut con)
                    .await
                    .map_err(fail)?;
                if !keys.is_empty() {
                    redis::cmd("DEL")
                        .arg(&keys)
                        .query_async::<()>(&mut con)
                        .await
                        .map_err(fail)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    async fn info_field(&self, section: &str, field: &str) -> Result<f64, CliError> {
        let mut con = self.raw.shared().await?;
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut con)
            .await
            .map_err(|e| CliError::runtime(format!("INFO: {e}")))?;
        info.lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or_else(|| CliError::runtime(format!("INFO {section} has no {field}")))
    }

    /// Redis CPU seconds (user + system) so far.
    async fn redis_cpu(&self) -> Result<f64, CliError> {
        Ok(self.info_field("cpu", "used_cpu_user").await?
            + self.info_field("cpu", "used_cpu_sys").await?)
    }

    async fn used_memory(&self) -> Result<f64, CliError> {
        self.info_field("memory", "used_memory").await
    }

    /// Commands Redis has run so far: the sum of `calls=` over `INFO commandstats`.
    async fn total_calls(&self) -> Result<f64, CliError> {
        let mut con = self.raw.shared().await?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut con)
            .await
            .map_err(|e| CliError::runtime(format!("INFO: {e}")))?;
        Ok(info
            .lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .filter_map(|l| {
                l.split([':', ','])
                    .find_map(|f| f.strip_prefix("calls="))?
                    .parse::<f64>()
                    .ok()
            })
            .sum())
    }

    /// `n` raw entries appended by [`PRODUCERS`] tasks at once, each on its own
    /// connection, in pipelines of [`BATCH`].
    async fn raw_publish_parallel(
        &self,
        key: &str,
        n: usize,
        payloads: &Payloads,
    ) -> Result<(), CliError> {
        let per = n.div_ceil(PRODUCERS);
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let count = per.min(n.saturating_sub(p * per));
            let (raw, key, payloads) = (self.raw.clone(), key.to_owned(), payloads.clone());
            producers.push(tokio::spawn(async move {
                raw.publish(&key, count, &payloads).await
            }));
        }
        for p in producers {
            join(p).await?;
        }
        Ok(())
    }

    /// Raw e2e: producers and one consumer together.
    async fn raw_e2e(&self, n: usize, payloads: &Payloads) -> Result<Duration, CliError> {
        let key = self.key("e2e");
        self.raw.create_group(&key).await?;
        let done = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let consumer = {
            let (raw, key, done) = (self.raw.clone(), key.clone(), done.clone());
            tokio::spawn(
                async move { raw.consume(&key, n, done, None, raw::deadline_for(n)).await },
            )
        };
        self.raw_publish_parallel(&key, n, payloads).await?;
        join(consumer).await?;
        Ok(start.elapsed())
    }

    async fn raw_drain(&self, n: usize, payloads: &Payloads) -> Result<Duration, CliError> {
        let key = self.key("drain");
        self.raw.create_group(&key).await?;
        self.raw.publish(&key, n, payloads).await?;
        let start = Instant::now();
        self.raw
            .consume(
                &key,
                n,
                Arc::new(AtomicUsize::new(0)),
                None,
                raw::deadline_for(n),
            )
            .await?;
        Ok(start.elapsed())
    }

    async fn raw_handle_latency(
        &self,
        n: usize,
        rate: u32,
        payloads: &Payloads,
    ) -> Result<Histogram<u64>, CliError> {
        let key = self.key("lat");
        self.raw.create_group(&key).await?;
        let consumer = {
            let (raw, key) = (self.raw.clone(), key.clone());
            tokio::spawn(async move {
                let mut h = histogram()?;
                raw.consume(
                    &key,
                    n,
                    Arc::new(AtomicUsize::new(0)),
                    Some(&mut h),
                    raw::deadline_for(n),
                )
                .await
                .map(|()| h)
            })
        };
        let mut con = self.raw.shared().await?;
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        for _ in 0..n {
            tick.tick().await;
            redis::cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("payload")
                .arg(payloads.next().as_ref())
                .query_async::<String>(&mut con)
                .await
                .map_err(|e| CliError::runtime(format!("XADD: {e}")))?;
        }
        join(consumer).await
    }
}

async fn join<T>(h: tokio::task::JoinHandle<Result<T, CliError>>) -> Result<T, CliError> {
    h.await
        .map_err(|e| CliError::runtime(format!("bench task failed: {e}")))?
}

fn throughput(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn p(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

/// Runs the bench.
pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, CliError> {
    let sizes = Sizes {
        messages: args
            .messages
            .unwrap_or(if args.quick { 10_000 } else { 100_000 }),
        latency_samples: if args.quick { 300 } else { 2_000 },
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        memory_messages: if args.quick { 10_000 } else { 50_000 },
        jobs: args
            .jobs
            .unwrap_or(if args.quick { 5_000 } else { 100_000 })
            .max(1),
        idle_window: Duration::from_secs(if args.quick { 3 } else { 10 }),
        delayed_jobs: if args.quick { 1_000 } else { 10_000 },
        delayed_span: Duration::from_secs(if args.quick { 2 } else { 5 }),
        backlog: args
            .backlog
            .unwrap_or(if args.quick { 50_000 } else { 1_000_000 }),
        many_groups: if args.quick { 1_000 } else { 10_000 },
        retention: if args.quick {
            (30_000, 5_000)
        } else {
            (300_000, 50_000)
        },
    };
    let (_server, url) = if args.redis == "auto" {
        let aof = args.aof;
        let server = tokio::task::spawn_blocking(move || {
            rivulet_testkit::RedisServer::builder()
                .aof(aof)
                .appendfsync("everysec")
                .start()
        })
        .await
        .map_err(|e| CliError::runtime(format!("starting redis-server: {e}")))?
        .map_err(|e| {
            CliError::runtime(format!("--redis auto could not start redis-server: {e}"))
        })?;
        let url = server.url();
        (Some(server), url)
    } else {
        (None, args.redis.clone())
    };
    let run = Run {
        raw: Raw::new(&url)?,
        side: Side::new(&url),
        url,
        sizes,
        seq: AtomicUsize::new(0),
        jobs: jobs::Cache::default(),
    };
    let redis_version = {
        let mut con = run.raw.shared().await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con)
            .await
            .map_err(|e| CliError::runtime(format!("INFO: {e}")))?;
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned()
    };

    let names = report::SCENARIOS;
    let selected: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| args.only.is_empty() || args.only.iter().any(|o| n.contains(o.as_str())))
        .collect();
    let bar = if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((selected.len() * sizes.rounds) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results: Vec<Scenario> = selected.iter().map(|n| Scenario::new(n)).collect();
    for round in 0..sizes.rounds {
        for s in results.iter_mut() {
            bar.set_message(format!("{} (round {})", s.name, round + 1));
            let m = measure(&run, s.name, round).await?;
            s.push(m);
            run.cleanup().await?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let report = report::Report::new(
        results,
        redis_version,
        &run.url,
        sizes.messages,
        sizes.jobs,
        sizes.rounds,
    );
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// One round of one scenario: both sides, order alternating by round.
async fn measure(run: &Run, name: &str, round: usize) -> Result<Measure, CliError> {
    let n = run.sizes.messages;
    let small = Payloads::new(100, false);
    let big = Payloads::new(1024, false);
    let stamped = Payloads::new(100, true);
    let raw_first = round.is_multiple_of(2);
    let lat = run.sizes.latency_samples;
    Ok(match name {
        "e2e" | "e2e_1k" => {
            let p = if name == "e2e" { &small } else { &big };
            let (v, r) = sides!(
                raw_first,
                run.raw_e2e(n, p).await?,
                run.side.e2e(&run.topic("e2e"), n, p, None).await?
            );
            Measure::pair(throughput(n, v), throughput(n, r))
        }
        "drain" | "drain_1k" => {
            let p = if name == "drain" { &small } else { &big };
            let (v, r) = sides!(
                raw_first,
                run.raw_drain(n, p).await?,
                run.side.drain(&run.topic("drain"), n, p).await?
            );
            Measure::pair(throughput(n, v), throughput(n, r))
        }
        "publish_latency_p50" | "publish_latency_p99" => {
            let q = if name.ends_with("p50") { 0.5 } else { 0.99 };
            let key = run.key("pub");
            let (v, r) = sides!(
                raw_first,
                run.raw.publish_latency(&key, lat, &small).await?,
                run.side
                    .publish_latency(&run.topic("pub"), lat, &small, 0)
                    .await?
            );
            Measure::pair(p(&v, q), p(&r, q))
        }
        "publish_latency_p50_50subs" => {
            // rivulet with 50 idle subscriptions on the same bus, against rivulet without
            // them in the same round: blocking reads must not delay publishes.
            let (with, without) = if raw_first {
                let w = run
                    .side
                    .publish_latency(&run.topic("pub50"), lat, &small, 50)
                    .await?;
                let o = run
                    .side
                    .publish_latency(&run.topic("pub0"), lat, &small, 0)
                    .await?;
                (w, o)
            } else {
                let o = run
                    .side
                    .publish_latency(&run.topic("pub0"), lat, &small, 0)
                    .await?;
                let w = run
                    .side
                    .publish_latency(&run.topic("pub50"), lat, &small, 50)
                    .await?;
                (w, o)
            };
            Measure::pair(p(&with, 0.5), p(&without, 0.5))
        }
        "handle_latency_p50" | "handle_latency_p99" => {
            let q = if name.ends_with("p50") { 0.5 } else { 0.99 };
            let (v, r) = sides!(
                raw_first,
                run.raw_handle_latency(lat, 1000, &stamped).await?,
                run.side
                    .handle_latency(&run.topic("lat"), lat, 1000, &stamped)
                    .await?
            );
            Measure::pair(p(&v, q), p(&r, q))
        }
        "retry" => {
            // 10 % of messages fail their first attempt (zero backoff); compared with
            // rivulet's own e2e in the same round.
            let e2e = run.side.e2e(&run.topic("e2e"), n, &small, None).await?;
            let with_retry = run
                .side
                .e2e(&run.topic("retry"), n, &small, Some(10))
                .await?;
            Measure::pair(throughput(n, with_retry), throughput(n, e2e))
        }
        "redis_cpu_per_msg" => {
            let c0 = run.redis_cpu().await?;
            run.raw_e2e(n, &small).await?;
            let c1 = run.redis_cpu().await?;
            run.side.e2e(&run.topic("cpu"), n, &small, None).await?;
            let c2 = run.redis_cpu().await?;
            let per = |c: f64| c * 1e6 / n as f64;
            Measure::pair(per(c2 - c1), per(c1 - c0))
        }
        "memory_per_msg" => {
            let m = run.sizes.memory_messages;
            let m0 = run.used_memory().await?;
            run.raw.publish(&run.key("mem"), m, &small).await?;
            let m1 = run.used_memory().await?;
            run.side.fill(&run.topic("mem"), m, &small).await?;
            let m2 = run.used_memory().await?;
            Measure::pair((m2 - m1) / m as f64, (m1 - m0) / m as f64)
        }
        jobs if jobs.starts_with("jobs_") => return jobs::measure(run, name, round).await,
        other => return Err(CliError::usage(format!("unknown scenario {other}"))),
    })
}
