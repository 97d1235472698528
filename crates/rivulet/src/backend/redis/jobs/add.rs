//! Adding jobs: one `jobs_add.lua` per batch of at most [`ADD_BATCH`] jobs, all in one
//! pipeline (one round trip), and the queue registry.

use redis::Value;

use super::decode::{array_of, text};
use super::{QueueKeys, header};
use crate::backend::jobs::{Added, NewJob, QueueSettings};
use crate::backend::redis::RedisBackend;
use crate::backend::redis::conn::{Conn, check_value, evalsha, pipeline_with_scripts};
use crate::backend::redis::reply;
use crate::backend::redis::scripts::SCRIPTS;
use crate::error::Result;
use crate::name::{JobId, QueueName};

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The most jobs one `jobs_add.lua` call adds, so that a large `add_bulk` does not hold
/// Redis for long in one script.
const ADD_BATCH: usize = 100;

/// The `EVALSHA` of `jobs_add.lua` for a batch of jobs.
fn add_cmd(keys: &QueueKeys, settings: &QueueSettings, jobs: &[NewJob]) -> redis::Cmd {
    let fixed = keys.fixed();
    let refs: Vec<&str> = fixed.iter().map(String::as_str).collect();
    let mut cmd = evalsha(&SCRIPTS.jobs.add, &refs);
    for a in header(keys, Some(settings)) {
        cmd.arg(a);
    }
    cmd.arg(jobs.len());
    for job in jobs {
        job_args(&mut cmd, job);
    }
    cmd
}

/// The 19 arguments of one job.
pub(super) fn job_args(cmd: &mut redis::Cmd, job: &NewJob) {
    let (dedup, ttl) = match &job.dedup {
        Some(d) => (d.key.as_str(), opt(d.ttl_ms)),
        None => ("", String::new()),
    };
    cmd.arg(job.id.as_str())
        .arg(job.name.as_str())
        .arg(job.data.as_ref())
        .arg(job.priority)
        .arg(flag(job.lifo))
        .arg(job.delay_ms)
        .arg(opt(job.run_at_ms))
        .arg(job.max_attempts)
        .arg(job.backoff.base_ms)
        .arg(job.backoff.multiplier.to_string())
        .arg(job.backoff.max_ms)
        .arg(opt(job.timeout_ms))
        .arg(dedup)
        .arg(ttl)
        .arg(flag(job.remove_on_complete))
        .arg(flag(job.remove_on_fail));
    match &job.trace {
        Some(t) => cmd
            .arg(t.traceparent.as_str())
            .arg(t.tracestate.as_deref().unwrap_or("")),
        None => cmd.arg("").arg(""),
    };
    cmd.arg(job.group.as_ref().map_or("", |g| g.as_str()));
}

pub(super) fn decode_added(v: &Value) -> Result<Added> {
    let items = array_of(v, "job add")?;
    let id =
        JobId::new(text(items.get(1), "job add")?).map_err(|_| reply::unexpected("job add", v))?;
    match reply::string(items.first().unwrap_or(&Value::Nil)).as_deref() {
        Some("existing") => Ok(Added::Existing(id)),
        Some("new") => Ok(Added::New(id, text(items.get(2), "job add")?.parse()?)),
        _ => Err(reply::unexpected("job add", v)),
    }
}

impl RedisBackend {
    /// Adds `queue` to the registry, once per queue for this backend handle (the set is
    /// not in the queue's slot, so it is a command of its own).
    pub(super) async fn register_queue(&self, conn: &mut Conn, queue: &QueueName) -> Result<()> {
        if crate::backend::redis::lock(&self.inner.queues_registered).contains(queue) {
            return Ok(());
        }
        let _: i64 = redis::cmd("SADD")
            .arg(super::keys::queues(&self.inner.prefix))
            .arg(queue.as_str())
            .query_async(conn)
            .await?;
        crate::backend::redis::lock(&self.inner.queues_registered).insert(queue.clone());
        Ok(())
    }

    pub(super) async fn jobs_add(
        &self,
        queue: &QueueName,
        jobs: &[NewJob],
        settings: &QueueSettings,
    ) -> Result<Vec<Added>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        self.register_queue(&mut conn, queue).await?;
        let keys = self.queue_keys(queue);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for batch in jobs.chunks(ADD_BATCH) {
            pipe.add_command(add_cmd(&keys, settings, batch));
        }
        let values = pipeline_with_scripts(&mut conn, &pipe, &[&SCRIPTS.jobs.add]).await?;
        let mut added = Vec::with_capacity(jobs.len());
        for v in values {
            let v = check_value(v)?;
            for item in array_of(&v, "job add")? {
                added.push(decode_added(item)?);
            }
        }
        if added.len() != jobs.len() {
            return Err(crate::error::Error::Protocol(format!(
                "{} replies to {} job adds",
                added.len(),
                jobs.len()
            )));
        }
        Ok(added)
    }
}
