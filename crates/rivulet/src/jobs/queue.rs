//! The queue handle (J-1): adding jobs and looking at them.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use tracing::Instrument;

use super::record::{JobCounts, JobInfo, JobState, Keep};
use crate::backend::jobs::{
    Added, Cancelled, Dedup, JobQueues, NewJob, QueueSettings, Removed, Requeue, Requeued,
    StoredBackoff,
};
use crate::backend::{AnyBackend, Backend};
use crate::error::{Error, Result};
use crate::name::{JobGroup, JobId, JobName, QueueName};
use crate::retry::{MAX_RETRY_DELAY, RetryPolicy};

/// The highest priority number (the lowest priority): 2²¹ − 1. Priority 0 runs first.
pub const MAX_PRIORITY: u32 = (1 << 21) - 1;

/// The longest a dedup key may be held by TTL: 30 days.
pub const MAX_DEDUP_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Settings of a queue handle, shared by its clones and its workers.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) name: QueueName,
    pub(crate) settings: QueueSettings,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_payload: usize,
    /// Wakes this handle's flow-note movers (see `flow`).
    pub(crate) flow_poke: Arc<tokio::sync::Notify>,
}

impl Shared {
    pub(crate) fn store(&self) -> &dyn JobQueues {
        self.backend.as_ref()
    }
}

/// A handle on one job queue (J-1). Cheap to clone; clones share settings.
///
/// ```no_run
/// # async fn f() -> rivulet::Result<()> {
/// use std::time::Duration;
/// use rivulet::{MemoryBackend, Queue};
///
/// let queue = Queue::new(MemoryBackend::new(), "invoices")?;
/// let job = queue
///     .add("send-invoice", &serde_json::json!({"order": 17}))
///     .priority(1)
///     .delay(Duration::from_secs(30))
///     .dedup("order-17")
///     .await?;
/// println!("added {}", job.id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.shared.name)
            .field("backend", &self.shared.backend.name())
            .finish()
    }
}

/// Options of a [`Queue`]; finish with [`build`](QueueBuilder::build).
#[derive(Debug)]
#[must_use]
pub struct QueueBuilder {
    backend: AnyBackend,
    name: String,
    settings: QueueSettings,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    max_payload: usize,
}

impl QueueBuilder {
    /// How many completed jobs to keep, and for how long (default 1,000 for 24 h).
    pub fn keep_completed(mut self, keep: Keep) -> Self {
        self.settings.keep_completed = keep;
        self
    }

    /// How many failed (and cancelled) jobs to keep, and for how long (default 10,000
    /// for 7 days).
    pub fn keep_failed(mut self, keep: Keep) -> Self {
        self.settings.keep_failed = keep;
        self
    }

    /// The approximate cap of the queue's event stream (default 10,000).
    pub fn events_cap(mut self, events: u64) -> Self {
        self.settings.events_cap = events;
        self
    }

    /// The most log lines kept per job (default 100).
    pub fn log_cap(mut self, lines: u64) -> Self {
        self.settings.log_cap = lines;
        self
    }

    /// The attempts and backoff of jobs that do not set their own (the bus's default:
    /// 5 attempts, 1 s × 2ⁿ). `dead_letter` has no meaning for jobs: a job that gives up
    /// is `failed`.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The run-time limit of jobs that do not set their own (default none).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The largest job data accepted, in bytes of JSON (default 1 MiB).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Checks the options and makes the handle. Fails with [`Error::InvalidName`] or
    /// [`Error::Config`]; nothing is written.
    pub fn build(self) -> Result<Queue> {
        let name = QueueName::new(self.name)?;
        self.retry.validate()?;
        if self.max_payload == 0 {
            return Err(Error::config("max_payload must be at least 1 byte"));
        }
        if self.settings.events_cap == 0 {
            return Err(Error::config("events_cap must be at least 1"));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::config("a job timeout must be longer than zero"));
        }
        Ok(Queue {
            shared: Arc::new(Shared {
                backend: self.backend.0,
                name,
                settings: self.settings,
                retry: self.retry,
                timeout: self.timeout,
                max_payload: self.max_payload,
                flow_poke: Arc::new(tokio::sync::Notify::new()),
            }),
        })
    }
}

/// The default settings of a queue.
pub(crate) fn default_settings() -> QueueSettings {
    QueueSettings {
        keep_completed: Keep::completed_default(),
        keep_failed: Keep::failed_default(),
        events_cap: 10_000,
        log_cap: 100,
    }
}

/// A job that was added, or found already there.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Enqueued {
    /// The job's id (the existing job's id for a duplicate).
    pub id: JobId,
    /// Whether nothing was written because the id or the dedup key was taken.
    pub duplicate: bool,
    /// The state it was added in (waiting or delayed); `None` for a duplicate.
    pub state: Option<JobState>,
}

/// What [`Queue::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The job was waiting or delayed and is now cancelled.
    Cancelled,
    /// The job is active: its handler's cancellation token fires, in whichever process
    /// runs it, and the job ends `cancelled` when the handler returns or its lease is
    /// revoked, whatever the handler returns.
    Requested,
    /// The job had already finished in this state.
    AlreadyFinished(JobState),
}

/// A page of jobs, from [`Queue::jobs`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct JobPage {
    /// The jobs of the page.
    pub jobs: Vec<JobInfo>,
    /// The cursor of the next page; `None` after the last.
    pub next: Option<String>,
}

impl Queue {
    /// A queue with default options on `backend`.
    pub fn new(backend: impl Into<AnyBackend>, name: &str) -> Result<Queue> {
        Queue::builder(backend, name).build()
    }

    /// Options for a queue on `backend`.
    pub fn builder(backend: impl Into<AnyBackend>, name: &str) -> QueueBuilder {
        QueueBuilder {
            backend: backend.into(),
            name: name.to_owned(),
            settings: default_settings(),
            retry: RetryPolicy::default(),
            timeout: None,
            max_payload: 1024 * 1024,
        }
    }

    /// The queues known on `backend` (the queue registry; no scan).
    pub async fn list(backend: impl Into<AnyBackend>) -> Result<Vec<QueueName>> {
        let backend = backend.into();
        let queues: &dyn JobQueues = backend.0.as_ref();
        queues.queues().await
    }

    /// The queue's name.
    pub fn name(&self) -> &QueueName {
        &self.shared.name
    }

    /// Adds a job named `name` with `data` (serialized as JSON); options follow, and
    /// `.await` adds it. See [`AddJob`].
    pub fn add<T: Serialize + ?Sized>(&self, name: &str, data: &T) -> AddJob<'_> {
        let data = serde_json::to_vec(data)
            .map(Bytes::from)
            .map_err(Error::from);
        AddJob {
            queue: self,
            name: name.to_owned(),
            data,
            opts: JobOptions::default(),
        }
    }

    /// Adds several jobs in one round trip; each is decided on its own (a duplicate is
    /// reported as such and does not stop the others). Nothing is written when any job
    /// is invalid.
    pub async fn add_bulk<'a>(
        &'a self,
        jobs: impl IntoIterator<Item = AddJob<'a>>,
    ) -> Result<Vec<Enqueued>> {
        let jobs = jobs
            .into_iter()
            .map(|j| j.into_new_job())
            .collect::<Result<Vec<_>>>()?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.add_bulk_new(jobs).await
    }

    /// One job by id, with its data, progress and result.
    pub async fn job(&self, id: &JobId) -> Result<Option<JobInfo>> {
        self.shared.store().job(&self.shared.name, id).await
    }

    /// A job's log lines, oldest first, from `offset`, at most `limit`.
    pub async fn logs(&self, id: &JobId, offset: usize, limit: usize) -> Result<Vec<String>> {
        self.shared
            .store()
            .job_logs(&self.shared.name, id, offset, limit)
            .await
    }

    /// How many jobs are in each state (O(1) reads, no scan).
    pub async fn counts(&self) -> Result<JobCounts> {
        self.shared.store().counts(&self.shared.name).await
    }

    /// Jobs in `state`, a page of at most `limit` at a time: pass the previous page's
    /// `next` as `cursor`. Waiting jobs come in run order (jobs parked by a paused name
    /// are not listed until it resumes, and jobs of job groups wait in their groups' sets
    /// and are not listed: see [`group_counts`](Self::group_counts)), delayed ones by due time, active ones by lease
    /// expiry, finished ones by finish time (oldest first).
    pub async fn jobs(
        &self,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let page = self
            .shared
            .store()
            .list_jobs(&self.shared.name, state, cursor, limit.clamp(1, 1000))
            .await?;
        Ok(JobPage {
            jobs: page.jobs,
            next: page.next,
        })
    }

    /// Cancels a job (J-12). See [`CancelOutcome`]; [`Error::JobNotFound`] when there is
    /// no such job.
    pub async fn cancel(&self, id: &JobId) -> Result<CancelOutcome> {
        match self
            .shared
            .store()
            .cancel(&self.shared.name, id, &self.shared.settings)
            .await?
        {
            Cancelled::Cancelled => Ok(CancelOutcome::Cancelled),
            Cancelled::Requested => Ok(CancelOutcome::Requested),
            Cancelled::Finished(s) => Ok(CancelOutcome::AlreadyFinished(s)),
            Cancelled::NotFound => Err(self.not_found(id)),
        }
    }

    /// Removes a job that is not active, with its logs and dedup key; returns the state
    /// it was in. [`Error::JobActive`] for an active job (cancel it first),
    /// [`Error::JobNotFound`] when there is none.
    pub async fn remove(&self, id: &JobId) -> Result<JobState> {
        match self
            .shared
            .store()
            .remove_job(&self.shared.name, id, &self.shared.settings)
            .await?
        {
            Removed::Removed(s) => Ok(s),
            Removed::Active => Err(Error::JobActive {
                queue: self.shared.name.to_string(),
                job: id.to_string(),
            }),
            Removed::NotFound => Err(self.not_found(id)),
        }
    }

    /// Retries a failed or cancelled job: it is waiting again, at its place, with its
    /// attempts counted afresh (its dedup key, released when it finished, is not taken
    /// back). Returns the state it was in. [`Error::WrongJobState`] for a job in another
    /// state, [`Error::JobNotFound`] when there is none.
    pub async fn retry(&self, id: &JobId) -> Result<JobState> {
        self.requeue(id, Requeue::Retry, "retry", "failed or cancelled")
            .await
    }

    /// Promotes a delayed job: it is waiting now instead of at its run-at time.
    /// [`Error::WrongJobState`] for a job that is not delayed, [`Error::JobNotFound`]
    /// when there is none.
    pub async fn promote(&self, id: &JobId) -> Result<()> {
        self.requeue(id, Requeue::Promote, "promote", "delayed")
            .await
            .map(|_| ())
    }

    /// Retries up to `batch` of the oldest failed jobs in one atomic step (one script
    /// on Redis; `batch` is clamped to 1–1,000). Returns how many were retried and how
    /// many failed jobs are left; call again while some are left to retry them all.
    pub async fn retry_failed(&self, batch: usize) -> Result<(u64, u64)> {
        self.shared
            .store()
            .retry_failed(
                &self.shared.name,
                batch.clamp(1, 1000),
                &self.shared.settings,
            )
            .await
    }

    async fn requeue(
        &self,
        id: &JobId,
        how: Requeue,
        action: &'static str,
        applies_to: &'static str,
    ) -> Result<JobState> {
        match self
            .shared
            .store()
            .requeue(&self.shared.name, id, how, &self.shared.settings)
            .await?
        {
            Requeued::Moved(from) => Ok(from),
            Requeued::Refused(state) => Err(Error::WrongJobState {
                queue: self.shared.name.to_string(),
                job: id.to_string(),
                state: state.to_string(),
                action,
                applies_to,
            }),
            Requeued::NotFound => Err(self.not_found(id)),
        }
    }

    /// Pauses the whole queue (J-10): workers lease nothing until [`resume`](Self::resume)
    /// and idle without polling; running jobs finish.
    pub async fn pause(&self) -> Result<()> {
        self.shared.store().pause(&self.shared.name, None).await
    }

    /// Resumes the queue and wakes its workers.
    pub async fn resume(&self) -> Result<()> {
        self.shared.store().resume(&self.shared.name, None).await
    }

    /// Pauses one job name: its jobs wait while others run.
    pub async fn pause_name(&self, name: &str) -> Result<()> {
        let name = JobName::new(name)?;
        self.shared
            .store()
            .pause(&self.shared.name, Some(&name))
            .await
    }

    /// Resumes one job name: its jobs go back to their places in the queue.
    pub async fn resume_name(&self, name: &str) -> Result<()> {
        let name = JobName::new(name)?;
        self.shared
            .store()
            .resume(&self.shared.name, Some(&name))
            .await
    }

    /// Whether the queue is paused, and which job names are.
    pub async fn paused(&self) -> Result<(bool, Vec<JobName>)> {
        self.shared.store().paused(&self.shared.name).await
    }

    fn not_found(&self, id: &JobId) -> Error {
        Error::JobNotFound {
            queue: self.shared.name.to_string(),
            job: id.to_string(),
        }
    }
}

fn enqueued(a: Added) -> Enqueued {
    match a {
        Added::New(id, state) => Enqueued {
            id,
            duplicate: false,
            state: Some(state),
        },
        Added::Existing(id) => Enqueued {
            id,
            duplicate: true,
            state: None,
        },
    }
}

#[derive(Debug, Default, Clone)]
struct JobOptions {
    delay: Option<Duration>,
    run_at: Option<SystemTime>,
    priority: u32,
    dedup: Option<(String, Option<Duration>)>,
    attempts: Option<u32>,
    backoff: Option<RetryPolicy>,
    timeout: Option<Duration>,
    id: Option<String>,
    lifo: bool,
    remove_on_complete: bool,
    remove_on_fail: bool,
    group: Option<String>,
}

/// A job being added: options, then `.await` (or hand it to [`Queue::add_bulk`]).
#[must_use = "a job is added only when awaited or passed to add_bulk"]
pub struct AddJob<'a> {
    queue: &'a Queue,
    name: String,
    data: Result<Bytes>,
    opts: JobOptions,
}

impl fmt::Debug for AddJob<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddJob")
            .field("queue", &self.queue.shared.name)
            .field("name", &self.name)
            .field("opts", &self.opts)
            .finish()
    }
}

impl<'a> AddJob<'a> {
    /// The queue the job goes to.
    pub(crate) fn queue(&self) -> &'a Queue {
        self.queue
    }
}

impl AddJob<'_> {
    /// Runs the job no earlier than `delay` from now (J-3).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.opts.delay = Some(delay);
        self
    }

    /// Runs the job no earlier than `at` (J-3); a time in the past means now.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.opts.run_at = Some(at);
        self
    }

    /// Lower runs first (J-5); 0 (the default) is the highest, [`MAX_PRIORITY`] the
    /// lowest.
    pub fn priority(mut self, priority: u32) -> Self {
        self.opts.priority = priority;
        self
    }

    /// Adds the job only if no job holds `key` (J-6): until that job finishes (completed,
    /// failed or cancelled) or is removed. A second add returns the holder's id.
    pub fn dedup(mut self, key: &str) -> Self {
        self.opts.dedup = Some((key.to_owned(), None));
        self
    }

    /// Adds the job only if `key` was not taken in the last `ttl`, whatever became of
    /// that job (J-6). The key is released after `ttl`, or earlier if its job is
    /// removed.
    pub fn dedup_for(mut self, key: &str, ttl: Duration) -> Self {
        self.opts.dedup = Some((key.to_owned(), Some(ttl)));
        self
    }

    /// Total attempts, including the first (default: the queue's retry policy).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.opts.attempts = Some(attempts);
        self
    }

    /// The backoff between attempts, as a bus retry policy (its `max_attempts` applies
    /// unless [`attempts`](Self::attempts) is set; its jitter applies to handler failures).
    pub fn backoff(mut self, policy: RetryPolicy) -> Self {
        self.opts.backoff = Some(policy);
        self
    }

    /// Cancels the handler after `timeout`; this counts as a failed attempt (J-12).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.timeout = Some(timeout);
        self
    }

    /// Chooses the job's id: adding again with an id that exists returns it and writes
    /// nothing (idempotent add).
    pub fn job_id(mut self, id: &str) -> Self {
        self.opts.id = Some(id.to_owned());
        self
    }

    /// Runs this job before the others of its priority that are waiting (newest first).
    pub fn lifo(mut self) -> Self {
        self.opts.lifo = true;
        self
    }

    /// Removes the job as soon as it completes, instead of keeping it under retention.
    pub fn remove_on_complete(mut self) -> Self {
        self.opts.remove_on_complete = true;
        self
    }

    /// Removes the job as soon as it fails for good (or is cancelled).
    pub fn remove_on_fail(mut self) -> Self {
        self.opts.remove_on_fail = true;
        self
    }

    /// The id the caller chose, if any.
    pub(crate) fn chosen_id(&self) -> Option<&str> {
        self.opts.id.as_deref()
    }

    /// Sets the id (a flow derives its children's ids from their parents').
    pub(crate) fn set_id(&mut self, id: &JobId) {
        self.opts.id = Some(id.to_string());
    }

    /// Adds the job to a group (a tenant, J-8): groups take turns, each under the
    /// queue's group limits (see [`crate::jobs::limits`]).
    pub fn group(mut self, group: &str) -> Self {
        self.opts.group = Some(group.to_owned());
        self
    }

    pub(crate) fn into_new_job(self) -> Result<NewJob> {
        let shared = &self.queue.shared;
        let name = JobName::new(self.name)?;
        let data = self.data?;
        if data.len() > shared.max_payload {
            return Err(Error::PayloadTooLarge {
                size: data.len(),
                limit: shared.max_payload,
            });
        }
        let o = self.opts;
        if o.priority > MAX_PRIORITY {
            return Err(Error::config(format!(
                "priority {} is over the maximum of {MAX_PRIORITY}",
                o.priority
            )));
        }
        let mut policy = o.backoff.unwrap_or_else(|| shared.retry.clone());
        if let Some(n) = o.attempts {
            policy.max_attempts = n;
        }
        policy.validate()?;
        let timeout = o.timeout.or(shared.timeout);
        if timeout == Some(Duration::ZERO) {
            return Err(Error::config("a job timeout must be longer than zero"));
        }
        let dedup = match o.dedup {
            None => None,
            Some((key, ttl)) => {
                // Dedup keys follow the naming rule, so they are safe in key names.
                let key = JobId::new(key).map_err(|_| {
                    Error::config("a dedup key must be 1-200 bytes of [A-Za-z0-9._:-]")
                })?;
                if let Some(t) = ttl
                    && (t.is_zero() || t > MAX_DEDUP_TTL)
                {
                    return Err(Error::config(
                        "a dedup TTL must be longer than zero and at most 30 days",
                    ));
                }
                Some(Dedup {
                    key: key.to_string(),
                    ttl_ms: ttl.map(crate::deadline::millis),
                })
            }
        };
        let group = o.group.map(JobGroup::new).transpose()?;
        let id = match o.id {
            Some(id) => JobId::new(id)?,
            None => JobId::generate(),
        };
        let run_at_ms = o.run_at.map(|t| {
            // Not `deadline::millis`: epoch times are past its 30-year cut.
            t.duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        });
        Ok(NewJob {
            id,
            name,
            data,
            priority: o.priority,
            lifo: o.lifo,
            delay_ms: o.delay.map(crate::deadline::millis).unwrap_or(0),
            run_at_ms,
            max_attempts: policy.max_attempts,
            backoff: StoredBackoff {
                base_ms: crate::deadline::millis(policy.backoff),
                multiplier: policy.multiplier,
                max_ms: crate::deadline::millis(policy.max_delay.unwrap_or(MAX_RETRY_DELAY)),
            },
            timeout_ms: timeout.map(crate::deadline::millis),
            dedup,
            remove_on_complete: o.remove_on_complete,
            remove_on_fail: o.remove_on_fail,
            // The adder's span, so the job's runs join its trace (B-PUB-3 for jobs).
            trace: crate::trace::TraceContext::current(),
            group,
        })
    }

    async fn run(self) -> Result<Enqueued> {
        let queue = self.queue;
        let job = self.into_new_job()?;
        tracing::Span::current().record("job_id", job.id.as_str());
        let mut added = queue.add_bulk_new(vec![job]).await?;
        added
            .pop()
            .ok_or_else(|| Error::Protocol("the store answered an add with nothing".into()))
    }
}

impl Queue {
    async fn add_bulk_new(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        let added = self
            .shared
            .store()
            .add_jobs(&self.shared.name, &jobs, &self.shared.settings)
            .await?;
        metrics::counter!("rivulet_jobs_added_total", "queue" => self.shared.name.to_string())
            .increment(added.iter().filter(|a| matches!(a, Added::New(..))).count() as u64);
        Ok(added.into_iter().map(enqueued).collect())
    }
}

impl<'a> IntoFuture for AddJob<'a> {
    type Output = Result<Enqueued>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Enqueued>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        // The span whose context the job's record keeps (with `otel`): its runs are its
        // children.
        let span = tracing::debug_span!(
            "rivulet.job_add",
            queue = %self.queue.shared.name,
            job_name = %self.name,
            job_id = tracing::field::Empty,
        );
        Box::pin(self.run().instrument(span))
    }
}
