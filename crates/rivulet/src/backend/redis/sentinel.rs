//! Redis Sentinel: finding the master, and a shared connection that finds it again.
//!
//! Every connection to a Sentinel deployment starts by asking the sentinels, in turn,
//! `SENTINEL get-master-addr-by-name <master>`, then checks with `ROLE` that the server
//! named really is a master (a sentinel can answer with a stale address during a
//! failover). Dedicated connections (readers, live subscriptions) already reopen after a
//! connection loss, so they reach the new master through the same path. The shared
//! connection is a [`Redial`](super::redial::Redial): it drops its connection on a connection loss or a
//! `READONLY` reply (the old master came back as a replica) and asks the sentinels
//! again on the next command.

use std::fmt;
use std::io;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisError, RedisResult,
    Value,
};

use super::endpoint::Resolved;
use crate::error::{Error, Result};

/// A Sentinel deployment: the master's name, the sentinels, and how to log in to and
/// encrypt connections to the master.
pub(crate) struct SentinelTarget {
    master_name: String,
    sentinels: Vec<Client>,
    /// `Some` for TLS to the master, with the certificates to use (if any).
    master_tls: Option<Option<redis::TlsCertificates>>,
    master_creds: Resolved,
    db: i64,
    timeouts: (Duration, Duration),
}

impl fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("master_name", &self.master_name)
            .field("sentinels", &self.sentinels.len())
            .field("tls", &self.master_tls.is_some())
            .finish_non_exhaustive()
    }
}

fn refused(msg: String) -> RedisError {
    RedisError::from(io::Error::new(io::ErrorKind::ConnectionRefused, msg))
}

impl SentinelTarget {
    pub(crate) fn new(
        master_name: String,
        sentinels: Vec<Client>,
        master_tls: Option<Option<redis::TlsCertificates>>,
        master_creds: Resolved,
        db: i64,
        connect_timeout: Duration,
    ) -> Result<Self> {
        if sentinels.is_empty() {
            return Err(Error::config(
                "a Sentinel deployment needs at least one sentinel",
            ));
        }
        if master_name.is_empty() {
            return Err(Error::config("the Sentinel master name is empty"));
        }
        Ok(SentinelTarget {
            master_name,
            sentinels,
            master_tls,
            master_creds,
            db,
            timeouts: (connect_timeout, connect_timeout),
        })
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    /// The master's address according to the first sentinel that knows it.
    async fn master_addr(&self) -> RedisResult<(String, u16)> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.0))
            .set_response_timeout(Some(self.timeouts.1));
        let mut last = String::from("no sentinel answered");
        for sentinel in &self.sentinels {
            let mut conn = match sentinel
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    last = format!("sentinel {}: {e}", sentinel.get_connection_info().addr());
                    continue;
                }
            };
            let reply: RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master_name)
                .query_async(&mut conn)
                .await;
            match reply {
                Ok(Some(addr)) => return Ok(addr),
                Ok(None) => {
                    last = format!(
                        "sentinel {} does not know master {:?}",
                        sentinel.get_connection_info().addr(),
                        self.master_name
                    );
                }
                Err(e) => {
                    last = format!("sentinel {}: {e}", sentinel.get_connection_info().addr());
                }
            }
        }
        Err(refused(format!(
            "no master {:?} found through the sentinels ({last})",
            self.master_name
        )))
    }

    /// A client for the current master.
    pub(crate) async fn master_client(&self) -> RedisResult<Client> {
        let (host, port) = self.master_addr().await?;
        let addr = match &self.master_tls {
            Some(_) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
            None => ConnectionAddr::Tcp(host, port),
        };
        let info = addr.into_connection_info()?;
        let settings = info.redis_settings().clone().set_db(self.db);
        let info = self.master_creds.apply(info.set_redis_settings(settings));
        match &self.master_tls {
            Some(Some(certs)) => Client::build_with_tls(info, certs.clone()),
            _ => Client::open(info),
        }
    }

    /// A connection to the current master, checked with `ROLE`.
    pub(crate) async fn connect_master(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let client = self.master_client().await?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        let role: Value =
            tokio::time::timeout(self.timeouts.1, redis::cmd("ROLE").query_async(&mut conn))
                .await
                .map_err(|_| refused("no answer to ROLE from the master".to_owned()))??;
        let is_master = matches!(&role, Value::Array(items)
            if matches!(items.first(), Some(Value::BulkString(b)) if b.as_slice() == b"master"));
        if is_master {
            Ok(conn)
        } else {
            Err(refused(format!(
                "the server the sentinels name for {:?} is not a master (yet)",
                self.master_name
            )))
        }
    }
}
