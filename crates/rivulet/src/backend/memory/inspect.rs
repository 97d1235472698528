//! Looking at what exists: topics, groups, consumers and pending entries.
//!
//! The memory backend keeps no consumer registry (Redis does, per group): a consumer
//! here is one that holds pending entries, and its idle time is that of its most
//! recently delivered entry. Deleting a consumer without pending entries is a no-op.

use std::collections::BTreeMap;
use std::ops::Bound;

use async_trait::async_trait;

use super::MemoryBackend;
use super::state::{Log, Seq, Stream, parse_id, seq_to_id};
use crate::admin::{ConsumerInfo, GroupInfo, PendingEntry, PendingLog, TopicInfo};
use crate::backend::{Inspection, Lane, StreamKey, TopicSample};
use crate::deadline::millis;
use crate::error::Result;
use crate::message::EntryId;
use crate::name::{ConsumerName, GroupName, TopicName};

fn after(log: &Log, cursor: Seq) -> u64 {
    log.entries
        .range((Bound::Excluded(cursor), Bound::Unbounded))
        .count() as u64
}

fn group_info(stream: &Stream, name: &GroupName) -> Option<GroupInfo> {
    let g = stream.groups.get(name)?;
    let lane_lag = stream
        .lanes
        .get(name)
        .map_or(0, |l| after(l, g.lane_cursor));
    let mut consumers: BTreeMap<ConsumerName, (u64, u64)> = BTreeMap::new();
    let mut oldest: Option<((bool, Seq), u64)> = None;
    for (entry, p) in &g.pending {
        let idle = millis(p.since.elapsed());
        let c = consumers.entry(p.consumer.clone()).or_insert((0, u64::MAX));
        c.0 += 1;
        c.1 = c.1.min(idle);
        let order = (
            entry.lane == Lane::Retry,
            parse_id(&entry.id).unwrap_or((0, 0)),
        );
        if oldest.as_ref().is_none_or(|(o, _)| order < *o) {
            oldest = Some((order, idle));
        }
    }
    Some(GroupInfo {
        group: name.clone(),
        pending: g.pending.len() as u64,
        lag: Some(after(&stream.log, g.cursor) + lane_lag),
        oldest_pending_idle_ms: oldest.map(|(_, idle)| idle),
        last_delivered: (g.cursor != (0, 0)).then(|| seq_to_id(g.cursor)),
        consumers: consumers
            .into_iter()
            .map(|(consumer, (pending, idle_ms))| ConsumerInfo {
                consumer,
                pending,
                idle_ms,
            })
            .collect(),
    })
}

#[async_trait]
impl Inspection for MemoryBackend {
    async fn topics(&self) -> Result<Vec<TopicName>> {
        let mut topics: Vec<TopicName> = self
            .lock()
            .topics
            .iter()
            .filter(|(_, t)| t.is_used())
            .map(|(name, _)| name.clone())
            .collect();
        topics.sort();
        Ok(topics)
    }

    async fn topic_info(&self, topic: &TopicName) -> Result<TopicInfo> {
        let state = self.lock();
        let Some(t) = state.topics.get(topic) else {
            return Ok(TopicInfo::empty(topic.clone()));
        };
        let mut names: Vec<&GroupName> = t.main.groups.keys().collect();
        names.sort();
        Ok(TopicInfo {
            topic: topic.clone(),
            length: t.main.log.entries.len() as u64,
            retry_scheduled: t.retries.len() as u64,
            dead_letters: t.dead_letters.log.entries.len() as u64,
            groups: names
                .into_iter()
                .filter_map(|g| group_info(&t.main, g))
                .collect(),
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
        let state = self.lock();
        let Some(g) = state
            .topics
            .get(&key.topic)
            .and_then(|t| t.stream_ref(key.kind).groups.get(group))
        else {
            return Ok(Vec::new());
        };
        let floor = after.and_then(parse_id);
        let mut page: Vec<(Seq, PendingEntry)> = g
            .pending
            .iter()
            .filter(|(e, _)| e.lane == lane)
            .filter_map(|(e, p)| Some((parse_id(&e.id)?, e, p)))
            .filter(|(seq, _, _)| floor.is_none_or(|f| *seq > f))
            .map(|(seq, e, p)| {
                let entry = PendingEntry {
                    id: e.id.clone(),
                    log: match lane {
                        Lane::Main => PendingLog::Topic,
                        Lane::Retry => PendingLog::RetryLane,
                    },
                    consumer: p.consumer.clone(),
                    idle_ms: millis(p.since.elapsed()),
                    deliveries: p.deliveries,
                };
                (seq, entry)
            })
            .collect();
        page.sort_by_key(|(seq, _)| *seq);
        page.truncate(limit);
        Ok(page.into_iter().map(|(_, e)| e).collect())
    }

    async fn delete_consumer(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool> {
        let state = self.lock();
        let holds = state
            .topics
            .get(&key.topic)
            .and_then(|t| t.stream_ref(key.kind).groups.get(group))
            .is_some_and(|g| g.pending.values().any(|p| p.consumer == *consumer));
        Ok(!holds)
    }

    async fn sample_topics(&self, topics: &[TopicName]) -> Result<Vec<TopicSample>> {
        let state = self.lock();
        Ok(topics
            .iter()
            .map(|name| match state.topics.get(name) {
                None => TopicSample {
                    topic: Some(name.clone()),
                    ..TopicSample::default()
                },
                Some(t) => t.sample(name),
            })
            .collect())
    }
}
