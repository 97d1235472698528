//! Crash recovery and long handlers: reclaim (B-REC-1), keep-alive (B-REC-2) and
//! hand-back at drain (B-REC-3).

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::MemoryBackend;
use super::reader::to_record;
use super::state::{Stored, parse_id};
use crate::backend::{EntryRef, Lane, ReadEntry, Reclaimed, Recovery, StreamKey};
use crate::error::Result;
use crate::name::{ConsumerName, GroupName};

#[async_trait]
impl Recovery for MemoryBackend {
    async fn reclaim(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        min_idle: Duration,
        count: usize,
    ) -> Result<Reclaimed> {
        self.with_topic(&key.topic, |t| {
            let stream = t.stream(key.kind);
            let now = Instant::now();
            let Some(g) = stream.groups.get(group) else {
                return Reclaimed::default();
            };
            let mut idle: Vec<EntryRef> = g
                .pending
                .iter()
                .filter(|(_, p)| now.duration_since(p.since) >= min_idle)
                .map(|(e, _)| e.clone())
                .collect();
            idle.sort_by_key(|e| (e.lane == Lane::Main, parse_id(&e.id)));
            idle.truncate(count);
            let mut out = Reclaimed::default();
            for entry in idle {
                let stored = stream.stored(group, &entry).cloned();
                let Some(g) = stream.groups.get_mut(group) else {
                    break;
                };
                match stored {
                    Some(item) => {
                        if let Some(p) = g.pending.get_mut(&entry) {
                            p.consumer = consumer.clone();
                            p.deliveries += 1;
                            p.since = now;
                            out.entries.push(ReadEntry {
                                entry,
                                record: to_record(item),
                                delivery_count: p.deliveries,
                                generation: 0,
                            });
                        }
                    }
                    None => {
                        g.pending.remove(&entry);
                        out.missing.push(entry);
                    }
                }
            }
            out
        })
    }

    async fn keep_alive(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        entries: &[EntryRef],
    ) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            let now = Instant::now();
            if let Some(g) = t.stream(key.kind).groups.get_mut(group) {
                for e in entries {
                    // Only entries the consumer still owns: one another consumer has
                    // reclaimed is not taken back.
                    if let Some(p) = g.pending.get_mut(e)
                        && p.consumer == *consumer
                    {
                        p.since = now;
                    }
                }
            }
        })
    }

    async fn hand_back(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        entries: &[EntryRef],
    ) -> Result<usize> {
        self.with_topic(&key.topic, |t| {
            let stream = t.stream(key.kind);
            let Some(g) = stream.groups.get(group) else {
                return 0;
            };
            let mine: Vec<EntryRef> = entries
                .iter()
                .filter(|e| g.pending.get(*e).is_some_and(|p| p.consumer == *consumer))
                .cloned()
                .collect();
            let mut handed = 0;
            for entry in mine {
                // Dead letters are never copied into lanes; they stay pending and are
                // reclaimed after min_idle instead.
                if let Some(Stored::Message(env)) = stream.stored(group, &entry).cloned() {
                    stream.settle(group, &entry);
                    stream.lane(group).append(Stored::Message(env));
                    handed += 1;
                }
            }
            if handed > 0 {
                t.notify.notify_waiters();
            }
            handed
        })
    }

    async fn hand_back_orphans(
        &self,
        _key: &StreamKey,
        _group: &GroupName,
        _entries: &[(EntryRef, u64)],
    ) -> Result<usize> {
        // Memory groups cannot vanish behind rivulet's back: there are no orphans.
        Ok(0)
    }

    async fn pending_of(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        limit: usize,
    ) -> Result<Vec<EntryRef>> {
        self.with_topic(&key.topic, |t| {
            let Some(g) = t.stream(key.kind).groups.get(group) else {
                return Vec::new();
            };
            let mut mine: Vec<EntryRef> = g
                .pending
                .iter()
                .filter(|(_, p)| p.consumer == *consumer)
                .map(|(e, _)| e.clone())
                .collect();
            mine.sort_by_key(|e| (e.lane == Lane::Main, parse_id(&e.id)));
            mine.truncate(limit);
            mine
        })
    }
}
