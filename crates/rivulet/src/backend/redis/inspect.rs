//! Looking at what exists without scanning the keyspace: the topic registry, and one
//! topic's groups and consumers (`XINFO GROUPS|CONSUMERS`, `XPENDING`), a few commands
//! per group, all on the topic's slot. No `KEYS`, `SCAN`, `MEMORY` or `DEBUG`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use redis::Value;

use super::RedisBackend;
use super::conn::Conn;
use super::keys::{self, TopicKeys};
use super::reply;
use super::scripts::SCRIPTS;
use crate::admin::{ConsumerInfo, GroupInfo, PendingEntry, PendingLog, TopicInfo};
use crate::backend::{GroupSample, Inspection, Lane, StreamKey, StreamKind, TopicSample};
use crate::error::{Error, Result};
use crate::message::EntryId;
use crate::name::{ConsumerName, GroupName, TopicName};

/// Runs an `XINFO`/`XPENDING` query; `None` when the stream or the group does not exist.
async fn optional(conn: &mut Conn, cmd: &redis::Cmd) -> Result<Option<Value>> {
    let r: redis::RedisResult<Value> = cmd.query_async(conn).await;
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if reply::is_nogroup(&e) => Ok(None),
        Err(e)
            if e.code() == Some("ERR") && e.detail().is_some_and(|d| d.contains("no such key")) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn num(v: &Value, name: &str) -> Option<u64> {
    reply::field(v, name).and_then(reply::uint)
}

/// One group's view of one of its logs.
#[derive(Debug, Default)]
struct LogView {
    pending: u64,
    lag: Option<u64>,
    last_delivered: Option<EntryId>,
    oldest_idle_ms: Option<u64>,
    consumers: BTreeMap<String, (u64, u64)>,
}

impl RedisBackend {
    /// What `group` looks like on `stream`, from the group's `XINFO GROUPS` entry.
    async fn log_view(
        &self,
        conn: &mut Conn,
        stream: &str,
        group: &str,
        info: &Value,
    ) -> Result<LogView> {
        let mut view = LogView {
            pending: num(info, "pending").unwrap_or(0),
            // Redis 7.0+: `lag` is nil when it cannot be known.
            lag: num(info, "lag"),
            last_delivered: reply::field(info, "last-delivered-id")
                .and_then(reply::string)
                .filter(|id| id != "0-0")
                .map(EntryId),
            ..LogView::default()
        };
        let mut consumers = redis::cmd("XINFO");
        consumers.arg("CONSUMERS").arg(stream).arg(group);
        if let Some(v) = optional(conn, &consumers).await? {
            for c in reply::array(&v).unwrap_or(&[]) {
                let Some(name) = reply::field(c, "name").and_then(reply::string) else {
                    continue;
                };
                let pending = num(c, "pending").unwrap_or(0);
                // `inactive` (7.2+) is the time since the last successful read;
                // `idle` the time since the last interaction of any kind.
                let idle = num(c, "idle").unwrap_or(0);
                view.consumers.insert(name, (pending, idle));
            }
        }
        if view.pending > 0 {
            let mut oldest = redis::cmd("XPENDING");
            oldest.arg(stream).arg(group).arg("-").arg("+").arg(1);
            if let Some(v) = optional(conn, &oldest).await? {
                view.oldest_idle_ms = reply::array(&v)
                    .and_then(|a| a.first())
                    .and_then(reply::array)
                    .and_then(|e| e.get(2))
                    .and_then(reply::uint);
            }
        }
        Ok(view)
    }

    /// The `XINFO GROUPS` entries of `stream`, by group name.
    async fn groups_of(&self, conn: &mut Conn, stream: &str) -> Result<Vec<(String, Value)>> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("GROUPS").arg(stream);
        let Some(v) = optional(conn, &cmd).await? else {
            return Ok(Vec::new());
        };
        Ok(reply::array(&v)
            .unwrap_or(&[])
            .iter()
            .filter_map(|g| Some((reply::field(g, "name").and_then(reply::string)?, g.clone())))
            .collect())
    }
}

/// Commands of [`push_sample`] per topic.
const SAMPLE_COMMANDS: usize = 4;

/// The commands sampling one topic: its stream's length and groups, its retry set's
/// size, its dead-letter queue's length. All in the topic's slot.
fn push_sample(pipe: &mut redis::Pipeline, keys: &TopicKeys) {
    pipe.cmd("XLEN").arg(keys.stream());
    pipe.cmd("XINFO").arg("GROUPS").arg(keys.stream());
    pipe.cmd("ZCARD").arg(keys.log(StreamKind::Main).retry());
    pipe.cmd("XLEN").arg(keys.dead_letters());
}

fn decode_sample(topic: &TopicName, values: &[Value]) -> Result<TopicSample> {
    let [length, groups, retries, dead] = values else {
        return Err(Error::Protocol(format!(
            "{} replies to {SAMPLE_COMMANDS} topic sample commands",
            values.len()
        )));
    };
    let count = |v: &Value| -> Result<u64> {
        reply::uint(v).ok_or_else(|| reply::unexpected("topic sample", v))
    };
    let groups = match groups {
        // "no such key": the stream does not exist yet, so it has no groups.
        Value::ServerError(e) if e.details().is_some_and(|d| d.contains("no such key")) => {
            Vec::new()
        }
        Value::ServerError(e) => return Err(Error::Redis(e.clone().into())),
        v => reply::array(v)
            .unwrap_or(&[])
            .iter()
            .filter_map(|g| {
                let group = reply::field(g, "name").and_then(reply::string)?;
                let pending = reply::field(g, "pending")
                    .and_then(reply::uint)
                    .unwrap_or(0);
                // Nil when Redis cannot tell (after deletions in the stream).
                let lag = reply::field(g, "lag").and_then(reply::uint);
                Some(GroupSample {
                    group,
                    pending,
                    lag,
                })
            })
            .collect(),
    };
    Ok(TopicSample {
        topic: Some(topic.clone()),
        length: count(length)?,
        retries: count(retries)?,
        dead_letters: count(dead)?,
        groups,
    })
}

impl RedisBackend {
    /// Adds `topic` to the registry, once per topic for this backend (the set is not in
    /// the topic's slot, so it is a command of its own).
    pub(super) async fn register_topic(&self, conn: &mut Conn, topic: &TopicName) -> Result<()> {
        if super::lock(&self.inner.registered).contains(topic) {
            return Ok(());
        }
        let _: i64 = redis::cmd("SADD")
            .arg(keys::topics(&self.inner.prefix))
            .arg(topic.as_str())
            .query_async(conn)
            .await?;
        super::lock(&self.inner.registered).insert(topic.clone());
        Ok(())
    }
}

#[async_trait]
impl Inspection for RedisBackend {
    async fn topics(&self) -> Result<Vec<TopicName>> {
        let mut conn = self.conn()?;
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::topics(&self.inner.prefix))
            .query_async(&mut conn)
            .await?;
        let mut topics: Vec<TopicName> = names
            .into_iter()
            .filter_map(|n| TopicName::new(n).ok())
            .collect();
        topics.sort();
        Ok(topics)
    }

    async fn topic_info(&self, topic: &TopicName) -> Result<TopicInfo> {
        let mut conn = self.conn()?;
        let tk = self.topic_keys(topic);
        let main = tk.log(crate::backend::StreamKind::Main);
        let (length, retry_scheduled, dead_letters): (u64, u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(&main.stream)
            .cmd("ZCARD")
            .arg(main.retry())
            .cmd("XLEN")
            .arg(tk.dead_letters())
            .query_async(&mut conn)
            .await?;
        let mut groups = Vec::new();
        let mut listed = self.groups_of(&mut conn, &main.stream).await?;
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, info) in listed {
            let Ok(group) = GroupName::new(name.as_str()) else {
                continue; // a group created outside rivulet with a name it cannot hold
            };
            let topic_view = self.log_view(&mut conn, &main.stream, &name, &info).await?;
            let lane = main.lane(&name);
            let lane_info = self
                .groups_of(&mut conn, &lane)
                .await?
                .into_iter()
                .find(|(n, _)| *n == name);
            let lane_view = match lane_info {
                Some((_, li)) => self.log_view(&mut conn, &lane, &name, &li).await?,
                None => LogView {
                    lag: Some(0),
                    ..LogView::default()
                },
            };
            let mut consumers = topic_view.consumers.clone();
            for (c, (pending, idle)) in &lane_view.consumers {
                let e = consumers.entry(c.clone()).or_insert((0, *idle));
                e.0 += pending;
                e.1 = e.1.min(*idle);
            }
            groups.push(GroupInfo {
                group,
                pending: topic_view.pending + lane_view.pending,
                lag: topic_view.lag.zip(lane_view.lag).map(|(a, b)| a + b),
                oldest_pending_idle_ms: topic_view
                    .oldest_idle_ms
                    .into_iter()
                    .chain(lane_view.oldest_idle_ms)
                    .max(),
                last_delivered: topic_view.last_delivered,
                consumers: consumers
                    .into_iter()
                    .filter_map(|(c, (pending, idle_ms))| {
                        Some(ConsumerInfo {
                            consumer: ConsumerName::new(c).ok()?,
                            pending,
                            idle_ms,
                        })
                    })
                    .collect(),
            });
        }
        Ok(TopicInfo {
            topic: topic.clone(),
            length,
            retry_scheduled,
            dead_letters,
            groups,
        })
    }

    async fn pending_entries(
        &self,
        key: &StreamKey,
        group: &GroupName,
        lane: Lane,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<Vec<PendingEntry>> {
        let keys = self.log_keys(key);
        let stream = match lane {
            Lane::Main => keys.stream.clone(),
            Lane::Retry => keys.lane(group.as_str()),
        };
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&stream)
            .arg(group.as_str())
            .arg(start)
            .arg("+")
            .arg(limit.max(1));
        let mut conn = self.conn()?;
        let Some(v) = optional(&mut conn, &cmd).await? else {
            return Ok(Vec::new());
        };
        Ok(reply::array(&v)
            .unwrap_or(&[])
            .iter()
            .filter_map(|e| {
                let e = reply::array(e)?;
                Some(PendingEntry {
                    id: EntryId(reply::string(e.first()?)?),
                    log: match lane {
                        Lane::Main => PendingLog::Topic,
                        Lane::Retry => PendingLog::RetryLane,
                    },
                    consumer: ConsumerName::new(reply::string(e.get(1)?)?).ok()?,
                    idle_ms: reply::uint(e.get(2)?)?,
                    deliveries: reply::uint(e.get(3)?)?,
                })
            })
            .collect())
    }

    async fn delete_consumer(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool> {
        let keys = self.log_keys(key);
        let mut conn = self.conn()?;
        let deleted: i64 = SCRIPTS
            .delete_consumer
            .key(&keys.stream)
            .key(keys.lane(group.as_str()))
            .arg(group.as_str())
            .arg(consumer.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    async fn sample_topics(&self, topics: &[TopicName]) -> Result<Vec<TopicSample>> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn()?;
        if self.is_cluster() {
            // A cluster pipeline stays in one slot: one per topic, all in flight at once.
            let calls = topics.iter().map(|t| {
                let mut conn = conn.clone();
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                push_sample(&mut pipe, &self.topic_keys(t));
                async move {
                    let values: Vec<Value> = pipe.query_async(&mut conn).await?;
                    decode_sample(t, &values)
                }
            });
            return futures::future::try_join_all(calls).await;
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for t in topics {
            push_sample(&mut pipe, &self.topic_keys(t));
        }
        let mut conn = conn;
        let values: Vec<Value> = pipe.query_async(&mut conn).await?;
        if values.len() != topics.len() * SAMPLE_COMMANDS {
            return Err(Error::Protocol(format!(
                "{} replies to {} topic sample commands",
                values.len(),
                topics.len() * SAMPLE_COMMANDS
            )));
        }
        topics
            .iter()
            .zip(values.chunks(SAMPLE_COMMANDS))
            .map(|(t, v)| decode_sample(t, v))
            .collect()
    }
}
