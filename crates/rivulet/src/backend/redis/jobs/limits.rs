//! A queue's stored limits and its job groups (J-7, J-8): the limits are fields of the
//! queue's meta hash, read by every fetch (`lua/jobs_limits_lib.lua` has the layout).

use std::time::Duration;

use redis::Value;

use super::invocation;
use crate::backend::jobs::QueueSettings;
use crate::backend::redis::RedisBackend;
use crate::backend::redis::reply;
use crate::backend::redis::scripts::SCRIPTS;
use crate::deadline::millis;
use crate::error::Result;
use crate::jobs::limits::{GroupCounts, Limits, Rate};
use crate::name::{JobGroup, QueueName};

/// The meta fields of the limits, in the order [`fields`] writes them.
const FIELDS: [&str; 6] = [
    "cap",
    "rate_max",
    "rate_ms",
    "group_cap",
    "group_rate_max",
    "group_rate_ms",
];

/// The limits as meta field values (0 = none).
fn fields(l: &Limits) -> [u64; 6] {
    let rate = |r: Option<Rate>| r.map_or((0, 0), |r| (u64::from(r.max), millis(r.per)));
    let (rm, rp) = rate(l.rate);
    let (gm, gp) = rate(l.group_rate);
    [
        l.concurrency.map_or(0, u64::from),
        rm,
        rp,
        l.group_concurrency.map_or(0, u64::from),
        gm,
        gp,
    ]
}

fn from_fields(v: &[Option<u64>]) -> Limits {
    let at = |i: usize| v.get(i).copied().flatten().unwrap_or(0);
    let cap = |n: u64| (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX));
    let rate = |m: u64, ms: u64| {
        (m > 0 && ms > 0).then(|| {
            Rate::new(
                u32::try_from(m).unwrap_or(u32::MAX),
                Duration::from_millis(ms),
            )
        })
    };
    let mut l = Limits::new();
    l.concurrency = cap(at(0));
    l.rate = rate(at(1), at(2));
    l.group_concurrency = cap(at(3));
    l.group_rate = rate(at(4), at(5));
    l
}

impl RedisBackend {
    pub(super) async fn jobs_set_limits(&self, queue: &QueueName, limits: &Limits) -> Result<()> {
        let keys = self.queue_keys(queue);
        // One HSET writes every field at once; no MULTI (not in the ACL rules).
        let mut pipe = redis::pipe();
        let hset = pipe.cmd("HSET").arg(keys.meta());
        for (f, v) in FIELDS.iter().zip(fields(limits)) {
            hset.arg(*f).arg(v);
        }
        // Wake an idle worker: a raised cap or a lifted limit may free work (its fetch
        // chains the others).
        pipe.cmd("LPUSH").arg(keys.marker()).arg("1");
        pipe.cmd("LTRIM").arg(keys.marker()).arg(0).arg(0);
        let mut conn = self.conn()?;
        let _: Value = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    pub(super) async fn jobs_limits(&self, queue: &QueueName) -> Result<Limits> {
        let keys = self.queue_keys(queue);
        let mut conn = self.conn()?;
        let v: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(keys.meta())
            .arg(&FIELDS[..])
            .query_async(&mut conn)
            .await?;
        Ok(from_fields(&v))
    }

    pub(super) async fn jobs_pause_group(
        &self,
        queue: &QueueName,
        group: &JobGroup,
        paused: bool,
        settings: &QueueSettings,
    ) -> Result<bool> {
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.group, &keys, Some(settings));
        inv.arg(if paused { "pause" } else { "resume" })
            .arg(group.as_str());
        let mut conn = self.conn()?;
        let changed: i64 = inv.invoke_async(&mut conn).await?;
        Ok(changed == 1)
    }

    pub(super) async fn jobs_group_counts(
        &self,
        queue: &QueueName,
        group: &JobGroup,
    ) -> Result<GroupCounts> {
        let keys = self.queue_keys(queue);
        let g = group.as_str();
        let mut conn = self.conn()?;
        let (waiting, active, paused): (u64, Option<u64>, bool) = redis::pipe()
            .cmd("ZCARD")
            .arg(format!("{}/group/{g}/waiting", keys.tag))
            .cmd("HGET")
            .arg(format!("{}/groups-active", keys.tag))
            .arg(g)
            .cmd("SISMEMBER")
            .arg(format!("{}/groups-paused", keys.tag))
            .arg(g)
            .query_async(&mut conn)
            .await?;
        Ok(GroupCounts {
            waiting,
            active: active.unwrap_or(0),
            paused,
        })
    }

    pub(super) async fn jobs_list_groups(
        &self,
        queue: &QueueName,
        after: Option<&JobGroup>,
        limit: usize,
    ) -> Result<Vec<(JobGroup, GroupCounts)>> {
        let keys = self.queue_keys(queue);
        let mut inv = invocation(&SCRIPTS.jobs.groups, &keys, None);
        inv.arg(after.map_or("", |g| g.as_str())).arg(limit);
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        let rows = reply::array(&v).ok_or_else(|| reply::unexpected("job groups", &v))?;
        rows.iter()
            .map(|row| {
                let bad = || reply::unexpected("job group", row);
                let r = reply::array(row).ok_or_else(bad)?;
                let name = r.first().and_then(reply::string).ok_or_else(bad)?;
                let n = |i: usize| r.get(i).and_then(reply::uint).ok_or_else(bad);
                let group = JobGroup::new(name).map_err(|_| bad())?;
                Ok((
                    group,
                    GroupCounts {
                        waiting: n(1)?,
                        active: n(2)?,
                        paused: n(3)? == 1,
                    },
                ))
            })
            .collect()
    }
}
