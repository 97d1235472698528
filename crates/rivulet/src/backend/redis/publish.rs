//! Publishing: plain (pipelined XADD), idempotent (B-PUB-4), durable (B-PUB-5), with
//! backpressure (B-PUB-6).

use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::conn::{check_value, evalsha, pipeline_with_scripts};
use super::keys::TopicKeys;
use super::reply;
use super::scripts::SCRIPTS;
use super::wire::{check_envelope, message_fields};
use super::{RedisBackend, millis};
use crate::backend::{PublishOpts, Publishing};
use crate::error::{Error, Result, batch_result};
use crate::message::{EntryId, Envelope, Published, now_ms};
use crate::name::TopicName;
use crate::topic::{Backpressure, TopicOptions};

/// A first publish whose time is within this of the write omits `ts`: the entry id
/// carries the time (to within the write latency), which keeps entries small.
const TS_SLACK_MS: u64 = 5_000;

/// Longest pause between two backpressure checks while waiting for room.
const BACKPRESSURE_POLL_MAX: Duration = Duration::from_millis(200);

/// What the reply to one entry's command says about it.
///
/// An error reply means the command was refused and nothing was written: XADD writes
/// nothing when it fails, and the dedup script's only command after its XADD is a SET
/// with an expiry that `millis` keeps in range, which cannot fail. A missing or
/// unexpected reply leaves the outcome unknown.
fn entry_outcome(env: Envelope, reply: Option<Value>, dedup: bool) -> Result<Published> {
    let Some(v) = reply else {
        return Err(Error::Indeterminate(
            "the pipeline returned no reply for this message".into(),
        ));
    };
    let v = check_value(v)?;
    let (entry_id, duplicate) = if dedup {
        let items = reply::array(&v).unwrap_or(&[]);
        let id = items.first().and_then(reply::string);
        let dup = items.get(1).and_then(reply::int) == Some(1);
        (id, dup)
    } else {
        (reply::string(&v), false)
    };
    match entry_id {
        Some(entry_id) => Ok(Published {
            message_id: env.message_id,
            entry_id: EntryId(entry_id),
            duplicate,
        }),
        None => Err(Error::Indeterminate(
            reply::unexpected("XADD", &v).to_string(),
        )),
    }
}

#[async_trait::async_trait]
impl Publishing for RedisBackend {
    async fn publish(
        &self,
        topic: &TopicName,
        batch: Vec<Envelope>,
        opts: &PublishOpts,
    ) -> Result<Vec<Published>> {
        for env in &batch {
            check_envelope(env)?;
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        self.register_topic(&mut conn, topic).await?;
        let keys = self.topic_keys(topic);
        self.wait_for_room(topic, &keys, &opts.topic).await?;
        let stream = keys.stream();
        // Length trimming on write only when safe mode is off: safe mode never drops an
        // entry a group still needs, which only the trimmer can check.
        let max_len = if opts.topic.safe {
            None
        } else {
            opts.topic.max_len
        };
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for env in &batch {
            let with_ts = env.attempt != 1 || env.published_at_ms.abs_diff(now) > TS_SLACK_MS;
            let fields = message_fields(env, with_ts);
            let mut cmd = match opts.dedup_window {
                Some(window) => {
                    let dedup = keys.dedup(&env.message_id);
                    let mut cmd = evalsha(&SCRIPTS.publish_dedup, &[&stream, &dedup]);
                    cmd.arg(millis(window).max(1)).arg(max_len.unwrap_or(0));
                    cmd
                }
                None => {
                    let mut cmd = redis::cmd("XADD");
                    cmd.arg(&stream);
                    if let Some(n) = max_len {
                        cmd.arg("MAXLEN").arg("~").arg(n);
                    }
                    cmd.arg("*");
                    cmd
                }
            };
            for f in &fields {
                cmd.arg(f.as_ref());
            }
            pipe.add_command(cmd);
        }
        if let Some((replicas, timeout)) = opts.wait_replicas {
            // In the same pipeline, so WAIT runs on the connection that did the writes.
            pipe.cmd("WAIT").arg(replicas).arg(millis(timeout));
        }
        // A failure of the whole pipeline (connection lost, timeout) is returned as it is:
        // it says itself whether anything may have been written.
        let values = pipeline_with_scripts(&mut conn, &pipe, &[&SCRIPTS.publish_dedup]).await?;
        let mut values = values.into_iter();
        let results = batch
            .into_iter()
            .map(|env| entry_outcome(env, values.next(), opts.dedup_window.is_some()))
            .collect();
        // Some entries written and others not: say which, and skip WAIT's verdict (the
        // caller has a partial batch to deal with first).
        let out = batch_result(results)?;
        if let Some((replicas, _)) = opts.wait_replicas {
            let v = values.next().unwrap_or(Value::Nil);
            let acked = match check_value(v) {
                Ok(v) => reply::uint(&v),
                Err(e) => {
                    return Err(Error::Indeterminate(format!(
                        "written, but waiting for replicas failed: {e}"
                    )));
                }
            };
            match acked {
                Some(n) if n >= u64::from(replicas) => {}
                Some(n) => {
                    return Err(Error::Indeterminate(format!(
                        "written, but only {n} of {replicas} replicas acknowledged in time"
                    )));
                }
                None => {
                    return Err(Error::Indeterminate(
                        "written, but WAIT gave an unexpected reply".into(),
                    ));
                }
            }
        }
        Ok(out)
    }
}

impl RedisBackend {
    /// Checks the topic's backpressure cap; with `backpressure_wait`, polls until there is
    /// room or the wait is over.
    async fn wait_for_room(
        &self,
        topic: &TopicName,
        keys: &TopicKeys,
        opts: &TopicOptions,
    ) -> Result<()> {
        let Some(cap) = opts.backpressure else {
            return Ok(());
        };
        let deadline = opts.backpressure_wait.map(crate::deadline::from_now);
        let mut pause = Duration::from_millis(10);
        loop {
            let (current, limit) = self.measure(keys, cap).await?;
            if current < limit {
                return Ok(());
            }
            let now = Instant::now();
            match deadline {
                Some(d) if now < d => {
                    tokio::time::sleep(pause.min(d - now)).await;
                    pause = (pause * 2).min(BACKPRESSURE_POLL_MAX);
                }
                _ => {
                    return Err(Error::Backpressure {
                        topic: topic.to_string(),
                        current,
                        limit,
                    });
                }
            }
        }
    }

    /// The measured value and the cap of a backpressure setting.
    async fn measure(&self, keys: &TopicKeys, cap: Backpressure) -> Result<(u64, u64)> {
        let mut conn = self.conn()?;
        let stream = keys.stream();
        match cap {
            Backpressure::MaxLength(limit) => {
                let len: u64 = redis::cmd("XLEN")
                    .arg(&stream)
                    .query_async(&mut conn)
                    .await?;
                Ok((len, limit))
            }
            Backpressure::MaxLag(limit) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                pipe.cmd("XLEN").arg(&stream);
                pipe.cmd("XINFO").arg("GROUPS").arg(&stream);
                let values: Vec<Value> = pipe.query_async(&mut conn).await?;
                let len = values.first().and_then(reply::uint).unwrap_or(0);
                let groups = match values.get(1) {
                    Some(Value::ServerError(_)) | None => return Ok((0, limit)),
                    Some(v) => v,
                };
                let lag = reply::array(groups)
                    .unwrap_or(&[])
                    .iter()
                    .map(|g| {
                        let pending = reply::field(g, "pending")
                            .and_then(reply::uint)
                            .unwrap_or(0);
                        // `lag` is nil when Redis cannot compute it (deletions in the
                        // range): count the whole stream then, which errs on the safe side.
                        let undelivered =
                            reply::field(g, "lag").and_then(reply::uint).unwrap_or(len);
                        undelivered.saturating_add(pending)
                    })
                    .max()
                    .unwrap_or(0);
                Ok((lag, limit))
            }
        }
    }
}
