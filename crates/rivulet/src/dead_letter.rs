//! Dead letters: messages a group gave up on, with the reason (B-RET-4).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;

use crate::backend::AnyBackend;
use crate::error::{Error, Result};
use crate::message::{EntryId, Headers, MessageId};
use crate::name::{GroupName, TopicName};

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The handler returned a permanent error.
    Permanent,
    /// The handler failed (error or panic) on every one of `max_attempts` attempts.
    Attempts,
    /// The payload could not be decoded, or the entry was malformed.
    Decode,
    /// The entry was delivered more than `max_attempts` times without being settled:
    /// its consumers kept crashing or stalling on it (B-RET-5).
    Deliveries,
    /// The payload was over the size limit (written by something other than rivulet).
    TooLarge,
}

impl DeadLetterReason {
    /// The reason as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Permanent => "permanent",
            DeadLetterReason::Attempts => "attempts",
            DeadLetterReason::Decode => "decode",
            DeadLetterReason::Deliveries => "deliveries",
            DeadLetterReason::TooLarge => "too_large",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadLetterReason {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "permanent" => DeadLetterReason::Permanent,
            "attempts" => DeadLetterReason::Attempts,
            "decode" => DeadLetterReason::Decode,
            "deliveries" => DeadLetterReason::Deliveries,
            "too_large" => DeadLetterReason::TooLarge,
            other => {
                return Err(Error::Protocol(format!(
                    "unknown dead-letter reason {other:?}"
                )));
            }
        })
    }
}

/// A dead-lettered message: the original payload and headers, and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The dead letter's own id in the dead-letter queue.
    pub id: EntryId,
    /// The topic the message was published to.
    pub topic: TopicName,
    /// The group that gave up on it.
    pub group: GroupName,
    /// The message id.
    pub message_id: MessageId,
    /// The entry id of the last delivery.
    pub original_entry_id: EntryId,
    /// The original payload, unchanged.
    pub payload: Bytes,
    /// The original headers, unchanged.
    pub headers: Headers,
    /// How many attempts were made.
    pub attempts: u32,
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// The last error message.
    pub error: String,
    /// When it was first published (ms since the Unix epoch).
    pub published_at_ms: u64,
    /// When it was dead-lettered (ms since the Unix epoch).
    pub dead_at_ms: u64,
}

/// Operations on one topic's dead-letter queue: list, count, replay, purge.
///
/// Obtained from [`Bus::dead_letters`](crate::Bus::dead_letters). To consume the queue
/// like a topic, use [`Bus::subscribe_dead_letters`](crate::Bus::subscribe_dead_letters).
#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub(crate) backend: AnyBackend,
    pub(crate) topic: TopicName,
}

/// Which dead letters a replay or purge applies to.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeadLetterFilter {
    /// Only this group's.
    pub group: Option<GroupName>,
    /// Only those with this reason.
    pub reason: Option<DeadLetterReason>,
}

impl DeadLetterFilter {
    fn matches(&self, d: &DeadLetter) -> bool {
        self.group.as_ref().is_none_or(|g| *g == d.group)
            && self.reason.is_none_or(|r| r == d.reason)
    }

    /// Only dead letters of `group`.
    pub fn group(mut self, group: GroupName) -> Self {
        self.group = Some(group);
        self
    }

    /// Only dead letters with `reason`.
    pub fn reason(mut self, reason: DeadLetterReason) -> Self {
        self.reason = Some(reason);
        self
    }
}

const PAGE: usize = 500;

impl DeadLetters {
    /// The topic whose dead letters these are.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// How many dead letters the queue holds.
    pub async fn len(&self) -> Result<u64> {
        self.backend.0.dead_letter_count(&self.topic).await
    }

    /// Whether the queue is empty.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Lists up to `limit` dead letters after `after` (exclusive), oldest first.
    pub async fn list(&self, after: Option<&EntryId>, limit: usize) -> Result<Vec<DeadLetter>> {
        self.backend.0.dead_letters(&self.topic, after, limit).await
    }

    /// Finds one dead letter by its id.
    pub async fn get(&self, id: &EntryId) -> Result<Option<DeadLetter>> {
        let mut after: Option<EntryId> = None;
        loop {
            let page = self.list(after.as_ref(), PAGE).await?;
            if let Some(found) = page.iter().find(|d| d.id == *id) {
                return Ok(Some(found.clone()));
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                _ => return Ok(None),
            }
        }
    }

    /// Replays one dead letter: it is removed from the queue and delivered again to the
    /// group that gave up on it, as attempt 1. Returns `false` if it no longer exists.
    pub async fn replay(&self, id: &EntryId) -> Result<bool> {
        match self.get(id).await? {
            Some(d) => self.backend.0.replay_dead_letter(&self.topic, &d).await,
            None => Ok(false),
        }
    }

    /// Replays every dead letter matching `filter`, at most `per_second` per second
    /// (`None` = as fast as possible). Returns how many were replayed.
    pub async fn replay_where(
        &self,
        filter: &DeadLetterFilter,
        per_second: Option<u32>,
    ) -> Result<u64> {
        if per_second == Some(0) {
            return Err(Error::config("replay rate must be at least 1 per second"));
        }
        let gap = per_second.map(|r| Duration::from_secs_f64(1.0 / f64::from(r)));
        let mut replayed = 0;
        let mut after: Option<EntryId> = None;
        loop {
            let page = self.list(after.as_ref(), PAGE).await?;
            for d in page.iter().filter(|d| filter.matches(d)) {
                if self.backend.0.replay_dead_letter(&self.topic, d).await? {
                    replayed += 1;
                    if let Some(gap) = gap {
                        tokio::time::sleep(gap).await;
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                _ => return Ok(replayed),
            }
        }
    }

    /// Replays every dead letter.
    pub async fn replay_all(&self, per_second: Option<u32>) -> Result<u64> {
        self.replay_where(&DeadLetterFilter::default(), per_second)
            .await
    }

    /// Deletes dead letters by id. Returns how many existed.
    pub async fn remove(&self, ids: &[EntryId]) -> Result<u64> {
        self.backend.0.remove_dead_letters(&self.topic, ids).await
    }

    /// Deletes every dead letter matching `filter`. Returns how many.
    pub async fn purge_where(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let mut removed = 0;
        let mut after: Option<EntryId> = None;
        loop {
            let page = self.list(after.as_ref(), PAGE).await?;
            let ids: Vec<EntryId> = page
                .iter()
                .filter(|d| filter.matches(d))
                .map(|d| d.id.clone())
                .collect();
            if !ids.is_empty() {
                removed += self.remove(&ids).await?;
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                _ => return Ok(removed),
            }
        }
    }

    /// Deletes every dead letter.
    pub async fn purge(&self) -> Result<u64> {
        self.purge_where(&DeadLetterFilter::default()).await
    }
}
