//! What a job handler receives: [`Job`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::queue::Shared;
use crate::error::{Error, Result};
use crate::name::{JobId, JobName};

/// One activation of a job, shared by its handler and the worker.
pub(crate) struct Activation {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: JobId,
    pub(crate) name: JobName,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) token: u64,
    pub(crate) added_at_ms: u64,
    pub(crate) cancel: CancellationToken,
    /// Set when a write found the lease gone, or the renewal did.
    pub(crate) lost: AtomicBool,
}

impl Activation {
    fn lease_lost(&self) -> Error {
        self.lost.store(true, Ordering::Relaxed);
        Error::LeaseLost {
            queue: self.shared.name.to_string(),
            job: self.id.to_string(),
        }
    }
}

/// A job as its handler sees it: the data, who it is, and a line back to the queue.
///
/// Every write it makes ([`progress`](Job::progress), [`log`](Job::log)) names the
/// activation's fencing token: once the lease is lost (it expired and another worker may
/// hold the job now, or the job was cancelled), they fail with
/// [`Error::LeaseLost`] and change nothing, and so does the
/// worker's completion of this run.
pub struct Job<T> {
    data: T,
    pub(super) act: Arc<Activation>,
}

impl<T: fmt::Debug> fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("queue", &self.act.shared.name)
            .field("id", &self.act.id)
            .field("name", &self.act.name)
            .field("attempt", &self.act.attempt)
            .field("data", &self.data)
            .finish()
    }
}

impl<T> Job<T> {
    pub(crate) fn new(data: T, act: Arc<Activation>) -> Self {
        Job { data, act }
    }

    /// The job's data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The job's data, by value.
    pub fn into_data(self) -> T {
        self.data
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.act.id
    }

    /// The job's name.
    pub fn name(&self) -> &JobName {
        &self.act.name
    }

    /// The queue's name.
    pub fn queue(&self) -> &crate::name::QueueName {
        &self.act.shared.name
    }

    /// This run's attempt, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.act.attempt
    }

    /// The total attempts the job has.
    pub fn max_attempts(&self) -> u32 {
        self.act.max_attempts
    }

    /// When the job was added (milliseconds since the Unix epoch).
    pub fn added_at_ms(&self) -> u64 {
        self.act.added_at_ms
    }

    /// Fires when the job is cancelled (in any process), when its timeout passes, when
    /// its lease is lost, or when the worker stops and its drain timeout has passed. A
    /// handler that watches it stops early; one that does not is fenced off anyway.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.act.cancel
    }

    /// Records progress (J-13): a number from 0 to 100, or any JSON value.
    pub async fn progress<P: Serialize + ?Sized>(&self, progress: &P) -> Result<()> {
        let value = serde_json::to_value(progress)?;
        if let Some(n) = value.as_f64()
            && !(0.0..=100.0).contains(&n)
        {
            return Err(Error::config(format!(
                "progress {n} is not between 0 and 100 (report other values as JSON objects)"
            )));
        }
        let bytes = Bytes::from(serde_json::to_vec(&value)?);
        let shared = &self.act.shared;
        let held = shared
            .store()
            .progress(
                &shared.name,
                &self.act.id,
                self.act.token,
                bytes,
                &shared.settings,
            )
            .await?;
        if held {
            Ok(())
        } else {
            Err(self.act.lease_lost())
        }
    }

    /// Appends a line to the job's log (J-13); the queue keeps the last lines of each
    /// job (100 unless configured).
    pub async fn log(&self, line: impl AsRef<str>) -> Result<()> {
        let shared = &self.act.shared;
        let held = shared
            .store()
            .log(
                &shared.name,
                &self.act.id,
                self.act.token,
                line.as_ref(),
                &shared.settings,
            )
            .await?;
        if held {
            Ok(())
        } else {
            Err(self.act.lease_lost())
        }
    }
}
