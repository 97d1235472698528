//! The jobs scenarios. Each runs the rivulet side through the public API and a baseline
//! in the same run; the order of the sides alternates with the round.
//!
//! | scenario | rivulet | baseline |
//! |---|---|---|
//! | `jobs_add` | `add_bulk` of batches of [`BATCH`] from [`PRODUCERS`] tasks | pipelined `XADD`, batches of [`BATCH`] on [`PRODUCERS`] connections |
//! | `jobs_process` | a worker at [`CONCURRENCY`] draining a pre-added backlog of no-op jobs | the raw stream drain (`XREADGROUP` + `XACK`, as the bus's `drain`) |
//! | `jobs_e2e` | adding and processing at once until every job completed | the raw stream e2e |
//! | `jobs_latency_p50` / `_p99` | one add every millisecond, add → handler start | the raw stream's publish → receipt |
//! | `jobs_delayed` | jobs due over a few seconds: how late they start (p99) | a raw client timer on a sorted set; the target is on rivulet's value |
//! | `jobs_backlog_1m` | `jobs_process`'s count taken off the head of a 1,000,000 backlog | `jobs_process` (same round) |
//! | `jobs_groups` | `jobs_process` with every job in one of 10,000 job groups | the same with 10 groups |
//! | `jobs_redis_cpu` | Redis CPU per job over `jobs_process`'s drain | per message over the raw drain |
//! | `jobs_memory` | Redis memory per waiting job of `jobs_process`'s backlog | per entry of the raw drain's stream |
//! | `jobs_retention` | Redis memory after 300,000 jobs through a queue with the default retention | after its first 50,000 |
//! | `jobs_idle` | Redis commands per second while an idle worker waits | one `BLPOP` loop, same timeout |
//!
//! `jobs_process`, `jobs_redis_cpu` and `jobs_memory` come from one drain per round per
//! side. A delayed job that starts early fails `jobs_delayed`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rivulet::{HandlerError, Job, Keep, Queue, RedisBackend, Worker};
use serde::{Deserialize, Serialize};

use super::report::Measure;
use super::{BATCH, PRODUCERS, Payloads, Run, histogram, p, record, side, throughput};
use crate::error::CliError;

/// Jobs running at once in every draining scenario.
const CONCURRENCY: usize = 100;
/// The idle worker's blocking timeout, and the raw `BLPOP`'s.
const IDLE_BLOCK: Duration = Duration::from_secs(1);
/// Time given to an idle side to start before its commands are counted.
const IDLE_SETTLE: Duration = Duration::from_millis(300);
/// Adds per second in `jobs_latency`.
const LATENCY_RATE: u32 = 1000;

/// The data of every bench job: about 100 bytes of JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchJob {
    n: u64,
    pad: String,
}

impl BenchJob {
    fn new(n: u64) -> Self {
        BenchJob {
            n,
            pad: "x".repeat(80),
        }
    }
}

/// What one drain measured on one side.
#[derive(Debug, Clone, Copy)]
struct Drained {
    per_second: f64,
    cpu_us_each: f64,
    memory_bytes_each: f64,
}

/// The `jobs_process` figures of the latest round, shared by the scenarios that report
/// them, so the drain runs once per round.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    process: Mutex<Option<ProcessRound>>,
}

#[derive(Debug, Clone)]
struct ProcessRound {
    round: usize,
    raw: Drained,
    rivulet: Drained,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn err(what: &str) -> impl Fn(redis::RedisError) -> CliError + '_ {
    move |e| CliError::runtime(format!("raw jobs baseline: {what}: {e}"))
}

/// One round of a jobs scenario.
pub(crate) async fn measure(run: &Run, name: &str, round: usize) -> Result<Measure, CliError> {
    let n = run.sizes.jobs;
    let small = Payloads::new(100, false);
    let raw_first = round.is_multiple_of(2);
    match name {
        "jobs_add" => {
            let (riv, raw) = sides!(
                raw_first,
                raw_add(run, &run.key("jobs-add"), n, &small).await?,
                rivulet_add(run, &run.topic("jobs-add"), n).await?
            );
            Ok(Measure::pair(throughput(n, riv), throughput(n, raw)))
        }
        "jobs_process" | "jobs_redis_cpu" | "jobs_memory" => {
            let f = process_round(run, round, raw_first).await?;
            let pick = |d: &Drained| match name {
                "jobs_process" => d.per_second,
                "jobs_redis_cpu" => d.cpu_us_each,
                _ => d.memory_bytes_each,
            };
            Ok(Measure::pair(pick(&f.rivulet), pick(&f.raw)))
        }
        "jobs_e2e" => {
            let (riv, raw) = sides!(
                raw_first,
                run.raw_e2e(n, &small).await?,
                rivulet_e2e(run, &run.topic("jobs-e2e"), n).await?
            );
            Ok(Measure::pair(throughput(n, riv), throughput(n, raw)))
        }
        "jobs_latency_p50" | "jobs_latency_p99" => {
            let q = if name.ends_with("p50") { 0.5 } else { 0.99 };
            let lat = run.sizes.latency_samples;
            let stamped = Payloads::new(100, true);
            let (riv, raw) = sides!(
                raw_first,
                run.raw_handle_latency(lat, LATENCY_RATE, &stamped).await?,
                rivulet_latency(run, &run.topic("jobs-lat"), lat).await?
            );
            Ok(Measure::pair(p(&riv, q), p(&raw, q)))
        }
        "jobs_delayed" => {
            let (n, span) = (run.sizes.delayed_jobs, run.sizes.delayed_span);
            let (riv, raw) = sides!(
                raw_first,
                raw_lateness(run, &run.key("jobs-delay"), n, span).await?,
                rivulet_lateness(run, &run.topic("jobs-delay"), n, span).await?
            );
            Ok(Measure::pair(riv, raw))
        }
        "jobs_backlog_1m" => {
            let base = process_round(run, round, raw_first)
                .await?
                .rivulet
                .per_second;
            run.cleanup().await?;
            let backlog = run.sizes.backlog.max(n);
            let deep = rivulet_backlog(run, &run.topic("jobs-backlog"), backlog, n).await?;
            Ok(Measure::pair(deep, base))
        }
        "jobs_groups" => {
            let (many, few) = (run.sizes.many_groups, 10);
            let (riv, base) = sides!(
                raw_first,
                rivulet_grouped(run, &run.topic("jobs-g10"), n, few).await?,
                rivulet_grouped(run, &run.topic("jobs-gmany"), n, many).await?
            );
            Ok(Measure::pair(riv, base))
        }
        "jobs_retention" => {
            let (total, first) = run.sizes.retention;
            let (after_first, after_all) =
                rivulet_retention(run, &run.topic("jobs-keep"), first, total).await?;
            Ok(Measure::pair(after_all, after_first))
        }
        "jobs_idle" => {
            let window = run.sizes.idle_window;
            let (riv, raw) = sides!(
                raw_first,
                raw_idle(run, window).await?,
                rivulet_idle(run, window).await?
            );
            Ok(Measure::pair(riv, raw))
        }
        other => Err(CliError::usage(format!("unknown scenario {other}"))),
    }
}

/// The `jobs_process` figures of `round`, measured now unless another scenario of the
/// same round already did.
async fn process_round(run: &Run, round: usize, raw_first: bool) -> Result<ProcessRound, CliError> {
    if let Ok(cache) = run.jobs.process.lock()
        && let Some(r) = cache.as_ref().filter(|r| r.round == round)
    {
        return Ok(r.clone());
    }
    let n = run.sizes.jobs;
    let (rivulet, raw) = if raw_first {
        let r = raw_process(run, &run.key("jobs-process"), n).await?;
        run.cleanup().await?;
        (
            rivulet_process(run, &run.topic("jobs-process"), n).await?,
            r,
        )
    } else {
        let v = rivulet_process(run, &run.topic("jobs-process"), n).await?;
        run.cleanup().await?;
        (v, raw_process(run, &run.key("jobs-process"), n).await?)
    };
    let figures = ProcessRound {
        round,
        raw,
        rivulet,
    };
    if let Ok(mut cache) = run.jobs.process.lock() {
        *cache = Some(figures.clone());
    }
    Ok(figures)
}

// --- the rivulet side ------------------------------------------------------------------

/// A queue on the bench's Redis, under the bench's key prefix, keeping `keep` finished
/// jobs (`None`: the defaults).
async fn open_queue(run: &Run, name: &str, keep: Option<usize>) -> Result<Queue, CliError> {
    let backend = RedisBackend::builder(run.url.clone())
        .prefix(side::PREFIX)
        .build()
        .await?;
    let mut builder = Queue::builder(backend, name);
    if let Some(n) = keep {
        let keep = Keep::new(n.max(1) as u64, Duration::from_secs(24 * 3600));
        builder = builder.keep_completed(keep).keep_failed(keep);
    }
    Ok(builder.build()?)
}

/// Adds jobs `from..to` in batches of [`BATCH`]; job `i` is in group `i % groups` when
/// `groups > 0`.
async fn add_range(queue: &Queue, from: usize, to: usize, groups: usize) -> Result<(), CliError> {
    let jobs: Vec<BenchJob> = (from as u64..to as u64).map(BenchJob::new).collect();
    let names: Vec<String> = (0..groups).map(|g| format!("t{g}")).collect();
    for chunk in jobs.chunks(BATCH) {
        let added = queue
            .add_bulk(chunk.iter().map(|j| {
                let add = queue.add("noop", j);
                match names.get((j.n as usize) % groups.max(1)) {
                    Some(g) if groups > 0 => add.group(g),
                    _ => add,
                }
            }))
            .await?;
        if added.len() != chunk.len() || added.iter().any(|e| e.duplicate) {
            return Err(CliError::runtime(
                "add_bulk did not add every job of a batch",
            ));
        }
    }
    Ok(())
}

/// Adds jobs `from..to` from [`PRODUCERS`] tasks at once (groups as in [`add_range`]).
async fn add_parallel(
    queue: &Queue,
    from: usize,
    to: usize,
    groups: usize,
) -> Result<(), CliError> {
    let per = to.saturating_sub(from).div_ceil(PRODUCERS);
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let (a, b) = ((from + p * per).min(to), (from + (p + 1) * per).min(to));
        let q = queue.clone();
        tasks.push(tokio::spawn(
            async move { add_range(&q, a, b, groups).await },
        ));
    }
    for t in tasks {
        super::join(t).await?;
    }
    Ok(())
}

async fn rivulet_add(run: &Run, name: &str, n: usize) -> Result<std::time::Duration, CliError> {
    let queue = open_queue(run, name, Some(n)).await?;
    let start = Instant::now();
    add_parallel(&queue, 0, n, 0).await?;
    Ok(start.elapsed())
}

async fn noop(job: Job<BenchJob>) -> Result<(), HandlerError> {
    std::hint::black_box(job.data().n);
    Ok(())
}

async fn rivulet_process(run: &Run, name: &str, n: usize) -> Result<Drained, CliError> {
    let queue = open_queue(run, name, Some(n)).await?;
    let m0 = run.used_memory().await?;
    add_parallel(&queue, 0, n, 0).await?;
    let m1 = run.used_memory().await?;
    let c0 = run.redis_cpu().await?;
    let (elapsed, worker) = drain(&queue, n).await?;
    let c1 = run.redis_cpu().await?;
    worker.shutdown().await;
    Ok(Drained {
        per_second: throughput(n, elapsed),
        cpu_us_each: (c1 - c0) * 1e6 / n as f64,
        memory_bytes_each: (m1 - m0) / n as f64,
    })
}

/// Starts a worker at [`CONCURRENCY`] and waits until it has completed `n` jobs; returns
/// the time from its start and the worker (to shut down once Redis CPU is read).
async fn drain(queue: &Queue, n: usize) -> Result<(Duration, Worker), CliError> {
    let start = Instant::now();
    let worker = queue.worker(noop).concurrency(CONCURRENCY).await?;
    match wait_completed(&worker, n, super::raw::deadline_for(n)).await {
        Ok(()) => Ok((start.elapsed(), worker)),
        Err(e) => {
            worker.shutdown().await;
            Err(e)
        }
    }
}

/// Waits for the worker's own tally (no Redis reads, so the CPU figure is the drain's).
async fn wait_completed(worker: &Worker, n: usize, deadline: Instant) -> Result<(), CliError> {
    loop {
        let s = worker.stats();
        if s.completed >= n as u64 {
            return Ok(());
        }
        if s.failed > 0 || Instant::now() > deadline {
            return Err(CliError::runtime(format!(
                "rivulet worker: {} of {n} jobs completed, {} failed, by the deadline",
                s.completed, s.failed
            )));
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Adding and processing at once: the worker starts, then the producers add.
async fn rivulet_e2e(run: &Run, name: &str, n: usize) -> Result<Duration, CliError> {
    let queue = open_queue(run, name, Some(n)).await?;
    let start = Instant::now();
    let worker = queue.worker(noop).concurrency(CONCURRENCY).await?;
    let added = add_parallel(&queue, 0, n, 0).await;
    let done = match added {
        Ok(()) => wait_completed(&worker, n, super::raw::deadline_for(n)).await,
        Err(e) => Err(e),
    };
    let elapsed = start.elapsed();
    worker.shutdown().await;
    done.map(|()| elapsed)
}

/// The job of `jobs_latency`: when it was added (µs since the epoch).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stamped {
    added_us: u64,
    pad: String,
}

/// One add per tick at [`LATENCY_RATE`]; the handler records add → start.
async fn rivulet_latency(run: &Run, name: &str, n: usize) -> Result<Histogram<u64>, CliError> {
    let queue = open_queue(run, name, Some(n)).await?;
    let h = Arc::new(Mutex::new(histogram()?));
    let seen = Arc::new(AtomicUsize::new(0));
    let (hh, s) = (h.clone(), seen.clone());
    let worker = queue
        .worker(move |job: Job<Stamped>| {
            let age = Duration::from_micros(now_us().saturating_sub(job.data().added_us));
            if let Ok(mut h) = hh.lock() {
                record(&mut h, age);
            }
            s.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, HandlerError>(()) }
        })
        .concurrency(CONCURRENCY)
        .await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / LATENCY_RATE);
    let pad = "x".repeat(70);
    let mut outcome = Ok(());
    for _ in 0..n {
        tick.tick().await;
        let job = Stamped {
            added_us: now_us(),
            pad: pad.clone(),
        };
        if let Err(e) = queue.add("lat", &job).await {
            outcome = Err(CliError::from(e));
            break;
        }
    }
    if outcome.is_ok() {
        outcome = wait_completed(&worker, n, Instant::now() + Duration::from_secs(30)).await;
    }
    worker.shutdown().await;
    outcome?;
    let h = h
        .lock()
        .map(|h| h.clone())
        .map_err(|_| CliError::runtime("jobs_latency: a handler panicked while recording"))?;
    Ok(h)
}

/// `take` jobs processed off the head of a backlog of `backlog`: jobs per second.
async fn rivulet_backlog(
    run: &Run,
    name: &str,
    backlog: usize,
    take: usize,
) -> Result<f64, CliError> {
    let queue = open_queue(run, name, Some(take)).await?;
    add_parallel(&queue, 0, backlog, 0).await?;
    let (elapsed, worker) = drain(&queue, take).await?;
    worker.shutdown().await;
    Ok(throughput(take, elapsed))
}

/// `n` jobs spread over `groups` job groups, drained: jobs per second.
async fn rivulet_grouped(run: &Run, name: &str, n: usize, groups: usize) -> Result<f64, CliError> {
    let queue = open_queue(run, name, Some(n)).await?;
    add_parallel(&queue, 0, n, groups).await?;
    let (elapsed, worker) = drain(&queue, n).await?;
    worker.shutdown().await;
    run.cleanup().await?;
    Ok(throughput(n, elapsed))
}

/// Redis memory (`used_memory`, the whole server's) after the first `first` jobs and
/// after all `total` went through a queue with the default retention, added and
/// processed at once. The whole server's figure, not a delta over the start: the start
/// can still hold buffers of the scenario before, which a delta would subtract.
async fn rivulet_retention(
    run: &Run,
    name: &str,
    first: usize,
    total: usize,
) -> Result<(f64, f64), CliError> {
    let queue = open_queue(run, name, None).await?;
    let worker = queue.worker(noop).concurrency(CONCURRENCY).await?;
    let mut outcome = Ok((0.0, 0.0));
    let mut after_first = 0.0;
    for (from, to) in [(0, first.min(total)), (first.min(total), total)] {
        let step = match add_parallel(&queue, from, to, 0).await {
            Ok(()) => wait_completed(&worker, to, super::raw::deadline_for(to)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = step {
            outcome = Err(e);
            break;
        }
        let m = run.used_memory().await?;
        if to == first.min(total) {
            after_first = m;
        } else {
            outcome = Ok((after_first, m));
        }
    }
    worker.shutdown().await;
    outcome
}

async fn rivulet_idle(run: &Run, window: Duration) -> Result<f64, CliError> {
    let queue = open_queue(run, &run.topic("jobs-idle"), Some(1)).await?;
    let worker = queue
        .worker(noop)
        .concurrency(CONCURRENCY)
        .block_timeout(IDLE_BLOCK)
        .await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let counted = commands_during(run, window).await;
    worker.shutdown().await;
    counted
}

// --- the baselines -----------------------------------------------------------------------

/// Pipelined `XADD`s of 100-byte entries, batches of [`BATCH`], from [`PRODUCERS`]
/// connections at once.
async fn raw_add(
    run: &Run,
    key: &str,
    n: usize,
    payloads: &Payloads,
) -> Result<Duration, CliError> {
    let start = Instant::now();
    run.raw_publish_parallel(key, n, payloads).await?;
    Ok(start.elapsed())
}

/// The raw stream drain with the memory of its backlog and the Redis CPU of its drain.
async fn raw_process(run: &Run, key: &str, n: usize) -> Result<Drained, CliError> {
    let small = Payloads::new(100, false);
    run.raw.create_group(key).await?;
    let m0 = run.used_memory().await?;
    run.raw.publish(key, n, &small).await?;
    let m1 = run.used_memory().await?;
    let c0 = run.redis_cpu().await?;
    let start = Instant::now();
    run.raw
        .consume(
            key,
            n,
            Arc::new(AtomicUsize::new(0)),
            None,
            super::raw::deadline_for(n),
        )
        .await?;
    let elapsed = start.elapsed();
    let c1 = run.redis_cpu().await?;
    Ok(Drained {
        per_second: throughput(n, elapsed),
        cpu_us_each: (c1 - c0) * 1e6 / n as f64,
        memory_bytes_each: (m1 - m0) / n as f64,
    })
}

async fn raw_idle(run: &Run, window: Duration) -> Result<f64, CliError> {
    let key = run.key("jobs-idle");
    let mut con = run.raw.blocking().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let waiter = tokio::spawn(async move {
        while !flag.load(Ordering::Relaxed) {
            let _: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(&key)
                .arg(IDLE_BLOCK.as_secs())
                .query_async(&mut con)
                .await
                .map_err(err("BLPOP"))?;
        }
        Ok::<(), CliError>(())
    });
    tokio::time::sleep(IDLE_SETTLE).await;
    let counted = commands_during(run, window).await;
    stop.store(true, Ordering::Relaxed);
    // The loop ends after its current BLPOP times out (at most IDLE_BLOCK).
    super::join(waiter).await?;
    counted
}

/// Commands Redis ran per second over `window`, less the bench's own `INFO`.
async fn commands_during(run: &Run, window: Duration) -> Result<f64, CliError> {
    let before = run.total_calls().await?;
    tokio::time::sleep(window).await;
    let after = run.total_calls().await?;
    // `after` includes the `INFO` that read `before`.
    let calls = (after - before - 1.0).max(0.0);
    Ok(calls / window.as_secs_f64().max(1e-9))
}

// --- lateness of delayed jobs ----------------------------------------------------------

/// When the `n` delayed jobs of a lateness run are due: spread evenly over `span`,
/// starting 300 ms from now (ms since the epoch).
fn due_times(n: usize, span: Duration) -> Vec<u64> {
    let start = now_ms() + 300;
    let span = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
    (0..n as u64)
        .map(|i| start + i * span / n.max(1) as u64)
        .collect()
}

/// Now, in milliseconds since the epoch with microseconds.
fn now_ms_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The 99th percentile of `late` (ms); an early start (negative) is an error.
fn p99_ms(mut late: Vec<f64>, side: &str) -> Result<f64, CliError> {
    if let Some(early) = late.iter().find(|l| **l < 0.0) {
        return Err(CliError::runtime(format!(
            "{side}: a delayed job started {:.3} ms before its time",
            -early
        )));
    }
    late.sort_by(f64::total_cmp);
    let i = (late.len() * 99 / 100).min(late.len().saturating_sub(1));
    Ok(late.get(i).copied().unwrap_or(0.0))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DueJob {
    due_ms: u64,
}

async fn rivulet_lateness(
    run: &Run,
    name: &str,
    n: usize,
    span: Duration,
) -> Result<f64, CliError> {
    let queue = open_queue(run, name, Some(n)).await?;
    let late: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let l = late.clone();
    // A worker as an application runs it: default blocking timeout.
    let worker = queue
        .worker(move |job: Job<DueJob>| {
            let l = l.clone();
            async move {
                let lateness = now_ms_f() - job.data().due_ms as f64;
                if let Ok(mut v) = l.lock() {
                    v.push(lateness);
                }
                Ok::<_, HandlerError>(())
            }
        })
        .concurrency(CONCURRENCY)
        .await?;
    let due = due_times(n, span);
    for chunk in due.chunks(BATCH) {
        queue
            .add_bulk(chunk.iter().map(|d| {
                queue
                    .add("delayed", &DueJob { due_ms: *d })
                    .run_at(UNIX_EPOCH + Duration::from_millis(*d))
            }))
            .await?;
    }
    let deadline = Instant::now() + span + Duration::from_secs(30);
    let outcome = wait_completed(&worker, n, deadline).await;
    worker.shutdown().await;
    outcome?;
    let late = late.lock().map(|v| v.clone()).unwrap_or_default();
    p99_ms(late, "rivulet")
}

async fn raw_lateness(run: &Run, key: &str, n: usize, span: Duration) -> Result<f64, CliError> {
    let mut con = run.raw.shared().await?;
    let delayed = format!("{key}:delayed");
    let due = due_times(n, span);
    for (i, chunk) in due.chunks(BATCH).enumerate() {
        let mut pipe = redis::pipe();
        for (j, d) in chunk.iter().enumerate() {
            pipe.cmd("ZADD")
                .arg(&delayed)
                .arg(*d)
                .arg(format!("{}", i * BATCH + j))
                .ignore();
        }
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(err("add delayed"))?;
    }
    let mut late = Vec::with_capacity(n);
    let deadline = Instant::now() + span + Duration::from_secs(30);
    while late.len() < n {
        if Instant::now() > deadline {
            return Err(CliError::runtime("raw lateness: not done by the deadline"));
        }
        let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&delayed)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut con)
            .await
            .map_err(err("ZRANGE"))?;
        let Some((_, next)) = first.first() else {
            break;
        };
        let wait = (*next as u64).saturating_sub(now_ms());
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        let now = now_ms();
        let due: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(&delayed)
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(BATCH)
            .query_async(&mut con)
            .await
            .map_err(err("ZRANGEBYSCORE"))?;
        if due.is_empty() {
            continue;
        }
        let mut rem = redis::cmd("ZREM");
        rem.arg(&delayed);
        for (m, _) in &due {
            rem.arg(m);
        }
        rem.query_async::<()>(&mut con).await.map_err(err("ZREM"))?;
        let started = now_ms_f();
        late.extend(due.iter().map(|(_, d)| started - *d));
    }
    p99_ms(late, "raw")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rivulet side's add and drain, on the memory backend (the bench itself runs
    /// them on Redis only), with and without job groups.
    #[tokio::test]
    async fn the_rivulet_side_adds_and_drains_every_job() {
        for groups in [0, 7] {
            let queue =
                Queue::new(rivulet::MemoryBackend::new(), "bench.jobs.test").expect("queue");
            if add_parallel(&queue, 0, 250, groups).await.is_err() {
                panic!("add_parallel failed");
            }
            let c = queue.counts().await.expect("counts");
            assert_eq!(c.waiting, 250, "groups {groups}");
            let Ok((elapsed, worker)) = drain(&queue, 250).await else {
                panic!("drain failed");
            };
            assert!(elapsed > Duration::ZERO);
            assert_eq!(worker.stats().completed, 250);
            worker.shutdown().await;
            assert_eq!(queue.counts().await.expect("counts").completed, 250);
        }
    }

    #[test]
    fn a_bench_job_is_about_100_bytes_of_json() {
        let len = serde_json::to_vec(&BenchJob::new(12345)).map_or(0, |v| v.len());
        assert!((90..=110).contains(&len), "{len}");
    }

    #[test]
    fn due_times_spread_over_the_span() {
        let d = due_times(10, Duration::from_secs(5));
        assert_eq!(d.len(), 10);
        assert_eq!(d[9] - d[0], 4500);
        assert!(p99_ms(vec![1.0, -0.5], "x").is_err());
        assert_eq!(p99_ms(vec![3.0, 1.0, 2.0], "x").ok(), Some(3.0));
    }
}
