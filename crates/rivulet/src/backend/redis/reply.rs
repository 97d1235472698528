//! Defensive reading of Redis replies. Nothing here panics or fails on an unexpected
//! shape: callers get `None` or an empty list and decide what that means. Both RESP2
//! (flat arrays) and RESP3 (maps) shapes are accepted.

use bytes::Bytes;
use redis::Value;

use crate::error::Error;

/// One stream entry as Redis returned it: its id and its field/value pairs in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Bytes, Bytes)>,
}

impl RawEntry {
    /// The value of the last field named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Bytes> {
        self.fields
            .iter()
            .rev()
            .find(|(f, _)| f.as_ref() == name.as_bytes())
            .map(|(_, v)| v)
    }
}

pub(crate) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

pub(crate) fn string(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| std::str::from_utf8(b).ok().map(str::to_owned))
}

pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => bytes(other).and_then(|b| std::str::from_utf8(b).ok()?.trim().parse().ok()),
    }
}

pub(crate) fn uint(v: &Value) -> Option<u64> {
    int(v).and_then(|i| u64::try_from(i).ok())
}

pub(crate) fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// Key/value pairs of a RESP3 map or a RESP2 flat array, with string keys.
pub(crate) fn pairs(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((string(k)?, v)))
            .collect(),
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|kv| Some((string(&kv[0])?, &kv[1])))
            .collect(),
        _ => Vec::new(),
    }
}

/// The value of `name` in a map-shaped reply.
pub(crate) fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    pairs(v)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn to_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::Int(i) => Some(Bytes::from(i.to_string())),
        other => bytes(other).map(Bytes::copy_from_slice),
    }
}

/// The field/value pairs of an entry (a flat array, or a RESP3 map).
fn entry_fields(v: &Value) -> Vec<(Bytes, Bytes)> {
    match v {
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((to_bytes(k)?, to_bytes(v)?)))
            .collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((to_bytes(k)?, to_bytes(v)?)),
                // An odd trailing field name: keep it with an empty value so the decoder
                // can report it rather than silently dropping it.
                [k] => Some((to_bytes(k)?, Bytes::new())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One `[id, fields]` pair. `Ok(None)`-like split: the id with `None` fields for an entry
/// whose data is gone (a nil in place of the fields).
pub(crate) fn entry(v: &Value) -> Option<(String, Option<RawEntry>)> {
    let items = array(v)?;
    let id = string(items.first()?)?;
    match items.get(1) {
        None | Some(Value::Nil) => Some((id, None)),
        Some(fields) => {
            let fields = entry_fields(fields);
            Some((id.clone(), Some(RawEntry { id, fields })))
        }
    }
}

/// A list of entries (the reply of XRANGE, or one stream of XREADGROUP). Entries whose
/// data is gone are returned as ids in the second list.
pub(crate) fn entries(v: &Value) -> (Vec<RawEntry>, Vec<String>) {
    let mut present = Vec::new();
    let mut gone = Vec::new();
    for item in array(v).unwrap_or(&[]) {
        match entry(item) {
            Some((_, Some(e))) => present.push(e),
            Some((id, None)) => gone.push(id),
            None => {}
        }
    }
    (present, gone)
}

/// The reply of XREAD/XREADGROUP: entries per stream key.
pub(crate) fn streams(v: &Value) -> Vec<(String, Vec<RawEntry>)> {
    let per_key: Vec<(String, &Value)> = match v {
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((string(k)?, v)))
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|kv| {
                let kv = array(kv)?;
                Some((string(kv.first()?)?, kv.get(1)?))
            })
            .collect(),
        _ => Vec::new(),
    };
    per_key
        .into_iter()
        .map(|(k, v)| (k, entries(v).0))
        .collect()
}

/// A stream id `ms-seq` split into its parts.
pub(crate) fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Whether the error is Redis's `NOGROUP` (the group or the stream does not exist).
pub(crate) fn is_nogroup(e: &redis::RedisError) -> bool {
    // A failed command inside a pipeline (an ack sent with a read) is reported as a
    // pipeline error that carries the server errors.
    e.code() == Some("NOGROUP")
        || e.clone()
            .into_server_errors()
            .is_some_and(|errs| errs.iter().any(|(_, s)| s.code() == "NOGROUP"))
}

/// An error for a reply that does not have the expected shape.
pub(crate) fn unexpected(what: &str, v: &Value) -> Error {
    let mut shown = format!("{v:?}");
    if shown.len() > 200 {
        let mut end = 200;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push('…');
    }
    Error::Protocol(format!("unexpected reply to {what}: {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn stream_ids() {
        assert_eq!(parse_stream_id("1-2"), Some((1, 2)));
        assert_eq!(parse_stream_id("x-2"), None);
        assert_eq!(parse_stream_id("12"), None);
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        assert!(streams(&Value::Nil).is_empty());
        assert!(streams(&Value::Int(3)).is_empty());
        assert!(streams(&Value::Array(vec![Value::Nil, Value::Array(vec![])])).is_empty());
        let (e, gone) = entries(&Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Nil]),
            Value::Array(vec![
                bulk("2-0"),
                Value::Array(vec![bulk("a"), bulk("b"), bulk("c")]),
            ]),
            Value::Int(7),
        ]));
        assert_eq!(gone, vec!["1-0".to_owned()]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].fields.len(), 2);
        assert_eq!(e[0].get("c").map(|b| b.len()), Some(0));
    }

    #[test]
    fn resp3_maps_are_read() {
        let v = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("id"), bulk("x")]),
            ])]),
        )]);
        let s = streams(&v);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, "s");
        assert_eq!(s[0].1[0].get("id").map(|b| b.as_ref()), Some(&b"x"[..]));
    }
}
