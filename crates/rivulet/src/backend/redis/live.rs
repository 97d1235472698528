//! Live channels over Redis Pub/Sub (B-LIVE-1): a dedicated connection per
//! subscription, `PSUBSCRIBE`d to its patterns, forwarding into a bounded channel.
//! Lossy by design: a full channel drops messages (counted), and messages published
//! while the connection is down are never seen. After a connection loss it reconnects
//! with bounded backoff and subscribes again; it stops when the receiver is dropped or
//! the bus that opened it shuts down.
//!
//! On a cluster the subscription connects to one of the nodes given (the next one when
//! that node is down): Redis Cluster propagates every `PUBLISH` to all nodes.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::RedisBackend;
use super::conn::Target;
use super::sentinel::SentinelTarget;
use super::tls::NamedTls;

/// Where a subscription connects when it is not a plain client: the master the
/// sentinels name at each connection, or a server over TLS with a server-name override.
#[derive(Clone)]
enum Dial {
    Sentinel(Arc<SentinelTarget>),
    Named(Arc<NamedTls>),
}
use crate::backend::{LiveChannels, LiveMessage};
use crate::error::{Error, Result};

/// Capacity of a subscription's channel.
const CAPACITY: usize = 1024;
/// How often an idle subscription checks its connection.
const PING_EVERY: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

async fn open(
    client: &redis::Client,
    patterns: &[String],
    timeout: Duration,
) -> Result<(PubSubSink, PubSubStream)> {
    let connect = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.psubscribe(patterns).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

#[async_trait]
impl LiveChannels for RedisBackend {
    async fn live_publish(&self, channel: &str, payload: Bytes) -> Result<u64> {
        let mut conn = self.conn()?;
        let n: u64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload.as_ref())
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }

    async fn live_subscribe(
        &self,
        patterns: &[String],
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<LiveMessage>> {
        self.conn()?;
        let (clients, sentinel) = match &self.inner.target {
            Target::Single(c) => (vec![c.clone()], None),
            Target::Sentinel(s) => (Vec::new(), Some(Dial::Sentinel(Arc::clone(s)))),
            Target::Named(n) => (Vec::new(), Some(Dial::Named(Arc::clone(n)))),
            Target::Cluster { nodes, .. } => (nodes.clone(), None),
        };
        let timeout = self.inner.timeouts.connect + self.inner.timeouts.response;
        let mut first = Err(Error::config("a cluster needs at least one node URL"));
        let mut next = 0;
        if let Some(sentinel) = &sentinel {
            first = open_master(sentinel, patterns, timeout).await;
        }
        for (i, client) in clients.iter().enumerate() {
            first = open(client, patterns, timeout).await;
            if first.is_ok() {
                next = i;
                break;
            }
        }
        let first = first.map_err(|e| match e {
            Error::Redis(e) => super::conn::connection_error(&self.inner.redacted, &e),
            other => other,
        })?;
        let (tx, rx) = mpsc::channel(CAPACITY);
        let task = Subscription {
            clients,
            sentinel,
            next,
            patterns: patterns.to_vec(),
            timeout,
            tx,
            closed: stop,
        };
        tokio::spawn(task.run(first));
        Ok(rx)
    }
}

/// Opens a subscription through `dial`.
async fn open_master(
    dial: &Dial,
    patterns: &[String],
    timeout: Duration,
) -> Result<(PubSubSink, PubSubStream)> {
    let connect = async {
        let pubsub = match dial {
            Dial::Sentinel(sentinel) => sentinel.master_client().await?.get_async_pubsub().await?,
            Dial::Named(named) => named.pubsub().await?,
        };
        let (mut sink, stream) = pubsub.split();
        sink.psubscribe(patterns).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

struct Subscription {
    /// Where to connect: one server, or each node of a cluster in turn.
    clients: Vec<redis::Client>,
    /// Or the master of a Sentinel deployment, asked for at each connection, or a
    /// server with a TLS server-name override.
    sentinel: Option<Dial>,
    /// Index of the client to connect to next.
    next: usize,
    patterns: Vec<String>,
    timeout: Duration,
    tx: mpsc::Sender<LiveMessage>,
    closed: CancellationToken,
}

enum End {
    /// The receiver is gone or the backend closed: stop.
    Stop,
    /// The connection was lost: reconnect.
    Lost,
}

impl Subscription {
    async fn run(mut self, first: (PubSubSink, PubSubStream)) {
        let mut conn = Some(first);
        let mut backoff = BACKOFF_MIN;
        loop {
            let (sink, stream) = match conn.take() {
                Some(c) => c,
                None => {
                    tokio::select! {
                        _ = self.tx.closed() => return,
                        _ = self.closed.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    let opened = match &self.sentinel {
                        Some(sentinel) => open_master(sentinel, &self.patterns, self.timeout).await,
                        None => {
                            let Some(client) =
                                self.clients.get(self.next % self.clients.len().max(1))
                            else {
                                return;
                            };
                            open(client, &self.patterns, self.timeout).await
                        }
                    };
                    match opened {
                        Ok(c) => {
                            tracing::info!("live subscription reconnected");
                            backoff = BACKOFF_MIN;
                            c
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "live subscription cannot reconnect yet");
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            self.next = self.next.wrapping_add(1);
                            continue;
                        }
                    }
                }
            };
            match self.forward(sink, stream).await {
                End::Stop => return,
                End::Lost => {
                    tracing::warn!("live subscription lost its connection; resubscribing");
                    metrics::counter!("rivulet_live_reconnects_total").increment(1);
                }
            }
        }
    }

    async fn forward(&self, mut sink: PubSubSink, mut stream: PubSubStream) -> End {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = self.tx.closed() => return End::Stop,
                _ = self.closed.cancelled() => return End::Stop,
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return End::Lost;
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return End::Lost;
                    };
                    let pattern: Option<String> = msg.get_pattern().ok().flatten();
                    let live = LiveMessage {
                        channel: msg.get_channel_name().to_owned(),
                        pattern: pattern.unwrap_or_default(),
                        payload: bytes::Bytes::copy_from_slice(msg.get_payload_bytes()),
                    };
                    match self.tx.try_send(live) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            metrics::counter!("rivulet_live_dropped_total").increment(1);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return End::Stop,
                    }
                }
            }
        }
    }
}
