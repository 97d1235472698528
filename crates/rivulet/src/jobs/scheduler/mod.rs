//! Job schedulers (J-4): a job template added at every tick of a cron expression (in a
//! time zone) or of a fixed interval, stored with the queue, fired once per tick across
//! every process.
//!
//! ```no_run
//! # async fn f(queue: rivulet::Queue) -> rivulet::Result<()> {
//! use std::time::Duration;
//!
//! // Every five minutes, Berlin time, add a `report` job.
//! queue
//!     .scheduler("berlin-report")
//!     .cron("0 */5 * * * *")
//!     .tz("Europe/Berlin")
//!     .job("report", &serde_json::json!({"kind": "summary"}))
//!     .attempts(3)
//!     .upsert()
//!     .await?;
//! // Every 30 seconds.
//! queue.scheduler("heartbeat").every(Duration::from_secs(30)).upsert().await?;
//! // Workers fire due schedulers by default; processes without workers can run
//! // `queue.run_schedulers().await?`.
//! # Ok(()) }
//! ```
//!
//! **Who fires.** Every [`Worker`](crate::Worker) of the queue runs a scheduler runner
//! (turn it off with [`WorkerBuilder::schedulers`](crate::WorkerBuilder::schedulers));
//! [`Queue::run_schedulers`] starts one without a worker. Any number of runners in any
//! number of processes may run: each tick adds **one** job. A runner sleeps until the
//! earliest next fire time (a timer, not a poll), and looks again at least every
//! `recheck_every` (default 2 s) for schedulers upserted by other processes (upserts in
//! its own process wake it at once). For a due scheduler it computes, in Rust, the tick
//! to fire and the next fire time after it, then one atomic step (one Lua script on
//! Redis) checks that the scheduler still has the version and next fire time it read,
//! adds the tick's job with the id `sched:<scheduler id>:<tick ms>`, records the tick as
//! the last run, stores the next fire time and appends a `scheduler-fired` event.
//! Runners that lose the race write nothing. A crash before or after that step leaves
//! either nothing or all of it.
//!
//! **Catch-up.** When no runner ran over several ticks (every process down, or the
//! queue's only worker stopped), the first runner back fires only the **latest** missed
//! tick (the latest at or before now), not one job per missed tick, and goes on with the
//! next tick after now. The ticks in between are skipped on purpose.
//!
//! **Upsert** by id: the same schedule and template again changes nothing (so every
//! process may upsert its schedulers at start); a different schedule replaces the old
//! one at once (its next fire time is the new schedule's first tick after now, and the
//! old schedule never fires again: a runner holding the old version is refused); the
//! same schedule with another template keeps its next fire time.

pub(crate) mod run;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub(crate) use self::run::DEFAULT_RECHECK;
pub use self::run::{SchedulerRunner, SchedulerRunnerBuilder, SchedulerRunnerStats};
use super::queue::Queue;
use super::schedule::{Schedule, ScheduleError};
use crate::backend::job_schedulers::{JobSchedulers, StoredScheduler, UpsertOutcome};
use crate::backend::jobs::{NewJob, StoredBackoff};
use crate::error::{Error, Result};
use crate::name::{JobId, JobName};
use crate::retry::RetryPolicy;

/// The longest scheduler id, in bytes (so that the ids of its jobs,
/// `sched:<id>:<tick ms>`, stay within the 200 bytes of a job id).
pub const MAX_SCHEDULER_ID_LEN: usize = 160;

/// Checks a scheduler id: 1–160 bytes of `[A-Za-z0-9._:-]`.
pub(crate) fn check_id(id: &str) -> Result<()> {
    let bad = |reason| Error::InvalidName {
        what: "scheduler",
        name: id.chars().take(64).collect(),
        reason,
    };
    if id.len() > MAX_SCHEDULER_ID_LEN {
        return Err(bad("must be at most 160 bytes"));
    }
    match JobName::new(id) {
        Ok(_) => Ok(()),
        Err(Error::InvalidName { reason, .. }) => Err(bad(reason)),
        Err(e) => Err(e),
    }
}

/// The id of the job a scheduler adds at `tick_ms`.
pub(crate) fn job_id(scheduler: &str, tick_ms: u64) -> Result<JobId> {
    JobId::new(format!("sched:{scheduler}:{tick_ms}"))
}

/// The template's options as stored with the scheduler (JSON, compared as text by the
/// upsert: field order is fixed by this struct).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TemplateOpts {
    priority: u32,
    lifo: bool,
    max_attempts: u32,
    backoff_base_ms: u64,
    backoff_multiplier: f64,
    backoff_max_ms: u64,
    timeout_ms: Option<u64>,
    remove_on_complete: bool,
    remove_on_fail: bool,
}

impl TemplateOpts {
    fn of(job: &NewJob) -> TemplateOpts {
        TemplateOpts {
            priority: job.priority,
            lifo: job.lifo,
            max_attempts: job.max_attempts,
            backoff_base_ms: job.backoff.base_ms,
            backoff_multiplier: job.backoff.multiplier,
            backoff_max_ms: job.backoff.max_ms,
            timeout_ms: job.timeout_ms,
            remove_on_complete: job.remove_on_complete,
            remove_on_fail: job.remove_on_fail,
        }
    }
}

/// The job a stored scheduler adds at `tick_ms`.
pub(crate) fn tick_job(s: &StoredScheduler, tick_ms: u64) -> Result<NewJob> {
    let o: TemplateOpts = serde_json::from_str(&s.job_opts).map_err(|e| {
        Error::Protocol(format!(
            "scheduler {:?} has an unreadable job template: {e}",
            s.id
        ))
    })?;
    Ok(NewJob {
        id: job_id(&s.id, tick_ms)?,
        name: s.job_name.clone(),
        data: s.job_data.clone(),
        priority: o.priority,
        lifo: o.lifo,
        delay_ms: 0,
        run_at_ms: None,
        max_attempts: o.max_attempts,
        backoff: StoredBackoff {
            base_ms: o.backoff_base_ms,
            multiplier: o.backoff_multiplier,
            max_ms: o.backoff_max_ms,
        },
        timeout_ms: o.timeout_ms,
        dedup: None,
        remove_on_complete: o.remove_on_complete,
        remove_on_fail: o.remove_on_fail,
        // A tick is added by a runner, not inside a caller's span: it starts its own trace.
        trace: None,
        group: None,
    })
}

/// A scheduler as stored, from [`Queue::schedulers`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SchedulerInfo {
    /// The scheduler's id.
    pub id: String,
    /// When it fires.
    pub schedule: Schedule,
    /// The name of the jobs it adds.
    pub job_name: JobName,
    /// The data of the jobs it adds (JSON).
    pub job_data: Bytes,
    /// Its next fire time (ms since the Unix epoch); `None` when its cron expression has
    /// no tick left.
    pub next_run_ms: Option<u64>,
    /// The last tick it fired (ms since the Unix epoch).
    pub last_run_ms: Option<u64>,
    /// The job the last tick added (`sched:<id>:<tick ms>`).
    pub last_job: Option<JobId>,
    /// Grows with every upsert that changed it.
    pub version: u64,
}

impl SchedulerInfo {
    fn from_stored(s: StoredScheduler) -> Result<SchedulerInfo> {
        let schedule = Schedule::from_wire(&s.kind, &s.value, &s.tz).ok_or_else(|| {
            Error::Protocol(format!(
                "scheduler {:?} has an unknown schedule kind {:?}",
                s.id, s.kind
            ))
        })?;
        Ok(SchedulerInfo {
            id: s.id,
            schedule,
            job_name: s.job_name,
            job_data: s.job_data,
            next_run_ms: s.next_ms,
            last_run_ms: s.last_ms,
            last_job: s.last_job,
            version: s.version,
        })
    }
}

/// What an upsert changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedulerChange {
    /// There was no scheduler with that id.
    Created,
    /// The schedule changed: the old one will not fire again, the next fire time is the
    /// new schedule's first tick after now.
    Replaced,
    /// Only the job template changed; the next fire time stays.
    Updated,
    /// Nothing changed; nothing was written.
    Unchanged,
}

/// The result of [`SchedulerBuilder::upsert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerUpsert {
    /// What changed.
    pub change: SchedulerChange,
    /// The scheduler's version now.
    pub version: u64,
    /// Its next fire time (ms since the Unix epoch).
    pub next_run_ms: Option<u64>,
}

#[derive(Debug, Default, Clone)]
struct Template {
    name: Option<String>,
    data: Option<serde_json::Value>,
    priority: Option<u32>,
    attempts: Option<u32>,
    backoff: Option<RetryPolicy>,
    timeout: Option<Duration>,
    lifo: bool,
    remove_on_complete: bool,
    remove_on_fail: bool,
}

/// A scheduler being defined: a schedule, a job template, then
/// [`upsert`](Self::upsert). From [`Queue::scheduler`].
#[must_use = "a scheduler is stored only by upsert().await"]
pub struct SchedulerBuilder<'a> {
    queue: &'a Queue,
    id: String,
    cron: Option<String>,
    tz: Option<String>,
    every: Option<Duration>,
    template: Template,
    data_error: Option<serde_json::Error>,
}

impl fmt::Debug for SchedulerBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("queue", &self.queue.shared.name)
            .field("id", &self.id)
            .field("cron", &self.cron)
            .field("tz", &self.tz)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl<'a> SchedulerBuilder<'a> {
    /// Fires at the ticks of a cron expression: five fields (`m h dom mon dow`) or six
    /// with seconds first (`s m h dom mon dow`); see [`Schedule`] for the rules and the
    /// daylight-saving behaviour.
    pub fn cron(mut self, expr: &str) -> Self {
        self.cron = Some(expr.to_owned());
        self
    }

    /// The IANA time zone the cron expression is read in (default `UTC`).
    pub fn tz(mut self, tz: &str) -> Self {
        self.tz = Some(tz.to_owned());
        self
    }

    /// Fires every `interval` (whole milliseconds, at least 1 ms), at the multiples of
    /// the interval since the Unix epoch.
    pub fn every(mut self, interval: Duration) -> Self {
        self.every = Some(interval);
        self
    }

    /// The jobs it adds: their name and data (JSON). Default: the scheduler's id as the
    /// name, `null` as the data.
    pub fn job<T: Serialize + ?Sized>(mut self, name: &str, data: &T) -> Self {
        self.template.name = Some(name.to_owned());
        match serde_json::to_value(data) {
            Ok(v) => self.template.data = Some(v),
            Err(e) => self.data_error = Some(e),
        }
        self
    }

    /// The jobs' priority (see [`AddJob::priority`](crate::AddJob::priority)).
    pub fn priority(mut self, priority: u32) -> Self {
        self.template.priority = Some(priority);
        self
    }

    /// The jobs' total attempts (default: the queue's retry policy).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.template.attempts = Some(attempts);
        self
    }

    /// The jobs' backoff between attempts (see [`AddJob::backoff`](crate::AddJob::backoff)).
    pub fn backoff(mut self, policy: RetryPolicy) -> Self {
        self.template.backoff = Some(policy);
        self
    }

    /// The jobs' run-time limit (default: the queue's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.template.timeout = Some(timeout);
        self
    }

    /// The jobs run before the others of their priority.
    pub fn lifo(mut self) -> Self {
        self.template.lifo = true;
        self
    }

    /// The jobs are removed as soon as they complete.
    pub fn remove_on_complete(mut self) -> Self {
        self.template.remove_on_complete = true;
        self
    }

    /// The jobs are removed as soon as they fail for good.
    pub fn remove_on_fail(mut self) -> Self {
        self.template.remove_on_fail = true;
        self
    }

    fn schedule(&self) -> Result<Schedule> {
        let s = match (&self.cron, self.every) {
            (Some(_), Some(_)) => return Err(ScheduleError::Both.into()),
            (None, None) => return Err(ScheduleError::Missing.into()),
            (Some(expr), None) => Schedule::cron(expr, self.tz.as_deref()),
            (None, Some(d)) => {
                if self.tz.is_some() {
                    return Err(ScheduleError::TimeZoneWithInterval.into());
                }
                Schedule::Every(d)
            }
        };
        Ok(s)
    }

    /// The template as a job, checked by the same rules as [`Queue::add`].
    fn template_job(&self) -> Result<NewJob> {
        let t = &self.template;
        let name = t.name.as_deref().unwrap_or(&self.id);
        let data = t.data.clone().unwrap_or(serde_json::Value::Null);
        let mut add = self.queue.add(name, &data);
        if let Some(p) = t.priority {
            add = add.priority(p);
        }
        if let Some(b) = &t.backoff {
            add = add.backoff(b.clone());
        }
        if let Some(n) = t.attempts {
            add = add.attempts(n);
        }
        if let Some(d) = t.timeout {
            add = add.timeout(d);
        }
        if t.lifo {
            add = add.lifo();
        }
        if t.remove_on_complete {
            add = add.remove_on_complete();
        }
        if t.remove_on_fail {
            add = add.remove_on_fail();
        }
        add.into_new_job()
    }

    /// Checks everything and stores the scheduler (see the module docs for what an
    /// upsert of an existing id does). Fails with [`Error::InvalidName`] (a bad id or
    /// job name), [`Error::InvalidSchedule`] (a bad cron expression, an unknown time
    /// zone, a zero interval, …), [`Error::Config`] or [`Error::PayloadTooLarge`] (the
    /// template); nothing is written then.
    pub async fn upsert(mut self) -> Result<SchedulerUpsert> {
        check_id(&self.id)?;
        if let Some(e) = self.data_error.take() {
            return Err(Error::Codec(e));
        }
        let schedule = self.schedule()?;
        let compiled = schedule.compile()?;
        let job = self.template_job()?;
        let shared = &self.queue.shared;
        let store: &dyn JobSchedulers = shared.backend.as_ref();
        let now = store.store_time_ms(&shared.name).await?;
        let next = compiled.next_after(now).ok_or_else(|| {
            let (_, expr, _) = schedule.to_wire();
            Error::InvalidSchedule(ScheduleError::NeverFires(expr))
        })?;
        let (kind, value, tz) = schedule.to_wire();
        let opts = serde_json::to_string(&TemplateOpts::of(&job))?;
        let record = StoredScheduler {
            id: self.id.clone(),
            kind,
            value,
            tz,
            job_name: job.name,
            job_data: job.data,
            job_opts: opts,
            version: 0,
            next_ms: Some(next),
            last_ms: None,
            last_job: None,
        };
        let up = store.upsert_scheduler(&shared.name, &record).await?;
        if up.outcome != UpsertOutcome::Unchanged {
            run::changed();
        }
        Ok(SchedulerUpsert {
            change: match up.outcome {
                UpsertOutcome::Created => SchedulerChange::Created,
                UpsertOutcome::Replaced => SchedulerChange::Replaced,
                UpsertOutcome::Updated => SchedulerChange::Updated,
                UpsertOutcome::Unchanged => SchedulerChange::Unchanged,
            },
            version: up.version,
            next_run_ms: up.next_ms,
        })
    }
}

impl Queue {
    /// Defines the scheduler `id` (1–160 bytes of `[A-Za-z0-9._:-]`): give it a
    /// schedule and a job template, then [`upsert`](SchedulerBuilder::upsert) it. See
    /// [`scheduler`](crate::jobs::scheduler) for who fires it and how.
    pub fn scheduler(&self, id: &str) -> SchedulerBuilder<'_> {
        SchedulerBuilder {
            queue: self,
            id: id.to_owned(),
            cron: None,
            tz: None,
            every: None,
            template: Template::default(),
            data_error: None,
        }
    }

    /// The queue's schedulers, by id (O(schedulers)).
    pub async fn schedulers(&self) -> Result<Vec<SchedulerInfo>> {
        let store: &dyn JobSchedulers = self.shared.backend.as_ref();
        let mut all = store
            .schedulers(&self.shared.name)
            .await?
            .into_iter()
            .map(SchedulerInfo::from_stored)
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// Removes a scheduler: it fires no more (a runner holding it is refused). Jobs it
    /// added stay. `false` when there was none. [`Error::InvalidName`] for a bad id.
    pub async fn remove_scheduler(&self, id: &str) -> Result<bool> {
        check_id(id)?;
        let store: &dyn JobSchedulers = self.shared.backend.as_ref();
        let removed = store.remove_scheduler(&self.shared.name, id).await?;
        if removed {
            run::changed();
        }
        Ok(removed)
    }
}
