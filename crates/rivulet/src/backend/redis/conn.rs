//! Connections: the shared one (publish, acks, scripts, housekeeping) and dedicated ones
//! (blocking reads, pub/sub), for a single server or a cluster; URL redaction.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Script, Value};

use super::redial::{Dial, Redial};
use super::reply;
use super::sentinel::SentinelTarget;
use super::tls::NamedTls;
use crate::error::{Error, Result};

/// Where the backend connects.
// One per backend, cloned only when a bus detaches: the size of a TLS client is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Target {
    Single(Client),
    /// A Sentinel deployment: every connection asks the sentinels for the master.
    Sentinel(Arc<SentinelTarget>),
    /// A single server over TLS with a server-name override.
    Named(Arc<NamedTls>),
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
    /// The shared connection to a Sentinel deployment's master; finds the master
    /// again after a failover.
    Redial(Redial),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Redial(c) => c.req_packed_command(cmd),
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
            Conn::Redial(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Redial(c) => c.get_db(),
        }
    }
}

/// The error for a connection that could not be opened: a [`Error::Tls`] when TLS
/// failed, else a connection error. Neither shows a password (`redacted` has none, and
/// the `redis` crate's errors do not carry URLs).
pub(crate) fn connection_error(redacted: &str, e: &redis::RedisError) -> Error {
    match super::tls::failure(e) {
        Some(failure) => Error::Tls {
            url: redacted.to_owned(),
            failure,
        },
        None if e.kind() == redis::ErrorKind::AuthenticationFailed => Error::Connection(format!(
            "cannot connect to {redacted}: authentication failed (wrong user name or password)"
        )),
        None => Error::Connection(format!("cannot connect to {redacted}: {e}")),
    }
}

/// A failure to open the first connection, with a diagnosis: a TLS URL whose
/// handshake failed without a TLS error is checked for a plain-text server.
pub(crate) async fn diagnose(target: &Target, e: Error, t: Timeouts, redacted: &str) -> Error {
    let (host, port) = match target {
        Target::Single(client) => match client.get_connection_info().addr() {
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.as_str(), *port),
            _ => return e,
        },
        Target::Named(named) => named.addr(),
        _ => return e,
    };
    if matches!(e, Error::Connection(_))
        && super::tls::speaks_plain_text(host, port, t.connect).await
    {
        return Error::Tls {
            url: redacted.to_owned(),
            failure: crate::error::TlsFailure::ServerNotTls,
        };
    }
    e
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
        Target::Sentinel(sentinel) => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(t.connect))
                .set_response_timeout(Some(t.response));
            Redial::open(Dial::Sentinel(Arc::clone(sentinel)), config)
                .await
                .map(Conn::Redial)
                .map_err(|e| connection_error(redacted, &e))
        }
        Target::Named(named) => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(t.connect))
                .set_response_timeout(Some(t.response));
            Redial::open(Dial::Named(Arc::clone(named)), config)
                .await
                .map(Conn::Redial)
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
        Target::Sentinel(sentinel) => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(t.connect))
                .set_response_timeout(None);
            return sentinel
                .connect_master(&config)
                .await
                .map(Conn::Multiplexed)
                .map_err(|e| connection_error(redacted, &e));
        }
        Target::Named(named) => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(t.connect))
                .set_response_timeout(None);
            return named
                .connect(&config)
                .await
                .map(Conn::Multiplexed)
                .map_err(|e| connection_error(redacted, &e));
        }
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
///
/// Textual on purpose, so it holds for strings that do not parse: the userinfo is
/// everything between `://` and the **last** `@` (a password may contain `/ ? # @ :`,
/// which a URL parser takes for the end of the authority), the part after the first
/// `:` of it is replaced by `***` (the user is kept), and a query string becomes `?***`.
/// Without a `user:` part the whole userinfo is masked. Unix-socket URLs have no
/// userinfo (their credentials are query parameters, masked with the query).
///
/// One ambiguity is resolved towards the usual form: in `redis://h/0?password=a@b` the
/// `@` is taken as the end of a userinfo, so `b` shows. Put credentials in the userinfo
/// (percent-encoded or not), as Redis URLs do.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) if is_scheme(&url[..i]) => url.split_at(i + 3),
        _ => ("", url),
    };
    // Only a scheme rivulet knows is kept: in `secret://x@host` the text before `://` is
    // a password, not a scheme.
    let (scheme, rest) = if KNOWN_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
        (scheme, rest)
    } else {
        ("", url)
    };
    let unix = scheme.contains("unix");
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    let host_part = match rest.rfind('@') {
        Some(at) if !unix => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) if !scheme.is_empty() => {
                    out.push_str(user);
                    out.push_str(":***@");
                }
                _ => out.push_str("***@"),
            }
            &rest[at + 1..]
        }
        _ => rest,
    };
    match host_part.find('?') {
        Some(q) => {
            out.push_str(&host_part[..q]);
            out.push_str("?***");
        }
        None => out.push_str(host_part),
    }
    out
}

/// The schemes [`redact_url`] keeps as they are.
const KNOWN_SCHEMES: &[&str] = &[
    "redis://",
    "rediss://",
    "redis+unix://",
    "unix://",
    "valkey://",
    "valkeys://",
    "valkey+unix://",
    "redis+sentinel://",
    "rediss+sentinel://",
];

/// Whether `s` is a URL scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`), so a
/// `://` inside a password is not taken for the end of one.
pub(super) fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Parses a URL into a client, with a redacted configuration error on failure.
pub(crate) fn client_for(url: &str) -> Result<Client> {
    super::endpoint::client_for(url, None, &super::endpoint::Resolved::default())
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

    /// Passwords that the URL grammar would end early, each built from fragments
    /// (`qz1`, `kx7`, …) that appear nowhere else in the URLs below.
    const TRICKY: &[&str] = &[
        "qz1/kx7",
        "qz1?kx7#wv3",
        "12/kx7",
        "qz1@kx7",
        "qz1:kx7:wv3",
        "qz1#kx7",
        "qz1%40kx7%2Fwv3",
        "qz1%3Fkx7",
        "qz1://kx7",
        "?qz1=kx7&wv3@",
        "/qz1",
    ];

    /// The alphanumeric fragments of a secret, none of which may be shown.
    fn fragments(secret: &str) -> Vec<&str> {
        secret
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|f| f.len() >= 2)
            .collect()
    }

    fn assert_hidden(shown: &str, secret: &str) {
        assert!(!shown.contains(secret), "{secret:?} shown in {shown:?}");
        for f in fragments(secret) {
            assert!(!shown.contains(f), "{f:?} of {secret:?} shown in {shown:?}");
        }
    }

    /// Every URL shape a tricky password can appear in.
    fn urls_with(secret: &str) -> Vec<String> {
        let mut urls = vec![
            format!("redis://user:{secret}@redis.example:6379/0"),
            format!("redis://:{secret}@redis.example:6379"),
            format!("rediss://app:{secret}@redis.example"),
            format!("redis://user:{secret}@redis.example/0?protocol=resp3"),
            format!("redis+unix:///run/redis.sock?db=1&pass={secret}"),
            format!("user:{secret}@redis.example"),
        ];
        // Without a `user:` part the whole userinfo is the secret; with a `:` in it, the
        // text before is a user name by definition.
        if !secret.contains(':') {
            urls.push(format!("redis://{secret}@redis.example/2"));
        }
        // A query value with an `@` cannot be told from a userinfo (documented).
        if !secret.contains('@') {
            urls.push(format!("redis://redis.example:6379/0?password={secret}"));
        }
        urls
    }

    #[test]
    fn tricky_passwords_are_redacted() {
        for secret in TRICKY {
            for url in urls_with(secret) {
                let shown = redact_url(&url);
                assert_hidden(&shown, secret);
                let host = if url.contains("unix") {
                    "/run/redis.sock"
                } else {
                    "redis.example"
                };
                assert!(shown.contains(host), "host lost: {url:?} -> {shown:?}");
            }
        }
        // The user is kept when there is a `user:` part.
        assert_eq!(
            redact_url("redis://user:pa/ss@host:6379"),
            "redis://user:***@host:6379"
        );
        assert_eq!(redact_url("redis://:p?w#d@host/0"), "redis://:***@host/0");
        assert_eq!(redact_url("redis://u:12/x@host"), "redis://u:***@host");
        assert_eq!(
            redact_url("redis://u:p@ss@host/1?db=2"),
            "redis://u:***@host/1?***"
        );
        // A `://` inside the password does not start a scheme.
        assert_eq!(redact_url("u:a://b@host"), "***@host");
        assert_eq!(redact_url("qz1://kx7@host"), "***@host");
        assert_eq!(
            redact_url("redis+sentinel://u:p@a:1,b:2/m"),
            "redis+sentinel://u:***@a:1,b:2/m"
        );
    }

    #[test]
    fn bad_urls_are_config_errors_without_the_secret() {
        let bad = [
            "redis://user:pa/ss@host:6379",
            "redis://:p?w#d@host/0",
            "redis://u:12/x@host",
            "redis://:s3cret@host:notaport",
            "http://u:s3cret@host",
            "s3cret@host:6379",
            "",
        ];
        for url in bad {
            match client_for(url) {
                Err(Error::Config(msg)) => {
                    for secret in ["pa/ss", "p?w#d", "12/x", "s3cret"] {
                        assert!(!msg.contains(secret), "{url:?}: {msg}");
                    }
                }
                Err(other) => panic!("{url:?}: unexpected {other:?}"),
                Ok(_) => panic!("{url:?} was accepted"),
            }
        }
    }
}
