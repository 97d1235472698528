//! The Redis Streams backend: a single server, a managed endpoint or a Redis Cluster.
//!
//! How the primitives map onto Redis (the key layout is in `keys.rs`, the entry format in
//! `wire.rs` and `docs/wire-format.md`, the scripts in `lua/`):
//!
//! * a topic is a stream; a group is a consumer group on it, and the same group exists on
//!   the group's **retry lane**, a second stream only that group reads;
//! * a reader runs `XREADGROUP … STREAMS <lane> <topic> > >` on its own connection;
//! * every transition that settles an entry and writes something else (retry, requeue,
//!   dead-letter, hand-back, replay, idempotent publish) is one Lua script;
//! * scheduled retries live in one sorted set per topic, scored by due time, and are
//!   moved into lanes by a script that removes each member in the same step.
//!
//! Connections (B-SUB-6): one shared connection (publish, acks, scripts, housekeeping)
//! that reconnects by itself, plus one dedicated connection per reader and per live
//! subscription, closed when they are dropped.

mod acl;
mod conn;
mod dead_letters;
mod doctor;
mod endpoint;
mod groups;
mod idempotency;
mod inspect;
mod jobs;
mod keys;
mod live;
mod publish;
mod pubsub;
mod reader;
mod recovery;
mod redial;
pub(crate) mod reply;
mod scripts;
mod sentinel;
mod settle;
mod tls;
mod trim;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{AnyBackend, Backend, StreamKey};
use crate::error::{Error, Result};
use crate::name::{QueueName, TopicName};

use self::conn::{Conn, Target, Timeouts};
use self::endpoint::{Credentials, PasswordSource, Scheme};
pub use self::idempotency::RedisIdempotencyStore;
use self::keys::{DEFAULT_PREFIX, LogKeys, TopicKeys};
use self::sentinel::SentinelTarget;
pub use self::tls::TlsOptions;

/// The Redis Streams backend. Cheap to clone: clones share the connections.
///
/// ```no_run
/// # async fn f() -> rivulet::Result<()> {
/// use rivulet::RedisBackend;
///
/// let backend = RedisBackend::connect("redis://127.0.0.1:6379").await?;
/// // or, with options:
/// let backend = RedisBackend::builder("redis://127.0.0.1:6379")
///     .prefix("myapp")
///     .await?;
/// // or a Redis Cluster:
/// let backend = RedisBackend::cluster(&["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]).await?;
/// # Ok(()) }
/// ```
///
/// Passwords in URLs never appear in `Debug` output, logs or errors.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    redacted: String,
    prefix: String,
    timeouts: Timeouts,
    /// The shared connection. It closes when the last clone of the backend is dropped:
    /// a bus that shuts down never closes it under another bus (B-MULTI-1).
    shared: Conn,
    /// Topics this backend has added to the topic registry.
    registered: Mutex<HashSet<TopicName>>,
    /// Queues this backend has added to the queue registry.
    queues_registered: Mutex<HashSet<QueueName>>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.redacted)
            .field(
                "topology",
                &match self.inner.target {
                    Target::Single(_) | Target::Named(_) => "single",
                    Target::Sentinel(_) => "sentinel",
                    Target::Cluster { .. } => "cluster",
                },
            )
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

enum Source {
    Url(String),
    Client(redis::Client),
    Cluster(Vec<String>),
    Sentinel {
        master: String,
        sentinels: Vec<String>,
    },
}

/// Options for a [`RedisBackend`]; finish with [`build`](RedisBackendBuilder::build).
///
/// `Debug` shows URLs with their passwords masked and says where a password comes
/// from, never what it is.
pub struct RedisBackendBuilder {
    source: Source,
    prefix: String,
    timeouts: Timeouts,
    tls: Option<TlsOptions>,
    credentials: Credentials,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Url(u) => conn::redact_url(u),
            Source::Client(_) => "<client>".to_owned(),
            Source::Cluster(urls) => urls
                .iter()
                .map(|u| conn::redact_url(u))
                .collect::<Vec<_>>()
                .join(","),
            Source::Sentinel { master, sentinels } => sentinel_label(master, sentinels),
        };
        f.debug_struct("RedisBackendBuilder")
            .field("source", &source)
            .field("prefix", &self.prefix)
            .field("timeouts", &self.timeouts)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl RedisBackendBuilder {
    fn with_source(source: Source) -> Self {
        RedisBackendBuilder {
            source,
            prefix: DEFAULT_PREFIX.to_owned(),
            timeouts: Timeouts::default(),
            tls: None,
            credentials: Credentials::default(),
        }
    }

    /// Options for a single server (or managed endpoint) at `url`
    /// (`redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_source(Source::Url(url.into()))
    }

    /// Options for a caller-built client. The backend opens its own connections from it
    /// and closes only those.
    pub fn from_client(client: redis::Client) -> Self {
        Self::with_source(Source::Client(client))
    }

    /// Options for a Redis Cluster reached through any of `urls`.
    pub fn cluster<S: AsRef<str>>(urls: &[S]) -> Self {
        Self::with_source(Source::Cluster(
            urls.iter().map(|u| u.as_ref().to_owned()).collect(),
        ))
    }

    /// Options for a Sentinel deployment: the master's name and the sentinels, each
    /// `host:port` or a URL (`redis://[user:password@]host:port`, `rediss://` for TLS to
    /// that sentinel) carrying the sentinels' own credentials. The master's credentials
    /// are [`username`](Self::username) and [`password`](Self::password) (or
    /// [`password_from_env`](Self::password_from_env) / [`password_file`](Self::password_file));
    /// [`tls`](Self::tls) turns TLS on for the master (and for `host:port` sentinels).
    ///
    /// Every connection asks the sentinels for the master when it opens, so after a
    /// failover the shared connection, readers and live subscriptions move to the new
    /// master by themselves. The URL form `redis+sentinel://[user:password@]host:port[,host:port…]/<master>[/<db>]`
    /// (`rediss+sentinel://` for TLS everywhere) works with [`new`](Self::new) too.
    pub fn sentinel<S: AsRef<str>>(master_name: impl Into<String>, sentinels: &[S]) -> Self {
        Self::with_source(Source::Sentinel {
            master: master_name.into(),
            sentinels: sentinels.iter().map(|s| s.as_ref().to_owned()).collect(),
        })
    }

    /// TLS settings (CA, client certificate for mutual TLS) for every connection. Needs
    /// a `rediss://` URL (a `redis://` one is a configuration error); a `rediss://` URL
    /// without options trusts the public root CAs.
    pub fn tls(mut self, options: TlsOptions) -> Self {
        self.tls = Some(options);
        self
    }

    /// The user name to log in with (an ACL user), instead of the URL's.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.credentials.username = Some(username.into());
        self
    }

    /// The password, instead of the URL's (no percent-encoding needed).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.credentials.password = Some(PasswordSource::Value(password.into()));
        self
    }

    /// Reads the password from the environment variable `var` when the backend is
    /// built (a missing or empty variable is a configuration error naming it).
    pub fn password_from_env(mut self, var: impl Into<String>) -> Self {
        self.credentials.password = Some(PasswordSource::Env(var.into()));
        self
    }

    /// Reads the password from a file when the backend is built (one trailing line
    /// break is dropped), e.g. a mounted Kubernetes or Docker secret.
    pub fn password_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.credentials.password = Some(PasswordSource::File(path.into()));
        self
    }

    /// The prefix of every key (default `rivulet`). Keys of a topic are tagged
    /// `{<prefix>/topic/<topic>}`. 1–100 bytes of `[A-Za-z0-9._:-]`, like a name.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long to wait for a connection to open (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// How long a command on the shared connection may take (default 10 s). Blocking
    /// reads run on their own connections and are not limited by it.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.response = timeout;
        self
    }

    /// Connects. Fails with [`Error::Config`] for a bad URL or option and with
    /// [`Error::Connection`] when the server cannot be reached.
    pub async fn build(self) -> Result<RedisBackend> {
        keys::check_prefix(&self.prefix)?;
        tls::install_crypto_provider();
        let creds = self.credentials.resolve()?;
        let tls = self.tls.as_ref();
        let single_endpoint = matches!(&self.source,
            Source::Url(u) if !matches!(endpoint::check_url(u), Ok(Scheme::Sentinel { .. })));
        if !single_endpoint && tls.is_some_and(|t| t.server_name_override().is_some()) {
            return Err(Error::config(
                "a TLS server name override works with a single endpoint only: a cluster or a \
                 Sentinel deployment names its nodes itself",
            ));
        }
        let (target, redacted) = match self.source {
            Source::Url(url) => match endpoint::check_url(&url)? {
                Scheme::Sentinel { tls: all_tls } => {
                    let parsed = endpoint::parse_sentinel_url(&url)?;
                    let creds = parsed.credentials.merged(&creds);
                    let sentinels = parsed
                        .sentinels
                        .iter()
                        .map(|addr| sentinel_client(addr, all_tls || tls.is_some(), tls))
                        .collect::<Result<Vec<_>>>()?;
                    let target = SentinelTarget::new(
                        parsed.master,
                        sentinels,
                        master_tls(all_tls || tls.is_some(), tls)?,
                        creds,
                        parsed.db,
                        self.timeouts.connect,
                    )?;
                    (Target::Sentinel(Arc::new(target)), conn::redact_url(&url))
                }
                _ => (
                    endpoint::target_for(&url, tls, &creds, self.timeouts.connect)?,
                    conn::redact_url(&url),
                ),
            },
            Source::Client(client) => {
                if tls.is_some() {
                    return Err(Error::config(
                        "TLS options cannot be applied to a caller-built client: build it with redis::Client::build_with_tls",
                    ));
                }
                let info = client.get_connection_info();
                let redacted = format!("redis://{}", info.addr());
                (Target::Single(client), redacted)
            }
            Source::Sentinel { master, sentinels } => {
                let redacted = sentinel_label(&master, &sentinels);
                let clients = sentinels
                    .iter()
                    .map(|s| sentinel_client(s, tls.is_some(), tls))
                    .collect::<Result<Vec<_>>>()?;
                let target = SentinelTarget::new(
                    master,
                    clients,
                    master_tls(tls.is_some(), tls)?,
                    creds,
                    0,
                    self.timeouts.connect,
                )?;
                (Target::Sentinel(Arc::new(target)), redacted)
            }
            Source::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(Error::config("a cluster needs at least one node URL"));
                }
                let nodes = urls
                    .iter()
                    .map(|u| endpoint::client_for(u, tls, &creds))
                    .collect::<Result<Vec<_>>>()?;
                let redacted = urls
                    .iter()
                    .map(|u| conn::redact_url(u))
                    .collect::<Vec<_>>()
                    .join(",");
                let mut builder =
                    redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str));
                builder = creds.apply_cluster(builder);
                if let Some(options) = tls {
                    builder = builder
                        .tls(redis::TlsMode::Secure)
                        .certs(options.certificates()?);
                }
                let client = builder.build().map_err(|e| {
                    Error::config(format!(
                        "invalid cluster configuration for {redacted}: {}",
                        e.category()
                    ))
                })?;
                let target = Target::Cluster {
                    client: Box::new(client),
                    nodes,
                };
                (target, redacted)
            }
        };
        let shared = match conn::open_shared(&target, self.timeouts, &redacted).await {
            Ok(shared) => shared,
            Err(e) => return Err(conn::diagnose(&target, e, self.timeouts, &redacted).await),
        };
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                target,
                redacted,
                prefix: self.prefix,
                timeouts: self.timeouts,
                shared,
                registered: Mutex::new(HashSet::new()),
                queues_registered: Mutex::new(HashSet::new()),
            }),
        })
    }
}

/// The label of a Sentinel deployment in `Debug`, logs and errors (passwords masked).
fn sentinel_label(master: &str, sentinels: &[String]) -> String {
    let addrs = sentinels
        .iter()
        .map(|s| conn::redact_url(s))
        .collect::<Vec<_>>()
        .join(",");
    format!("sentinel[{addrs}]/{master}")
}

/// A client for one sentinel: a URL, or `host:port` (TLS when `tls`).
fn sentinel_client(addr: &str, tls: bool, options: Option<&TlsOptions>) -> Result<redis::Client> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{}://{addr}", if tls { "rediss" } else { "redis" })
    };
    let is_tls = endpoint::check_url(&url)? == Scheme::Tls;
    endpoint::client_for(
        &url,
        options.filter(|_| is_tls),
        &endpoint::Resolved::default(),
    )
}

/// TLS to the master: `None` without TLS, else the certificates (if any).
fn master_tls(
    tls: bool,
    options: Option<&TlsOptions>,
) -> Result<Option<Option<redis::TlsCertificates>>> {
    if !tls {
        return Ok(None);
    }
    Ok(Some(options.map(TlsOptions::certificates).transpose()?))
}

impl std::future::IntoFuture for RedisBackendBuilder {
    type Output = Result<RedisBackend>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;

    /// Same as [`build`](RedisBackendBuilder::build), so the builder can be awaited directly.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.build())
    }
}

impl RedisBackend {
    /// Connects to a single server (or managed endpoint) with default options.
    pub async fn connect(url: &str) -> Result<RedisBackend> {
        RedisBackendBuilder::new(url).build().await
    }

    /// Options for a single server at `url`; see [`RedisBackendBuilder`].
    pub fn builder(url: impl Into<String>) -> RedisBackendBuilder {
        RedisBackendBuilder::new(url)
    }

    /// Connects through a caller-built client, with default options. The backend opens
    /// its own connections from the client and closes only those.
    pub async fn from_client(client: redis::Client) -> Result<RedisBackend> {
        RedisBackendBuilder::from_client(client).build().await
    }

    /// Connects to a Redis Cluster through any of `urls`, with default options.
    pub async fn cluster<S: AsRef<str>>(urls: &[S]) -> Result<RedisBackend> {
        RedisBackendBuilder::cluster(urls).build().await
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Whether this backend talks to a Redis Cluster (a pipeline must then stay in one
    /// slot, and a script in one slot).
    fn is_cluster(&self) -> bool {
        matches!(self.inner.target, Target::Cluster { .. })
    }

    /// A clone of the shared connection.
    fn conn(&self) -> Result<Conn> {
        Ok(self.inner.shared.clone())
    }

    fn topic_keys(&self, topic: &TopicName) -> TopicKeys {
        TopicKeys::new(&self.inner.prefix, topic)
    }

    fn log_keys(&self, key: &StreamKey) -> LogKeys {
        LogKeys::for_key(&self.inner.prefix, key)
    }
}

impl From<RedisBackend> for AnyBackend {
    fn from(b: RedisBackend) -> Self {
        AnyBackend(Arc::new(b))
    }
}

/// Milliseconds for Redis arguments, cut to about 30 years so expiries and timeouts stay
/// in the range Redis accepts.
fn millis(d: Duration) -> u64 {
    crate::deadline::millis(d)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn default_concurrency(&self) -> usize {
        1
    }

    async fn detach(&self) -> Result<Arc<dyn Backend>> {
        let inner = &self.inner;
        let shared = conn::open_shared(&inner.target, inner.timeouts, &inner.redacted).await?;
        Ok(Arc::new(RedisBackend {
            inner: Arc::new(Inner {
                target: inner.target.clone(),
                redacted: inner.redacted.clone(),
                prefix: inner.prefix.clone(),
                timeouts: inner.timeouts,
                shared,
                registered: Mutex::new(HashSet::new()),
                queues_registered: Mutex::new(HashSet::new()),
            }),
        }))
    }
}

#[cfg(test)]
use crate::{backend::EntryRef, message::Envelope, name::GroupName};

#[cfg(test)]
impl RedisBackend {
    /// Settles `entry` and appends `envelope` to the group's retry lane now (test setup).
    pub(crate) async fn requeue(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        envelope: &Envelope,
    ) -> Result<()> {
        let keys = self.log_keys(key);
        let lane = keys.lane(group.as_str());
        let fields = wire::message_fields(envelope, true);
        self.settle_append(&keys, group, entry, 0, &lane, &fields)
            .await
    }
}
