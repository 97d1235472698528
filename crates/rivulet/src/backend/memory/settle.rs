//! Settling entries (ack, retry later, dead-letter) and moving due retries into lanes.

use std::time::Duration;

use async_trait::async_trait;

use super::MemoryBackend;
use super::state::{Scheduled, Stored, Topic, seq_to_id};
use crate::backend::{EntryRef, RetryLater, RetrySweep, Settling, StreamKey};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::Result;
use crate::message::{EntryId, now_ms};
use crate::name::GroupName;

/// Whether the settlement of `entry` should go ahead: it is pending, or its group is
/// gone (a retry or dead letter of a vanished group is written all the same, never
/// lost). Settles it when pending.
fn settle_or_orphan(t: &mut Topic, key: &StreamKey, group: &GroupName, entry: &EntryRef) -> bool {
    let stream = t.stream(key.kind);
    if !stream.groups.contains_key(group) {
        return true;
    }
    // Already settled: a settlement applied twice writes nothing.
    stream.settle(group, entry)
}

fn append_dead(t: &mut Topic, dead: &DeadLetter) {
    let seq = t.dead_letters.log.next_seq();
    let mut dead = dead.clone();
    dead.id = seq_to_id(seq);
    t.dead_letters
        .log
        .entries
        .insert(seq, Stored::Dead(Box::new(dead)));
    t.notify.notify_waiters();
}

#[async_trait]
impl Settling for MemoryBackend {
    async fn ack(&self, key: &StreamKey, group: &GroupName, entries: &[EntryRef]) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            let stream = t.stream(key.kind);
            for e in entries {
                stream.settle(group, e);
            }
        })
    }

    async fn retry_later(
        &self,
        key: &StreamKey,
        group: &GroupName,
        retry: &RetryLater,
    ) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            if !settle_or_orphan(t, key, group, &retry.entry) {
                return;
            }
            if retry.due_ms <= now_ms() && t.stream(key.kind).groups.contains_key(group) {
                // Already due: straight into the group's lane.
                t.stream(key.kind)
                    .lane(group)
                    .append(Stored::Message(retry.next.clone()));
                t.notify.notify_waiters();
                return;
            }
            t.retry_counter += 1;
            t.retries.insert(
                (retry.due_ms, t.retry_counter),
                Scheduled {
                    kind: key.kind,
                    group: group.clone(),
                    envelope: retry.next.clone(),
                },
            );
        })
    }

    async fn dead_letter(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        _generation: u64,
        dead: &DeadLetter,
    ) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            if settle_or_orphan(t, key, group, entry) {
                append_dead(t, dead);
            }
        })
    }

    async fn move_due_retries(
        &self,
        key: &StreamKey,
        now_ms: u64,
        limit: usize,
        grace: Duration,
    ) -> Result<RetrySweep> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.with_topic(&key.topic, |t| {
            let mut sweep = RetrySweep::default();
            let due: Vec<((u64, u64), bool)> = t
                .retries
                .iter()
                .filter(|(_, s)| s.kind == key.kind)
                .take_while(|((due, _), _)| *due <= now_ms)
                .map(|(k, s)| (*k, t.stream_ref(s.kind).groups.contains_key(&s.group)))
                .collect();
            for ((due_ms, n), live) in due {
                if sweep.moved + sweep.dead_lettered >= limit {
                    break;
                }
                if !live && due_ms.saturating_add(grace_ms) > now_ms {
                    sweep.waiting += 1;
                    continue;
                }
                let Some(s) = t.retries.remove(&(due_ms, n)) else {
                    continue;
                };
                if live {
                    t.stream(s.kind)
                        .lane(&s.group)
                        .append(Stored::Message(s.envelope));
                    sweep.moved += 1;
                } else {
                    let env = s.envelope;
                    let dead = DeadLetter {
                        id: EntryId(String::new()),
                        topic: key.topic.clone(),
                        error: format!(
                            "group {} no longer exists; the retry waited {} ms for it",
                            s.group, grace_ms
                        ),
                        group: s.group,
                        message_id: env.message_id,
                        original_entry_id: EntryId(String::new()),
                        payload: env.payload,
                        headers: env.headers,
                        attempts: env.attempt.saturating_sub(1),
                        reason: DeadLetterReason::GroupGone,
                        published_at_ms: env.published_at_ms,
                        dead_at_ms: now_ms,
                    };
                    append_dead(t, &dead);
                    sweep.dead_lettered += 1;
                }
            }
            if sweep.moved > 0 {
                t.notify.notify_waiters();
            }
            sweep.next_due_ms = t
                .retries
                .iter()
                .filter(|(_, s)| s.kind == key.kind)
                .find(|((due, _), s)| {
                    *due > now_ms || t.stream_ref(s.kind).groups.contains_key(&s.group)
                })
                .map(|((due, _), _)| *due);
            sweep
        })
    }
}
