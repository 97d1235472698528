//! Cancelling, removing, pausing and resuming, progress and logs.

use bytes::Bytes;
use redis::Value;

use super::decode::array_of;
use super::invocation;
use crate::backend::jobs::{Cancelled, QueueSettings, Removed, Requeue, Requeued};
use crate::backend::redis::RedisBackend;
use crate::backend::redis::reply;
use crate::backend::redis::scripts::SCRIPTS;
use crate::error::Result;
use crate::name::{JobId, JobName, QueueName};

/// How many parked jobs one resume step puts back.
const RESUME_BATCH: usize = 500;

impl RedisBackend {
    pub(super) async fn jobs_cancel(
        &self,
        queue: &QueueName,
        id: &JobId,
        settings: &QueueSettings,
    ) -> Result<Cancelled> {
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.cancel, &keys, Some(settings));
        inv.arg(id.as_str()).arg(&keys.channel);
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = array_of(&v, "job cancel")?;
        let word = |i: usize| items.get(i).and_then(reply::string);
        match word(0).as_deref() {
            Some("cancelled") => Ok(Cancelled::Cancelled),
            Some("requested") => Ok(Cancelled::Requested),
            Some("notfound") => Ok(Cancelled::NotFound),
            Some("finished") => match word(1) {
                Some(state) => Ok(Cancelled::Finished(state.parse()?)),
                None => Err(reply::unexpected("job cancel", &v)),
            },
            _ => Err(reply::unexpected("job cancel", &v)),
        }
    }

    pub(super) async fn jobs_remove(
        &self,
        queue: &QueueName,
        id: &JobId,
        settings: &QueueSettings,
    ) -> Result<Removed> {
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.remove, &keys, Some(settings));
        inv.arg(id.as_str());
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = array_of(&v, "job remove")?;
        let word = |i: usize| items.get(i).and_then(reply::string);
        match word(0).as_deref() {
            Some("removed") => match word(1) {
                Some(state) => Ok(Removed::Removed(state.parse()?)),
                None => Err(reply::unexpected("job remove", &v)),
            },
            Some("active") => Ok(Removed::Active),
            Some("notfound") => Ok(Removed::NotFound),
            _ => Err(reply::unexpected("job remove", &v)),
        }
    }

    pub(super) async fn jobs_requeue(
        &self,
        queue: &QueueName,
        id: &JobId,
        how: Requeue,
        settings: &QueueSettings,
    ) -> Result<Requeued> {
        let keys = self.queue_keys(queue);
        let mode = match how {
            Requeue::Retry => "retry",
            Requeue::Promote => "promote",
        };
        let mut inv = invocation(&SCRIPTS.jobs.requeue, &keys, Some(settings));
        inv.arg(mode).arg(id.as_str());
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = array_of(&v, "job requeue")?;
        let word = |i: usize| items.get(i).and_then(reply::string);
        let state = || match word(1) {
            Some(s) => s.parse(),
            None => Err(reply::unexpected("job requeue", &v)),
        };
        match word(0).as_deref() {
            Some("moved") => Ok(Requeued::Moved(state()?)),
            Some("refused") => Ok(Requeued::Refused(state()?)),
            Some("notfound") => Ok(Requeued::NotFound),
            _ => Err(reply::unexpected("job requeue", &v)),
        }
    }

    pub(super) async fn jobs_retry_failed(
        &self,
        queue: &QueueName,
        limit: usize,
        settings: &QueueSettings,
    ) -> Result<(u64, u64)> {
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.requeue, &keys, Some(settings));
        inv.arg("retry_failed").arg(limit);
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = array_of(&v, "job retry_failed")?;
        match (
            items.first().and_then(reply::string).as_deref(),
            items.get(1).and_then(reply::uint),
            items.get(2).and_then(reply::uint),
        ) {
            (Some("bulk"), Some(moved), Some(left)) => Ok((moved, left)),
            _ => Err(reply::unexpected("job retry_failed", &v)),
        }
    }

    pub(super) async fn jobs_pause(&self, queue: &QueueName, name: Option<&JobName>) -> Result<()> {
        let keys = self.queue_keys(queue);
        let mut conn = self.conn()?;
        let _: Value = match name {
            None => {
                redis::cmd("HSET")
                    .arg(keys.meta())
                    .arg("paused")
                    .arg("1")
                    .query_async(&mut conn)
                    .await?
            }
            Some(n) => {
                redis::cmd("SADD")
                    .arg(keys.paused_names())
                    .arg(n.as_str())
                    .query_async(&mut conn)
                    .await?
            }
        };
        Ok(())
    }

    pub(super) async fn jobs_resume(
        &self,
        queue: &QueueName,
        name: Option<&JobName>,
    ) -> Result<()> {
        let keys = self.queue_keys(queue);
        let mut conn = self.conn()?;
        let mut first = true;
        loop {
            let mut inv = invocation(&SCRIPTS.jobs.resume, &keys, None);
            inv.arg(name.map(JobName::as_str).unwrap_or(""))
                .arg(RESUME_BATCH)
                .arg(if first { "1" } else { "0" });
            let left: u64 = inv.invoke_async(&mut conn).await?;
            if left == 0 {
                return Ok(());
            }
            first = false;
        }
    }

    pub(super) async fn jobs_paused(&self, queue: &QueueName) -> Result<(bool, Vec<JobName>)> {
        let keys = self.queue_keys(queue);
        let mut conn = self.conn()?;
        let (flag, names): (Option<String>, Vec<String>) = redis::pipe()
            .cmd("HGET")
            .arg(keys.meta())
            .arg("paused")
            .cmd("SMEMBERS")
            .arg(keys.paused_names())
            .query_async(&mut conn)
            .await?;
        let mut names = names
            .into_iter()
            .map(JobName::new)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| crate::error::Error::Protocol(format!("a paused job name: {e}")))?;
        names.sort();
        Ok((flag.as_deref() == Some("1"), names))
    }

    pub(super) async fn jobs_progress(
        &self,
        queue: &QueueName,
        id: &JobId,
        token: u64,
        progress: Bytes,
        settings: &QueueSettings,
    ) -> Result<bool> {
        let value: serde_json::Value = serde_json::from_slice(&progress)?;
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.progress, &keys, Some(settings));
        inv.arg(id.as_str()).arg(token).arg(value.to_string());
        let mut conn = self.conn()?;
        let n: i64 = inv.invoke_async(&mut conn).await?;
        Ok(n == 1)
    }

    pub(super) async fn jobs_log(
        &self,
        queue: &QueueName,
        id: &JobId,
        token: u64,
        line: &str,
        settings: &QueueSettings,
    ) -> Result<bool> {
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.log, &keys, Some(settings));
        inv.arg(id.as_str())
            .arg(token)
            .arg(line)
            .arg(settings.log_cap);
        let mut conn = self.conn()?;
        let n: i64 = inv.invoke_async(&mut conn).await?;
        Ok(n == 1)
    }
}
