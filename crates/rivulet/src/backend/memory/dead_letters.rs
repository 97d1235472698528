//! The dead-letter queue: list, find, count, remove, replay (B-RET-4).

use async_trait::async_trait;

use super::MemoryBackend;
use super::state::{Stored, parse_id};
use crate::backend::DeadLetterStore;
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::message::{EntryId, Envelope};
use crate::name::TopicName;

#[async_trait]
impl DeadLetterStore for MemoryBackend {
    async fn dead_letters(
        &self,
        topic: &TopicName,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let start = match after {
            Some(id) => std::ops::Bound::Excluded(
                parse_id(id).ok_or_else(|| Error::config(format!("{id} is not an entry id")))?,
            ),
            None => std::ops::Bound::Unbounded,
        };
        self.with_topic(topic, |t| {
            t.dead_letters
                .log
                .entries
                .range((start, std::ops::Bound::Unbounded))
                .filter_map(|(_, s)| match s {
                    Stored::Dead(d) => Some((**d).clone()),
                    Stored::Message(_) => None,
                })
                .take(limit)
                .collect()
        })
    }

    async fn dead_letter_by_id(
        &self,
        topic: &TopicName,
        id: &EntryId,
    ) -> Result<Option<DeadLetter>> {
        let Some(seq) = parse_id(id) else {
            return Ok(None);
        };
        self.with_topic(topic, |t| match t.dead_letters.log.entries.get(&seq) {
            Some(Stored::Dead(d)) => Some((**d).clone()),
            _ => None,
        })
    }

    async fn dead_letter_count(&self, topic: &TopicName) -> Result<u64> {
        self.with_topic(topic, |t| t.dead_letters.log.entries.len() as u64)
    }

    async fn remove_dead_letters(&self, topic: &TopicName, ids: &[EntryId]) -> Result<u64> {
        self.with_topic(topic, |t| {
            ids.iter()
                .filter_map(parse_id)
                .filter(|seq| t.dead_letters.log.entries.remove(seq).is_some())
                .count() as u64
        })
    }

    async fn replay_dead_letter(&self, topic: &TopicName, dead: &DeadLetter) -> Result<bool> {
        let Some(seq) = parse_id(&dead.id) else {
            return Ok(false);
        };
        self.with_topic(topic, |t| {
            if !t.dead_letters.log.entries.contains_key(&seq) {
                return Ok(false);
            }
            if !t.main.groups.contains_key(&dead.group) {
                return Err(Error::GroupNotFound {
                    topic: topic.to_string(),
                    group: dead.group.to_string(),
                });
            }
            t.dead_letters.log.entries.remove(&seq);
            let envelope = Envelope {
                message_id: dead.message_id.clone(),
                payload: dead.payload.clone(),
                headers: dead.headers.clone(),
                attempt: 1,
                published_at_ms: dead.published_at_ms,
            };
            t.main.lane(&dead.group).append(Stored::Message(envelope));
            t.notify.notify_waiters();
            Ok(true)
        })?
    }
}
