//! Key names (`docs/wire-format.md` has the full table).
//!
//! Every key is `<prefix>/<kind>/<name>…`: `/` separates prefix, kind and name, and no
//! name or prefix can contain it (names are `[A-Za-z0-9._:-]`, prefixes too), so a
//! future queue `q:orders` can never collide with a topic. Every key of one topic shares
//! the hash tag `{<prefix>/topic/<topic>}`, so each script touches a single cluster slot
//! and the dead-letter keys of a topic live in the same slot as the topic.
//!
//! | key | type | what |
//! |---|---|---|
//! | `<p>/topics` | set | the topic registry (listing never scans the keyspace) |
//! | `{<p>/topic/<t>}/stream` | stream | the topic's messages |
//! | `{…}/lane/<group>` | stream | the group's retry lane (the group exists on it too) |
//! | `{…}/retry` | zset | scheduled retries of every group, scored by due ms |
//! | `{…}/groups` | set | groups rivulet created on the topic (the group registry) |
//! | `{…}/broadcast` | set | of those, the broadcast groups |
//! | `{…}/generations` | hash | group → incarnation, incremented at each (re-)creation |
//! | `{…}/heartbeat/<group>` | string | broadcast group heartbeat |
//! | `{…}/dedup/<message-id>` | string | idempotent publish: the first entry id |
//! | `{…}/dead-letters` | stream | the dead-letter queue |
//! | `{…}/dead-letters/…` | | lanes, retry set, registries and heartbeats of groups consuming the dead-letter queue |
//! | `<p>/idempotency/<key>` | string | idempotency store keys |

use crate::backend::{StreamKey, StreamKind};
use crate::error::{Error, Result};
use crate::message::MessageId;
use crate::name::{GroupName, TopicName};

/// The default key prefix.
pub(crate) const DEFAULT_PREFIX: &str = "rivulet";

/// Checks a key prefix: 1–100 bytes of `[A-Za-z0-9._:-]`, like a name, so it can contain
/// neither the `/` separator nor a brace (which would change the hash tag).
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > 100 {
        return Err(Error::config("the key prefix must be 1-100 bytes"));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(Error::config(
            "the key prefix may contain only A-Z, a-z, 0-9, '.', '_', ':' and '-'",
        ));
    }
    Ok(())
}

/// The topic registry.
pub(crate) fn topics(prefix: &str) -> String {
    format!("{prefix}/topics")
}

/// The key of an idempotency-store key.
pub(crate) fn idempotency_prefix(prefix: &str) -> String {
    format!("{prefix}/idempotency/")
}

/// The keys of one topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicKeys {
    /// `{prefix/topic/name}`
    tag: String,
}

impl TopicKeys {
    pub(crate) fn new(prefix: &str, topic: &TopicName) -> Self {
        TopicKeys {
            tag: format!("{{{prefix}/topic/{topic}}}"),
        }
    }

    /// The topic's main stream.
    pub(crate) fn stream(&self) -> String {
        format!("{}/stream", self.tag)
    }

    /// The dead-letter stream.
    pub(crate) fn dead_letters(&self) -> String {
        format!("{}/dead-letters", self.tag)
    }

    /// The idempotent-publish marker of a message id.
    pub(crate) fn dedup(&self, id: &MessageId) -> String {
        format!("{}/dedup/{}", self.tag, id.as_str())
    }

    /// The keys of one log of the topic (the topic or its dead-letter queue).
    pub(crate) fn log(&self, kind: StreamKind) -> LogKeys {
        let stream = match kind {
            StreamKind::Main => self.stream(),
            StreamKind::DeadLetters => self.dead_letters(),
        };
        let base = match kind {
            StreamKind::Main => self.tag.clone(),
            StreamKind::DeadLetters => self.dead_letters(),
        };
        LogKeys { stream, base }
    }
}

/// The keys of one consumable log: its stream, retry set, lanes, registries and
/// heartbeats.
#[derive(Debug, Clone)]
pub(crate) struct LogKeys {
    /// The stream itself.
    pub(crate) stream: String,
    /// `{p/topic/t}` or `{p/topic/t}/dead-letters`.
    base: String,
}

impl LogKeys {
    pub(crate) fn for_key(prefix: &str, key: &StreamKey) -> Self {
        TopicKeys::new(prefix, &key.topic).log(key.kind)
    }

    /// The retry set (every group of this log).
    pub(crate) fn retry(&self) -> String {
        format!("{}/retry", self.base)
    }

    /// A group's retry lane.
    pub(crate) fn lane(&self, group: &str) -> String {
        format!("{}/lane/{}", self.base, group)
    }

    /// The registry of groups created by rivulet.
    pub(crate) fn groups(&self) -> String {
        format!("{}/groups", self.base)
    }

    /// Each group's incarnation, incremented whenever rivulet (re-)creates it on the
    /// topic.
    pub(crate) fn generations(&self) -> String {
        format!("{}/generations", self.base)
    }

    /// The registry of broadcast groups.
    pub(crate) fn broadcast(&self) -> String {
        format!("{}/broadcast", self.base)
    }

    /// A broadcast group's heartbeat.
    pub(crate) fn heartbeat(&self, group: &GroupName) -> String {
        format!("{}/heartbeat/{}", self.base, group)
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
        let dead = k.log(StreamKind::DeadLetters);
        let keys = [
            k.stream(),
            k.dead_letters(),
            k.dedup(&id),
            main.retry(),
            main.lane(g.as_str()),
            main.groups(),
            main.broadcast(),
            main.generations(),
            main.heartbeat(&g),
            dead.stream.clone(),
            dead.retry(),
            dead.lane(g.as_str()),
            dead.groups(),
            dead.heartbeat(&g),
        ];
        for key in &keys {
            assert_eq!(hash_tag(key), "rivulet/topic/orders:order:created", "{key}");
        }
        assert_eq!(k.stream(), "{rivulet/topic/orders:order:created}/stream");
        assert_eq!(
            main.lane("billing"),
            "{rivulet/topic/orders:order:created}/lane/billing"
        );
        assert_eq!(
            dead.lane("billing"),
            "{rivulet/topic/orders:order:created}/dead-letters/lane/billing"
        );
        assert_eq!(
            dead.stream,
            "{rivulet/topic/orders:order:created}/dead-letters"
        );
    }

    #[test]
    fn no_name_can_make_two_kinds_collide() {
        // A topic named like another kind's key stays inside its own tag: the separator
        // cannot appear in names.
        assert!(TopicName::new("q/orders").is_err());
        let a = TopicKeys::new("rivulet", &topic("q:orders")).stream();
        assert!(a.starts_with("{rivulet/topic/q:orders}"));
        assert_eq!(topics("rivulet"), "rivulet/topics");
        assert_eq!(idempotency_prefix("app"), "app/idempotency/");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("rivulet").is_ok());
        assert!(check_prefix("app:v2").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a{b").is_err());
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix("a/b").is_err());
    }
}
