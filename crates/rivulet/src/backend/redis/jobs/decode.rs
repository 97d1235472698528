//! Decoding job replies defensively: a malformed hash or reply is
//! [`Error::Protocol`], never a panic.

use std::collections::HashMap;

use bytes::Bytes;
use redis::Value;

use crate::backend::jobs::{Leased, StoredBackoff};
use crate::backend::redis::reply::{self, RawEntry};
use crate::error::{Error, Result};
use crate::jobs::record::{JobEvent, JobInfo};
use crate::name::{JobId, JobName};
use crate::trace::TraceContext;

fn protocol(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("malformed {what}: {detail}"))
}

pub(super) fn array_of<'a>(v: &'a Value, what: &str) -> Result<&'a [Value]> {
    reply::array(v).ok_or_else(|| reply::unexpected(what, v))
}

pub(super) fn text(v: Option<&Value>, what: &str) -> Result<String> {
    v.and_then(reply::string)
        .ok_or_else(|| protocol(what, "a field is missing or not text"))
}

fn number<T: std::str::FromStr>(s: &str, what: &str, field: &str) -> Result<T> {
    s.trim()
        .parse()
        .map_err(|_| protocol(what, format!("{field} is {s:?}")))
}

/// A job hash (`HGETALL`), field → value.
pub(super) struct Fields(HashMap<String, Bytes>);

impl Fields {
    pub(super) fn new(v: &Value) -> Self {
        let map = reply::pairs(v)
            .into_iter()
            .filter_map(|(k, v)| Some((k, Bytes::copy_from_slice(reply::bytes(v)?))))
            .collect();
        Fields(map)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn opt_str(&self, f: &str) -> Result<Option<String>> {
        match self.0.get(f) {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| protocol("job", format!("{f} is not UTF-8"))),
        }
    }

    fn str(&self, f: &str) -> Result<String> {
        self.opt_str(f)?
            .ok_or_else(|| protocol("job", format!("{f} is missing")))
    }

    fn opt_num<T: std::str::FromStr>(&self, f: &str) -> Result<Option<T>> {
        self.opt_str(f)?
            .filter(|s| !s.is_empty())
            .map(|s| number(&s, "job", f))
            .transpose()
    }

    fn num<T: std::str::FromStr>(&self, f: &str) -> Result<T> {
        self.opt_num(f)?
            .ok_or_else(|| protocol("job", format!("{f} is missing")))
    }
}

/// A job from its record and its data kept beside it (`data` is `None` for a record
/// written before the data moved out of it, which holds its own); `None` for an empty
/// record (no such job).
pub(super) fn job_info_with_data(v: &Value, data: Option<Vec<u8>>) -> Result<Option<JobInfo>> {
    let mut f = Fields::new(v);
    if let Some(d) = data
        && !f.is_empty()
    {
        f.0.insert("data".to_owned(), Bytes::from(d));
    }
    job_from(&f)
}

/// A job from its hash alone (the listing script adds the data to it); `None` for an
/// empty hash (no such job).
pub(super) fn job_info(v: &Value) -> Result<Option<JobInfo>> {
    job_from(&Fields::new(v))
}

fn job_from(f: &Fields) -> Result<Option<JobInfo>> {
    if f.is_empty() {
        return Ok(None);
    }
    let id = JobId::new(f.str("id")?).map_err(|e| protocol("job", e))?;
    let name = JobName::new(f.str("name")?).map_err(|e| protocol("job", e))?;
    let progress = match f.0.get("progress") {
        Some(p) => Some(serde_json::from_slice(p).map_err(|e| protocol("job progress", e))?),
        None => None,
    };
    Ok(Some(JobInfo {
        id,
        name,
        state: f.str("state")?.parse()?,
        data: f.0.get("data").cloned().unwrap_or_default(),
        priority: f.num("priority")?,
        attempt: f.num("attempt")?,
        max_attempts: f.num("max_attempts")?,
        stalls: f.num("stalls")?,
        added_at_ms: f.num("added_at")?,
        run_at_ms: f.opt_num("run_at")?,
        started_at_ms: f.opt_num("started_at")?,
        finished_at_ms: f.opt_num("finished_at")?,
        progress,
        result: f.0.get("result").cloned(),
        error: f.opt_str("error")?,
        dedup_key: f.opt_str("dedup")?,
        cancel_requested: f.opt_str("cancel_requested")?.as_deref() == Some("1"),
        worker: f.opt_str("worker")?,
    }))
}

/// A leased job as `jobs_fetch.lua` returns it.
pub(super) fn leased(v: &Value) -> Result<Leased> {
    const WHAT: &str = "leased job";
    let items = array_of(v, WHAT)?;
    let t = |i: usize| text(items.get(i), WHAT);
    let n = |i: usize, field: &str| -> Result<u64> { number(&t(i)?, WHAT, field) };
    let timeout = t(8)?;
    Ok(Leased {
        id: JobId::new(t(0)?).map_err(|e| protocol(WHAT, e))?,
        name: JobName::new(t(1)?).map_err(|e| protocol(WHAT, e))?,
        data: items
            .get(2)
            .and_then(reply::bytes)
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| protocol(WHAT, "data is missing"))?,
        attempt: number(&t(3)?, WHAT, "attempt")?,
        max_attempts: number(&t(4)?, WHAT, "max_attempts")?,
        backoff: StoredBackoff {
            base_ms: n(5, "backoff_base")?,
            multiplier: number(&t(6)?, WHAT, "backoff_mult")?,
            max_ms: n(7, "backoff_max")?,
        },
        timeout_ms: if timeout.is_empty() {
            None
        } else {
            Some(number(&timeout, WHAT, "timeout")?)
        },
        token: n(9, "token")?,
        added_at_ms: n(10, "added_at")?,
        // Written by this version; absent from jobs leased by an older one.
        ready_at_ms: match text(items.get(11), WHAT).ok().filter(|s| !s.is_empty()) {
            Some(s) => number(&s, WHAT, "ready_at")?,
            None => n(10, "added_at")?,
        },
        trace: text(items.get(12), WHAT)
            .ok()
            .filter(|s| !s.is_empty())
            .map(|traceparent| TraceContext {
                traceparent,
                tracestate: text(items.get(13), WHAT).ok().filter(|s| !s.is_empty()),
            }),
    })
}

/// One entry of a queue's event stream.
pub(super) fn event(raw: &RawEntry) -> Result<JobEvent> {
    const WHAT: &str = "job event";
    let field = |f: &str| -> Result<Option<String>> {
        raw.get(f)
            .map(|b| {
                std::str::from_utf8(b)
                    .map(str::to_owned)
                    .map_err(|_| protocol(WHAT, format!("{f} is not UTF-8")))
            })
            .transpose()
    };
    let need = |f: &str| -> Result<String> {
        field(f)?.ok_or_else(|| protocol(WHAT, format!("{f} is missing in {}", raw.id)))
    };
    Ok(JobEvent {
        id: raw.id.clone(),
        kind: need("kind")?.parse()?,
        job: JobId::new(need("job")?).map_err(|e| protocol(WHAT, e))?,
        attempt: number(&need("attempt")?, WHAT, "attempt")?,
        detail: field("detail")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn malformed_jobs_are_protocol_errors() {
        assert!(job_info(&Value::Array(vec![])).unwrap().is_none());
        assert!(job_info(&Value::Nil).unwrap().is_none());
        let bad = Value::Array(vec![bulk("id"), bulk("x"), bulk("name"), bulk("n")]);
        assert!(matches!(job_info(&bad), Err(Error::Protocol(_))));
        let mut fields: Vec<Value> = [
            ("id", "x"),
            ("name", "n"),
            ("state", "waiting"),
            ("data", "{}"),
            ("priority", "nope"),
            ("attempt", "0"),
            ("max_attempts", "1"),
            ("stalls", "0"),
            ("added_at", "1"),
        ]
        .iter()
        .flat_map(|(k, v)| [bulk(k), bulk(v)])
        .collect();
        assert!(matches!(
            job_info(&Value::Array(fields.clone())),
            Err(Error::Protocol(_))
        ));
        fields[9] = bulk("3");
        let ok = job_info(&Value::Array(fields.clone())).unwrap().unwrap();
        assert_eq!(ok.priority, 3);
        fields[5] = bulk("limbo");
        assert!(matches!(
            job_info(&Value::Array(fields)),
            Err(Error::Protocol(_))
        ));
        assert!(leased(&Value::Int(3)).is_err());
        assert!(leased(&Value::Array(vec![bulk("a")])).is_err());
    }
}
