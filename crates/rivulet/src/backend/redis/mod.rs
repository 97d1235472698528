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

mod conn;
mod dlq;
mod groups;
mod idempotency;
mod keys;
mod live;
mod publish;
mod reader;
mod recovery;
pub(crate) mod reply;
mod scripts;
mod settle;
mod trim;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::{
    AnyBackend, Backend, EntryRef, LiveMessage, PublishOpts, Reader, Reclaimed, RetrySweep,
    StreamKey,
};
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::message::{EntryId, Envelope, Published};
use crate::name::{ConsumerName, GroupName, TopicName};
use crate::topic::{StartFrom, TopicOptions, TrimReport};

use self::conn::{Conn, Target, Timeouts};
pub use self::idempotency::RedisIdempotencyStore;
use self::keys::{DEFAULT_PREFIX, LogKeys, TopicKeys};

/// The default limit on a payload's size: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

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
///     .max_payload(256 * 1024)
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
    max_payload: usize,
    timeouts: Timeouts,
    /// The shared connection; `None` once closed.
    shared: RwLock<Option<Conn>>,
    /// Cancelled by `close`: stops live subscriptions.
    closed: CancellationToken,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.redacted)
            .field(
                "cluster",
                &matches!(self.inner.target, Target::Cluster { .. }),
            )
            .field("prefix", &self.inner.prefix)
            .field("max_payload", &self.inner.max_payload)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish()
    }
}

enum Source {
    Url(String),
    Client(redis::Client),
    Cluster(Vec<String>),
}

/// Options for a [`RedisBackend`]; finish with [`build`](RedisBackendBuilder::build).
pub struct RedisBackendBuilder {
    source: Source,
    prefix: String,
    max_payload: usize,
    timeouts: Timeouts,
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
        };
        f.debug_struct("RedisBackendBuilder")
            .field("source", &source)
            .field("prefix", &self.prefix)
            .field("max_payload", &self.max_payload)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl RedisBackendBuilder {
    fn with_source(source: Source) -> Self {
        RedisBackendBuilder {
            source,
            prefix: DEFAULT_PREFIX.to_owned(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            timeouts: Timeouts::default(),
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

    /// The prefix of every key (default `rivulet`). Keys of a topic are tagged
    /// `{<prefix>:<topic>}`. Printable ASCII without spaces or braces.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The largest payload accepted, in bytes (default 1 MiB). Publishing a larger one
    /// fails; a larger entry written by someone else is read as malformed.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
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
        if self.max_payload == 0 {
            return Err(Error::config("max_payload must be at least 1 byte"));
        }
        let (target, redacted) = match self.source {
            Source::Url(url) => (
                Target::Single(conn::client_for(&url)?),
                conn::redact_url(&url),
            ),
            Source::Client(client) => {
                let info = client.get_connection_info();
                let redacted = format!("redis://{}", info.addr());
                (Target::Single(client), redacted)
            }
            Source::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(Error::config("a cluster needs at least one node URL"));
                }
                let nodes = urls
                    .iter()
                    .map(|u| conn::client_for(u))
                    .collect::<Result<Vec<_>>>()?;
                let redacted = urls
                    .iter()
                    .map(|u| conn::redact_url(u))
                    .collect::<Vec<_>>()
                    .join(",");
                let client =
                    redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
                        .build()
                        .map_err(|e| {
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
        let shared = conn::open_shared(&target, self.timeouts, &redacted).await?;
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                target,
                redacted,
                prefix: self.prefix,
                max_payload: self.max_payload,
                timeouts: self.timeouts,
                shared: RwLock::new(Some(shared)),
                closed: CancellationToken::new(),
            }),
        })
    }
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

    /// The payload size limit, in bytes.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// A clone of the shared connection, or [`Error::Closed`].
    fn conn(&self) -> Result<Conn> {
        let guard = match self.inner.shared.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.clone().ok_or(Error::Closed)
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

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn default_concurrency(&self) -> usize {
        1
    }

    async fn publish(
        &self,
        topic: &TopicName,
        batch: Vec<Envelope>,
        opts: &PublishOpts,
    ) -> Result<Vec<Published>> {
        self.publish_batch(topic, batch, opts).await
    }

    async fn ensure_group(
        &self,
        key: &StreamKey,
        group: &GroupName,
        start: &StartFrom,
    ) -> Result<()> {
        self.create_group(key, group, start).await
    }

    async fn destroy_group(&self, key: &StreamKey, group: &GroupName) -> Result<()> {
        self.remove_group(key, group, false).await.map(|_| ())
    }

    async fn reader(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<Box<dyn Reader>> {
        let reader = reader::RedisReader::open(self.clone(), key, group, consumer).await?;
        Ok(Box::new(reader))
    }

    async fn ack(&self, key: &StreamKey, group: &GroupName, entries: &[EntryRef]) -> Result<()> {
        self.ack_entries(key, group, entries).await
    }

    async fn retry_later(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        next: &Envelope,
        due_ms: u64,
    ) -> Result<()> {
        self.schedule_retry(key, group, entry, next, due_ms).await
    }

    async fn dead_letter(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        dead: &DeadLetter,
    ) -> Result<()> {
        self.dead_letter_entry(key, group, entry, dead).await
    }

    async fn move_due_retries(
        &self,
        key: &StreamKey,
        now_ms: u64,
        limit: usize,
    ) -> Result<RetrySweep> {
        self.sweep_retries(key, now_ms, limit).await
    }

    async fn reclaim(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        min_idle: Duration,
        count: usize,
    ) -> Result<Reclaimed> {
        self.reclaim_idle(key, group, consumer, min_idle, count)
            .await
    }

    async fn extend_lease(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        entries: &[EntryRef],
    ) -> Result<()> {
        self.extend(key, group, consumer, entries).await
    }

    async fn hand_back(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        keep: &[EntryRef],
    ) -> Result<usize> {
        self.hand_back_pending(key, group, consumer, keep).await
    }

    async fn dead_letters(
        &self,
        topic: &TopicName,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.list_dead_letters(topic, after, limit).await
    }

    async fn dead_letter_count(&self, topic: &TopicName) -> Result<u64> {
        self.count_dead_letters(topic).await
    }

    async fn remove_dead_letters(&self, topic: &TopicName, ids: &[EntryId]) -> Result<u64> {
        self.delete_dead_letters(topic, ids).await
    }

    async fn replay_dead_letter(&self, topic: &TopicName, dead: &DeadLetter) -> Result<bool> {
        self.replay(topic, dead).await
    }

    async fn trim(&self, topic: &TopicName, opts: &TopicOptions) -> Result<TrimReport> {
        self.trim_topic(topic, opts).await
    }

    async fn broadcast_heartbeat(
        &self,
        key: &StreamKey,
        group: &GroupName,
        ttl: Duration,
    ) -> Result<()> {
        self.heartbeat(key, group, ttl).await
    }

    async fn remove_orphan_broadcast_groups(
        &self,
        key: &StreamKey,
        base: &GroupName,
    ) -> Result<Vec<String>> {
        self.remove_orphans(key, base).await
    }

    async fn live_publish(&self, channel: &str, payload: Bytes) -> Result<u64> {
        self.publish_live(channel, payload).await
    }

    async fn live_subscribe(&self, patterns: &[String]) -> Result<mpsc::Receiver<LiveMessage>> {
        self.subscribe_live(patterns).await
    }

    async fn close(&self) {
        let taken = match self.inner.shared.write() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        // Dropping our handle closes the shared connection once in-flight calls finish.
        drop(taken);
        self.inner.closed.cancel();
    }
}

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
        self.settle_append(&keys, group, entry, &lane, &fields)
            .await
    }
}
