//! Jobs (J-1 … J-16): a queue of jobs with delays, priorities, dedup, pause, fenced
//! leases, cancellation, progress, logs, results, retention, counts and events.
//!
//! One concept per file: [`queue`] (adding and looking), [`job`] (what a handler gets),
//! `worker` (leasing, running, settling, draining), `lease` (renewal on a thread of its
//! own), `events` (following a queue's event stream), [`record`] (what is stored), [`limits`]
//! (the queue's concurrency cap, rate limits and job groups).

mod events;
pub mod job;
mod lease;
pub mod limits;
pub mod queue;
pub mod record;
mod worker;

pub use events::JobEvents;
pub use job::Job;
pub use limits::{GroupCounts, Limits, Rate};
pub use queue::{AddJob, CancelOutcome, Enqueued, JobPage, MAX_PRIORITY, Queue, QueueBuilder};
pub use record::{JobCounts, JobEvent, JobEventKind, JobInfo, JobState, Keep};
pub use worker::{Worker, WorkerBuilder, WorkerStats};
