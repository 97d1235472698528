//! A shared connection that finds its server again: after a connection loss or a
//! `READONLY` reply (the server it was on is a replica now, after a failover) it drops
//! its connection, and the next command opens a new one through its [`Dial`] — asking
//! the sentinels for the master, or connecting with a TLS server-name override (which
//! `ConnectionManager` cannot). `READONLY` means nothing was written (a replica refuses
//! every write), so that one command is sent again; other failures are returned.

use std::sync::Arc;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::Mutex;

use super::conn::is_connection_loss;
use super::sentinel::SentinelTarget;
use super::tls::NamedTls;

/// How a [`Redial`] opens a connection.
#[derive(Clone)]
pub(crate) enum Dial {
    /// To the master a Sentinel deployment names now.
    Sentinel(Arc<SentinelTarget>),
    /// Over TLS with a server-name override.
    Named(Arc<NamedTls>),
    /// Tests: each connection to the next of these clients (the last one repeats).
    #[cfg(test)]
    Sequence(Arc<std::sync::Mutex<Vec<redis::Client>>>),
}

impl Dial {
    async fn connect(&self, config: &AsyncConnectionConfig) -> RedisResult<MultiplexedConnection> {
        match self {
            Dial::Sentinel(s) => s.connect_master(config).await,
            Dial::Named(n) => n.connect(config).await,
            #[cfg(test)]
            Dial::Sequence(clients) => {
                let client = {
                    let mut clients = super::lock(clients);
                    if clients.len() > 1 {
                        clients.remove(0)
                    } else {
                        clients
                            .first()
                            .cloned()
                            .ok_or_else(|| RedisError::from((redis::ErrorKind::Client, "empty")))?
                    }
                };
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
            }
        }
    }

    fn db(&self) -> i64 {
        match self {
            Dial::Sentinel(s) => s.db(),
            Dial::Named(n) => n.db(),
            #[cfg(test)]
            Dial::Sequence(_) => 0,
        }
    }
}

/// A shared connection that opens its connection again, through its [`Dial`], after a
/// connection loss or a `READONLY` reply (see the module docs).
#[derive(Clone)]
pub(crate) struct Redial {
    inner: Arc<RedialInner>,
}

struct RedialInner {
    target: Dial,
    config: AsyncConnectionConfig,
    /// The current connection and its generation (so a late failure of an old
    /// connection does not drop a newer one).
    current: Mutex<(u64, Option<MultiplexedConnection>)>,
}

impl Redial {
    /// Connects once (so a bad configuration fails at build time).
    pub(crate) async fn open(target: Dial, config: AsyncConnectionConfig) -> RedisResult<Redial> {
        let first = target.connect(&config).await?;
        Ok(Redial {
            inner: Arc::new(RedialInner {
                target,
                config,
                current: Mutex::new((1, Some(first))),
            }),
        })
    }

    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut current = self.inner.current.lock().await;
        if let Some(c) = &current.1 {
            return Ok((current.0, c.clone()));
        }
        let c = self.inner.target.connect(&self.inner.config).await?;
        current.0 += 1;
        current.1 = Some(c.clone());
        Ok((current.0, c))
    }

    async fn forget(&self, generation: u64) {
        let mut current = self.inner.current.lock().await;
        if current.0 == generation {
            current.1 = None;
        }
    }

    /// Runs `req` on the master; on a connection loss the connection is dropped (the
    /// next command finds the master again); on `READONLY` (nothing was written: a
    /// replica refuses every write) it is run once more on the new master.
    async fn run(&self, req: Req<'_>) -> RedisResult<Reply> {
        let mut retried = false;
        loop {
            let (generation, mut conn) = self.connection().await?;
            let result = match req {
                Req::One(cmd) => conn.req_packed_command(cmd).await.map(Reply::One),
                Req::Many(pipe, offset, count) => conn
                    .req_packed_commands(pipe, offset, count)
                    .await
                    .map(Reply::Many),
            };
            let read_only = match &result {
                Ok(Reply::One(v)) => value_read_only(v),
                Ok(Reply::Many(values)) => values.iter().any(value_read_only),
                Err(e) => is_read_only(e),
            };
            let lost = matches!(&result, Err(e) if is_connection_loss(e));
            if read_only || lost {
                self.forget(generation).await;
            }
            if read_only && !retried {
                retried = true;
                continue;
            }
            return result;
        }
    }
}

#[derive(Clone, Copy)]
enum Req<'a> {
    One(&'a Cmd),
    Many(&'a Pipeline, usize, usize),
}

enum Reply {
    One(Value),
    Many(Vec<Value>),
}

fn unexpected() -> RedisError {
    RedisError::from((redis::ErrorKind::Client, "unexpected reply shape"))
}

fn is_read_only(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
    )
}

fn value_read_only(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::ReadOnly))
}

impl ConnectionLike for Redial {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.run(Req::One(cmd)).await? {
                Reply::One(v) => Ok(v),
                Reply::Many(_) => Err(unexpected()),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.run(Req::Many(pipeline, offset, count)).await? {
                Reply::Many(v) => Ok(v),
                Reply::One(_) => Err(unexpected()),
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.target.db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_testkit::RedisServer;

    /// A connection that lands on a replica (as the old master's does after a
    /// failover) gets `READONLY`; nothing was written, so the command is sent once more
    /// on a new connection, which reaches the master.
    #[tokio::test]
    async fn a_readonly_reply_moves_the_connection_and_retries_once() {
        let (master, replica) = tokio::task::spawn_blocking(|| {
            let master = RedisServer::start().expect("master");
            let replica = RedisServer::start().expect("replica");
            redis::cmd("REPLICAOF")
                .arg("127.0.0.1")
                .arg(master.port())
                .exec(&mut replica.connection().expect("replica connection"))
                .expect("REPLICAOF");
            (master, replica)
        })
        .await
        .expect("spawn_blocking");
        let clients = vec![
            replica.client().expect("client"),
            master.client().expect("client"),
        ];
        let dial = Dial::Sequence(Arc::new(std::sync::Mutex::new(clients)));
        let mut conn = Redial::open(dial, AsyncConnectionConfig::new())
            .await
            .expect("open");
        // A single command…
        let id: String = redis::cmd("XADD")
            .arg("s")
            .arg("*")
            .arg("f")
            .arg("v")
            .query_async(&mut conn)
            .await
            .expect("XADD reaches the master");
        assert!(id.contains('-'), "{id}");
        let len: i64 = redis::cmd("XLEN")
            .arg("s")
            .query(&mut master.connection().expect("master connection"))
            .expect("XLEN");
        assert_eq!(len, 1, "written once, on the master");

        // …and a pipeline whose write got READONLY among its replies.
        let dial = Dial::Sequence(Arc::new(std::sync::Mutex::new(vec![
            replica.client().expect("client"),
            master.client().expect("client"),
        ])));
        let mut conn = Redial::open(dial, AsyncConnectionConfig::new())
            .await
            .expect("open");
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN")
            .arg("s")
            .cmd("XADD")
            .arg("s")
            .arg("*")
            .arg("f")
            .arg("v");
        let values: Vec<Value> = pipe.query_async(&mut conn).await.expect("pipeline");
        assert!(!values.iter().any(value_read_only), "{values:?}");
        let len: i64 = redis::cmd("XLEN")
            .arg("s")
            .query(&mut master.connection().expect("master connection"))
            .expect("XLEN");
        assert_eq!(len, 2);
    }
}
