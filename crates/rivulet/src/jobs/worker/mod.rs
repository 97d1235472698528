//! The worker (J-1, J-11, J-12): leases jobs in batches, runs the handler with a
//! concurrency, settles outcomes in the same round trip as the next fetch, renews leases
//! from its own thread, checks for stalled jobs and drains on shutdown.
//!
//! This file holds the builder, the handle and its counters; the loop is in `run`.

mod run;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::run::Run;
use super::job::{Activation, Job};
use super::lease::{Leases, Renewer};
use super::queue::Queue;
use super::scheduler::{self, SchedulerRunner};
use crate::error::{Error, Result};
use crate::handler::HandlerError;
use crate::outcome::Failure;

pub(crate) type Erased =
    Arc<dyn Fn(Bytes, Arc<Activation>) -> BoxFuture<'static, Result<Bytes, Failure>> + Send + Sync>;

/// Options of a worker; `.await` starts it. From [`Queue::worker`].
#[must_use = "a worker starts only when awaited"]
pub struct WorkerBuilder {
    pub(crate) queue: Queue,
    pub(crate) handler: Erased,
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) renew_every: Duration,
    pub(crate) stall_check_every: Duration,
    pub(crate) max_stalled: u32,
    pub(crate) drain_timeout: Duration,
    pub(crate) block_timeout: Duration,
    pub(crate) name: Option<String>,
    /// Whether the worker runs a scheduler runner for its queue (J-4; default on).
    pub(crate) schedulers: bool,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queue", &self.queue.shared.name)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// A worker running `handler` on this queue's jobs; data is decoded from JSON into
    /// `T` (a job whose data does not decode fails at once), and the handler's `R` is
    /// stored as the job's return value. The outcome rules are the bus's: `Ok` completes,
    /// a retryable error retries with backoff until the attempts run out, a permanent
    /// one fails at once, a panic counts as a retryable error.
    ///
    /// ```no_run
    /// # async fn f(queue: rivulet::Queue) -> rivulet::Result<()> {
    /// use rivulet::{HandlerError, Job};
    ///
    /// let worker = queue
    ///     .worker(|job: Job<serde_json::Value>| async move {
    ///         job.progress(&50).await.map_err(HandlerError::retryable)?;
    ///         Ok::<_, HandlerError>(format!("done {}", job.id()))
    ///     })
    ///     .concurrency(10)
    ///     .await?;
    /// worker.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn worker<T, R, F, Fut>(&self, handler: F) -> WorkerBuilder
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Erased = Arc::new(move |data: Bytes, act: Arc<Activation>| {
            match serde_json::from_slice::<T>(&data) {
                Ok(value) => {
                    let fut = handler(Job::new(value, act));
                    async move {
                        let r = fut.await.map_err(Failure::Handler)?;
                        serde_json::to_vec(&r).map(Bytes::from).map_err(|e| {
                            Failure::Handler(HandlerError::permanent(format!(
                                "the return value does not serialize: {e}"
                            )))
                        })
                    }
                    .boxed()
                }
                Err(e) => {
                    let msg = e.to_string();
                    async move { Err(Failure::Decode(msg)) }.boxed()
                }
            }
        });
        WorkerBuilder {
            queue: self.clone(),
            handler: erased,
            concurrency: 1,
            lease: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
            stall_check_every: Duration::from_secs(15),
            max_stalled: 1,
            drain_timeout: Duration::from_secs(5),
            block_timeout: Duration::from_secs(5),
            name: None,
            schedulers: true,
        }
    }
}

impl WorkerBuilder {
    /// How many jobs run at once (default 1). Jobs are leased up to this many per
    /// round trip.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How long a lease lasts without renewal (default 30 s).
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// How often held leases are renewed (default 10 s); shorter than the lease.
    pub fn renew_every(mut self, d: Duration) -> Self {
        self.renew_every = d;
        self
    }

    /// How often this worker looks for expired leases (default 15 s).
    pub fn stall_check_every(mut self, d: Duration) -> Self {
        self.stall_check_every = d;
        self
    }

    /// How many times a job's lease may expire before the stall counts as a failed
    /// attempt (default 1).
    pub fn max_stalled(mut self, n: u32) -> Self {
        self.max_stalled = n;
        self
    }

    /// How long shutdown waits for running jobs (default 5 s); those still running then
    /// are given back to the queue, without counting an attempt or a stall.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// The longest an idle worker blocks waiting for work before it looks again
    /// (default 5 s; it wakes at once when jobs are added, and at the next delayed
    /// job's time).
    pub fn block_timeout(mut self, d: Duration) -> Self {
        self.block_timeout = d;
        self
    }

    /// The worker's name as recorded in the jobs it leases (default
    /// `<host>:<pid>:<random>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether this worker also fires its queue's due schedulers (default `true`; see
    /// [`scheduler`](crate::jobs::scheduler)). Any number of workers may: each tick adds
    /// one job.
    pub fn schedulers(mut self, on: bool) -> Self {
        self.schedulers = on;
        self
    }

    fn check(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::config("a worker's concurrency must be at least 1"));
        }
        if self.lease < Duration::from_millis(100) {
            return Err(Error::config("a lease must last at least 100 ms"));
        }
        if self.renew_every.is_zero() || self.renew_every >= self.lease {
            return Err(Error::config(
                "renew_every must be longer than zero and shorter than the lease",
            ));
        }
        for (what, d) in [
            ("stall_check_every", self.stall_check_every),
            ("block_timeout", self.block_timeout),
        ] {
            if d < Duration::from_millis(10) || d > crate::deadline::FOREVER {
                return Err(Error::config(format!(
                    "{what} must be between 10 ms and 30 years"
                )));
            }
        }
        if self.drain_timeout > crate::deadline::FOREVER {
            return Err(Error::config("drain_timeout must be at most 30 years"));
        }
        Ok(())
    }

    async fn start(self) -> Result<Worker> {
        self.check()?;
        let shared = self.queue.shared.clone();
        let store = shared.store();
        let waiter = store.job_waiter(&shared.name).await?;
        let stop = CancellationToken::new();
        let done_for_good = CancellationToken::new();
        let hints = store
            .cancel_hints(&shared.name, done_for_good.clone())
            .await?;
        let leases = Arc::new(Leases::default());
        Renewer {
            backend: shared.backend.clone(),
            queue: shared.name.clone(),
            lease: self.lease,
            every: self.renew_every,
            stop: done_for_good.clone(),
        }
        .start(&leases);
        super::flow::start_mover(
            shared.clone(),
            self.stall_check_every,
            done_for_good.clone(),
        );
        let stats = Arc::new(Counters::default());
        let name = self.name.unwrap_or_else(default_worker_name);
        let metrics = Arc::new(run::JobMetrics::new(shared.name.as_str()));
        let run = Run {
            shared,
            handler: self.handler,
            concurrency: self.concurrency,
            lease: self.lease,
            stall_check_every: self.stall_check_every,
            max_stalled: self.max_stalled,
            drain_timeout: self.drain_timeout,
            block_timeout: self.block_timeout,
            name: name.clone(),
            leases,
            stats: stats.clone(),
            stop: stop.clone(),
            metrics,
        };
        let task = tokio::spawn(run.main(waiter, hints, done_for_good));
        let schedulers = self
            .schedulers
            .then(|| SchedulerRunner::spawn(self.queue.shared.clone(), scheduler::DEFAULT_RECHECK));
        Ok(Worker {
            name,
            schedulers,
            stop,
            task: Some(task),
            stats,
        })
    }
}

impl IntoFuture for WorkerBuilder {
    type Output = Result<Worker>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Worker>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

fn default_worker_name() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    let rand: u32 = rand::random();
    format!("{host}:{}:{rand:08x}", std::process::id())
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) stalled_found: AtomicU64,
}

/// What a worker has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Runs recorded as completed.
    pub completed: u64,
    /// Runs recorded as failed attempts that will be retried.
    pub retried: u64,
    /// Runs recorded as failed for good.
    pub failed: u64,
    /// Runs that ended the job cancelled.
    pub cancelled: u64,
    /// Jobs given back at shutdown.
    pub released: u64,
    /// Runs whose outcome was refused because the lease was lost (fenced off).
    pub lease_lost: u64,
    /// Expired leases this worker's stalled-job checks took back.
    pub stalled_found: u64,
}

/// A running worker. Stop it with [`shutdown`](Worker::shutdown); dropping it stops it
/// too, without waiting.
#[derive(Debug)]
pub struct Worker {
    name: String,
    schedulers: Option<SchedulerRunner>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    stats: Arc<Counters>,
}

impl Worker {
    /// The worker's name, as recorded in the jobs it leases.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it has done so far.
    pub fn stats(&self) -> WorkerStats {
        let c = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerStats {
            completed: g(&c.completed),
            retried: g(&c.retried),
            failed: g(&c.failed),
            cancelled: g(&c.cancelled),
            released: g(&c.released),
            lease_lost: g(&c.lease_lost),
            stalled_found: g(&c.stalled_found),
        }
    }

    /// Whether the worker's loop is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops fetching, lets running jobs finish up to the drain timeout, records their
    /// outcomes, and gives the rest back to the queue at once (no waiting for their
    /// leases to expire; not counted as attempts or stalls).
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(r) = self.schedulers.take() {
            r.shutdown().await;
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!("the worker's loop panicked");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
