//! Reading: one job, its logs, counts, pages of a state, the queue registry, the clock.

use redis::Value;

use super::decode::{array_of, job_info, text};
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

impl RedisBackend {
    pub(super) async fn jobs_job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>> {
        let keys = self.queue_keys(queue);
        let mut conn = self.conn()?;
        let v: Value = redis::cmd("HGETALL")
            .arg(keys.job(id))
            .query_async(&mut conn)
            .await?;
        job_info(&v)
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
        let keys = self.queue_keys(queue);
        let mut pipe = redis::pipe();
        // In `JobState::ALL` order, as the tuple below reads them.
        for state in JobState::ALL {
            pipe.cmd("ZCARD").arg(keys.state_set(state.as_str()));
        }
        pipe.cmd("HMGET")
            .arg(keys.meta())
            .arg("parked")
            .arg("gwaiting");
        let mut conn = self.conn()?;
        type Row = (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            (Option<i64>, Option<i64>),
        );
        let (w, d, a, c, f, x, wc, (parked, grouped)): Row = pipe.query_async(&mut conn).await?;
        let parked = u64::try_from(parked.unwrap_or(0)).unwrap_or(0);
        // Waiting jobs of groups are in their groups' sets (jobs_limits_lib.lua).
        let grouped = u64::try_from(grouped.unwrap_or(0)).unwrap_or(0);
        Ok(JobCounts {
            waiting: w + parked + grouped,
            parked,
            delayed: d,
            active: a,
            completed: c,
            failed: f,
            cancelled: x,
            waiting_children: wc,
        })
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
