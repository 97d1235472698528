//! Key names. Every key of a topic shares the hash tag `{<prefix>:<topic>}`, so each
//! script touches a single cluster slot, and the dead-letter keys of a topic live
//! in the same slot as the topic.
//!
//! | key | type | what |
//! |---|---|---|
//! | `{p:t}:stream` | stream | the topic's messages |
//! | `{p:t}:lane:<group>` | stream | the group's retry lane (the group exists on it too) |
//! | `{p:t}:retry` | zset | scheduled retries of every group, scored by due ms |
//! | `{p:t}:dedup:<message-id>` | string | idempotent publish: the first entry id |
//! | `{p:t}:bcast:<group>` | string | broadcast group heartbeat |
//! | `{p:t}:dlq` | stream | the dead-letter queue |
//! | `{p:t}:dlq:lane:<group>` | stream | retry lane of a group consuming the dead-letter queue |
//! | `{p:t}:dlq:retry` | zset | scheduled retries of groups consuming the dead-letter queue |
//! | `{p:t}:dlq:bcast:<group>` | string | heartbeat of a broadcast group on the dead-letter queue |

use crate::backend::{StreamKey, StreamKind};
use crate::error::{Error, Result};
use crate::message::MessageId;
use crate::name::{GroupName, TopicName};

/// The default key prefix.
pub(crate) const DEFAULT_PREFIX: &str = "rivulet";

/// Checks a key prefix: non-empty, at most 100 bytes, printable ASCII without braces
/// (a brace would change the hash tag) or spaces.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > 100 {
        return Err(Error::config("the key prefix must be 1-100 bytes"));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
    {
        return Err(Error::config(
            "the key prefix may contain only printable ASCII without spaces or braces",
        ));
    }
    Ok(())
}

/// The keys of one topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicKeys {
    /// `{prefix:topic}`
    tag: String,
}

impl TopicKeys {
    pub(crate) fn new(prefix: &str, topic: &TopicName) -> Self {
        TopicKeys {
            tag: format!("{{{prefix}:{topic}}}"),
        }
    }

    /// The topic's main stream.
    pub(crate) fn stream(&self) -> String {
        format!("{}:stream", self.tag)
    }

    /// The dead-letter stream.
    pub(crate) fn dlq(&self) -> String {
        format!("{}:dlq", self.tag)
    }

    /// The idempotent-publish marker of a message id.
    pub(crate) fn dedup(&self, id: &MessageId) -> String {
        format!("{}:dedup:{}", self.tag, id.as_str())
    }

    /// The keys of one log of the topic (the topic or its dead-letter queue).
    pub(crate) fn log(&self, kind: StreamKind) -> LogKeys {
        let base = match kind {
            StreamKind::Main => self.tag.clone(),
            StreamKind::DeadLetters => format!("{}:dlq", self.tag),
        };
        LogKeys {
            stream: match kind {
                StreamKind::Main => self.stream(),
                StreamKind::DeadLetters => self.dlq(),
            },
            base,
        }
    }
}

/// The keys of one consumable log: its stream, retry set, lanes and heartbeats.
#[derive(Debug, Clone)]
pub(crate) struct LogKeys {
    /// The stream itself.
    pub(crate) stream: String,
    /// `{p:t}` or `{p:t}:dlq`.
    base: String,
}

impl LogKeys {
    pub(crate) fn for_key(prefix: &str, key: &StreamKey) -> Self {
        TopicKeys::new(prefix, &key.topic).log(key.kind)
    }

    /// The retry set (every group of this log).
    pub(crate) fn retry(&self) -> String {
        format!("{}:retry", self.base)
    }

    /// A group's retry lane.
    pub(crate) fn lane(&self, group: &str) -> String {
        format!("{}:lane:{}", self.base, group)
    }

    /// A broadcast group's heartbeat.
    pub(crate) fn heartbeat(&self, group: &GroupName) -> String {
        format!("{}:bcast:{}", self.base, group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> TopicName {
        TopicName::new(s).expect("valid topic")
    }

    /// The part of a key Redis Cluster hashes.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("has a tag");
        let close = key[open + 1..].find('}').expect("closed") + open + 1;
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_topic_shares_one_hash_tag() {
        let t = topic("orders:order:created");
        let k = TopicKeys::new("rivulet", &t);
        let g = GroupName::new("billing").expect("group");
        let id = MessageId::new("weird{id}").expect("id");
        let main = k.log(StreamKind::Main);
        let dlq = k.log(StreamKind::DeadLetters);
        let keys = [
            k.stream(),
            k.dlq(),
            k.dedup(&id),
            main.retry(),
            main.lane(g.as_str()),
            main.heartbeat(&g),
            dlq.stream.clone(),
            dlq.retry(),
            dlq.lane(g.as_str()),
            dlq.heartbeat(&g),
        ];
        for key in &keys {
            assert_eq!(hash_tag(key), "rivulet:orders:order:created", "{key}");
        }
        assert_eq!(k.stream(), "{rivulet:orders:order:created}:stream");
        assert_eq!(
            main.lane("billing"),
            "{rivulet:orders:order:created}:lane:billing"
        );
        assert_eq!(
            dlq.lane("billing"),
            "{rivulet:orders:order:created}:dlq:lane:billing"
        );
        assert_eq!(dlq.stream, "{rivulet:orders:order:created}:dlq");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("rivulet").is_ok());
        assert!(check_prefix("app:v2").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a{b").is_err());
        assert!(check_prefix("a b").is_err());
    }
}
