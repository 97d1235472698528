//! The reads `rivulet doctor` makes on the memory backend ([`Diagnostics`]): the same
//! structural observations as on Redis, read under the backend's lock. There are no
//! server settings to check.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::MemoryBackend;
use super::state::parse_id;
use crate::backend::diagnostics::{
    ConsumerHealth, DeadLetterHealth, GroupHealth, LogHealth, Probe, QueueHealth, ServerSettings,
};
use crate::backend::{Diagnostics, EntryRef, Lane, StreamKey, StreamKind};
use crate::error::Result;
use crate::message::now_ms;
use crate::name::{ConsumerName, GroupName, QueueName, TopicName};

fn millis(d: std::time::Duration) -> u64 {
    crate::deadline::millis(d)
}

#[async_trait]
impl Diagnostics for MemoryBackend {
    async fn clock_ms(&self) -> Result<u64> {
        Ok(now_ms())
    }

    async fn server_settings(&self) -> Result<ServerSettings> {
        Ok(ServerSettings::NotApplicable)
    }

    async fn log_health(&self, key: &StreamKey, probe: &Probe) -> Result<LogHealth> {
        let state = self.lock();
        let Some(topic) = state.topics.get(&key.topic) else {
            return Ok(LogHealth::default());
        };
        let stream = topic.stream_ref(key.kind);
        let now = Instant::now();
        let mut groups = Vec::with_capacity(stream.groups.len());
        for (name, g) in &stream.groups {
            let mut consumers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for p in g.pending.values() {
                let idle = millis(now.saturating_duration_since(p.since));
                let c = consumers
                    .entry(p.consumer.as_str().to_owned())
                    .or_insert((u64::MAX, 0));
                c.0 = c.0.min(idle);
                c.1 += 1;
            }
            let lag = stream
                .log
                .entries
                .range((
                    std::ops::Bound::Excluded(g.cursor),
                    std::ops::Bound::Unbounded,
                ))
                .count() as u64;
            groups.push(GroupHealth {
                name: name.as_str().to_owned(),
                registered: true,
                exists: true,
                broadcast: stream.broadcast.contains(name),
                heartbeat: stream
                    .heartbeats
                    .get(name)
                    .is_some_and(|until| *until > now),
                lag: Some(lag),
                pending: g.pending.len() as u64,
                consumers: consumers
                    .into_iter()
                    .map(|(name, (idle_ms, pending))| ConsumerHealth {
                        name,
                        idle_ms,
                        pending,
                    })
                    .collect(),
            });
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        let due = topic
            .retries
            .iter()
            .filter(|(_, s)| s.kind == key.kind)
            .map(|((due, _), _)| *due);
        let (mut overdue, mut earliest) = (0u64, None::<u64>);
        for d in due {
            if d < probe.overdue_before_ms {
                overdue += 1;
            }
            earliest = Some(earliest.map_or(d, |e| e.min(d)));
        }
        Ok(LogHealth {
            length: stream.log.entries.len() as u64,
            groups,
            retries_overdue: overdue,
            earliest_retry_ms: earliest,
        })
    }

    async fn dead_letter_health(
        &self,
        topic: &TopicName,
        probe: &Probe,
    ) -> Result<DeadLetterHealth> {
        let state = self.lock();
        let Some(t) = state.topics.get(topic) else {
            return Ok(DeadLetterHealth::default());
        };
        let log = &t.stream_ref(StreamKind::DeadLetters).log;
        let recent = log
            .entries
            .range((probe.recent_since_ms, 0)..)
            .take(probe.recent_cap.max(1))
            .count() as u64;
        Ok(DeadLetterHealth {
            length: log.entries.len() as u64,
            recent,
        })
    }

    async fn queue_health(&self, queue: &QueueName, probe: &Probe) -> Result<QueueHealth> {
        let state = self.lock();
        let Some(q) = state.queues.get(queue) else {
            return Ok(QueueHealth::default());
        };
        let (expired, earliest, parked) = q.lease_and_parked_health(probe.lease_expired_before_ms);
        Ok(QueueHealth {
            leases_expired: expired,
            earliest_lease_ms: earliest,
            parked_counter: i64::try_from(parked).unwrap_or(i64::MAX),
            parked_jobs: parked,
        })
    }

    async fn stale_pending(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        min_idle: Duration,
        limit: usize,
    ) -> Result<Vec<EntryRef>> {
        let state = self.lock();
        let Some(g) = state
            .topics
            .get(&key.topic)
            .and_then(|t| t.stream_ref(key.kind).groups.get(group))
        else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        let mut stale: Vec<EntryRef> = g
            .pending
            .iter()
            .filter(|(_, p)| p.consumer == *consumer && now.duration_since(p.since) >= min_idle)
            .map(|(e, _)| e.clone())
            .collect();
        stale.sort_by_key(|e| (e.lane == Lane::Main, parse_id(&e.id)));
        stale.truncate(limit);
        Ok(stale)
    }

    async fn recount_parked(&self, queue: &QueueName) -> Result<(i64, u64)> {
        // No separate counter: the parked sets are the count, so there is nothing to set.
        let state = self.lock();
        let parked = state
            .queues
            .get(queue)
            .map_or(0, |q| q.lease_and_parked_health(0).2);
        Ok((i64::try_from(parked).unwrap_or(i64::MAX), parked))
    }
}
