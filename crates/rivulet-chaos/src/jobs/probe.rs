//! The job probes, separate processes on rivulet's public API only:
//!
//! * the **adder** adds the jobs of its plan (batches through `add_bulk`, or one at a
//!   time) and logs one line per job with the call's outcome (`ok` / `fail` /
//!   `unknown`), whether it was a duplicate, and the id it got back;
//! * the **worker** runs a `Worker` whose handler does what each job's data says (sleep,
//!   fail some attempts, fail for good, panic once, hang past its timeout, wait to be
//!   cancelled) and logs every start and every outcome it is about to return, in one
//!   `write` each, **before** returning, so a kill after the line is a rerun, never a
//!   false loss.
//!
//! The self-test worker (`broken`) completes without honouring its lease: before it
//! returns it writes its own lease token and attempt back into the job's record, so a
//! late completion from a worker whose lease expired is accepted. The checker must see
//! that.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use rivulet::{HandlerError, Job, JobId, Keep, Queue, RetryPolicy};

use crate::probe::publisher::classify;
use crate::probe::{Connect, JsonLines, PublishResult, Target, now_ms};

/// What a job's handler does: the job's data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Spec {
    /// The job's id (the adder chooses it).
    pub(crate) id: String,
    /// How long the handler runs (ms).
    #[serde(default)]
    pub(crate) ms: u64,
    /// The first `fail` attempts return a retryable error.
    #[serde(default)]
    pub(crate) fail: u32,
    /// Every attempt returns a permanent error.
    #[serde(default)]
    pub(crate) permanent: bool,
    /// The first attempt panics.
    #[serde(default)]
    pub(crate) panic: bool,
    /// Waits up to `ms` for its cancellation, then completes.
    #[serde(default)]
    pub(crate) cancel: bool,
    #[serde(default)]
    pub(crate) pad: String,
}

/// One job the adder adds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AddSpec {
    pub(crate) spec: Spec,
    /// Due this long after the add call starts.
    #[serde(default)]
    pub(crate) delay_ms: Option<u64>,
    #[serde(default)]
    pub(crate) priority: Option<u32>,
    /// A dedup key held for the whole run (`dedup_for`, one hour).
    #[serde(default)]
    pub(crate) dedup: Option<String>,
    /// The handler's timeout.
    #[serde(default)]
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) attempts: u32,
    #[serde(default)]
    pub(crate) group: Option<String>,
    /// A flow: these children, in the run's second queue, come first (added with the
    /// job, one `add` call; `batch` must be 1).
    #[serde(default)]
    pub(crate) children: Vec<Spec>,
}

/// The second queue of a run (the flows' children), `<queue>.kids`.
pub(crate) fn kids_queue(name: &str) -> String {
    format!("{name}.kids")
}

/// The queue options every process of a run uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QueueOpts {
    pub(crate) name: String,
    /// The first retry's delay (ms); doubling, at most 1 s.
    pub(crate) backoff_ms: u64,
}

impl QueueOpts {
    /// The run's queue: every finished job kept for the checker, events kept.
    pub(crate) async fn open(&self, connect: &Connect) -> Result<Queue, String> {
        let backend = connect
            .backend()
            .await
            .map_err(|e| format!("backend: {e}"))?;
        let keep = Keep::new(10_000_000, Duration::from_secs(24 * 3600));
        Queue::builder(backend, &self.name)
            .keep_completed(keep)
            .keep_failed(keep)
            .events_cap(10_000_000)
            .retry(
                RetryPolicy::default()
                    .backoff(Duration::from_millis(self.backoff_ms))
                    .max_delay(Duration::from_secs(1)),
            )
            .build()
            .map_err(|e| format!("queue: {e}"))
    }

    /// Opens the queue, retrying until `deadline_ms` (Redis may be starting).
    async fn open_until(&self, connect: &Connect) -> Result<Queue, String> {
        let deadline = now_ms() + connect.start_deadline_ms;
        loop {
            match self.open(connect).await {
                Ok(q) => return Ok(q),
                Err(e) if now_ms() < deadline => {
                    tracing::warn!(error = %e, "job probe: start failed, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What the adder is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AdderConfig {
    pub(crate) connect: Connect,
    pub(crate) queue: QueueOpts,
    pub(crate) jobs: Vec<AddSpec>,
    /// Jobs per call: 1 is `add(..).await`, more is `add_bulk`.
    pub(crate) batch: usize,
    /// Calls per second.
    pub(crate) calls_per_sec: u64,
    pub(crate) log: PathBuf,
}

/// One add, as the adder logs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AddRecord {
    pub(crate) id: String,
    pub(crate) t_invoke: u64,
    pub(crate) t_done: u64,
    pub(crate) result: PublishResult,
    /// Nothing written: the id or the dedup key was taken (`holder` has it).
    #[serde(default)]
    pub(crate) duplicate: bool,
    /// The id the add returned (the holder's for a duplicate).
    #[serde(default)]
    pub(crate) holder: Option<String>,
    #[serde(default)]
    pub(crate) run_at_ms: Option<u64>,
    #[serde(default)]
    pub(crate) dedup: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// What one add returned, or how it failed.
type Added = Result<rivulet::Enqueued, (PublishResult, String)>;

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Adds the plan's jobs, one line per job.
pub(crate) async fn run_adder(cfg: AdderConfig) -> Result<(), String> {
    let log = JsonLines::open(&cfg.log).map_err(|e| format!("open log: {e}"))?;
    let queue = cfg.queue.open_until(&cfg.connect).await?;
    let kids = QueueOpts {
        name: kids_queue(&cfg.queue.name),
        ..cfg.queue.clone()
    }
    .open_until(&cfg.connect)
    .await?;
    let mut tick = tokio::time::interval(
        Duration::from_secs(1) / cfg.calls_per_sec.clamp(1, 1_000_000) as u32,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for chunk in cfg.jobs.chunks(cfg.batch.max(1)) {
        tick.tick().await;
        let t_invoke = now_ms();
        let run_at = |a: &AddSpec| a.delay_ms.map(|d| t_invoke + d);
        let build = |a: &AddSpec| {
            let mut add = queue
                .add("probe", &a.spec)
                .job_id(&a.spec.id)
                .attempts(a.attempts);
            if let Some(ms) = run_at(a) {
                add = add.run_at(at(ms));
            }
            if let Some(p) = a.priority {
                add = add.priority(p);
            }
            if let Some(k) = &a.dedup {
                add = add.dedup_for(k, Duration::from_secs(3600));
            }
            if let Some(t) = a.timeout_ms {
                add = add.timeout(Duration::from_millis(t));
            }
            if let Some(g) = &a.group {
                add = add.group(g);
            }
            add
        };
        let failed = |e: rivulet::Error| (classify(&e), e.to_string());
        let mut children: Vec<(&Spec, Added)> = Vec::new();
        let outcome: Vec<Added> = if chunk.len() == 1 && !chunk[0].children.is_empty() {
            let a = &chunk[0];
            let child = |c: &Spec| kids.add("probe", c).job_id(&c.id).attempts(a.attempts);
            let mut flow = build(a).child(child(&a.children[0]));
            for c in &a.children[1..] {
                flow = flow.child(child(c));
            }
            match flow.await {
                Ok(f) => {
                    for (c, node) in a.children.iter().zip(f.nodes.iter().skip(1)) {
                        children.push((c, Ok(node.1.clone())));
                    }
                    vec![Ok(f.root)]
                }
                Err(e) => {
                    let f = failed(e);
                    children.extend(a.children.iter().map(|c| (c, Err(f.clone()))));
                    vec![Err(f)]
                }
            }
        } else if chunk.len() == 1 {
            vec![build(&chunk[0]).await.map_err(failed)]
        } else {
            match queue.add_bulk(chunk.iter().map(build)).await {
                Ok(all) => all.into_iter().map(Ok).collect(),
                Err(e) => {
                    let f = failed(e);
                    chunk.iter().map(|_| Err(f.clone())).collect()
                }
            }
        };
        let t_done = now_ms();
        let jobs = chunk
            .iter()
            .zip(outcome)
            .map(|(a, r)| (&a.spec.id, run_at(a), a.dedup.clone(), r))
            .chain(children.into_iter().map(|(c, r)| (&c.id, None, None, r)));
        for (id, run_at_ms, dedup, r) in jobs {
            let mut rec = AddRecord {
                id: id.clone(),
                t_invoke,
                t_done,
                result: PublishResult::Ok,
                duplicate: false,
                holder: None,
                run_at_ms,
                dedup,
                error: None,
            };
            match r {
                Ok(e) => {
                    rec.duplicate = e.duplicate;
                    rec.holder = Some(e.id.to_string());
                }
                Err((result, error)) => {
                    rec.result = result;
                    rec.error = Some(error);
                }
            }
            log.append(&rec).map_err(|e| format!("log: {e}"))?;
        }
    }
    Ok(())
}

/// What a job worker process is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerConfig {
    pub(crate) connect: Connect,
    pub(crate) queue: QueueOpts,
    pub(crate) name: String,
    pub(crate) concurrency: usize,
    pub(crate) lease_ms: u64,
    pub(crate) renew_ms: u64,
    pub(crate) stall_check_ms: u64,
    pub(crate) drain_timeout_ms: u64,
    pub(crate) block_ms: u64,
    /// Also run the queue's job schedulers.
    pub(crate) schedulers: bool,
    /// The self-test's worker, which completes whatever its lease says.
    pub(crate) broken: bool,
    pub(crate) log: PathBuf,
}

impl crate::harness::procs::SlotConfig for WorkerConfig {
    const SUBCOMMAND: &'static str = "job-worker";

    fn for_process(&self, name: String, log: PathBuf) -> Self {
        WorkerConfig {
            name,
            log,
            ..self.clone()
        }
    }

    fn base_name(&self) -> &str {
        &self.name
    }
}

/// What a worker logs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WorkEv {
    Ready,
    Start,
    /// About to return `Ok`.
    Ok,
    /// About to return an error.
    Fail,
    /// About to panic.
    Panic,
    /// Saw its cancellation and is about to return.
    Cancelled,
    /// SIGTERM: draining.
    Term,
}

/// One worker event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkRecord {
    pub(crate) ev: WorkEv,
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) attempt: u32,
    pub(crate) t: u64,
    pub(crate) pid: u32,
}

struct Ctx {
    log: JsonLines,
    pid: u32,
    /// The self-test's raw connection and the job key prefix (`broken` only).
    forge: Option<(redis::aio::MultiplexedConnection, String)>,
}

impl Ctx {
    fn event(&self, ev: WorkEv, id: &str, attempt: u32) {
        let rec = WorkRecord {
            ev,
            id: id.to_owned(),
            attempt,
            t: now_ms(),
            pid: self.pid,
        };
        if let Err(e) = self.log.append(&rec) {
            tracing::error!(error = %e, "job worker: cannot log");
        }
    }

    /// The self-test's forgery: the job's record made to look leased by this run again.
    async fn forge(&self, id: &str, token: Option<i64>, attempt: u32) {
        let (Some((con, prefix)), Some(token)) = (&self.forge, token) else {
            return;
        };
        let mut con = con.clone();
        let _: Result<(), _> = redis::cmd("HSET")
            .arg(format!("{prefix}/job/{id}"))
            .arg("state")
            .arg("active")
            .arg("token")
            .arg(token)
            .arg("attempt")
            .arg(attempt)
            .query_async(&mut con)
            .await;
    }

    async fn token(&self, id: &str) -> Option<i64> {
        let (con, prefix) = self.forge.as_ref()?;
        let mut con = con.clone();
        redis::cmd("HGET")
            .arg(format!("{prefix}/job/{id}"))
            .arg("token")
            .query_async::<Option<i64>>(&mut con)
            .await
            .ok()
            .flatten()
    }
}

async fn handle(ctx: Arc<Ctx>, job: Job<Spec>) -> Result<(), HandlerError> {
    let mut s = job.data().clone();
    // The job's own id: the adder's jobs carry it in their data too, a scheduler's
    // jobs (`sched:<id>:<tick>`) share one template.
    s.id = job.id().to_string();
    let attempt = job.attempt();
    ctx.event(WorkEv::Start, &s.id, attempt);
    let token = ctx.token(&s.id).await;
    let run = tokio::time::sleep(Duration::from_millis(s.ms));
    if s.cancel {
        tokio::select! {
            () = job.cancellation().cancelled() => {
                ctx.event(WorkEv::Cancelled, &s.id, attempt);
                return Err(HandlerError::permanent("cancelled"));
            }
            () = run => {}
        }
    } else {
        run.await;
    }
    if s.panic && attempt <= 1 {
        ctx.event(WorkEv::Panic, &s.id, attempt);
        panic!("planned panic in job {}", s.id);
    }
    if s.permanent {
        ctx.event(WorkEv::Fail, &s.id, attempt);
        return Err(HandlerError::permanent("planned permanent failure"));
    }
    if attempt <= s.fail {
        ctx.event(WorkEv::Fail, &s.id, attempt);
        return Err(HandlerError::retryable("planned failure"));
    }
    ctx.forge(&s.id, token, attempt).await;
    ctx.event(WorkEv::Ok, &s.id, attempt);
    Ok(())
}

/// Runs a worker until SIGTERM, then drains (the worker's drain timeout) and returns.
pub(crate) async fn run_worker(cfg: WorkerConfig) -> Result<(), String> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("signal: {e}"))?;
    let forge = if cfg.broken {
        let Target::Single { url } = &cfg.connect.target else {
            return Err("the broken worker runs on a single server only".into());
        };
        let client = redis::Client::open(url.as_str()).map_err(|e| format!("redis: {e}"))?;
        let con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("redis: {e}"))?;
        Some((con, format!("{{rivulet/queue/{}}}", cfg.queue.name)))
    } else {
        None
    };
    let ctx = Arc::new(Ctx {
        log: JsonLines::open(&cfg.log).map_err(|e| format!("open log: {e}"))?,
        pid: std::process::id(),
        forge,
    });
    let queue = cfg.queue.open_until(&cfg.connect).await?;
    let deadline = now_ms() + cfg.connect.start_deadline_ms;
    let worker = loop {
        let c = ctx.clone();
        let started = queue
            .worker(move |job: Job<Spec>| handle(c.clone(), job))
            .concurrency(cfg.concurrency)
            .lease(Duration::from_millis(cfg.lease_ms))
            .renew_every(Duration::from_millis(cfg.renew_ms))
            .stall_check_every(Duration::from_millis(cfg.stall_check_ms))
            .max_stalled(1000)
            .drain_timeout(Duration::from_millis(cfg.drain_timeout_ms))
            .block_timeout(Duration::from_millis(cfg.block_ms))
            .name(cfg.name.clone())
            .schedulers(cfg.schedulers)
            .await;
        match started {
            Ok(w) => break w,
            Err(e) if now_ms() < deadline => {
                tracing::warn!(error = %e, "job worker: start failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("worker: {e}")),
        }
    };
    ctx.event(WorkEv::Ready, "", 0);
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ctx.event(WorkEv::Term, "", 0);
    worker.shutdown().await;
    Ok(())
}

/// A job id of the run.
pub(crate) fn job_id(id: &str) -> Result<JobId, String> {
    JobId::new(id).map_err(|e| format!("job id {id}: {e}"))
}
