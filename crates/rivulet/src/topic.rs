//! Per-topic settings: retention (B-TRIM-1), backpressure (B-PUB-6) and where a new
//! group starts reading.

use std::time::Duration;

/// Where a newly created group starts reading. An existing group keeps its position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartFrom {
    /// Only messages published after the group is created (the default).
    #[default]
    New,
    /// Every message the topic still holds.
    Beginning,
    /// Messages after this entry id.
    After(String),
}

/// What publish does when a topic is over its backpressure cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backpressure {
    /// Cap on the number of entries in the topic.
    MaxLength(u64),
    /// Cap on the slowest group's lag (entries not yet delivered to it plus entries
    /// pending on it).
    MaxLag(u64),
}

/// Per-topic options. Defaults: safe trimming to about 100,000 acknowledged entries, no
/// age limit, no backpressure.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TopicOptions {
    /// Keep about this many entries (approximate trimming). `None` = no length limit.
    pub max_len: Option<u64>,
    /// Remove entries older than this (at most 3650 days). `None` = no age limit.
    pub max_age: Option<Duration>,
    /// Never remove an entry some group has not been delivered or has not acknowledged.
    /// On by default; turning it off lets retention drop unprocessed messages.
    pub safe: bool,
    /// Refuse publishes past this cap with [`Error::Backpressure`](crate::Error::Backpressure).
    pub backpressure: Option<Backpressure>,
    /// With backpressure: wait up to this long for room before failing (at most 1 h).
    pub backpressure_wait: Option<Duration>,
}

impl Default for TopicOptions {
    fn default() -> Self {
        TopicOptions {
            max_len: Some(100_000),
            max_age: None,
            safe: true,
            backpressure: None,
            backpressure_wait: None,
        }
    }
}

impl TopicOptions {
    /// Sets the approximate maximum length.
    pub fn max_len(mut self, n: u64) -> Self {
        self.max_len = Some(n);
        self
    }

    /// Removes the length limit.
    pub fn unbounded(mut self) -> Self {
        self.max_len = None;
        self
    }

    /// Sets the maximum age of entries.
    pub fn max_age(mut self, d: Duration) -> Self {
        self.max_age = Some(d);
        self
    }

    /// Turns safe trimming on or off.
    pub fn safe(mut self, on: bool) -> Self {
        self.safe = on;
        self
    }

    /// Sets a backpressure cap.
    pub fn backpressure(mut self, cap: Backpressure) -> Self {
        self.backpressure = Some(cap);
        self
    }

    /// With backpressure, waits up to `d` for room instead of failing at once.
    pub fn backpressure_wait(mut self, d: Duration) -> Self {
        self.backpressure_wait = Some(d);
        self
    }
}

/// What a trim removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrimReport {
    /// Entries removed.
    pub removed: u64,
    /// Entries the limits asked to remove but safe mode kept, because some group had not
    /// delivered or acknowledged them.
    pub kept_unacked: u64,
}
