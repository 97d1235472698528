//! The scheduler runner: reads the due schedulers of a queue, fires each one's tick with
//! one compare-and-set step per scheduler (all in one round trip), and sleeps until the
//! next fire time, at most `recheck_every`.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::tick_job;
use crate::backend::job_schedulers::{Fire, Fired, JobSchedulers, StoredScheduler};
use crate::error::{Error, Result};
use crate::jobs::queue::{Queue, Shared};
use crate::jobs::schedule::Schedule;
use crate::log_limit::FailureLog;

/// How many due schedulers one pass reads and fires.
const BATCH: usize = 64;

/// The default of [`SchedulerRunnerBuilder::recheck_every`].
pub(crate) const DEFAULT_RECHECK: Duration = Duration::from_secs(2);

/// Bumped by every upsert or removal in this process, so its runners look at once.
static CHANGED: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Wakes every runner of this process: a scheduler was upserted or removed.
pub(super) fn changed() {
    CHANGED.send_modify(|n| *n = n.wrapping_add(1));
}

/// Options of a scheduler runner; `.await` starts it. From [`Queue::run_schedulers`].
#[derive(Debug)]
#[must_use = "a runner starts only when awaited"]
pub struct SchedulerRunnerBuilder {
    queue: Queue,
    recheck: Duration,
}

impl SchedulerRunnerBuilder {
    /// The longest the runner sleeps before it looks at the queue's schedulers again
    /// (default 2 s): how soon it sees a scheduler upserted by another process. Upserts
    /// in this process wake it at once; it wakes at the next fire time in any case.
    pub fn recheck_every(mut self, d: Duration) -> Self {
        self.recheck = d;
        self
    }

    async fn start(self) -> Result<SchedulerRunner> {
        check_recheck(self.recheck)?;
        Ok(SchedulerRunner::spawn(
            self.queue.shared.clone(),
            self.recheck,
        ))
    }
}

pub(crate) fn check_recheck(d: Duration) -> Result<()> {
    if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
        return Err(Error::config(
            "a scheduler recheck interval must be between 10 ms and 1 hour",
        ));
    }
    Ok(())
}

impl IntoFuture for SchedulerRunnerBuilder {
    type Output = Result<SchedulerRunner>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<SchedulerRunner>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

impl Queue {
    /// A runner that fires this queue's due schedulers, for a process without a
    /// [`Worker`](crate::Worker) on the queue (workers run one by default). Any number
    /// of runners may run, in any processes: each tick adds one job.
    pub fn run_schedulers(&self) -> SchedulerRunnerBuilder {
        SchedulerRunnerBuilder {
            queue: self.clone(),
            recheck: DEFAULT_RECHECK,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    fired: AtomicU64,
    lost: AtomicU64,
    passes: AtomicU64,
}

/// What a runner has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerRunnerStats {
    /// Ticks this runner fired (each added one job).
    pub fired: u64,
    /// Fires refused because another runner fired first, or the scheduler changed.
    pub lost: u64,
    /// Reads of the due schedulers.
    pub passes: u64,
}

/// A running scheduler runner. Stop it with [`shutdown`](Self::shutdown); dropping it
/// stops it too.
#[derive(Debug)]
pub struct SchedulerRunner {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl SchedulerRunner {
    pub(crate) fn spawn(shared: Arc<Shared>, recheck: Duration) -> SchedulerRunner {
        let stop = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let run = Run {
            shared,
            recheck,
            counters: counters.clone(),
            stop: stop.clone(),
        };
        SchedulerRunner {
            stop,
            task: Some(tokio::spawn(run.main())),
            counters,
        }
    }

    /// What it has done so far.
    pub fn stats(&self) -> SchedulerRunnerStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SchedulerRunnerStats {
            fired: g(&self.counters.fired),
            lost: g(&self.counters.lost),
            passes: g(&self.counters.passes),
        }
    }

    /// Stops it and waits for a fire in flight to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!("the scheduler runner panicked");
        }
    }
}

impl Drop for SchedulerRunner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Run {
    shared: Arc<Shared>,
    recheck: Duration,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

/// What a pass found: how long to sleep.
enum Next {
    /// Look again at once (a full batch, or a lost race: learn the new next time).
    Now,
    In(Duration),
}

impl Run {
    fn store(&self) -> &dyn JobSchedulers {
        self.shared.backend.as_ref()
    }

    async fn main(self) {
        let mut changed = CHANGED.subscribe();
        let mut failures = FailureLog::new();
        let mut bad = FailureLog::new();
        let mut backoff = Duration::from_millis(50);
        // A lost race re-reads at once, but not twice in a row.
        let mut rereads = 0u32;
        while !self.stop.is_cancelled() {
            changed.borrow_and_update();
            let wait = match self.pass(&mut bad).await {
                Ok(Next::Now) if rereads < 1 => {
                    rereads += 1;
                    failures.succeeded("the scheduler pass");
                    continue;
                }
                Ok(next) => {
                    rereads = 0;
                    failures.succeeded("the scheduler pass");
                    backoff = Duration::from_millis(50);
                    match next {
                        Next::Now => Duration::from_millis(5),
                        Next::In(d) => d,
                    }
                }
                Err(e) => {
                    failures.failed("the scheduler pass", &e);
                    let b = backoff;
                    backoff = (backoff * 2).min(self.recheck);
                    b
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = changed.changed() => {}
            }
        }
    }

    /// Reads the due schedulers, fires them, and says when to look again.
    async fn pass(&self, bad: &mut FailureLog) -> Result<Next> {
        let queue = &self.shared.name;
        let due = self.store().due_schedulers(queue, BATCH).await?;
        self.counters.passes.fetch_add(1, Ordering::Relaxed);
        let mut fires = Vec::with_capacity(due.due.len());
        for s in &due.due {
            match plan(s, due.now_ms) {
                Ok(f) => fires.push(f),
                Err(e) => {
                    // Left as it is (an operator can upsert or remove it); the others
                    // go on.
                    bad.failed(&format!("scheduler {:?} of queue {queue}", s.id), &e);
                }
            }
        }
        let mut earliest = due.next_ms;
        let mut lost = false;
        if !fires.is_empty() {
            let fired = self
                .store()
                .fire_schedulers(queue, &fires, &self.shared.settings)
                .await?;
            for (f, r) in fires.iter().zip(&fired) {
                match r {
                    Fired::Fired(_) => {
                        self.counters.fired.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("rivulet_scheduler_fired_total", "queue" => queue.to_string())
                            .increment(1);
                        if let Some(n) = f.next_ms {
                            earliest = Some(earliest.map_or(n, |e| e.min(n)));
                        }
                    }
                    Fired::Stale => {
                        self.counters.lost.fetch_add(1, Ordering::Relaxed);
                        lost = true;
                    }
                }
            }
        }
        if lost || (due.due.len() >= BATCH && fires.len() == due.due.len()) {
            return Ok(Next::Now);
        }
        let wait = earliest
            .map(|t| Duration::from_millis(t.saturating_sub(due.now_ms).max(1)))
            .unwrap_or(self.recheck);
        Ok(Next::In(wait.min(self.recheck)))
    }
}

/// The fire of a due scheduler at `now_ms`: the latest tick at or before now (so a runner
/// back after several ticks fires once, not a burst), and the first tick after now.
pub(crate) fn plan(s: &StoredScheduler, now_ms: u64) -> Result<Fire> {
    let expected = s
        .next_ms
        .ok_or_else(|| Error::Protocol("a due scheduler has no next fire time".into()))?;
    let schedule = Schedule::from_wire(&s.kind, &s.value, &s.tz)
        .ok_or_else(|| Error::Protocol(format!("unknown schedule kind {:?}", s.kind)))?;
    let compiled = schedule.compile()?;
    // The stored next time is a tick at or before now; the computation can only find a
    // later one (ticks it skips), never an earlier one.
    let tick = compiled
        .latest_at_or_before(now_ms)
        .unwrap_or(expected)
        .max(expected);
    let next_ms = compiled.next_after(now_ms.max(tick));
    Ok(Fire {
        id: s.id.clone(),
        version: s.version,
        expected_next_ms: expected,
        tick_ms: tick,
        next_ms,
        job: tick_job(s, tick)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn every(ms: u64, next: u64) -> StoredScheduler {
        StoredScheduler {
            id: "s".into(),
            kind: "every".into(),
            value: ms.to_string(),
            tz: String::new(),
            job_name: crate::name::JobName::new("tick").expect("name"),
            job_data: Bytes::from_static(b"null"),
            job_opts: r#"{"priority":0,"lifo":false,"max_attempts":1,"backoff_base_ms":0,"backoff_multiplier":1.0,"backoff_max_ms":0,"timeout_ms":null,"remove_on_complete":false,"remove_on_fail":false}"#.into(),
            version: 3,
            next_ms: Some(next),
            last_ms: None,
            last_job: None,
        }
    }

    #[test]
    fn a_due_tick_fires_with_the_next_one_after_it() {
        let f = plan(&every(100, 1_000), 1_040).expect("plan");
        assert_eq!((f.tick_ms, f.next_ms), (1_000, Some(1_100)));
        assert_eq!((f.version, f.expected_next_ms), (3, 1_000));
        assert_eq!(f.job.id.as_str(), "sched:s:1000");
    }

    #[test]
    fn after_downtime_only_the_latest_missed_tick_fires() {
        // Due at 1 000, looked at only at 5 250: ticks 1 000 … 5 200 were missed.
        let f = plan(&every(100, 1_000), 5_250).expect("plan");
        assert_eq!((f.tick_ms, f.next_ms), (5_200, Some(5_300)));
        assert_eq!(
            f.expected_next_ms, 1_000,
            "the compare-and-set names what was read"
        );
    }

    #[test]
    fn a_bad_record_is_refused_not_guessed() {
        let mut s = every(100, 1_000);
        s.kind = "weekly".into();
        assert!(plan(&s, 1_000).is_err());
        let mut s = every(100, 1_000);
        s.job_opts = "{".into();
        assert!(plan(&s, 1_000).is_err());
    }
}
