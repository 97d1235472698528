//! The seam between the job queue and where jobs live (J-1 … J-16).
//!
//! The queue and the worker own the behaviour (builders, outcome rules, lease renewal,
//! dispatch, drain); a store owns the jobs and makes **every transition one atomic step**
//! (one Lua script on Redis, one critical section on memory). All of a queue's keys share
//! one hash tag, and no step does work proportional to the backlog: each is bounded by
//! its arguments (a batch, a page, a promotion limit).
//!
//! The semantics every store implements (the memory store is the executable reference):
//!
//! * **Waiting order** (J-5): lower priority first; within a priority, jobs added with
//!   `lifo` come first (newest first), then the others in the order they were added. A
//!   job that goes back to waiting (stalled, released, promoted) keeps its place key.
//! * **Delayed** (J-3): a job with `run_at_ms` in the future is delayed; every fetch first
//!   promotes up to `promote_limit` delayed jobs whose time has come (by the store's
//!   clock: Redis `TIME`), never one whose time has not; the reply says when the next
//!   delayed job is due, so an idle worker sleeps until then at most.
//! * **Leases and fencing** (J-11): a fetch leases a job with a fresh token (a number
//!   that grows with each activation of that job) and a lease expiry; every later write
//!   about that activation (settle, renew, progress, log) names the token, and is refused
//!   (`LeaseLost` / `false`) unless the job is still active under that token.
//! * **Pause** (J-10): a paused queue leases nothing. A paused job name leases nothing of
//!   that name: a fetch that meets such a job parks it (it stays `waiting`, counted in
//!   `parked`) and goes on; resuming the name puts its parked jobs back in their places.
//! * **Dedup** (J-6): an add with a dedup key whose key is held returns the holder's id
//!   and writes nothing. A key without a TTL is held until its job finishes (completed,
//!   failed or cancelled) or is removed; a key with a TTL is held until the TTL ends or
//!   its job is removed, whichever is first. An add with a caller-chosen id that exists
//!   returns it and writes nothing.
//! * **Retention** (J-14): a transition that finishes jobs also removes, per finished
//!   kind it touched, up to `batch + 8` of the oldest finished jobs beyond `Keep::count`
//!   or older than `Keep::age`; cancelled jobs follow the failed policy. Removing a job
//!   removes its record, its logs and its dedup key (when the key still names it).
//! * **Events** (J-15): every transition appends its events to the queue's stream, capped
//!   at about `events_cap` entries; they carry no data or result.
//! * **Counts** (J-16): read in O(1) per state from structure sizes or counters.
//! * **Limits and groups** (J-7, J-8, see [`crate::jobs::limits`]): a fetch leases at
//!   most the room under the queue's concurrency cap (its active jobs) and its rate
//!   window (starts in the last period), and none while the queue is held by a
//!   rate-limited settlement; the reply says when a window or hold opens. Grouped jobs
//!   wait in their group's order (the waiting order above); groups with waiting jobs,
//!   room under the group cap and window, and not paused, take turns with each other
//!   and with the ungrouped jobs (which take part in the rotation as one member), one
//!   job per turn.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::jobs::limits::{GroupCounts, Limits};
use crate::jobs::record::{JobCounts, JobEvent, JobInfo, JobState, Keep};
use crate::name::{JobGroup, JobId, JobName, QueueName};
use crate::trace::TraceContext;

/// How a job's failed attempts are spaced, as stored with the job (the stalled-job check
/// needs it without the worker): `base × multiplier^(attempt − 1)`, capped at `max_ms`.
/// Jitter is applied by the worker only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StoredBackoff {
    pub(crate) base_ms: u64,
    pub(crate) multiplier: f64,
    pub(crate) max_ms: u64,
}

impl StoredBackoff {
    /// The delay after failed attempt `attempt` (1-based).
    pub(crate) fn delay_ms(&self, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(1000) as i32;
        let d = (self.base_ms as f64) * self.multiplier.powi(exp);
        if !d.is_finite() || d >= self.max_ms as f64 {
            self.max_ms
        } else {
            d as u64
        }
    }
}

/// A dedup key and its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dedup {
    pub(crate) key: String,
    /// `None`: held until the job finishes; `Some`: held for this long from the add.
    pub(crate) ttl_ms: Option<u64>,
}

/// A job to add.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub(crate) id: JobId,
    pub(crate) name: JobName,
    pub(crate) data: Bytes,
    pub(crate) priority: u32,
    pub(crate) lifo: bool,
    /// Delay from the store's clock at the add (0 = none). Ignored when `run_at_ms` is
    /// set.
    pub(crate) delay_ms: u64,
    /// An absolute run-at time (ms since the epoch); in the past means now.
    pub(crate) run_at_ms: Option<u64>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: StoredBackoff,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) dedup: Option<Dedup>,
    pub(crate) remove_on_complete: bool,
    pub(crate) remove_on_fail: bool,
    /// The trace context of the span that added it (the `traceparent` and `tracestate`
    /// fields of the job's record), so its runs join the adder's trace.
    pub(crate) trace: Option<TraceContext>,
    /// The job's group (J-8), if any.
    pub(crate) group: Option<JobGroup>,
}

/// What an add came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Added {
    /// Written, in this state (waiting or delayed).
    New(JobId, JobState),
    /// Not written: a job with this id exists, or the dedup key is held by this job.
    Existing(JobId),
}

#[cfg(all(test, feature = "redis"))]
impl Added {
    pub(crate) fn id(&self) -> &JobId {
        match self {
            Added::New(id, _) | Added::Existing(id) => id,
        }
    }
}

/// A leased job, as a fetch hands it out.
#[derive(Debug, Clone)]
pub(crate) struct Leased {
    pub(crate) id: JobId,
    pub(crate) name: JobName,
    pub(crate) data: Bytes,
    /// This run's attempt (1-based).
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: StoredBackoff,
    pub(crate) timeout_ms: Option<u64>,
    /// The fencing token of this activation.
    pub(crate) token: u64,
    pub(crate) added_at_ms: u64,
    /// When it became ready to run: its run-at time if it was delayed (the latest
    /// promotion), else when it was added.
    pub(crate) ready_at_ms: u64,
    /// The trace context recorded at the add.
    pub(crate) trace: Option<TraceContext>,
}

/// How an activation ends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Settlement {
    /// Completed with this return value (JSON).
    Complete { result: Bytes },
    /// A failed attempt to run again after `delay_ms` (0 = waiting at once).
    Retry { delay_ms: u64, error: String },
    /// Failed for good.
    Fail { error: String },
    /// Given back by a stopping worker, not counted as an attempt or a stall: waiting
    /// again at its place.
    Release,
    /// The handler met a rate limit (J-7): back to delayed for `delay_ms` (waiting at
    /// once for 0) without spending the attempt; the job's group (the queue, for an
    /// ungrouped job) leases nothing for that long.
    RateLimited { delay_ms: u64 },
}

/// One settlement of one activation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settle {
    pub(crate) id: JobId,
    pub(crate) token: u64,
    pub(crate) how: Settlement,
}

/// What a settlement came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Applied; the job is now in this state. A job whose cancelling was asked for while
    /// it ran ends `Cancelled` whatever the settlement said (but `Release`, which puts
    /// it back to waiting only when no cancel was asked for).
    Applied(JobState),
    /// Refused: the job is no longer active under that token (its lease expired and it
    /// was taken back or given to another worker, or it was removed).
    LeaseLost,
}

/// Per-queue settings that transitions need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QueueSettings {
    pub(crate) keep_completed: Keep,
    /// Also applies to cancelled jobs.
    pub(crate) keep_failed: Keep,
    /// The approximate cap of the event stream.
    pub(crate) events_cap: u64,
    /// The most log lines kept per job.
    pub(crate) log_cap: u64,
}

/// One fetch: settle what finished, then lease up to `limit` jobs.
#[derive(Debug, Clone)]
pub(crate) struct Fetch {
    /// Who leases (shown in the job record and the admin views).
    pub(crate) worker: String,
    /// The most jobs to lease (0 = only settle and promote).
    pub(crate) limit: usize,
    /// How long a lease lasts without renewal.
    pub(crate) lease_ms: u64,
    /// The most delayed jobs promoted in this step.
    pub(crate) promote_limit: usize,
    /// Settlements applied before leasing, in the same round trip.
    pub(crate) settle: Vec<Settle>,
}

/// The reply to a fetch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fetched {
    /// One per settlement, in order.
    pub(crate) settled: Vec<Settled>,
    /// The jobs leased, in waiting order.
    pub(crate) jobs: Vec<Leased>,
    /// When the next delayed job is due (ms since the epoch), if any.
    pub(crate) next_due_ms: Option<u64>,
    /// Whether the whole queue is paused.
    pub(crate) paused: bool,
    /// When a limit that held back work opens again (a rate window, a hold), if any:
    /// the worker fetches again then (J-7).
    pub(crate) limited_until_ms: Option<u64>,
}

/// What a lease renewal found for one activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Renewed.
    Renewed,
    /// Cancelling the job was asked for: not renewed, so the lease runs out unless the
    /// handler stops and the worker settles first.
    Cancel,
    /// The job is no longer active under that token.
    Lost,
}

/// What a stalled-job check did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stalled {
    /// Back to waiting (stalls ≤ `max_stalled`).
    pub(crate) returned: Vec<JobId>,
    /// Counted as a failed attempt: delayed for a retry, or failed when no attempts are
    /// left.
    pub(crate) failed_attempt: Vec<JobId>,
    /// Cancelling was asked for: now cancelled.
    pub(crate) cancelled: Vec<JobId>,
}

/// What cancelling a job did.
#[allow(clippy::enum_variant_names)] // `Cancelled::Cancelled` reads as what happened
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// It was waiting or delayed: now cancelled.
    Cancelled,
    /// It is active: cancelling was asked for, and its worker was told.
    Requested,
    /// It had already finished in this state; nothing changed.
    Finished(JobState),
    /// No such job.
    NotFound,
}

/// What removing a job did.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removed {
    /// Removed (it was in this state).
    Removed(JobState),
    /// It is active; cancel it first.
    Active,
    /// No such job.
    NotFound,
}

/// Which operator move [`JobQueues::requeue`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requeue {
    /// A failed or cancelled job back to waiting, with its attempts counted afresh.
    Retry,
    /// A delayed job to waiting now.
    Promote,
}

/// What a requeue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requeued {
    /// Moved from this state to waiting.
    Moved(JobState),
    /// The job is in a state the move does not apply to; nothing changed.
    Refused(JobState),
    /// No such job.
    NotFound,
}

/// A page of jobs in one state.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobPage {
    pub(crate) jobs: Vec<JobInfo>,
    /// Pass back to get the next page; `None` at the end.
    pub(crate) next: Option<String>,
}

/// A blocking wait for work on one queue, on a connection of its own.
#[async_trait]
pub(crate) trait JobWaiter: Send {
    /// Returns when jobs may have been added, promoted, resumed or given back on the
    /// queue (`true`), or after `timeout` (`false`). May return `true` spuriously.
    async fn wait(&mut self, timeout: Duration) -> Result<bool>;
}

/// Reading a queue's event stream, on a connection of its own (it may block).
#[async_trait]
pub(crate) trait EventReader: Send {
    /// Events after `after` (from the oldest retained when `None`), at most `limit`;
    /// waits up to `block` for one when there are none (no wait when `None`).
    async fn read(
        &mut self,
        after: Option<&str>,
        limit: usize,
        block: Option<Duration>,
    ) -> Result<Vec<JobEvent>>;
}

/// Everything a store of jobs provides. See the module docs.
#[async_trait]
pub(crate) trait JobQueues: Send + Sync {
    /// Adds jobs in one round trip, each atomically (dedup and caller ids are decided per
    /// job, in order). Registers the queue in the queue registry.
    async fn add_jobs(
        &self,
        queue: &QueueName,
        jobs: &[NewJob],
        settings: &QueueSettings,
    ) -> Result<Vec<Added>>;

    /// Settles, promotes and leases, in one round trip (see [`Fetch`]).
    async fn fetch(
        &self,
        queue: &QueueName,
        fetch: &Fetch,
        settings: &QueueSettings,
    ) -> Result<Fetched>;

    /// Settles only (a worker with nothing more to lease, or stopping).
    async fn settle(
        &self,
        queue: &QueueName,
        settle: &[Settle],
        settings: &QueueSettings,
    ) -> Result<Vec<Settled>>;

    /// Extends the leases of these activations to `lease_ms` from now.
    async fn renew(
        &self,
        queue: &QueueName,
        leases: &[(JobId, u64)],
        lease_ms: u64,
    ) -> Result<Vec<Renewal>>;

    /// Takes back up to `limit` jobs whose lease has expired: each counts a stall; with
    /// stalls ≤ `max_stalled` it is waiting again at its place, beyond that the stall is
    /// a failed attempt (delayed by its backoff, or failed without attempts left); a job
    /// whose cancelling was asked for becomes cancelled.
    async fn check_stalled(
        &self,
        queue: &QueueName,
        max_stalled: u32,
        limit: usize,
        settings: &QueueSettings,
    ) -> Result<Stalled>;

    /// Records progress (JSON) of an activation; `false` when its lease is lost.
    async fn progress(
        &self,
        queue: &QueueName,
        id: &JobId,
        token: u64,
        progress: Bytes,
        settings: &QueueSettings,
    ) -> Result<bool>;

    /// Appends a log line of an activation, keeping the last `log_cap` lines; `false`
    /// when its lease is lost.
    async fn log(
        &self,
        queue: &QueueName,
        id: &JobId,
        token: u64,
        line: &str,
        settings: &QueueSettings,
    ) -> Result<bool>;

    /// Cancels a job (J-12): see [`Cancelled`]. For an active job it sets the flag the
    /// next renewal reads and sends a hint to the [`cancel_hints`](Self::cancel_hints)
    /// of every process.
    async fn cancel(
        &self,
        queue: &QueueName,
        id: &JobId,
        settings: &QueueSettings,
    ) -> Result<Cancelled>;

    /// Ids of active jobs whose cancelling was asked for, as hints (may be lost).
    async fn cancel_hints(
        &self,
        queue: &QueueName,
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<JobId>>;

    /// Removes a job that is not active (with its logs and dedup key).
    async fn remove_job(
        &self,
        queue: &QueueName,
        id: &JobId,
        settings: &QueueSettings,
    ) -> Result<Removed>;

    /// Moves one job to waiting (see [`Requeue`]), atomically. A retried job starts
    /// its attempts from 1 again; its dedup key (released when it finished) is not
    /// taken back.
    async fn requeue(
        &self,
        queue: &QueueName,
        id: &JobId,
        how: Requeue,
        settings: &QueueSettings,
    ) -> Result<Requeued>;

    /// Retries up to `limit` of the oldest failed jobs in one atomic step (as
    /// [`Requeue::Retry`]); returns how many were moved and how many failed jobs are
    /// left.
    async fn retry_failed(
        &self,
        queue: &QueueName,
        limit: usize,
        settings: &QueueSettings,
    ) -> Result<(u64, u64)>;

    /// Pauses the queue (`name` = `None`) or one job name.
    async fn pause(&self, queue: &QueueName, name: Option<&JobName>) -> Result<()>;

    /// Resumes the queue or one job name, putting the name's parked jobs back in their
    /// places (in batches; returns when all are back) and waking workers.
    async fn resume(&self, queue: &QueueName, name: Option<&JobName>) -> Result<()>;

    /// Whether the queue is paused, and the job names that are.
    async fn paused(&self, queue: &QueueName) -> Result<(bool, Vec<JobName>)>;

    /// One job by id.
    async fn job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>>;

    /// Log lines of a job, oldest first, from `offset`, at most `limit`.
    async fn job_logs(
        &self,
        queue: &QueueName,
        id: &JobId,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>>;

    /// Counts per state, without scanning.
    async fn counts(&self, queue: &QueueName) -> Result<JobCounts>;

    /// Jobs in `state`, in the state's order (waiting: run order; delayed: due time;
    /// active: lease expiry; finished: finish time, oldest first), a page at a time.
    async fn list_jobs(
        &self,
        queue: &QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage>;

    /// The queues of the registry.
    async fn queues(&self) -> Result<Vec<QueueName>>;

    /// The counts of `queues`, in order, at bounded cost: on Redis one pipelined round
    /// trip for all of them (on a cluster, one per queue, sent concurrently).
    async fn sample_queues(&self, queues: &[QueueName]) -> Result<Vec<JobCounts>>;

    /// A waiter for new work on `queue`.
    async fn job_waiter(&self, queue: &QueueName) -> Result<Box<dyn JobWaiter>>;

    /// A reader of `queue`'s events.
    async fn event_reader(&self, queue: &QueueName) -> Result<Box<dyn EventReader>>;

    /// Stores the queue's limits (J-7, J-8), replacing the previous ones, and wakes its
    /// workers.
    async fn set_limits(&self, queue: &QueueName, limits: &Limits) -> Result<()>;

    /// The queue's stored limits.
    async fn limits(&self, queue: &QueueName) -> Result<Limits>;

    /// Pauses (`true`) or resumes a group; `false` when it was so already. Appends a
    /// `group-paused` / `group-resumed` event when it changed.
    async fn pause_group(
        &self,
        queue: &QueueName,
        group: &JobGroup,
        paused: bool,
        settings: &QueueSettings,
    ) -> Result<bool>;

    /// A group's counts, in O(1).
    async fn group_counts(&self, queue: &QueueName, group: &JobGroup) -> Result<GroupCounts>;

    /// The queue's job groups that have waiting or active jobs or are paused, by name,
    /// after `after` (exclusive), at most `limit`, each with its counts. Costs
    /// O(groups in play) reads on the server (they are the rotation's structures), plus
    /// O(limit) for the counts: no group registry is kept beside them.
    async fn list_groups(
        &self,
        queue: &QueueName,
        after: Option<&JobGroup>,
        limit: usize,
    ) -> Result<Vec<(JobGroup, GroupCounts)>>;
}
