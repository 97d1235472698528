//! The demo's jobs pipeline: an `invoice` job per order on the queue `invoices`.
//!
//! Each order of the bus plan gets one invoice job. Large invoices run first (priority
//! 1, the others 5); a share is delayed by 100–500 ms; the orders published twice are
//! added twice with the same dedup key, so the second add is a duplicate; the orders
//! whose billing fails once fail their invoice once with a retryable error; poison
//! orders fail permanently; a couple of invoices are held (delayed by a minute) and
//! cancelled while delayed. A worker runs them at concurrency 16.
//!
//! The check reads the queue's own counts, not the demo's: every job added (not a
//! duplicate) ended completed, failed or cancelled; failed = poison, cancelled = held,
//! duplicates reported by the queue = orders sent twice, and the worker's stats agree.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rivulet::{
    AddJob, CancelOutcome, Enqueued, HandlerError, Job, JobCounts, JobState, Keep, Queue,
    RetryPolicy, WorkerStats,
};
use serde::{Deserialize, Serialize};

use super::backend::DemoBackend;
use super::plan::{Fault, Plan};
use super::report::{Check, round2};
use crate::error::CliError;

/// The queue the invoices go to, and the jobs' name.
pub(crate) const QUEUE: &str = "invoices";
const JOB_NAME: &str = "invoice";
/// Jobs per `add_bulk` round trip.
const BATCH: usize = 100;
/// How many jobs run at once.
const CONCURRENCY: usize = 16;
/// Share of invoices delayed by [`DELAY_MS`].
const DELAYED_PERCENT: usize = 10;
/// The range of the delays, in milliseconds.
const DELAY_MS: std::ops::RangeInclusive<u64> = 100..=500;
/// Invoices held and then cancelled while delayed (at most; never more than healthy
/// orders allow).
const HELD: usize = 2;
/// How long a held invoice is delayed: long enough that it is cancelled before it runs.
const HOLD: Duration = Duration::from_secs(60);
/// Invoices of at least this amount run first.
const LARGE_CENTS: u64 = 40_000;
const PRIORITY_LARGE: u32 = 1;
const PRIORITY_NORMAL: u32 = 5;
/// How long a dedup key is held: the whole run, whatever became of its job.
const DEDUP_TTL: Duration = Duration::from_secs(600);
/// How often the queue's counts are polled.
const TICK: Duration = Duration::from_millis(20);

/// The data of an invoice job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Invoice {
    pub(crate) order_id: u64,
    pub(crate) customer: String,
    pub(crate) amount_cents: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<Fault>,
}

/// One invoice to add, and how.
#[derive(Debug, Clone)]
struct Planned {
    invoice: Invoice,
    priority: u32,
    delay: Option<Duration>,
    /// Held: delayed by [`HOLD`] and cancelled right after it is added.
    held: bool,
    /// Added a second time with the same dedup key.
    twice: bool,
}

impl Planned {
    fn dedup_key(&self) -> String {
        format!("invoice-{}", self.invoice.order_id)
    }
}

/// The invoices of a run and what was injected into them.
#[derive(Debug)]
pub(crate) struct JobsPlan {
    invoices: Vec<Planned>,
    pub(crate) large: u64,
    pub(crate) delayed: u64,
    pub(crate) duplicates: u64,
    pub(crate) transient: u64,
    pub(crate) poison: u64,
    pub(crate) held: u64,
}

impl JobsPlan {
    /// One invoice per order of the bus plan (call before its messages are taken), with
    /// the same faults; the orders it publishes twice are added twice. `seed` picks the
    /// delayed and held invoices.
    pub(crate) fn new(plan: &Plan, seed: u64) -> JobsPlan {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6a6f_6273);
        let mut seen: HashSet<u64> = HashSet::new();
        let mut twice: HashSet<u64> = HashSet::new();
        let mut invoices: Vec<Planned> = Vec::new();
        for o in &plan.messages {
            if !seen.insert(o.id) {
                twice.insert(o.id);
                continue;
            }
            invoices.push(Planned {
                invoice: Invoice {
                    order_id: o.id,
                    customer: o.customer.clone(),
                    amount_cents: o.amount_cents,
                    fault: o.fault,
                },
                priority: if o.amount_cents >= LARGE_CENTS {
                    PRIORITY_LARGE
                } else {
                    PRIORITY_NORMAL
                },
                delay: None,
                held: false,
                twice: false,
            });
        }
        for p in &mut invoices {
            p.twice = twice.contains(&p.invoice.order_id);
        }
        // Held invoices are healthy and added once, so each ends cancelled exactly once.
        let mut healthy: Vec<usize> = (0..invoices.len())
            .filter(|&i| invoices[i].invoice.fault.is_none() && !invoices[i].twice)
            .collect();
        healthy.shuffle(&mut rng);
        let held = HELD.min(healthy.len());
        for &i in &healthy[..held] {
            invoices[i].held = true;
            invoices[i].delay = Some(HOLD);
        }
        let mut others: Vec<usize> = (0..invoices.len()).filter(|&i| !invoices[i].held).collect();
        others.shuffle(&mut rng);
        let delayed = (others.len() * DELAYED_PERCENT).div_ceil(100);
        for &i in &others[..delayed] {
            invoices[i].delay = Some(Duration::from_millis(rng.random_range(DELAY_MS)));
        }
        let count = |f: &dyn Fn(&Planned) -> bool| invoices.iter().filter(|p| f(p)).count() as u64;
        JobsPlan {
            large: count(&|p| p.priority == PRIORITY_LARGE),
            delayed: delayed as u64,
            duplicates: count(&|p| p.twice),
            transient: count(&|p| p.invoice.fault == Some(Fault::Transient)),
            poison: count(&|p| p.invoice.fault == Some(Fault::Poison)),
            held: held as u64,
            invoices,
        }
    }

    /// How many invoices (one per order).
    pub(crate) fn len(&self) -> u64 {
        self.invoices.len() as u64
    }

    /// The orders, once each, in plan order (for the orchestration part).
    pub(crate) fn orders(&self) -> Vec<super::orchestration::OrderRef> {
        self.invoices
            .iter()
            .map(|p| super::orchestration::OrderRef {
                order_id: p.invoice.order_id,
                amount_cents: p.invoice.amount_cents,
            })
            .collect()
    }
}

/// What the jobs pipeline measured. Serialized as the summary's `jobs` object.
#[derive(Debug, Serialize)]
pub(crate) struct JobsReport {
    pub(crate) queue: String,
    #[serde(flatten)]
    pub(crate) run: JobsRun,
    pub(crate) check: Check,
}

/// The numbers of a jobs run that happened.
#[derive(Debug, Serialize)]
pub(crate) struct JobsRun {
    pub(crate) worker: String,
    pub(crate) injected: JobsInjected,
    /// Adds the queue wrote (not duplicates), from its answers to the adds.
    pub(crate) added: u64,
    /// Adds the queue refused as duplicates of a dedup key.
    pub(crate) duplicates: u64,
    /// Jobs not finished (waiting, delayed, active) when the wait ended.
    pub(crate) unfinished: u64,
    /// The queue's counts once nothing was unfinished.
    pub(crate) counts: CountsReport,
    /// The worker's own tally.
    pub(crate) worker_stats: StatsReport,
    /// Failed jobs (listed by the queue) that are poison invoices.
    pub(crate) failed_listed_poison: u64,
    pub(crate) elapsed_ms: f64,
    /// Added jobs finished per second, from the first add until nothing was unfinished.
    pub(crate) jobs_per_second: f64,
    pub(crate) completed: bool,
}

/// What the jobs pipeline put into the workload on purpose.
#[derive(Debug, Serialize)]
pub(crate) struct JobsInjected {
    pub(crate) invoices: u64,
    pub(crate) high_priority: u64,
    pub(crate) delayed: u64,
    pub(crate) duplicates: u64,
    pub(crate) transient: u64,
    pub(crate) poison: u64,
    pub(crate) cancelled: u64,
}

/// [`JobCounts`] as the summary shows it.
#[derive(Debug, Serialize)]
pub(crate) struct CountsReport {
    pub(crate) waiting: u64,
    pub(crate) delayed: u64,
    pub(crate) active: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
}

impl From<JobCounts> for CountsReport {
    fn from(c: JobCounts) -> Self {
        CountsReport {
            waiting: c.waiting,
            delayed: c.delayed,
            active: c.active,
            completed: c.completed,
            failed: c.failed,
            cancelled: c.cancelled,
        }
    }
}

/// [`WorkerStats`] as the summary shows it.
#[derive(Debug, Serialize)]
pub(crate) struct StatsReport {
    pub(crate) completed: u64,
    pub(crate) retried: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    pub(crate) lease_lost: u64,
}

impl From<WorkerStats> for StatsReport {
    fn from(s: WorkerStats) -> Self {
        StatsReport {
            completed: s.completed,
            retried: s.retried,
            failed: s.failed,
            cancelled: s.cancelled,
            lease_lost: s.lease_lost,
        }
    }
}

const CLAIM: &str = "check: jobs added = completed + failed + cancelled (queue counts)";

async fn invoice(job: Job<Invoice>) -> Result<String, HandlerError> {
    let inv = job.data();
    match inv.fault {
        Some(Fault::Poison) => Err(HandlerError::permanent(format!(
            "order {}: no billing address (poison invoice, permanent failure)",
            inv.order_id
        ))),
        Some(Fault::Transient) if job.attempt() == 1 => Err(HandlerError::retryable(format!(
            "order {}: PDF renderer busy (transient failure)",
            inv.order_id
        ))),
        _ => Ok(format!("INV-{}", inv.order_id)),
    }
}

fn add_job<'a>(queue: &'a Queue, p: &Planned) -> AddJob<'a> {
    let mut add = queue
        .add(JOB_NAME, &p.invoice)
        .priority(p.priority)
        .dedup_for(&p.dedup_key(), DEDUP_TTL);
    if let Some(d) = p.delay {
        add = add.delay(d);
    }
    add
}

/// How the wait for the queue ended.
enum Ending {
    Finished,
    TimedOut(Duration),
    Interrupted,
}

/// Runs the jobs pipeline on `backend`; `Ok(None)` when interrupted (Ctrl-C).
pub(crate) async fn run(
    backend: &DemoBackend,
    plan: JobsPlan,
    progress: &ProgressBar,
) -> Result<Option<JobsReport>, CliError> {
    let n = plan.len();
    let keep = Keep::new(n.max(1_000), Duration::from_secs(3600));
    let queue = backend
        .queue(QUEUE)
        .keep_completed(keep)
        .keep_failed(keep)
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(20)),
        )
        .build()?;
    let worker = queue.worker(invoice).concurrency(CONCURRENCY).await?;
    let worker_desc = format!("x{CONCURRENCY}, 3 attempts, 20 ms backoff");

    let started = Instant::now();
    let mut added: u64 = 0;
    let mut duplicates: u64 = 0;
    let mut cancel_failures: Vec<String> = Vec::new();
    let tally = |results: &[Enqueued], added: &mut u64, duplicates: &mut u64| {
        for e in results {
            if e.duplicate {
                *duplicates += 1;
            } else {
                *added += 1;
            }
        }
    };
    for chunk in plan.invoices.chunks(BATCH) {
        let results = queue
            .add_bulk(chunk.iter().map(|p| add_job(&queue, p)))
            .await?;
        tally(&results, &mut added, &mut duplicates);
        for (p, e) in chunk.iter().zip(&results) {
            if p.held {
                match queue.cancel(&e.id).await? {
                    CancelOutcome::Cancelled => {}
                    other => cancel_failures.push(format!(
                        "cancelling held invoice {} gave {other:?}",
                        p.invoice.order_id
                    )),
                }
            }
        }
    }
    // The orders published twice are added again: the dedup key must turn them away.
    let again: Vec<&Planned> = plan.invoices.iter().filter(|p| p.twice).collect();
    for chunk in again.chunks(BATCH) {
        let results = queue
            .add_bulk(chunk.iter().map(|p| add_job(&queue, p)))
            .await?;
        tally(&results, &mut added, &mut duplicates);
    }

    let limit = Duration::from_secs(30) + Duration::from_millis(2 * n);
    let deadline = started + limit;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(TICK);
    let ending = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break Ending::Interrupted,
        }
        let c = queue.counts().await?;
        progress.set_position(c.completed + c.failed + c.cancelled);
        progress.set_message(format!(
            "invoices: waiting {}, delayed {}, active {}, failed {}",
            c.waiting, c.delayed, c.active, c.failed
        ));
        if c.unfinished() == 0 {
            break Ending::Finished;
        }
        if Instant::now() >= deadline {
            break Ending::TimedOut(limit);
        }
    };
    let elapsed = started.elapsed();
    if matches!(ending, Ending::Interrupted) {
        worker.shutdown().await;
        return Ok(None);
    }
    let counts = queue.counts().await?;
    // The store applies a settlement before the worker counts it on the reply: give the
    // worker's tally a moment (bounded) to catch up with the queue's counts.
    let caught_up = Instant::now() + Duration::from_secs(2);
    let mut stats = worker.stats();
    while stats.completed + stats.failed + stats.cancelled < counts.completed + counts.failed
        && Instant::now() < caught_up
    {
        tokio::time::sleep(TICK).await;
        stats = worker.stats();
    }
    worker.shutdown().await;
    let failed_listed_poison = poison_listed(&queue, counts.failed).await?;

    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let finished = counts.completed + counts.failed + counts.cancelled;
    let run = JobsRun {
        worker: worker_desc,
        injected: JobsInjected {
            invoices: n,
            high_priority: plan.large,
            delayed: plan.delayed,
            duplicates: plan.duplicates,
            transient: plan.transient,
            poison: plan.poison,
            cancelled: plan.held,
        },
        added,
        duplicates,
        unfinished: counts.unfinished(),
        counts: counts.into(),
        worker_stats: stats.into(),
        failed_listed_poison,
        elapsed_ms: round2(elapsed.as_secs_f64() * 1000.0),
        jobs_per_second: round2(finished as f64 / secs),
        completed: matches!(ending, Ending::Finished),
    };
    Ok(Some(JobsReport {
        queue: QUEUE.to_owned(),
        check: verdict(&ending, &run, &cancel_failures),
        run,
    }))
}

/// How many of the queue's failed jobs, as it lists them, are poison invoices.
async fn poison_listed(queue: &Queue, failed: u64) -> Result<u64, CliError> {
    const PAGE: usize = 500;
    let mut poison = 0;
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = queue
            .jobs(JobState::Failed, cursor.as_deref(), PAGE)
            .await?;
        for j in &page.jobs {
            seen += 1;
            if j.data::<Invoice>()
                .is_ok_and(|i| i.fault == Some(Fault::Poison))
            {
                poison += 1;
            }
        }
        match page.next {
            // Bounded by what the counts said, in case the listing runs on.
            Some(next) if seen < failed.saturating_add(PAGE as u64) => cursor = Some(next),
            _ => break,
        }
    }
    Ok(poison)
}

fn verdict(ending: &Ending, r: &JobsRun, cancel_failures: &[String]) -> Check {
    let (i, c, s) = (&r.injected, &r.counts, &r.worker_stats);
    let mut bad: Vec<String> = Vec::new();
    match ending {
        Ending::Finished => {}
        Ending::TimedOut(limit) => bad.push(format!(
            "timed out after {} s with {} jobs unfinished",
            limit.as_secs(),
            r.unfinished
        )),
        Ending::Interrupted => bad.push("interrupted".to_owned()),
    }
    let finished = c.completed + c.failed + c.cancelled;
    let mut expect = |what: &str, got: u64, want: u64| {
        if got != want {
            bad.push(format!("{what} is {got}, expected {want}"));
        }
    };
    expect("completed + failed + cancelled", finished, r.added);
    expect("added", r.added, i.invoices);
    expect("failed", c.failed, i.poison);
    expect("cancelled", c.cancelled, i.cancelled);
    expect(
        "completed",
        c.completed,
        i.invoices.saturating_sub(i.poison + i.cancelled),
    );
    expect("duplicates", r.duplicates, i.duplicates);
    expect("unfinished", r.unfinished, 0);
    expect("the worker's completed", s.completed, c.completed);
    expect("the worker's failed", s.failed, c.failed);
    expect("the worker's retried", s.retried, i.transient);
    expect("the worker's cancelled", s.cancelled, 0);
    expect("the worker's lost leases", s.lease_lost, 0);
    expect(
        "poison among the failed jobs listed",
        r.failed_listed_poison,
        i.poison,
    );
    bad.extend(cancel_failures.iter().cloned());
    if bad.is_empty() {
        Check {
            ok: true,
            message: format!("{CLAIM}: OK"),
        }
    } else {
        Check {
            ok: false,
            message: format!("{CLAIM}: FAILED ({})", bad.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_invoice_per_order_with_the_orders_faults() {
        let plan = Plan::new(1000, 5, 7);
        let jobs = JobsPlan::new(&plan, 7);
        assert_eq!(jobs.len(), 1000);
        assert_eq!(jobs.poison, 5);
        assert_eq!(jobs.transient, plan.transient_orders);
        assert_eq!(jobs.duplicates, plan.duplicates);
        assert_eq!(jobs.held, 2);
        assert_eq!(jobs.delayed, 100);
        let held: Vec<&Planned> = jobs.invoices.iter().filter(|p| p.held).collect();
        assert!(
            held.iter()
                .all(|p| p.invoice.fault.is_none() && !p.twice && p.delay == Some(HOLD))
        );
        assert!(jobs.large > 0 && jobs.large < 1000);
    }

    fn balanced_run() -> JobsRun {
        JobsRun {
            worker: String::new(),
            injected: JobsInjected {
                invoices: 10,
                high_priority: 2,
                delayed: 1,
                duplicates: 1,
                transient: 1,
                poison: 1,
                cancelled: 2,
            },
            added: 10,
            duplicates: 1,
            unfinished: 0,
            counts: CountsReport {
                waiting: 0,
                delayed: 0,
                active: 0,
                completed: 7,
                failed: 1,
                cancelled: 2,
            },
            worker_stats: StatsReport {
                completed: 7,
                retried: 1,
                failed: 1,
                cancelled: 0,
                lease_lost: 0,
            },
            failed_listed_poison: 1,
            elapsed_ms: 1.0,
            jobs_per_second: 1.0,
            completed: true,
        }
    }

    #[test]
    fn the_verdict_names_what_does_not_balance() {
        assert!(verdict(&Ending::Finished, &balanced_run(), &[]).ok);
        let mut r = balanced_run();
        r.counts.failed = 2;
        r.counts.completed = 6;
        r.worker_stats.completed = 6;
        r.worker_stats.failed = 2;
        let c = verdict(&Ending::Finished, &r, &[]);
        assert!(!c.ok);
        assert!(
            c.message.contains("failed is 2, expected 1"),
            "{}",
            c.message
        );
        let c = verdict(
            &Ending::TimedOut(Duration::from_secs(30)),
            &balanced_run(),
            &[],
        );
        assert!(!c.ok && c.message.contains("timed out"), "{}", c.message);
        let mut r = balanced_run();
        r.duplicates = 0;
        r.added = 11;
        assert!(!verdict(&Ending::Finished, &r, &[]).ok);
    }

    #[test]
    fn tiny_runs_hold_nothing_they_cannot() {
        let plan = Plan::new(3, 5, 1);
        let jobs = JobsPlan::new(&plan, 1);
        assert_eq!((jobs.len(), jobs.poison, jobs.held), (3, 3, 0));
    }
}
