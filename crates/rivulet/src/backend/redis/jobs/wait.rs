//! Blocking waits on connections of their own: [`RedisJobWaiter`] (`BLPOP` of the
//! queue's marker) and [`RedisEventReader`] (`XREAD` of its event stream). On a cluster
//! each connects to the node serving the queue's slot. After an error the connection is
//! dropped and the next call opens a new one.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::decode::event;
use super::keys::QueueKeys;
use crate::backend::jobs::{EventReader, JobWaiter};
use crate::backend::redis::RedisBackend;
use crate::backend::redis::conn::{Conn, open_dedicated};
use crate::backend::redis::reply;
use crate::error::{Error, Result};
use crate::jobs::record::JobEvent;

/// Extra time, beyond the blocking time, before a silent connection is given up.
const GRACE: Duration = Duration::from_secs(5);
/// The longest one blocking call waits (longer waits return `false` / nothing early,
/// which callers treat as a timeout and call again).
const MAX_BLOCK: Duration = Duration::from_secs(24 * 3600);

/// A dedicated connection to the node serving `key`, reopened after errors.
struct Dedicated {
    backend: RedisBackend,
    key: String,
    conn: Option<Conn>,
}

impl Dedicated {
    async fn open(backend: RedisBackend, key: String) -> Result<Self> {
        let mut d = Dedicated {
            backend,
            key,
            conn: None,
        };
        d.connection().await?;
        Ok(d)
    }

    async fn connection(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let mut shared = self.backend.conn()?;
            let inner = &self.backend.inner;
            let conn = open_dedicated(
                &inner.target,
                inner.timeouts,
                &inner.redacted,
                &mut shared,
                &self.key,
            )
            .await?;
            self.conn = Some(conn);
        }
        match self.conn.as_mut() {
            Some(c) => Ok(c),
            None => Err(Error::Connection("no connection".into())),
        }
    }

    /// Runs `cmd`, bounded by `block` plus a grace period; drops the connection after
    /// any error (a later call reopens it).
    async fn query(&mut self, cmd: &redis::Cmd, block: Duration) -> Result<Value> {
        let conn = self.connection().await?;
        let limit = block + GRACE;
        let r = tokio::time::timeout(limit, cmd.query_async::<Value>(conn)).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.into())
            }
            Err(_) => {
                self.conn = None;
                Err(Error::Timeout(limit))
            }
        }
    }
}

/// Waits for the queue's marker.
pub(super) struct RedisJobWaiter {
    conn: Dedicated,
}

impl RedisJobWaiter {
    pub(super) async fn open(backend: RedisBackend, keys: &QueueKeys) -> Result<Self> {
        Ok(RedisJobWaiter {
            conn: Dedicated::open(backend, keys.marker()).await?,
        })
    }
}

#[async_trait]
impl JobWaiter for RedisJobWaiter {
    async fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let timeout = timeout.min(MAX_BLOCK);
        let key = self.conn.key.clone();
        // BLPOP 0 would block forever: a zero timeout is a plain look.
        let cmd = if timeout < Duration::from_millis(1) {
            let mut c = redis::cmd("LPOP");
            c.arg(&key);
            c
        } else {
            let mut c = redis::cmd("BLPOP");
            c.arg(&key).arg(format!("{:.3}", timeout.as_secs_f64()));
            c
        };
        let v = self.conn.query(&cmd, timeout).await?;
        Ok(!matches!(v, Value::Nil))
    }
}

/// Reads the queue's event stream.
pub(super) struct RedisEventReader {
    conn: Dedicated,
}

impl RedisEventReader {
    pub(super) async fn open(backend: RedisBackend, keys: &QueueKeys) -> Result<Self> {
        Ok(RedisEventReader {
            conn: Dedicated::open(backend, keys.events()).await?,
        })
    }
}

#[async_trait]
impl EventReader for RedisEventReader {
    async fn read(
        &mut self,
        after: Option<&str>,
        limit: usize,
        block: Option<Duration>,
    ) -> Result<Vec<JobEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.conn.key.clone();
        let mut cmd = redis::cmd("XREAD");
        let mut waits = Duration::ZERO;
        if let Some(b) = block {
            let b = b.min(MAX_BLOCK);
            let ms = crate::deadline::millis(b);
            if ms > 0 {
                cmd.arg("BLOCK").arg(ms);
                waits = b;
            }
        }
        cmd.arg("COUNT")
            .arg(limit)
            .arg("STREAMS")
            .arg(&key)
            .arg(after.unwrap_or("0-0"));
        let v = self.conn.query(&cmd, waits).await?;
        let mut out = Vec::new();
        for (stream, entries) in reply::streams(&v) {
            if stream != key {
                continue;
            }
            for raw in &entries {
                out.push(event(raw)?);
            }
        }
        Ok(out)
    }
}
