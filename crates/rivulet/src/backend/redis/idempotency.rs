//! [`RedisIdempotencyStore`]: idempotency keys in Redis (B-IDEM-1/3).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use tokio::sync::OnceCell;

use super::conn::{self, Conn, Target, Timeouts};
use super::scripts::SCRIPTS;
use super::{RedisBackend, millis};
use crate::error::{Error, Result};
use crate::idempotency::{Claim, IdempotencyStore};

/// The default key prefix of a [`RedisIdempotencyStore`].
pub(crate) const DEFAULT_IDEMPOTENCY_PREFIX: &str = "rivulet/idempotency/";

/// An [`IdempotencyStore`] in Redis, usable with any backend.
///
/// * `claim` is `SET <key> claimed NX PX <claim_ttl>`: a claim_ttl, so a consumer that crashes
///   after claiming does not turn its message into a skip; a key already `done` answers
///   [`Claim::Done`], one still `claimed` answers [`Claim::Busy`].
/// * `complete` is `SET <key> done PX <ttl>`.
/// * `release` deletes the key only while it is still `claimed` (never a `done` key).
///
/// ```no_run
/// # async fn f() -> rivulet::Result<()> {
/// use rivulet::RedisIdempotencyStore;
///
/// let store = RedisIdempotencyStore::open("redis://127.0.0.1:6379")?.prefix("orders-svc:idem:");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    source: Source,
    prefix: String,
}

// One per store: the size of a TLS client is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Source {
    /// Connects lazily, on first use, from a client.
    Client {
        target: Target,
        redacted: String,
        conn: Arc<OnceCell<Conn>>,
    },
    /// Shares a backend's connection.
    Backend(RedisBackend),
}

impl fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Client { redacted, .. } => redacted.clone(),
            Source::Backend(b) => b.inner.redacted.clone(),
        };
        f.debug_struct("RedisIdempotencyStore")
            .field("url", &source)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisIdempotencyStore {
    /// A store on a caller-built client. It opens (lazily, on first use) and owns one
    /// connection of its own.
    pub fn new(client: redis::Client) -> Self {
        let redacted = format!("redis://{}", client.get_connection_info().addr());
        RedisIdempotencyStore {
            source: Source::Client {
                target: Target::Single(client),
                redacted,
                conn: Arc::new(OnceCell::new()),
            },
            prefix: DEFAULT_IDEMPOTENCY_PREFIX.to_owned(),
        }
    }

    /// A store on the server at `url`. Fails with [`Error::Config`] for a bad URL; the
    /// connection opens on first use.
    pub fn open(url: &str) -> Result<Self> {
        super::tls::install_crypto_provider();
        let mut store = Self::new(conn::client_for(url)?);
        if let Source::Client { redacted, .. } = &mut store.source {
            *redacted = conn::redact_url(url);
        }
        Ok(store)
    }

    /// Like [`open`](Self::open), for a `rediss://` URL with TLS options (a custom CA, a
    /// client certificate).
    pub fn open_with_tls(url: &str, tls: &super::TlsOptions) -> Result<Self> {
        super::tls::install_crypto_provider();
        let timeouts = Timeouts::default();
        let target = super::endpoint::target_for(
            url,
            Some(tls),
            &super::endpoint::Resolved::default(),
            timeouts.connect,
        )?;
        Ok(RedisIdempotencyStore {
            source: Source::Client {
                target,
                redacted: conn::redact_url(url),
                conn: Arc::new(OnceCell::new()),
            },
            prefix: DEFAULT_IDEMPOTENCY_PREFIX.to_owned(),
        })
    }

    /// A store sharing a [`RedisBackend`]'s connection (single server or cluster).
    pub fn from_backend(backend: &RedisBackend) -> Self {
        RedisIdempotencyStore {
            source: Source::Backend(backend.clone()),
            prefix: super::keys::idempotency_prefix(backend.prefix()),
        }
    }

    /// The prefix of every key (default `rivulet/idempotency/`). Give each service its own when
    /// several share a Redis.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    async fn conn(&self) -> Result<Conn> {
        match &self.source {
            Source::Backend(b) => b.conn(),
            Source::Client {
                target,
                redacted,
                conn: cell,
            } => {
                let c = cell
                    .get_or_try_init(|| async {
                        conn::open_shared(target, Timeouts::default(), redacted).await
                    })
                    .await?;
                Ok(c.clone())
            }
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn claim(&self, key: &str, claim_ttl: Duration) -> Result<Claim> {
        let mut conn = self.conn().await?;
        let v: Value = SCRIPTS
            .claim
            .key(self.key(key))
            .arg(millis(claim_ttl).max(1))
            .invoke_async(&mut conn)
            .await?;
        match super::reply::string(&v).as_deref() {
            Some("acquired") => Ok(Claim::Acquired),
            Some("done") => Ok(Claim::Done),
            Some("claimed") => Ok(Claim::Busy),
            _ => Err(Error::Protocol(format!(
                "idempotency key {key:?} holds an unexpected value"
            ))),
        }
    }

    async fn complete(&self, key: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: Value = redis::cmd("SET")
            .arg(self.key(key))
            .arg("done")
            .arg("PX")
            .arg(millis(ttl).max(1))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn renew(&self, key: &str, claim_ttl: Duration) -> Result<bool> {
        let mut conn = self.conn().await?;
        let n: i64 = SCRIPTS
            .renew
            .key(self.key(key))
            .arg(millis(claim_ttl).max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    async fn release(&self, key: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: Value = SCRIPTS
            .release
            .key(self.key(key))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
