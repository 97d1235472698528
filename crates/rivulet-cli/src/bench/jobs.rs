//! The jobs scenarios, each against a raw baseline of the same run:
//!
//! * `jobs_add`: jobs added with `add_bulk` in batches of [`BATCH`], against one pipeline
//!   per batch of `HSET <job> …` + `ZADD <waiting> …` per job;
//! * `jobs_process`: a pre-added backlog of no-op jobs drained by a worker at concurrency
//!   [`CONCURRENCY`], against a loop of `ZPOPMIN <waiting> 100`, then a pipeline of
//!   `HSET state active` + `HGET data` per job, whose completions (`HSET state completed` +
//!   `ZADD <completed>`) travel in the pipeline of the next `ZPOPMIN`: two round trips per
//!   batch;
//! * `jobs_redis_cpu_per_job` and `jobs_memory_per_job`: Redis CPU (`INFO cpu`) per job
//!   over that drain, and Redis memory (`INFO memory`) per job of that backlog, from the
//!   same runs as `jobs_process`;
//! * `jobs_idle`: Redis commands per second (`INFO commandstats`) while an idle worker
//!   waits on an empty queue, against one `BLPOP` loop with the same timeout;
//! * `jobs_delay_lateness_p99`: how late delayed jobs start (99th percentile, from each
//!   job's run-at time to its handler's start, on one clock), for jobs due over 2 s,
//!   against a raw client that sleeps until the first due member of a sorted set and pops
//!   what is due. A job that starts early fails the scenario.
//!
//! The rivulet side goes through the public API only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Value;
use rivulet::{HandlerError, Job, Keep, Queue, RedisBackend, Worker};
use serde::{Deserialize, Serialize};

use super::report::Measure;
use super::{BATCH, Run, side, throughput};
use crate::error::CliError;

/// Jobs running at once in `jobs_process`.
const CONCURRENCY: usize = 100;
/// The idle worker's blocking timeout, and the raw `BLPOP`'s.
const IDLE_BLOCK: Duration = Duration::from_secs(1);
/// Time given to an idle side to start before its commands are counted.
const IDLE_SETTLE: Duration = Duration::from_millis(300);

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

/// What one `jobs_process` run measured on one side.
#[derive(Debug, Clone, Copy)]
struct Drained {
    jobs_per_second: f64,
    cpu_us_per_job: f64,
    memory_bytes_per_job: f64,
}

/// The `jobs_process` figures of the latest round, shared by the three scenarios that
/// report them, so the drain runs once per round.
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

fn err(what: &str) -> impl Fn(redis::RedisError) -> CliError + '_ {
    move |e| CliError::runtime(format!("raw jobs baseline: {what}: {e}"))
}

fn encode(n: u64) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec(&BenchJob::new(n))
        .map_err(|e| CliError::runtime(format!("encoding a bench job: {e}")))
}

/// One round of a jobs scenario; the order of the sides alternates with the round.
pub(crate) async fn measure(run: &Run, name: &str, round: usize) -> Result<Measure, CliError> {
    let n = run.sizes.jobs;
    let raw_first = round.is_multiple_of(2);
    match name {
        "jobs_add" => {
            let key = run.key("jobs-add");
            let queue = run.topic("jobs-add");
            let (riv, raw) = if raw_first {
                let r = raw_add(run, &key, n).await?;
                (rivulet_add(run, &queue, n).await, r)
            } else {
                let v = rivulet_add(run, &queue, n).await;
                (v, raw_add(run, &key, n).await?)
            };
            pair(riv.map(|d| throughput(n, d)), throughput(n, raw))
        }
        "jobs_process" | "jobs_redis_cpu_per_job" | "jobs_memory_per_job" => {
            let figures = process_round(run, round, raw_first).await?;
            let pick = |d: &Drained| match name {
                "jobs_process" => d.jobs_per_second,
                "jobs_redis_cpu_per_job" => d.cpu_us_per_job,
                _ => d.memory_bytes_per_job,
            };
            Ok(Measure::pair(pick(&figures.rivulet), pick(&figures.raw)))
        }
        "jobs_delay_lateness_p99" => {
            let n = run.sizes.delayed_jobs;
            let (riv, raw) = if raw_first {
                let r = raw_lateness(run, &run.key("jobs-delay"), n).await?;
                (rivulet_lateness(run, &run.topic("jobs-delay"), n).await, r)
            } else {
                let v = rivulet_lateness(run, &run.topic("jobs-delay"), n).await;
                (v, raw_lateness(run, &run.key("jobs-delay"), n).await?)
            };
            pair(riv, raw)
        }
        "jobs_idle" => {
            let window = run.sizes.idle_window;
            let (riv, raw) = if raw_first {
                let r = raw_idle(run, window).await?;
                (rivulet_idle(run, window).await, r)
            } else {
                let v = rivulet_idle(run, window).await;
                (v, raw_idle(run, window).await?)
            };
            pair(riv, raw)
        }
        other => Err(CliError::usage(format!("unknown scenario {other}"))),
    }
}

fn pair(rivulet: Result<f64, CliError>, raw: f64) -> Result<Measure, CliError> {
    Ok(Measure::pair(rivulet?, raw))
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
    let key = run.key("jobs-process");
    let queue = run.topic("jobs-process");
    let (riv, raw) = if raw_first {
        let r = raw_process(run, &key, n).await?;
        run.cleanup().await?;
        (rivulet_process(run, &queue, n).await, r)
    } else {
        let v = rivulet_process(run, &queue, n).await;
        run.cleanup().await?;
        (v, raw_process(run, &key, n).await?)
    };
    let rivulet = riv?;
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

/// A queue on the bench's Redis, under the bench's key prefix, keeping every finished job
/// (the raw baseline keeps them all too).
async fn open_queue(run: &Run, name: &str, n: usize) -> Result<Queue, CliError> {
    let backend = RedisBackend::builder(run.url.clone())
        .prefix(side::PREFIX)
        .build()
        .await?;
    let keep = Keep::new(n.max(1) as u64, Duration::from_secs(24 * 3600));
    Ok(Queue::builder(backend, name)
        .keep_completed(keep)
        .keep_failed(keep)
        .build()?)
}

async fn add_all(queue: &Queue, n: usize) -> Result<(), CliError> {
    let jobs: Vec<BenchJob> = (0..n as u64).map(BenchJob::new).collect();
    for chunk in jobs.chunks(BATCH) {
        let added = queue
            .add_bulk(chunk.iter().map(|j| queue.add("noop", j)))
            .await?;
        if added.len() != chunk.len() || added.iter().any(|e| e.duplicate) {
            return Err(CliError::runtime(
                "add_bulk did not add every job of a batch",
            ));
        }
    }
    Ok(())
}

async fn rivulet_add(run: &Run, name: &str, n: usize) -> Result<Duration, CliError> {
    let queue = open_queue(run, name, n).await?;
    let start = Instant::now();
    add_all(&queue, n).await?;
    Ok(start.elapsed())
}

async fn noop(job: Job<BenchJob>) -> Result<(), HandlerError> {
    std::hint::black_box(job.data().n);
    Ok(())
}

async fn rivulet_process(run: &Run, name: &str, n: usize) -> Result<Drained, CliError> {
    let queue = open_queue(run, name, n).await?;
    let m0 = run.used_memory().await?;
    add_all(&queue, n).await?;
    let m1 = run.used_memory().await?;
    let c0 = run.redis_cpu().await?;
    let (elapsed, worker) = drain(&queue, n).await?;
    let c1 = run.redis_cpu().await?;
    worker.shutdown().await;
    Ok(Drained {
        jobs_per_second: throughput(n, elapsed),
        cpu_us_per_job: (c1 - c0) * 1e6 / n as f64,
        memory_bytes_per_job: (m1 - m0) / n as f64,
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

async fn rivulet_idle(run: &Run, window: Duration) -> Result<f64, CliError> {
    let queue = open_queue(run, &run.topic("jobs-idle"), 1).await?;
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

// --- the raw side ------------------------------------------------------------------------

async fn raw_add(run: &Run, key: &str, n: usize) -> Result<Duration, CliError> {
    let mut con = run.raw.shared().await?;
    let start = Instant::now();
    raw_add_all(&mut con, key, n).await?;
    Ok(start.elapsed())
}

/// One pipeline per batch: the job's hash and its place in the waiting set.
async fn raw_add_all(
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    n: usize,
) -> Result<(), CliError> {
    let waiting = format!("{key}:waiting");
    let mut i = 0;
    while i < n {
        let k = (n - i).min(BATCH);
        let mut pipe = redis::pipe();
        let added_at = now_ms();
        for j in i..i + k {
            let id = format!("{:032x}", rand::random::<u128>());
            pipe.cmd("HSET")
                .arg(format!("{key}:job:{id}"))
                .arg("name")
                .arg("noop")
                .arg("data")
                .arg(encode(j as u64)?)
                .arg("state")
                .arg("waiting")
                .arg("attempt")
                .arg(0)
                .arg("max_attempts")
                .arg(5)
                .arg("added_at")
                .arg(added_at)
                .ignore();
            pipe.cmd("ZADD").arg(&waiting).arg(j).arg(&id).ignore();
        }
        pipe.query_async::<()>(con).await.map_err(err("add"))?;
        i += k;
    }
    Ok(())
}

/// Members of a `ZPOPMIN … WITHSCORES`-style reply (flat or nested pairs).
fn popped_members(reply: Value) -> Vec<String> {
    let text = |v: Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::SimpleString(s) => Some(s),
        _ => None,
    };
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut flat = items.into_iter();
    while let Some(item) = flat.next() {
        match item {
            Value::Array(pair) => out.extend(pair.into_iter().next().and_then(text)),
            member => {
                out.extend(text(member));
                // The score follows the member in the flat form.
                flat.next();
            }
        }
    }
    out
}

async fn raw_drain(
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    n: usize,
    deadline: Instant,
) -> Result<(), CliError> {
    let waiting = format!("{key}:waiting");
    let completed = format!("{key}:completed");
    let mut done = 0usize;
    let mut settle: Vec<String> = Vec::new();
    loop {
        if Instant::now() > deadline {
            return Err(CliError::runtime(format!(
                "raw jobs drain: {done} of {n} by the deadline"
            )));
        }
        // Round trip 1: the previous batch's completions, then the next batch.
        let mut pipe = redis::pipe();
        let finished_at = now_ms();
        let settling = !settle.is_empty();
        for id in settle.drain(..) {
            pipe.cmd("HSET")
                .arg(format!("{key}:job:{id}"))
                .arg("state")
                .arg("completed")
                .arg("finished_at")
                .arg(finished_at)
                .ignore();
            pipe.cmd("ZADD")
                .arg(&completed)
                .arg(finished_at)
                .arg(&id)
                .ignore();
        }
        if done >= n {
            if settling {
                pipe.query_async::<()>(con).await.map_err(err("settle"))?;
            }
            return Ok(());
        }
        pipe.cmd("ZPOPMIN").arg(&waiting).arg(BATCH);
        let (reply,): (Value,) = pipe.query_async(con).await.map_err(err("ZPOPMIN"))?;
        let ids = popped_members(reply);
        if ids.is_empty() {
            return Err(CliError::runtime(format!(
                "raw jobs drain: the waiting set ran dry at {done} of {n}"
            )));
        }
        // Round trip 2: mark them active and read their data.
        let mut pipe = redis::pipe();
        let started_at = now_ms();
        for id in &ids {
            let job = format!("{key}:job:{id}");
            pipe.cmd("HSET")
                .arg(&job)
                .arg("state")
                .arg("active")
                .arg("started_at")
                .arg(started_at)
                .ignore();
            pipe.cmd("HGET").arg(&job).arg("data");
        }
        let data: Vec<Option<Vec<u8>>> = pipe.query_async(con).await.map_err(err("lease"))?;
        for d in data.iter().flatten() {
            // The no-op handler: decode the data, as the rivulet worker does.
            if let Ok(job) = serde_json::from_slice::<BenchJob>(d) {
                std::hint::black_box(job.n);
            }
        }
        done += ids.len();
        settle = ids;
    }
}

async fn raw_process(run: &Run, key: &str, n: usize) -> Result<Drained, CliError> {
    let mut con = run.raw.shared().await?;
    let m0 = run.used_memory().await?;
    raw_add_all(&mut con, key, n).await?;
    let m1 = run.used_memory().await?;
    let c0 = run.redis_cpu().await?;
    let start = Instant::now();
    raw_drain(&mut con, key, n, super::raw::deadline_for(n)).await?;
    let elapsed = start.elapsed();
    let c1 = run.redis_cpu().await?;
    Ok(Drained {
        jobs_per_second: throughput(n, elapsed),
        cpu_us_per_job: (c1 - c0) * 1e6 / n as f64,
        memory_bytes_per_job: (m1 - m0) / n as f64,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn popped_members_reads_both_reply_shapes() {
        let flat = Value::Array(vec![bulk("a"), bulk("1"), bulk("b"), bulk("2")]);
        assert_eq!(popped_members(flat), vec!["a", "b"]);
        let nested = Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(1.0)]),
            Value::Array(vec![bulk("b"), Value::Double(2.0)]),
        ]);
        assert_eq!(popped_members(nested), vec!["a", "b"]);
        assert!(popped_members(Value::Nil).is_empty());
        assert!(popped_members(Value::Array(Vec::new())).is_empty());
    }

    /// The rivulet side's add and drain, on the memory backend (the bench itself runs
    /// them on Redis only).
    #[tokio::test]
    async fn the_rivulet_side_adds_and_drains_every_job() {
        let queue = Queue::new(rivulet::MemoryBackend::new(), "bench.jobs.test").expect("queue");
        if add_all(&queue, 250).await.is_err() {
            panic!("add_all failed");
        }
        assert_eq!(queue.counts().await.expect("counts").waiting, 250);
        let Ok((elapsed, worker)) = drain(&queue, 250).await else {
            panic!("drain failed");
        };
        assert!(elapsed > Duration::ZERO);
        assert_eq!(worker.stats().completed, 250);
        worker.shutdown().await;
        assert_eq!(queue.counts().await.expect("counts").completed, 250);
    }

    #[test]
    fn a_bench_job_is_about_100_bytes_of_json() {
        let len = encode(12345).map(|v| v.len()).unwrap_or(0);
        assert!((90..=110).contains(&len), "{len}");
    }
}

// --- lateness of delayed jobs ----------------------------------------------------------

/// When the `n` delayed jobs of a lateness run are due: spread evenly over 2 s, starting
/// 300 ms from now (ms since the epoch).
fn due_times(n: usize) -> Vec<u64> {
    let start = now_ms() + 300;
    (0..n as u64)
        .map(|i| start + i * 2_000 / n.max(1) as u64)
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

async fn rivulet_lateness(run: &Run, name: &str, n: usize) -> Result<f64, CliError> {
    let queue = open_queue(run, name, n).await?;
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
    let due = due_times(n);
    for chunk in due.chunks(BATCH) {
        queue
            .add_bulk(chunk.iter().map(|d| {
                queue
                    .add("delayed", &DueJob { due_ms: *d })
                    .run_at(UNIX_EPOCH + Duration::from_millis(*d))
            }))
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let outcome = wait_completed(&worker, n, deadline).await;
    worker.shutdown().await;
    outcome?;
    let late = late.lock().map(|v| v.clone()).unwrap_or_default();
    p99_ms(late, "rivulet")
}

async fn raw_lateness(run: &Run, key: &str, n: usize) -> Result<f64, CliError> {
    let mut con = run.raw.shared().await?;
    let delayed = format!("{key}:delayed");
    let due = due_times(n);
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
    let deadline = Instant::now() + Duration::from_secs(30);
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
