//! A topic's dead-letter queue as the application sees it: list, find, replay, purge
//! (B-RET-4).

use std::time::Duration;

use crate::backend::{AnyBackend, Replayed};
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
/// Dead letters replayed per round trip at most.
const REPLAY_BATCH: usize = 100;

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
    /// (`None` = as fast as possible), in batches of up to 100 per round trip (each
    /// replay atomic on its own). Returns how many were replayed. Dead letters of a
    /// group that no longer exists are left in the queue and skipped (logged once per
    /// group); the count does not include them.
    pub async fn replay_where(
        &self,
        filter: &DeadLetterFilter,
        per_second: Option<u32>,
    ) -> Result<u64> {
        self.replay_observed(filter, per_second, &mut |_| {}).await
    }

    /// [`replay_where`](Self::replay_where), telling `progress` the running count after
    /// each batch.
    pub(crate) async fn replay_observed(
        &self,
        filter: &DeadLetterFilter,
        per_second: Option<u32>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        if per_second == Some(0) {
            return Err(Error::config("replay rate must be at least 1 per second"));
        }
        // A batch is at most a second's worth, so the pace is kept within a second.
        let batch = per_second.map_or(REPLAY_BATCH, |r| (r as usize).clamp(1, REPLAY_BATCH));
        let mut replayed = 0;
        let mut gone = std::collections::HashSet::new();
        let mut after: Option<EntryId> = None;
        loop {
            let page = self.list(after.as_ref(), PAGE).await?;
            let wanted: Vec<DeadLetter> = page
                .iter()
                .filter(|d| filter.matches(d) && !gone.contains(&d.group))
                .cloned()
                .collect();
            for chunk in wanted.chunks(batch) {
                let chunk: Vec<DeadLetter> = chunk
                    .iter()
                    .filter(|d| !gone.contains(&d.group))
                    .cloned()
                    .collect();
                if chunk.is_empty() {
                    continue;
                }
                let started = tokio::time::Instant::now();
                let outcomes = self
                    .backend
                    .0
                    .replay_dead_letters(&self.topic, &chunk)
                    .await?;
                let mut n = 0u32;
                for (d, outcome) in chunk.iter().zip(outcomes) {
                    match outcome {
                        Replayed::Done => n += 1,
                        Replayed::Gone => {}
                        Replayed::GroupMissing => {
                            if gone.insert(d.group.clone()) {
                                tracing::warn!(topic = %self.topic, group = %d.group, "not replaying dead letters of a group that no longer exists; they stay in the queue");
                            }
                        }
                    }
                }
                replayed += u64::from(n);
                progress(replayed);
                if let Some(rate) = per_second {
                    let due = Duration::from_secs_f64(f64::from(n) / f64::from(rate));
                    tokio::time::sleep_until(started + due).await;
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

    /// Deletes every dead letter matching `filter`, a page (one round trip) at a time.
    /// Returns how many.
    pub async fn purge_where(&self, filter: &DeadLetterFilter) -> Result<u64> {
        self.purge_observed(filter, &mut |_| {}).await
    }

    /// [`purge_where`](Self::purge_where), telling `progress` the running count after
    /// each page.
    pub(crate) async fn purge_observed(
        &self,
        filter: &DeadLetterFilter,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
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
                progress(removed);
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
