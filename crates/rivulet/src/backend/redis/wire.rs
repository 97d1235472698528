//! The stream entry format (B-WIRE-1, documented in `docs/wire-format.md`).
//!
//! A message is a flat list of fields, readable with `redis-cli`:
//!
//! | field | value | when |
//! |---|---|---|
//! | `id` | the message id (UTF-8) | always |
//! | `payload` | the payload bytes | always |
//! | `attempt` | decimal attempt number | only when not 1 |
//! | `ts` | decimal ms since the epoch of the first publish | when it differs from the entry id's time |
//! | `h:<name>` | a header value (UTF-8) | one per header |
//!
//! A dead letter carries the same fields (with `ts` always present and no `attempt`) plus
//! `group`, `reason`, `error`, `attempts`, `entry` and `dead_at`.
//!
//! Decoding never fails: an entry that is not a valid message becomes
//! [`Record::Malformed`] with whatever could be salvaged, so one bad entry cannot stop a
//! consumer.

use std::fmt::Write as _;

use bytes::Bytes;

use super::reply::{RawEntry, parse_stream_id};
use crate::backend::{Malformation, Record};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::Result;
use crate::message::{EntryId, Envelope, Headers, MessageId};
use crate::name::{GroupName, TopicName};

pub(crate) const F_ID: &str = "id";
pub(crate) const F_PAYLOAD: &str = "payload";
pub(crate) const F_ATTEMPT: &str = "attempt";
pub(crate) const F_TS: &str = "ts";
pub(crate) const HEADER_PREFIX: &str = "h:";
pub(crate) const F_GROUP: &str = "group";
pub(crate) const F_REASON: &str = "reason";
pub(crate) const F_ERROR: &str = "error";
pub(crate) const F_ATTEMPTS: &str = "attempts";
pub(crate) const F_ENTRY: &str = "entry";
pub(crate) const F_DEAD_AT: &str = "dead_at";

/// The most headers decoded from an entry (scripts pass fields as one argument list).
/// Publish allows far fewer ([`crate::message::MAX_HEADERS`]); this bound only protects
/// readers from entries written by other clients.
pub(crate) const MAX_HEADERS: usize = 1000;

/// The longest dead-letter error message kept, in bytes.
const MAX_ERROR_LEN: usize = 4096;

/// Flat `field, value, field, value, …` arguments for XADD.
pub(crate) type Fields = Vec<Bytes>;

fn num(n: impl std::fmt::Display) -> Bytes {
    Bytes::from(n.to_string())
}

/// Checks what the wire format cannot carry, before anything is written. (The payload
/// size limit is the bus's, checked before the backend is called.)
pub(crate) fn check_envelope(env: &Envelope) -> Result<()> {
    crate::message::check_headers(&env.headers)
}

fn push_common(out: &mut Fields, env: &Envelope) {
    out.push(Bytes::from_static(F_ID.as_bytes()));
    out.push(Bytes::copy_from_slice(env.message_id.as_str().as_bytes()));
    out.push(Bytes::from_static(F_PAYLOAD.as_bytes()));
    out.push(env.payload.clone());
}

fn push_headers(out: &mut Fields, headers: &Headers) {
    // Headers past the limit cannot be written (publish refuses them up front); an entry
    // salvaged from elsewhere keeps the first ones.
    for (name, value) in headers.iter().take(MAX_HEADERS) {
        out.push(Bytes::from(format!("{HEADER_PREFIX}{name}")));
        out.push(Bytes::copy_from_slice(value.as_bytes()));
    }
}

/// The fields of a message. `ts` is written only when `with_ts` (the entry id will not
/// carry the first-publish time); `attempt` only when it is not 1.
pub(crate) fn message_fields(env: &Envelope, with_ts: bool) -> Fields {
    let mut out = Vec::with_capacity(8 + env.headers.len() * 2);
    push_common(&mut out, env);
    if env.attempt != 1 {
        out.push(Bytes::from_static(F_ATTEMPT.as_bytes()));
        out.push(num(env.attempt));
    }
    if with_ts {
        out.push(Bytes::from_static(F_TS.as_bytes()));
        out.push(num(env.published_at_ms));
    }
    push_headers(&mut out, &env.headers);
    out
}

/// The fields of a dead letter (its `id` and `topic` come from where it is stored).
pub(crate) fn dead_letter_fields(dead: &DeadLetter) -> Fields {
    let mut out = Vec::with_capacity(20 + dead.headers.len() * 2);
    out.push(Bytes::from_static(F_ID.as_bytes()));
    out.push(Bytes::copy_from_slice(dead.message_id.as_str().as_bytes()));
    out.push(Bytes::from_static(F_PAYLOAD.as_bytes()));
    out.push(dead.payload.clone());
    out.push(Bytes::from_static(F_TS.as_bytes()));
    out.push(num(dead.published_at_ms));
    out.push(Bytes::from_static(F_GROUP.as_bytes()));
    out.push(Bytes::copy_from_slice(dead.group.as_str().as_bytes()));
    out.push(Bytes::from_static(F_REASON.as_bytes()));
    out.push(Bytes::from_static(dead.reason.as_str().as_bytes()));
    out.push(Bytes::from_static(F_ERROR.as_bytes()));
    out.push(Bytes::copy_from_slice(
        truncate(&dead.error, MAX_ERROR_LEN).as_bytes(),
    ));
    out.push(Bytes::from_static(F_ATTEMPTS.as_bytes()));
    out.push(num(dead.attempts));
    out.push(Bytes::from_static(F_ENTRY.as_bytes()));
    out.push(Bytes::copy_from_slice(
        dead.original_entry_id.as_str().as_bytes(),
    ));
    out.push(Bytes::from_static(F_DEAD_AT.as_bytes()));
    out.push(num(dead.dead_at_ms));
    push_headers(&mut out, &dead.headers);
    out
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Encodes a scheduled retry as a retry-set member: netstrings (`<len>:<bytes>`) of the
/// group, a random nonce (so two identical retries stay two members), then the fields
/// to append to the group's lane. `lua/move_retries.lua` parses the same format.
pub(crate) fn retry_member(group: &GroupName, fields: &Fields) -> Vec<u8> {
    let nonce = format!("{:016x}", rand::random::<u64>());
    let size: usize =
        fields.iter().map(|f| f.len() + 12).sum::<usize>() + group.as_str().len() + 40;
    let mut out = Vec::with_capacity(size);
    let mut put = |b: &[u8]| {
        let mut len = String::new();
        let _ = write!(len, "{}:", b.len());
        out.extend_from_slice(len.as_bytes());
        out.extend_from_slice(b);
    };
    put(group.as_str().as_bytes());
    put(nonce.as_bytes());
    for f in fields {
        put(f);
    }
    out
}

/// The millisecond part of a stream id (0 when it is not one).
/// Parses a retry-set member back into its group and fields (the inverse of
/// [`retry_member`]); `None` when it is not well-formed.
pub(crate) fn parse_retry_member(member: &[u8]) -> Option<(GroupName, Fields)> {
    let mut items: Vec<Bytes> = Vec::new();
    let mut rest = member;
    while !rest.is_empty() {
        let colon = rest.iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let start = colon + 1;
        let end = start.checked_add(len)?;
        items.push(Bytes::copy_from_slice(rest.get(start..end)?));
        rest = &rest[end..];
    }
    if items.len() < 4 || !items.len().is_multiple_of(2) {
        return None;
    }
    let group = GroupName::new(std::str::from_utf8(&items[0]).ok()?).ok()?;
    Some((group, items.split_off(2)))
}

pub(crate) fn id_ms(id: &str) -> u64 {
    parse_stream_id(id).map_or(0, |(ms, _)| ms)
}

fn utf8(b: &Bytes) -> Option<String> {
    std::str::from_utf8(b).ok().map(str::to_owned)
}

fn lossy(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_num<T: std::str::FromStr>(b: &Bytes) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A message decoded as far as possible, with the problems found on the way.
struct Salvaged {
    envelope: Envelope,
    problems: Vec<String>,
}

fn salvage_message(entry: &RawEntry) -> Salvaged {
    let mut problems = Vec::new();
    let message_id = match entry.get(F_ID) {
        Some(v) => match utf8(v) {
            Some(s) if !s.is_empty() => MessageId::from_wire(s),
            _ => {
                problems.push("field `id` is empty or not UTF-8".to_owned());
                MessageId::from_wire(format!("entry:{}", entry.id))
            }
        },
        None => {
            problems.push("field `id` is missing".to_owned());
            MessageId::from_wire(format!("entry:{}", entry.id))
        }
    };
    let payload = match entry.get(F_PAYLOAD) {
        Some(v) => v.clone(),
        None => {
            problems.push("field `payload` is missing".to_owned());
            Bytes::new()
        }
    };
    let attempt = match entry.get(F_ATTEMPT) {
        None => 1,
        Some(v) => match parse_num::<u32>(v) {
            Some(n) if n >= 1 => n,
            _ => {
                problems.push(format!(
                    "field `attempt` is not a positive integer: {:?}",
                    lossy(v)
                ));
                1
            }
        },
    };
    let published_at_ms = match entry.get(F_TS) {
        None => id_ms(&entry.id),
        Some(v) => match parse_num::<u64>(v) {
            Some(n) => n,
            None => {
                problems.push(format!("field `ts` is not an integer: {:?}", lossy(v)));
                id_ms(&entry.id)
            }
        },
    };
    let mut headers = Headers::new();
    let mut header_count = 0usize;
    for (name, value) in &entry.fields {
        let Some(name) = name.strip_prefix(HEADER_PREFIX.as_bytes()) else {
            continue;
        };
        header_count += 1;
        if header_count > MAX_HEADERS {
            continue;
        }
        let name = match std::str::from_utf8(name) {
            Ok(n) => n.to_owned(),
            Err(_) => {
                problems.push("a header name is not UTF-8".to_owned());
                String::from_utf8_lossy(name).into_owned()
            }
        };
        let value = match utf8(value) {
            Some(v) => v,
            None => {
                problems.push(format!("header {name:?} is not UTF-8"));
                lossy(value)
            }
        };
        headers.insert(name, value);
    }
    if header_count > MAX_HEADERS {
        problems.push(format!(
            "{header_count} headers, more than the limit of {MAX_HEADERS}"
        ));
    }
    Salvaged {
        envelope: Envelope {
            message_id,
            payload,
            headers,
            attempt,
            published_at_ms,
        },
        problems,
    }
}

/// Decodes a message entry (from a topic or a retry lane).
pub(crate) fn decode_message(entry: &RawEntry, max_payload: usize) -> Record {
    let Salvaged { envelope, problems } = salvage_message(entry);
    if !problems.is_empty() {
        return Record::Malformed {
            problem: Malformation::Decode(problems.join("; ")),
            envelope,
        };
    }
    if envelope.payload.len() > max_payload {
        return Record::Malformed {
            problem: Malformation::TooLarge(envelope.payload.len()),
            envelope,
        };
    }
    Record::Message(envelope)
}

/// Decodes a dead-letter entry strictly: `Err` carries what was salvaged.
fn decode_dead_letter_strict(
    entry: &RawEntry,
    topic: &TopicName,
) -> std::result::Result<DeadLetter, Box<(Vec<String>, DeadLetter)>> {
    let Salvaged {
        envelope,
        mut problems,
    } = salvage_message(entry);
    let text = |name: &str, problems: &mut Vec<String>| -> String {
        match entry.get(name) {
            Some(v) => utf8(v).unwrap_or_else(|| {
                problems.push(format!("field `{name}` is not UTF-8"));
                lossy(v)
            }),
            None => {
                problems.push(format!("field `{name}` is missing"));
                String::new()
            }
        }
    };
    let group_text = text(F_GROUP, &mut problems);
    let group = GroupName::new(group_text.clone()).unwrap_or_else(|_| {
        problems.push(format!(
            "field `group` is not a valid group name: {group_text:?}"
        ));
        unknown_group()
    });
    let reason_text = text(F_REASON, &mut problems);
    let reason = reason_text.parse().unwrap_or_else(|_| {
        problems.push(format!("unknown dead-letter reason {reason_text:?}"));
        DeadLetterReason::Decode
    });
    let error = text(F_ERROR, &mut problems);
    let attempts = match entry.get(F_ATTEMPTS).map(parse_num::<u32>) {
        Some(Some(n)) => n,
        _ => {
            problems.push("field `attempts` is missing or not an integer".to_owned());
            envelope.attempt
        }
    };
    let original = text(F_ENTRY, &mut problems);
    let dead_at_ms = match entry.get(F_DEAD_AT).map(parse_num::<u64>) {
        Some(Some(n)) => n,
        _ => {
            problems.push("field `dead_at` is missing or not an integer".to_owned());
            id_ms(&entry.id)
        }
    };
    let dead = DeadLetter {
        id: EntryId(entry.id.clone()),
        topic: topic.clone(),
        group,
        message_id: envelope.message_id,
        original_entry_id: EntryId(original),
        payload: envelope.payload,
        headers: envelope.headers,
        attempts,
        reason,
        error,
        published_at_ms: envelope.published_at_ms,
        dead_at_ms,
    };
    if problems.is_empty() {
        Ok(dead)
    } else {
        Err(Box::new((problems, dead)))
    }
}

/// The group recorded for a dead letter whose `group` field is unusable.
fn unknown_group() -> GroupName {
    // A literal that satisfies the naming rule: this cannot fail.
    GroupName::new("unknown").expect("\"unknown\" is a valid group name")
}

/// Decodes an entry of a dead-letter queue for a consumer of that queue.
pub(crate) fn decode_dead_letter_record(
    entry: &RawEntry,
    topic: &TopicName,
    max_payload: usize,
) -> Record {
    match decode_dead_letter_strict(entry, topic) {
        Ok(dead) if dead.payload.len() > max_payload => {
            let envelope = envelope_of(&dead);
            Record::Malformed {
                problem: Malformation::TooLarge(dead.payload.len()),
                envelope,
            }
        }
        Ok(dead) => Record::DeadLetter(Box::new(dead)),
        Err(salvaged) => {
            let (problems, dead) = *salvaged;
            Record::Malformed {
                problem: Malformation::Decode(problems.join("; ")),
                envelope: envelope_of(&dead),
            }
        }
    }
}

/// Decodes an entry of a dead-letter queue for listing: a malformed entry is still
/// listed (so it can be seen and purged), with reason `decode` and the problems as its
/// error.
pub(crate) fn decode_dead_letter_lossy(entry: &RawEntry, topic: &TopicName) -> DeadLetter {
    match decode_dead_letter_strict(entry, topic) {
        Ok(dead) => dead,
        Err(salvaged) => {
            let (problems, mut dead) = *salvaged;
            dead.reason = DeadLetterReason::Decode;
            dead.error = format!("malformed dead-letter entry: {}", problems.join("; "));
            dead
        }
    }
}

/// The message a dead letter carries, as attempt 1 (for replay and salvage).
pub(crate) fn envelope_of(dead: &DeadLetter) -> Envelope {
    Envelope {
        message_id: dead.message_id.clone(),
        payload: dead.payload.clone(),
        headers: dead.headers.clone(),
        attempt: 1,
        published_at_ms: dead.published_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str, fields: &[(&str, &[u8])]) -> RawEntry {
        RawEntry {
            id: id.to_owned(),
            fields: fields
                .iter()
                .map(|(f, v)| {
                    (
                        Bytes::copy_from_slice(f.as_bytes()),
                        Bytes::copy_from_slice(v),
                    )
                })
                .collect(),
        }
    }

    fn to_raw(id: &str, fields: &Fields) -> RawEntry {
        RawEntry {
            id: id.to_owned(),
            fields: fields
                .chunks(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect(),
        }
    }

    fn envelope() -> Envelope {
        let mut headers = Headers::new();
        headers.insert("traceparent".into(), "00-abc-def-01".into());
        Envelope {
            message_id: MessageId::new("m-1").expect("id"),
            payload: Bytes::from_static(b"\x00\xffbinary"),
            headers,
            attempt: 3,
            published_at_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn messages_round_trip() {
        let env = envelope();
        let fields = message_fields(&env, true);
        match decode_message(&to_raw("1700000009999-0", &fields), 1024) {
            Record::Message(back) => assert_eq!(back, env),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_common_case_is_two_fields() {
        let mut env = envelope();
        env.attempt = 1;
        env.headers.clear();
        let fields = message_fields(&env, false);
        assert_eq!(fields.len(), 4);
        match decode_message(&to_raw("1700000000500-3", &fields), 1024) {
            Record::Message(back) => {
                assert_eq!(back.attempt, 1);
                assert_eq!(back.published_at_ms, 1_700_000_000_500);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_entries_are_salvaged() {
        let cases: Vec<RawEntry> = vec![
            raw("5-0", &[("payload", b"x")]),
            raw("5-0", &[("id", b"a")]),
            raw(
                "5-0",
                &[("id", b"a"), ("payload", b"x"), ("attempt", b"zero")],
            ),
            raw("5-0", &[("id", b"a"), ("payload", b"x"), ("attempt", b"0")]),
            raw("5-0", &[("id", b"a"), ("payload", b"x"), ("ts", b"-1")]),
            raw("5-0", &[("id", b"\xff"), ("payload", b"x")]),
            raw("5-0", &[("id", b"a"), ("payload", b"x"), ("h:k", b"\xff")]),
            raw("5-0", &[]),
        ];
        for c in cases {
            match decode_message(&c, 1024) {
                Record::Malformed {
                    problem: Malformation::Decode(p),
                    envelope,
                } => {
                    assert!(!p.is_empty());
                    assert_eq!(envelope.attempt, 1);
                }
                other => panic!("{c:?} decoded to {other:?}"),
            }
        }
        let big = raw("5-0", &[("id", b"a"), ("payload", &[7u8; 11])]);
        match decode_message(&big, 10) {
            Record::Malformed {
                problem: Malformation::TooLarge(11),
                envelope,
            } => assert_eq!(envelope.payload.len(), 11),
            other => panic!("unexpected {other:?}"),
        }
        // Unknown fields are ignored (forward compatibility).
        let extra = raw(
            "5-0",
            &[("id", b"a"), ("payload", b"x"), ("source", b"php")],
        );
        assert!(matches!(decode_message(&extra, 10), Record::Message(_)));
    }

    #[test]
    fn dead_letters_round_trip_and_salvage() {
        let topic = TopicName::new("orders").expect("topic");
        let env = envelope();
        let dead = DeadLetter {
            id: EntryId("9-0".into()),
            topic: topic.clone(),
            group: GroupName::new("billing").expect("group"),
            message_id: env.message_id.clone(),
            original_entry_id: EntryId("3-1".into()),
            payload: env.payload.clone(),
            headers: env.headers.clone(),
            attempts: 5,
            reason: DeadLetterReason::Attempts,
            error: "boom".into(),
            published_at_ms: env.published_at_ms,
            dead_at_ms: 1_700_000_100_000,
        };
        let raw_dead = to_raw("9-0", &dead_letter_fields(&dead));
        match decode_dead_letter_record(&raw_dead, &topic, 1024) {
            Record::DeadLetter(back) => assert_eq!(*back, dead),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(decode_dead_letter_lossy(&raw_dead, &topic), dead);
        let broken = raw("9-0", &[("id", b"a"), ("payload", b"x")]);
        assert!(matches!(
            decode_dead_letter_record(&broken, &topic, 1024),
            Record::Malformed { .. }
        ));
        let listed = decode_dead_letter_lossy(&broken, &topic);
        assert_eq!(listed.reason, DeadLetterReason::Decode);
        assert!(listed.error.contains("group"));
    }

    #[test]
    fn retry_members_name_their_group() {
        let g = GroupName::new("grp:1").expect("group");
        let m = retry_member(&g, &message_fields(&envelope(), true));
        assert!(m.starts_with(b"5:grp:116:"));
        assert_ne!(m, retry_member(&g, &message_fields(&envelope(), true)));
    }
}
