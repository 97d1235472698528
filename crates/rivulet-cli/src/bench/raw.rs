//! The raw ceiling: the same work written directly on the `redis` crate, the way a careful
//! engineer would hand-write it (pipelined XADD batches; XREADGROUP COUNT 100 with the
//! previous batch's XACK in the same pipeline).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::{BATCH, Payloads, stamp_age};
use crate::error::CliError;

fn err(what: &str) -> impl Fn(redis::RedisError) -> CliError + '_ {
    move |e| CliError::runtime(format!("raw baseline: {what}: {e}"))
}

/// Connections for the raw baseline.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    client: Client,
}

impl Raw {
    pub(crate) fn new(url: &str) -> Result<Self, CliError> {
        Ok(Raw {
            client: Client::open(url).map_err(err("bad url"))?,
        })
    }

    pub(crate) async fn shared(&self) -> Result<MultiplexedConnection, CliError> {
        self.client
            .get_multiplexed_async_connection()
            .await
            .map_err(err("connect"))
    }

    /// A connection without a response timeout, for blocking reads.
    pub(crate) async fn blocking(&self) -> Result<MultiplexedConnection, CliError> {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(err("connect"))
    }

    pub(crate) async fn create_group(&self, key: &str) -> Result<(), CliError> {
        let mut con = self.shared().await?;
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg("g")
            .arg("$")
            .arg("MKSTREAM")
            .query_async::<()>(&mut con)
            .await
            .map_err(err("XGROUP CREATE"))
    }

    /// Appends `n` entries in pipelines of [`BATCH`].
    pub(crate) async fn publish(
        &self,
        key: &str,
        n: usize,
        payloads: &Payloads,
    ) -> Result<(), CliError> {
        let mut con = self.shared().await?;
        let mut left = n;
        while left > 0 {
            let k = left.min(BATCH);
            let mut pipe = redis::pipe();
            for _ in 0..k {
                pipe.cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("payload")
                    .arg(payloads.next().as_ref())
                    .ignore();
            }
            pipe.query_async::<()>(&mut con)
                .await
                .map_err(err("XADD"))?;
            left -= k;
        }
        Ok(())
    }

    /// One XADD per awaited call; returns per-call latencies.
    pub(crate) async fn publish_latency(
        &self,
        key: &str,
        n: usize,
        payloads: &Payloads,
    ) -> Result<Histogram<u64>, CliError> {
        let mut con = self.shared().await?;
        let mut h = super::histogram()?;
        for _ in 0..n {
            let t = Instant::now();
            redis::cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("payload")
                .arg(payloads.next().as_ref())
                .query_async::<String>(&mut con)
                .await
                .map_err(err("XADD"))?;
            super::record(&mut h, t.elapsed());
        }
        Ok(h)
    }

    /// Consumes until `total` entries were read and acknowledged. With `latency`, records
    /// the age of each entry's stamp at receipt.
    pub(crate) async fn consume(
        &self,
        key: &str,
        total: usize,
        done: Arc<AtomicUsize>,
        mut latency: Option<&mut Histogram<u64>>,
        deadline: Instant,
    ) -> Result<(), CliError> {
        let mut con = self.blocking().await?;
        let mut to_ack: Vec<String> = Vec::new();
        while done.load(Ordering::Relaxed) < total {
            if Instant::now() > deadline {
                return Err(CliError::runtime("raw consumer: deadline passed"));
            }
            let mut pipe = redis::pipe();
            if !to_ack.is_empty() {
                pipe.cmd("XACK").arg(key).arg("g").arg(&to_ack).ignore();
            }
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(100)
                .arg("STREAMS")
                .arg(key)
                .arg(">");
            let (reply,): (Value,) = pipe
                .query_async(&mut con)
                .await
                .map_err(err("XREADGROUP"))?;
            to_ack.clear();
            for (id, payload) in entries(reply) {
                if let (Some(h), Some(p)) = (latency.as_deref_mut(), payload)
                    && let Some(age) = stamp_age(&p)
                {
                    super::record(h, age);
                }
                to_ack.push(id);
            }
            done.fetch_add(to_ack.len(), Ordering::Relaxed);
        }
        if !to_ack.is_empty() {
            redis::cmd("XACK")
                .arg(key)
                .arg("g")
                .arg(&to_ack)
                .query_async::<()>(&mut con)
                .await
                .map_err(err("XACK"))?;
        }
        Ok(())
    }
}

/// Extracts (entry id, payload) pairs from an XREADGROUP reply (RESP2 or RESP3 shape).
fn entries(reply: Value) -> Vec<(String, Option<Bytes>)> {
    let streams = match reply {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(list) = s else { continue };
        for e in list {
            let Value::Array(mut parts) = e else { continue };
            if parts.len() != 2 {
                continue;
            }
            let fields = parts.pop();
            let id = match parts.pop() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                Some(Value::SimpleString(s)) => s,
                _ => continue,
            };
            let payload = match fields {
                Some(Value::Array(f)) => f.into_iter().nth(1).and_then(|v| match v {
                    Value::BulkString(b) => Some(Bytes::from(b)),
                    _ => None,
                }),
                _ => None,
            };
            out.push((id, payload));
        }
    }
    out
}

/// Time budget for one consumer run.
pub(crate) fn deadline_for(n: usize) -> Instant {
    Instant::now() + Duration::from_secs(60) + Duration::from_micros(n as u64 * 200)
}
