//! The seam between job schedulers (J-4) and where they are stored.
//!
//! A scheduler is a record per scheduler id plus its place in an index of next fire
//! times, in the queue's slot. The runner (`jobs/scheduler/run.rs`) computes ticks in
//! Rust; a store only keeps what it is told, and makes each step atomic:
//!
//! * **Upsert** compares the stored schedule and template with the new ones: the same
//!   → nothing is written; a new schedule → the record is replaced (version + 1, next
//!   fire time as given); the same schedule with a new template → the template is
//!   replaced (version + 1) and the next fire time kept.
//! * **Fire** is a compare-and-set: it applies only if the record still has the version
//!   and next fire time the runner read, and then, in the same step, adds the tick's job
//!   (with an id derived from the scheduler id and the tick, so an add of an existing id
//!   writes nothing), records the tick as the last run, stores the next fire time (or
//!   takes the scheduler out of the index when there is none) and appends a
//!   `scheduler-fired` event. A fire that lost the race writes nothing.
//! * Times are the store's clock (Redis `TIME`), so hosts with skewed clocks agree.

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::jobs::{Added, NewJob, QueueSettings};
use crate::error::Result;
use crate::name::{JobId, JobName, QueueName};

/// A scheduler as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredScheduler {
    pub(crate) id: String,
    /// `cron` or `every` (see `Schedule::to_wire`).
    pub(crate) kind: String,
    /// The cron expression, or the interval in ms.
    pub(crate) value: String,
    /// The time zone of a cron expression ('' for an interval).
    pub(crate) tz: String,
    pub(crate) job_name: JobName,
    pub(crate) job_data: Bytes,
    /// The template's options as JSON (`jobs::scheduler::TemplateOpts`).
    pub(crate) job_opts: String,
    pub(crate) version: u64,
    /// The next fire time; `None` once the schedule has no tick left.
    pub(crate) next_ms: Option<u64>,
    /// The last tick fired, and the job it added.
    pub(crate) last_ms: Option<u64>,
    pub(crate) last_job: Option<JobId>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpsertOutcome {
    Created,
    /// A different schedule: the next fire time was replaced.
    Replaced,
    /// The same schedule, another template: the next fire time was kept.
    Updated,
    Unchanged,
}

/// What an upsert came to, with the record's version and next fire time afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upserted {
    pub(crate) outcome: UpsertOutcome,
    pub(crate) version: u64,
    pub(crate) next_ms: Option<u64>,
}

/// Due schedulers, as the store's clock saw them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Due {
    /// The store's clock at the read (ms since the epoch).
    pub(crate) now_ms: u64,
    /// Schedulers whose next fire time is at or before `now_ms`, earliest first.
    pub(crate) due: Vec<StoredScheduler>,
    /// The earliest next fire time after `now_ms`, if any.
    pub(crate) next_ms: Option<u64>,
}

/// One fire: the compare-and-set and the job it adds.
#[derive(Debug, Clone)]
pub(crate) struct Fire {
    pub(crate) id: String,
    /// The version and next fire time the runner read.
    pub(crate) version: u64,
    pub(crate) expected_next_ms: u64,
    /// The tick fired (≥ `expected_next_ms`), and the next fire time after it.
    pub(crate) tick_ms: u64,
    pub(crate) next_ms: Option<u64>,
    /// The tick's job; its id is derived from the scheduler id and the tick.
    pub(crate) job: NewJob,
}

/// What a fire came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fired {
    /// Applied: the job was added (or, only if the store's clock went back, found).
    Fired(Added),
    /// Not applied: the record moved on (another runner fired, or it was upserted or
    /// removed) since it was read.
    Stale,
}

/// Everything a store of job schedulers provides. See the module docs.
#[async_trait]
pub(crate) trait JobSchedulers: Send + Sync {
    /// The store's clock, in ms since the epoch (on a Cluster: the clock of the node
    /// that holds the queue).
    async fn store_time_ms(&self, queue: &QueueName) -> Result<u64>;

    /// Creates or replaces a scheduler (see the module docs); `record.version`,
    /// `last_ms` and `last_job` are ignored, `next_ms` is used when the schedule is new.
    async fn upsert_scheduler(
        &self,
        queue: &QueueName,
        record: &StoredScheduler,
    ) -> Result<Upserted>;

    /// Removes a scheduler; `false` when there was none. Jobs it added stay.
    async fn remove_scheduler(&self, queue: &QueueName, id: &str) -> Result<bool>;

    /// Every scheduler of the queue, by id.
    async fn schedulers(&self, queue: &QueueName) -> Result<Vec<StoredScheduler>>;

    /// Up to `limit` due schedulers, and when the next one is due.
    async fn due_schedulers(&self, queue: &QueueName, limit: usize) -> Result<Due>;

    /// Applies fires, each atomically, in one round trip; one reply per fire, in order.
    async fn fire_schedulers(
        &self,
        queue: &QueueName,
        fires: &[Fire],
        settings: &QueueSettings,
    ) -> Result<Vec<Fired>>;
}
