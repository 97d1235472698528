//! What the admin API reports: plain data (the CLI's `--json` documents the field names
//! it prints from these).

use std::time::Duration;

use crate::jobs::{JobCounts, JobInfo};
use crate::message::EntryId;
use crate::name::{ConsumerName, GroupName, JobName, QueueName, TopicName};

/// One topic: its sizes and its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicInfo {
    /// The topic.
    pub topic: TopicName,
    /// Entries the topic's log holds.
    pub length: u64,
    /// Retries scheduled for its groups (waiting for their due time).
    pub retry_scheduled: u64,
    /// Dead letters in its dead-letter queue.
    pub dead_letters: u64,
    /// Its groups, by name.
    pub groups: Vec<GroupInfo>,
}

impl TopicInfo {
    /// An empty topic (nothing written, no groups).
    pub(crate) fn empty(topic: TopicName) -> Self {
        TopicInfo {
            topic,
            length: 0,
            retry_scheduled: 0,
            dead_letters: 0,
            groups: Vec::new(),
        }
    }

    /// The largest lag of its groups (0 without groups).
    pub fn max_lag(&self) -> u64 {
        self.groups
            .iter()
            .map(|g| g.lag.unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    /// Entries pending over all its groups.
    pub fn pending(&self) -> u64 {
        self.groups.iter().map(|g| g.pending).sum()
    }
}

/// One group of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupInfo {
    /// The group.
    pub group: GroupName,
    /// Entries delivered to its consumers and not yet settled, on both its logs (the
    /// topic and its retry lane).
    pub pending: u64,
    /// Entries not yet delivered to it (topic and retry lane); `None` when Redis cannot
    /// tell (after some deletions it reports no lag).
    pub lag: Option<u64>,
    /// How long the oldest pending entry (by id) has been idle, in milliseconds.
    pub oldest_pending_idle_ms: Option<u64>,
    /// The last entry of the topic delivered to it.
    pub last_delivered: Option<EntryId>,
    /// Its consumers, by name.
    pub consumers: Vec<ConsumerInfo>,
}

/// One consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// The consumer.
    pub consumer: ConsumerName,
    /// Entries pending on it (both logs).
    pub pending: u64,
    /// Milliseconds since it last read or was refreshed (the smaller over both logs).
    pub idle_ms: u64,
}

impl ConsumerInfo {
    /// Its idle time.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
}

/// Which of a group's two logs an entry is pending in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PendingLog {
    /// The topic itself.
    Topic,
    /// The group's retry lane.
    RetryLane,
}

impl PendingLog {
    /// `topic` or `retry_lane`.
    pub fn as_str(self) -> &'static str {
        match self {
            PendingLog::Topic => "topic",
            PendingLog::RetryLane => "retry_lane",
        }
    }
}

/// One pending entry of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingEntry {
    /// Its id in its log.
    pub id: EntryId,
    /// The log it is pending in.
    pub log: PendingLog,
    /// The consumer holding it.
    pub consumer: ConsumerName,
    /// Milliseconds since it was delivered or last kept alive.
    pub idle_ms: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// A page of pending entries; pass `next` back for the following page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingPage {
    /// The entries, topic first, then the retry lane, each oldest first.
    pub entries: Vec<PendingEntry>,
    /// The cursor of the next page; `None` after the last.
    pub next: Option<String>,
}

/// A page of topics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicPage {
    /// The topics of the page, by name.
    pub topics: Vec<TopicInfo>,
    /// Topics in the registry in all.
    pub total: usize,
    /// The offset of the next page; `None` after the last.
    pub next: Option<usize>,
}

/// One queue with its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueInfo {
    /// The queue.
    pub queue: QueueName,
    /// Jobs per state.
    pub counts: JobCounts,
    /// Whether the whole queue is paused.
    pub paused: bool,
    /// Job names that are paused.
    pub paused_names: Vec<JobName>,
}

/// One job with its logs, as `jobs show` prints it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobDetail {
    /// The job.
    pub job: JobInfo,
    /// Its last log lines, oldest first.
    pub logs: Vec<String>,
}

/// What deleting a consumer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerDeleted {
    /// Its pending entries handed back to the group (its retry lane), for another
    /// consumer to take at once.
    pub handed_back: u64,
}

/// What deleting a group did (or, refused, would have lost).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupDeleted {
    /// Entries it had pending when it was deleted (lost for it).
    pub pending: u64,
    /// Entries it had not been delivered yet (lost for it).
    pub lag: u64,
}
