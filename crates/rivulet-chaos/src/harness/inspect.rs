//! What the harness reads and writes in Redis directly (never through the proxy).
//!
//! It relies on the documented key layout (`crates/rivulet/src/backend/redis/keys.rs`,
//! `docs/wire-format.md`) with the default prefix `rivulet`:
//! `{rivulet/topic/<topic>}/stream`, `{rivulet/topic/<topic>}/lane/<group>` (a group's retry lane,
//! where the group exists too) and `{rivulet/topic/<topic>}/retry` (scheduled retries).
//! Every raw key name the suite uses is built by the functions right below, and nowhere
//! else: a change of the layout is one edit here.
//! Dead letters are read (and replayed) through the library's public API.

use std::collections::HashMap;
use std::time::Duration;

use redis::{ConnectionLike, Value};

use crate::checker::{DeadRecord, Planted};
use crate::probe::{Msg, Target, now_ms};

const PREFIX: &str = "rivulet";

/// The hash tag every key of a topic shares.
fn tag(topic: &str) -> String {
    format!("{{{PREFIX}/topic/{topic}}}")
}

/// The topic's stream.
pub(crate) fn stream_key(topic: &str) -> String {
    format!("{}/stream", tag(topic))
}

/// A group's retry lane.
fn lane_key(topic: &str, group: &str) -> String {
    format!("{}/lane/{group}", tag(topic))
}

/// The topic's retry set (scheduled retries of every group).
fn retry_key(topic: &str) -> String {
    format!("{}/retry", tag(topic))
}

/// Where the harness keeps the retry set's members while the key is broken (same hash
/// tag, so the swap is one atomic script on a cluster too). Not a library key.
fn retry_aside_key(topic: &str) -> String {
    format!("{}/chaos-retry-aside", tag(topic))
}

/// A short-lived blocking connection (single server or cluster).
pub(crate) fn connect(target: &Target) -> Result<Box<dyn ConnectionLike + Send>, String> {
    let timeout = Duration::from_secs(2);
    match target {
        Target::Single { url } => {
            let client = redis::Client::open(url.as_str()).map_err(|e| format!("client: {e}"))?;
            let con = client
                .get_connection_with_timeout(timeout)
                .map_err(|e| format!("connect {url}: {e}"))?;
            con.set_read_timeout(Some(timeout))
                .and_then(|()| con.set_write_timeout(Some(timeout)))
                .map_err(|e| format!("timeouts: {e}"))?;
            Ok(Box::new(con))
        }
        Target::Cluster { urls } => {
            let client = redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()
                .map_err(|e| format!("cluster client: {e}"))?;
            let con = client
                .get_connection()
                .map_err(|e| format!("cluster connect: {e}"))?;
            Ok(Box::new(con))
        }
        Target::Sentinel { master, sentinels } => {
            let url = sentinel_master_url(master, sentinels, timeout)?;
            connect(&Target::Single { url })
        }
    }
}

/// The URL of the master the first answering sentinel names.
fn sentinel_master_url(
    master: &str,
    sentinels: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let mut last = String::from("no sentinel");
    for s in sentinels {
        let asked = redis::Client::open(format!("redis://{s}/"))
            .and_then(|c| c.get_connection_with_timeout(timeout))
            .and_then(|mut con| {
                con.set_read_timeout(Some(timeout))?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query::<(String, u16)>(&mut con)
            });
        match asked {
            Ok((host, port)) => return Ok(format!("redis://{host}:{port}/")),
            Err(e) => last = format!("sentinel {s}: {e}"),
        }
    }
    Err(last)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// A reply that is a map (RESP3) or a flat field/value array (RESP2).
fn as_map(v: &Value) -> HashMap<String, Value> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v.clone())))
            .collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((text(k)?, v.clone())),
                _ => None,
            })
            .collect(),
        _ => HashMap::new(),
    }
}

/// Work left in Redis for the run's groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Outstanding {
    /// Entries delivered and not acknowledged (topic and lanes).
    pub(crate) pending: u64,
    /// Entries not yet delivered to a group (topic and lanes).
    pub(crate) undelivered: u64,
    /// Retries scheduled and not yet moved into a lane.
    pub(crate) scheduled: u64,
}

impl Outstanding {
    pub(crate) fn total(&self) -> u64 {
        self.pending + self.undelivered + self.scheduled
    }
}

/// Pending and undelivered counts of `group` on `stream` (0, 0 when either is missing).
fn group_state(
    con: &mut dyn ConnectionLike,
    stream: &str,
    group: &str,
) -> Result<(u64, u64), String> {
    let reply: Value = match redis::cmd("XINFO").arg("GROUPS").arg(stream).query(con) {
        Ok(v) => v,
        Err(e) if e.code() == Some("ERR") && e.to_string().contains("no such key") => {
            return Ok((0, 0));
        }
        Err(e) => return Err(format!("XINFO GROUPS {stream}: {e}")),
    };
    let groups = match &reply {
        Value::Array(items) | Value::Set(items) => items.clone(),
        _ => Vec::new(),
    };
    for g in &groups {
        let info = as_map(g);
        if info.get("name").and_then(text).as_deref() != Some(group) {
            continue;
        }
        let pending = info.get("pending").and_then(int).unwrap_or(0);
        // Undelivered entries are counted from the group's position rather than taken
        // from `lag`: Redis cannot always compute `lag`, and after a cluster failover
        // the promoted replica's `entries-read` may disagree with its stream.
        let undelivered = match info.get("last-delivered-id").and_then(text) {
            Some(last) => {
                let after: Vec<Value> = redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(format!("({last}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(100_000)
                    .query(con)
                    .map_err(|e| format!("XRANGE {stream}: {e}"))?;
                after.len() as u64
            }
            None => 0,
        };
        return Ok((u64::try_from(pending).unwrap_or(0), undelivered));
    }
    Ok((0, 0))
}

/// Counts what is still pending, undelivered or scheduled for `groups` of `topic`.
pub(crate) fn outstanding(
    target: &Target,
    topic: &str,
    groups: &[String],
) -> Result<Outstanding, String> {
    let mut con = connect(target)?;
    let con = con.as_mut();
    let mut out = Outstanding::default();
    for group in groups {
        for stream in [stream_key(topic), lane_key(topic, group)] {
            let (pending, lag) = group_state(con, &stream, group)?;
            out.pending += pending;
            out.undelivered += lag;
        }
    }
    let scheduled: i64 = redis::cmd("ZCARD")
        .arg(retry_key(topic))
        .query(con)
        .map_err(|e| format!("ZCARD: {e}"))?;
    out.scheduled = u64::try_from(scheduled).unwrap_or(0);
    Ok(out)
}

/// How many entries the topic's stream holds and how many were ever added (the
/// difference was trimmed).
pub(crate) fn stream_counts(target: &Target, topic: &str) -> Result<(u64, u64), String> {
    let mut con = connect(target)?;
    let info: Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream_key(topic))
        .query(con.as_mut())
        .map_err(|e| format!("XINFO STREAM: {e}"))?;
    let info = as_map(&info);
    let get = |k: &str| {
        info.get(k)
            .and_then(int)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    };
    Ok((get("length"), get("entries-added")))
}

/// A readable dump of the groups of `topic` (for the run directory when a drain fails).
pub(crate) fn dump(target: &Target, topic: &str, groups: &[String]) -> String {
    let mut out = String::new();
    let mut con = match connect(target) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut streams = vec![stream_key(topic)];
    streams.extend(groups.iter().map(|g| lane_key(topic, g)));
    for stream in streams {
        for sub in ["STREAM", "GROUPS"] {
            let v: redis::RedisResult<Value> = redis::cmd("XINFO")
                .arg(sub)
                .arg(&stream)
                .query(con.as_mut());
            out.push_str(&format!("XINFO {sub} {stream}: {v:?}\n"));
        }
    }
    out
}

/// A raw entry the harness writes itself, bypassing the library.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(String, Vec<u8>)>,
}

/// Appends raw entries to the topic's stream; returns them as planted (acknowledged).
pub(crate) fn plant(
    target: &Target,
    topic: &str,
    entries: &[RawEntry],
) -> Result<Vec<Planted>, String> {
    let mut con = connect(target)?;
    let stream = stream_key(topic);
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream).arg("*");
        for (k, v) in &e.fields {
            cmd.arg(k.as_str()).arg(v.as_slice());
        }
        let _: String = cmd
            .query(con.as_mut())
            .map_err(|e| format!("XADD raw entry: {e}"))?;
        out.push(Planted {
            id: e.id.clone(),
            t: now_ms(),
        });
    }
    Ok(out)
}

/// Reads every dead letter of `topic` through the library, mapping each to the probe id
/// in its payload (or its message id when the payload is not a probe message).
pub(crate) async fn dead_letters(target: &Target, topic: &str) -> Result<Vec<DeadRecord>, String> {
    let bus = harness_bus(target).await?;
    let dead_letters = bus
        .dead_letters(topic)
        .map_err(|e| format!("dead letters: {e}"))?;
    let mut out = Vec::new();
    let mut after: Option<rivulet::EntryId> = None;
    loop {
        let page = dead_letters
            .list(after.as_ref(), 500)
            .await
            .map_err(|e| format!("list dead letters: {e}"))?;
        for d in &page {
            let id = serde_json::from_slice::<Msg>(&d.payload)
                .map(|m| m.id)
                .unwrap_or_else(|_| d.message_id.to_string());
            out.push(DeadRecord {
                id,
                group: d.group.to_string(),
                reason: d.reason.to_string(),
            });
        }
        match page.last() {
            Some(last) if page.len() == 500 => after = Some(last.id.clone()),
            _ => break,
        }
    }
    bus.shutdown().await;
    Ok(out)
}

/// Destroys `group` the way an operator would with raw commands: `XGROUP DESTROY` on the
/// topic's stream, and with `with_lane` also the group's retry lane (`DEL`). Returns
/// whether the group existed on the stream.
pub(crate) fn destroy_group(
    target: &Target,
    topic: &str,
    group: &str,
    with_lane: bool,
) -> Result<bool, String> {
    let mut con = connect(target)?;
    let destroyed: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(stream_key(topic))
        .arg(group)
        .query(con.as_mut())
        .map_err(|e| format!("XGROUP DESTROY {group}: {e}"))?;
    if with_lane {
        let _: i64 = redis::cmd("DEL")
            .arg(lane_key(topic, group))
            .query(con.as_mut())
            .map_err(|e| format!("DEL lane of {group}: {e}"))?;
    }
    Ok(destroyed == 1)
}

/// Replaces the topic's retry set by a string, keeping its members aside, in one step.
/// Returns how many members were set aside.
pub(crate) fn break_retry_set(target: &Target, topic: &str) -> Result<i64, String> {
    let mut con = connect(target)?;
    redis::Script::new(
        r"
        local n = 0
        if redis.call('TYPE', KEYS[1])['ok'] == 'zset' then
          n = redis.call('ZCARD', KEYS[1])
          redis.call('RENAME', KEYS[1], KEYS[2])
        end
        redis.call('SET', KEYS[1], 'broken by rivulet-chaos')
        return n
        ",
    )
    .key(retry_key(topic))
    .key(retry_aside_key(topic))
    .invoke(con.as_mut())
    .map_err(|e| format!("break the retry set: {e}"))
}

/// Deletes the string in the retry set's place and puts the members set aside back, in
/// one step (nothing else can write a retry in between). Returns how many came back.
pub(crate) fn repair_retry_set(target: &Target, topic: &str) -> Result<i64, String> {
    let mut con = connect(target)?;
    redis::Script::new(
        r"
        if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then
          redis.call('DEL', KEYS[1])
        end
        if redis.call('EXISTS', KEYS[2]) == 1 then
          local n = redis.call('ZCARD', KEYS[2])
          redis.call('ZUNIONSTORE', KEYS[1], 2, KEYS[1], KEYS[2])
          redis.call('DEL', KEYS[2])
          return n
        end
        return 0
        ",
    )
    .key(retry_key(topic))
    .key(retry_aside_key(topic))
    .invoke(con.as_mut())
    .map_err(|e| format!("repair the retry set: {e}"))
}

/// Sets `maxmemory`; returns the previous value.
pub(crate) fn set_maxmemory(target: &Target, value: &str) -> Result<String, String> {
    let mut con = connect(target)?;
    let before: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(con.as_mut())
        .map_err(|e| format!("CONFIG GET maxmemory: {e}"))?;
    let _: Value = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(value)
        .query(con.as_mut())
        .map_err(|e| format!("CONFIG SET maxmemory {value}: {e}"))?;
    Ok(before.get(1).cloned().unwrap_or_else(|| "0".into()))
}

/// What replaying every dead letter did.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub(crate) listed: u64,
    pub(crate) replayed: u64,
    pub(crate) refused: u64,
    pub(crate) errors: Vec<String>,
}

async fn harness_bus(target: &Target) -> Result<rivulet::Bus, String> {
    let builder = match target {
        Target::Single { url } => rivulet::RedisBackend::builder(url.clone()),
        Target::Cluster { urls } => rivulet::backend::redis::RedisBackendBuilder::cluster(urls),
        Target::Sentinel { master, sentinels } => {
            rivulet::backend::redis::RedisBackendBuilder::sentinel(master.clone(), sentinels)
        }
    };
    let backend = builder.build().await.map_err(|e| format!("connect: {e}"))?;
    rivulet::Bus::builder(backend)
        .app("chaos")
        .build()
        .map_err(|e| format!("bus: {e}"))
}

/// Replays every dead letter of `topic` through the library, one by one, as an operator
/// would; an error on one does not stop the others (the library may refuse a replay).
pub(crate) async fn replay_dead_letters(target: &Target, topic: &str) -> Result<Replayed, String> {
    let bus = harness_bus(target).await?;
    let dead_letters = bus
        .dead_letters(topic)
        .map_err(|e| format!("dead letters: {e}"))?;
    let mut all = Vec::new();
    let mut after: Option<rivulet::EntryId> = None;
    loop {
        let page = dead_letters
            .list(after.as_ref(), 500)
            .await
            .map_err(|e| format!("list dead letters: {e}"))?;
        all.extend(page.iter().map(|d| d.id.clone()));
        match page.last() {
            Some(last) if page.len() == 500 => after = Some(last.id.clone()),
            _ => break,
        }
    }
    let mut out = Replayed {
        listed: all.len() as u64,
        ..Replayed::default()
    };
    for id in &all {
        match dead_letters.replay(id).await {
            Ok(true) => out.replayed += 1,
            Ok(false) => out.refused += 1,
            Err(e) => {
                out.refused += 1;
                if out.errors.len() < 3 {
                    out.errors.push(e.to_string());
                }
            }
        }
    }
    bus.shutdown().await;
    Ok(out)
}
