//! A queue's limits and job groups (J-7, J-8): a queue-wide concurrency cap, rate limits
//! per queue and per group, and groups (tenants) that take turns.
//!
//! Limits are **stored with the queue** (in Redis: fields of the queue's meta hash), so
//! every worker in every process obeys the same ones; [`Queue::set_limits`] replaces
//! them and takes effect at the next fetch of every worker. There is no builder option:
//! one place to change them, and no process with stale options to overwrite another's.
//! Every limit is enforced by the fetch step itself, atomically with leasing, so N
//! workers in M processes together never exceed it.
//!
//! * **Concurrency cap**: at most `n` jobs of the queue active at once. A worker at the
//!   cap idles until a job of the queue leaves active (which wakes it).
//! * **Rate limit**: at most `max` jobs *started* in any sliding window of `per` (a
//!   sorted set of start stamps trimmed to the window). A worker that meets it sleeps
//!   until the window has room (the fetch reply says when), without polling.
//! * **Groups**: `queue.add(..).group("tenant-a")`. Each group has its own waiting order
//!   (priority, then FIFO/LIFO, as the queue); groups with ready jobs take turns,
//!   round-robin, one job per turn, so a tenant with 100,000 waiting jobs does not
//!   starve one with 10. Ungrouped jobs take part in the rotation as one more member.
//!   `group_concurrency` caps each group's active jobs; `group_rate` limits each group's
//!   starts; [`Queue::pause_group`] holds one group back.
//! * **Rate-limited handlers**: [`HandlerError::rate_limited`](crate::HandlerError::rate_limited)
//!   puts the job back (delayed by the given time) without spending an attempt, and holds
//!   its group (or, for an ungrouped job, the whole queue) for that time.

use std::time::Duration;

use super::queue::Queue;
use crate::backend::jobs::JobQueues;
use crate::error::{Error, Result};
use crate::name::JobGroup;

/// The longest rate-limit period: one day.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// At most `max` starts in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rate {
    /// Starts allowed per window (at least 1).
    pub max: u32,
    /// The window (1 ms to [`MAX_RATE_PERIOD`]).
    pub per: Duration,
}

impl Rate {
    /// At most `max` starts per `per`.
    pub fn new(max: u32, per: Duration) -> Self {
        Rate { max, per }
    }

    fn validate(&self, what: &str) -> Result<()> {
        if self.max == 0 {
            return Err(Error::config(format!("{what}: max must be at least 1")));
        }
        if self.per < Duration::from_millis(1) || self.per > MAX_RATE_PERIOD {
            return Err(Error::config(format!(
                "{what}: the period must be 1 ms to 1 day"
            )));
        }
        Ok(())
    }
}

/// A queue's limits; the default has none.
///
/// ```no_run
/// # async fn f(queue: rivulet::Queue) -> rivulet::Result<()> {
/// use std::time::Duration;
/// use rivulet::{Limits, Rate};
///
/// queue
///     .set_limits(
///         Limits::new()
///             .concurrency(20)
///             .rate(Rate::new(50, Duration::from_secs(1)))
///             .group_concurrency(2),
///     )
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The most jobs of the queue active at once, across all workers and processes.
    pub concurrency: Option<u32>,
    /// The queue's rate limit (starts per window).
    pub rate: Option<Rate>,
    /// The most jobs of one group active at once.
    pub group_concurrency: Option<u32>,
    /// Each group's rate limit.
    pub group_rate: Option<Rate>,
}

impl Limits {
    /// No limits.
    pub fn new() -> Self {
        Limits::default()
    }

    /// Caps the queue's active jobs at `n` (at least 1).
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// Limits the queue's starts.
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Caps each group's active jobs at `n` (at least 1).
    pub fn group_concurrency(mut self, n: u32) -> Self {
        self.group_concurrency = Some(n);
        self
    }

    /// Limits each group's starts.
    pub fn group_rate(mut self, rate: Rate) -> Self {
        self.group_rate = Some(rate);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.concurrency == Some(0) {
            return Err(Error::config("a concurrency cap must be at least 1"));
        }
        if self.group_concurrency == Some(0) {
            return Err(Error::config("a group concurrency cap must be at least 1"));
        }
        if let Some(r) = &self.rate {
            r.validate("a rate limit")?;
        }
        if let Some(r) = &self.group_rate {
            r.validate("a group rate limit")?;
        }
        Ok(())
    }
}

/// One group's counts (O(1) reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCounts {
    /// Waiting (not counting jobs parked by a paused job name).
    pub waiting: u64,
    /// Active.
    pub active: u64,
    /// Whether the group is paused.
    pub paused: bool,
}

impl Queue {
    /// Replaces the queue's stored limits (see [`crate::jobs::limits`]); every worker of
    /// the queue, in every process, obeys them from its next fetch. Fails with
    /// [`Error::Config`] on a zero cap or a bad rate; nothing is written then.
    pub async fn set_limits(&self, limits: Limits) -> Result<()> {
        limits.validate()?;
        self.store().set_limits(self.name(), &limits).await
    }

    /// The queue's stored limits.
    pub async fn limits(&self) -> Result<Limits> {
        self.store().limits(self.name()).await
    }

    /// Pauses one group: its jobs wait while other groups run (running ones finish).
    pub async fn pause_group(&self, group: &str) -> Result<()> {
        let group = JobGroup::new(group)?;
        self.store()
            .pause_group(self.name(), &group, true, &self.shared.settings)
            .await
            .map(|_| ())
    }

    /// Resumes one group and wakes the queue's workers.
    pub async fn resume_group(&self, group: &str) -> Result<()> {
        let group = JobGroup::new(group)?;
        self.store()
            .pause_group(self.name(), &group, false, &self.shared.settings)
            .await
            .map(|_| ())
    }

    /// One group's waiting and active jobs and whether it is paused.
    pub async fn group_counts(&self, group: &str) -> Result<GroupCounts> {
        let group = JobGroup::new(group)?;
        self.store().group_counts(self.name(), &group).await
    }

    /// The job groups in play (with waiting or active jobs, or paused), by name, after
    /// `after`, at most `limit` (up to 1,000), each with its counts: a page; pass the
    /// last name of a page as `after` for the next. Groups nobody uses any more are not
    /// kept, so a group shows up again with its next job.
    pub async fn groups(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(JobGroup, GroupCounts)>> {
        let after = after.map(JobGroup::new).transpose()?;
        let limit = limit.clamp(1, 1000);
        self.store()
            .list_groups(self.name(), after.as_ref(), limit)
            .await
    }

    fn store(&self) -> &dyn JobQueues {
        self.shared.store()
    }
}
