//! Dead letters: messages a group gave up on, with the reason (B-RET-4). The handle
//! that lists, replays and purges a topic's dead letters is [`DeadLetters`](crate::DeadLetters).

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::message::{EntryId, Headers, MessageId};
use crate::name::{GroupName, TopicName};

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The handler returned a permanent error.
    Permanent,
    /// The handler failed (error or panic) on every one of `max_attempts` attempts.
    Attempts,
    /// The payload could not be decoded, or the entry was malformed.
    Decode,
    /// The entry was delivered more than `max_attempts` times without being settled:
    /// its consumers kept crashing or stalling on it (B-RET-5).
    Deliveries,
    /// The payload was over the size limit (written by something other than rivulet).
    TooLarge,
    /// A retry was scheduled for a group that was then removed and did not come back
    /// within the grace period: nobody would ever read it.
    GroupGone,
}

impl DeadLetterReason {
    /// The reason as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Permanent => "permanent",
            DeadLetterReason::Attempts => "attempts",
            DeadLetterReason::Decode => "decode",
            DeadLetterReason::Deliveries => "deliveries",
            DeadLetterReason::TooLarge => "too_large",
            DeadLetterReason::GroupGone => "group_gone",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadLetterReason {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "permanent" => DeadLetterReason::Permanent,
            "attempts" => DeadLetterReason::Attempts,
            "decode" => DeadLetterReason::Decode,
            "deliveries" => DeadLetterReason::Deliveries,
            "too_large" => DeadLetterReason::TooLarge,
            "group_gone" => DeadLetterReason::GroupGone,
            other => {
                return Err(Error::Protocol(format!(
                    "unknown dead-letter reason {other:?}"
                )));
            }
        })
    }
}

/// A dead-lettered message: the original payload and headers, and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The dead letter's own id in the dead-letter queue.
    pub id: EntryId,
    /// The topic the message was published to.
    pub topic: TopicName,
    /// The group that gave up on it.
    pub group: GroupName,
    /// The message id.
    pub message_id: MessageId,
    /// The entry id of the last delivery.
    pub original_entry_id: EntryId,
    /// The original payload, unchanged.
    pub payload: Bytes,
    /// The original headers, unchanged.
    pub headers: Headers,
    /// How many attempts were made.
    pub attempts: u32,
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// The last error message.
    pub error: String,
    /// When it was first published (ms since the Unix epoch).
    pub published_at_ms: u64,
    /// When it was dead-lettered (ms since the Unix epoch).
    pub dead_at_ms: u64,
}

/// Which dead letters a replay or purge applies to.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeadLetterFilter {
    /// Only this group's.
    pub group: Option<GroupName>,
    /// Only those with this reason.
    pub reason: Option<DeadLetterReason>,
    /// Only those dead-lettered at or after this time (ms since the Unix epoch).
    pub dead_since_ms: Option<u64>,
    /// Only those dead-lettered before this time (ms since the Unix epoch).
    pub dead_before_ms: Option<u64>,
}

impl DeadLetterFilter {
    pub(crate) fn matches(&self, d: &DeadLetter) -> bool {
        self.group.as_ref().is_none_or(|g| *g == d.group)
            && self.reason.is_none_or(|r| r == d.reason)
            && self.dead_since_ms.is_none_or(|t| d.dead_at_ms >= t)
            && self.dead_before_ms.is_none_or(|t| d.dead_at_ms < t)
    }

    /// Only dead letters dead-lettered at or after `ms` (since the Unix epoch).
    pub fn dead_since_ms(mut self, ms: u64) -> Self {
        self.dead_since_ms = Some(ms);
        self
    }

    /// Only dead letters dead-lettered before `ms` (since the Unix epoch).
    pub fn dead_before_ms(mut self, ms: u64) -> Self {
        self.dead_before_ms = Some(ms);
        self
    }

    /// Only dead letters of `group`.
    pub fn group(mut self, group: GroupName) -> Self {
        self.group = Some(group);
        self
    }

    /// Only dead letters with `reason`.
    pub fn reason(mut self, reason: DeadLetterReason) -> Self {
        self.reason = Some(reason);
        self
    }
}
