//! Connections: the shared one (publish, acks, scripts, housekeeping) and dedicated ones
//! (blocking reads, pub/sub), for a single server or a cluster; URL redaction.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Script, Value};

use super::reply;
use crate::error::{Error, Result};

/// Where the backend connects.
#[derive(Clone)]
pub(crate) enum Target {
    Single(Client),
    Cluster {
        client: Box<ClusterClient>,
        /// One client per node given, for pub/sub (a pattern subscription on any one
        /// node sees every PUBLISH in a cluster); tried in turn when a node is down.
        nodes: Vec<Client>,
    },
}

/// Timeouts and reconnection settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) response: Duration,
    pub(crate) reconnect_retries: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(10),
            reconnect_retries: 3,
        }
    }
}

/// A connection of any kind; all of them accept commands, pipelines and scripts.
#[derive(Clone)]
pub(crate) enum Conn {
    /// The shared connection to a single server; reconnects by itself.
    Manager(ConnectionManager),
    /// A dedicated connection to a single server (no reconnection: the owner reopens it).
    Multiplexed(MultiplexedConnection),
    /// A cluster connection (shared or dedicated); reconnects by itself.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn connection_error(redacted: &str, e: &redis::RedisError) -> Error {
    Error::Connection(format!("cannot connect to {redacted}: {e}"))
}

/// Opens the shared connection.
pub(crate) async fn open_shared(target: &Target, t: Timeouts, redacted: &str) -> Result<Conn> {
    match target {
        Target::Single(client) => {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(t.connect))
                .set_response_timeout(Some(t.response))
                .set_number_of_retries(t.reconnect_retries)
                .set_max_delay(Duration::from_secs(2));
            ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map(Conn::Manager)
                .map_err(|e| connection_error(redacted, &e))
        }
        Target::Cluster { client, .. } => {
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(t.connect)
                .set_response_timeout(t.response);
            client
                .get_async_connection_with_config(config)
                .await
                .map(Conn::Cluster)
                .map_err(|e| connection_error(redacted, &e))
        }
    }
}

/// Opens a dedicated connection for blocking reads of `key`: no response timeout (a
/// blocking XREADGROUP answers only after its BLOCK time), so the caller bounds the wait
/// itself. On a cluster it is a plain connection to the node serving the key's slot (one
/// socket per reader rather than one per node); a reader that gets `MOVED` reopens.
pub(crate) async fn open_dedicated(
    target: &Target,
    t: Timeouts,
    redacted: &str,
    shared: &mut Conn,
    key: &str,
) -> Result<Conn> {
    let client = match target {
        Target::Single(client) => client.clone(),
        Target::Cluster { client, nodes } => match node_serving(shared, nodes, key).await {
            Some(node) => node,
            None => {
                // The slot map did not name a usable address: fall back to a cluster
                // connection of its own (no response timeout by default).
                let config = redis::cluster::ClusterConfig::new().set_connection_timeout(t.connect);
                return client
                    .get_async_connection_with_config(config)
                    .await
                    .map(Conn::Cluster)
                    .map_err(|e| connection_error(redacted, &e));
            }
        },
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(t.connect))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map(Conn::Multiplexed)
        .map_err(|e| connection_error(redacted, &e))
}

/// A client for the master serving `key`'s slot, with the credentials and TLS settings
/// of the configured nodes; `None` when the slot map does not say.
async fn node_serving(shared: &mut Conn, nodes: &[Client], key: &str) -> Option<Client> {
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(shared)
        .await
        .ok()?;
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(shared)
        .await
        .ok()?;
    let (host, port) = reply::array(&slots)?.iter().find_map(|range| {
        let r = reply::array(range)?;
        let (start, end) = (reply::int(r.first()?)?, reply::int(r.get(1)?)?);
        if !(start..=end).contains(&slot) {
            return None;
        }
        let master = reply::array(r.get(2)?)?;
        let host = reply::string(master.first()?)?;
        let port = u16::try_from(reply::int(master.get(1)?)?).ok()?;
        (!host.is_empty() && host != "?").then_some((host, port))
    })?;
    let info = nodes.first()?.get_connection_info().clone();
    let mut addr = info.addr().clone();
    match &mut addr {
        redis::ConnectionAddr::Tcp(h, p) => {
            *h = host;
            *p = port;
        }
        redis::ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            *h = host;
            *p = port;
        }
        _ => return None,
    }
    Client::open(info.set_addr(addr)).ok()
}

/// Whether an error means the connection itself is unusable (or, on a cluster, points
/// at the wrong node).
pub(crate) fn is_connection_loss(e: &redis::RedisError) -> bool {
    e.is_connection_dropped()
        || e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.redirect_node().is_some()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::Moved
                    | redis::ServerErrorKind::Ask
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::ReadOnly
            )
        )
}

/// Builds an EVALSHA command for a pipeline.
pub(crate) fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript))
}

/// Runs a pipeline (built with `ignore_errors`) whose EVALSHA commands use `scripts`;
/// when the server has forgotten them, loads them and runs it once more. Per-command
/// errors are left in the returned values.
pub(crate) async fn pipeline_with_scripts(
    conn: &mut Conn,
    pipe: &Pipeline,
    scripts: &[&Script],
) -> Result<Vec<Value>> {
    let values: Vec<Value> = pipe.query_async(conn).await?;
    if !values.iter().any(is_noscript) {
        return Ok(values);
    }
    for script in scripts {
        script.load_async(conn).await?;
    }
    Ok(pipe.query_async(conn).await?)
}

/// Turns a per-command error left in a pipeline reply into an error.
pub(crate) fn check_value(v: Value) -> Result<Value> {
    match v {
        Value::ServerError(e) => Err(Error::Redis(e.into())),
        other => Ok(other),
    }
}

/// A URL with its password (and query string) masked, for `Debug`, logs and errors.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return match url.rfind('@') {
            Some(at) => format!("***@{}", &url[at + 1..]),
            None => url.to_owned(),
        };
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let host = &authority[at + 1..];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("***@{host}"),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => format!("{}?***", &tail[..q]),
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

/// Parses a URL into a client, with a redacted configuration error on failure.
pub(crate) fn client_for(url: &str) -> Result<Client> {
    Client::open(url).map_err(|e| {
        Error::config(format!(
            "invalid Redis URL {}: {}",
            redact_url(url),
            e.detail().unwrap_or("cannot be parsed")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:s3cret@host:6380"),
            "rediss://app:***@host:6380"
        );
        assert_eq!(redact_url("redis://s3cret@host"), "redis://***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("redis://h/0?password=s3cret"), "redis://h/0?***");
        assert_eq!(redact_url("garbage:s3cret@x"), "***@x");
        assert!(!redact_url("redis://u:p@ss@w0rd@host").contains("w0rd"));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for bad in ["", "http://x", "redis://:s3cret@", "not a url at all"] {
            match client_for(bad) {
                Err(Error::Config(msg)) => assert!(!msg.contains("s3cret"), "{msg}"),
                Err(other) => panic!("{bad:?}: unexpected {other:?}"),
                Ok(_) => {}
            }
        }
    }
}
