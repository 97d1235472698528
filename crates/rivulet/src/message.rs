//! Messages as they travel: ids, headers and the envelope stored in a topic.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// The longest message id accepted from a caller, in bytes.
pub const MAX_MESSAGE_ID_LEN: usize = 200;

/// A message's identity. Generated ids are UUIDv7 (time-ordered); callers may supply
/// their own for idempotent publishing (B-PUB-4).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// A new time-ordered UUIDv7 id.
    pub fn generate() -> Self {
        MessageId(uuid::Uuid::now_v7().to_string())
    }

    /// Wraps a caller-chosen id: 1–200 bytes, no control characters.
    pub fn new(id: impl Into<String>) -> crate::Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_MESSAGE_ID_LEN || id.chars().any(char::is_control) {
            return Err(crate::Error::InvalidName {
                what: "message id",
                name: id.chars().take(64).collect(),
                reason: "must be 1-200 bytes without control characters",
            });
        }
        Ok(MessageId(id))
    }

    /// Wraps an id read from the backend without validation.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_wire(id: String) -> Self {
        MessageId(id)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// String headers carried end to end with a message: through retries, dead-lettering and
/// replay. W3C `traceparent` / `tracestate` are ordinary headers.
///
/// # Header limits
///
/// Checked at publish, before anything is written:
///
/// | limit | value | error |
/// |---|---|---|
/// | name | 1–[`MAX_HEADER_NAME_LEN`] (256) bytes, no control characters | [`InvalidName`](crate::Error::InvalidName) |
/// | value | at most [`MAX_HEADER_VALUE_LEN`] (8 KiB) | [`HeaderLimit`](crate::Error::HeaderLimit) |
/// | count | at most [`MAX_HEADERS`] (64) | [`HeaderLimit`](crate::Error::HeaderLimit) |
/// | names and values together | at most [`MAX_HEADERS_SIZE`] (64 KiB) | [`HeaderLimit`](crate::Error::HeaderLimit) |
///
/// The headers are not counted against the payload limit. 64 headers keep every Lua
/// script well inside its argument bounds (a dead letter with 64 headers is about 150
/// arguments; the scripts allow about 2,000).
pub type Headers = BTreeMap<String, String>;

/// The longest header name accepted, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 256;
/// The longest header value accepted, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 8 * 1024;
/// The most headers a message may carry.
pub const MAX_HEADERS: usize = 64;
/// The most bytes of header names and values together a message may carry.
pub const MAX_HEADERS_SIZE: usize = 64 * 1024;

fn short(name: &str) -> String {
    name.chars().take(64).collect()
}

/// Checks a header name: 1–256 bytes without control characters.
pub(crate) fn check_header_name(name: &str) -> crate::Result<()> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN || name.chars().any(char::is_control) {
        return Err(crate::Error::InvalidName {
            what: "header",
            name: short(name),
            reason: "must be 1-256 bytes without control characters",
        });
    }
    Ok(())
}

/// Checks a message's headers against every header limit.
pub(crate) fn check_headers(headers: &Headers) -> crate::Result<()> {
    let limit = |name: &str, reason: String| crate::Error::HeaderLimit {
        header: short(name),
        reason,
    };
    let mut total = 0usize;
    for (i, (name, value)) in headers.iter().enumerate() {
        check_header_name(name)?;
        if value.len() > MAX_HEADER_VALUE_LEN {
            return Err(limit(
                name,
                format!(
                    "a value of {} bytes, over the limit of {MAX_HEADER_VALUE_LEN} bytes",
                    value.len()
                ),
            ));
        }
        if i == MAX_HEADERS {
            return Err(limit(
                name,
                format!(
                    "{} headers, over the limit of {MAX_HEADERS} headers",
                    headers.len()
                ),
            ));
        }
        total += name.len() + value.len();
        if total > MAX_HEADERS_SIZE {
            return Err(limit(
                name,
                format!(
                    "names and values reach {total} bytes, over the limit of \
                     {MAX_HEADERS_SIZE} bytes"
                ),
            ));
        }
    }
    Ok(())
}

/// The W3C trace-context header name.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C trace-state header name.
pub const TRACESTATE: &str = "tracestate";

/// The position of an entry in a topic, as the backend assigns it
/// (a Redis stream id such as `1700000000000-0`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub(crate) String);

impl EntryId {
    /// Parses an id as printed (`<ms>-<seq>`, e.g. `1700000000000-0`), for looking an
    /// entry up by the id an operator copied. [`Error::Config`](crate::Error::Config)
    /// for anything else.
    pub fn parse(s: &str) -> crate::error::Result<EntryId> {
        let valid = s
            .split_once('-')
            .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
        if valid {
            Ok(EntryId(s.to_owned()))
        } else {
            Err(crate::error::Error::config(format!(
                "{s:?} is not an entry id (like 1700000000000-0)"
            )))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What a successful publish returns: the message id and where the entry was written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The message's id (generated UUIDv7 or the caller's).
    pub message_id: MessageId,
    /// The entry's position in the topic.
    pub entry_id: EntryId,
    /// `true` when an idempotent publish found the id already written within the dedup
    /// window, so this call wrote nothing and returned the first entry.
    pub duplicate: bool,
}

/// A message as stored: everything the consumer side needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) message_id: MessageId,
    pub(crate) payload: Bytes,
    pub(crate) headers: Headers,
    /// 1 for the first delivery attempt; incremented by each retry.
    pub(crate) attempt: u32,
    /// Milliseconds since the Unix epoch when the message was first published.
    pub(crate) published_at_ms: u64,
}

impl Envelope {
    pub(crate) fn new(message_id: MessageId, payload: Bytes, headers: Headers) -> Self {
        Envelope {
            message_id,
            payload,
            headers,
            attempt: 1,
            published_at_ms: now_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
