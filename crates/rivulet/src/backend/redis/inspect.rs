//! Looking at what exists without scanning the keyspace: the topic registry.

use async_trait::async_trait;

use super::RedisBackend;
use super::conn::Conn;
use redis::Value;

use super::keys::{self, TopicKeys};
use super::reply;
use crate::backend::{GroupSample, Inspection, StreamKind, TopicSample};
use crate::error::{Error, Result};
use crate::name::TopicName;

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
