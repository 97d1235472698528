//! A topic's dead-letter queue as the application sees it: list, find, replay, purge
//! (B-RET-4).

use std::time::Duration;

use crate::backend::AnyBackend;
use crate::dead_letter::{DeadLetter, DeadLetterFilter};
use crate::error::{Error, Result};
use crate::message::EntryId;
use crate::name::TopicName;

/// Operations on one topic's dead-letter queue: list, count, replay, purge.
///
/// Obtained from [`Bus::dead_letters`](crate::Bus::dead_letters). To consume the queue
/// like a topic, use [`Bus::subscribe_dead_letters`](crate::Bus::subscribe_dead_letters).
#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub(crate) backend: AnyBackend,
    pub(crate) topic: TopicName,
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
        self.backend.0.dead_letter_by_id(&self.topic, id).await
    }

    /// Replays one dead letter: it is removed from the queue and delivered again to the
    /// group that gave up on it, as attempt 1. Returns `false` if it no longer exists,
    /// and [`Error::GroupNotFound`] (leaving the dead letter where it is) when its group
    /// no longer exists: nobody would read the replayed message.
    pub async fn replay(&self, id: &EntryId) -> Result<bool> {
        match self.get(id).await? {
            Some(d) => self.backend.0.replay_dead_letter(&self.topic, &d).await,
            None => Ok(false),
        }
    }

    /// Replays every dead letter matching `filter`, at most `per_second` per second
    /// (`None` = as fast as possible). Returns how many were replayed. Dead letters of a
    /// group that no longer exists are left in the queue and skipped (logged once per
    /// group); the count does not include them.
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
        let mut gone = std::collections::HashSet::new();
        let mut after: Option<EntryId> = None;
        loop {
            let page = self.list(after.as_ref(), PAGE).await?;
            for d in page.iter().filter(|d| filter.matches(d)) {
                if gone.contains(&d.group) {
                    continue;
                }
                match self.backend.0.replay_dead_letter(&self.topic, d).await {
                    Ok(true) => {
                        replayed += 1;
                        if let Some(gap) = gap {
                            tokio::time::sleep(gap).await;
                        }
                    }
                    Ok(false) => {}
                    Err(Error::GroupNotFound { .. }) => {
                        tracing::warn!(topic = %self.topic, group = %d.group, "not replaying dead letters of a group that no longer exists; they stay in the queue");
                        gone.insert(d.group.clone());
                    }
                    Err(e) => return Err(e),
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
