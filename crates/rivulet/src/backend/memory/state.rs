//! The memory backend's data: logs with Redis-style ids, groups with cursors and pending
//! lists, retry lanes, scheduled retries and dead letters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::backend::{EntryRef, GroupSample, Lane, LiveMessage, StreamKind, TopicSample};
use crate::dead_letter::DeadLetter;
use crate::message::{EntryId, Envelope, Published, now_ms};
use crate::name::{ConsumerName, GroupName, TopicName};
use crate::topic::{TopicOptions, TrimReport};

/// A position in a log: (milliseconds, sequence), printed as `ms-seq` like Redis.
pub(super) type Seq = (u64, u64);

pub(super) fn seq_to_id(seq: Seq) -> EntryId {
    EntryId(format!("{}-{}", seq.0, seq.1))
}

pub(super) fn parse_id(id: &EntryId) -> Option<Seq> {
    let (ms, seq) = id.0.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[derive(Debug, Clone)]
pub(super) enum Stored {
    Message(Envelope),
    Dead(Box<DeadLetter>),
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) consumer: ConsumerName,
    pub(super) deliveries: u64,
    pub(super) since: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Group {
    /// Last main-log entry delivered to the group.
    pub(super) cursor: Seq,
    /// Last lane entry delivered to the group.
    pub(super) lane_cursor: Seq,
    pub(super) pending: HashMap<EntryRef, Pending>,
}

/// An append-only log with Redis-style ids.
#[derive(Debug, Default)]
pub(super) struct Log {
    pub(super) entries: BTreeMap<Seq, Stored>,
    pub(super) last: Seq,
}

impl Log {
    pub(super) fn next_seq(&mut self) -> Seq {
        let ms = now_ms();
        self.last = if ms > self.last.0 {
            (ms, 0)
        } else {
            (self.last.0, self.last.1 + 1)
        };
        self.last
    }

    pub(super) fn append(&mut self, item: Stored) -> Seq {
        let seq = self.next_seq();
        self.entries.insert(seq, item);
        seq
    }
}

#[derive(Debug, Default)]
pub(super) struct Stream {
    pub(super) log: Log,
    pub(super) groups: HashMap<GroupName, Group>,
    pub(super) lanes: HashMap<GroupName, Log>,
    /// Groups created as broadcast groups (the only ones orphan clean-up considers).
    pub(super) broadcast: HashSet<GroupName>,
    /// Broadcast heartbeats: alive until.
    pub(super) heartbeats: HashMap<GroupName, Instant>,
}

impl Stream {
    pub(super) fn lane(&mut self, group: &GroupName) -> &mut Log {
        self.lanes.entry(group.clone()).or_default()
    }

    /// Settles an entry: removes it from the pending list, and a lane entry from its lane.
    /// Returns whether it was pending.
    pub(super) fn settle(&mut self, group: &GroupName, entry: &EntryRef) -> bool {
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

    pub(super) fn stored(&self, group: &GroupName, entry: &EntryRef) -> Option<&Stored> {
        let seq = parse_id(&entry.id)?;
        match entry.lane {
            Lane::Main => self.log.entries.get(&seq),
            Lane::Retry => self.lanes.get(group)?.entries.get(&seq),
        }
    }

    /// Entries of the main log no group still needs: everything before the oldest entry
    /// some group has pending or not yet delivered. `None` when there are no groups.
    pub(super) fn safe_boundary(&self) -> Option<Seq> {
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

    pub(super) fn lag(&self) -> u64 {
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
pub(super) struct Scheduled {
    pub(super) kind: StreamKind,
    pub(super) group: GroupName,
    pub(super) envelope: Envelope,
}

#[derive(Debug)]
pub(super) struct Topic {
    pub(super) main: Stream,
    pub(super) dead_letters: Stream,
    /// Scheduled retries, by (due ms, tie-breaker).
    pub(super) retries: BTreeMap<(u64, u64), Scheduled>,
    pub(super) retry_counter: u64,
    pub(super) dedup: HashMap<String, (Published, Instant)>,
    pub(super) notify: Arc<Notify>,
}

impl Topic {
    /// The sizes the metrics collector reads, with the meaning Redis gives them: length
    /// is what the stream retains, pending and lag count the main log only (a group's
    /// retry lane is not part of either).
    pub(super) fn sample(&self, name: &TopicName) -> TopicSample {
        let mut groups: Vec<GroupSample> = self
            .main
            .groups
            .iter()
            .map(|(group, g)| GroupSample {
                group: group.to_string(),
                pending: g.pending.keys().filter(|e| e.lane == Lane::Main).count() as u64,
                lag: Some(
                    self.main
                        .log
                        .entries
                        .range((
                            std::ops::Bound::Excluded(g.cursor),
                            std::ops::Bound::Unbounded,
                        ))
                        .count() as u64,
                ),
            })
            .collect();
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        TopicSample {
            topic: Some(name.clone()),
            length: self.main.log.entries.len() as u64,
            retries: self
                .retries
                .values()
                .filter(|r| r.kind == StreamKind::Main)
                .count() as u64,
            dead_letters: self.dead_letters.log.entries.len() as u64,
            groups,
        }
    }

    pub(super) fn new() -> Self {
        Topic {
            main: Stream::default(),
            dead_letters: Stream::default(),
            retries: BTreeMap::new(),
            retry_counter: 0,
            dedup: HashMap::new(),
            notify: Arc::new(Notify::new()),
        }
    }

    pub(super) fn stream(&mut self, kind: StreamKind) -> &mut Stream {
        match kind {
            StreamKind::Main => &mut self.main,
            StreamKind::DeadLetters => &mut self.dead_letters,
        }
    }

    pub(super) fn stream_ref(&self, kind: StreamKind) -> &Stream {
        match kind {
            StreamKind::Main => &self.main,
            StreamKind::DeadLetters => &self.dead_letters,
        }
    }

    /// Whether anything was ever written or subscribed (for the topic registry).
    pub(super) fn is_used(&self) -> bool {
        !(self.main.groups.is_empty()
            && self.main.log.last == (0, 0)
            && self.dead_letters.log.entries.is_empty()
            && self.retries.is_empty())
    }

    /// Applies retention; with `dry_run`, only counts what it would remove and keep.
    pub(super) fn trim(&mut self, opts: &TopicOptions, dry_run: bool) -> TrimReport {
        let boundary = if opts.safe {
            self.main.safe_boundary()
        } else {
            None
        };
        let len = self.main.log.entries.len() as u64;
        let over_len = opts.max_len.map_or(0, |max| len.saturating_sub(max));
        let cutoff_ms = opts
            .max_age
            .map(|age| now_ms().saturating_sub(crate::deadline::millis(age)));
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
                if !dry_run {
                    self.main.log.entries.remove(&seq);
                }
                report.removed += 1;
            }
        }
        report
    }
}

#[derive(Debug)]
pub(super) struct LiveSub {
    pub(super) patterns: Vec<String>,
    pub(super) tx: mpsc::Sender<LiveMessage>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) topics: HashMap<TopicName, Topic>,
    pub(super) live: Vec<LiveSub>,
    pub(super) queues: HashMap<crate::name::QueueName, super::jobs::MemQueue>,
}
