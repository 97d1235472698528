//! The embedded backend: everything in process memory, no setup.
//!
//! It models Redis Streams consumer groups faithfully (a log per topic, a cursor and a
//! pending list per group, a retry lane per group, a scheduled-retry set, a dead-letter
//! log), so the same bus logic runs unchanged on it and on Redis, and it serves as the
//! executable reference of the semantics. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::backend::{
    AnyBackend, Backend, EntryRef, Lane, LiveMessage, PublishOpts, ReadEntry, Reader, Reclaimed,
    Record, RetrySweep, Settlements, StreamKey, StreamKind,
};
use crate::dead_letter::DeadLetter;
use crate::deadline;
use crate::error::{Error, Result};
use crate::live::glob_match;
use crate::message::{EntryId, Envelope, Published, now_ms};
use crate::name::{ConsumerName, GroupName, TopicName};
use crate::topic::{Backpressure, StartFrom, TopicOptions, TrimReport};

#[cfg(test)]
mod tests;

/// A position in a log: (milliseconds, sequence), printed as `ms-seq` like Redis.
type Seq = (u64, u64);

fn seq_to_id(seq: Seq) -> EntryId {
    EntryId(format!("{}-{}", seq.0, seq.1))
}

fn parse_id(id: &EntryId) -> Option<Seq> {
    let (ms, seq) = id.0.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[derive(Debug, Clone)]
enum Stored {
    Message(Envelope),
    Dead(Box<DeadLetter>),
}

#[derive(Debug)]
struct Pending {
    consumer: ConsumerName,
    deliveries: u64,
    since: Instant,
}

#[derive(Debug, Default)]
struct Group {
    /// Last main-log entry delivered to the group.
    cursor: Seq,
    /// Last lane entry delivered to the group.
    lane_cursor: Seq,
    pending: HashMap<EntryRef, Pending>,
}

/// An append-only log with Redis-style ids.
#[derive(Debug, Default)]
struct Log {
    entries: BTreeMap<Seq, Stored>,
    last: Seq,
}

impl Log {
    fn next_seq(&mut self) -> Seq {
        let ms = now_ms();
        self.last = if ms > self.last.0 {
            (ms, 0)
        } else {
            (self.last.0, self.last.1 + 1)
        };
        self.last
    }

    fn append(&mut self, item: Stored) -> Seq {
        let seq = self.next_seq();
        self.entries.insert(seq, item);
        seq
    }
}

#[derive(Debug, Default)]
struct Stream {
    log: Log,
    groups: HashMap<GroupName, Group>,
    lanes: HashMap<GroupName, Log>,
}

impl Stream {
    fn lane(&mut self, group: &GroupName) -> &mut Log {
        self.lanes.entry(group.clone()).or_default()
    }

    /// Settles an entry: removes it from the pending list, and a lane entry from its lane.
    /// Returns whether it was pending.
    fn settle(&mut self, group: &GroupName, entry: &EntryRef) -> bool {
        let was_pending = self
            .groups
            .get_mut(group)
            .is_some_and(|g| g.pending.remove(entry).is_some());
        if entry.lane == Lane::Retry
            && let (Some(lane), Some(seq)) = (self.lanes.get_mut(group), parse_id(&entry.id))
        {
            lane.entries.remove(&seq);
        }
        was_pending
    }

    fn stored(&self, group: &GroupName, entry: &EntryRef) -> Option<&Stored> {
        let seq = parse_id(&entry.id)?;
        match entry.lane {
            Lane::Main => self.log.entries.get(&seq),
            Lane::Retry => self.lanes.get(group)?.entries.get(&seq),
        }
    }

    /// Entries of the main log no group still needs: everything before the oldest entry
    /// some group has pending or not yet delivered. `None` when there are no groups.
    fn safe_boundary(&self) -> Option<Seq> {
        self.groups
            .values()
            .map(|g| {
                let oldest_pending = g
                    .pending
                    .keys()
                    .filter(|e| e.lane == Lane::Main)
                    .filter_map(|e| parse_id(&e.id))
                    .min();
                let undelivered = (g.cursor.0, g.cursor.1.saturating_add(1));
                oldest_pending.map_or(undelivered, |p| p.min(undelivered))
            })
            .min()
    }

    fn lag(&self) -> u64 {
        self.groups
            .values()
            .map(|g| {
                let undelivered = self
                    .log
                    .entries
                    .range((
                        std::ops::Bound::Excluded(g.cursor),
                        std::ops::Bound::Unbounded,
                    ))
                    .count() as u64;
                undelivered + g.pending.len() as u64
            })
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug)]
struct Scheduled {
    kind: StreamKind,
    group: GroupName,
    envelope: Envelope,
}

#[derive(Debug)]
struct Topic {
    main: Stream,
    dlq: Stream,
    /// Scheduled retries, by (due ms, tie-breaker).
    retries: BTreeMap<(u64, u64), Scheduled>,
    retry_counter: u64,
    dedup: HashMap<String, (Published, Instant)>,
    heartbeats: HashMap<(StreamKind, GroupName), Instant>,
    notify: Arc<Notify>,
}

impl Topic {
    fn new() -> Self {
        Topic {
            main: Stream::default(),
            dlq: Stream::default(),
            retries: BTreeMap::new(),
            retry_counter: 0,
            dedup: HashMap::new(),
            heartbeats: HashMap::new(),
            notify: Arc::new(Notify::new()),
        }
    }

    fn stream(&mut self, kind: StreamKind) -> &mut Stream {
        match kind {
            StreamKind::Main => &mut self.main,
            StreamKind::DeadLetters => &mut self.dlq,
        }
    }

    fn trim(&mut self, opts: &TopicOptions) -> TrimReport {
        let boundary = if opts.safe {
            self.main.safe_boundary()
        } else {
            None
        };
        let len = self.main.log.entries.len() as u64;
        let over_len = opts.max_len.map_or(0, |max| len.saturating_sub(max));
        let cutoff_ms = opts
            .max_age
            .map(|age| now_ms().saturating_sub(deadline::millis(age)));
        let mut wanted = Vec::new();
        for (i, seq) in self.main.log.entries.keys().enumerate() {
            let by_len = (i as u64) < over_len;
            let by_age = cutoff_ms.is_some_and(|c| seq.0 < c);
            if by_len || by_age {
                wanted.push(*seq);
            } else {
                break;
            }
        }
        let mut report = TrimReport::default();
        for seq in wanted {
            if boundary.is_some_and(|b| seq >= b) {
                report.kept_unacked += 1;
            } else {
                self.main.log.entries.remove(&seq);
                report.removed += 1;
            }
        }
        report
    }
}

#[derive(Debug)]
struct LiveSub {
    patterns: Vec<String>,
    tx: mpsc::Sender<LiveMessage>,
}

#[derive(Default)]
struct State {
    topics: HashMap<TopicName, Topic>,
    live: Vec<LiveSub>,
}

/// The embedded backend. Clones share the same state, so several buses built on clones
/// of one `MemoryBackend` see the same topics (as several processes would on Redis).
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics = self.lock().topics.len();
        f.debug_struct("MemoryBackend")
            .field("topics", &topics)
            .finish()
    }
}

impl MemoryBackend {
    /// A new, empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that breaks the invariants we rely on, so a poisoned lock is still usable.
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn with_topic<R>(&self, topic: &TopicName, f: impl FnOnce(&mut Topic) -> R) -> Result<R> {
        let mut state = self.lock();
        let t = state.topics.entry(topic.clone()).or_insert_with(Topic::new);
        Ok(f(t))
    }

    fn check_backpressure(&self, topic: &TopicName, opts: &TopicOptions) -> Result<()> {
        let Some(cap) = opts.backpressure else {
            return Ok(());
        };
        let (current, limit) = self.with_topic(topic, |t| match cap {
            Backpressure::MaxLength(n) => (t.main.log.entries.len() as u64, n),
            Backpressure::MaxLag(n) => (t.main.lag(), n),
        })?;
        if current >= limit {
            return Err(Error::Backpressure {
                topic: topic.to_string(),
                current,
                limit,
            });
        }
        Ok(())
    }
}

impl From<MemoryBackend> for AnyBackend {
    fn from(b: MemoryBackend) -> Self {
        AnyBackend(Arc::new(b))
    }
}

#[derive(Debug)]
struct MemoryReader {
    backend: MemoryBackend,
    key: StreamKey,
    group: GroupName,
    consumer: ConsumerName,
}

impl MemoryReader {
    /// Takes up to `count` undelivered entries (lane first, then the main log).
    fn take(&self, count: usize) -> Result<(Vec<ReadEntry>, Arc<Notify>)> {
        self.backend.with_topic(&self.key.topic, |t| {
            let notify = t.notify.clone();
            let stream = t.stream(self.key.kind);
            let Some(group) = stream.groups.get_mut(&self.group) else {
                return Err(Error::Protocol(format!(
                    "group {} of {} no longer exists",
                    self.group, self.key.topic
                )));
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
            let room = count - out.len();
            for (seq, item) in stream
                .log
                .entries
                .range((
                    std::ops::Bound::Excluded(group.cursor),
                    std::ops::Bound::Unbounded,
                ))
                .take(room)
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
                    }
                })
                .collect();
            Ok((entries, notify))
        })?
    }
}

fn to_record(item: Stored) -> Record {
    match item {
        Stored::Message(e) => Record::Message(e),
        Stored::Dead(d) => Record::DeadLetter(d),
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
            self.backend
                .retry_later(&self.key, &self.group, &r.entry, &r.next, r.due_ms)
                .await?;
        }
        // Reading never waits when entries are ready: give the scheduler a chance so a
        // busy consumer cannot starve other tasks on its worker thread.
        tokio::task::consume_budget().await;
        let deadline = deadline::from_now(block);
        loop {
            let notify = self
                .backend
                .with_topic(&self.key.topic, |t| t.notify.clone())?;
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (entries, _) = self.take(count.max(1))?;
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
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn default_concurrency(&self) -> usize {
        8
    }

    async fn publish(
        &self,
        topic: &TopicName,
        batch: Vec<Envelope>,
        opts: &PublishOpts,
    ) -> Result<Vec<Published>> {
        if let Some(wait) = opts.topic.backpressure_wait {
            let deadline = deadline::from_now(wait);
            loop {
                match self.check_backpressure(topic, &opts.topic) {
                    Err(Error::Backpressure { .. }) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    other => break other?,
                }
            }
        } else {
            self.check_backpressure(topic, &opts.topic)?;
        }
        if let Some((replicas, _)) = opts.wait_replicas
            && replicas > 0
        {
            return Err(Error::NotAvailable(
                "the memory backend has no replicas to wait for".into(),
            ));
        }
        self.with_topic(topic, |t| {
            let now = Instant::now();
            t.dedup.retain(|_, (_, until)| *until > now);
            let mut out = Vec::with_capacity(batch.len());
            for envelope in batch {
                if let Some(window) = opts.dedup_window {
                    let key = envelope.message_id.as_str().to_owned();
                    if let Some((first, _)) = t.dedup.get(&key) {
                        let mut dup = first.clone();
                        dup.duplicate = true;
                        out.push(dup);
                        continue;
                    }
                    let message_id = envelope.message_id.clone();
                    let seq = t.main.log.append(Stored::Message(envelope));
                    let published = Published {
                        message_id,
                        entry_id: seq_to_id(seq),
                        duplicate: false,
                    };
                    t.dedup
                        .insert(key, (published.clone(), deadline::after(now, window)));
                    out.push(published);
                } else {
                    let message_id = envelope.message_id.clone();
                    let seq = t.main.log.append(Stored::Message(envelope));
                    out.push(Published {
                        message_id,
                        entry_id: seq_to_id(seq),
                        duplicate: false,
                    });
                }
            }
            t.trim(&opts.topic);
            t.notify.notify_waiters();
            out
        })
    }

    async fn ensure_group(
        &self,
        key: &StreamKey,
        group: &GroupName,
        start: &StartFrom,
    ) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            let stream = t.stream(key.kind);
            if stream.groups.contains_key(group) {
                return Ok(());
            }
            let cursor = match start {
                StartFrom::New => stream.log.last,
                StartFrom::Beginning => (0, 0),
                StartFrom::After(id) => parse_id(&EntryId(id.clone())).ok_or_else(|| {
                    Error::config(format!("start position {id:?} is not an entry id"))
                })?,
            };
            stream.groups.insert(
                group.clone(),
                Group {
                    cursor,
                    ..Group::default()
                },
            );
            Ok(())
        })?
    }

    async fn destroy_group(&self, key: &StreamKey, group: &GroupName) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            let stream = t.stream(key.kind);
            stream.groups.remove(group);
            stream.lanes.remove(group);
            t.retries
                .retain(|_, s| !(s.kind == key.kind && s.group == *group));
            t.heartbeats.remove(&(key.kind, group.clone()));
        })
    }

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
        entry: &EntryRef,
        next: &Envelope,
        due_ms: u64,
    ) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            if !t.stream(key.kind).settle(group, entry) {
                // Already settled: a settlement applied twice schedules nothing.
                return;
            }
            if due_ms <= now_ms() {
                // Already due: straight into the group's lane.
                t.stream(key.kind)
                    .lane(group)
                    .append(Stored::Message(next.clone()));
                t.notify.notify_waiters();
                return;
            }
            t.retry_counter += 1;
            t.retries.insert(
                (due_ms, t.retry_counter),
                Scheduled {
                    kind: key.kind,
                    group: group.clone(),
                    envelope: next.clone(),
                },
            );
        })
    }

    async fn dead_letter(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        dead: &DeadLetter,
    ) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            if !t.stream(key.kind).settle(group, entry) {
                // Already settled (by this or another consumer): nothing to dead-letter.
                return;
            }
            let seq = t.dlq.log.next_seq();
            let mut dead = dead.clone();
            dead.id = seq_to_id(seq);
            t.dlq.log.entries.insert(seq, Stored::Dead(Box::new(dead)));
            t.notify.notify_waiters();
        })
    }

    async fn move_due_retries(
        &self,
        key: &StreamKey,
        now_ms: u64,
        limit: usize,
    ) -> Result<RetrySweep> {
        self.with_topic(&key.topic, |t| {
            let due: Vec<(u64, u64)> = t
                .retries
                .iter()
                .filter(|(_, s)| s.kind == key.kind)
                .take_while(|((due, _), _)| *due <= now_ms)
                .take(limit)
                .map(|(k, _)| *k)
                .collect();
            let moved = due.len();
            for k in due {
                if let Some(s) = t.retries.remove(&k) {
                    t.stream(s.kind)
                        .lane(&s.group)
                        .append(Stored::Message(s.envelope));
                }
            }
            if moved > 0 {
                t.notify.notify_waiters();
            }
            RetrySweep {
                moved,
                next_due_ms: t
                    .retries
                    .iter()
                    .find(|(_, s)| s.kind == key.kind)
                    .map(|((due, _), _)| *due),
            }
        })
    }

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

    async fn extend_lease(
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
                    if let Some(p) = g.pending.get_mut(e) {
                        p.consumer = consumer.clone();
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
        keep: &[EntryRef],
    ) -> Result<usize> {
        self.with_topic(&key.topic, |t| {
            let stream = t.stream(key.kind);
            let Some(g) = stream.groups.get(group) else {
                return 0;
            };
            let mine: Vec<EntryRef> = g
                .pending
                .iter()
                .filter(|(e, p)| p.consumer == *consumer && !keep.contains(e))
                .map(|(e, _)| e.clone())
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
            t.dlq
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

    async fn dead_letter_count(&self, topic: &TopicName) -> Result<u64> {
        self.with_topic(topic, |t| t.dlq.log.entries.len() as u64)
    }

    async fn remove_dead_letters(&self, topic: &TopicName, ids: &[EntryId]) -> Result<u64> {
        self.with_topic(topic, |t| {
            ids.iter()
                .filter_map(parse_id)
                .filter(|seq| t.dlq.log.entries.remove(seq).is_some())
                .count() as u64
        })
    }

    async fn replay_dead_letter(&self, topic: &TopicName, dead: &DeadLetter) -> Result<bool> {
        let Some(seq) = parse_id(&dead.id) else {
            return Ok(false);
        };
        self.with_topic(topic, |t| {
            if t.dlq.log.entries.remove(&seq).is_none() {
                return false;
            }
            let envelope = Envelope {
                message_id: dead.message_id.clone(),
                payload: dead.payload.clone(),
                headers: dead.headers.clone(),
                attempt: 1,
                published_at_ms: dead.published_at_ms,
            };
            t.main.lane(&dead.group).append(Stored::Message(envelope));
            t.notify.notify_waiters();
            true
        })
    }

    async fn trim(&self, topic: &TopicName, opts: &TopicOptions) -> Result<TrimReport> {
        self.with_topic(topic, |t| t.trim(opts))
    }

    async fn broadcast_heartbeat(
        &self,
        key: &StreamKey,
        group: &GroupName,
        ttl: Duration,
    ) -> Result<()> {
        self.with_topic(&key.topic, |t| {
            t.heartbeats
                .insert((key.kind, group.clone()), deadline::from_now(ttl));
        })
    }

    async fn remove_orphan_broadcast_groups(
        &self,
        key: &StreamKey,
        base: &GroupName,
    ) -> Result<Vec<String>> {
        let prefix = format!("{base}__");
        self.with_topic(&key.topic, |t| {
            let now = Instant::now();
            let stream = match key.kind {
                StreamKind::Main => &t.main,
                StreamKind::DeadLetters => &t.dlq,
            };
            let orphans: Vec<GroupName> = stream
                .groups
                .keys()
                .filter(|g| g.as_str().starts_with(&prefix))
                .filter(|g| {
                    t.heartbeats
                        .get(&(key.kind, (*g).clone()))
                        .is_none_or(|until| *until <= now)
                })
                .cloned()
                .collect();
            for g in &orphans {
                let stream = t.stream(key.kind);
                stream.groups.remove(g);
                stream.lanes.remove(g);
                t.heartbeats.remove(&(key.kind, g.clone()));
            }
            orphans.into_iter().map(|g| g.to_string()).collect()
        })
    }

    async fn live_publish(&self, channel: &str, payload: Bytes) -> Result<u64> {
        let mut state = self.lock();
        state.live.retain(|s| !s.tx.is_closed());
        let mut received = 0;
        for sub in &state.live {
            if let Some(pattern) = sub
                .patterns
                .iter()
                .find(|p| glob_match(p.as_bytes(), channel.as_bytes()))
            {
                let msg = LiveMessage {
                    channel: channel.to_owned(),
                    pattern: pattern.clone(),
                    payload: payload.clone(),
                };
                // Lossy by design: a subscriber that does not keep up loses messages.
                if sub.tx.try_send(msg).is_ok() {
                    received += 1;
                } else {
                    metrics::counter!("rivulet_live_dropped_total").increment(1);
                }
            }
        }
        Ok(received)
    }

    async fn live_subscribe(&self, patterns: &[String]) -> Result<mpsc::Receiver<LiveMessage>> {
        let (tx, rx) = mpsc::channel(1024);
        let mut state = self.lock();
        state.live.push(LiveSub {
            patterns: patterns.to_vec(),
            tx,
        });
        Ok(rx)
    }

    async fn close(&self) {
        // The memory backend is shared by clones (several buses may use it), so closing
        // one bus only drops its own live subscriptions; the data stays for the others.
        self.lock().live.retain(|s| !s.tx.is_closed());
    }
}
