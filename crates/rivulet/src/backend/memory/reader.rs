//! Readers: take undelivered entries of a group (retry lane first), waiting on the
//! topic's notifier when there are none.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::MemoryBackend;
use super::state::{Pending, Stored, seq_to_id};
use crate::backend::{
    EntryRef, Lane, ReadEntry, Reader, Readers, Record, Settlements, Settling, StreamKey,
};
use crate::error::{Error, Result};
use crate::name::{ConsumerName, GroupName};

#[derive(Debug)]
struct MemoryReader {
    backend: MemoryBackend,
    key: StreamKey,
    group: GroupName,
    consumer: ConsumerName,
}

pub(super) fn to_record(item: Stored) -> Record {
    match item {
        Stored::Message(e) => Record::Message(e),
        Stored::Dead(d) => Record::DeadLetter(d),
    }
}

impl MemoryReader {
    /// Takes up to `count` undelivered entries from the lane and up to `count` from the
    /// main log, as one `XREADGROUP` over both streams does on Redis.
    fn take(&self, count: usize) -> Result<(Vec<ReadEntry>, Arc<Notify>)> {
        self.backend.with_topic(&self.key.topic, |t| {
            let notify = t.notify.clone();
            let stream = t.stream(self.key.kind);
            let Some(group) = stream.groups.get_mut(&self.group) else {
                return Err(Error::GroupNotFound {
                    topic: self.key.topic.to_string(),
                    group: self.group.to_string(),
                });
            };
            let mut out = Vec::new();
            if let Some(lane) = stream.lanes.get(&self.group) {
                for (seq, item) in lane
                    .entries
                    .range((
                        std::ops::Bound::Excluded(group.lane_cursor),
                        std::ops::Bound::Unbounded,
                    ))
                    .take(count)
                {
                    group.lane_cursor = *seq;
                    out.push((Lane::Retry, *seq, item.clone()));
                }
            }
            for (seq, item) in stream
                .log
                .entries
                .range((
                    std::ops::Bound::Excluded(group.cursor),
                    std::ops::Bound::Unbounded,
                ))
                .take(count)
            {
                group.cursor = *seq;
                out.push((Lane::Main, *seq, item.clone()));
            }
            let now = Instant::now();
            let entries = out
                .into_iter()
                .map(|(lane, seq, item)| {
                    let entry = EntryRef {
                        lane,
                        id: seq_to_id(seq),
                    };
                    group.pending.insert(
                        entry.clone(),
                        Pending {
                            consumer: self.consumer.clone(),
                            deliveries: 1,
                            since: now,
                        },
                    );
                    ReadEntry {
                        entry,
                        record: to_record(item),
                        delivery_count: 1,
                        generation: 0,
                    }
                })
                .collect();
            Ok((entries, notify))
        })?
    }
}

#[async_trait]
impl Reader for MemoryReader {
    async fn settle_and_read(
        &mut self,
        settle: &Settlements,
        count: usize,
        block: Duration,
    ) -> Result<Vec<ReadEntry>> {
        if !settle.acks.is_empty() {
            self.backend
                .ack(&self.key, &self.group, &settle.acks)
                .await?;
        }
        for r in &settle.retries {
            self.backend.retry_later(&self.key, &self.group, r).await?;
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        // Reading never waits when entries are ready: give the scheduler a chance so a
        // busy consumer cannot starve other tasks on its worker thread.
        tokio::task::consume_budget().await;
        let deadline = crate::deadline::from_now(block);
        loop {
            let notify = self
                .backend
                .with_topic(&self.key.topic, |t| t.notify.clone())?;
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (entries, _) = self.take(count)?;
            if !entries.is_empty() {
                return Ok(entries);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}

#[async_trait]
impl Readers for MemoryBackend {
    async fn reader(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<Box<dyn Reader>> {
        Ok(Box::new(MemoryReader {
            backend: self.clone(),
            key: key.clone(),
            group: group.clone(),
            consumer: consumer.clone(),
        }))
    }
}
