//! The worker's loop: fetch (settling what finished and leasing up to the free places),
//! run each job on its own task, wait for work without polling, check for stalled jobs,
//! and drain at the end.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Counters, Erased};
use crate::backend::jobs::{Fetch, JobWaiter, Leased, Settle, Settled, Settlement};
use crate::error::Result;
use crate::handler::HandlerError;
use crate::jobs::job::Activation;
use crate::jobs::lease::Leases;
use crate::jobs::queue::Shared;
use crate::log_limit::FailureLog;
use crate::outcome::{Decision, Failure, Outcome, decide};
use crate::retry::RetryPolicy;

/// How long a busy worker waits for more runs to finish before it fetches a batch of
/// less than half its concurrency.
const COALESCE: Duration = Duration::from_millis(2);

pub(super) struct Run {
    pub(super) shared: Arc<Shared>,
    pub(super) handler: Erased,
    pub(super) concurrency: usize,
    pub(super) lease: Duration,
    pub(super) stall_check_every: Duration,
    pub(super) max_stalled: u32,
    pub(super) drain_timeout: Duration,
    pub(super) block_timeout: Duration,
    pub(super) name: String,
    pub(super) leases: Arc<Leases>,
    pub(super) stats: Arc<Counters>,
    pub(super) stop: CancellationToken,
    pub(super) metrics: Arc<JobMetrics>,
}

/// The worker's metric handles, registered once (O-OBS-1).
#[derive(Debug)]
pub(super) struct JobMetrics {
    /// `rivulet_job_duration_seconds{queue}`: how long handlers ran.
    duration: metrics::Histogram,
    /// `rivulet_job_wait_seconds{queue}`: from ready to the start of the first attempt.
    wait: metrics::Histogram,
    /// `rivulet_jobs_in_flight{queue}`: jobs this process is running.
    in_flight: metrics::Gauge,
}

impl JobMetrics {
    pub(super) fn new(queue: &str) -> Self {
        JobMetrics {
            duration: metrics::histogram!("rivulet_job_duration_seconds", "queue" => queue.to_owned()),
            wait: metrics::histogram!("rivulet_job_wait_seconds", "queue" => queue.to_owned()),
            in_flight: metrics::gauge!("rivulet_jobs_in_flight", "queue" => queue.to_owned()),
        }
    }
}

/// The in-flight blocking wait for work (it is never abandoned half way: a blocking
/// command dropped mid-flight would leave its reply to the next command).
type Wait = JoinHandle<(Box<dyn JobWaiter>, Result<bool>)>;

impl Run {
    pub(super) async fn main(
        self,
        waiter: Box<dyn JobWaiter>,
        mut hints: mpsc::Receiver<crate::name::JobId>,
        done_for_good: CancellationToken,
    ) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Settle>();
        let mut pending: Vec<Settle> = Vec::new();
        let mut idle_waiter = Some(waiter);
        let mut wait: Option<Wait> = None;
        let mut failures = FailureLog::new();
        let mut stall_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + jittered(self.stall_check_every),
            self.stall_check_every,
        );
        stall_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_due: Option<u64> = None;
        // When this host's clock runs ahead of the store's, a due job may not be due yet
        // when the timer fires: each miss doubles the wait for the same due time.
        let mut due_miss = DueMiss::default();
        let mut backoff = Duration::from_millis(50);
        let mut fetch_now = true;
        while !self.stop.is_cancelled() {
            while let Ok(d) = done_rx.try_recv() {
                pending.push(d);
            }
            // Runs waiting only for their settlement no longer take a place.
            let mut free = self.free(pending.len());
            if fetch_now && free > 0 && free < self.concurrency.div_ceil(2) {
                // Let more runs finish for a moment, so one round trip settles and leases
                // a batch rather than a job or two.
                let until = tokio::time::Instant::now() + COALESCE;
                while free < self.concurrency.div_ceil(2) {
                    tokio::select! {
                        Some(d) = done_rx.recv() => pending.push(d),
                        _ = tokio::time::sleep_until(until) => break,
                    }
                    free = self.free(pending.len());
                }
            }
            if fetch_now && free > 0 {
                let fetch = Fetch {
                    worker: self.name.clone(),
                    limit: free,
                    lease_ms: crate::deadline::millis(self.lease),
                    promote_limit: free.max(64),
                    settle: std::mem::take(&mut pending),
                };
                match self.fetch(&fetch).await {
                    Ok(fetched) => {
                        failures.succeeded("the job fetch");
                        backoff = Duration::from_millis(50);
                        self.count_settled(&fetch.settle, &fetched.settled);
                        // A limit that held work back opens like a due job: a timer.
                        next_due = match (fetched.next_due_ms, fetched.limited_until_ms) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        due_miss.fetched(next_due);
                        let full = fetched.jobs.len() == free;
                        for leased in fetched.jobs {
                            self.spawn_job(leased, done_tx.clone());
                        }
                        // A full batch suggests more is waiting: fetch again right away
                        // once there is room.
                        fetch_now = full && !fetched.paused;
                        if fetch_now {
                            continue;
                        }
                    }
                    Err(e) => {
                        failures.failed("the job fetch", &e);
                        pending = fetch.settle;
                        tokio::select! {
                            _ = self.stop.cancelled() => {}
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            } else if !pending.is_empty() {
                self.settle_now(&mut pending, &mut failures).await;
            }
            // Wait for a finished run, work, a stall check, a cancel hint or the stop.
            // The blocking wait wakes on new work; the next delayed job's time is kept
            // by a local timer, since Redis answers a blocking command's timeout only at
            // its next event-loop tick (up to 100 ms late at the default `hz`).
            let timeout = self.block_timeout;
            if free > 0
                && wait.is_none()
                && let Some(mut w) = idle_waiter.take()
            {
                wait = Some(tokio::spawn(async move {
                    let r = w.wait(timeout).await;
                    (w, r)
                }));
            }
            let due = self.until_due(next_due).map(|d| d.max(due_miss.wait()));
            tokio::select! {
                _ = self.stop.cancelled() => {}
                _ = tokio::time::sleep(due.unwrap_or(timeout)), if free > 0 && due.is_some() => {
                    due_miss.fired(next_due);
                    fetch_now = true;
                }
                Some(d) = done_rx.recv() => {
                    pending.push(d);
                    fetch_now = true;
                }
                r = async {
                    match wait.as_mut() {
                        Some(w) => w.await,
                        None => std::future::pending().await,
                    }
                }, if wait.is_some() => {
                    wait = None;
                    fetch_now = true;
                    match r {
                        Ok((w, res)) => {
                            idle_waiter = Some(w);
                            if let Err(e) = res {
                                failures.failed("the wait for jobs", &e);
                                tokio::select! {
                                    _ = self.stop.cancelled() => {}
                                    _ = tokio::time::sleep(backoff) => {}
                                }
                                backoff = (backoff * 2).min(Duration::from_secs(2));
                            }
                        }
                        Err(_) => {
                            // The waiter task panicked: make a new waiter.
                            match self.shared.store().job_waiter(&self.shared.name).await {
                                Ok(w) => idle_waiter = Some(w),
                                Err(e) => {
                                    failures.failed("the wait for jobs", &e);
                                }
                            }
                        }
                    }
                }
                _ = stall_tick.tick() => self.check_stalled(&mut failures).await,
                Some(id) = hints.recv() => self.leases.cancel(&id),
            }
        }
        self.drain(done_rx, pending, &mut failures).await;
        done_for_good.cancel();
    }

    /// Places free for new runs: the concurrency less the runs still going (runs that
    /// finished and wait only for their settlement no longer count).
    fn free(&self, settling: usize) -> usize {
        let running = self.leases.len().saturating_sub(settling);
        self.concurrency.saturating_sub(running)
    }

    /// How long until the next delayed job is due, by this host's clock (waking early
    /// only costs a fetch: promotion goes by the store's clock), at most the block
    /// timeout.
    fn until_due(&self, next_due: Option<u64>) -> Option<Duration> {
        let due = next_due?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        // One millisecond past it, so the store's clock has reached it too.
        Some(
            Duration::from_millis(due.saturating_sub(now).saturating_add(1))
                .min(self.block_timeout),
        )
    }

    async fn fetch(&self, fetch: &Fetch) -> Result<crate::backend::jobs::Fetched> {
        self.shared
            .store()
            .fetch(&self.shared.name, fetch, &self.shared.settings)
            .await
    }

    async fn settle_now(&self, pending: &mut Vec<Settle>, failures: &mut FailureLog) {
        let batch = std::mem::take(pending);
        let r = self
            .shared
            .store()
            .settle(&self.shared.name, &batch, &self.shared.settings)
            .await;
        match r {
            Ok(settled) => {
                failures.succeeded("the job settlement");
                self.count_settled(&batch, &settled);
            }
            Err(e) => {
                failures.failed("the job settlement", &e);
                *pending = batch;
            }
        }
    }

    async fn check_stalled(&self, failures: &mut FailureLog) {
        let r = self
            .shared
            .store()
            .check_stalled(
                &self.shared.name,
                self.max_stalled,
                1000,
                &self.shared.settings,
            )
            .await;
        match r {
            Ok(report) => {
                let n =
                    report.returned.len() + report.failed_attempt.len() + report.cancelled.len();
                if n > 0 {
                    crate::jobs::flow::poke(&self.shared, crate::jobs::JobState::Failed);
                    self.stats
                        .stalled_found
                        .fetch_add(n as u64, Ordering::Relaxed);
                    metrics::counter!("rivulet_jobs_stalled_total", "queue" => self.shared.name.to_string())
                        .increment(n as u64);
                    tracing::warn!(queue = %self.shared.name, returned = report.returned.len(), failed_attempt = report.failed_attempt.len(), cancelled = report.cancelled.len(), "took back jobs whose lease had expired");
                }
            }
            Err(e) => {
                failures.failed("the stalled-job check", &e);
            }
        }
    }

    fn count_settled(&self, batch: &[Settle], settled: &[Settled]) {
        // Per outcome, for one metrics update per batch rather than per job.
        let mut by_outcome: Vec<(&'static str, u64)> = Vec::new();
        for (s, r) in batch.iter().zip(settled) {
            self.leases.release(&s.id, s.token);
            if let Settled::Applied(st) = r {
                crate::jobs::flow::poke(&self.shared, *st);
            }
            let counter = match r {
                Settled::LeaseLost => {
                    tracing::warn!(queue = %self.shared.name, job = %s.id, "a job's outcome was refused: its lease was lost (another worker may hold it)");
                    &self.stats.lease_lost
                }
                Settled::Applied(crate::jobs::JobState::Completed) => &self.stats.completed,
                Settled::Applied(crate::jobs::JobState::Failed) => &self.stats.failed,
                Settled::Applied(crate::jobs::JobState::Cancelled) => &self.stats.cancelled,
                Settled::Applied(_) if s.how == Settlement::Release => &self.stats.released,
                Settled::Applied(_) => &self.stats.retried,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let outcome = match r {
                Settled::LeaseLost => "lease_lost",
                Settled::Applied(st) => st.as_str(),
            };
            match by_outcome.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, n)) => *n += 1,
                None => by_outcome.push((outcome, 1)),
            }
        }
        for (outcome, n) in by_outcome {
            metrics::counter!("rivulet_jobs_settled_total", "queue" => self.shared.name.to_string(), "state" => outcome)
                .increment(n);
        }
    }

    fn spawn_job(&self, leased: Leased, done: mpsc::UnboundedSender<Settle>) {
        let act = Arc::new(Activation {
            shared: self.shared.clone(),
            id: leased.id.clone(),
            name: leased.name.clone(),
            attempt: leased.attempt,
            max_attempts: leased.max_attempts,
            token: leased.token,
            added_at_ms: leased.added_at_ms,
            // Not a child of the worker's stop: a stopping worker lets its jobs finish.
            // Fired by cancel, timeout, a lost lease or the drain deadline.
            cancel: CancellationToken::new(),
            lost: AtomicBool::new(false),
        });
        self.leases.hold(act.clone());
        let handler = self.handler.clone();
        let policy = self.policy_of(&leased);
        let timeout = leased.timeout_ms.map(Duration::from_millis);
        if leased.attempt == 1 {
            // By this host's clock against the store's: a skew reads as a wait of 0.
            let waited = crate::message::now_ms().saturating_sub(leased.ready_at_ms);
            self.metrics.wait.record(waited as f64 / 1000.0);
        }
        let span = tracing::info_span!(
            "rivulet.job",
            queue = %self.shared.name,
            job_name = %leased.name,
            job_id = %leased.id,
            attempt = leased.attempt,
            traceparent = leased.trace.as_ref().map(|t| t.traceparent.as_str()),
        );
        // Every run is a child of the span that added the job.
        if let Some(cx) = &leased.trace {
            cx.adopt(&span);
        }
        let metrics = self.metrics.clone();
        metrics.in_flight.increment(1.0);
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let how = run_one(handler, leased.data, act.clone(), timeout, &policy)
                .instrument(span)
                .await;
            metrics.duration.record(started.elapsed().as_secs_f64());
            metrics.in_flight.decrement(1.0);
            let _ = done.send(Settle {
                id: act.id.clone(),
                token: act.token,
                how,
            });
        });
    }

    fn policy_of(&self, leased: &Leased) -> RetryPolicy {
        let mut p = self.shared.retry.clone();
        p.max_attempts = leased.max_attempts.max(1);
        p.backoff = Duration::from_millis(leased.backoff.base_ms);
        p.multiplier = leased.backoff.multiplier;
        p.max_delay = Some(Duration::from_millis(leased.backoff.max_ms));
        p
    }

    /// Stops: waits for running jobs up to the drain timeout while recording their
    /// outcomes, then gives the rest back.
    async fn drain(
        &self,
        mut done_rx: mpsc::UnboundedReceiver<Settle>,
        mut pending: Vec<Settle>,
        failures: &mut FailureLog,
    ) {
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        loop {
            while let Ok(d) = done_rx.try_recv() {
                pending.push(d);
            }
            if !pending.is_empty() {
                self.settle_now(&mut pending, failures).await;
            }
            let running = self.leases.len();
            if running == 0 && pending.is_empty() {
                return;
            }
            if running == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                Some(d) = done_rx.recv() => pending.push(d),
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        // Past the drain timeout: give back what still runs, and stop the handlers.
        let settled: std::collections::HashSet<_> = pending.iter().map(|s| s.id.clone()).collect();
        for act in self.leases.snapshot() {
            if !settled.contains(&act.id) {
                pending.push(Settle {
                    id: act.id.clone(),
                    token: act.token,
                    how: Settlement::Release,
                });
            }
        }
        self.leases.cancel_all();
        for _ in 0..3 {
            if pending.is_empty() {
                break;
            }
            self.settle_now(&mut pending, failures).await;
        }
        if !pending.is_empty() {
            tracing::warn!(queue = %self.shared.name, jobs = pending.len(), "could not record the outcome of some jobs at shutdown; they run again after their lease expires");
        }
    }
}

/// Backoff for a due-time timer that fired before the store's clock reached the time.
#[derive(Debug, Default)]
struct DueMiss {
    /// The due time the timer last fired for.
    fired_for: Option<u64>,
    /// Misses in a row for that due time.
    misses: u32,
}

impl DueMiss {
    fn fired(&mut self, due: Option<u64>) {
        self.fired_for = due;
    }

    /// After a fetch: the same due time still ahead means the timer was early.
    fn fetched(&mut self, next_due: Option<u64>) {
        match self.fired_for.take() {
            Some(d) if Some(d) == next_due => self.misses = self.misses.saturating_add(1),
            _ => self.misses = 0,
        }
    }

    /// The least wait before the timer fires again: 0, then 2, 4, … ms, at most 1 s.
    fn wait(&self) -> Duration {
        if self.misses == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(1u64 << self.misses.min(10)).min(Duration::from_secs(1))
    }
}

/// A duration somewhere in `[d/2, d]`, so workers started together spread their checks.
fn jittered(d: Duration) -> Duration {
    let f: f64 = 0.5 + rand::random::<f64>() * 0.5;
    d.mul_f64(f)
}

/// Runs one activation and turns its outcome into a settlement with the bus's rules.
async fn run_one(
    handler: Erased,
    data: Bytes,
    act: Arc<Activation>,
    timeout: Option<Duration>,
    policy: &RetryPolicy,
) -> Settlement {
    let cancel = act.cancel.clone();
    let attempt = act.attempt;
    let fut = AssertUnwindSafe(async move { handler(data, act).await }).catch_unwind();
    let run = match timeout {
        None => fut.await,
        Some(t) => {
            let mut fut = std::pin::pin!(fut);
            tokio::select! {
                r = &mut fut => r,
                _ = tokio::time::sleep(t) => {
                    // Fire the token before the handler's future is dropped, so code
                    // that watches it (or runs on drop) sees why it stops.
                    cancel.cancel();
                    Ok(Err(Failure::Handler(HandlerError::retryable(format!(
                        "timed out after {}",
                        crate::deadline::human(t)
                    )))))
                }
            }
        }
    };
    if let Ok(Err(Failure::Handler(e))) = &run
        && e.is_rate_limited()
    {
        let delay = e.requested_delay().unwrap_or(Duration::ZERO);
        return Settlement::RateLimited {
            delay_ms: crate::deadline::millis(delay),
        };
    }
    let mut result = Bytes::new();
    let outcome = Outcome::of(run.map(|r| {
        r.map(|bytes| {
            result = bytes;
        })
    }));
    match decide(outcome, attempt, policy) {
        Decision::Complete => Settlement::Complete { result },
        Decision::Retry { delay, error, .. } => Settlement::Retry {
            delay_ms: crate::deadline::millis(delay),
            error,
        },
        Decision::GiveUp { reason, error } => Settlement::Fail {
            error: format!("{}: {error}", reason.as_str()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_due_timer_backs_off_and_a_new_due_time_resets_it() {
        let mut m = DueMiss::default();
        assert_eq!(m.wait(), Duration::ZERO);
        // Fired for 100, and the fetch still names 100: early.
        m.fired(Some(100));
        m.fetched(Some(100));
        assert_eq!(m.wait(), Duration::from_millis(2));
        m.fired(Some(100));
        m.fetched(Some(100));
        assert_eq!(m.wait(), Duration::from_millis(4));
        for _ in 0..20 {
            m.fired(Some(100));
            m.fetched(Some(100));
        }
        assert_eq!(m.wait(), Duration::from_secs(1), "capped");
        // The job was promoted: the next due time differs.
        m.fired(Some(100));
        m.fetched(Some(200));
        assert_eq!(m.wait(), Duration::ZERO);
        // A fetch the timer did not cause changes nothing.
        m.fetched(Some(200));
        assert_eq!(m.wait(), Duration::ZERO);
    }
}
