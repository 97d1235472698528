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
//!   keeps the scheduler where no read finds it due when there is none) and appends a
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

/// Checks of the compare-and-set that every store must pass, run by each store's tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod checks {
    use super::*;
    use crate::backend::jobs::JobQueues;
    use crate::jobs::record::Keep;
    use crate::jobs::scheduler::run::plan;

    fn settings() -> QueueSettings {
        QueueSettings {
            keep_completed: Keep::completed_default(),
            keep_failed: Keep::failed_default(),
            events_cap: 1_000,
            log_cap: 100,
        }
    }

    fn record(every_ms: u64, next_ms: u64, data: &str) -> StoredScheduler {
        StoredScheduler {
            id: "s".into(),
            kind: "every".into(),
            value: every_ms.to_string(),
            tz: String::new(),
            job_name: JobName::new("tick").unwrap(),
            job_data: Bytes::from(data.to_owned()),
            job_opts: r#"{"priority":0,"lifo":false,"max_attempts":1,"backoff_base_ms":0,"backoff_multiplier":1.0,"backoff_max_ms":0,"timeout_ms":null,"remove_on_complete":false,"remove_on_fail":false}"#.into(),
            version: 0,
            next_ms: Some(next_ms),
            last_ms: None,
            last_job: None,
        }
    }

    /// A fire planned from a read that is no longer current (the scheduler was replaced,
    /// updated, fired by someone else, or removed) writes nothing; a current one adds its
    /// job once.
    pub(crate) async fn only_a_current_read_fires<B: JobSchedulers + JobQueues>(b: &B) {
        let q = QueueName::new("sched-cas").unwrap();
        let s = settings();
        let waiting = || async { b.counts(&q).await.unwrap().waiting };
        let now = b.store_time_ms(&q).await.unwrap();
        let due_at = now - now % 100 - 1_000;
        let up = b
            .upsert_scheduler(&q, &record(100, due_at, "1"))
            .await
            .unwrap();
        assert_eq!((up.outcome, up.version), (UpsertOutcome::Created, 1));
        let read = b.due_schedulers(&q, 10).await.unwrap();
        assert_eq!(read.due.len(), 1);
        let old = plan(&read.due[0], read.due[0].next_ms.unwrap() + 500).unwrap();

        // Replaced after the read: the old plan is refused.
        let far = now + 3_600_000;
        let up = b
            .upsert_scheduler(&q, &record(200, far, "1"))
            .await
            .unwrap();
        assert_eq!((up.outcome, up.version), (UpsertOutcome::Replaced, 2));
        assert_eq!(
            b.fire_schedulers(&q, &[old], &s).await.unwrap(),
            [Fired::Stale]
        );
        assert_eq!(waiting().await, 0);
        assert!(b.due_schedulers(&q, 10).await.unwrap().due.is_empty());

        // Due again; the template changes after the read: refused too.
        b.upsert_scheduler(&q, &record(300, due_at, "1"))
            .await
            .unwrap();
        let read = b.due_schedulers(&q, 10).await.unwrap();
        let old = plan(&read.due[0], read.now_ms).unwrap();
        let up = b
            .upsert_scheduler(&q, &record(300, due_at, "2"))
            .await
            .unwrap();
        assert_eq!(
            (up.outcome, up.next_ms),
            (UpsertOutcome::Updated, Some(due_at))
        );
        assert_eq!(
            b.fire_schedulers(&q, &[old], &s).await.unwrap(),
            [Fired::Stale]
        );
        assert_eq!(waiting().await, 0);

        // Two runners with the same current read: the first adds the job, the second
        // is refused.
        let read = b.due_schedulers(&q, 10).await.unwrap();
        let p = plan(&read.due[0], read.now_ms).unwrap();
        let tick = p.tick_ms;
        let r = b.fire_schedulers(&q, &[p.clone(), p], &s).await.unwrap();
        assert!(
            matches!(&r[0], Fired::Fired(Added::New(id, _)) if id.as_str() == format!("sched:s:{tick}")),
            "{r:?}"
        );
        assert_eq!(r[1], Fired::Stale);
        assert_eq!(waiting().await, 1);
        let list = b.schedulers(&q).await.unwrap();
        assert_eq!(list[0].last_ms, Some(tick));
        assert!(list[0].next_ms.unwrap() > tick);

        // Removed after a read: refused.
        b.upsert_scheduler(&q, &record(400, due_at, "3"))
            .await
            .unwrap();
        let read = b.due_schedulers(&q, 10).await.unwrap();
        let p = plan(&read.due[0], read.now_ms).unwrap();
        assert!(b.remove_scheduler(&q, "s").await.unwrap());
        assert_eq!(
            b.fire_schedulers(&q, &[p], &s).await.unwrap(),
            [Fired::Stale]
        );
        assert_eq!(waiting().await, 1);
        assert!(b.schedulers(&q).await.unwrap().is_empty());

        // A fire with no tick after it: listed, never due again.
        b.upsert_scheduler(&q, &record(500, due_at, "4"))
            .await
            .unwrap();
        let read = b.due_schedulers(&q, 10).await.unwrap();
        let mut p = plan(&read.due[0], read.now_ms).unwrap();
        p.next_ms = None;
        let r = b.fire_schedulers(&q, &[p], &s).await.unwrap();
        assert!(matches!(&r[0], Fired::Fired(Added::New(..))), "{r:?}");
        let list = b.schedulers(&q).await.unwrap();
        assert_eq!((list.len(), list[0].next_ms), (1, None));
        let read = b.due_schedulers(&q, 10).await.unwrap();
        assert!(read.due.is_empty());
        assert_eq!(read.next_ms, None);
    }
}
