//! Jobs (J-1 … J-16): a queue of jobs with delays, priorities, dedup, pause, fenced
//! leases, cancellation, progress, logs, results, retention, counts and events.
//!
//! One concept per file: [`queue`] (adding and looking), [`job`] (what a handler gets),
//! `worker` (leasing, running, settling, draining), `lease` (renewal on a thread of its
//! own), [`flow`] (parents waiting for children), `events` (following a queue's event
//! stream), [`record`] (what is stored), [`limits`] (the queue's concurrency cap, rate
//! limits and job groups), [`schedule`] (cron and interval ticks) and [`scheduler`] (job
//! schedulers, J-4).

mod events;
pub mod flow;
pub mod job;
mod lease;
pub mod limits;
pub mod queue;
pub mod record;
pub mod schedule;
pub mod scheduler;
mod worker;

pub use events::JobEvents;
pub use flow::{AddFlow, ChildRef, Children, FlowChild, FlowEnqueued, OnChildFailure};
pub use job::Job;
pub use limits::{GroupCounts, Limits, Rate};
pub use queue::{AddJob, CancelOutcome, Enqueued, JobPage, MAX_PRIORITY, Queue, QueueBuilder};
pub use record::{JobCounts, JobEvent, JobEventKind, JobInfo, JobState, Keep};
pub use schedule::{Schedule, ScheduleError};
pub use scheduler::{
    SchedulerBuilder, SchedulerChange, SchedulerInfo, SchedulerRunner, SchedulerRunnerBuilder,
    SchedulerRunnerStats, SchedulerUpsert,
};
pub use worker::{Worker, WorkerBuilder, WorkerStats};
