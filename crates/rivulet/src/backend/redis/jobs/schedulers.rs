//! The Redis store of job schedulers (J-4; see [`crate::backend::job_schedulers`]).
//!
//! Per queue, in its slot: `{…}/schedulers`, a sorted set of scheduler ids by next fire
//! time (ms), and `{…}/scheduler/<id>`, a hash per scheduler (`docs/wire-format.md`).
//! A fire is the job libraries (`jobs_lib.lua`, `jobs_limits_lib.lua`,
//! `jobs_flow_lib.lua`) + `jobs_scheduler_fire.lua` + `jobs_add.lua` as one script:
//! the compare-and-set and the job's add in one atomic step, one script per due
//! scheduler, all of a pass in one pipeline.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;
use redis::{Script, Value};

use super::add::{decode_added, job_args};
use super::decode::array_of;
use super::{QueueKeys, header};
use crate::backend::job_schedulers::{
    Due, Fire, Fired, JobSchedulers, StoredScheduler, UpsertOutcome, Upserted,
};
use crate::backend::jobs::QueueSettings;
use crate::backend::redis::RedisBackend;
use crate::backend::redis::conn::{check_value, evalsha, pipeline_with_scripts};
use crate::backend::redis::reply;
use crate::error::{Error, Result};
use crate::name::{JobId, JobName, QueueName};

struct SchedulerScripts {
    upsert: Script,
    remove: Script,
    read: Script,
    fire: Script,
}

static SCRIPTS: LazyLock<SchedulerScripts> = LazyLock::new(|| SchedulerScripts {
    upsert: Script::new(include_str!("../lua/jobs_scheduler_upsert.lua")),
    remove: Script::new(include_str!("../lua/jobs_scheduler_remove.lua")),
    read: Script::new(include_str!("../lua/jobs_scheduler_read.lua")),
    fire: Script::new(concat!(
        include_str!("../lua/jobs_lib.lua"),
        "\n",
        include_str!("../lua/jobs_limits_lib.lua"),
        "\n",
        include_str!("../lua/jobs_flow_lib.lua"),
        "\n",
        include_str!("../lua/jobs_scheduler_fire.lua"),
        "\n",
        include_str!("../lua/jobs_add.lua")
    )),
});

/// A page of the listing.
const PAGE: usize = 500;

fn index_key(keys: &QueueKeys) -> String {
    format!("{}/schedulers", keys.tag)
}

fn record_key(keys: &QueueKeys, id: &str) -> String {
    format!("{}/scheduler/{id}", keys.tag)
}

fn protocol(detail: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("malformed job scheduler: {detail}"))
}

fn decode_record(v: &Value) -> Result<StoredScheduler> {
    let f: HashMap<String, &Value> = reply::pairs(v).into_iter().collect();
    let s = |name: &str| -> Result<String> {
        f.get(name)
            .and_then(|v| reply::string(v))
            .ok_or_else(|| protocol(format!("{name} is missing or not text")))
    };
    let opt_u64 = |name: &str| -> Result<Option<u64>> {
        match f.get(name) {
            None => Ok(None),
            Some(v) => reply::uint(v)
                .map(Some)
                .ok_or_else(|| protocol(format!("{name} is not a number"))),
        }
    };
    let job_data = f
        .get("job_data")
        .and_then(|v| reply::bytes(v))
        .map(Bytes::copy_from_slice)
        .ok_or_else(|| protocol("job_data is missing"))?;
    let last_job = match f.get("last_job").and_then(|v| reply::string(v)) {
        None => None,
        Some(id) => Some(JobId::new(id).map_err(|_| protocol("last_job is not a job id"))?),
    };
    Ok(StoredScheduler {
        id: s("id")?,
        kind: s("kind")?,
        value: s("value")?,
        tz: s("tz")?,
        job_name: JobName::new(s("job_name")?).map_err(|_| protocol("bad job_name"))?,
        job_data,
        job_opts: s("job_opts")?,
        version: opt_u64("version")?.ok_or_else(|| protocol("version is missing"))?,
        next_ms: opt_u64("next")?,
        last_ms: opt_u64("last")?,
        last_job,
    })
}

/// `{now, next after now, records…}` from `jobs_scheduler_read.lua`.
fn decode_read(v: &Value) -> Result<(u64, Option<u64>, Vec<StoredScheduler>)> {
    let items = array_of(v, "scheduler read")?;
    let now = items
        .first()
        .and_then(reply::uint)
        .ok_or_else(|| reply::unexpected("scheduler read", v))?;
    let next = match items.get(1).and_then(reply::string).as_deref() {
        None | Some("") => None,
        // Scores come back as text; a whole-millisecond score has no fraction.
        Some(t) => Some(
            t.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
                .ok_or_else(|| protocol(format!("next fire time {t:?}")))?,
        ),
    };
    let records = items
        .iter()
        .skip(2)
        .map(decode_record)
        .collect::<Result<Vec<_>>>()?;
    Ok((now, next, records))
}

impl RedisBackend {
    async fn scheduler_read(
        &self,
        queue: &QueueName,
        mode: &str,
        n: usize,
        from: usize,
    ) -> Result<(u64, Option<u64>, Vec<StoredScheduler>)> {
        let keys = self.queue_keys(queue);
        let mut inv = SCRIPTS.read.prepare_invoke();
        inv.key(index_key(&keys))
            .arg(&keys.tag)
            .arg(mode)
            .arg(n)
            .arg(from);
        let mut conn = self.conn()?;
        let v: Value = inv.invoke_async(&mut conn).await?;
        decode_read(&v)
    }
}

#[async_trait::async_trait]
impl JobSchedulers for RedisBackend {
    async fn store_time_ms(&self, queue: &QueueName) -> Result<u64> {
        // Read in the queue's slot, so a Cluster answers with the clock of the node the
        // runners' scripts run on.
        Ok(self.scheduler_read(queue, "due", 0, 0).await?.0)
    }

    async fn upsert_scheduler(
        &self,
        queue: &QueueName,
        record: &StoredScheduler,
    ) -> Result<Upserted> {
        let keys = self.queue_keys(queue);
        let mut conn = self.conn()?;
        let _: i64 = redis::cmd("SADD")
            .arg(super::keys::queues(&self.inner.prefix))
            .arg(queue.as_str())
            .query_async(&mut conn)
            .await?;
        let next = record
            .next_ms
            .ok_or_else(|| Error::config("a new schedule needs a next fire time"))?;
        let mut inv = SCRIPTS.upsert.prepare_invoke();
        inv.key(index_key(&keys))
            .key(record_key(&keys, &record.id))
            .arg(&record.id)
            .arg(&record.kind)
            .arg(&record.value)
            .arg(&record.tz)
            .arg(record.job_name.as_str())
            .arg(record.job_data.as_ref())
            .arg(&record.job_opts)
            .arg(next);
        let v: Value = inv.invoke_async(&mut conn).await?;
        let items = array_of(&v, "scheduler upsert")?;
        let outcome = match items.first().and_then(reply::string).as_deref() {
            Some("created") => UpsertOutcome::Created,
            Some("replaced") => UpsertOutcome::Replaced,
            Some("updated") => UpsertOutcome::Updated,
            Some("unchanged") => UpsertOutcome::Unchanged,
            _ => return Err(reply::unexpected("scheduler upsert", &v)),
        };
        let version = items
            .get(1)
            .and_then(reply::uint)
            .ok_or_else(|| reply::unexpected("scheduler upsert", &v))?;
        let next_ms = items.get(2).and_then(reply::uint);
        Ok(Upserted {
            outcome,
            version,
            next_ms,
        })
    }

    async fn remove_scheduler(&self, queue: &QueueName, id: &str) -> Result<bool> {
        let keys = self.queue_keys(queue);
        let mut inv = SCRIPTS.remove.prepare_invoke();
        inv.key(index_key(&keys)).key(record_key(&keys, id)).arg(id);
        let mut conn = self.conn()?;
        let n: i64 = inv.invoke_async(&mut conn).await?;
        Ok(n > 0)
    }

    async fn schedulers(&self, queue: &QueueName) -> Result<Vec<StoredScheduler>> {
        let mut all = Vec::new();
        loop {
            let (_, _, page) = self.scheduler_read(queue, "page", PAGE, all.len()).await?;
            let n = page.len();
            all.extend(page);
            if n < PAGE {
                return Ok(all);
            }
        }
    }

    async fn due_schedulers(&self, queue: &QueueName, limit: usize) -> Result<Due> {
        let (now_ms, next_ms, due) = self.scheduler_read(queue, "due", limit, 0).await?;
        Ok(Due {
            now_ms,
            due,
            next_ms,
        })
    }

    async fn fire_schedulers(
        &self,
        queue: &QueueName,
        fires: &[Fire],
        settings: &QueueSettings,
    ) -> Result<Vec<Fired>> {
        if fires.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.queue_keys(queue);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for f in fires {
            let mut all = keys.fixed();
            all.push(index_key(&keys));
            all.push(record_key(&keys, &f.id));
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let mut cmd = evalsha(&SCRIPTS.fire, &refs);
            for a in header(&keys, Some(settings)) {
                cmd.arg(a);
            }
            cmd.arg(1);
            job_args(&mut cmd, &f.job);
            cmd.arg(&f.id)
                .arg(f.version)
                .arg(f.expected_next_ms)
                .arg(f.tick_ms)
                .arg(f.next_ms.map(|n| n.to_string()).unwrap_or_default());
            pipe.add_command(cmd);
        }
        let mut conn = self.conn()?;
        let values = pipeline_with_scripts(&mut conn, &pipe, &[&SCRIPTS.fire]).await?;
        if values.len() != fires.len() {
            return Err(Error::Protocol(format!(
                "{} replies to {} scheduler fires",
                values.len(),
                fires.len()
            )));
        }
        values
            .into_iter()
            .map(|v| {
                let v = check_value(v)?;
                let items = array_of(&v, "scheduler fire")?;
                match items.first() {
                    Some(first) if reply::string(first).as_deref() == Some("stale") => {
                        Ok(Fired::Stale)
                    }
                    Some(added) => Ok(Fired::Fired(decode_added(added)?)),
                    None => Err(reply::unexpected("scheduler fire", &v)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_current_read_fires() {
        let server = rivulet_testkit::RedisServer::start().unwrap();
        let b = RedisBackend::connect(&server.url()).await.unwrap();
        crate::backend::job_schedulers::checks::only_a_current_read_fires(&b).await;
    }

    #[test]
    fn scheduler_keys_share_the_queue_tag() {
        let q = QueueName::new("mail:out").expect("queue");
        let k = QueueKeys::new("rivulet", &q);
        assert_eq!(index_key(&k), "{rivulet/queue/mail:out}/schedulers");
        assert_eq!(
            record_key(&k, "nightly"),
            "{rivulet/queue/mail:out}/scheduler/nightly"
        );
    }
}
