//! The reads `rivulet doctor` makes on Redis ([`Diagnostics`]): the registries, `XINFO`
//! per group, counts by score range, and `CONFIG GET` / `INFO memory` for the settings.
//! Nothing scans the keyspace; the cost is bounded per topic, group and queue.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, Value};

use super::conn::Conn;
use super::jobs::keys::QueueKeys;
use super::{RedisBackend, millis, reply};
use crate::backend::diagnostics::{
    ConsumerHealth, DeadLetterHealth, GroupHealth, LogHealth, Probe, QueueHealth, Reading,
    ServerSettings,
};
use crate::backend::{Diagnostics, EntryRef, Lane, StreamKey};
use crate::error::Result;
use crate::message::EntryId;
use crate::name::{ConsumerName, GroupName, QueueName, TopicName};

/// Reads (and on request sets) a queue's parked counter against its parked sets.
static PARKED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/doctor_parked.lua")));

/// Whether a Redis error says the key does not exist (`XINFO` on a missing stream).
fn no_such_key(e: &redis::RedisError) -> bool {
    e.detail().is_some_and(|d| d.contains("no such key"))
}

/// `XINFO` on a stream that may not exist (or a group that may be gone): `None` then.
async fn xinfo(conn: &mut Conn, cmd: &redis::Cmd) -> Result<Option<Value>> {
    match cmd.query_async::<Value>(conn).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if no_such_key(&e) || reply::is_nogroup(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `CONFIG GET <name>` as one string, or why not (managed Redis, an ACL user without
/// `CONFIG`, a proxy that refuses it).
async fn config_get(conn: &mut Conn, name: &str) -> Reading<String> {
    let r: redis::RedisResult<Value> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await;
    match r {
        Ok(v) => reply::field(&v, name)
            .and_then(reply::string)
            .ok_or_else(|| format!("CONFIG GET {name} returned nothing")),
        Err(e) => Err(format!("CONFIG GET {name} refused: {e}")),
    }
}

/// `used_memory` and `maxmemory` of one `INFO memory` text.
fn memory_of(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((field("used_memory")?, field("maxmemory")?))
}

/// `used_memory` and `maxmemory` from `INFO memory`. A cluster answers per master (a
/// map of node to text): the node closest to its limit is the one that matters.
async fn memory(conn: &mut Conn) -> Reading<(u64, u64)> {
    let r: redis::RedisResult<Value> = redis::cmd("INFO").arg("memory").query_async(conn).await;
    let v = r.map_err(|e| format!("INFO memory refused: {e}"))?;
    let texts: Vec<String> = match &v {
        Value::Map(nodes) => nodes.iter().filter_map(|(_, t)| reply::string(t)).collect(),
        other => reply::string(other).into_iter().collect(),
    };
    let ratio = |(used, max): (u64, u64)| {
        if max == 0 {
            0.0
        } else {
            used as f64 / max as f64
        }
    };
    texts
        .iter()
        .filter_map(|t| memory_of(t))
        .max_by(|a, b| ratio(*a).total_cmp(&ratio(*b)))
        .ok_or_else(|| "INFO memory has no used_memory/maxmemory".to_owned())
}

/// The score of the first member of a `ZRANGE … 0 0 WITHSCORES` reply: RESP2 gives
/// `[member, score]`, RESP3 `[[member, score]]` with the score a double.
fn first_score(v: &Value) -> Option<u64> {
    let items = reply::array(v)?;
    let score = match items.first()? {
        Value::Array(pair) => pair.get(1)?,
        _ => items.get(1)?,
    };
    let f = match score {
        Value::Double(f) => *f,
        Value::Int(i) => *i as f64,
        other => reply::string(other)?.parse::<f64>().ok()?,
    };
    Some(f.max(0.0) as u64)
}

impl RedisBackend {
    /// Consumers holding entries on `stream` in `group`, by name: (idle, pending).
    async fn consumers(
        &self,
        conn: &mut Conn,
        stream: &str,
        group: &str,
        into: &mut BTreeMap<String, (u64, u64)>,
    ) -> Result<()> {
        let Some(v) = xinfo(
            conn,
            redis::cmd("XINFO").arg("CONSUMERS").arg(stream).arg(group),
        )
        .await?
        else {
            return Ok(());
        };
        for c in reply::array(&v).unwrap_or(&[]) {
            let Some(name) = reply::field(c, "name").and_then(reply::string) else {
                continue;
            };
            let pending = reply::field(c, "pending")
                .and_then(reply::uint)
                .unwrap_or(0);
            let idle = reply::field(c, "idle").and_then(reply::uint).unwrap_or(0);
            let seen = into.entry(name).or_insert((u64::MAX, 0));
            seen.0 = seen.0.min(idle);
            seen.1 += pending;
        }
        Ok(())
    }
}

#[async_trait]
impl Diagnostics for RedisBackend {
    async fn clock_ms(&self) -> Result<u64> {
        let mut conn = self.conn()?;
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(secs.saturating_mul(1000).saturating_add(micros / 1000))
    }

    async fn server_settings(&self) -> Result<ServerSettings> {
        let mut conn = self.conn()?;
        Ok(ServerSettings::Read {
            appendonly: config_get(&mut conn, "appendonly").await,
            eviction: config_get(&mut conn, "maxmemory-policy").await,
            memory: memory(&mut conn).await,
        })
    }

    async fn log_health(&self, key: &StreamKey, probe: &Probe) -> Result<LogHealth> {
        let keys = self.log_keys(key);
        let mut conn = self.conn()?;
        let (length, registered, broadcast, overdue, earliest): (
            u64,
            Vec<String>,
            Vec<String>,
            u64,
            Value,
        ) = redis::pipe()
            .cmd("XLEN")
            .arg(&keys.stream)
            .cmd("SMEMBERS")
            .arg(keys.groups())
            .cmd("SMEMBERS")
            .arg(keys.broadcast())
            .cmd("ZCOUNT")
            .arg(keys.retry())
            .arg("-inf")
            .arg(format!("({}", probe.overdue_before_ms))
            .cmd("ZRANGE")
            .arg(keys.retry())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let earliest_retry_ms = first_score(&earliest);

        // The groups on the stream, with their pending counts and lag.
        let mut on_stream: BTreeMap<String, (u64, Option<u64>)> = BTreeMap::new();
        if let Some(v) = xinfo(
            &mut conn,
            redis::cmd("XINFO").arg("GROUPS").arg(&keys.stream),
        )
        .await?
        {
            for g in reply::array(&v).unwrap_or(&[]) {
                let Some(name) = reply::field(g, "name").and_then(reply::string) else {
                    continue;
                };
                let pending = reply::field(g, "pending")
                    .and_then(reply::uint)
                    .unwrap_or(0);
                let lag = reply::field(g, "lag").and_then(reply::uint);
                on_stream.insert(name, (pending, lag));
            }
        }
        let mut names: Vec<String> = on_stream.keys().cloned().collect();
        names.extend(registered.iter().cloned());
        names.extend(broadcast.iter().cloned());
        names.sort();
        names.dedup();

        let mut groups = Vec::with_capacity(names.len());
        for name in names {
            let is_broadcast = broadcast.contains(&name);
            let heartbeat = match GroupName::new(name.clone()) {
                Ok(g) if is_broadcast => {
                    let alive: u64 = redis::cmd("EXISTS")
                        .arg(keys.heartbeat(&g))
                        .query_async(&mut conn)
                        .await?;
                    alive > 0
                }
                _ => false,
            };
            let (main_pending, lag) = on_stream.get(&name).copied().unwrap_or((0, None));
            let mut consumers = BTreeMap::new();
            if on_stream.contains_key(&name) {
                self.consumers(&mut conn, &keys.stream, &name, &mut consumers)
                    .await?;
                self.consumers(&mut conn, &keys.lane(&name), &name, &mut consumers)
                    .await?;
            }
            let held: u64 = consumers.values().map(|c| c.1).sum::<u64>();
            groups.push(GroupHealth {
                registered: registered.contains(&name),
                exists: on_stream.contains_key(&name),
                broadcast: is_broadcast,
                heartbeat,
                lag,
                pending: held.max(main_pending),
                consumers: consumers
                    .into_iter()
                    .filter(|(_, (_, pending))| *pending > 0)
                    .map(|(name, (idle_ms, pending))| ConsumerHealth {
                        name,
                        idle_ms,
                        pending,
                    })
                    .collect(),
                name,
            });
        }
        Ok(LogHealth {
            length,
            groups,
            retries_overdue: overdue,
            earliest_retry_ms,
        })
    }

    async fn dead_letter_health(
        &self,
        topic: &TopicName,
        probe: &Probe,
    ) -> Result<DeadLetterHealth> {
        let stream = self.topic_keys(topic).dead_letters();
        let mut conn = self.conn()?;
        let (length, recent): (u64, Vec<Value>) = redis::pipe()
            .cmd("XLEN")
            .arg(&stream)
            .cmd("XRANGE")
            .arg(&stream)
            .arg(probe.recent_since_ms)
            .arg("+")
            .arg("COUNT")
            .arg(probe.recent_cap.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(DeadLetterHealth {
            length,
            recent: recent.len() as u64,
        })
    }

    async fn queue_health(&self, queue: &QueueName, probe: &Probe) -> Result<QueueHealth> {
        let keys = QueueKeys::new(&self.inner.prefix, queue);
        let active = keys.state_set("active");
        let mut conn = self.conn()?;
        let (expired, earliest): (u64, Value) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(&active)
            .arg("-inf")
            .arg(format!("({}", probe.lease_expired_before_ms))
            .cmd("ZRANGE")
            .arg(&active)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let (counter, jobs) = self.parked(&mut conn, &keys, false).await?;
        Ok(QueueHealth {
            leases_expired: expired,
            earliest_lease_ms: first_score(&earliest),
            parked_counter: counter,
            parked_jobs: jobs,
        })
    }

    async fn stale_pending(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        min_idle: Duration,
        limit: usize,
    ) -> Result<Vec<EntryRef>> {
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        let mut conn = self.conn()?;
        let mut out = Vec::new();
        for (stream, which) in [
            (lane.as_str(), Lane::Retry),
            (keys.stream.as_str(), Lane::Main),
        ] {
            let want = limit.saturating_sub(out.len());
            if want == 0 {
                break;
            }
            // XPENDING … IDLE (Redis 6.2+): only entries idle for at least `min_idle`.
            let Some(v) = xinfo(
                &mut conn,
                redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(group.as_str())
                    .arg("IDLE")
                    .arg(millis(min_idle))
                    .arg("-")
                    .arg("+")
                    .arg(want)
                    .arg(consumer.as_str()),
            )
            .await?
            else {
                continue;
            };
            out.extend(
                reply::array(&v)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|p| reply::array(p)?.first().and_then(reply::string))
                    .map(|id| EntryRef {
                        lane: which,
                        id: EntryId(id),
                    }),
            );
        }
        Ok(out)
    }

    async fn recount_parked(&self, queue: &QueueName) -> Result<(i64, u64)> {
        let keys = QueueKeys::new(&self.inner.prefix, queue);
        let mut conn = self.conn()?;
        self.parked(&mut conn, &keys, true).await
    }
}

impl RedisBackend {
    async fn parked(&self, conn: &mut Conn, keys: &QueueKeys, recount: bool) -> Result<(i64, u64)> {
        let (counter, jobs): (i64, i64) = PARKED
            .key(keys.meta())
            .key(keys.paused_names())
            .arg(&keys.tag)
            .arg(if recount { "1" } else { "0" })
            .invoke_async(conn)
            .await?;
        Ok((counter, u64::try_from(jobs).unwrap_or(0)))
    }
}
