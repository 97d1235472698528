//! The Redis job queues (J-1 … J-16): [`JobQueues`] for [`RedisBackend`].
//!
//! A queue is a handful of sorted sets and a hash per job, all under the hash tag
//! `{<prefix>/queue/<queue>}` (layout in `keys.rs` and `docs/wire-format.md`, "Jobs").
//! Every transition is one Lua script (`lua/jobs_*.lua`, each prefixed with the shared
//! `lua/jobs_lib.lua`), bounded by its arguments and reading the clock with `TIME`:
//!
//! * waiting is a sorted set scored `priority × 2³² + 2³¹ ± seq` (`+` FIFO, `−` LIFO,
//!   `seq` from the queue's counter), the score kept in the job's hash so a job going
//!   back to waiting keeps its place; delayed is scored by run-at, active by lease
//!   expiry, the finished sets by finish time;
//! * a job's hash holds a fencing `token`, incremented at each lease, that every write
//!   about an activation must name;
//! * idle workers block on `BLPOP` of the queue's marker list, which every transition
//!   that makes work available pushes (one element at most);
//! * cancel hints are published on `<prefix>/queue/<queue>/cancel`.
//!
//! Waiting jobs of paused names are moved to `/parked/<name>` by the fetch that meets
//! them (or, like the memory store, at once when they become waiting while their name is
//! paused); [`JobQueues::list_jobs`] for `Waiting` lists `/waiting` only (parked jobs are
//! counted in `waiting` and `parked`, not listed), like the memory store. Waiting jobs of
//! job groups live in their groups' sets (`/group/<g>/waiting`, see
//! `lua/jobs_limits_lib.lua`), counted in `waiting`, not listed either.
//!
//! Where this store differs from the memory store (the reference):
//!
//! * **Wake-ups**: one marker push wakes one idle waiter (`BLPOP`); others are woken in
//!   turn by fetches that leave work behind. The memory store wakes every waiter.
//! * **Event cap**: exact (`MAXLEN`) below a cap of 1,000, approximate (`MAXLEN ~`, a
//!   stream node of up to 100 entries over) from there. Event ids are stream ids.
//! * **Queue registry**: [`JobQueues::queues`] lists every queue jobs were ever added to
//!   under the prefix (the `<prefix>/queues` set), also after all its jobs are gone.
//! * **Places**: a priority above 2²¹ − 1 is placed as 2²¹ − 1 (the queue rejects
//!   those), and a queue takes fewer than 2³¹ adds before FIFO order wraps into the next
//!   priority.
//! * **Retention** runs once per script, removing up to the number of jobs the script
//!   finished plus 8 per finished state (the memory store removes up to 9 per finished
//!   job); both keep the bounds under a steady load.
//! * **Page cursors** are `<score>:<id>`; a cursor whose job is gone or moved looks at
//!   most `limit + 256` jobs of its score ahead.
//! * **Errors**: an add pipeline that fails part-way may have added the jobs before the
//!   failure (each add is atomic; ids chosen by the caller make a retry safe). A fetch
//!   that leased a job whose record is malformed fails with `Error::Protocol`; the
//!   jobs it leased come back when their leases expire.

mod add;
mod control;
mod decode;
mod fetch;
mod flows;
mod hints;
pub(crate) mod keys;
mod limits;
mod read;
mod schedulers;
mod wait;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{Script, ScriptInvocation};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RedisBackend;
use crate::backend::jobs::{
    Added, Cancelled, EventReader, Fetch, Fetched, JobPage, JobQueues, JobWaiter, NewJob,
    QueueSettings, Removed, Renewal, Requeue, Requeued, Settle, Settled, Stalled,
};
use crate::deadline::millis;
use crate::error::Result;
use crate::jobs::limits::{GroupCounts, Limits};
use crate::jobs::record::{JobCounts, JobInfo, JobState};
use crate::name::{JobGroup, JobId, JobName, QueueName};

use self::keys::QueueKeys;

/// The arguments every job script takes after the tag (`ARGV[2..6]`): the events cap
/// and the retention of completed and failed jobs. Scripts that neither finish jobs nor
/// write events get neutral values.
fn header(keys: &QueueKeys, settings: Option<&QueueSettings>) -> [String; 6] {
    match settings {
        Some(s) => [
            keys.tag.clone(),
            s.events_cap.max(1).to_string(),
            s.keep_completed.count.to_string(),
            millis(s.keep_completed.age).to_string(),
            s.keep_failed.count.to_string(),
            millis(s.keep_failed.age).to_string(),
        ],
        None => [
            keys.tag.clone(),
            "10000".into(),
            u64::MAX.to_string(),
            "0".into(),
            u64::MAX.to_string(),
            "0".into(),
        ],
    }
}

/// An invocation of a job script with the queue's keys and the common arguments.
fn invocation<'a>(
    script: &'a Script,
    keys: &QueueKeys,
    settings: Option<&QueueSettings>,
) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for k in keys.fixed() {
        inv.key(k);
    }
    for a in header(keys, settings) {
        inv.arg(a);
    }
    inv
}

impl RedisBackend {
    fn queue_keys(&self, queue: &QueueName) -> QueueKeys {
        QueueKeys::new(&self.inner.prefix, queue)
    }
}

#[async_trait]
impl JobQueues for RedisBackend {
    async fn add_jobs(
        &self,
        queue: &QueueName,
        jobs: &[NewJob],
        settings: &QueueSettings,
    ) -> Result<Vec<Added>> {
        self.jobs_add(queue, jobs, settings).await
    }

    async fn fetch(
        &self,
        queue: &QueueName,
        fetch: &Fetch,
        settings: &QueueSettings,
    ) -> Result<Fetched> {
        self.jobs_fetch(queue, fetch, settings).await
    }

    async fn settle(
        &self,
        queue: &QueueName,
        settle: &[Settle],
        settings: &QueueSettings,
    ) -> Result<Vec<Settled>> {
        self.jobs_settle(queue, settle, settings).await
    }

    async fn renew(
        &self,
        queue: &QueueName,
        leases: &[(JobId, u64)],
        lease_ms: u64,
    ) -> Result<Vec<Renewal>> {
        self.jobs_renew(queue, leases, lease_ms).await
    }

    async fn check_stalled(
        &self,
        queue: &QueueName,
        max_stalled: u32,
        limit: usize,
        settings: &QueueSettings,
    ) -> Result<Stalled> {
        self.jobs_check_stalled(queue, max_stalled, limit, settings)
            .await
    }

    async fn progress(
        &self,
        queue: &QueueName,
        id: &JobId,
        token: u64,
        progress: Bytes,
        settings: &QueueSettings,
    ) -> Result<bool> {
        self.jobs_progress(queue, id, token, progress, settings)
            .await
    }

    async fn log(
        &self,
        queue: &QueueName,
        id: &JobId,
        token: u64,
        line: &str,
        settings: &QueueSettings,
    ) -> Result<bool> {
        self.jobs_log(queue, id, token, line, settings).await
    }

    async fn cancel(
        &self,
        queue: &QueueName,
        id: &JobId,
        settings: &QueueSettings,
    ) -> Result<Cancelled> {
        self.jobs_cancel(queue, id, settings).await
    }

    async fn cancel_hints(
        &self,
        queue: &QueueName,
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<JobId>> {
        self.jobs_cancel_hints(queue, stop).await
    }

    async fn remove_job(
        &self,
        queue: &QueueName,
        id: &JobId,
        settings: &QueueSettings,
    ) -> Result<Removed> {
        self.jobs_remove(queue, id, settings).await
    }

    async fn requeue(
        &self,
        queue: &QueueName,
        id: &JobId,
        how: Requeue,
        settings: &QueueSettings,
    ) -> Result<Requeued> {
        self.jobs_requeue(queue, id, how, settings).await
    }

    async fn retry_failed(
        &self,
        queue: &QueueName,
        limit: usize,
        settings: &QueueSettings,
    ) -> Result<(u64, u64)> {
        self.jobs_retry_failed(queue, limit, settings).await
    }

    async fn pause(&self, queue: &QueueName, name: Option<&JobName>) -> Result<()> {
        self.jobs_pause(queue, name).await
    }

    async fn resume(&self, queue: &QueueName, name: Option<&JobName>) -> Result<()> {
        self.jobs_resume(queue, name).await
    }

    async fn paused(&self, queue: &QueueName) -> Result<(bool, Vec<JobName>)> {
        self.jobs_paused(queue).await
    }

    async fn job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>> {
        self.jobs_job(queue, id).await
    }

    async fn job_logs(
        &self,
        queue: &QueueName,
        id: &JobId,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.jobs_logs(queue, id, offset, limit).await
    }

    async fn counts(&self, queue: &QueueName) -> Result<JobCounts> {
        self.jobs_counts(queue).await
    }

    async fn list_jobs(
        &self,
        queue: &QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        self.jobs_list(queue, state, cursor, limit).await
    }

    async fn queues(&self) -> Result<Vec<QueueName>> {
        self.jobs_queues().await
    }

    async fn sample_queues(&self, queues: &[QueueName]) -> Result<Vec<JobCounts>> {
        self.jobs_sample(queues).await
    }

    async fn job_waiter(&self, queue: &QueueName) -> Result<Box<dyn JobWaiter>> {
        Ok(Box::new(
            wait::RedisJobWaiter::open(self.clone(), &self.queue_keys(queue)).await?,
        ))
    }

    async fn event_reader(&self, queue: &QueueName) -> Result<Box<dyn EventReader>> {
        Ok(Box::new(
            wait::RedisEventReader::open(self.clone(), &self.queue_keys(queue)).await?,
        ))
    }

    async fn set_limits(&self, queue: &QueueName, limits: &Limits) -> Result<()> {
        self.jobs_set_limits(queue, limits).await
    }

    async fn limits(&self, queue: &QueueName) -> Result<Limits> {
        self.jobs_limits(queue).await
    }

    async fn pause_group(
        &self,
        queue: &QueueName,
        group: &JobGroup,
        paused: bool,
        settings: &QueueSettings,
    ) -> Result<bool> {
        self.jobs_pause_group(queue, group, paused, settings).await
    }

    async fn group_counts(&self, queue: &QueueName, group: &JobGroup) -> Result<GroupCounts> {
        self.jobs_group_counts(queue, group).await
    }

    async fn list_groups(
        &self,
        queue: &QueueName,
        after: Option<&JobGroup>,
        limit: usize,
    ) -> Result<Vec<(JobGroup, GroupCounts)>> {
        self.jobs_list_groups(queue, after, limit).await
    }
}
