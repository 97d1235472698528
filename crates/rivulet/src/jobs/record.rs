//! What a job is once stored: its state, its record, the counts of a queue and the
//! events of a queue. These are the types the queue hands back to callers (and, later,
//! the admin API and the dashboard).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::name::{JobId, JobName};

/// Where a job is in its life (J-2).
///
/// ```text
///            add ──► waiting ◄──────── delayed ◄── add with delay / run_at
///                       │  ▲   (due)      ▲
///                 fetch │  │ stalled,     │ retry with backoff
///                       ▼  │ released     │
///                     active ─────────────┘
///                       │
///          ┌────────────┼─────────────┐
///          ▼            ▼             ▼
///      completed      failed      cancelled   (terminal; kept under retention)
/// ```
///
/// `WaitingChildren` is the state of a flow's parent until its children finish (J-9);
/// it becomes waiting then, or fails when a child fails (see
/// [`OnChildFailure`](crate::OnChildFailure)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum JobState {
    /// Ready to run, in priority order.
    Waiting,
    /// Waiting for its run-at time (a delay or a retry's backoff).
    Delayed,
    /// Leased by a worker, which is running it.
    Active,
    /// Finished successfully; its return value is kept with it.
    Completed,
    /// Gave up: a permanent error, attempts exhausted, or too many stalls.
    Failed,
    /// Cancelled before or while it ran.
    Cancelled,
    /// A flow's parent waiting for its children.
    WaitingChildren,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 7] = [
        JobState::Waiting,
        JobState::Delayed,
        JobState::Active,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::WaitingChildren,
    ];

    /// The state's wire name (`waiting`, `delayed`, …, `waiting-children`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::WaitingChildren => "waiting-children",
        }
    }

    /// Whether the job is finished (completed, failed or cancelled).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::Protocol(format!("unknown job state {s:?}")))
    }
}

/// A job as stored: what was added, how far it got, and how it ended.
///
/// Obtained from [`Queue::job`](crate::Queue::job) and
/// [`Queue::jobs`](crate::Queue::jobs).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// The job's name.
    pub name: JobName,
    /// Its state now.
    pub state: JobState,
    /// The data it was added with (JSON).
    pub data: Bytes,
    /// Its priority (lower runs first; 0 is the default and the highest).
    pub priority: u32,
    /// The attempt it is on (or ended on); 0 before its first run.
    pub attempt: u32,
    /// Total attempts allowed.
    pub max_attempts: u32,
    /// How many times its lease expired while it was active.
    pub stalls: u32,
    /// When it was added (milliseconds since the Unix epoch).
    pub added_at_ms: u64,
    /// When it becomes (or became) due, for delayed jobs.
    pub run_at_ms: Option<u64>,
    /// When its latest attempt started.
    pub started_at_ms: Option<u64>,
    /// When it finished.
    pub finished_at_ms: Option<u64>,
    /// Its latest progress report (JSON: a number 0–100 or any value).
    pub progress: Option<serde_json::Value>,
    /// The return value of a completed job (JSON).
    pub result: Option<Bytes>,
    /// The error of its latest failed attempt, or why it failed or was cancelled.
    pub error: Option<String>,
    /// Its dedup key, if it was added with one.
    pub dedup_key: Option<String>,
    /// Whether cancelling it was asked for while it was active.
    pub cancel_requested: bool,
    /// The worker holding its lease (while active) or that held it last.
    pub worker: Option<String>,
}

impl JobInfo {
    /// Decodes the job's data.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.data)?)
    }

    /// Decodes the job's return value; `None` when it has none (yet).
    pub fn result<R: DeserializeOwned>(&self) -> Result<Option<R>> {
        self.result
            .as_ref()
            .map(|r| serde_json::from_slice(r))
            .transpose()
            .map_err(Error::from)
    }
}

/// How many jobs a queue holds in each state (J-16). Read from counters and set sizes the
/// transitions maintain, never by scanning jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobCounts {
    /// Waiting, including those held back by a paused job name (see `parked`).
    pub waiting: u64,
    /// Of `waiting`, those whose name is paused.
    pub parked: u64,
    /// Delayed.
    pub delayed: u64,
    /// Active.
    pub active: u64,
    /// Completed and still retained.
    pub completed: u64,
    /// Failed and still retained.
    pub failed: u64,
    /// Cancelled and still retained.
    pub cancelled: u64,
    /// Parents waiting for their children.
    pub waiting_children: u64,
}

impl JobCounts {
    /// The count of one state.
    pub fn of(&self, state: JobState) -> u64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Delayed => self.delayed,
            JobState::Active => self.active,
            JobState::Completed => self.completed,
            JobState::Failed => self.failed,
            JobState::Cancelled => self.cancelled,
            JobState::WaitingChildren => self.waiting_children,
        }
    }

    /// Jobs not yet finished: waiting, delayed, active and waiting for children.
    pub fn unfinished(&self) -> u64 {
        self.waiting + self.delayed + self.active + self.waiting_children
    }
}

/// How many finished jobs of one kind a queue keeps (J-14): at most `count`, none older
/// than `age`. Enforced a few jobs at a time with every transition, so it costs bounded
/// work and Redis memory stays flat under a steady load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keep {
    /// The most jobs kept.
    pub count: u64,
    /// The oldest a kept job may be (by its finish time).
    pub age: Duration,
}

impl Keep {
    /// Keeps at most `count` jobs for at most `age`.
    pub fn new(count: u64, age: Duration) -> Self {
        Keep { count, age }
    }

    /// Keeps none: jobs are removed as they finish.
    pub fn none() -> Self {
        Keep {
            count: 0,
            age: Duration::ZERO,
        }
    }

    /// The default for completed jobs: 1,000 for 24 hours.
    pub fn completed_default() -> Self {
        Keep::new(1_000, Duration::from_secs(24 * 3600))
    }

    /// The default for failed and cancelled jobs: 10,000 for 7 days.
    pub fn failed_default() -> Self {
        Keep::new(10_000, Duration::from_secs(7 * 24 * 3600))
    }
}

/// What happened to a job, as recorded in its queue's event stream (J-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobEventKind {
    /// Added, waiting.
    Added,
    /// Added with a delay, or moved to delayed for a retry.
    Delayed,
    /// Leased by a worker.
    Active,
    /// Reported progress.
    Progress,
    /// Completed.
    Completed,
    /// Failed for good.
    Failed,
    /// A failed attempt that will be retried.
    Retried,
    /// Its lease expired while active.
    Stalled,
    /// Cancelled (or, while active, cancelling was asked for: see the detail).
    Cancelled,
    /// Removed (by a caller or by retention).
    Removed,
    /// Given back by a stopping worker, waiting again.
    Released,
    /// A job scheduler fired a tick (J-4): `job` is the job it added, `detail` is
    /// `<scheduler id>@<tick ms>` (see [`JobEvent::scheduler_tick`]).
    SchedulerFired,
    /// A flow's parent was added and waits for its children (detail: how many).
    WaitingChildren,
    /// A flow's parent has no pending child left and is waiting now (J-9).
    ChildrenCompleted,
    /// Its handler met a rate limit: back to delayed for the delay in the detail (ms),
    /// its attempt not spent (J-7).
    RateLimited,
    /// A job group was paused; `job` holds the group's name, the detail is `group`.
    GroupPaused,
    /// A job group was resumed; `job` holds the group's name, the detail is `group`.
    GroupResumed,
}

impl JobEventKind {
    /// Every kind.
    pub const ALL: [JobEventKind; 17] = [
        JobEventKind::Added,
        JobEventKind::Delayed,
        JobEventKind::Active,
        JobEventKind::Progress,
        JobEventKind::Completed,
        JobEventKind::Failed,
        JobEventKind::Retried,
        JobEventKind::Stalled,
        JobEventKind::Cancelled,
        JobEventKind::Removed,
        JobEventKind::Released,
        JobEventKind::SchedulerFired,
        JobEventKind::WaitingChildren,
        JobEventKind::ChildrenCompleted,
        JobEventKind::RateLimited,
        JobEventKind::GroupPaused,
        JobEventKind::GroupResumed,
    ];

    /// The wire name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            JobEventKind::Added => "added",
            JobEventKind::Delayed => "delayed",
            JobEventKind::Active => "active",
            JobEventKind::Progress => "progress",
            JobEventKind::Completed => "completed",
            JobEventKind::Failed => "failed",
            JobEventKind::Retried => "retried",
            JobEventKind::Stalled => "stalled",
            JobEventKind::Cancelled => "cancelled",
            JobEventKind::Removed => "removed",
            JobEventKind::Released => "released",
            JobEventKind::SchedulerFired => "scheduler-fired",
            JobEventKind::WaitingChildren => "waiting-children",
            JobEventKind::ChildrenCompleted => "children-completed",
            JobEventKind::RateLimited => "rate-limited",
            JobEventKind::GroupPaused => "group-paused",
            JobEventKind::GroupResumed => "group-resumed",
        }
    }
}

impl fmt::Display for JobEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobEventKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        JobEventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::Protocol(format!("unknown job event {s:?}")))
    }
}

/// One event of a queue. Events carry ids and small facts, never a job's data or
/// return value, so the stream's memory is bounded by its cap.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobEvent {
    /// The event's id in the stream; read on from it with
    /// [`Queue::events`](crate::Queue::events).
    pub id: String,
    /// What happened.
    pub kind: JobEventKind,
    /// To which job (for group events: the group's name).
    pub job: JobId,
    /// The job's attempt at the time (0 when not meaningful).
    pub attempt: u32,
    /// A short fact: the error (cut to 200 bytes), the delay, the progress, …
    pub detail: Option<String>,
}

impl JobEvent {
    /// For a [`SchedulerFired`](JobEventKind::SchedulerFired) event: the scheduler's id
    /// and the tick it fired (ms since the Unix epoch).
    pub fn scheduler_tick(&self) -> Option<(&str, u64)> {
        if self.kind != JobEventKind::SchedulerFired {
            return None;
        }
        let (id, tick) = self.detail.as_deref()?.rsplit_once('@')?;
        Some((id, tick.parse().ok()?))
    }
}

/// The longest `detail` of an event, in bytes.
pub const EVENT_DETAIL_MAX: usize = 200;

/// Cuts `s` to at most [`EVENT_DETAIL_MAX`] bytes on a character boundary.
pub(crate) fn short_detail(s: &str) -> String {
    if s.len() <= EVENT_DETAIL_MAX {
        return s.to_owned();
    }
    let mut end = EVENT_DETAIL_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
