//! The demo's orchestration part, after the invoices: a receipt job per order on a
//! rate-limited queue whose jobs belong to tenants (job groups, each capped), a flow
//! (a settlement waiting for one statement per region, in another queue), and a
//! scheduler firing a heartbeat every [`HEARTBEAT`] while the rest runs.
//!
//! The checks read what the store recorded, not the demo's own clock where the store
//! decides: the starts in any second come from the jobs' `started_at` (the store's
//! clock, stamped atomically with the lease that the rate limit guards); the per-tenant
//! concurrency is measured in the handlers (a job runs only while the store counts it
//! active, so what the handlers see can only be below the store's cap); one heartbeat
//! per tick is read from the job ids the scheduler derived from its ticks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet::{ChildRef, HandlerError, Job, JobState, Keep, Limits, Queue, Rate};
use serde::{Deserialize, Serialize};

use super::backend::DemoBackend;
use super::report::Check;
use crate::error::CliError;

/// The queue of receipts (rate-limited, jobs in tenant groups).
pub(crate) const RECEIPTS: &str = "receipts";
/// The flow's queues: the parent's and its children's.
const SETTLEMENTS: &str = "settlements";
const STATEMENTS: &str = "statements";
/// The scheduler's queue and id.
const HEARTBEATS: &str = "heartbeats";
const HEARTBEAT_ID: &str = "heartbeat";
/// How often the heartbeat scheduler fires.
const HEARTBEAT: Duration = Duration::from_millis(250);
/// Receipts per run, at most (one per order, the first ones).
const MAX_RECEIPTS: usize = 800;
/// Receipts started per second, queue-wide, whatever the number of workers.
const RATE_PER_SECOND: u32 = 400;
/// Receipts of one tenant running at once.
const TENANT_CAP: u32 = 2;
/// Small tenants (the big one has half the receipts).
const SMALL_TENANTS: u64 = 6;
const BIG_TENANT: &str = "tenant-big";
/// How many receipts the worker runs at once (above what the caps allow, so the caps
/// are what holds it back).
const CONCURRENCY: usize = 32;
/// Receipts each small tenant needs for the fairness check (fewer: it may finish in the
/// same turn as the big tenant's last).
const FAIRNESS_MIN_JOBS: u64 = 5;
/// Regions of the settlement flow (one statement child each).
const REGIONS: usize = 3;
/// How long the demo waits for this part.
const DEADLINE: Duration = Duration::from_secs(60);

/// An order as this part needs it.
#[derive(Debug, Clone)]
pub(crate) struct OrderRef {
    pub(crate) order_id: u64,
    pub(crate) amount_cents: u64,
}

/// A receipt job's data.
#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    order_id: u64,
    tenant: String,
}

/// A statement job's data: the amounts of one region's orders.
#[derive(Debug, Serialize, Deserialize)]
struct Statement {
    region: usize,
    amounts: Vec<u64>,
}

/// What the orchestration part measured. Serialized as the summary's `orchestration`.
#[derive(Debug, Serialize)]
pub(crate) struct OrchestrationReport {
    pub(crate) receipts: ReceiptsReport,
    pub(crate) flow: FlowReport,
    pub(crate) scheduler: SchedulerReport,
    pub(crate) elapsed_ms: f64,
    pub(crate) check: Check,
}

/// The rate-limited queue with tenant groups.
#[derive(Debug, Serialize)]
pub(crate) struct ReceiptsReport {
    pub(crate) queue: String,
    pub(crate) jobs: u64,
    pub(crate) completed: u64,
    pub(crate) rate_limit_per_second: u32,
    /// The most starts in any one-second window, from the store's start stamps.
    pub(crate) max_starts_in_a_second: u64,
    pub(crate) tenant_cap: u32,
    pub(crate) tenants: Vec<TenantReport>,
    /// Whether every small tenant had enough receipts (at least
    /// [`FAIRNESS_MIN_JOBS`]) for "the small ones finish first" to be checked.
    pub(crate) fairness_checked: bool,
}

/// One tenant of the receipts queue.
#[derive(Debug, Serialize)]
pub(crate) struct TenantReport {
    pub(crate) tenant: String,
    pub(crate) jobs: u64,
    /// The most of its receipts the handlers saw running at once.
    pub(crate) max_running: u64,
    /// When its last receipt finished, from the first add.
    pub(crate) finished_ms: f64,
}

/// The settlement flow.
#[derive(Debug, Serialize)]
pub(crate) struct FlowReport {
    pub(crate) parent_queue: String,
    pub(crate) children_queue: String,
    pub(crate) children: u64,
    /// How often the parent's handler ran (1: after every child, once).
    pub(crate) parent_runs: u64,
    /// Child results the parent read.
    pub(crate) results_seen: u64,
    /// The total the parent computed from its children's results, and the expected one.
    pub(crate) total_cents: u64,
    pub(crate) expected_cents: u64,
}

/// The heartbeat scheduler.
#[derive(Debug, Serialize)]
pub(crate) struct SchedulerReport {
    pub(crate) queue: String,
    pub(crate) every_ms: u64,
    /// Jobs the scheduler added (completed), and distinct ticks among them.
    pub(crate) jobs: u64,
    pub(crate) distinct_ticks: u64,
    /// Ticks that are not multiples of the interval (must be 0).
    pub(crate) misaligned: u64,
}

/// The tenant of the `i`-th receipt: every other one is the big tenant's.
fn tenant_of(i: usize) -> String {
    if i.is_multiple_of(2) {
        BIG_TENANT.to_owned()
    } else {
        format!("tenant-{}", (i / 2) as u64 % SMALL_TENANTS + 1)
    }
}

/// Per-tenant running counts, seen by the handlers.
#[derive(Debug, Default)]
struct Running {
    now: HashMap<String, u64>,
    max: HashMap<String, u64>,
    finished: HashMap<String, Instant>,
}

/// Runs the orchestration part; `None` when interrupted.
pub(crate) async fn run(
    backend: &DemoBackend,
    orders: &[OrderRef],
) -> Result<Option<OrchestrationReport>, CliError> {
    let started = Instant::now();
    let keep = Keep::new(10_000, Duration::from_secs(3600));

    // The scheduler first, so it fires while the rest runs.
    let heartbeats = backend.queue(HEARTBEATS).keep_completed(keep).build()?;
    heartbeats
        .scheduler(HEARTBEAT_ID)
        .every(HEARTBEAT)
        .job("heartbeat", &serde_json::json!({}))
        .upsert()
        .await?;
    // Its worker also runs the queue's scheduler runner.
    let heartbeat_worker = heartbeats
        .worker(|_job: Job<serde_json::Value>| async move { Ok::<_, HandlerError>(()) })
        .await?;

    let receipts = receipts_part(backend, orders, keep).await;
    let flow = flow_part(backend, orders, keep).await;

    // Let the scheduler fire at least twice, then stop it.
    let wait_ticks = HEARTBEAT * 3;
    if started.elapsed() < wait_ticks {
        tokio::time::sleep(wait_ticks - started.elapsed()).await;
    }
    heartbeats.remove_scheduler(HEARTBEAT_ID).await?;
    let scheduler = scheduler_part(&heartbeats).await;
    heartbeat_worker.shutdown().await;

    let (Some(receipts), Some(flow)) = (receipts?, flow?) else {
        return Ok(None);
    };
    let scheduler = scheduler?;
    let check = verdict(&receipts, &flow, &scheduler);
    Ok(Some(OrchestrationReport {
        receipts,
        flow,
        scheduler,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        check,
    }))
}

async fn receipts_part(
    backend: &DemoBackend,
    orders: &[OrderRef],
    keep: Keep,
) -> Result<Option<ReceiptsReport>, CliError> {
    let queue = backend.queue(RECEIPTS).keep_completed(keep).build()?;
    queue
        .set_limits(
            Limits::new()
                .rate(Rate::new(RATE_PER_SECOND, Duration::from_secs(1)))
                .group_concurrency(TENANT_CAP),
        )
        .await?;
    let orders = &orders[..orders.len().min(MAX_RECEIPTS)];
    let mut per_tenant: BTreeMap<String, u64> = BTreeMap::new();
    // Added while the queue is paused, so every tenant's receipts wait together and
    // the turns are the groups', not the order of the adds.
    queue.pause().await?;
    for (n, chunk) in orders.chunks(100).enumerate() {
        let jobs: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let tenant = tenant_of(n * 100 + i);
                *per_tenant.entry(tenant.clone()).or_default() += 1;
                queue
                    .add(
                        "receipt",
                        &Receipt {
                            order_id: o.order_id,
                            tenant: tenant.clone(),
                        },
                    )
                    .group(&tenant)
            })
            .collect();
        queue.add_bulk(jobs).await?;
    }
    let running = Arc::new(Mutex::new(Running::default()));
    let r = running.clone();
    let worker = queue
        .worker(move |job: Job<Receipt>| {
            let r = r.clone();
            async move {
                let tenant = job.data().tenant.clone();
                {
                    let mut g = r.lock().map_err(|_| HandlerError::permanent("poisoned"))?;
                    let now = g.now.entry(tenant.clone()).or_default();
                    *now += 1;
                    let now = *now;
                    let max = g.max.entry(tenant.clone()).or_default();
                    *max = (*max).max(now);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                let mut g = r.lock().map_err(|_| HandlerError::permanent("poisoned"))?;
                if let Some(now) = g.now.get_mut(&tenant) {
                    *now = now.saturating_sub(1);
                }
                g.finished.insert(tenant, Instant::now());
                Ok::<_, HandlerError>(())
            }
        })
        .concurrency(CONCURRENCY)
        .await?;
    queue.resume().await?;
    let resumed = Instant::now();
    let total = orders.len() as u64;
    let done = wait_for(|| {
        let queue = queue.clone();
        async move { Ok(queue.counts().await?.completed >= total) }
    })
    .await;
    worker.shutdown().await;
    if !done? {
        return Ok(None);
    }

    // The store's start stamps of every receipt.
    let mut starts: Vec<u64> = Vec::with_capacity(orders.len());
    let mut cursor: Option<String> = None;
    loop {
        let page = queue
            .jobs(JobState::Completed, cursor.as_deref(), 500)
            .await?;
        starts.extend(page.jobs.iter().filter_map(|j| j.started_at_ms));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    starts.sort_unstable();
    let max_in_a_second = max_in_window(&starts, 1000);
    let completed = starts.len() as u64;

    let g = running
        .lock()
        .map_err(|_| CliError::runtime("the receipts' tally was poisoned"))?;
    let fairness_checked = per_tenant.len() as u64 == SMALL_TENANTS + 1
        && per_tenant
            .iter()
            .filter(|(t, _)| t.as_str() != BIG_TENANT)
            .all(|(_, n)| *n >= FAIRNESS_MIN_JOBS);
    let tenants = per_tenant
        .into_iter()
        .map(|(tenant, jobs)| TenantReport {
            max_running: g.max.get(&tenant).copied().unwrap_or(0),
            finished_ms: g.finished.get(&tenant).map_or(0.0, |t| {
                t.saturating_duration_since(resumed).as_secs_f64() * 1000.0
            }),
            tenant,
            jobs,
        })
        .collect();
    Ok(Some(ReceiptsReport {
        queue: RECEIPTS.to_owned(),
        jobs: total,
        completed,
        rate_limit_per_second: RATE_PER_SECOND,
        max_starts_in_a_second: max_in_a_second,
        tenant_cap: TENANT_CAP,
        tenants,
        fairness_checked,
    }))
}

/// The most stamps (sorted, ms) in any window `[t, t + width)`.
fn max_in_window(sorted: &[u64], width: u64) -> u64 {
    let mut best = 0;
    let mut lo = 0;
    for (hi, &t) in sorted.iter().enumerate() {
        while sorted[lo] + width <= t {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best as u64
}

async fn flow_part(
    backend: &DemoBackend,
    orders: &[OrderRef],
    keep: Keep,
) -> Result<Option<FlowReport>, CliError> {
    let parents = backend.queue(SETTLEMENTS).keep_completed(keep).build()?;
    let children = backend.queue(STATEMENTS).keep_completed(keep).build()?;
    let mut regions: Vec<Vec<u64>> = vec![Vec::new(); REGIONS];
    for o in orders {
        regions[(o.order_id as usize) % REGIONS].push(o.amount_cents);
    }
    let expected: u64 = orders.iter().map(|o| o.amount_cents).sum();
    let mut flow = parents.flow("settlement", &serde_json::json!({"regions": REGIONS}));
    for (region, amounts) in regions.into_iter().enumerate() {
        flow = flow.child(children.add("statement", &Statement { region, amounts }));
    }
    let added = flow.await?;

    let statement_worker = children
        .worker(|job: Job<Statement>| async move {
            Ok::<_, HandlerError>(job.data().amounts.iter().sum::<u64>())
        })
        .await?;
    let runs = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicU64::new(0));
    let (r, s) = (runs.clone(), seen.clone());
    let parent_worker = parents
        .worker(move |job: Job<serde_json::Value>| {
            let (r, s) = (r.clone(), s.clone());
            async move {
                r.fetch_add(1, Ordering::Relaxed);
                let results: BTreeMap<ChildRef, u64> = job
                    .children_results()
                    .await
                    .map_err(|e| HandlerError::retryable(e.to_string()))?;
                s.store(results.len() as u64, Ordering::Relaxed);
                Ok::<_, HandlerError>(results.values().sum::<u64>())
            }
        })
        .await?;
    let root = added.root.id.clone();
    let done = wait_for(|| {
        let parents = parents.clone();
        let root = root.clone();
        async move {
            Ok(parents
                .job(&root)
                .await?
                .is_some_and(|j| j.state == JobState::Completed))
        }
    })
    .await;
    statement_worker.shutdown().await;
    parent_worker.shutdown().await;
    if !done? {
        return Ok(None);
    }
    let total = parents
        .job(&root)
        .await?
        .and_then(|j| j.result)
        .and_then(|r| serde_json::from_slice::<u64>(&r).ok())
        .unwrap_or(0);
    Ok(Some(FlowReport {
        parent_queue: SETTLEMENTS.to_owned(),
        children_queue: STATEMENTS.to_owned(),
        children: REGIONS as u64,
        parent_runs: runs.load(Ordering::Relaxed),
        results_seen: seen.load(Ordering::Relaxed),
        total_cents: total,
        expected_cents: expected,
    }))
}

async fn scheduler_part(queue: &Queue) -> Result<SchedulerReport, CliError> {
    // The last tick's job may still run: wait until nothing is left unfinished.
    wait_for(|| {
        let queue = queue.clone();
        async move {
            let c = queue.counts().await?;
            Ok(c.waiting + c.active + c.delayed == 0)
        }
    })
    .await?;
    let mut ticks: Vec<u64> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = queue
            .jobs(JobState::Completed, cursor.as_deref(), 500)
            .await?;
        for j in &page.jobs {
            // `sched:<scheduler id>:<tick ms>`
            if let Some(t) =
                j.id.as_str()
                    .strip_prefix(&format!("sched:{HEARTBEAT_ID}:"))
                    .and_then(|t| t.parse::<u64>().ok())
            {
                ticks.push(t);
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let every_ms = u64::try_from(HEARTBEAT.as_millis()).unwrap_or(u64::MAX);
    let distinct: HashSet<u64> = ticks.iter().copied().collect();
    Ok(SchedulerReport {
        queue: HEARTBEATS.to_owned(),
        every_ms,
        jobs: ticks.len() as u64,
        distinct_ticks: distinct.len() as u64,
        misaligned: ticks.iter().filter(|t| !t.is_multiple_of(every_ms)).count() as u64,
    })
}

/// Polls `done` until it is true or the deadline passes; `false` on Ctrl-C or timeout.
async fn wait_for<F, Fut>(mut done: F) -> Result<bool, CliError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = rivulet::Result<bool>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if done().await? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(false),
        }
    }
}

fn verdict(r: &ReceiptsReport, f: &FlowReport, s: &SchedulerReport) -> Check {
    let mut problems: Vec<String> = Vec::new();
    if r.completed != r.jobs {
        problems.push(format!("{} of {} receipts completed", r.completed, r.jobs));
    }
    if r.max_starts_in_a_second > u64::from(r.rate_limit_per_second) {
        problems.push(format!(
            "{} receipts started within one second (limit {})",
            r.max_starts_in_a_second, r.rate_limit_per_second
        ));
    }
    for t in &r.tenants {
        if t.max_running > u64::from(r.tenant_cap) {
            problems.push(format!(
                "{} had {} receipts running at once (cap {})",
                t.tenant, t.max_running, r.tenant_cap
            ));
        }
    }
    let big = r.tenants.iter().find(|t| t.tenant == BIG_TENANT);
    let small_last = r
        .tenants
        .iter()
        .filter(|t| t.tenant != BIG_TENANT)
        .map(|t| t.finished_ms)
        .fold(0.0_f64, f64::max);
    // Only meaningful with enough receipts: a tenant with a job or two may finish at
    // the same moment as the big one's last (both start in the first turns).
    if r.fairness_checked
        && let Some(big) = big
        && small_last > big.finished_ms
    {
        problems.push(format!(
            "the small tenants finished after the big one ({small_last:.0} ms > {:.0} ms): \
             the turns were not fair",
            big.finished_ms
        ));
    }
    if f.parent_runs != 1 || f.results_seen != f.children || f.total_cents != f.expected_cents {
        problems.push(format!(
            "the settlement ran {} times, saw {} of {} results, total {} (expected {})",
            f.parent_runs, f.results_seen, f.children, f.total_cents, f.expected_cents
        ));
    }
    if s.jobs == 0 || s.distinct_ticks != s.jobs || s.misaligned != 0 {
        problems.push(format!(
            "the heartbeat scheduler added {} jobs for {} distinct ticks ({} misaligned)",
            s.jobs, s.distinct_ticks, s.misaligned
        ));
    }
    if problems.is_empty() {
        Check {
            ok: true,
            message: format!(
                "receipts: at most {} starts in a second (limit {}), every tenant under its \
                 cap of {}{}; the settlement ran once with its {} children's results; the \
                 scheduler added one job per tick ({} ticks)",
                r.max_starts_in_a_second,
                r.rate_limit_per_second,
                r.tenant_cap,
                if r.fairness_checked {
                    ", the small tenants done before the big one"
                } else {
                    " (too few receipts to check the turns)"
                },
                f.children,
                s.jobs
            ),
        }
    } else {
        Check {
            ok: false,
            message: problems.join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::max_in_window;

    #[test]
    fn the_busiest_window_counts_starts_within_width() {
        assert_eq!(max_in_window(&[], 1000), 0);
        assert_eq!(max_in_window(&[5], 1000), 1);
        // A stamp `width` after another is in the next window.
        assert_eq!(max_in_window(&[0, 999, 1000, 1500, 1999], 1000), 3);
        assert_eq!(max_in_window(&[0, 1, 2, 999, 1000], 1000), 4);
        assert_eq!(max_in_window(&[0, 1000, 2000], 1000), 1);
    }
}
