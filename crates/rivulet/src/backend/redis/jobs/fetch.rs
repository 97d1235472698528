//! Fetching (settle + promote + lease), settling, renewing leases and taking back
//! stalled jobs.

use redis::{ScriptInvocation, Value};

use super::decode::{array_of, leased, text};
use super::invocation;
use crate::backend::jobs::{
    Fetch, Fetched, QueueSettings, Renewal, Settle, Settled, Settlement, Stalled,
};
use crate::backend::redis::RedisBackend;
use crate::backend::redis::reply;
use crate::backend::redis::scripts::SCRIPTS;
use crate::error::{Error, Result};
use crate::name::{JobId, QueueName};

/// Adds the settlements' arguments (count, then five each) to a script call.
fn settle_args(inv: &mut ScriptInvocation<'_>, settle: &[Settle]) {
    inv.arg(settle.len());
    for s in settle {
        let (how, payload, delay): (&str, &[u8], u64) = match &s.how {
            Settlement::Complete { result } => ("complete", result.as_ref(), 0),
            Settlement::Retry { delay_ms, error } => ("retry", error.as_bytes(), *delay_ms),
            Settlement::Fail { error } => ("fail", error.as_bytes(), 0),
            Settlement::Release => ("release", b"", 0),
            Settlement::RateLimited { delay_ms } => ("limited", b"", *delay_ms),
        };
        inv.arg(s.id.as_str())
            .arg(s.token)
            .arg(how)
            .arg(payload)
            .arg(delay);
    }
}

fn decode_settled(v: &Value, expected: usize) -> Result<Vec<Settled>> {
    let items = array_of(v, "job settle")?;
    if items.len() != expected {
        return Err(reply::unexpected("job settle", v));
    }
    items
        .iter()
        .map(|i| match reply::string(i).as_deref() {
            Some("lost") => Ok(Settled::LeaseLost),
            Some(state) => Ok(Settled::Applied(state.parse()?)),
            None => Err(reply::unexpected("job settle", v)),
        })
        .collect()
}

fn ids(v: Option<&Value>, what: &str) -> Result<Vec<JobId>> {
    let items = v
        .and_then(reply::array)
        .ok_or_else(|| Error::Protocol(format!("malformed {what}")))?;
    items
        .iter()
        .map(|i| {
            reply::string(i)
                .and_then(|s| JobId::new(s).ok())
                .ok_or_else(|| Error::Protocol(format!("malformed {what}: a bad job id")))
        })
        .collect()
}

impl RedisBackend {
    pub(super) async fn jobs_fetch(
        &self,
        queue: &QueueName,
        fetch: &Fetch,
        settings: &QueueSettings,
    ) -> Result<Fetched> {
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.fetch, &keys, Some(settings));
        inv.arg(&fetch.worker)
            .arg(fetch.limit)
            .arg(fetch.lease_ms)
            .arg(fetch.promote_limit);
        settle_args(&mut inv, &fetch.settle);
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = array_of(&v, "job fetch")?;
        let [settled, jobs, next_due, paused, limited] = items else {
            return Err(reply::unexpected("job fetch", &v));
        };
        let next_due = text(Some(next_due), "job fetch")?;
        let limited = text(Some(limited), "job fetch")?;
        Ok(Fetched {
            settled: decode_settled(settled, fetch.settle.len())?,
            jobs: array_of(jobs, "job fetch")?
                .iter()
                .map(leased)
                .collect::<Result<_>>()?,
            next_due_ms: if next_due.is_empty() {
                None
            } else {
                Some(
                    next_due
                        .parse::<f64>()
                        .map_err(|_| reply::unexpected("job fetch", &v))?
                        as u64,
                )
            },
            paused: text(Some(paused), "job fetch")? == "1",
            limited_until_ms: if limited.is_empty() {
                None
            } else {
                Some(
                    limited
                        .parse::<u64>()
                        .map_err(|_| reply::unexpected("job fetch", &v))?,
                )
            },
        })
    }

    pub(super) async fn jobs_settle(
        &self,
        queue: &QueueName,
        settle: &[Settle],
        settings: &QueueSettings,
    ) -> Result<Vec<Settled>> {
        if settle.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.settle, &keys, Some(settings));
        settle_args(&mut inv, settle);
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        decode_settled(&v, settle.len())
    }

    pub(super) async fn jobs_renew(
        &self,
        queue: &QueueName,
        leases: &[(JobId, u64)],
        lease_ms: u64,
    ) -> Result<Vec<Renewal>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.renew, &keys, None);
        inv.arg(lease_ms);
        for (id, token) in leases {
            inv.arg(id.as_str()).arg(*token);
        }
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = array_of(&v, "job renew")?;
        if items.len() != leases.len() {
            return Err(reply::unexpected("job renew", &v));
        }
        items
            .iter()
            .map(|i| match reply::string(i).as_deref() {
                Some("renewed") => Ok(Renewal::Renewed),
                Some("cancel") => Ok(Renewal::Cancel),
                Some("lost") => Ok(Renewal::Lost),
                _ => Err(reply::unexpected("job renew", &v)),
            })
            .collect()
    }

    pub(super) async fn jobs_check_stalled(
        &self,
        queue: &QueueName,
        max_stalled: u32,
        limit: usize,
        settings: &QueueSettings,
    ) -> Result<Stalled> {
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.stalled, &keys, Some(settings));
        inv.arg(max_stalled).arg(limit);
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = array_of(&v, "stalled check")?;
        Ok(Stalled {
            returned: ids(items.first(), "stalled check")?,
            failed_attempt: ids(items.get(1), "stalled check")?,
            cancelled: ids(items.get(2), "stalled check")?,
        })
    }
}
