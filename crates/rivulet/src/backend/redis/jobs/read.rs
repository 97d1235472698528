//! Reading: one job, its logs, counts, pages of a state, the queue registry, the clock.

use redis::Value;

use super::decode::{array_of, job_info, job_info_with_data, text};
use super::invocation;
use crate::backend::jobs::JobPage;
use crate::backend::redis::RedisBackend;
use crate::backend::redis::scripts::SCRIPTS;
use crate::error::{Error, Result};
use crate::jobs::record::{JobCounts, JobInfo, JobState};
use crate::name::{JobId, QueueName};

/// A page cursor: `<score>:<job id>` of the last job of the previous page.
fn parse_cursor(c: &str) -> Result<(String, String)> {
    let bad = || Error::config(format!("invalid job page cursor {c:?}"));
    let (score, id) = c.split_once(':').ok_or_else(bad)?;
    let plain = !score.is_empty()
        && score
            .strip_prefix('-')
            .unwrap_or(score)
            .bytes()
            .all(|b| b.is_ascii_digit());
    if !plain || JobId::new(id).is_err() {
        return Err(bad());
    }
    Ok((score.to_owned(), id.to_owned()))
}

/// Commands of [`push_counts`] per queue.
const COUNT_COMMANDS: usize = JobState::ALL.len() + 2;

/// The commands reading one queue's counts: a `ZCARD` per state in `JobState::ALL`
/// order, then the parked count and the count of waiting jobs in job groups' sets
/// (`gwaiting`, kept by jobs_limits_lib.lua).
fn push_counts(pipe: &mut redis::Pipeline, keys: &super::keys::QueueKeys) {
    for state in JobState::ALL {
        pipe.cmd("ZCARD").arg(keys.state_set(state.as_str()));
    }
    pipe.cmd("HGET").arg(keys.meta()).arg("parked");
    pipe.cmd("HGET").arg(keys.meta()).arg("gwaiting");
}

fn decode_counts(values: &[Value]) -> Result<JobCounts> {
    if values.len() != COUNT_COMMANDS {
        return Err(Error::Protocol(format!(
            "{} replies to {COUNT_COMMANDS} job count commands",
            values.len()
        )));
    }
    let n = |i: usize| -> Result<u64> {
        match &values[i] {
            Value::Nil => Ok(0),
            // A negative count (never written by rivulet) reads as 0, as before.
            v => crate::backend::redis::reply::int(v)
                .map(|i| u64::try_from(i).unwrap_or(0))
                .ok_or_else(|| crate::backend::redis::reply::unexpected("job count", v)),
        }
    };
    let parked = n(7)?;
    // Waiting jobs of groups are in their groups' sets, not in `waiting`.
    let grouped = n(8)?;
    Ok(JobCounts {
        waiting: n(0)? + parked + grouped,
        parked,
        delayed: n(1)?,
        active: n(2)?,
        completed: n(3)?,
        failed: n(4)?,
        cancelled: n(5)?,
        waiting_children: n(6)?,
    })
}

impl RedisBackend {
    pub(super) async fn jobs_job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>> {
        let keys = self.queue_keys(queue);
        let mut conn = self.conn()?;
        let (v, data): (Value, Option<Vec<u8>>) = redis::pipe()
            .cmd("HGETALL")
            .arg(keys.job(id))
            .cmd("GET")
            .arg(keys.data(id))
            .query_async(&mut conn)
            .await?;
        job_info_with_data(&v, data)
    }

    pub(super) async fn jobs_logs(
        &self,
        queue: &QueueName,
        id: &JobId,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.queue_keys(queue);
        let mut conn = self.conn()?;
        let stop = offset.saturating_add(limit - 1);
        let lines: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.logs(id))
            .arg(offset)
            .arg(stop)
            .query_async(&mut conn)
            .await?;
        Ok(lines)
    }

    pub(super) async fn jobs_counts(&self, queue: &QueueName) -> Result<JobCounts> {
        let mut pipe = redis::pipe();
        push_counts(&mut pipe, &self.queue_keys(queue));
        let mut conn = self.conn()?;
        let values: Vec<Value> = pipe.query_async(&mut conn).await?;
        decode_counts(&values)
    }

    /// The counts of many queues: one pipeline (on a cluster, one per queue, sent
    /// concurrently: a pipeline must stay in one slot).
    pub(super) async fn jobs_sample(&self, queues: &[QueueName]) -> Result<Vec<JobCounts>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn()?;
        if self.is_cluster() {
            let calls = queues.iter().map(|q| {
                let mut conn = conn.clone();
                let mut pipe = redis::pipe();
                push_counts(&mut pipe, &self.queue_keys(q));
                async move {
                    let values: Vec<Value> = pipe.query_async(&mut conn).await?;
                    decode_counts(&values)
                }
            });
            return futures::future::try_join_all(calls).await;
        }
        let mut pipe = redis::pipe();
        for q in queues {
            push_counts(&mut pipe, &self.queue_keys(q));
        }
        let mut conn = conn;
        let values: Vec<Value> = pipe.query_async(&mut conn).await?;
        values.chunks(COUNT_COMMANDS).map(decode_counts).collect()
    }

    pub(super) async fn jobs_list(
        &self,
        queue: &QueueName,
        state: JobState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let limit = limit.max(1);
        let after = cursor.map(parse_cursor).transpose()?;
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.list, &keys, None);
        let (score, member) = after.unwrap_or_default();
        inv.arg(state.as_str()).arg(score).arg(member).arg(limit);
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = array_of(&v, "job list")?;
        let mut jobs = Vec::with_capacity(items.len());
        let mut last = None;
        for item in items {
            let parts = array_of(item, "job list")?;
            let id = text(parts.first(), "job list")?;
            let score = text(parts.get(1), "job list")?;
            if let Some(job) = job_info(parts.get(2).unwrap_or(&Value::Nil))? {
                jobs.push(job);
            }
            last = Some(format!("{score}:{id}"));
        }
        let next = if items.len() == limit { last } else { None };
        Ok(JobPage { jobs, next })
    }

    pub(super) async fn jobs_queues(&self) -> Result<Vec<QueueName>> {
        let mut conn = self.conn()?;
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(super::keys::queues(&self.inner.prefix))
            .query_async(&mut conn)
            .await?;
        let mut queues: Vec<QueueName> = names
            .into_iter()
            .filter_map(|n| QueueName::new(n).ok())
            .collect();
        queues.sort();
        Ok(queues)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_checked() {
        assert_eq!(
            parse_cursor("12:a:b").unwrap(),
            ("12".to_owned(), "a:b".to_owned())
        );
        assert!(parse_cursor("x:a").is_err());
        assert!(parse_cursor(":a").is_err());
        assert!(parse_cursor("12").is_err());
        assert!(parse_cursor("1e5:a").is_err());
    }
}
