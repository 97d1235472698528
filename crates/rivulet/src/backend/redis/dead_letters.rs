//! The dead-letter queue: list, count, remove, replay (B-RET-4). The queue is never
//! trimmed by retention: dead letters leave only by replay or purge.

use async_trait::async_trait;
use redis::Value;

use super::RedisBackend;
use super::conn::{check_value, evalsha, pipeline_with_scripts};
use super::reply;
use super::scripts::SCRIPTS;
use super::wire::{decode_dead_letter_lossy, envelope_of, message_fields};
use crate::backend::{DeadLetterStore, Replayed};
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::message::EntryId;
use crate::name::TopicName;

#[async_trait]
impl DeadLetterStore for RedisBackend {
    async fn dead_letters(
        &self,
        topic: &TopicName,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = match after {
            Some(id) => {
                if reply::parse_stream_id(id.as_str()).is_none() {
                    return Err(Error::config(format!("{id} is not an entry id")));
                }
                format!("({id}")
            }
            None => "-".to_owned(),
        };
        let mut conn = self.conn()?;
        let dead_letters = self.topic_keys(topic).dead_letters();
        let v: Value = redis::cmd("XRANGE")
            .arg(&dead_letters)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        let (entries, _) = reply::entries(&v);
        Ok(entries
            .iter()
            .map(|e| decode_dead_letter_lossy(e, topic))
            .collect())
    }

    async fn dead_letter_count(&self, topic: &TopicName) -> Result<u64> {
        let mut conn = self.conn()?;
        let n: u64 = redis::cmd("XLEN")
            .arg(self.topic_keys(topic).dead_letters())
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }

    async fn remove_dead_letters(&self, topic: &TopicName, ids: &[EntryId]) -> Result<u64> {
        let ids: Vec<&str> = ids
            .iter()
            .map(EntryId::as_str)
            .filter(|id| reply::parse_stream_id(id).is_some())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn()?;
        let mut removed = 0;
        for chunk in ids.chunks(500) {
            let n: u64 = redis::cmd("XDEL")
                .arg(self.topic_keys(topic).dead_letters())
                .arg(chunk)
                .query_async(&mut conn)
                .await?;
            removed += n;
        }
        Ok(removed)
    }

    async fn dead_letter_by_id(
        &self,
        topic: &TopicName,
        id: &EntryId,
    ) -> Result<Option<DeadLetter>> {
        if reply::parse_stream_id(id.as_str()).is_none() {
            return Ok(None);
        }
        let mut conn = self.conn()?;
        let v: Value = redis::cmd("XRANGE")
            .arg(self.topic_keys(topic).dead_letters())
            .arg(id.as_str())
            .arg(id.as_str())
            .query_async(&mut conn)
            .await?;
        let (entries, _) = reply::entries(&v);
        Ok(entries.first().map(|e| decode_dead_letter_lossy(e, topic)))
    }

    async fn replay_dead_letters(
        &self,
        topic: &TopicName,
        dead: &[DeadLetter],
    ) -> Result<Vec<Replayed>> {
        let keys = self.topic_keys(topic);
        let main = keys.log(crate::backend::StreamKind::Main);
        let (dlq, stream) = (keys.dead_letters(), keys.stream());
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut sent = Vec::with_capacity(dead.len());
        for d in dead {
            if reply::parse_stream_id(d.id.as_str()).is_none() {
                sent.push(false);
                continue;
            }
            let lane = main.lane(d.group.as_str());
            let mut cmd = evalsha(&SCRIPTS.replay, &[&dlq, &stream, &lane]);
            cmd.arg(d.id.as_str()).arg(d.group.as_str());
            for f in &message_fields(&envelope_of(d), true) {
                cmd.arg(f.as_ref());
            }
            pipe.add_command(cmd);
            sent.push(true);
        }
        let mut values = if sent.iter().any(|s| *s) {
            let mut conn = self.conn()?;
            pipeline_with_scripts(&mut conn, &pipe, &[&SCRIPTS.replay])
                .await?
                .into_iter()
        } else {
            Vec::new().into_iter()
        };
        let mut out = Vec::with_capacity(dead.len());
        for was_sent in sent {
            if !was_sent {
                out.push(Replayed::Gone);
                continue;
            }
            let v = values
                .next()
                .ok_or_else(|| Error::Protocol("a replay pipeline reply is short".into()))?;
            out.push(match reply::int(&check_value(v)?) {
                Some(1) => Replayed::Done,
                Some(-1) => Replayed::GroupMissing,
                _ => Replayed::Gone,
            });
        }
        Ok(out)
    }

    async fn replay_dead_letter(&self, topic: &TopicName, dead: &DeadLetter) -> Result<bool> {
        if reply::parse_stream_id(dead.id.as_str()).is_none() {
            return Ok(false);
        }
        let mut conn = self.conn()?;
        let keys = self.topic_keys(topic);
        let lane = keys
            .log(crate::backend::StreamKind::Main)
            .lane(dead.group.as_str());
        let fields = message_fields(&envelope_of(dead), true);
        let mut inv = SCRIPTS.replay.prepare_invoke();
        inv.key(keys.dead_letters())
            .key(keys.stream())
            .key(&lane)
            .arg(dead.id.as_str())
            .arg(dead.group.as_str());
        for f in &fields {
            inv.arg(f.as_ref());
        }
        let replayed: i64 = inv.invoke_async(&mut conn).await?;
        match replayed {
            1 => Ok(true),
            -1 => Err(Error::GroupNotFound {
                topic: topic.to_string(),
                group: dead.group.to_string(),
            }),
            _ => Ok(false),
        }
    }
}
